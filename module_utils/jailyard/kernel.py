"""Direct mount system calls through ctypes (never mount(8)): the new mount API.

open_tree/move_mount/mount_setattr/fsopen/fsconfig/fsmount let every mount be
made against a file descriptor that was resolved without following symlinks,
with its flags set before it becomes visible.
"""

from __future__ import annotations

import ctypes
import os

from .errors import JailError

# The glibc soname directly: ctypes.util.find_library spawns ldconfig and costs
# the launcher's mount step more than all its mounts together.
_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

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
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
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
AT_STATX_DONT_SYNC = 0x4000

ATTR_BY_OPTION = {"ro": MOUNT_ATTR_RDONLY, "nosuid": MOUNT_ATTR_NOSUID, "nodev": MOUNT_ATTR_NODEV, "noexec": MOUNT_ATTR_NOEXEC}


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise JailError(f"{what}: {os.strerror(err)}")
    return ret


def open_tree_clone(dirfd: int, path: str = "", recursive: bool = False) -> int:
    """A detached copy of the mount at dirfd/path (an fd, close-on-exec)."""
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (AT_EMPTY_PATH if path == "" else 0)
    if recursive:
        flags |= AT_RECURSIVE
    ret = _syscall(SYS_OPEN_TREE, ctypes.c_int(dirfd), ctypes.c_char_p(path.encode()), ctypes.c_uint(flags))
    return _check(ret, f"open_tree {path or '<fd>'}")


def set_mount_attrs(mfd: int, attrs: int, private: bool = True) -> None:
    attr = _MountAttr(attr_set=attrs, attr_clr=0, propagation=MS_PRIVATE if private else 0, userns_fd=0)
    ret = _syscall(
        SYS_MOUNT_SETATTR,
        ctypes.c_int(mfd),
        ctypes.c_char_p(b""),
        ctypes.c_uint(AT_EMPTY_PATH),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )
    _check(ret, "mount_setattr")


def move_mount_to_fd(mfd: int, target_fd: int, what: str) -> None:
    ret = _syscall(
        SYS_MOVE_MOUNT,
        ctypes.c_int(mfd),
        ctypes.c_char_p(b""),
        ctypes.c_int(target_fd),
        ctypes.c_char_p(b""),
        ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH),
    )
    _check(ret, f"move_mount onto {what}")


def overlay_mount_fd(lower: str, upper: str, work: str, attrs: int) -> int:
    fsfd = _check(_syscall(SYS_FSOPEN, ctypes.c_char_p(b"overlay"), ctypes.c_uint(FSOPEN_CLOEXEC)), "fsopen overlay")
    try:
        for key, value in (("lowerdir", lower), ("upperdir", upper), ("workdir", work), ("source", "jailyard")):
            ret = _syscall(
                SYS_FSCONFIG,
                ctypes.c_int(fsfd),
                ctypes.c_uint(FSCONFIG_SET_STRING),
                ctypes.c_char_p(key.encode()),
                ctypes.c_char_p(value.encode()),
                ctypes.c_int(0),
            )
            _check(ret, f"overlay option {key}={value}")
        ret = _syscall(SYS_FSCONFIG, ctypes.c_int(fsfd), ctypes.c_uint(FSCONFIG_CMD_CREATE), None, None, ctypes.c_int(0))
        _check(ret, "overlay create")
        mfd = _syscall(SYS_FSMOUNT, ctypes.c_int(fsfd), ctypes.c_uint(FSMOUNT_CLOEXEC), ctypes.c_uint(attrs))
        return _check(mfd, "fsmount overlay")
    finally:
        os.close(fsfd)


def umount(path: str, detach: bool = False) -> None:
    flags = UMOUNT_NOFOLLOW | (MNT_DETACH if detach else 0)
    ret = _libc.umount2(path.encode(), ctypes.c_int(flags))
    _check(ret, f"umount {path}")


def syncfs(fd: int) -> None:
    """Flush one filesystem (not every filesystem, as sync(2) would)."""
    _check(_libc.syncfs(ctypes.c_int(fd)), "syncfs")


class _Statx(ctypes.Structure):
    _fields_ = [
        ("stx_mask", ctypes.c_uint32),
        ("stx_blksize", ctypes.c_uint32),
        ("stx_attributes", ctypes.c_uint64),
        ("_rest", ctypes.c_uint8 * 240),
    ]


def is_mount_root(path: str) -> bool:
    """True when path (not followed if a symlink) is the root of a mount."""
    buf = _Statx()
    ret = _libc.statx(
        ctypes.c_int(-100), path.encode(), ctypes.c_int(AT_SYMLINK_NOFOLLOW | AT_STATX_DONT_SYNC), ctypes.c_uint(0), ctypes.byref(buf)
    )
    if ret < 0:
        err = ctypes.get_errno()
        if err in (2, 20):  # ENOENT, ENOTDIR: nothing there, so not mounted
            return False
        raise JailError(f"statx {path}: {os.strerror(err)}")
    return bool(buf.stx_attributes & STATX_ATTR_MOUNT_ROOT)
