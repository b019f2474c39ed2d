"""Wanted: the items of a run checked and turned into what each jail should be, before anything changes."""

from __future__ import annotations

import dataclasses
import os
import pwd
from typing import Any

from . import idmap, leftovers, registry
from .config import Config
from .errors import JailError
from .image import resolve_image
from .observe import Observed
from .spec import TenantSpec, check_name

STATES = ("present", "mounted", "unmounted", "absent")
SPEC_KEYS = (
    "uid",
    "gid",
    "layout",
    "image",
    "hostname",
    "net",
    "limits",
    "program",
    "packages",
    "service",
    "admin",
    "environment",
    "package",
)
# How each interface spells the options its errors point to (jailctl passes its own).
MODULE_FLAGS = {"force": "force=true", "purge": "purge=true", "shared_gid": "shared_gid=true"}


@dataclasses.dataclass
class Wanted:
    """What one jail should be: its state and, unless absent, its spec (image resolved)."""

    name: str
    state: str
    spec: TenantSpec | None = None
    purge: bool = False
    force: bool = False
    take_uid_from: str | None = None  # a name an interrupted run left holding this jail's uid


def normalize(items: list[dict[str, Any]], defaults: dict[str, Any]) -> list[dict[str, Any]]:
    """Items with the task's defaults, checked against each other: names, states, uids."""
    wanted = [{**defaults, **{k: v for k, v in item.items() if v is not None}} for item in items]
    names: set[str] = set()
    uids: dict[int, str] = {}
    for item in wanted:
        if isinstance(item.get("limits"), dict):
            # Unset limits (None: a module's suboptions fill every key) keep the existing spec's or the defaults.
            item["limits"] = {k: v for k, v in item["limits"].items() if v is not None}
        name = check_name(item.get("name"))
        if name in names:
            raise JailError(f"jail {name!r} is listed twice")
        names.add(name)
        state = item.setdefault("state", "mounted")
        if state not in STATES:
            raise JailError(f"invalid state {state!r} for {name}: expected one of {', '.join(STATES)}")
        uid = item.get("uid")
        if uid is not None:
            if isinstance(uid, str) and uid.isdigit():
                item["uid"] = uid = int(uid)
            if uid in uids:
                raise JailError(f"uid {uid} is given to both {uids[uid]!r} and {name!r}")
            uids[uid] = name
    return wanted


def host_uids() -> dict[int, str]:
    return {p.pw_uid: p.pw_name for p in pwd.getpwall()}


def wanted(
    cfg: Config, item: dict[str, Any], obs: Observed, hosts: dict[int, str], flags: dict[str, str], claimed: dict[int, str]
) -> Wanted:
    """One item as a Wanted; claimed holds the uids and gids of the jails this run creates."""
    want = Wanted(item["name"], item["state"], purge=bool(item.get("purge")), force=bool(item.get("force")))
    if want.state != "absent":
        if obs.spec is not None:
            want.spec = _changed_spec(cfg, item, obs.spec)
        else:
            want.spec, want.take_uid_from = _new_spec(cfg, item, hosts, flags, claimed)
    return want


def _changed_spec(cfg: Config, item: dict[str, Any], old: TenantSpec) -> TenantSpec:
    name = item["name"]
    for key in ("uid", "gid", "layout", "admin"):
        if item.get(key) is not None and item[key] != getattr(old, key):
            raise JailError(
                f"changing the {key} of jail {name} from {getattr(old, key)!r} to {item[key]!r} is refused; "
                "remove the jail (its home is kept) and create it again"
            )
    fields = {k: (item[k] if item.get(k) is not None else getattr(old, k)) for k in SPEC_KEYS}
    fields["limits"] = {**old.limits, **(item.get("limits") or {})}
    spec = TenantSpec.build(cfg, name, **fields)
    spec.image_id = old.image_id
    if spec.image != old.image or not spec.image_id:
        spec.image_id = resolve_image(cfg, spec.image)
    return spec


def _new_spec(
    cfg: Config, item: dict[str, Any], hosts: dict[int, str], flags: dict[str, str], claimed: dict[int, str]
) -> tuple[TenantSpec, str | None]:
    name = item["name"]
    if item.get("uid") is None:
        raise JailError(f"uid is required to create jail {name}")
    spec = TenantSpec.build(cfg, name, **{k: item.get(k) for k in SPEC_KEYS})
    if spec.uid in hosts:
        raise JailError(f"uid {spec.uid} of jail {name} is the host account {hosts[spec.uid]!r}")
    if spec.admin:
        # Checked before anything is made: a host that cannot run tenant root gets one error here.
        idmap.check_kernel()
        idmap.check_host_ids(spec.admin_ids)
        idmap.check_idmapped_mounts(str(cfg.images_dir), spec.admin_ids)
    owner = registry.uid_owner(cfg, spec.uid)
    take_from = None
    if owner not in (None, name):
        if not leftovers.reservation_is_stale(cfg, spec.uid, owner):
            raise JailError(f"uid {spec.uid} of jail {name} already belongs to tenant {owner!r}")
        take_from = owner
    if not item.get("shared_gid"):
        _check_own_gid(cfg, spec, flags, claimed)
    claimed.setdefault(spec.uid, name)
    claimed.setdefault(spec.gid, name)
    home = cfg.tenant_dir(name) / "home" / name
    try:
        st = os.stat(home, follow_symlinks=False)
        if st.st_uid != spec.uid:
            raise JailError(
                f"the kept home {home} belongs to uid {st.st_uid}, not {spec.uid}; create {name} with uid {st.st_uid} or purge it"
            )
    except FileNotFoundError:
        pass
    spec.image_id = resolve_image(cfg, spec.image)
    return spec, take_from


def _check_own_gid(cfg: Config, spec: TenantSpec, flags: dict[str, str], claimed: dict[int, str]) -> None:
    """A new tenant's gid is no other tenant's group (its uid, the default gid, or a gid it was given)."""
    name, gid = spec.name, spec.gid
    other = claimed.get(gid)
    if other in (None, name):
        other = registry.uid_owner(cfg, gid)
        if other is not None and other != name and leftovers.reservation_is_stale(cfg, gid, other):
            other = None
    if other in (None, name) and gid != spec.uid:
        # A gid of its own choosing: no other tenant may have it either (one read of each spec).
        other = next((t for t in registry.list_tenants(cfg) if t != name and getattr(registry.load_spec(cfg, t), "gid", None) == gid), None)
    if other not in (None, name):
        raise JailError(f"gid {gid} of jail {name} is the group of tenant {other!r}; set {flags['shared_gid']} to share it")
