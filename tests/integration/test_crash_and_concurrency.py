"""kill -9 at any point leaves the old or the new state; two runs at once agree."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from jailtest import REPO
from jailyard import registry
from jailyard.config import Config
from jailyard.lifecycle import converge_many
from jailyard.mountinfo import jails_with_mounts, read_mountinfo

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

RUNNER = """
import sys
sys.path.insert(0, {lib!r})
from jailyard.config import load_config
from jailyard.lifecycle import converge_many
cfg = load_config({conf!r})
converge_many(cfg, [{{"name": f"t{{i}}", "uid": 10000 + i, "layout": "bind" if i % 2 else "overlay"}} for i in range({n})], defaults={{"state": {state!r}}})
"""


def runner(cfg: Config, n: int, state: str) -> list[str]:
    code = RUNNER.format(lib=str(REPO / "module_utils"), conf=str(cfg.path), n=n, state=state)
    return [sys.executable, "-c", code]


def assert_each_tenant_whole_or_absent(cfg: Config) -> None:
    for entry in os.listdir(cfg.tenants_dir):
        if entry.startswith("."):
            continue  # staging and the uid index: invisible to every reader
        tdir = cfg.tenant_dir(entry)
        home = tdir / "home" / entry
        st = home.lstat()
        assert st.st_uid == 10000 + int(entry[1:]), entry
        for rel in ("etc/passwd", "etc/group", "plan", "tenant.json"):
            assert (tdir / rel).is_file(), (entry, rel)
        assert registry.load_spec(cfg, entry).name == entry
        assert registry.load_plan(cfg, entry).name == entry


def test_kill_9_in_the_middle_of_a_create_leaves_whole_tenants_and_the_next_run_repairs(cfg: Config) -> None:
    n = 120
    rng = random.Random(7)
    for _ in range(6):
        proc = subprocess.Popen(runner(cfg, n, "mounted"))
        time.sleep(rng.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert_each_tenant_whole_or_absent(cfg)
    subprocess.run(runner(cfg, n, "mounted"), check=True)
    assert_each_tenant_whole_or_absent(cfg)
    assert registry.list_tenants(cfg) == sorted(f"t{i}" for i in range(n))
    mounted = jails_with_mounts(read_mountinfo(), str(cfg.jails_dir))
    assert len(mounted) == n
    for name, mounts in mounted.items():
        assert len(mounts) == (5 if int(name[1:]) % 2 else 4), (name, [m.target for m in mounts])
    assert not [e for e in os.listdir(cfg.tenants_dir) if e.startswith(".new-")]
    results = converge_many(cfg, [{"name": f"t{i}", "uid": 10000 + i, "layout": "bind" if i % 2 else "overlay"} for i in range(n)])
    assert not any(r.changed for r in results)
    converge_many(cfg, [], exclusive=True, defaults={"purge": True})
    # Purged whole: no uid reservation, staging dir, lock, last-use stamp or session dir is left behind.
    assert os.listdir(cfg.tenants_dir) in ([], [".uids"]) and os.listdir(cfg.uid_index()) == []
    for records in ("locks", "lastuse", "sessions"):
        assert not os.path.isdir(cfg.run_dir / records) or os.listdir(cfg.run_dir / records) == [], records


def test_two_runs_at_once_both_succeed_and_mount_each_jail_once(cfg: Config) -> None:
    n = 80
    procs = [subprocess.Popen(runner(cfg, n, "mounted"), stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    mounted = jails_with_mounts(read_mountinfo(), str(cfg.jails_dir))
    assert len(mounted) == n
    for name, mounts in mounted.items():
        assert len(mounts) == (5 if int(name[1:]) % 2 else 4), name
    procs = [subprocess.Popen(runner(cfg, n, state), stderr=subprocess.PIPE, text=True) for state in ("unmounted", "unmounted")]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert jails_with_mounts(read_mountinfo(), str(cfg.jails_dir)) == {}
