"""The registry and the directory: which actors run where, and how to reach them; and the
node's own record (``$node/NAME``: its agents, capacity and load, for the leader).

Agents (and embedded actors) register with their node: their endpoint, pid and the largest
frame they take; they send heartbeats, and unregister when they stop. The node publishes what
runs here as ``$agents/NAME`` in the shared state (the directory), so any node resolves any name
locally: to an endpoint, to a state to wait out (starting, restarting, placed but not started),
or to an ActorNotFound that says why.

A replica group's name (``worker`` for ``worker.0``..``worker.N-1``) resolves to one running
replica; ``group`` lists them all (local and remote, by name), so that a client spreads its
messages over the group (see :mod:`mesh.runtime.ref`). Each running actor's cancel address (where
askers send cancels, :mod:`mesh.runtime.cancels`) travels with its endpoint.
"""

from __future__ import annotations

import random
from typing import Callable

from ...errors import ActorNotFound, NameConflict, WireError
from ...spec import NodeSpec, agent_to_wire
from ..clock import REAL_CLOCK, Clock
from ..gossiper import Directory
from ..leadership import NODE_PREFIX
from .assignments import latest_assignment, placement_state
from .constants import AGENTS_PREFIX, EMBEDDED_TTL_S
from .instance import VERSION, Instance, budget_of, changed
from .supervisor import Supervisor


#: The longest the node goes without rewriting its agents' entries from scratch, in seconds (it
#: rewrites them whenever one of its instances changed).
PUBLISH_ALL_S = 5.0


