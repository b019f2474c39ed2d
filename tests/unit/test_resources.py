"""Resource guarantees (issue 16) in the spec, the plan file and the planner, no root needed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from jailyard.config import Config
from jailyard.errors import JailError
from jailyard.observe import Observed
from jailyard.plan import parse_plan
from jailyard.planner import plan_jail
from jailyard.spec import TenantSpec, parse_size
from jailyard.wanted import MODULE_FLAGS, Wanted

CFG = Config(images_dir=Path("/img"), tenants_dir=Path("/t"), jails_dir=Path("/j"), run_dir=Path("/r"))
IMAGE = "0123456789abcdef"


def spec(**limits: object) -> TenantSpec:
    s = TenantSpec.build(CFG, "alice", 10001, limits=limits)
    s.image_id = IMAGE
    return s


def plan_text(s: TenantSpec) -> str:
    return s.mount_plan(CFG, IMAGE, Path("/img") / IMAGE / "rootfs").render()


def test_sizes_take_k_m_g_t() -> None:
    assert parse_size("x", "10G") == 10 << 30 and parse_size("x", "512k") == 512 << 10 and parse_size("x", 7) == 7


def test_resource_limits_round_trip_through_tenant_json_and_the_plan() -> None:
    s = spec(disk="1G", inodes=1000, cpu_weight=200, cpu_rate="0.5", io_weight=50, memsw="1G")
    assert s.limits["disk"] == 1 << 30 and s.limits["cpu_rate"] == 0.5
    again = TenantSpec.from_json(s.to_json(), "t")
    assert again == s
    text = plan_text(s)
    assert "limit cpu_rate 500\n" in text and "limit disk 1073741824\n" in text
    assert text.index("limit wall") < text.index("limit disk") < text.index("mount /")
    assert parse_plan(text, "p").limits == s.limits
    # Rebuilding from the stored limits (what a later converge does) keeps them as they were.
    assert TenantSpec.build(CFG, "alice", 10001, limits=s.limits).limits == s.limits


def test_a_plan_without_resource_limits_is_what_it_was() -> None:
    text = plan_text(spec())
    assert "cpu_weight" not in text and "disk" not in text
    assert spec(cpu_weight=0, disk=0).limits == spec().limits, "0 means unset: left out of tenant.json and the plan"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("disk", "lots"),
        ("disk", "1.5G"),
        ("disk", -1),
        ("memsw", "1Q"),
        ("inodes", "x"),
        ("cpu_rate", "half"),
        ("cpu_rate", -1),
        ("cpu_weight", 10001),
    ],
)
def test_bad_values_get_one_line_naming_them(key: str, value: object) -> None:
    with pytest.raises(JailError) as err:
        spec(**{key: value})
    assert repr(value) in str(err.value) and f"limits.{key}" in str(err.value) and "\n" not in str(err.value)


def _quota_obs(s: TenantSpec, limits: tuple[int, int], projects: dict) -> Observed:
    obs = Observed("alice", s, None, tenant_dir=True, entries={})
    obs.quota = {"projects": projects, "limits": limits}
    return obs


def test_planner_sets_projects_and_quota_once() -> None:
    s = spec(disk="1M", inodes=100)
    fresh = _quota_obs(s, (0, 0), {"home": (0, False), "tmp": (0, False)})
    steps = plan_jail(CFG, fresh, Wanted("alice", "present", spec=s), MODULE_FLAGS).steps
    kinds = [(st.kind, st.path) for st in steps if st.kind in ("set-project", "set-quota")]
    assert kinds == [("set-project", "home"), ("set-project", "tmp"), ("set-quota", "")]
    done = _quota_obs(s, (1 << 20, 100), {"home": (10001, True), "tmp": (10001, True)})
    steps = plan_jail(CFG, done, Wanted("alice", "present", spec=s), MODULE_FLAGS).steps
    assert not [st for st in steps if st.kind in ("set-project", "set-quota")]


def test_planner_refuses_a_disk_limit_without_project_quota_when_the_backend_is_quota() -> None:
    s = spec(disk="1M")
    obs = dataclasses.replace(Observed("alice"), quota={"unsupported": "it is tmpfs, not ext4 or xfs"})
    with pytest.raises(JailError, match=r"alice asks for limits.disk/inodes.*/t has no project quota: it is tmpfs"):
        plan_jail(dataclasses.replace(CFG, disk_backend="quota"), obs, Wanted("alice", "present", spec=s), MODULE_FLAGS)


def test_without_project_quota_a_disk_limit_makes_a_volume() -> None:
    """disk_backend auto (the default) on a filesystem (or kernel) without project quota: the tenant's
    data goes into a volume made at create; its plan carries the volume line and binds from its mount point."""
    s = spec(disk="64M", inodes=4096)
    obs = dataclasses.replace(Observed("alice"), quota={"unsupported": "the kernel has no quota support"})
    planned = plan_jail(CFG, obs, Wanted("alice", "present", spec=s), MODULE_FLAGS)
    make = [st for st in planned.steps if st.kind == "make-volume"]
    assert len(make) == 1 and make[0].text == f"{64 << 20} 4096" and make[0].paths == ("home", "tmp")
    assert not [st for st in planned.steps if st.kind in ("set-project", "set-quota")]
    text = next(st.text for st in planned.steps if st.kind == "write-file" and st.path == "plan")
    assert "volume /t/alice/volume.img /t/alice/vol\nmount / bind" in text
    assert "mount /home bind /t/alice/vol/home nosuid,nodev" in text
    assert parse_plan(text, "plan").volume == "/t/alice/volume.img /t/alice/vol"
    assert parse_plan(text, "plan").render() == text
    assert planned.after["spec"]["volume"] is True


def test_a_plan_without_a_volume_stays_as_it_was() -> None:
    text = plan_text(spec(disk="1G"))
    assert "volume" not in text and parse_plan(text, "plan").volume == ""
    assert "volume" not in spec(disk="1G").to_dict()
