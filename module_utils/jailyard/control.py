"""Sessions an operator can see and stop (issue 19): `jailctl sessions`, `jailctl kill`, `jail_info`,
`state: unmounted` with `force: true`.

A session is a running `jailrun` (its record: docs/contracts.md, "Sessions and
last use"); its processes are its PID 1 (the launcher's child in a PID
namespace of its own) and everything in that namespace. What is shown is read
from /proc and the session's cgroup; nothing here trusts a path or a value the
tenant could write.

Ending sessions: SIGKILL to a session's PID 1 (through a pidfd, so a pid
reused meanwhile is never hit) ends every process of the session at once: the
kernel kills the whole PID namespace and refuses any fork in it from then on,
so no process escapes by forking. On cgroup v2 the session's cgroup is killed
first (`cgroup.kill`, the same guarantee from the cgroup side). Killing all of
a tenant's sessions then kills, until it is empty, whatever is left in the
tenant's cgroups (v1 and v2). Another signal (`--signal TERM`) goes to every
process of the session once; only KILL is guaranteed to end it.
"""

from __future__ import annotations

import dataclasses
import os
import posix
import pwd
import signal
import time

from .errors import JailError
from .plan import is_valid_name
from .sessions import live_sessions

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .config import Config

CGROUP_ROOT = "/sys/fs/cgroup"


@dataclasses.dataclass
class Session:
    pid: int  # the launcher's (the record's name)
    tenant: str
    caller: int | None  # uid; None for a record written by a launcher older than issue 19
    caller_name: str | None
    program: str | None
    terminal: bool | None  # --pty
    started: float  # seconds since the epoch
    init: int | None  # host pid of the session's PID 1 (None while the jail is being mounted)
    processes: int  # in the session, PID 1 included
    cpu_seconds: float  # user + system so far, the session's processes and those they reaped
    memory_bytes: int  # the session cgroup's current usage, else the sum of its processes' RSS
    memory_source: str  # "cgroup" or "rss"

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["started"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started))
        d["cpu_seconds"] = round(self.cpu_seconds, 3)
        return d


# ---- /proc ------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (after the command name), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return data[data.rindex(b")") + 2 :].decode().split()


def _pidns(pid: int) -> int | None:
    try:
        return posix.stat(f"/proc/{pid}/ns/pid").st_ino
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def _boot_time() -> float:
    with open("/proc/stat") as fh:
        for line in fh:
            if line.startswith("btime "):
                return float(line.split()[1])
    raise JailError("/proc/stat has no btime")


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def _find_init(launcher: int) -> int | None:
    """The launcher's child in a PID namespace other than the launcher's: the session's PID 1."""
    own = _pidns(launcher)
    for child in _children(launcher):
        ns = _pidns(child)
        if ns is not None and ns != own:
            return child
    return None


def _ns_index() -> dict[int, list[int]]:
    """PID namespace inode -> host pids in it, from one pass over /proc (shared by every session listed)."""
    index: dict[int, list[int]] = {}
    for entry in posix.listdir("/proc"):
        if entry.isdigit():
            ns = _pidns(int(entry))
            if ns is not None:
                index.setdefault(ns, []).append(int(entry))
    return index


def _members(init: int | None, index: dict[int, list[int]] | None = None) -> list[int]:
    """Host pids of every process in the PID namespace of `init` (itself included)."""
    if init is None:
        return []
    ns = _pidns(init)
    if ns is None:
        return []
    if index is None:
        index = _ns_index()
    return sorted(index.get(ns, []))


def _session_cgroups(cfg: Config, tenant: str, launcher: int) -> list[str]:
    """The session's own cgroup directories (v1: one per controller where it has one; v2: its leaf)."""
    leaf = f"{cfg.cgroup_name}/{tenant}/s{launcher}"
    found = [f"{CGROUP_ROOT}/{leaf}"] if os.path.isfile(f"{CGROUP_ROOT}/{leaf}/cgroup.procs") else []
    try:
        controllers = posix.listdir(CGROUP_ROOT)
    except FileNotFoundError:
        return found
    for ctrl in controllers:
        path = f"{CGROUP_ROOT}/{ctrl}/{leaf}"
        if os.path.isfile(f"{path}/cgroup.procs"):
            found.append(path)
    return sorted(found)


def _tenant_cgroups(cfg: Config, tenant: str) -> list[str]:
    rel = f"{cfg.cgroup_name}/{tenant}"
    paths = [f"{CGROUP_ROOT}/{rel}"]
    try:
        paths += [f"{CGROUP_ROOT}/{ctrl}/{rel}" for ctrl in posix.listdir(CGROUP_ROOT)]
    except FileNotFoundError:
        pass
    return [p for p in paths if os.path.isfile(f"{p}/cgroup.procs")]


