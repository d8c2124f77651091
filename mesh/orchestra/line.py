"""The rule "queue and wait" with the playbook's "pooled with priority queuing": the parts of a
section that need a pool ask for their lease in priority order, one request at a time, and each
waits in line until it is granted.

The mesh's pools serve requests first come, first served (:mod:`mesh.core.pools`), so the
order in which the orchestra sends its requests is the order in which they are granted among
themselves: a part sends its request only once every part ahead of it (higher priority, then
earlier in the section) has been granted its lease or has left the line. A request waits at the
pool in slices of :data:`SLICE_S` seconds, so that a stopped orchestra stops waiting at once;
the wait ends, unsuccessfully, after ``max_wait`` seconds.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

from ..errors import AcquireTimeout

#: Seconds one pool request waits before the part looks whether the orchestra stopped.
SLICE_S = 2.0


class _Pools(Protocol):
    def acquire(self, name: str, *, n: int = ..., timeout: float = ...) -> Any: ...


class Stopped(Exception):
    """The orchestra stopped while this part waited in line."""


class PriorityLine:
    """The parts of one section in the order they may ask for ``pool``."""

    def __init__(self, mesh: _Pools, pool: str, units: int, order: list[str], max_wait: float,
                 stopped: threading.Event) -> None:
        self.mesh = mesh
        self.pool = pool
        self.units = units
        self.order = list(order)
        self.max_wait = max_wait
        self.stopped = stopped
        self._left: set[str] = set()
        self._changed = threading.Condition()

    def ahead_of(self, agent: str) -> int:
        """Parts ahead of ``agent`` in line when it joined (its place, counted from 0)."""
        return self.order.index(agent)

    def lease(self, agent: str) -> tuple[Any, float]:
        """Wait for ``agent``'s turn, then for its lease: (the lease, seconds waited in all).
        Raises Stopped, AcquireTimeout after ``max_wait``, or the pool's refusal (ResourceError)."""
        started = time.monotonic()
        try:
            with self._changed:
                ahead = self.order[:self.order.index(agent)]
                while not self._left.issuperset(ahead):
                    if self.stopped.is_set():
                        raise Stopped()
                    self._changed.wait(0.1)
            while True:
                if self.stopped.is_set():
                    raise Stopped()
                remaining = self.max_wait - (time.monotonic() - started)
                if remaining <= 0:
                    raise AcquireTimeout(f"no lease of {self.units} of pool {self.pool!r} within"
                                         f" {self.max_wait:g} s")
                try:
                    lease = self.mesh.acquire(self.pool, n=self.units, timeout=min(SLICE_S, remaining))
                except AcquireTimeout:
                    continue
                return lease, time.monotonic() - started
        finally:
            self.leave(agent)

    def leave(self, agent: str) -> None:
        """``agent`` is out of line (granted, refused or gone): the next part may ask."""
        with self._changed:
            self._left.add(agent)
            self._changed.notify_all()
