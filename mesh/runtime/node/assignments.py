"""Reading the leaders' assignments (``$assign/TERM``) from the shared state: which replica
runs on which node, as each term's leader decided it; and whether what one asks this node
to run was declared.

Declared means: the agent's name, class, import path and folder are those of an agent in this
node's own spec, or in the ``$node/NAME`` record of a member NAME that this node has heard first
hand (NAME's own gossip showed a heartbeat this node sent) or that is one of its voters. Only NAME
writes ``$node/NAME`` (:mod:`mesh.core.ownership`), and a round trip is more than a forged record:
an assignment, forged or not, cannot make a node import a class from a path nobody declared.
"""

from __future__ import annotations

from collections.abc import Collection

from ...spec import NodeSpec, agent_to_wire
from ..gossiper import Directory
from ..leadership import NODE_PREFIX
from .constants import ASSIGN_PREFIX

#: What an agent's code is: a class, and where its module is imported from.
_CODE_FIELDS = ("name", "class", "path", "cwd")


def compact(body: dict) -> dict:
    """An assignment as written to the shared state: each agent group's spec once, under ``specs``,
    not in each of its replicas' entries (1,000 replicas of one agent: 334 KB -> 60 KB, under
    gossip's value limit). Entries whose spec differs from their group's keep their own."""
    replicas = body.get("replicas")
    if not isinstance(replicas, dict):
        return body
    specs: dict[str, object] = {}
    slim: dict[str, object] = {}
    for replica, entry in replicas.items():
        group = entry.get("group") if isinstance(entry, dict) else None
        if not isinstance(group, str) or "spec" not in entry:
            slim[replica] = entry
            continue
        spec = entry["spec"]
        known = specs.setdefault(group, spec)
        slim[replica] = {k: v for k, v in entry.items() if k != "spec"} if known == spec else entry
    return {**body, "replicas": slim, "specs": specs}


def expand(value: dict) -> dict:
    """An assignment as read: every replica's entry with its spec (see :func:`compact`). Untrusted:
    a ``specs`` that is not a map of group to spec adds nothing (the entry stays without one, which
    the node refuses to run, saying so)."""
    specs = value.get("specs")
    replicas = value.get("replicas")
    if not isinstance(specs, dict) or not isinstance(replicas, dict):
        return value
    full: dict[str, object] = {}
    for replica, entry in replicas.items():
        group = entry.get("group") if isinstance(entry, dict) else None
        if isinstance(group, str) and group in specs and "spec" not in entry:
            entry = {**entry, "spec": specs[group]}
        full[replica] = entry
    return {k: v for k, v in value.items() if k != "specs"} | {"replicas": full}


_expanded: dict[str, tuple[dict, dict]] = {}  # key -> (the value read, its expansion): values are replaced, never changed


def assignments(directory: Directory) -> dict[int, dict]:
    """Every well-formed assignment in view, by term (expanded: see :func:`compact`)."""
    out = {}
    for key, value in directory.items(ASSIGN_PREFIX).items():
        term = key[len(ASSIGN_PREFIX):]
        if term.isdigit() and isinstance(value, dict) and isinstance(value.get("replicas"), dict):
            cached = _expanded.get(key)
            if cached is None or cached[0] is not value:
                cached = _expanded[key] = (value, expand(value))
            out[int(term)] = cached[1]
    for key in [k for k in _expanded if k[len(ASSIGN_PREFIX):].isdigit() and int(k[len(ASSIGN_PREFIX):]) not in out]:
        del _expanded[key]
    return out


def latest_assignment(directory: Directory) -> dict[str, dict]:
    """The replicas of the newest assignment in view (for status and name lookups)."""
    found = assignments(directory)
    if not found:
        return {}
    return {r: e for r, e in found[max(found)]["replicas"].items() if isinstance(e, dict)}


def placement_state(directory: Directory, spec: NodeSpec, name: str) -> str | None:
    """For a name this node does not run: waiting / assigned / unplaced, or None if unknown."""
    latest = latest_assignment(directory)
    if name in latest:
        return "assigned" if latest[name].get("node") else "waiting"
    for a in spec.agents:
        if name == a.name or name in a.instance_names():
            return "waiting"
    return None


def _code_of(agent: object) -> tuple | None:
    return tuple(repr(agent.get(f)) for f in _CODE_FIELDS) if isinstance(agent, dict) else None


def undeclared(directory: Directory, spec: NodeSpec, agent: dict, voters: Collection[str]) -> str | None:
    """Why this node must not run ``agent`` (an agent spec as gossiped), or None if a spec declared
    it (see the module note)."""
    code = _code_of(agent)
    if any(_code_of(agent_to_wire(a, spec)) == code for a in spec.agents):
        return None
    heard = directory.heartbeats_seen()
    for name in sorted(set(heard) | set(voters)):
        record = directory.get(NODE_PREFIX + name) if name != spec.name else None
        listed = record.get("agents") if isinstance(record, dict) else None
        if isinstance(listed, list) and any(_code_of(a) == code for a in listed):
            return None
    return (f"no spec in the mesh declares agent {str(agent.get('name'))[:100]!r} with class"
            f" {str(agent.get('class'))[:200]!r} from {str(agent.get('path'))[:300]}: not started")
