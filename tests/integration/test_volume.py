"""Per-tenant volumes (volume.py): limits.disk and limits.inodes on a kernel without quota support.

This host's kernel (and its CI's) is built without CONFIG_QUOTA: test_quota.py skips every quota test
there, and before volumes `limits.disk` was refused, so any tenant could fill the host's disk
(issue 16: a tenant filled a small filesystem in 0.08 s, after which other tenants' writes failed).
These tests run on real loop devices: a volume-backed tenant keeps its home, tmp or upper+work in
<tenants>/<name>/volume.img (ext4 in a sparse file), loop-attached and mounted by the mount step.
Every mount under the test's tmp path is taken off and every loop device on a file there detached
in the fixture's teardown, even when the test fails.
"""

from __future__ import annotations

import dataclasses
import errno
import glob
import os
import shlex
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from jailtest import REPO, make_config, remove_cgroups
from jailyard import idmap, volume
from jailyard.errors import JailError
from jailyard.expiry import expire_pass
from jailyard.kernel import is_mount_root, umount
from jailyard.lifecycle import converge, mount_tenant
from jailyard.mount import unmount_jail
from jailyard.mountinfo import read_mountinfo
from jailyard.usage import tenant_usage

if os.geteuid() != 0:
    pytest.skip("the volume tests need root", allow_module_level=True)

ALICE, BOB = 47301, 47302
MIB = 1 << 20


def _loops_on(base: Path) -> list[str]:
    """Loop devices attached to a file below base."""
    found = []
    for path in glob.glob("/sys/block/loop*/loop/backing_file"):
        try:
            backing = Path(path).read_text().strip()
        except OSError:
            continue
        if backing.startswith(f"{base}/"):
            found.append("/dev/" + path.split("/")[3])
    return found


def _freed(base: Path) -> list[str]:
    """The loop devices still on files below base once their filesystems had time to go: a lazy unmount
    releases the superblock (and autoclear the device) asynchronously. Waits up to 30 s for none."""
    deadline = time.monotonic() + 30
    while _loops_on(base) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _loops_on(base)


@pytest.fixture
def vcfg(cfg, tmp_path: Path):
    """The test's config (disk_backend auto: volumes, as this kernel has no quota); afterwards every
    mount below tmp_path is taken off (deepest first) and every loop device on a file there detached."""
    if not os.path.exists("/dev/loop-control"):
        pytest.skip("no /dev/loop-control")
    try:
        yield cfg
    finally:
        for target in reversed([m.target for m in read_mountinfo() if m.target.startswith(f"{tmp_path}/")]):
            try:
                umount(target, detach=True)
            except JailError:
                pass
        for dev in _loops_on(tmp_path):
            subprocess.run(["losetup", "-d", dev], check=False, capture_output=True)


def _as(uid: int, code: str, directory: Path) -> subprocess.CompletedProcess:
    """Run Python as the tenant uid (what a jailed program is to the filesystem) with DIR a directory fd
    opened by root (the test's tmp path is root 0700; root itself would write into the reserve)."""
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
            timeout=300,
        )
    finally:
        os.close(fd)


