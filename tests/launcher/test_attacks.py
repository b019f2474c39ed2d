"""A hostile tenant (and a careless or foreign caller) against jailrun: every attack is really tried and must fail.

`attack` (attack.c, static, in the image's /bin) exits 0 when an attack worked
and 1 when it was stopped. Where it is cheap, a control shows the same attack
working without the jail, so a passing test means the defence held, not that
the attack was broken.
"""

from __future__ import annotations

import os
import pty
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from jailtest import wait_until

STOPPED = 1


def session_pids(node, name: str) -> set[str]:
    """The pids in the tenant's cgroups of this test session (every controller, session cgroups included)."""
    files = Path("/sys/fs/cgroup").glob(f"*/{node.cfg.cgroup_name}/{name}/**/cgroup.procs")
    return {pid for f in files for pid in f.read_text().split()}


def attack(node, *argv: str, tenant: str = "alice", opts: tuple[str, ...] = (), **kw):
    return node.run(*opts, tenant, "--", "/bin/attack", *argv, **kw)


def assert_stopped(r) -> None:
    assert r.returncode == STOPPED, (r.returncode, r.stdout, r.stderr)
    assert r.stdout.startswith("STOPPED"), r.stdout


# ---- host files ----------------------------------------------------------------------


def test_host_file_by_path_is_unreachable(node) -> None:
    secret = node.base / "secret"
    secret.write_text("host secret\n")
    secret.chmod(0o644)
    assert_stopped(attack(node, "read", str(secret)))
    r = node.run("alice", "--", "/bin/cat", "/etc/passwd")
    assert r.returncode == 0 and "alice:x:47101" in r.stdout and "www-data" not in r.stdout


def test_host_file_through_proc_1_root_is_unreachable(node) -> None:
    secret = node.base / "secret2"
    secret.write_text("host secret\n")
    secret.chmod(0o644)
    for path in (f"/proc/1/root{secret}", f"/proc/1/root/../../..{secret}", f"/proc/self/root{secret}"):
        assert_stopped(attack(node, "read", path))
    # PID 1 in the jail is the launcher's reaper, rooted in the jail too.
    r = node.run("alice", "--", "/bin/ls", "/proc/1/root/")
    assert "jailyard.conf" not in r.stdout


def test_descriptor_left_open_by_the_caller_is_closed(node) -> None:
    secret = node.base / "secret3"
    secret.write_text("host secret\n")
    dfd = os.open(node.base, os.O_RDONLY | os.O_DIRECTORY)
    ffd = os.open(secret, os.O_RDONLY)
    try:
        os.set_inheritable(dfd, True)
        os.set_inheritable(ffd, True)
        # Control: without the jail the inherited descriptor reaches the host file.
        ctl = subprocess.run([node.attack, "readfd", str(dfd), "secret3"], pass_fds=(dfd, ffd), capture_output=True, text=True)
        assert ctl.returncode == 0, ctl.stdout
        assert_stopped(attack(node, "readfd", str(dfd), "secret3", pass_fds=(dfd, ffd)))
        assert_stopped(attack(node, "readfd", str(ffd), pass_fds=(dfd, ffd)))
        # Standard input that is a host directory would be a way out: refused outright.
        r = node.run("alice", "--", "/bin/attack", "readfd", "0", "secret3", stdin=dfd)
        assert r.returncode == 120 and "directory" in r.stderr
    finally:
        os.close(dfd)
        os.close(ffd)


def test_the_audit_log_is_not_open_inside_the_jail(node) -> None:
    """jailrun holds its audit log open for the session's last line: no process of the session may reach it."""
    r = node.run("alice", "--", "/bin/sh", "-c", "for f in /proc/$$/fd/* /proc/self/fd/*; do readlink $f; done; echo end")
    assert r.returncode == 0 and r.stdout.endswith("end\n"), r.stderr
    assert "launch.log" not in r.stdout and str(node.base) not in r.stdout, r.stdout


