"""The restart policy as a pure state machine: decisions, intensity, backoff, exit texts."""

from __future__ import annotations

import random
import signal

import pytest

from mesh.core.restart import (
    DEFAULT_MAX_RESTARTS,
    POLICIES,
    Decision,
    RestartPolicy,
    RestartTracker,
    describe_exit,
)

CRASH_CODES = [1, 3, 127, -signal.SIGKILL, -signal.SIGSEGV, -signal.SIGTERM]


def tracker(mode: str = "on-failure", **limits) -> RestartTracker:
    return RestartTracker(RestartPolicy(mode, **limits))


# --------------------------------------------------------------------------- decisions by policy


def test_never_stops_on_a_clean_exit():
    assert tracker("never").on_exit(0.0, 0) == Decision("stop", reason="exited cleanly")


@pytest.mark.parametrize("code", CRASH_CODES)
def test_never_fails_on_any_crash_without_restarting(code):
    t = tracker("never", max_restarts=5)
    decision = t.on_exit(0.0, code)
    assert decision.action == "fail"
    assert decision.reason == describe_exit(code)
    assert t.restarts_in_window == 0


def test_on_failure_stops_on_a_clean_exit_and_records_no_restart():
    t = tracker("on-failure")
    assert t.on_exit(0.0, 0) == Decision("stop", reason="exited cleanly")
    assert t.restarts_in_window == 0


@pytest.mark.parametrize("code", CRASH_CODES)
def test_on_failure_restarts_a_crash(code):
    t = tracker("on-failure", backoff=0.5)
    decision = t.on_exit(0.0, code)
    assert decision == Decision("restart", delay=0.5, reason=describe_exit(code))
    assert t.restarts_in_window == 1


@pytest.mark.parametrize("code", [0, *CRASH_CODES])
def test_always_restarts_every_exit_even_a_clean_one(code):
    t = tracker("always", max_restarts=10, backoff=0.25)
    decision = t.on_exit(0.0, code)
    assert decision.action == "restart"
    assert decision.delay == 0.25
    assert decision.reason == describe_exit(code)


def test_a_clean_exit_under_on_failure_does_not_use_up_the_intensity():
    t = tracker("on-failure", max_restarts=1)
    for now in range(5):
        assert t.on_exit(float(now), 0).action == "stop"
    assert t.on_exit(5.0, 1).action == "restart"


# --------------------------------------------------------------------------- intensity


def test_the_default_on_failure_policy_restarts_once_then_gives_up():
    policy = RestartPolicy()
    assert (policy.mode, policy.max_restarts, policy.window) == ("on-failure", 1, 60.0)
    t = RestartTracker(policy)
    assert t.on_exit(0.0, 1).action == "restart"
    second = t.on_exit(1.0, 1)
    assert second.action == "fail"
    assert second.reason == "exited with code 1; gave up after 1 restart(s) within 60 s"


def test_default_max_restarts_by_policy():
    assert DEFAULT_MAX_RESTARTS == {"never": 0, "on-failure": 1, "always": 10}
    assert POLICIES == ("never", "on-failure", "always")


@pytest.mark.parametrize("mode", ["on-failure", "always"])
def test_exactly_max_restarts_are_allowed_within_the_window(mode):
    t = tracker(mode, max_restarts=3, window=30.0, backoff=0.05)
    actions = [t.on_exit(float(i), 1).action for i in range(4)]
    assert actions == ["restart", "restart", "restart", "fail"]
    assert t.restarts_in_window == 3


def test_max_restarts_zero_fails_on_the_first_crash():
    decision = tracker("always", max_restarts=0).on_exit(0.0, 0)
    assert decision.action == "fail"
    assert "gave up after 0 restart(s)" in decision.reason


def test_the_give_up_reason_names_the_exit_the_count_and_the_window():
    t = tracker("on-failure", max_restarts=2, window=30.0)
    t.on_exit(0.0, 1)
    t.on_exit(1.0, 1)
    decision = t.on_exit(2.0, -signal.SIGKILL)
    assert decision.reason == "killed by SIGKILL; gave up after 2 restart(s) within 30 s"


def test_restarts_older_than_the_window_age_out():
    t = tracker("on-failure", max_restarts=2, window=10.0)
    assert t.on_exit(0.0, 1).action == "restart"
    assert t.on_exit(5.0, 1).action == "restart"
    # At t=10.5 the restart at 0 is out of the window, the one at 5 is not.
    assert t.on_exit(10.5, 1).action == "restart"
    assert t.restarts_in_window == 2
    # At t=14 the restarts at 5 and 10.5 are both inside: a third one is too many.
    assert t.on_exit(14.0, 1).action == "fail"


