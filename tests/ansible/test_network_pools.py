"""issue 17: two routed jail hosts never hand out one tenant address (roles/jail_cluster/tasks/network_pools.yml).

Controller-side only: two names for this machine run the check's tasks alone, nothing else of the roles.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_roles import REPO, tool


def run_check(tmp_path: Path, hosts: dict[str, dict[str, object]]) -> subprocess.CompletedProcess[str]:
    for h in hosts.values():
        h.update({"ansible_connection": "local", "ansible_python_interpreter": sys.executable})
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"jail_hosts": {"hosts": hosts}}}}))
    play = tmp_path / "play.yml"
    tasks = REPO / "roles" / "jail_cluster" / "tasks" / "network_pools.yml"
    play.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Check the pools",
                    "hosts": "jail_hosts",
                    "gather_facts": False,
                    "tasks": [
                        {"name": "Use the role defaults", "ansible.builtin.set_fact": {"jail_cluster_role_defaults": {}}},
                        {"name": "Check", "ansible.builtin.import_tasks": str(tasks)},
                    ],
                }
            ]
        )
    )
    return subprocess.run(
        [tool("ansible-playbook"), "-i", str(inventory), str(play)], capture_output=True, text=True, cwd=REPO, timeout=300, check=False
    )


@pytest.mark.parametrize(
    ("a", "b", "refused"),
    [
        ({"jail_launcher_net_pool4": "10.1.0.0/16", "jail_launcher_net_egress": "route"}, {"jail_launcher_net_pool4": "10.1.7.0/24"}, True),
        (
            {"jail_launcher_net_pool4": "10.1.0.0/24", "jail_launcher_net_egress": "route"},
            {"jail_launcher_net_pool4": "10.1.1.0/24"},
            False,
        ),
        ({}, {}, False),  # behind NAT (the default) equal pools never leave their hosts
    ],
)
def test_overlapping_routed_pools_are_refused(tmp_path: Path, a: dict, b: dict, refused: bool) -> None:
    run = run_check(tmp_path, {"node1": dict(a), "node2": dict(b)})
    if refused:
        assert run.returncode != 0
        assert "would hand out the same tenant addresses" in run.stdout and "node1=10.1.0.0/16 and node2=10.1.7.0/24" in run.stdout
    else:
        assert run.returncode == 0, run.stdout[-2000:]
