"""Intentions at the node: proposals of its actors, decided by the voters' state machines
(:class:`mesh.runtime.intents.NodeIntents`) and heard by the actors that listen
(``on_intention``), listed mesh-wide under ``$intents/``.

A proposal is checked whole before anything of it is written; it is listed, then voted on (if
it has claims; without, nothing is listed or voted). Meanwhile the node publishes it once on its
broadcast forwarder (topic ``i/``, see :mod:`mesh.runtime.broadcast`) if any actor but the
proposer listens; each listener answers this node on the router path (op ``intent_answer``).
Its proposer is answered once the vote has decided and every listener counted has answered or
the window has ended, whichever comes first (:class:`Hearing`). An answer that comes late, for
an intention this node does not know, or malformed, is dropped and counted (``answers_dropped``
in ``mesh status --json``). An approved intention stays listed as held until its proposer is
done with it (or its hold ends).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import msgpack

from ...core.intentions import APPROVED
from ...errors import NotLeader, ResourceError, WireError
from ...wire import MAX_TRACE
from ..broadcast import BROADCAST_MAX_BYTES, INTENTION_TOPIC
from ..clock import REAL_CLOCK, Clock
from ..gossiper import Directory
from ..intents import (ESCALATIONS_PREFIX, INTENT_RECIPIENT, INTENTS_PREFIX, LISTED_CHARS, LISTED_CLAIMS, MAX_KEPT,
                       SILENCE, NodeIntents)
from .constants import AGENTS_PREFIX
from .replies import DEFER, Replies, Waiter
from .supervisor import Supervisor


def shown(value: object) -> object:
    """An action as shown in listings: JSON-ish, at most 200 characters."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 200 else text[:197] + "..."


def send_intent(directory: Directory, to: str, message: dict) -> None:
    """How NodeIntents reaches the other nodes' voters and proposers."""
    directory.send(to, message, INTENT_RECIPIENT)


#: Answers a proposal takes at most (the first of each listener); more are dropped.
MAX_ANSWERS = 1000
#: Names a proposal may require answers from, at most.
MAX_REQUIRED = 100
#: Characters of an objection's reason and kind kept.
REASON_CHARS = 1000
KIND_CHARS = 40


def objection_of(value: object) -> dict[str, Any] | None:
    """A listener's objection as sent (``{reason, weight, kind}``), checked; raises ValueError."""
    if not isinstance(value, dict):
        raise ValueError("an objection is a map")
    reason, weight, kind = value.get("reason", ""), value.get("weight", 1.0), value.get("kind", "finding")
    if not isinstance(reason, str) or not isinstance(kind, str) or not kind:
        raise ValueError("an objection's reason and kind are strings")
    if type(weight) not in (int, float) or not math.isfinite(weight) or weight < 0:
        raise ValueError("an objection's weight is a finite number, at least 0")
    return {"reason": reason[:REASON_CHARS], "weight": float(weight), "kind": kind[:KIND_CHARS]}


@dataclass(eq=False)
class Hearing:
    """One proposal while its proposer waits: the vote's answer (once decided) and the listeners'.

    Complete once the vote has decided and every listener counted has answered, or the window has
    ended (``deadline``, on the node's clock). A required name that did not answer by then (or does
    not listen at all) counts as an objection of kind ``silence``."""

    waiter: Waiter
    deadline: float
    listeners: frozenset[str]  #: the listeners it waits for (the proposer's not among them)
    required: tuple[str, ...]
    vote: dict[str, Any] | None = None  #: the vote's outcome, reasons and holders, once decided
    until: float | None = None  #: when the claims' hold ends (the node's clock), if approved
    answers: dict[str, dict[str, Any] | None] = field(default_factory=dict)

    def take(self, listener: str, objection: dict[str, Any] | None, now: float) -> bool:
        """Count a listener's answer; whether it was (not late, the first of that listener, within bounds)."""
        if now > self.deadline or listener in self.answers or len(self.answers) >= MAX_ANSWERS:
            return False
        self.answers[listener] = objection
        return True

    def complete(self, now: float) -> bool:
        return self.vote is not None and (now >= self.deadline or self.listeners.issubset(self.answers))

    def objections(self) -> list[dict[str, Any]]:
        """The listeners' objections (by name), then the silence of each required name that did not answer."""
        out = [{"by": name, **o} for name, o in sorted(self.answers.items()) if o is not None]
        for name in self.required:
            if name in self.answers:
                continue
            why = "did not answer within the window" if name in self.listeners else "does not listen to intentions"
            out.append({"by": name, "reason": f"required listener {name!r} {why}", "weight": 1.0, "kind": SILENCE})
        return out


