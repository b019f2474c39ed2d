"""A tenant controls its home, tmp and upper layer: a symlink planted there never makes root act elsewhere."""

from __future__ import annotations

import os
import shutil

import pytest

from jailyard import kernel, safefs
from jailyard.config import Config
from jailyard.errors import JailError
from jailyard.lifecycle import converge, mount_tenant
from jailyard.mountinfo import read_mountinfo
from jailyard.safefs import open_beneath

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture(params=["openat2", "walk"], autouse=True)
def resolve(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test twice: paths resolved by openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), and
    one component at a time (the fallback where the kernel has no openat2, forced here)."""
    monkeypatch.setattr(safefs, "_OPENAT2", request.param == "openat2")
    return request.param


def test_open_beneath_opens_below_its_root_and_refuses_every_symlink_naming_it(tmp_path, resolve: str, monkeypatch) -> None:
    calls = []
    real = kernel.open_beneath
    monkeypatch.setattr(kernel, "open_beneath", lambda *a: calls.append(a[1]) or real(*a))
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f").write_text("x")
    (tmp_path / "a" / "link").symlink_to("/etc")
    (tmp_path / "a" / "flink").symlink_to("b/f")
    top = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        for rel, directory in (("a/b", True), ("./a//b/f", False)):
            fd = open_beneath(top, rel, directory=directory)
            try:
                assert os.fstat(fd).st_ino == os.stat(tmp_path / rel).st_ino
            finally:
                os.close(fd)
        assert calls == (["a/b", "a/b/f"] if resolve == "openat2" else [])  # one openat2 each, or the walk alone
        with pytest.raises(JailError, match=r"refusing to follow symlink at a/link/passwd \(component 'link'\)"):
            open_beneath(top, "a/link/passwd", directory=False)
        with pytest.raises(JailError, match=r"refusing to follow symlink at a/link \(component 'link'\)"):
            open_beneath(top, "a/link")
        with pytest.raises(JailError, match=r"refusing to follow symlink at a/flink$"):
            open_beneath(top, "a/flink", directory=False)
        with pytest.raises(JailError, match=r"a/b/f: component 'f' is not a directory"):
            open_beneath(top, "a/b/f")
        with pytest.raises(JailError, match=r"'\.\.' is not allowed"):
            open_beneath(top, "a/../../etc")
        with pytest.raises(JailError, match=r"cannot open a/missing: No such file"):
            open_beneath(top, "a/missing")
    finally:
        os.close(top)


def etc_state() -> list[tuple[str, int, int]]:
    return sorted((p, os.lstat(f"/etc/{p}").st_mode, os.lstat(f"/etc/{p}").st_ino) for p in os.listdir("/etc"))


def no_mount_on(path: str) -> bool:
    return all(not (m.target == path or m.target.startswith(f"{path}/")) for m in read_mountinfo())


def test_home_replaced_by_symlink_to_etc_is_refused_at_mount(cfg: Config) -> None:
    converge(cfg, {"name": "alice", "uid": 10001, "state": "present"})
    home = cfg.tenant_dir("alice") / "home"
    shutil.rmtree(home)
    home.symlink_to("/etc")
    before = etc_state()
    with pytest.raises(JailError, match="refusing alice/home: expected a directory, found a symlink"):
        converge(cfg, {"name": "alice", "state": "mounted"})
    # The launcher's mount step does not repair, it mounts: it must refuse too.
    with pytest.raises(JailError, match=r"refusing to follow symlink at .*/tenants/alice/home"):
        mount_tenant(cfg, "alice")
    assert etc_state() == before
    assert no_mount_on("/etc")
    # Nothing of the jail is left half-mounted.
    assert no_mount_on(str(cfg.jail_root("alice")))


def test_tenant_home_dir_replaced_by_symlink_is_never_chowned_through(cfg: Config) -> None:
    converge(cfg, {"name": "alice", "uid": 10001, "state": "present"})
    own = cfg.tenant_dir("alice") / "home" / "alice"
    own.rmdir()
    decoy = cfg.tenants_dir.parent / "decoy"
    decoy.mkdir()
    own.symlink_to(decoy)
    with pytest.raises(JailError, match=r"refusing .*home/alice: expected a directory, found a symlink"):
        converge(cfg, {"name": "alice", "state": "present"})
    st = decoy.stat()
    assert (st.st_uid, st.st_mode & 0o7777) == (0, 0o755)


def test_symlink_planted_in_overlay_upper_does_not_redirect_the_home_mount(cfg: Config) -> None:
    converge(cfg, {"name": "bob", "uid": 10002, "layout": "overlay", "state": "present"})
    upper = cfg.tenant_dir("bob") / "upper"
    # What a tenant could leave in its upper layer: /home replaced by a link to the host's /etc.
    (upper / "home").symlink_to("/etc")
    before = etc_state()
    with pytest.raises(JailError, match="refusing to follow symlink at bob:/home"):
        converge(cfg, {"name": "bob", "state": "mounted"})
    assert etc_state() == before
    assert no_mount_on("/etc")
    converge(cfg, {"name": "bob", "state": "unmounted", "force": True})


def test_purge_with_home_replaced_by_symlink_removes_only_the_link(cfg: Config) -> None:
    converge(cfg, {"name": "alice", "uid": 10001})
    decoy = cfg.tenants_dir.parent / "decoy-etc"
    decoy.mkdir()
    (decoy / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    converge(cfg, {"name": "alice", "state": "unmounted"})
    home = cfg.tenant_dir("alice") / "home"
    shutil.rmtree(home)
    home.symlink_to(decoy)
    etc_link = cfg.tenant_dir("alice") / "tmp" / "etc"
    etc_link.symlink_to("/etc")
    before = etc_state()
    converge(cfg, {"name": "alice", "state": "absent", "purge": True})
    assert (decoy / "passwd").read_text().startswith("root:")
    assert etc_state() == before
    assert not cfg.tenant_dir("alice").exists()


def test_files_written_by_root_are_never_followed_symlinks(cfg: Config) -> None:
    converge(cfg, {"name": "alice", "uid": 10001, "state": "present"})
    passwd = cfg.tenant_dir("alice") / "etc" / "passwd"
    passwd.unlink()
    target = cfg.tenants_dir.parent / "victim"
    target.write_text("untouched\n")
    passwd.symlink_to(target)
    converge(cfg, {"name": "alice", "state": "present"})
    assert target.read_text() == "untouched\n"
    assert not passwd.is_symlink()
