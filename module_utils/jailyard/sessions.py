"""Live-session and last-use records written by the launcher, read by expiry and unmount."""

from __future__ import annotations

import posix

from .safefs import open_making_parents

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .config import Config


def process_starttime(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Field 2 (comm) may contain spaces and parentheses: split after the last ')'.
    rest = data[data.rindex(b")") + 2 :].split()
    if rest[0] == b"Z":
        return None  # exited, not yet reaped by its parent: its session is over
    return rest[19].decode()  # field 22 overall


def live_sessions(cfg: Config, name: str, prune: bool = True, ended: list[int] | None = None) -> list[int]:
    """Pids of the tenant's live sessions; records whose process is gone are ended (and pruned,
    their pids appended to `ended`: a launcher that left its record was killed)."""
    sdir = f"{cfg.run_dir}/sessions/{name}"
    try:
        entries = posix.listdir(sdir)
    except FileNotFoundError:
        return []
    live = []
    for entry in entries:
        path = f"{sdir}/{entry}"
        try:
            with open(path) as fh:
                # "<pid> <starttime>", then (since issue 19) "key value" lines: caller, pty, program.
                pid_s, start = fh.readline().split()
            alive = entry == pid_s and process_starttime(int(pid_s)) == start
        except (OSError, ValueError):
            alive = False
        if alive:
            live.append(int(pid_s))
        elif prune:
            try:
                posix.unlink(path)
            except FileNotFoundError:
                continue
            if ended is not None and entry.isdigit():
                ended.append(int(entry))
    return sorted(live)


def tenants_with_session_records(cfg: Config) -> frozenset[str]:
    """Tenants that have a directory under <run_dir>/sessions, in one listing (their records come
    and go in it; a tenant without one has no session)."""
    try:
        return frozenset(posix.listdir(f"{cfg.run_dir}/sessions"))
    except FileNotFoundError:
        return frozenset()


def record_session(cfg: Config, name: str, pid: int) -> None:
    """Write a session record the way the launcher does (used by tests and tools)."""
    sdir = cfg.sessions_dir(name)
    sdir.mkdir(mode=0o755, parents=True, exist_ok=True)
    (sdir / str(pid)).write_text(f"{pid} {process_starttime(pid)}\n")


def touch_lastuse(cfg: Config, name: str, at_ns: int | None = None) -> None:
    flags = posix.O_WRONLY | posix.O_CREAT | posix.O_NOFOLLOW | posix.O_CLOEXEC
    path = f"{cfg.run_dir}/lastuse/{name}"
    fd = open_making_parents(path, flags, 0o644)
    try:
        if at_ns is None:
            posix.utime(fd)
        else:
            posix.utime(fd, ns=(at_ns, at_ns))
    finally:
        posix.close(fd)


def last_use_ns(cfg: Config, name: str) -> int:
    """Time of the last launch or mount in ns (exact, unlike a float); 0 if never recorded."""
    try:
        return posix.stat(f"{cfg.run_dir}/lastuse/{name}").st_mtime_ns
    except FileNotFoundError:
        return 0
