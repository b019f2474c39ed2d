"""Direct mount system calls (never mount(8)): the new mount API.

open_tree/move_mount/mount_setattr/fsopen/fsconfig/fsmount let every mount be
made against a file descriptor that was resolved without following symlinks,
with its flags set before it becomes visible.

The functions are bound through `_ctypes`, the C core that the `ctypes`
package wraps, not through `ctypes` itself: the launcher's mount step imports
this module on every cold launch, and `import ctypes` (os, struct and some
sixty classes) costs that step 2 ms, more than all its mounts. The calls here
need only what `_ctypes` itself offers: function pointer types returning a C
int or long (with errno saved), Python ints and bytes as arguments (the kernel
only reads those), and a char array for statx's result.
tests/integration/test_kernel.py holds each call to the kernel.
"""

from __future__ import annotations

import _ctypes
import posix  # os's C core, loaded with the interpreter: `import os` costs the mount step 1 ms
import sys

from .errors import JailError


class _Int(_ctypes._SimpleCData):
    _type_ = "i"


class _Long(_ctypes._SimpleCData):
    _type_ = "l"


class _Char(_ctypes._SimpleCData):
    _type_ = "c"


class _IntFunction(_ctypes.CFuncPtr):
    """A libc function returning a C int; errno is saved for _ctypes.get_errno."""

    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = _Int


class _LongFunction(_ctypes.CFuncPtr):
    """syscall(2), which returns a C long."""

    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = _Long


class _Libc:
    # The glibc soname directly: ctypes.util.find_library spawns ldconfig.
    _handle = _ctypes.dlopen("libc.so.6", _ctypes.RTLD_LOCAL)


_syscall = _LongFunction(("syscall", _Libc))
_umount2 = _IntFunction(("umount2", _Libc))
_syncfs = _IntFunction(("syncfs", _Libc))
_statx = _IntFunction(("statx", _Libc))

# Syscall numbers of the new mount API are the same on every architecture.
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_FSOPEN = 430
SYS_FSCONFIG = 431
SYS_FSMOUNT = 432
SYS_MOUNT_SETATTR = 442

AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = posix.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x04
MOVE_MOUNT_T_EMPTY_PATH = 0x40
FSOPEN_CLOEXEC = 1
FSMOUNT_CLOEXEC = 1
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MS_PRIVATE = 1 << 18
UMOUNT_NOFOLLOW = 0x8
MNT_DETACH = 0x2
STATX_ATTR_MOUNT_ROOT = 0x2000
AT_SYMLINK_NOFOLLOW = 0x100
AT_FDCWD = -100
AT_STATX_DONT_SYNC = 0x4000

ATTR_BY_OPTION = {"ro": MOUNT_ATTR_RDONLY, "nosuid": MOUNT_ATTR_NOSUID, "nodev": MOUNT_ATTR_NODEV, "noexec": MOUNT_ATTR_NOEXEC}


def _check(ret: int, what: str) -> int:
    if ret < 0:
        raise JailError(f"{what}: {posix.strerror(_ctypes.get_errno())}")
    return ret


def _u64s(*values: int) -> bytes:
    """A C struct of u64 fields (struct mount_attr), passed by pointer."""
    return b"".join(v.to_bytes(8, sys.byteorder) for v in values)


def open_tree_clone(dirfd: int, path: str = "", recursive: bool = False) -> int:
    """A detached copy of the mount at dirfd/path (an fd, close-on-exec)."""
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (AT_EMPTY_PATH if path == "" else 0)
    if recursive:
        flags |= AT_RECURSIVE
    return _check(_syscall(SYS_OPEN_TREE, dirfd, path.encode(), flags), f"open_tree {path or '<fd>'}")


def set_mount_attrs(mfd: int, attrs: int, private: bool = True) -> None:
    # struct mount_attr: attr_set, attr_clr, propagation, userns_fd
    attr = _u64s(attrs, 0, MS_PRIVATE if private else 0, 0)
    _check(_syscall(SYS_MOUNT_SETATTR, mfd, b"", AT_EMPTY_PATH, attr, len(attr)), "mount_setattr")


def move_mount_to_fd(mfd: int, target_fd: int, what: str) -> None:
    flags = MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH
    _check(_syscall(SYS_MOVE_MOUNT, mfd, b"", target_fd, b"", flags), f"move_mount onto {what}")


def overlay_mount_fd(lower: str, upper: str, work: str, attrs: int) -> int:
    fsfd = _check(_syscall(SYS_FSOPEN, b"overlay", FSOPEN_CLOEXEC), "fsopen overlay")
    try:
        for key, value in (("lowerdir", lower), ("upperdir", upper), ("workdir", work), ("source", "jailyard")):
            ret = _syscall(SYS_FSCONFIG, fsfd, FSCONFIG_SET_STRING, key.encode(), value.encode(), 0)
            _check(ret, f"overlay option {key}={value}")
        _check(_syscall(SYS_FSCONFIG, fsfd, FSCONFIG_CMD_CREATE, None, None, 0), "overlay create")
        return _check(_syscall(SYS_FSMOUNT, fsfd, FSMOUNT_CLOEXEC, attrs), "fsmount overlay")
    finally:
        posix.close(fsfd)


def umount(path: str, detach: bool = False) -> None:
    flags = UMOUNT_NOFOLLOW | (MNT_DETACH if detach else 0)
    _check(_umount2(path.encode(), flags), f"umount {path}")


def syncfs(fd: int) -> None:
    """Flush one filesystem (not every filesystem, as sync(2) would)."""
    _check(_syncfs(fd), "syncfs")


class _StatxBuffer(_ctypes.Array):
    _type_ = _Char
    _length_ = 256  # sizeof(struct statx)


def is_mount_root(path: str) -> bool:
    """True when path (not followed if a symlink) is the root of a mount."""
    buf = _StatxBuffer()
    ret = _statx(AT_FDCWD, path.encode(), AT_SYMLINK_NOFOLLOW | AT_STATX_DONT_SYNC, 0, buf)
    if ret < 0:
        err = _ctypes.get_errno()
        if err in (2, 20):  # ENOENT, ENOTDIR: nothing there, so not mounted
            return False
        raise JailError(f"statx {path}: {posix.strerror(err)}")
    # struct statx: u32 stx_mask, u32 stx_blksize, u64 stx_attributes, ...
    attributes = int.from_bytes(buf.raw[8:16], sys.byteorder)
    return bool(attributes & STATX_ATTR_MOUNT_ROOT)
