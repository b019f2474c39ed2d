"""Jail lifecycle on real bind and overlay mounts over a busybox test image (as root)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from jailtest import _under, make_config
from jailyard import kernel, registry
from jailyard.config import Config
from jailyard.errors import JailError
from jailyard.kernel import is_mount_root, umount
from jailyard.lifecycle import converge, converge_many, jail_facts, mount_tenant
from jailyard.mountinfo import mounts_under, read_mountinfo
from jailyard.sessions import record_session

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
LAYOUTS = ["bind", "overlay"]


def jail_mounts(cfg: Config, name: str) -> list:
    return mounts_under(read_mountinfo(), str(cfg.jail_root(name)))


def snapshot(*roots: Path) -> list[tuple]:
    """Every path under roots with its type, owner, mode and (for files) content, plus the mounts below them."""
    entries = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for entry in sorted(dirnames + filenames):
                p = Path(dirpath, entry)
                st = p.lstat()
                body = p.read_bytes() if stat.S_ISREG(st.st_mode) else b""
                entries.append((str(p), st.st_mode, st.st_uid, st.st_gid, body))
    # Only mounts below these roots: other callers mount and unmount elsewhere on a busy host meanwhile.
    entries.append(tuple(sorted(m.target for m in read_mountinfo() if any(_under(m.target, r) for r in roots))))
    return entries


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_state_transition_both_ways(cfg: Config, layout: str) -> None:
    name = "alice"
    base = {"name": name, "uid": 10001, "layout": layout}
    steps = [
        ("present", True),
        ("mounted", True),
        ("unmounted", True),
        ("mounted", True),
        ("present", False),  # present leaves the mounts as they are
        ("absent", True),
        ("mounted", True),
        ("absent", True),
        ("present", True),
        ("unmounted", False),
        ("absent", True),
    ]
    for state, expect_change in steps:
        result = converge(cfg, {**base, "state": state})
        assert result.changed == expect_change, (state, result.actions)
        mounted = jail_mounts(cfg, name)
        spec = registry.load_spec(cfg, name)
        if state == "absent":
            assert spec is None and not mounted
            assert not cfg.jail_root(name).exists()
        else:
            assert spec is not None and spec.layout == layout
        if state == "mounted":
            assert len(mounted) == (5 if layout == "bind" else 4)
        if state in ("unmounted",):
            assert mounted == []
        again = converge(cfg, {**base, "state": state})
        assert not again.changed, (state, again.actions)


@pytest.mark.parametrize("attr_call", ["open_tree_attr", "mount_setattr"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_mounted_jail_is_readonly_nosuid_nodev_and_home_is_private(
    cfg: Config, layout: str, attr_call: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each bind's attributes set as it is cloned (6.15), or by mount_setattr after it (the fallback).
    monkeypatch.setattr(kernel, "_OPEN_TREE_ATTR", attr_call == "open_tree_attr")
    converge(cfg, {"name": "alice", "uid": 10001, "layout": layout})
    root = cfg.jail_root("alice")
    for m in jail_mounts(cfg, "alice"):
        assert "nosuid" in m.options and "nodev" in m.options, m
    base = jail_mounts(cfg, "alice")[0]
    if layout == "bind":
        assert base.options.split(",")[0] == "ro"
        with pytest.raises(OSError) as err:
            (root / "bin" / "planted").write_text("x")
        assert err.value.errno == 30  # EROFS
    else:
        # Writes land in the tenant's upper layer, never in the base image.
        (root / "bin" / "planted").write_text("x")
        assert not (cfg.images_dir / "0123456789abcdef" / "rootfs" / "bin" / "planted").exists()
        assert (cfg.tenant_dir("alice") / "upper" / "bin" / "planted").exists()
    home = cfg.tenant_dir("alice") / "home" / "alice"
    st = home.lstat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (10001, 10001, 0o700)
    assert (root / "home" / "alice").is_dir()
    passwd = (root / "etc" / "passwd").read_text()
    assert "alice:x:10001:10001:" in passwd


@pytest.mark.parametrize("layout", LAYOUTS)
def test_half_mounted_jail_is_repaired_without_stacking(cfg: Config, layout: str) -> None:
    converge(cfg, {"name": "alice", "uid": 10001, "layout": layout})
    full = [m.target for m in jail_mounts(cfg, "alice")]
    umount(str(cfg.jail_root("alice") / "home"))
    assert not is_mount_root(str(cfg.jail_root("alice") / "home"))
    result = converge(cfg, {"name": "alice", "state": "mounted"})
    assert result.actions == ["mount alice: /home"]
    assert sorted(m.target for m in jail_mounts(cfg, "alice")) == sorted(full)
    # Neither the module nor the launcher's mount step stacks a second copy.
    assert not mount_tenant(cfg, "alice").changed
    converge(cfg, {"name": "alice", "state": "mounted"})
    assert sorted(m.target for m in jail_mounts(cfg, "alice")) == sorted(full)


def test_stale_pieces_below_an_unmounted_root_are_cleared_not_stacked(cfg: Config) -> None:
    converge(cfg, {"name": "alice", "uid": 10001})
    root = cfg.jail_root("alice")
    # A reboot-like mess: the root is gone but /home is still attached below the bare directory.
    for target in ("etc/group", "etc/passwd", "tmp"):
        umount(str(root / target))
    umount(str(root), detach=True)
    converge(cfg, {"name": "alice", "state": "unmounted", "force": True})
    (root / "home").mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "--bind", str(cfg.tenant_dir("alice") / "home"), str(root / "home")], check=True)
    converge(cfg, {"name": "alice", "state": "mounted"})
    targets = [m.target for m in jail_mounts(cfg, "alice")]
    assert sorted(targets) == sorted([str(root), *(f"{root}/{t}" for t in ("home", "tmp", "etc/passwd", "etc/group"))]), targets


@pytest.mark.parametrize("layout", LAYOUTS)
def test_check_mode_changes_nothing_and_reports_what_a_real_run_does(cfg: Config, layout: str) -> None:
    base = {"name": "alice", "uid": 10001, "layout": layout}
    for state, purge in [
        ("present", False),
        ("mounted", False),
        ("unmounted", False),
        ("mounted", False),
        ("absent", False),
        ("mounted", False),
        ("absent", True),
    ]:
        before = snapshot(cfg.tenants_dir, cfg.jails_dir)
        predicted = converge(cfg, {**base, "state": state, "purge": purge}, check=True)
        assert snapshot(cfg.tenants_dir, cfg.jails_dir) == before, state
        real = converge(cfg, {**base, "state": state, "purge": purge})
        assert predicted.changed == real.changed, state
        assert predicted.actions == real.actions, state
        assert predicted.after == real.after, state


def test_diff_shows_spec_and_mounts_before_and_after(cfg: Config) -> None:
    first = converge(cfg, {"name": "alice", "uid": 10001})
    assert first.before == {"state": "absent", "spec": None, "mounts": []}
    assert first.after["state"] == "mounted"
    assert first.after["spec"]["uid"] == 10001
    assert str(cfg.jail_root("alice")) in first.after["mounts"]
    change = converge(cfg, {"name": "alice", "limits": {"mem": 1 << 20}})
    assert change.changed
    assert change.before["spec"]["limits"]["mem"] != change.after["spec"]["limits"]["mem"] == 1 << 20
    assert "limit mem 1048576" in (cfg.tenant_dir("alice") / "plan").read_text()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_remove_keeps_home_unless_purge(cfg: Config, layout: str) -> None:
    converge(cfg, {"name": "alice", "uid": 10001, "layout": layout})
    work = cfg.jail_root("alice") / "home" / "alice" / "work.txt"
    work.write_text("precious")
    converge(cfg, {"name": "alice", "state": "absent"})
    home = cfg.tenant_dir("alice") / "home" / "alice"
    assert (home / "work.txt").read_text() == "precious"
    assert registry.load_spec(cfg, "alice") is None
    # The kept home comes back with the jail.
    converge(cfg, {"name": "alice", "uid": 10001, "layout": layout})
    assert work.read_text() == "precious"
    # It belongs to uid 10001: another uid for the same name is refused.
    converge(cfg, {"name": "alice", "state": "absent"})
    with pytest.raises(JailError, match=r"kept home .* belongs to uid 10001"):
        converge(cfg, {"name": "alice", "uid": 10009})
    result = converge(cfg, {"name": "alice", "state": "absent", "purge": True})
    assert result.changed
    assert not cfg.tenant_dir("alice").exists()
    assert registry.uid_owner(cfg, 10001) is None


def test_bad_input_is_refused_and_nothing_is_half_created(cfg: Config) -> None:
    converge(cfg, {"name": "alice", "uid": 10001})
    cases = [
        ({"name": "../x", "uid": 10002}, "invalid jail name '../x'"),
        ({"name": "b" * 33, "uid": 10002}, "invalid jail name"),
        ({"name": "bob", "uid": 500}, "uid 500 of bob is outside the tenant range"),
        ({"name": "bob", "uid": 10001}, "uid 10001 of jail bob already belongs to tenant 'alice'"),
        ({"name": "bob", "uid": 10002, "image": "deadbeef"}, "image 'deadbeef' does not exist"),
        ({"name": "bob"}, "uid is required to create jail bob"),
        ({"name": "alice", "uid": 10003}, "changing the uid of jail alice from 10001 to 10003 is refused"),
        ({"name": "alice", "layout": "overlay"}, "changing the layout of jail alice from 'bind' to 'overlay' is refused"),
        ({"name": "bob", "uid": 10002, "state": "gone"}, "invalid state 'gone'"),
    ]
    before = snapshot(cfg.tenants_dir, cfg.jails_dir)
    for params, message in cases:
        with pytest.raises(JailError) as err:
            converge(cfg, params)
        assert message in str(err.value), (params, str(err.value))
        assert snapshot(cfg.tenants_dir, cfg.jails_dir) == before, params


def test_host_account_uid_is_refused(tmp_path: Path, image_store: Path, mount_guard: None) -> None:
    cfg = make_config(tmp_path, image_store, uid_min=1, uid_max=65534)
    with pytest.raises(JailError, match="uid 65534 of jail bob is the host account 'nobody'"):
        converge(cfg, {"name": "bob", "uid": 65534})


def test_bulk_items_are_all_validated_before_any_change(cfg: Config) -> None:
    items = [{"name": "a1", "uid": 10001}, {"name": "a2", "uid": 10001}]
    with pytest.raises(JailError, match="uid 10001 is given to both 'a1' and 'a2'"):
        converge_many(cfg, items)
    items = [{"name": "a1", "uid": 10001}, {"name": "a2", "uid": 10002, "layout": "zfs"}]
    with pytest.raises(JailError, match="invalid layout 'zfs'"):
        converge_many(cfg, items)
    assert registry.list_tenants(cfg) == []


def test_bulk_exclusive_removes_unlisted_and_keeps_their_homes(cfg: Config) -> None:
    items = [{"name": f"t{i}", "uid": 10000 + i} for i in range(20)]
    results = converge_many(cfg, items)
    assert all(r.changed for r in results)
    assert not any(r.changed for r in converge_many(cfg, items))
    kept = converge_many(cfg, items[:5], exclusive=True)
    assert registry.list_tenants(cfg) == [f"t{i}" for i in range(5)]
    assert sum(r.changed for r in kept) == 15
    assert (cfg.tenant_dir("t17") / "home" / "t17").is_dir()
    assert jail_mounts(cfg, "t17") == []


def test_unmount_and_purge_are_refused_while_a_session_is_live(cfg: Config) -> None:
    converge(cfg, {"name": "alice", "uid": 10001})
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        record_session(cfg, "alice", sleeper.pid)
        with pytest.raises(JailError, match=r"jail alice has 1 live session\(s\) \(pids \d+\); set force"):
            converge(cfg, {"name": "alice", "state": "unmounted"})
        with pytest.raises(JailError, match="purging it is refused"):
            converge(cfg, {"name": "alice", "state": "absent", "purge": True, "force": True})
        assert len(jail_mounts(cfg, "alice")) == 5
        assert converge(cfg, {"name": "alice", "state": "unmounted", "force": True}).changed
        assert jail_mounts(cfg, "alice") == []
    finally:
        sleeper.kill()
        sleeper.wait()
    # The record of a process that is gone counts as ended.
    converge(cfg, {"name": "alice", "state": "mounted"})
    assert converge(cfg, {"name": "alice", "state": "unmounted"}).changed


def test_new_current_image_applies_at_next_mount_only(cfg: Config, tmp_path: Path) -> None:
    import shutil

    images = cfg.images_dir
    second = "fedcba9876543210"
    shutil.copytree(images / "0123456789abcdef", images / second, symlinks=True)
    try:
        converge(cfg, {"name": "alice", "uid": 10001})
        os.symlink(second, images / "current.new")
        os.rename(images / "current.new", images / "current")
        assert not converge(cfg, {"name": "alice"}).changed
        assert registry.load_spec(cfg, "alice").image_id == "0123456789abcdef"
        converge(cfg, {"name": "alice", "state": "unmounted"})
        result = converge(cfg, {"name": "alice", "state": "mounted"})
        assert f"switch alice to image {second[:12]} (was 0123456789ab)" in result.actions
        assert registry.load_plan(cfg, "alice").image == second
        assert jail_mounts(cfg, "alice")[0].root.endswith(f"{second}/rootfs")
    finally:
        converge(cfg, {"name": "alice", "state": "absent"})
        os.symlink("0123456789abcdef", images / "current.new")
        os.rename(images / "current.new", images / "current")
        shutil.rmtree(images / second)


def test_jail_facts_read_specs_and_mount_table(cfg: Config) -> None:
    converge_many(cfg, [{"name": "a", "uid": 10001}, {"name": "b", "uid": 10002, "state": "present", "layout": "overlay"}])
    facts = {f["name"]: f for f in jail_facts(cfg, disk_usage=True)}
    assert facts["a"]["mounted"] and not facts["b"]["mounted"]
    assert facts["b"]["layout"] == "overlay"
    assert facts["a"]["disk_usage"] > 0
    assert [f["name"] for f in jail_facts(cfg, "b*")] == ["b"]


def test_mount_helper_runs_isolated_and_mounts(cfg: Config) -> None:
    converge(cfg, {"name": "alice", "uid": 10001, "state": "present"})
    helper = [sys.executable, "-I", "-S", str(cfg.mount_helper), "--config", str(cfg.path), "alice"]
    out = subprocess.run(helper, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert len(jail_mounts(cfg, "alice")) == 5
    bad = subprocess.run([*helper[:-1], "nobody-here"], capture_output=True, text=True, env={})
    assert bad.returncode == 1
    assert bad.stderr.strip() == "jailyard-mount: unknown jail 'nobody-here'"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_hand_edited_plan_or_spec_file_is_rewritten_on_the_next_converge(cfg: Config, layout: str) -> None:
    """A re-converge proves a jail's plan and tenant.json unchanged without rendering them (issue 21:
    the text is what the observed plan and spec were parsed from, and they equal what is wanted).
    A file edited by hand since in what it says is still found and rewritten; one that says the same
    in another form is left as it is (every reader parses it to the same)."""
    item = {"name": "edit", "uid": 10071, "layout": layout, "hostname": "edit", "state": "present"}
    converge(cfg, item)
    plan_file, spec_file = cfg.tenants_dir / "edit/plan", cfg.tenants_dir / "edit/tenant.json"
    good_plan, good_spec = plan_file.read_text(), spec_file.read_text()
    assert not converge(cfg, item).changed

    plan_file.write_text(good_plan.replace(",".join(("ro", "nosuid", "nodev")), "nosuid,nodev", 1))  # the root made writable
    assert converge(cfg, item).actions == ["write edit/plan"]
    assert plan_file.read_text() == good_plan

    spec_file.write_text(good_spec.replace('"hostname": "edit"', '"hostname": "elsewhere"'))
    assert converge(cfg, item).actions == ["write edit/tenant.json"]
    assert spec_file.read_text() == good_spec

    spec_file.write_text(" " + good_spec)  # the same spec in another form
    assert not converge(cfg, item).changed
    assert registry.load_spec(cfg, "edit") == registry.load_spec(cfg, "edit")
    assert converge(cfg, {**item, "state": "mounted"}).changed

    # Mounted, the plan is read from its root, mount and image lines, and the rest compared as text:
    # a plan saying the same in another form, or with a malformed line elsewhere, is rewritten.
    spec_file.write_text(good_spec)
    mounted_plan = plan_file.read_text()
    for edited in (
        mounted_plan.replace("nosuid,nodev", "nosuid,,nodev", 1),
        mounted_plan.replace("\nhostname edit\n", "\nhostname edit x\n"),
    ):
        assert edited != mounted_plan
        plan_file.write_text(edited)
        assert converge(cfg, {**item, "state": "mounted"}).actions == ["write edit/plan"]
        assert plan_file.read_text() == mounted_plan
    # One whose mounts cannot be read is an error naming the line: the mounts it describes are not known.
    plan_file.write_text(mounted_plan.replace("\nmount /home bind ", "\nmount /home bind x ", 1))
    with pytest.raises(JailError, match=r"/plan:\d+: malformed plan line 'mount /home bind x "):
        converge(cfg, {**item, "state": "mounted"})
    plan_file.write_text(mounted_plan)
