"""The whole placement loop under the simulator, with the fencing rules that guard it.

Several nodes each run what a mesh node runs to place agents, built from the real core
machines: the Raft-lite :class:`~mesh.core.election.Elector`, the leader's
:func:`~mesh.core.conductor.conduct`, and the :mod:`mesh.core.fencing` rules (the lease,
:func:`~mesh.core.fencing.accept`, the leader's :func:`~mesh.core.fencing.may_replace`).
Between them runs a small gossip (:class:`Gossip`): each node pushes its view of every node
(incarnation, rising heartbeat, versioned record) to its peers every ``GOSSIP_S`` seconds,
as the runtime's gossip does; records carry a node's declared agents, its directory of the
replicas it runs, and (the leader's) the assignment with its term and seq.

Agents are processes (:class:`Processes`), outside the nodes: a replica *runs* on a node
from the moment the node decides to start it until its process has exited, which takes a
while after the node asks it to stop (at most the grace when fenced). They outlive a
paused node daemon, and end a little after their node crashes (they watch their parent).
With ``watchdog`` on, each agent also stops itself once the lease its node last gave it
has run out (see the note of :mod:`mesh.core.fencing`).

Faults (:class:`PlacementWorld`): loss, delay and reordering as in :class:`~mesh.sim.Network`;
two-way partitions; one-way link loss (``cut_one_way``); crashes and restarts (a restarted
node keeps only its election storage); paused daemons (``pause``/``resume``: the node
neither ticks nor reads while paused, messages wait in its socket buffer, and it goes on
with its old state, clock jumped).

Invariants, over virtual time (:func:`run_seed`): no replica runs on two nodes at any
instant (every pair of run intervals of one replica on two nodes is disjoint); and once
the network is healthy again, every replica runs somewhere within ``LIVENESS_S``.

``python -m mesh.sim.placement --seeds 10000`` runs a soak and prints what it found;
``--without RULE`` and ``--evidence heard`` leave a rule out, to see what it prevents.
``settle`` (a leader new in its term moves nothing until the members it knows have acted,
:func:`~mesh.core.conductor.awaited`) is about moves, not safety; each node counts the moves its
decisions made (``PlacementNode.moves``).

How close to the runtime. The nodes run the real Elector (default timings), conductor and
fencing rules with the runtime's constants (lease 1.5 s, grace 0.5 s, replace after 3 s, a
pass over the assignment every 0.1 s, a tick every 0.05 s). The gossip is simpler than the
runtime's (whole origins pushed to every peer each round, no syn/ack), but it has what the
rules depend on: heartbeats relayed through any node, a node's record (directory and
``acted``) travelling with its heartbeat, and, for the round-trip evidence, each node's own
view of the others. Membership states are by silence (suspect after 1 s, dead after 4 s).
Each seed picks 3 to 5 nodes, a delay of up to 5, 20 or 100 ms, a loss of 0 to 20 %, then,
after 3 s, about one fault a second for 8 s (a partition, one-way losses on random links, a
crash or a paused daemon for 0.1 to 6 s, or healing), then heals everything.

Found so far: 10,000 seeds, no replica on two nodes at once; every replica ran again within
7.6 s of healing (the slowest seeds are elections split again and again under 20 % loss;
the fencing adds a few gossip rounds and ``REPLACE_AFTER_S`` to the election). Each rule
has seeds that fail without it (see ``tests/test_placement_sim.py``), except the leader's
majority guard and refusing to act once a newer term is in view, which the safety argument
of :mod:`mesh.core.fencing` needs (the first) or adds for depth (the second). The gap that
note names (one-way links that change at the wrong moment) is not excluded from the
faults, and no seed has hit it.
"""

from __future__ import annotations

import argparse
import heapq
import random
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from operator import itemgetter
from typing import Any, cast

from ..core.conductor import awaited, conduct
from ..core.effects import Effect, Emit, Send
from ..core.election import LEADER, ElectionConfig, Elector
from ..core.fencing import DEFAULT as FENCE
from ..core.fencing import FenceConfig, Follower, Handoff, HeartbeatLedger, carry_out, may_replace, watchdog_until
from . import Network, Simulation

