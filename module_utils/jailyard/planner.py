"""Plan: observed x wanted -> the steps that bring one jail to what is wanted. Pure: no I/O.

A step is one change (make a dir, write a file, reserve a uid, mount, unmount,
remove ...). Its `action` is the line the user sees; steps an earlier action
covers (the parts of a create) have none. `actions` and the diff come from the
plan; check mode is "plan, do not apply" (apply.py does the steps).
"""

from __future__ import annotations

import copy
import dataclasses
import shlex
from typing import Any

from . import network
from .config import Config
from .errors import JailError
from .image import image_rootfs
from .leftovers import STAGING_PREFIX
from .observe import Entry, Observed
from .plan import MountPlan
from .spec import TenantSpec
from .wanted import Wanted


@dataclasses.dataclass(frozen=True)
class Step:
    """One change. `where`: 'tenant' (paths below <tenants>/<name>), 'staging' (below .new-<name>), or '' (absolute/none)."""

    kind: str
    action: str | None = None
    path: str = ""
    where: str = ""
    mode: int = 0
    uid: int = 0
    gid: int = 0
    text: str = ""
    owner: str = ""  # release-uid, take-uid: the name holding the reservation
    paths: tuple[str, ...] = ()
    plan: MountPlan | None = None
    # mount: whether each of the plan's mounts was in place when observed under the lock the step
    # is applied under (mount.mount_jail asks the kernel again when empty).
    present: tuple[bool, ...] = ()
    detach: bool = False  # unmount: lazily (force)
    durable: bool = False  # write-file: fsync it (the run syncs the filesystem once otherwise)
    net: Any = None  # issue 17: net-up: {"net", "limits"}; net-down: whether a static address is released too


@dataclasses.dataclass
class Planned:
    steps: list[Step]
    # What the jail is after the steps (state, spec, mounts), or a function making it: made when
    # first read (a bulk run reads only the changed jails', issue 21).
    after_maker: dict[str, Any] | Any

    @property
    def after(self) -> dict[str, Any]:
        if callable(self.after_maker):
            self.after_maker = self.after_maker()
        return self.after_maker

    @property
    def actions(self) -> list[str]:
        return [s.action for s in self.steps if s.action]


def plan_jail(cfg: Config, obs: Observed, want: Wanted, flags: dict[str, str]) -> Planned:
    """The steps from obs to want (refusals raise JailError, before any step)."""
    if want.state == "absent":
        return Planned(plan_removal(cfg, obs, want, flags), {"state": "absent", "spec": None, "mounts": []})
    if want.spec is None:
        raise JailError(f"internal error: no spec wanted for {want.name} in state {want.state}")
    spec = copy.copy(want.spec)  # not dataclasses.replace: it re-runs __init__ (a twentieth of a no-op re-converge)
    spec.limits, spec.packages = dict(want.spec.limits), list(want.spec.packages)
    spec.__dict__.pop("source_text", None)  # not the text of this spec
    spec.volume = _volume_backed(cfg, obs, spec)
    steps = _clear_strays(obs, keep_uid=spec.uid)
    if want.take_uid_from:
        steps.append(
            Step(
                "take-uid",
                f"release uid {spec.uid} (left by an interrupted run of {want.take_uid_from})",
                uid=spec.uid,
                owner=want.take_uid_from,
            )
        )
    mounted_image = obs.plan_image() if obs.mounted else None
    if mounted_image is not None:
        # A mounted jail keeps the image it was mounted with; a new one applies at the next mount.
        spec.image_id = mounted_image
    plan = mount_plan(cfg, spec)
    steps += _creation(cfg, obs, spec, plan)
    steps += _quota(cfg, obs, spec)
    steps += _volume_resize(obs, spec)
    mounted = list(obs.mounted)
    if want.state == "mounted":
        net_ok = network.is_up(cfg, spec.name, spec.net, spec.limits, obs.net or {})
        present = [t in obs.mounted for t in plan.targets()]
        plan, mount_steps = plan_mount(cfg, spec, plan, present, obs.current_image, net_ok, asked=obs.checked)
        if spec.volume and all(present) and obs.volume and not obs.volume["mounted"]:
            # The jail's binds hold the volume's filesystem; its mount point is put back (the same device).
            mount_steps.append(Step("mount-volume", f"mount the volume of {spec.name}"))
        steps = _service_stop(obs, spec) + steps + _net_down(obs, spec) + mount_steps + _service_start(obs, spec)
        mounted = plan.targets()
    elif want.state == "unmounted":
        steps += _unmount(cfg, obs, want.force, flags) + _volume_off(obs)
        mounted = []
    else:
        steps = _service_stop(obs, spec) + steps + _net_down(obs, spec)
    if mounted and set(plan.targets()) <= set(mounted):
        after_state = "mounted"
    else:
        after_state = "present" if not mounted else "partly mounted"
    return Planned(steps, lambda: {"state": after_state, "spec": spec.to_dict(), "mounts": mounted})


