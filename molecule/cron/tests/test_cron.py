"""Verify the cron path of jail_expiry on a node whose PID 1 is not systemd and whose image had no cron.

Reproduces issue 12, "Expiry never runs on a cron host without a cron daemon":
on such a host site.yml installed /etc/cron.d/jailyard-expiry and reported
success, yet no pass ever ran, because nothing installed or started cron.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

# Every minute here (group_vars/all.yml); a pass is due within one interval.
INTERVAL = 60
# Bounds, not margins: the waits end as soon as the evidence is there.
PASS_WAIT = 2 * INTERVAL + 10
STAMP = "/run/jailyard/expiry.stamp"
LASTUSE = "/run/jailyard/lastuse/demo"


def mtime_ns(host, path: str) -> int | None:
    run = host.run(f"/usr/bin/python3 -c 'import os; print(os.stat(\"{path}\").st_mtime_ns)'")
    return int(run.stdout) if run.rc == 0 else None


def mounted(host, name: str) -> bool:
    run = host.run(f"jailctl --json status {name}")
    assert run.rc == 0, run.stdout + run.stderr
    return json.loads(run.stdout)["mounted"]


def wait_for(what: str, condition, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {seconds:.0f} s"
        time.sleep(2)


def test_pid_1_is_not_systemd(host):
    # The premise: no systemd timer can run expiry here.
    assert host.file("/proc/1/comm").content_string.strip() != "systemd"
    assert not host.file("/etc/systemd/system/jailyard-expiry.timer").exists


def test_cron_is_installed_running_and_enabled_at_boot(host):
    assert host.package("cron").is_installed
    assert host.run("pgrep --exact --pidfile /run/crond.pid cron").rc == 0, "no cron daemon runs"
    # Enabled at boot for an init system that reads /etc/rc?.d (update-rc.d).
    assert host.run("ls /etc/rc2.d/S*cron").rc == 0


def test_cron_entry_runs_jailctl_expire_every_minute(host):
    entry = host.file("/etc/cron.d/jailyard-expiry")
    assert entry.user == "root" and entry.mode == 0o644
    assert "* * * * * root /usr/local/sbin/jailctl --config /etc/jailyard/jailyard.conf expire" in entry.content_string


def test_a_cron_pass_runs_within_one_interval_and_unmounts_an_idle_jail(host):
    # A launch mounts the (unmounted) demo jail and records its last use when it ends.
    run = host.run("timeout -k 5 60 /usr/local/sbin/jailrun demo -- true")
    assert run.rc == 0, f"exit {run.rc}: {run.stderr}"
    assert mounted(host, "demo")
    used = mtime_ns(host, LASTUSE)
    assert used is not None, f"the launch left no {LASTUSE}"

    # Evidence of a pass: the stamp a pass writes, with its start time, after the launch.
    wait_for("a cron expiry pass after the launch", lambda: (mtime_ns(host, STAMP) or 0) > used, PASS_WAIT)
    # The pass after that one finds the jail idle for a whole interval and unmounts it.
    wait_for("the idle demo jail unmounted by the next pass", lambda: not mounted(host, "demo"), PASS_WAIT)
    assert host.file("/var/lib/jailyard/tenants/demo/home").is_directory, "expiry deleted nothing"


def test_a_host_that_cannot_start_cron_fails_with_one_message(host, tmp_path):
    # Last in this file: it takes cron's init script away, then puts it back.
    # Nothing on the node can start cron then; the role must stop, naming the
    # host and why, instead of installing an entry that never fires.
    playbook = tmp_path / "expiry.yml"
    playbook.write_text("- name: Expiry only\n  hosts: jail_hosts\n  roles:\n    - role: jail_expiry\n")
    broken = host.run("pkill --exact cron; mv /etc/init.d/cron /etc/init.d/cron.away")
    assert broken.rc == 0, broken.stderr
    try:
        run = subprocess.run(
            [str(Path(sys.executable).parent / "ansible-playbook"), "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(playbook)],
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
    finally:
        host.run("mv /etc/init.d/cron.away /etc/init.d/cron && service cron start")
    out = run.stdout + run.stderr
    assert run.returncode != 0, out[-3000:]
    assert "cron could not be started on" in out and "idle jails are never unmounted" in out, out[-3000:]