#: The runtime's timings: the rules depend on their ratios, so the simulation keeps them.
ELECTION = ElectionConfig()
GOSSIP_S = 0.1  #: seconds between gossip rounds (GossipConfig.interval)
FOLLOW_S = 0.1  #: seconds between a node's passes over the leader's assignment (HOUSEKEEPING_S)
SUSPECT_S = 1.0  #: seconds of silence before a node is suspect (the runtime's detector: about this)
DEAD_S = 4.0  #: seconds of silence before a node is dead (suspect, then GossipConfig.dead_after)
STOP_S = 0.5  #: the longest a graceful stop takes when an agent is moved (not fenced), seconds
ORPHAN_S = 0.75  #: the longest an agent takes to stop after its node died (parent watch + grace), seconds
LIVENESS_S = 15.0  #: after healing, every replica runs somewhere within this many seconds
CONFIRM_S = 2.0  #: a replica counts as running again once it has run this long without a break

ALIVE, SUSPECT, DEAD = "alive", "suspect", "dead"
#: An agent spec or an assignment as the gossip carries them (msgpack-shaped maps).
Json = dict[str, Any]


@dataclass(frozen=True)
class Rules:
    """Which fencing rules the nodes follow (the defaults are mesh's; others show the gaps)."""

    #: "confirmed": the lease counts a voter by the newest of this node's heartbeats it has
    #: seen (a round trip, :class:`~mesh.core.fencing.HeartbeatLedger`); "heard": by when this
    #: node last heard it (one way: what the runtime did before).
    evidence: str = "confirmed"
    leader_lease: bool = True  #: a leader decides only while a majority of voters is in touch
    handoff: bool = True  #: a replica starts only once the other nodes let it go (fencing.Handoff)
    newer_term: bool = True  #: a node does not act for a leader once a newer term's assignment is in view
    catch_up: bool = True  #: a node that comes back starts nothing before its leader confirms it heard it
    watchdog: bool = True  #: agents stop themselves when their node's lease runs out
    settle: bool = True  #: a leader new in its term moves nothing until the members it knows acted (SETTLE_S at most)
    fence: FenceConfig = FENCE

    @staticmethod
    def without(off: Collection[str], evidence: str = "confirmed") -> Rules:
        """mesh's rules but for those named in ``off`` (see :data:`SWITCHES`)."""
        unknown = sorted(set(off) - set(SWITCHES))
        if unknown:
            raise ValueError(f"unknown rule(s) {', '.join(unknown)}: the rules are {', '.join(SWITCHES)}")
        return Rules(evidence=evidence, leader_lease="leader_lease" not in off, handoff="handoff" not in off,
                     newer_term="newer_term" not in off, catch_up="catch_up" not in off, watchdog="watchdog" not in off,
                     settle="settle" not in off)


#: The rules that can be turned off (``--without``).
SWITCHES = ("leader_lease", "handoff", "newer_term", "catch_up", "watchdog", "settle")


# -- the agents' processes -----------------------------------------------------------------------


@dataclass
class Proc:
    """One agent process: runs on ``node`` from ``start`` until ``end`` (None: still running)."""

    node: str
    replica: str
    start: float
    end: float | None = None
    stopping: bool = False
    deadline: float = float("inf")  #: the lease its node last gave it (watchdog)


