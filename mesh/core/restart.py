"""Restart policy: what a supervisor does when an agent's process ends.

A pure state machine: time comes in as ``now`` (seconds, any monotonic origin),
and the answer is data. The node feeds it every exit of every agent instance.

* ``never``: a clean exit (code 0) is ``stop``; anything else is ``fail``.
* ``on-failure``: a clean exit is ``stop``; a crash is restarted.
* ``always``: every exit is restarted.

Restarts are limited by intensity, as in Erlang/OTP supervisors: at most
``max_restarts`` within any ``window`` seconds; one more crash inside the window
and the instance is marked failed (the playbook's "restart once, then skip" is
the default of ``on-failure``: ``max_restarts = 1``). Each restart inside the
window waits twice as long as the one before, from ``backoff`` up to
``backoff_max`` seconds.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

POLICIES = ("never", "on-failure", "always")
DEFAULT_MAX_RESTARTS = {"never": 0, "on-failure": 1, "always": 10}


@dataclass(frozen=True)
class RestartPolicy:
    mode: str = "on-failure"  #: one of POLICIES
    max_restarts: int = 1  #: restarts allowed within ``window``
    window: float = 60.0  #: seconds
    backoff: float = 0.5  #: seconds before the first restart in a window
    backoff_max: float = 10.0  #: seconds, the cap of the doubling backoff

    def __post_init__(self) -> None:
        if self.mode not in POLICIES:
            raise ValueError(f"restart policy must be one of {', '.join(POLICIES)}, not {self.mode!r}")
        if self.max_restarts < 0 or self.window < 0 or self.backoff < 0 or self.backoff_max < 0:
            raise ValueError("restart limits must not be negative")


@dataclass(frozen=True)
class RestartDecision:
    action: str  #: "restart", "stop" (done, cleanly) or "fail" (given up)
    delay: float = 0.0  #: seconds to wait before restarting
    reason: str = ""


#: The former name of :class:`RestartDecision` (``mesh.Decision`` is an intention's outcome).
Decision = RestartDecision


def describe_exit(code: int) -> str:
    """Human words for a Popen returncode (negative means killed by that signal)."""
    if code == 0:
        return "exited cleanly"
    if code < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class RestartTracker:
    """The restart history of one agent instance under one policy."""

    def __init__(self, policy: RestartPolicy):
        self.policy = policy
        self._restarts: deque[float] = deque()

    @property
    def restarts_in_window(self) -> int:
        return len(self._restarts)

    def on_exit(self, now: float, code: int, why: str | None = None) -> RestartDecision:
        """What to do about an exit with ``code``; ``why`` is a failure the node itself caused
        (an agent ended for going over its memory budget): it counts as a crash whatever the code."""
        policy = self.policy
        how = why or describe_exit(code)
        clean = code == 0 and why is None
        if policy.mode == "never" or (policy.mode == "on-failure" and clean):
            return RestartDecision("stop" if clean else "fail", reason=how)
        restarts = self._restarts
        while restarts and now - restarts[0] > policy.window:
            restarts.popleft()
        if len(restarts) >= policy.max_restarts:
            return RestartDecision(
                "fail",
                reason=f"{how}; gave up after {len(restarts)} restart(s) within {policy.window:g} s",
            )
        delay = min(policy.backoff * (2 ** len(restarts)), policy.backoff_max)
        restarts.append(now)
        return RestartDecision("restart", delay=delay, reason=how)