def test_base_image_is_read_only(node) -> None:
    rootfs = node.cfg.images_dir / "0123456789abcdef" / "rootfs"
    for path in ("/bin/pwned", "/etc/pwned", "/bin/busybox"):
        assert_stopped(attack(node, "write", path))
    assert not (rootfs / "bin/pwned").exists()
    r = node.run("alice", "--", "/bin/sh", "-c", "mount -o remount,rw / && touch /bin/pwned")
    assert r.returncode != 0 and not (rootfs / "bin/pwned").exists()


# ---- privileges ----------------------------------------------------------------------


def test_setuid_root_binary_planted_in_home_gives_nothing(node) -> None:
    planted = node.home("alice") / "suid"
    shutil.copy2(node.attack, planted)
    os.chown(planted, 0, 0)
    planted.chmod(0o4755)
    try:
        # Control: on the host the planted file does make its runner root.
        ctl = subprocess.run([str(planted), "euid"], user=47101, capture_output=True, text=True)
        assert ctl.returncode == 0 and "euid 0" in ctl.stdout
        r = node.run("alice", "--", "/home/alice/suid", "euid")
        assert r.returncode == STOPPED and "euid 47101" in r.stdout
    finally:
        planted.unlink()


def test_mknod_is_refused(node) -> None:
    assert_stopped(attack(node, "mknod", "/tmp/null2"))
    assert_stopped(attack(node, "mknod", "/home/alice/null2"))


def test_mount_is_refused(node) -> None:
    assert_stopped(attack(node, "mount", "/tmp"))


def test_user_namespace_then_mount_is_refused(node) -> None:
    # Control: outside a jail an unprivileged user can do exactly this on this kernel.
    ctl = subprocess.run([node.attack, "userns", "/tmp"], user=47101, capture_output=True, text=True)
    assert ctl.returncode == 0, ctl.stdout
    assert_stopped(attack(node, "userns", "/tmp"))
    r = node.run("alice", "--", "/bin/unshare", "-Urm", "/bin/true")
    assert r.returncode != 0


def test_host_abstract_unix_socket_is_unreachable_even_with_net(node) -> None:
    # Abstract sockets belong to the network namespace: --net shares the host's.
    name = f"jailyard-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(f"\0{name}")
        server.listen(4)
        control = subprocess.run([node.attack, "abstract", name], capture_output=True, text=True)
        assert control.returncode == 0, control.stdout  # the attack works outside a jail
        assert_stopped(attack(node, "abstract", name, tenant="dave", opts=("--net",)))
        assert_stopped(attack(node, "abstract", name, tenant="dave"))  # its own network namespace


def test_host_process_cannot_be_killed_or_traced(node) -> None:
    victim = subprocess.Popen(["sleep", "60"], user=47101)  # same uid as the tenant: the strongest case
    try:
        os.kill(victim.pid, 0)  # control: it is there to be hit
        assert_stopped(attack(node, "kill", str(victim.pid)))
        assert_stopped(attack(node, "ptrace", str(victim.pid)))
        assert victim.poll() is None
        # PID 1 (the reaper) cannot be killed or traced by the tenant either.
        assert_stopped(attack(node, "ptrace", "1"))
    finally:
        victim.kill()
        victim.wait()


def test_other_tenants_processes_and_home_are_invisible(node) -> None:
    bob = subprocess.Popen([node.jailrun, "bob", "--", "/bin/sleep", "30"])
    try:
        time.sleep(0.5)
        r = node.run("alice", "--", "/bin/sh", "-c", "ls /proc | grep -E '^[0-9]+$' | wc -l; ls /home; ps -o pid,user,args")
        lines = r.stdout.split("\n")
        assert int(lines[0]) <= 5, r.stdout  # 1 (reaper), sh, ls, grep, wc
        assert "sleep" not in r.stdout and "bob" not in r.stdout
        assert_stopped(attack(node, "read", "/home/bob/.profile"))
        assert_stopped(attack(node, "read", str(node.home("bob"))))
    finally:
        bob.kill()
        bob.wait()


