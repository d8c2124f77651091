"""The playbook's metrics over a sliding window: pure bookkeeping, time in, figures out.

An agent reports cumulative counters with each heartbeat (seconds in handlers, messages
handled, seconds messages waited before their handler began); :class:`Window` keeps a few
of those readings, one per ``resolution`` seconds over the last ``window`` seconds, and
turns them into rates over the window: utilization (busy seconds per second), throughput
(messages per second) and mean wait. Counters that go backwards (the agent restarted and
counts from zero) start the window afresh rather than give negative rates.

:func:`percentile` is the nearest-rank percentile of a few samples (sampled ask round trips);
:func:`conflicts_per_100` the playbook's conflict rate from intention outcomes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: Seconds the windowed figures cover.
WINDOW_S = 60.0
#: Seconds between two readings a window keeps (so it holds WINDOW_S / RESOLUTION_S + 1 of them).
RESOLUTION_S = 5.0


@dataclass(frozen=True)
class Reading:
    """Cumulative counters at one moment: ``at`` (seconds), ``busy`` (seconds in handlers),
    ``handled`` (messages), ``waited`` (seconds messages waited before their handler)."""

    at: float
    busy: float
    handled: int
    waited: float


@dataclass(frozen=True)
class Rates:
    """What a window says: each None while it spans no time yet."""

    utilization: float | None  #: fraction of the time in handlers, 0..1
    throughput_per_s: float | None  #: messages handled per second
    wait_s_avg: float | None  #: mean seconds a message waited before its handler began


class Window:
    """Readings of one agent's counters over the last ``window`` seconds."""

    def __init__(self, window: float = WINDOW_S, resolution: float = RESOLUTION_S):
        if not (window > 0 and 0 < resolution <= window):
            raise ValueError("need window > 0 and 0 < resolution <= window (seconds)")
        self.window = window
        self.resolution = resolution
        self.readings: deque[Reading] = deque(maxlen=int(window / resolution) + 2)
        self.latest: Reading | None = None

    def add(self, reading: Reading) -> None:
        latest = self.latest
        if latest is not None and (reading.handled < latest.handled or reading.busy < latest.busy
                                   or reading.waited < latest.waited or reading.at < latest.at):
            self.readings.clear()  # counted from zero again (a restart), or a clock that went back
        self.latest = reading
        if not self.readings or reading.at - self.readings[-1].at >= self.resolution:
            self.readings.append(reading)
        while len(self.readings) > 1 and reading.at - self.readings[1].at >= self.window:
            self.readings.popleft()

    def rates(self, now: float | None = None) -> Rates:
        """Rates over the window up to the latest reading, or up to ``now`` when later: the counters
        unchanged since the latest reading (its source reports only changes)."""
        latest = self.latest
        if latest is None or not self.readings:
            return Rates(None, None, None)
        end = latest.at if now is None or now <= latest.at else now
        first = self.readings[0]
        for reading in self.readings:  # the newest reading a whole window before the end, else the oldest
            if end - reading.at < self.window:
                break
            first = reading
        span = end - first.at
        if span <= 0:
            return Rates(None, None, None)
        handled = latest.handled - first.handled
        busy = latest.busy - first.busy
        return Rates(utilization=min(1.0, max(0.0, busy / span)), throughput_per_s=handled / span,
                     wait_s_avg=(latest.waited - first.waited) / handled if handled > 0 else None)


def percentile(samples: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` percentile (0 < q <= 100) of ``samples``; None without any."""
    if not samples:
        return None
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def conflicts_per_100(outcomes: Mapping[str, int]) -> float | None:
    """Intentions that did not go ahead unopposed (objected, escalated, or any outcome but
    approved) per 100 decided; None when none were decided."""
    decided = sum(outcomes.values())
    if decided <= 0:
        return None
    return 100.0 * (decided - outcomes.get("approved", 0)) / decided
