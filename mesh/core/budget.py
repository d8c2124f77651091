"""Budget policy: when to stop, resume or end an agent, from samples of what it uses.

Pure: the runtime samples the agent's whole process tree (CPU seconds used so far,
memory) and feeds the numbers in with the time; the policy answers what to do and
when to look again.

CPU (``CpuThrottle``): a token bucket of CPU time. It fills at ``budget`` cores
(``budget`` CPU-seconds per second) up to ``burst`` seconds' worth, and every
sample takes out what the tree used since the previous one. When the bucket is in
debt the agent is stopped (SIGSTOP of its process group) for as long as repaying the
debt takes at the budget rate, at most ``max_stop`` seconds at a time; then it runs
for a slice short enough that a small budget is not overrun (a slice of ``slice``
seconds at most, less for budgets under ``slice / (slice + max_stop)`` cores, and
halved whenever a slice left more debt than one stop repays: a tree of many busy
processes gets shorter slices). The
average over a few seconds converges to the budget whatever the agent does, and no
single stop lasts longer than ``max_stop`` (so asks wait for it, and ZeroMQ's 5 s
heartbeat timeout never fires).

Memory (``MemoryCheck``): the runtime reads the cheap figure (RSS, a sum over the
tree that counts shared pages once per process, so an upper bound of the tree's
real use) at every sample, and only when that is over the budget the exact figure
(PSS, shared pages divided among the processes sharing them). The agent is ended
when the exact figure is over the budget.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Verdict:
    stop: bool  #: the agent should be stopped (True) or running (False) from now on
    next_check: float  #: when to sample again (seconds, the same clock as ``now``)


class CpuThrottle:
    def __init__(self, budget: float, now: float, cpu_total: float, burst: float = 0.5, max_stop: float = 1.0,
                 slice: float = 0.1):
        if budget <= 0:
            raise ValueError("a CPU budget is a positive number of cores")
        self.budget = budget
        self.capacity = budget * burst
        self.bucket = self.capacity
        self.max_stop = max_stop
        self.nominal = min(slice, max(0.005, budget * max_stop / (1.0 - budget))) if budget < 1 else slice
        self.slice = self.nominal
        self.stopped = False
        self.stopped_total = 0.0  #: seconds spent stopped
        self._last_now = now
        self._last_cpu = cpu_total
        self._stopped_at = 0.0
        self._stop_until = 0.0

    def sample(self, now: float, cpu_total: float) -> Verdict:
        dt = max(0.0, now - self._last_now)
        used = max(0.0, cpu_total - self._last_cpu)
        self._last_now, self._last_cpu = now, cpu_total
        self.bucket = min(self.capacity, self.bucket + self.budget * dt - used)
        if self.stopped:
            if now < self._stop_until:
                return Verdict(True, self._stop_until)
            self.stopped = False
            self.stopped_total += now - self._stopped_at
            return Verdict(False, now + self.slice)
        if self.bucket < 0:
            owed = -self.bucket / self.budget
            if owed > self.max_stop:  # the slice was too long for this tree (many busy processes): shorten it
                self.slice = max(0.005, self.slice / 2)
            self.stopped = True
            self._stopped_at = now
            self._stop_until = now + min(self.max_stop, owed)
            return Verdict(True, self._stop_until)
        self.slice = min(self.nominal, self.slice * 1.25)
        return Verdict(False, now + self.slice)

    def throttled_for(self, now: float) -> float:
        """Seconds stopped so far, the current stop included."""
        return self.stopped_total + (now - self._stopped_at if self.stopped else 0.0)


class MemoryCheck:
    def __init__(self, budget: int):
        if budget <= 0:
            raise ValueError("a memory budget is a positive number of bytes")
        self.budget = budget

    def needs_exact(self, upper_bound: int) -> bool:
        """Whether the cheap figure (an upper bound) leaves any doubt."""
        return upper_bound > self.budget

    def over(self, exact: int) -> str | None:
        """The reason to end the agent, or None."""
        if exact > self.budget:
            return f"memory budget exceeded: {_mb(exact)} > {_mb(self.budget)}"
        return None


def _mb(n: int) -> str:
    return f"{n / 1e6:.0f} MB"
