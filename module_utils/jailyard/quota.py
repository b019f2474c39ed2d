"""Per-tenant disk and inode quotas: filesystem project quotas, one project per tenant.

A tenant's project id is its uid (deterministic, so every node of a cluster agrees). Its
directories (home, home/<name>, tmp, upper, work) carry that project id and the
project-inherit flag (FS_IOC_FSSETXATTR, FS_XFLAG_PROJINHERIT): everything created below them
is charged to the project whatever uid writes it (the tenant, tenant root's mapped ids, root
through overlayfs), and the kernel refuses (EXDEV) a rename or hard link into them of a file of
another project. Limits are set with quotactl_fd(2) (Q_SETQUOTA, PRJQUOTA) on the tenants
directory's filesystem: ext4 with the `project` and `quota` features mounted with `prjquota`,
or XFS mounted with `prjquota`. No program runs per tenant.

The kernel lets a file's owner change its project id in the initial user namespace: the
launcher's seccomp filter refuses FS_IOC_FSSETXATTR and FS_IOC_SETFLAGS in every jail.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat
import struct

from .errors import JailError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

PRJQUOTA = 2
Q_GETINFO = 0x800005
Q_GETQUOTA = 0x800007
Q_SETQUOTA = 0x800008
QIF_BLIMITS = 1
QIF_ILIMITS = 4
BLOCK = 1024  # quotactl's block limits are in 1 KiB units (QIF_DQBLKSIZE)
SYS_QUOTACTL_FD = 443  # the same number on every architecture (asm-generic table), Linux 5.14+

FS_IOC_FSGETXATTR = 0x801C581F
FS_IOC_FSSETXATTR = 0x401C5820
FS_XFLAG_PROJINHERIT = 0x200
FSXATTR = struct.Struct("=IIIII8x")  # xflags, extsize, nextents, projid, cowextsize, pad

# The tenant directories that get the project (relative to <tenants>/<name>), parents first.
PROJECT_DIRS = ("home", "tmp", "upper", "work")


class Dqblk(ctypes.Structure):
    _fields_ = [
        ("bhardlimit", ctypes.c_uint64),
        ("bsoftlimit", ctypes.c_uint64),
        ("curspace", ctypes.c_uint64),
        ("ihardlimit", ctypes.c_uint64),
        ("isoftlimit", ctypes.c_uint64),
        ("curinodes", ctypes.c_uint64),
        ("btime", ctypes.c_uint64),
        ("itime", ctypes.c_uint64),
        ("valid", ctypes.c_uint32),
    ]


class Dqinfo(ctypes.Structure):
    _fields_ = [("bgrace", ctypes.c_uint64), ("igrace", ctypes.c_uint64), ("flags", ctypes.c_uint32), ("valid", ctypes.c_uint32)]


_libc = None


def _syscall():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    return _libc.syscall


def _quotactl(fd: int, cmd: int, qid: int, buf: ctypes.Structure | None) -> None:
    ret = _syscall()(
        ctypes.c_long(SYS_QUOTACTL_FD),
        ctypes.c_uint(fd),
        ctypes.c_uint(cmd),
        ctypes.c_uint(qid),
        ctypes.byref(buf) if buf is not None else None,
    )
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def project_id(uid: int) -> int:
    """The tenant's project id: its uid (every node agrees, admin tenants' mapped ids included)."""
    return uid


# statfs(2) f_type of the filesystems support() names (linux/magic.h).
FS_NAMES = {
    0xEF53: "ext4",
    0x58465342: "xfs",
    0x01021994: "tmpfs",
    0x9123683E: "btrfs",
    0x794C7630: "overlay",
    0x6969: "nfs",
    0x65735546: "fuse",
}


class _Statfs(ctypes.Structure):
    # struct statfs (64-bit): f_type first; the rest only sizes the buffer the kernel fills.
    _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 112)]


def _fs_name(fd: int) -> str:
    """The name of the filesystem of fd, from fstatfs(2)'s f_type (no mount table read)."""
    buf = _Statfs()
    _syscall()  # loads libc
    if _libc.fstatfs(fd, ctypes.byref(buf)) != 0:
        return "unknown"
    return FS_NAMES.get(buf.f_type & 0xFFFFFFFF, f"filesystem type {buf.f_type & 0xFFFFFFFF:#x}")


def _super_options(path: str | Path) -> str:
    """The mount and super options of the mount holding path, from /proc/self/mountinfo.

    Read only once the filesystem is ext4 or XFS and its project quota is on, to tell enforced from
    accounting-only (ext4 without prjquota, XFS pqnoenforce): a node without quotas never reads the
    table, which holds one line per mount of every jail.
    """
    dev = os.stat(path).st_dev
    found = ""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
        for line in fh:
            fields = line.split()
            major, minor = (int(x) for x in fields[2].split(":"))
            if os.makedev(major, minor) != dev:
                continue
            sep = fields.index("-")
            found = f"{fields[5]},{fields[sep + 3] if len(fields) > sep + 3 else ''}"
    return found


