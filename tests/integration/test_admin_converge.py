"""Admin tenants (issue 14) on the Python side: the range, the plan, the overlay over an idmapped image,
and bad input refused with one clear error before anything is made."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jailtest import ansible_env
from jailyard import idmap, registry
from jailyard.config import Config
from jailyard.errors import JailError
from jailyard.lifecycle import converge
from jailyard.plan import parse_plan
from jailyard.spec import TenantSpec

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def nothing_made(cfg: Config, name: str, uid: int) -> None:
    assert not (cfg.tenants_dir / name).exists()
    assert not any(p.name.endswith(name) for p in cfg.tenants_dir.iterdir())  # no staging dir either
    assert registry.uid_owner(cfg, uid) is None
    assert not (cfg.jails_dir / name).exists()


def test_range_is_a_function_of_the_uid_and_ranges_never_overlap(cfg: Config) -> None:
    bases = [idmap.range_base(cfg.uid_min, uid) for uid in (cfg.uid_min, cfg.uid_min + 1, cfg.uid_max)]
    assert bases[0] == idmap.ADMIN_ID_BASE and bases[1] == bases[0] + idmap.COUNT
    assert bases[0] > cfg.uid_max, "above every plain tenant uid"
    assert bases[2] + idmap.COUNT - 1 <= idmap.ID_MAX, "the default tenant range fits below (uid_t)-1"
    with pytest.raises(JailError, match="no subordinate id range"):
        idmap.range_base(cfg.uid_min, cfg.uid_min + (idmap.ID_MAX + 1 - idmap.ADMIN_ID_BASE) // idmap.COUNT)


def test_admin_plan_round_trips_and_a_plain_plan_has_no_admin_line(cfg: Config) -> None:
    converge(cfg, {"name": "lab1", "uid": 10010, "layout": "overlay", "admin": True, "state": "present"})
    converge(cfg, {"name": "plain", "uid": 10011, "layout": "overlay", "state": "present"})
    text = (cfg.tenants_dir / "lab1/plan").read_text()
    plan = parse_plan(text, "plan")
    assert plan.admin == idmap.range_base(cfg.uid_min, 10010) and plan.render() == text
    assert [m.target for m in plan.mounts] == ["/", "/home"], "tenant root keeps its own /etc/passwd"
    plain = (cfg.tenants_dir / "plain/plan").read_text()
    assert "\nadmin " not in plain and parse_plan(plain, "plan").admin == 0
    assert '"admin' not in (cfg.tenants_dir / "plain/tenant.json").read_text(), "a plain tenant's spec stays as it was"
    spec = TenantSpec.from_json((cfg.tenants_dir / "lab1/tenant.json").read_text(), "lab1")
    assert spec.admin and spec.admin_ids == plan.admin
    for name in ("lab1", "plain"):
        converge(cfg, {"name": name, "state": "absent", "purge": True})


def test_mounted_admin_jail_shows_the_image_under_its_range_and_the_image_is_untouched(cfg: Config) -> None:
    converge(cfg, {"name": "lab1", "uid": 10010, "layout": "overlay", "admin": True, "state": "mounted"})
    base = idmap.range_base(cfg.uid_min, 10010)
    try:
        root = cfg.jails_dir / "lab1"
        st = (root / "bin/busybox").stat()
        assert (st.st_uid, st.st_gid) == (base, base)
        assert (cfg.images_dir / "current" / "rootfs/bin/busybox").stat().st_uid == 0
        passwd = (root / "etc/passwd").read_text()
        assert passwd.startswith("root:x:0:0:") and "lab1:x:10010:10010:" in passwd
        assert (cfg.tenants_dir / "lab1/upper/etc/passwd").stat().st_uid == base
        upper = (cfg.tenants_dir / "lab1/upper").stat()
        assert (upper.st_uid, oct(upper.st_mode & 0o777)) == (base, "0o755")
        # A second converge changes nothing.
        assert not converge(cfg, {"name": "lab1", "uid": 10010, "layout": "overlay", "admin": True, "state": "mounted"}).changed
    finally:
        converge(cfg, {"name": "lab1", "state": "absent", "purge": True})
    nothing_made(cfg, "lab1", 10010)


def test_admin_needs_the_overlay_layout(cfg: Config) -> None:
    with pytest.raises(JailError, match="needs layout: overlay"):
        converge(cfg, {"name": "lab1", "uid": 10010, "layout": "bind", "admin": True, "state": "mounted"})
    nothing_made(cfg, "lab1", 10010)


def test_admin_cannot_be_switched_on_an_existing_jail(cfg: Config) -> None:
    converge(cfg, {"name": "lab1", "uid": 10010, "layout": "overlay", "state": "present"})
    with pytest.raises(JailError, match="changing the admin of jail lab1"):
        converge(cfg, {"name": "lab1", "admin": True, "state": "present"})
    converge(cfg, {"name": "lab1", "state": "absent", "purge": True})


def test_no_user_namespaces_is_one_clear_error_and_nothing_is_made(cfg: Config, tmp_path: Path, monkeypatch) -> None:
    """max_user_namespaces 0 (simulated: the check reads a file of the test's own, the host's is left alone)."""
    fake = tmp_path / "max_user_namespaces"
    fake.write_text("0\n")
    monkeypatch.setattr(idmap, "MAX_USERNS", str(fake))
    with pytest.raises(JailError, match=r"needs user namespaces, and .*max_user_namespaces is '0'"):
        converge(cfg, {"name": "lab1", "uid": 10010, "layout": "overlay", "admin": True, "state": "mounted"})
    nothing_made(cfg, "lab1", 10010)


def test_range_overlapping_a_host_subuid_range_is_refused(cfg: Config, tmp_path: Path, monkeypatch) -> None:
    base = idmap.range_base(cfg.uid_min, 10010)
    subuid = tmp_path / "subuid"
    subuid.write_text(f"podman:{base + 1000}:65536\n")
    monkeypatch.setattr(idmap, "HOST_ID_FILES", (str(subuid),))
    with pytest.raises(JailError, match=r"overlaps .*subuid"):
        converge(cfg, {"name": "lab1", "uid": 10010, "layout": "overlay", "admin": True, "state": "present"})
    nothing_made(cfg, "lab1", 10010)


def adhoc(cfg: Config, tmp_path: Path, args: dict, *extra: str) -> tuple[bool, dict]:
    """`ansible localhost -m jail -a JSON` (as tests/integration/test_modules.py runs it); (ok, result)."""
    ansible = Path(sys.executable).parent / "ansible"
    if not ansible.exists():
        pytest.skip("ansible is not installed next to this python")
    env = ansible_env(ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="json")
    cmd = [
        str(ansible),
        "localhost",
        "-c",
        "local",
        "-i",
        "localhost,",
        "-m",
        "jail",
        "-a",
        json.dumps({**args, "config": str(cfg.path)}),
        *extra,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    return out.returncode == 0, json.loads(out.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]


def test_jail_module_check_mode_of_a_new_admin_jail_reports_its_packages_and_makes_nothing(cfg: Config, tmp_path: Path) -> None:
    args = {"name": "lab1", "uid": 10010, "layout": "overlay", "admin": True, "packages": ["python3"], "state": "present"}
    ok, result = adhoc(cfg, tmp_path, args, "--check")
    assert ok, result
    assert result["changed"] and result["installed"] == {"lab1": ["python3"]}
    nothing_made(cfg, "lab1", 10010)
    ok, result = adhoc(cfg, tmp_path, {**args, "layout": "bind"})
    assert not ok and "needs layout: overlay" in result["msg"]
    nothing_made(cfg, "lab1", 10010)


def test_a_filesystem_without_idmapped_mounts_is_one_clear_error() -> None:
    """procfs cannot be idmapped: the converge-time probe says so for an images dir on such a filesystem."""
    with pytest.raises(JailError, match="needs idmapped mounts on /proc"):
        idmap.check_idmapped_mounts("/proc", idmap.ADMIN_ID_BASE)


def test_jailctl_creates_an_admin_jail(cfg: Config) -> None:
    jailctl = Path(__file__).resolve().parents[2] / "bin" / "jailctl"
    out = subprocess.run(
        ["/usr/bin/python3", str(jailctl), "--config", str(cfg.path), "create", "lab1", "--uid", "10010", "--layout", "overlay", "--admin"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    spec = TenantSpec.from_json((cfg.tenants_dir / "lab1/tenant.json").read_text(), "lab1")
    assert spec.admin and spec.admin_ids == idmap.range_base(cfg.uid_min, 10010)
    converge(cfg, {"name": "lab1", "state": "absent", "purge": True})
