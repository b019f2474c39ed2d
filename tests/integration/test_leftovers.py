"""What purges and interrupted runs leave behind, and how a failing run reports (issue 12, "Lifecycle leaks")."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest

from jailtest import make_config, remove_cgroups
from jailyard import registry
from jailyard.config import Config
from jailyard.errors import JailError
from jailyard.lifecycle import PartialFailure, converge, converge_many
from jailyard.lock import tenant_lock
from jailyard.mountinfo import jails_with_mounts, read_mountinfo
from jailyard.sessions import record_session, touch_lastuse

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
CGROUPS = Path("/sys/fs/cgroup")


@pytest.fixture
def cg_cfg(tmp_path: Path, image_store: Path, mount_guard: None):
    """A config with a cgroup name of its own, and its cgroups removed afterwards whatever happened."""
    name = f"jytest{os.getpid()}"
    yield make_config(tmp_path, image_store, cgroup_name=name)
    assert remove_cgroups(name)


def launcher_cgroups(cfg: Config, name: str) -> list[Path]:
    """Make the cgroups jailrun makes for a tenant with a session (v1 memory, pids, cpu; v2 where mounted)."""
    made = []
    for top in [CGROUPS / c for c in ("memory", "pids", "cpu")] + [CGROUPS / "unified", CGROUPS]:
        if not (top / "cgroup.procs").exists():
            continue
        tenant = top / cfg.cgroup_name / name
        session = tenant / "s4242"
        session.mkdir(parents=True)
        made += [tenant, session]
    if not made:
        pytest.skip("no cgroup hierarchy mounted")
    return made


def test_purge_removes_the_tenants_cgroups_lock_last_use_and_session_records(cg_cfg: Config) -> None:
    """300 purged tenants left 300 of each: cgroups (cpu, memory, pids; v1 and v2), locks/NAME.lock, lastuse/NAME, sessions/NAME."""
    cfg = cg_cfg
    converge(cfg, {"name": "alice", "uid": 10001})
    cgroups = launcher_cgroups(cfg, "alice")
    touch_lastuse(cfg, "alice")
    ended = subprocess.Popen(["true"])
    ended.wait()
    record_session(cfg, "alice", os.getpid())  # a live record is refused below; make it an ended one
    (cfg.sessions_dir("alice") / str(os.getpid())).write_text(f"{ended.pid} 1\n")
    lock = cfg.run_dir / "locks" / "alice.lock"
    assert lock.exists() and cfg.lastuse_path("alice").exists() and cfg.sessions_dir("alice").is_dir()
    result = converge(cfg, {"name": "alice", "state": "absent", "purge": True})
    assert result.changed
    left = [p for p in cgroups if p.exists()]
    assert left == [], left
    assert not lock.exists()
    assert not cfg.lastuse_path("alice").exists()
    assert not cfg.sessions_dir("alice").exists()
    assert not cfg.tenant_dir("alice").exists()
    # Nothing left to do, and no lock file left by doing nothing.
    again = converge(cfg, {"name": "alice", "state": "absent", "purge": True})
    assert not again.changed, again.actions
    assert not lock.exists()


def test_lock_unlinked_by_a_purge_is_taken_again_by_a_locker_that_waited_on_it(cfg: Config) -> None:
    """A locker blocked on the lock file a purge unlinks must not end up holding a file nobody else can see."""
    path = cfg.run_dir / "locks" / "alice.lock"
    holder = tenant_lock(cfg, "alice")
    holder.__enter__()
    old = os.stat(path).st_ino
    got: dict[str, int] = {}

    def wait_for_it() -> None:
        lock = tenant_lock(cfg, "alice")
        with lock as locked:
            assert locked
            held = os.fstat(lock.fd)
            got["links"] = held.st_nlink  # 0: a lock on the unlinked file, which no other locker can see
            got["same"] = os.path.exists(path) and os.path.samestat(held, os.stat(path))

    thread = threading.Thread(target=wait_for_it)
    thread.start()
    # Wait until the waiter is blocked in flock on the old inode (/proc/locks lists waiters with "->").
    while not any(f":{old} " in line and "->" in line for line in Path("/proc/locks").read_text().splitlines()):
        thread.join(0.01)
        assert thread.is_alive()
    os.unlink(path)  # what a purge does, holding the lock (tenant_lock.unlink_locked)
    holder.__exit__()
    thread.join()
    assert got == {"links": 1, "same": True}


def interrupted_create(cfg: Config, name: str, uid: int) -> None:
    """What a create killed between reserving the uid and the rename leaves: .uids/UID and .new-NAME, half filled."""
    registry.reserve_uid(cfg, uid, name)
    staging = cfg.tenants_dir / f".new-{name}"
    (staging / "home").mkdir(parents=True)
    (staging / "etc").mkdir()
    (staging / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")


def test_purge_after_a_create_killed_before_its_rename_clears_staging_and_uid(cfg: Config) -> None:
    """A later purge of that name reported changed=false and left both; the uid could never be given to another tenant."""
    interrupted_create(cfg, "rel302", 13302)
    result = converge(cfg, {"name": "rel302", "state": "absent", "purge": True})
    assert result.changed
    assert result.actions == ["remove .new-rel302 (left by an interrupted create)", "release uid 13302 (left by an interrupted run)"]
    assert not (cfg.tenants_dir / ".new-rel302").exists()
    assert registry.uid_owner(cfg, 13302) is None


def test_uid_left_by_an_interrupted_create_can_be_given_to_another_tenant(cfg: Config) -> None:
    """'uid 13302 already belongs to tenant rel302' although rel302 was never created."""
    interrupted_create(cfg, "rel302", 13302)
    predicted = converge(cfg, {"name": "other", "uid": 13302, "state": "present"}, check=True)
    result = converge(cfg, {"name": "other", "uid": 13302, "state": "present"})
    assert result.actions[0] == "release uid 13302 (left by an interrupted run of rel302)"
    assert predicted.actions == result.actions
    assert registry.uid_owner(cfg, 13302) == "other"


def test_uid_of_a_create_in_progress_is_not_taken(cfg: Config) -> None:
    """A live create (it holds its lock) keeps its reservation and its staging dir."""
    interrupted_create(cfg, "busy", 13303)
    with tenant_lock(cfg, "busy"):
        with pytest.raises(JailError, match="uid 13303 of jail other already belongs to tenant 'busy'"):
            converge(cfg, {"name": "other", "uid": 13303})
        assert registry.uid_owner(cfg, 13303) == "busy"
        assert (cfg.tenants_dir / ".new-busy").is_dir()
    assert not cfg.tenant_dir("other").exists()


def test_purge_killed_after_deleting_the_home_releases_the_uid_on_the_next_purge(cfg: Config) -> None:
    """The uid reservation stayed forever once the home was gone (the uid was read from the home's owner)."""
    converge(cfg, {"name": "alice", "uid": 10001, "state": "present"})
    subprocess.run(["rm", "-rf", str(cfg.tenant_dir("alice"))], check=True)  # where the killed purge stopped
    assert registry.uid_owner(cfg, 10001) == "alice"
    result = converge(cfg, {"name": "alice", "state": "absent", "purge": True})
    assert result.changed
    assert "release uid 10001 (left by an interrupted run)" in result.actions
    assert registry.uid_owner(cfg, 10001) is None


def test_normal_runs_clear_leftovers_of_interrupted_runs(cfg: Config) -> None:
    """A create of the name clears its staging dir and stray uids; an exclusive run clears names only leftovers name."""
    interrupted_create(cfg, "alice", 10005)
    result = converge(cfg, {"name": "alice", "uid": 10001, "state": "present"})
    assert "remove .new-alice (left by an interrupted create)" in result.actions
    assert "release uid 10005 (left by an interrupted run)" in result.actions
    assert registry.uid_owner(cfg, 10005) is None and registry.uid_owner(cfg, 10001) == "alice"
    interrupted_create(cfg, "ghost", 10006)
    results = converge_many(cfg, [{"name": "alice", "state": "present"}], exclusive=True)
    assert [r.name for r in results if r.changed] == ["ghost"]
    assert not (cfg.tenants_dir / ".new-ghost").exists()
    assert registry.uid_owner(cfg, 10006) is None
    assert not any(r.changed for r in converge_many(cfg, [{"name": "alice", "state": "present"}], exclusive=True))


def test_a_kept_home_keeps_its_uid_when_leftovers_are_cleared(cfg: Config) -> None:
    converge(cfg, {"name": "alice", "uid": 10001, "state": "present"})
    converge(cfg, {"name": "alice", "state": "absent"})
    assert not any(r.changed for r in converge_many(cfg, [], exclusive=True))
    assert not converge(cfg, {"name": "alice", "state": "absent"}).changed
    assert registry.uid_owner(cfg, 10001) == "alice"


def test_bulk_run_failing_at_a_busy_jail_reports_what_changed_what_failed_and_what_was_not_attempted(cfg: Config) -> None:
    """It reported FAILED, changed: false although earlier jails were unmounted and later ones never processed."""
    items = [{"name": f"t{i}", "uid": 10000 + i} for i in range(3)]
    converge_many(cfg, items)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        record_session(cfg, "t1", sleeper.pid)
        with pytest.raises(PartialFailure) as err:
            converge_many(cfg, [{"name": i["name"]} for i in items], defaults={"state": "unmounted"})
    finally:
        sleeper.kill()
        sleeper.wait()
    failure = err.value
    assert failure.changed
    assert [r.name for r in failure.results if r.changed] == ["t0"]
    assert failure.failed == "t1" and "live session" in failure.error and "force=true" in failure.error
    assert failure.not_attempted == ["t2"]
    assert "changed before it: t0" in str(failure) and "not attempted: t2" in str(failure)
    assert sorted(jails_with_mounts(read_mountinfo(), str(cfg.jails_dir))) == ["t1", "t2"]


@pytest.fixture
def full_disk_cfg(tmp_path: Path, image_store: Path, mount_guard: None):
    """Tenants on a tmpfs of 1 MiB of its own, filled up; unmounted afterwards."""
    tenants = tmp_path / "small"
    tenants.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "jytest-full", str(tenants)], check=True)
    try:
        cfg = make_config(tmp_path, image_store, tenants_dir=tenants)
        converge(cfg, {"name": "alice", "uid": 10001, "state": "present"})
        fd = os.open(tenants / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"x" * 4096)
        except OSError as exc:
            assert exc.errno == 28
        finally:
            os.close(fd)
        yield cfg
    finally:
        subprocess.run(["umount", "-l", str(tenants)], check=True)


def test_full_disk_error_names_the_jail_and_the_path(full_disk_cfg: Config) -> None:
    """It failed with a bare '[Errno 28] No space left on device' naming no jail."""
    cfg = full_disk_cfg
    with pytest.raises(JailError) as err:
        converge(cfg, {"name": "bob", "uid": 10002})
    message = str(err.value)
    assert "jail bob" in message and "No space left on device" in message and str(cfg.tenants_dir) in message, message
    # Nothing half-created: no staging dir, no uid reserved.
    assert not (cfg.tenants_dir / ".new-bob").exists() and not cfg.tenant_dir("bob").exists()
    assert registry.uid_owner(cfg, 10002) is None
    with pytest.raises(JailError) as err:
        converge(cfg, {"name": "alice", "limits": {"mem": 1 << 20}, "state": "present"})
    message = str(err.value)
    assert "jail alice" in message and "No space left on device" in message and str(cfg.tenant_dir("alice")) in message, message
