"""A person stops or restarts one agent (`mesh stop`, `mesh restart`): the control ops
``agent_stop``, ``agent_restart`` and ``agent_info``.

Any node takes the request. The node that runs the agent acts on it (its supervisor ends the
process: SIGTERM, then SIGKILL after the grace). Another node answers where the agent runs
(``elsewhere``: that node's name and address, from the directory, else the leader's assignment),
and the asker sends the request there once, marked ``forwarded`` so it never goes round
(:func:`mesh.runtime.rpc.agent_stop`). So a node never relays for another, and the answer comes
from the node that acted.

A stopped agent stays stopped on its node, placed there as before: the leader's placement is
sticky and the node does not start it again, whatever its restart policy, until ``mesh restart``
(or until that node restarts, or the leader moves the agent to another node because its node
died or left: the stop is held by the node, not by the mesh).
"""

from __future__ import annotations

from ...errors import ActorNotFound, WireError
from ..clock import REAL_CLOCK, Clock
from ..gossiper import Directory
from ..leadership import NODE_PREFIX
from .assignments import latest_assignment
from .constants import AGENTS_PREFIX
from .instance import Instance
from .killswitch import pulled_kill_switch
from .supervisor import Supervisor


class AgentOps:
    def __init__(self, name: str, directory: Directory, supervisor: Supervisor, *, clock: Clock = REAL_CLOCK):
        self.name = name
        self.directory = directory
        self.supervisor = supervisor
        self.clock = clock

    # -- control ops (field ``name`` checked by the op table; ``grace`` too, if given) ----------

    def stop(self, body: dict) -> dict:
        found = self._locate(body)
        if not isinstance(found, Instance):
            return found
        if found.retiring:
            raise WireError(f"agent {found.name!r} is already stopping on node {self.name}: {found.retiring}")
        self.supervisor.stop_by_person(found, f"stopped by {_who(body)}", self.clock.monotonic(), body.get("grace"))
        return self.describe(found)

    def restart(self, body: dict) -> dict:
        found = self._locate(body)
        if not isinstance(found, Instance):
            return found
        pulled = pulled_kill_switch(self.directory)
        if pulled is not None:
            raise WireError(f"the kill switch is pulled (by {pulled.get('by')}): nothing starts until"
                            " `mesh kill --release`")
        if self.supervisor.stopping:
            raise WireError(f"node {self.name} is stopping: it starts nothing")
        if found.retiring:
            raise WireError(f"agent {found.name!r} is stopping on node {self.name}: {found.retiring}")
        self.supervisor.restart_by_person(found, f"restarted by {_who(body)}", self.clock.monotonic(), body.get("grace"))
        return self.describe(found)

    def info(self, body: dict) -> dict:
        """Where one agent of this node stands now (what a stop or restart waits on)."""
        inst = self.supervisor.instances.get(body["name"])
        if inst is None or inst.embedded:
            raise ActorNotFound(f"no agent named {body['name']!r} on node {self.name}")
        return self.describe(inst)

    def describe(self, inst: Instance) -> dict:
        return {"name": inst.name, "node": self.name, "state": inst.state, "pid": inst.pid,
                "incarnation": max(inst.incarnation, 0), "reason": inst.reason}

    # -- where the agent runs -------------------------------------------------------------------

    def _locate(self, body: dict) -> Instance | dict:
        """The instance if this node runs the agent; else where it runs ({elsewhere, address})."""
        name = body["name"]
        inst = self.supervisor.instances.get(name)
        if inst is not None and inst.embedded:
            raise WireError(f"{name!r} is an actor embedded in pid {inst.pid} (mesh.serve), not an agent of a node:"
                            " its own process stops it")
        if inst is not None:
            return inst
        latest = latest_assignment(self.directory)
        replicas = sorted(set(self.supervisor.replicas_of(name))
                          | {r for r, e in latest.items() if e.get("group") == name and r != name})
        if replicas:
            raise WireError(f"{name!r} is a replica group ({', '.join(replicas)}): stop or restart its replicas"
                            " one by one")
        where = None
        listed = self.directory.get(AGENTS_PREFIX + name)
        if isinstance(listed, dict) and isinstance(listed.get("node"), str) and self.directory.is_live(listed["node"]):
            where = listed["node"]
        elif isinstance(latest.get(name), dict) and isinstance(latest[name].get("node"), str):
            where = latest[name]["node"]
        if where is None or where == self.name:
            raise ActorNotFound(f"no agent named {name!r} runs in the mesh (asked node {self.name})")
        if body.get("forwarded"):
            raise ActorNotFound(f"agent {name!r} is not on node {self.name} (the directory says {where}); try again")
        record = self.directory.get(NODE_PREFIX + where)
        address = record.get("address") if isinstance(record, dict) else None
        if not isinstance(address, str):
            raise ActorNotFound(f"agent {name!r} runs on node {where}, whose address is not known here")
        return {"elsewhere": where, "address": address}


def _who(body: dict) -> str:
    return str(body.get("by") or "a person")[:200]
