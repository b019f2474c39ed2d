"""Per-tenant volumes (ploop's idea): the tenant's writable data in an ext4 filesystem in one file.

On a kernel without quota support (CONFIG_QUOTA off, so neither ext4 nor XFS project quotas),
`limits.disk` and `limits.inodes` are enforced by the size of a filesystem instead: the tenant's
home, tmp or upper+work live in <tenants>/<name>/volume.img, a sparse file holding an ext4
filesystem (mkfs.ext4 -m 0, -N from limits.inodes, run on a loop device), attached to a free loop device
(LOOP_CTL_GET_FREE, LOOP_CONFIGURE with LO_FLAGS_AUTOCLEAR) and mounted nosuid,nodev at
<tenants>/<name>/vol, from where the jail's plan binds its pieces. A full volume is ENOSPC to
the tenant alone; a rename or hard link out of it is EXDEV (another filesystem).

Imported by the launcher's mount step on a cold launch of a volume-backed tenant: only the
light modules (kernel's _ctypes bindings, posix), no os, ctypes, struct or subprocess. The
programs (mkfs.ext4, e2fsck, resize2fs) run from apply.py at create and resize only.

Autoclear frees the loop device when its last user goes: the filesystem (unmounted and no
longer held by the jail's bind mounts), or the attaching process if it dies before mounting.
The device number is recorded in <run_dir>/volumes/<name>: a volume whose mount point is gone
but whose filesystem lives on (a jail's binds still hold it) is mounted again from the same
device, so one image never gets two filesystems.
"""

from __future__ import annotations

import _ctypes
import posix
import sys

from . import kernel
from .errors import JailError

LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A
LOOP_SET_CAPACITY = 0x4C07
LOOP_GET_STATUS64 = 0x4C05
LO_FLAGS_AUTOCLEAR = 4
LOOP_INFO64_SIZE = 232  # struct loop_info64
LOOP_CONFIG_SIZE = 8 + LOOP_INFO64_SIZE + 64  # struct loop_config: fd, block_size, info, reserved[8]
EBUSY = 16
S_IFBLK = 0o060000
IMAGE = "volume.img"
MOUNT_DIR = "vol"

_ioctl = kernel._IntFunction(("ioctl", kernel._Libc))


class _InfoBuffer(_ctypes.Array):
    _type_ = kernel._Char
    _length_ = LOOP_INFO64_SIZE


def _u64(value: int) -> bytes:
    return value.to_bytes(8, sys.byteorder)


def _u32(value: int) -> bytes:
    return value.to_bytes(4, sys.byteorder)


def paths(tenants_dir: str, name: str) -> tuple[str, str]:
    """(image, mount point) of a tenant's volume."""
    return f"{tenants_dir}/{name}/{IMAGE}", f"{tenants_dir}/{name}/{MOUNT_DIR}"


def is_mounted(mnt: str) -> bool:
    return kernel.is_mount_root(mnt)


def _record(run_dir: str, name: str) -> str:
    return f"{run_dir}/volumes/{name}"


def _backs(loop_fd: int, st: posix.stat_result) -> bool:
    """Whether the loop device is attached to the file of st (LOOP_GET_STATUS64: ENXIO when free)."""
    buf = _InfoBuffer()
    if _ioctl(loop_fd, LOOP_GET_STATUS64, buf) < 0:
        return False
    raw = bytes(buf)
    dev = int.from_bytes(raw[0:8], sys.byteorder)
    ino = int.from_bytes(raw[8:16], sys.byteorder)
    return dev == st.st_dev and ino == st.st_ino


def _recorded_device(run_dir: str, name: str, st: posix.stat_result) -> tuple[str, int] | None:
    """The loop device still attached to this image by an earlier mount (its filesystem may live on), if
    any, with an open fd of it: held until mounted, so autoclear cannot free it in between."""
    try:
        fd = posix.open(_record(run_dir, name), posix.O_RDONLY | posix.O_CLOEXEC | posix.O_NOFOLLOW)
    except OSError:
        return None
    try:
        dev = posix.read(fd, 64).decode("ascii", "replace").strip()
    finally:
        posix.close(fd)
    if not dev.startswith("/dev/loop") or not dev[9:].isdigit():
        return None
    try:
        lfd = posix.open(dev, posix.O_RDONLY | posix.O_CLOEXEC)
    except OSError:
        return None
    if _backs(lfd, st):
        return dev, lfd
    posix.close(lfd)
    return None


def _write_record(run_dir: str, name: str, dev: str) -> None:
    top = f"{run_dir}/volumes"
    try:
        posix.mkdir(top, 0o700)
    except FileExistsError:
        pass
    path = _record(run_dir, name)
    tmp = f"{path}.tmp"
    fd = posix.open(tmp, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC | posix.O_CLOEXEC | posix.O_NOFOLLOW, 0o600)
    try:
        posix.write(fd, dev.encode() + b"\n")
    finally:
        posix.close(fd)
    posix.rename(tmp, path)


