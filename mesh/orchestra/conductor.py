"""The conductor: runs an orchestra's sections in order through a Client, and has the final say.

Each section runs its agents by its pattern, on the patterns of :mod:`mesh.patterns`:

* ``sequential``: a :class:`~mesh.patterns.Pipeline` of the section's agents, in the order
  written; each agent sees what the ones before it answered;
* ``parallel``: a :class:`~mesh.patterns.Burst` of the section's agents (``limit`` in flight), each
  seeing the answers of the sections before (never its siblings', whatever order they run in);
* ``parallel with resource management``: the same burst, each part inside a lease of the
  section's pool, asked for in priority order (:mod:`mesh.orchestra.line`).

The patterns see a mesh in which asking agent X runs X's whole *part* (the ask and the failure
rules around it, :mod:`mesh.orchestra.parts`), so a pattern decides order and concurrency and
the rules stay in one place. Every agent is asked with the run's context (a dict):

    {"orchestra": NAME, "run": RUN_ID, "section": SECTION, "agent": AGENT,
     "input": {...the spec's [input]...},
     "results": {SECTION: {AGENT: ANSWER, ...}, ...}}   # every answer so far

The conductor decides what the agents cannot: the priority of pool requests, what a failure
does, and (the coordination rule "conflicts: the conductor has the final say") the escalated
intentions of its own agents while the run goes on, when the leader waits for a person to decide
them (:mod:`mesh.orchestra.conflicts`; hook ``on_conflict``). A critical failure stops the
orchestra: no part begins after it (parts already running finish within their time), HELP is
published with an alert that waits for a person (``client.alert``; ``mesh alerts``, ``mesh
ack``), and the report says so.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import MeshError
from ..patterns import Burst, Pipeline, Stage
from .conflicts import Conflict, ConflictWatcher, Ruling, Settled
from .events import COMPLETE, HELP, START, Bus
from .line import PriorityLine
from .parts import CONTROL_TIMEOUT_S, Parts
from .report import Outcome, Report, SectionReport
from .spec import PARALLEL_WITH_RESOURCES, SEQUENTIAL, Orchestra, Section

#: Where a run's progress is kept in the shared state: ``orchestra/NAME`` (the dashboard shows it).
PROGRESS_PREFIX = "orchestra/"


@dataclass(frozen=True)
class Progress:
    """What the conductor is doing, for a live view: ``kind`` is "run" (begins), "section" (begins),
    "start", "restart", "kill", "end" (of a part's ask or the part), "conflict" (the conductor
    decided an escalation: ``conflict``), "stopped" or "done"."""

    kind: str
    section: str | None = None
    outcome: Outcome | None = None
    done: int = 0  #: parts ended so far
    total: int = 0  #: parts in the orchestra
    report: Report | None = None  #: with "done"
    conflict: Settled | None = None  #: with "conflict"


class Conductor:
    """Runs ``orchestra`` through ``mesh`` (a Client); ``on_progress(Progress)`` hears each step.

    ``on_conflict(Conflict)`` rules on each escalated intention of the orchestra's agents during
    the run: True (approve) or False (deny), or ``(bool, why)``; default
    :func:`~mesh.orchestra.conflicts.by_evidence` (approve when the evidence is at least the
    strategy objections' weight)."""

    def __init__(self, orchestra: Orchestra, mesh: Any, on_progress: Callable[[Progress], None] | None = None,
                 on_conflict: Callable[[Conflict], Ruling] | None = None) -> None:
        self.orchestra = orchestra
        self.mesh = mesh
        self._given = on_progress or (lambda progress: None)
        self.on_conflict = on_conflict
        self.stopped = threading.Event()
        self.bus = Bus(mesh, orchestra.name)
        self.parts = Parts(mesh, self.bus, self._heard, self.stopped)
        self.total = sum(len(s.agents) for s in orchestra.sections)
        self._lock = threading.Lock()
        self._done = 0
        self._results: dict[str, dict[str, object]] = {}
        self._report: Report | None = None

    def on_progress(self, progress: Progress) -> None:
        """Tell the caller's ``on_progress``, and the mesh: ``orchestra/NAME`` in the shared state holds
        where the run stands (what ``mesh status`` and the dashboard show)."""
        self._given(progress)
        state = {"run": "running", "done": "done", "stopped": "stopped"}.get(progress.kind, "running")
        report = progress.report
        try:
            self.mesh.state.set(PROGRESS_PREFIX + self.orchestra.name, {
                "state": state, "run": self.bus.run, "section": progress.section, "step": progress.kind,
                "done": progress.done, "total": progress.total, "at": time.time(),
                "status": report.status if report is not None else None})
        except MeshError:
            pass  # the view is a courtesy: the run goes on without it

    def run(self) -> Report:
        """Run every section in order; returns the :class:`Report` (never raises for a part)."""
        orchestra = self.orchestra
        self.bus.run = None
        run = self.bus.publish(START, {"sections": [s.name for s in orchestra.sections]})
        self.bus.run = run
        report = self._report = Report(orchestra.name, run, orchestra.role, dict(orchestra.rules), [], time.time())
        started = time.monotonic()
        self.on_progress(Progress("run", total=self.total))
        watcher = ConflictWatcher(self.mesh, orchestra.name, {a: s.name for s in orchestra.sections for a in s.agents},
                                  self.on_conflict, self._settled)
        watcher.start()
        try:
            self._sections(report)
        finally:
            watcher.stop()
        report.elapsed = time.monotonic() - started
        self.bus.publish(COMPLETE, {"status": report.status}, run)
        self.on_progress(Progress("done", done=self._done, total=self.total, report=report))
        return report

    def _sections(self, report: Report) -> None:
        for section in self.orchestra.sections:
            outcomes = [Outcome(section.name, agent) for agent in section.agents]
            entry = SectionReport(section.name, section.pattern, outcomes)
            report.sections.append(entry)
            if self.stopped.is_set():
                for outcome in outcomes:
                    outcome.error = "the orchestra stopped before this section"
                continue
            self._results[section.name] = {}
            corr = self.bus.publish(START, {"section": section.name, "pattern": section.pattern,
                                            "agents": list(section.agents)}, report.run)
            self.on_progress(Progress("section", section.name, done=self._done, total=self.total))
            began = time.monotonic()
            if section.pattern == SEQUENTIAL:
                self._sequential(section, outcomes, corr)
            else:
                self._parallel(section, outcomes, corr)
            entry.elapsed = time.monotonic() - began
            self.bus.publish(COMPLETE, {"section": section.name, "status": entry.status}, corr)

    # -- the patterns ------------------------------------------------------------------------

    def _sequential(self, section: Section, outcomes: list[Outcome], corr: str) -> None:
        stages = [Stage(agent, agent, timeout=section.timeout_of(agent), on_failure="continue_with_warning")
                  for agent in section.agents]
        Pipeline(stages, _PartsMesh(self, section, outcomes, corr)).run(None)

    def _parallel(self, section: Section, outcomes: list[Outcome], corr: str) -> None:
        order = sorted(section.agents, key=lambda a: (-self.orchestra.priority_of(a), section.agents.index(a)))
        line = None
        if section.pattern == PARALLEL_WITH_RESOURCES:
            assert section.pool is not None  # the spec gives every such section its pool
            line = PriorityLine(self.mesh, section.pool, section.units, order, self.orchestra.max_wait, self.stopped)
        threads = concurrent.futures.ThreadPoolExecutor(len(order), f"orchestra-{section.name}")
        with self._lock:
            frozen = copy.deepcopy(self._results)
        parts = _PartsMesh(self, section, outcomes, corr, line, threads, frozen)
        longest = max(section.timeout_of(a) for a in order) + self.orchestra.max_wait + 3 * CONTROL_TIMEOUT_S
        burst = Burst(parts, order, limit=section.limit or len(order), timeout=longest)
        try:
            for _ in burst.results({agent: None for agent in order}):
                if self.stopped.is_set():
                    break  # the burst cancels the parts not begun; those running finish in their time
        finally:
            threads.shutdown(wait=True, cancel_futures=True)
        for outcome in outcomes:
            if outcome.status == "not run" and outcome.error is None:
                outcome.error = "the orchestra stopped before this part"

    # -- what the parts tell -------------------------------------------------------------------

    def context(self, section: Section, agent: str, frozen: dict[str, Any] | None = None) -> dict[str, Any]:
        """What ``agent`` is asked with: the answers so far, or ``frozen`` (a parallel section's parts
        all see the sections before it as they stood when it began, never one another, whatever
        order they happen to run in)."""
        with self._lock:
            results = copy.deepcopy(self._results if frozen is None else frozen)
        return {"orchestra": self.orchestra.name, "run": self.bus.run, "section": section.name, "agent": agent,
                "input": dict(self.orchestra.input), "results": results}

    def _heard(self, kind: str, outcome: Outcome) -> None:
        if kind == "end":
            with self._lock:
                self._done += 1
                if outcome.status == "ok":
                    self._results[outcome.section][outcome.agent] = outcome.value
        self.on_progress(Progress(kind, outcome.section, outcome, self._done, self.total))
        if kind == "end" and outcome.status == "critical":
            self._stop(outcome)

    def _settled(self, settled: Settled) -> None:
        report = self._report
        assert report is not None
        with self._lock:
            report.conflicts.append(settled)
        self.on_progress(Progress("conflict", settled.section, done=self._done, total=self.total, conflict=settled))

    def _stop(self, outcome: Outcome) -> None:
        """The rule "stop orchestra, alert humans" (the first critical failure does it)."""
        with self._lock:
            if self.stopped.is_set():
                return
            self.stopped.set()
        report = self._report
        assert report is not None
        reason = f"orchestra {self.orchestra.name!r} stopped: {outcome.section}/{outcome.agent}: {outcome.error}"
        report.stopped_by = f"{outcome.section}/{outcome.agent}: {outcome.error}"
        data = {"orchestra": self.orchestra.name, "run": self.bus.run, "section": outcome.section,
                "agent": outcome.agent, "result": outcome.value}
        raise_alert = getattr(self.mesh, "alert", None)
        try:
            if raise_alert is None:
                raise MeshError("this mesh keeps no alerts")
            kept = raise_alert(reason, data, by=f"orchestra:{self.orchestra.name}")
            report.alerts.append({"id": kept["id"], "reason": reason, "kept": True})
        except MeshError as exc:  # nothing keeps it: the HELP event is all a person gets
            self.bus.publish(HELP, {"reason": reason, **data}, self.bus.run)
            report.alerts.append({"id": None, "reason": reason, "kept": False,
                                  "note": f"published on HELP; not kept ({exc})"})
        self.on_progress(Progress("stopped", outcome.section, outcome, self._done, self.total))


class _PartsMesh:
    """The mesh a section's pattern sees: asking agent X runs X's part (see the module note)."""

    def __init__(self, conductor: Conductor, section: Section, outcomes: list[Outcome], corr: str,
                 line: PriorityLine | None = None, threads: concurrent.futures.Executor | None = None,
                 frozen: dict[str, Any] | None = None) -> None:
        self.conductor = conductor
        self.frozen = frozen  # a parallel section's view of the answers so far (see Conductor.context)
        self.section = section
        self.outcomes = {o.agent: o for o in outcomes}
        self.corr = corr
        self.line = line
        self.threads = threads

    def actor(self, name: str) -> "_Part":
        return _Part(self, name)

    def run_part(self, agent: str) -> Outcome:
        conductor, section = self.conductor, self.section
        return conductor.parts.run(self.outcomes[agent], section.timeout_of(agent),
                                   lambda: conductor.context(section, agent, self.frozen), self.corr, self.line)


class _Part:
    def __init__(self, parts: _PartsMesh, agent: str) -> None:
        self.parts = parts
        self.agent = agent

    def ask(self, message: object, timeout: float = 0.0) -> Outcome:
        return self.parts.run_part(self.agent)

    async def ask_async(self, message: object, timeout: float = 0.0) -> Outcome:
        return await asyncio.get_running_loop().run_in_executor(self.parts.threads, self.parts.run_part, self.agent)
