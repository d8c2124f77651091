"""Intentions in the runtime: ``self.mesh.propose(...)``, objections, escalations.

(The types users see, :class:`~mesh.Intention`, :class:`~mesh.Objection` and
:class:`~mesh.Decision`, are in :mod:`mesh.intentions`; this module runs them.)

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

Both go through the proposer's node, in one request: the node publishes the intention once
on its broadcast forwarder (PUB/SUB, topic ``i/``), runs the vote, and answers when the vote
has decided and every listener has answered, or the window has ended. A listener's hook
runs beside its handler, so a busy listener still answers in time
(:mod:`mesh.runtime.hearer`). Silence is no objection, unless the proposer named the
listener in ``require=[...]``: then its silence (or its not listening at all) objects
(kind ``"silence"``, ``decided_by`` ``"require"``), whatever the weights.

The decision, in the playbook's three kinds of conflict:

* a required listener silent: ``objected``, each reason naming one;
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

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from . import rpc, tracing
from ..core.effects import Effect, Emit, Send
from ..core.intentions import (APPROVED, PROPOSER_KINDS, VOTER_KINDS, IntentionProposer, IntentionVoter, _shown,
                                check_proposal, storage_key)
from ..errors import MeshError, NotLeader, ResourceError
from ..intentions import Decision, Intention, Objection
from .clock import REAL_CLOCK, Clock

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client

log = logging.getLogger("mesh.intents")

INTENT_RECIPIENT = "$intent"
INTENTS_PREFIX = "$intents/"  #: pending and held intentions, mesh-wide (for `mesh intents`)
ESCALATIONS_PREFIX = "$escalations/"
MAX_KEPT = 1000  #: intentions a node keeps at once for its agents (pending, held, closing); more are refused
MAX_ESCALATIONS = 100  #: escalations a leader keeps waiting for a person at once; more are refused
LISTED_CLAIMS = 16  #: claims shown in an intention's listing (``$intents/ID``), each cut to LISTED_CHARS
LISTED_CHARS = 200
#: The kind of the objection a required listener's silence counts as (``propose(require=[...])``).
SILENCE = "silence"
NO_CLAIM = "-"


# -- the proposer's side (in the actor's process) ----------------------------------------------


def propose(client: "Client", proposer: str, action: object, *, claims: Iterable[str] = (), priority: float = 0,
            window: float = 0.2, hold: float = 30.0, evidence: float = 1.0, escalation_timeout: float = 60.0,
            wait: float = 0.0, require: Iterable[str] = ()) -> Decision:
    """One request to the node, which runs the vote and hears the listeners at once; then the rules
    of the module note. Under a span (OpenTelemetry), the proposal to its decision is a span of its
    own, whose trace the listeners' ``on_intention`` join (see :mod:`mesh.runtime.tracing`)."""
    intention_id = f"{proposer}-{os.getpid()}-{time.time_ns()}"
    if not (tracing.ENABLED and tracing.active()):
        return _propose(client, intention_id, proposer, action, claims, priority, window, hold, evidence,
                        escalation_timeout, wait, require, None)
    with tracing.proposing(proposer, intention_id) as traceparent:
        return _propose(client, intention_id, proposer, action, claims, priority, window, hold, evidence,
                        escalation_timeout, wait, require, traceparent)


def _propose(client: "Client", intention_id: str, proposer: str, action: object, claims: Iterable[str],
             priority: float, window: float, hold: float, evidence: float, escalation_timeout: float, wait: float,
             require: Iterable[str], traceparent: str | None) -> Decision:
    claimed = sorted(set(claims or []))
    started = time.monotonic()
    voted = rpc.intent_propose(client, intention_id, action, claimed or None, priority, window, hold, proposer, wait,
                               require=sorted(set(require or [])), trace=traceparent)
    objections = [_objection(o) for o in voted.get("objections") or [] if isinstance(o, dict)]
    until = started + float(voted.get("until_in") or 0.0)
    approved = voted["outcome"] == APPROVED
    decision = Decision(intention_id, voted["outcome"], objections, list(voted.get("reasons") or []),
                        until=until if approved else None, _release=_releaser(client, intention_id) if approved else None)
    if not approved:
        return decision
    silent = [o for o in objections if o.kind == SILENCE]
    if silent:  # a required listener's silence always objects
        decision.outcome, decision.decided_by = "objected", "require"
        decision.reasons += [o.reason for o in silent]
        decision.done()
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
            answer = rpc.intent_escalate(client, intention_id, action, claimed, priority, proposer, evidence,
                                         [o.__dict__ for o in objections], escalation_timeout)
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


def _objection(o: Mapping[str, Any]) -> Objection:
    weight = o.get("weight", 1.0)
    return Objection(str(o.get("reason", "")), float(weight) if isinstance(weight, (int, float)) else 1.0,
                     str(o.get("kind", "finding")), str(o.get("by", "")))


def _releaser(client: "Client", intention_id: str) -> Callable[[], None]:
    def release() -> None:
        try:
            rpc.intent_done(client, intention_id)
        except MeshError as exc:  # the hold ends by itself
            log.info("done(%s) not confirmed: %s", intention_id, exc)

    return release


# -- the node's side -------------------------------------------------------------------------


def _proposer(name: str, voters: list[str], now: float) -> IntentionProposer | None:
    try:
        return IntentionProposer(name, voters, now) if voters else None
    except ValueError as exc:  # a voter list the machine refuses: no proposals until it changes
        log.warning("intentions disabled for now: %s", exc)
        return None