class Intentions:
    def __init__(self, name: str, intents: NodeIntents, directory: Directory, replies: Replies, supervisor: Supervisor,
                 *, clock: Clock = REAL_CLOCK, publish: Callable[[bytes, bytes], bool] | None = None,
                 address: str = ""):
        self.name = name
        self.clock = clock  # stamps of the listings, the listeners' windows
        self.intents = intents
        self.directory = directory
        self.replies = replies
        self.supervisor = supervisor
        self.publish = publish  # into this node's broadcast forwarder
        self.address = address  # where listeners answer (this node, as the others reach it)
        self._waiting: dict[str, Hearing] = {}  # intention id -> its proposer, waiting for the decision
        self.answers_dropped = 0  #: listeners' answers dropped: late, for an unknown intention, or malformed
        #: How the intentions this node's agents proposed were decided, by outcome (the conflict rate).
        self.outcomes: dict[str, int] = {"approved": 0, "objected": 0, "withdrawn": 0}

    @property
    def busy(self) -> bool:
        """Something waits for a decision or a vote: the loop does not sleep."""
        return bool(self._waiting) or self.intents.busy()

    # -- control ops --------------------------------------------------------------------------------

    def propose(self, body: dict, waiter: Waiter) -> object:
        # Everything is checked before anything is written: a refused proposal leaves nothing in
        # the shared state (not even a tombstone), and a listing is small whatever was sent.
        iid = body.get("id")
        if isinstance(iid, str) and iid in self._waiting:
            raise WireError(f"intention {iid[:200]!r} is already being decided")
        priority, window, hold = body.get("priority", 0), body.get("window", 0.2), body.get("hold", 30.0)
        wait = body.get("wait", 0.0)
        proposer = body.get("proposer")
        voted = body.get("claims") is not None  # no claims (absent or null): no vote, the listeners only
        listen, required = body.get("listen", True), body.get("require") or []
        trace = body.get("trace")  # the proposer's span, for the listeners' (see mesh.runtime.tracing)
        try:
            claims = self.intents.check(iid, body.get("claims") if voted else None, priority, window, hold, wait)
            if not isinstance(proposer, str):
                raise ValueError(f"proposer must be an actor name, not a {type(proposer).__name__}")
            if not isinstance(listen, bool):
                raise ValueError("listen must be true or false")
            if (not isinstance(required, list) or len(required) > MAX_REQUIRED
                    or not all(isinstance(n, str) and 0 < len(n) <= 200 for n in required)):
                raise ValueError(f"require must be a list of at most {MAX_REQUIRED} actor names")
            if required and not listen:
                raise ValueError("require needs listen: answers are asked of listeners only")
            if trace is not None and (type(trace) is not str or len(trace) > MAX_TRACE):
                raise ValueError(f"trace must be a W3C traceparent string of at most {MAX_TRACE} characters")
            if listen:
                size = len(msgpack.packb(body.get("action"))) + sum(len(c) + 5 for c in claims) + 1024
                if size > BROADCAST_MAX_BYTES:
                    raise ValueError(f"listeners hear at most {BROADCAST_MAX_BYTES // 1024} KiB of action and claims,"
                                     f" this one is about {size // 1024} KiB (send less, or listen=False)")
            action = shown(body.get("action"))
        except (ValueError, TypeError, RecursionError) as exc:  # json.dumps: bytes keys, nesting
            why = exc if isinstance(exc, ValueError) else f"action cannot be shown as JSON ({type(exc).__name__})"
            raise WireError(f"bad intention: {why}") from None
        iid = cast(str, iid)  # intents.check refuses anything else
        if not voted and len(self._waiting) >= MAX_KEPT:
            raise ResourceError(f"node {self.name} hears {MAX_KEPT} intentions already, the most it does at once")
        if voted:
            self._vote(iid, action, claims, proposer, priority, window, hold, wait)
        listeners = frozenset(self.listeners({})["actors"]) - {proposer} if listen else frozenset()
        now = self.clock.monotonic()
        hearing = Hearing(waiter, now + window, listeners, tuple(sorted(set(required))))
        if not voted:  # nothing to vote on: approved as far as the claims go, for ``hold``
            hearing.vote, hearing.until = {"id": iid, "outcome": APPROVED, "reasons": [], "holders": []}, now + hold
        self._waiting[iid] = hearing
        if listeners:
            self._announce(iid, body.get("action"), claims, priority, proposer, window, trace)
        if voted:
            self.drain_events()
        self._maybe_answer(iid)
        return DEFER

    def _vote(self, iid: str, action: object, claims: list[str], proposer: str, priority: float, window: float,
              hold: float, wait: float) -> None:
        listing = {"id": iid, "action": action, "claims": [c[:LISTED_CHARS] for c in claims[:LISTED_CLAIMS]],
                   "claims_count": len(claims), "proposer": proposer[:200], "node": self.name, "priority": priority,
                   "state": "pending", "since": self.clock.time()}
        try:  # listed first: a listing the shared state refuses refuses the proposal, nothing is held
            self.directory.write(INTENTS_PREFIX + iid, listing, system=True)
        except ValueError as exc:
            raise WireError(f"bad intention: {exc}") from None
        try:
            self.intents.propose(iid, claims, priority, window, hold, wait)
        except (ValueError, NotLeader) as exc:  # checked above: not expected
            self.directory.delete(INTENTS_PREFIX + iid, system=True)
            if isinstance(exc, NotLeader):
                raise
            raise WireError(f"bad intention: {exc}") from None

    def _announce(self, iid: str, action: object, claims: list[str], priority: object, proposer: str,
                  window: float, trace: str | None = None) -> None:
        """Publish the intention once, for every listener (they answer at ``answer``; ``trace``, the
        proposer's traceparent, only when it sent one: listeners of old ignore it)."""
        if self.publish is None:
            return
        announced = {"id": iid, "action": action, "claims": claims, "priority": priority, "proposer": proposer,
                     "window": window, "answer": self.address}
        if trace is not None:
            announced["trace"] = trace
        frame = msgpack.packb(announced)
        self.publish(INTENTION_TOPIC, frame)  # a full queue drops it: the listeners stay silent

    def answer(self, body: dict) -> dict:
        """A listener's answer to an intention proposed here: counted if within its window."""
        hearing = self._waiting.get(body["id"])
        try:
            objection = None if body.get("objection") is None else objection_of(body["objection"])
        except ValueError:
            hearing = None
        if hearing is None or not hearing.take(body["listener"][:200], objection, self.clock.monotonic()):
            self.answers_dropped += 1
            return {"counted": False}
        self._maybe_answer(body["id"])
        return {"counted": True}

    def _maybe_answer(self, iid: str) -> None:
        """Answer the proposer if its intention's hearing is complete."""
        hearing = self._waiting.get(iid)
        if hearing is None or not hearing.complete(self.clock.monotonic()):
            return
        del self._waiting[iid]
        until_in = None if hearing.until is None else max(0.0, hearing.until - self.clock.monotonic())
        self.replies.reply(hearing.waiter, {**(hearing.vote or {}), "until_in": until_in,
                                            "objections": hearing.objections()})

    def done(self, body: dict) -> dict:
        iid = body["id"]
        self.intents.done(iid)
        self.drain_events()
        self.directory.delete(INTENTS_PREFIX + iid, system=True)
        return {"done": iid}

    def listeners(self, body: dict) -> dict:
        """The running actors, mesh-wide, that hear intentions (define on_intention)."""
        actors = {n for n, i in self.supervisor.instances.items() if i.hears_intentions and i.state == "running"}
        for key, entry in self.directory.items(AGENTS_PREFIX).items():
            if isinstance(entry, dict) and entry.get("intentions") and entry.get("state") == "running":
                if self.directory.is_live(entry.get("node")) or entry.get("node") == self.name:
                    actors.add(key[len(AGENTS_PREFIX):])
        return {"actors": sorted(actors)}

    def listing(self, body: dict | None = None) -> dict:
        """Every pending and held intention, and every escalation waiting for a person, mesh-wide."""
        def listed(prefix: str) -> list:
            found = [e for e in self.directory.items(prefix).values() if isinstance(e, dict)]
            return sorted(found, key=lambda e: str(e.get("since")))

        return {"intents": listed(INTENTS_PREFIX), "escalations": listed(ESCALATIONS_PREFIX)}

    # -- the state machines' news --------------------------------------------------------------

    def tick(self) -> None:
        self.intents.tick()
        self.drain_events()
        now = self.clock.monotonic()
        for iid in [i for i, h in self._waiting.items() if h.complete(now)]:
            self._maybe_answer(iid)

    def receive(self, sender: str, body: object) -> None:
        """An intention message from another node."""
        self.intents.receive(sender, body)
        self.drain_events()

    def drain_events(self) -> None:
        """Answer the proposers whose intentions were decided; keep the listings in step."""
        events, self.intents.events = self.intents.events, []
        for ev in events:
            iid = ev.data.get("id")
            if ev.name == "decided":
                outcome = ev.data.get("outcome")
                hearing = self._waiting.get(iid)
                if hearing is not None and hearing.vote is None:
                    if outcome in self.outcomes:
                        self.outcomes[outcome] += 1
                    until = ev.data.get("until")  # NodeIntents' deadline, on its clock (the node's)
                    hearing.until = until if isinstance(until, (int, float)) else None
                    hearing.vote = {"id": iid, "outcome": outcome, "reasons": ev.data.get("reasons", []),
                                    "holders": ev.data.get("holders", [])}
                    self._maybe_answer(iid)
                entry = self.directory.get(INTENTS_PREFIX + iid)
                if outcome == "approved" and isinstance(entry, dict):
                    self.directory.write(INTENTS_PREFIX + iid, {**entry, "state": "held"}, system=True)
                else:
                    self.directory.delete(INTENTS_PREFIX + iid, system=True)
            elif ev.name == "expired":
                self.directory.delete(INTENTS_PREFIX + iid, system=True)
