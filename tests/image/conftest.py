"""Fixtures of the image tests: one real bookworm minbase built per test run, and a way to run playbooks.

The debootstrap download is cached as a tarball (JAILYARD_DEBOOTSTRAP_CACHE,
default /var/cache/jailyard/debootstrap, the role's default), so only the
first run on a machine touches the mirror. Every image lives under the test's
own tmp dirs, never the node's /var/lib/jailyard.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from imagetest import CACHE, bookworm, needs_root_and_debootstrap

from jailtest import REPO
from jailyard.config import Config
from jailyard.imagebuild import ensure_image


@pytest.fixture(scope="session")
def debian_image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, str]:
    """A real bookworm minbase image, built once per test run, current in its own images dir."""
    needs_root_and_debootstrap()
    base = tmp_path_factory.mktemp("debian")
    cfg = Config(images_dir=base / "images", tenants_dir=base / "tenants", jails_dir=base / "jails", run_dir=base / "run")
    changed, image_id, _ = ensure_image(cfg, bookworm(), CACHE)
    assert changed and image_id
    return cfg, image_id


@pytest.fixture
def run_playbook(tmp_path: Path):
    """Run a playbook on localhost with the repo's modules and roles; returns (rc, stdout)."""
    playbook_bin = Path(sys.executable).parent / "ansible-playbook"
    if not playbook_bin.exists():
        pytest.skip(f"ansible-playbook is not installed next to {sys.executable}")
    env = {
        **os.environ,
        "ANSIBLE_LIBRARY": str(REPO / "library"),
        "ANSIBLE_MODULE_UTILS": str(REPO / "module_utils"),
        "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
        "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
    }

    def run(play: list[dict], *args: str, extra_vars: dict | None = None, inventory: str = "localhost,") -> tuple[int, str]:
        book = tmp_path / "play.yml"
        book.write_text(json.dumps(play))  # JSON is YAML
        cmd = [str(playbook_bin), "-i", inventory, "-c", "local", str(book), *args]
        if extra_vars:
            cmd += ["-e", json.dumps(extra_vars)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
        return out.returncode, out.stdout + out.stderr

    return run
