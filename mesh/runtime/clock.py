"""Clocks: where the runtime's components read the time, so that a test can hold it still.

A component takes a clock (``clock=``) and reads ``monotonic()`` for durations and
deadlines, ``time()`` for wall-clock stamps, and calls ``sleep()`` to wait. The
:class:`RealClock` is the system's; a :class:`FakeClock` moves only when a test calls
``advance()``, so a timeout, a lease or an election timer can be run to the instant.

What a clock does not govern: how long a socket waits (a receive's wait slice, a send
blocked on a full queue). Those are bounded waits of the transport, in real time; an
ask's timeout, measured by its link against the link's clock, is the application's.
"""

from __future__ import annotations

import threading
import time as _time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds since an arbitrary start, never going back: for durations and deadlines."""
        ...

    def time(self) -> float:
        """Seconds since the epoch: for stamps other processes read."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class RealClock:
    """The system's clocks (``time.monotonic``, ``time.time``, ``time.sleep``), with no wrapper call."""

    monotonic = staticmethod(_time.monotonic)
    time = staticmethod(_time.time)
    sleep = staticmethod(_time.sleep)


REAL_CLOCK = RealClock()


class FakeClock:
    """Time that moves only when told to.

    ``advance(seconds)`` moves it and wakes the threads sleeping on it. ``sleep`` waits
    until another thread has advanced the clock far enough, unless the clock was made
    with ``advance_on_sleep=True``: then a sleep moves the clock itself, which suits one
    thread simulating alone.
    """

    def __init__(self, start: float = 1000.0, *, epoch: float = 1_700_000_000.0, advance_on_sleep: bool = False):
        self._now = float(start)
        self._epoch_offset = float(epoch) - float(start)
        self._moved = threading.Condition()
        self.advance_on_sleep = advance_on_sleep

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._now + self._epoch_offset

    def advance(self, seconds: float) -> float:
        """Move the clock ``seconds`` forward; returns the new ``monotonic()``."""
        if seconds < 0:
            raise ValueError("a clock never goes back")
        with self._moved:
            self._now += seconds
            self._moved.notify_all()
            return self._now

    def sleep(self, seconds: float) -> None:
        if self.advance_on_sleep:
            self.advance(max(0.0, seconds))
            return
        with self._moved:
            until = self._now + max(0.0, seconds)
            while self._now < until:
                self._moved.wait()

    def __repr__(self) -> str:
        return f"FakeClock(monotonic={self._now:g})"


__all__ = ["Clock", "RealClock", "REAL_CLOCK", "FakeClock"]
