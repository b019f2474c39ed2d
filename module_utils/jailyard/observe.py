"""Observe: what is on disk and mounted for one tenant, read into plain data for the planner.

Nothing here changes the node, except that reading the session records prunes
those of ended sessions (as every reader does) outside check mode.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from typing import Any, NamedTuple

from . import leftovers, network, quota, registry
from .config import Config
from .image import resolve_image
from .kernel import mount_roots
from .plan import MountPlan, parse_plan, plan_targets
from .safefs import opened, read_text
from .service import status as service_status
from .sessions import live_sessions
from .spec import TenantSpec

# What a tenant dir holds: directories, then files, as the planner makes them.
TENANT_DIRS = ("home", "etc", "tmp", "upper", "work", "package", "lease")  # package: package.py's; lease: a cluster's (lease.py)
TENANT_FILES = ("etc/passwd", "etc/group", "etc/resolv.conf", "plan", "tenant.json")


class Entry(NamedTuple):
    """One path's kind ('dir', 'file', 'symlink', 'other'), mode bits and owner; text for small files.
    A named tuple: a no-op converge makes ten a tenant, and a frozen dataclass's __init__ cost 2 us each."""

    kind: str
    mode: int
    uid: int
    gid: int
    text: str | None = None


@dataclasses.dataclass
class Observed:
    """One tenant as found. `mounted` are host paths of mount roots at the planned targets (or below the root)."""

    name: str
    spec: TenantSpec | None = None
    plan: MountPlan | None = None
    mounted: list[str] = dataclasses.field(default_factory=list)
    checked: list[str] = dataclasses.field(default_factory=list)  # the targets read_mounts asked about, in order
    plan_text: str | None = None  # the text plan was parsed from (the planner's shortcut: a plan equal to it is not rendered)
    mounts_read: bool = True  # False: observed with the spec alone (observe, before the lock); read_mounts reads the rest
    uid_held: bool | None = None  # whether the wanted uid's reservation is this tenant's (observe_details; None: not read)
    # Filled by observe_details (under the tenant's lock):
    tenant_dir: bool = False  # <tenants>/<name> exists (anything, even a symlink)
    entries: dict[str, Entry | None] = dataclasses.field(default_factory=dict)  # TENANT_DIRS, home/<name>, TENANT_FILES
    root_dir: bool = False  # <jails>/<name> is a directory (not a symlink)
    home_owner: int | None = None
    sessions: list[int] = dataclasses.field(default_factory=list)
    service: dict | None = None  # the tenant's service loop, if it runs (service.status)
    staging: bool = False  # .new-<name> exists: left by an interrupted create
    stray_uids: list[int] = dataclasses.field(default_factory=list)  # uids reserved for this name
    cgroups: list[str] = dataclasses.field(default_factory=list)
    run_records: list[str] = dataclasses.field(default_factory=list)
    current_image: str | None = None
    net: dict | None = None  # issue 17: what there is of the tenant's own network (network.observe)
    net_leases: list[str] = dataclasses.field(default_factory=list)  # its addresses, read for a removal
    # Resource guarantees (issue 16), filled by observe_details: {"unsupported": why} if the tenants
    # dir's filesystem has no project quota, else {"projects": {rel: (projid, inherit) or None},
    # "limits": (bytes, inodes)}; None when not observed (state absent).
    quota: dict[str, Any] | None = None
    # A volume-backed tenant's image (volume.py), filled by observe_details: {"size": bytes of the
    # file, "mounted": its mount point is, "used": bytes in use while mounted, else None}; None without one.
    volume: dict[str, Any] | None = None

    def defer_plan(self, text: str | None, origin: str) -> None:
        """Keep the plan's text, parsed (and checked) when `plan` is first read: a re-converge with
        nothing to change never reads it (read_mounts takes the targets from the text, the planner
        compares the text with what it would write)."""
        self.plan_text = text
        self.__dict__["_plan_origin"] = origin
        self.__dict__.pop("_plan", None)

    def plan_image(self) -> str | None:
        """The image the plan names (None without a plan), read from its text while it is unparsed."""
        if "_plan" not in self.__dict__ and self.plan_text is not None:
            for line in self.plan_text.splitlines():
                if line.startswith("image "):
                    parts = line.split(" ")
                    if len(parts) == 2:
                        return parts[1]
                    break  # malformed: parsing it says how
        plan = self.plan
        return plan.image if plan else None

    def state(self) -> str:
        if self.spec is None:
            return "absent"
        if not self.mounted:
            return "present"
        if self.plan and set(self.plan.targets()) <= set(self.mounted):
            return "mounted"
        return "partly mounted"

    def summary(self) -> dict[str, Any]:
        return {"state": self.state(), "spec": self.spec.to_dict() if self.spec else None, "mounts": list(self.mounted)}


