"""The per-tenant lock (flock under <run_dir>/locks), shared with the launcher and expiry."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

from .config import Config
from .errors import JailError


@contextmanager
def tenant_lock(cfg: Config, name: str, exclusive: bool = True, wait: bool = True) -> Iterator[bool]:
    """Hold the tenant's lock; yields False (and holds nothing) if wait=False and it is busy."""
    path = f"{cfg.run_dir}/locks/{name}.lock"
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        fd = os.open(path, flags, 0o600)
    try:
        op = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            fcntl.flock(fd, op | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        except OSError as exc:
            raise JailError(f"cannot lock {path}: {exc.strerror}") from exc
        yield True
    finally:
        os.close(fd)
