"""Pattern 4 of the playbook: hierarchical command.

When to use: complex decisions where clear authority is needed, like a military operation
with a clear chain of command. Pros: efficient, every failure is handled by the lowest rank
that can decide it, one place (the commander) has the final say. Cons: rigid, and the
commander is a single point of decision.

The hierarchy is declared, as the playbook's YAML is: a dict, or a TOML file
(:meth:`Hierarchy.load`) with the same keys, checked when it is built (unknown keys, empty
squads, an agent holding two ranks, cycles in the chain of command: :class:`mesh.SpecError`
naming the key). In TOML, for example:

    [commander]
    name = "QE Mission Control"
    responsibilities = ["Strategic planning", "Resource allocation", "Final decisions"]

    [squad_leaders.functional_testing]            # the key is the squad leader's actor name
    workers = ["ui_tester", "api_tester"]
    worker_timeout = "10s"                        # per task (default 30 s)
    timeout = "30s"                               # for the squad's report (default 2 x worker_timeout + 5 s)

How a mission runs. The :class:`Commander` (a plain class: run it in a client, or in an
actor's handler) plans objectives (hook ``plan``), assigns each to a squad (hook ``assign``)
and orders the squad leaders, squads at once, one objective at a time per squad. A
:class:`SquadLeader` (an actor) splits its objective among its workers (hook ``split``), asks
them all at once with the worker timeout, and reports up; it counts each subtask a worker
finished as a task completed (the playbook's throughput, in the leader's metrics). A worker is
any actor that answers an ask (:class:`Worker` names the hook ``perform``).

How failures escalate. A worker that fails (raises, dies, times out, is not there) goes to
its squad leader's ``on_worker_failure``: ``retry``, ``skip`` (its part is left out, the
squad goes on) or ``escalate`` (default: retry once, then escalate). A leader that runs out
of time escalates too. A squad whose report escalates, or whose leader fails (dies, times
out, raises), goes to the commander's ``on_squad_failure``: ``retry`` (order it again),
``skip`` (go on without it, the default) or ``abort`` (stop the mission and raise an alert
for a person). The mission summary says what happened, step by step (``log``), and lists
every escalation with each rank's decision.

Built on the public API only: ``mesh`` is a Client or an actor's ``self.mesh``.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..actor import Actor
from ..errors import ActorDied, ActorNotFound, AskTimeout, MeshError, RemoteError, SpecError
from ..spec import parse_duration
from ..topics import ALERT
from .counting import count_done

WORKER_DECISIONS = ("retry", "skip", "escalate")  #: what a squad leader may decide of a worker's failure
SQUAD_DECISIONS = ("retry", "skip", "abort")  #: what the commander may decide of a squad's failure
DEFAULT_WORKER_TIMEOUT = 30.0  #: seconds a worker may take per task
REPORT_MARGIN = 0.5  #: seconds a squad leader keeps to send its report before the commander's timeout
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
_COMMANDER_KEYS = ("name", "agent", "responsibilities")
_SQUAD_KEYS = ("leader", "workers", "timeout", "worker_timeout")


# -- the declared hierarchy -------------------------------------------------------------------


@dataclass(frozen=True)
class Squad:
    name: str  #: the squad's key in the declaration
    leader: str  #: the squad leader's actor name (default: the squad's name)
    workers: tuple[str, ...]  #: the workers' actor names
    worker_timeout: float = DEFAULT_WORKER_TIMEOUT  #: seconds a worker may take per task
    timeout: float = 2 * DEFAULT_WORKER_TIMEOUT + 5  #: seconds the commander waits for the squad's report


@dataclass(frozen=True)
class Hierarchy:
    """A checked chain of command: one commander, its squads, their workers."""

    commander: str  #: the commander's name (a title: "QE Mission Control")
    squads: tuple[Squad, ...]
    responsibilities: tuple[str, ...] = ()
    commander_agent: str | None = None  #: the actor that runs the commander, if one does (checked for cycles)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, file: str = "<hierarchy>",
                  agents: Iterable[str] | None = None) -> "Hierarchy":
        """Build and check a hierarchy from the playbook's keys; with ``agents`` (the actor names
        that exist, say a node spec's), also check that every rank names one of them."""
        if not isinstance(data, Mapping):
            raise SpecError(file, "-", f"a hierarchy is a table, not {type(data).__name__}")
        if "hierarchy" in data and isinstance(data["hierarchy"], Mapping):  # a [hierarchy] table in a bigger file
            data = data["hierarchy"]
        _unknown(data, ("commander", "squad_leaders"), "", file)
        commander = data.get("commander")
        if not isinstance(commander, Mapping):
            raise SpecError(file, "commander", "missing: a table with the commander's name")
        _unknown(commander, _COMMANDER_KEYS, "commander.", file)
        title = commander.get("name")
        if not isinstance(title, str) or not title.strip():
            raise SpecError(file, "commander.name", "the commander needs a name")
        duties = commander.get("responsibilities", [])
        if not isinstance(duties, list) or not all(isinstance(d, str) for d in duties):
            raise SpecError(file, "commander.responsibilities", "a list of strings")
        agent = commander.get("agent")
        if agent is not None:
            _check_name(agent, "commander.agent", file)
        leaders = data.get("squad_leaders")
        if not isinstance(leaders, Mapping) or not leaders:
            raise SpecError(file, "squad_leaders", "missing: at least one squad leader with its workers")
        squads = tuple(_squad(name, entry, file) for name, entry in leaders.items())
        hierarchy = cls(title, squads, tuple(duties), agent)
        hierarchy._check_chain(file)
        if agents is not None:
            hierarchy.check_agents(agents, file=file)
        return hierarchy

    @classmethod
    def load(cls, path: str | Path, *, agents: Iterable[str] | None = None) -> "Hierarchy":
        """Read a TOML file with the playbook's keys (at the top, or in a ``[hierarchy]`` table)."""
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SpecError(str(path), "-", f"not readable as TOML: {exc}") from None
        return cls.from_dict(data, file=str(path), agents=agents)

    def squad(self, name: str) -> Squad:
        for squad in self.squads:
            if squad.name == name:
                return squad
        raise KeyError(f"no squad {name!r} (squads: {', '.join(s.name for s in self.squads)})")

    def agents(self) -> set[str]:
        """Every actor the hierarchy names."""
        names = {s.leader for s in self.squads} | {w for s in self.squads for w in s.workers}
        return names | ({self.commander_agent} if self.commander_agent else set())

    def check_agents(self, agents: Iterable[str], *, file: str = "<hierarchy>") -> None:
        """Raise SpecError naming the ranks held by actors not in ``agents``."""
        known = set(agents)
        for squad in self.squads:
            if squad.leader not in known:
                raise SpecError(file, f"squad_leaders.{squad.name}", f"unknown agent {squad.leader!r}")
            unknown = [w for w in squad.workers if w not in known]
            if unknown:
                raise SpecError(file, f"squad_leaders.{squad.name}.workers", f"unknown agents: {', '.join(unknown)}")
        if self.commander_agent and self.commander_agent not in known:
            raise SpecError(file, "commander.agent", f"unknown agent {self.commander_agent!r}")

    def _check_chain(self, file: str) -> None:
        # Edges point down the chain of command. A cycle would make an agent its own superior;
        # an agent with two ranks (or two superiors) would make authority unclear.
        below: dict[str, list[str]] = {}
        if self.commander_agent:  # first, so that a cycle is told from the top down
            below[self.commander_agent] = [s.leader for s in self.squads]
        for squad in self.squads:
            below.setdefault(squad.leader, []).extend(squad.workers)
        cycle = _find_cycle(below)
        if cycle:
            raise SpecError(file, "squad_leaders", f"a cycle in the chain of command: {' -> '.join(cycle)}")
        leaders = [s.leader for s in self.squads]
        for leader in leaders:
            if leaders.count(leader) > 1:
                raise SpecError(file, "squad_leaders", f"{leader!r} leads two squads")
        superiors: dict[str, str] = {}
        for squad in self.squads:
            for worker in squad.workers:
                if worker in leaders or worker == self.commander_agent:
                    raise SpecError(file, f"squad_leaders.{squad.name}.workers",
                                    f"{worker!r} holds two ranks (a worker and a leader)")
                if worker in superiors:
                    raise SpecError(file, f"squad_leaders.{squad.name}.workers",
                                    f"{worker!r} answers to two squad leaders ({superiors[worker]} and {squad.leader})")
                superiors[worker] = squad.leader


