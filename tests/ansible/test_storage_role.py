"""roles/jail_storage on this machine, every path under the test's tmp directory (issue 16).

The tenants directory is a mount or a directory the test makes; /etc/fstab must end as it began
unless the role really made quota-capable storage (then the test removes its line again).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_roles import REPO, tool

if os.geteuid() != 0:
    pytest.skip("the storage role tests need root (mounts, /etc/fstab)", allow_module_level=True)

FSTAB = Path("/etc/fstab")


def run_role(tmp_path: Path, **extra: object) -> subprocess.CompletedProcess[str]:
    play = tmp_path / "play.yml"
    play.write_text(
        yaml.safe_dump([{"name": "Prepare tenant storage", "hosts": "localhost", "gather_facts": False, "roles": ["jail_storage"]}])
    )
    extra = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, **extra}
    return subprocess.run(
        [tool("ansible-playbook"), "-i", "localhost,", "-e", json.dumps(extra), str(play)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=600,
    )


def changed(run: subprocess.CompletedProcess[str]) -> int:
    line = next(ln for ln in run.stdout.splitlines() if ln.startswith("localhost"))
    return int(line.split("changed=")[1].split()[0])


@pytest.fixture
def tmpfs_tenants(tmp_path: Path):
    """A tenants directory that is a mount without project quotas (a tmpfs), and fstab's bytes."""
    tenants = tmp_path / "tenants"
    tenants.mkdir()
    before = FSTAB.read_bytes() if FSTAB.exists() else b""
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(tenants)], check=True)
    try:
        yield tenants
    finally:
        subprocess.run(["umount", str(tenants)], check=True)
        assert (FSTAB.read_bytes() if FSTAB.exists() else b"") == before, "the role changed /etc/fstab"


def test_mount_without_project_quota_fails_with_one_clear_message(tmp_path: Path, tmpfs_tenants: Path) -> None:
    run = run_role(tmp_path, jail_storage_tenants_dir=str(tmpfs_tenants), jail_storage_file=str(tmp_path / "t.img"))
    out = run.stdout + run.stderr
    assert run.returncode != 0, out[-2000:]
    assert f"{tmpfs_tenants} is a tmpfs mount without project quotas" in out, out[-2000:]
    assert "jail_storage_quota_enforce: false (UNSAFE" in out
    assert not (tmp_path / "t.img").exists()


def test_quota_enforce_false_leaves_it_as_it_is_and_changes_nothing(tmp_path: Path, tmpfs_tenants: Path) -> None:
    for attempt in range(2):
        run = run_role(
            tmp_path,
            jail_storage_tenants_dir=str(tmpfs_tenants),
            jail_storage_file=str(tmp_path / "t.img"),
            jail_storage_quota_enforce=False,
        )
        assert run.returncode == 0, (run.stdout + run.stderr)[-2000:]
        assert changed(run) == 0, f"run {attempt + 1}: {run.stdout[-2000:]}"
    assert not (tmp_path / "t.img").exists()


def _kernel_mounts_ext4_with_project_quota(tmp_path: Path) -> bool:
    image, mnt = tmp_path / "probe.img", tmp_path / "probe"
    mnt.mkdir()
    with open(image, "wb") as fh:
        fh.truncate(32 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-O", "quota,project", str(image)], check=True)
    ok = subprocess.run(["mount", "-o", "loop,prjquota", str(image), str(mnt)], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["umount", str(mnt)], check=True)
    return ok


def test_loop_storage_moves_existing_tenants_or_fails_leaving_them(tmp_path: Path) -> None:
    """The default pool: a loop-backed ext4 in a sparse file. A non-empty tenants dir is copied into it
    (and kept aside); a second run changes nothing. On a kernel that cannot mount ext4 with project
    quotas the role leaves everything as it was (disk limits are per-tenant volumes there), says so,
    and a second run changes nothing either."""
    tenants = tmp_path / "tenants"
    (tenants / "alice/home/alice").mkdir(parents=True)
    (tenants / "alice/home/alice/data").write_bytes(b"precious")
    os.link(tenants / "alice/home/alice/data", tenants / "alice/home/alice/link")
    before = FSTAB.read_bytes() if FSTAB.exists() else b""
    image = tmp_path / "tenants.img"
    extra = {
        "jail_storage_tenants_dir": str(tenants),
        "jail_storage_file": str(image),
        "jail_storage_size": "64M",
        "jail_storage_jails_dir": str(tmp_path / "jails"),
    }
    supported = _kernel_mounts_ext4_with_project_quota(tmp_path)
    try:
        run = run_role(tmp_path, **extra)
        out = run.stdout + run.stderr
        if not supported:
            assert run.returncode == 0, out[-2000:]
            assert "cannot enforce project quotas" in out, out[-2000:]
            assert changed(run) == 0, out[-2000:]
            assert (tenants / "alice/home/alice/data").read_bytes() == b"precious"
            assert not (tmp_path / "tenants.pre-storage").exists() and not image.exists()
            assert (FSTAB.read_bytes() if FSTAB.exists() else b"") == before
            return
        assert run.returncode == 0, out[-3000:]
        assert (tenants / "alice/home/alice/data").read_bytes() == b"precious"
        assert os.stat(tenants / "alice/home/alice/data").st_ino == os.stat(tenants / "alice/home/alice/link").st_ino
        assert (tmp_path / "tenants.pre-storage/alice/home/alice/data").read_bytes() == b"precious"
        assert str(tenants) in FSTAB.read_text()
        again = run_role(tmp_path, **extra)
        assert again.returncode == 0 and changed(again) == 0, again.stdout[-2000:]
    finally:
        subprocess.run(["umount", str(tenants)], check=False, capture_output=True)
        subprocess.run(["umount", f"{tenants}.new-storage"], check=False, capture_output=True)
        if FSTAB.exists() and FSTAB.read_bytes() != before:
            FSTAB.write_bytes(before)
