"""Converge jails to a wanted state: observe, plan, apply.

For each jail: observe the node into plain data (observe.py), compute the
steps from observed x wanted (planner.py, pure), and apply them under the
tenant's lock (apply.py); `actions` and the diff come from the plan, and check
mode is "do not apply". One tenant or ten thousand: `converge_many` reads the
host accounts once, checks each jail's planned mounts with one statx each (never
the whole mount table), and validates every item (wanted.py) before it changes
anything.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from . import forked, leftovers, network, quota, registry
from .apply import apply_steps
from .config import Config
from .errors import JailError
from .gcpause import collector_paused
from .image import resolve_image
from .kernel import is_mount_root, mount_roots, syncfs
from .lock import tenant_lock
from .mount import Anchors
from .observe import Observed, is_current, observe, observe_details, read_mounts
from .plan import host_target
from .planner import mount_plan, plan_jail, plan_mount
from .service import status as service_status
from .sessions import live_sessions, tenants_with_session_records
from .spec import LIMIT_KEYS, check_name
from .usage import tenant_usage
from .wanted import MODULE_FLAGS, STATES, Wanted, host_uids, normalize, wanted


class _MadeWhenRead:
    """An attribute holding a value or a function making it: made (once) when first read."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = f"_{name}"

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        value = getattr(obj, self.slot)
        if callable(value):
            value = value()
            setattr(obj, self.slot, value)
        return value

    def __set__(self, obj: Any, value: Any) -> None:
        setattr(obj, self.slot, value)


