"""Tenant root (admin tenants): the subordinate id range of a tenant, the user namespace that maps it,
and the idmapped clone of the image that makes the image look root-owned inside the jail.

Imported by the mount step (mount.py) for admin plans: only posix, _ctypes (through kernel) and errors.

The range is a function of the tenant's uid alone (range_base): every node of a cluster computes the
same one without talking to the others, and the uid reservation (.uids/UID) reserves the range with
it. systemd-nspawn --private-users=pick hashes the machine name into 64K ranges and keeps lock
files; LXD/Incus isolated containers allocate from /etc/subuid under a lock; a fixed function of
an already unique uid needs neither (docs/design.md, "Tenant root").
"""

from __future__ import annotations

import posix

from . import kernel
from .errors import JailError

# The first id of the first admin tenant's range. Each tenant gets COUNT ids: [base, base + COUNT),
# base a function of its uid. 10^9 is above Debian's /etc/subuid allocations (useradd's
# SUB_UID_MAX 600100000) and low enough that the whole default tenant range (uids 10000-59999)
# fits below 2^32-2. It lies inside systemd's container range (0x00080000-0x6FFFFFFF,
# systemd's UIDS-GIDS.md): a host that also runs nspawn --private-users=pick could collide,
# which is why converge checks /etc/subuid, /etc/subgid, passwd and group (check_host_ids).
ADMIN_ID_BASE = 1_000_000_000
COUNT = 65536
ID_MAX = 0xFFFFFFFE  # (uid_t)-1 is "no id"; the last usable id is one below

MOUNT_ATTR_IDMAP = 0x00100000
CLONE_NEWUSER = 0x10000000
SYS_UNSHARE = 272 if posix.uname().machine == "x86_64" else 97
FSCONFIG_SET_FD = 5
MAX_USERNS = "/proc/sys/user/max_user_namespaces"
HOST_ID_FILES = ("/etc/passwd", "/etc/group", "/etc/subuid", "/etc/subgid")


def range_base(uid_min: int, uid: int) -> int:
    """The first host id of the tenant's range; JailError if the range would pass the last id."""
    base = ADMIN_ID_BASE + (uid - uid_min) * COUNT
    if uid < uid_min or base + COUNT - 1 > ID_MAX:
        last = uid_min + (ID_MAX + 1 - ADMIN_ID_BASE) // COUNT - 1
        raise JailError(
            f"uid {uid} has no subordinate id range for admin: true (ranges of {COUNT} ids from {ADMIN_ID_BASE} "
            f"fit uids {uid_min}-{last}); give the admin tenant a uid in that range"
        )
    return base


def check_host_ids(base: int, files: tuple[str, ...] | None = None) -> None:
    """Refuse a range that overlaps a host account or group (passwd, group) or a range the host
    gave out (subuid, subgid: podman rootless, LXD and nspawn users)."""
    end = base + COUNT
    for path in HOST_ID_FILES if files is None else files:
        try:
            with open(path) as fh:
                lines = fh.read().splitlines()
        except FileNotFoundError:
            continue
        for line in lines:
            parts = line.split(":")
            try:
                if path.endswith(("subuid", "subgid")) and len(parts) >= 3:
                    start, count = int(parts[1]), int(parts[2])
                elif len(parts) >= 3:
                    start, count = int(parts[2]), 1
                else:
                    continue
            except ValueError:
                continue
            if start < end and base < start + count:
                raise JailError(f"the admin id range {base}-{end - 1} overlaps {path}: {line!r}")


def check_kernel(max_userns: str | None = None) -> None:
    """User namespaces are allowed (MAX_USERNS is a seam for the tests: they point it at a file of their own)."""
    max_userns = max_userns or MAX_USERNS
    try:
        with open(max_userns) as fh:
            value = fh.read().strip()
    except OSError as exc:
        raise JailError(f"admin: true needs user namespaces, and {max_userns} cannot be read: {exc}") from exc
    if not value.isdigit() or int(value) == 0:
        raise JailError(
            f"admin: true needs user namespaces, and {max_userns} is {value!r}; set it above 0 (sysctl user.max_user_namespaces)"
        )


def check_idmapped_mounts(images_dir: str, base: int) -> None:
    """The kernel and the images' filesystem can idmap a mount: try it on a detached clone."""
    with opened_userns(base) as ns:
        dirfd = posix.open(images_dir, posix.O_PATH | posix.O_DIRECTORY | posix.O_CLOEXEC)
        try:
            mfd = idmapped_clone(dirfd, ns)
            posix.close(mfd)
        except JailError as exc:
            raise JailError(f"admin: true needs idmapped mounts on {images_dir}: {exc}") from exc
        finally:
            posix.close(dirfd)


