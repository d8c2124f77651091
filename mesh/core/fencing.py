"""Fencing and the lease: which leader decision a node acts on, and when it must stop.

Guarantee: **a replica never runs on two nodes at once**, counting time: from the moment a
node decides to start it until its process has exited. Placement is the leader's (see
:mod:`mesh.core.conductor`); these rules decide when a node may act on what the leader
decided, and when it must stop on its own.

The rules, each a function or a small machine here (time in, decisions out):

1. Fencing by term (:func:`accept`). A node acts only on the assignment of the leader it
   follows, of its current term, at least as new as the ``seq`` that leader's last
   heartbeat announced, and only while no newer term's assignment is in view.
   (:class:`StaleDecisions` counts the older ones it sees, once settled.)
2. The lease (:class:`Lease`). A node holds its lease while the voters it is in touch
   with *block any majority* (:func:`mesh.core.quorum.fewest_blocking` of them: the others
   could not elect a leader without it). Being in touch is a round trip: the evidence for voter
   v is when this node issued the newest of its heartbeats that v has shown it has seen
   (:class:`HeartbeatLedger`); it is older than ``LEASE_S`` when v has not. When the lease
   lapses, every replica a leader placed here and could place elsewhere stops, with
   ``FENCE_GRACE_S`` before it is killed. Each agent is also given the lease's ``until``
   and stops *itself* at that time unless its node renews it (the watchdog): a paused or
   hung node daemon cannot stop its agents. A lease that cannot lapse still gives agents a
   deadline while other voters exist (:func:`watchdog_until`): the voter list may grow. A
   deadline is renewed only if the lease held through it (:func:`renews`): an agent that
   missed it before running any of its code (a slow start) asks, and runs only then.
3. The leader decides only while a majority of voters is in touch with it
   (:meth:`Lease.may_decide`).
4. The leader places a node's replicas elsewhere without draining them only once it has
   heard nothing from that node for ``REPLACE_AFTER_S`` (:func:`may_replace`), longer than
   ``LEASE_S + FENCE_GRACE_S``: by then the node's lease has lapsed and they have stopped.
5. Handoff (:class:`Handoff`). The leader gives a replica to a node only once every other
   node it can hear has acted on a later decision of this term than the last one that
   gave it the replica there, and no longer lists it. Until then the entry is *held*: the
   node keeps it if it runs it, but does not start it (:func:`carry_out`).
6. Catching up (:meth:`Lease.may_start`). A node whose lease has just begun to hold
   (started, resumed, reconnected) starts nothing until its leader has confirmed a
   heartbeat the node issued since: from then on the leader counts it (rule 5), and the
   assignment that came with the confirmation is newer than anything decided without it.

Why it holds. A replica starts on B only under an unheld entry of B's leader L, of B's
term, which L released at some decision s: every node L could hear at s had let it go
and will not start it again in this term unless L gives it back (which again needs B to
let it go); a node still in an older term cannot act once it learns of the newer one, and
to be counted as letting go it must have acted in this term. A node N that L could not
hear for ``REPLACE_AFTER_S`` has lost its lease by then: N's lease needs a blocking set of
voters confirming N's heartbeats, L's decisions need a majority confirming L's; the two
sets share a voter v, which passes N's heartbeats on to L (gossip relays heartbeats), so
if L heard nothing from N, the heartbeats v confirmed to N are older than that silence,
and N's lease lapsed ``REPLACE_AFTER_S - LEASE_S`` before L decided. When N comes back
it starts nothing before L has heard it (rule 6). A paused daemon's agents stop at their
``until`` (rule 2); the daemon, when it resumes, finds the evidence old (it is stamped
with issue times, so messages that waited in its socket buffer do not refresh it).

Assumes:

* Durations are measured with monotonic clocks that run at the same rate, give or take
  what the margin below absorbs; a clock that stops while the machine is suspended (or a
  whole virtual machine frozen with its agents) breaks rule 2.
* ``REPLACE_AFTER_S > LEASE_S + FENCE_GRACE_S + (the time a kill takes) + (drift over
  REPLACE_AFTER_S) + (a few gossip rounds)``: 3.0 > 1.5 + 0.5 + the rest, a margin of
  1.0 s (:class:`FenceConfig` refuses less than ``lease + grace``).
* Timers fire: a node checks its lease at least every tick (the runtime: every 0.1 s) and
  an agent's watchdog fires at its ``until``.
* A node's gossip carries its heartbeat, its directory and its ``acted`` record in the
  order it wrote them (scuttlebutt sends an origin's entries in version order), and it
  writes ``acted`` only after its directory shows what acting did. Every node uses the
  same voter list.

Known gap: links that change one way at the wrong moment. The argument for rule 4 needs
the voter v that both N and L are in touch with to keep passing N's heartbeats to L. If
v's link to L fails (one way) after v last confirmed L's heartbeat, and before N's next
heartbeats pass through v, then for up to ``LEASE_S`` v can go on confirming N (N's lease
holds) while L hears N through nobody; if L's silence about N has by then lasted
``REPLACE_AFTER_S``, L places N's replicas elsewhere while N still runs them. Steady
one-way losses (a node that can send but not hear, or hear but not send, in any
combination that stays put) are covered: the round trip makes a node that nobody hears
lose its lease. The placement simulation (:mod:`mesh.sim.placement`) injects one-way
losses that change every second or so and has not hit the gap (see its note).
Liveness, not safety: the handoff waits for every node the leader hears, so a node that
can send but not hear (its lease lapsed: it acts on nothing) and has not acted in the
current term holds up every new start until it is repaired, stopped, or silent for
``replace_after``.

How a node uses it. One :class:`Follower` per node. Feed its ledger: ``ledger.issued(n,
now)`` each time gossip raises the node's own heartbeat to ``n``, ``ledger.confirmed(peer,
n)`` when a digest from ``peer`` (its own view: a syn or an ack) lists this node's heartbeat
``n``; exchange digests with every voter within about a third of ``LEASE_S`` (the sync target
:meth:`HeartbeatLedger.sync_next` picks). Every pass (0.1 s): if it leads and
``follower.lease.may_decide(...)``, conduct, passing the decision through a
:class:`Handoff` (:meth:`Handoff.holds`, then :meth:`Handoff.record` once published);
then ``orders = follower.step(...)`` and do what the :class:`Orders` say: stop
``orders.stop`` (with ``check.grace`` if ``orders.fenced``), start ``orders.start``, give
each agent ``check.until`` for its watchdog, and once the directory shows all that,
publish ``orders.acted`` with the replicas the node runs, as one record (the leader reads
``acted`` and ``runs`` of every node for the handoff). The runtime's node does all this in
:mod:`mesh.runtime.node.follower`.
The leader counts as usable the nodes ``may_replace`` does not give up on.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .quorum import fewest_blocking, majority

#: The lease, in seconds: a node whose evidence of being in touch with the voters is older
#: than this for too many of them (see :meth:`Lease.check`) stops what the leader could move.
LEASE_S = 1.5
#: Seconds a lease-expired agent gets to stop before it is killed (SIGKILL).
FENCE_GRACE_S = 0.5
#: Seconds a leader must have heard nothing from a node before it places that node's
#: replicas elsewhere: longer than LEASE_S + FENCE_GRACE_S, so the node has stopped them.
REPLACE_AFTER_S = 3.0
#: Seconds after a node first follows a leader before decisions of older terms that it
#: sees count as refused (before that, they are history it is catching up on).
STALE_SETTLE_S = 1.0


@dataclass(frozen=True)
class FenceConfig:
    """The fencing timings, in seconds, validated when built."""

    lease: float = LEASE_S  #: seconds of silence from too many voters before the lease lapses
    grace: float = FENCE_GRACE_S  #: seconds a fenced agent gets to stop before it is killed
    replace_after: float = REPLACE_AFTER_S  #: seconds of silence before a leader re-places a node's replicas
    stale_settle: float = STALE_SETTLE_S  #: seconds of following before older decisions count as refused

    def __post_init__(self) -> None:
        if not (self.lease > 0 and self.grace >= 0 and self.stale_settle >= 0):
            raise ValueError("need lease > 0, grace >= 0 and stale_settle >= 0 (seconds)")
        if not self.replace_after > self.lease + self.grace:
            raise ValueError("need replace_after > lease + grace (seconds): a node must have stopped its "
                             "replicas before the leader places them elsewhere")


DEFAULT = FenceConfig()


# -- which decision a node acts on ------------------------------------------------------------


def accept(entry: object, leader: str | None, term: int, need_seq: int,
           newest_term: int | None = None) -> dict[str, Any] | None:
    """The assignment a node may act on now, or None.

    ``entry`` is the assignment in view for ``term`` (the value under ``$assign/TERM``),
    ``leader`` the leader this node follows in ``term`` (None: none), ``need_seq`` the seq
    the leader's last heartbeat announced (the node's own seq if it leads), ``newest_term``
    the newest term of any assignment in view. Only the current leader's assignment of the
    current term is accepted, only once it is at least as new as ``need_seq`` (a node coming
    back from a partition never acts on what it saw before), and only while no newer term's
    assignment is in view (a node not yet told of a newer term by the election stops acting
    for a leader that has been replaced).
    """
    if leader is None or not isinstance(entry, dict):
        return None
    if newest_term is not None and newest_term > term:
        return None
    if entry.get("term") != term or entry.get("leader") != leader:
        return None
    seq = entry.get("seq")
    if type(seq) is not int or seq < need_seq or not isinstance(entry.get("replicas"), dict):
        return None
    return entry


def carry_out(accepted: Mapping[str, Any], name: str, placed: Iterable[str]) -> tuple[list[str], list[str]]:
    """What node ``name`` does with an accepted assignment: ``(stop, start)``.

    ``placed`` names the replicas a leader placed that run on this node now (stopping ones
    too). Every one the assignment does not give to this node stops; every one it gives and
    that does not run here starts, unless its entry is *held* (see :class:`Handoff`): a held
    replica keeps running where it runs, but is not started until the leader releases it.
    """
    replicas = accepted["replicas"]
    mine = {r: e for r, e in replicas.items() if isinstance(e, dict) and e.get("node") == name}
    here = set(placed)
    stop = sorted(r for r in here if r not in mine)
    start = sorted(r for r, e in mine.items() if r not in here and not e.get("hold"))
    return stop, start


# -- the lease --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeaseCheck:
    """What :meth:`Lease.check` decided at one instant."""

    holds: bool  #: the node may run (and start) what the leader could place elsewhere
    until: float  #: when the lease lapses if no more evidence comes (inf: it cannot lapse)
    lapsed: bool  #: it lapsed at this check (log it once)
    regained: bool  #: it holds again at this check, after having lapsed
    may_decide: bool  #: a majority of voters is in touch: a leader may make decisions
    since: float  #: when the lease last began to hold (this holding period; inf while it does not)
    stop: tuple[str, ...] = ()  #: the replicas to stop now (movable ones placed by a leader)
    grace: float = FENCE_GRACE_S  #: seconds each of ``stop`` gets before it is killed


class Lease:
    """One node's lease over the replicas a leader placed on it."""

    def __init__(self, name: str, config: FenceConfig = DEFAULT):
        self.name = name
        self.config = config
        self.fenced = False
        self.since = float("inf")  # when the current holding period began

    def _freshest(self, voters: Iterable[str], evidence: Mapping[str, float]) -> list[float]:
        """Each voter's evidence, most recent first; this node is always in touch with itself."""
        return sorted((float("inf") if v == self.name else evidence.get(v, float("-inf")) for v in set(voters)),
                      reverse=True)

    def until(self, voters: Iterable[str], evidence: Mapping[str, float]) -> float:
        """When the lease lapses if no more evidence comes: the time by which so many voters
        have been silent for ``lease`` seconds that they could form a majority without this node."""
        return self._until(self._freshest(voters, evidence))

    def _until(self, times: list[float]) -> float:
        return times[fewest_blocking(len(times)) - 1] + self.config.lease if times else float("inf")

    def _decides(self, times: list[float], now: float) -> bool:
        return not times or now < times[majority(len(times)) - 1] + self.config.lease

    def check(self, voters: Iterable[str], evidence: Mapping[str, float], now: float,
              movable: Iterable[str] = ()) -> LeaseCheck:
        """Decide at ``now`` whether the lease holds.

        ``evidence[v]`` is when this node last had evidence of being in touch with voter
        ``v`` (see the module note for which evidence is sound); voters missing from it count
        as never heard. ``movable`` names the replicas running here that a leader placed and
        could place elsewhere: while the lease does not hold, all of them are in ``stop``.
        """
        times = self._freshest(voters, evidence)
        until = self._until(times)
        holds = now < until
        lapsed = not holds and not self.fenced
        regained = holds and self.fenced
        if holds and self.since == float("inf"):
            self.since = now
        elif not holds:
            self.since = float("inf")
        self.fenced = not holds
        stop = () if holds else tuple(sorted(movable))
        return LeaseCheck(holds, until, lapsed, regained, self._decides(times, now), self.since, stop, self.config.grace)

    def in_touch(self, voters: Iterable[str], evidence: Mapping[str, float], now: float) -> list[str]:
        """The voters (in the order given) whose evidence is newer than ``lease`` seconds, this
        node included: the ones :meth:`check` counts as in touch at ``now``."""
        return [v for v in voters if v == self.name or now < evidence.get(v, float("-inf")) + self.config.lease]

    def may_decide(self, voters: Iterable[str], evidence: Mapping[str, float], now: float) -> bool:
        """Whether a leader may make a decision now: a majority of voters (itself included) is
        in touch with it (a stricter test than the lease's with an even number of voters)."""
        return self._decides(self._freshest(voters, evidence), now)

    def may_start(self, leader: str | None, evidence: Mapping[str, float]) -> bool:
        """Whether this node may start replicas its leader gave it: the lease holds and the leader
        has confirmed a heartbeat this node issued since the lease began to hold (the node's own
        decisions need no confirmation).

        A node that comes back (restarted, resumed, its lease regained) may see an assignment that
        was current when it left and that its leader has since replaced, having heard nothing from
        it for ``replace_after``. Once the leader has heard it again, every later decision counts
        it as usable (:class:`Handoff`), and the confirmation brings the leader's assignment as it
        was when the leader sent it: newer than any decision made while the node was away."""
        if self.since == float("inf") or leader is None:
            return False
        return leader == self.name or evidence.get(leader, float("-inf")) >= self.since