class Processes:
    def __init__(self, rng: random.Random, watchdog: bool):
        self.rng = rng
        self.watchdog = watchdog
        self.all: list[Proc] = []

    def start(self, node: str, replica: str, now: float, deadline: float) -> Proc:
        """Start ``replica`` on ``node``; it may run until ``deadline`` unless its node renews the lease."""
        proc = Proc(node, replica, now, deadline=deadline)
        self.all.append(proc)
        return proc

    def stop(self, proc: Proc, at: float, within: float) -> None:
        """Ask ``proc`` to stop at ``at``; it exits some time within ``within`` seconds."""
        end = at + self.rng.uniform(0.0, within)
        if not proc.stopping or (proc.end is not None and end < proc.end):
            proc.stopping = True
            proc.end = end

    def renew(self, proc: Proc, until: float, now: float, grace: float) -> None:
        """The node gives its agent a new lease; a lease that ran out before stopped it already."""
        if self.watchdog and not proc.stopping and proc.deadline < now:
            self.stop(proc, proc.deadline, grace)
        proc.deadline = until

    def expire(self, proc: Proc, deadline: float, grace: float) -> None:
        """The watchdog's timer: ``deadline`` came and the node has not renewed the lease."""
        if self.watchdog and not proc.stopping and proc.deadline == deadline:
            self.stop(proc, deadline, grace)

    def overlaps(self) -> list[tuple[str, str, str, float, float]]:
        """(replica, node, other node, from, to) for each time a replica ran on two nodes."""
        by_replica: dict[str, list[Proc]] = {}
        for p in self.all:
            by_replica.setdefault(p.replica, []).append(p)
        found: list[tuple[str, str, str, float, float]] = []
        for replica, procs in by_replica.items():
            procs.sort(key=lambda p: p.start)
            for i, a in enumerate(procs):
                a_end = float("inf") if a.end is None else a.end
                for b in procs[i + 1:]:
                    if b.start >= a_end:
                        break
                    if b.node != a.node:
                        b_end = float("inf") if b.end is None else b.end
                        found.append((replica, a.node, b.node, b.start, min(a_end, b_end)))
        return found

    def running_since(self, replica: str, until: float) -> float | None:
        """Since when ``replica`` has run without a gap up to ``until`` (None: not at ``until``)."""
        spans = sorted((p.start, float("inf") if p.end is None else p.end) for p in self.all if p.replica == replica)
        since: float | None = None
        reach = float("-inf")
        for start, end in spans:
            if since is not None and start > reach:
                since = None
            if since is None:
                since, reach = start, end
            else:
                reach = max(reach, end)
        if since is None or reach <= until:
            return None
        return since


# -- the gossip ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """What a node publishes about itself (a snapshot: a change is a new record)."""

    agents: list[Json]  #: the agents its spec declares
    directory: dict[str, tuple[str, float]] = field(default_factory=dict)  #: replica -> (running|stopping, since)
    assign: Json | None = None  #: the leader's assignment: term, leader, seq, replicas, unplaced
    acted: tuple[int, int] | None = None  #: (term, seq) of the assignment it last acted on


@dataclass
class Origin:
    """One node's view of a node: its incarnation, heartbeat, record, and when it last rose."""

    inc: int
    hb: int
    ver: int
    record: Record
    heard_at: float


class Gossip:
    """Push gossip of whole origins (small records), with the round-trip ledger for the lease."""

    def __init__(self, name: str, inc: int, record: Record, now: float, ledger: HeartbeatLedger):
        self.name = name
        self.inc = inc
        self.view: dict[str, Origin] = {name: Origin(inc, 0, 0, record, now)}
        self.ledger = ledger

    @property
    def me(self) -> Origin:
        return self.view[self.name]

    def beat(self, now: float) -> Json:
        me = self.me
        me.hb += 1
        me.heard_at = now
        self.ledger.issued(me.hb, now)
        return {"t": "g", "view": {o: (v.inc, v.hb, v.ver, v.record) for o, v in self.view.items()}}

    def write(self, record: Record) -> None:
        me = self.me
        me.ver += 1
        me.record = record

    def merge(self, sender: str, view: dict[str, tuple[int, int, int, Record]], now: float) -> None:
        for o, (inc, hb, ver, record) in view.items():
            if o == self.name:
                if inc == self.inc:
                    self.ledger.confirmed(sender, hb)
                continue
            mine = self.view.get(o)
            if mine is None or inc > mine.inc:
                self.view[o] = Origin(inc, hb, ver, record, now)
                continue
            if inc < mine.inc:
                continue
            if hb > mine.hb:
                mine.hb, mine.heard_at = hb, now
            if ver > mine.ver:
                mine.ver, mine.record = ver, record

    def state(self, o: str, now: float) -> str:
        if o == self.name:
            return ALIVE
        silent = now - self.view[o].heard_at
        return ALIVE if silent < SUSPECT_S else SUSPECT if silent < DEAD_S else DEAD


# -- one node's daemon ----------------------------------------------------------------------------


