"""Placement: a pure planner from agents x nodes x capacity to an assignment.

The leader runs it whenever membership or the agent specs change. It is
deterministic (same input, same output) and sticky: a replica stays where it runs
as long as that node is alive and has room, so a returning node does not cause a
reshuffle. The one exception is spread: a second replica of one agent on a node
is placed again, so replicas spread out when nodes join or come back.

Rules, per agent (each replica placed separately, in index order). Agents are taken
in turns by home node: each home's first agent by name (homes by name), then each
home's second, and so on; what was placed before counts in every choice after it.

* ``node = "x"``: only on node x.
* ``placement = "local"``: only on the agent's home node (the node whose spec
  declares it).
* ``placement = "spread"`` (default): spread balances counts. Among the live nodes
  with room for it: the one with the fewest replicas of this agent, then the fewest
  replicas placed overall (of any agent), then the agent's home node, then the most
  free capacity (cpu, then memory), then the first by name. Placed afresh on nodes
  that are alike (room for everything, nothing pinned), the counts per node differ
  by at most one, and agents taken in turns by home (below) stay home when that
  keeps the counts even: 16 nodes declaring 5 agents each run their own 5.

* ``placement = "pack"``: on the live node with the least free capacity that
  still fits (fill nodes one by one).

A node never gets more than its capacity: a replica that fits nowhere is left
unplaced with a reason naming the agent and what it needs.

Cost: O(R log N) for R replicas on N live nodes when agents are spread one replica
each (the common case), O(N + k log N) for an agent with k replicas to place. One heap
holds every node by load (replicas, then free capacity), an entry added each time a
node takes a replica and stale ones skipped, so a spread agent with nothing placed yet
takes its top (or its home node, on equal load). Any other agent gets a heap of its
own candidates keyed by its rule; a placement changes only the chosen node's key, so
that node goes back in with its new key, and a node that no longer fits the agent
leaves the heap for good (free capacity only shrinks during a plan).
"""

from __future__ import annotations

import heapq
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
    count = dict.fromkeys(live, 0)
    result = Plan()
    assignment = result.assignment

    def fits(node: str, a: AgentDemand) -> bool:
        return free_cpu[node] >= a.cpu and free_mem[node] >= a.memory

    loads: list[tuple[int, float, float, str, int]] = []  # pass 2: every live node by load, stale entries too
    stamp = dict.fromkeys(live, 0)  # how many times each node was taken: its entry in loads with this is current

    def take(replica: str, node: str, a: AgentDemand) -> None:
        assignment[replica] = node
        free_cpu[node] -= a.cpu
        free_mem[node] -= a.memory
        count[node] += 1
        stamp[node] += 1
        if loads:
            heapq.heappush(loads, (count[node], -free_cpu[node], -free_mem[node], node, stamp[node]))
        if current.get(replica) not in (None, node):
            result.moves.append(replica)

    def lightest(a: AgentDemand) -> str | None:
        """For a spread replica whose agent has none placed yet: the node the rule picks, from loads."""
        aside, best = [], None
        while loads:
            _, _, _, n, at = loads[0]
            if at != stamp[n]:
                heapq.heappop(loads)  # stale: the node has a newer entry
            elif fits(n, a):
                best = n
                break
            else:
                aside.append(heapq.heappop(loads))  # too small for this agent, not for others
        for entry in aside:
            heapq.heappush(loads, entry)
        h = a.home
        if h in live and fits(h, a) and (best is None or count[h] <= count[best]):
            return h  # on equal counts the home node comes first
        return best

    ordered = in_turns(agents)
    names = {a.name: a.replica_names() for a in ordered}
    held: dict[str, dict[str, int]] = {a.name: {} for a in ordered}  # agent -> node -> its replicas there
    # Pass 1, stickiness: what runs on a live node with room stays there (for spread, one
    # replica of an agent per node: a second one there is placed again, maybe elsewhere).
    for a in ordered:
        holding = held[a.name]
        once = a.placement == "spread" and a.node is None
        for replica in names[a.name]:
            node = current.get(replica)
            if node in live and _allowed(a, node) and fits(node, a):
                if once and node in holding:
                    continue
                holding[node] = holding.get(node, 0) + 1
                take(replica, node, a)
    # Pass 2: everything else, by the agent's rule.
    everywhere = sorted(live)
    loads.extend((count[n], -free_cpu[n], -free_mem[n], n, stamp[n]) for n in everywhere)
    heapq.heapify(loads)
    for a in ordered:
        waiting = [r for r in names[a.name] if r not in assignment]
        if not waiting:
            continue
        only = a.node if a.node is not None else a.home if a.placement == "local" else None
        holding = held[a.name]
        pack = a.placement == "pack"
        if not pack and only is None and not holding and len(waiting) == 1:  # the common case, in O(log N)
            node = lightest(a)
            if node is None:
                result.unplaced[waiting[0]] = _why(a, live)
            else:
                take(waiting[0], node, a)
            continue
        candidates = everywhere if only is None else [only] if only in live else []
        heap = [(_rank(n, a, pack, holding, count, free_cpu, free_mem), n) for n in candidates if fits(n, a)]
        heapq.heapify(heap)
        for replica in waiting:
            node = None
            while heap:
                n = heap[0][1]
                if fits(n, a):
                    node = n
                    break
                heapq.heappop(heap)  # it will not fit this agent again in this plan
            if node is None:
                result.unplaced[replica] = _why(a, live)
                continue
            take(replica, node, a)
            holding[node] = holding.get(node, 0) + 1
            heapq.heapreplace(heap, (_rank(node, a, pack, holding, count, free_cpu, free_mem), node))
    return result


def in_turns(agents: list[AgentDemand]) -> list[AgentDemand]:
    """The agents in the order they are placed: each home's first by name, then each home's second..."""
    turn: dict[str, int] = {}
    keyed = []
    for a in sorted(agents, key=lambda a: (a.home, a.name)):
        turn[a.home] = turn.get(a.home, -1) + 1
        keyed.append(((turn[a.home], a.home, a.name), a))
    return [a for _, a in sorted(keyed, key=lambda k: k[0])]


def _rank(n: str, a: AgentDemand, pack: bool, holding: dict[str, int], count: dict[str, int],
          free_cpu: dict[str, float], free_mem: dict[str, float]) -> tuple[object, ...]:
    """The order of node ``n`` for agent ``a``: the lowest is chosen (see the module note)."""
    if pack:
        return (free_cpu[n], free_mem[n], n)
    return (holding.get(n, 0), count[n], n != a.home, -free_cpu[n], -free_mem[n], n)


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