FILL = """
import errno, os, sys
written = 0
try:
    with open(os.open({name!r}, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600, dir_fd=DIR), "wb") as fh:
        while written < {most}:
            fh.write(b"x" * 65536); fh.flush(); os.fsync(fh.fileno()); written += 65536
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
def test_tenant_fill_stops_at_its_volume_with_enospc_others_still_write(vcfg, tmp_path: Path, layout: str) -> None:
    """Reproduction (issue 16): a tenant filling its home and its tmp (bind) or overlay upper layer stops
    at limits.disk (ENOSPC: its volume is full), while another tenant and the host still write."""
    cfg = vcfg
    result = converge(cfg, {"name": "alice", "uid": ALICE, "layout": layout, "limits": {"disk": "16M"}, "state": "mounted"})
    converge(cfg, {"name": "bob", "uid": BOB, "state": "mounted"})
    image, mnt = volume.paths(str(cfg.tenants_dir), "alice")
    assert os.stat(image).st_size == 16 * MIB and os.stat(image).st_blocks * 512 < 16 * MIB  # sparse
    assert is_mount_root(mnt) and any("create jail alice" in a for a in result.actions)
    root = cfg.jail_root("alice")
    targets = [root / "home/alice/big"] + ([root / "tmp/big"] if layout == "bind" else [root / "var/tmp/big"])
    if layout == "overlay":
        os.chmod(root / "var/tmp", 0o1777)  # through the overlay: the upper layer (in the volume) holds it
    for target in targets:
        err, written = _fill(ALICE, target, 64 * MIB)
        assert err == "ENOSPC", f"{target}: {err} after {written} bytes"
        assert written <= 16 * MIB
        # No kernel counts refused writes (failcnt None): `full` says the limit struck. ext4 refused the
        # last 64 KiB write with 88 KiB still free, which `full` as "nothing free" missed.
        disk = tenant_usage(cfg, "alice", ALICE, {})["disk"]
        assert disk["full"] is True and disk["failcnt"] is None, disk
        os.unlink(target)
    err, written = _fill(BOB, cfg.jail_root("bob") / "home/bob/big", 32 * MIB)
    assert (err, written) == ("OK", 32 * MIB)
    (tmp_path / "host-file").write_bytes(b"x" * (32 * MIB))
    use = tenant_usage(cfg, "alice", ALICE, {})
    assert 0 < use["disk"]["limit"] <= 16 * MIB and use["disk"]["current"] < use["disk"]["limit"]
    assert converge(cfg, {"name": "alice", "uid": ALICE, "layout": layout, "limits": {"disk": "16M"}, "state": "mounted"}).actions == []


def test_no_escape_by_hard_link_or_rename_to_another_tenant_or_the_host(vcfg, tmp_path: Path) -> None:
    """A file in the tenant's volume cannot be hard-linked or renamed out to another tenant or the host (EXDEV)."""
    cfg = vcfg
    converge(cfg, {"name": "alice", "uid": ALICE, "limits": {"disk": "16M"}, "state": "mounted"})
    converge(cfg, {"name": "bob", "uid": BOB, "state": "mounted"})
    home = cfg.jail_root("alice") / "home/alice"
    (home / "f").write_bytes(b"x" * MIB)
    for outside in (cfg.jail_root("bob") / "home/bob", tmp_path):
        for move in (os.link, os.rename):
            with pytest.raises(OSError) as exc:
                move(home / "f", outside / "stolen")
            assert exc.value.errno == errno.EXDEV
    vol = Path(volume.paths(str(cfg.tenants_dir), "alice")[1])
    os.rename(vol / "home/alice/f", vol / "tmp/f")  # within its own volume (one mount of it): fine


def test_inode_limit_holds_against_a_million_empty_files(vcfg) -> None:
    """A tenant creating a million empty files stops early (ENOSPC) at its small inode limit."""
    cfg = vcfg
    converge(cfg, {"name": "alice", "uid": ALICE, "limits": {"disk": "64M", "inodes": 2000}, "state": "mounted"})
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
    assert word == "ENOSPC" and int(count) < 2048
    assert tenant_usage(cfg, "alice", ALICE, {})["inodes"]["full"] is True