class PlacementNode:
    """What a mesh node does to place agents: elect, conduct (as leader), fence, follow."""

    def __init__(self, name: str, world: PlacementWorld, rng: random.Random, storage: dict[str, Any], now: float):
        self.name = name
        self.world = world
        self.rules = world.rules
        self.rng = rng
        storage["inc"] = storage.get("inc", 0) + 1
        self.elector = Elector(name, world.voters, ELECTION, rng, storage, now)
        self.follower = Follower(name, self.rules.fence)
        self.record = Record(world.specs.get(name, []))
        self.handoff = Handoff()
        self.gossip = Gossip(name, storage["inc"], self.record, now, self.follower.ledger)
        self.instances: dict[str, Proc] = {}
        self.peers = [n for n in world.names if n != name]
        self.written: Json | None = None
        self._conducted: object = None  # the inputs of the last decision
        self._led_term, self._led_since = -1, now  # the term this node last led, and since when
        self.moves = 0  #: replicas its decisions gave to another node than the last decision did
        self.next_gossip = now + rng.uniform(0, GOSSIP_S)
        self.next_follow = now + rng.uniform(0, FOLLOW_S)

    # -- the machine's inputs ------------------------------------------------------------------

    def step(self, sender: str, message: object, now: float) -> list[Effect]:
        if isinstance(message, dict) and message.get("t") == "g":
            self.gossip.merge(sender, message["view"], now)
            return []
        return self.elector.step(sender, message, now)

    def tick(self, now: float) -> list[Effect]:
        out = self.elector.tick(now)
        if now >= self.next_gossip:
            self.next_gossip = now + GOSSIP_S
            beat = self.gossip.beat(now)
            out += [Send(p, beat) for p in self.peers]
        if now >= self.next_follow:
            self.next_follow = now + FOLLOW_S
            out += self.follow(now)
        return out

    # -- the placement loop -----------------------------------------------------------------------

    def _publish(self, acted: tuple[int, int] | None) -> None:
        directory = {r: ("stopping" if p.stopping else "running", p.start) for r, p in self.instances.items()}
        if directory != self.record.directory or acted != self.record.acted:
            self.record = replace(self.record, directory=directory, acted=acted)
            self.gossip.write(self.record)

    def _evidence(self, now: float) -> dict[str, float]:
        if self.rules.evidence == "confirmed":
            return self.gossip.ledger.evidence
        return {o: v.heard_at for o, v in self.gossip.view.items() if self.gossip.state(o, now) != DEAD}

    def assignments(self) -> dict[int, Json]:
        found = {}
        for v in self.gossip.view.values():
            entry = v.record.assign
            if entry is not None:
                found[entry["term"]] = entry
        return found

    def follow(self, now: float) -> list[Effect]:
        """One pass over the leader's assignment, as the runtime's node makes every 0.1 s."""
        procs = self.world.procs
        for r, proc in list(self.instances.items()):
            if proc.end is not None and proc.end <= now:
                del self.instances[r]  # reaped
        e = self.elector
        evidence = self._evidence(now)
        if e.role == LEADER and (self.follower.lease.may_decide(e.voters, evidence, now) or not self.rules.leader_lease):
            self._conduct(now)
        found = self.assignments()
        if not self.rules.newer_term:
            found = {t: x for t, x in found.items() if t <= e.term}
        orders = self.follower.step(now, voters=e.voters, leader=e.leader, term=e.term,
                                    need_seq=e.seq if e.role == LEADER else e.leader_seq, assignments=found,
                                    placed={r: True for r in self.instances}, evidence=evidence)
        start, acted = orders.start, orders.acted
        if not self.rules.catch_up and orders.accepted is not None:
            start = tuple(carry_out(orders.accepted, self.name, self.instances)[1])
            acted = (e.term, orders.accepted["seq"])
        check = orders.check
        until = watchdog_until(check.until, now, e.voters, self.name, self.follower.lease.config.lease)
        for proc in self.instances.values():
            procs.renew(proc, until, now, check.grace)
        for r in orders.stop:
            if not self.instances[r].stopping:
                procs.stop(self.instances[r], now, check.grace if orders.fenced else STOP_S)
        for r in start:
            self.instances[r] = procs.start(self.name, r, now, until)
        self._publish(acted or self.record.acted)
        out: list[Effect] = [Emit("refused", {"term": x.term, "seq": x.seq}) for x in orders.refusals]
        if check.lapsed:
            out.append(Emit("fenced", {"stop": list(orders.stop)}))
        return out

    def _conduct(self, now: float) -> None:
        g = self.gossip
        states = {o: g.state(o, now) for o in g.view}
        usable = {o for o, s in states.items() if s != DEAD and not may_replace(g.view[o].heard_at, now, self.rules.fence)}
        usable.add(self.name)
        term = self.elector.term
        if term != self._led_term:
            self._led_term, self._led_since = term, now
        waiting: frozenset[str] = frozenset()
        if self.rules.settle:  # new in its term, it waits for the members it knows before moving anything
            known = [o for o in usable if o != self.name and states[o] == ALIVE]
            waiting = awaited(known, {o: v.record.acted for o, v in g.view.items()}, term, now - self._led_since)
        # The same inputs give the same decision: skip the work (the runtime just writes nothing new).
        inputs = (self.elector.term, sorted(states.items()), sorted(usable), sorted(waiting), self.record,
                  sorted(self.instances), sorted((o, v.inc, v.ver) for o, v in g.view.items() if o != self.name))
        if inputs == self._conducted:
            return
        self._conducted = inputs
        specs = {o: v.record.agents for o, v in g.view.items()}
        mine = self.record.assign
        if mine is not None and mine["term"] == term:
            previous = mine["replicas"]
        else:
            found = self.assignments()
            previous = found[max(found)]["replicas"] if found else {}
        running: dict[str, str] = {}
        started: dict[str, float] = {}
        for o, v in g.view.items():
            if o == self.name or states[o] != DEAD:
                for r, (_, at) in v.record.directory.items():
                    # The runtime's directory holds one entry per name, the last written wins.
                    if at > started.get(r, float("-inf")):
                        running[r], started[r] = o, at
        decision = conduct(specs, states, usable, previous, running, waiting=waiting)
        self.moves += sum(1 for r, e in decision["replicas"].items()
                          if e.get("node") is not None and previous.get(r, {}).get("node") not in (None, e["node"]))
        seq = self.elector.seq + 1
        replicas = decision["replicas"]
        if self.rules.handoff:
            acted = {o: v.record.acted for o, v in g.view.items()}
            listing: dict[str, Collection[str]] = {o: v.record.directory for o, v in g.view.items()}
            acted[self.name] = self.record.acted
            listing[self.name] = self.instances
            replicas = self.handoff.holds(term, replicas, acted, listing, usable)
        body = {"replicas": replicas, "unplaced": decision["unplaced"]}
        if body == self.written and mine is not None and mine["term"] == term:
            return
        self.handoff.record(term, seq, replicas)
        self.written = body
        self.record = replace(self.record, assign={"term": term, "leader": self.name, "seq": seq, **body})
        g.write(self.record)
        self.elector.decided()


