"""The phi-accrual failure detector (Hayashibara et al., 2004), as in Akka and Cassandra.

Instead of a yes/no timeout, the detector keeps the recent intervals between a
peer's heartbeats and says how unlikely the present silence is: phi = -log10 of
the probability that a heartbeat would still arrive this late, assuming the
intervals are normally distributed. phi = 1 means a 10% chance we are wrong to
suspect, phi = 8 one in 10^8. A slow but regular peer raises its own mean, so it is
not suspected; a peer that stops dead is, within a few of its own intervals.

Pure: time comes in as ``now`` (seconds, any monotonic origin).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class DetectorConfig:
    threshold: float = 8.0  #: phi above which a peer is suspect
    max_samples: int = 200  #: intervals remembered per peer
    min_std: float = 0.1  #: seconds; floor of the standard deviation (keeps phi sane for metronomes)
    acceptable_pause: float = 0.0  #: seconds of extra silence tolerated (GC pauses and the like)
    first_interval: float = 1.0  #: seconds; the interval assumed before the second heartbeat

    def __post_init__(self) -> None:
        if self.threshold <= 0 or self.max_samples < 1 or self.min_std <= 0 or self.first_interval <= 0:
            raise ValueError("threshold, max_samples, min_std and first_interval must be > 0")
        if self.acceptable_pause < 0:
            raise ValueError("acceptable_pause must be >= 0 seconds")


class PhiAccrualDetector:
    """Heartbeat arrival statistics of one peer."""

    def __init__(self, config: DetectorConfig, now: float):
        self.config = config
        self.last = now
        first = config.first_interval
        self._intervals: deque[float] = deque([first, first], maxlen=config.max_samples)
        self._sum = 2 * first
        self._sq = 2 * first * first

    def heartbeat(self, now: float) -> None:
        interval = now - self.last
        if interval <= 0:
            return
        self.last = now
        q = self._intervals
        if len(q) == q.maxlen:
            old = q[0]
            self._sum -= old
            self._sq -= old * old
        q.append(interval)
        self._sum += interval
        self._sq += interval * interval

    @property
    def mean(self) -> float:
        return self._sum / len(self._intervals)

    @property
    def std(self) -> float:
        n = len(self._intervals)
        mean = self._sum / n
        var = max(0.0, self._sq / n - mean * mean)
        return max(math.sqrt(var), self.config.min_std)

    def phi(self, now: float) -> float:
        elapsed = now - self.last
        mean = self.mean + self.config.acceptable_pause
        y = (elapsed - mean) / self.std
        # Logistic approximation of the normal CDF (Akka's): accurate to ~1e-4 and never log(0).
        e = math.exp(-y * (1.5976 + 0.070566 * y * y)) if y > -30 else math.inf
        if elapsed > mean:
            return -math.log10(e / (1.0 + e)) if e > 0 else 300.0
        return -math.log10(1.0 - 1.0 / (1.0 + e)) if e != math.inf else 0.0

    def suspect(self, now: float) -> bool:
        return self.phi(now) > self.config.threshold
