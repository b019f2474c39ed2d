"""Issue 15: the jail_packages role's inbox units and cron entry, and the demo package `make site` installs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "module_utils"))
sys.path.insert(0, str(Path(__file__).parent))

from test_roles import render  # noqa: E402


def test_inbox_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    out = render(
        tmp_path,
        "jail_packages",
        {
            "etc/systemd/system/jailyard-packages-inbox.service.j2": "jailyard-packages-inbox.service",
            "etc/systemd/system/jailyard-packages-inbox.path.j2": "jailyard-packages-inbox.path",
        },
        {"jail_packages_jailctl": str(REPO / "bin" / "jailctl"), "jail_packages_inbox": "/var/lib/jailyard/inbox"},
    )
    units = [str(out / "jailyard-packages-inbox.service"), str(out / "jailyard-packages-inbox.path")]
    run = subprocess.run([analyze, "verify", *units], capture_output=True, text=True, check=False)
    ours = [line for line in (run.stdout + run.stderr).splitlines() if "jailyard-packages" in line]
    assert not ours, "\n".join(ours)
    assert "PathChanged=/var/lib/jailyard/inbox" in (out / "jailyard-packages-inbox.path").read_text()
    assert "inbox /var/lib/jailyard/inbox" in (out / "jailyard-packages-inbox.service").read_text()


def test_inbox_cron_entry_runs_jailctl_inbox_every_minute(tmp_path: Path) -> None:
    out = render(tmp_path, "jail_packages", {"etc/cron.d/jailyard-packages-inbox.j2": "cron"}, {"jail_packages_inbox": "/srv/inbox"})
    jobs = [line for line in (out / "cron").read_text().splitlines() if line and not line.startswith("#") and "=" not in line]
    assert jobs == ["* * * * * root /usr/local/sbin/jailctl --config /etc/jailyard/jailyard.conf inbox /srv/inbox >/dev/null"]


def test_the_demo_package_is_valid_and_its_uid_is_free_in_the_demo_inventory() -> None:
    from jailyard.package import read_package

    pkg = read_package(REPO / "examples/packages/hello")
    assert not pkg.needs_root, "the demo must run where tenant root cannot"
    demo = yaml.safe_load((REPO / "inventory/local/group_vars/jail_hosts.yml").read_text())
    assert pkg.config["uid"] not in {t["uid"] for t in demo["jail_tenants_list"]}
    assert demo["jail_packages_list"] == [{"src": "{{ playbook_dir }}/../examples/packages/hello"}]
