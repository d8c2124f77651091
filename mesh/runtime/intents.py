"""Intentions in the runtime: ``self.mesh.propose(...)``, objections, escalations.

An actor announces what it is about to do::

    decision = self.mesh.propose("rewrite", claims=["repo:src/app.py"], priority=1, window=0.2)
    if decision.approved:
        ...               # the claims are ours until done() or the hold ends
        decision.done()

Two things happen at once, and both must be settled within ``window`` seconds:

* The claims are voted on by the mesh's voter nodes (:mod:`mesh.core.intentions`, a
  pure state machine the nodes run: majority quorums, precedence by priority, then
  timestamp, then id). Overlapping claims are never approved twice while held. A
  node writes its commits to ``intentions.json`` (fsynced) before acknowledging.
* Every actor that defines ``on_intention(intention)`` (anywhere in the mesh) hears
  the intention and may answer ``mesh.Objection(reason, weight=1.0, kind="finding")``.

The decision, in the playbook's three kinds of conflict:

* resource contention (claims overlap): the vote decides, higher priority wins; the
  loser is ``objected`` with reasons naming the intentions that hold or outrank it;
* contradictory findings (objections of kind ``"finding"``, the default): the
  stronger evidence wins: objected if the objections' weights add up to more than
  the proposal's ``evidence`` (default 1.0), else approved, the objections listed;
* strategy disagreement (any objection of kind ``"strategy"``): ``escalated`` to the
  leader, which decides (the conductor has the final say: approved if the
  proposal's evidence is at least the strategy objections' total weight), or, when
  the leader's spec says ``[intents] escalate = "human"``, waits for a person:
  ``mesh intents`` lists it, ``mesh approve ID`` / ``mesh deny ID`` decide it. An
  escalation nobody decides within ``escalation_timeout`` is denied.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..core.effects import Event, Send
from ..core.intentions import (APPROVED, PROPOSER_KINDS, VOTER_KINDS, IntentionProposer, IntentionVoter, _shown,
                                check_proposal)
from ..errors import MeshError, NotLeader, ResourceError

log = logging.getLogger("mesh.intents")

INTENT_RECIPIENT = "$intent"
INTENTS_PREFIX = "$intents/"  #: pending and held intentions, mesh-wide (for `mesh intents`)
ESCALATIONS_PREFIX = "$escalations/"
MAX_KEPT = 1000  #: intentions a node keeps at once for its agents (pending, held, closing); more are refused
MAX_ESCALATIONS = 100  #: escalations a leader keeps waiting for a person at once; more are refused
LISTED_CLAIMS = 16  #: claims shown in an intention's listing (``$intents/ID``), each cut to LISTED_CHARS
LISTED_CHARS = 200


# -- what users see ------------------------------------------------------------------------


@dataclass(frozen=True)
class Objection:
    """What ``on_intention`` returns to object. ``kind``: "finding" (weighed against the
    proposal's evidence), "strategy" (escalated) or "contention" (the vote's own)."""

    reason: str
    weight: float = 1.0
    kind: str = "finding"
    by: str = ""


@dataclass(frozen=True)
class Intention:
    """What ``on_intention`` hears."""

    id: str
    action: object
    claims: tuple
    priority: float
    proposer: str
    window: float


@dataclass
class Decision:
    id: str
    outcome: str  #: "approved", "objected" or "escalated" (not decided within the escalation timeout)
    objections: list[Objection] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    escalated: bool = False
    decided_by: str = "vote"  #: "vote", "weights", "leader NAME" or "human (via NODE)"
    until: float | None = None  #: time.monotonic() at which the claims' hold ends, if approved
    _client: object = None

    @property
    def approved(self) -> bool:
        return self.outcome == "approved"

    def done(self) -> None:
        """Release the claims (idempotent)."""
        if self._client is not None:
            client, self._client = self._client, None
            try:
                client.control("intent_done", id=self.id)
            except MeshError as exc:  # the hold ends by itself
                log.info("done(%s) not confirmed: %s", self.id, exc)

    def __enter__(self) -> "Decision":
        return self

    def __exit__(self, *exc: object) -> None:
        self.done()


def propose(client, proposer: str, action: object, claims, priority: float, window: float, hold: float,
            evidence: float, escalation_timeout: float = 60.0) -> Decision:
    """The proposer's side (in the actor's process): vote and objections, then the rules."""
    claims = sorted(set(claims or []))
    started = time.monotonic()
    intention_id = f"{proposer}-{os.getpid()}-{time.time_ns()}"
    intention = {"id": intention_id, "action": action, "claims": claims, "priority": priority, "proposer": proposer,
                 "window": window}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        vote = pool.submit(client.control, "intent_propose", window + 2.0, id=intention_id, action=action,
                           claims=claims, priority=priority, window=window, hold=hold, proposer=proposer) if claims else None
        listeners = client.control("intent_listeners")["actors"]
        asks = [pool.submit(_hear, client, name, intention, window) for name in listeners if name != proposer]
        objections = [o for f in asks for o in [f.result()] if o is not None]
        voted = vote.result() if vote is not None else {"outcome": APPROVED, "reasons": [], "until_in": hold}
    until = started + float(voted.get("until_in") or 0.0)
    decision = Decision(intention_id, voted["outcome"], objections, list(voted.get("reasons") or []), _client=client,
                        until=until if voted["outcome"] == APPROVED else None)
    if not decision.approved:
        decision._client = None
        return decision
    strategy = [o for o in objections if o.kind == "strategy"]
    findings = [o for o in objections if o.kind != "strategy"]
    against = sum(o.weight for o in findings)
    if against > evidence:
        decision.outcome, decision.decided_by = "objected", "weights"
        decision.reasons.append(f"objections weigh {against:g} against evidence {evidence:g}")
        decision.done()
        return decision
    if strategy:
        decision.escalated = True
        try:
            answer = client._resource_call("intent_escalate", escalation_timeout + 5.0, id=intention_id, action=action,
                                           claims=claims, priority=priority, proposer=proposer, evidence=evidence,
                                           objections=[o.__dict__ for o in objections], timeout=escalation_timeout)
        except (MeshError, NotLeader) as exc:
            decision.outcome = "escalated"
            decision.reasons.append(f"escalated, not decided: {exc}")
            return decision
        decision.decided_by = str(answer.get("by"))
        decision.outcome = "approved" if answer.get("approve") else "objected"
        decision.reasons.append(str(answer.get("why")))
        if not decision.approved:
            decision.done()
    return decision


def _hear(client, name: str, intention: dict, window: float) -> Objection | None:
    try:
        endpoint = client.endpoint_of(name, timeout=0.0)
        answer = client.control_at(endpoint, "intention", window, intention=intention)
    except MeshError:
        return None  # silent within the window: no objection
    if isinstance(answer, dict) and isinstance(answer.get("objection"), dict):
        o = answer["objection"]
        weight = o.get("weight", 1.0)
        return Objection(str(o.get("reason", "")), float(weight) if isinstance(weight, (int, float)) else 1.0,
                         str(o.get("kind", "finding")), name)
    return None


# -- the node's side -------------------------------------------------------------------------


def _proposer(name: str, voters: list[str], now: float) -> IntentionProposer | None:
    try:
        return IntentionProposer(name, voters, now) if voters else None
    except ValueError as exc:  # a voter list the machine refuses: no proposals until it changes
        log.warning("intentions disabled for now: %s", exc)
        return None


class NodeIntents:
    """A node's voter (if it votes) and proposer, their durable storage and their messages."""

    def __init__(self, name: str, voter: bool, run_dir: Path, send, voters: list[str]):
        self.name = name
        self.send = send  # send(node_name, message)
        self.path = run_dir / "intentions.json"
        self.storage: dict = {}
        if self.path.exists():
            try:
                self.storage = json.loads(self.path.read_text())
            except ValueError:
                raise RuntimeError(f"{self.path} is not readable (remove it to start afresh)") from None
        self._saved = json.dumps(self.storage, sort_keys=True)
        now = time.monotonic()
        self.voter = IntentionVoter(name, self.storage, now) if voter else None
        self.voters = sorted(voters)
        self.proposer = _proposer(name, self.voters, now)
        self.events: list[Event] = []

    def set_voters(self, voters: list[str]) -> None:
        voters = sorted(voters)
        # Only between proposals: quorums of the old and new voter lists need not intersect while
        # an intention decided under the old list is still held (its hold bounds how long).
        if voters != self.voters and (self.proposer is None or not (self.proposer.pending() or self.proposer.holding(
                time.monotonic()))):
            self.voters = voters
            self.proposer = _proposer(self.name, voters, time.monotonic())

    def busy(self) -> bool:
        """Anything the state machines must tick for soon: proposals in flight, or commits held here."""
        # (Reads the machines' own tables: cheap, and this runs on every turn of the node's loop.)
        if self.proposer is not None and self.proposer._proposals:
            return True
        return bool(self.voter is not None and self.voter._votes)

    def check(self, iid: object, claims: object, priority: object, window: object, hold: object) -> list[str]:
        """Everything :meth:`propose` would refuse, checked before anything of the proposal is written
        anywhere: returns its claims, sorted. Raises NotLeader (no voters known yet), ValueError (a
        field is wrong, or the id is taken) or ResourceError (this node keeps too many already)."""
        if self.proposer is None:
            raise NotLeader("no voters are known yet: intentions cannot be voted on")
        claims = sorted(check_proposal(iid, claims, priority, 0.0, window, hold, settle=self.proposer.settle))
        if self.proposer.in_use(iid):
            raise ValueError(f"intention {_shown(iid)} is still in use; ids must never be reused")
        if self.proposer.kept() >= MAX_KEPT:
            raise ResourceError(f"node {self.name} keeps {MAX_KEPT} intentions already (pending or held), the most it"
                                f" keeps: release some (done()) or wait for their holds to end")
        return claims

    def propose(self, iid: str, claims: list, priority: float, window: float, hold: float) -> None:
        if self.proposer is None:
            raise NotLeader("no voters are known yet: intentions cannot be voted on")
        self._apply(self.proposer.propose(iid, claims, priority, time.time(), window, hold, time.monotonic()))

    def done(self, iid: str) -> None:
        if self.proposer is not None:
            self._apply(self.proposer.done(iid, time.monotonic()))

    def receive(self, sender: str, body: object) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("t"), str):
            return  # untrusted: anything malformed is ignored
        kind = body.get("t")
        now = time.monotonic()
        if kind in VOTER_KINDS and self.voter is not None:
            self._apply(self.voter.step(sender, body, now))
        elif kind in PROPOSER_KINDS and self.proposer is not None:
            self._apply(self.proposer.step(sender, body, now))

    def tick(self) -> None:
        now = time.monotonic()
        out = []
        if self.voter is not None:
            out += self.voter.tick(now)
        if self.proposer is not None:
            out += self.proposer.tick(now)
        self._apply(out)

    def _apply(self, outputs: list) -> None:
        text = json.dumps(self.storage, sort_keys=True)
        if text != self._saved:  # commits are durable before any acknowledgement leaves
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, text.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            self._saved = text
        for out in outputs:
            if type(out) is Send:
                if out.to == self.name:
                    self.receive(self.name, out.message)
                else:
                    self.send(out.to, out.message)
            elif type(out) is Event:
                self.events.append(out)
