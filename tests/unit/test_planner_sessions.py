"""The planner's part of issue 19 (pure, no root): force ends the sessions before the unmount and says so;
a running tenant service is stopped first and its own session does not refuse the unmount."""

from __future__ import annotations

import pytest
from test_planner import CFG, observed, want

from jailyard.errors import JailError
from jailyard.planner import plan_jail
from jailyard.wanted import MODULE_FLAGS


@pytest.mark.parametrize("wanted_state", ["unmounted", "absent"])
def test_force_ends_the_sessions_first_and_says_so(wanted_state: str) -> None:
    steps = plan_jail(CFG, observed("mounted", sessions=(4242, 4343)), want(wanted_state, force=True), MODULE_FLAGS).steps
    kinds = [s.kind for s in steps]
    assert kinds.index("end-sessions") < kinds.index("unmount")
    assert "end 2 session(s) of alice: 4242 4343" in [s.action for s in steps]


def test_no_session_no_ending() -> None:
    steps = plan_jail(CFG, observed("mounted"), want("unmounted", force=True), MODULE_FLAGS).steps
    assert "end-sessions" not in [s.kind for s in steps]


def test_a_running_service_is_stopped_first_and_its_session_does_not_refuse() -> None:
    obs = observed("mounted", sessions=(4242,))
    obs.service = {"pid": 99, "session": 4242, "state": "running"}
    steps = [s for s in plan_jail(CFG, obs, want("unmounted"), MODULE_FLAGS).steps if s.kind != "keep-uid"]
    assert [s.kind for s in steps] == ["stop-service", "unmount"]
    assert steps[0].action == "stop the service of alice"
    obs.sessions = [4242, 5000]  # another session still refuses without force
    with pytest.raises(JailError, match=r"1 live session\(s\) \(pids 5000\)"):
        plan_jail(CFG, obs, want("unmounted"), MODULE_FLAGS)
