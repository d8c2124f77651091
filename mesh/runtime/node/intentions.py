"""Intentions at the node: proposals of its actors, decided by the voters' state machines
(:class:`mesh.runtime.intents.NodeIntents`), listed mesh-wide under ``$intents/``.

A proposal is checked whole before anything of it is written; it is listed, then voted on, and
its proposer is answered when the vote decides. An approved intention stays listed as held
until its proposer is done with it (or its hold ends).
"""

from __future__ import annotations

import json
from typing import cast

from ...errors import NotLeader, WireError
from ..clock import REAL_CLOCK, Clock
from ..gossiper import Directory
from ..intents import ESCALATIONS_PREFIX, INTENT_RECIPIENT, INTENTS_PREFIX, LISTED_CHARS, LISTED_CLAIMS, NodeIntents
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


class Intentions:
    def __init__(self, name: str, intents: NodeIntents, directory: Directory, replies: Replies, supervisor: Supervisor,
                 *, clock: Clock = REAL_CLOCK):
        self.name = name
        self.clock = clock  # stamps of the listings
        self.intents = intents
        self.directory = directory
        self.replies = replies
        self.supervisor = supervisor
        self._waiting: dict[str, Waiter] = {}  # intention id -> its proposer, waiting for the decision

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
        try:
            claims = self.intents.check(iid, body.get("claims"), priority, window, hold, wait)
            if not isinstance(proposer, str):
                raise ValueError(f"proposer must be an actor name, not a {type(proposer).__name__}")
            action = shown(body.get("action"))
        except (ValueError, TypeError, RecursionError) as exc:  # json.dumps: bytes keys, nesting
            why = exc if isinstance(exc, ValueError) else f"action cannot be shown as JSON ({type(exc).__name__})"
            raise WireError(f"bad intention: {why}") from None
        iid = cast(str, iid)  # intents.check refuses anything else
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
        self._waiting[iid] = waiter
        self.drain_events()
        return DEFER

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
                waiter = self._waiting.pop(iid, None)
                if waiter is not None:
                    until = ev.data.get("until")
                    left = until - self.intents.clock.monotonic() if isinstance(until, (int, float)) else None
                    body = {"id": iid, "outcome": outcome, "reasons": ev.data.get("reasons", []),
                            "holders": ev.data.get("holders", []),
                            # ``until`` is NodeIntents' deadline, on its clock (the node's)
                            "until_in": None if left is None else max(0.0, left)}
                    self.replies.reply(waiter, body)
                entry = self.directory.get(INTENTS_PREFIX + iid)
                if outcome == "approved" and isinstance(entry, dict):
                    self.directory.write(INTENTS_PREFIX + iid, {**entry, "state": "held"}, system=True)
                else:
                    self.directory.delete(INTENTS_PREFIX + iid, system=True)
            elif ev.name == "expired":
                self.directory.delete(INTENTS_PREFIX + iid, system=True)