def test_tiocsti_cannot_reach_the_calling_terminal(node) -> None:
    sysctl = Path("/proc/sys/dev/tty/legacy_tiocsti")
    saved = sysctl.read_text() if sysctl.exists() else None
    if saved is not None:
        sysctl.write_text("1\n")
    try:

        def under_pty(argv: list[str]) -> tuple[int, str]:
            master, slave = pty.openpty()
            try:
                p = subprocess.Popen(
                    argv,
                    stdin=slave,
                    stdout=slave,
                    stderr=slave,
                    start_new_session=True,
                    preexec_fn=lambda: __import__("fcntl").ioctl(0, __import__("termios").TIOCSCTTY, 0),
                )
                rc = p.wait(timeout=30)
                os.set_blocking(master, False)
                try:
                    out = os.read(master, 65536).decode(errors="replace")
                except BlockingIOError:
                    out = ""
                return rc, out
            finally:
                os.close(master)
                os.close(slave)

        # Control: a process on that terminal can push keystrokes into it.
        rc, out = under_pty([node.attack, "tiocsti"])
        assert rc == 0 and "WORKED" in out
        rc, out = under_pty([node.jailrun, "alice", "--", "/bin/attack", "tiocsti"])
        assert rc == STOPPED and "STOPPED" in out, out
    finally:
        if saved is not None:
            sysctl.write_text(saved)


# ---- exhausting the host ---------------------------------------------------------------


def test_fork_bomb_is_capped_and_meta_says_procs(node, tmp_path: Path) -> None:
    """issue 12: `--meta` said `killed_by none` when the procs limit stopped the program.

    RLIMIT_NPROC (per uid, counted host-wide) failed the fork before the pids
    cgroup, whose `max` event counter is what tells the launcher why.
    """
    meta = tmp_path / "meta"
    r = attack(node, "forkbomb", "500", opts=("--procs", "20", "--timeout", "60", "--meta", str(meta)))
    assert r.returncode == STOPPED, r.stdout + r.stderr
    assert int(r.stdout.split()[1]) < 20
    info = dict(line.split(" ", 1) for line in meta.read_text().splitlines())
    assert info["killed_by"] == "procs", info


def test_memory_hog_is_killed(node, tmp_path: Path) -> None:
    meta = tmp_path / "meta"
    r = attack(node, "memhog", "512", opts=("--mem", "64M", "--meta", str(meta), "--timeout", "30"))
    assert r.returncode in (STOPPED, 128 + signal.SIGKILL), r.stdout
    info = dict(line.split(" ", 1) for line in meta.read_text().splitlines())
    if r.returncode == 128 + signal.SIGKILL:
        assert info["killed_by"] == "memory"
    assert int(info["mem_peak"]) <= 64 * 1024 * 1024 + 4096


def test_cpu_loop_is_killed(node, tmp_path: Path) -> None:
    meta = tmp_path / "meta"
    # No timing margin (issue 12: 0.76 s of CPU against an asserted 0.8 on a busy host): the
    # kernel's SIGXCPU and the launcher's verdict are the test; --timeout only ends a hang.
    r = attack(node, "cpuloop", opts=("--cpu", "1", "--timeout", "120", "--meta", str(meta)), timeout=180)
    assert r.returncode in (128 + signal.SIGXCPU, 128 + signal.SIGKILL)
    info = dict(line.split(" ", 1) for line in meta.read_text().splitlines())
    assert info["killed_by"] == "cpu", info


def test_wall_timeout_kills_the_whole_session(node, tmp_path: Path) -> None:
    meta = tmp_path / "meta"
    r = node.run("--timeout", "1", "--meta", str(meta), "alice", "--", "/bin/sh", "-c", "sleep 100 & sleep 100 & wait")
    assert r.returncode == 128 + signal.SIGKILL
    assert "killed_by wall" in meta.read_text()
    # The tenant's cgroups are this test session's own (another session on the host has the same uids).
    assert wait_until(lambda: not session_pids(node, "alice"), 10), f"processes of the session survived: {session_pids(node, 'alice')}"


