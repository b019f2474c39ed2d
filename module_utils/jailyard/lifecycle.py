"""Converge jails to a wanted state: plan the steps from wanted vs observed state, then apply them.

One tenant or ten thousand: `converge_many` reads the mount table and the host
accounts once and validates every item before it changes anything.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import leftovers, registry
from .config import Config
from .errors import JailError
from .image import image_rootfs, resolve_image
from .kernel import is_mount_root, syncfs
from .lock import tenant_lock
from .mount import mount_jail, open_trusted, unmount_jail
from .mountinfo import MountInfo, jails_with_mounts, read_mountinfo
from .plan import MountPlan, host_target, plan_mounts, render_group, render_passwd
from .safefs import atomic_write, ensure_dir, opened, remove_tree
from .sessions import live_sessions, touch_lastuse
from .spec import LIMIT_KEYS, TenantSpec, check_name

STATES = ("present", "mounted", "unmounted", "absent")
SMALL_BATCH = 16
SPEC_KEYS = ("uid", "gid", "layout", "image", "hostname", "net", "limits", "program", "packages")
# How each interface spells the options its errors point to (jailctl passes its own).
MODULE_FLAGS = {"force": "force=true", "purge": "purge=true", "shared_gid": "shared_gid=true"}


@dataclasses.dataclass
class Result:
    name: str
    state: str
    changed: bool = False
    actions: list[str] = dataclasses.field(default_factory=list)
    before: dict[str, Any] = dataclasses.field(default_factory=dict)
    after: dict[str, Any] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class PartialFailure(JailError):
    """A run that failed at one jail: what changed before it, which jail failed and why, what was not attempted."""

    def __init__(self, failed: str, error: str, results: list[Result], not_attempted: list[str]) -> None:
        done = [r.name for r in results if r.changed]
        parts = [error]
        if done:
            parts.append(f"changed before it: {', '.join(done)}")
        if not_attempted:
            parts.append(f"not attempted: {', '.join(not_attempted)}")
        super().__init__("; ".join(parts))
        self.failed = failed
        self.error = error
        self.results = results
        self.not_attempted = not_attempted

    @property
    def changed(self) -> bool:
        return any(r.changed for r in self.results)


class _Observed:
    """What is on disk and mounted for one tenant, read once."""

    def __init__(self, cfg: Config, name: str, mounts: dict[str, list[MountInfo]] | None):
        self.name = name
        self.tenant_dir = cfg.tenant_dir(name)
        self.spec = registry.load_spec(cfg, name)
        self.plan = registry.load_plan(cfg, name) if self.spec else None
        if mounts is None:
            # A few jails: one statx per planned mount, not a read of the whole
            # mount table (0.4 s with 50,000 mounts on the node).
            targets = self.plan.targets() if self.plan else [str(cfg.jail_root(name))]
            self.mounted = [t for t in targets if is_mount_root(t)]
        else:
            self.mounted = [m.target for m in mounts.get(name, [])]

    def summary(self) -> dict[str, Any]:
        if self.spec is None:
            state = "absent"
        elif not self.mounted:
            state = "present"
        elif self.plan and set(self.plan.targets()) <= set(self.mounted):
            state = "mounted"
        else:
            state = "partly mounted"
        return {"state": state, "spec": self.spec.to_dict() if self.spec else None, "mounts": list(self.mounted)}


def converge(cfg: Config, params: dict[str, Any], check: bool = False, flags: dict[str, str] | None = None) -> Result:
    """Bring one jail to params['state'] (default mounted)."""
    return converge_many(cfg, [params], check=check, flags=flags)[0]


def converge_many(
    cfg: Config,
    items: Iterable[dict[str, Any]],
    check: bool = False,
    exclusive: bool = False,
    defaults: dict[str, Any] | None = None,
    flags: dict[str, str] | None = None,
) -> list[Result]:
    """Converge many jails in one pass; with exclusive, unlisted jails are removed (homes kept unless purge).

    A failure after some jail changed raises PartialFailure, which tells what
    changed, which jail failed and why, and which were not attempted.
    """
    defaults = dict(defaults or {})
    flags = {**MODULE_FLAGS, **(flags or {})}
    wanted = [{**defaults, **{k: v for k, v in item.items() if v is not None}} for item in items]
    for item in wanted:
        if isinstance(item.get("limits"), dict):
            # Unset limits (None: a module's suboptions fill every key) keep the existing spec's or the defaults.
            item["limits"] = {k: v for k, v in item["limits"].items() if v is not None}
    names: set[str] = set()
    uids: dict[int, str] = {}
    for item in wanted:
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
    strays = leftovers.Strays(cfg)
    if exclusive:
        # Unlisted tenants, and names only an interrupted run left something of.
        for name in sorted(set(registry.list_tenants(cfg)) | strays.orphans(cfg)):
            if name not in names:
                wanted.append(
                    {"name": name, "state": "absent", "purge": defaults.get("purge", False), "force": defaults.get("force", False)}
                )
    # Many jails: one read of the mount table for all of them. A few: statx each.
    mounts = jails_with_mounts(read_mountinfo(), str(cfg.jails_dir)) if len(wanted) > SMALL_BATCH else None
    host_uids = {p.pw_uid: p.pw_name for p in pwd.getpwall()}
    # Validate every item before anything changes.
    prepared = [(item, _Observed(cfg, item["name"], mounts)) for item in wanted]
    claimed: dict[int, str] = {}  # ids of the jails this run creates: uid and gid
    specs = [None if item["state"] == "absent" else _wanted_spec(cfg, item, obs, host_uids, flags, claimed) for item, obs in prepared]
    results: list[Result] = []
    try:
        for (item, obs), spec in zip(prepared, specs, strict=True):
            try:
                results.append(_converge_one(cfg, item, obs, spec, mounts, check, strays, flags))
            except JailError as exc:
                failed, error = item["name"], str(exc)
            except OSError as exc:
                # A full disk, a read-only filesystem: name the jail and the path.
                failed, error = item["name"], f"jail {item['name']}: {exc.filename or 'write'}: {exc.strerror}"
            else:
                continue
            later = [i["name"] for i, _ in prepared[len(results) + 1 :]]
            raise PartialFailure(failed, error, results, later) from None
    finally:
        if not check and any(r.changed for r in results):
            _syncfs(cfg.tenants_dir)
    return results


def _converge_one(
    cfg: Config,
    item: dict[str, Any],
    obs: _Observed,
    spec: TenantSpec | None,
    mounts: dict[str, list[MountInfo]] | None,
    check: bool,
    strays: leftovers.Strays,
    flags: dict[str, str],
) -> Result:
    name, state = item["name"], item["state"]
    jail_mounts = mounts.get(name) if mounts is not None else None
    result = Result(name=name, state=state, before=obs.summary())
    lock = tenant_lock(cfg, name) if not check else _no_lock()
    with lock:
        if not check and (_stale(cfg, obs) or not _mounts_current(obs)):
            # Someone changed it between our read and the lock: observe again.
            obs = _Observed(cfg, name, None)
            jail_mounts = None
        if state == "absent":
            purge = bool(item.get("purge"))
            _remove(cfg, obs, purge, bool(item.get("force")), check, result, jail_mounts, strays, flags)
            if purge and not check:
                lock.unlink_locked()  # the last trace: lockers waiting on it take a new one
            result.after = {"state": "absent", "spec": None, "mounts": []}
        else:
            assert spec is not None
            _clear_strays(cfg, name, strays, spec.uid, check, result)
            plan = _ensure_created(cfg, spec, obs, check, result)
            mounted = list(obs.mounted)
            if state == "mounted":
                plan = _mount(cfg, spec, plan, check, result)
                mounted = plan.targets()
            elif state == "unmounted":
                _unmount(cfg, obs, plan, bool(item.get("force")), check, result, jail_mounts, flags)
                mounted = []
            after_state = "mounted" if mounted and set(plan.targets()) <= set(mounted) else ("present" if not mounted else "partly mounted")
            result.after = {"state": after_state, "spec": spec.to_dict(), "mounts": mounted}
    result.changed = bool(result.actions)
    return result


class _no_lock:
    def __enter__(self) -> bool:
        return True

    def __exit__(self, *exc: object) -> None:
        return None


def _mounts_current(obs: _Observed) -> bool:
    """Whether the mount table read before the lock still holds for this jail (a few statx calls)."""
    if not all(is_mount_root(t) for t in obs.mounted):
        return False
    planned = obs.plan.targets() if obs.plan else []
    return all(t in obs.mounted for t in planned if is_mount_root(t))


def _stale(cfg: Config, obs: _Observed) -> bool:
    return registry.load_spec(cfg, obs.name) != obs.spec


def _wanted_spec(
    cfg: Config, item: dict[str, Any], obs: _Observed, host_uids: dict[int, str], flags: dict[str, str], claimed: dict[int, str]
) -> TenantSpec:
    name = item["name"]
    old = obs.spec
    if old is not None:
        for key in ("uid", "gid", "layout"):
            if item.get(key) is not None and item[key] != getattr(old, key):
                raise JailError(
                    f"changing the {key} of jail {name} from {getattr(old, key)!r} to {item[key]!r} is refused; "
                    "remove the jail (its home is kept) and create it again"
                )
        limits = dict(old.limits)
        for key, value in (item.get("limits") or {}).items():
            limits[key] = value
        fields = {k: (item[k] if item.get(k) is not None else getattr(old, k)) for k in SPEC_KEYS}
        fields["limits"] = limits
        spec = TenantSpec.build(cfg, name, **fields)
        spec.image_id = old.image_id
        if spec.image != old.image or not spec.image_id:
            spec.image_id = resolve_image(cfg, spec.image)
        return spec
    if item.get("uid") is None:
        raise JailError(f"uid is required to create jail {name}")
    spec = TenantSpec.build(cfg, name, **{k: item.get(k) for k in SPEC_KEYS})
    if spec.uid in host_uids:
        raise JailError(f"uid {spec.uid} of jail {name} is the host account {host_uids[spec.uid]!r}")
    owner = registry.uid_owner(cfg, spec.uid)
    if owner not in (None, name) and not leftovers.reservation_is_stale(cfg, spec.uid, owner):
        raise JailError(f"uid {spec.uid} of jail {name} already belongs to tenant {owner!r}")
    if not item.get("shared_gid"):
        _check_own_gid(cfg, spec, flags, claimed)
    claimed.setdefault(spec.uid, name)
    claimed.setdefault(spec.gid, name)
    home = obs.tenant_dir / "home" / name
    try:
        st = os.stat(home, follow_symlinks=False)
        if st.st_uid != spec.uid:
            raise JailError(
                f"the kept home {home} belongs to uid {st.st_uid}, not {spec.uid}; create {name} with uid {st.st_uid} or purge it"
            )
    except FileNotFoundError:
        pass
    spec.image_id = resolve_image(cfg, spec.image)
    return spec


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


def _plan_for(cfg: Config, spec: TenantSpec) -> MountPlan:
    return plan_mounts(cfg, spec, spec.image_id, image_rootfs(cfg, spec.image_id))


def _ensure_created(cfg: Config, spec: TenantSpec, obs: _Observed, check: bool, result: Result) -> MountPlan:
    name = spec.name
    tdir = obs.tenant_dir
    if obs.mounted and obs.plan is not None:
        # A mounted jail keeps the image it was mounted with; a new one applies at the next mount.
        spec.image_id = obs.plan.image
    plan = _plan_for(cfg, spec)
    _take_stale_uid(cfg, spec, check, result)
    if obs.spec is None and not tdir.exists():
        result.actions.append(f"create jail {name} (uid {spec.uid}, {spec.layout} layout, image {spec.image_id[:12]})")
        if not check:
            reserved = registry.reserve_uid(cfg, spec.uid, name)
            staging = cfg.tenants_dir / f"{leftovers.STAGING_PREFIX}{name}"
            try:
                with opened(open_trusted(cfg.tenants_dir, cfg.tenants_dir)) as tenants_fd:
                    remove_tree(tenants_fd, staging.name)
                    os.mkdir(staging.name, 0o755, dir_fd=tenants_fd)
                _populate(staging, spec, plan, check=False, result=None, fresh=True)
                os.rename(staging, tdir)
            except BaseException:
                # Nothing half-created stays behind (a kill here is cleared by the next run).
                with opened(open_trusted(cfg.tenants_dir, cfg.tenants_dir)) as tenants_fd:
                    remove_tree(tenants_fd, staging.name)
                if reserved:
                    registry.release_uid(cfg, spec.uid, name)
                raise
        return plan
    if not check:
        registry.reserve_uid(cfg, spec.uid, name)
    _populate(tdir, spec, plan, check, result)
    return plan


def _take_stale_uid(cfg: Config, spec: TenantSpec, check: bool, result: Result) -> None:
    """A uid reserved by an interrupted run of another name goes back to the pool (under that name's lock)."""
    owner = registry.uid_owner(cfg, spec.uid)
    if owner in (None, spec.name):
        return
    if not check:
        with tenant_lock(cfg, owner, wait=False) as locked:
            if not locked or not leftovers.reservation_is_stale(cfg, spec.uid, owner):
                raise JailError(f"uid {spec.uid} of jail {spec.name} already belongs to tenant {owner!r}")
            registry.release_uid(cfg, spec.uid, owner)
    result.actions.append(f"release uid {spec.uid} (left by an interrupted run of {owner})")


def _clear_strays(cfg: Config, name: str, strays: leftovers.Strays, keep_uid: int | None, check: bool, result: Result) -> None:
    """Clear what interrupted runs of this name left: its staging dir, uids it no longer keeps (holding its lock)."""
    if name in strays.staging:
        staging = f"{leftovers.STAGING_PREFIX}{name}"
        with opened(open_trusted(cfg.tenants_dir, cfg.tenants_dir)) as tenants_fd:
            if os.path.lexists(cfg.tenants_dir / staging):
                result.actions.append(f"remove {staging} (left by an interrupted create)")
                if not check:
                    remove_tree(tenants_fd, staging)
    for uid in sorted(strays.uids.get(name, [])):
        if uid != keep_uid and registry.uid_owner(cfg, uid) == name:
            result.actions.append(f"release uid {uid} (left by an interrupted run)")
            if not check:
                registry.release_uid(cfg, uid, name)


class _writing:
    """An OSError (a full disk) while writing path names the jail and the path."""

    def __init__(self, name: str, path: Path | str) -> None:
        self.name, self.path = name, path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if isinstance(exc, OSError) and not isinstance(exc, JailError):
            raise JailError(f"jail {self.name}: cannot write {self.path}: {exc.strerror}") from exc


def _populate(tdir: Path, spec: TenantSpec, plan: MountPlan, check: bool, result: Result | None, fresh: bool = False) -> None:
    """Make every directory and file of a tenant; repairs owner and mode without following symlinks.

    fresh: tdir is a private staging directory that appears by one rename when
    done, so its files are written in place rather than each through a temp file.
    """

    def note(changed: bool, what: str) -> None:
        if changed and result is not None:
            result.actions.append(what)

    name, uid, gid = spec.name, spec.uid, spec.gid
    with _writing(name, tdir), opened(os.open(tdir, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)) as tfd:
        note(ensure_dir(tfd, "home", 0o755, 0, 0, check, f"{name}/home"), f"fix {name}/home")
        note(ensure_dir(tfd, "etc", 0o755, 0, 0, check, f"{name}/etc"), f"fix {name}/etc")
        if spec.layout == "bind":
            note(ensure_dir(tfd, "tmp", 0o1777, 0, 0, check, f"{name}/tmp"), f"fix {name}/tmp")
        else:
            note(ensure_dir(tfd, "upper", 0o700, uid, gid, check, f"{name}/upper"), f"fix {name}/upper")
            note(ensure_dir(tfd, "work", 0o700, uid, gid, check, f"{name}/work"), f"fix {name}/work")
        if check and not (tdir / "home").is_dir():
            note(True, f"create {name}/home/{name}")
        else:
            with opened(os.open("home", os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=tfd)) as hfd:
                note(
                    ensure_dir(hfd, name, 0o700, uid, gid, check, f"{name}/home/{name}"),
                    f"fix home of {name} (owner {uid}:{gid}, mode 0700)",
                )
    files = (
        ("etc/passwd", render_passwd(spec)),
        ("etc/group", render_group(spec)),
        ("plan", plan.render()),
        ("tenant.json", spec.to_json()),
    )
    for rel, text in files:
        path = tdir / rel
        if check:
            try:
                same = path.read_text() == text
            except (FileNotFoundError, NotADirectoryError):
                same = False
            note(not same, f"write {name}/{rel}")
        elif fresh:
            with _writing(name, path):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
                with os.fdopen(fd, "w") as fh:
                    fh.write(text)
        else:
            with _writing(name, path):
                note(atomic_write(path, text, 0o644, durable=False), f"write {name}/{rel}")


def _mount(cfg: Config, spec: TenantSpec, plan: MountPlan, check: bool, result: Result) -> MountPlan:
    present = [is_mount_root(t) for t in plan.targets()]
    if all(present):
        return plan
    if not any(present) and spec.image == "current":
        newest = resolve_image(cfg, "current")
        if newest != spec.image_id:
            result.actions.append(f"switch {spec.name} to image {newest[:12]} (was {spec.image_id[:12]})")
            spec.image_id = newest
            plan = _plan_for(cfg, spec)
            if not check:
                tdir = cfg.tenant_dir(spec.name)
                for rel, text in (("plan", plan.render()), ("tenant.json", spec.to_json())):
                    with _writing(spec.name, tdir / rel):
                        atomic_write(tdir / rel, text, 0o644)
    # Without its root every piece is mounted again (stale leftovers are cleared first).
    missing = [m.target for m, ok in zip(plan.mounts, present, strict=True) if not ok or not present[0]]
    result.actions.append(f"mount {spec.name}: {' '.join(missing)}")
    if not check:
        mount_jail(cfg, plan)
        touch_lastuse(cfg, spec.name)
    return plan


def _unmount(
    cfg: Config,
    obs: _Observed,
    plan: MountPlan | None,
    force: bool,
    check: bool,
    result: Result,
    mounts: list[MountInfo] | None,
    flags: dict[str, str],
) -> None:
    if not obs.mounted:
        return
    sessions = live_sessions(cfg, obs.name, prune=not check)
    if sessions and not force:
        raise JailError(
            f"jail {obs.name} has {len(sessions)} live session(s) (pids {' '.join(map(str, sessions))}); "
            f"set {flags['force']} to unmount it anyway"
        )
    result.actions.append(f"unmount {obs.name}: {' '.join(reversed(obs.mounted))}")
    if not check:
        root = plan.root if plan else cfg.jail_root(obs.name)
        unmount_jail(root, mounts, detach=force)


def _remove(
    cfg: Config,
    obs: _Observed,
    purge: bool,
    force: bool,
    check: bool,
    result: Result,
    mounts: list[MountInfo] | None,
    strays: leftovers.Strays,
    flags: dict[str, str],
) -> None:
    name = obs.name
    tdir = obs.tenant_dir
    uid = leftovers.kept_uid(cfg, name, obs.spec.uid if obs.spec else None)
    if obs.mounted or obs.spec is not None or purge:
        sessions = live_sessions(cfg, name, prune=not check)
        if sessions and purge:
            raise JailError(f"jail {name} has {len(sessions)} live session(s); purging it is refused")
        _unmount(cfg, obs, obs.plan, force, check, result, mounts, flags)
    # What interrupted runs left; a kept home keeps its uid.
    _clear_strays(cfg, name, strays, uid, check, result)
    if purge:
        _remove_cgroups(cfg, name, check, result)
    with opened(open_trusted(cfg.tenants_dir, cfg.tenants_dir)) as tenants_fd:
        if not os.path.lexists(tdir):
            if purge:
                _release(cfg, name, uid, check, result)
                _remove_run_records(cfg, name, check, result)
            return
        with opened(os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=tenants_fd)) as tfd:
            # The plan goes first: without it the launcher refuses the jail.
            for rel in ("plan", "tenant.json", "etc"):
                if os.path.lexists(tdir / rel):
                    result.actions.append(f"remove {name}/{rel}")
                    if not check:
                        remove_tree(tfd, rel)
            if purge:
                for rel in ("home", "tmp", "upper", "work"):
                    if os.path.lexists(tdir / rel):
                        result.actions.append(f"purge {name}/{rel}")
                        if not check:
                            remove_tree(tfd, rel)
        if purge:
            result.actions.append(f"remove {tdir}")
            if not check:
                os.rmdir(name, dir_fd=tenants_fd)
    root = cfg.jail_root(name)
    if root.is_dir() and not root.is_symlink():
        result.actions.append(f"remove {root}")
        if not check:
            try:
                os.rmdir(root)  # never a recursive removal under the jails dir
            except OSError as exc:
                raise JailError(f"cannot remove jail root {root}: {exc.strerror}") from exc
    if purge:
        _release(cfg, name, uid, check, result)
        _remove_run_records(cfg, name, check, result)


