"""Shared fixtures: the jailyard package on sys.path, a tiny busybox image, and a mount guard.

Every test runs against its own config (tenants, jails and run dirs under
tmp_path) so nothing touches the node's real /var/lib/jailyard.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from jailtest import REPO, TEST_IMAGE_ID, _under, make_busybox_rootfs, make_config  # noqa: F401 - REPO, make_config re-exported
from jailyard.config import Config
from jailyard.kernel import umount
from jailyard.mountinfo import read_mountinfo


@pytest.fixture(scope="session")
def image_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    images = tmp_path_factory.mktemp("images")
    try:
        make_busybox_rootfs(images / TEST_IMAGE_ID / "rootfs")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    (images / "current").symlink_to(TEST_IMAGE_ID)
    return images


@pytest.fixture
def cfg(tmp_path: Path, image_store: Path, mount_guard: None) -> Config:
    return make_config(tmp_path, image_store)


@pytest.fixture
def mount_guard(tmp_path: Path):
    """Unmount whatever the test left under tmp_path, deepest first, even when it failed."""
    before = {m.target for m in read_mountinfo()}
    yield
    leftovers = [m.target for m in read_mountinfo() if m.target not in before and _under(m.target, tmp_path)]
    for target in reversed(leftovers):
        try:
            umount(target, detach=True)
        except Exception:  # noqa: BLE001 - best effort; the session check below reports what is left
            pass


@pytest.fixture(scope="session", autouse=True)
def findmnt_unchanged(tmp_path_factory: pytest.TempPathFactory):
    """A test run must leave the mount table as it found it, under the places this run mounts on.

    Only this session's own mounts are judged: on a busy jail host other callers (a second test
    run, podman, the node's own jails) mount and unmount meanwhile, and counting theirs made a
    run fail for mounts it never made (seen with two suites at once). Everything this suite
    mounts lives under its pytest base directory; the launcher node (/tmp/jailrun-test-*) has
    its own check in tests/launcher/conftest.py.
    """
    base = tmp_path_factory.getbasetemp()
    before = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True).stdout
    yield
    after = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True).stdout
    extra = sorted(t for t in set(after.splitlines()) - set(before.splitlines()) if _under(t, base))
    assert not extra, f"the test run left mounts behind: {extra[:10]}"


def requires_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