def support(path: str | Path) -> str | None:
    """None if the filesystem of path enforces project quotas, else why not (one phrase).

    The kernel is asked first (fstatfs, then quotactl_fd Q_GETINFO for project quota), so a
    filesystem without project quota costs two system calls, not a read of the mount table.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        return f"cannot open it: {exc.strerror}"
    try:
        fstype = _fs_name(fd)
        if fstype not in ("ext4", "xfs"):
            return f"it is {fstype}, not ext4 or xfs"
        try:
            _quotactl(fd, _qcmd(Q_GETINFO), 0, Dqinfo())
        except OSError as exc:
            if exc.errno == errno.ENOSYS:
                return "the kernel has no quotactl_fd (Linux 5.14 or later is needed)"
            return f"project quota is off ({exc.strerror})"
    finally:
        os.close(fd)
    opts = set(_super_options(path).split(","))
    if not opts & {"prjquota", "pquota", "pqnoenforce"} or "pqnoenforce" in opts:
        return f"its {fstype} mount has no enforced project quota (mount option prjquota)"
    return None


_SUPPORT: dict[str, str | None] = {}


def forget() -> None:
    """Start a run: support_cached reads the mount table again."""
    _SUPPORT.clear()


def support_cached(path: str | Path) -> str | None:
    """support(), once per path until forget() (each converge run calls it first)."""
    key = str(path)
    if key not in _SUPPORT:
        _SUPPORT[key] = support(path)
    return _SUPPORT[key]


def supported(path: str | Path) -> bool:
    return support_cached(path) is None


def require(path: str | Path, what: str) -> None:
    why = support_cached(path)
    if why is not None:
        raise JailError(
            f"{what} needs project quotas on the filesystem of {path}, but {why}; "
            "prepare tenant storage with the jail_storage role (ext4 -O quota,project or xfs, mounted with prjquota)"
        )


def _qcmd(cmd: int) -> int:
    return (cmd << 8) | PRJQUOTA


def get(path: str | Path, projid: int) -> dict[str, int]:
    """The project's usage and hard limits: bytes, bytes_limit, inodes, inodes_limit (0: none)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        dq = Dqblk()
        _quotactl(fd, _qcmd(Q_GETQUOTA), projid, dq)
    finally:
        os.close(fd)
    return {
        "bytes": dq.curspace,
        "bytes_limit": dq.bhardlimit * BLOCK,
        "inodes": dq.curinodes,
        "inodes_limit": dq.ihardlimit,
    }


def set_limits(path: str | Path, projid: int, disk: int, inodes: int) -> None:
    """Hard = soft limits for the project (disk in bytes, rounded up to KiB; 0 removes a limit).

    A limit below the current usage is applied: nothing is deleted, the tenant's further writes
    (and new files) fail with EDQUOT until it frees enough."""
    blocks = (disk + BLOCK - 1) // BLOCK
    dq = Dqblk(bhardlimit=blocks, bsoftlimit=blocks, ihardlimit=inodes, isoftlimit=inodes, valid=QIF_BLIMITS | QIF_ILIMITS)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _quotactl(fd, _qcmd(Q_SETQUOTA), projid, dq)
    finally:
        os.close(fd)


def get_project(fd: int) -> tuple[int, bool]:
    """(project id, project-inherit flag) of an open file or directory."""
    buf = bytearray(FSXATTR.size)
    fcntl.ioctl(fd, FS_IOC_FSGETXATTR, buf)
    fields = FSXATTR.unpack(buf)
    return fields[3], bool(fields[0] & FS_XFLAG_PROJINHERIT)


def set_project(fd: int, projid: int, inherit: bool) -> None:
    buf = bytearray(FSXATTR.size)
    fcntl.ioctl(fd, FS_IOC_FSGETXATTR, buf)
    fields = list(FSXATTR.unpack(buf))
    fields[0] = (fields[0] | FS_XFLAG_PROJINHERIT) if inherit else (fields[0] & ~FS_XFLAG_PROJINHERIT)
    fields[3] = projid
    fcntl.ioctl(fd, FS_IOC_FSSETXATTR, FSXATTR.pack(*fields))


def dir_project(dir_fd: int, name: str) -> tuple[int, bool] | None:
    """The project of dir_fd/name (a directory, never followed), or None if it is missing."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    try:
        return get_project(fd)
    finally:
        os.close(fd)


def assign_tree(dir_fd: int, name: str, projid: int) -> int:
    """Put dir_fd/name and everything below it in the project (directories inherit); returns the count.

    Walks by descriptor, never following a symlink; opens only directories and regular files
    (a FIFO or a device node is never opened: symlinks and special files keep their project,
    they hold no blocks). Files already in the project are left alone."""
    count = 0
    top = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    stack = [top]
    try:
        while stack:
            fd = stack.pop()
            try:
                if get_project(fd) != (projid, True):
                    set_project(fd, projid, True)
                    count += 1
                with os.scandir(fd) as entries:
                    children = list(entries)
                for entry in children:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        flags = os.O_RDONLY | os.O_DIRECTORY
                    elif stat.S_ISREG(st.st_mode):
                        flags = os.O_RDONLY | os.O_NONBLOCK
                    else:
                        continue
                    try:
                        cfd = os.open(entry.name, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY, dir_fd=fd)
                    except (FileNotFoundError, OSError) as exc:
                        if isinstance(exc, FileNotFoundError) or exc.errno == errno.ELOOP:
                            continue
                        raise
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(cfd)
                        continue
                    try:
                        if stat.S_ISREG(os.fstat(cfd).st_mode) and get_project(cfd)[0] != projid:
                            set_project(cfd, projid, False)
                            count += 1
                    finally:
                        os.close(cfd)
            finally:
                os.close(fd)
    except BaseException:
        for fd in stack:
            os.close(fd)
        raise
    return count