def _read_int(path: str, key: str | None = None) -> int | None:
    try:
        with open(path) as fh:
            for line in fh:
                parts = line.split()
                if key is None and parts:
                    return int(parts[0])
                if len(parts) == 2 and parts[0] == key:
                    return int(parts[1])
    except (OSError, ValueError):
        return None
    return None


def _memory(cgroups: list[str], pids: list[int]) -> tuple[int, str]:
    for path in cgroups:
        for knob in ("memory.current", "memory.usage_in_bytes"):  # v2, v1
            value = _read_int(f"{path}/{knob}")
            if value is not None:
                return value, "cgroup"
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields:
            total += int(fields[21]) * page  # field 24, rss in pages
    return total, "rss"


def _cpu(pids: list[int]) -> float:
    """User + system time of the live processes and of the children each has reaped (a reaped
    process's time is in its reaper's cutime/cstime: PID 1 reaps every orphan)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields:
            total += sum(int(x) for x in fields[11:15])  # fields 14-17: utime stime cutime cstime
    return total / ticks


# ---- records -----------------------------------------------------------------------------


def _read_record(cfg: Config, tenant: str, pid: int) -> dict[str, str]:
    try:
        with open(f"{cfg.run_dir}/sessions/{tenant}/{pid}") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return {}
    fields = {}
    for line in lines[1:]:
        key, value = line.split(" ", 1) if " " in line else (line, "")
        fields[key] = value
    return fields


def _tenants_with_records(cfg: Config) -> list[str]:
    try:
        return sorted(e for e in posix.listdir(f"{cfg.run_dir}/sessions") if is_valid_name(e))
    except FileNotFoundError:
        return []


def _check_name(name: str) -> None:
    if not is_valid_name(name):
        raise JailError(f"invalid jail name {name!r}")


def _caller_name(uid: int | None) -> str | None:
    if uid is None:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def describe(cfg: Config, tenant: str, pid: int, index: dict[int, list[int]] | None = None) -> Session | None:
    """One live session of the tenant, or None if it ended (index: _ns_index(), when listing many)."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    rec = _read_record(cfg, tenant, pid)
    init = _find_init(pid)
    pids = _members(init, index)
    memory, source = _memory(_session_cgroups(cfg, tenant, pid), pids)
    caller = int(rec["caller"]) if rec.get("caller", "").isdigit() else None
    return Session(
        pid=pid,
        tenant=tenant,
        caller=caller,
        caller_name=_caller_name(caller),
        program=rec.get("program"),
        terminal=rec["pty"] == "1" if "pty" in rec else None,
        started=_boot_time() + int(fields[19]) / os.sysconf("SC_CLK_TCK"),
        init=init,
        processes=len(pids),
        cpu_seconds=_cpu(pids),
        memory_bytes=memory,
        memory_source=source,
    )


def list_sessions(cfg: Config, name: str | None = None, prune: bool = False) -> list[Session]:
    """Live sessions of one tenant, or of every tenant with records, oldest first."""
    if name is not None:
        _check_name(name)
    out = []
    index: dict[int, list[int]] | None = None
    for tenant in [name] if name is not None else _tenants_with_records(cfg):
        for pid in live_sessions(cfg, tenant, prune=prune):
            if index is None:
                index = _ns_index()  # only once there is a session to describe
            s = describe(cfg, tenant, pid, index)
            if s is not None:
                out.append(s)
    return sorted(out, key=lambda s: (s.started, s.pid))


# ---- ending them -------------------------------------------------------------------------


def parse_signal(value: str | int) -> int:
    """KILL, SIGKILL, kill or 9 -> 9; one clear error otherwise."""
    if isinstance(value, int) or str(value).isdigit():
        num = int(value)
        if num in {s.value for s in signal.Signals}:
            return num
    else:
        text = str(value).upper()
        text = text if text.startswith("SIG") else f"SIG{text}"
        if text in signal.Signals.__members__:
            return signal.Signals[text].value
    raise JailError(f"unknown signal {value!r}: expected a name like TERM or KILL, or a number")


def _signal_pid(pid: int, sig: int, same_ns: int | None = None, parent: int | None = None) -> bool:
    """Signal pid through a pidfd after checking it is still the process meant (in PID namespace
    same_ns, child of parent): a pid reused in between is never signalled. False if it is gone."""
    try:
        fd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return False
    try:
        if same_ns is not None and _pidns(pid) != same_ns:
            return False
        if parent is not None:
            fields = _stat_fields(pid)
            if not fields or int(fields[1]) != parent:
                return False
        try:
            signal.pidfd_send_signal(fd, sig)
        except ProcessLookupError:
            return False
        return True
    finally:
        os.close(fd)


