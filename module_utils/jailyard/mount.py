"""Apply a MountPlan: mount a jail (repairing a partial one, never stacking) and unmount it."""

from __future__ import annotations

import posix
import stat

from . import kernel
from .errors import JailError
from .plan import MountEntry, MountPlan, host_target
from .safefs import open_beneath, opened

# The launcher's mount step imports this module on every cold launch: paths are
# plain strings here (pathlib alone costs a third of the step), `cfg` is anything
# with the Config's jails_dir, tenants_dir and images_dir, and jailyard.mounttable
# (not needed to mount a clean jail) is imported where it is used.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

    from .config import Config
    from .mountinfo import MountInfo


_ATTRS: dict[tuple[str, ...], int] = {}


def _attrs(options: tuple[str, ...]) -> int:
    attrs = _ATTRS.get(options)
    if attrs is None:
        attrs = 0
        for opt in options:
            if opt not in kernel.ATTR_BY_OPTION:
                raise JailError(f"unknown mount option {opt!r} in plan")
            attrs |= kernel.ATTR_BY_OPTION[opt]
        _ATTRS[options] = attrs
    return attrs


def open_trusted(path: str | Path, trusted: str | Path, directory: bool = True) -> int:
    """Open path, which must lie under the root-controlled directory `trusted`.

    The trusted prefix may contain symlinks set up by the admin (e.g. /var/lib
    on another disk), which the open of the prefix follows; everything below it
    is resolved without following any.
    """
    path, top = posix.fspath(path), posix.fspath(trusted).rstrip("/")
    if path != top and not path.startswith(top + "/"):
        raise JailError(f"refusing {path}: it is not below {top}")
    base = posix.open(top or "/", posix.O_PATH | posix.O_DIRECTORY | posix.O_CLOEXEC)
    with opened(base):
        return open_beneath(base, path[len(top) :], directory=directory, what=path)


def mount_state(plan: MountPlan) -> list[tuple[MountEntry, bool]]:
    """Each mount of the plan and whether it is in place (statx, like the launcher)."""
    return list(zip(plan.mounts, kernel.mount_roots([host_target(plan.root, m.target) for m in plan.mounts]), strict=True))


def is_mounted(plan: MountPlan) -> bool:
    return all(present for _entry, present in mount_state(plan))


def mount_jail(
    cfg: Config, plan: MountPlan, state: list[tuple[MountEntry, bool]] | None = None, anchors: Anchors | None = None
) -> list[str]:
    """Mount every missing entry of the plan, in order; returns the targets mounted.

    The caller holds the tenant lock (and may pass the mount_state it read under it, and the
    Anchors a bulk run shares). A jail whose root is not mounted but has leftovers below it
    (stale pieces) is cleared first, so nothing stacks.
    """
    if state is None:
        state = mount_state(plan)
    if all(present for _entry, present in state):
        return []
    root = plan.root
    if not state[0][1]:
        if any(present for _entry, present in state):
            # Pieces left below a missing root (half expired, stale): clear them all first.
            # Only then are the mounts below the root listed, so mounting stays constant work per jail.
            from .mounttable import mounts_below

            for leftover in reversed(mounts_below(root)):
                kernel.umount(leftover.target, detach=True)
        state = [(m, False) for m, _present in state]
    volume_mounted = _ensure_volume(cfg, plan) if plan.volume else False
    done: list[str] = []
    own = anchors is None
    if anchors is None:
        anchors = Anchors(cfg)
    root_fd = -1
    try:
        jails = posix.fspath(cfg.jails_dir).rstrip("/")
        if root != f"{jails}/{plan.name}":
            raise JailError(f"refusing the jail root {root}: it is not {jails}/{plan.name}")
        _ensure_root_dir(anchors.anchor(cfg.jails_dir), plan.name)
        root_fd = open_beneath(anchors.anchor(cfg.jails_dir), plan.name, what=root)
        tenant_prefix = f"{posix.fspath(cfg.tenants_dir).rstrip('/')}/"
        for entry, present in state:
            if present:
                continue
            _mount_entry(cfg, plan, entry, root_fd, anchors, tenant_prefix)
            done.append(entry.target)
            if entry.target == "/":
                # The root fd named the directory under the new mount: what is below is opened
                # through the mount.
                posix.close(root_fd)
                root_fd = -1
                root_fd = open_beneath(anchors.anchor(cfg.jails_dir), plan.name, what=root)
    except BaseException:
        # All or nothing: never leave a jail half-mounted by this call.
        for target in reversed(done):
            kernel.umount(host_target(plan.root, target), detach=True)
        if volume_mounted:
            from .volume import unmount

            unmount(posix.fspath(cfg.tenants_dir), plan.name)
        raise
    finally:
        if root_fd >= 0:
            posix.close(root_fd)
        if own:
            anchors.close()
    return done


def _ensure_volume(cfg: Config, plan: MountPlan) -> bool:
    """A volume-backed tenant (volume.py): its filesystem image mounted at its mount point, which the
    plan's mounts bind from. True if this call mounted it. The plan's paths must be the tenant's own."""
    from .volume import ensure_mounted, paths

    tenants = posix.fspath(cfg.tenants_dir)
    if plan.volume != " ".join(paths(tenants, plan.name)):
        raise JailError(f"refusing the volume {plan.volume!r} in the plan of {plan.name}: not the tenant's own")
    return ensure_mounted(tenants, posix.fspath(cfg.run_dir), plan.name) is not None


