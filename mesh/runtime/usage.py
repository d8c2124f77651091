"""What an agent process measures of itself for the playbook's metrics, reported to its node
with each heartbeat (:mod:`.nodelink`); the node turns the counters into rates
(:mod:`mesh.core.metrics`).

The server's loop counts seconds in handlers and seconds messages waited before their
handler began (two clock reads per message). Asks are *sampled*: one in SAMPLE_EVERY asks
is timed, the last KEEP timings kept, so the ask path pays one increment and a bit test
for the rest. Pool acquires are few and slow: each is timed. Deadlocks detected by this
process's asks are counted where they are raised.
"""

from __future__ import annotations

from collections import deque

from ..core.metrics import percentile

#: One ask in this many is timed (a power of two: the test is a bit mask).
SAMPLE_EVERY = 16
#: Timed asks kept (the percentiles are over these).
KEEP = 256


class Usage:
    __slots__ = ("asks", "ask_samples", "pool_waits", "pool_wait_s", "deadlocks", "tasks")

    def __init__(self) -> None:
        self.asks = 0  #: asks made (each SAMPLE_EVERY-th is timed)
        self.ask_samples: deque[float] = deque(maxlen=KEEP)  #: seconds, the latest timed asks
        self.pool_waits = 0  #: acquires made (pools and rate limits)
        self.pool_wait_s = 0.0  #: seconds spent in them
        self.deadlocks = 0  #: DeadlockDetected raised by this process's asks
        self.tasks = 0  #: tasks completed (``task_done``: the patterns count theirs)

    def report(self) -> dict[str, float | int | None]:
        """What the heartbeat carries (beside the server's busy and waited seconds)."""
        samples = list(self.ask_samples)
        return {"ask_rtt_p50_s": percentile(samples, 50), "ask_rtt_p99_s": percentile(samples, 99),
                "pool_waits": self.pool_waits, "pool_wait_s": self.pool_wait_s, "deadlocks": self.deadlocks,
                "tasks_completed": self.tasks}


#: This process's figures (an agent process serves one actor).
USAGE = Usage()
