"""The planner without root: every observed state x every wanted state and option -> the steps (pure, no I/O)."""

from __future__ import annotations

from pathlib import Path

import pytest

from jailyard.config import Config
from jailyard.errors import JailError
from jailyard.observe import Entry, Observed
from jailyard.planner import plan_jail
from jailyard.spec import TenantSpec
from jailyard.wanted import MODULE_FLAGS, Wanted

CFG = Config(images_dir=Path("/img"), tenants_dir=Path("/t"), jails_dir=Path("/j"), run_dir=Path("/r"))
OLD, NEW = "0123456789abcdef", "fedcba9876543210"
OBSERVED = ("absent", "present", "mounted", "partly mounted", "stale image", "kept home", "leftovers")
WANTED = ("present", "mounted", "unmounted", "absent")


def spec(layout: str = "bind", image_id: str = OLD, **kw: object) -> TenantSpec:
    s = TenantSpec.build(CFG, "alice", 10001, layout=layout, **kw)
    s.image_id = image_id
    return s


def whole(s: TenantSpec) -> dict[str, Entry | None]:
    """The entries of a tenant dir exactly as the planner makes them."""
    plan = s.mount_plan(CFG, s.image_id, CFG.images_dir / s.image_id / "rootfs")
    entries: dict[str, Entry | None] = {"home": Entry("dir", 0o755, 0, 0), "etc": Entry("dir", 0o755, 0, 0)}
    if s.layout == "bind":
        entries["tmp"] = Entry("dir", 0o1777, 0, 0)
    else:
        entries["upper"] = entries["work"] = Entry("dir", 0o700, s.uid, s.gid)
    entries["home/alice"] = Entry("dir", 0o700, s.uid, s.gid)
    for rel, text in (("etc/passwd", s.passwd()), ("etc/group", s.group()), ("plan", plan.render()), ("tenant.json", s.to_json())):
        entries[rel] = Entry("file", 0o644, 0, 0, text)
    return entries


def observed(kind: str, layout: str = "bind", sessions: tuple[int, ...] = ()) -> Observed:
    if kind in ("absent", "leftovers"):
        obs = Observed("alice")
        if kind == "leftovers":
            obs.staging, obs.stray_uids = True, [10005]
        return obs
    s = spec(layout)
    plan = s.mount_plan(CFG, s.image_id, CFG.images_dir / s.image_id / "rootfs")
    obs = Observed("alice", s, plan, tenant_dir=True, entries=whole(s), root_dir=True, stray_uids=[10001], sessions=list(sessions))
    if kind == "kept home":
        obs.spec = obs.plan = None
        obs.entries = {"home": Entry("dir", 0o755, 0, 0), "home/alice": Entry("dir", 0o700, 10001, 10001)}
        obs.home_owner = 10001
    elif kind == "mounted":
        obs.mounted = plan.targets()
    elif kind == "partly mounted":
        obs.mounted = [t for t in plan.targets() if not t.endswith("/home")]
    elif kind == "stale image":
        obs.current_image = NEW
    return obs


def want(state: str, layout: str = "bind", **kw: object) -> Wanted:
    w = Wanted("alice", state, **kw)  # type: ignore[arg-type]
    if state != "absent":
        w.spec = spec(layout)
    return w


def kinds(obs: Observed, w: Wanted) -> list[str]:
    return [s.kind for s in plan_jail(CFG, obs, w, MODULE_FLAGS).steps]


