"""The jail and jail_info modules through ansible-playbook: idempotence, check mode, diff, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jailtest import ansible_env, make_config
from jailyard.config import Config
from jailyard.mountinfo import jails_with_mounts, read_mountinfo

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Converge the tenants
      jail:
        jails: {jails}
        state: "{{{{ wanted_state | default('mounted') }}}}"
        exclusive: true
        config: {conf}
    - name: Read the jails
      jail_info:
        config: {conf}
      register: info
    - name: Show them
      ansible.builtin.debug:
        msg: "{{{{ info.jails | map(attribute='name') | list }}}}"
"""


def playbook(cfg: Config, tmp_path: Path, jails: list[dict], *extra: str) -> subprocess.CompletedProcess:
    book = tmp_path / "site.yml"
    book.write_text(PLAYBOOK.format(jails=json.dumps(jails), conf=cfg.path))
    env = ansible_env(ANSIBLE_STDOUT_CALLBACK="default")
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", str(book), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)


def recap(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    return [line for line in out.stdout.splitlines() if line.startswith("localhost")][-1]


def test_bulk_converge_is_idempotent_and_check_mode_tells_the_truth(cfg: Config, tmp_path: Path) -> None:
    if not (Path(sys.executable).parent / "ansible-playbook").exists():
        pytest.skip("ansible-playbook is not installed next to this python")
    jails = [{"name": f"u{i}", "uid": 10000 + i, "layout": "overlay" if i % 3 == 0 else "bind"} for i in range(12)]
    check_first = playbook(cfg, tmp_path, jails, "--check")
    assert "changed=1" in recap(check_first)
    assert jails_with_mounts(read_mountinfo(), str(cfg.jails_dir)) == {}
    assert not any(cfg.tenants_dir.glob("u*"))
    assert "changed=1" in recap(playbook(cfg, tmp_path, jails))
    assert len(jails_with_mounts(read_mountinfo(), str(cfg.jails_dir))) == 12
    assert "changed=0" in recap(playbook(cfg, tmp_path, jails))
    assert "changed=0" in recap(playbook(cfg, tmp_path, jails, "--check"))
    # Diff shows the spec and mounts of what would change.
    fewer = playbook(cfg, tmp_path, jails[:10], "--check", "--diff")
    assert "changed=1" in recap(fewer)
    assert '"state": "mounted"' in fewer.stdout and '"state": "absent"' in fewer.stdout
    assert len(jails_with_mounts(read_mountinfo(), str(cfg.jails_dir))) == 12
    assert "changed=1" in recap(playbook(cfg, tmp_path, jails[:10]))
    assert sorted(jails_with_mounts(read_mountinfo(), str(cfg.jails_dir))) == sorted(f"u{i}" for i in range(10))
    assert (cfg.tenant_dir("u11") / "home" / "u11").is_dir()
    unmounted = playbook(cfg, tmp_path, jails[:10], "-e", "wanted_state=unmounted")
    assert "changed=1" in recap(unmounted)
    assert jails_with_mounts(read_mountinfo(), str(cfg.jails_dir)) == {}


def test_bad_item_fails_with_one_message_and_changes_nothing(cfg: Config, tmp_path: Path) -> None:
    if not (Path(sys.executable).parent / "ansible-playbook").exists():
        pytest.skip("ansible-playbook is not installed next to this python")
    out = playbook(cfg, tmp_path, [{"name": "ok", "uid": 10001}, {"name": "Bad!", "uid": 10002}])
    assert out.returncode != 0
    assert "invalid jail name 'Bad!'" in out.stdout
    assert not cfg.tenant_dir("ok").exists()


def adhoc(cfg: Config, tmp_path: Path, module: str, args: dict) -> tuple[bool, dict]:
    """`ansible localhost -m MODULE -a JSON`, as a new user would try it; (ok, the module's result)."""
    ansible = Path(sys.executable).parent / "ansible"
    if not ansible.exists():
        pytest.skip("ansible is not installed next to this python")
    env = ansible_env(ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="json")
    cmd = [str(ansible), "localhost", "-c", "local", "-i", "localhost,", "-m", module, "-a", json.dumps({**args, "config": str(cfg.path)})]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    result = json.loads(out.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    return out.returncode == 0, result


def test_adhoc_partial_limits_take_the_rest_from_the_spec_or_the_defaults(cfg: Config, tmp_path: Path) -> None:
    """-a '{"name":"x","uid":12008,"limits":{"mem":268435456}}' failed: "limits.cpu must be a non-negative integer, got None"."""
    ok, result = adhoc(cfg, tmp_path, "jail", {"name": "x", "uid": 12008, "limits": {"mem": 268435456}, "state": "present"})
    assert ok, result
    limits = result["jail"]["spec"]["limits"]
    assert limits == {**cfg.default_limits(), "mem": 268435456}
    ok, result = adhoc(cfg, tmp_path, "jail", {"name": "x", "limits": {"procs": 7}, "state": "present"})
    assert ok, result
    assert result["jail"]["spec"]["limits"] == {**cfg.default_limits(), "mem": 268435456, "procs": 7}


def test_bulk_task_failing_part_way_reports_changed_the_failed_jail_and_the_rest(cfg: Config, tmp_path: Path) -> None:
    """A bulk task that failed at a busy jail reported `FAILED, changed: false` although earlier jails were unmounted."""
    from jailyard.lifecycle import converge_many
    from jailyard.sessions import record_session

    converge_many(cfg, [{"name": f"t{i}", "uid": 10000 + i} for i in range(3)])
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        record_session(cfg, "t1", sleeper.pid)
        ok, result = adhoc(cfg, tmp_path, "jail", {"jails": [{"name": f"t{i}"} for i in range(3)], "state": "unmounted"})
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not ok
    assert result["changed"] is True
    assert result["failed_jail"] == "t1"
    assert "live session" in result["error"] and "force=true" in result["error"]
    assert result["not_attempted"] == ["t2"]
    assert [r["name"] for r in result["results"]] == ["t0"]
    assert result["actions"] == [a for a in result["results"][0]["actions"]]


def test_another_tenants_gid_is_refused_unless_shared_gid(cfg: Config, tmp_path: Path) -> None:
    """`--gid 12001` (another tenant's group) was accepted."""
    assert adhoc(cfg, tmp_path, "jail", {"name": "a", "uid": 12001, "state": "present"})[0]
    ok, result = adhoc(cfg, tmp_path, "jail", {"name": "b", "uid": 12002, "gid": 12001, "state": "present"})
    assert not ok
    assert result["msg"] == "gid 12001 of jail b is the group of tenant 'a'; set shared_gid=true to share it"
    assert not cfg.tenant_dir("b").exists()
    ok, result = adhoc(cfg, tmp_path, "jail", {"name": "b", "uid": 12002, "gid": 12001, "shared_gid": True, "state": "present"})
    assert ok, result
    assert result["jail"]["spec"]["gid"] == 12001


def test_jail_image_installed_reports_the_actions_it_took(tmp_path: Path) -> None:
    """`jail_image state=installed` returned changed: true with actions: []."""
    from jailtest import make_busybox_rootfs
    from jailyard.imagebuild import content_hash, pack_image

    build = Config(images_dir=tmp_path / "build")
    staging = tmp_path / "build" / "staging" / "rootfs"
    make_busybox_rootfs(staging)
    image_id, _, _ = content_hash(staging)
    (tmp_path / "build" / "staging").rename(tmp_path / "build" / image_id)
    archive, checksum = pack_image(build, image_id)
    node = tmp_path / "node"
    node.mkdir()
    (node / "images").mkdir()
    cfg = make_config(node, node / "images")
    args = {"state": "installed", "archive": str(archive), "sha256": checksum}
    ok, first = adhoc(cfg, tmp_path, "jail_image", args)
    assert ok, first
    assert first["changed"] is True
    assert first["actions"] == [f"install image {image_id} from {archive}", f"make image {image_id} current"]
    ok, second = adhoc(cfg, tmp_path, "jail_image", args)
    assert ok and second["changed"] is False and second["actions"] == [], second


def test_bulk_items_are_checked_by_ansibles_argument_spec(cfg: Config, tmp_path: Path) -> None:
    """The keys and types of `jails` items were checked by hand; now by their suboptions."""
    ok, result = adhoc(cfg, tmp_path, "jail", {"jails": [{"name": "a", "uid": 10001, "colour": "blue"}]})
    assert not ok
    assert result["msg"].startswith("Unsupported parameters for (jail) module: jails.colour."), result["msg"]
    ok, result = adhoc(cfg, tmp_path, "jail", {"jails": [{"uid": 10001}]})
    assert not ok and result["msg"] == "missing required arguments: name found in jails", result["msg"]
    ok, result = adhoc(cfg, tmp_path, "jail", {"jails": [{"name": "a", "uid": "many"}]})
    assert not ok and "'many'\" cannot be converted to an int" in result["msg"], result["msg"]
    ok, result = adhoc(cfg, tmp_path, "jail", {"jails": [{"name": "a", "uid": 10001, "state": "gone"}]})
    assert not ok and result["msg"].startswith("value of state must be one of: present, mounted"), result["msg"]
    assert not any(cfg.tenants_dir.iterdir())
    ok, result = adhoc(cfg, tmp_path, "jail", {"jails": [{"name": "a", "uid": 10001, "limits": {"mem": 1048576}}], "state": "present"})
    assert ok and result["count"] == {"total": 1, "changed": 1}, result


def test_the_service_option_single_and_in_items_and_jail_info_shows_it(cfg: Config, tmp_path: Path) -> None:
    """`service` is an option of the single form and of `jails` items (issue 19); without a program it is one error
    naming the jail; jail_info returns `service` and `service_status`."""
    ok, result = adhoc(cfg, tmp_path, "jail", {"name": "s1", "uid": 10001, "service": True, "state": "present"})
    assert not ok and result["msg"].startswith("jail s1 has service: true but no program to run"), result["msg"]
    assert not any(cfg.tenants_dir.iterdir())
    item = {"name": "s1", "uid": 10001, "program": "/bin/sleep 1000", "service": True}
    ok, result = adhoc(cfg, tmp_path, "jail", {"jails": [item], "state": "present"})
    assert ok and result["count"] == {"total": 1, "changed": 1}, result
    ok, result = adhoc(cfg, tmp_path, "jail_info", {"name": "s1"})
    assert ok, result
    (fact,) = result["jails"]
    assert fact["service"] is True and fact["service_status"] == {"running": False}
    ok, result = adhoc(cfg, tmp_path, "jail", {"name": "s1", "service": False, "state": "present"})
    assert ok and result["actions"] == ["write s1/tenant.json"] and "service" not in result["jail"]["spec"], result
