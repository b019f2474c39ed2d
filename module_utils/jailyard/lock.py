"""The per-tenant lock (flock under <run_dir>/locks), shared with the launcher and expiry."""

from __future__ import annotations

import fcntl
import posix

from .errors import JailError
from .safefs import open_making_parents

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .config import Config


class tenant_lock:  # lower case: used like a function, `with tenant_lock(cfg, name):`
    """Hold the tenant's lock for a `with` block, which gets True; with wait=False and
    the lock busy, the block gets False and holds nothing.

    A purge unlinks the lock file while it holds it (`unlink_locked`), so a
    locker that opened the file before that and got the lock after it holds a
    lock nobody else can see: after flock, the path must still name the locked
    inode, else the lock is taken again on the file now there.

    A class, not a contextlib generator: the launcher's mount step imports this
    on every cold launch, and contextlib is a measurable part of that start.
    """

    def __init__(self, cfg: Config, name: str, exclusive: bool = True, wait: bool = True) -> None:
        self.path = f"{cfg.run_dir}/locks/{name}.lock"
        self.op = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB)
        self.fd = -1

    def __enter__(self) -> bool:
        flags = posix.O_RDWR | posix.O_CREAT | posix.O_NOFOLLOW | posix.O_CLOEXEC
        while True:
            self.fd = open_making_parents(self.path, flags, 0o600)
            try:
                fcntl.flock(self.fd, self.op)
            except BlockingIOError:
                self.__exit__()
                return False
            except OSError as exc:
                self.__exit__()
                raise JailError(f"cannot lock {self.path}: {exc.strerror}") from exc
            if self._still_linked():
                return True
            self.__exit__()  # unlinked by a purge meanwhile: lock the file there now

    def _still_linked(self) -> bool:
        held = posix.fstat(self.fd)
        try:
            now = posix.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)

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
