"""Planning and validation, no root needed."""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from pathlib import Path

import pytest

from jailyard.conffile import DEFAULTS, parse_values
from jailyard.config import Config, parse_config
from jailyard.errors import JailError
from jailyard.plan import NAME_PATTERN, MountEntry, is_valid_name, parse_plan
from jailyard.spec import TenantSpec, check_name, json_text

CFG = Config()


@pytest.mark.parametrize("name", ["alice", "_svc", "a" * 32, "bob-2", "x_y"])
def test_valid_names_pass(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "../x", "Alice", "a" * 33, "1abc", "a b", "a/b", "-x", "é", "alice\n", "alice\x00", None, 7])
def test_bad_names_are_refused_naming_the_value(name: object) -> None:
    with pytest.raises(JailError, match="invalid jail name") as err:
        check_name(name)
    assert repr(name) in str(err.value)


@pytest.mark.parametrize("uid", [0, 9999, 60000, -1])
def test_uid_outside_range_is_refused(uid: int) -> None:
    with pytest.raises(JailError, match=str(uid)):
        TenantSpec.build(CFG, "alice", uid)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("layout", "zfs", "invalid layout 'zfs'"),
        ("image", "../etc", "invalid image '../etc'"),
        ("hostname", "bad host", "invalid hostname 'bad host'"),
        ("limits", {"cpus": 1}, "unknown limit 'cpus'"),
        ("limits", {"mem": -5}, "limits.mem must be a non-negative integer, got -5"),
        ("uid", True, "uid must be a non-negative integer, got True"),
    ],
)
def test_bad_fields_get_one_clear_error(field: str, value: object, message: str) -> None:
    args = {"name": "alice", "uid": 10001, field: value}
    with pytest.raises(JailError) as err:
        TenantSpec.build(CFG, **args)
    assert message in str(err.value)


def test_limits_default_from_config_and_merge() -> None:
    spec = TenantSpec.build(CFG, "alice", 10001, limits={"mem": 1024})
    assert spec.limits["mem"] == 1024
    assert spec.limits["procs"] == CFG.default_procs
    assert spec.gid == 10001
    assert spec.hostname == "alice"


def test_spec_json_roundtrip() -> None:
    spec = TenantSpec.build(CFG, "alice", 10001, layout="overlay")
    assert TenantSpec.from_json(spec.to_json(), "x") == spec


def test_spec_with_unknown_keys_is_refused() -> None:
    with pytest.raises(JailError, match="unknown keys"):
        TenantSpec.from_json('{"name": "a", "uid": 1, "gid": 1, "evil": 1}', "t.json")


def test_bind_plan_mounts_base_readonly_nosuid_then_home_tmp_passwd() -> None:
    spec = TenantSpec.build(CFG, "alice", 10001)
    plan = spec.mount_plan(CFG, "abcdef01", Path("/img/rootfs"))
    assert [m.target for m in plan.mounts] == ["/", "/home", "/tmp", "/etc/passwd", "/etc/group"]
    assert plan.mounts[0].options == ("ro", "nosuid", "nodev")
    assert all({"nosuid", "nodev"} <= set(m.options) for m in plan.mounts)
    assert plan.targets()[0] == "/srv/jails/alice"
    assert plan.targets()[1] == "/srv/jails/alice/home"


def test_overlay_plan_has_upper_and_work_and_no_tmp_bind() -> None:
    spec = TenantSpec.build(CFG, "bob", 10002, layout="overlay")
    plan = spec.mount_plan(CFG, "abcdef01", Path("/img/rootfs"))
    assert plan.mounts[0].fstype == "overlay"
    assert plan.mounts[0].source == "/img/rootfs:/var/lib/jailyard/tenants/bob/upper:/var/lib/jailyard/tenants/bob/work"
    assert "/tmp" not in [m.target for m in plan.mounts]


