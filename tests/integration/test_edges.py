"""Messages and edges of the lifecycle (issue 12, "Messages and edges", Python side)."""

from __future__ import annotations

import os

import pytest

from jailyard.config import Config
from jailyard.errors import JailError
from jailyard.lifecycle import converge, converge_many

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
UNSET = dict.fromkeys(("cpu", "mem", "procs", "fsize", "nofile", "wall"))


def test_partial_limits_as_a_module_passes_them_take_the_defaults_then_the_spec(cfg: Config) -> None:
    """Ad-hoc `jail` with limits: {mem: N} failed: "limits.cpu must be a non-negative integer, got None"."""
    created = converge(cfg, {"name": "x", "uid": 12008, "limits": {**UNSET, "mem": 268435456}})
    assert created.after["spec"]["limits"] == {**cfg.default_limits(), "mem": 268435456}
    changed = converge(cfg, {"name": "x", "limits": {**UNSET, "procs": 9}})
    assert changed.after["spec"]["limits"] == {**cfg.default_limits(), "mem": 268435456, "procs": 9}


def test_a_gid_another_tenant_was_given_is_refused_unless_shared(cfg: Config) -> None:
    """A tenant could take another tenant's gid, also one that is not that tenant's uid."""
    converge(cfg, {"name": "a", "uid": 12001, "gid": 15000, "state": "present"})
    with pytest.raises(JailError, match=r"^gid 15000 of jail b is the group of tenant 'a'; set shared_gid=true to share it$"):
        converge(cfg, {"name": "b", "uid": 12002, "gid": 15000, "state": "present"})
    with pytest.raises(JailError, match=r"^gid 12001 of jail c is the group of tenant 'a'"):
        converge(cfg, {"name": "c", "uid": 12003, "gid": 12001, "state": "present"})
    # Two new jails of one run are checked against each other too.
    with pytest.raises(JailError, match=r"^gid 12004 of jail e is the group of tenant 'd'"):
        converge_many(cfg, [{"name": "d", "uid": 12004}, {"name": "e", "uid": 12005, "gid": 12004}])
    assert not cfg.tenant_dir("b").exists() and not cfg.tenant_dir("d").exists()
    shared = converge(cfg, {"name": "b", "uid": 12002, "gid": 15000, "shared_gid": True, "state": "present"})
    assert shared.after["spec"]["gid"] == 15000


def test_errors_name_the_modules_flag(cfg: Config) -> None:
    import subprocess

    from jailyard.sessions import record_session

    converge(cfg, {"name": "alice", "uid": 10001})
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        record_session(cfg, "alice", sleeper.pid)
        with pytest.raises(JailError, match=r"set force=true to unmount it anyway"):
            converge(cfg, {"name": "alice", "state": "unmounted"})
    finally:
        sleeper.kill()
        sleeper.wait()