def make_userns(base: int, count: int = COUNT) -> int:
    """A user namespace mapping 0..count-1 to base.. (uids and gids); returns an fd of it (O_CLOEXEC).

    A child unshares it and waits; we (root in the parent namespace) write its maps and keep a
    descriptor of the namespace, which outlives the child."""
    ready_r, ready_w = posix.pipe()
    go_r, go_w = posix.pipe()
    pid = posix.fork()
    if pid == 0:  # pragma: no cover - the child
        posix.close(ready_r)
        posix.close(go_w)
        ok = kernel._syscall(SYS_UNSHARE, CLONE_NEWUSER) == 0
        posix.write(ready_w, b"1" if ok else b"0")
        posix.read(go_r, 1)
        posix._exit(0)
    posix.close(ready_w)
    posix.close(go_r)
    try:
        if posix.read(ready_r, 1) != b"1":
            raise JailError("cannot create a user namespace (unshare CLONE_NEWUSER)")
        for name in ("uid_map", "gid_map"):
            fd = posix.open(f"/proc/{pid}/{name}", posix.O_WRONLY | posix.O_CLOEXEC)
            try:
                posix.write(fd, f"0 {base} {count}\n".encode())
            except OSError as exc:
                raise JailError(f"cannot write the {name} of a user namespace (0 {base} {count}): {exc}") from exc
            finally:
                posix.close(fd)
        return posix.open(f"/proc/{pid}/ns/user", posix.O_RDONLY | posix.O_CLOEXEC)
    finally:
        posix.close(go_w)
        posix.close(ready_r)
        posix.waitpid(pid, 0)


class opened_userns:
    def __init__(self, base: int) -> None:
        self.fd = make_userns(base)

    def __enter__(self) -> int:
        return self.fd

    def __exit__(self, *exc: object) -> None:
        posix.close(self.fd)


def idmapped_clone(dirfd: int, userns_fd: int) -> int:
    """A detached, read-only clone of the directory at dirfd whose ids are shifted by the namespace's map."""
    mfd = kernel.open_tree_clone(dirfd)
    attr = kernel._u64s(MOUNT_ATTR_IDMAP | kernel.MOUNT_ATTR_RDONLY | kernel.MOUNT_ATTR_NOSUID | kernel.MOUNT_ATTR_NODEV, 0, 0, userns_fd)
    ret = kernel._syscall(kernel.SYS_MOUNT_SETATTR, mfd, b"", kernel.AT_EMPTY_PATH, attr, len(attr))
    if ret < 0:
        import _ctypes

        err = _ctypes.get_errno()
        posix.close(mfd)
        raise JailError(f"mount_setattr MOUNT_ATTR_IDMAP: {posix.strerror(err)}")
    return mfd


def overlay_on_idmapped(lower_mfd: int, upper: str, work: str, attrs: int) -> int:
    """An overlay whose lower layer is the (idmapped, detached) mount lower_mfd: overlayfs takes
    layers as descriptors (fsconfig FSCONFIG_SET_FD "lowerdir+", Linux 6.13), so the idmapped
    clone never has to be attached anywhere a path could reach."""
    fsfd = kernel._check(kernel._syscall(kernel.SYS_FSOPEN, b"overlay", kernel.FSOPEN_CLOEXEC), "fsopen overlay")
    try:
        kernel._check(kernel._syscall(kernel.SYS_FSCONFIG, fsfd, FSCONFIG_SET_FD, b"lowerdir+", None, lower_mfd), "overlay lowerdir+ (fd)")
        for key, value in (("upperdir", upper), ("workdir", work), ("source", "jailyard")):
            ret = kernel._syscall(kernel.SYS_FSCONFIG, fsfd, kernel.FSCONFIG_SET_STRING, key.encode(), value.encode(), 0)
            kernel._check(ret, f"overlay option {key}={value}")
        kernel._check(kernel._syscall(kernel.SYS_FSCONFIG, fsfd, kernel.FSCONFIG_CMD_CREATE, None, None, 0), "overlay create")
        return kernel._check(kernel._syscall(kernel.SYS_FSMOUNT, fsfd, kernel.FSMOUNT_CLOEXEC, attrs), "fsmount overlay")
    finally:
        posix.close(fsfd)
