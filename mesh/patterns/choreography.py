"""Pattern 3 of the playbook: event-driven choreography.

**When to use:** complex workflows, reactive systems: "like a jazz ensemble, everyone
responds to what they hear". **Pros:** flexible; no conductor in the loop, so adding a step
is adding a reaction. **Cons:** the flow is nowhere in one place, so it needs clear
communication and a way to see what happened: here, every reaction is recorded and a run's
chain can be read back.

Each agent declares its reactions (a topic it hears -> a method, and the topic it publishes
next) on a :class:`Reactor`, for example:

    class Validator(Reactor):
        @reaction("ISSUE_FOUND", publishes="ISSUE_CONFIRMED")
        def confirm(self, issue):
            return {"issue": issue, "confirmed": True}   # the data of the next event

A :class:`Choreography` starts a run by publishing its first event and waits for the run to
end. The playbook's chain START_TESTING -> ISSUE_FOUND -> ISSUE_CONFIRMED -> FIX_ATTEMPTED ->
VALIDATION_COMPLETE then runs from agent to agent with nothing in between but events.

How a run is linked and recorded:

* Every event of a run carries ``{"run": ID, "hop": N, "data": ...}``; the event a reaction
  publishes has ``corr`` = the id of the event it reacted to, so the correlation ids link the
  chain back to the first event.
* Every reaction writes a record to the shared state under ``choreography/RUN/``: run, hop,
  event id, corr, topic, agent, time (seconds since the epoch, the reactor's clock), elapsed,
  what it published (topic and event id) and its error. :meth:`Choreography.trace` reads them
  back in causal order (hop, then time).
* A reaction that raises is recorded with its error and publishes nothing: **the chain stops
  there**, and the run ends at once as ``failed`` (nothing downstream can run without the
  event it would have published). Other branches of a fan-out may still run; their records
  are in the trace.
* A run ends ``complete`` when a terminal topic has been reacted to by every reactor that
  declared it (or, when none declares it, as soon as it is published), ``failed`` at a
  reaction's error, ``timeout`` at the deadline.
* Each reaction that completes (raises nothing) counts as a task its reactor completed
  (``tasks_completed`` in the playbook's metrics: a step of a flow, counted where it ran).
* Reactors register their reactions in the shared state (``choreography/reactors/AGENT``), so
  :meth:`Choreography.reactions` lists who reacts to what, mesh-wide, and a run starts only
  once someone hears its first topic.

Topics are mesh-wide: every reactor of a topic hears every run's event on it (replicas of a
group each react: choreography is fan-out, a burst is for spreading work). Events ride
PUB/SUB, fire-and-forget (see README, "Reliable delivery, topics and deadlock detection"); a
reactor subscribes in ``on_start`` before it registers, so a run started after it registered
reaches it. Built on the public API only.
"""

from __future__ import annotations

import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, TypeVar

from ..actor import Actor
from ..topics import Event, check_topic
from .counting import count_done

PREFIX = "choreography/"
REACTORS = PREFIX + "reactors/"
POLL_S = 0.02  #: seconds between two reads of a run's records while waiting for it to end

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Next:
    """What a reaction returns to publish on another topic than its declared one (a branch), or
    nothing: ``Next(None)``."""

    topic: str | None
    data: object = None


#: Returned by a reaction: publish nothing (the chain ends here, without an error).
NOTHING = Next(None)


@dataclass(frozen=True)
class Reaction:
    """One declared reaction: ``agent`` hears ``topic``, and publishes ``publishes`` next."""

    topic: str
    agent: str
    publishes: str | None


def reaction(topic: str, *, publishes: str | None = None) -> Callable[[F], F]:
    """Mark a :class:`Reactor` method as its reaction to ``topic``: it is called with the event's
    data and returns the data of the event published next on ``publishes`` (none: nothing is
    published, unless it returns a :class:`Next`)."""
    check_topic(topic)
    if publishes is not None:
        check_topic(publishes)

    def mark(method: F) -> F:
        method.__mesh_reaction__ = (topic, publishes)  # type: ignore[attr-defined]
        return method

    return mark


