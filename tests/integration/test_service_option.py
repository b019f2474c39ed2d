"""`service: true` end to end (issue 19), as root with the real launcher: converging
{name, uid, program, service: true, state: mounted} runs the program under the supervisor loop
(detached, as on a host without systemd), a second converge changes nothing, expiry keeps the jail
mounted, `service: false` stops it, `unmounted` stops it before the unmount, and a purge leaves no
loop process and no run file."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from jailtest import REPO, make_config, remove_cgroups, wait_until
from jailyard import service
from jailyard.config import Config
from jailyard.control import list_sessions
from jailyard.errors import JailError
from jailyard.expiry import expire_pass
from jailyard.kernel import umount
from jailyard.lifecycle import converge, jail_facts
from jailyard.mountinfo import read_mountinfo
from jailyard.sessions import process_starttime

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("gcc") is None, reason="needs root and gcc")


@pytest.fixture(scope="module")
def jr(tmp_path_factory: pytest.TempPathFactory, image_store: Path):
    base = tmp_path_factory.mktemp("service-option")
    cfg = make_config(base, image_store, cgroup_name=f"jailyard-test-service-{os.getpid()}")
    build = base / "build"
    subprocess.run(
        ["make", "-s", "-C", str(REPO / "launcher"), f"BUILD={build}", f"CONFIG={cfg.path}", f"AUDIT_LOG={base}/log/launch.log"], check=True
    )
    os.chmod(build / "jailrun", 0o4755)
    try:
        yield cfg, str(build / "jailrun"), base / "log"
    finally:
        for name in ("svc", "nosvc"):
            service.stop(cfg, name, timeout=10)
        for m in reversed([m for m in read_mountinfo() if m.target.startswith(f"{base}/")]):
            umount(m.target, detach=True)
        remove_cgroups(cfg.cgroup_name)


@pytest.fixture
def loop_env(jr: tuple[Config, str, Path], monkeypatch: pytest.MonkeyPatch):
    """The loop as on a host without systemd, running the test's launcher, logging below the test's dir."""
    cfg, jailrun, log_dir = jr
    monkeypatch.setattr(service, "JAILRUN", jailrun)
    monkeypatch.setattr(service, "LOG_DIR", str(log_dir))
    monkeypatch.setattr(service, "_has_systemd", lambda: False)
    return cfg, log_dir


def alive(pid: int, starttime: str) -> bool:
    return process_starttime(pid) == starttime


def test_service_true_runs_the_program_converges_idempotently_stops_on_false_and_purge_leaves_nothing(loop_env) -> None:
    cfg, log_dir = loop_env
    item = {"name": "svc", "uid": 10031, "program": "/bin/sleep 1000", "service": True, "state": "mounted"}
    predicted = converge(cfg, item, check=True)
    assert predicted.actions[-1] == "start the service of svc: /bin/sleep 1000"
    assert service.status(cfg, "svc") is None  # check mode started nothing

    first = converge(cfg, item)
    assert first.actions == predicted.actions
    st = service.status(cfg, "svc")
    assert st is not None and st["program"] == ["/bin/sleep", "1000"]
    assert wait_until(lambda: [s.program for s in list_sessions(cfg, "svc")] == ["/bin/sleep"]), list_sessions(cfg, "svc")
    loop_pid, loop_start = st["pid"], st["starttime"]
    assert "jailyard.service" in Path(f"/proc/{loop_pid}/cmdline").read_text()
    assert (log_dir / "service-svc.log").exists()
    (fact,) = jail_facts(cfg, "svc")
    assert fact["service"] is True and fact["service_status"]["running"] and fact["service_status"]["starts"] == 1

    again = converge(cfg, item)
    assert (again.changed, again.actions) == (False, [])
    assert converge(cfg, item, check=True).actions == []
    assert alive(loop_pid, loop_start) and service.status(cfg, "svc")["starts"] == 1

    for _ in range(3):  # expiry leaves the jail of a running service mounted
        assert expire_pass(cfg, log=False).unmounted == []
    assert alive(loop_pid, loop_start)

    off = converge(cfg, {**item, "service": False})
    assert off.actions == ["stop the service of svc (service: false)", "write svc/tenant.json"]
    assert not alive(loop_pid, loop_start)
    assert service.status(cfg, "svc") is None and list_sessions(cfg, "svc") == []
    assert "service" not in (cfg.tenant_dir("svc") / "tenant.json").read_text()
    assert converge(cfg, {**item, "service": False}).actions == []

    assert converge(cfg, item).actions == ["write svc/tenant.json", "start the service of svc: /bin/sleep 1000"]
    st = service.status(cfg, "svc")
    assert wait_until(lambda: list_sessions(cfg, "svc") != [])
    down = converge(cfg, {**item, "state": "unmounted"})  # its own session does not refuse the unmount
    assert down.actions[0] == "stop the service of svc" and down.actions[1].startswith("unmount svc: ")
    assert not alive(st["pid"], st["starttime"]) and service.status(cfg, "svc") is None

    assert converge(cfg, item).actions[-1] == "start the service of svc: /bin/sleep 1000"  # mounted again: started
    st = service.status(cfg, "svc")
    assert wait_until(lambda: list_sessions(cfg, "svc") != [])
    gone = converge(cfg, {"name": "svc", "state": "absent", "purge": True})
    assert gone.actions[0] == "stop the service of svc" and gone.actions[1].startswith("unmount svc: ")
    assert not alive(st["pid"], st["starttime"])
    leftovers = [p for p in cfg.run_dir.rglob("*") if "svc" in p.name]
    assert leftovers == [] and not cfg.tenant_dir("svc").exists()


def test_service_without_a_program_is_refused_and_nothing_is_created(loop_env) -> None:
    cfg, _ = loop_env
    with pytest.raises(JailError, match=r"^jail nosvc has service: true but no program to run"):
        converge(cfg, {"name": "nosvc", "uid": 10032, "service": True})
    assert not cfg.tenant_dir("nosvc").exists() and service.status(cfg, "nosvc") is None


def test_purge_removes_the_state_a_killed_loop_left(loop_env) -> None:
    """A loop killed by SIGKILL (or a crash) cannot remove <run>/services/NAME: the purge does."""
    cfg, _ = loop_env
    converge(cfg, {"name": "nosvc", "uid": 10032, "state": "present"})
    stale = cfg.run_dir / "services" / "nosvc"
    stale.parent.mkdir(exist_ok=True)
    stale.write_text('{"pid": 1, "starttime": "0", "state": "running", "program": ["/bin/sleep"]}')
    assert service.status(cfg, "nosvc") is None  # a dead loop's state is ignored ...
    gone = converge(cfg, {"name": "nosvc", "state": "absent", "purge": True})
    assert f"remove {stale}" in gone.actions and not stale.exists()  # ... and purged
