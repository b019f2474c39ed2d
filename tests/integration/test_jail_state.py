"""Jail state at scale without the whole mount table: jail_info and bulk converge see half-mounted jails,
jails in pieces and live sessions as before, and repair or unmount them, on both of mounttable's paths.

Bulk calls (more than converge_many's few-jail batch) are what read the whole mount table before issue 21.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from jailyard.config import Config
from jailyard.kernel import umount
from jailyard.lifecycle import converge_many, jail_facts
from jailyard.mountinfo import jails_with_mounts, read_mountinfo
from jailyard.mounttable import ENV_FORCE_MOUNTINFO
from jailyard.sessions import record_session

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

MANY = 20  # more than lifecycle.SMALL_BATCH: the bulk path


@pytest.fixture(params=["listmount", "mountinfo"], autouse=True)
def mount_table(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(ENV_FORCE_MOUNTINFO, "1" if request.param == "mountinfo" else "0")
    return request.param


def table(cfg: Config) -> dict[str, list[str]]:
    return {name: [m.target for m in ms] for name, ms in jails_with_mounts(read_mountinfo(), str(cfg.jails_dir)).items()}


def make_many(cfg: Config) -> list[dict]:
    items = [{"name": f"t{i:02d}", "uid": 12000 + i, "layout": "overlay" if i % 2 else "bind"} for i in range(MANY)]
    converge_many(cfg, items)
    return items


def break_some(cfg: Config) -> None:
    """t00: /home unmounted (half mounted); t02: root gone, /home left below the bare directory (in pieces)."""
    umount(str(cfg.jail_root("t00") / "home"))
    root = cfg.jail_root("t02")
    subprocess.run(["umount", "-l", str(root)], check=True)
    (root / "home").mkdir()
    subprocess.run(["mount", "--bind", str(cfg.tenant_dir("t02") / "home"), str(root / "home")], check=True)


def test_jail_info_sees_half_mounted_jails_jails_in_pieces_and_sessions(cfg: Config) -> None:
    make_many(cfg)
    break_some(cfg)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        record_session(cfg, "t05", sleeper.pid)
        facts = {f["name"]: f for f in jail_facts(cfg)}
    finally:
        sleeper.kill()
        sleeper.wait()
    assert len(facts) == MANY
    half, pieces, whole = facts["t00"], facts["t02"], facts["t04"]
    assert not half["mounted"] and [m["target"] for m in half["mounts"] if not m["mounted"]] == ["/home"]
    assert not pieces["mounted"] and [m["target"] for m in pieces["mounts"] if m["mounted"]] == ["/home"]
    assert whole["mounted"] and all(m["mounted"] for m in whole["mounts"]) and whole["root"] == str(cfg.jail_root("t04"))
    assert facts["t05"]["sessions"] == [sleeper.pid] and whole["sessions"] == []
    assert [m["target"] for m in facts["t01"]["mounts"]] == ["/", "/home", "/etc/passwd", "/etc/group"]  # overlay
    assert [m["target"] for m in whole["mounts"]] == ["/", "/home", "/tmp", "/etc/passwd", "/etc/group"]  # bind


def test_bulk_converge_repairs_half_mounted_jails_and_clears_pieces(cfg: Config) -> None:
    items = make_many(cfg)
    full = table(cfg)
    break_some(cfg)
    results = {r.name: r for r in converge_many(cfg, items)}
    assert results["t00"].actions == ["mount t00: /home"]
    assert results["t02"].before["state"] == "partly mounted" and results["t02"].changed
    assert not any(r.changed for name, r in results.items() if name not in ("t00", "t02"))
    assert {n: sorted(t) for n, t in table(cfg).items()} == {n: sorted(t) for n, t in full.items()}  # nothing stacked
    assert not any(r.changed for r in converge_many(cfg, items))


def test_bulk_unmount_takes_off_every_mount_of_each_jail(cfg: Config) -> None:
    items = make_many(cfg)
    break_some(cfg)
    # Something else mounted below a jail's home: it goes with the jail.
    extra = cfg.jail_root("t04") / "home" / "t04" / "scratch"
    extra.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "scratch", str(extra)], check=True)
    results = converge_many(cfg, [{**item, "state": "unmounted"} for item in items])
    assert all(r.changed for r in results)
    assert table(cfg) == {}
