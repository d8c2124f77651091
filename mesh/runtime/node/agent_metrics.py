"""The playbook's metrics as a node keeps them for each agent it runs, and for itself.

Efficiency: utilization, throughput and wait come from the counters each heartbeat carries
(:mod:`mesh.runtime.usage`), over a sliding window (:class:`mesh.core.metrics.Window`).
Reliability: failures (crashes and budget kills) and recovery time (from a failure, or from the
moment its node was last heard when that node died and the agent was placed again on this one, to
the agent registering, that is answering, again), counted here; deadlocks as the agent reports
them. Coordination: sampled ask round trips and pool waits as the agent reports them; the
conflict rate from the outcomes of the intentions this node's agents proposed.

Everything an agent reports is untrusted: only finite, non-negative numbers are taken.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from ...core.metrics import WINDOW_S, Reading, Window, conflicts_per_100

#: The figures an agent's heartbeat may carry beside its counters (anything else is ignored).
REPORTED = ("ask_rtt_p50_s", "ask_rtt_p99_s", "pool_waits", "pool_wait_s", "deadlocks", "tasks_completed")


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) and value >= 0 else None


class AgentMetrics:
    """One agent's figures on its node."""

    __slots__ = ("window", "reported", "failures", "failed_at", "recovery_s")

    def __init__(self) -> None:
        self.window = Window()
        self.reported: dict[str, float | None] = {}
        self.failures = 0  #: crashes and budget kills since the node started
        self.failed_at: float | None = None  #: when it last failed, until it answers again
        self.recovery_s: float | None = None  #: seconds from its last failure to answering again

    def heard(self, now: float, messages: int, usage: object) -> None:
        """A heartbeat's counters (``usage``: what the agent reported, untrusted)."""
        if not isinstance(usage, Mapping):
            return
        busy, waited = _number(usage.get("busy_s")), _number(usage.get("waited_s"))
        if busy is not None and waited is not None:
            self.window.add(Reading(now, busy, messages, waited))
        self.reported = {key: _number(usage.get(key)) for key in REPORTED}

    def failed(self, now: float) -> None:
        self.failures += 1
        self.failed_at = now

    def node_lost(self, at: float) -> None:
        """Its node died at ``at`` (last heard then) and it was placed again here: not a failure of
        the agent, but its recovery runs from then until it answers here."""
        self.failed_at = at

    def answering(self, now: float, fresh: bool = False) -> None:
        """It registered: it answers again (after a failure, that is its recovery); ``fresh``: in a
        process that just started (an agent its node started), not an embedded actor registering again."""
        if self.failed_at is not None:
            self.recovery_s = now - self.failed_at
            self.failed_at = None
        self.window = Window()  # a new process counts from zero
        if fresh:  # a process that just started: its counters are zero now, and silence means idle
            self.window.add(Reading(now, 0.0, 0, 0.0))

    def as_status(self, now: float | None = None) -> dict[str, Any]:
        """The figures; with ``now``, rates run until then (an agent its node started reports only
        when its counters changed: silence since its last report means unchanged)."""
        rates = self.window.rates(now)
        reported = self.reported
        return {"utilization": _rounded(rates.utilization), "throughput_per_s": _rounded(rates.throughput_per_s),
                "wait_s_avg": _rounded(rates.wait_s_avg, 6),
                "busy_s": _rounded(self.window.latest.busy if self.window.latest else None),
                "failures": self.failures, "recovery_s": _rounded(self.recovery_s),
                "deadlocks": int(reported.get("deadlocks") or 0),
                "ask_rtt_p50_s": _rounded(reported.get("ask_rtt_p50_s"), 6),
                "ask_rtt_p99_s": _rounded(reported.get("ask_rtt_p99_s"), 6),
                "pool_waits": int(reported.get("pool_waits") or 0),
                "tasks_completed": int(reported.get("tasks_completed") or 0),
                "pool_wait_s": _rounded(reported.get("pool_wait_s")) or 0.0}


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def node_metrics(agents: Iterable[Mapping[str, Any]], outcomes: Mapping[str, int], escalated: int) -> dict[str, Any]:
    """The node's figures: its agents' summed or averaged, and its intentions'."""
    per_agent = [a for a in agents if isinstance(a, Mapping)]
    utilizations = [a["utilization"] for a in per_agent if a.get("utilization") is not None]
    recoveries = [a["recovery_s"] for a in per_agent if a.get("recovery_s") is not None]
    return {
        "window_s": WINDOW_S,
        "failures": sum(a.get("failures") or 0 for a in per_agent),
        "recovery_s_avg": _rounded(sum(recoveries) / len(recoveries)) if recoveries else None,
        "utilization_avg": _rounded(sum(utilizations) / len(utilizations)) if utilizations else None,
        "throughput_per_s": _rounded(sum(a.get("throughput_per_s") or 0.0 for a in per_agent)),
        "deadlocks": sum(a.get("deadlocks") or 0 for a in per_agent),
        "pool_waits": sum(a.get("pool_waits") or 0 for a in per_agent),
        "tasks_completed": sum(a.get("tasks_completed") or 0 for a in per_agent),
        "pool_wait_s": _rounded(sum(a.get("pool_wait_s") or 0.0 for a in per_agent)),
        "intentions": {"proposed": sum(outcomes.values()), "approved": outcomes.get("approved", 0),
                       "objected": outcomes.get("objected", 0), "withdrawn": outcomes.get("withdrawn", 0),
                       "escalated": escalated, "conflicts_per_100": _rounded(conflicts_per_100(outcomes), 2)},
    }
