"""Expiry: idle jails are unmounted after two passes; used or live ones never; nothing is deleted."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from jailyard import expiry
from jailyard.config import Config
from jailyard.errors import JailError
from jailyard.expiry import expire_pass
from jailyard.lifecycle import converge, converge_many, mount_tenant
from jailyard.lock import tenant_lock
from jailyard.mount import is_mounted
from jailyard.mountinfo import jails_with_mounts, read_mountinfo
from jailyard.mounttable import ENV_FORCE_MOUNTINFO
from jailyard.registry import load_plan
from jailyard.sessions import record_session, touch_lastuse

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture(params=["listmount", "mountinfo"], autouse=True)
def mount_table(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test twice: the mounts asked of the kernel (listmount, statmount), and read from mountinfo (forced).
    Passes over two jails or more use the threads a pass over many uses."""
    monkeypatch.setenv(ENV_FORCE_MOUNTINFO, "1" if request.param == "mountinfo" else "0")
    monkeypatch.setattr(expiry, "THREADS_FROM", 2)
    return request.param


def mounted_jails(cfg: Config) -> set[str]:
    return set(jails_with_mounts(read_mountinfo(), str(cfg.jails_dir)))


def launch_like_jailrun(cfg: Config, name: str) -> None:
    """The launcher's protocol without the namespaces: shared lock, check, mount if needed, record use."""
    with tenant_lock(cfg, name, exclusive=False):
        if is_mounted(load_plan(cfg, name)):
            touch_lastuse(cfg, name)
            assert (cfg.jail_root(name) / "etc" / "passwd").read_text()
            return
    with tenant_lock(cfg, name, exclusive=True):
        mount_tenant(cfg, name, lock_held=True)
        touch_lastuse(cfg, name)
        assert is_mounted(load_plan(cfg, name))


def test_idle_jail_is_unmounted_after_two_passes_and_files_survive(cfg: Config) -> None:
    converge(cfg, {"name": "idle", "uid": 10001})
    (cfg.jail_root("idle") / "home" / "idle" / "notes").write_text("keep me")
    first = expire_pass(cfg)
    assert first.previous_pass is None and first.unmounted == []
    assert mounted_jails(cfg) == {"idle"}
    second = expire_pass(cfg)
    assert second.unmounted == ["idle"]
    assert mounted_jails(cfg) == set()
    assert (cfg.tenant_dir("idle") / "home" / "idle" / "notes").read_text() == "keep me"
    third = expire_pass(cfg)
    assert third.unmounted == [] and third.mounted == 0


def test_jail_used_between_passes_survives(cfg: Config) -> None:
    converge_many(cfg, [{"name": "used", "uid": 10001}, {"name": "idle", "uid": 10002, "layout": "overlay"}])
    expire_pass(cfg)
    time.sleep(0.05)  # past the kernel's coarse file-clock tick
    launch_like_jailrun(cfg, "used")
    report = expire_pass(cfg)
    assert report.unmounted == ["idle"]
    assert "used" in report.kept_in_use
    assert mounted_jails(cfg) == {"used"}
    # Not used again: the next pass takes it.
    assert expire_pass(cfg).unmounted == ["used"]


def test_jail_with_a_live_session_survives_any_number_of_passes(cfg: Config) -> None:
    converge(cfg, {"name": "live", "uid": 10001})
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        record_session(cfg, "live", sleeper.pid)
        for _ in range(5):
            assert expire_pass(cfg).unmounted == []
        assert mounted_jails(cfg) == {"live"}
    finally:
        sleeper.kill()
        sleeper.wait()
    expire_pass(cfg)
    assert expire_pass(cfg).unmounted == ["live"]


def test_expired_jail_is_mounted_again_on_demand(cfg: Config) -> None:
    converge(cfg, {"name": "back", "uid": 10001})
    expire_pass(cfg)
    expire_pass(cfg)
    assert mounted_jails(cfg) == set()
    launch_like_jailrun(cfg, "back")
    assert mounted_jails(cfg) == {"back"}
    assert len(jails_with_mounts(read_mountinfo(), str(cfg.jails_dir))["back"]) == 5