class Result:
    """One jail's outcome. `before` and `after` (state, spec, mounts) are made when first read: a
    bulk run reports only the changed jails', and 10,000 unchanged ones need not copy their specs."""

    before = _MadeWhenRead()
    after = _MadeWhenRead()

    def __init__(
        self,
        name: str,
        state: str,
        changed: bool = False,
        actions: list[str] | None = None,
        before: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
        after: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.name = name
        self.state = state
        self.changed = changed
        self.actions = actions if actions is not None else []
        self.before = before if before is not None else {}
        self.after = after if after is not None else {}

    def as_dict(self) -> dict[str, Any]:
        return copy.deepcopy(
            {
                "name": self.name,
                "state": self.state,
                "changed": self.changed,
                "actions": self.actions,
                "before": self.before,
                "after": self.after,
            }
        )

    def __repr__(self) -> str:
        return f"Result(name={self.name!r}, state={self.state!r}, changed={self.changed!r}, actions={self.actions!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Result) and self.as_dict() == other.as_dict()


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


def converge(cfg: Config, params: dict[str, Any], check: bool = False, flags: dict[str, str] | None = None) -> Result:
    """Bring one jail to params['state'] (default mounted)."""
    return converge_many(cfg, [params], check=check, flags=flags)[0]


@collector_paused
def converge_many(
    cfg: Config,
    items: Iterable[dict[str, Any]],
    check: bool = False,
    exclusive: bool = False,
    defaults: dict[str, Any] | None = None,
    flags: dict[str, str] | None = None,
) -> list[Result]:
    """Converge many jails in one pass; with exclusive, unlisted jails are removed (homes kept unless purge).

    A failure while applying raises PartialFailure, which tells what changed,
    which jail failed and why, and which were not attempted.
    """
    defaults = dict(defaults or {})
    flags = {**MODULE_FLAGS, **(flags or {})}
    items = normalize(list(items), defaults)
    strays = leftovers.Strays(cfg, scan=exclusive)
    quota.forget()  # whether the tenants dir has project quotas: read once per run
    if exclusive:
        # Unlisted tenants, and names only an interrupted run left something of.
        listed = {item["name"] for item in items}
        for name in sorted(set(registry.list_tenants(cfg)) | strays.orphans()):
            if name not in listed:
                items.append(
                    {"name": name, "state": "absent", "purge": defaults.get("purge", False), "force": defaults.get("force", False)}
                )
    # Whether each planned target is mounted: one statx each, for one jail or ten thousand (no read
    # of the whole mount table, 50,000 lines then); the mounts below a jail are listed only to
    # unmount it (mount.unmount_jail: mounttable.mounts_below).
    hosts = host_uids()
    # Validate every item before anything changes.
    observed = [observe(cfg, item["name"]) for item in items]  # the spec alone: the plan and mounts under each lock
    if not strays.uids_read and any(
        o.spec is None or (i["state"] == "absent" and i.get("purge")) for i, o in zip(items, observed, strict=True)
    ):
        strays.read_uids(cfg)  # a create, a purge or a name without a spec may have uids an interrupted run left
    claimed: dict[int, str] = {}  # uids and gids of the jails this run creates
    wants = [wanted(cfg, item, obs, hosts, flags, claimed) for item, obs in zip(items, observed, strict=True)]
    done: dict[int, Result] = {}  # by the item's index
    anchors = Anchors(cfg)  # the jails, tenants and images directories, opened once for every mount of the run
    work = list(zip(range(len(wants)), observed, wants, strict=True))
    ctx = (cfg, strays, flags, check, anchors)
    try:
        failure = _converge_forked(work, done, ctx) if _forks(observed, wants, check) else _converge_in_order(work, done, ctx)
        if failure is not None:
            index, error = failure
            later = [w.name for i, w in enumerate(wants) if i not in done and i != index]
            raise PartialFailure(wants[index].name, error, [done[i] for i in sorted(done)], later)
    finally:
        anchors.close()
        if not check and any(r.changed for r in done.values()):
            _syncfs(cfg.tenants_dir)
    return [done[i] for i in range(len(wants))]


# A bulk run of forked.FORK_FROM jails or more, on a node with two or more CPUs, converges every
# second jail in a forked copy of this process while this one converges the others (issue 21: the
# work a jail takes is mostly Python, so threads would take turns on the interpreter lock). Each
# jail is still observed, planned and changed under its own lock, as when two runs converge
# different jails at once, and the run still stops at the first failure, in both processes (a
# shared byte). Not with a private network in the run (the first such mount makes the node's
# bridge and table: one process), nor in check mode.
_Work = list[tuple[int, Observed, Wanted]]


def _forks(observed: list[Observed], wants: list[Wanted], check: bool) -> bool:
    if check or not forked.worth_it(len(wants)):
        return False
    specs = [o.spec for o in observed] + [w.spec for w in wants]
    return not any(spec is not None and spec.net == "private" for spec in specs)


def _converge_in_order(work: _Work, done: dict[int, Result], ctx: tuple, stop: Any = None) -> tuple[int, str] | None:
    """Converge each jail in turn into done (by index); at the first failure, (its index, why).
    stop: a byte shared with the other process of a forked run, set by the first to fail."""
    cfg, strays, flags, check, anchors = ctx
    for index, obs, want in work:
        if stop is not None and stop[0]:
            return None
        try:
            done[index] = _converge_one(cfg, obs, want, strays, flags, check, anchors)
        except JailError as exc:
            error = str(exc)
        except OSError as exc:
            error = f"jail {want.name}: {exc.filename or 'I/O'}: {exc.strerror}"
        else:
            continue
        if stop is not None:
            stop[0] = 1
        return index, error
    return None


def _converge_forked(work: _Work, done: dict[int, Result], ctx: tuple) -> tuple[int, str] | None:
    """_converge_in_order for every second jail in a child process (forked.split), for the others
    here, at once. The child hands back its results, before and after made there (the
    observations are its own); whichever half fails first stops the other (a shared byte)."""
    import mmap

    stop = mmap.mmap(-1, 1)  # MAP_SHARED | MAP_ANONYMOUS: one byte both processes see

    def theirs() -> tuple[list[tuple], tuple[int, str] | None]:
        got: dict[int, Result] = {}
        failure = _converge_in_order(work[1::2], got, ctx, stop)
        return [(i, r.name, r.state, r.changed, r.actions, r.before, r.after) for i, r in got.items()], failure

    def interrupted() -> None:
        stop[0] = 1

    try:
        failure, (made, failed_there) = forked.split(
            lambda: _converge_in_order(work[0::2], done, ctx, stop), theirs, "this bulk run", interrupted
        )
    finally:
        stop.close()
    for index, name, state, changed, actions, before, after in made:
        done[index] = Result(name=name, state=state, changed=changed, actions=actions, before=before, after=after)
    failures = sorted(f for f in (failure, failed_there) if f is not None)
    if len(failures) == 2:
        (first, error), (other, why) = failures
        return first, f"{error} (and {work[other][2].name}: {why})"
    return failures[0] if failures else None


def _converge_one(
    cfg: Config,
    obs: Observed,
    want: Wanted,
    strays: leftovers.Strays,
    flags: dict[str, str],
    check: bool,
    anchors: Anchors | None = None,
) -> Result:
    """Observe the rest, plan, and (unless check) apply, holding the jail's lock."""
    result = Result(name=want.name, state=want.state, before=obs.summary)
    lock = _no_lock() if check else tenant_lock(cfg, want.name)
    with lock:
        if not check and not is_current(cfg, obs):
            # Someone changed it between our read and the lock: observe again.
            obs = observe(cfg, want.name)
        read_mounts(cfg, obs)
        image = want.spec.image if want.spec is not None and want.state == "mounted" else None
        uid = want.spec.uid if want.spec is not None else None
        observe_details(cfg, obs, strays, check, want.purge and want.state == "absent", image, uid=uid)
        planned = plan_jail(cfg, obs, want, flags)
        if not check:
            apply_steps(cfg, want.name, planned.steps, lock, anchors)
    result.actions = planned.actions
    result.after = planned.after_maker
    result.changed = bool(result.actions)
    return result


class _no_lock:
    def __enter__(self) -> bool:
        return True

    def __exit__(self, *exc: object) -> None:
        return None


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
        plan = registry.load_plan(cfg, name) or mount_plan(cfg, spec)
        present = [is_mount_root(t) for t in plan.targets()]
        current = resolve_image(cfg, "current") if spec.image == "current" and not any(present) else None
        net_ok = network.is_up(cfg, name, spec.net, spec.limits)  # issue 17: a private network is repaired too
        steps = plan_mount(cfg, spec, plan, present, current, net_ok)[1]
        apply_steps(cfg, name, steps, lock)
    result.actions = [s.action for s in steps if s.action]
    result.changed = bool(result.actions)
    return result


@collector_paused
def jail_facts(cfg: Config, pattern: str = "*", disk_usage: bool = False, usage: bool = False) -> list[dict[str, Any]]:
    """Facts for every jail matching pattern: one read of each spec, one statx per planned mount.

    No read of the mount table (50,000 lines with 10,000 jails mounted): whether
    a target is mounted is one statx of it (kernel.is_mount_root, as the
    launcher checks). The targets depend on the layout alone, so the plan is
    made once per layout; session records are read only for mounted jails
    whose tenant has any (one listing of the sessions directory).
    """
    with_sessions = tenants_with_session_records(cfg)
    try:
        with_service = frozenset(os.listdir(f"{cfg.run_dir}/services"))  # service state files: one listing, not a try per tenant
    except FileNotFoundError:
        with_service = frozenset()
    targets_of: dict[str, list[tuple[str, str]]] = {}  # layout -> (target, its path below the jail root)
    jails = str(cfg.jails_dir)

    def fact_of(name: str) -> dict[str, Any] | None:
        spec = registry.load_spec(cfg, name)
        if spec is None:
            return None  # a directory without a spec (list_tenants leaves it out too)
        targets = targets_of.get(spec.layout)
        if targets is None:
            plan = spec.mount_plan(cfg, spec.image_id, Path("/"))
            targets = targets_of[spec.layout] = [(m.target, host_target("", m.target)) for m in plan.mounts]
        root = f"{jails}/{name}"
        flags = mount_roots([root + below for _t, below in targets])
        entries = [{"target": t, "mounted": m} for (t, _below), m in zip(targets, flags, strict=True)]
        mounted = True in flags
        sessions = live_sessions(cfg, name, prune=False) if mounted and name in with_sessions else []
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
            "mounted": False not in flags,
            "mounts": entries,
            "sessions": sessions,
            "root": root,
            "service": spec.service,
            "service_status": service_facts(cfg, name) if name in with_service else {"running": False},
            # Issue 15, the registry: what `jailrun NAME` runs, and the package installed (package.py's record), read from the spec.
            "program": spec.program_argv(),
            "package": spec.package or None,
        }
        if network.is_private(spec.net):
            record = network.read_record(cfg, name) or {}  # issue 17: its addresses while mounted
            fact["net_address"] = record.get("address")
            fact["net_address6"] = record.get("address6")
        if disk_usage:
            fact["disk_usage"] = _disk_usage(cfg.tenant_dir(name))
        if usage:
            fact["usage"] = tenant_usage(cfg, name, spec.uid, spec.limits)  # beancounters (usage.py)
        return fact

    names = registry.list_names(cfg, pattern)
    # From forked.FORK_FROM jails on a node with two CPUs or more, every second one in a forked
    # process (forked.py): the same facts, in the same order, in about two thirds of the time.
    facts = forked.map_halves(fact_of, names) if forked.worth_it(len(names)) else [fact_of(name) for name in names]
    return [fact for fact in facts if fact is not None]


SERVICE_FACTS = ("state", "failures", "starts", "last_exit", "session", "next_start", "pid", "program")


def service_facts(cfg: Config, name: str) -> dict[str, Any]:
    """The tenant's service loop as jail_info and jailctl show it: running or not, and while it runs its
    state (running, backoff), failures in a row, starts, last exit status, session pid, next start."""
    st = service_status(cfg, name)
    if st is None:
        return {"running": False}
    return {"running": True, **{k: st.get(k) for k in SERVICE_FACTS}}


def _disk_usage(path: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for entry in dirnames + filenames:
            try:
                total += os.lstat(os.path.join(dirpath, entry)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


__all__ = ["LIMIT_KEYS", "STATES", "JailError", "PartialFailure", "Result", "converge", "converge_many", "jail_facts", "mount_tenant"]