class HeartbeatLedger:
    """Round-trip evidence for the lease: which of this node's heartbeats each voter has seen.

    The node numbers its heartbeats (gossip's rising heartbeat counter will do) and records
    when it issued each, every number it sends (:meth:`issued`); when a peer's message shows
    that the peer itself has seen heartbeat ``counter`` of this node (a gossip digest from
    that peer lists this node's heartbeat), the node calls :meth:`confirmed`.
    :attr:`evidence` then maps each voter to the issue time of the newest heartbeat of this
    node it confirmed: the time this node last *knew* the voter could hear it, not only that
    it could hear the voter. Memory is bounded: issue times older than ``keep`` seconds are
    forgotten, and a confirmation of a number not remembered (forgotten, from an earlier
    incarnation, made up) counts for nothing.
    """

    def __init__(self, keep: float = 2 * LEASE_S):
        self.keep = keep
        self._order: deque[int] = deque()
        self._issued: dict[int, float] = {}
        self._picked: dict[str, float] = {}  # voter -> when sync_next last picked it
        self.evidence: dict[str, float] = {}

    def issued(self, counter: int, now: float) -> None:
        if self._order and counter <= self._order[-1]:
            self._order.clear()  # the counter went back: a new incarnation numbers afresh
            self._issued.clear()
            self.evidence.clear()
        self._order.append(counter)
        self._issued[counter] = now
        while self._issued[self._order[0]] < now - self.keep:
            del self._issued[self._order.popleft()]

    def confirmed(self, voter: str, counter: int) -> None:
        at = self._issued.get(counter)
        if at is not None and at > self.evidence.get(voter, float("-inf")):
            self.evidence[voter] = at

    def sync_next(self, voters: Iterable[str], now: float, every: float) -> str | None:
        """The voter to exchange digests with next, or None (any peer will do): of ``voters`` (the
        live ones but this node) whose evidence is ``every`` seconds old or older, the one whose
        evidence, or the last time it was picked here, is oldest. Picking in turn keeps one voter
        that does not answer from taking every exchange from the others."""
        due = [(max(self.evidence.get(v, float("-inf")), self._picked.get(v, float("-inf"))), v)
               for v in set(voters) if now - self.evidence.get(v, float("-inf")) >= every]
        self._picked = {v: t for v, t in self._picked.items() if now - t < self.keep}
        if not due:
            return None
        voter = min(due)[1]
        self._picked[voter] = now
        return voter


