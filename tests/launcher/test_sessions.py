"""Sessions an operator can see and stop (issue 19): jailyard.control against real jailrun sessions.

`list_sessions` (jailctl sessions, jail_info) and `kill_sessions` (jailctl kill,
`state: unmounted` with `force`) on the launcher tests' node: real launches,
real PID namespaces and cgroups. Every launched jailrun is killed at the end
of its test, whatever happens.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from jailtest import wait_until
from jailyard.control import kill_sessions, list_sessions, parse_signal  # module_utils: on the path by conftest
from jailyard.errors import JailError


def cgroup_pids(node, tenant: str) -> set[int]:
    """The pids in the tenant's cgroups of this test session (every controller, session cgroups included).

    Not "every process of the tenant's uid": a concurrent test session on this host uses the same uids."""
    files = Path("/sys/fs/cgroup").glob(f"**/{node.cfg.cgroup_name}/{tenant}/**/cgroup.procs")
    return {int(pid) for f in files for pid in f.read_text().split()}


def starttime(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return stat[stat.rindex(")") + 2 :].split()[19]


class Launches:
    def __init__(self, node) -> None:
        self.node = node
        self.procs: list[subprocess.Popen] = []

    def start(self, *argv: str) -> subprocess.Popen:
        p = subprocess.Popen(
            [self.node.jailrun, *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={"PATH": "/usr/bin:/bin"},
        )
        self.procs.append(p)
        return p

    def session(self, tenant: str, p: subprocess.Popen):
        """Wait until the launch is a live session with its program running; return it."""

        def ready():
            return [s for s in list_sessions(self.node.cfg, tenant) if s.pid == p.pid and s.processes >= 2]

        assert wait_until(lambda: ready() or p.poll() is not None), f"no live session {p.pid} of {tenant}"
        assert p.poll() is None, p.stderr.read().decode() if p.stderr else p.returncode
        return ready()[0]

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=30)


@pytest.fixture
def launches(node):
    ls = Launches(node)
    try:
        yield ls
    finally:
        ls.cleanup()


def test_sessions_show_pid_caller_program_start_cpu_memory_and_terminal(node, launches) -> None:
    before = time.time()
    busy = "i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done; exec sleep 120"
    p = launches.start("alice", "--", "/bin/sh", "-c", busy)
    s = launches.session("alice", p)
    assert (s.tenant, s.caller, s.caller_name, s.program, s.terminal) == ("alice", 0, "root", "/bin/sh", False)
    # btime + starttime ticks, as ps computes it: the wall clock may have been slewed since boot.
    assert before - 30 <= s.started <= time.time() + 30
    assert s.init is not None and s.memory_bytes > 0
    assert wait_until(lambda: next(x for x in list_sessions(node.cfg, "alice") if x.pid == p.pid).cpu_seconds > 0)
    d = s.as_dict()
    assert d["started"].endswith("Z") and d["pid"] == p.pid
    # Every tenant's sessions when no name is given; only that tenant's otherwise.
    q = launches.start("bob", "--", "/bin/sleep", "120")
    launches.session("bob", q)
    everyone = {(x.tenant, x.pid) for x in list_sessions(node.cfg)}
    assert {("alice", p.pid), ("bob", q.pid)} <= everyone
    assert all(x.tenant == "bob" for x in list_sessions(node.cfg, "bob"))


def test_a_session_under_pty_says_terminal(node, launches) -> None:
    import pty

    master, slave = pty.openpty()
    try:
        p = subprocess.Popen([node.jailrun, "--pty", "alice", "--", "/bin/sleep", "120"], stdin=slave, stdout=slave, stderr=slave)
        launches.procs.append(p)
        assert launches.session("alice", p).terminal is True
    finally:
        os.close(master)
        os.close(slave)


def test_kill_ends_a_fork_loops_every_process(node, launches) -> None:
    """issue 19: `jailctl kill` must end a session whose processes keep forking; none may escape."""
    p = launches.start("--procs", "40", "alice", "--", "/bin/attack", "forkloop")
    launches.session("alice", p)
    assert wait_until(lambda: len(cgroup_pids(node, "alice")) >= 20), "the fork loop never got going"
    seen = {(pid, starttime(pid)) for pid in cgroup_pids(node, "alice")}
    result = kill_sessions(node.cfg, "alice")
    assert p.pid in result["killed"] and result["changed"] and result["signal"] == "SIGKILL"
    assert p.wait(timeout=30) == 128 + signal.SIGKILL
    assert cgroup_pids(node, "alice") == set()  # what forked after `seen` was taken is in the cgroup too
    assert not [pid for pid, start in seen if start is not None and starttime(pid) == start]
    assert list_sessions(node.cfg, "alice") == []


def test_kill_one_session_leaves_the_others(node, launches) -> None:
    one = launches.start("alice", "--", "/bin/sleep", "120")
    two = launches.start("alice", "--", "/bin/sleep", "120")
    launches.session("alice", one)
    launches.session("alice", two)
    assert kill_sessions(node.cfg, "alice", session=one.pid)["killed"] == [one.pid]
    assert one.wait(timeout=30) == 137
    assert two.poll() is None and [s.pid for s in list_sessions(node.cfg, "alice")] == [two.pid]


def test_killing_another_tenants_session_by_pid_is_refused(node, launches) -> None:
    bobs = launches.start("bob", "--", "/bin/sleep", "120")
    launches.session("bob", bobs)
    with pytest.raises(JailError, match=rf"{bobs.pid} is not a live session of jail alice"):
        kill_sessions(node.cfg, "alice", session=bobs.pid)
    with pytest.raises(JailError, match=rf"{os.getpid()} is not a live session of jail alice"):
        kill_sessions(node.cfg, "alice", session=os.getpid())  # not a session at all
    assert bobs.poll() is None and [s.pid for s in list_sessions(node.cfg, "bob")] == [bobs.pid]


def test_another_signal_reaches_every_process_of_the_session(node, launches) -> None:
    p = launches.start("alice", "--", "/bin/sh", "-c", "sleep 120 & sleep 120 & wait")
    assert wait_until(lambda: len(cgroup_pids(node, "alice")) >= 4)  # PID 1, sh, two sleeps
    assert kill_sessions(node.cfg, "alice", session=p.pid, sig="TERM")["signal"] == "SIGTERM"
    assert p.wait(timeout=30) == 128 + signal.SIGTERM


def test_kill_with_no_session_changes_nothing(node) -> None:
    assert kill_sessions(node.cfg, "carol") == {"killed": [], "signal": "SIGKILL", "changed": False}


@pytest.mark.parametrize(("value", "expected"), [("KILL", 9), ("sigterm", 15), ("9", 9), (1, 1), ("HUP", 1)])
def test_signal_names_and_numbers(value, expected) -> None:
    assert parse_signal(value) == expected


@pytest.mark.parametrize("value", ["NOPE", "0", "999", "-9", ""])
def test_a_bad_signal_is_refused_naming_it(value) -> None:
    with pytest.raises(JailError, match=f"unknown signal {value!r}"):
        parse_signal(value)


def test_a_bad_name_is_refused(node) -> None:
    with pytest.raises(JailError, match=re.escape("invalid jail name '../x'")):
        kill_sessions(node.cfg, "../x")
    with pytest.raises(JailError, match="invalid jail name"):
        list_sessions(node.cfg, "A B")
