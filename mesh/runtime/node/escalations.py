"""Escalations: an intention that strategy objections left undecided goes to the leader.

With ``[intents] escalate = "leader"`` the leader decides at once (approved if the proposal's
evidence is at least the strategy objections' total weight). With ``"human"`` it lists the
escalation under ``$escalations/`` and the proposer waits until a person decides it
(``mesh approve`` / ``mesh deny``), at most ``escalation_timeout`` seconds: then, or if the
leader changes meanwhile, it is denied.
"""

from __future__ import annotations

import math
from typing import Callable

from ...errors import NotLeader, ResourceError, UnknownEscalation, WireError
from ...spec import NodeSpec
from ..clock import REAL_CLOCK, Clock
from ..gossiper import Directory
from ..intents import ESCALATIONS_PREFIX, LISTED_CHARS, LISTED_CLAIMS, MAX_ESCALATIONS
from ..leadership import Leadership
from .intentions import shown
from .replies import DEFER, Replies, Waiter


def _weight(value: object) -> float:
    """An objection's weight as listed and summed: a finite number, else 0 (it counts for nothing)."""
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0.0


class Escalations:
    def __init__(self, spec: NodeSpec, leadership: Leadership, directory: Directory, replies: Replies,
                 on_event: Callable[[str], None], *, clock: Clock = REAL_CLOCK):
        self.spec = spec
        self.clock = clock
        self.name = spec.name
        self.leadership = leadership
        self.directory = directory
        self.replies = replies
        self.on_event = on_event
        self._waiting: dict[str, tuple[Waiter, float]] = {}  # leader: id -> (proposer, deadline)
        self.escalated = 0  #: escalations this node took as leader

    def require_leader(self, body: dict | None = None) -> None:
        if not self.leadership.is_leader:
            raise NotLeader(f"node {self.name} is not the leader")

    # -- control ops --------------------------------------------------------------------------------

    def escalate(self, body: dict, waiter: Waiter) -> object:
        iid = body["id"][:200]
        if iid in self._waiting:
            raise WireError(f"escalation {iid!r} is already waiting")
        self.escalated += 1  # the conflict rate counts it, whatever comes of it
        if len(self._waiting) >= MAX_ESCALATIONS:
            raise ResourceError(f"{MAX_ESCALATIONS} escalations wait for a person already (the most the leader"
                                f" {self.name} keeps): decide some (mesh intents, mesh approve/deny) first")
        given = body.get("objections")
        raw = given if isinstance(given, list) else []
        objections = [{"reason": str(o.get("reason", ""))[:500], "weight": _weight(o.get("weight", 1.0)),
                       "kind": str(o.get("kind"))[:20], "by": str(o.get("by", ""))[:200]}
                      for o in raw[:50] if isinstance(o, dict)]
        strategy = sum(float(o["weight"]) for o in objections if o["kind"] == "strategy"
                       and isinstance(o["weight"], (int, float)) and math.isfinite(o["weight"]))
        evidence = body.get("evidence", 1.0)
        evidence = float(evidence) if isinstance(evidence, (int, float)) else 0.0
        if self.spec.escalate == "leader":
            approve = evidence >= strategy
            why = (f"the leader {self.name} decided: evidence {evidence:g} "
                   f"{'>=' if approve else '<'} strategy objections {strategy:g}")
            self.on_event(f"escalation {iid}: {'approved' if approve else 'denied'} ({why})")
            return {"approve": approve, "by": f"leader {self.name}", "why": why}
        timeout = body.get("timeout", self.spec.escalation_timeout)
        if not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0:
            timeout = self.spec.escalation_timeout
        timeout = min(float(timeout), self.spec.escalation_timeout)
        given = body.get("claims")
        claims = given if isinstance(given, list) else []
        self.directory.write(ESCALATIONS_PREFIX + iid, {"id": iid, "action": shown(body.get("action")),
                                                        "claims": [str(c)[:LISTED_CHARS] for c in claims[:LISTED_CLAIMS]],
                                                        "proposer": str(body.get("proposer"))[:200],
                                                        "objections": objections, "evidence": evidence,
                                                        "state": "pending", "leader": self.name,
                                                        "since": self.clock.time()},
                             system=True)
        self._waiting[iid] = (waiter, self.clock.monotonic() + timeout)
        self.on_event(f"escalation {iid} waits for a person: mesh approve {iid} / mesh deny {iid}")
        return DEFER

    def decide(self, body: dict) -> dict:
        iid, approve = body["id"], body.get("approve") is True
        waiting = self._waiting.pop(iid, None)
        if waiting is None:
            if not self.leadership.is_leader:
                raise NotLeader(f"node {self.name} is not the leader")
            raise UnknownEscalation(f"no escalation {iid!r} is waiting (decided already, timed out, or never escalated);"
                                    " `mesh intents` lists those that wait")
        by = str(body.get("by") or "a person")[:200]
        self._answer(iid, waiting[0], approve, f"human ({by})", f"{'approved' if approve else 'denied'} by {by}")
        return {"id": iid, "approved": approve}

    # -- time ---------------------------------------------------------------------------------------

    def expire(self) -> None:
        """Deny what nobody decided in time, and everything once this node no longer leads."""
        now = self.clock.monotonic()
        for iid, (waiter, deadline) in list(self._waiting.items()):
            if now >= deadline or not self.leadership.is_leader:
                del self._waiting[iid]
                why = "nobody decided in time: denied" if now >= deadline else "the leader changed: denied"
                self._answer(iid, waiter, False, f"leader {self.name}", why)

    def _answer(self, iid: str, waiter: Waiter, approve: bool, by: str, why: str) -> None:
        self.replies.reply(waiter, {"approve": approve, "by": by, "why": why})
        self.directory.delete(ESCALATIONS_PREFIX + iid, system=True)
        self.on_event(f"escalation {iid}: {why}")
