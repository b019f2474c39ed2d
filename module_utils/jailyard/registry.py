"""The tenant registry: one tenant.json per tenant, read without any shared index file."""

from __future__ import annotations

import fnmatch
import os

from .config import Config
from .errors import JailError
from .plan import MountPlan, is_valid_name, parse_plan
from .safefs import read_text
from .spec import TenantSpec


def list_tenants(cfg: Config, pattern: str = "*") -> list[str]:
    """Names of tenants that have a spec, sorted; one directory scan."""
    tenants = str(cfg.tenants_dir)  # plain strings: jail_info calls these for every tenant
    return [n for n in list_names(cfg, pattern) if os.path.exists(f"{tenants}/{n}/tenant.json")]


def list_names(cfg: Config, pattern: str = "*") -> list[str]:
    """Valid tenant names in the tenants directory matching pattern, sorted; whether each has a spec
    is left to the caller that reads it anyway (jail_facts: one stat less per tenant)."""
    try:
        entries = os.scandir(cfg.tenants_dir)
    except FileNotFoundError:
        return []
    with entries:
        names = [e.name for e in entries if is_valid_name(e.name) and (pattern == "*" or fnmatch.fnmatchcase(e.name, pattern))]
    return sorted(names)


def load_spec(cfg: Config, name: str) -> TenantSpec | None:
    path = f"{cfg.tenants_dir}/{name}/tenant.json"
    try:
        text = read_text(path)
    except OSError as exc:
        raise JailError(f"cannot read {path}: {exc.strerror}") from exc
    if text is None:
        return None
    spec = TenantSpec.from_json(text, path)
    spec.source_text = text  # the planner's and is_current's shortcut (issue 21): not a field, not compared
    return spec


def load_plan(cfg: Config, name: str) -> MountPlan | None:
    return read_plan(cfg, name)[0]


def read_plan(cfg: Config, name: str) -> tuple[MountPlan | None, str | None]:
    """(the parsed plan, its text), or (None, None) without one."""
    path = plan_path(cfg, name)
    text = read_text(path)
    if text is None:
        return None, None
    return parse_plan(text, path), text


def plan_path(cfg: Config, name: str) -> str:
    return f"{cfg.tenants_dir}/{name}/plan"


def read_spec_text(cfg: Config, name: str) -> str | None:
    """tenant.json as it is now, unparsed (None without one): whether a spec read earlier still holds."""
    return read_text(f"{cfg.tenants_dir}/{name}/tenant.json")


def uid_owner(cfg: Config, uid: int) -> str | None:
    """The tenant holding uid (reservations are symlinks .uids/<uid> -> name, made atomically)."""
    try:
        return os.readlink(f"{cfg.tenants_dir}/.uids/{uid}")  # cfg.uid_index(), without a Path per call
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