def _squad(name: object, entry: object, file: str) -> Squad:
    key = f"squad_leaders.{name}"
    if not isinstance(entry, Mapping):
        raise SpecError(file, key, "a table with the squad's workers")
    _unknown(entry, _SQUAD_KEYS, key + ".", file)
    _check_name(name, key, file)
    leader = entry.get("leader", name)
    _check_name(leader, key + ".leader", file)
    workers = entry.get("workers")
    if not isinstance(workers, list) or not workers:
        raise SpecError(file, key + ".workers", "an empty squad: list at least one worker")
    for i, worker in enumerate(workers):
        _check_name(worker, f"{key}.workers[{i}]", file)
    if len(set(workers)) != len(workers):
        raise SpecError(file, key + ".workers", "a worker is listed twice")
    worker_timeout = _seconds(entry.get("worker_timeout", DEFAULT_WORKER_TIMEOUT), key + ".worker_timeout", file)
    timeout = _seconds(entry.get("timeout", 2 * worker_timeout + 5), key + ".timeout", file)
    if timeout <= REPORT_MARGIN:
        raise SpecError(file, key + ".timeout", f"more than {REPORT_MARGIN} s: the leader needs time to report")
    return Squad(str(name), str(leader), tuple(workers), worker_timeout, timeout)


