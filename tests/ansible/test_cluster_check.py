"""site.yml refuses jail hosts that disagree before any node changes (issue 12).

Reproduction: two jail hosts with different `jail_launcher_uid_min`. site.yml
ran the consistency check in its second play, after the first had already
written each node's launcher config (with its own uid range), built and
installed the launcher. And jail_cluster compared `jail_launcher_tenants_dir`
but mounted shared storage at `jail_cluster_tenants_dir`, so two nodes
mounting it in different places passed the check.

The hosts here are two names for this machine (`ansible_connection: local`)
whose every path points into the test's tmp directory: if the check comes too
late, what the first play writes lands there and the test sees it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_roles import REPO, tool


def node_paths(root: Path) -> dict[str, object]:
    """Every path the roles would write on a node, under root; nothing host-wide touched."""
    rcu = Path("/sys/kernel/rcu_expedited")
    return {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "jail_launcher_src_dir": f"{root}/src",
        "jail_launcher_sbin_dir": f"{root}/sbin",
        "jail_launcher_lib_dir": f"{root}/lib",
        "jail_launcher_config_path": f"{root}/etc/jailyard.conf",
        "jail_launcher_images_dir": f"{root}/images",
        "jail_launcher_tenants_dir": f"{root}/tenants",
        "jail_launcher_jails_dir": f"{root}/jails",
        "jail_launcher_run_dir": f"{root}/run",
        "jail_launcher_jails_tmpfs": False,
        # Whatever the host has, so a run that went too far would not change it.
        "jail_launcher_rcu_expedited": rcu.exists() and rcu.read_text().strip() == "1",
        "jail_base_image_config_path": f"{root}/etc/jailyard.conf",
        "jail_base_image_images_dir": f"{root}/images",
        "jail_base_image_cache_dir": f"{root}/cache",
        "jail_base_image_stage_dir": f"{root}/stage",
        # Nothing listens there: a build that was reached fails at once.
        "jail_base_image_mirror": "http://127.0.0.1:9/debian",
        "jail_base_image_build_host": "{{ inventory_hostname }}",
        "jail_tenants_config_path": f"{root}/etc/jailyard.conf",
        "jail_tenants_list": [],
    }


def playbook(tmp_path: Path, hosts: dict[str, dict[str, object]], play: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run play against two local hosts sharing the group vars of node_paths(tmp_path / 'node')."""
    node = tmp_path / "node"
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"jail_hosts": {"hosts": hosts, "vars": node_paths(node)}}}}))
    run = subprocess.run(
        [tool("ansible-playbook"), "-i", str(inventory), play], capture_output=True, text=True, cwd=REPO, check=False, timeout=600
    )
    return run, node


def written(node: Path) -> list[str]:
    return sorted(str(p.relative_to(node)) for p in node.rglob("*")) if node.exists() else []


def test_site_refuses_hosts_with_different_uid_ranges_before_any_node_changes(tmp_path: Path) -> None:
    run, node = playbook(tmp_path, {"node1": {"jail_launcher_uid_min": 10000}, "node2": {"jail_launcher_uid_min": 20000}}, "site.yml")
    out = run.stdout + run.stderr
    assert run.returncode != 0, out[-3000:]
    assert "jail hosts disagree on jail_launcher_uid_min: node1=10000, node2=20000" in out, out[-3000:]
    assert written(node) == [], f"a node changed before the check refused: {written(node)}"
    assert "PLAY [Provision jail hosts]" not in out, out[-3000:]
    assert "changed:" not in out, out[-3000:]


def test_site_refuses_hosts_that_would_mount_shared_storage_in_different_places(tmp_path: Path) -> None:
    # Shared storage is mounted at jail_cluster_tenants_dir, which follows each host's launcher tenants dir.
    run, node = playbook(
        tmp_path,
        {"node1": {"jail_launcher_tenants_dir": f"{tmp_path}/a"}, "node2": {"jail_launcher_tenants_dir": f"{tmp_path}/b"}},
        "site.yml",
    )
    out = run.stdout + run.stderr
    assert run.returncode != 0, out[-3000:]
    assert f'jail hosts disagree on jail_cluster_tenants_dir: node1="{tmp_path}/a", node2="{tmp_path}/b"' in out, out[-3000:]
    assert written(node) == [] and not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_check_refuses_shared_storage_mounted_where_the_launcher_does_not_look(tmp_path: Path) -> None:
    elsewhere = f"{tmp_path}/elsewhere"
    run, _ = playbook(
        tmp_path,
        {"node1": {"jail_cluster_tenants_dir": elsewhere}, "node2": {"jail_cluster_tenants_dir": elsewhere}},
        "playbooks/check.yml",
    )
    out = run.stdout + run.stderr
    assert run.returncode != 0, out[-3000:]
    assert f"jail_cluster_tenants_dir ({elsewhere}) is not jail_launcher_tenants_dir ({tmp_path}/node/tenants) on node1" in out, out[-3000:]


@pytest.mark.parametrize(
    ("variable", "value"),
    [("jail_launcher_uid_min", 10000), ("jail_launcher_allowed_callers", [0, 33]), ("jail_base_image_suite", "bookworm")],
)
def test_check_accepts_a_host_that_spells_out_the_default(tmp_path: Path, variable: str, value: object) -> None:
    # node1 sets the role's default explicitly, node2 leaves it unset: they agree.
    run, node = playbook(tmp_path, {"node1": {variable: value}, "node2": {}}, "playbooks/check.yml")
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert written(node) == []
