"""Expiry against the real launcher: a live `sleep` session keeps its jail; an expired jail comes back on demand."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from jailtest import REPO, make_config, remove_cgroups
from jailyard import expiry
from jailyard.config import Config
from jailyard.expiry import expire_pass
from jailyard.kernel import umount
from jailyard.lifecycle import converge
from jailyard.mountinfo import jails_with_mounts, read_mountinfo
from jailyard.mounttable import ENV_FORCE_MOUNTINFO
from jailyard.sessions import last_use_ns, live_sessions

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("gcc") is None, reason="needs root and gcc")


@pytest.fixture(params=["listmount", "mountinfo"], autouse=True)
def mount_table(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test twice: the mounts asked of the kernel (listmount, statmount), and read from mountinfo (forced)."""
    monkeypatch.setenv(ENV_FORCE_MOUNTINFO, "1" if request.param == "mountinfo" else "0")
    return request.param


@pytest.fixture(scope="module")
def jr(tmp_path_factory: pytest.TempPathFactory, image_store: Path):
    base = tmp_path_factory.mktemp("expiry-jailrun")
    cfg = make_config(base, image_store, cgroup_name=f"jailyard-test-expiry-{os.getpid()}")
    build = base / "build"
    subprocess.run(
        ["make", "-s", "-C", str(REPO / "launcher"), f"BUILD={build}", f"CONFIG={cfg.path}", f"AUDIT_LOG={base}/log/launch.log"], check=True
    )
    os.chmod(build / "jailrun", 0o4755)
    try:
        yield cfg, str(build / "jailrun")
    finally:
        for m in reversed([m for m in read_mountinfo() if m.target.startswith(f"{base}/")]):
            umount(m.target, detach=True)
        remove_cgroups(cfg.cgroup_name)


def mounted(cfg: Config) -> set[str]:
    return set(jails_with_mounts(read_mountinfo(), str(cfg.jails_dir)))


