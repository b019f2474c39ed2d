"""The per-tenant lock (flock under <run_dir>/locks), shared with the launcher and expiry."""

from __future__ import annotations

import fcntl
import posix

from .errors import JailError
from .safefs import open_making_parents

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .config import Config


_FLAGS = posix.O_RDWR | posix.O_CREAT | posix.O_NOFOLLOW | posix.O_CLOEXEC
EXCLUSIVE_NOWAIT = fcntl.LOCK_EX | fcntl.LOCK_NB


def take(path: str, op: int) -> int:
    """flock(op) the lock file at path (made if missing): the fd that holds it, or -1 if it is
    busy and op has LOCK_NB. A file unlinked by a purge between the open and the lock (its link
    count 0 then) is let go and the file now at path locked instead; see tenant_lock."""
    while True:
        fd = open_making_parents(path, _FLAGS, 0o600)
        try:
            fcntl.flock(fd, op)
        except BlockingIOError:
            posix.close(fd)
            return -1
        except OSError as exc:
            posix.close(fd)
            raise JailError(f"cannot lock {path}: {exc.strerror}") from exc
        if posix.fstat(fd).st_nlink > 0:
            return fd
        posix.close(fd)


class tenant_lock:  # lower case: used like a function, `with tenant_lock(cfg, name):`
    """Hold the tenant's lock for a `with` block, which gets True; with wait=False and
    the lock busy, the block gets False and holds nothing.

    A purge unlinks the lock file while it holds it (`unlink_locked`), so a
    locker that opened the file before that and got the lock after it holds a
    lock nobody else can see: after flock, the locked inode must still have a
    link, else the lock is taken again on the file now there (`take`). A lock
    file is only ever created at its path and unlinked, never renamed or
    linked, so a link count above 0 means the path names it (one fstat; no stat
    of the path).

    A class, not a contextlib generator: the launcher's mount step imports this
    on every cold launch, and contextlib is a measurable part of that start.
    """

    def __init__(self, cfg: Config, name: str, exclusive: bool = True, wait: bool = True) -> None:
        self.path = f"{cfg.run_dir}/locks/{name}.lock"
        self.op = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB)
        self.fd = -1

    def __enter__(self) -> bool:
        self.fd = take(self.path, self.op)
        return self.fd >= 0

    def unlink_locked(self) -> bool:
        """Remove the lock file while holding it (purge); lockers waiting on it lock a new one."""
        if self.fd < 0:
            raise JailError(f"{self.path} is not held")
        try:
            posix.unlink(self.path)
        except FileNotFoundError:
            return False
        return True

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            posix.close(self.fd)
            self.fd = -1