class _Due(tuple[float, int, Callable[[], None]]):
    """A queue item as a tuple (at, seq, action): what Simulation.run reads, ordered in C."""

    __slots__ = ()
    at = property(itemgetter(0))
    action = property(itemgetter(2))


# -- the world ----------------------------------------------------------------------------------


class PlacementWorld(Simulation):
    """A :class:`~mesh.sim.Simulation` of placement nodes, with one-way cuts and paused daemons."""

    def __init__(self, seed: int, names: list[str], specs: dict[str, list[Json]], network: Network | None = None,
                 rules: Rules = Rules(), voters: list[str] | None = None):
        self.names = list(names)
        self.voters = sorted(voters if voters is not None else names)
        self.specs = specs
        self.rules = rules
        self.procs = Processes(random.Random(f"{seed}/procs"), rules.watchdog)
        self.oneway: set[tuple[str, str]] = set()
        self.paused: set[str] = set()
        self.held: dict[str, list[tuple[str, object]]] = {}
        super().__init__(seed, self.names, self._build, network, tick_interval=0.05, trace=False)

    def _build(self, name: str, rng: random.Random, storage: dict[str, Any], now: float) -> PlacementNode:
        return PlacementNode(name, self, rng, storage, now)

    def node(self, name: str) -> PlacementNode:
        """The live machine of node ``name`` (KeyError if it is crashed)."""
        return cast(PlacementNode, self.nodes[name])

    # -- faults --------------------------------------------------------------------------------

    def cut_one_way(self, src: str, dst: str) -> None:
        """Lose every message from ``src`` to ``dst`` (the other way still works)."""
        self.oneway.add((src, dst))
        self._record("cut_one_way", src, dst)

    def heal(self) -> None:
        self.oneway.clear()
        super().heal()

    def pause(self, node: str) -> None:
        """Stop the node's daemon (SIGSTOP): no ticks, no reads; its agents run on."""
        if node in self.crashed or node in self.paused:
            return
        self.paused.add(node)
        self.held[node] = []
        self._record("pause", node)
        grace = self.rules.fence.grace
        for proc in self.node(node).instances.values():
            if proc.deadline != float("inf"):
                self._at(max(self.now, proc.deadline), _expiry(self.procs, proc, proc.deadline, grace))

    def resume(self, node: str) -> None:
        """Continue the daemon (SIGCONT): it reads what waited in its socket buffer, then ticks."""
        if node not in self.paused:
            return
        self.paused.discard(node)
        self._record("resume", node)
        for src, message in self.held.pop(node, []):
            self.delivered += 1
            self._apply(node, self.nodes[node].step(src, message, self.now))

    def crash(self, node: str) -> None:
        machine = cast("PlacementNode | None", self.nodes.get(node))
        self.paused.discard(node)
        self.held.pop(node, None)
        super().crash(node)
        if machine is not None:
            for proc in machine.instances.values():
                self.procs.stop(proc, self.now, ORPHAN_S)

    # -- the simulator's hooks ------------------------------------------------------------------

    def _at(self, at: float, action: Callable[[], None]) -> None:
        # A plain tuple compares in C: the queue's ordering is most of the simulator's time here.
        heapq.heappush(cast("list[_Due]", self._queue), _Due((at, next(self._seq), action)))

    def _tick(self, node: str, inc: int) -> None:
        if node in self.paused and node not in self.crashed and self._incarnation[node] == inc:
            self._at(self.now + self.tick_interval, lambda: self._tick(node, inc))
            return
        super()._tick(node, inc)

    def _deliver(self, src: str, dst: str, message: object) -> None:
        if (src, dst) in self.oneway:
            self._record("dropped", src, dst)
            return
        if dst in self.paused and frozenset((src, dst)) not in self.cuts:
            self.held[dst].append((src, message))
            return
        super()._deliver(src, dst, message)