def _open_loop(dev: str, num: int) -> int:
    """Open /dev/loopNUM. A static /dev (a container's: podman --privileged copies the host's device
    nodes when it starts) has no node for a loop device the kernel made since: make it, as devtmpfs
    would, with the numbers sysfs gives."""
    try:
        return posix.open(dev, posix.O_RDWR | posix.O_CLOEXEC)
    except FileNotFoundError:
        fd = posix.open(f"/sys/devices/virtual/block/loop{num}/dev", posix.O_RDONLY | posix.O_CLOEXEC)
        try:
            major, minor = posix.read(fd, 32).decode("ascii").strip().split(":")
        finally:
            posix.close(fd)
        try:
            posix.mknod(dev, S_IFBLK | 0o660, posix.makedev(int(major), int(minor)))
        except FileExistsError:
            pass
        return posix.open(dev, posix.O_RDWR | posix.O_CLOEXEC)


def attach(image: str) -> tuple[str, int]:
    """Attach image to a free loop device with autoclear: (device path, its open fd: close it once mounted)."""
    img_fd = posix.open(image, posix.O_RDWR | posix.O_CLOEXEC | posix.O_NOFOLLOW)
    try:
        ctl = posix.open("/dev/loop-control", posix.O_RDWR | posix.O_CLOEXEC)
        try:
            for tries in range(16, 0, -1):  # noqa: B007 (a bound on the retries)
                num = _ioctl(ctl, LOOP_CTL_GET_FREE)
                if num < 0:
                    raise JailError(f"no free loop device for {image}: {posix.strerror(_ctypes.get_errno())}")
                dev = f"/dev/loop{num}"
                lfd = _open_loop(dev, num)
                name = image.encode()[-63:]
                info = bytearray(LOOP_INFO64_SIZE)
                info[52:56] = _u32(LO_FLAGS_AUTOCLEAR)  # lo_flags
                info[56 : 56 + len(name)] = name  # lo_file_name, for losetup -l
                config = _u32(img_fd) + _u32(0) + bytes(info) + bytes(64)
                if _ioctl(lfd, LOOP_CONFIGURE, config) == 0:
                    return dev, lfd
                err = _ctypes.get_errno()
                posix.close(lfd)
                if err != EBUSY:  # another attacher took it between GET_FREE and CONFIGURE: try the next
                    raise JailError(f"cannot attach {image} to {dev}: {posix.strerror(err)}")
            raise JailError(f"cannot attach {image}: every free loop device was taken first")
        finally:
            posix.close(ctl)
    finally:
        posix.close(img_fd)


def _mount_dev(dev: str, mnt: str) -> None:
    fsfd = kernel._check(kernel._syscall(kernel.SYS_FSOPEN, b"ext4", kernel.FSOPEN_CLOEXEC), "fsopen ext4")
    try:
        ret = kernel._syscall(kernel.SYS_FSCONFIG, fsfd, kernel.FSCONFIG_SET_STRING, b"source", dev.encode(), 0)
        kernel._check(ret, f"ext4 source {dev}")
        kernel._check(kernel._syscall(kernel.SYS_FSCONFIG, fsfd, kernel.FSCONFIG_CMD_CREATE, None, None, 0), f"mount {dev} (ext4)")
        attrs = kernel.MOUNT_ATTR_NOSUID | kernel.MOUNT_ATTR_NODEV
        mfd = kernel._check(kernel._syscall(kernel.SYS_FSMOUNT, fsfd, kernel.FSMOUNT_CLOEXEC, attrs), "fsmount ext4")
    finally:
        posix.close(fsfd)
    try:
        kernel.set_mount_attrs(mfd, attrs)
        tfd = posix.open(mnt, posix.O_PATH | posix.O_DIRECTORY | posix.O_NOFOLLOW | posix.O_CLOEXEC)
        try:
            kernel.move_mount_to_fd(mfd, tfd, mnt)
        finally:
            posix.close(tfd)
    finally:
        posix.close(mfd)