@pytest.fixture(params=["plain dir", "own tmpfs"])
def jails_fs(request: pytest.FixtureRequest, cfg: Config) -> str:
    """The jails directory a plain directory (mount roots asked with statx), or a tmpfs of its
    own as on a node (told by st_dev and link counts); mount_guard unmounts it after."""
    if request.param == "own tmpfs":
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755,size=16m", "jailyard-test-jails", str(cfg.jails_dir)], check=True)
    return request.param


def test_jail_left_in_pieces_is_taken_off_whole(cfg: Config, mount_table: str, jails_fs: str) -> None:
    """Root gone, /home still attached below the bare directory (a reboot-like mess): the pass finds
    the pieces (in the mount table: listmount of the jails dir's mount, or mountinfo) and unmounts them all."""
    converge_many(cfg, [{"name": "whole", "uid": 10001}, {"name": "pieces", "uid": 10002}])
    root = cfg.jail_root("pieces")
    subprocess.run(["umount", "-l", str(root)], check=True)
    (root / "home").mkdir()
    subprocess.run(["mount", "--bind", str(cfg.tenant_dir("pieces") / "home"), str(root / "home")], check=True)
    (root / "home" / "deeper").mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "deeper", str(root / "home" / "deeper")], check=True)
    assert mounted_jails(cfg) == {"whole", "pieces"}
    first = expire_pass(cfg, log=False)
    assert first.mounted == 2 and first.unmounted == []
    second = expire_pass(cfg, log=False)
    assert second.unmounted == ["pieces", "whole"] and not second.errors
    assert mounted_jails(cfg) == set()
    # The jail comes back whole, nothing stacked on leftovers.
    launch_like_jailrun(cfg, "pieces")
    assert len(jails_with_mounts(read_mountinfo(), str(cfg.jails_dir))["pieces"]) == 5


def count_umounts_by_process(monkeypatch: pytest.MonkeyPatch, log: str, fail_in_child: str = "") -> None:
    """Have expiry's umount write its process id to log first (and raise for fail_in_child,
    in a process other than this one)."""
    real, parent = expiry.umount, os.getpid()

    def umount(path: str, detach: bool = False) -> None:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.close(fd)
        if fail_in_child and path.endswith(f"/{fail_in_child}") and os.getpid() != parent:
            raise RuntimeError(f"planted failure at {fail_in_child}")
        real(path, detach=detach)

    monkeypatch.setattr(expiry, "umount", umount)


@pytest.mark.parametrize("mode", ["one thread", "four threads", "forked"])
def test_many_idle_jails_go_in_one_pass_whatever_the_threads(
    cfg: Config, mode: str, monkeypatch: pytest.MonkeyPatch, tmp_path, jails_fs: str
) -> None:
    monkeypatch.setattr(expiry, "THREADS", 1 if mode == "one thread" else 4)
    monkeypatch.setattr(expiry, "FORK_FROM", 2 if mode == "forked" else 10**9)
    monkeypatch.setattr(expiry.os, "sched_getaffinity", lambda pid: {0, 1})  # two CPUs, whatever this host has
    log = str(tmp_path / "umounts")
    count_umounts_by_process(monkeypatch, log)
    names = [f"m{i:03d}" for i in range(100)]
    converge_many(cfg, [{"name": n, "uid": 11000 + i, "layout": "overlay" if i % 3 == 0 else "bind"} for i, n in enumerate(names)])
    assert expire_pass(cfg, log=False).kept_in_use == names
    time.sleep(0.05)  # past the kernel's coarse file-clock tick
    launch_like_jailrun(cfg, "m042")
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        record_session(cfg, "m077", sleeper.pid)
        with tenant_lock(cfg, "m013"):
            report = expire_pass(cfg, log=False)
        assert report.unmounted == [n for n in names if n not in ("m013", "m042", "m077")]  # in name order
        assert report.kept_in_use == ["m042", "m077"] and report.kept_busy == ["m013"] and not report.errors
        assert mounted_jails(cfg) == {"m013", "m042", "m077"}
    finally:
        sleeper.kill()
        sleeper.wait()
    with open(log) as fh:
        pids = fh.read().split()
    assert len(pids) == 97
    assert len(set(pids)) == (2 if mode == "forked" else 1)  # bind jails half in a forked process, or all here


