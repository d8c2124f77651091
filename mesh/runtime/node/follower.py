"""Following the leader's assignments, with fencing and the lease; and conducting, the leader's part.

The leader (see :mod:`mesh.runtime.leadership`) conducts: it places every agent the node
records declare on the usable nodes (:func:`mesh.core.conductor.conduct`) and publishes the
assignment as ``$assign/TERM`` with its term and a sequence number, which its next heartbeats
announce. Every node follows: it runs the replicas assigned to it and retires the others.
The leader decides when what it decides from has changed (the directory counts the changes under
each prefix it reads: :meth:`~mesh.runtime.gossiper.Directory.version`), and at least every
CONDUCT_EVERY_S; new in its term, it moves nothing until the members it knows have acted on one
of its decisions (:func:`mesh.core.conductor.awaited`, SETTLE_S at most).

The rules are the core's (:mod:`mesh.core.fencing`, which says what they guarantee and
assume); this module feeds them the node's views and does what they decide. Fencing
(:func:`~mesh.core.fencing.accept`): a node acts only on the current leader's assignment of
the current term, at least as new as the leader's heartbeats said (``seq``); a decision of an
older term first seen once the node has settled is refused, counted and logged
(:class:`~mesh.core.fencing.StaleDecisions`). The lease (:class:`~mesh.core.fencing.Lease`):
a node out of touch with so many voters that they could form a majority without it stops,
within FENCE_GRACE_S, every agent the leader could place elsewhere. Being in touch with a voter
is a round trip (:class:`~mesh.core.fencing.HeartbeatLedger`): the voter's own gossip digest
showed a heartbeat this node issued, and the evidence is when it issued it (on the node's
monotonic clock); gossip runs its next full exchange with the voter longest out of touch. A
node whose lease has just begun to hold (started, regained) starts nothing until its leader
has confirmed a heartbeat it issued since, and no node acts for a leader once a newer term's
assignment is in view. The leader decides only while a majority of voters is in touch with it,
and re-places a node's agents only after REPLACE_AFTER_S of silence
(:func:`~mesh.core.fencing.may_replace`).
"""

from __future__ import annotations

import logging
from typing import Callable

from ...core import fencing
from ...core.conductor import SETTLE_S, awaited, conduct
from ...core.restart import DEFAULT_MAX_RESTARTS, RestartPolicy, RestartTracker
from ...errors import MeshError
from ...spec import AgentSpec, agent_from_wire
from ..clock import REAL_CLOCK, Clock
from ..gossiper import Directory
from ..leadership import NODE_PREFIX, Leadership
from .assignments import assignments, compact, latest_assignment, undeclared
from .constants import ACTED_PREFIX, AGENTS_PREFIX, ASSIGN_PREFIX, LEASE_S
from .instance import VERSION, Instance
from .killswitch import pulled_kill_switch
from .supervisor import Supervisor

log = logging.getLogger("mesh.node")


def member_states(directory: Directory) -> dict[str, dict]:
    """Each known node's current incarnation as gossip sees it (a live one before a newer
    dead or departed one of the same name): state and wall-clock last_heard."""
    return {m["name"]: m for m in directory.current_members()}


#: Seconds after which a leader decides again even though nothing it decides from changed: a safety
#: net (every change it knows of makes it decide at once).
CONDUCT_EVERY_S = 5.0

#: How often this node wants a round trip with each voter, in seconds: a third of the lease, so a
#: lost exchange or two does not cost it.
SYNC_VOTERS_S = LEASE_S / 3


