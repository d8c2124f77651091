"""Enforcing agents' CPU and memory budgets with psutil: the node's sampling thread.

Every agent runs in its own session and process group (its pgid is its pid), so
"the agent" is its whole process tree, children included.

* Sampling: every ``SAMPLE_S`` (0.1 s) for an agent with a budget, every
  ``IDLE_SAMPLE_S`` (1 s) for one without (for `mesh status`). A sample reads, for
  each process of the tree, CPU times and RSS with psutil (about 50 us per
  process); the tree itself (the children of each of its threads, from
  ``/proc/PID/task/TID/children``) is re-read every ``TREE_S`` (0.5 s). The node's
  own CPU with 50 idle agents measured about 9 % of one core with budgets on all of
  them, 4.5 % with none (`benchmarks/budgets.py`).
* Memory: the figure enforced is PSS (proportional set size): a page shared by k
  processes counts 1/k to each, so the tree's figure is what it really occupies,
  and forked children that share their parent's pages are not counted twice (RSS
  would double-count them; USS would miss shared pages entirely). PSS costs a read
  of ``smaps_rollup`` (about 250 us), so the sampler reads RSS (an upper bound of
  PSS) every time and PSS only when RSS is over the budget. Over the budget, the
  tree gets SIGCONT and SIGTERM, and SIGKILL after ``MEMORY_GRACE_S`` (0.2 s).
* CPU: :class:`mesh.core.budget.CpuThrottle` decides, the sampler SIGSTOPs and
  SIGCONTs the process group. No stop lasts more than 1 s, so asks to a throttled
  agent wait instead of failing, and the node (which reaps by pid, not by
  heartbeat) never takes it for dead. If the node dies, the kernel sends the agent
  SIGCONT (its PDEATHSIG) and the agent resumes its children before it exits.

The node calls :meth:`track` when an agent starts and :meth:`untrack` before it
reaps one (the exited process is still a zombie then, so its pid cannot have been
reused by the time a signal is sent).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

from ..core.budget import CpuThrottle, MemoryCheck
from .containment import descendants

log = logging.getLogger("mesh.budgets")

SAMPLE_S = 0.1  #: seconds between samples of an agent with a budget
IDLE_SAMPLE_S = 1.0  #: seconds between samples of an agent without one
TREE_S = 0.5  #: seconds between re-reads of an agent's process tree
MEMORY_GRACE_S = 0.2  #: seconds between SIGTERM and SIGKILL for an agent over its memory budget


@dataclass
class Tracked:
    name: str
    pid: int
    cpu_budget: float | None
    memory_budget: int | None
    throttle: CpuThrottle | None = None
    memory: MemoryCheck | None = None
    procs: dict[int, psutil.Process] = field(default_factory=dict)
    next_sample: float = 0.0
    next_tree: float = 0.0
    history: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=40))  # (t, cpu seconds)
    cpu: float = 0.0  #: cores, averaged over the last second or so
    memory_bytes: int = 0
    peak_memory: int = 0
    stopped: bool = False
    killing_since: float | None = None
    reason: str | None = None  #: why the node ended it (memory budget), once it did


class Enforcer:
    def __init__(self, on_event: Callable[[str], None] = lambda line: None) -> None:
        self.on_event = on_event
        self._lock = threading.Lock()
        self._agents: dict[str, Tracked] = {}
        self._wake = threading.Event()
        self._closed = False
        self.samples = 0
        self._thread = threading.Thread(target=self._run, name="mesh-budgets", daemon=True)
        self._thread.start()

    # -- the node's side -----------------------------------------------------------------

    def track(self, name: str, pid: int, cpu: float | None, memory: int | None) -> None:
        now = time.monotonic()
        t = Tracked(name, pid, cpu, memory)
        if memory:
            t.memory = MemoryCheck(memory)
        with self._lock:
            self._agents[name] = t
            t.next_sample = now
        self._wake.set()

    def untrack(self, name: str) -> str | None:
        """Stop watching ``name`` (resuming it if it is stopped). Returns the budget reason
        the node ended it for, if it did."""
        with self._lock:
            t = self._agents.pop(name, None)
            if t is None:
                return None
            if t.stopped:
                _signal_tree(t, signal.SIGCONT)
            return t.reason

    def info(self, name: str) -> dict[str, float | int | bool]:
        with self._lock:
            t = self._agents.get(name)
            if t is None:
                return {}
            now = time.monotonic()
            return {"cpu": round(t.cpu, 3), "memory_bytes": t.memory_bytes,
                    "throttled_s": round(t.throttle.throttled_for(now), 3) if t.throttle else 0.0,
                    "throttled": t.stopped, "peak_memory_bytes": t.peak_memory}

    def load(self) -> tuple[float, int]:
        """CPU (cores) and memory (bytes) all tracked agents use now."""
        with self._lock:
            return sum(t.cpu for t in self._agents.values()), sum(t.memory_bytes for t in self._agents.values())

    def close(self) -> None:
        """Resume every stopped agent and end the thread."""
        with self._lock:
            self._closed = True
            for t in self._agents.values():
                if t.stopped:
                    _signal_tree(t, signal.SIGCONT)
                    t.stopped = False
            self._agents.clear()
        self._wake.set()
        self._thread.join(timeout=2)

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                now = time.monotonic()
                nxt = now + IDLE_SAMPLE_S
                for t in list(self._agents.values()):
                    if now >= t.next_sample:
                        try:
                            self._sample(t, now)
                        except Exception:  # never let one odd process stop enforcement for all
                            log.exception("sampling %s failed", t.name)
                            t.next_sample = now + SAMPLE_S
                    nxt = min(nxt, t.next_sample)
            delay = max(0.0, nxt - time.monotonic())
            if delay:
                self._wake.wait(delay)
                self._wake.clear()

    def _tree(self, t: Tracked, now: float) -> None:
        pids = {t.pid, *descendants(t.pid)}
        for pid in list(t.procs):
            if pid not in pids:
                del t.procs[pid]
        for pid in pids:
            if pid not in t.procs:
                try:
                    t.procs[pid] = psutil.Process(pid)
                except psutil.Error:
                    pass
        t.next_tree = now + TREE_S

    def _sample(self, t: Tracked, now: float) -> None:
        self.samples += 1
        if t.killing_since is not None:
            if now - t.killing_since >= MEMORY_GRACE_S:
                _signal_tree(t, signal.SIGKILL)
                t.next_sample = now + IDLE_SAMPLE_S
            else:
                t.next_sample = t.killing_since + MEMORY_GRACE_S
            return
        if now >= t.next_tree:
            self._tree(t, now)
        cpu_total, rss = 0.0, 0
        for pid, p in list(t.procs.items()):
            try:
                with p.oneshot():
                    times = p.cpu_times()
                    rss += p.memory_info().rss
                cpu_total += times.user + times.system
                if pid == t.pid:
                    cpu_total += times.children_user + times.children_system
            except psutil.Error:
                del t.procs[pid]
        t.history.append((now, cpu_total))
        while len(t.history) > 2 and now - t.history[0][0] > 1.5:
            t.history.popleft()
        t0, c0 = t.history[0]
        if now - t0 >= 0.2:
            t.cpu = max(0.0, (cpu_total - c0) / (now - t0))
        # Memory: the cheap upper bound first, the exact figure only when it is over.
        memory = rss
        if t.memory is not None and t.memory.needs_exact(rss):
            memory = self._pss(t)
            reason = t.memory.over(memory)
            if reason is not None:
                t.reason = reason
                t.killing_since = now
                if t.stopped:
                    t.stopped = False
                _signal_tree(t, signal.SIGCONT)
                _signal_tree(t, signal.SIGTERM)
                self.on_event(f"{t.name}: {reason}; ending it")
                t.memory_bytes = memory
                t.peak_memory = max(t.peak_memory, memory)
                t.next_sample = now + MEMORY_GRACE_S
                return
        t.memory_bytes = memory
        t.peak_memory = max(t.peak_memory, memory)
        # CPU: the throttle decides stop / run and when to look again.
        if t.cpu_budget:
            if t.throttle is None:
                t.throttle = CpuThrottle(t.cpu_budget, now, cpu_total)
                t.next_sample = now + SAMPLE_S
                return
            verdict = t.throttle.sample(now, cpu_total)
            if verdict.stop != t.stopped:
                _signal_tree(t, signal.SIGSTOP if verdict.stop else signal.SIGCONT)
                t.stopped = verdict.stop
            t.next_sample = min(verdict.next_check, now + SAMPLE_S) if not verdict.stop else verdict.next_check
        elif t.memory is not None:
            t.next_sample = now + SAMPLE_S
        else:
            t.next_sample = now + IDLE_SAMPLE_S

    def _pss(self, t: Tracked) -> int:
        total = 0
        for pid, p in list(t.procs.items()):
            try:
                total += p.memory_full_info().pss
            except psutil.AccessDenied:
                total += p.memory_info().rss
            except psutil.Error:
                t.procs.pop(pid, None)
        return total


def _signal_tree(t: Tracked, sig: int) -> None:
    """Signal the agent's process group and every process of its tree as last read: a descendant
    in a session of its own (setsid) is outside the group but still in the tree (the agent is
    its subreaper), and is throttled, resumed and ended with the rest."""
    try:
        os.killpg(t.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for pid, proc in list(t.procs.items()):
        if pid != t.pid:
            try:
                proc.send_signal(sig)  # psutil checks the pid was not reused since the tree was read
            except psutil.Error:
                pass