class Reactor(Actor):
    """An actor whose reactions (methods marked with :func:`reaction`) run on the events of their
    topics. It subscribes and registers in ``on_start``: a subclass that overrides ``on_start``
    calls ``super().on_start()``. While a reaction runs, ``self.event`` is the event it reacts to
    and ``self.run`` its run's id. Events that belong to no run go to ``on_other_event``."""

    event: Event | None = None
    run: str | None = None

    @classmethod
    def declared(cls) -> dict[str, tuple[str, str | None]]:
        """topic -> (method name, the topic it publishes), for this class."""
        found: dict[str, tuple[str, str | None]] = {}
        for name in dir(cls):
            mark = getattr(getattr(cls, name, None), "__mesh_reaction__", None)
            if mark is not None:
                topic, publishes = mark
                if topic in found:
                    raise TypeError(f"{cls.__name__} declares two reactions to {topic!r}: {found[topic][0]} and {name}")
                found[topic] = (name, publishes)
        return found

    def on_start(self) -> object:
        self._reactions = self.declared()
        for topic in self._reactions:
            self.mesh.subscribe(topic)
        self.mesh.state.set(REACTORS + self.mesh.name,
                            [{"topic": t, "publishes": p} for t, (_, p) in sorted(self._reactions.items())])
        return None

    def on_stop(self) -> object:
        self.mesh.state.delete(REACTORS + self.mesh.name)
        return None

    def on_event(self, event: Event) -> object:
        declared = getattr(self, "_reactions", {}).get(event.topic)
        envelope = event.data
        if declared is None or not (isinstance(envelope, dict) and isinstance(envelope.get("run"), str)):
            return self.on_other_event(event)
        method, publishes = declared
        run, hop = envelope["run"], envelope.get("hop", 0)
        record: dict[str, object] = {"run": run, "hop": hop, "event": event.id, "corr": event.corr,
                                     "topic": event.topic, "sender": event.sender, "agent": self.mesh.name,
                                     "time": time.time(), "published": None, "error": None}
        started = time.perf_counter()
        self.event, self.run = event, run
        try:
            result = getattr(self, method)(envelope.get("data"))
            following = result if isinstance(result, Next) else Next(publishes, result)
            if following.topic is not None:
                check_topic(following.topic)
                next_id = self.mesh.publish(following.topic, {"run": run, "hop": hop + 1, "data": following.data},
                                            corr=event.id)
                record["published"] = {"topic": following.topic, "event": next_id}
        except Exception as exc:  # recorded, not raised: an event handler that raises ends its process
            record["error"] = f"{type(exc).__name__}: {exc}"
            record["traceback"] = traceback.format_exc(limit=-3)
            self.mesh.log.warning("reaction %s to %s of run %s failed: %s", method, event.topic, run, record["error"])
        else:
            count_done(self.mesh, 1)  # a step of the flow completed: this reactor's task
        finally:
            self.event = self.run = None
        record["elapsed"] = round(time.perf_counter() - started, 6)
        self.mesh.state.set(f"{PREFIX}{run}/{hop:04d}-{self.mesh.name}-{event.id}", record)
        return None

    def on_other_event(self, event: Event) -> object:
        """An event outside any run (or on a topic this class has no reaction to)."""
        return None


@dataclass(frozen=True)
class ChoreographyRun:
    """The outcome of one run: its id, how it ended, and its trace."""

    run: str
    status: str  #: "complete", "failed" (a reaction raised) or "timeout"
    start_event: str  #: the id of the first event (every chain's corr leads back to it)
    trace: list[dict[str, Any]] = field(default_factory=list)  #: the reactions' records, in causal order
    elapsed: float = 0.0  #: seconds from the first publish to the end

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [r for r in self.trace if r.get("error")]


