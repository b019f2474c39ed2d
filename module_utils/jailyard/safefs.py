"""Filesystem operations that never follow a symlink.

Tenant-writable paths (home, tmp, upper) are hostile: every root-side open,
chown, chmod, mount target and removal goes through a descriptor resolved one
component at a time with O_NOFOLLOW, or by one openat2(RESOLVE_NO_SYMLINKS |
RESOLVE_BENEATH) where the kernel has it (open_beneath).

The launcher's mount step imports this module on every cold launch, so it
imports only posix (os's C core, loaded with the interpreter: `import os` alone
costs that step 1 ms), stat and errno at load time; shutil and tempfile, needed
by removal and writes only, are imported where they are used.
"""

from __future__ import annotations

import errno
import posix
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


def read_text(path: str, errors: str = "strict", follow: bool = True) -> str | None:
    """A small file's text, None if it is missing: posix open/read/close, no buffered text file
    (a third of the time per file, and a no-op re-converge reads five a tenant: issue 21).
    follow False: O_NOFOLLOW (a symlink there is ELOOP, an OSError to the caller)."""
    flags = posix.O_RDONLY | posix.O_CLOEXEC | (0 if follow else posix.O_NOFOLLOW)
    try:
        fd = posix.open(path, flags)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        chunks = []
        while True:
            chunk = posix.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        posix.close(fd)
    return b"".join(chunks).decode("utf-8", errors)


# Whether open_beneath asks openat2(2) first: False once the kernel said it lacks it (before
# 5.6), or where tests force the walk (monkeypatch _OPENAT2).
_OPENAT2 = True
_kernel = None  # jailyard.kernel, imported on first use (the walk alone needs none of it)


def open_beneath(root_fd: int, rel: str | Path, directory: bool = True, what: str | None = None) -> int:
    """An O_PATH fd for root_fd/rel, refusing any symlink on the way (and at the end).

    One openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) where the kernel has it: mounting a jail
    resolves 13 paths of 2-4 components, and one syscall a path took 4-7 us against 6-10 us for
    the walk one component at a time, an open and a close each (issue 21). When openat2 refuses
    or fails, or the kernel lacks it, the walk below opens it or says which component is wrong."""
    global _OPENAT2, _kernel
    text = rel if isinstance(rel, str) else str(rel)
    if "/." in f"/{text}" or "//" in text or text.startswith("/") or text.endswith("/"):
        parts = _components(text)  # '.', '..', a hidden name, a doubled or outer slash: normalized, '..' refused
        text = "/".join(parts)
    else:
        parts = None  # plain names joined by single slashes: split only if the walk below runs
    if text and _OPENAT2:
        if _kernel is None:
            from . import kernel as _kernel  # once (an import statement a call was 1 us of 5, issue 21)
        flags = posix.O_PATH | posix.O_CLOEXEC | (posix.O_DIRECTORY if directory else 0)
        try:
            fd = _kernel.open_beneath(root_fd, text, flags)
        except _kernel.Unsupported:
            _OPENAT2 = False
            fd = -1
        if fd >= 0:
            return fd
    if parts is None:
        parts = text.split("/") if text else []
    fd = posix.dup(root_fd)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            flags = posix.O_PATH | posix.O_NOFOLLOW | posix.O_CLOEXEC
            if not last or directory:
                flags |= posix.O_DIRECTORY
            try:
                nfd = posix.open(part, flags, dir_fd=fd)
            except OSError as exc:
                shown = what or str(rel)
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    st = posix.stat(part, dir_fd=fd, follow_symlinks=False)
                    if stat.S_ISLNK(st.st_mode):
                        raise JailError(f"refusing to follow symlink at {shown} (component {part!r})") from exc
                    raise JailError(f"{shown}: component {part!r} is not a directory") from exc
                raise JailError(f"cannot open {shown}: {exc.strerror}") from exc
            if last and not directory and stat.S_ISLNK(posix.fstat(nfd).st_mode):
                posix.close(nfd)
                raise JailError(f"refusing to follow symlink at {what or rel}")
            posix.close(fd)
            fd = nfd
        return fd
    except BaseException:
        posix.close(fd)
        raise


def open_making_parents(path: str, flags: int, mode: int) -> int:
    """posix.open(path, flags, mode), first making missing parent directories (0755) on ENOENT.

    For root's own records under run_dir (locks, last use), which a reboot empties.
    """
    try:
        return posix.open(path, flags, mode)
    except FileNotFoundError:
        _make_dirs(path.rpartition("/")[0])
        return posix.open(path, flags, mode)


def _make_dirs(path: str) -> None:
    # os.makedirs(path, 0o755, exist_ok=True) without importing os.
    try:
        posix.mkdir(path, 0o755)
    except FileExistsError:
        pass
    except FileNotFoundError:
        _make_dirs(path.rpartition("/")[0])
        try:
            posix.mkdir(path, 0o755)
        except FileExistsError:
            pass


class opened:  # lower case: used like a function, `with opened(fd) as fd:`
    """Close fd when the block ends (a class: contextlib costs the mount step an import)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> int:
        return self.fd

    def __exit__(self, *exc: object) -> None:
        posix.close(self.fd)


def ensure_dir(parent_fd: int, name: str, mode: int, uid: int, gid: int, check: bool = False, what: str = "") -> bool:
    """Make parent/name a real directory with this owner and mode; True if anything changed."""
    changed = False
    try:
        st = posix.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        if check:
            return True
        posix.mkdir(name, mode & 0o777, dir_fd=parent_fd)
        st = posix.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        changed = True
    if not stat.S_ISDIR(st.st_mode):
        raise JailError(f"refusing {what or name}: expected a directory, found {_kind(st.st_mode)}")
    if (st.st_uid, st.st_gid) == (uid, gid) and stat.S_IMODE(st.st_mode) == mode:
        return changed
    if check:
        return True
    fd = posix.open(name, posix.O_RDONLY | posix.O_NOFOLLOW | posix.O_DIRECTORY | posix.O_CLOEXEC, dir_fd=parent_fd)
    try:
        posix.fchown(fd, uid, gid)
        posix.fchmod(fd, mode)
    finally:
        posix.close(fd)
    return True


def remove_tree(parent_fd: int, name: str) -> bool:
    """Remove parent/name without ever following a symlink (a symlink is unlinked itself)."""
    try:
        st = posix.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        import shutil  # here, not at the top: see the module docstring

        shutil.rmtree(name, dir_fd=parent_fd)
    else:
        posix.unlink(name, dir_fd=parent_fd)
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
        with open(fd, "w") as fh:
            fh.write(data)
            fh.flush()
            posix.fchown(fh.fileno(), uid, gid)
            posix.fchmod(fh.fileno(), mode)
            if durable:
                posix.fsync(fh.fileno())
        posix.rename(tmp, path)
    except BaseException:
        try:
            posix.unlink(tmp)
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