# -- refused decisions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """A decision first seen when its term was already over."""

    term: int
    seq: object
    leader: object
    current: int  #: the term current when it was seen


@dataclass
class StaleDecisions:
    """Counts each leader decision of an older term a node sees once it has settled.

    Decisions already in view while a (re)started node catches up are history, not refusals:
    only those first seen ``stale_settle`` seconds after the node first followed a leader count.
    Each decision is counted once, by (term, leader, seq); the marks of decisions no longer in
    view are forgotten when there are many, so memory stays bounded by what is in view.
    """

    config: FenceConfig = DEFAULT
    refused: int = 0
    first_led_at: float | None = None
    _seen: set[tuple[int, str, str]] = field(default_factory=set)

    def settled(self, now: float) -> bool:
        return self.first_led_at is not None and now - self.first_led_at > self.config.stale_settle

    def observe(self, assignments: Mapping[int, Mapping[str, Any]], term: int, following: bool,
                now: float) -> list[Refusal]:
        """``assignments``: every assignment in view by term; ``term``: the current term;
        ``following``: the node has a leader now. Returns the refusals to log (already counted)."""
        if following and self.first_led_at is None:
            self.first_led_at = now
        settled = self.settled(now)
        if len(self._seen) > 4 * len(assignments) + 64:  # forget what is no longer in view
            self._seen = {m for m in self._seen if m[0] in assignments and m == _mark(m[0], assignments[m[0]])}
        out = []
        for t, entry in assignments.items():
            mark = _mark(t, entry)
            if mark in self._seen:
                continue
            self._seen.add(mark)
            if t < term and settled:
                self.refused += 1
                out.append(Refusal(t, entry.get("seq"), entry.get("leader"), term))
        return out

