"""The `service: true` option (issue 19), pure, no root: the spec field, its validation, and the planner's
start-service / stop-service steps (start when mounted and not running, nothing while it runs as asked,
stop on service: false, on unmount and before a purge)."""

from __future__ import annotations

import json

import pytest
from test_planner import CFG, observed, spec, want, whole

from jailyard.errors import JailError
from jailyard.observe import Observed
from jailyard.planner import plan_jail
from jailyard.spec import TenantSpec
from jailyard.wanted import MODULE_FLAGS, Wanted

PROGRAM = "/usr/bin/python3 -m http.server 'a b'"
ARGV = ["/usr/bin/python3", "-m", "http.server", "a b"]


def service_spec(**kw: object) -> TenantSpec:
    return spec(program=kw.pop("program", PROGRAM), service=kw.pop("service", True), **kw)


def with_spec(obs: Observed, s: TenantSpec) -> Observed:
    obs.spec, obs.entries = s, whole(s)
    return obs


def running(obs: Observed, argv: list[str] = ARGV, session: int = 4242) -> Observed:
    obs.service = {"pid": 99, "session": session, "state": "running", "program": argv}
    obs.sessions = [*obs.sessions, session]
    return obs


def want_service(state: str, **kw: object) -> Wanted:
    w = want(state, force=kw.pop("force", False), purge=kw.pop("purge", False))
    w.spec = service_spec(**kw)
    return w


def steps(obs: Observed, w: Wanted) -> list[tuple[str, str | None]]:
    return [(s.kind, s.action) for s in plan_jail(CFG, obs, w, MODULE_FLAGS).steps if s.kind != "keep-uid"]


# The spec field


def test_a_spec_without_service_writes_the_same_tenant_json_as_before() -> None:
    """Existing tenant.json files stay byte-identical: `service` is left out when false."""
    s = spec(program="/bin/true")
    assert "service" not in json.loads(s.to_json())
    assert TenantSpec.from_json(s.to_json(), "tenant.json").to_json() == s.to_json()
    on = service_spec()
    assert json.loads(on.to_json())["service"] is True
    assert TenantSpec.from_json(on.to_json(), "tenant.json") == on


def test_service_without_a_program_is_refused_naming_the_jail() -> None:
    with pytest.raises(JailError, match=r"^jail alice has service: true but no program to run"):
        TenantSpec.build(CFG, "alice", 10001, service=True)


@pytest.mark.parametrize(
    ("program", "service", "error"),
    [
        ("sleep 100", True, r"invalid program 'sleep 100' for the service of alice: expected an absolute path"),
        ("/bin/sh -c 'unclosed", True, r"invalid program \"/bin/sh -c 'unclosed\" for alice: No closing quotation"),
        ("/bin/true", "yes", r"invalid service 'yes' for alice: expected true or false"),
    ],
)
def test_bad_service_input_is_refused(program: str, service: object, error: str) -> None:
    with pytest.raises(JailError, match=error):
        TenantSpec.build(CFG, "alice", 10001, program=program, service=service)


def test_program_is_split_as_a_shell_would_without_a_shell() -> None:
    assert service_spec().service_argv() == ARGV
    assert spec(program="sleep 1").program == "sleep 1"  # without service a program stays registry information


# The planner


def test_a_mounted_jail_with_service_starts_it_last() -> None:
    obs = with_spec(observed("present"), service_spec())
    assert steps(obs, want_service("mounted")) == [
        ("mount", "mount alice: / /home /tmp /etc/passwd /etc/group"),
        ("start-service", f"start the service of alice: {' '.join(ARGV[:3])} 'a b'"),
    ]


def test_a_new_jail_with_service_starts_it_after_its_spec_is_published_and_mounted() -> None:
    kinds = [k for k, _ in steps(observed("absent"), want_service("mounted"))]
    assert kinds[-3:] == ["publish", "mount", "start-service"]


def test_a_running_service_is_left_alone_second_converge_changes_nothing() -> None:
    obs = running(with_spec(observed("mounted"), service_spec()))
    assert steps(obs, want_service("mounted")) == []


def test_turning_service_on_for_a_mounted_jail_writes_the_spec_then_starts() -> None:
    obs = observed("mounted")
    # The plan too: it carries the program (issue 15, its `exec` lines).
    assert steps(obs, want_service("mounted"))[:2] == [("write-file", "write alice/plan"), ("write-file", "write alice/tenant.json")]
    assert [k for k, _ in steps(obs, want_service("mounted"))] == ["write-file", "write-file", "start-service"]


def test_service_false_stops_a_running_service_first() -> None:
    obs = running(with_spec(observed("mounted"), service_spec()))
    w = want("mounted")
    w.spec = service_spec(service=False)
    assert steps(obs, w) == [("stop-service", "stop the service of alice (service: false)"), ("write-file", "write alice/tenant.json")]
    w.state = "present"
    assert [k for k, _ in steps(obs, w)] == ["stop-service", "write-file"]


def test_present_neither_starts_nor_stops_a_wanted_service() -> None:
    assert steps(with_spec(observed("mounted"), service_spec()), want_service("present")) == []
    assert steps(running(with_spec(observed("mounted"), service_spec())), want_service("present")) == []


def test_a_changed_program_restarts_the_service() -> None:
    obs = running(with_spec(observed("mounted"), service_spec()), argv=["/bin/old"])
    w = want_service("mounted")
    assert [k for k, _ in steps(obs, w)] == ["stop-service", "start-service"]
    assert steps(obs, w)[0][1] == f"restart the service of alice (program changed to {' '.join(ARGV[:3])} 'a b')"


def test_unmounted_stops_a_service_even_between_two_starts_of_its_program() -> None:
    """In back-off the jail may be unmounted already: the loop would mount it again at its next start."""
    obs = with_spec(observed("present"), service_spec())
    obs.service = {"pid": 99, "session": None, "state": "backoff", "program": ARGV}
    assert steps(obs, want_service("unmounted")) == [("stop-service", "stop the service of alice")]


def test_purge_stops_the_service_and_its_own_session_does_not_refuse_it() -> None:
    obs = running(with_spec(observed("mounted"), service_spec()))
    kinds = [k for k, _ in steps(obs, want("absent", purge=True))]
    assert kinds[:2] == ["stop-service", "unmount"]
    obs.sessions.append(5000)
    with pytest.raises(JailError, match=r"1 live session\(s\); purging it is refused"):
        plan_jail(CFG, obs, want("absent", purge=True), MODULE_FLAGS)
