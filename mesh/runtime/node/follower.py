"""Following the leader's assignments, with fencing and the lease; and conducting, the leader's part.

The leader (see :mod:`mesh.runtime.leadership`) conducts: it places every agent the node
records declare on the usable nodes (:func:`mesh.core.conductor.conduct`) and publishes the
assignment as ``$assign/TERM`` with its term and a sequence number, which its next heartbeats
announce. Every node follows: it runs the replicas assigned to it and retires the others.

Fencing: a node acts only on the current leader's assignment of the current term, and only
once it is at least as new as the leader's heartbeats said (``seq``), so a node coming back
from a partition never acts on what it saw before. A decision of an older term first seen once
the node has settled is refused, counted and logged.

The lease: a node that has not heard (through gossip) from enough voters within LEASE_S for
a majority to be impossible elsewhere stops, within FENCE_GRACE_S, every agent the leader could
place elsewhere. The leader re-places a node's agents only after REPLACE_AFTER_S of silence,
longer than both together, so an agent does not run on two nodes at once.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from ...core.conductor import conduct
from ...core.restart import DEFAULT_MAX_RESTARTS, RestartPolicy, RestartTracker
from ...errors import MeshError
from ...spec import agent_from_wire
from ..gossiper import Directory
from ..leadership import Leadership
from .assignments import assignments, latest_assignment
from .constants import AGENTS_PREFIX, ASSIGN_PREFIX, FENCE_GRACE_S, LEASE_S, REPLACE_AFTER_S
from .instance import Instance
from .killswitch import pulled_kill_switch
from .supervisor import Supervisor

log = logging.getLogger("mesh.node")


def member_states(directory: Directory) -> dict[str, dict]:
    """Each known node's current incarnation as gossip sees it (a live one before a newer
    dead or departed one of the same name): state and wall-clock last_heard."""
    return {m["name"]: m for m in directory.current_members()}


def heard_recently(name: str, member: str, states: dict[str, dict], now: float) -> bool:
    """Whether node ``name`` has heard from ``member`` (itself, or live and heard within LEASE_S)."""
    return member == name or (member in states and states[member]["state"] in ("alive", "suspect")
                              and now - states[member]["last_heard"] < LEASE_S)


class Follower:
    def __init__(self, name: str, leadership: Leadership, directory: Directory, supervisor: Supervisor,
                 on_event: Callable[[str], None]):
        self.name = name
        self.leadership = leadership
        self.directory = directory
        self.supervisor = supervisor
        self.on_event = on_event
        self.stale_decisions = 0  #: decisions from an older term this node refused
        self.decisions_issued = 0  #: assignments this node published as leader
        self.last_decision: dict | None = None
        self.fenced = False  #: the lease is lost: this node runs nothing the leader could move
        self.ever_led_by: float | None = None  # when this node first followed (or was) a leader
        self._stale_seen: set[tuple] = set()
        self._written_assignment: dict | None = None
        self._spec_problems: dict[str, str] = {}

    @property
    def settled(self) -> bool:
        """A leader has been followed for over a second: decisions seen now are news, not history."""
        return self.ever_led_by is not None and time.monotonic() - self.ever_led_by > 1.0

    # -- every node ---------------------------------------------------------------------------

    def accepted(self) -> dict | None:
        """The assignment this node may act on now, or None.

        Fencing: only the current leader's assignment of the current term, and only once
        it is at least as new as the leader's last heartbeat said (``seq``), so a node
        coming back from a partition never acts on what it saw before."""
        lead = self.leadership
        if lead.leader is None:
            return None
        entry = self.directory.get(f"{ASSIGN_PREFIX}{lead.term}")
        if not isinstance(entry, dict) or entry.get("term") != lead.term or entry.get("leader") != lead.leader:
            return None
        seq = entry.get("seq")
        need = lead.elector.seq if lead.is_leader else lead.elector.leader_seq
        if type(seq) is not int or seq < need or not isinstance(entry.get("replicas"), dict):
            return None
        return entry

    def refuse_stale(self) -> None:
        """Log and count each decision first seen when its term was already over (fencing)."""
        term = self.leadership.term
        if self.leadership.leader is not None and self.ever_led_by is None:
            self.ever_led_by = time.monotonic()
        # Decisions already in the view while a (re)started node catches up are history, not refusals.
        settled = self.settled
        found = assignments(self.directory)
        if len(self._stale_seen) > 4 * len(found) + 64:  # forget what is no longer in view
            self._stale_seen = {m for m in self._stale_seen if m[0] in found}
        for t, entry in found.items():
            mark = (t, str(entry.get("leader")), str(entry.get("seq")))
            if mark in self._stale_seen:
                continue
            self._stale_seen.add(mark)
            if t < term and settled:
                self.stale_decisions += 1
                self.on_event(f"refused a decision of term {t} (seq {entry.get('seq')}) from {entry.get('leader')}:"
                              f" term {term} is current")

    def quorum_visible(self, states: dict[str, dict]) -> bool:
        """False when the voters this node cannot hear could form a majority without it."""
        voters = self.leadership.elector.voters
        if not voters:
            return True
        now = time.time()
        seen = sum(1 for v in voters if heard_recently(self.name, v, states, now))
        return len(voters) - seen < len(voters) // 2 + 1

    def follow(self, states: dict[str, dict], now: float) -> None:
        """Refuse stale decisions, keep the lease, and run what the accepted assignment puts here."""
        self.refuse_stale()
        instances = self.supervisor.instances
        if not self.quorum_visible(states):
            if not self.fenced:
                self.fenced = True
                if any(i.placed_by and i.movable for i in instances.values()):
                    self.on_event(f"lease lost: cannot hear enough voters ({', '.join(self.leadership.elector.voters)});"
                                  " stopping the agents the leader could place elsewhere")
            for inst in list(instances.values()):
                if inst.placed_by and inst.movable:
                    self.supervisor.retire(inst, "lease lost (this node cannot hear a majority of voters)", now,
                                           FENCE_GRACE_S)
            return
        if self.fenced:
            self.fenced = False
            if self.ever_led_by is not None:
                self.on_event("lease regained: following the leader's assignment again")
        accepted = self.accepted()
        if accepted is None or pulled_kill_switch(self.directory) is not None:
            return
        stamp = f"{accepted['leader']}@{accepted['term']}"
        mine = {r: e for r, e in accepted["replicas"].items() if isinstance(e, dict) and e.get("node") == self.name}
        for inst in list(instances.values()):
            if inst.placed_by and inst.name not in mine:
                elsewhere = accepted["replicas"].get(inst.name, {})
                where = elsewhere.get("node") if isinstance(elsewhere, dict) else None
                why = f"moved to {where}" if where else "taken off this node"
                self.supervisor.retire(inst, f"{why} by {accepted['leader']} (term {accepted['term']})", now, None)
        for replica, entry in sorted(mine.items()):
            known = instances.get(replica)
            if known is not None:
                if known.placed_by:
                    known.placed_by = stamp
                continue
            self._place(replica, entry, stamp)

    def _place(self, replica: str, entry: dict, stamp: str) -> None:
        try:
            agent, path, cwd = agent_from_wire(entry.get("spec"), f"<agent {replica} from {stamp}>")
        except MeshError as exc:
            if self._spec_problems.get(replica) != str(exc):
                self._spec_problems[replica] = str(exc)
                self.on_event(f"cannot run {replica}: {exc}")
            return
        policy = RestartPolicy(agent.restart, agent.max_restarts if agent.max_restarts is not None
                               else DEFAULT_MAX_RESTARTS[agent.restart], agent.restart_window, agent.backoff,
                               agent.backoff_max)
        home = entry.get("home")
        self.supervisor.admit(Instance(
            name=replica, spec=agent, group=str(entry.get("group") or agent.name), tracker=RestartTracker(policy),
            log_path=self.supervisor.log_path_of(replica), placed_by=stamp,
            movable=not (agent.node == self.name or (agent.placement == "local" and home == self.name)),
            import_path=path, cwd=cwd))
        self.on_event(f"{replica} placed here by {stamp.replace('@', ' (term ')})")

    # -- the leader -----------------------------------------------------------------------------

    def conduct(self, states: dict[str, dict], records: dict[str, dict]) -> None:
        """The leader's part: place every wanted agent, publish the assignment with its term."""
        lead = self.leadership
        now = time.time()
        state_of = {n: m["state"] for n, m in states.items()}
        usable = {n for n, m in states.items() if m["state"] in ("alive", "suspect") and now - m["last_heard"] < REPLACE_AFTER_S
                  and n in records and not records[n].get("stopping")}
        if not self.supervisor.stopping:
            usable.add(self.name)
        else:
            usable.discard(self.name)
        specs = {n: [a for a in r.get("agents", []) if isinstance(a, dict) and isinstance(a.get("name"), str)]
                 for n, r in records.items() if n in state_of and isinstance(r.get("agents", []), list)}
        mine = self.directory.get(f"{ASSIGN_PREFIX}{lead.term}")
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
            decision = conduct(specs, state_of, usable, previous, running, supply)
        except (KeyError, TypeError, ValueError) as exc:  # a malformed record from some node
            log.warning("cannot place agents: %s", exc)
            return
        body = {"replicas": decision["replicas"], "unplaced": decision["unplaced"], "conflicts": decision["conflicts"]}
        if body == self._written_assignment and isinstance(mine, dict) and mine.get("leader") == self.name:
            return
        for why in decision["conflicts"]:
            if not self._written_assignment or why not in self._written_assignment.get("conflicts", []):
                self.on_event(why)
        self._written_assignment = body
        seq = lead.elector.seq + 1
        self.decisions_issued += 1
        self.last_decision = {"term": lead.term, "seq": seq}
        self.directory.write(f"{ASSIGN_PREFIX}{lead.term}", {"term": lead.term, "leader": self.name, "seq": seq, **body},
                             system=True)
        lead.elector.decided()  # the next heartbeats say: act on seq or newer
        for t in assignments(self.directory):
            if t < lead.term:
                self.directory.delete(f"{ASSIGN_PREFIX}{t}", system=True)
