"""Verify a three-node cluster converged by site.yml (docs/cluster.md).

The tests are cluster-wide, so they take no `host` (testinfra runs each once)
and reach the nodes through podman. They run in file order: the last one kills
node c2.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time

import testinfra

ID = os.environ.get("JAILYARD_MOLECULE_ID") or "default"
C1, C2, C3 = (f"jailyard-c{i}-{ID}" for i in (1, 2, 3))
NODES = (C1, C2, C3)
JAILRUN = "timeout -k 5 60 /usr/local/sbin/jailrun"
SCENARIO = os.environ.get("MOLECULE_SCENARIO_DIRECTORY", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONVERGE = os.path.join(SCENARIO, "converge.yml")
UPGRADE = os.path.join(SCENARIO, "..", "..", "playbooks", "upgrade.yml")
TENANTS = os.path.join(SCENARIO, "..", "..", "playbooks", "tenants.yml")
EXPECTED_UID = {"demo": 10001, "demo2": 10002}  # molecule.yml: jail_tenants_list
TTL = 20  # molecule.yml: jail_cluster_lease_ttl


def node(name: str):
    return testinfra.get_host(f"podman://{name}")


def run(name: str, cmd: str):
    return node(name).run(cmd)


def ok(name: str, cmd: str) -> str:
    out = run(name, cmd)
    assert out.rc == 0, f"{name}: {cmd}: exit {out.rc}: {out.stdout}{out.stderr}"
    return out.stdout


# Plain output: molecule's environment asks for colour and YAML results, which wrap long messages.
PLAIN = {"ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_STDOUT_CALLBACK": "default", "ANSIBLE_CALLBACK_RESULT_FORMAT": "json"}


def playbook(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    cmd = ["ansible-playbook", "--inventory", os.environ["MOLECULE_INVENTORY_FILE"], *args]
    env = {**os.environ, **PLAIN}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, env=env)


def recap(stdout: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP counters by host."""
    found = {}
    for line in re.sub(r"\x1b\[[0-9;]*m", "", stdout).splitlines():
        m = re.match(r"^\s*(\S+)\s+:\s+(ok=.*)$", line)
        if m:
            found[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return found


def section(stdout: str, header: str, name: str) -> str:
    """The result lines under the last `header` (a task or handler) that ran on host `name`."""
    found = ""
    for block in re.split(r"\n(?=(?:TASK|RUNNING HANDLER|PLAY) \[)", stdout):
        if block.startswith(header) and f"[{name}]" in block:
            found = block
    return found


def wait_for(what, seconds: float):
    deadline = time.monotonic() + seconds
    while True:
        got = what()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(1)


# A live session's program: it runs until killed (sessions here end by `jailctl unmount --force`
# or with their node), and its command line names it among the node's processes.
SESSION = "sleep infinity"


def session_pids(name: str) -> tuple[str, str]:
    """The jailrun and the program of the one live session on node `name`."""
    sleeper = wait_for(lambda: run(name, f"pgrep -f -x '{SESSION}'").stdout.strip(), 30)
    assert sleeper and "\n" not in sleeper, f"{name}: the session did not start, or more than one runs: {sleeper!r}"
    pid = ok(name, "pgrep -o -x jailrun").strip()
    assert pid and "\n" not in pid, f"{name}: no jailrun: {pid!r}"
    return pid, sleeper


def test_debootstrap_ran_on_the_build_host_only():
    # c1 unpacked debootstrap's tarball from its cache; c2 and c3 never had one:
    # they received the packed image, whose archive they keep in .incoming.
    assert ok(C1, "ls /var/cache/jailyard/debootstrap").strip()
    manifest = json.loads(ok(C1, "cat /var/lib/jailyard/images/current/manifest.json"))
    assert manifest["build_seconds"] > 0
    for name in (C2, C3):
        assert run(name, "test -e /var/cache/jailyard/debootstrap").rc == 1, f"{name} has a debootstrap cache"
        assert ok(name, "ls /var/lib/jailyard/images/.incoming").split() == [f"{manifest['id']}.tar"]


def test_every_node_runs_the_same_image():
    ids = {name: ok(name, "readlink /var/lib/jailyard/images/current").strip() for name in NODES}
    assert len(set(ids.values())) == 1, ids


def test_uids_gids_and_id_ranges_agree():
    conf = {}
    for name in NODES:
        text = ok(name, "cat /etc/jailyard/jailyard.conf")
        conf[name] = re.findall(r"^(uid_min|uid_max|allowed_callers|tenants_dir|jails_dir) = (.*)$", text, re.M)
        assert ok(name, "cat /etc/jailyard/cluster.conf").count(f"node = {name}\n") == 1
    assert conf[C1] == conf[C2] == conf[C3] and len(conf[C1]) == 5, conf
    for tenant in ("demo", "demo2"):
        seen = {name: json.loads(ok(name, f"jailctl --json status {tenant}")) for name in NODES}
        assert {(s["uid"], s["gid"]) for s in seen.values()} == {(EXPECTED_UID[tenant],) * 2}, seen


def test_a_file_a_tenant_writes_through_node_1_is_read_through_node_2():
    ok(C1, f"{JAILRUN} demo -- sh -c 'echo written-through-c1 > /home/demo/note'")
    # c1 holds demo's lease while it has demo mounted: c2 is refused, naming it.
    refused = run(C2, f"{JAILRUN} demo -- cat /home/demo/note")
    assert refused.rc == 124, refused.stdout + refused.stderr
    assert f"tenant 'demo' is active on node {C1} " in refused.stderr
    ok(C1, "jailctl unmount demo")  # releases it
    assert ok(C2, f"{JAILRUN} demo -- cat /home/demo/note") == "written-through-c1\n"
    # The overlay tenant too: its layer is on the shared directory.
    ok(C2, f"{JAILRUN} demo2 -- sh -c 'echo from-c2 > /home/demo2/note'")
    ok(C2, "jailctl unmount demo2 && jailctl unmount demo")
    assert ok(C3, f"{JAILRUN} demo2 -- cat /home/demo2/note") == "from-c2\n"
    ok(C3, "jailctl unmount demo2")


def test_a_disagreeing_inventory_is_refused_before_any_node_changes():
    # c2 alone with another tenant uid range: were anything written before the check,
    # c2's jailyard.conf would change (the launcher role renders it first thing).
    before = {name: ok(name, "md5sum /etc/jailyard/jailyard.conf /etc/jailyard/cluster.conf") for name in NODES}
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as fh:
        fh.write(f"all:\n  hosts:\n    {C2}:\n      jail_launcher_uid_max: 50000\n")
    try:
        out = playbook("--inventory", fh.name, CONVERGE)
    finally:
        os.unlink(fh.name)
    assert out.returncode != 0, out.stdout
    assert "jail hosts disagree on jail_launcher_uid_max" in out.stdout + out.stderr, out.stdout[-3000:] + out.stderr[-2000:]
    counts = recap(out.stdout)
    assert set(counts) >= set(NODES) and all(counts[name]["changed"] == 0 for name in NODES), counts
    assert "Provision jail hosts" not in out.stdout
    assert {name: ok(name, "md5sum /etc/jailyard/jailyard.conf /etc/jailyard/cluster.conf") for name in NODES} == before


def test_a_rolling_upgrade_keeps_a_live_session_with_its_binary():
    # c3 runs an older launcher (the built one with a byte appended: another file, as an
    # older version is) and a session on it; playbooks/upgrade.yml installs the current
    # launcher node by node. The session lives on, on the binary it started from (and on
    # its jail's tree: a mounted jail keeps its image, test_lifecycle.py::
    # test_new_current_image_applies_at_next_mount_only); new launches
    # run the new binary. (The image part of the upgrade runs too, with nothing to change:
    # a new image here would cost a debootstrap and three copies of it in CI.)
    ok(
        C3,
        "cp /usr/local/sbin/jailrun /tmp/jailrun.old && printf '\\0' >> /tmp/jailrun.old && "
        "install -m 4755 /tmp/jailrun.old /usr/local/sbin/jailrun && rm /tmp/jailrun.old",
    )
    # An older Python package too: the upgrade rewrites it, and its handler stops the mount
    # service (the next cold launch starts the new code) while the session below runs.
    ok(C3, "echo '# an older version' >> /usr/local/lib/jailyard/jailyard/__init__.py")
    old_exe = ok(C3, "stat -c %i /usr/local/sbin/jailrun").strip()
    # A session that ends only when it is killed: no sleep that an upgrade on a busy machine could outlast
    # (and no `timeout` around it, which ended it after 60 s in an earlier version of this test).
    ok(C3, f"setsid -f sh -c '/usr/local/sbin/jailrun demo -- {SESSION} >/dev/null 2>&1'")
    pid, sleeper = session_pids(C3)
    assert ok(C3, f"stat -L -c %i /proc/{pid}/exe").strip() == old_exe
    assert ok(C3, "systemctl is-active jailyard-mount.service") == "active\n"
    out = playbook(UPGRADE)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    counts = recap(out.stdout)
    assert all(counts[name]["failed"] == 0 and counts[name]["unreachable"] == 0 for name in NODES), counts
    assert out.stdout.count("PLAY [Upgrade the jail hosts one at a time]") == 3  # serial: 1, one batch per node
    assert counts[C3]["changed"] >= 1  # the launcher
    # c3's batch stopped the mount service that had made the session's jail (a running one: the
    # cold launch started it), and the session lived on.
    stop = section(out.stdout, "RUNNING HANDLER [jail_launcher : Restart the mount service]", C3)
    assert f"changed: [{C3}]" in stop, out.stdout[-4000:]
    alive = run(C3, f"kill -0 {pid} && kill -0 {sleeper}")
    assert alive.rc == 0, "the upgrade ended the live session: " + run(C3, "ps -eo pid,ppid,etimes,stat,args").stdout
    assert ok(C3, f"stat -L -c %i /proc/{pid}/exe").strip() == old_exe
    assert "(deleted)" in ok(C3, f"readlink /proc/{pid}/exe")
    assert ok(C3, "stat -c %i /usr/local/sbin/jailrun").strip() != old_exe
    assert ok(C3, f"{JAILRUN} demo2 -- id -u") == "10002\n"  # the new launcher launches
    ok(C3, "jailctl unmount --force demo && jailctl unmount demo2")


def test_a_node_killed_in_the_middle_of_a_converge_loses_no_tenant_data_and_its_tenant_moves():
    # c2 runs demo (a live session, demo mounted, c2 holds the lease) and writes a file;
    # then c2 dies in the middle of a converge of the tenants (playbooks/tenants.yml: the
    # part of site.yml that writes the tenants' files on the shared storage), when c1 has
    # converged them and c2 is next (the task runs one node at a time, throttle: 1).
    ok(C2, f"{JAILRUN} demo -- sh -c 'echo written-before-the-crash > /home/demo/crash'")
    ok(C2, f"setsid -f sh -c '/usr/local/sbin/jailrun demo -- {SESSION} >/dev/null 2>&1'")
    session_pids(C2)
    cmd = ["ansible-playbook", "--inventory", os.environ["MOLECULE_INVENTORY_FILE"], TENANTS]
    converge = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **PLAIN})
    lines, in_task, killed = [], False, False
    for line in converge.stdout:
        lines.append(line)
        in_task = in_task or "TASK [jail_tenants : Converge the declared tenants]" in line
        if in_task and re.match(rf"^(ok|changed): \[{C1}\]", line):
            subprocess.run(["podman", "kill", C2], check=True, capture_output=True)
            killed = True
            break
    lines += converge.stdout.readlines()
    converge.wait(timeout=900)
    out = "".join(lines)
    assert killed, "c1 never converged its tenants: " + out[-3000:]
    counts = recap(out)
    assert counts[C2]["unreachable"] + counts[C2]["failed"] > 0, out[-3000:]
    assert all(counts[name]["failed"] == 0 and counts[name]["unreachable"] == 0 for name in (C1, C3)), out[-3000:]
    # c3: refused while c2's lease runs (naming c2), then takes demo over; the file is there.
    first = run(C3, f"{JAILRUN} demo -- cat /home/demo/crash")
    if first.rc != 0:
        assert first.rc == 124 and f"is active on node {C2} " in first.stderr, first.stderr
    moved = wait_for(lambda: run(C3, f"{JAILRUN} demo -- cat /home/demo/crash").stdout, TTL + 30)
    assert moved == "written-before-the-crash\n"
    assert ok(C3, f"{JAILRUN} demo -- cat /home/demo/note") == "written-through-c1\n"
    holder = ok(
        C3, "cat /var/lib/jailyard/tenants/demo/lease/g$(ls /var/lib/jailyard/tenants/demo/lease | sed -n 's/^g//p' | sort -n | tail -1)"
    )
    assert holder.startswith(f"node {C3}\n"), holder
    ok(C3, "jailctl unmount demo")
