"""The jail and jail_info modules through ansible-playbook: idempotence, check mode, diff, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jailtest import REPO
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
    env = {
        **os.environ,
        "ANSIBLE_LIBRARY": str(REPO / "library"),
        "ANSIBLE_MODULE_UTILS": str(REPO / "module_utils"),
        "ANSIBLE_STDOUT_CALLBACK": "default",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
    }
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