def ensure_mounted(tenants_dir: str, run_dir: str, name: str) -> str | None:
    """Mount the tenant's volume at its mount point unless it is there; the device mounted, or None.

    The caller holds the tenant lock. A device still attached to the image (its filesystem held
    by leftovers) is mounted again rather than a second one attached."""
    image, mnt = paths(tenants_dir, name)
    if kernel.is_mount_root(mnt):
        return None
    try:
        st = posix.stat(image, follow_symlinks=False)
    except FileNotFoundError:
        raise JailError(f"the volume of jail {name} is missing: {image}") from None
    if not (st.st_mode & 0o170000 == 0o100000):
        raise JailError(f"refusing the volume of jail {name}: {image} is not a regular file")
    found = _recorded_device(run_dir, name, st)
    if found is None:
        if growth_pending(image, st.st_size):
            grow_offline(image)  # the limit grew while it was mounted and the kernel refused to grow it online
        dev, lfd = attach(image)
        try:
            _write_record(run_dir, name, dev)
        except BaseException:
            posix.close(lfd)
            raise
    else:
        dev, lfd = found
    try:
        _mount_dev(dev, mnt)
    finally:
        posix.close(lfd)  # mounted: the filesystem holds the device; failed: autoclear frees it now
    return dev


def unmount(tenants_dir: str, name: str) -> bool:
    """Take the volume's mount point off (lazily: the jail's binds, if any, keep the filesystem until
    they go; the last user frees the loop device). True if it was mounted."""
    mnt = paths(tenants_dir, name)[1]
    if not kernel.is_mount_root(mnt):
        return False
    kernel.umount(mnt, detach=True)
    return True


def device_of(run_dir: str, tenants_dir: str, name: str) -> str | None:
    """The loop device the tenant's image is attached to now, if any."""
    image = paths(tenants_dir, name)[0]
    try:
        st = posix.stat(image, follow_symlinks=False)
    except FileNotFoundError:
        return None
    found = _recorded_device(run_dir, name, st)
    if found is None:
        return None
    posix.close(found[1])
    return found[0]


def forget(run_dir: str, name: str) -> None:
    """Remove the record of the tenant's loop device (a purge)."""
    try:
        posix.unlink(_record(run_dir, name))
    except FileNotFoundError:
        pass


def fs_size(image: str) -> tuple[int, int]:
    """(bytes, block size) of the ext4 filesystem in image, from its superblock (at byte 1024)."""
    fd = posix.open(image, posix.O_RDONLY | posix.O_CLOEXEC | posix.O_NOFOLLOW)
    try:
        sb = posix.pread(fd, 1024, 1024)
    finally:
        posix.close(fd)
    if len(sb) < 1024 or sb[56:58] != b"\x53\xef":
        raise JailError(f"{image} holds no ext4 filesystem")
    block = 1024 << int.from_bytes(sb[24:28], "little")
    blocks = int.from_bytes(sb[4:8], "little")
    if int.from_bytes(sb[96:100], "little") & 0x80:  # INCOMPAT_64BIT: s_blocks_count_hi
        blocks |= int.from_bytes(sb[0x150:0x154], "little") << 32
    return blocks * block, block


def growth_pending(image: str, size: int) -> bool:
    """Whether the file grew (to size) but its filesystem has not yet (online resizing refused here)."""
    fs_bytes, block = fs_size(image)
    return fs_bytes + block <= size


def run_tool(argv: list[str], what: str) -> None:
    """e2fsck, resize2fs, mkfs.ext4: one line naming what failed (only at create and resize: subprocess loads here)."""
    import subprocess

    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise JailError(f"{what}: {argv[0]} is missing (install e2fsprogs)") from None
    if done.returncode != 0 and not (argv[0] == "e2fsck" and done.returncode == 1):  # e2fsck 1: errors corrected
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise JailError(f"{what}: {argv[0]} failed: {lines[-1] if lines else f'exit status {done.returncode}'}")


def grow_offline(image: str) -> None:
    """The filesystem grown to its file (not mounted anywhere: e2fsck -f first, as resize2fs asks)."""
    what = f"cannot grow the filesystem in {image}"
    run_tool(["e2fsck", "-f", "-p", image], what)
    run_tool(["resize2fs", image], what)


def grow_online(dev: str) -> bool:
    """Grow a live filesystem to its grown file: LOOP_SET_CAPACITY, then resize2fs. False if the kernel
    refuses online resizing (EPERM without CAP_SYS_RESOURCE, as in some containers): it grows at its next mount."""
    set_capacity(dev)
    try:
        run_tool(["resize2fs", dev], f"cannot grow the filesystem on {dev}")
    except JailError as exc:
        if "Permission denied" in str(exc) or "not supported" in str(exc):
            return False
        raise
    return True


def set_capacity(dev: str) -> None:
    """Tell the loop device its file grew (LOOP_SET_CAPACITY), before an online resize2fs."""
    fd = posix.open(dev, posix.O_RDONLY | posix.O_CLOEXEC)
    try:
        kernel._check(_ioctl(fd, LOOP_SET_CAPACITY, 0), f"LOOP_SET_CAPACITY {dev}")
    finally:
        posix.close(fd)