def test_a_failure_in_the_forked_half_of_a_pass_is_raised_naming_it(cfg: Config, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(expiry, "FORK_FROM", 2)
    monkeypatch.setattr(expiry.os, "sched_getaffinity", lambda pid: {0, 1})
    count_umounts_by_process(monkeypatch, str(tmp_path / "umounts"), fail_in_child="f3")
    names = [f"f{i}" for i in range(6)]
    converge_many(cfg, [{"name": n, "uid": 11200 + i, "layout": "bind"} for i, n in enumerate(names)])
    expire_pass(cfg, log=False)
    time.sleep(0.05)
    with pytest.raises(JailError, match=r"second process failed: RuntimeError: planted failure at f3"):
        expire_pass(cfg, log=False)
    # The half done here went (f0 f2 f4), and f1 before the failure there; f3 and f5 stay, whole.
    assert mounted_jails(cfg) == {"f3", "f5"}
    assert all(is_mounted(load_plan(cfg, n)) for n in ("f3", "f5"))


def test_busy_jail_is_skipped_not_waited_for(cfg: Config) -> None:
    converge(cfg, {"name": "busy", "uid": 10001})
    expire_pass(cfg)
    with tenant_lock(cfg, "busy"):
        started = time.monotonic()
        report = expire_pass(cfg)
        assert time.monotonic() - started < 5
    assert report.kept_busy == ["busy"]
    assert mounted_jails(cfg) == {"busy"}


def test_jailctl_expire_prints_what_it_unmounted(cfg: Config) -> None:
    converge(cfg, {"name": "idle", "uid": 10001})
    jailctl = [sys.executable, str(cfg.lib_dir.parent / "bin" / "jailctl"), "--config", str(cfg.path), "expire"]
    first = subprocess.run(jailctl, capture_output=True, text=True, check=True)
    assert "first pass: recording only" in first.stdout
    second = subprocess.run(jailctl, capture_output=True, text=True, check=True)
    assert second.stdout.splitlines()[0] == "unmounted idle"
    nothing = subprocess.run(jailctl, capture_output=True, text=True)
    assert nothing.returncode == 0 and "0 mounted, 0 unmounted" in nothing.stdout


def test_launches_racing_expiry_passes_end_clean(cfg: Config) -> None:
    names = [f"s{i}" for i in range(8)]
    converge_many(cfg, [{"name": n, "uid": 10001 + i, "layout": "overlay" if i % 2 else "bind"} for i, n in enumerate(names)])
    errors: list[BaseException] = []
    deadline = time.monotonic() + 6

    def launcher(worker: int) -> None:
        try:
            i = worker
            while time.monotonic() < deadline:
                launch_like_jailrun(cfg, names[i % len(names)])
                i += 3
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def expirer() -> None:
        try:
            while time.monotonic() < deadline:
                report = expire_pass(cfg, log=False)
                assert not report.errors, report.errors
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=launcher, args=(w,)) for w in range(3)] + [threading.Thread(target=expirer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    # Every jail is either whole or not mounted at all: nothing stray, nothing stacked.
    for name, mounts in jails_with_mounts(read_mountinfo(), str(cfg.jails_dir)).items():
        expected = 5 if int(name[1:]) % 2 == 0 else 4
        assert len(mounts) == expected, (name, [m.target for m in mounts])