def test_a_restart_exactly_window_seconds_ago_still_counts():
    t = tracker("on-failure", max_restarts=1, window=10.0)
    assert t.on_exit(0.0, 1).action == "restart"
    assert t.on_exit(10.0, 1).action == "fail"
    assert t.on_exit(10.001, 1).action == "restart"


def test_a_failed_decision_does_not_count_as_a_restart():
    t = tracker("on-failure", max_restarts=1, window=10.0)
    t.on_exit(0.0, 1)
    assert t.on_exit(1.0, 1).action == "fail"
    assert t.restarts_in_window == 1


# --------------------------------------------------------------------------- backoff


def test_backoff_doubles_per_restart_in_the_window_up_to_backoff_max():
    t = tracker("always", max_restarts=100, window=1000.0, backoff=0.5, backoff_max=10.0)
    delays = [t.on_exit(float(i), 1).delay for i in range(8)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


def test_backoff_starts_over_when_the_earlier_restarts_left_the_window():
    t = tracker("on-failure", max_restarts=5, window=10.0, backoff=0.1, backoff_max=5.0)
    assert [t.on_exit(float(i), 1).delay for i in range(3)] == [0.1, 0.2, 0.4]
    assert t.on_exit(100.0, 1).delay == 0.1


def test_zero_backoff_restarts_at_once():
    t = tracker("always", max_restarts=3, backoff=0.0, backoff_max=0.0)
    assert [t.on_exit(0.0, 1).delay for _ in range(3)] == [0.0, 0.0, 0.0]


def test_stop_and_fail_decisions_have_no_delay():
    assert tracker("on-failure").on_exit(0.0, 0).delay == 0.0
    assert tracker("never").on_exit(0.0, 1).delay == 0.0


# --------------------------------------------------------------------------- exit texts


@pytest.mark.parametrize(
    "code, text",
    [
        (0, "exited cleanly"),
        (1, "exited with code 1"),
        (3, "exited with code 3"),
        (255, "exited with code 255"),
        (-signal.SIGKILL, "killed by SIGKILL"),
        (-signal.SIGTERM, "killed by SIGTERM"),
        (-signal.SIGSEGV, "killed by SIGSEGV"),
        (-200, "killed by signal 200"),
    ],
)
def test_describe_exit_says_how_a_process_ended(code, text):
    assert describe_exit(code) == text


# --------------------------------------------------------------------------- validation


def test_an_unknown_policy_is_rejected():
    with pytest.raises(ValueError, match="never, on-failure, always"):
        RestartPolicy("sometimes")


@pytest.mark.parametrize("field", ["max_restarts", "window", "backoff", "backoff_max"])
def test_negative_limits_are_rejected(field):
    with pytest.raises(ValueError, match="negative"):
        RestartPolicy("on-failure", **{field: -1})


# --------------------------------------------------------------------------- property


def _random_run(seed: int):
    """A random policy and a random exit history; returns (policy, [(time, decision)])."""
    rng = random.Random(seed)
    policy = RestartPolicy(
        rng.choice(POLICIES),
        max_restarts=rng.randint(0, 6),
        window=rng.choice([0.5, 1.0, 5.0, 30.0, 60.0]),
        backoff=rng.choice([0.0, 0.05, 0.5]),
        backoff_max=rng.choice([0.5, 1.0, 10.0]),
    )
    t = RestartTracker(policy)
    now = 0.0
    history = []
    for _ in range(rng.randint(1, 60)):
        now += rng.choice([0.0, rng.expovariate(1.0), rng.uniform(0, 2 * policy.window)])
        code = rng.choice([0, 0, 1, 3, -9, -15])
        history.append((now, code, t.on_exit(now, code)))
    return policy, history


@pytest.mark.parametrize("block", range(10))
def test_restarts_inside_any_window_never_exceed_max_restarts(block):
    for seed in range(block * 100, block * 100 + 100):
        policy, history = _random_run(seed)
        restarts = [now for now, _, d in history if d.action == "restart"]
        # The densest window ends at a restart: count every restart in [r - window, r].
        for r in restarts:
            inside = [x for x in restarts if x <= r and r - x <= policy.window]
            assert len(inside) <= policy.max_restarts, (seed, policy, restarts)
        for _now, code, d in history:
            assert d.action in ("restart", "stop", "fail")
            if policy.mode == "never" or (policy.mode == "on-failure" and code == 0):
                assert d.action == ("stop" if code == 0 else "fail"), seed
            if d.action == "restart":
                assert 0.0 <= d.delay <= policy.backoff_max, seed
            else:
                assert d.delay == 0.0, seed
            assert d.reason.startswith(describe_exit(code)), seed
