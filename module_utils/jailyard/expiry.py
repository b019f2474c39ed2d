"""The expiry pass: unmount jails nobody entered since the previous pass.

Idleness comes from the launcher's records (last use, live sessions), not from
the kernel's MNT_EXPIRE marks: a session runs in its own mount namespace on a
clone of the jail's tree, which MNT_EXPIRE cannot see. Nothing is ever deleted.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import syslog
import threading
import time

from .config import Config
from .errors import JailError
from .kernel import OVERLAYFS_SUPER_MAGIC, fs_magic, is_mount_root
from .lease import release as release_lease
from .lease import renew as renew_lease
from .lease import settings_for
from .leftovers import rmdir_cgroup
from .lock import tenant_lock
from .mount import detach_jail
from .mountinfo import MountInfo
from .mounttable import jail_mounts
from .plan import is_valid_name
from .service import service_running
from .sessions import last_use_ns, live_sessions, tenants_with_session_records, touch_lastuse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .lease import Settings as LeaseSettings


@dataclasses.dataclass
class ExpiryReport:
    previous_pass: float | None
    started: float
    mounted: int = 0
    unmounted: list[str] = dataclasses.field(default_factory=list)
    kept_in_use: list[str] = dataclasses.field(default_factory=list)
    kept_busy: list[str] = dataclasses.field(default_factory=list)
    errors: dict[str, str] = dataclasses.field(default_factory=dict)
    stale_cgroups: list[str] = dataclasses.field(default_factory=list)
    leases_renewed: list[str] = dataclasses.field(default_factory=list)
    leases_lost: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def expire_pass(cfg: Config, log: bool = True) -> ExpiryReport:
    """One pass over the mounted jails.

    Work is per jail, not per mount: the jail roots are listed once and each is
    checked with one statx; the tenants with session records are listed once,
    so an idle jail costs a stat of its last-use stamp before its lock and the
    fresh checks (its session records, its stamp) under the lock, each idle
    jail taken off in one umount2 (overlay jails by one of a few threads, THREADS). The
    mounts below jail roots are asked of the kernel (jailyard.mounttable) only
    if a half-mounted jail has to be cleaned up. The report lists jails in
    name order whichever thread took them.
    """
    stamp = cfg.run_dir / "expiry.stamp"
    # Start time from the kernel's file clock, the same clock as the launcher's
    # last-use stamps (utimensat UTIME_NOW), which lags time.time() by up to a tick.
    cfg.run_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    pending = cfg.run_dir / "expiry.stamp.new"
    fd = os.open(pending, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        os.utime(fd)
        started_ns = os.fstat(fd).st_mtime_ns
        started = started_ns / 1e9
    finally:
        os.close(fd)
    clock = time.monotonic()
    try:
        previous: int | None = os.stat(stamp).st_mtime_ns
    except FileNotFoundError:
        previous = None
    report = ExpiryReport(previous_pass=None if previous is None else previous / 1e9, started=started)
    mounted, partial = _mounted_jails(cfg)
    report.mounted = len(mounted) + len(partial)
    by_jail: dict[str, list[MountInfo]] = {}
    if partial:
        by_jail = jail_mounts(str(cfg.jails_dir))
    with_sessions = tenants_with_session_records(cfg)
    with_services = _names_in(f"{cfg.run_dir}/services")
    names = sorted(mounted + partial)
    if previous is None:
        report.kept_in_use = names
        names = []
    leases = settings_for(cfg.path)
    step = _Step(cfg, previous or 0, started_ns, with_sessions, with_services, by_jail, frozenset(partial), leases)
    # Overlay jails in a few threads, the others in this one (see THREADS).
    jails = str(cfg.jails_dir)
    overlays = [n for n in names if fs_magic(f"{jails}/{n}") == OVERLAYFS_SUPER_MAGIC]
    outcomes = _run_steps(step, overlays, THREADS if len(overlays) >= THREADS_FROM else 1)
    if len(overlays) < len(names):
        is_overlay = frozenset(overlays)
        outcomes.update(_run_steps(step, [n for n in names if n not in is_overlay], 1))
    for name in names:
        kind, error = outcomes[name]
        if kind == "error":
            report.errors[name] = error
        else:
            getattr(report, kind).append(name)
    if leases is not None:
        _renew_leases(cfg, leases, [n for n in sorted(mounted + partial) if n not in report.unmounted], report, step)
    ended = step.ended
    report.stale_cgroups = remove_session_cgroups(cfg, ended)
    os.rename(pending, stamp)
    report.seconds = time.monotonic() - clock
    if log:
        _log(report)
    return report


# Idle overlay jails are taken off by a few threads: the unmount of an overlay waits in the kernel
# (its teardown, run as the call returns), and the waits of concurrent unmounts overlap. A bind
# jail's unmount is a few microseconds of kernel work between short syscalls, and threads only
# contend for the interpreter lock. Measured on 2 cores, 10,000 idle jails, the run dir on a tmpfs
# as a node's /run: bind, one thread 0.45-0.56 s, four 1.23-1.28 s; overlay, one thread 1.6-1.9 s,
# four 1.31-1.33 s. The jail root's filesystem type (one statfs) says which kind a jail is.
THREADS = 4
THREADS_FROM = 64  # fewer idle jails: one thread, no start-up cost


class _Step:
    """What the pass does for one jail, in whichever thread: check, lock, check again, detach."""

    def __init__(
        self,
        cfg: Config,
        previous: int,
        started_ns: int,
        with_sessions: frozenset[str],
        with_services: frozenset[str],
        by_jail: dict[str, list[MountInfo]],
        partial: frozenset[str],
        leases: LeaseSettings | None = None,
    ) -> None:
        self.cfg, self.previous, self.started_ns, self.leases = cfg, previous, started_ns, leases
        self.with_sessions, self.with_services, self.by_jail, self.partial = with_sessions, with_services, by_jail, partial
        self.jails, self.sessions, self.services = str(cfg.jails_dir), f"{cfg.run_dir}/sessions", f"{cfg.run_dir}/services"
        self.ended: list[tuple[str, int]] = []  # sessions whose launcher left its record: killed

    def __call__(self, name: str) -> tuple[str, str]:
        """(report list, error): kept_in_use, kept_busy, unmounted, or error and why."""
        cfg, ended = self.cfg, self.ended
        # Before the lock, from the listings of tenants with session records and services: a jail
        # whose records appear after them is seen under the lock, where every check is made again.
        if _used_since(cfg, name, self.previous, self.started_ns, ended, name in self.with_sessions, name in self.with_services):
            return "kept_in_use", ""
        # Never wait on a jail someone is entering or changing: it is in use.
        with tenant_lock(cfg, name, exclusive=True, wait=False) as locked:
            if not locked:
                return "kept_busy", ""
            # Fresh: a session record or service started since the listings shows up as a directory or file.
            has_sessions = name in self.with_sessions or os.access(f"{self.sessions}/{name}", os.F_OK)
            has_service = name in self.with_services or os.access(f"{self.services}/{name}", os.F_OK)
            if _used_since(cfg, name, self.previous, self.started_ns, ended, has_sessions, has_service):
                return "kept_in_use", ""
            try:
                self.take_off(name)
            except JailError as exc:
                return "error", str(exc)
            if self.leases is not None:
                release_lease(cfg.tenants_dir, name, self.leases)  # under the lock: no mount of it meanwhile
            return "unmounted", ""

    def take_off(self, name: str) -> None:
        """Detach the jail and what goes with it (its volume, its private network); the caller holds its lock."""
        cfg = self.cfg
        detach_jail(f"{self.jails}/{name}", self.by_jail.get(name, []), root_mounted=name not in self.partial)
        if os.access(f"{cfg.tenants_dir}/{name}/volume.img", os.F_OK):
            from .volume import unmount as unmount_volume  # a volume goes with the jail (autoclear frees its loop device)

            unmount_volume(str(cfg.tenants_dir), name)
        if os.access(f"{cfg.run_dir}/net/{name}.json", os.F_OK):
            from .network import tear_down  # issue 17: a private network goes with the mounts

            tear_down(cfg, name, release_static=False)


def _names_in(directory: str) -> frozenset[str]:
    """The names in a run_dir directory (sessions/, services/), in one listing; none if it is missing."""
    try:
        return frozenset(os.listdir(directory))
    except FileNotFoundError:
        return frozenset()


def _run_steps(step: _Step, names: list[str], threads: int) -> dict[str, tuple[str, str]]:
    """step(name) for every name, in `threads` threads; an exception in any is raised here."""
    if threads <= 1:
        return {name: step(name) for name in names}
    outcomes: dict[str, tuple[str, str]] = {}
    failures: list[BaseException] = []
    todo = iter(names)
    take = threading.Lock()

    def work() -> None:
        try:
            while not failures:
                with take:
                    name = next(todo, None)
                if name is None:
                    return
                outcomes[name] = step(name)
        except BaseException as exc:  # noqa: BLE001 - raised again in the calling thread
            failures.append(exc)

    workers = [threading.Thread(target=work, name=f"jailyard-expire-{i}") for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if failures:
        raise failures[0]
    return outcomes


def remove_session_cgroups(cfg: Config, ended: list[tuple[str, int]], root: str = "/sys/fs/cgroup") -> list[str]:
    """Remove the cgroups (<ctrl>/<cgroup_name>/<tenant>/s<pid>) of sessions whose launcher left its record.

    jailrun removes its session's cgroup and record when the session ends; one
    killed with SIGKILL cannot (its session dies with it: PID 1 has a
    parent-death signal), so the pass that finds its record ended removes them.
    A pid that is a running jailrun again belongs to a new session; rmdir
    refuses a cgroup that still holds processes. Returns the paths removed.
    """
    removed = []
    for name, pid in ended:
        if _is_jailrun(pid):
            continue
        for path in sorted(glob.glob(f"{root}/*/{cfg.cgroup_name}/{name}/s{pid}") + glob.glob(f"{root}/{cfg.cgroup_name}/{name}/s{pid}")):
            if rmdir_cgroup(path):
                removed.append(path)
    return removed


def _is_jailrun(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip() == "jailrun"
    except OSError:
        return False


def _renew_leases(cfg: Config, leases: LeaseSettings, names: list[str], report: ExpiryReport, step: _Step) -> None:
    """Renew this node's lease of every jail still mounted here (docs/cluster.md), each under
    its lock; one whose lock is taken is being mounted or changed, and that renews it. A jail
    mounted here whose lease is not this node's (it ran out and another node took it) is
    reported in leases_lost and logged, and taken off when nothing runs in it (no live session,
    no service), however recently it was used: warm launches do not look at the lease, so a
    jail left mounted would go on taking them beside the holder's; unmounted, the next launch
    here is cold and refused naming the holder. Its lease is not released (it is not this
    node's), and a live session here is never ended: that jail stays, reported again."""
    for name in names:
        with tenant_lock(cfg, name, exclusive=True, wait=False) as locked:
            if not locked:
                continue
            if renew_lease(cfg.tenants_dir, name, leases):
                report.leases_renewed.append(name)
                continue
            report.leases_lost.append(name)
            pids: list[int] = []
            live = live_sessions(cfg, name, ended=pids)
            step.ended += [(name, pid) for pid in pids]
            if live or service_running(cfg, name):
                continue
            try:
                step.take_off(name)
            except JailError as exc:
                report.errors[name] = str(exc)
                continue
            report.unmounted.append(name)


def _mounted_jails(cfg: Config) -> tuple[list[str], list[str]]:
    """Jails whose root is mounted, and jails with only pieces mounted (root gone, home left)."""
    mounted, partial = [], []
    jails = str(cfg.jails_dir)
    try:
        entries = os.scandir(jails)
    except FileNotFoundError:
        return [], []
    with entries:
        for entry in entries:
            if not is_valid_name(entry.name):
                continue
            root = f"{jails}/{entry.name}"
            if is_mount_root(root):
                mounted.append(entry.name)
            elif is_mount_root(f"{root}/home"):
                partial.append(entry.name)
    return mounted, partial


def _used_since(
    cfg: Config, name: str, since_ns: int, now_ns: int, ended: list[tuple[str, int]], sessions: bool = True, service: bool = True
) -> bool:
    """Whether the jail was used since since_ns or is in use (a live session, or its service loop:
    between two runs, in back-off, it is in use too). sessions=False or service=False skips
    reading those records, when a listing just made shows the tenant has none."""
    live: list[int] = []
    if sessions:
        pids: list[int] = []
        live = live_sessions(cfg, name, ended=pids)
        ended += [(name, pid) for pid in pids]
    if live or (service and service_running(cfg, name)):
        # In use now: it counts as used just after this pass began, so it must then idle a full interval.
        touch_lastuse(cfg, name, at_ns=now_ns + 1)
        return True
    return last_use_ns(cfg, name) > since_ns


def _log(report: ExpiryReport) -> None:
    syslog.openlog("jailyard-expire", 0, syslog.LOG_AUTHPRIV)
    for name in report.unmounted:
        syslog.syslog(syslog.LOG_INFO, f"unmounted idle jail {name}")
    for name, err in report.errors.items():
        syslog.syslog(syslog.LOG_WARNING, f"could not unmount jail {name}: {err}")
    for name in report.leases_lost:
        syslog.syslog(syslog.LOG_WARNING, f"jail {name} is mounted here but its lease is another node's (or released)")
    for path in report.stale_cgroups:
        syslog.syslog(syslog.LOG_INFO, f"removed the cgroup of a killed session: {path}")
    syslog.closelog()
