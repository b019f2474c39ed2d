"""The integration tests' config: a cgroup name of this session's own.

A purge removes the tenant's cgroups (<ctrl>/<cgroup_name>/<name>); with the
node's own cgroup name a test purging "demo" would remove the host's idle
"demo" cgroups, and another run's launches would change what check mode
predicts. So every config here names cgroups of its own, removed at the end.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jailtest import REPO, make_config, remove_cgroups
from jailyard.config import Config

# tests/bench imports REPO from the module named "conftest", which is this one once
# pytest has imported it (conftest modules share that name): keep it there too.
__all__ = ["REPO", "cfg", "own_cgroups_removed"]

CGROUP_NAME = f"jailyard-test-integration-{os.getpid()}"


@pytest.fixture
def cfg(tmp_path: Path, image_store: Path, mount_guard: None) -> Config:
    return make_config(tmp_path, image_store, cgroup_name=CGROUP_NAME)


@pytest.fixture(scope="session", autouse=True)
def own_cgroups_removed():
    yield
    remove_cgroups(CGROUP_NAME)