def mount_plan(cfg: Config, spec: TenantSpec) -> MountPlan:
    return spec.mount_plan(cfg, spec.image_id, image_rootfs(cfg, spec.image_id))


def _clear_strays(obs: Observed, keep_uid: int | None) -> list[Step]:
    """What interrupted runs of this name left: its staging dir, uids it no longer keeps."""
    steps = []
    if obs.staging:
        staging = f"{STAGING_PREFIX}{obs.name}"
        steps.append(Step("remove-staging", f"remove {staging} (left by an interrupted create)"))
    for uid in obs.stray_uids:
        if uid != keep_uid:
            steps.append(Step("release-uid", f"release uid {uid} (left by an interrupted run)", uid=uid, owner=obs.name))
    return steps


def _dirs(spec: TenantSpec) -> list[tuple[str, int, int, int]]:
    """The tenant's directories: (path, mode, uid, gid), parents first."""
    uid, gid = spec.uid, spec.gid
    dirs = [("home", 0o755, 0, 0), ("etc", 0o755, 0, 0)]
    if spec.layout == "bind":
        dirs.append(("tmp", 0o1777, 0, 0))
    elif spec.admin:
        # Tenant root owns the jail's root directory (base: uid 0 inside), a Debian root's 0755.
        dirs += [("upper", 0o755, spec.admin_ids, spec.admin_ids), ("work", 0o700, uid, gid)]
    else:
        dirs += [("upper", 0o700, uid, gid), ("work", 0o700, uid, gid)]
    dirs.append((f"home/{spec.name}", 0o700, uid, gid))
    return dirs


def _files(cfg: Config, spec: TenantSpec, plan: MountPlan) -> list[tuple[str, str]]:
    return [(path, render()) for path, render in _file_makers(cfg, spec, plan)]


def _file_makers(cfg: Config, spec: TenantSpec, plan: MountPlan) -> list[tuple[str, Any]]:
    """The tenant's files as (path, a function rendering its text), in the order they are written."""
    files = [("etc/passwd", spec.passwd), ("etc/group", spec.group), ("plan", plan.render), ("tenant.json", spec.to_json)]
    if network.is_private(spec.net):
        files.insert(2, ("etc/resolv.conf", lambda: network.resolv_conf(cfg)))  # issue 17: bound over the image's
    return files


def _unchanged(obs: Observed, path: str, text: str | None, spec: TenantSpec) -> bool:
    """Whether tenant.json on disk is what would be written, without rendering it (issue 21).

    Holds when the file's text is the text the observed spec was parsed from, and that spec equals
    what is wanted: the renderer is deterministic, and the parser strict, so what the file says is
    what rendering the wanted spec would write (a no-op re-converge of 10,000 jails rendered 10,000
    specs only to compare them). Anything else, and the plan (rendering it is cheaper than parsing
    it back, which read_mounts leaves undone), is rendered and compared byte for byte.
    """
    return (
        path == "tenant.json"
        and text is not None
        and obs.spec is not None
        and text == getattr(obs.spec, "source_text", None)
        and obs.spec == spec
    )


