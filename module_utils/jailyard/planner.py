"""Plan: observed x wanted -> the steps that bring one jail to what is wanted. Pure: no I/O.

A step is one change (make a dir, write a file, reserve a uid, mount, unmount,
remove ...). Its `action` is the line the user sees; steps an earlier action
covers (the parts of a create) have none. `actions` and the diff come from the
plan; check mode is "plan, do not apply" (apply.py does the steps).
"""

from __future__ import annotations

import dataclasses
import shlex
from typing import Any

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
    detach: bool = False  # unmount: lazily (force)
    durable: bool = False  # write-file: fsync it (the run syncs the filesystem once otherwise)
    hint: Any = None  # unmount: this jail's lines of a shared mount table read, or None


@dataclasses.dataclass
class Planned:
    steps: list[Step]
    after: dict[str, Any]

    @property
    def actions(self) -> list[str]:
        return [s.action for s in self.steps if s.action]


def plan_jail(cfg: Config, obs: Observed, want: Wanted, flags: dict[str, str]) -> Planned:
    """The steps from obs to want (refusals raise JailError, before any step)."""
    if want.state == "absent":
        return Planned(plan_removal(cfg, obs, want, flags), {"state": "absent", "spec": None, "mounts": []})
    if want.spec is None:
        raise JailError(f"internal error: no spec wanted for {want.name} in state {want.state}")
    spec = dataclasses.replace(want.spec, limits=dict(want.spec.limits), packages=list(want.spec.packages))
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
    if obs.mounted and obs.plan is not None:
        # A mounted jail keeps the image it was mounted with; a new one applies at the next mount.
        spec.image_id = obs.plan.image
    plan = mount_plan(cfg, spec)
    steps += _creation(cfg, obs, spec, plan)
    mounted = list(obs.mounted)
    if want.state == "mounted":
        plan, mount_steps = plan_mount(cfg, spec, plan, [t in obs.mounted for t in plan.targets()], obs.current_image)
        steps = _service_stop(obs, spec) + steps + mount_steps + _service_start(obs, spec)
        mounted = plan.targets()
    elif want.state == "unmounted":
        steps += _unmount(cfg, obs, want.force, flags)
        mounted = []
    else:
        steps = _service_stop(obs, spec) + steps
    if mounted and set(plan.targets()) <= set(mounted):
        after_state = "mounted"
    else:
        after_state = "present" if not mounted else "partly mounted"
    return Planned(steps, {"state": after_state, "spec": spec.to_dict(), "mounts": mounted})


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
    else:
        dirs += [("upper", 0o700, uid, gid), ("work", 0o700, uid, gid)]
    dirs.append((f"home/{spec.name}", 0o700, uid, gid))
    return dirs


def _files(spec: TenantSpec, plan: MountPlan) -> list[tuple[str, str]]:
    return [("etc/passwd", spec.passwd()), ("etc/group", spec.group()), ("plan", plan.render()), ("tenant.json", spec.to_json())]


def _creation(cfg: Config, obs: Observed, spec: TenantSpec, plan: MountPlan) -> list[Step]:
    """A new jail: one action, made in a staging dir that one rename publishes. An existing one: repairs, one action each."""
    name = spec.name
    if obs.spec is None and not obs.tenant_dir:
        steps = [
            Step("reserve-uid", f"create jail {name} (uid {spec.uid}, {spec.layout} layout, image {spec.image_id[:12]})", uid=spec.uid),
            Step("make-staging"),
        ]
        steps += [Step("ensure-dir", path=p, where="staging", mode=m, uid=u, gid=g) for p, m, u, g in _dirs(spec)]
        steps += [Step("write-file", path=p, where="staging", text=t) for p, t in _files(spec, plan)]
        steps.append(Step("publish"))
        return steps
    steps = [Step("keep-uid", uid=spec.uid)]
    for path, mode, uid, gid in _dirs(spec):
        entry = obs.entries.get(path)
        if entry is not None and entry.kind != "dir":
            raise JailError(f"refusing {name}/{path}: expected a directory, found {_kind(entry)}")
        if entry is None or (entry.mode, entry.uid, entry.gid) != (mode, uid, gid):
            action = f"fix home of {name} (owner {uid}:{gid}, mode 0700)" if path == f"home/{name}" else f"fix {name}/{path}"
            steps.append(Step("ensure-dir", action, path=path, where="tenant", mode=mode, uid=uid, gid=gid))
    for path, text in _files(spec, plan):
        entry = obs.entries.get(path)
        if entry is None or entry.text != text or (entry.mode, entry.uid, entry.gid) != (0o644, 0, 0):
            steps.append(Step("write-file", f"write {name}/{path}", path=path, where="tenant", text=text))
    return steps


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
    cfg: Config, spec: TenantSpec, plan: MountPlan, present: list[bool], current_image: str | None
) -> tuple[MountPlan, list[Step]]:
    """Mount what is missing; a fresh mount of a jail that follows 'current' first switches to the newest image."""
    if all(present):
        return plan, []
    steps = []
    if not any(present) and spec.image == "current" and current_image and current_image != spec.image_id:
        action = f"switch {spec.name} to image {current_image[:12]} (was {spec.image_id[:12]})"
        spec.image_id = current_image
        plan = mount_plan(cfg, spec)
        steps.append(Step("write-file", action, path="plan", where="tenant", text=plan.render(), durable=True))
        steps.append(Step("write-file", path="tenant.json", where="tenant", text=spec.to_json(), durable=True))
    # Without its root every piece is mounted again (stale leftovers are cleared first).
    missing = [m.target for m, ok in zip(plan.mounts, present, strict=True) if not ok or not present[0]]
    steps.append(Step("mount", f"mount {spec.name}: {' '.join(missing)}", plan=plan))
    return plan, steps


def _other_sessions(obs: Observed) -> list[int]:
    """The live sessions but the service's own, which stopping the service ends (issue 19)."""
    own = obs.service.get("session") if obs.service else None
    return [pid for pid in obs.sessions if pid != own]


def _unmount(cfg: Config, obs: Observed, force: bool, flags: dict[str, str]) -> list[Step]:
    if not obs.mounted:
        # A service between two starts of its program (back-off) would mount the jail again.
        return [Step("stop-service", f"stop the service of {obs.name}")] if obs.service else []
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
        Step("unmount", f"unmount {obs.name}: {' '.join(reversed(obs.mounted))}", path=root, detach=force, hint=obs.mount_table),
    ]


def plan_removal(cfg: Config, obs: Observed, want: Wanted, flags: dict[str, str]) -> list[Step]:
    """Unmount, remove the spec, plan and passwd (and with purge the home, the uid and every trace of the tenant)."""
    kept_uid = obs.spec.uid if obs.spec else obs.home_owner
    sessions = _other_sessions(obs)
    if want.purge and sessions:
        raise JailError(f"jail {obs.name} has {len(sessions)} live session(s); purging it is refused")
    steps = _unmount(cfg, obs, want.force, flags)
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
        data = ("home", "tmp", "upper", "work", "lease")
        steps += [Step("remove", f"purge {obs.name}/{rel}", path=rel, where="tenant") for rel in data if obs.entries.get(rel)]
        steps.append(Step("remove-tenant-dir", f"remove {cfg.tenant_dir(obs.name)}"))
    return steps


def _kind(entry: Entry) -> str:
    return {"symlink": "a symlink", "file": "a file"}.get(entry.kind, "something else")
