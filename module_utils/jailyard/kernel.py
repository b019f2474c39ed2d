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
only reads those), and char arrays for the results of statx, statmount and
listmount. tests/integration/test_kernel.py holds each call to the kernel.

listmount(2) and statmount(2) (Linux 6.8) answer questions about mounts by
their unique 64-bit id without reading /proc/self/mountinfo; on an older
kernel they raise Unsupported and callers (jailyard.mounttable) read the table.
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
SYS_OPENAT2 = 437
SYS_STATMOUNT = 457
SYS_LISTMOUNT = 458
SYS_OPEN_TREE_ATTR = 467

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
STATX_MNT_ID_UNIQUE = 0x4000
# statmount(2) request bits (include/uapi/linux/mount.h); SB_SOURCE came after 6.8 (6.13).
STATMOUNT_MNT_BASIC = 0x2
STATMOUNT_MNT_ROOT = 0x8
STATMOUNT_MNT_POINT = 0x10
STATMOUNT_FS_TYPE = 0x20
STATMOUNT_SB_SOURCE = 0x200
MNT_ID_REQ_SIZE_VER0 = 24
LSMT_ROOT = 0xFFFFFFFFFFFFFFFF
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
ENOSYS = 38
EPERM = 1
EOVERFLOW = 75

ATTR_BY_OPTION = {"ro": MOUNT_ATTR_RDONLY, "nosuid": MOUNT_ATTR_NOSUID, "nodev": MOUNT_ATTR_NODEV, "noexec": MOUNT_ATTR_NOEXEC}


class Unsupported(JailError):
    """The running kernel lacks a call or a field asked for (ENOSYS, or a mask bit it did not set)."""


def _check(ret: int, what: str) -> int:
    if ret < 0:
        raise JailError(f"{what}: {posix.strerror(_ctypes.get_errno())}")
    return ret


def _u64s(*values: int) -> bytes:
    """A C struct of u64 fields (struct mount_attr), passed by pointer."""
    return b"".join(v.to_bytes(8, sys.byteorder) for v in values)


# The structs passed by pointer, packed once per distinct value (mounting a jail passes thirteen;
# packing each anew was a tenth of the mount, issue 21).
_OPEN_HOW: dict[int, bytes] = {}
_MOUNT_ATTR: dict[tuple[int, bool], bytes] = {}


def open_beneath(dirfd: int, rel: str, flags: int) -> int:
    """openat2(2) of rel below dirfd with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS: no symlink
    followed anywhere (a trailing one too, unless flags has O_NOFOLLOW), no escape by '..' or an
    absolute path. The fd, or minus the errno when it refuses or fails (callers walk the path
    again to say why). Unsupported on a kernel without openat2 (ENOSYS: before 5.6)."""
    how = _OPEN_HOW.get(flags)
    if how is None:
        how = _OPEN_HOW[flags] = _u64s(flags, 0, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)  # struct open_how: flags, mode, resolve
    fd = _syscall(SYS_OPENAT2, dirfd, rel.encode(), how, 24)
    if fd >= 0:
        return fd
    err = _ctypes.get_errno()
    if err == ENOSYS:
        raise Unsupported("openat2: the kernel has no openat2(2) (Linux 5.6)")
    return -err


# Whether open_tree_clone asks open_tree_attr(2) (Linux 6.15) for a clone with its attributes set:
# False once the kernel said it lacks it, or where tests force the two calls.
_OPEN_TREE_ATTR = True


def open_tree_clone(dirfd: int, path: str = "", recursive: bool = False, attrs: int | None = None) -> int:
    """A detached copy of the mount at dirfd/path (an fd, close-on-exec). With attrs: its mount
    attributes set and its propagation private (set_mount_attrs), in the same call where the kernel
    has open_tree_attr(2), else in a second (a jail's five mounts: five calls fewer, issue 21)."""
    global _OPEN_TREE_ATTR
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (AT_EMPTY_PATH if path == "" else 0)
    if recursive:
        flags |= AT_RECURSIVE
    what = f"open_tree {path or '<fd>'}"
    if attrs is not None and _OPEN_TREE_ATTR:
        fd = _syscall(SYS_OPEN_TREE_ATTR, dirfd, path.encode(), flags, _mount_attr(attrs, True), 32)
        if fd >= 0 or _ctypes.get_errno() not in (ENOSYS, EPERM):
            return _check(fd, what)
        # ENOSYS: before 6.15; EPERM: what an older seccomp profile answers for a syscall it does not
        # know. The two calls below then run, and say what is wrong if something really is.
        _OPEN_TREE_ATTR = False
    fd = _check(_syscall(SYS_OPEN_TREE, dirfd, path.encode(), flags), what)
    if attrs is not None:
        try:
            set_mount_attrs(fd, attrs)
        except BaseException:
            posix.close(fd)
            raise
    return fd


