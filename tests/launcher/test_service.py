"""A tenant's program as a service (issue 19): the supervisor loop of jailyard.service over real jailrun sessions.

The loop runs in a child process of the test (as under systemd or detached,
where there is none), with short back-off delays; it is stopped (and, if that
fails, killed) at the end of every test.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from jailtest import wait_until
from jailyard.control import kill_sessions, list_sessions
from jailyard.service import UNIT, service_running, status, stop

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def service(node):
    procs = []

    def start(name: str, *argv: str, base: float = 0.2, max_delay: float = 5.0) -> subprocess.Popen:
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]); from jailyard.config import load_config; "
            "from jailyard.service import run_loop; "
            "sys.exit(run_loop(load_config(sys.argv[2]), sys.argv[3], sys.argv[7:], jailrun=sys.argv[4], "
            "base=float(sys.argv[5]), max_delay=float(sys.argv[6]), reset_after=30))"
        )
        args = [str(REPO / "module_utils"), str(node.cfg.path), name, node.jailrun, str(base), str(max_delay), *argv]
        p = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append((name, p))
        return p

    try:
        yield start
    finally:
        for name, p in procs:
            stop(node.cfg, name, timeout=10)
            if p.poll() is None:
                p.kill()
            p.wait(timeout=30)


def test_a_service_restarts_after_its_program_is_killed_and_stops_cleanly(node, service) -> None:
    loop = service("alice", "/bin/sleep", "120")
    assert wait_until(lambda: (status(node.cfg, "alice") or {}).get("state") == "running" and list_sessions(node.cfg, "alice"))
    first = list_sessions(node.cfg, "alice")[0].pid
    kill_sessions(node.cfg, "alice")  # the program is killed (SIGKILL, every process)
    assert wait_until(lambda: [s.pid for s in list_sessions(node.cfg, "alice")] not in ([], [first])), "not restarted"
    # The loop writes its state right after starting jailrun; the new session may show first.
    assert wait_until(lambda: (status(node.cfg, "alice") or {}).get("starts") == 2)
    st = status(node.cfg, "alice")
    assert st["failures"] == 1 and st["last_exit"] == 137 and st["state"] == "running", st
    assert service_running(node.cfg, "alice")
    # Stopped (before an unmount): the loop ends, and its session with it.
    assert stop(node.cfg, "alice", timeout=20)
    assert loop.wait(timeout=30) == 0
    assert list_sessions(node.cfg, "alice") == [] and not service_running(node.cfg, "alice")
    assert not (node.cfg.run_dir / "services" / "alice").exists()


def test_a_program_that_exits_at_once_backs_off_with_a_visible_failure_count(node, service) -> None:
    """No restart storm: the delays double (0.2, 0.4, 0.8, ... s), so in T seconds there are at most
    about log2(T / 0.2) + 1 starts, however fast the program fails; a slow host only makes fewer."""
    t0 = time.monotonic()
    loop = service("bob", "/bin/false")
    assert wait_until(lambda: (status(node.cfg, "bob") or {}).get("failures", 0) >= 3)
    st = status(node.cfg, "bob")
    elapsed = time.monotonic() - t0  # after the read: every start counted happened before this
    assert st["state"] in ("backoff", "running") and st["last_exit"] == 1
    bound = 2 + max(0.0, __import__("math").log2(elapsed / 0.2)) + 1
    assert st["starts"] <= bound, (st, elapsed)
    assert stop(node.cfg, "bob", timeout=20)
    assert loop.wait(timeout=30) == 0
    out = loop.stdout.read()
    assert "bob: exit 1, failure 1, restart in 0.2 s" in out and "failure 2, restart in 0.4 s" in out


def test_a_program_that_exits_0_is_not_restarted(node, service) -> None:
    loop = service("carol", "/bin/true")
    assert loop.wait(timeout=60) == 0
    assert "exited 0; not restarting it" in loop.stdout.read()
    assert not service_running(node.cfg, "carol")


def test_bad_service_input_is_refused(node, service) -> None:
    loop = service("dave", "sleep", "1")
    assert loop.wait(timeout=60) != 0
    assert "must be an absolute path inside the jail" in loop.stdout.read()
    first = service("dave", "/bin/sleep", "120")
    assert wait_until(lambda: service_running(node.cfg, "dave"))
    second = service("dave", "/bin/sleep", "120")
    assert second.wait(timeout=60) != 0
    assert "the service of jail dave already runs" in second.stdout.read()
    assert first.poll() is None


def test_the_unit_templates_execstart_runs_the_loop_for_the_instance(node) -> None:
    """jailyard@NAME.service: its ExecStart (continuation joined, %i = the instance) is the loop's entry."""
    import shlex

    text = UNIT.format(lib_dir=REPO / "module_utils", config=node.cfg.path).replace("\\\n", "")
    (line,) = [x for x in text.splitlines() if x.startswith("ExecStart=")]
    argv = shlex.split(line.removeprefix("ExecStart=").replace("%i", "erin"))
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip() == "jailyard-service: error: jail erin has no program to run as a service"


def test_start_detaches_the_loop_where_there_is_no_systemd_and_stop_ends_it(node, tmp_path: Path) -> None:
    from jailyard.lifecycle import converge
    from jailyard.service import start

    converge(node.cfg, {"name": "quinn", "uid": 47122, "state": "present", "program": "/bin/sleep 120"})
    try:
        assert start(node.cfg, "quinn", log_dir=str(tmp_path), jailrun=node.jailrun, systemd=False)
        assert not start(node.cfg, "quinn", log_dir=str(tmp_path), jailrun=node.jailrun, systemd=False)  # runs already
        assert wait_until(lambda: list_sessions(node.cfg, "quinn"))
        assert list_sessions(node.cfg, "quinn")[0].program == "/bin/sleep"
        assert (tmp_path / "service-quinn.log").exists()
    finally:
        stop(node.cfg, "quinn", timeout=20)
        assert wait_until(lambda: not list_sessions(node.cfg, "quinn"))
        converge(node.cfg, {"name": "quinn", "state": "absent", "force": True, "purge": True})
    assert not service_running(node.cfg, "quinn")


def test_expiry_leaves_a_jail_with_a_running_service_mounted(node, service) -> None:
    """issue 19: between two runs (back-off) a service has no session; expiry must still keep its jail."""
    from jailyard.expiry import expire_pass
    from jailyard.lifecycle import converge
    from jailyard.mountinfo import read_mountinfo

    def mounted() -> bool:
        root = str(node.cfg.jail_root("sven"))
        return any(m.target == root for m in read_mountinfo())

    converge(node.cfg, {"name": "sven", "uid": 47124, "state": "mounted"})
    try:
        service("sven", "/bin/false", base=3600)  # fails once, then waits an hour
        assert wait_until(lambda: (status(node.cfg, "sven") or {}).get("state") == "backoff")
        assert not list_sessions(node.cfg, "sven")
        expire_pass(node.cfg, log=False)  # the first pass only records its start
        expire_pass(node.cfg, log=False)
        assert mounted()
        stop(node.cfg, "sven", timeout=20)
        # Control: without the service the jail goes once it has idled a full interval (two passes).
        expire_pass(node.cfg, log=False)
        expire_pass(node.cfg, log=False)
        assert not mounted()
    finally:
        stop(node.cfg, "sven", timeout=20)
        converge(node.cfg, {"name": "sven", "state": "absent", "force": True, "purge": True})
