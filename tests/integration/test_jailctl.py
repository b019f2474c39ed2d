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
    assert "alice: created jail alice" in ok(cfg, "create", "alice", "--uid", "10001", "--limit", "mem=1048576")
    assert "alice: nothing to do (present)" in ok(cfg, "create", "alice")
    assert "alice: mounted alice: /" in ok(cfg, "mount", "alice")
    table = ok(cfg, "list").splitlines()
    assert table[0].split() == ["NAME", "UID", "LAYOUT", "IMAGE", "MOUNTED", "SESSIONS"]
    assert table[1].split() == ["alice", "10001", "bind", "0123456789ab", "yes", "0"]
    status = json.loads(ok(cfg, "status", "alice", "--json"))
    assert status["mounted"] and status["limits"]["mem"] == 1048576
    listed = json.loads(ok(cfg, "--json", "list"))
    assert [j["name"] for j in listed] == ["alice"]
    assert "alice: unmounted alice: /" in ok(cfg, "unmount", "alice")
    assert "mount /: not mounted" in ok(cfg, "status", "alice")
    assert "alice: removed alice/tenant.json" in ok(cfg, "remove", "alice")
    assert (cfg.tenant_dir("alice") / "home" / "alice").is_dir()
    assert "alice: purged alice/home" in ok(cfg, "remove", "alice", "--purge")
    assert ok(cfg, "list").strip() == "(none)"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("create", "../x", "--uid", "10001"), "jailctl: error: invalid jail name '../x'"),
        (("create", "bob"), "jailctl: error: uid is required to create jail bob"),
        (("create", "bob", "--uid", "10001", "--limit", "cpus=1"), "jailctl: error: invalid --limit 'cpus=1'"),
        # "--limit mem=512M" was refused, blaming the key; jailrun takes K, M, G, T.
        (
            ("create", "bob", "--uid", "10001", "--limit", "mem=512X"),
            "jailctl: error: invalid --limit 'mem=512X': the value of mem must be a non-negative integer with an optional K, M, G or T suffix, got '512X'",
        ),
        (
            ("create", "bob", "--uid", "10001", "--limit", "procs=5M"),
            "jailctl: error: invalid --limit 'procs=5M': the value of procs must be a non-negative integer, got '5M'",
        ),
        # "jailctl unmount nosuch" said "uid is required to create jail nosuch".
        (("unmount", "nosuch"), "jailctl: error: unknown jail 'nosuch'"),
        (("mount", "nosuch"), "jailctl: error: unknown jail 'nosuch' (give --uid to create it)"),
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


def test_limit_takes_the_suffixes_jailrun_takes(cfg: Config) -> None:
    """`--limit mem=512M` was refused; jailrun accepts K, M, G, T."""
    ok(cfg, "create", "alice", "--uid", "10001", "--limit", "mem=512M", "--limit", "fsize=2G", "--limit", "cpu=30")
    limits = json.loads(ok(cfg, "status", "alice", "--json"))["limits"]
    assert (limits["mem"], limits["fsize"], limits["cpu"]) == (512 << 20, 2 << 30, 30)


def test_json_list_into_a_closed_pipe_exits_quietly(cfg: Config) -> None:
    """`jailctl --json list | head -3` printed a BrokenPipeError traceback."""
    for i in range(3):
        ok(cfg, "create", f"t{i}", "--uid", str(10001 + i))
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first write: as `head` after its lines, without the race
    try:
        out = subprocess.run(
            ["/usr/bin/python3", str(REPO / "bin" / "jailctl"), "--config", str(cfg.path), "--json", "list"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        os.close(write_end)
    assert out.stderr == ""
    assert out.returncode == 141


def test_errors_name_the_flag_of_jailctl(cfg: Config) -> None:
    """Errors said "set force" where jailctl's flag is --force."""
    ok(cfg, "mount", "alice", "--uid", "10001")
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        from jailyard.sessions import record_session

        record_session(cfg, "alice", sleeper.pid)
        out = jailctl(cfg, "unmount", "alice")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert out.returncode == 1
    assert "set --force to unmount it anyway" in out.stderr, out.stderr


def test_gid_of_another_tenant_needs_shared_gid(cfg: Config) -> None:
    """`--gid 12001` (another tenant's group) was accepted."""
    ok(cfg, "create", "a", "--uid", "12001")
    out = jailctl(cfg, "create", "b", "--uid", "12002", "--gid", "12001")
    assert out.returncode == 1
    assert out.stderr.strip() == "jailctl: error: gid 12001 of jail b is the group of tenant 'a'; set --shared-gid to share it"
    assert "b: created jail b" in ok(cfg, "create", "b", "--uid", "12002", "--gid", "12001", "--shared-gid")


def test_images_says_yes_or_no(cfg: Config) -> None:
    """`jailctl images` printed Python's True/False."""
    table = ok(cfg, "images").splitlines()
    assert table[0].split() == ["ID", "CURRENT", "IN_USE", "CREATED", "SIZE"]
    row = table[1].split()
    # IN_USE may be yes: another suite on this host can have a jail of the shared test image mounted.
    assert row[:2] == ["0123456789abcdef", "yes"] and row[2] in ("yes", "no")
    assert "True" not in table[1] and "False" not in table[1]


def test_service_flags_on_create_and_mount(cfg: Config) -> None:
    """--service needs --program (one error naming the jail, nothing created); --check mount predicts the start;
    status shows it; --no-service takes it out of tenant.json again."""
    out = jailctl(cfg, "create", "svc", "--uid", "10001", "--service")
    assert out.returncode == 1 and out.stderr.startswith("jailctl: error: jail svc has service: true but no program to run")
    assert not any(cfg.tenants_dir.iterdir())
    ok(cfg, "create", "svc", "--uid", "10001", "--program", "/bin/sleep 1000", "--service")
    assert json.loads((cfg.tenant_dir("svc") / "tenant.json").read_text())["service"] is True
    assert "svc: would start the service of svc: /bin/sleep 1000" in ok(cfg, "mount", "svc", "--check")
    assert "service: not running" in ok(cfg, "status", "svc")
    assert json.loads(ok(cfg, "status", "svc", "--json"))["service_status"] == {"running": False}
    assert "svc: wrote svc/tenant.json" in ok(cfg, "create", "svc", "--no-service")
    assert "service" not in json.loads((cfg.tenant_dir("svc") / "tenant.json").read_text())
    ok(cfg, "remove", "svc", "--purge")
