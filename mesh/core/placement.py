"""Placement: a pure planner from agents x nodes x capacity to an assignment.

The leader runs it whenever membership or the agent specs change. It is
deterministic (same input, same output) and sticky: a replica stays where it runs
as long as that node is alive and has room, so a returning node does not cause a
reshuffle. The one exception is spread: a second replica of one agent on a node
is placed again, so replicas spread out when nodes join or come back.

Rules, per agent (each replica placed separately, in name order):

* ``node = "x"``: only on node x.
* ``placement = "local"``: only on the agent's home node (the node whose spec
  declares it).
* ``placement = "spread"`` (default): on the live node with the most free capacity
  that does not already hold a replica of the same agent (if every node does, the
  one with the most room); among equals, the node with the fewest replicas placed,
  then the agent's home node.
* ``placement = "pack"``: on the live node with the least free capacity that
  still fits (fill nodes one by one).

A node never gets more than its capacity: a replica that fits nowhere is left
unplaced with a reason naming the agent and what it needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PLACEMENTS = ("spread", "pack", "local")


@dataclass(frozen=True)
class AgentDemand:
    name: str  #: the agent's name (replicas are NAME, or NAME.0 .. NAME.N-1)
    home: str  #: the node whose spec declares it
    replicas: int = 1
    placement: str = "spread"  #: one of PLACEMENTS
    node: str | None = None  #: pinned to this node
    cpu: float = 0.0  #: cores
    memory: int = 0  #: bytes

    def replica_names(self) -> list[str]:
        return [self.name] if self.replicas == 1 else [f"{self.name}.{i}" for i in range(self.replicas)]


@dataclass(frozen=True)
class NodeSupply:
    name: str
    alive: bool = True
    cpu: float = float("inf")  #: cores
    memory: float = float("inf")  #: bytes


@dataclass
class Plan:
    assignment: dict[str, str] = field(default_factory=dict)  #: replica -> node
    unplaced: dict[str, str] = field(default_factory=dict)  #: replica -> why
    moves: list[str] = field(default_factory=list)  #: replicas whose node changed


def plan(agents: list[AgentDemand], nodes: list[NodeSupply], current: dict[str, str] | None = None) -> Plan:
    current = current or {}
    live = {n.name: n for n in nodes if n.alive}
    free_cpu = {n: s.cpu for n, s in live.items()}
    free_mem = {n: s.memory for n, s in live.items()}
    count = {n: 0 for n in live}
    result = Plan()

    def fits(node: str, a: AgentDemand) -> bool:
        return free_cpu[node] >= a.cpu and free_mem[node] >= a.memory

    def take(replica: str, node: str, a: AgentDemand) -> None:
        result.assignment[replica] = node
        free_cpu[node] -= a.cpu
        free_mem[node] -= a.memory
        count[node] += 1
        if current.get(replica) not in (None, node):
            result.moves.append(replica)

    ordered = sorted(agents, key=lambda a: a.name)
    # Pass 1, stickiness: what runs on a live node with room stays there (for spread, one
    # replica of an agent per node: a second one there is placed again, maybe elsewhere).
    for a in ordered:
        kept: set[str] = set()
        for replica in a.replica_names():
            node = current.get(replica)
            if node in live and _allowed(a, node) and fits(node, a):
                if a.placement == "spread" and a.node is None and node in kept:
                    continue
                kept.add(node)
                take(replica, node, a)
    # Pass 2: everything else, by the agent's rule.
    for a in ordered:
        for replica in a.replica_names():
            if replica in result.assignment:
                continue
            candidates = sorted(n for n in live if _allowed(a, n) and fits(n, a))
            if not candidates:
                result.unplaced[replica] = _why(a, live)
                continue
            if a.placement == "pack":
                node = min(candidates, key=lambda n: (free_cpu[n], free_mem[n], n))
            else:
                holding = {result.assignment[r] for r in a.replica_names() if r in result.assignment}
                node = min(candidates, key=lambda n: (n in holding, -free_cpu[n], -free_mem[n], count[n], n != a.home, n))
            take(replica, node, a)
    return result


def _allowed(a: AgentDemand, node: str) -> bool:
    if a.node is not None:
        return node == a.node
    if a.placement == "local":
        return node == a.home
    return True


def _why(a: AgentDemand, live: dict[str, NodeSupply]) -> str:
    if a.node is not None and a.node not in live:
        return f"agent {a.name!r} is pinned to node {a.node!r}, which is not alive"
    if a.placement == "local" and a.home not in live:
        return f"agent {a.name!r} is local to node {a.home!r}, which is not alive"
    if not live:
        return f"agent {a.name!r}: no node is alive"
    return f"agent {a.name!r} (cpu {a.cpu:g}, memory {a.memory} B) fits on no live node"