def test_live_jailrun_session_keeps_its_jail_and_expired_jail_comes_back(jr: tuple[Config, str]) -> None:
    cfg, jailrun = jr
    converge(cfg, {"name": "lab", "uid": 10001})
    (cfg.jail_root("lab") / "home" / "lab" / "work.txt").write_text("kept\n")
    session = subprocess.Popen([jailrun, "lab", "--", "sleep", "30"])
    try:
        deadline = time.monotonic() + 10
        while not live_sessions(cfg, "lab") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert live_sessions(cfg, "lab") == [session.pid]
        for _ in range(4):
            assert expire_pass(cfg, log=False).unmounted == []
        assert "lab" in mounted(cfg)
        assert session.poll() is None
    finally:
        session.kill()
        session.wait()
    # The session is over: a full idle interval later the jail goes, its files stay.
    expire_pass(cfg, log=False)
    time.sleep(0.02)
    assert expire_pass(cfg, log=False).unmounted == ["lab"]
    assert "lab" not in mounted(cfg)
    assert (cfg.tenant_dir("lab") / "home" / "lab" / "work.txt").read_text() == "kept\n"
    # jailrun mounts it again on demand and the tenant finds its files.
    out = subprocess.run([jailrun, "lab", "--", "cat", "/home/lab/work.txt"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "kept\n"
    assert "lab" in mounted(cfg)
    assert len(jails_with_mounts(read_mountinfo(), str(cfg.jails_dir))["lab"]) == 5


def test_launches_racing_expiry_passes_never_enter_a_half_unmounted_jail(jr: tuple[Config, str]) -> None:
    cfg, jailrun = jr
    converge(cfg, {"name": "race", "uid": 10002, "layout": "overlay"})
    deadline = time.monotonic() + 8
    expirer = subprocess.Popen(["/usr/bin/python3", "-c", EXPIRE_LOOP.format(lib=str(REPO / "module_utils"), conf=str(cfg.path), until=8)])
    failures = []
    runs = 0
    while time.monotonic() < deadline:
        out = subprocess.run([jailrun, "race", "--", "cat", "/etc/passwd"], capture_output=True, text=True)
        runs += 1
        if out.returncode != 0 or "race:x:10002:" not in out.stdout:
            failures.append((out.returncode, out.stderr))
    assert expirer.wait(30) == 0
    assert runs > 10 and failures == []
    left = jails_with_mounts(read_mountinfo(), str(cfg.jails_dir)).get("race", [])
    assert len(left) in (0, 4), [m.target for m in left]


# Worst case for the launcher: before every pass the jail is made to look idle
# (last use at the epoch), so every pass that finds no live session unmounts it.
EXPIRE_LOOP = """
import os, sys, time
sys.path.insert(0, {lib!r})
from jailyard.config import load_config
from jailyard.expiry import expire_pass
cfg = load_config({conf!r})
end = time.monotonic() + {until}
unmounted = 0
while time.monotonic() < end:
    try:
        os.utime(cfg.lastuse_path("race"), (0, 0))
    except FileNotFoundError:
        pass
    report = expire_pass(cfg, log=False)
    assert not report.errors, report.errors
    unmounted += len(report.unmounted)
assert unmounted > 3, unmounted
"""


def session_cgroups(cfg: Config, name: str, pid: int) -> list[Path]:
    return sorted(Path("/sys/fs/cgroup").glob(f"*/{cfg.cgroup_name}/{name}/s{pid}"))


def test_expiry_removes_the_cgroups_of_a_killed_session_only(jr: tuple[Config, str]) -> None:
    cfg, jailrun = jr
    converge(cfg, {"name": "grader", "uid": 10003})
    # --procs gives each session a cgroup of its own, which jailrun removes when the session ends.
    killed = subprocess.Popen([jailrun, "--procs", "20", "grader", "--", "sleep", "30"])
    live = subprocess.Popen([jailrun, "--procs", "20", "grader", "--", "sleep", "30"])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (session_cgroups(cfg, "grader", killed.pid) and session_cgroups(cfg, "grader", live.pid)):
            time.sleep(0.02)
        # jailrun makes a session's cgroups one controller after another: wait until both sessions
        # have all of theirs (the same number, unchanged over a moment), not just the first.
        stale = session_cgroups(cfg, "grader", killed.pid)
        while time.monotonic() < deadline:
            time.sleep(0.2)
            now = session_cgroups(cfg, "grader", killed.pid)
            if now == stale and len(now) == len(session_cgroups(cfg, "grader", live.pid)):
                break
            stale = now
        assert stale and session_cgroups(cfg, "grader", live.pid)
        expire_pass(cfg, log=False)  # so that the pass below has a previous one and checks the jail's sessions
        killed.kill()  # SIGKILL: no cleanup; the session dies with it (parent-death signal)
        killed.wait()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any((d / "cgroup.procs").read_text().strip() for d in stale):
            time.sleep(0.02)
        assert all(d.is_dir() for d in stale)  # left behind by the killed launcher
        report = expire_pass(cfg, log=False)
        assert sorted(report.stale_cgroups) == sorted(f"{d}" for d in stale)
        assert not any(d.exists() for d in stale)
        assert session_cgroups(cfg, "grader", live.pid), "the live session's cgroup was removed"
        assert live.poll() is None
    finally:
        for p in (killed, live):
            p.kill()
            p.wait()


def test_a_warm_launch_stamps_its_last_use_as_it_starts_so_a_pass_that_listed_no_session_keeps_it(
    jr: tuple[Config, str], monkeypatch: pytest.MonkeyPatch, mount_table: str
) -> None:
    """A pass lists the session records once, then checks each jail under its lock by its last
    use alone: a session that began after the listing is seen by the stamp its launch made
    under the lock, not only by the one it makes when it ends."""
    cfg, jailrun = jr
    name = f"stamped-{mount_table}"  # the jail of this run alone (jr is the module's)
    converge(cfg, {"name": name, "uid": 10004 if mount_table == "listmount" else 10005})
    expire_pass(cfg, log=False)  # the previous pass: the mount's stamp is older than it
    time.sleep(0.05)  # past the kernel's coarse file-clock tick
    before = last_use_ns(cfg, name)
    session = subprocess.Popen([jailrun, name, "--", "sleep", "30"])
    try:
        deadline = time.monotonic() + 10
        while not live_sessions(cfg, name) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert live_sessions(cfg, name) == [session.pid]
        assert last_use_ns(cfg, name) > before  # stamped as it started, the session still running
        # The pass's listing of session records as if made just before this session began.
        monkeypatch.setattr(expiry, "tenants_with_session_records", lambda cfg: frozenset())
        report = expire_pass(cfg, log=False)
        assert name in report.kept_in_use and name not in report.unmounted
        assert name in mounted(cfg)
        assert session.poll() is None
    finally:
        session.kill()
        session.wait()
