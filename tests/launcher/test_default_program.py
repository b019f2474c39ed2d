"""Issue 15, the default program: `jailrun NAME` with no PROGRAM runs the tenant's `program` with its
`environment` (the plan's `exec` and `env` lines); `jailrun NAME -- ...` still runs anything."""

from __future__ import annotations

import pytest

from jailyard.errors import JailError
from jailyard.lifecycle import converge
from jailyard.plan import parse_plan
from jailyard.registry import load_spec


@pytest.fixture
def carol_program(node):
    """carol with a program and an environment; put back to none afterwards."""
    before = load_spec(node.cfg, "carol")
    assert before is not None and before.program is None
    yield
    spec = load_spec(node.cfg, "carol")
    if spec is not None and (spec.program is not None or spec.environment):
        # Not through converge (unset keeps the old value): write the spec back as it was.
        from jailyard.lifecycle import converge as conv

        spec_path = node.cfg.tenants_dir / "carol" / "tenant.json"
        spec_path.write_text(before.to_json())
        conv(node.cfg, {"name": "carol", "state": "present"})


def test_jailrun_name_alone_runs_the_program_with_its_environment(node, carol_program) -> None:
    # A word with a space, a percent sign and a quote must reach the program as one word.
    converge(
        node.cfg,
        {
            "name": "carol",
            "state": "present",
            "program": ["/bin/sh", "-c", 'echo "$GREETING|$1|$HOME"', "sh", "a b%'c"],
            "environment": {"GREETING": "hi there %41"},
        },
    )
    plan = (node.cfg.tenants_dir / "carol" / "plan").read_text()
    assert "exec a%20b%25'c\n" in plan and "env GREETING=hi%20there%20%2541\n" in plan
    r = node.run("carol")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hi there %41|a b%'c|/home/carol\n"
    # --env overrides the program's environment; the program is still the default one.
    r = node.run("--env", "GREETING=bye", "carol")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("bye|")
    # `jailrun NAME -- ...` still runs anything, without the program's environment.
    r = node.run("carol", "--", "/bin/sh", "-c", 'echo "[$GREETING]"')
    assert r.returncode == 0, r.stderr
    assert r.stdout == "[]\n"


def test_a_command_line_program_is_split_as_a_shell_would(node, carol_program) -> None:
    converge(node.cfg, {"name": "carol", "state": "present", "program": "/bin/echo 'one two' three"})
    r = node.run("carol")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "one two three\n"
    assert parse_plan((node.cfg.tenants_dir / "carol" / "plan").read_text(), "plan").program == ("/bin/echo", "one two", "three")


def test_no_program_and_no_default_is_one_clear_usage_error(node) -> None:
    r = node.run("alice")
    assert r.returncode == 120
    assert "has no default program" in r.stderr and "alice" in r.stderr
    r = node.run("alice", "--")
    assert r.returncode == 120 and "missing PROGRAM after '--'" in r.stderr


def test_bad_program_or_environment_is_refused_naming_it(node) -> None:
    with pytest.raises(JailError, match="invalid environment variable name 'BAD-NAME'"):
        converge(node.cfg, {"name": "carol", "state": "present", "program": ["/bin/true"], "environment": {"BAD-NAME": "x"}})
    with pytest.raises(JailError, match="non-empty words"):
        converge(node.cfg, {"name": "carol", "state": "present", "program": ["/bin/true", ""]})
    assert load_spec(node.cfg, "carol").program is None