def test_huge_file_is_stopped_and_meta_says_fsize(node, tmp_path: Path) -> None:
    """issue 12: `--meta` said `killed_by none` when the fsize limit (SIGXFSZ) stopped the program."""
    meta = tmp_path / "meta"
    r = attack(node, "bigfile", "/home/alice/big", "64", opts=("--fsize", "1M", "--meta", str(meta)))
    assert r.returncode == 128 + signal.SIGXFSZ, r.stdout + r.stderr
    assert (node.home("alice") / "big").stat().st_size <= 1024 * 1024
    (node.home("alice") / "big").unlink()
    info = dict(line.split(" ", 1) for line in meta.read_text().splitlines())
    assert info["killed_by"] == "fsize", info


def test_limits_can_only_be_tightened(node) -> None:
    r = node.run("--mem", "4G", "alice", "--", "/bin/true")  # the plan allows 512M
    assert r.returncode == 120 and "above" in r.stderr
    r = node.run("--procs", "0", "alice", "--", "/bin/true")
    assert r.returncode == 120


# ---- the caller's side ------------------------------------------------------------------


def test_caller_ld_preload_and_path_do_not_pass(node) -> None:
    marker = Path("/tmp/jailrun-preload-marker")
    marker.unlink(missing_ok=True)
    evil_bin = node.base / "evilbin"
    evil_bin.mkdir(exist_ok=True)
    env = {"LD_PRELOAD": node.evil_so, "PATH": f"{evil_bin}:/usr/bin:/bin", "SECRET_TOKEN": "x"}
    # carol is not mounted yet: the mount helper (Python, on the host) runs under this environment too.
    # The caller is www-data: a root caller preloading code into the launcher is root running its own code.
    r = node.run("carol", "--", "/bin/env", env=env, user=33)
    assert r.returncode == 0, r.stderr
    assert "LD_PRELOAD" not in r.stdout and "SECRET_TOKEN" not in r.stdout and str(evil_bin) not in r.stdout
    assert "PATH=/usr/local/bin:/usr/bin:/bin" in r.stdout
    assert not marker.exists(), "the caller's LD_PRELOAD was loaded by the launcher, the mount helper or the program"
    # --env is how a caller passes something on purpose.
    r = node.run("--env", "TERM=xterm", "alice", "--", "/bin/env")
    assert "TERM=xterm" in r.stdout


@pytest.mark.parametrize(
    ("name", "code"),
    [("../x", 120), ("a" * 33, 120), ("Alice", 120), ("alice/..", 120), ("", 120), ("nosuchtenant", 123)],
)
def test_bad_names_are_refused(node, name: str, code: int) -> None:
    r = node.run(name, "--", "/bin/true")
    assert r.returncode == code, r.stderr
    assert r.stderr.startswith("jailrun: ") and len(r.stderr.splitlines()) == 1


def test_caller_not_allowed_is_refused(node) -> None:
    r = node.run("alice", "--", "/bin/true", user=65534)
    assert r.returncode == 121 and "may not run" in r.stderr
    r = node.run("alice", "--", "/bin/id", "-u", user=33)  # www-data is allowed
    assert r.returncode == 0 and r.stdout.strip() == "47101"


def test_config_writable_by_others_is_refused(node) -> None:
    conf = node.cfg.path
    conf.chmod(0o666)
    try:
        r = node.run("alice", "--", "/bin/true")
        assert r.returncode == 122 and "root" in r.stderr
    finally:
        conf.chmod(0o644)
    node.base.chmod(0o777)
    try:
        assert node.run("alice", "--", "/bin/true").returncode == 122
    finally:
        node.base.chmod(0o755)
    assert node.run("alice", "--", "/bin/true").returncode == 0


# ---- the same attacks with the tenant's own tools (busybox), as the brief states them ----