def _mark(term: int, entry: Mapping[str, Any]) -> tuple[int, str, str]:
    return (term, str(entry.get("leader")), str(entry.get("seq")))


# -- one call for the node ------------------------------------------------------------------------


@dataclass(frozen=True)
class Orders:
    """What a node must do after one pass over the leader's assignment (:meth:`Follower.step`)."""

    check: LeaseCheck  #: the lease: log ``lapsed``/``regained``; give agents ``until`` (their watchdog)
    refusals: tuple[Refusal, ...]  #: decisions of older terms seen for the first time: log them (counted)
    accepted: dict[str, Any] | None  #: the assignment acted on, or None
    stop: tuple[str, ...]  #: replicas to stop now (with ``check.grace`` when fenced, else their stop timeout)
    start: tuple[str, ...]  #: replicas to start now, as ``accepted`` gives them
    acted: tuple[int, int] | None  #: publish ``(term, seq)`` as acted on, after the directory shows the above

    @property
    def fenced(self) -> bool:
        return not self.check.holds


class Follower:
    """A node's side of the fencing rules, in one call per pass over the leader's assignment.

    It holds the node's :class:`Lease`, its :class:`HeartbeatLedger` (feed it: ``ledger.issued``
    for every heartbeat number the node sends, ``ledger.confirmed`` when a voter's message shows
    one of them) and its :class:`StaleDecisions`.
    """

    def __init__(self, name: str, config: FenceConfig = DEFAULT):
        self.name = name
        self.config = config
        self.lease = Lease(name, config)
        self.ledger = HeartbeatLedger(2 * config.lease)
        self.stale = StaleDecisions(config)
        # The last carry_out: (accepted, placed, (stop, start)). A node's pass runs every tick with the
        # same assignment and the same placed replicas (the caller keeps both while unchanged): with
        # a thousand replicas, working them out again each time was most of an idle node's pass.
        self._carried: tuple[object, object, tuple[list[str], list[str]]] | None = None

    def step(self, now: float, *, voters: Iterable[str], leader: str | None, term: int, need_seq: int,
             assignments: Mapping[int, Mapping[str, Any]], placed: Mapping[str, bool],
             evidence: Mapping[str, float] | None = None) -> Orders:
        """``voters``: the voter list; ``leader``, ``term``: whom the node follows in which term (its
        elector's); ``need_seq``: the seq the leader's last heartbeat announced (the node's own seq if
        it leads); ``assignments``: every assignment in view, by term; ``placed``: the replicas a
        leader placed on this node that still run here (stopping ones too), each mapped to whether a
        leader could place it elsewhere (movable); ``evidence``: instead of the ledger's (the one-way
        "last heard" times are weaker: see the module note). Neither an assignment nor ``placed`` may
        be changed in place once given: a step given the same two objects as the last reuses its
        ``(stop, start)``."""
        voters = list(voters)
        evidence = self.ledger.evidence if evidence is None else evidence
        refusals = tuple(self.stale.observe(assignments, term, leader is not None, now))
        check = self.lease.check(voters, evidence, now, (r for r, movable in placed.items() if movable))
        if not check.holds:
            return Orders(check, refusals, None, check.stop, (), None)
        newest = max(assignments) if assignments else None
        accepted = accept(assignments.get(term), leader, term, need_seq, newest)
        if accepted is None:
            return Orders(check, refusals, None, (), (), None)
        carried = self._carried
        if carried is not None and carried[0] is accepted and carried[1] is placed:
            stop, start = carried[2]
        else:
            stop, start = carry_out(accepted, self.name, placed)
            self._carried = (accepted, placed, (stop, start))
        if not self.lease.may_start(leader, evidence):
            return Orders(check, refusals, accepted, tuple(stop), (), None)  # stopping is always safe
        return Orders(check, refusals, accepted, tuple(stop), tuple(start), (term, accepted["seq"]))


