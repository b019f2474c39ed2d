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


def _attrs(options: tuple[str, ...]) -> int:
    attrs = 0
    for opt in options:
        if opt not in kernel.ATTR_BY_OPTION:
            raise JailError(f"unknown mount option {opt!r} in plan")
        attrs |= kernel.ATTR_BY_OPTION[opt]
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
    return [(m, kernel.is_mount_root(host_target(plan.root, m.target))) for m in plan.mounts]


def is_mounted(plan: MountPlan) -> bool:
    return all(present for _entry, present in mount_state(plan))


def mount_jail(cfg: Config, plan: MountPlan, state: list[tuple[MountEntry, bool]] | None = None) -> list[str]:
    """Mount every missing entry of the plan, in order; returns the targets mounted.

    The caller holds the tenant lock (and may pass the mount_state it just read).
    A jail whose root is not mounted but has leftovers below it (stale pieces)
    is cleared first, so nothing stacks.
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
    fds = _Fds(cfg, plan)
    try:
        with opened(open_trusted(cfg.jails_dir, cfg.jails_dir)) as jails_fd:
            _ensure_root_dir(jails_fd, plan.name)
        for entry, present in state:
            if present:
                continue
            _mount_entry(cfg, plan, entry, fds)
            done.append(entry.target)
            if entry.target == "/":
                fds.close_root()  # the root fd named the directory under the new mount
    except BaseException:
        # All or nothing: never leave a jail half-mounted by this call.
        for target in reversed(done):
            kernel.umount(host_target(plan.root, target), detach=True)
        if volume_mounted:
            from .volume import unmount

            unmount(posix.fspath(cfg.tenants_dir), plan.name)
        raise
    finally:
        fds.close()
    return done


def _ensure_volume(cfg: Config, plan: MountPlan) -> bool:
    """A volume-backed tenant (volume.py): its filesystem image mounted at its mount point, which the
    plan's mounts bind from. True if this call mounted it. The plan's paths must be the tenant's own."""
    from .volume import ensure_mounted, paths

    tenants = posix.fspath(cfg.tenants_dir)
    if plan.volume != " ".join(paths(tenants, plan.name)):
        raise JailError(f"refusing the volume {plan.volume!r} in the plan of {plan.name}: not the tenant's own")
    return ensure_mounted(tenants, posix.fspath(cfg.run_dir), plan.name) is not None


class _Fds:
    """The jail root and the tenants directory, each opened once per jail (not once per mount)."""

    def __init__(self, cfg: Config, plan: MountPlan) -> None:
        self.cfg, self.plan = cfg, plan
        self.root_fd = self.tenants_fd = -1

    def root(self) -> int:
        if self.root_fd < 0:
            self.root_fd = open_trusted(self.plan.root, self.cfg.jails_dir)
        return self.root_fd

    def tenants(self) -> int:
        if self.tenants_fd < 0:
            self.tenants_fd = open_trusted(self.cfg.tenants_dir, self.cfg.tenants_dir)
        return self.tenants_fd

    def below_tenants(self, path: str, directory: bool = True) -> int:
        """Open path (below the tenants dir) from the one tenants fd, following no symlink."""
        top = posix.fspath(self.cfg.tenants_dir).rstrip("/")
        if not path.startswith(top + "/"):
            raise JailError(f"refusing {path}: it is not below {top}")
        return open_beneath(self.tenants(), path[len(top) :], directory=directory, what=path)

    def close_root(self) -> None:
        if self.root_fd >= 0:
            posix.close(self.root_fd)
            self.root_fd = -1

    def close(self) -> None:
        self.close_root()
        if self.tenants_fd >= 0:
            posix.close(self.tenants_fd)
            self.tenants_fd = -1


def _ensure_root_dir(jails_fd: int, name: str) -> None:
    try:
        st = posix.stat(name, dir_fd=jails_fd, follow_symlinks=False)
    except FileNotFoundError:
        posix.mkdir(name, 0o755, dir_fd=jails_fd)
        return
    if not stat.S_ISDIR(st.st_mode):
        raise JailError(f"jail root {name!r} is not a directory")


def _mount_entry(cfg: Config, plan: MountPlan, entry: MountEntry, fds: _Fds) -> None:
    attrs = _attrs(entry.options)
    tenant_dir = f"{cfg.tenants_dir}/{plan.name}"
    if entry.target == "/":
        target_fd = posix.dup(fds.root())
    else:
        # Below the jail root everything may be tenant-controlled (overlay upper).
        is_dir = entry.fstype == "overlay" or not entry.source.startswith(f"{tenant_dir}/etc/")
        target_fd = open_beneath(fds.root(), entry.target, directory=is_dir, what=f"{plan.name}:{entry.target}")
    with opened(target_fd):
        if entry.fstype == "bind":
            is_dir = not entry.source.startswith(f"{tenant_dir}/etc/")
            if entry.target == "/":
                src_fd = open_trusted(entry.source, cfg.images_dir, directory=is_dir)
            else:
                src_fd = fds.below_tenants(entry.source, directory=is_dir)
            with opened(src_fd):
                mfd = kernel.open_tree_clone(src_fd)
        elif entry.fstype == "overlay":
            lower, upper, work = entry.source.split(":")
            posix.close(open_trusted(lower, cfg.images_dir))
            for path in (upper, work):
                posix.close(fds.below_tenants(path))
            if plan.admin:
                mfd = _admin_overlay(cfg, plan, lower, upper, work, attrs)
            else:
                mfd = kernel.overlay_mount_fd(lower, upper, work, attrs)
        else:
            raise JailError(f"unknown mount type {entry.fstype!r} in the plan of {plan.name}")
        with opened(mfd):
            kernel.set_mount_attrs(mfd, attrs)
            kernel.move_mount_to_fd(mfd, target_fd, f"{plan.name}:{entry.target}")


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
