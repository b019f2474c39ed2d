"""jailctl, the node CLI: tables for people, --json for scripts, one error line and non-zero on bad input."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from jailtest import REPO
from jailyard.config import Config

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def jailctl(cfg: Config, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["/usr/bin/python3", str(REPO / "bin" / "jailctl"), "--config", str(cfg.path), *args], capture_output=True, text=True
    )


def ok(cfg: Config, *args: str) -> str:
    out = jailctl(cfg, *args)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_create_mount_list_status_unmount_remove(cfg: Config) -> None:
    assert "would create jail alice" in ok(cfg, "create", "alice", "--uid", "10001", "--check")
    assert not cfg.tenant_dir("alice").exists()
    assert "did create jail alice" in ok(cfg, "create", "alice", "--uid", "10001", "--limit", "mem=1048576")
    assert "alice: nothing to do (present)" in ok(cfg, "create", "alice")
    assert "did mount alice" in ok(cfg, "mount", "alice")
    table = ok(cfg, "list").splitlines()
    assert table[0].split() == ["NAME", "UID", "LAYOUT", "IMAGE", "MOUNTED", "SESSIONS"]
    assert table[1].split() == ["alice", "10001", "bind", "0123456789ab", "yes", "0"]
    status = json.loads(ok(cfg, "status", "alice", "--json"))
    assert status["mounted"] and status["limits"]["mem"] == 1048576
    listed = json.loads(ok(cfg, "--json", "list"))
    assert [j["name"] for j in listed] == ["alice"]
    assert "did unmount alice" in ok(cfg, "unmount", "alice")
    assert "mount /: not mounted" in ok(cfg, "status", "alice")
    assert "did remove alice/tenant.json" in ok(cfg, "remove", "alice")
    assert (cfg.tenant_dir("alice") / "home" / "alice").is_dir()
    assert "did purge alice/home" in ok(cfg, "remove", "alice", "--purge")
    assert ok(cfg, "list").strip() == "(none)"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("create", "../x", "--uid", "10001"), "jailctl: error: invalid jail name '../x'"),
        (("create", "bob"), "jailctl: error: uid is required to create jail bob"),
        (("create", "bob", "--uid", "10001", "--limit", "cpus=1"), "jailctl: error: invalid --limit 'cpus=1'"),
        (("status", "ghost"), "jailctl: error: unknown jail 'ghost'"),
        (("mount", "bob", "--uid", "5"), "jailctl: error: uid 5 of bob is outside the tenant range 10000-59999"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_1(cfg: Config, args: tuple[str, ...], message: str) -> None:
    out = jailctl(cfg, *args)
    assert out.returncode == 1
    assert out.stderr.strip() == message or out.stderr.startswith(message), out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not any(cfg.tenants_dir.iterdir())


def test_help_everywhere(cfg: Config) -> None:
    for command in ("list", "status", "create", "mount", "unmount", "remove", "run", "expire", "gc", "images"):
        out = jailctl(cfg, command, "--help")
        assert out.returncode == 0 and "usage: jailctl" in out.stdout, command
    assert jailctl(cfg, "frobnicate").returncode == 2


def test_malformed_config_is_named(cfg: Config) -> None:
    cfg.path.write_text(cfg.path.read_text() + "colour = blue\n")
    out = jailctl(cfg, "list")
    assert out.returncode == 1
    assert out.stderr.strip().endswith("unknown key 'colour'")
    assert str(cfg.path) in out.stderr