def _creation(cfg: Config, obs: Observed, spec: TenantSpec, plan: MountPlan) -> list[Step]:
    """A new jail: one action, made in a staging dir that one rename publishes. An existing one: repairs, one action each."""
    name = spec.name
    if obs.spec is None and not obs.tenant_dir:
        steps = [
            Step("reserve-uid", f"create jail {name} (uid {spec.uid}, {spec.layout} layout, image {spec.image_id[:12]})", uid=spec.uid),
            Step("make-staging"),
        ]
        steps += [Step("ensure-dir", path=p, where="staging", mode=m, uid=u, gid=g) for p, m, u, g in _dirs(spec)]
        steps += [Step("write-file", path=p, where="staging", text=t) for p, t in _files(cfg, spec, plan)]
        if spec.admin:
            # Only here, while the upper layer is still ours and empty: later it is the tenant's.
            lines = f"{spec.name}:x:{spec.uid}:{spec.gid}:{spec.name}:/home/{spec.name}:/bin/sh\n|{spec.name}:x:{spec.gid}:\n"
            steps.append(Step("seed-admin-etc", path=plan.mounts[0].source.split(":")[0], where="staging", uid=spec.admin_ids, text=lines))
        steps += _projects(obs, spec, "staging")
        if spec.volume:
            disk, inodes = int(spec.limits.get("disk", 0)), int(spec.limits.get("inodes", 0))
            data = tuple(p for p, *rest in _dirs(spec) if p in VOLUME_DATA)
            steps.append(Step("ensure-dir", path="vol", where="staging", mode=0o755))
            steps.append(Step("make-volume", path="volume.img", where="staging", text=f"{disk} {inodes}", paths=data))
        steps.append(Step("publish"))
        return steps
    # The uid's reservation, made again unless observed held (a converge with nothing to change applies nothing).
    steps = [] if obs.uid_held else [Step("keep-uid", uid=spec.uid)]
    dirs = _dirs(spec)
    if spec.volume:
        # The data dirs are in the volume (made with it); the tenant dir holds its image and mount point.
        dirs = [d for d in dirs if d[0] not in VOLUME_DATA and d[0] != f"home/{name}"] + [("vol", 0o755, 0, 0)]
    for path, mode, uid, gid in dirs:
        entry = obs.entries.get(path)
        if entry is not None and entry.kind != "dir":
            raise JailError(f"refusing {name}/{path}: expected a directory, found {_kind(entry)}")
        if entry is None or (entry.mode, entry.uid, entry.gid) != (mode, uid, gid):
            action = f"fix home of {name} (owner {uid}:{gid}, mode 0700)" if path == f"home/{name}" else f"fix {name}/{path}"
            steps.append(Step("ensure-dir", action, path=path, where="tenant", mode=mode, uid=uid, gid=gid))
    for path, render in _file_makers(cfg, spec, plan):
        entry = obs.entries.get(path)
        if entry is not None and (entry.mode, entry.uid, entry.gid) == (0o644, 0, 0):
            if _unchanged(obs, path, entry.text, spec):
                continue
            text = render()
            if entry.text == text:
                continue
        else:
            text = render()
        steps.append(Step("write-file", f"write {name}/{path}", path=path, where="tenant", text=text))
    return steps


# Resource guarantees (issue 16): the tenant's project (quota.py) on its dirs, its quota limits.
def _project_dirs(spec: TenantSpec) -> tuple[str, ...]:
    return ("home", "tmp") if spec.layout == "bind" else ("home", "upper", "work")


def _projects(obs: Observed, spec: TenantSpec, where: str) -> list[Step]:
    """Put the tenant's dirs (and what they hold) in its project, where the filesystem has project quotas."""
    if obs.quota is None or "unsupported" in obs.quota or spec.volume:
        return []
    projid = spec.uid  # quota.project_id: the uid, the same on every node
    if where == "staging":
        return [Step("set-project", path=rel, where=where, uid=projid) for rel in _project_dirs(spec)]
    return [
        Step("set-project", f"put {spec.name}/{rel} in project {projid} (disk quota)", path=rel, where=where, uid=projid)
        for rel in _project_dirs(spec)
        if obs.quota["projects"].get(rel) != (projid, True)
    ]


