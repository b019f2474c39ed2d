"""Filesystem operations that never follow a symlink.

Tenant-writable paths (home, tmp, upper) are hostile: every root-side open,
chown, chmod, mount target and removal goes through a descriptor resolved one
component at a time with O_NOFOLLOW, the equivalent of
openat2(RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH).

The launcher's mount step imports this module on every cold launch, so it
imports only os, stat and errno at load time; shutil and tempfile, needed by
removal and writes only, are imported where they are used.
"""

from __future__ import annotations

import errno
import os
import stat

from .errors import JailError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path


def _components(rel: str | Path) -> list[str]:
    parts = [p for p in str(rel).split("/") if p not in ("", ".")]
    if ".." in parts:
        raise JailError(f"refusing path {str(rel)!r}: '..' is not allowed")
    return parts


def open_beneath(root_fd: int, rel: str | Path, directory: bool = True, what: str | None = None) -> int:
    """An O_PATH fd for root_fd/rel, refusing any symlink on the way (and at the end)."""
    parts = _components(rel)
    fd = os.dup(root_fd)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
            if not last or directory:
                flags |= os.O_DIRECTORY
            try:
                nfd = os.open(part, flags, dir_fd=fd)
            except OSError as exc:
                shown = what or str(rel)
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    st = os.stat(part, dir_fd=fd, follow_symlinks=False)
                    if stat.S_ISLNK(st.st_mode):
                        raise JailError(f"refusing to follow symlink at {shown} (component {part!r})") from exc
                    raise JailError(f"{shown}: component {part!r} is not a directory") from exc
                raise JailError(f"cannot open {shown}: {exc.strerror}") from exc
            if last and not directory and stat.S_ISLNK(os.fstat(nfd).st_mode):
                os.close(nfd)
                raise JailError(f"refusing to follow symlink at {what or rel}")
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


class opened:  # lower case: used like a function, `with opened(fd) as fd:`
    """Close fd when the block ends (a class: contextlib costs the mount step an import)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> int:
        return self.fd

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def ensure_dir(parent_fd: int, name: str, mode: int, uid: int, gid: int, check: bool = False, what: str = "") -> bool:
    """Make parent/name a real directory with this owner and mode; True if anything changed."""
    changed = False
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        if check:
            return True
        os.mkdir(name, mode & 0o777, dir_fd=parent_fd)
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        changed = True
    if not stat.S_ISDIR(st.st_mode):
        raise JailError(f"refusing {what or name}: expected a directory, found {_kind(st.st_mode)}")
    if (st.st_uid, st.st_gid) == (uid, gid) and stat.S_IMODE(st.st_mode) == mode:
        return changed
    if check:
        return True
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=parent_fd)
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return True


def remove_tree(parent_fd: int, name: str) -> bool:
    """Remove parent/name without ever following a symlink (a symlink is unlinked itself)."""
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        import shutil  # here, not at the top: see the module docstring

        shutil.rmtree(name, dir_fd=parent_fd)
    else:
        os.unlink(name, dir_fd=parent_fd)
    return True


def atomic_write(path: Path, data: str, mode: int = 0o644, uid: int = 0, gid: int = 0, durable: bool = True) -> bool:
    """Write path via a temp file in the same directory, fsync, rename; False if already identical.

    durable=False skips the per-file fsync when the caller syncs the filesystem once
    for a whole batch (the rename still makes each file appear whole or not at all).
    """
    try:
        if path.read_text() == data:
            st = path.lstat()
            if stat.S_IMODE(st.st_mode) == mode and (st.st_uid, st.st_gid) == (uid, gid):
                return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    import tempfile  # here, not at the top: see the module docstring

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(data)
            fh.flush()
            os.fchown(fh.fileno(), uid, gid)
            os.fchmod(fh.fileno(), mode)
            if durable:
                os.fsync(fh.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return True


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISREG(mode):
        return "a file"
    return "something else"
