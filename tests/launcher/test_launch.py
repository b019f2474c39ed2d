"""What a launch looks like from the inside and the outside: environment, namespaces, exit codes, records, meta."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from jailtest import wait_until

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("launch", ["warm", "cold"])
def test_inside_the_jail(node, launch: str) -> None:
    # Cold: PID 1 is made while the mount step runs and gets the jail's tree
    # afterwards over a socket; the jail it builds must be the same.
    if launch == "cold":
        from jailyard.lifecycle import converge

        converge(node.cfg, {"name": "alice", "state": "unmounted"})
    r = node.run(
        "alice",
        "--",
        "/bin/sh",
        "-c",
        "id -u; id -G; hostname; pwd; umask; cat /proc/net/dev | tail -n +3 | cut -d: -f1; "
        "grep -E '^(NoNewPrivs|CapBnd|CapEff|Seccomp):' /proc/self/status; ls /dev | tr '\\n' ' '; echo; "
        "ls -l /proc/self/fd | grep -c ' -> '",
    )
    assert r.returncode == 0, r.stderr
    lines = [x.strip() for x in r.stdout.splitlines()]
    assert lines[0] == "47101" and lines[1] == "47101"
    assert lines[2] == "alice" and lines[3] == "/home/alice" and lines[4] == "0077"
    assert lines[5] == "lo"  # a network namespace with only lo
    status = dict(x.split(":\t") for x in lines[6:10])
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2"
    assert int(status["CapBnd"], 16) == 0 and int(status["CapEff"], 16) == 0
    assert lines[10].split() == sorted("fd full null ptmx pts random shm stderr stdin stdout tty urandom zero".split())


def test_dev_is_read_only_and_pts_and_shm_are_per_session(node) -> None:
    # /dev is every session's copy of one prepared tmpfs in the template namespace:
    # nobody may write it; devpts and /dev/shm are each session's own.
    first = node.run("alice", "--", "/bin/sh", "-c", "touch /dev/x || echo refused; echo s > /dev/shm/s && cat /dev/shm/s")
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == ["refused", "s"]
    second = node.run("alice", "--", "/bin/sh", "-c", "ls -A /dev/shm; ls /dev/pts; test ! -e /dev/x && echo clean")
    assert second.returncode == 0, second.stderr
    assert second.stdout.split() == ["ptmx", "clean"]


def test_proc_is_read_only_and_mounts_are_nosuid(node) -> None:
    r = node.run("alice", "--", "/bin/cat", "/proc/self/mountinfo")
    for line in r.stdout.splitlines():
        fields = line.split()
        opts = fields[5].split(",")
        if fields[4] == "/proc":
            assert "ro" in opts
        assert "nosuid" in opts, line
        if fields[4] not in ("/dev", "/dev/pts"):  # the device nodes themselves, and pty slaves
            assert "nodev" in opts, line


def test_exit_codes(node) -> None:
    assert node.run("alice", "--", "/bin/sh", "-c", "exit 7").returncode == 7
    assert node.run("alice", "--", "/bin/sh", "-c", "kill -TERM $$").returncode == 128 + 15
    r = node.run("alice", "--", "/no/such/program")
    assert r.returncode == 127 and r.stderr.startswith("jailrun: ")
    assert node.run("alice", "--", "/etc/passwd").returncode == 126
    assert node.run("alice", "true").returncode == 0  # PATH search, "--" optional
    assert node.run("--bogus", "alice", "true").returncode == 120
    assert node.run("--cwd", "/nonexistent", "alice", "true").returncode == 120
    assert node.run("--net", "alice", "true").returncode == 120  # the plan has no network


def test_help(node) -> None:
    r = node.run("--help")
    assert r.returncode == 0 and "usage: jailrun" in r.stdout


def test_session_record_and_last_use(node) -> None:
    run_dir = node.cfg.run_dir
    lastuse = run_dir / "lastuse" / "alice"
    if lastuse.exists():
        os.utime(lastuse, (0, 0))  # an earlier launch's stamp must not pass for this one's
    started = int(time.time())  # whole seconds: no margin on a busy host, only the clock's granularity
    p = subprocess.Popen([node.jailrun, "alice", "--", "/bin/sleep", "60"])  # ended below, by SIGTERM
    try:
        record = run_dir / "sessions" / "alice" / str(p.pid)
        # The record is created, then written (under the tenant's lock, which this test does not take):
        # wait for its content, not its name (seen empty once on a busy host).
        assert wait_until(lambda: record.exists() and record.read_text().endswith("\n"), 30), "no session record"
        first, *rest = record.read_text().splitlines()
        pid, start = first.split()
        stat = Path(f"/proc/{p.pid}/stat").read_text()
        assert pid == str(p.pid) and start == stat[stat.rindex(")") + 2 :].split()[19]
        assert rest == [f"caller {os.getuid()}", "pty 0", "program /bin/sleep"]  # issue 19: jailctl sessions shows them
    finally:
        p.terminate()  # forwarded to the program
        rc = p.wait(timeout=10)
    assert rc == 128 + 15
    assert not record.exists()
    assert lastuse.stat().st_mtime >= started  # stamped by this session's end


def test_killing_the_launcher_ends_the_session(node) -> None:
    # A caller's own timeout may SIGKILL jailrun: the program must not run on
    # unsupervised (past --timeout, with its session record gone).
    p = subprocess.Popen([node.jailrun, "carol", "--", "/bin/sleep", "60"])
    try:
        assert wait_until(lambda: len(session_pids(node, "carol")) == 2, 10), "PID 1 and sleep never showed up in carol's cgroup"
    finally:
        p.kill()
        p.wait()
    assert wait_until(lambda: not session_pids(node, "carol"), 5), "the session outlived its launcher"


def test_meta_file(node, tmp_path: Path) -> None:
    meta = tmp_path / "m"
    r = node.run("--meta", str(meta), "alice", "--", "/bin/sh", "-c", "exit 3")
    assert r.returncode == 3
    info = dict(line.split(" ", 1) for line in meta.read_text().splitlines())
    assert info["status"] == "3" and info["exitcode"] == "3" and info["killed_by"] == "none"
    assert float(info["wall"]) >= 0 and int(info["mem_peak"]) > 0
    assert {"cpu_user", "cpu_sys"} <= info.keys()


def test_mount_on_demand_after_unmount(node) -> None:
    from jailyard.lifecycle import converge

    converge(node.cfg, {"name": "bob", "state": "unmounted"})
    home = f"{node.cfg.jails_dir}/bob/home"
    assert home not in mount_targets()
    r = node.run("bob", "--", "/bin/cat", "/etc/passwd")
    assert r.returncode == 0 and "bob:x:47102" in r.stdout
    assert home in mount_targets()


def test_a_failed_mount_step_leaves_no_session_behind(node) -> None:
    # PID 1 is already waiting for the tree when the mount step fails: it must be
    # gone when jailrun exits, with no session record and nothing mounted.
    from jailyard.lifecycle import converge

    converge(node.cfg, {"name": "erin", "uid": 47105, "state": "present"})
    home = node.cfg.tenants_dir / "erin" / "home"
    moved = home.with_name("home.saved")
    home.rename(moved)
    home.symlink_to("/etc")  # what a hostile tenant could leave: the mount step refuses it
    try:
        r = node.run("erin", "--", "/bin/true")
        assert r.returncode == 124, r.stderr
        assert "the mount step for 'erin' failed" in r.stderr
        assert "refusing to follow symlink" in r.stderr
        assert session_pids(node, "erin") == set()
        assert not list((node.cfg.run_dir / "sessions" / "erin").glob("*"))
        assert not [t for t in mount_targets() if t.startswith(f"{node.cfg.jails_dir}/erin")]
    finally:
        home.unlink()
        moved.rename(home)
    r = node.run("erin", "--", "/bin/true")  # repaired: the next launch mounts and runs
    assert r.returncode == 0, r.stderr
    converge(node.cfg, {"name": "erin", "state": "absent", "purge": True})


def test_cold_launch_moves_the_jail_to_a_new_current_image(node) -> None:
    # The mount step's full path: a new current image, so a new plan; PID 1, made
    # from the old plan while the step ran, enters the new image's tree.
    import shutil

    from jailyard.lifecycle import converge

    images = node.cfg.images_dir
    first = os.readlink(images / "current")
    second = "fedcba9876543210"
    shutil.copytree(images / first, images / second, symlinks=True)
    (images / second / "rootfs" / "etc" / "image-marker").write_text("second image\n")
    try:
        converge(node.cfg, {"name": "frank", "uid": 47106, "state": "present"})
        os.symlink(second, images / "current.new")
        os.rename(images / "current.new", images / "current")
        r = node.run("frank", "--", "/bin/sh", "-c", "cat /etc/image-marker; hostname; id -u")
        assert r.returncode == 0, r.stderr
        assert r.stdout.split("\n")[:3] == ["second image", "frank", "47106"]
        assert second in (node.cfg.tenants_dir / "frank" / "plan").read_text()
    finally:
        converge(node.cfg, {"name": "frank", "state": "absent", "purge": True})
        os.symlink(first, images / "current.new")
        os.rename(images / "current.new", images / "current")
        shutil.rmtree(images / second)


def jailrun_with_mount_helper(node, tmp_path: Path, before: str) -> str:
    """A jailrun of its own whose mount helper runs the Python code `before`, then the real step."""
    import dataclasses

    helper = tmp_path / "mount-helper"
    real = str(node.cfg.mount_helper)
    helper.write_text(f"import runpy, sys, time\n{before}\nsys.argv[0] = {real!r}\nrunpy.run_path({real!r}, run_name='__main__')\n")
    conf = tmp_path / "jailyard.conf"
    conf.write_text(dataclasses.replace(node.cfg, mount_helper=helper).render())
    return node.build_jailrun(tmp_path / "build", conf)


def test_the_mount_step_keeps_the_lock_when_the_launcher_is_killed(node, tmp_path: Path) -> None:
    # The step holds the tenant's lock through the descriptor it inherits: a caller
    # killing jailrun mid-step must not let expiry or the modules in while it mounts.
    import fcntl

    from jailyard.lifecycle import converge

    jailrun = jailrun_with_mount_helper(node, tmp_path, "time.sleep(1.5)")
    converge(node.cfg, {"name": "gina", "uid": 47107, "state": "present"})
    lockfile = node.cfg.run_dir / "locks" / "gina.lock"

    def lock_is_free() -> bool:
        with open(lockfile, "a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            fcntl.flock(fh, fcntl.LOCK_UN)
            return True

    try:
        p = subprocess.Popen([jailrun, "gina", "--", "/bin/true"])
        time.sleep(0.7)  # jailrun waits in the step's sleep, holding the lock
        assert not lock_is_free()
        assert session_pids(node, "gina"), "PID 1 is not waiting in gina's cgroups"
        p.kill()
        p.wait()
        # PID 1, which holds a copy of the locked descriptor too, dies with the launcher.
        assert wait_until(lambda: not session_pids(node, "gina"), 0.5)
        assert not lock_is_free(), "the lock went with the launcher while its mount step ran on"
        assert wait_until(lock_is_free, 10)  # released when the step ends
    finally:
        converge(node.cfg, {"name": "gina", "state": "absent", "purge": True})


def test_a_launch_waiting_on_a_lock_a_purge_unlinks_holds_the_lock_now_there(node, tmp_path: Path) -> None:
    """A purge unlinks the tenant's lock file while holding it. jailrun, blocked in flock on that
    file, woke up holding a lock on a deleted file: its mount step then ran while the modules and
    expiry could take the tenant's (new) lock file as if nobody held it."""
    import fcntl

    from jailyard.lifecycle import converge
    from jailyard.lock import tenant_lock

    mark, go = tmp_path / "in-step", tmp_path / "go"
    wait_for_go = f"open({str(mark)!r}, 'w').close()\nimport os\nwhile not os.path.exists({str(go)!r}): time.sleep(0.01)"
    jailrun = jailrun_with_mount_helper(node, tmp_path, wait_for_go)
    converge(node.cfg, {"name": "hana", "uid": 47109, "state": "present"})
    lockfile = node.cfg.run_dir / "locks" / "hana.lock"
    p = None
    try:
        holder = tenant_lock(node.cfg, "hana")
        holder.__enter__()
        try:
            old = os.stat(lockfile).st_ino
            p = subprocess.Popen([jailrun, "hana", "--", "/bin/true"], stderr=subprocess.PIPE, text=True)
            # jailrun waits in flock on the old inode (/proc/locks lists waiters with "->").
            assert wait_until(lambda: any(f":{old} " in ln and "->" in ln for ln in Path("/proc/locks").read_text().splitlines()), 30)
            os.unlink(lockfile)  # what a purge does, holding the lock
        finally:
            holder.__exit__()
        assert wait_until(mark.exists, 30), "the mount step did not start"
        with open(lockfile, "a") as fh:  # the lock file the modules and expiry see now
            with pytest.raises(BlockingIOError):
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        go.touch()
        if p is not None:
            p.wait(timeout=60)
        converge(node.cfg, {"name": "hana", "state": "absent", "purge": True})


