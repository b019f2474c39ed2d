"""The mount service (bin/jailyard_mountd.py; launcher/mountsvc.c): a cold launch asks a running
mount step over <run_dir>/mount.sock and falls back to the step whenever the service cannot help.

Each attack is tried against the real service and shown to mount nothing; each failure of the
service is shown to cost at most that launch, never to let it enter a jail not mounted as planned.
"""

from __future__ import annotations

import array
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from jailtest import wait_until

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "module_utils"))

from jailyard.kernel import is_mount_root  # noqa: E402
from jailyard.lifecycle import converge  # noqa: E402
from jailyard.lock import tenant_lock  # noqa: E402


def sock_path(node) -> Path:
    return node.cfg.run_dir / "mount.sock"


class Service:
    """The real service, started by hand as on a host without systemd; its stderr is its log."""

    def __init__(self, node, *prefix: str) -> None:
        self.log = node.base / f"mountd-{os.getpid()}.log"
        self.fh = open(self.log, "w")
        argv = [*prefix, sys.executable, "-I", "-S", str(REPO / "bin" / "jailyard-mount"), "--serve", "--config", str(node.cfg.path)]
        self.path = sock_path(node)
        self.path.unlink(missing_ok=True)
        self.proc = subprocess.Popen(argv, stdout=self.fh, stderr=subprocess.STDOUT)
        assert wait_until(lambda: "serving on" in self.text() or self.proc.poll() is not None, 30), "the service did not start"
        assert self.proc.poll() is None, self.log.read_text()

    def text(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.fh.close()
        self.path.unlink(missing_ok=True)


@pytest.fixture
def service(node):
    svc = Service(node)
    try:
        yield svc
    finally:
        svc.stop()


def cold(node, name: str = "alice") -> None:
    converge(node.cfg, {"name": name, "state": "unmounted"})
    assert not is_mount_root(str(node.cfg.jails_dir / name))


def ask(node, name: bytes, fd: int | None) -> bytes:
    """One request by hand, as jailrun sends it: the name and (SCM_RIGHTS) a descriptor."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.settimeout(30)
        s.connect(str(sock_path(node)))
        fds = [] if fd is None else [fd]
        s.sendmsg([name], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, bytes(array.array("i", fds)))] if fds else [])
        return s.recv(8)


def test_a_cold_launch_is_mounted_by_the_service_with_the_plans_flags(node, service) -> None:
    cold(node)
    r = node.run("alice", "--", "/bin/true")
    assert r.returncode == 0, r.stderr
    assert "mount alice: / /home /tmp /etc/passwd /etc/group" in service.text()  # the service mounted it, not the step
    opts = subprocess.run(
        ["findmnt", "-rn", "-o", "OPTIONS", str(node.cfg.jails_dir / "alice")], capture_output=True, text=True, check=True
    ).stdout
    assert {"ro", "nosuid", "nodev"} <= set(opts.strip().split(","))


def test_without_a_service_or_after_it_was_killed_the_launch_runs_the_step(node) -> None:
    svc = Service(node)
    svc.proc.kill()
    svc.proc.wait()  # the socket file stays: connects are refused
    try:
        cold(node)
        r = node.run("alice", "--", "/bin/true")
        assert r.returncode == 0, r.stderr
        assert "mount alice" not in svc.text()
    finally:
        svc.stop()


def test_a_service_that_goes_away_without_answering_costs_nothing_the_step_mounts(node) -> None:
    """Reproduction: a service killed mid-request. jailrun sees the connection close and runs the step."""
    srv = fake_service(node, lambda conn: None)
    try:
        cold(node)
        r = node.run("alice", "--", "/bin/true")
        assert r.returncode == 0, r.stderr
    finally:
        srv.close()
        sock_path(node).unlink(missing_ok=True)


def test_a_service_that_says_mounted_but_did_not_cannot_make_a_launch_enter_the_jail(node) -> None:
    srv = fake_service(node, lambda conn: conn.send(b"\x00"))
    try:
        cold(node)
        r = node.run("alice", "--", "/bin/true")
        assert r.returncode == 124, r.stderr
        assert "still not fully mounted" in r.stderr
        assert not is_mount_root(str(node.cfg.jails_dir / "alice"))
    finally:
        srv.close()
        sock_path(node).unlink(missing_ok=True)


def test_a_socket_not_owned_by_root_or_open_to_others_is_never_asked(node) -> None:
    """A service socket with mode 0666 could be anyone's listener: jailrun runs the step instead."""
    asked = []
    srv = fake_service(node, lambda conn: (asked.append(1), conn.send(b"\x00")))
    try:
        os.chmod(sock_path(node), 0o666)
        cold(node)
        r = node.run("alice", "--", "/bin/true")
        assert r.returncode == 0, r.stderr
        assert not asked
    finally:
        srv.close()
        sock_path(node).unlink(missing_ok=True)


def test_a_non_root_caller_is_refused_even_with_the_socket_opened_to_it(node, service) -> None:
    cold(node)
    os.chmod(sock_path(node), 0o666)
    code = (
        "import socket,array,os; s=socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); s.settimeout(30); "
        f"s.connect({str(sock_path(node))!r}); fd=os.open('/dev/null', os.O_RDONLY)\n"
        "try: s.sendmsg([b'alice'], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, bytes(array.array('i', [fd])))])\n"
        "except BrokenPipeError: pass  # refused before it read the request\n"
        "print(s.recv(8))"
    )
    r = subprocess.run([sys.executable, "-c", code], user=65534, capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "b'\\x01'", r.stderr
    assert "peer uid 65534 is not root" in service.text()
    assert not is_mount_root(str(node.cfg.jails_dir / "alice"))


@pytest.mark.parametrize("name", [b"", b"..", b"../alice", b"a/b", b"x" * 40, b"al\x00ice", b"ALICE", b"\xff"])
def test_bad_names_are_refused_and_nothing_is_mounted(node, service, name: bytes) -> None:
    cold(node)
    with open(node.cfg.run_dir / "locks" / "alice.lock", "a+") as lock:
        assert ask(node, name, lock.fileno()) == b"\x01"
    assert not is_mount_root(str(node.cfg.jails_dir / "alice"))


def test_a_lock_of_another_tenant_or_no_lock_is_refused(node, service) -> None:
    cold(node)
    with tenant_lock(node.cfg, "bob"):
        pass  # bob's lock file exists
    with open(node.cfg.run_dir / "locks" / "bob.lock") as other:
        assert ask(node, b"alice", other.fileno()) == b"\x01"
    assert ask(node, b"alice", None) == b"\x01"
    assert "is not" in service.text() and "one descriptor" in service.text()
    assert not is_mount_root(str(node.cfg.jails_dir / "alice"))


def test_a_lock_someone_else_holds_is_refused_one_nobody_holds_is_taken_first(node, service) -> None:
    cold(node)
    path = node.cfg.run_dir / "locks" / "alice.lock"
    with tenant_lock(node.cfg, "alice"):  # held by "someone else" (this process, another open file)
        with open(path) as fh:
            assert ask(node, b"alice", fh.fileno()) == b"\x01"
        assert not is_mount_root(str(node.cfg.jails_dir / "alice"))
    with open(path) as fh:  # nobody holds it: the service locks it, then mounts
        assert ask(node, b"alice", fh.fileno()) == b"\x00"
    assert is_mount_root(str(node.cfg.jails_dir / "alice"))


def test_a_service_in_another_mount_namespace_refuses_and_the_step_mounts_for_the_launch(node) -> None:
    """Its mounts would not be the launcher's: it checks the peer's mount namespace against its own."""
    svc = Service(node, "unshare", "--mount", "--propagation", "private")
    try:
        cold(node)
        r = node.run("alice", "--", "/bin/true")
        assert r.returncode == 0, r.stderr
        assert "another mount namespace" in svc.text()
        assert is_mount_root(str(node.cfg.jails_dir / "alice"))
    finally:
        svc.stop()


def fake_service(node, respond) -> socket.socket:
    """A root-owned 0600 listener at the service's path that answers each request with respond(conn)."""
    path = sock_path(node)
    path.unlink(missing_ok=True)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    old = os.umask(0o177)
    try:
        srv.bind(str(path))
    finally:
        os.umask(old)
    srv.listen(8)

    def loop() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                _msg, ancdata, _flags, _addr = conn.recvmsg(64, socket.CMSG_SPACE(8))
                for _level, _kind, data in ancdata:  # the lock: kept open, it would stay held
                    for fd in array.array("i", data[: len(data) - len(data) % 4]):
                        os.close(fd)
                respond(conn)

    threading.Thread(target=loop, daemon=True).start()
    return srv