def set_mount_attrs(mfd: int, attrs: int, private: bool = True) -> None:
    _check(_syscall(SYS_MOUNT_SETATTR, mfd, b"", AT_EMPTY_PATH, _mount_attr(attrs, private), 32), "mount_setattr")


def _mount_attr(attrs: int, private: bool) -> bytes:
    """struct mount_attr (attr_set, attr_clr, propagation, userns_fd), packed once per value."""
    attr = _MOUNT_ATTR.get((attrs, private))
    if attr is None:
        attr = _MOUNT_ATTR[attrs, private] = _u64s(attrs, 0, MS_PRIVATE if private else 0, 0)
    return attr


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


_MOUNT_ROOT_BYTE = 8 + (1 if sys.byteorder == "little" else 6)
_MOUNT_ROOT_BIT = STATX_ATTR_MOUNT_ROOT >> 8


def is_mount_root(path: str) -> bool:
    """True when path (not followed if a symlink) is the root of a mount."""
    return mount_roots([path])[0]


def mount_roots(paths: list[str]) -> list[bool]:
    """Whether each path (not followed if a symlink) is the root of a mount: one statx each, with
    one result buffer for all (a jail's five targets; issue 21)."""
    buf = _StatxBuffer()
    flags = AT_SYMLINK_NOFOLLOW | AT_STATX_DONT_SYNC
    out = []
    for path in paths:
        if _statx(AT_FDCWD, path.encode(), flags, 0, buf) < 0:
            err = _ctypes.get_errno()
            if err in (2, 20):  # ENOENT, ENOTDIR: nothing there, so not mounted
                out.append(False)
                continue
            raise JailError(f"statx {path}: {posix.strerror(err)}")
        # struct statx: u32 stx_mask, u32 stx_blksize, u64 stx_attributes, ...: only the byte of
        # stx_attributes that holds STATX_ATTR_MOUNT_ROOT (0x2000) is read.
        out.append(bool(buf[_MOUNT_ROOT_BYTE][0] & _MOUNT_ROOT_BIT))
    return out


def _u32(raw: bytes | bytearray, offset: int) -> int:
    return int.from_bytes(raw[offset : offset + 4], sys.byteorder)


def _u64(raw: bytes | bytearray, offset: int) -> int:
    return int.from_bytes(raw[offset : offset + 8], sys.byteorder)


def mount_id(path: str) -> tuple[int, bool]:
    """The unique 64-bit id of the mount holding path (not followed if a symlink), and whether
    path is that mount's root. Unsupported before Linux 6.8 (no STATX_MNT_ID_UNIQUE)."""
    buf = _StatxBuffer()
    ret = _statx(AT_FDCWD, path.encode(), AT_SYMLINK_NOFOLLOW | AT_STATX_DONT_SYNC, STATX_MNT_ID_UNIQUE, buf)
    if ret < 0:
        raise JailError(f"statx {path}: {posix.strerror(_ctypes.get_errno())}")
    raw = buf.raw
    if not _u32(raw, 0) & STATX_MNT_ID_UNIQUE:  # stx_mask
        raise Unsupported(f"statx {path}: the kernel gives no unique mount id (STATX_MNT_ID_UNIQUE, Linux 6.8)")
    # struct statx: stx_attributes at 8, stx_mnt_id at 0x90.
    return _u64(raw, 0x90), bool(_u64(raw, 8) & STATX_ATTR_MOUNT_ROOT)


def _mnt_id_req(mnt_id: int, param: int) -> bytes:
    # struct mnt_id_req (version 0): u32 size, u32 spare, u64 mnt_id, u64 param
    return _u32_bytes(MNT_ID_REQ_SIZE_VER0) + _u32_bytes(0) + _u64s(mnt_id, param)


def _u32_bytes(value: int) -> bytes:
    return value.to_bytes(4, sys.byteorder)


class _U64(_ctypes._SimpleCData):
    _type_ = "Q"


_LIST_BATCH = 4096


class _MountIdBuffer(_ctypes.Array):
    _type_ = _U64
    _length_ = _LIST_BATCH


def listmount(mnt_id: int) -> list[int]:
    """Unique ids of the mounts below mount mnt_id, in id (mount) order.

    Linux lists every mount below, at any depth (checked on 6.18 in
    tests/integration/test_kernel.py), a batch of 4,096 per call; each next call
    starts after the last id it returned. Unsupported on a kernel without
    listmount(2) (ENOSYS: before 6.8).
    """
    ids: list[int] = []
    last = 0
    buf = _MountIdBuffer()
    while True:
        n = _syscall(SYS_LISTMOUNT, _mnt_id_req(mnt_id, last), buf, _LIST_BATCH, 0)
        if n < 0:
            err = _ctypes.get_errno()
            if err == ENOSYS:
                raise Unsupported("listmount: the kernel has no listmount(2) (Linux 6.8)")
            raise JailError(f"listmount {mnt_id}: {posix.strerror(err)}")
        batch = buf[:n]
        ids += batch
        if n < _LIST_BATCH:
            return ids
        last = batch[-1]