def _cgroup_kill(path: str) -> bool:
    try:
        with open(f"{path}/cgroup.kill", "w") as fh:
            fh.write("1")
        return True
    except OSError:
        return False


def _cgroup_pids(paths: list[str]) -> list[int]:
    pids: set[int] = set()
    for top in paths:
        for dirpath, _dirs, files in os.walk(top):
            if "cgroup.procs" in files:
                try:
                    with open(f"{dirpath}/cgroup.procs") as fh:
                        pids.update(int(x) for x in fh.read().split())
                except OSError:
                    continue
    return sorted(pids)


def _end_session(cfg: Config, s: Session, sig: int) -> None:
    if sig != signal.SIGKILL:
        ns = _pidns(s.init) if s.init else None
        for pid in _members(s.init):
            _signal_pid(pid, sig, same_ns=ns)
        return
    for path in _session_cgroups(cfg, s.tenant, s.pid):
        _cgroup_kill(path)  # v2 only; v1 has no cgroup.kill
    init = s.init if s.init is not None else _find_init(s.pid)
    if init is not None:
        _signal_pid(init, signal.SIGKILL, parent=s.pid)
    else:
        # Still mounting (no PID 1 yet, or it is being made): the launcher itself; its PID 1,
        # if any, follows by its parent-death signal.
        _signal_pid(s.pid, signal.SIGKILL)


def _wait_gone(cfg: Config, tenant: str, pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in pids if p in live_sessions(cfg, tenant, prune=False)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.02)


def kill_sessions(cfg: Config, name: str, session: int | None = None, sig: int | str = signal.SIGKILL, timeout: float = 10.0) -> dict:
    """End one session (`session`: its launcher's pid) or all of tenant `name`'s sessions.

    A pid that is not a live session of this tenant is refused (another tenant's, a stranger's).
    With KILL, returns once the sessions' launchers have gone (and, for all sessions, the tenant's
    cgroups are empty); JailError if some are still there after `timeout` seconds.
    Returns {"killed": [launcher pids], "signal": "SIGKILL", "changed": bool}.
    """
    _check_name(name)
    sig = parse_signal(sig)
    live = live_sessions(cfg, name, prune=False)
    if session is not None:
        if session not in live:
            raise JailError(f"{session} is not a live session of jail {name} (its sessions: {live or 'none'})")
        targets = [session]
    else:
        targets = live
    ended = []
    for pid in targets:
        s = describe(cfg, name, pid)
        if s is not None:
            _end_session(cfg, s, sig)
            ended.append(pid)
    left: list[int] = []
    stray: list[int] = []
    if sig == signal.SIGKILL:
        left = _wait_gone(cfg, name, ended, timeout)
        if session is None:
            # Whatever the tenant still runs in its cgroups (not in a session): kill until empty.
            cgroups = _tenant_cgroups(cfg, name)
            deadline = time.monotonic() + timeout
            for path in cgroups:
                _cgroup_kill(path)
            while (stray := _cgroup_pids(cgroups)) and time.monotonic() < deadline:
                for pid in stray:
                    _signal_pid(pid, signal.SIGKILL)
                time.sleep(0.02)
    if left or stray:
        raise JailError(f"sessions of jail {name} still running after {timeout:g} s: {left + stray}")
    return {"killed": ended, "signal": signal.Signals(sig).name, "changed": bool(ended)}


# ---- what jailctl prints -------------------------------------------------------------------

SESSION_COLUMNS = ["tenant", "pid", "caller", "program", "started", "cpu", "memory", "procs", "tty"]


def _size(n: int) -> str:
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def session_row(s: Session) -> dict[str, str]:
    """One line of `jailctl sessions`."""
    caller = s.caller_name or ("?" if s.caller is None else str(s.caller))
    return {
        "tenant": s.tenant,
        "pid": str(s.pid),
        "caller": caller,
        "program": s.program or "?",
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(s.started)),
        "cpu": f"{s.cpu_seconds:.2f}s",
        "memory": _size(s.memory_bytes) + ("" if s.memory_source == "cgroup" else " rss"),
        "procs": str(s.processes),
        "tty": "?" if s.terminal is None else "yes" if s.terminal else "no",
    }


def kill_summary(name: str, result: dict) -> str:
    """What `jailctl kill` prints."""
    if not result["killed"]:
        return f"jail {name} has no live session"
    pids = " ".join(map(str, result["killed"]))
    verb = "ended" if result["signal"] == "SIGKILL" else f"sent {result['signal']} to"
    return f"{verb} {len(result['killed'])} session(s) of {name}: {pids}"