def test_plan_file_roundtrip_is_exact() -> None:
    cfg = Config(net_host=1)
    for net in (True, False, "private"):
        spec = TenantSpec.build(cfg, "alice", 10001, net=net, limits={"wall": 30})
        plan = spec.mount_plan(cfg, "abcdef01", Path("/img/rootfs"))
        assert parse_plan(plan.render(), "plan") == plan


def test_net_host_needs_the_config_to_allow_it() -> None:
    """issue 17: `net: true` (host) shares the host's network; refused unless jailyard.conf has net_host = 1."""
    with pytest.raises(JailError, match=r"net: host for alice is refused.*net_host = 0"):
        TenantSpec.build(CFG, "alice", 10001, net=True)
    assert TenantSpec.build(Config(net_host=1), "alice", 10001, net="host").net is True
    assert TenantSpec.build(CFG, "alice", 10001, net="none").net is False


def test_net_private_plan_and_resolv_conf() -> None:
    """issue 17: a private tenant's plan says `net private` and binds its own resolv.conf; limits.net_rate stays out of the plan."""
    spec = TenantSpec.build(CFG, "alice", 10001, net="private", limits={"net_rate": 10_000_000})
    plan = spec.mount_plan(CFG, "abcdef01", Path("/img/rootfs"))
    assert "net private\n" in plan.render() and "net_rate" not in plan.render()
    assert plan.mounts[-1].target == "/etc/resolv.conf"
    with pytest.raises(JailError, match="net_rate of alice needs net: private"):
        TenantSpec.build(CFG, "alice", 10001, limits={"net_rate": 1000})


@pytest.mark.parametrize(
    ("net", "error"),
    [
        ({"mode": "private", "address": "10.231.1.5"}, r"net.address 10.231.1.5 of alice is outside the pool 10.231.0.0/24"),
        ({"mode": "private", "address": "10.231.0.1"}, r"net.address 10.231.0.1 of alice is outside the pool"),
        ({"mode": "private", "address": "10.231.0.300"}, r"invalid net.address '10.231.0.300'"),
        ({"mode": "private", "egress": ["10.0.0.1/8"]}, r"malformed CIDR '10.0.0.1/8' in net.egress of alice"),
        ({"mode": "private", "egress": [{"cidr": "10.0.0.0/8", "port": 70000}]}, r"invalid port 70000"),
        ({"mode": "private", "publish": [{"host_port": 80}, {"host_port": 80}]}, r"host port tcp/80 twice"),
        ({"mode": "private", "bogus": 1}, r"unknown keys \['bogus'\]"),
        ({"mode": "host", "address": "10.231.0.5"}, r"net mode host of alice takes no settings"),
        ("bridged", r"invalid net 'bridged' for alice"),
    ],
)
def test_net_bad_input_is_one_clear_error(net: object, error: str) -> None:
    with pytest.raises(JailError, match=error):
        TenantSpec.build(CFG, "alice", 10001, net=net)


def test_net_malformed_pool_in_the_config() -> None:
    with pytest.raises(JailError, match=r"malformed CIDR '10.0.0.1/24' in jailyard.conf net_pool4"):
        TenantSpec.build(Config(net_pool4="10.0.0.1/24"), "alice", 10001, net="private")


def test_plan_refuses_paths_with_whitespace() -> None:
    spec = TenantSpec.build(CFG, "alice", 10001)
    with pytest.raises(JailError, match="whitespace"):
        spec.mount_plan(CFG, "abcdef01", Path("/img/root fs"))


@pytest.mark.parametrize("line", ["mount / bind", "limit cpu x", "uid 1 2", "evil 1"])
def test_malformed_plan_lines_are_refused(line: str) -> None:
    spec = TenantSpec.build(CFG, "alice", 10001)
    text = spec.mount_plan(CFG, "abcdef01", Path("/i")).render() + line + "\n"
    with pytest.raises(JailError, match="malformed plan line"):
        parse_plan(text, "plan")