def _expiry(procs: Processes, proc: Proc, deadline: float, grace: float) -> Callable[[], None]:
    return lambda: procs.expire(proc, deadline, grace)


# -- a random run ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    seed: int
    nodes: int
    overlaps: list[tuple[str, str, str, float, float]] = field(default_factory=list)  #: (replica, node, node, from, to)
    unplaced: list[str] = field(default_factory=list)  #: replicas not running at the end
    recovered_in: float = 0.0  #: seconds from healing until every replica ran (for good)
    faults: list[tuple[float, str]] = field(default_factory=list)  #: (time, what) applied
    refused: int = 0  #: decisions of older terms refused, over all nodes
    #: (replica, node, from, to or None) for every run of every replica
    runs: list[tuple[str, str, float, float | None]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.overlaps and not self.unplaced


#: The agents each home node declares (a node beyond n2 declares none): two replicas of a, one of b and c.
SPECS: dict[str, list[Json]] = {"n0": [{"name": "a", "replicas": 2}], "n1": [{"name": "b", "replicas": 1}],
                                "n2": [{"name": "c", "replicas": 1}]}
FAULT_KINDS = ("partition", "one_way", "crash", "pause", "heal")


def run_seed(seed: int, rules: Rules = Rules(), kinds: tuple[str, ...] = FAULT_KINDS, chaos_s: float = 8.0,
             warmup_s: float = 3.0, liveness_s: float = LIVENESS_S) -> Outcome:
    """One random run: start, faults for ``chaos_s`` seconds, heal, then check both invariants."""
    rng = random.Random(f"placement/{seed}")
    n = rng.choice((3, 3, 4, 5))
    names = [f"n{i}" for i in range(n)]
    specs = {k: v for k, v in SPECS.items() if k in names}
    network = Network(delay=(0.0005, rng.choice((0.005, 0.02, 0.1))), loss=rng.choice((0.0, 0.01, 0.05, 0.2)))
    world = PlacementWorld(seed, names, specs, network, rules)
    outcome = Outcome(seed, n)
    faults = outcome.faults
    down: dict[str, float] = {}  # crashed or paused node -> when it comes back

    def _back(node: str) -> None:
        if node in down:
            del down[node]
            if node in world.crashed:
                world.restart(node)
            else:
                world.resume(node)

    def apply(kind: str) -> None:
        now = world.now
        if kind == "partition":
            side = rng.sample(names, rng.randint(1, n - 1))
            world.partition(side, [x for x in names if x not in side])
            faults.append((now, f"partition {sorted(side)}"))
        elif kind == "one_way":
            for _ in range(rng.randint(1, n)):
                src, dst = rng.sample(names, 2)
                world.cut_one_way(src, dst)
                faults.append((now, f"one-way {src}->{dst}"))
        elif kind == "heal":
            world.heal()
            faults.append((now, "heal"))
        else:
            live = [x for x in names if x not in down]
            if not live:
                return
            node = rng.choice(live)
            back = now + rng.choice((rng.uniform(0.1, 1.0), rng.uniform(1.0, 6.0)))
            down[node] = back
            if kind == "crash":
                world.crash(node)
                world.at(back, lambda: _back(node))
            else:
                world.pause(node)
                world.at(back, lambda: _back(node))
            faults.append((now, f"{kind} {node} until {back:.2f}"))

    world.run(warmup_s)
    t = warmup_s
    end = warmup_s + chaos_s
    while True:
        t += rng.expovariate(1.0)
        if t >= end or not kinds:
            break
        world.run(t)
        apply(rng.choice(kinds))
    world.run(end)
    world.heal()
    for node in sorted(down):
        _back(node)  # every node comes back now: crashed ones restart, paused ones continue
    faults.append((end, "heal all"))
    replicas = sorted({r for agents in specs.values() for a in agents for r in _replicas(a)})
    # Run until every replica has run for CONFIRM_S without a break, or LIVENESS_S is over.
    finish = end
    while finish < end + liveness_s:
        finish = min(end + liveness_s, finish + 0.5)
        world.run(finish)
        sinces = [world.procs.running_since(r, finish) for r in replicas]
        if all(x is not None and finish - x >= CONFIRM_S for x in sinces):
            break
    outcome.overlaps = world.procs.overlaps()
    latest = end
    for r in replicas:
        since = world.procs.running_since(r, finish)
        if since is None:
            outcome.unplaced.append(r)
        else:
            latest = max(latest, since)
    outcome.recovered_in = latest - end
    outcome.refused = sum(world.node(n).follower.stale.refused for n in world.nodes)
    outcome.runs = [(p.replica, p.node, p.start, p.end) for p in world.procs.all]
    return outcome


def _replicas(agent: Json) -> list[str]:
    n = agent.get("replicas", 1)
    return [agent["name"]] if n == 1 else [f"{agent['name']}.{i}" for i in range(n)]


def soak(seeds: range, rules: Rules = Rules(), kinds: tuple[str, ...] = FAULT_KINDS,
         report: Callable[[Outcome], None] = lambda o: None) -> dict[str, Any]:
    """Run many seeds; return a summary (failing seeds, the slowest recovery)."""
    failing: list[int] = []
    slowest, slowest_seed, refused = 0.0, None, 0
    for seed in seeds:
        o = run_seed(seed, rules, kinds)
        if o.recovered_in > slowest:
            slowest, slowest_seed = o.recovered_in, seed
        refused += o.refused
        if not o.ok:
            failing.append(seed)
            report(o)
    return {"seeds": len(seeds), "failing": failing, "slowest_recovery_s": round(slowest, 3),
            "slowest_seed": slowest_seed, "refused": refused}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mesh.sim.placement", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seeds", type=int, default=1000, help="how many seeds (default 1000)")
    parser.add_argument("--first", type=int, default=0, help="the first seed (default 0)")
    parser.add_argument("--evidence", choices=("confirmed", "heard"), default="confirmed")
    parser.add_argument("--without", default="", metavar="RULE,...",
                        help=f"turn rules off, to see what they prevent: {', '.join(SWITCHES)}")
    parser.add_argument("--faults", default=",".join(FAULT_KINDS), help="fault kinds, comma-separated")
    args = parser.parse_args(argv)
    try:
        rules = Rules.without([r for r in args.without.split(",") if r], evidence=args.evidence)
    except ValueError as exc:
        parser.error(str(exc))
    kinds = tuple(k for k in args.faults.split(",") if k)

    def report(o: Outcome) -> None:
        print(f"seed {o.seed} ({o.nodes} nodes): overlaps {o.overlaps[:3]} not running {o.unplaced}", flush=True)

    started = time.monotonic()
    summary = soak(range(args.first, args.first + args.seeds), rules, kinds, report)
    summary["seconds"] = round(time.monotonic() - started, 1)
    print(summary)
    return 1 if summary["failing"] else 0


if __name__ == "__main__":
    sys.exit(main())
