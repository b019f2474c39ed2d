"""The tenant registry: one tenant.json per tenant, read without any shared index file."""

from __future__ import annotations

import fnmatch
import os

from .config import Config
from .errors import JailError
from .plan import MountPlan, is_valid_name, parse_plan
from .spec import TenantSpec


def list_tenants(cfg: Config, pattern: str = "*") -> list[str]:
    """Names of tenants that have a spec, sorted; one directory scan."""
    try:
        entries = os.scandir(cfg.tenants_dir)
    except FileNotFoundError:
        return []
    with entries:
        names = [e.name for e in entries if is_valid_name(e.name) and fnmatch.fnmatchcase(e.name, pattern)]
    tenants = str(cfg.tenants_dir)  # plain strings: jail_info calls these for every tenant
    return sorted(n for n in names if os.path.exists(f"{tenants}/{n}/tenant.json"))


def load_spec(cfg: Config, name: str) -> TenantSpec | None:
    path = f"{cfg.tenants_dir}/{name}/tenant.json"
    try:
        with open(path) as fh:
            text = fh.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise JailError(f"cannot read {path}: {exc.strerror}") from exc
    return TenantSpec.from_json(text, path)


def load_plan(cfg: Config, name: str) -> MountPlan | None:
    path = f"{cfg.tenants_dir}/{name}/plan"
    try:
        with open(path) as fh:
            return parse_plan(fh.read(), path)
    except FileNotFoundError:
        return None


def uid_owner(cfg: Config, uid: int) -> str | None:
    """The tenant holding uid (reservations are symlinks .uids/<uid> -> name, made atomically)."""
    try:
        return os.readlink(f"{cfg.uid_index()}/{uid}")
    except FileNotFoundError:
        return None


def reserve_uid(cfg: Config, uid: int, name: str) -> bool:
    """Reserve uid for name; True if this call made the reservation, False if name held it already."""
    if uid_owner(cfg, uid) == name:  # held already (every converge of an existing jail asks)
        return False
    index = cfg.uid_index()
    index.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.symlink(name, index / str(uid))
    except FileExistsError:
        owner = uid_owner(cfg, uid)
        if owner != name:
            raise JailError(f"uid {uid} already belongs to tenant {owner!r}") from None
        return False
    return True


def release_uid(cfg: Config, uid: int, name: str) -> None:
    """Drop name's reservation of uid (the caller holds name's lock)."""
    if uid_owner(cfg, uid) == name:
        os.unlink(cfg.uid_index() / str(uid))
