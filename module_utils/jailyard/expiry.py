"""The expiry pass: unmount jails nobody entered since the previous pass.

Idleness comes from the launcher's records (last use, live sessions), not from
the kernel's MNT_EXPIRE marks: a session runs in its own mount namespace on a
clone of the jail's tree, which MNT_EXPIRE cannot see. Nothing is ever deleted.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import posix
import syslog
import threading
import time

from .config import Config
from .errors import JailError
from .gcpause import collector_paused
from .kernel import is_mount_root, umount
from .lease import release as release_lease
from .lease import renew as renew_lease
from .lease import settings_for
from .leftovers import rmdir_cgroup
from .lock import EXCLUSIVE_NOWAIT, tenant_lock
from .lock import take as take_lock
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


@collector_paused
def expire_pass(cfg: Config, log: bool = True) -> ExpiryReport:
    """One pass over the mounted jails.

    Work is per jail, not per mount: the jail roots are listed once, each with
    one lstat; what run_dir holds (session records, service loops, volumes,
    networks) is listed once. An idle jail then costs its lock, one stat of its
    last-use stamp under it and one umount2 (overlay jails by one of a few
    threads, THREADS): whoever enters or mounts a jail stamps its last use
    before letting go of its lock, so the stamp alone tells a jail used since
    the listings. The mounts below jail roots are asked of the kernel
    (jailyard.mounttable) only if a half-mounted jail has to be cleaned up. The
    report lists jails in name order whichever thread took them.
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
    run = str(cfg.run_dir)
    listed = _Listings(
        sessions=tenants_with_session_records(cfg),
        services=_names_in(f"{run}/services"),
        volumes=_names_in(f"{run}/volumes"),
        networks=frozenset(n[:-5] for n in _names_in(f"{run}/net") if n.endswith(".json")),
    )
    names = sorted([*mounted, *partial])
    if previous is None:
        report.kept_in_use = names
        names = []
    leases = settings_for(cfg.path)
    step = _Step(cfg, previous or 0, started_ns, listed, by_jail, frozenset(partial), leases)
    # Overlay jails in a few threads (THREADS); the others in this process, and in one forked
    # beside it for half of the plain ones (FORK_FROM).
    overlays = own_filesystem(mounted, names)
    outcomes = _run_steps(step, overlays, THREADS if len(overlays) >= THREADS_FROM else 1)
    if len(overlays) < len(names):
        is_overlay = frozenset(overlays)
        others = [n for n in names if n not in is_overlay]
        # Plain: no session records, no service, not half-mounted: the step reads nothing it
        # would have to hand back but its outcome.
        plain = [n for n in others if n not in listed.sessions and n not in listed.services and n not in step.partial]
        forked = plain[1::2] if len(plain) >= FORK_FROM and len(os.sched_getaffinity(0)) > 1 else []
        outcomes.update(_run_steps(step, others, 1, forked=forked))
    for name in names:
        kind, error = outcomes[name]
        if kind == "error":
            report.errors[name] = error
        else:
            getattr(report, kind).append(name)
    if leases is not None:
        _renew_leases(cfg, leases, [n for n in sorted([*mounted, *partial]) if n not in report.unmounted], report, step)
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
# four 1.31-1.33 s. Which kind a jail is comes from the listing's lstat (own_filesystem).
THREADS = 4
THREADS_FROM = 64  # fewer idle jails: one thread, no start-up cost


def own_filesystem(devices: dict[str, int], names: list[str]) -> list[str]:
    """The names whose jail root is a filesystem of its own (st_dev shared with no other jail):
    overlay jails, each its own overlayfs. A bind jail's root is its image's filesystem, which
    every jail of that image shares; a lone bind jail counted here costs a thread nothing."""
    seen: dict[int, int] = {}
    for dev in devices.values():
        seen[dev] = seen.get(dev, 0) + 1
    return [n for n in names if n in devices and seen[devices[n]] == 1]


@dataclasses.dataclass(frozen=True)
class _Listings:
    """What run_dir held when the pass began, one listing each: tenants with session records,
    service loops, attached volumes (volumes/NAME), private networks (net/NAME.json). A jail
    whose records changed since is one that was entered or mounted since: its last-use stamp
    says so under its lock, and it is kept (docs/contracts.md, "Sessions and last use")."""

    sessions: frozenset[str]
    services: frozenset[str]
    volumes: frozenset[str]
    networks: frozenset[str]