def test_setuid_busybox_planted_in_home_runs_as_the_tenant(node) -> None:
    planted = node.home("alice") / "busybox"
    shutil.copy2(shutil.which("busybox"), planted)
    os.chown(planted, 0, 0)
    planted.chmod(0o4755)
    try:
        r = node.run("--cwd", "/home/alice", "alice", "--", "./busybox", "id", "-u")
        assert r.returncode == 0 and r.stdout.strip() == "47101", (r.stdout, r.stderr)
    finally:
        planted.unlink()


def test_kill_9_of_a_host_sleep_fails_and_it_survives(node) -> None:
    victim = subprocess.Popen(["sleep", "60"], user=47101)
    try:
        r = node.run("alice", "--", "/bin/sh", "-c", f"kill -9 {victim.pid}")
        assert r.returncode != 0
        time.sleep(0.2)
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


def test_shell_fork_bomb_with_procs_10_returns_and_the_host_is_fine(node) -> None:
    """The session ends (by itself or at --timeout), nothing of it is left, the host still forks.

    How the shell itself ends is the race it lost (issue 12: `/bin/sh` exited 2
    when its own fork of `sleep` met EAGAIN on a busy host): any status of the
    program's own is fine, a launcher failure (120-127) is not.
    """
    r = node.run("--procs", "10", "--timeout", "5", "alice", "--", "/bin/sh", "-c", "b() { b | b & }; b; sleep 2; echo done", timeout=120)
    assert r.returncode < 120 or r.returncode == 128 + signal.SIGKILL, r.stderr[-500:]
    assert wait_until(lambda: not session_pids(node, "alice"), 10), f"processes of the session survived: {session_pids(node, 'alice')}"
    assert subprocess.run(["/bin/true"]).returncode == 0  # the host can still fork


def test_memory_hog_under_32M(node, tmp_path: Path) -> None:
    meta = tmp_path / "meta"
    r = attack(node, "memhog", "256", opts=("--mem", "32M", "--meta", str(meta), "--timeout", "30"))
    assert r.returncode in (STOPPED, 128 + signal.SIGKILL), r.stdout
    info = dict(line.split(" ", 1) for line in meta.read_text().splitlines())
    assert r.returncode == STOPPED or info["killed_by"] == "memory"
    assert int(info["mem_peak"]) <= 32 * 1024 * 1024 + 4096


def test_mknod_and_mount_with_busybox_fail(node) -> None:
    r = node.run(
        "alice",
        "--",
        "/bin/sh",
        "-c",
        "mknod /tmp/n c 1 3 || echo mknod-failed; "
        "mount -t tmpfs x /tmp || echo mount-failed; unshare -Urm mount -t tmpfs x /tmp || echo userns-failed",
    )
    assert "mknod-failed" in r.stdout and "mount-failed" in r.stdout and "userns-failed" in r.stdout
    assert not (node.cfg.tenants_dir / "alice" / "tmp" / "n").exists()


def test_config_copy_in_a_directory_writable_by_others_is_refused(node, tmp_path_factory) -> None:
    """A separate build whose baked-in config sits in a directory anyone may write: 122, nothing run."""
    confdir = tmp_path_factory.mktemp("owconf")
    conf = confdir / "jailyard.conf"
    conf.write_text(node.cfg.path.read_text())
    conf.chmod(0o644)
    jailrun = Path(node.build_jailrun(tmp_path_factory.mktemp("owbuild"), conf))
    jailrun.chmod(0o4755)
    confdir.chmod(0o757)  # o+w
    try:
        marker = node.home("alice") / "ran-under-bad-config"
        r = subprocess.run(
            [str(jailrun), "alice", "--", "/bin/touch", "/home/alice/ran-under-bad-config"], capture_output=True, text=True, timeout=30
        )
        assert r.returncode == 122, (r.returncode, r.stderr)
        assert r.stderr.startswith("jailrun: ") and len(r.stderr.splitlines()) == 1
        assert not marker.exists()
        confdir.chmod(0o755)  # control: the same build and config are accepted once the directory is safe
        r = subprocess.run([str(jailrun), "alice", "--", "/bin/true"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
    finally:
        confdir.chmod(0o755)
