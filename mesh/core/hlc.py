"""Hybrid logical clocks (Kulkarni et al., 2014).

A timestamp is one integer: wall-clock milliseconds in the high bits and a 16-bit
logical counter in the low bits, so timestamps compare as plain ints, stay close to
real time, and still order every event that could have caused another even when
clocks drift. Pure: the physical time comes in as ``wall_ms``.
"""

from __future__ import annotations

LOGICAL_BITS = 16
LOGICAL_MASK = (1 << LOGICAL_BITS) - 1


def make(wall_ms: int, logical: int = 0) -> int:
    return (wall_ms << LOGICAL_BITS) | logical


def wall_ms(ts: int) -> int:
    return ts >> LOGICAL_BITS


class HybridClock:
    def __init__(self, last: int = 0):
        self.last = last

    def now(self, wall: int) -> int:
        """A timestamp for a local event (a write), greater than every one before."""
        ts = make(wall)
        self.last = ts if ts > self.last else self.last + 1
        return self.last

    def observe(self, remote: int, wall: int) -> int:
        """Merge a timestamp seen in a message; later local events order after it."""
        self.last = max(make(wall), remote + 1, self.last + 1)
        return self.last
