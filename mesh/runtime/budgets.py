"""Enforcing agents' CPU and memory budgets with psutil: the node's sampling thread.

Every agent runs in its own process group (its pgid is its pid), so
"the agent" is its whole process tree, children included.

* Sampling: every ``SAMPLE_S`` (0.1 s) for an agent with a budget, every
  ``IDLE_SAMPLE_S`` (1 s) for one without (for `mesh status`), or less often once
  there are more than ``IDLE_SAMPLES_PER_S`` (100) of those: together they are
  sampled at most 100 times a second (1,000 agents: each every 10 s). A sample reads,
  for each process of the tree, CPU times and RSS from one read of
  ``/proc/PID/stat`` (about 9 us; psutil elsewhere); the tree itself (the children of
  each of its threads, from ``/proc/PID/task/TID/children``) is re-read every
  ``TREE_S`` (0.5 s), or for an agent without a budget every ``IDLE_TREE_S`` (5 s) and
  at most every fifth sample (past 100 agents: 20 trees a second, however many). Due
  samples come off a heap. The sampler's own CPU with 1,000 agents without budgets:
  0.75 % of one core (14 % with psutil, a sample a second each, and the tree every sample).
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

import heapq
import itertools
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
IDLE_SAMPLE_S = 1.0  #: seconds between samples of an agent without one (at least; see IDLE_SAMPLES_PER_S)
#: Samples per second for all the agents without a budget together, at most: past this many agents
#: each is sampled less often than every IDLE_SAMPLE_S (1,000 agents: every 10 s), so the node's
#: idle cost stops growing with them.
IDLE_SAMPLES_PER_S = 100
TREE_S = 0.5  #: seconds between re-reads of an agent's process tree
IDLE_TREE_S = 5.0  #: the same for an agent without a budget (at least; every fifth sample at most)
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
        self._idle_every = IDLE_SAMPLE_S
        self._fresh: list[Tracked] = []  #: tracked since the thread last looked: to put on its heap
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
            self._fresh.append(t)
            self._pace()
        self._wake.set()

    def untrack(self, name: str) -> str | None:
        """Stop watching ``name`` (resuming it if it is stopped). Returns the budget reason
        the node ended it for, if it did."""
        with self._lock:
            t = self._agents.pop(name, None)
            if t is None:
                return None
            self._pace()
            if t.stopped:
                _signal_tree(t, signal.SIGCONT)
            return t.reason

    def _pace(self) -> None:
        """How often an agent without a budget is sampled, for as many as are tracked. Hold the lock."""
        idle = sum(1 for t in self._agents.values() if not (t.cpu_budget or t.memory_budget))
        self._idle_every = max(IDLE_SAMPLE_S, idle / IDLE_SAMPLES_PER_S)

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
        # Due samples come off a heap: a wake costs what is due, not a pass over every agent.
        due: list[tuple[float, int, Tracked]] = []
        seq = itertools.count()
        while True:
            with self._lock:
                if self._closed:
                    return
                for t in self._fresh:
                    heapq.heappush(due, (t.next_sample, next(seq), t))
                self._fresh.clear()
                now = time.monotonic()
                while due and due[0][0] <= now:
                    _, _, t = heapq.heappop(due)
                    if self._agents.get(t.name) is not t:
                        continue  # untracked (or tracked again: that one has its own entry)
                    try:
                        self._sample(t, now)
                    except Exception:  # never let one odd process stop enforcement for all
                        log.exception("sampling %s failed", t.name)
                        t.next_sample = now + SAMPLE_S
                    heapq.heappush(due, (t.next_sample, next(seq), t))
                nxt = due[0][0] if due else now + IDLE_SAMPLE_S
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
        t.next_tree = now + (TREE_S if t.cpu_budget or t.memory_budget else max(IDLE_TREE_S, 5 * self._idle_every))

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
            read = _read_stat(pid, p)
            if read is None:
                del t.procs[pid]
                continue
            cpu, children_cpu, resident = read
            cpu_total += cpu + children_cpu if pid == t.pid else cpu
            rss += resident
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
            t.next_sample = now + self._idle_every

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


_CLK_TCK = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_PROC_STAT = os.path.exists("/proc/self/stat")


def _read_stat(pid: int, proc: psutil.Process) -> tuple[float, float, int] | None:
    """``(cpu seconds, its reaped children's cpu seconds, rss bytes)`` of ``pid``, or None if it is
    gone: on Linux one read of ``/proc/PID/stat`` (what psutil reads in two, at several times the
    cost: with a thousand agents the sampler is the node's largest idle cost), else psutil's."""
    if _PROC_STAT:
        try:
            fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
            try:
                text = os.read(fd, 1024)
            finally:
                os.close(fd)
            fields = text[text.rfind(b")") + 2:].split()  # the command name may hold spaces and parentheses
            # Fields 14-17 (utime, stime, cutime, cstime) in clock ticks, 24 (rss) in pages; 3 is [0].
            return ((int(fields[11]) + int(fields[12])) / _CLK_TCK, (int(fields[13]) + int(fields[14])) / _CLK_TCK,
                    int(fields[21]) * _PAGE)
        except (OSError, IndexError, ValueError):
            return None
    try:
        with proc.oneshot():
            times = proc.cpu_times()
            rss = proc.memory_info().rss
    except psutil.Error:
        return None
    return times.user + times.system, times.children_user + times.children_system, rss


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
