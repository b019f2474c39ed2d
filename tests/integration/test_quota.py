"""Per-tenant disk and inode quotas (issue 16) on a filesystem the test makes itself.

Each quota test makes an ext4 with the `quota` and `project` features in a sparse file, loop-mounts
it with `prjquota` as the tenants directory, and unmounts it (detaching the loop device) in the
fixture's teardown, even when the test fails. A kernel that cannot mount it (built without
CONFIG_QUOTA and CONFIG_QFMT_V2, as some VM kernels are; Debian's has both) skips those tests,
saying so. The bad-input tests run anywhere.

Reproduction (issue 16): a tenant wrote past its claimed disk budget without resistance and filled a
small filesystem in 0.08 s, after which other tenants' writes failed.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import subprocess
from pathlib import Path

import pytest

from jailtest import make_config
from jailyard import quota
from jailyard.errors import JailError
from jailyard.lifecycle import converge
from jailyard.usage import tenant_usage

if os.geteuid() != 0:
    pytest.skip("the quota tests need root", allow_module_level=True)

ALICE, BOB = 47201, 47202


def _mounted_on(target: Path) -> bool:
    with open("/proc/self/mountinfo") as fh:
        return any(line.split()[4] == str(target) for line in fh)


@pytest.fixture
def quota_fs(tmp_path: Path, image_store: Path, cfg):
    """A config whose tenants directory is a fresh 256 MiB ext4 with enforced project quotas."""
    image = tmp_path / "fs.img"
    mnt = tmp_path / "qfs"
    mnt.mkdir()
    with open(image, "wb") as fh:
        fh.truncate(256 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-I", "256", "-O", "quota,project", str(image)], check=True)
    r = subprocess.run(["mount", "-o", "loop,prjquota", str(image), str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"this kernel cannot mount ext4 with project quotas (CONFIG_QUOTA, CONFIG_QFMT_V2): {r.stderr.strip().splitlines()[0]}")
    try:
        (mnt / "tenants").mkdir()
        yield make_config(tmp_path, image_store, cgroup_name=cfg.cgroup_name, tenants_dir=mnt / "tenants"), mnt
    finally:
        for jail in sorted((tmp_path / "jails").glob("*"), reverse=True):
            subprocess.run(["umount", "-R", "-l", str(jail)], check=False, capture_output=True)
        if _mounted_on(mnt):
            subprocess.run(["umount", str(mnt)], check=True)  # the loop device goes with it (autoclear)
        loops = subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True).stdout.split(":")[0]
        if loops:
            subprocess.run(["losetup", "-d", loops], check=False)


def _as(uid: int, code: str, directory: Path) -> subprocess.CompletedProcess:
    """Run Python as the tenant uid (what a jailed program is to the filesystem), in `directory`.

    The directory is opened here, as root, and handed over as descriptor DIR: the test's own tmp
    path (root 0700) is not the tenant's to walk, and root would not do (CAP_SYS_RESOURCE passes
    quotas)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return subprocess.run(
            ["python3", "-c", code.replace("DIR", str(fd))],
            user=uid,
            group=uid,
            extra_groups=[],
            pass_fds=(fd,),
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        os.close(fd)


FILL = """
import errno, os, sys
written = 0
try:
    with open(os.open({name!r}, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600, dir_fd=DIR), "wb") as fh:
        while written < {most}:
            fh.write(b"x" * 65536); fh.flush(); written += 65536
except OSError as exc:
    print("ERR", errno.errorcode[exc.errno], written); sys.exit(0)
print("OK", written)
"""


def _fill(uid: int, path: Path, most: int) -> tuple[str, int]:
    r = _as(uid, FILL.format(name=path.name, most=most), path.parent)
    if not r.stdout.split():
        return f"no output: {r.stderr.strip()[-300:]}", 0
    word, *rest = r.stdout.split()
    return (rest[0] if word == "ERR" else "OK"), int(rest[-1])


@pytest.mark.parametrize("layout", ["bind", "overlay"])
def test_tenant_fill_stops_at_quota_with_edquot_others_still_write(quota_fs, layout: str) -> None:
    """home and tmp (bind) or the upper layer (overlay) stop at the quota with EDQUOT; another tenant and the host still write."""
    cfg, mnt = quota_fs
    converge(cfg, {"name": "alice", "uid": ALICE, "layout": layout, "limits": {"disk": "8M"}, "state": "mounted"})
    converge(cfg, {"name": "bob", "uid": BOB, "state": "mounted"})
    root = cfg.jail_root("alice")
    targets = [root / "home/alice/big"] + ([root / "tmp/big"] if layout == "bind" else [root / "var/tmp/big"])
    if layout == "overlay":
        os.chmod(root / "var/tmp", 0o1777)  # through the overlay: the upper layer holds it
    for target in targets:
        err, written = _fill(ALICE, target, 64 << 20)
        assert err == "EDQUOT", f"{target}: {err} after {written} bytes"
        assert written <= 8 << 20
        os.unlink(target)
    err, written = _fill(BOB, cfg.jail_root("bob") / "home/bob/big", 16 << 20)
    assert err == "OK" and written == 16 << 20
    (mnt / "host-file").write_bytes(b"x" * (16 << 20))
    use = tenant_usage(cfg, "alice", ALICE, {})
    assert use["disk"]["limit"] == 8 << 20 and use["disk"]["current"] < 8 << 20


def test_no_escape_by_hard_link_chown_or_rename(quota_fs) -> None:
    """A hard link or rename out of the project fails (EXDEV); chown to another uid keeps the file charged."""
    cfg, _mnt = quota_fs
    converge(cfg, {"name": "alice", "uid": ALICE, "limits": {"disk": "8M"}, "state": "mounted"})
    converge(cfg, {"name": "bob", "uid": BOB, "state": "mounted"})
    home = cfg.tenant_dir("alice") / "home/alice"
    (home / "f").write_bytes(b"x" * (4 << 20))
    os.chown(home / "f", ALICE, ALICE)
    before = quota.get(cfg.tenants_dir, ALICE)["bytes"]
    assert before >= 4 << 20
    os.chown(home / "f", BOB, BOB)  # tenant root (mapped ids) or root itself changing the owner
    assert quota.get(cfg.tenants_dir, ALICE)["bytes"] == before
    os.chown(home / "f", ALICE, ALICE)
    outside = cfg.tenant_dir("bob") / "home/bob"
    for move in (os.link, os.rename):
        with pytest.raises(OSError) as exc:
            move(home / "f", outside / "stolen")
        assert exc.value.errno == errno.EXDEV
    # Within the tenant's own dirs a rename is fine and stays charged.
    os.rename(home / "f", cfg.tenant_dir("alice") / "tmp/f")
    assert quota.get(cfg.tenants_dir, ALICE)["bytes"] == before


def test_inode_quota_holds_against_a_million_empty_files(quota_fs) -> None:
    """A tenant creating a million empty files is stopped (EDQUOT) at its inode limit, in bounded time."""
    cfg, _mnt = quota_fs
    converge(cfg, {"name": "alice", "uid": ALICE, "limits": {"inodes": 2000}, "state": "mounted"})
    code = """
import errno, os
n = 0
try:
    for n in range(1_000_000):
        os.close(os.open(f"f{n}", os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=DIR))
except OSError as exc:
    print(errno.errorcode[exc.errno], n)
else:
    print("OK", n)
"""
    word, count = _as(ALICE, code, cfg.jail_root("alice") / "home/alice").stdout.split()
    assert word == "EDQUOT" and int(count) < 2000
    assert tenant_usage(cfg, "alice", ALICE, {})["inodes"]["full"] is True


def test_quota_below_usage_is_applied_and_deletes_nothing(quota_fs) -> None:
    """Lowering the quota below what the tenant holds: applied, every file kept, new writes fail (documented)."""
    cfg, _mnt = quota_fs
    converge(cfg, {"name": "alice", "uid": ALICE, "limits": {"disk": "32M"}, "state": "mounted"})
    home = cfg.tenant_dir("alice") / "home/alice"
    (home / "keep").write_bytes(b"k" * (8 << 20))
    result = converge(cfg, {"name": "alice", "limits": {"disk": "1M"}, "state": "mounted"})
    assert any("set the quota of alice" in a for a in result.actions)
    assert (home / "keep").read_bytes() == b"k" * (8 << 20)
    err, _written = _fill(ALICE, cfg.jail_root("alice") / "home/alice/more", 1 << 20)
    assert err == "EDQUOT"
    assert converge(cfg, {"name": "alice", "limits": {"disk": "1M"}, "state": "mounted"}).actions == []


def test_existing_files_join_the_project_and_second_run_changes_nothing(quota_fs) -> None:
    """A kept home's files are put in the tenant's project once; the next converge has nothing to do."""
    cfg, _mnt = quota_fs
    converge(cfg, {"name": "alice", "uid": ALICE, "state": "present"})
    home = cfg.tenant_dir("alice") / "home"
    fd = os.open(home, os.O_RDONLY)
    try:
        quota.set_project(fd, 0, False)  # as if made before the filesystem had quotas
    finally:
        os.close(fd)
    (home / "alice/old").write_bytes(b"o" * (1 << 20))
    for path in (home / "alice", home / "alice/old"):
        fd = os.open(path, os.O_RDONLY)
        try:
            quota.set_project(fd, 0, path.is_dir())
        finally:
            os.close(fd)
    assert quota.get(cfg.tenants_dir, ALICE)["bytes"] < 1 << 20
    result = converge(cfg, {"name": "alice", "limits": {"disk": "4M"}, "state": "present"})
    assert any("in project 47201" in a for a in result.actions)
    assert quota.get(cfg.tenants_dir, ALICE)["bytes"] >= 1 << 20, "the kept file was not put in the project"
    assert converge(cfg, {"name": "alice", "limits": {"disk": "4M"}, "state": "present"}).actions == []


def test_disk_limit_on_a_filesystem_without_project_quota_is_refused(cfg) -> None:
    """A disk quota asked where the tenants directory has no project quota, with disk_backend = quota:
    one clear error, no jail made (the default, auto, makes a volume instead: test_volume.py)."""
    why = quota.support(cfg.tenants_dir)
    if why is None:
        pytest.skip(f"{cfg.tenants_dir} has project quotas here")
    cfg = dataclasses.replace(cfg, disk_backend="quota")
    with pytest.raises(JailError) as exc:
        converge(cfg, {"name": "alice", "uid": ALICE, "limits": {"disk": "1G"}, "state": "present"})
    msg = str(exc.value)
    assert "alice" in msg and str(cfg.tenants_dir) in msg and "project quota" in msg and "\n" not in msg
    assert not (cfg.tenants_dir / "alice").exists() and not list(cfg.tenants_dir.glob(".new-*"))
    assert not (cfg.tenants_dir / ".uids" / str(ALICE)).exists()


@pytest.mark.parametrize(
    ("limits", "named"),
    [
        ({"disk": "lots"}, "'lots'"),
        ({"disk": "10X"}, "'10X'"),
        ({"memsw": "-1"}, "'-1'"),
        ({"inodes": "many"}, "'many'"),
        ({"cpu_rate": "half"}, "'half'"),
        ({"cpu_weight": 0.5}, "0.5"),
        ({"cpu_weight": 20000}, "20000"),
    ],
)
def test_bad_sizes_and_rates_get_one_line_naming_the_value(cfg, limits: dict, named: str) -> None:
    with pytest.raises(JailError) as exc:
        converge(cfg, {"name": "alice", "uid": ALICE, "limits": limits, "state": "present"})
    msg = str(exc.value)
    key = next(iter(limits))
    assert named in msg and f"limits.{key}" in msg and "\n" not in msg
    assert not (cfg.tenants_dir / "alice").exists()


def test_project_walk_never_follows_a_symlink_nor_opens_a_fifo(tmp_path: Path) -> None:
    """assign_tree (what puts a kept home in its project) on a hostile tree: a symlink to a host file,
    a FIFO (opening it would hang), a hard link. Project 0 with the inherit flag works on any ext4,
    so this runs without quota support; a second walk changes nothing."""
    home = tmp_path / "t" / "home"
    (home / "a" / "sub").mkdir(parents=True)
    (home / "a" / "f").write_text("x")
    os.link(home / "a" / "f", home / "a" / "hard")
    (home / "a" / "link").symlink_to("/etc/passwd")
    os.mkfifo(home / "a" / "fifo")
    fd = os.open(tmp_path / "t", os.O_PATH | os.O_DIRECTORY)
    try:
        try:
            assert quota.assign_tree(fd, "home", 0) == 3  # home, a, sub get the inherit flag
        except OSError as exc:
            pytest.skip(f"{tmp_path} has no FS_IOC_FSSETXATTR: {exc.strerror}")
        assert quota.dir_project(fd, "home") == (0, True)
        assert quota.assign_tree(fd, "home", 0) == 0
        with open("/etc/passwd", "rb") as fh:
            host = fh.fileno()
            assert quota.get_project(host)[1] is False  # the symlink's target was never touched
    finally:
        os.close(fd)