def _release(cfg: Config, name: str, uid: int | None, check: bool, result: Result) -> None:
    """Give the tenant's uid back (only on purge: a kept home keeps its uid reserved)."""
    if uid is not None and registry.uid_owner(cfg, uid) == name:
        result.actions.append(f"release uid {uid}")
        if not check:
            registry.release_uid(cfg, uid, name)


def _remove_cgroups(cfg: Config, name: str, check: bool, result: Result) -> None:
    """A purged tenant's cgroups (v1 and v2); the live-session check before makes them empty."""
    paths = leftovers.tenant_cgroups(cfg, name, leftovers.CGROUP_ROOT)
    if paths:
        result.actions.append(f"remove the cgroups of {name}: {' '.join(map(str, paths))}")
        if not check:
            for path in paths:
                leftovers.remove_cgroup(path)


def _remove_run_records(cfg: Config, name: str, check: bool, result: Result) -> None:
    """A purged tenant's ended session records and last-use stamp (its lock goes last, by the caller)."""
    for path in leftovers.run_records(cfg, name):
        result.actions.append(f"remove {path}")
        if not check:
            leftovers.remove_run_record(path)


def _syncfs(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        syncfs(fd)
    finally:
        os.close(fd)


def mount_tenant(cfg: Config, name: str, lock_held: bool = False) -> Result:
    """The launcher's mount step: mount a jail per its spec (repairing it), nothing else."""
    check_name(name)
    spec = registry.load_spec(cfg, name)
    if spec is None:
        raise JailError(f"unknown jail {name!r}")
    result = Result(name=name, state="mounted")
    lock = _no_lock() if lock_held else tenant_lock(cfg, name)
    with lock:
        plan = registry.load_plan(cfg, name) or _plan_for(cfg, spec)
        _mount(cfg, spec, plan, False, result)
    result.changed = bool(result.actions)
    return result


def jail_facts(cfg: Config, pattern: str = "*", disk_usage: bool = False) -> list[dict[str, Any]]:
    """Facts for every jail matching pattern: one read of each spec, one read of the mount table."""
    mounts = jails_with_mounts(read_mountinfo(), str(cfg.jails_dir))
    facts = []
    for name in registry.list_tenants(cfg, pattern):
        spec = registry.load_spec(cfg, name)
        if spec is None:
            continue
        mounted = {m.target for m in mounts.get(name, [])}
        root = cfg.jail_root(name)
        targets = [m.target for m in plan_mounts(cfg, spec, spec.image_id, Path("/")).mounts]
        entries = [{"target": t, "mounted": host_target(root, t) in mounted} for t in targets]
        sessions = live_sessions(cfg, name, prune=False) if mounted else []
        fact = {
            "name": name,
            "uid": spec.uid,
            "gid": spec.gid,
            "layout": spec.layout,
            "image": spec.image,
            "image_id": spec.image_id,
            "hostname": spec.hostname,
            "net": spec.net,
            "limits": spec.limits,
            "mounted": all(e["mounted"] for e in entries),
            "mounts": entries,
            "sessions": sessions,
            "root": str(root),
        }
        if disk_usage:
            fact["disk_usage"] = _disk_usage(cfg.tenant_dir(name))
        facts.append(fact)
    return facts


def _disk_usage(path: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for entry in dirnames + filenames:
            try:
                total += os.lstat(os.path.join(dirpath, entry)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


__all__ = ["LIMIT_KEYS", "STATES", "JailError", "Result", "converge", "converge_many", "jail_facts", "mount_tenant"]