class Anchors:
    """The root-controlled directories a mount starts from (jails, tenants, images), each opened
    once (O_PATH) when first needed: once per jail, or once for a whole bulk run that passes the
    same Anchors to every mount_jail (issue 21: four opens of long absolute paths a jail)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._fds: dict[str, int] = {}  # by the directory's path as configured

    def anchor(self, top: str | Path) -> int:
        """An O_PATH fd of the trusted directory top (its admin's symlinks followed, as open_trusted)."""
        top = posix.fspath(top).rstrip("/") or "/"
        fd = self._fds.get(top)
        if fd is None:
            fd = self._fds[top] = open_trusted(top, top)
        return fd

    def below(self, top: str | Path, path: str, directory: bool = True) -> int:
        """Open path, which must lie below the trusted directory top, following no symlink below it."""
        top = posix.fspath(top).rstrip("/")
        if not path.startswith(top + "/"):
            raise JailError(f"refusing {path}: it is not below {top}")
        return open_beneath(self.anchor(top), path[len(top) + 1 :], directory=directory, what=path)

    def close(self) -> None:
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            posix.close(fd)


def _ensure_root_dir(jails_fd: int, name: str) -> None:
    try:
        st = posix.stat(name, dir_fd=jails_fd, follow_symlinks=False)
    except FileNotFoundError:
        posix.mkdir(name, 0o755, dir_fd=jails_fd)
        return
    if not stat.S_ISDIR(st.st_mode):
        raise JailError(f"jail root {name!r} is not a directory")


def _mount_entry(cfg: Config, plan: MountPlan, entry: MountEntry, root_fd: int, anchors: Anchors, tenant_prefix: str) -> None:
    attrs = _attrs(entry.options)
    target, source = entry.target, entry.source
    # A bind of a file below the tenant's etc/ (passwd, group, ...) is a file; everything else a directory.
    is_dir = entry.fstype == "overlay" or not source.startswith(f"{tenant_prefix}{plan.name}/etc/")
    if target == "/":
        target_fd = root_fd
    else:
        # Below the jail root everything may be tenant-controlled (overlay upper).
        target_fd = open_beneath(root_fd, target, directory=is_dir, what=f"{plan.name}:{target}")
    try:
        if entry.fstype == "bind":
            if target == "/":
                src_fd = anchors.below(cfg.images_dir, source, directory=is_dir)
            else:
                src_fd = anchors.below(cfg.tenants_dir, source, directory=is_dir)
            try:
                mfd = kernel.open_tree_clone(src_fd, attrs=attrs)  # attributes set, propagation private
            finally:
                posix.close(src_fd)
        elif entry.fstype == "overlay":
            lower, upper, work = source.split(":")
            posix.close(anchors.below(cfg.images_dir, lower))
            for path in (upper, work):
                posix.close(anchors.below(cfg.tenants_dir, path))
            if plan.admin:
                mfd = _admin_overlay(cfg, plan, lower, upper, work, attrs)
            else:
                mfd = kernel.overlay_mount_fd(lower, upper, work, attrs)
            try:
                kernel.set_mount_attrs(mfd, attrs)
            except BaseException:
                posix.close(mfd)
                raise
        else:
            raise JailError(f"unknown mount type {entry.fstype!r} in the plan of {plan.name}")
        try:
            kernel.move_mount_to_fd(mfd, target_fd, f"{plan.name}:{target}")
        finally:
            posix.close(mfd)
    finally:
        if target_fd != root_fd:
            posix.close(target_fd)


def _admin_overlay(cfg: Config, plan: MountPlan, lower: str, upper: str, work: str, attrs: int) -> int:
    """Tenant root's overlay: the image as a detached clone idmapped 0..65535 -> plan.admin.., so
    tenant root (uid 0 of a namespace with the same map) owns it inside while it stays root's on the
    host, and the kernel copies up what it changes under its mapped ids (docs/design.md, "Tenant root")."""
    from . import idmap

    with opened(idmap.make_userns(plan.admin)) as userns, opened(open_trusted(lower, cfg.images_dir)) as lower_fd:
        with opened(idmap.idmapped_clone(lower_fd, userns)) as lower_mfd:
            return idmap.overlay_on_idmapped(lower_mfd, upper, work, attrs)


def detach_jail(root: str | Path, mounts: list[MountInfo], root_mounted: bool | None = None) -> None:
    """Take a whole jail off the host in one umount2(MNT_DETACH) of its root.

    The subtree leaves the mount table atomically, so nobody ever sees it half
    unmounted, and it costs one syscall (and one RCU grace period) per jail
    instead of one per mount: 4x faster at thousands of jails, measured. Only
    for jails with no live session (expiry); a root that is not mounted but has
    pieces below falls back to unmounting them one by one.
    """
    if root_mounted is None:
        root_mounted = kernel.is_mount_root(str(root))
    if root_mounted:
        kernel.umount(str(root), detach=True)
    else:
        unmount_jail(root, mounts, detach=True)


def unmount_jail(root: str | Path, mounts: list[MountInfo] | None = None, detach: bool = False) -> list[str]:
    """Unmount everything at or below the jail root, deepest first; returns the targets unmounted.

    One umount2(2) per mount, found by listing the mounts below the root
    (jailyard.mounttable; pass `mounts` to share one listing across many jails).
    If that listing has gone stale (the jail was remounted since), it is made
    again once. Without `detach` a busy mount is an error.
    """
    from .mountinfo import mounts_under
    from .mounttable import mounts_below

    done: list[str] = []
    for attempt in (1, 2):
        if mounts is None:
            mounts = mounts_below(str(root))
        try:
            for m in reversed(mounts_under(mounts, str(root))):
                if m.target in done:
                    continue
                kernel.umount(m.target, detach=detach)
                done.append(m.target)
            return done
        except JailError:
            if attempt == 2:
                raise
            mounts = None
    return done
