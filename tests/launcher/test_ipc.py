"""Issue 15, the shared IPC directory: <run_dir>/ipc on the host is /run/ipc in every jail, read-only,
a slave of the host's. A tenant writes to a host FIFO (a host reader gets the line) but cannot remove,
rename or create anything there, even with the host directory world-writable; a FIFO the host makes
after the session started is visible in it. (Before: jailrun mounted it at /run/jailyard/ipc only where
the image had that directory; the busybox image here has none at /run/ipc.)"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


@pytest.fixture
def ipc(node):
    path = Path(node.cfg.run_dir) / "ipc"
    path.mkdir(mode=0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_a_tenant_writes_a_line_into_a_host_fifo(node, ipc: Path) -> None:
    fifo = ipc / "requests"
    os.mkfifo(fifo)
    fifo.chmod(0o622)  # any tenant may write, only root reads
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE, text=True)
    try:
        r = node.run("alice", "--", "/bin/sh", "-c", "echo hello from $(id -un) > /run/ipc/requests")
        assert r.returncode == 0, r.stderr
        out, _err = reader.communicate(timeout=30)
    finally:
        reader.kill()
        reader.wait()
    assert out == "hello from alice\n"


def test_the_tenant_cannot_remove_rename_or_create_anything_there(node, ipc: Path) -> None:
    os.mkfifo(ipc / "requests")
    ipc.chmod(0o777)  # even a world-writable host directory: the mount is read-only
    for cmd in ("rm -f /run/ipc/requests", "mv /run/ipc/requests /run/ipc/x", "mkfifo /run/ipc/evil", "touch /run/ipc/f", "rmdir /run/ipc"):
        r = node.run("alice", "--", "/bin/sh", "-c", cmd)
        assert r.returncode != 0, cmd
    assert sorted(os.listdir(ipc)) == ["requests"]
    mounts = node.run("alice", "--", "/bin/cat", "/proc/self/mountinfo").stdout.splitlines()
    line = next(m for m in mounts if m.split()[4] == "/run/ipc")
    assert "ro" in line.split()[5].split(",") and "nosuid" in line.split()[5] and "noexec" in line.split()[5]


def test_a_fifo_made_after_the_session_started_is_visible(node, ipc: Path) -> None:
    session = subprocess.Popen(
        [
            node.jailrun,
            "alice",
            "--",
            "/bin/sh",
            "-c",
            "echo started; i=0; while [ ! -p /run/ipc/late ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; ls -l /run/ipc/late",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    try:
        assert session.stdout.readline() == "started\n"
        os.mkfifo(ipc / "late")
        out, err = session.communicate(timeout=60)
    finally:
        session.kill()
        session.wait()
    assert session.returncode == 0, err
    assert out.startswith("p")


def test_a_tenant_sees_its_own_private_subdirectory_and_not_anothers(node, ipc: Path) -> None:
    """<run_dir>/ipc-tenants/NAME is /run/ipc-self in NAME's sessions only."""
    private = Path(node.cfg.run_dir) / "ipc-tenants"
    (private / "alice").mkdir(parents=True)
    (private / "bob").mkdir()
    try:
        os.mkfifo(private / "alice" / "for-alice")
        os.mkfifo(private / "bob" / "for-bob")
        a = node.run("alice", "--", "/bin/sh", "-c", "ls /run/ipc-self; ls /run/ipc-tenants 2>&1; rm /run/ipc-self/for-alice || echo kept")
        assert a.returncode == 0, a.stderr
        assert a.stdout.splitlines()[0] == "for-alice" and "kept" in a.stdout
        b = node.run("bob", "--", "/bin/sh", "-c", "ls /run/ipc-self; cat /proc/self/mountinfo")
        assert b.returncode == 0, b.stderr
        assert "for-bob" in b.stdout and "for-alice" not in b.stdout and "/alice" not in b.stdout
        c = node.run("carol", "--", "/bin/sh", "-c", "ls -A /run/ipc-self 2>&1 || true")
        assert "for-" not in c.stdout  # no subdirectory of its own: nothing there
    finally:
        shutil.rmtree(private)


def test_a_mount_the_host_makes_below_a_shared_ipc_directory_reaches_a_running_session(node, ipc: Path) -> None:
    """With the host's directory a shared mount, a tmpfs the host mounts below it after the session
    started appears inside. (That the session's copy is a slave, so nothing goes back, cannot be shown
    from inside: a tenant cannot mount. A peer would pass this test too.)"""
    subprocess.run(["mount", "--bind", str(ipc), str(ipc)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(ipc)], check=True)
        (ipc / "sub").mkdir()
        session = subprocess.Popen(
            [
                node.jailrun,
                "alice",
                "--",
                "/bin/sh",
                "-c",
                "echo started; i=0; while [ ! -e /run/ipc/sub/ready ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; cat /run/ipc/sub/ready",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={"PATH": "/usr/bin:/bin"},
        )
        try:
            assert session.stdout.readline() == "started\n"
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "jailyard-test-ipc", str(ipc / "sub")], check=True)
            (ipc / "sub" / "ready").write_text("mounted later\n")
            out, err = session.communicate(timeout=60)
        finally:
            session.kill()
            session.wait()
            subprocess.run(["umount", str(ipc / "sub")], check=False)
        assert (session.returncode, out) == (0, "mounted later\n"), err
    finally:
        subprocess.run(["umount", "-l", str(ipc)], check=False)


def test_ipc_path_in_the_config_moves_it(node, ipc: Path) -> None:
    """ipc_path = /run/jailyard-ipc (jailyard.conf): the directory is there, and not at /run/ipc."""
    import dataclasses

    other = node.base / "ipc-path-conf"
    other.mkdir(mode=0o755, exist_ok=True)
    conf = other / "jailyard.conf"
    cfg = dataclasses.replace(node.cfg, ipc_path=Path("/run/jailyard-ipc"), path=None)
    conf.write_text(cfg.render())
    conf.chmod(0o644)
    jailrun = node.build_jailrun(other / "build", conf)
    os.mkfifo(ipc / "requests")
    r = subprocess.run(
        [jailrun, "alice", "--", "/bin/sh", "-c", "ls /run/jailyard-ipc; ls /run/ipc 2>&1 || true"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "requests" and "No such file" in r.stdout