def test_a_plan_changed_during_the_mount_step_stops_the_launch(node, tmp_path: Path) -> None:
    # PID 1 is made from the plan read before the step; a step that changes the
    # tenant's ids, hostname, home, network or limits must not let it run with the old ones.
    from jailyard.lifecycle import converge

    converge(node.cfg, {"name": "hank", "uid": 47108, "state": "present"})
    plan = node.cfg.tenants_dir / "hank" / "plan"
    rewrite = f"p = {str(plan)!r}; t = open(p).read(); open(p, 'w').write(t.replace('hostname hank', 'hostname renamed'))"
    jailrun = jailrun_with_mount_helper(node, tmp_path, rewrite)
    try:
        r = subprocess.run([jailrun, "hank", "--", "/bin/hostname"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 124, r.stdout + r.stderr
        assert r.stderr.strip().endswith("tenant 'hank' changed while it was being mounted; run again")
        assert not list((node.cfg.run_dir / "sessions" / "hank").glob("*"))
        assert session_pids(node, "hank") == set()
        # Run again: the jail is mounted now, and the launch takes the new plan.
        r = node.run("hank", "--", "/bin/hostname")
        assert r.returncode == 0 and r.stdout.strip() == "renamed", r.stdout + r.stderr
    finally:
        converge(node.cfg, {"name": "hank", "state": "absent", "purge": True})


def test_template_namespace_is_made_from_a_fresh_mount_namespace(node) -> None:
    # A caller in a mount namespace of its own (a container, a service with PrivateTmp)
    # makes the template there. Linux 6.18 hands out namespace ids per CPU, and a pin
    # refused as a "loop" failed about half of these launches before jailrun tried
    # each CPU; each run below starts from a new namespace with no template.
    script = f"umount {node.cfg.run_dir}/mntns-v2 2>/dev/null; exec {node.jailrun} alice -- /bin/true"
    for _ in range(8):
        r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr


def session_pids(node, name: str) -> set[str]:
    """The pids in the tenant's cgroups (every controller, session cgroups included)."""
    files = Path("/sys/fs/cgroup").glob(f"*/{node.cfg.cgroup_name}/{name}/**/cgroup.procs")
    return {pid for f in files for pid in f.read_text().split()}


def mount_targets() -> set[str]:
    with open("/proc/self/mountinfo") as fh:
        return {line.split()[4] for line in fh}


def test_c_parser_tests() -> None:
    subprocess.run(["make", "-s", "-C", str(REPO / "launcher"), "check"], check=True)


@pytest.mark.skipif(subprocess.run(["which", "clang"], capture_output=True).returncode != 0, reason="needs clang")
def test_fuzz_parsers_briefly() -> None:
    r = subprocess.run(["make", "-s", "-C", str(REPO / "launcher"), "fuzz", "FUZZ_TIME=20"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


def new_audit_lines(node, run) -> list[str]:
    """The lines `run()` adds to the node's own audit log (no other caller writes there)."""
    before = node.audit_log.stat().st_size if node.audit_log.exists() else 0
    run()
    with open(node.audit_log, "rb") as fh:
        fh.seek(before)
        return fh.read().decode("ascii").splitlines()


def test_every_launch_and_refusal_is_in_the_audit_log_without_a_syslog_daemon(node) -> None:
    """issue 12: on a host without /dev/log (no syslog daemon) launches left no trace at all.

    jailrun appends one line per launch or refusal to its root-owned audit log
    (baked in at build time, AUDIT_LOG) whatever else runs on the host; this
    node's log is its own, so no other caller's launch is counted.
    """
    pids = []

    def run() -> None:
        for argv, user, code in (
            (("alice", "--", "/bin/true"), None, 0),
            (("nosuchtenant", "--", "/bin/true"), None, 123),
            (("alice", "--", "/bin/true"), 65534, 121),
        ):
            p = subprocess.Popen([node.jailrun, *argv], user=user, stderr=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin"})
            pids.append(p.pid)
            assert p.wait(timeout=60) == code

    lines = new_audit_lines(node, run)
    assert len(lines) == 3, lines  # one per launch or refusal, no more
    assert all(f" jailrun[{pid}]: " in line for pid, line in zip(pids, lines, strict=True)), lines
    assert "launch: caller=0 tenant=alice program=/bin/true status=0 " in lines[0] and "killed_by=none" in lines[0]
    assert "refused: caller=0 tenant=nosuchtenant " in lines[1] and "code=123" in lines[1]
    assert "refused: caller=65534 " in lines[2] and "code=121" in lines[2]
    st = node.audit_log.stat()
    assert st.st_uid == 0 and not st.st_mode & 0o022 and stat.S_ISREG(st.st_mode)
    dst = node.audit_log.parent.stat()
    assert dst.st_uid == 0 and not dst.st_mode & 0o022


def test_an_audit_log_that_is_a_symlink_or_in_an_open_directory_is_refused(node, tmp_path: Path) -> None:
    """The log is opened O_NOFOLLOW in a root-owned directory nobody else may write; otherwise nothing runs (125)."""
    import dataclasses

    conf = tmp_path / "jailyard.conf"
    conf.write_text(dataclasses.replace(node.cfg).render())
    logdir = tmp_path / "log"
    logdir.mkdir()
    build = tmp_path / "build"
    subprocess.run(
        ["make", "-s", "-C", str(REPO / "launcher"), f"BUILD={build}", f"CONFIG={conf}", f"AUDIT_LOG={logdir}/launch.log"], check=True
    )
    jailrun = str(build / "jailrun")
    target = tmp_path / "elsewhere"
    target.write_text("")
    (logdir / "launch.log").symlink_to(target)
    r = subprocess.run([jailrun, "alice", "--", "/bin/true"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 125 and "audit log" in r.stderr, r.stderr
    assert target.read_text() == ""
    (logdir / "launch.log").unlink()
    logdir.chmod(0o777)
    r = subprocess.run([jailrun, "alice", "--", "/bin/true"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 125 and "audit log" in r.stderr, r.stderr
    logdir.chmod(0o755)  # control: the same build logs once the directory is safe
    r = subprocess.run([jailrun, "alice", "--", "/bin/true"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "launch: caller=0 tenant=alice" in (logdir / "launch.log").read_text()


def test_an_audit_log_made_by_a_www_data_launch_is_root_s_not_the_callers_group(node) -> None:
    """setuid changes only the euid: the first launch by www-data made log/ and launch.log with group
    www-data (the caller's egid), so the web server could read every tenant's launches."""
    import shutil
    import uuid

    work = node.base / f"auditgrp-{uuid.uuid4().hex[:8]}"
    work.mkdir(mode=0o755)
    try:
        log = work / "log" / "launch.log"
        build = work / "build"
        subprocess.run(
            ["make", "-s", "-C", str(REPO / "launcher"), f"BUILD={build}", f"CONFIG={node.cfg.path}", f"AUDIT_LOG={log}"], check=True
        )
        jailrun = work / "build" / "jailrun"
        jailrun.chmod(0o4755)
        r = subprocess.run([str(jailrun), "alice", "--", "/bin/true"], capture_output=True, text=True, timeout=60, user=33, group=33)
        assert r.returncode == 0, r.stderr
        for path in (log.parent, log):
            st = path.stat()
            assert (st.st_uid, st.st_gid) == (0, 0), f"{path} is {st.st_uid}:{st.st_gid}"
        assert "launch: caller=33 tenant=alice" in log.read_text()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_control_characters_in_input_are_escaped_in_errors_and_the_audit_log(node) -> None:
    """issue 12: `jailrun $'rel\\n1' -- true` printed a two-line error; a forged log line was one argument away."""
    results = []

    def run() -> None:
        results.append(node.run("rel\nrefused: caller=0 tenant=x", "--", "/bin/true"))
        results.append(node.run("alice", "--", "/no/such\x1b[2J\x7f"))
        results.append(node.run("--cwd", "/x\ry", "alice", "--", "/bin/true"))

    lines = new_audit_lines(node, run)
    bad_name, bad_program, bad_cwd = results
    assert bad_name.returncode == 120 and bad_program.returncode == 127 and bad_cwd.returncode == 120
    for r in results:
        assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("jailrun: "), r.stderr
    assert "'rel\\nrefused: caller=0 tenant=x'" in bad_name.stderr
    assert "/no/such\\x1b[2J\\x7f" in bad_program.stderr
    assert "/x\\ry" in bad_cwd.stderr
    assert len(lines) == 3, lines
    assert "tenant=rel\\nrefused: caller=0 tenant=x " in lines[0]
    assert "program=/no/such\\x1b[2J\\x7f " in lines[1]


@pytest.mark.parametrize("caller", [0, 33])
def test_closed_descriptors_give_every_caller_the_same_session(node, caller: int) -> None:
    """issue 12: with fds 0-2 closed, a www-data caller's session could not write stdout.

    glibc's start-up of a setuid program puts /dev/null on a closed 0-2 with
    the wrong mode (stdin write-only, stdout and stderr read-only); root's
    closed descriptors stayed closed and jailrun opened /dev/null read-write.
    Every caller's session must get 0-2 as /dev/null for reading and writing.
    """
    out = node.home("alice") / f"fds-{caller}"
    out.unlink(missing_ok=True)
    # $(...) runs grep in a subshell: the flags read are those of the session's own shell, before any redirection.
    script = f"f=$(for fd in 0 1 2; do grep ^flags: /proc/$$/fdinfo/$fd; done); echo x; r=$?; printf '%s\\n%s\\n' \"$f\" $r > ~/{out.name}"
    r = subprocess.run(
        ["/bin/sh", "-c", 'exec "$0" "$@" <&- >&- 2>&-', node.jailrun, "alice", "--", "/bin/sh", "-c", script],
        user=caller,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0
    lines = out.read_text().splitlines()
    out.unlink()
    flags = [int(line.split()[1], 8) for line in lines[:3]]
    assert [f & os.O_ACCMODE for f in flags] == [os.O_RDWR] * 3, lines
    assert lines[3] == "0", "echo to stdout failed"


def test_program_is_pid_2_under_a_reaper(node) -> None:
    r = node.run("alice", "--", "/bin/sh", "-c", "echo $$; cat /proc/1/status | grep -E '^(Uid|PPid):'")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "2"  # PID 1 is the launcher's reaper, the program comes next
    assert "PPid:\t0" in r.stdout


def test_overlay_layout_keeps_the_tenants_changes_off_the_image(node) -> None:
    from jailyard.lifecycle import converge

    converge(node.cfg, {"name": "olga", "uid": 47105, "layout": "overlay", "state": "present"})
    r = node.run("olga", "--", "/bin/sh", "-c", "id -u; echo mine > /tmp/olga-tool && cat /tmp/olga-tool; touch /bin/x")
    assert r.returncode != 0 and "/bin/x" in r.stderr  # the image's own files stay root's
    assert r.stdout.split() == ["47105", "mine"]
    rootfs = node.cfg.images_dir / "0123456789abcdef" / "rootfs"
    assert not (rootfs / "tmp/olga-tool").exists() and not (rootfs / "bin/x").exists()
    upper = node.cfg.tenants_dir / "olga" / "upper"
    assert (upper / "tmp/olga-tool").read_text() == "mine\n"
    # It persists into the next session, and alice (bind layout) never sees it.
    assert node.run("olga", "--", "/bin/cat", "/tmp/olga-tool").stdout == "mine\n"
    assert node.run("alice", "--", "/bin/cat", "/tmp/olga-tool").returncode != 0
