"""The mounts the loops ask about, from the kernel by mount id, not from the whole mount table.

With 10,000 jails mounted /proc/self/mountinfo has 50,000 lines; reading and
parsing it costs every caller about half a second however little it wants to
know. listmount(2) lists the mounts below one mount (the jails directory's own
tmpfs, or one jail root) and statmount(2) describes one mount by its id
(Linux 6.8; the mount source, which mountinfo also gives, 6.13). Where the
kernel lacks them, or with JAILYARD_MOUNTINFO=1 in the environment (or
mountinfo=True), the same answers come from one read of mountinfo; the tests
run both ways and compare them.

Where it pays: mounts_below one mounted jail root is one statx, one
listmount and one statmount per mount of that jail, however many jails the
node has. Listing every jail's mounts (jail_mounts) costs about 1.5x one read
and parse of mountinfo with 10,000 jails (bench/scale: a statmount call and
its decoding cost more than a mountinfo line's parse), so the loops do not
list every mount: expiry asks only when a jail is half-mounted, and whether a
known target is mounted is one statx of it (kernel.is_mount_root, as
mount.mount_state and the launcher do).
"""

from __future__ import annotations

import posix

from . import kernel
from .errors import JailError
from .mountinfo import MountInfo, jails_with_mounts, mounts_under, read_mountinfo

ENV_FORCE_MOUNTINFO = "JAILYARD_MOUNTINFO"
_kernel_lists: list[bool] = []  # [] until the first check: whether listmount and statmount work here


def use_listmount(mountinfo: bool | None = None) -> bool:
    """Whether to ask listmount/statmount (True) or read mountinfo (False).

    mountinfo=True forces the table, False forces the kernel calls (an
    Unsupported error where it lacks them); None decides by the environment
    (JAILYARD_MOUNTINFO set and not 0) and what the kernel has (checked once).
    """
    if mountinfo is not None:
        return not mountinfo
    if posix.environ.get(ENV_FORCE_MOUNTINFO.encode(), b"0") not in (b"", b"0"):
        return False
    if not _kernel_lists:
        try:
            root_id = kernel.mount_id("/")[0]
            kernel.listmount(root_id)
            kernel.statmount(root_id)
            _kernel_lists.append(True)
        except kernel.Unsupported:
            _kernel_lists.append(False)
    return _kernel_lists[0]


# struct statmount's mnt_attr, rendered as mountinfo's per-mount options (fs/proc_namespace.c).
_ATTR_OPTIONS = (
    (kernel.MOUNT_ATTR_NOSUID, "nosuid"),
    (kernel.MOUNT_ATTR_NODEV, "nodev"),
    (kernel.MOUNT_ATTR_NOEXEC, "noexec"),
    (0x10, "noatime"),  # MOUNT_ATTR_NOATIME
    (0x80, "nodiratime"),  # MOUNT_ATTR_NODIRATIME
)
_ATTR_ATIME = 0x70  # MOUNT_ATTR__ATIME: relatime (0), noatime (0x10), strictatime (0x20)
_ATTR_NOSYMFOLLOW = 0x200000
_ATTR_IDMAP = 0x100000


_options_by_attr: dict[int, str] = {}


def options_of(attr: int) -> str:
    """mountinfo's per-mount options field for a mount_attr value, in the kernel's order."""
    text = _options_by_attr.get(attr)
    if text is None:
        text = _options_by_attr[attr] = _render_options(attr)
    return text


def _render_options(attr: int) -> str:
    opts = ["ro" if attr & kernel.MOUNT_ATTR_RDONLY else "rw"]
    opts += [name for bit, name in _ATTR_OPTIONS if attr & bit]
    if attr & _ATTR_ATIME == 0:
        opts.append("relatime")
    if attr & _ATTR_NOSYMFOLLOW:
        opts.append("nosymfollow")
    if attr & _ATTR_IDMAP:
        opts.append("idmapped")
    return ",".join(opts)


def _described(ids: list[int]) -> list[MountInfo]:
    """statmount each id, as mountinfo records, in the order given; mounts gone meanwhile are left out."""
    found = []
    for mnt_id in ids:
        sm = kernel.statmount(mnt_id)
        if sm is None:
            continue
        found.append(MountInfo.make(sm.mnt_id_old, sm.parent_id_old, sm.root, sm.point, options_of(sm.attr), sm.fstype, sm.source))
    return found


def mounts_below(path: str, mountinfo: bool | None = None) -> list[MountInfo]:
    """Every mount at path or below it, in mount order (deepest last): mountinfo.mounts_under, asked of the kernel.

    A mount root costs one statx, one listmount and one statmount per mount
    found (and one per mount stacked under it at the same point). A path that
    is not a mount root lists the mount holding it (for a jail root: the jails
    directory's mount, every jail's mounts) and keeps those below path.
    """
    path = path.rstrip("/") or "/"
    if not use_listmount(mountinfo):
        return mounts_under(read_mountinfo(), path)
    try:
        mnt_id, is_root = kernel.mount_id(path)
    except JailError:
        if not posix.access(path, posix.F_OK, follow_symlinks=False):
            return []  # nothing there: nothing mounted
        raise
    if not is_root:
        return mounts_under(_described(kernel.listmount(mnt_id)), path)
    # Mounts stacked at the same point sit below the visible one: start from the lowest.
    base = kernel.statmount(mnt_id)
    while base is not None and base.parent_id != base.mnt_id:
        parent = kernel.statmount(base.parent_id)
        if parent is None or parent.point != path:
            break
        base = parent
    if base is None:  # unmounted meanwhile
        return []
    return mounts_under(_described([base.mnt_id, *kernel.listmount(base.mnt_id)]), path)


def jail_mounts(jails_dir: str, mountinfo: bool | None = None) -> dict[str, list[MountInfo]]:
    """Jail name -> its mounts in mount order, for every jail root under jails_dir that has any:
    mountinfo.jails_with_mounts, asked of the kernel.

    On a node the jails directory is a tmpfs of its own, so listmount of its
    mount names exactly the jails' mounts; otherwise the mount holding it is
    listed and the mounts below jails_dir kept.
    """
    jails_dir = jails_dir.rstrip("/")
    if not use_listmount(mountinfo):
        return jails_with_mounts(read_mountinfo(), jails_dir)
    try:
        mnt_id = kernel.mount_id(jails_dir)[0]
    except JailError:
        if not posix.access(jails_dir, posix.F_OK, follow_symlinks=False):
            return {}
        raise
    return jails_with_mounts(_described(kernel.listmount(mnt_id)), jails_dir)