STATMOUNT_HEADER = 512  # sizeof(struct statmount) before its strings
_STATMOUNT_WANT = STATMOUNT_MNT_BASIC | STATMOUNT_MNT_ROOT | STATMOUNT_MNT_POINT | STATMOUNT_FS_TYPE | STATMOUNT_SB_SOURCE


class StatMount:
    """What statmount(2) says of one mount (the fields mountinfo has, and the unique ids)."""

    __slots__ = ("attr", "fstype", "mnt_id", "mnt_id_old", "parent_id", "parent_id_old", "point", "root", "source")

    def __init__(self, raw: bytes) -> None:
        # struct statmount, as u32 (i) and u64 (q) words: u32 size, u32 mnt_opts, u64 mask,
        # u32 sb_dev_major, u32 sb_dev_minor, u64 sb_magic, u32 sb_flags, u32 fs_type (i[9], str),
        # u64 mnt_id (q[5]), u64 mnt_parent_id (q[6]), u32 mnt_id_old (i[14]), u32 mnt_parent_id_old
        # (i[15]), u64 mnt_attr (q[8]), u64 mnt_propagation, u64 mnt_peer_group, u64 mnt_master,
        # u64 propagate_from, u32 mnt_root (i[26], str), u32 mnt_point (i[27], str), u64 mnt_ns_id,
        # u32 fs_subtype, u32 sb_source (i[31], str). Strings: nul-terminated, at offsets from str[].
        header = memoryview(raw)[:STATMOUNT_HEADER]
        q, i = header.cast("Q"), header.cast("I")
        self.mnt_id, self.parent_id, self.attr = q[5], q[6], q[8]
        self.mnt_id_old, self.parent_id_old = i[14], i[15]
        self.fstype = _string(raw, i[9])
        self.root = _string(raw, i[26])
        self.point = _string(raw, i[27])
        self.source = _string(raw, i[31])


def _string(raw: bytes, offset: int) -> str:
    start = STATMOUNT_HEADER + offset
    return raw[start : raw.index(0, start)].decode("utf-8", "surrogateescape")


class _StatmountBuffer(_ctypes.Array):
    _type_ = _Char
    _length_ = STATMOUNT_HEADER + 4096 + 512  # a PATH_MAX mount point, root and a short type and source


_STATMOUNT_REQ_HEAD = (MNT_ID_REQ_SIZE_VER0).to_bytes(4, sys.byteorder) + bytes(4)
_STATMOUNT_REQ_TAIL = _STATMOUNT_WANT.to_bytes(8, sys.byteorder)


def statmount(mnt_id: int) -> StatMount | None:
    """Mount mnt_id's ids, attributes, root, mount point, type and source; None if it is gone
    (unmounted since it was listed). Unsupported where the kernel lacks it (ENOSYS) or gives no sb_source (a 6.8-6.12 statmount).

    Called once per mount by mounttable (50,000 times with 10,000 jails mounted),
    so the request is put together from constant parts and only the bytes the
    kernel wrote are copied out of the buffer.
    """
    req = _STATMOUNT_REQ_HEAD + mnt_id.to_bytes(8, sys.byteorder) + _STATMOUNT_REQ_TAIL
    size = _StatmountBuffer._length_
    buf: _ctypes.Array = _StatmountBuffer()
    while True:
        ret = _syscall(SYS_STATMOUNT, req, buf, size, 0)
        if ret == 0:
            break
        err = _ctypes.get_errno()
        if err == EOVERFLOW and size < (1 << 20):  # strings longer than the buffer: grow it
            size *= 4
            buf = (_Char * size)()
            continue
        if err == 2:  # ENOENT
            return None
        if err == ENOSYS:
            raise Unsupported("statmount: the kernel has no statmount(2) (Linux 6.8)")
        raise JailError(f"statmount {mnt_id}: {posix.strerror(err)}")
    raw = buf[: int.from_bytes(buf[0:4], sys.byteorder)]  # struct statmount's size: header and strings
    if int.from_bytes(raw[8:16], sys.byteorder) & _STATMOUNT_WANT != _STATMOUNT_WANT:  # mask: what was filled in
        raise Unsupported(f"statmount {mnt_id}: the kernel gives no mount source (STATMOUNT_SB_SOURCE)")
    return StatMount(raw)