class Choreography:
    """Start runs of a choreography through ``mesh`` (a Client or an actor's ``self.mesh``) and
    read them back.

    Parameters:
        start: the topic of a run's first event.
        terminal: the topics that end a run (see the module note).
        ready_timeout: seconds :meth:`start` waits for a reactor to hear ``start``.
    """

    def __init__(self, mesh: Any, *, start: str, terminal: Iterable[str], ready_timeout: float = 10.0) -> None:
        self.mesh = mesh
        self.start_topic = check_topic(start)
        self.terminal = tuple(check_topic(t) for t in terminal)
        if not self.terminal:
            raise ValueError("a choreography needs at least one terminal topic")
        self.ready_timeout = ready_timeout

    def reactions(self) -> list[Reaction]:
        """Every reaction declared by a running reactor, mesh-wide, by topic then agent."""
        found = []
        for key, declared in self.mesh.state.items(REACTORS).items():
            agent = key[len(REACTORS):]
            for entry in declared if isinstance(declared, list) else ():
                if isinstance(entry, dict) and isinstance(entry.get("topic"), str):
                    found.append(Reaction(entry["topic"], agent, entry.get("publishes")))
        return sorted(found, key=lambda r: (r.topic, r.agent))

    def start(self, data: object = None) -> tuple[str, str]:
        """Publish a run's first event; returns (run id, event id). Waits up to ``ready_timeout``
        for a reactor of the first topic, else raises LookupError (nobody would hear it)."""
        deadline = time.monotonic() + self.ready_timeout
        while not any(r.topic == self.start_topic for r in self.reactions()):
            if time.monotonic() >= deadline:
                raise LookupError(f"no reactor hears {self.start_topic!r} (after {self.ready_timeout:g} s)")
            time.sleep(0.05)
        run = uuid.uuid4().hex[:12]
        event_id = self.mesh.publish(self.start_topic, {"run": run, "hop": 0, "data": data})
        return run, event_id

    def run(self, data: object = None, timeout: float = 30.0) -> ChoreographyRun:
        """Start a run and wait for it to end (at most ``timeout`` seconds)."""
        started = time.monotonic()
        run, event_id = self.start(data)
        status, trace = self.wait(run, timeout)
        return ChoreographyRun(run, status, event_id, trace, round(time.monotonic() - started, 6))

    def wait(self, run: str, timeout: float = 30.0) -> tuple[str, list[dict[str, Any]]]:
        """Wait for run ``run`` to end: ("complete" | "failed" | "timeout", its trace)."""
        deadline = time.monotonic() + timeout
        while True:
            # Who must react to each terminal topic, read again each time: a reactor may register late.
            waiting_on = {t: {r.agent for r in self.reactions() if r.topic == t} for t in self.terminal}
            trace = self.trace(run)
            if any(r.get("error") for r in trace):
                return "failed", trace
            if any(self._ended(topic, agents, trace) for topic, agents in waiting_on.items()):
                return "complete", trace
            if time.monotonic() >= deadline:
                return "timeout", trace
            time.sleep(POLL_S)

    @staticmethod
    def _ended(topic: str, agents: set[str], trace: list[dict[str, Any]]) -> bool:
        if agents:
            return agents <= {r["agent"] for r in trace if r.get("topic") == topic}
        return any((r.get("published") or {}).get("topic") == topic for r in trace)

    def trace(self, run: str) -> list[dict[str, Any]]:
        """The records of run ``run``'s reactions, in causal order (hop, then time): who reacted to
        which event (id, corr, topic), when, what it published next, and any error."""
        records = [r for r in self.mesh.state.items(f"{PREFIX}{run}/").values() if isinstance(r, dict)]
        return sorted(records, key=lambda r: (r.get("hop", 0), r.get("time", 0.0)))

    def forget(self, run: str) -> int:
        """Delete run ``run``'s records from the shared state; returns how many there were."""
        keys = list(self.mesh.state.items(f"{PREFIX}{run}/"))
        for key in keys:
            self.mesh.state.delete(key)
        return len(keys)


__all__ = ["NOTHING", "Choreography", "ChoreographyRun", "Next", "Reaction", "Reactor", "reaction"]