def _plan_get(obs: Observed) -> MountPlan | None:
    known = obs.__dict__
    if "_plan" not in known:
        text = obs.plan_text
        known["_plan"] = None if text is None else parse_plan(text, known.get("_plan_origin", f"the plan of {obs.name}"))
    return known["_plan"]


def _plan_set(obs: Observed, value: MountPlan | None) -> None:
    obs.__dict__["_plan"] = value


# Observed.plan, set as a field is (the dataclass's __init__ and replace go through it), or left
# to be parsed from plan_text when first read (defer_plan).
Observed.plan = property(_plan_get, _plan_set)  # type: ignore[assignment]


def observe(cfg: Config, name: str) -> Observed:
    """The spec alone: enough to validate what is wanted before any lock. read_mounts reads the plan
    and the mounts, once, under the tenant's lock."""
    return Observed(name, registry.load_spec(cfg, name), mounts_read=False)


def read_mounts(cfg: Config, obs: Observed) -> None:
    """The plan, and which of its targets are mounted (one statx each): what observe left to be read
    under the tenant's lock."""
    origin = registry.plan_path(cfg, obs.name)
    obs.defer_plan(read_text(origin) if obs.spec else None, origin)
    targets = plan_targets(obs.plan_text) if obs.plan_text is not None else None
    if targets is None:
        targets = obs.plan.targets() if obs.plan else [str(cfg.jail_root(obs.name))]  # parsed: its errors now
    obs.mounted = [t for t, m in zip(targets, mount_roots(targets), strict=True) if m]
    obs.checked = targets
    obs.mounts_read = True


def is_current(cfg: Config, obs: Observed) -> bool:
    """Whether the spec observed before the lock still holds under it (the rest is read under it)."""
    # The same tenant.json text as read (no second parse: a tenth of a re-converge, issue 21).
    known = getattr(obs.spec, "source_text", None)
    if known is not None or obs.spec is None:
        return registry.read_spec_text(cfg, obs.name) == known
    return registry.load_spec(cfg, obs.name) == obs.spec