class _Step:
    """What the pass does for one jail, in whichever thread: lock, check, detach."""

    def __init__(
        self,
        cfg: Config,
        previous: int,
        started_ns: int,
        listed: _Listings,
        by_jail: dict[str, list[MountInfo]],
        partial: frozenset[str],
        leases: LeaseSettings | None = None,
    ) -> None:
        self.cfg, self.previous, self.started_ns, self.leases = cfg, previous, started_ns, leases
        self.listed, self.by_jail, self.partial = listed, by_jail, partial
        self.jails, self.locks = str(cfg.jails_dir), f"{cfg.run_dir}/locks"
        self.ended: list[tuple[str, int]] = []  # sessions whose launcher left its record: killed

    def __call__(self, name: str) -> tuple[str, str]:
        """(report list, error): kept_in_use, kept_busy, unmounted, or error and why.

        Run once per mounted jail (10,000 in bench/scale), so the lock is taken with
        lock.take, not the tenant_lock object."""
        cfg, ended, listed = self.cfg, self.ended, self.listed
        sessions, service = name in listed.sessions, name in listed.services
        # A tenant with session records or a service loop listed is asked before its lock, so a jail
        # in use is not locked at every pass; the others are checked under it alone.
        if (sessions or service) and _used_since(cfg, name, self.previous, self.started_ns, ended, sessions, service):
            return "kept_in_use", ""
        # Never wait on a jail someone is entering or changing: it is in use.
        fd = take_lock(f"{self.locks}/{name}.lock", EXCLUSIVE_NOWAIT)
        if fd < 0:
            return "kept_busy", ""
        try:
            # Whoever entered or mounted the jail since the listings stamped its last use before
            # letting go of this lock (a launch as its session starts, a mount as it ends).
            if _used_since(cfg, name, self.previous, self.started_ns, ended, sessions, service):
                return "kept_in_use", ""
            try:
                self.take_off(name)
            except JailError as exc:
                return "error", str(exc)
            if self.leases is not None:
                release_lease(cfg.tenants_dir, name, self.leases)  # under the lock: no mount of it meanwhile
            return "unmounted", ""
        finally:
            posix.close(fd)

    def take_off(self, name: str, fresh: bool = False) -> None:
        """Detach the jail and what goes with it (its volume, its private network); the caller
        holds its lock. Whether it has a volume or a network comes from the pass's listings, or
        with fresh=True from run_dir now (a jail that may have been mounted since they were made)."""
        cfg = self.cfg
        if name in self.partial:
            detach_jail(f"{self.jails}/{name}", self.by_jail.get(name, []), root_mounted=False)
        else:
            umount(f"{self.jails}/{name}", detach=True)  # the whole tree at once (mount.detach_jail)
        run = str(cfg.run_dir)
        if name in self.listed.volumes or (fresh and os.access(f"{run}/volumes/{name}", os.F_OK)):
            from .volume import unmount as unmount_volume  # a volume goes with the jail (autoclear frees its loop device)

            unmount_volume(str(cfg.tenants_dir), name)
        if name in self.listed.networks or (fresh and os.access(f"{run}/net/{name}.json", os.F_OK)):
            from .network import tear_down  # issue 17: a private network goes with the mounts

            tear_down(cfg, name, release_static=False)


def _names_in(directory: str) -> frozenset[str]:
    """The names in a run_dir directory (sessions/, services/), in one listing; none if it is missing."""
    try:
        return frozenset(os.listdir(directory))
    except FileNotFoundError:
        return frozenset()


def _run_steps(step: _Step, names: list[str], threads: int, forked: list[str] | None = None) -> dict[str, tuple[str, str]]:
    """step(name) for every name, in `threads` threads, those in `forked` in a forked process
    (_forked_steps) meanwhile; an exception in any is raised here."""
    if forked:
        return _forked_steps(step, names, forked)
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


# Idle bind jails, from FORK_FROM of them on a node with two or more CPUs, are taken off by this
# process and a forked copy of it, half each. Threads would contend for the interpreter lock
# (see THREADS); a process has its own, so one's checks run while the other is in umount2, whose
# wait for the RCU grace period comes after it has let go of the kernel's mount lock. Measured
# on 2 cores, 10,000 idle bind jails: in one process 0.31-0.40 s, 1.7-2.0x one bare umount2 per
# jail; in two 0.27-0.30 s, 1.2-1.4x. The fork (copy-on-write) costs about a millisecond.
FORK_FROM = 1000
_FAILED = "!"  # the forked process's last line when a step raised there: the exception