class Registry:
    def __init__(self, spec: NodeSpec, address: str, directory: Directory, supervisor: Supervisor,
                 on_event: Callable[[str], None], *, clock: Clock = REAL_CLOCK):
        self.spec = spec
        self.name = spec.name
        self.address = address  # the address other nodes reach this one at
        self.directory = directory
        self.supervisor = supervisor
        self.instances = supervisor.instances
        self.on_event = on_event
        self.clock = clock  # heartbeats' ages, as the loop's expire_embedded reads them
        self._published: dict[str, dict] = {}  # what this node last wrote under $agents/
        self._record: dict | None = None  # what this node last wrote as $node/NAME
        self.broadcast: str | None = None  # where subscribers reach this node's forwarder (set once bound)
        self.cancel_at: dict[str, str] = {}  # an actor's endpoint -> its cancel address (see the module note)
        self._seen: tuple[int, bool] | None = None  # the instances' version and stopping at the last publish
        self._publish_all_at = 0.0

    # -- control ops (their fields are checked by the op table) ----------------------------------

    def register(self, body: dict) -> dict:
        name, endpoint, pid = body["name"], body["endpoint"], body["pid"]
        inst = self.instances.get(name)
        now = self.clock.monotonic()
        if body.get("supervised"):
            if inst is None or inst.embedded or self.supervisor.pid_of(inst) != pid:  # pid_of: a fork's, read now
                raise WireError(f"no agent {name!r} with pid {pid} was started by node {self.name}")
        else:
            group = self.supervisor.replicas_of(name)
            if group and group != [name]:
                raise NameConflict(f"name {name!r} is taken by a replica group of node {self.name}: serve under another name")
            if inst is not None and not inst.embedded:
                raise NameConflict(f"name {name!r} is taken by an agent of node {self.name}: serve under another name")
            if inst is not None and inst.state == "running" and inst.pid != pid and now - inst.last_heard < EMBEDDED_TTL_S:
                raise NameConflict(f"name {name!r} is taken by a live actor in pid {inst.pid}: serve under another name, "
                                   "or stop that one first")
            if inst is None:
                inst = self.instances[name] = Instance(name=name, spec=None, group=name)
            inst.pid = pid
        inst.incarnation += 1
        inst.endpoint = endpoint
        cancel = body.get("cancel")
        if isinstance(cancel, str) and cancel:
            self.cancel_at[endpoint] = cancel
        limit = body.get("max_frame")
        inst.max_frame = limit if type(limit) is int and limit > 0 else None
        inst.hears_intentions = body.get("intentions") is True
        inst.state = "running"
        inst.last_heard = now
        inst.messages = 0
        inst.metrics.answering(now, fresh=not inst.embedded)
        self.on_event(f"{name} running (pid {pid}, incarnation {inst.incarnation}{', embedded' if inst.embedded else ''})")
        return {"incarnation": inst.incarnation, "node": self.name}

    def unregister(self, body: dict) -> dict:
        name = body["name"]
        inst = self.instances.get(name)
        if inst is not None and inst.endpoint == body.get("endpoint"):
            self.cancel_at.pop(inst.endpoint or "", None)
            inst.endpoint = None
            if inst.embedded:
                del self.instances[name]
                changed()
                self.on_event(f"{name} left (embedded)")
        return {}

    def heartbeat(self, body: dict) -> dict:
        inst = self.instances.get(body["name"])
        if inst is None or inst.endpoint != body.get("endpoint"):
            return {"known": False}
        inst.last_heard = self.clock.monotonic()
        inst.messages = body["messages"]
        inst.bad_frames = int(body.get("bad_frames") or 0)
        inst.metrics.heard(inst.last_heard, inst.messages, body.get("usage"))
        lease = self.supervisor.lease_of(inst, _deadline(body))
        return {"known": True} if lease is None else {"known": True, "lease_s": max(0.0, lease)}

    def lease(self, body: dict) -> dict:
        """An agent this node started, whose first deadline came (or nearly) before it could run its
        actor, asks for a new one: ``lease_s`` (0.0: stop; absent: none needed), given only if the
        lease held through the deadline it was given (``until``)."""
        inst = self.instances.get(body["name"])
        if inst is None or self.supervisor.pid_of(inst) != body["pid"]:
            return {"known": False, "lease_s": 0.0}
        lease = self.supervisor.lease_of(inst, _deadline(body))
        return {"known": True} if lease is None else {"known": True, "lease_s": max(0.0, lease)}

    def resolve(self, body: dict) -> dict:
        name = body["name"]
        inst = self.instances.get(name)
        group = self.supervisor.replicas_of(name) if inst is None else []
        if group:
            running = [self.instances[n] for n in group if self.instances[n].state == "running"]
            inst = random.choice(running) if running else None
        if inst is None:
            replicas = [r for r, e in latest_assignment(self.directory).items() if e.get("group") == name and r != name]
            if replicas:  # a replica group placed on other nodes: any running replica will do
                entries = [self.remote_agent(r) for r in replicas]
                found = [(r, e) for r, e in zip(replicas, entries, strict=True) if e and isinstance(e.get("endpoint"), str)]
                if found:
                    r, e = random.choice(found)
                    return self._reach(r, e)
                if group:
                    return {"state": self.instances[group[0]].state}
                return {"state": "starting"}
            if group:
                inst = self.instances[group[0]]
        if inst is None:
            remote = self.remote_agent(name)
            if remote is not None and isinstance(remote.get("endpoint"), str):
                return self._reach(name, remote)
            if remote is not None and remote.get("state") in ("starting", "restarting", "running"):
                # "running" with no endpoint: it unregistered (stopping, or moving) and its node has not
                # reaped it yet. The asker waits for what comes next, as for a restart.
                return {"state": remote["state"], "node": remote.get("node")}
            if remote is not None:
                why = f": {remote['reason']}" if remote.get("reason") else ""
                raise ActorNotFound(f"actor {name!r} on node {remote.get('node')} is {remote.get('state')}{why}")
            waiting = placement_state(self.directory, self.spec, name)
            if waiting is not None:
                return {"state": waiting}
            raise ActorNotFound(f"no actor named {name!r} in the mesh (asked node {self.name})")
        if inst.state == "running" and inst.endpoint:
            return self._here(inst)
        if inst.state in ("failed", "stopped"):
            raise ActorNotFound(f"actor {name!r} is {inst.state}{': ' + inst.reason if inst.reason else ''}")
        return {"state": inst.state}

    def _here(self, inst: Instance) -> dict:
        """How to reach an actor running on this node."""
        answer = {"endpoint": inst.endpoint, "incarnation": inst.incarnation, "state": "running", "name": inst.name,
                  "max_frame": inst.max_frame or self.spec.max_message}
        cancel = self.cancel_at.get(inst.endpoint or "")
        if cancel:
            answer["cancel"] = cancel
        return answer

    def _reach(self, name: str, entry: dict) -> dict:
        """How to reach an actor running on another node, from its directory entry."""
        answer = {"endpoint": entry["endpoint"], "incarnation": entry.get("incarnation", 0), "state": "running",
                  "name": name, "node": entry.get("node"), "max_frame": entry.get("max_frame") or self.spec.max_message}
        if isinstance(entry.get("cancel"), str):
            answer["cancel"] = entry["cancel"]
        return answer

    def group(self, body: dict) -> dict:
        """The running replicas of group ``name``, here and on other live nodes, ordered by name:
        ``members``, each ``{name, endpoint, max_frame[, cancel]}``. None: not a group, or none runs."""
        name = body["name"]
        members = {}
        if name not in self.instances:
            for replica in self.supervisor.replicas_of(name):
                inst = self.instances[replica]
                if replica != name and inst.state == "running" and inst.endpoint:
                    members[replica] = self._here(inst)
            for replica, entry in latest_assignment(self.directory).items():
                if entry.get("group") == name and replica != name and replica not in members:
                    remote = self.remote_agent(replica)
                    if remote is not None and isinstance(remote.get("endpoint"), str):
                        members[replica] = self._reach(replica, remote)
        keep = ("name", "endpoint", "max_frame", "cancel")
        return {"members": [{k: m[k] for k in keep if k in m} for _, m in sorted(members.items())]}

    # -- the directory --------------------------------------------------------------------------

    def remote_agent(self, name: str) -> dict | None:
        """The directory entry of ``name`` if a live node other than this one lists it."""
        entry = self.directory.get(AGENTS_PREFIX + name)
        if isinstance(entry, dict) and entry.get("node") != self.name:
            if self.directory.is_live(entry.get("node")):
                return entry
        return None

    def publish(self) -> None:
        """Keep ``$agents/NAME`` in the shared state in step with what runs here: when an instance
        changed (:data:`~.instance.VERSION`), and at least every PUBLISH_ALL_S."""
        now = self.clock.monotonic()
        seen = (VERSION[0], self.supervisor.stopping)
        if seen == self._seen and now < self._publish_all_at:
            return
        self._seen, self._publish_all_at = seen, now + PUBLISH_ALL_S
        want = {}
        if not self.supervisor.stopping:
            for inst in self.instances.values():
                if inst.state == "running" and inst.endpoint:
                    want[inst.name] = {"node": self.name, "endpoint": inst.endpoint, "incarnation": inst.incarnation,
                                       "pid": inst.pid, "max_frame": inst.max_frame or self.spec.max_message,
                                       "state": "running", "budget": budget_of(inst.spec),
                                       "intentions": inst.hears_intentions}
                    if inst.endpoint in self.cancel_at:
                        want[inst.name]["cancel"] = self.cancel_at[inst.endpoint]
                elif not inst.embedded:
                    # Not reachable right now, but ours: senders elsewhere wait for a restart,
                    # and learn why when it has failed.
                    want[inst.name] = {"node": self.name, "endpoint": None, "state": inst.state,
                                       "reason": inst.reason}
        live = {e["endpoint"] for e in want.values() if e.get("endpoint")}
        for endpoint in [e for e in self.cancel_at if e not in live]:  # processes gone without a word
            del self.cancel_at[endpoint]
        for name, entry in want.items():
            if self._published.get(name) != entry:
                self.directory.write(AGENTS_PREFIX + name, entry, system=True)
        for name in list(self._published):
            if name not in want:
                self.directory.delete(AGENTS_PREFIX + name, system=True)
        self._published = want

    def publish_record(self) -> None:
        """``$node/NAME``: whether this node votes, the agents its spec declares, its pools and
        limits, its capacity and load (for the leader). Rewritten only when it changes."""
        cpu, memory = self.spec.capacity()
        used_cpu, used_memory = self.supervisor.enforcer.load()
        record = {"voter": self.spec.voter, "address": self.address,
                  "agents": [agent_to_wire(a, self.spec) for a in self.spec.agents],
                  "pools": [list(p) for p in self.spec.pools], "limits": [list(x) for x in self.spec.limits],
                  "capacity": {"cpu": cpu, "memory": memory},
                  "load": {"cpu": round(used_cpu, 1), "memory": used_memory // 10_000_000 * 10_000_000},
                  "stopping": self.supervisor.stopping, "broadcast": self.broadcast}
        if record != self._record:
            self._record = record
            self.directory.write(NODE_PREFIX + self.name, record, system=True)


def _deadline(body: dict) -> float | None:
    """The deadline an agent says it holds (``until``, monotonic seconds), if it says one."""
    until = body.get("until")
    return float(until) if isinstance(until, (int, float)) and not isinstance(until, bool) else None
