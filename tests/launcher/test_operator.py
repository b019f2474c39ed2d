"""The operator's commands of issue 19 over real sessions: `jailctl sessions|kill|shell`, `jail_info`'s
session_info, and `state: unmounted` with `force` ending the sessions first."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

from jailtest import ansible_env, wait_until
from jailyard.lifecycle import converge

REPO = Path(__file__).resolve().parents[2]


def jailctl(node, *args: str, **kw) -> subprocess.CompletedProcess:
    env = {"PATH": f"{Path(node.jailrun).parent}:/usr/bin:/bin"}  # `jailctl shell` finds this jailrun
    return subprocess.run(
        ["/usr/bin/python3", str(REPO / "bin" / "jailctl"), "--config", str(node.cfg.path), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        **kw,
    )


@pytest.fixture
def sleeper(node):
    """A live session of carol (`sleep 120`), killed at the end whatever happens."""
    p = subprocess.Popen([node.jailrun, "carol", "--", "/bin/sleep", "120"], stdin=subprocess.DEVNULL)
    try:
        record = node.cfg.run_dir / "sessions" / "carol" / str(p.pid)
        assert wait_until(lambda: record.exists() and record.read_text().endswith("\n")), "no session record"
        yield p
    finally:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=30)


def test_jailctl_sessions_table_and_json(node, sleeper) -> None:
    out = jailctl(node, "sessions", "carol")
    assert out.returncode == 0, out.stderr
    header, *lines = out.stdout.splitlines()
    assert header.split() == ["TENANT", "PID", "CALLER", "PROGRAM", "STARTED", "CPU", "MEMORY", "PROCS", "TTY"]
    row = next(line.split() for line in lines if line.split()[1] == str(sleeper.pid))
    assert row[0] == "carol" and row[2] == "root" and row[3] == "/bin/sleep" and row[-1] == "no"
    listed = json.loads(jailctl(node, "--json", "sessions").stdout)
    mine = next(s for s in listed if s["pid"] == sleeper.pid)
    assert mine["tenant"] == "carol" and mine["terminal"] is False and mine["processes"] == 2


def test_jailctl_kill_one_session_and_refuse_a_stranger(node, sleeper) -> None:
    out = jailctl(node, "kill", "alice", "--session", str(sleeper.pid))
    assert out.returncode == 1
    assert out.stderr.strip().startswith(f"jailctl: error: {sleeper.pid} is not a live session of jail alice")
    assert sleeper.poll() is None
    out = jailctl(node, "kill", "carol", "--signal", "NOPE")
    assert out.returncode == 1 and "unknown signal 'NOPE'" in out.stderr
    out = jailctl(node, "kill", "carol", "--session", str(sleeper.pid))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"ended 1 session(s) of carol: {sleeper.pid}"
    assert sleeper.wait(timeout=30) == 137
    assert jailctl(node, "kill", "carol").stdout.strip() == "jail carol has no live session"


def test_unmount_with_force_ends_the_sessions_first_and_says_so(node, sleeper) -> None:
    """issue 19: force used to unmount under live sessions and leave them running on their copy."""
    with pytest.raises(Exception, match="live session"):
        converge(node.cfg, {"name": "carol", "state": "unmounted"})
    assert sleeper.poll() is None
    result = converge(node.cfg, {"name": "carol", "state": "unmounted", "force": True})
    assert f"end 1 session(s) of carol: {sleeper.pid}" in result.actions
    assert sleeper.wait(timeout=30) == 137
    # The next launch mounts it again on demand.
    r = node.run("carol", "--", "/bin/true")
    assert r.returncode == 0, r.stderr


def test_jailctl_shell_is_a_terminal_of_the_jails_own(node) -> None:
    master, slave = pty.openpty()
    env = {"PATH": f"{Path(node.jailrun).parent}:/usr/bin:/bin"}
    p = subprocess.Popen(
        ["/usr/bin/python3", str(REPO / "bin" / "jailctl"), "--config", str(node.cfg.path), "shell", "alice"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
    )
    out = b""
    try:
        os.write(master, b"tty; echo A$((1+1))B; exit 5\r")
        deadline = time.monotonic() + 30
        while p.poll() is None and time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    out += os.read(master, 65536)
                except OSError:
                    break
        assert p.wait(timeout=5) == 5, out
        assert b"/dev/pts/0\r\nA2B" in out
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait()
        os.close(master)
        os.close(slave)


def test_jailctl_shell_without_a_terminal_is_one_error(node) -> None:
    out = jailctl(node, "shell", "alice", stdin=subprocess.DEVNULL)
    assert out.returncode == 120
    assert "--pty needs a terminal on descriptor 0" in out.stderr and out.stderr.count("\n") == 1


def test_jail_info_lists_the_sessions(node, sleeper) -> None:
    import sys

    env = ansible_env()
    ansible = str(Path(sys.executable).parent / "ansible")
    args = f"name=carol config={node.cfg.path}"
    out = subprocess.run(
        [ansible, "localhost", "-i", "localhost,", "-c", "local", "-m", "jail_info", "-a", args, "-o"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    facts = json.loads(out.stdout[out.stdout.index("{") :])
    (carol,) = facts["jails"]
    assert sleeper.pid in carol["sessions"]
    info = next(s for s in carol["session_info"] if s["pid"] == sleeper.pid)
    assert info["program"] == "/bin/sleep" and info["caller"] == 0 and info["terminal"] is False


def test_unmount_stops_the_tenants_service_first(node, tmp_path: Path) -> None:
    """issue 19: a service is stopped before its jail is unmounted; its own session does not block that."""
    from jailyard.control import list_sessions
    from jailyard.service import service_running, start, stop

    converge(node.cfg, {"name": "rosa", "uid": 47123, "state": "mounted", "program": "/bin/sleep 120"})
    try:
        assert start(node.cfg, "rosa", log_dir=str(tmp_path), jailrun=node.jailrun, systemd=False)
        assert wait_until(lambda: list_sessions(node.cfg, "rosa"))
        result = converge(node.cfg, {"name": "rosa", "state": "unmounted"})
        assert "stop the service of rosa" in result.actions
        assert not service_running(node.cfg, "rosa") and not list_sessions(node.cfg, "rosa")
        assert not (node.cfg.jails_dir / "rosa" / "bin").exists()  # unmounted: the empty mount point
    finally:
        stop(node.cfg, "rosa", timeout=20)
        converge(node.cfg, {"name": "rosa", "state": "absent", "force": True, "purge": True})
