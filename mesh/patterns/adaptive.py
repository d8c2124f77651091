"""Pattern 5 of the playbook: the adaptive mesh.

When to use: dynamic environments and self-organizing teams, where resilience matters more
than predictability, like a flock of birds: no single leader, coordination emerges. Pros:
no single point of failure, agents adapt to what the others did. Cons: harder to predict,
and an objective nobody can reach is only bounded by time.

Each :class:`AdaptiveAgent` loops, with no leader in the loop: read the shared state
(the keys under its ``prefix``) -> decide (hook ``analyze(state)``: an :class:`Action`, or
None for nothing to do now) -> propose it (``self.mesh.propose``: the intention is broadcast
to every ``on_intention`` listener, and its claims are voted on, so no two agents act on the
same claim at once) -> if approved, act (hook ``execute(action)``: the updates to write) ->
write the updates to the shared state, until ``objective_met(state)``, ``max_rounds``
proposals, or the ``deadline``. An objected intention goes to ``on_objected`` (by default the
agent avoids those claims until it has nothing else to do): that is how it adapts.

An approved action is checked once more against the state before it runs: the keys of
``Action.expect`` must still hold their values (another agent may have done the work
between this agent's read and its approval); if not, the round is ``stale`` and nothing is
done. Updates are written before the claims are released, so an agent on the same node
that is approved next reads them. (Across nodes a write reaches other replicas within
gossip's delay: ``Action.keep`` holds the claims until the hold ends instead.)

Every round is recorded: the action, its claims, the outcome (approved, objected,
escalated, stale, error), the reasons and objections, and whether it acted. Each round it
acted in counts as a task the agent completed (``tasks_completed`` in its metrics).
:class:`AdaptiveMesh` starts the loop on several agents and collects their records; it is
not in the loop. Built on the public API only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..actor import Actor
from ..errors import MeshError, WireError
from ..intentions import Decision
from .counting import count_done

DEFAULT_DEADLINE = 60.0  #: seconds an adaptive loop may run
DEFAULT_MAX_ROUNDS = 1000  #: proposals an adaptive loop may make (rounds with nothing to do are not counted)
COLLECT_MARGIN = 10.0  #: seconds AdaptiveMesh waits for a record beyond the loops' deadline


@dataclass(frozen=True)
class Action:
    """What an agent decided to do this round."""

    what: object  #: the intention's action, as every listener hears it (msgpack-able)
    claims: tuple[str, ...] = ()  #: what it must hold alone while it acts
    priority: float = 0  #: precedence in contention
    expect: Mapping[str, object] = field(default_factory=dict)  #: shared-state values that must still hold to act
    data: Any = None  #: anything ``execute`` needs (stays in this process)
    hold: float = 30.0  #: seconds the claims are held at most
    keep: bool = False  #: keep the claims until the hold ends, not only until the updates are written


class AdaptiveAgent(Actor):
    """An agent of the adaptive mesh: override ``analyze``, ``execute`` and ``objective_met``.

    Class attributes (or the ``{"adapt": {...}}`` message) set the loop: ``prefix`` (the
    shared-state keys it reads), ``deadline`` (seconds), ``max_rounds`` (proposals),
    ``window`` (seconds each proposal waits for objections), ``idle`` (seconds between
    reads when there is nothing to do).

    Start the loop with an ask or tell ``{"adapt": {}}`` (its reply is the record), or call
    :meth:`adapt` from a handler; ``{"adapt_record": true}`` answers the latest record. An
    agent that handles other messages overrides ``on_message`` and passes these on to
    ``super().on_message``."""

    prefix = ""
    deadline = DEFAULT_DEADLINE
    max_rounds = DEFAULT_MAX_ROUNDS
    window = 0.2
    idle = 0.05

    avoided: set[str]  #: claims objected lately: ``analyze`` may steer clear of them
    record: dict[str, Any] | None = None

    # hooks

    def analyze(self, state: dict[str, object]) -> Action | None:
        raise NotImplementedError("an AdaptiveAgent overrides analyze(state)")

    def execute(self, action: Action) -> Mapping[str, object]:
        """Do ``action``; return the shared-state updates (key -> value; None deletes the key)."""
        raise NotImplementedError("an AdaptiveAgent overrides execute(action)")

    def objective_met(self, state: dict[str, object]) -> bool:
        raise NotImplementedError("an AdaptiveAgent overrides objective_met(state)")

    def on_objected(self, action: Action, decision: Decision) -> None:
        self.avoided.update(action.claims)

    def on_idle(self, state: dict[str, object]) -> None:
        """Nothing to do this round: give the avoided claims another chance."""
        self.avoided.clear()

    # the loop

    def on_message(self, message: object) -> object:
        if isinstance(message, dict) and isinstance(message.get("adapt"), dict):
            return self.adapt(**message["adapt"])
        if isinstance(message, dict) and message.get("adapt_record"):
            return self.record
        raise ValueError(f"an adaptive agent takes {{'adapt': {{...}}}} or {{'adapt_record': true}}, not {message!r:.80}")

    def adapt(self, *, deadline: float | None = None, max_rounds: int | None = None, window: float | None = None,
              prefix: str | None = None) -> dict[str, Any]:
        """Run the loop until the objective is met, ``max_rounds`` proposals, or ``deadline``
        seconds; return (and keep, as ``self.record``) what happened."""
        prefix = self.prefix if prefix is None else prefix
        window = self.window if window is None else float(window)
        max_rounds = self.max_rounds if max_rounds is None else int(max_rounds)
        started = time.monotonic()
        ends = started + (self.deadline if deadline is None else float(deadline))
        self.avoided = set()
        history: list[dict[str, Any]] = []
        record: dict[str, Any] = {"agent": self.mesh.name, "status": "max_rounds", "rounds": 0, "acted": 0,
                                  "objected": 0, "stale": 0, "idle": 0, "history": history}
        self.record = record
        try:
            while record["rounds"] < max_rounds:
                if time.monotonic() >= ends:
                    record["status"] = "deadline"
                    break
                state = self.mesh.state.items(prefix)
                if self.objective_met(state):
                    record["status"] = "objective_met"
                    break
                action = self.analyze(state)
                if action is None:
                    record["idle"] += 1
                    self.on_idle(state)
                    time.sleep(max(0.0, min(self.idle, ends - time.monotonic())))
                    continue
                record["rounds"] += 1
                entry = self._round(record["rounds"], action, prefix, window)
                history.append(entry)
                record[entry["outcome"]] = record.get(entry["outcome"], 0) + 1
                record["acted"] += entry["acted"]
        except Exception as exc:  # a hook raised: the loop ends, the record says why
            record["status"] = "error"
            record["error"] = f"{type(exc).__name__}: {exc}"
        record.pop("approved", None)  # acted and stale count the approved rounds
        record["elapsed"] = round(time.monotonic() - started, 6)
        return record

    def _round(self, number: int, action: Action, prefix: str, window: float) -> dict[str, Any]:
        entry: dict[str, Any] = {"round": number, "action": action.what, "claims": list(action.claims),
                                 "acted": False}
        try:
            decision = self.mesh.propose(action.what, claims=action.claims, priority=action.priority, window=window,
                                         hold=action.hold)
        except WireError:
            raise  # the proposal itself is wrong (a window below settle, say): no round will do better
        except MeshError as exc:  # the node did not decide (restarting, overloaded): another round will tell
            entry.update(outcome="error", reasons=[f"{type(exc).__name__}: {exc}"])
            return entry
        entry["outcome"] = decision.outcome
        if decision.reasons:
            entry["reasons"] = list(decision.reasons)
        if decision.objections:
            entry["objections"] = [{"by": o.by, "reason": o.reason, "kind": o.kind} for o in decision.objections]
        if not decision.approved:
            self.on_objected(action, decision)
            return entry
        try:
            if action.expect:
                now = self.mesh.state.items(prefix)
                changed = sorted(k for k, v in action.expect.items() if now.get(k) != v)
                if changed:
                    entry["outcome"] = "stale"
                    entry["changed"] = changed
                    return entry
            updates = dict(self.execute(action))
            for key, value in updates.items():
                if value is None:
                    self.mesh.state.delete(key)
                else:
                    self.mesh.state.set(key, value)
            entry.update(acted=True, updates=sorted(updates))
            count_done(self.mesh, 1)  # the agent's task completed (the playbook's throughput)
            return entry
        finally:
            if not action.keep:
                decision.done()


class AdaptiveMesh:
    """Start the adaptive loop on ``agents`` (actor names) through ``mesh`` (a Client or an
    actor's ``self.mesh``) and collect what each did. Not in the loop: it only starts and
    waits."""

    def __init__(self, agents: list[str], mesh: Any) -> None:
        if not agents:
            raise ValueError("an adaptive mesh needs at least one agent")
        self.agents = list(agents)
        self.mesh = mesh

    def run(self, *, deadline: float = DEFAULT_DEADLINE, max_rounds: int | None = None,
            window: float | None = None) -> dict[str, Any]:
        options: dict[str, Any] = {"deadline": deadline}
        if max_rounds is not None:
            options["max_rounds"] = max_rounds
        if window is not None:
            options["window"] = window
        started = time.monotonic()
        for name in self.agents:  # all start at once; each then runs on its own
            self.mesh.actor(name).tell({"adapt": options})
        records: dict[str, Any] = {}
        for name in self.agents:
            # Asked after the start, from the same sender: answered when that agent's loop has ended.
            left = max(1.0, started + deadline + COLLECT_MARGIN - time.monotonic())
            try:
                records[name] = self.mesh.actor(name).ask({"adapt_record": True}, timeout=left)
            except MeshError as exc:
                records[name] = {"agent": name, "status": "error", "error": f"{type(exc).__name__}: {exc}",
                                 "rounds": 0, "acted": 0, "history": []}
        statuses = {r["status"] for r in records.values()}
        status = "objective_met" if statuses == {"objective_met"} else (
            "error" if "error" in statuses else "deadline" if "deadline" in statuses else "max_rounds")
        return {"status": status, "acted": sum(r.get("acted", 0) for r in records.values()), "agents": records,
                "elapsed": round(time.monotonic() - started, 6)}