# -- the leader's side --------------------------------------------------------------------------


def watchdog_until(until: float, now: float, voters: Collection[str], name: str, lease: float = LEASE_S) -> float:
    """The deadline a movable agent's watchdog gets (rule 2) when its node hands out the lease's
    ``until`` at ``now``.

    A lease that cannot lapse (``until`` is inf: this node's silence could not let the other
    voters form a majority) still gives the agent ``now + lease`` when other voters exist: the
    voter list can grow (a voter joins, another node's view catches up), and from then on the
    others may form a majority without this node. A node paused before it tells its agents their
    new, finite deadline would otherwise leave them running with none while a leader places them
    elsewhere. A running node renews the deadline at every heartbeat, so it costs nothing but a
    stop and a restart when the node itself is paused or hung. Only a node that is the sole voter
    gives its agents no deadline (inf).
    """
    if until != float("inf") or not any(v != name for v in voters):
        return until
    return now + lease


def renews(since: float, deadline: float | None) -> bool:
    """Whether a node whose lease has held since ``since`` (inf: it does not hold now) may give an
    agent whose watchdog deadline is ``deadline`` a new one (rule 2).

    Only if the lease held without a break through that deadline: then no leader could place the
    agent elsewhere meanwhile, and an agent that missed its deadline without having stopped (it
    was slow to start on a loaded machine, and had run none of its own code yet) may run on. A
    lease that lapsed since, even if it holds again, gives nothing: the agent must stop. With no
    deadline (None), whether the lease holds now.
    """
    return since <= deadline if deadline is not None else since != float("inf")