EXPECTED = {
    # observed, wanted: the step kinds in order
    ("absent", "present"): ["reserve-uid", "make-staging", *["ensure-dir"] * 4, *["write-file"] * 4, "publish"],
    ("absent", "mounted"): ["reserve-uid", "make-staging", *["ensure-dir"] * 4, *["write-file"] * 4, "publish", "mount"],
    ("absent", "unmounted"): ["reserve-uid", "make-staging", *["ensure-dir"] * 4, *["write-file"] * 4, "publish"],
    ("absent", "absent"): [],
    ("present", "present"): ["keep-uid"],
    ("present", "mounted"): ["keep-uid", "mount"],
    ("present", "unmounted"): ["keep-uid"],
    ("present", "absent"): ["remove", "remove", "remove", "remove-root"],
    ("mounted", "present"): ["keep-uid"],
    ("mounted", "mounted"): ["keep-uid"],
    ("mounted", "unmounted"): ["keep-uid", "unmount"],
    ("mounted", "absent"): ["unmount", "remove", "remove", "remove", "remove-root"],
    ("partly mounted", "present"): ["keep-uid"],
    ("partly mounted", "mounted"): ["keep-uid", "mount"],
    ("partly mounted", "unmounted"): ["keep-uid", "unmount"],
    ("partly mounted", "absent"): ["unmount", "remove", "remove", "remove", "remove-root"],
    ("stale image", "present"): ["keep-uid"],
    ("stale image", "mounted"): ["keep-uid", "write-file", "write-file", "mount"],
    ("stale image", "unmounted"): ["keep-uid"],
    ("stale image", "absent"): ["remove", "remove", "remove", "remove-root"],
    ("kept home", "present"): ["keep-uid", "ensure-dir", "ensure-dir", *["write-file"] * 4],
    ("kept home", "mounted"): ["keep-uid", "ensure-dir", "ensure-dir", *["write-file"] * 4, "mount"],
    ("kept home", "unmounted"): ["keep-uid", "ensure-dir", "ensure-dir", *["write-file"] * 4],
    ("kept home", "absent"): ["remove-root"],
    ("leftovers", "present"): [
        "remove-staging",
        "release-uid",
        "reserve-uid",
        "make-staging",
        *["ensure-dir"] * 4,
        *["write-file"] * 4,
        "publish",
    ],
    ("leftovers", "mounted"): [
        "remove-staging",
        "release-uid",
        "reserve-uid",
        "make-staging",
        *["ensure-dir"] * 4,
        *["write-file"] * 4,
        "publish",
        "mount",
    ],
    ("leftovers", "unmounted"): [
        "remove-staging",
        "release-uid",
        "reserve-uid",
        "make-staging",
        *["ensure-dir"] * 4,
        *["write-file"] * 4,
        "publish",
    ],
    ("leftovers", "absent"): ["remove-staging", "release-uid"],
}


@pytest.mark.parametrize("wanted_state", WANTED)
@pytest.mark.parametrize("observed_state", OBSERVED)
def test_every_observed_state_x_every_wanted_state(observed_state: str, wanted_state: str) -> None:
    assert kinds(observed(observed_state), want(wanted_state)) == EXPECTED[observed_state, wanted_state]


@pytest.mark.parametrize("observed_state", OBSERVED)
def test_purge_removes_everything_and_releases_the_uid(observed_state: str) -> None:
    obs = observed(observed_state)
    obs.cgroups = ["/sys/fs/cgroup/memory/jailyard/alice"]
    obs.run_records = ["/r/lastuse/alice"]
    steps = plan_jail(CFG, obs, want("absent", purge=True), MODULE_FLAGS).steps
    got = [s.kind for s in steps]
    assert got[-1] == "drop-lock" and "remove-cgroups" in got and "remove-record" in got
    if obs.tenant_dir:
        assert "remove-tenant-dir" in got
        purged = [s.path for s in steps if s.action and s.action.startswith("purge ")]
        assert "home" in purged
    assert [s.uid for s in steps if s.kind == "release-uid"] == (
        [10005] if observed_state == "leftovers" else [10001] if obs.tenant_dir else []
    )
    # The unmount comes first, the uid goes back after the home is gone.
    if "unmount" in got:
        assert got[0] == "unmount"
    if "release-uid" in got and obs.tenant_dir:
        assert got.index("release-uid") > got.index("remove-tenant-dir")


@pytest.mark.parametrize("observed_state", ["mounted", "partly mounted"])
@pytest.mark.parametrize("wanted_state", ["unmounted", "absent"])
def test_live_sessions_refuse_unmount_unless_force(observed_state: str, wanted_state: str) -> None:
    obs = observed(observed_state, sessions=(4242,))
    with pytest.raises(JailError, match=r"^jail alice has 1 live session\(s\) \(pids 4242\); set force=true to unmount it anyway$"):
        plan_jail(CFG, obs, want(wanted_state), MODULE_FLAGS)
    with pytest.raises(JailError, match="set --force to unmount"):
        plan_jail(CFG, obs, want(wanted_state), {**MODULE_FLAGS, "force": "--force"})
    steps = plan_jail(CFG, obs, want(wanted_state, force=True), MODULE_FLAGS).steps
    unmount = next(s for s in steps if s.kind == "unmount")
    assert unmount.detach
    with pytest.raises(JailError, match="purging it is refused"):
        plan_jail(CFG, obs, want("absent", purge=True, force=True), MODULE_FLAGS)