class Follower:
    def __init__(self, name: str, leadership: Leadership, directory: Directory, supervisor: Supervisor,
                 on_event: Callable[[str], None], *, clock: Clock = REAL_CLOCK):
        self.name = name
        self.clock = clock
        self.leadership = leadership
        self.directory = directory
        self.supervisor = supervisor
        self.on_event = on_event
        self.fence = fencing.Follower(name)  # the lease, its ledger, and the stale decisions seen
        self._stamped = -1  # the last heartbeat number given an issue time in the ledger
        self.decisions_issued = 0  #: assignments this node published as leader
        self.last_decision: dict | None = None
        self._written_assignment: dict | None = None
        self.handoff = fencing.Handoff()  # the leader's: a replica starts once every other node let it go
        self.acted: tuple[int, int] | None = None  #: (term, seq) of the assignment this node last acted on
        self.lease_until = float("inf")  #: when the lease lapses unless renewed (the clock's monotonic time)
        self._acted_written: dict | None = None
        self._spec_problems: dict[str, str] = {}
        self._conducted: tuple | None = None  # the inputs of the last decision (see conduct)
        #: The nodes' records as decisions read them (their load left out: it changes all the time and
        #: decides nothing), the NODE_PREFIX version they were read at, and a count of their changes.
        self._records_seen: tuple[int, dict, int] = (-1, {}, 0)
        self._conducted_at = float("-inf")
        self._led_term, self._led_since = -1, 0.0  # the term this node last led, and since when (monotonic)
        self.conducted = 0  #: decisions computed (published or not): with nothing changing, one per CONDUCT_EVERY_S
        self._placed_cache: dict[str, bool] = {}
        self._placed_at = -1  # the instances' VERSION the cache was made at
        #: Until when (monotonic) this leader places only agents that can run on one node alone (local,
        #: pinned): a node started without seeds announces itself at once, and the nodes started with
        #: it join within JOIN_WAIT_S (set by the node; 0.0: no such wait).
        self.gather_until = 0.0
        self._parsed: tuple[object, tuple[AgentSpec, list[str], str]] | None = None  # the last spec parsed (_place)
        self._stamped_with: tuple[str, int] | None = None  # the stamp given to every placed instance, at VERSION
        self._runs: tuple[int, list[str]] = (-1, [])  # runs() at a VERSION

    @property
    def settled(self) -> bool:
        """A leader has been followed for over a second: decisions seen now are news, not history."""
        return self.fence.stale.settled(self.clock.monotonic())

    @property
    def stale_decisions(self) -> int:
        """Decisions from an older term this node refused."""
        return self.fence.stale.refused

    @property
    def fenced(self) -> bool:
        """The lease is lost: this node runs nothing the leader could move."""
        return self.fence.lease.fenced

    def voters_heard(self) -> list[str]:
        """The voters the lease counts as in touch now, this node included."""
        return self.fence.lease.in_touch(self.leadership.elector.voters, self.fence.ledger.evidence,
                                         self.clock.monotonic())

    def keep_in_touch(self, now: float) -> None:
        """Feed the lease's ledger, and ask gossip to sync next with the leader while this node catches
        up (:meth:`~mesh.core.fencing.Lease.may_start`), else with the voter longest out of touch.

        Gossip raises the node's heartbeat by one in each round, after this pass (the daemon ticks
        it after following): the next one is stamped now, no later than it goes out, so the evidence
        is never younger than it is. A heartbeat never stamped (sent before the node's first pass)
        counts for nothing when a peer confirms it."""
        ledger = self.fence.ledger
        upcoming = self.directory.own_heartbeat() + 1
        if upcoming > self._stamped:
            ledger.issued(upcoming, now)
            self._stamped = upcoming
        for peer, heartbeat in self.directory.heartbeats_seen().items():
            ledger.confirmed(peer, heartbeat)
        leader = self.leadership.leader
        if (leader not in (None, self.name) and self.directory.is_live(leader)
                and ledger.evidence.get(leader, float("-inf")) < self.fence.lease.since < float("inf")):
            self.directory.sync_first(leader)  # catching up: nothing starts here before the leader confirms
            return
        voters = [v for v in self.leadership.elector.voters if v != self.name and self.directory.is_live(v)]
        # And each live member whose record says it is a voter that was never heard first hand: a voter is
        # learned only after a round trip (mesh.runtime.leadership), and one the rotation left out would
        # wait for the other to pick this node, or for a random pick that never comes while some voter is
        # due: in a mesh of many voters started at once, the voter lists would differ for minutes.
        evidence = ledger.evidence
        for key, record in self.directory.items(NODE_PREFIX).items():
            n = key[len(NODE_PREFIX):]
            if isinstance(record, dict) and record.get("voter") is True and n not in evidence and n != self.name \
                    and n not in voters and self.directory.is_live(n):
                voters.append(n)
        self.directory.sync_first(ledger.sync_next(voters, now, SYNC_VOTERS_S))

    # -- every node ---------------------------------------------------------------------------

    def follow(self, now: float) -> None:
        """Refuse stale decisions, keep the lease, and run what the accepted assignment puts here
        (``now``: the node's monotonic clock)."""
        self.keep_in_touch(now)
        lead = self.leadership
        instances = self.supervisor.instances
        orders = self.fence.step(now, voters=lead.elector.voters, leader=lead.leader, term=lead.term,
                                 need_seq=lead.elector.seq if lead.is_leader else lead.elector.leader_seq,
                                 assignments=assignments(self.directory),
                                 placed=self._placed())
        for r in orders.refusals:
            self.on_event(f"refused a decision of term {r.term} (seq {r.seq}) from {r.leader}: term {r.current} is current")
        check = orders.check
        self.lease_until = check.until
        if orders.fenced:
            if check.lapsed and orders.stop:
                self.on_event(f"lease lost: out of touch with too many voters ({', '.join(lead.elector.voters)});"
                              " stopping the agents the leader could place elsewhere")
            for replica in orders.stop:
                self.supervisor.retire(instances[replica], "lease lost (this node is out of touch with a majority of"
                                       " voters)", now, check.grace)
            return
        if check.regained and self.fence.stale.first_led_at is not None:
            self.on_event("lease regained: following the leader's assignment again")
        accepted = orders.accepted
        if accepted is None or pulled_kill_switch(self.directory) is not None:
            return
        stamp = f"{accepted['leader']}@{accepted['term']}"
        for replica in orders.stop:
            elsewhere = accepted["replicas"].get(replica, {})
            where = elsewhere.get("node") if isinstance(elsewhere, dict) else None
            why = f"moved to {where}" if where else "taken off this node"
            self.supervisor.retire(instances[replica], f"{why} by {accepted['leader']} (term {accepted['term']})", now, None)
        if self._stamped_with != (stamp, VERSION[0]):  # a new stamp, or an instance changed
            for inst in instances.values():
                if inst.placed_by and inst.placed_by != stamp and inst.name not in orders.stop:
                    inst.placed_by = stamp
            self._stamped_with = (stamp, VERSION[0])
        for replica in orders.start:
            if replica not in instances:  # an agent of this node's own spec keeps its name
                self._place(replica, accepted["replicas"][replica], stamp)
        if orders.acted is not None:
            self.acted = orders.acted

    def _placed(self) -> dict[str, bool]:
        """The replicas a leader placed here, and whether each could be placed elsewhere (made again
        only when an instance changed: see instance.VERSION)."""
        if self._placed_at != VERSION[0]:
            self._placed_cache = {i.name: i.movable for i in self.supervisor.instances.values() if i.placed_by}
            self._placed_at = VERSION[0]
        return self._placed_cache

    def lease_left(self, deadline: float | None = None) -> float | None:
        """Seconds until this node's lease lapses unless renewed (None: it cannot lapse and this node
        is the sole voter, or the node is stopping and stops its agents itself): what each agent a
        leader could move elsewhere is given for its watchdog (:func:`mesh.core.fencing.watchdog_until`).

        ``deadline``: the agent's current one (the node's monotonic clock). A new one is given only
        if the lease has held without a break since before then (0.0 otherwise): an agent that
        missed its deadline (it started slowly) may run on only if no leader could have placed
        it elsewhere meanwhile."""
        if self.supervisor.stopping:
            return None
        if deadline is not None and not fencing.renews(self.fence.lease.since, deadline):
            return 0.0
        now = self.clock.monotonic()
        until = fencing.watchdog_until(self.lease_until, now, self.leadership.elector.voters, self.name)
        return None if until == float("inf") else until - now

    def runs(self) -> list[str]:
        """The replicas a leader placed here that run, or may run again, here (stopping ones too):
        made again only when an instance changed (see instance.VERSION); not to be changed in place."""
        if self._runs[0] != VERSION[0]:
            self._runs = (VERSION[0], sorted(i.name for i in self.supervisor.instances.values() if i.placed_by))
        return self._runs[1]

    def publish_acted(self) -> None:
        """``$acted/NAME``: the assignment this node last acted on and the replicas it runs, one record
        written after the directory shows what acting did (the leader's handoff reads both together)."""
        if self.acted is None:
            return
        record = {"term": self.acted[0], "seq": self.acted[1], "runs": self.runs()}
        if record != self._acted_written:
            self.directory.write(ACTED_PREFIX + self.name, record, system=True)
            self._acted_written = record

    def _place(self, replica: str, entry: dict, stamp: str) -> None:
        wired = entry.get("spec")
        try:
            if self._parsed is not None and self._parsed[0] is wired:  # the group's other replicas share it
                agent, path, cwd = self._parsed[1]
            else:
                agent, path, cwd = agent_from_wire(wired, f"<agent {replica} from {stamp}>")
                self._parsed = (wired, (agent, path, cwd))
        except MeshError as exc:
            if self._spec_problems.get(replica) != str(exc):
                self._spec_problems[replica] = str(exc)
                self.on_event(f"cannot run {replica}: {exc}")
            return
        why = undeclared(self.directory, self.supervisor.spec, entry["spec"], self.leadership.elector.voters)
        if why is not None:  # so that no assignment, forged or not, imports code nobody declared
            if self._spec_problems.get(replica) != why:
                self._spec_problems[replica] = why
                self.on_event(f"refused to run {replica} placed by {stamp.replace('@', ' (term ')}): {why}")
            return
        policy = RestartPolicy(agent.restart, agent.max_restarts if agent.max_restarts is not None
                               else DEFAULT_MAX_RESTARTS[agent.restart], agent.restart_window, agent.backoff,
                               agent.backoff_max)
        home = entry.get("home")
        inst = Instance(
            name=replica, spec=agent, group=str(entry.get("group") or agent.name), tracker=RestartTracker(policy),
            log_path=self.supervisor.log_path_of(replica), placed_by=stamp,
            movable=not (agent.node == self.name or (agent.placement == "local" and home == self.name)),
            import_path=path, cwd=cwd)
        lost = self._lost_since(replica)
        if lost is not None:  # its node died: from then until it answers here is its recovery
            inst.metrics.node_lost(lost)
        self.supervisor.admit(inst)
        self.on_event(f"{replica} placed here by {stamp.replace('@', ' (term ')})")

    def _lost_since(self, replica: str) -> float | None:
        """When the node that last ran ``replica`` was last heard, on this node's monotonic clock, if
        that node is no longer alive (it died or left without handing over); else None."""
        entry = self.directory.get(AGENTS_PREFIX + replica)
        where = entry.get("node") if isinstance(entry, dict) else None
        if not isinstance(where, str) or where == self.name:
            return None
        member = member_states(self.directory).get(where)
        if member is None or member.get("state") == "alive":
            return None
        heard = member.get("last_heard")
        if isinstance(heard, bool) or not isinstance(heard, (int, float)):
            return None
        ago = self.clock.time() - float(heard)
        return self.clock.monotonic() - max(0.0, ago)

    # -- the leader -----------------------------------------------------------------------------

    def conduct(self, states: dict[str, dict], records: dict[str, dict]) -> None:
        """The leader's part: place every wanted agent, publish the assignment with its term.

        Only when what it decides from changed (see :meth:`_inputs`), or CONDUCT_EVERY_S after it
        last did: an idle leader does no work proportional to the agents."""
        lead = self.leadership
        monotonic = self.clock.monotonic()
        if not self.fence.lease.may_decide(lead.elector.voters, self.fence.ledger.evidence, monotonic):
            return  # a majority of voters may have moved on without this leader: decide nothing
        gathering = monotonic < self.gather_until  # a first node just up: see gather_until
        now = self.clock.time()
        state_of = {n: m["state"] for n, m in states.items()}
        usable = {n for n, m in states.items() if m["state"] in ("alive", "suspect")
                  and not fencing.may_replace(m["last_heard"], now) and n in records and not records[n].get("stopping")}
        if not self.supervisor.stopping:
            usable.add(self.name)
        else:
            usable.discard(self.name)
        if lead.term != self._led_term:
            self._led_term, self._led_since = lead.term, monotonic
        waiting: frozenset[str] = frozenset()
        if monotonic - self._led_since < SETTLE_S:  # new in its term: wait for the members it knows
            known = {n for n, m in states.items() if m["state"] == "alive" and n in usable and n != self.name}
            waiting = awaited(known, self._acted_records()[0], lead.term, monotonic - self._led_since)
        inputs = (*self._inputs(state_of, usable, waiting, records), gathering)
        if inputs == self._conducted and monotonic < self._conducted_at + CONDUCT_EVERY_S:
            return
        self._conducted, self._conducted_at = inputs, monotonic
        self.conducted += 1
        specs = {n: [a for a in r.get("agents", []) if isinstance(a, dict) and isinstance(a.get("name"), str)]
                 for n, r in records.items() if n in state_of and isinstance(r.get("agents", []), list)}
        mine = assignments(self.directory).get(lead.term)
        if isinstance(mine, dict) and mine.get("leader") == self.name and isinstance(mine.get("replicas"), dict):
            previous = mine["replicas"]
        else:
            previous = latest_assignment(self.directory)
        running = {}
        for key, entry in self.directory.items(AGENTS_PREFIX).items():
            if isinstance(entry, dict) and entry.get("state") in ("running", "starting", "restarting") \
                    and isinstance(entry.get("node"), str):
                node = entry["node"]
                if node == self.name or state_of.get(node) in ("alive", "suspect"):
                    running[key[len(AGENTS_PREFIX):]] = node
        try:
            supply = {}
            for n, r in records.items():
                cap = r.get("capacity")
                if isinstance(cap, dict) and isinstance(cap.get("cpu"), (int, float)) and isinstance(cap.get("memory"), int):
                    supply[n] = (float(cap["cpu"]), cap["memory"])
            decision = conduct(specs, state_of, usable, previous, running, supply, waiting, gathering)
        except (KeyError, TypeError, ValueError) as exc:  # a malformed record from some node
            log.warning("cannot place agents: %s", exc)
            return
        # Handoff: a replica given to a node waits (hold) until every other node heard lately let it go,
        # stopping ones too (only a node, one with a record, runs agents).
        heard = {n for n, m in states.items() if m["state"] in ("alive", "suspect")
                 and not fencing.may_replace(m["last_heard"], now) and n in records} | {self.name}
        acted, listing = self._acted_records()
        replicas = self.handoff.holds(lead.term, decision["replicas"], acted, listing, heard)
        body = {"replicas": replicas, "unplaced": decision["unplaced"], "conflicts": decision["conflicts"]}
        if body == self._written_assignment and isinstance(mine, dict) and mine.get("leader") == self.name:
            return
        for why in decision["conflicts"]:
            if not self._written_assignment or why not in self._written_assignment.get("conflicts", []):
                self.on_event(why)
        self._written_assignment = body
        seq = lead.elector.seq + 1
        self.handoff.record(lead.term, seq, replicas)
        self.decisions_issued += 1
        self.last_decision = {"term": lead.term, "seq": seq}
        self.directory.write(f"{ASSIGN_PREFIX}{lead.term}",
                             compact({"term": lead.term, "leader": self.name, "seq": seq, **body}), system=True)
        lead.elector.decided()  # the next heartbeats say: act on seq or newer
        for t in assignments(self.directory):
            if t < lead.term:
                self.directory.delete(f"{ASSIGN_PREFIX}{t}", system=True)

    def _inputs(self, state_of: dict[str, str], usable: set[str], waiting: frozenset[str],
                records: dict[str, dict]) -> tuple:
        """What a decision depends on, cheaply compared: the term, the members' states, the nodes
        usable now (they change with time too), how many changes the node records (but for their
        load: a node rewrites it as its agents' usage moves, and placing reads none of it), the
        directory, the assignments and the ``acted`` records have seen, and what this node acted on."""
        d = self.directory
        version, seen, changes = self._records_seen
        if d.version(NODE_PREFIX) != version:
            read = {n: {k: v for k, v in r.items() if k != "load"} for n, r in records.items()}
            self._records_seen = (d.version(NODE_PREFIX), read, changes + (read != seen))
        return (self.leadership.term, self.supervisor.stopping, sorted(state_of.items()), sorted(usable), sorted(waiting),
                self._records_seen[2], d.version(AGENTS_PREFIX), d.version(ASSIGN_PREFIX), d.version(ACTED_PREFIX),
                self.acted)

    def _acted_records(self) -> tuple[dict[str, tuple[int, int]], dict[str, set[str]]]:
        """What each node last acted on and what it runs, from its ``$acted`` record (this node's
        own from now); a malformed record counts as none, so that node lets go of nothing."""
        acted: dict[str, tuple[int, int]] = {}
        listing: dict[str, set[str]] = {}
        for key, value in self.directory.items(ACTED_PREFIX).items():
            if not isinstance(value, dict):
                continue
            term, seq, runs = value.get("term"), value.get("seq"), value.get("runs")
            if type(term) is int and type(seq) is int and isinstance(runs, list) and all(type(r) is str for r in runs):
                acted[key[len(ACTED_PREFIX):]] = (term, seq)
                listing[key[len(ACTED_PREFIX):]] = set(runs)
        acted.pop(self.name, None)
        listing.pop(self.name, None)
        if self.acted is not None:
            acted[self.name], listing[self.name] = self.acted, set(self.runs())
        return acted, listing
