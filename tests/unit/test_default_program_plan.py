"""Issue 15: the default program in the plan (`exec`/`env` lines) round-trips, and the spec checks it."""

from __future__ import annotations

import pytest

from jailyard.config import Config
from jailyard.errors import JailError
from jailyard.plan import parse_plan, plan_quote, plan_unquote
from jailyard.spec import TenantSpec

CFG = Config()


@pytest.mark.parametrize("word", ["/bin/true", "a b", "100%", "tab\there", "é ü", "new\nline", "'\"\\"])
def test_quote_round_trips_and_has_no_whitespace(word: str) -> None:
    quoted = plan_quote(word)
    assert "".join(quoted.split()) == quoted and plan_unquote(quoted, "x") == word


@pytest.mark.parametrize("bad", ["a%2", "a%zz", "a%2f", "%00"])
def test_bad_percent_encoding_is_refused(bad: str) -> None:
    with pytest.raises(JailError, match="bad percent-encoding"):
        plan_unquote(bad, "plan:9")


def test_plan_carries_program_and_environment_and_reads_back() -> None:
    spec = TenantSpec.build(CFG, "alice", 10001, program=["/usr/bin/env", "a b"], environment={"B": "2 %", "A": "1"})
    plan = spec.mount_plan(CFG, "0123456789abcdef", CFG.images_dir / "x/rootfs")
    text = plan.render()
    assert "exec /usr/bin/env\nexec a%20b\nenv A=1\nenv B=2%20%25\nmount / " in text
    assert parse_plan(text, "plan") == plan


def test_a_plan_without_program_is_byte_for_byte_as_before() -> None:
    plan = TenantSpec.build(CFG, "alice", 10001).mount_plan(CFG, "0123456789abcdef", CFG.images_dir / "x/rootfs")
    assert "exec" not in plan.render() and "env " not in plan.render()


@pytest.mark.parametrize(
    ("kw", "error"),
    [
        ({"program": ["/bin/x", ""]}, "non-empty words"),
        ({"program": ["x"] * 65}, "1 to 64"),
        ({"program": 5}, "expected a command line or a list of words"),
        ({"program": "/bin/x", "environment": {"1A": "x"}}, "invalid environment variable name '1A'"),
        ({"program": "/bin/x", "environment": {"A": 1}}, "invalid value of environment variable A"),
        ({"environment": {"A": "1"}}, "has none; set program"),
        ({"program": ["/bin/x", "y" * 3001]}, "at most 3000 bytes"),
    ],
)
def test_bad_program_or_environment_is_one_error_naming_it(kw: dict, error: str) -> None:
    with pytest.raises(JailError, match=error):
        TenantSpec.build(CFG, "alice", 10001, **kw)