@pytest.mark.parametrize("layout", ["bind", "overlay"])
def test_actions_and_after_come_from_the_plan(layout: str) -> None:
    planned = plan_jail(CFG, observed("absent"), want("mounted", layout=layout), MODULE_FLAGS)
    targets = "/ /home /tmp /etc/passwd /etc/group" if layout == "bind" else "/ /home /etc/passwd /etc/group"
    assert planned.actions == [f"create jail alice (uid 10001, {layout} layout, image 0123456789ab)", f"mount alice: {targets}"]
    assert planned.after["state"] == "mounted" and planned.after["spec"]["layout"] == layout
    assert planned.after["mounts"][0] == "/j/alice"
    partly = plan_jail(CFG, observed("partly mounted", layout), want("mounted", layout=layout), MODULE_FLAGS)
    assert partly.actions == ["mount alice: /home"]
    stale = plan_jail(CFG, observed("stale image", layout), want("mounted", layout=layout), MODULE_FLAGS)
    assert stale.actions[0] == "switch alice to image fedcba987654 (was 0123456789ab)"
    assert f"image {NEW}" in stale.steps[1].text and stale.after["spec"]["image_id"] == NEW
    unmount = plan_jail(CFG, observed("mounted", layout), want("unmounted", layout=layout), MODULE_FLAGS)
    assert unmount.after == {"state": "present", "spec": unmount.after["spec"], "mounts": []}


def test_a_mounted_jail_keeps_its_image_until_the_next_fresh_mount() -> None:
    obs = observed("mounted")
    obs.current_image = NEW
    planned = plan_jail(CFG, obs, want("mounted"), MODULE_FLAGS)
    assert planned.actions == [] and planned.after["spec"]["image_id"] == OLD


def test_repairs_are_one_action_each_and_a_symlink_is_refused() -> None:
    obs = observed("present")
    obs.entries["tmp"] = Entry("dir", 0o755, 0, 0)
    obs.entries["etc/passwd"] = obs.entries["etc/passwd"]._replace(text="tampered\n")
    obs.entries["home/alice"] = Entry("dir", 0o755, 0, 0)
    assert plan_jail(CFG, obs, want("present"), MODULE_FLAGS).actions == [
        "fix alice/tmp",
        "fix home of alice (owner 10001:10001, mode 0700)",
        "write alice/etc/passwd",
    ]
    obs.entries["home"] = Entry("symlink", 0o777, 10001, 10001)
    with pytest.raises(JailError, match=r"^refusing alice/home: expected a directory, found a symlink$"):
        plan_jail(CFG, obs, want("present"), MODULE_FLAGS)


def test_changed_limits_rewrite_the_plan_and_the_spec() -> None:
    w = want("present")
    w.spec.limits["mem"] = 1 << 20
    planned = plan_jail(CFG, observed("present"), w, MODULE_FLAGS)
    assert planned.actions == ["write alice/plan", "write alice/tenant.json"]
    assert "limit mem 1048576" in planned.steps[1].text


def test_a_uid_left_by_an_interrupted_run_of_another_name_is_taken_first() -> None:
    w = want("present", take_uid_from="rel302")
    planned = plan_jail(CFG, observed("absent"), w, MODULE_FLAGS)
    assert planned.steps[0].kind == "take-uid" and planned.steps[0].owner == "rel302"
    assert planned.actions[0] == "release uid 10001 (left by an interrupted run of rel302)"


def test_planning_changes_nothing_it_is_given() -> None:
    obs = observed("stale image")
    w = want("mounted")
    before = (obs.summary(), obs.plan.render(), dict(obs.entries), w.spec.to_dict())
    plan_jail(CFG, obs, w, MODULE_FLAGS)
    assert (obs.summary(), obs.plan.render(), dict(obs.entries), w.spec.to_dict()) == before