def test_a_create_makes_its_volume_on_a_loop_device_it_lets_go(vcfg, tmp_path: Path) -> None:
    """mkfs.ext4 runs on the image's loop device (its not-mounted check is then one O_EXCL open, not a
    scan of the mount table): once created, no device stays attached, the filesystem on the file is
    whole, and it mounts with the staged home in it."""
    cfg = vcfg
    converge(cfg, {"name": "alice", "uid": ALICE, "limits": {"disk": "16M"}, "state": "present"})
    assert _freed(tmp_path) == []
    image = cfg.tenant_dir("alice") / "volume.img"
    fsck = subprocess.run(["e2fsck", "-f", "-n", str(image)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    converge(cfg, {"name": "alice", "state": "mounted"})
    assert len(_loops_on(tmp_path)) == 1
    home = cfg.jail_root("alice") / "home" / "alice"
    assert (home.stat().st_uid, stat.S_IMODE(home.stat().st_mode)) == (ALICE, 0o700)


def test_purge_removes_the_image_and_frees_the_loop_device(vcfg, tmp_path: Path) -> None:
    cfg = vcfg
    converge(cfg, {"name": "alice", "uid": ALICE, "limits": {"disk": "16M"}, "state": "mounted"})
    assert len(_loops_on(tmp_path)) == 1
    result = converge(cfg, {"name": "alice", "state": "absent", "purge": True})
    assert "purge alice/volume.img" in result.actions
    assert not cfg.tenant_dir("alice").exists()
    assert _freed(tmp_path) == []  # autoclear: the last user of the filesystem freed it


def test_removal_without_purge_keeps_the_volume_and_a_new_create_mounts_it(vcfg) -> None:
    cfg = vcfg
    converge(cfg, {"name": "alice", "uid": ALICE, "limits": {"disk": "16M"}, "state": "mounted"})
    (cfg.jail_root("alice") / "home/alice/keep").write_text("kept")
    converge(cfg, {"name": "alice", "state": "absent"})
    assert not is_mount_root(volume.paths(str(cfg.tenants_dir), "alice")[1])
    assert (cfg.tenant_dir("alice") / "volume.img").is_file()
    converge(cfg, {"name": "alice", "uid": ALICE, "limits": {"disk": "16M"}, "state": "mounted"})
    assert (cfg.jail_root("alice") / "home/alice/keep").read_text() == "kept"


def test_resize_up_online_and_shrink_below_usage_refused(vcfg) -> None:
    """Growing limits.disk grows the mounted volume (online); shrinking below what it holds is refused
    with one line and nothing changes; an offline shrink above usage works."""
    cfg = vcfg
    spec = {"name": "alice", "uid": ALICE, "state": "mounted"}
    converge(cfg, {**spec, "limits": {"disk": "32M"}})
    home = cfg.jail_root("alice") / "home/alice"
    (home / "keep").write_bytes(b"k" * (20 * MIB))
    result = converge(cfg, {**spec, "limits": {"disk": "64M"}})
    assert any("grow the volume of alice" in a for a in result.actions)
    if os.statvfs(home).f_blocks * os.statvfs(home).f_frsize < 48 * MIB:
        # The kernel refused to grow it online (no CAP_SYS_RESOURCE here): it grows at its next mount.
        converge(cfg, {"name": "alice", "state": "unmounted"})
        converge(cfg, {**spec, "limits": {"disk": "64M"}})
    sv = os.statvfs(home)
    assert sv.f_blocks * sv.f_frsize > 48 * MIB
    err, written = _fill(ALICE, home / "more", 30 * MIB)
    assert (err, written) == ("OK", 30 * MIB)
    os.unlink(home / "more")
    with pytest.raises(JailError) as exc:
        converge(cfg, {**spec, "limits": {"disk": "8M"}})
    assert "refusing to shrink the volume of alice" in str(exc.value) and "\n" not in str(exc.value)
    assert (home / "keep").read_bytes() == b"k" * (20 * MIB)
    assert converge(cfg, {**spec, "limits": {"disk": "64M"}}).actions == []
    # Offline: below usage, resize2fs refuses (one line, nothing lost); above it, it shrinks.
    converge(cfg, {"name": "alice", "state": "unmounted"})
    with pytest.raises(JailError) as exc:
        converge(cfg, {"name": "alice", "limits": {"disk": "8M"}, "state": "present"})
    assert "cannot resize its volume" in str(exc.value) and "\n" not in str(exc.value)
    converge(cfg, {"name": "alice", "limits": {"disk": "56M"}, "state": "present"})
    assert os.stat(cfg.tenant_dir("alice") / "volume.img").st_size == 56 * MIB
    converge(cfg, {**spec, "limits": {"disk": "56M"}})
    assert (home / "keep").read_bytes() == b"k" * (20 * MIB)


def test_an_existing_tenant_with_data_is_not_moved_into_a_volume(vcfg) -> None:
    """Asking limits.disk of a tenant whose data is on the (quota-less) tenants filesystem: one clear
    refusal, nothing copied or changed."""
    cfg = vcfg
    converge(cfg, {"name": "alice", "uid": ALICE, "state": "mounted"})
    (cfg.tenant_dir("alice") / "home/alice/data").write_text("mine")
    with pytest.raises(JailError) as exc:
        converge(cfg, {"name": "alice", "limits": {"disk": "16M"}, "state": "mounted"})
    msg = str(exc.value)
    assert "alice" in msg and "moving it into a volume" in msg and "\n" not in msg
    assert not (cfg.tenant_dir("alice") / "volume.img").exists()
    assert (cfg.tenant_dir("alice") / "home/alice/data").read_text() == "mine"


def test_a_kept_tenant_dir_is_not_moved_into_a_volume(vcfg) -> None:
    """A tenant removed without purge (its home kept on the tenants filesystem), created again with a disk
    limit: refused in one line, the kept home untouched, no half-made jail."""
    cfg = vcfg
    converge(cfg, {"name": "alice", "uid": ALICE, "state": "present"})
    (cfg.tenant_dir("alice") / "home/alice/data").write_text("mine")
    converge(cfg, {"name": "alice", "state": "absent"})
    with pytest.raises(JailError, match=r"moving it into a volume") as exc:
        converge(cfg, {"name": "alice", "uid": ALICE, "limits": {"disk": "16M"}, "state": "present"})
    assert "\n" not in str(exc.value)
    assert (cfg.tenant_dir("alice") / "home/alice/data").read_text() == "mine"
    assert not (cfg.tenant_dir("alice") / "volume.img").exists() and not (cfg.tenant_dir("alice") / "tenant.json").exists()


@pytest.mark.parametrize(("limits", "named"), [({"disk": "64K"}, "(65536)"), ({"inodes": 1000}, "(none)")])
def test_a_volume_below_its_smallest_size_is_refused_in_one_line(vcfg, limits: dict, named: str) -> None:
    """Too small a disk limit (or inodes without one): one line naming the value, nothing made."""
    cfg = vcfg
    with pytest.raises(JailError) as exc:
        converge(cfg, {"name": "alice", "uid": ALICE, "limits": limits, "state": "present"})
    assert f"limits.disk of alice {named} is below the smallest volume" in str(exc.value) and "\n" not in str(exc.value)
    assert not cfg.tenant_dir("alice").exists() and not list(cfg.tenants_dir.glob(".new-*"))


def test_inode_limit_of_a_volume_cannot_change(vcfg) -> None:
    cfg = vcfg
    converge(cfg, {"name": "alice", "uid": ALICE, "limits": {"disk": "16M", "inodes": 1000}, "state": "present"})
    with pytest.raises(JailError, match=r"limits.inodes of alice cannot change"):
        converge(cfg, {"name": "alice", "limits": {"disk": "16M", "inodes": 5000}, "state": "present"})


def test_half_made_states_are_repaired(vcfg, tmp_path: Path) -> None:
    """The volume mounted but the jail not: the mount step mounts the jail. The jail mounted but the
    volume's mount point gone: converge puts it back from the same loop device (one filesystem per image)."""
    cfg = vcfg
    converge(cfg, {"name": "alice", "uid": ALICE, "limits": {"disk": "16M"}, "state": "mounted"})
    mnt = volume.paths(str(cfg.tenants_dir), "alice")[1]
    root = cfg.jail_root("alice")
    unmount_jail(str(root))
    assert is_mount_root(mnt)
    assert mount_tenant(cfg, "alice").changed and is_mount_root(str(root / "home"))
    loops = _loops_on(tmp_path)
    umount(mnt, detach=True)
    result = converge(cfg, {"name": "alice", "uid": ALICE, "limits": {"disk": "16M"}, "state": "mounted"})
    assert "mount the volume of alice" in result.actions and is_mount_root(mnt)
    assert _loops_on(tmp_path) == loops
    (Path(mnt) / "home/alice/x").write_text("same fs")
    assert (root / "home/alice/x").read_text() == "same fs"
    converge(cfg, {"name": "alice", "state": "unmounted"})
    assert not is_mount_root(mnt) and _freed(tmp_path) == []


def test_disk_backend_volume_is_used_even_where_quotas_exist_and_a_bad_backend_is_named(vcfg) -> None:
    cfg = dataclasses.replace(vcfg, disk_backend="volume")
    converge(cfg, {"name": "alice", "uid": ALICE, "limits": {"inodes": 3000, "disk": "16M"}, "state": "present"})
    assert (cfg.tenant_dir("alice") / "volume.img").is_file()
    bad = dataclasses.replace(vcfg, disk_backend="zfs")
    with pytest.raises(JailError, match=r"invalid disk_backend 'zfs'"):
        converge(bad, {"name": "bob", "uid": BOB, "limits": {"disk": "16M"}, "state": "present"})
    assert not bad.tenant_dir("bob").exists()


def test_a_tenant_without_disk_limits_has_no_volume(vcfg) -> None:
    cfg = vcfg
    converge(cfg, {"name": "bob", "uid": BOB, "state": "mounted"})
    assert not (cfg.tenant_dir("bob") / "volume.img").exists()
    assert "volume" not in (cfg.tenant_dir("bob") / "plan").read_text()


@pytest.fixture(scope="module")
def jr(tmp_path_factory: pytest.TempPathFactory, image_store: Path):
    """A jailrun built for a config of its own (as test_expiry_with_jailrun.py does); afterwards every
    mount below its base is taken off and every loop device on a file there detached."""
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc to build jailrun")
    base = tmp_path_factory.mktemp("volume-jailrun")
    cfg = make_config(base, image_store, cgroup_name=f"jailyard-test-volume-{os.getpid()}")
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
        for dev in _loops_on(base):
            subprocess.run(["losetup", "-d", dev], check=False, capture_output=True)
        remove_cgroups(cfg.cgroup_name)


def test_jailrun_launches_into_a_volume_backed_tenant_cold_and_warm(jr) -> None:
    """Cold: jailrun's mount step attaches and mounts the volume, then the jail; the tenant's writes stop
    at its limit (ENOSPC). Warm: the same jail. Expired: jail and volume go (the loop device is freed), and
    the next launch brings both back with the tenant's files."""
    cfg, jailrun = jr
    base = cfg.tenants_dir.parent
    converge(cfg, {"name": "vlab", "uid": 10071, "limits": {"disk": "16M"}, "state": "present"})
    mnt = volume.paths(str(cfg.tenants_dir), "vlab")[1]
    assert not is_mount_root(mnt) and _loops_on(base) == []
    cold = subprocess.run(
        [jailrun, "vlab", "--", "sh", "-c", "echo kept > /home/vlab/f; dd if=/dev/zero of=/home/vlab/big bs=64k count=1024; echo rc=$?"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cold.returncode == 0, cold.stderr
    assert "rc=1" in cold.stdout and "No space left on device" in cold.stderr
    assert is_mount_root(mnt) and len(_loops_on(base)) == 1
    assert os.stat(Path(mnt) / "home/vlab/big").st_size <= 16 * MIB
    warm = subprocess.run(
        [jailrun, "vlab", "--", "sh", "-c", "rm /home/vlab/big; cat /home/vlab/f"], capture_output=True, text=True, timeout=60
    )
    assert (warm.returncode, warm.stdout) == (0, "kept\n"), warm.stderr
    expire_pass(cfg, log=False)
    time.sleep(0.02)
    assert "vlab" in expire_pass(cfg, log=False).unmounted
    assert not is_mount_root(mnt) and not is_mount_root(str(cfg.jail_root("vlab")))
    assert _freed(base) == []
    again = subprocess.run([jailrun, "vlab", "--", "cat", "/home/vlab/f"], capture_output=True, text=True, timeout=60)
    assert (again.returncode, again.stdout) == (0, "kept\n"), again.stderr
    assert is_mount_root(mnt)


def test_the_mount_step_mounts_a_volume_with_only_light_imports(vcfg) -> None:
    """A cold launch of a volume-backed tenant: the mount step (bin/jailyard-mount, as jailrun runs it)
    attaches and mounts the volume and the jail without loading ctypes, os, struct or subprocess."""
    cfg = vcfg
    converge(cfg, {"name": "alice", "uid": ALICE, "limits": {"disk": "16M"}, "state": "present"})
    script = REPO / "bin" / "jailyard-mount"
    heavy = ["os", "ctypes", "struct", "subprocess", "pathlib", "re", "json", "dataclasses", "jailyard.lifecycle"]
    code = (
        f"import sys; path = {str(script)!r}; "
        "g = {'__file__': path, '__name__': 'jailyard_mount_script'}; "
        "exec(compile(open(path).read(), path, 'exec'), g); "
        "m = sys.modules['jailyard_mount']; "
        f"print(m.mount_step(m.ConfValues({str(cfg.path)!r}), {str(cfg.path)!r}, 'alice')); "
        f"print(' '.join(x for x in {heavy!r} if x in sys.modules))"
    )
    out = subprocess.run(["/usr/bin/python3", "-I", "-S", "-c", code], capture_output=True, text=True, check=True)
    actions, loaded = out.stdout.split("\n", 1)
    assert "mount alice" in actions
    assert loaded.split() == []
    assert is_mount_root(volume.paths(str(cfg.tenants_dir), "alice")[1]) and is_mount_root(str(cfg.jail_root("alice") / "home"))


def test_an_admin_tenant_keeps_its_upper_layer_in_its_volume(vcfg) -> None:
    """Tenant root (admin: true): its upper layer, seeded /etc and all, is made in the volume with its
    owners kept (mkfs.ext4 -d); through the idmapped overlay it sees its own passwd; a second converge
    changes nothing; a purge leaves nothing."""
    cfg = vcfg
    item = {"name": "lab1", "uid": 10010, "layout": "overlay", "admin": True, "limits": {"disk": "32M"}, "state": "mounted"}
    converge(cfg, item)
    base = idmap.range_base(cfg.uid_min, 10010)
    vol = Path(volume.paths(str(cfg.tenants_dir), "lab1")[1])
    assert (vol / "upper/etc/passwd").stat().st_uid == base
    upper = (vol / "upper").stat()
    assert (upper.st_uid, oct(upper.st_mode & 0o777)) == (base, "0o755")
    assert "lab1:x:10010:10010:" in (cfg.jail_root("lab1") / "etc/passwd").read_text()
    assert not (cfg.tenant_dir("lab1") / "upper").exists()
    assert not converge(cfg, item).changed
    converge(cfg, {"name": "lab1", "state": "absent", "purge": True})
    assert not cfg.tenant_dir("lab1").exists()


def _attach_then(image: str, then: str) -> str:
    """A python3 -I program that attaches image (volume.attach: dev, fd) and then runs `then`."""
    return (
        f"import os, posix, signal, sys; sys.path.insert(0, {str(REPO / 'module_utils')!r}); from jailyard import volume; "
        f"dev, fd = volume.attach({image!r}); {then}"
    )


def test_an_attach_killed_before_its_mount_leaves_no_loop_device(vcfg, tmp_path: Path) -> None:
    """A mount step killed between LOOP_CONFIGURE and the mount (image attached, not mounted): autoclear
    frees the device when the killed process's fd goes; the next mount attaches afresh and works."""
    cfg = vcfg
    converge(cfg, {"name": "alice", "uid": ALICE, "limits": {"disk": "16M"}, "state": "present"})
    image = volume.paths(str(cfg.tenants_dir), "alice")[0]
    code = _attach_then(image, "print(dev, flush=True); os.kill(os.getpid(), signal.SIGKILL)")
    killed = subprocess.run(["/usr/bin/python3", "-I", "-c", code], capture_output=True, text=True)
    assert killed.returncode == -9 and killed.stdout.startswith("/dev/loop"), killed.stderr
    assert _freed(tmp_path) == []
    converge(cfg, {"name": "alice", "state": "mounted"})
    assert (cfg.jail_root("alice") / "home/alice").is_dir() and len(_loops_on(tmp_path)) == 1


def test_tenant_root_stays_in_its_volume_through_chown_under_its_mapped_ids(jr) -> None:
    """Tenant root (admin: true) fills its upper layer under its mapped ids, chowns the file to another
    of its users and writes on: still ENOSPC at limits.disk (a volume counts blocks, not owners), and
    the host sees the files under the tenant's mapped ids."""
    cfg, jailrun = jr
    converge(cfg, {"name": "vroot", "uid": 10073, "layout": "overlay", "admin": True, "limits": {"disk": "16M"}, "state": "present"})
    script = (
        "dd if=/dev/zero of=/usr/big bs=64k count=1024; echo rc1=$?; chown 1000:1000 /usr/big; echo chown=$?;"
        " dd if=/dev/zero of=/etc/more bs=64k count=1024; echo rc2=$?; echo total=$(( $(wc -c < /usr/big) + $(wc -c < /etc/more) ))"
    )
    try:
        r = subprocess.run([jailrun, "vroot", "--", "sh", "-c", script], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        out = dict(line.split("=", 1) for line in r.stdout.split())
        assert (out["rc1"], out["chown"]) == ("1", "0") and out["rc2"] != "0", (r.stdout, r.stderr)
        assert "No space left on device" in r.stderr and int(out["total"]) <= 16 * MIB, (r.stdout, r.stderr)
        base = idmap.range_base(cfg.uid_min, 10073)
        upper = Path(volume.paths(str(cfg.tenants_dir), "vroot")[1]) / "upper"
        st = (upper / "usr/big").stat()
        assert (st.st_uid, st.st_gid) == (base + 1000, base + 1000)
        assert tenant_usage(cfg, "vroot", 10073, {})["disk"]["full"] is True
    finally:
        converge(cfg, {"name": "vroot", "state": "absent", "purge": True, "force": True})


def test_meta_names_disk_when_a_program_fails_with_its_volume_full(jr) -> None:
    """--meta's killed_by is `disk` for a program that failed on a full volume (ENOSPC), as it is for a
    full project quota (EDQUOT); a program failing otherwise is `none`."""
    cfg, jailrun = jr
    converge(cfg, {"name": "vmeta", "uid": 10074, "limits": {"disk": "16M"}, "state": "present"})
    meta = cfg.tenants_dir.parent / "vmeta.meta"
    try:
        r = subprocess.run([jailrun, "--meta", str(meta), "vmeta", "--", "false"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and "killed_by none" in meta.read_text(), (r.stderr, meta.read_text())
        fill = ["dd", "if=/dev/zero", "of=/home/vmeta/big", "bs=64k", "count=1024"]
        r = subprocess.run([jailrun, "--meta", str(meta), "vmeta", "--", *fill], capture_output=True, text=True, timeout=120)
        assert r.returncode == 1 and "No space left on device" in r.stderr, r.stderr
        assert "killed_by disk" in meta.read_text(), meta.read_text()
    finally:
        converge(cfg, {"name": "vmeta", "state": "absent", "purge": True, "force": True})


def test_attach_makes_the_loop_device_node_a_static_dev_lacks(vcfg, tmp_path: Path) -> None:
    """A container's /dev (podman --privileged) holds copies of the host's device nodes made when it
    started: a loop device the kernel made since (other users held loop0-7) has no node there, and
    attaching failed. attach makes the node from sysfs: here in a private mount namespace whose /dev
    holds only loop-control."""
    cfg = vcfg
    converge(cfg, {"name": "alice", "uid": ALICE, "limits": {"disk": "16M"}, "state": "present"})
    image = volume.paths(str(cfg.tenants_dir), "alice")[0]
    code = _attach_then(image, "print(dev, posix.stat(dev).st_rdev)")
    script = f"mount -t tmpfs none /dev && mknod /dev/loop-control c 10 237 && exec /usr/bin/python3 -I -c {shlex.quote(code)}"
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    dev, rdev = r.stdout.split()
    assert int(rdev) == os.stat(dev).st_rdev  # the node it made is the host's device
    assert _freed(tmp_path) == []  # autoclear: never mounted, freed when the process's fd went