def _quota(cfg: Config, obs: Observed, spec: TenantSpec) -> list[Step]:
    """The project dirs of an existing tenant and the quota limits (a limit below usage is applied: writes fail, nothing is lost)."""
    disk, inodes = int(spec.limits.get("disk", 0)), int(spec.limits.get("inodes", 0))
    if obs.quota is None or spec.volume:
        return []
    if "unsupported" in obs.quota:
        if disk or inodes:
            raise JailError(
                f"jail {spec.name} asks for limits.disk/inodes, but the tenants directory {cfg.tenants_dir} has no project quota: "
                f"{obs.quota['unsupported']}; prepare quota-capable storage with the jail_storage role"
            )
        return []
    steps = [] if obs.spec is None and not obs.tenant_dir else _projects(obs, spec, "tenant")
    want = ((disk + 1023) // 1024 * 1024, inodes)
    if tuple(obs.quota["limits"]) != want:
        shown = f"disk {disk or 'none'}, inodes {inodes or 'none'}"
        steps.append(
            Step("set-quota", f"set the quota of {spec.name} (project {spec.uid}): {shown}", uid=spec.uid, text=f"{disk} {inodes}")
        )
    return steps


# Volumes (volume.py): a filesystem image per tenant where the kernel or filesystem has no project quota.
VOLUME_DATA = ("home", "tmp", "upper", "work")  # what the volume holds (home/<name> below home)
DISK_BACKENDS = ("auto", "quota", "volume")
VOLUME_MIN = 1 << 20  # mkfs.ext4 makes nothing usable below (its reserved inodes, a root dir, lost+found)


def _volume_backed(cfg: Config, obs: Observed, spec: TenantSpec) -> bool:
    """Whether the tenant keeps its data in a volume: decided at create, then kept (refusals here, before any step)."""
    disk, inodes = int(spec.limits.get("disk", 0)), int(spec.limits.get("inodes", 0))
    if cfg.disk_backend not in DISK_BACKENDS:
        raise JailError(f"invalid disk_backend {cfg.disk_backend!r} in jailyard.conf: expected one of {', '.join(DISK_BACKENDS)}")
    has_volume = obs.volume is not None
    if obs.spec is not None or has_volume or obs.tenant_dir:  # an existing tenant, or a kept tenant dir
        if has_volume and not obs.volume["file"]:
            raise JailError(f"refusing {spec.name}/volume.img: it is not a regular file")
        if has_volume and not disk:
            raise JailError(f"jail {spec.name} keeps its data in a volume: limits.disk may not be removed (it is the volume's size)")
        if has_volume and obs.spec is not None and obs.spec.limits.get("inodes", 0) != spec.limits.get("inodes", 0):
            raise JailError(
                f"limits.inodes of {spec.name} cannot change from {obs.spec.limits.get('inodes', 0) or 'none'} to "
                f"{inodes or 'none'}: a volume's inode table is sized when it is made"
            )
        if not has_volume and (disk or inodes) and _wants_volume(cfg, obs):
            raise JailError(
                f"jail {spec.name} already has its data on the tenants filesystem {cfg.tenants_dir}, where limits.disk/inodes need a volume: "
                "moving it into a volume for limits.disk/inodes is refused (nothing is copied); "
                "back its data up, remove it with purge and create it again"
            )
        wants = has_volume
    else:
        wants = bool(disk or inodes) and _wants_volume(cfg, obs)
    if wants and disk < VOLUME_MIN:
        raise JailError(
            f"limits.disk of {spec.name} ({disk or 'none'}) is below the smallest volume ({VOLUME_MIN} bytes): "
            "without project quotas a disk or inode limit is a volume of limits.disk bytes"
        )
    return wants


def _wants_volume(cfg: Config, obs: Observed) -> bool:
    if cfg.disk_backend == "volume":
        return True
    return cfg.disk_backend == "auto" and (obs.quota is None or "unsupported" in obs.quota)


def _volume_resize(obs: Observed, spec: TenantSpec) -> list[Step]:
    """A changed limits.disk of a volume: grown (online while mounted), shrunk only offline and never below usage."""
    if not spec.volume or obs.volume is None:
        return []
    size, disk = obs.volume["size"], int(spec.limits["disk"])
    if size == disk:
        return []
    if disk < size:
        used = obs.volume["used"]
        if used is not None and used > disk:
            raise JailError(f"refusing to shrink the volume of {spec.name} to {disk} bytes: it holds {used} bytes")
        if obs.volume["mounted"] or obs.mounted:
            raise JailError(
                f"refusing to shrink the volume of {spec.name} while it is mounted: unmount the jail first (ext4 shrinks offline)"
            )
        return [
            Step(
                "resize-volume",
                f"shrink the volume of {spec.name} to {disk} bytes (was {size})",
                path="volume.img",
                where="tenant",
                text=str(disk),
            )
        ]
    return [
        Step(
            "resize-volume",
            f"grow the volume of {spec.name} to {disk} bytes (was {size})",
            path="volume.img",
            where="tenant",
            text=str(disk),
        )
    ]


def _volume_off(obs: Observed) -> list[Step]:
    """The volume's mount point unmounted with the jail (lazily: the last user frees its loop device)."""
    if obs.volume and obs.volume["mounted"]:
        return [Step("unmount-volume", f"unmount the volume of {obs.name}")]
    return []


def _service_stop(obs: Observed, spec: TenantSpec) -> list[Step]:
    """A running service the spec no longer asks for (service: false) is stopped, before anything else."""
    if obs.service and not spec.service:
        return [Step("stop-service", f"stop the service of {obs.name} (service: false)")]
    return []


def _service_start(obs: Observed, spec: TenantSpec) -> list[Step]:
    """A mounted jail with service: true runs its program under the loop: started last (the loop reads tenant.json).

    A running service whose program changed is restarted; one that runs as asked is left alone."""
    if not spec.service:
        return []
    argv = spec.service_argv()
    if not obs.service:
        return [Step("start-service", f"start the service of {spec.name}: {shlex.join(argv)}")]
    if obs.service.get("program") != argv:
        return [
            Step("stop-service", f"restart the service of {spec.name} (program changed to {shlex.join(argv)})"),
            Step("start-service"),
        ]
    return []


def plan_mount(
    cfg: Config,
    spec: TenantSpec,
    plan: MountPlan,
    present: list[bool],
    current_image: str | None,
    net_ok: bool = True,
    asked: list[str] | None = None,
) -> tuple[MountPlan, list[Step]]:
    """Mount what is missing; a fresh mount of a jail that follows 'current' first switches to the newest image.

    net_ok: whether a private network is set up as the spec asks (network.is_up); if not, it is set up
    (or repaired) first, so the launcher finds both. asked: the targets `present` was read for (under
    the lock); when they are the plan's own, in order, the step carries the answer and the mount does
    not ask the kernel a second time (issue 21)."""
    net_steps = [] if net_ok else _net_up(spec)
    if all(present):
        return plan, net_steps
    steps = net_steps
    if not any(present) and spec.image == "current" and current_image and current_image != spec.image_id:
        action = f"switch {spec.name} to image {current_image[:12]} (was {spec.image_id[:12]})"
        spec.image_id = current_image
        plan = mount_plan(cfg, spec)
        steps.append(Step("write-file", action, path="plan", where="tenant", text=plan.render(), durable=True))
        steps.append(Step("write-file", path="tenant.json", where="tenant", text=spec.to_json(), durable=True))
    # Without its root every piece is mounted again (stale leftovers are cleared first).
    missing = [m.target for m, ok in zip(plan.mounts, present, strict=True) if not ok or not present[0]]
    known = tuple(present) if asked is not None and plan.targets() == list(asked) else ()
    steps.append(Step("mount", f"mount {spec.name}: {' '.join(missing)}", plan=plan, present=known))
    return plan, steps


def _net_up(spec: TenantSpec) -> list[Step]:
    """issue 17: make or repair the tenant's own network (network.set_up: all or nothing)."""
    if not network.is_private(spec.net):
        return []
    return [Step("net-up", f"set up the network of {spec.name}", net={"net": spec.net, "limits": dict(spec.limits)})]


def _net_down(obs: Observed, spec: TenantSpec | None, release_static: bool = False) -> list[Step]:
    """issue 17: remove what there is of the tenant's network when it no longer has one (or is unmounted, removed)."""
    if not obs.net and not (release_static and obs.net_leases):
        return []
    if spec is not None and network.is_private(spec.net) and not release_static:
        return []
    return [Step("net-down", f"remove the network of {obs.name}", net=release_static)]


def _other_sessions(obs: Observed) -> list[int]:
    """The live sessions but the service's own, which stopping the service ends (issue 19)."""
    own = obs.service.get("session") if obs.service else None
    return [pid for pid in obs.sessions if pid != own]


def _unmount(cfg: Config, obs: Observed, force: bool, flags: dict[str, str]) -> list[Step]:
    if not obs.mounted:
        # A service between two starts of its program (back-off) would mount the jail again.
        return ([Step("stop-service", f"stop the service of {obs.name}")] if obs.service else []) + _net_down(obs, None)
    sessions = _other_sessions(obs)
    if sessions and not force:
        raise JailError(
            f"jail {obs.name} has {len(sessions)} live session(s) (pids {' '.join(map(str, sessions))}); "
            f"set {flags['force']} to unmount it anyway"
        )
    steps = [Step("stop-service", f"stop the service of {obs.name}")] if obs.service else []
    if sessions:
        steps.append(Step("end-sessions", f"end {len(sessions)} session(s) of {obs.name}: {' '.join(map(str, sessions))}"))
    root = obs.plan.root if obs.plan else str(cfg.jail_root(obs.name))
    return [
        *steps,
        Step("unmount", f"unmount {obs.name}: {' '.join(reversed(obs.mounted))}", path=root, detach=force),
        *_net_down(obs, None),
    ]


def plan_removal(cfg: Config, obs: Observed, want: Wanted, flags: dict[str, str]) -> list[Step]:
    """Unmount, remove the spec, plan and passwd (and with purge the home, the uid and every trace of the tenant)."""
    kept_uid = obs.spec.uid if obs.spec else obs.home_owner
    sessions = _other_sessions(obs)
    if want.purge and sessions:
        raise JailError(f"jail {obs.name} has {len(sessions)} live session(s); purging it is refused")
    steps = [s for s in _unmount(cfg, obs, want.force, flags) if s.kind != "net-down"] + _volume_off(obs)
    steps += _net_down(obs, None, release_static=True)
    steps += _clear_strays(obs, keep_uid=kept_uid)
    if want.purge and obs.cgroups:
        steps.append(Step("remove-cgroups", f"remove the cgroups of {obs.name}: {' '.join(obs.cgroups)}", paths=tuple(obs.cgroups)))
    steps += _tenant_dir_removal(cfg, obs, want.purge)
    if obs.root_dir:
        root = cfg.jail_root(obs.name)
        steps.append(Step("remove-root", f"remove {root}", path=str(root)))
    if want.purge:
        if kept_uid is not None and kept_uid in obs.stray_uids:
            steps.append(Step("release-uid", f"release uid {kept_uid}", uid=kept_uid, owner=obs.name))
        steps += [Step("remove-record", f"remove {path}", path=path) for path in obs.run_records]
        steps.append(Step("drop-lock"))  # the last trace; lockers waiting on it take a new one
    return steps


def _tenant_dir_removal(cfg: Config, obs: Observed, purge: bool) -> list[Step]:
    """The plan first (without it the launcher refuses the jail), the spec, passwd; with purge all the rest."""
    if not obs.tenant_dir:
        return []
    kept = ("plan", "tenant.json", "etc")
    steps = [Step("remove", f"remove {obs.name}/{rel}", path=rel, where="tenant") for rel in kept if obs.entries.get(rel)]
    if purge:
        data = ("home", "tmp", "upper", "work", "package", "lease")  # package.py's manifest and logs; lease.py's
        steps += [Step("remove", f"purge {obs.name}/{rel}", path=rel, where="tenant") for rel in data if obs.entries.get(rel)]
        if obs.volume is not None:
            steps.append(Step("remove-volume", f"purge {obs.name}/volume.img", path="volume.img", where="tenant"))
        steps.append(Step("remove-tenant-dir", f"remove {cfg.tenant_dir(obs.name)}"))
    return steps


def _kind(entry: Entry) -> str:
    return {"symlink": "a symlink", "file": "a file"}.get(entry.kind, "something else")