def may_replace(last_heard: float, now: float, config: FenceConfig = DEFAULT) -> bool:
    """Whether a leader may place a node's replicas elsewhere without draining them first: it
    has heard nothing from that node for ``replace_after`` seconds, so the node's lease has
    lapsed and its replicas have stopped."""
    return now - last_heard >= config.replace_after


class Handoff:
    """The leader's rule for starting a replica: only once every other node has let it go.

    A replica given to node B in an assignment may be started there at once. The leader
    gives it (``hold`` absent from its entry) only when every *usable* node N other than B
    (heard within ``replace_after``) has *let it go*: N's record says it has acted on a
    decision of this term later than the last one that gave N the replica, and N's directory
    (published with that record) does not list it. Until then the entry names B with
    ``hold``: the nodes that must let go first. B keeps the replica if it runs it already,
    but does not start it (:func:`carry_out`).

    Why: what a leader sees of other nodes' directories is late. Without this rule a leader
    that gave a replica to A (seq 1), then to B (seq 2), before A's directory showed that A
    had started it, has it run on both; and a new leader sees neither what the last one gave
    nor what nodes started just before the election. A node that is not usable is not asked:
    its lease has lapsed (see the module note).

    The leader calls :meth:`release` with each assignment it publishes; memory is the last
    seq each replica was given to each node in the current term. A leader that publishes only
    what changed asks :meth:`holds` first (it remembers nothing) and :meth:`record` what it
    publishes: a decision it computed but did not publish gave nothing to anybody.
    """

    def __init__(self) -> None:
        self.term: int | None = None
        self.given: dict[str, dict[str, int]] = {}  # replica -> node -> the last seq that gave it there

    def release(self, term: int, seq: int, replicas: Mapping[str, dict[str, Any]], acted: Mapping[str, object],
                listing: Mapping[str, Collection[str]], usable: Collection[str]) -> dict[str, dict[str, Any]]:
        """The replicas of the decision numbered ``seq`` in ``term``, with ``hold`` set where
        the start must wait, remembered as published (:meth:`holds`, then :meth:`record`)."""
        out = self.holds(term, replicas, acted, listing, usable)
        self.record(term, seq, out)
        return out

    def holds(self, term: int, replicas: Mapping[str, dict[str, Any]], acted: Mapping[str, object],
              listing: Mapping[str, Collection[str]], usable: Collection[str]) -> dict[str, dict[str, Any]]:
        """The replicas of a decision in ``term``, with ``hold`` set where the start must wait.
        ``acted[N]``: ``(term, seq)`` of the decision node N last acted on and ``listing[N]`` the
        replicas N runs (stopping ones too), both from one record N wrote after acting (so that
        one can be trusted with the other); ``usable``: the nodes heard within ``replace_after``."""
        given_in_term = self.given if term == self.term else {}
        out: dict[str, dict[str, Any]] = {}
        for replica, entry in replicas.items():
            node = entry.get("node")
            given = given_in_term.get(replica, {})
            waiting = [] if node is None else sorted(
                n for n in usable if n != node and not _let_go(n, replica, term, given.get(n, 0), acted, listing))
            if node is None:
                out[replica] = entry
            elif waiting:
                out[replica] = {**entry, "hold": waiting}
            else:
                out[replica] = {k: v for k, v in entry.items() if k != "hold"}
        return out

    def record(self, term: int, seq: int, replicas: Mapping[str, Mapping[str, Any]]) -> None:
        """Remember the decision numbered ``seq`` in ``term`` as published: each replica it gives
        (not held) was last given to its node at ``seq``."""
        if term != self.term:
            self.term, self.given = term, {}
        for replica, entry in replicas.items():
            node = entry.get("node")
            if node is not None and not entry.get("hold"):
                self.given.setdefault(replica, {})[node] = seq
        self.given = {r: g for r, g in self.given.items() if r in replicas}


def _let_go(node: str, replica: str, term: int, given: int, acted: Mapping[str, object],
            listing: Mapping[str, Collection[str]]) -> bool:
    done = acted.get(node)
    if not (isinstance(done, (tuple, list)) and len(done) == 2 and done[0] == term):
        return False
    return isinstance(done[1], int) and done[1] > given and replica not in listing.get(node, ())