def _seconds(value: object, key: str, file: str) -> float:
    seconds = parse_duration(value, key, file)
    if seconds <= 0:
        raise SpecError(file, key, "must be > 0 seconds")
    return seconds


def _check_name(value: object, key: str, file: str) -> None:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise SpecError(file, key, f"an agent name (1 to 128 of A-Z a-z 0-9 _ . -), not {value!r}")


def _unknown(table: Mapping[str, Any], known: tuple[str, ...], prefix: str, file: str) -> None:
    for key in table:
        if key not in known:
            raise SpecError(file, f"{prefix}{key}", f"unknown key (known: {', '.join(known)})")


def _find_cycle(below: Mapping[str, list[str]]) -> list[str] | None:
    """A path that comes back to its start, following ``below``, or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        for child in below.get(node, ()):
            found = visit(child, path + [node])
            if found:
                return found
        done.add(node)
        return None

    for start in below:
        found = visit(start, [])
        if found:
            return found
    return None


# -- failures ---------------------------------------------------------------------------------


@dataclass
class Failure:
    """What went wrong, handed to the rank that decides about it."""

    who: str  #: the worker (or squad leader) that failed
    squad: str
    kind: str  #: "timeout", "died", "not_found", "error", "deadline" (out of the squad's time) or "escalated"
    reason: str
    attempt: int  #: 1 on the first failure of this task, 2 after one retry, ...
    task: object = None  #: what it was asked (a worker's task, a squad's objective)
    escalated: list[dict[str, Any]] = field(default_factory=list)  #: for a squad: its workers' escalated failures


def _failure_kind(exc: MeshError) -> str:
    if isinstance(exc, AskTimeout):
        return "timeout"
    if isinstance(exc, ActorDied):
        return "died"
    if isinstance(exc, ActorNotFound):
        return "not_found"
    return "error"


def _reason(exc: MeshError) -> str:
    if isinstance(exc, RemoteError):
        return f"{exc.type}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


async def _call(hook: Any, *args: Any) -> Any:
    """A hook may be plain or ``async def``."""
    value = hook(*args)
    return await value if inspect.isawaitable(value) else value


def _checked(decision: object, allowed: tuple[str, ...], hook: str) -> str:
    if decision not in allowed:
        raise ValueError(f"{hook} must return one of {', '.join(allowed)}, not {decision!r}")
    return str(decision)


# -- the ranks --------------------------------------------------------------------------------


class Worker(Actor):
    """A worker: ``perform(task)`` answers its squad leader's ask. (Any actor that answers an
    ask can serve as a worker; this names the hook.)"""

    def perform(self, task: object) -> object:
        raise NotImplementedError("a Worker overrides perform(task)")

    def on_message(self, message: object) -> object:
        return self.perform(message)


class SquadLeader(Actor):
    """A squad leader: takes an order from the commander, coordinates its workers, reports up.

    Hooks (plain or ``async def``): ``split(objective, workers)`` (each worker's task),
    ``on_worker_failure(failure)`` ("retry", "skip" or "escalate") and ``combine(results)``
    (the squad's result from its workers' results, by worker). Messages that are not orders
    go to ``on_request``."""

    def split(self, objective: object, workers: list[str]) -> dict[str, object]:
        return {worker: objective for worker in workers}

    def on_worker_failure(self, failure: Failure) -> str:
        return "retry" if failure.attempt == 1 else "escalate"

    def combine(self, results: dict[str, object]) -> object:
        return results

    def on_request(self, message: object) -> object:
        raise ValueError(f"a squad leader takes orders ({{'order': ...}}), not {message!r:.80}")

    async def on_message(self, message: object) -> object:
        if isinstance(message, dict) and isinstance(message.get("order"), dict):
            return await self.coordinate(message["order"])
        return await _call(self.on_request, message)

    async def coordinate(self, order: dict[str, Any]) -> dict[str, Any]:
        started = time.monotonic()
        deadline = started + float(order["time_limit"]) - REPORT_MARGIN
        squad, objective = str(order["squad"]), order.get("objective")
        log: list[dict[str, Any]] = []
        tasks = await _call(self.split, objective, list(order["workers"]))
        outcomes = await asyncio.gather(*(self._work(squad, worker, task, float(order["worker_timeout"]), deadline, log)
                                          for worker, task in tasks.items()))
        results = {w: r for w, status, r in outcomes if status == "done"}
        count_done(self.mesh, len(results))  # each subtask a worker finished: the squad's tasks completed
        skipped = [w for w, status, _ in outcomes if status == "skipped"]
        escalated = [r for _, status, r in outcomes if status == "escalated"]
        status = "escalated" if escalated else "partial" if skipped else "ok"
        return {"squad": squad, "leader": self.mesh.name, "status": status, "result": await _call(self.combine, results),
                "results": results, "skipped": skipped, "escalated": escalated, "log": log,
                "elapsed": round(time.monotonic() - started, 6)}

    async def _work(self, squad: str, worker: str, task: object, worker_timeout: float, deadline: float,
                    log: list[dict[str, Any]]) -> tuple[str, str, Any]:
        ref = self.mesh.actor(worker)
        attempt = 0
        while True:
            attempt += 1
            left = deadline - time.monotonic()
            if left <= 0:
                failure = Failure(worker, squad, "deadline", "the squad's time ran out", attempt, task)
                log.append({"who": self.mesh.name, "event": "escalate", "worker": worker, "reason": failure.reason})
                return worker, "escalated", asdict(failure)
            try:
                return worker, "done", await ref.ask_async(task, timeout=min(worker_timeout, left))
            except MeshError as exc:
                failure = Failure(worker, squad, _failure_kind(exc), _reason(exc), attempt, task)
            decision = _checked(await _call(self.on_worker_failure, failure), WORKER_DECISIONS, "on_worker_failure")
            log.append({"who": self.mesh.name, "event": decision, "worker": worker, "kind": failure.kind,
                        "reason": failure.reason, "attempt": attempt})
            if decision == "skip":
                return worker, "skipped", asdict(failure)
            if decision == "escalate":
                return worker, "escalated", asdict(failure)


class Commander:
    """The commander: plans a mission, orders the squads, decides what their failures mean.

    ``hierarchy`` is a :class:`Hierarchy`, a dict of the playbook's keys, or a TOML file's
    path; ``mesh`` a Client or an actor's ``self.mesh``. Hooks (plain or ``async def``):
    ``plan(mission)`` (the objectives, default: the mission once per squad),
    ``assign(objective, index)`` (a squad's name; default: ``objective["squad"]`` when the
    objective names one, else the squads in turn), ``on_squad_failure(failure)`` ("retry",
    "skip" or "abort") and ``summarize(summary)``. ``run(mission)`` from plain code,
    ``await run_async(mission)`` from asyncio code (an ``async def`` handler)."""

    alert_on_abort = True  #: an aborted mission raises an alert for a person

    def __init__(self, hierarchy: Hierarchy | Mapping[str, Any] | str | Path, mesh: Any) -> None:
        if isinstance(hierarchy, (str, Path)):
            hierarchy = Hierarchy.load(hierarchy)
        elif not isinstance(hierarchy, Hierarchy):
            hierarchy = Hierarchy.from_dict(hierarchy)
        self.hierarchy = hierarchy
        self.mesh = mesh
        self.alerts: list[dict[str, Any]] = []

    # hooks

    def plan(self, mission: object) -> list[object]:
        return [mission for _ in self.hierarchy.squads]

    def assign(self, objective: object, index: int) -> str:
        if isinstance(objective, dict) and isinstance(objective.get("squad"), str):
            return objective["squad"]
        return self.hierarchy.squads[index % len(self.hierarchy.squads)].name

    def on_squad_failure(self, failure: Failure) -> str:
        return "skip"

    def summarize(self, summary: dict[str, Any]) -> dict[str, Any]:
        return summary

    def alert(self, reason: str, **details: object) -> None:
        """Tell a person: the mesh's alerts when it has them, else an event on ALERT."""
        entry = {"reason": reason, "by": self.hierarchy.commander, **details}
        self.alerts.append(entry)
        raise_alert = getattr(self.mesh, "alert", None)  # alerts that wait for a person, where the mesh has them
        try:
            if callable(raise_alert):
                try:
                    raise_alert(reason, entry)
                    return
                except TypeError:  # another signature: the event still reaches subscribers
                    pass
            self.mesh.publish(ALERT, entry)
        except MeshError as exc:  # the mission's summary still carries the alert
            entry["not_sent"] = str(exc)

    # running a mission

    def run(self, mission: object) -> dict[str, Any]:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.run_async(mission))
        raise RuntimeError("Commander.run inside a running event loop: use `await commander.run_async(mission)`")

    async def run_async(self, mission: object) -> dict[str, Any]:
        started = time.monotonic()
        self._log: list[dict[str, Any]] = []
        self._escalations: list[dict[str, Any]] = []
        self._aborted = False
        objectives = list(await _call(self.plan, mission))
        entries: list[dict[str, Any]] = []
        by_squad: dict[str, list[dict[str, Any]]] = {}
        for index, objective in enumerate(objectives):
            squad = self.hierarchy.squad(await _call(self.assign, objective, index)).name
            entry = {"objective": objective, "squad": squad, "status": "not_run", "attempts": 0, "report": None}
            entries.append(entry)
            by_squad.setdefault(squad, []).append(entry)
        self._note(self.hierarchy.commander, "planned", objectives=len(objectives), squads=sorted(by_squad))
        # Squads work at once; one squad takes its objectives one at a time (its leader handles one order at a time).
        await asyncio.gather(*(self._command(self.hierarchy.squad(name), queue) for name, queue in by_squad.items()))
        statuses = {e["status"] for e in entries}
        status = "aborted" if self._aborted else "ok" if statuses <= {"done"} else "partial"
        summary = {"mission": mission, "commander": self.hierarchy.commander, "status": status, "objectives": entries,
                   "escalations": self._escalations, "alerts": self.alerts, "log": self._log,
                   "elapsed": round(time.monotonic() - started, 6)}
        return await _call(self.summarize, summary)

    async def _command(self, squad: Squad, queue: list[dict[str, Any]]) -> None:
        ref = self.mesh.actor(squad.leader)
        for entry in queue:
            while not self._aborted:
                entry["attempts"] += 1
                order = {"order": {"squad": squad.name, "objective": entry["objective"], "workers": list(squad.workers),
                                   "worker_timeout": squad.worker_timeout, "time_limit": squad.timeout}}
                self._note(self.hierarchy.commander, "order", squad=squad.name, attempt=entry["attempts"])
                try:
                    report = await ref.ask_async(order, timeout=squad.timeout)
                except MeshError as exc:
                    failure = Failure(squad.leader, squad.name, _failure_kind(exc), _reason(exc), entry["attempts"],
                                      entry["objective"])
                else:
                    entry["report"] = report
                    for item in report.get("log", []):
                        self._note(**item)
                    if report.get("status") != "escalated":
                        entry["status"] = "done" if report.get("status") == "ok" else "partial"
                        self._note(squad.leader, "reported", status=report.get("status"))
                        break
                    failure = Failure(squad.leader, squad.name, "escalated",
                                      "; ".join(f"{f['who']}: {f['reason']}" for f in report["escalated"]),
                                      entry["attempts"], entry["objective"], list(report["escalated"]))
                decision = _checked(await _call(self.on_squad_failure, failure), SQUAD_DECISIONS, "on_squad_failure")
                self._record_failure(failure, decision)
                if decision == "retry":
                    continue
                if decision == "skip":
                    entry["status"] = "skipped"
                else:
                    self._abort(failure)
                break

    def _record_failure(self, failure: Failure, decision: str) -> None:
        self._note(self.hierarchy.commander, decision, squad=failure.squad, failed=failure.who, kind=failure.kind,
                   reason=failure.reason)
        if failure.escalated:
            for worker in failure.escalated:
                self._escalations.append({"worker": worker["who"], "squad": failure.squad, "kind": worker["kind"],
                                          "reason": worker["reason"], "leader": failure.who, "leader_decision": "escalate",
                                          "commander_decision": decision})
        else:
            self._escalations.append({"squad": failure.squad, "leader": failure.who, "kind": failure.kind,
                                      "reason": failure.reason, "commander_decision": decision})

    def _abort(self, failure: Failure) -> None:
        self._aborted = True
        if self.alert_on_abort:
            self.alert(f"mission aborted: squad {failure.squad} failed ({failure.reason})", squad=failure.squad,
                       kind=failure.kind)

    def _note(self, who: str, event: str, **details: object) -> None:
        self._log.append({"who": who, "event": event, **details})