def _forked_steps(step: _Step, names: list[str], forked: list[str]) -> dict[str, tuple[str, str]]:
    """step(name) for the names in forked in a child process, for the other names here, at once.

    The child writes one line per outcome to a memfd and leaves with os._exit (no atexit, no
    buffer flushed twice). Only plain jails go to it: their steps change nothing in `step` that
    this process reads afterwards (no session records, so no ended sessions to hand back). A step
    that raised there is raised here as a JailError, and so is a child killed by a signal."""
    out = posix.memfd_create("jailyard-expire", posix.MFD_CLOEXEC)
    try:
        pid = posix.fork()
        if pid == 0:  # the child: its half, its outcomes, gone, whatever happens (never back into the caller)
            code = 1
            try:
                lines = []
                try:
                    for name in forked:
                        kind, error = step(name)
                        lines.append(f"{name}\t{kind}\t{error}".replace("\n", " "))
                except BaseException as exc:  # noqa: BLE001 - handed to the parent
                    lines.append(f"{_FAILED}\t{type(exc).__name__}: {exc}".replace("\n", " "))
                data = "\n".join(lines).encode("utf-8", "surrogateescape")
                while data:
                    data = data[posix.write(out, data) :]
                code = 0
            finally:
                posix._exit(code)
        theirs = frozenset(forked)
        try:
            outcomes = {name: step(name) for name in names if name not in theirs}
        finally:
            status = posix.waitpid(pid, 0)[1]
        posix.lseek(out, 0, 0)
        chunks = []
        while chunk := posix.read(out, 1 << 20):
            chunks.append(chunk)
        for line in b"".join(chunks).decode("utf-8", "surrogateescape").split("\n"):
            name, kind, error = [*line.split("\t", 2), "", ""][:3]
            if name == _FAILED:
                raise JailError(f"expiry: taking idle jails off in a second process failed: {kind}")
            if name:
                outcomes[name] = (kind, error)
        if posix.WIFSIGNALED(status):
            raise JailError(f"expiry: the second process taking idle jails off was killed by signal {posix.WTERMSIG(status)}")
        missing = sum(name not in outcomes for name in forked)
        if missing:
            raise JailError(
                f"expiry: the second process taking idle jails off left {missing} of them unreported (exit {posix.WEXITSTATUS(status)})"
            )
        return outcomes
    finally:
        posix.close(out)


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
                step.take_off(name, fresh=True)  # used since the listings, maybe: ask run_dir again
            except JailError as exc:
                report.errors[name] = str(exc)
                continue
            report.unmounted.append(name)


def _mounted_jails(cfg: Config) -> tuple[dict[str, int], list[str]]:
    """Jails whose root is mounted (name -> the root's st_dev), and jails with only pieces
    mounted (root gone, home left).

    One lstat a jail: a root on another filesystem than the jails directory is a mount root
    (on a node, where the jails directory is a tmpfs of its own, every mounted one is). Where
    the jails directory is a filesystem of its own that the images are not on, so that no
    jail's root can be, one on the same filesystem is not mounted there, and can hold a mount
    below it only if it has a subdirectory (a link count above 2; btrfs counts 1 for every
    directory and is asked); elsewhere (tests) statx asks each. A node with 100,000 tenants
    and 10,000 mounted: 0.2 s of lstat, where two statx of each unmounted root took 0.5 s more."""
    mounted: dict[str, int] = {}
    partial: list[str] = []
    jails = str(cfg.jails_dir)
    try:
        top = posix.stat(jails).st_dev
        entries = os.scandir(jails)
    except FileNotFoundError:
        return {}, []
    try:
        own_fs = is_mount_root(jails) and posix.stat(str(cfg.images_dir)).st_dev != top
    except FileNotFoundError:
        own_fs = False
    with entries:
        for entry in entries:
            name = entry.name
            if not is_valid_name(name):
                continue
            root = f"{jails}/{name}"
            try:
                st = posix.stat(root, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if st.st_dev != top or (not own_fs and is_mount_root(root)):
                mounted[name] = st.st_dev
            elif st.st_nlink != 2 and is_mount_root(f"{root}/home"):
                partial.append(name)
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
