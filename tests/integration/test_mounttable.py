"""jailyard.mounttable: the same answers from listmount/statmount as from /proc/self/mountinfo, on real jails."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from jailtest import make_config
from jailyard import mounttable
from jailyard.config import Config
from jailyard.lifecycle import converge_many
from jailyard.mountinfo import jails_with_mounts, mounts_under, read_mountinfo

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def both(fn, *args):
    """The answer asked of the kernel and the answer read from mountinfo, which must be equal."""
    return fn(*args, mountinfo=False), fn(*args, mountinfo=True)


def make_jails(cfg: Config) -> Path:
    """A bind jail, an overlay jail, and a jail left in pieces (root gone, /home attached below the bare directory)."""
    converge_many(cfg, [{"name": "b", "uid": 10001}, {"name": "o", "uid": 10002, "layout": "overlay"}, {"name": "p", "uid": 10003}])
    root = cfg.jail_root("p")
    subprocess.run(["umount", "-l", str(root)], check=True)
    (root / "home").mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "--bind", str(cfg.tenant_dir("p") / "home"), str(root / "home")], check=True)
    return root


def test_jail_mounts_are_the_same_as_from_mountinfo(cfg: Config) -> None:
    make_jails(cfg)
    listed, read = both(mounttable.jail_mounts, str(cfg.jails_dir))
    assert listed == read  # every field: ids, root, target, options, type, source
    assert sorted(listed) == ["b", "o", "p"]
    assert [len(listed[n]) for n in ("b", "o", "p")] == [5, 4, 1]
    assert listed == jails_with_mounts(read_mountinfo(), str(cfg.jails_dir))


def test_jail_mounts_of_a_jails_dir_on_its_own_tmpfs(tmp_path: Path, image_store: Path, mount_guard: None) -> None:
    # As a node is set up (jail_launcher_jails_tmpfs): listmount of that tmpfs names exactly the jails' mounts.
    (tmp_path / "jails").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755,size=4m", "jailyard-jails", str(tmp_path / "jails")], check=True)
    cfg = make_config(tmp_path, image_store)
    make_jails(cfg)
    listed, read = both(mounttable.jail_mounts, str(cfg.jails_dir))
    assert listed == read and [len(listed[n]) for n in ("b", "o", "p")] == [5, 4, 1]
    assert both(mounttable.mounts_below, str(cfg.jails_dir))[0] == mounts_under(read_mountinfo(), str(cfg.jails_dir))


def test_mounts_below_a_root_a_stacked_root_a_bare_directory_and_nothing(cfg: Config) -> None:
    pieces = make_jails(cfg)
    b = str(cfg.jail_root("b"))
    listed, read = both(mounttable.mounts_below, b)
    assert listed == read and len(listed) == 5 and listed[0].target == b
    # A second mount stacked on the root: the hidden one and everything below it are found too.
    subprocess.run(["mount", "--bind", str(cfg.tenant_dir("b") / "tmp"), b], check=True)
    listed, read = both(mounttable.mounts_below, b)
    assert listed == read and len(listed) == 6 and [m.target for m in listed].count(b) == 2
    # A jail root that is not a mount: what is below it in the mount holding it.
    listed, read = both(mounttable.mounts_below, str(pieces))
    assert listed == read and [m.target for m in listed] == [f"{pieces}/home"]
    assert both(mounttable.mounts_below, str(cfg.jails_dir / "missing")) == ([], [])
    assert both(mounttable.mounts_below, str(cfg.tenant_dir("b"))) == ([], [])


def test_jail_mounts_of_a_missing_jails_dir_is_empty(tmp_path: Path) -> None:
    assert both(mounttable.jail_mounts, str(tmp_path / "missing")) == ({}, {})


def test_the_environment_forces_the_mountinfo_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(mounttable.ENV_FORCE_MOUNTINFO, raising=False)
    assert mounttable.use_listmount()  # this kernel (6.8+) has listmount and statmount
    for value, listmount in (("1", False), ("yes", False), ("0", True), ("", True)):
        monkeypatch.setenv(mounttable.ENV_FORCE_MOUNTINFO, value)
        assert mounttable.use_listmount() is listmount, value
    monkeypatch.setenv(mounttable.ENV_FORCE_MOUNTINFO, "1")
    assert not mounttable.use_listmount() and mounttable.use_listmount(mountinfo=False)
    monkeypatch.delenv(mounttable.ENV_FORCE_MOUNTINFO)
    assert not mounttable.use_listmount(mountinfo=True)


def test_options_render_as_mountinfo_does() -> None:
    assert mounttable.options_of(0) == "rw,relatime"
    assert mounttable.options_of(0x1 | 0x2 | 0x4 | 0x8) == "ro,nosuid,nodev,noexec,relatime"
    assert mounttable.options_of(0x10 | 0x80) == "rw,noatime,nodiratime"
    assert mounttable.options_of(0x20 | 0x200000) == "rw,nosymfollow"
