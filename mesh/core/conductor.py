"""The conductor: what the leader decides about agents, as a pure function.

Inputs, all from the leader's view of the gossiped state:

* ``specs``: for each node whose spec is known, the agents it declares (dicts in
  the form :func:`mesh.spec.agent_to_wire` makes; each has ``name``, ``replicas``,
  ``placement``, ``node``, ``cpu``, ``memory``).
* ``states``: each known node's membership state: ``alive``, ``suspect``, ``dead``
  or ``left``; and ``usable``: the nodes agents may be placed on now (alive, and
  heard from recently: see the runtime's lease rule).
* ``previous``: the replicas of the latest assignment the leader knows
  (``{replica: {"node", "group", "home", "spec"}}``), and ``running``: where each
  replica runs now according to the agent directory (``{replica: node}``).

Rules:

* An agent group is wanted while its home node (the node whose spec declares it)
  has not left. A home that died keeps its agents wanted, so they are re-placed; a
  home that left with ``mesh down`` takes them away. A group in ``previous`` whose
  home's spec is not in view (a leader that just took over) is carried over as is.
* Two homes declaring the same name: the lowest home name keeps it, the other
  replicas are unplaced with the reason.
* Placement by :func:`mesh.core.placement.plan`, sticky to where replicas run.
* A replica that must move away from a node that is still usable is first taken
  off that node (``node`` None, ``draining`` set) and placed elsewhere only once
  the directory no longer shows it there: at most one instance runs at a time.
* A leader new in its term first waits for the members it already knows
  (``waiting``, from :func:`awaited`: alive in its view, with a node record, not yet
  acted on a decision of this term), for at most ``SETTLE_S``: meanwhile it moves
  nothing. Every replica whose previous entry names a node that is usable or waited
  for keeps that entry; only replicas placed nowhere, or on a node it no longer
  counts on, are placed. So a leader that took over with a partial view (a record or
  a directory not in yet, a node heard late) does not shuffle agents it would put back
  a second later, and a member that never catches up (dead, cut off) holds nothing
  up for longer than ``SETTLE_S``.
* A first node's leader (a node started without seeds announces itself at once) first
  ``gathering``: for the join wait it places only what can run on one node alone (``local``,
  pinned) and keeps what already has a usable node (in ``previous`` or running); a replica
  that could go anywhere and has none yet waits (left out of the decision), so the nodes
  started with it have joined before spread agents are placed.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from .placement import AgentDemand, NodeSupply, plan

#: Seconds a leader new in its term waits, at most, for the members it knows before it moves
#: anything (as long as a node's silence before the leader re-places its replicas: REPLACE_AFTER_S).
SETTLE_S = 3.0


def awaited(known: Collection[str], acted: Mapping[str, object], term: int, led_for: float,
            settle: float = SETTLE_S) -> frozenset[str]:
    """The members a leader ``led_for`` seconds into ``term`` still waits for before it moves
    anything: of ``known`` (alive in its view, with a node record; the leader itself left out),
    those whose ``acted[N]`` (the ``(term, seq)`` N last acted on) is not of ``term``; none
    once ``settle`` seconds have passed."""
    if led_for >= settle:
        return frozenset()
    return frozenset(n for n in known if not _of_term(acted.get(n), term))


def _of_term(done: object, term: int) -> bool:
    return isinstance(done, (tuple, list)) and len(done) == 2 and done[0] == term


def conduct(specs: dict[str, list[dict[str, Any]]], states: dict[str, str], usable: set[str], previous: dict[str, Any],
            running: dict[str, str], supply: dict[str, tuple[float, float]] | None = None,
            waiting: Collection[str] = (), gathering: bool = False) -> dict[str, Any]:
    """Return ``{"replicas": {replica: entry}, "unplaced": {replica: why}, "conflicts": [why]}``.

    ``waiting``: the members a new leader still waits for (:func:`awaited`): while there are
    any, nothing moves; ``gathering``: a first node's leader still gathers (see the module note).
    ``previous`` holds gossiped values as they came (Any): a malformed one
    raises KeyError, TypeError or ValueError, which the caller takes for a malformed record."""
    supply = supply or {}
    groups: dict[str, tuple[str, dict[str, Any]]] = {}  # group -> (home, agent spec)
    unplaced: dict[str, str] = {}
    conflicts: list[str] = []
    for home in sorted(specs):
        if states.get(home) == "left":
            continue
        for agent in specs[home]:
            name = agent["name"]
            if name in groups:
                conflicts.append(f"agent {name!r} is declared by nodes {groups[name][0]!r} and {home!r}:"
                                 f" {groups[name][0]!r} keeps it")
                continue
            groups[name] = (home, agent)
    for entry in previous.values():
        group, home = entry.get("group"), entry.get("home")
        if group in groups or home in specs or states.get(home) == "left":
            continue
        groups[group] = (home, entry["spec"])

    demands = [
        AgentDemand(name, home=home, replicas=agent.get("replicas", 1), placement=agent.get("placement", "spread"),
                    node=agent.get("node"), cpu=float(agent.get("cpu", 0.0)), memory=int(agent.get("memory", 0)))
        for name, (home, agent) in groups.items()
    ]
    nodes = [NodeSupply(n, alive=n in usable, cpu=supply.get(n, (float("inf"), float("inf")))[0],
                        memory=supply.get(n, (float("inf"), float("inf")))[1])
             for n in sorted(set(states) | set(usable))]
    current: dict[str, str] = {}
    for r, entry in previous.items():
        if entry.get("node") in usable:
            current[r] = entry["node"]
    for r, at in running.items():
        if at in usable:
            current.setdefault(r, at)
    p = plan(demands, nodes, current)
    stay: dict[str, str] = {}
    if waiting:  # settling: what has a node the leader counts on keeps it
        for r, entry in previous.items():
            node = entry.get("node")
            if node is not None and (node in usable or node in waiting):
                stay[r] = node

    replicas: dict[str, dict[str, Any]] = {}
    for name, (home, agent) in groups.items():
        anywhere = agent.get("node") is None and agent.get("placement", "spread") != "local"
        for r in _replica_names(agent):
            if gathering and anywhere and r not in current:
                continue  # placed once the nodes started with the leader's have joined
            node = stay.get(r) or p.assignment.get(r)
            placed: dict[str, Any] = {"node": node, "group": name, "home": home, "spec": agent}
            where = running.get(r)
            if where is not None and where in usable and where != node:
                placed["node"] = None  # drain first: it still runs on a node we can reach
                placed["draining"] = where
            elif node is None:
                unplaced[r] = p.unplaced.get(r, "not placed")
            replicas[r] = placed
    return {"replicas": replicas, "unplaced": unplaced, "conflicts": conflicts}


def _replica_names(agent: dict[str, Any]) -> list[str]:
    n = agent.get("replicas", 1)
    return [agent["name"]] if n == 1 else [f"{agent['name']}.{i}" for i in range(n)]