def test_config_roundtrip_and_unknown_key() -> None:
    cfg = Config(uid_min=20000, allowed_callers=(0, 33, 1000))
    assert parse_config(cfg.render()) == cfg
    with pytest.raises(JailError, match="unknown key 'colour'"):
        parse_config("colour = blue\n", "jailyard.conf")
    with pytest.raises(JailError, match="must be an absolute path"):
        parse_config("jails_dir = relative\n")
    with pytest.raises(JailError, match="uid_min 5 is above uid_max 4"):
        parse_config("uid_min = 5\nuid_max = 4\n")


def test_hand_written_name_check_agrees_with_the_pattern() -> None:
    # The mount step and the C launcher check names by hand; this holds them to the pattern.
    pattern = re.compile(NAME_PATTERN.rstrip("$") + r"\Z")
    alphabet = "a_z0-A.\n/ é"
    samples = ["".join(p) for n in range(4) for p in itertools.product(alphabet, repeat=n)]
    samples += ["a" * 32, "a" * 33, "_" + "9" * 31, "z" * 31 + "-"]
    for name in samples:
        assert is_valid_name(name) == bool(pattern.match(name)), repr(name)


def test_records_compare_by_value_and_are_immutable() -> None:
    entry = MountEntry("/", "bind", "/img", ("ro",))
    assert entry == MountEntry(target="/", fstype="bind", source="/img", options=("ro",))
    assert entry != MountEntry("/", "bind", "/other", ("ro",))
    with pytest.raises(AttributeError):
        entry.source = "/etc"  # type: ignore[misc]
    with pytest.raises(TypeError, match="missing fields options"):
        MountEntry("/", "bind", "/img")


def test_mount_step_settings_and_config_share_defaults() -> None:
    assert {**DEFAULTS, **parse_values("")} == DEFAULTS
    cfg = parse_config("")
    for key, value in DEFAULTS.items():
        assert str(getattr(cfg, key)) == str(value), key


def test_plan_imports_nothing_of_spec() -> None:
    """spec.py and plan.py imported each other (plan.py under TYPE_CHECKING); now only spec.py imports plan.py."""
    import ast

    import jailyard.plan

    tree = ast.parse(Path(jailyard.plan.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "spec" not in imported and "lifecycle" not in imported, imported


# ---------------------------------------------------------------- tenant.json text (issue 21)

JSON_CASES = [
    {},
    {"a": []},
    {"b": {}, "a": 1},
    {"name": "lab1", "uid": 10010, "limits": {"mem": 1 << 30, "cpu": 60}, "packages": ["python3", "gcc"], "net": False},
    {"program": None, "hostname": 'h\u00e9\u2603\n\t"\\', "flag": True, "nested": {"deep": [{"x": [1, [2, []]]}]}},
    {"tuple": (1, "two"), "big": -(2**70), "zero": 0},
    {"float": 1.5},  # left to the json module
    {1: "int key"},  # left to the json module
]


@pytest.mark.parametrize("value", JSON_CASES, ids=range(len(JSON_CASES)))
def test_json_text_is_byte_identical_to_json_dumps_with_indent_and_sorted_keys(value):
    """tenant.json is compared as text on every converge: a different rendering would rewrite every tenant."""
    assert json_text(value) == json.dumps(value, indent=2, sort_keys=True)


def test_spec_to_dict_is_a_copy_and_equals_dataclasses_asdict():
    spec = TenantSpec(name="lab1", uid=10010, gid=10010, limits={"mem": 5}, packages=["gcc"], service=True, program="/bin/x")
    data = spec.to_dict()
    omitted = {"admin", "admin_ids", "volume", "environment", "package"}  # left out of tenant.json unless set
    assert data == {k: v for k, v in dataclasses.asdict(spec).items() if k not in omitted}
    data["limits"]["mem"] = 6
    data["packages"].append("make")
    assert spec.limits == {"mem": 5} and spec.packages == ["gcc"]
    assert "service" not in TenantSpec(name="lab1", uid=10010, gid=10010).to_dict()