def _upgrade(storage: object) -> dict[str, Any]:
    """Commits written before keys took the core's own form (``["proposer", "id"]`` in JSON)."""
    if not isinstance(storage, dict):
        raise ValueError("not an object")
    commits = storage.get("commits")
    if isinstance(commits, dict):
        for skey in [k for k in commits if isinstance(k, str) and k.startswith("[")]:
            try:
                proposer, iid = json.loads(skey)
            except (TypeError, ValueError):
                continue
            if isinstance(proposer, str) and isinstance(iid, str):
                commits[storage_key((proposer, iid))] = commits.pop(skey)
    return storage


class NodeIntents:
    """A node's voter (if it votes) and proposer, their durable storage and their messages."""

    def __init__(self, name: str, voter: bool, run_dir: Path, send: Callable[[str, Any], None], voters: list[str],
                 clock: Clock = REAL_CLOCK):
        self.name = name
        self.clock = clock
        self.send = send  # send(node_name, message)
        self.path = run_dir / "intentions.json"
        self.storage: dict[str, Any] = {}
        if self.path.exists():
            try:
                self.storage = _upgrade(json.loads(self.path.read_text()))
            except ValueError:
                raise RuntimeError(f"{self.path} is not readable (remove it to start afresh)") from None
        self._saved = json.dumps(self.storage, sort_keys=True)
        now = self.clock.monotonic()
        self.voter = IntentionVoter(name, self.storage, now) if voter else None
        #: Whether this node may vote now, its spec aside (with keys: its trusted key's voter flag).
        self.may_vote: Callable[[], bool] = lambda: True
        self.voters = sorted(voters)
        self.proposer = _proposer(name, self.voters, now)
        self.events: list[Emit] = []

    @property
    def votes(self) -> bool:
        """Whether this node answers intention votes: its spec says voter and (with keys) its key does."""
        return self.voter is not None and self.may_vote()

    def set_voters(self, voters: list[str]) -> None:
        voters = sorted(voters)
        # Only between proposals: quorums of the old and new voter lists need not intersect while
        # an intention decided under the old list is still held (its hold bounds how long).
        if voters != self.voters and (self.proposer is None or not (self.proposer.pending() or self.proposer.holding(
                self.clock.monotonic()))):
            self.voters = voters
            self.proposer = _proposer(self.name, voters, self.clock.monotonic())

    def busy(self) -> bool:
        """Anything the state machines must tick for soon: proposals in flight, or commits held here."""
        # (Reads the machines' own tables: cheap, and this runs on every turn of the node's loop.)
        if self.proposer is not None and self.proposer._proposals:
            return True
        return bool(self.voter is not None and self.voter._votes)

    def check(self, iid: object, claims: object, priority: object, window: object, hold: object,
              wait: object = 0.0) -> list[str]:
        """Everything :meth:`propose` would refuse, checked before anything of the proposal is written
        anywhere: returns its claims, sorted. Raises NotLeader (no voters known yet), ValueError (a
        field is wrong, or the id is taken) or ResourceError (this node keeps too many already).

        ``claims`` None: a proposal with nothing to vote on (its listeners only); its other fields
        are checked the same, and it needs no voters."""
        if claims is None:
            # The core checks claims with the rest; a stand-in claim lets it check the rest alone.
            check_proposal(iid, [NO_CLAIM], priority, 0.0, window, hold, wait=wait)
            return []
        if self.proposer is None:
            raise NotLeader("no voters are known yet: intentions cannot be voted on")
        claims = sorted(check_proposal(iid, claims, priority, 0.0, window, hold, settle=self.proposer.settle, wait=wait))
        if self.proposer.in_use(iid):
            raise ValueError(f"intention {_shown(iid)} is still in use; ids must never be reused")
        if self.proposer.kept() >= MAX_KEPT:
            raise ResourceError(f"node {self.name} keeps {MAX_KEPT} intentions already (pending or held), the most it"
                                f" keeps: release some (done()) or wait for their holds to end")
        return claims

    def propose(self, iid: str, claims: list[str], priority: float, window: float, hold: float,
                wait: float = 0.0) -> None:
        if self.proposer is None:
            raise NotLeader("no voters are known yet: intentions cannot be voted on")
        self._apply(self.proposer.propose(iid, claims, priority, self.clock.time(), window, hold, self.clock.monotonic(),
                                          wait))

    def done(self, iid: str) -> None:
        if self.proposer is not None:
            self._apply(self.proposer.done(iid, self.clock.monotonic()))

    def receive(self, sender: str, body: object) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("t"), str):
            return  # untrusted: anything malformed is ignored
        kind = body.get("t")
        now = self.clock.monotonic()
        if kind in VOTER_KINDS and self.votes:
            assert self.voter is not None
            self._apply(self.voter.step(sender, body, now))
        elif kind in PROPOSER_KINDS and self.proposer is not None:
            self._apply(self.proposer.step(sender, body, now))

    def tick(self) -> None:
        now = self.clock.monotonic()
        out: list[Effect] = []
        if self.voter is not None:
            out += self.voter.tick(now)
        if self.proposer is not None:
            out += self.proposer.tick(now)
        self._apply(out)

    def _apply(self, outputs: list[Effect]) -> None:
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
            elif type(out) is Emit:
                self.events.append(out)


__all__ = ["Decision", "Intention", "NodeIntents", "Objection", "propose"]