def observe_details(
    cfg: Config, obs: Observed, strays: leftovers.Strays, check: bool, purge: bool, image: str | None, uid: int | None = None
) -> Observed:
    """The rest the planner needs, read holding the tenant's lock: the tenant dir's entries, sessions, leftovers.

    image: the image the jail follows ('current' or an id) when a fresh mount may
    switch it to the newest, else None.
    """
    name = obs.name
    tdir = f"{cfg.tenants_dir}/{name}"  # str, not Path: pathlib was a tenth of a re-converge (issue 21)
    obs.tenant_dir = os.path.lexists(tdir)
    there: frozenset[str] | None = None
    if obs.tenant_dir:
        # One listing of the tenant dir: what is not there (a bind jail's upper and work, ...) is not lstat'ed.
        try:
            there = frozenset(os.listdir(tdir))
        except OSError:
            there = None  # not a directory: every entry is looked at (and refused by the planner)
        for rel in (*TENANT_DIRS, f"home/{name}", "vol"):  # vol: a volume's mount point (volume.py)
            obs.entries[rel] = _entry(f"{tdir}/{rel}", read=False) if there is None or rel.partition("/")[0] in there else None
        # plan and tenant.json were read a moment ago under this lock (read_mounts, is_current): their
        # text is not read a second time.
        known = {"plan": obs.plan_text, "tenant.json": getattr(obs.spec, "source_text", None)} if obs.mounts_read else {}
        for rel in TENANT_FILES:
            if there is None or rel.partition("/")[0] in there:
                obs.entries[rel] = _entry(f"{tdir}/{rel}", read=True, known=known.get(rel))
            else:
                obs.entries[rel] = None
        home = obs.entries[f"home/{name}"]
        obs.home_owner = home.uid if home is not None else None  # leftovers.kept_uid's answer, from the same lstat
    else:
        obs.home_owner = None
    root = _entry(f"{cfg.jails_dir}/{name}", read=False)
    obs.root_dir = root is not None and root.kind == "dir"
    if uid is not None:
        obs.uid_held = registry.uid_owner(cfg, uid) == name
    obs.sessions = live_sessions(cfg, name, prune=not check)
    obs.service = service_status(cfg, name)
    obs.staging = strays.has_staging(cfg, name)
    obs.stray_uids = sorted(strays.uids.get(name, []))
    if purge:
        obs.cgroups = [str(p) for p in leftovers.tenant_cgroups(cfg, name, leftovers.CGROUP_ROOT)]
        # A running service's state goes with its loop (stopped first); a dead loop's is a leftover.
        own = str(cfg.run_dir / "services" / name) if obs.service else None
        obs.run_records = [str(p) for p in leftovers.run_records(cfg, name) if str(p) != own]
    obs.net = network.observe(cfg, name)
    if purge or image is None:
        obs.net_leases = network.leases_of(cfg, name)  # a kept static address: released by a removal
    if image == "current" and not obs.mounted:
        obs.current_image = resolve_image(cfg, "current")
    if uid is not None:
        obs.quota = observe_quota(cfg, name, uid)
    if obs.tenant_dir and (there is None or "volume.img" in there):  # volume.IMAGE, from the listing above
        obs.volume = observe_volume(cfg, name)
    return obs


def observe_volume(cfg: Config, name: str) -> dict[str, Any] | None:
    """The tenant's volume image (volume.py): its size, whether it is mounted, its usage then."""
    from . import volume

    image, mnt = volume.paths(str(cfg.tenants_dir), name)
    try:
        st = os.lstat(image)
    except FileNotFoundError:
        return None
    mounted = volume.is_mounted(mnt)
    used = None
    if mounted:
        sv = os.statvfs(mnt)
        used = (sv.f_blocks - sv.f_bfree) * sv.f_frsize
    return {"size": st.st_size, "mounted": mounted, "used": used, "file": stat.S_ISREG(st.st_mode)}


def observe_quota(cfg: Config, name: str, uid: int) -> dict[str, Any] | None:
    """The tenant's project ids and quota limits (quota.py), or {"unsupported": why} without project quotas."""
    why = quota.support_cached(cfg.tenants_dir)
    if why is not None:
        return {"unsupported": why}
    tdir = cfg.tenant_dir(name)
    projects: dict[str, tuple[int, bool] | None] = {}
    if os.path.isdir(tdir) and not os.path.islink(tdir):
        with opened(os.open(tdir, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)) as tfd:
            for rel in quota.PROJECT_DIRS:
                try:
                    projects[rel] = quota.dir_project(tfd, rel)
                except OSError:
                    projects[rel] = None  # a symlink or a file there: the planner refuses it already
    got = quota.get(cfg.tenants_dir, quota.project_id(uid))
    return {"projects": projects, "limits": (got["bytes_limit"], got["inodes_limit"])}


def _entry(path: Any, read: bool, known: str | None = None) -> Entry | None:
    """known: the file's text as just read through its path (used when the path is a regular file)."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISDIR(st.st_mode):
        kind = "dir"
    elif stat.S_ISREG(st.st_mode):
        kind = "file"
    elif stat.S_ISLNK(st.st_mode):
        kind = "symlink"
    else:
        kind = "other"
    text = None
    if read and kind == "file":
        if known is not None:
            text = known
        else:
            try:
                text = read_text(path, errors="surrogateescape", follow=False)
            except OSError:
                text = None
    return Entry(kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, text)
