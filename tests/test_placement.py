"""The placement planner: rules, capacity, stickiness, and properties over random inputs."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.core.placement import AgentDemand, NodeSupply, Plan, in_turns, plan

NODES = [NodeSupply("a", cpu=2, memory=4000), NodeSupply("b", cpu=2, memory=4000), NodeSupply("c", cpu=2, memory=4000)]


def test_spread_puts_replicas_on_different_nodes():
    p = plan([AgentDemand("w", home="a", replicas=3, cpu=0.5)], NODES)
    assert sorted(p.assignment.values()) == ["a", "b", "c"]
    assert set(p.assignment) == {"w.0", "w.1", "w.2"}


def test_pack_fills_one_node_before_the_next():
    p = plan([AgentDemand("w", home="a", replicas=4, placement="pack", cpu=1.0)], NODES)
    counts = {n: list(p.assignment.values()).count(n) for n in "abc"}
    assert sorted(counts.values()) == [0, 2, 2]


def test_local_and_pinned_agents_stay_on_their_node_or_are_unplaced_with_a_reason():
    p = plan([AgentDemand("l", home="b", placement="local"), AgentDemand("p", home="a", node="c")], NODES)
    assert p.assignment == {"l": "b", "p": "c"}
    dead_b = [NodeSupply("a"), NodeSupply("b", alive=False), NodeSupply("c")]
    p = plan([AgentDemand("l", home="b", placement="local")], dead_b)
    assert p.assignment == {} and "not alive" in p.unplaced["l"]


def test_capacity_is_never_exceeded_and_what_does_not_fit_says_so():
    p = plan([AgentDemand("big", home="a", replicas=4, cpu=1.5)], NODES)
    assert len(p.assignment) == 3
    (why,) = p.unplaced.values()
    assert "big" in why and "fits on no live node" in why


def test_a_dead_nodes_replicas_move_and_the_others_stay_put():
    agents = [AgentDemand("w", home="a", replicas=3, cpu=0.5)]
    first = plan(agents, NODES)
    nodes = [NodeSupply("a", cpu=2, memory=4000), NodeSupply("b", alive=False), NodeSupply("c", cpu=2, memory=4000)]
    second = plan(agents, nodes, first.assignment)
    moved = [r for r, n in first.assignment.items() if n == "b"]
    assert second.moves == moved
    for r, n in first.assignment.items():
        if n != "b":
            assert second.assignment[r] == n
    # When b returns, only the replica that doubled up on a survivor spreads out to it again.
    third = plan(agents, NODES, second.assignment)
    assert sorted(third.assignment.values()) == ["a", "b", "c"] and third.moves == moved
    # Pack (and any replica alone on its node) stays put.
    packed = [AgentDemand("p", home="a", replicas=2, placement="pack", cpu=0.5)]
    spot = plan(packed, NODES).assignment
    assert plan(packed, NODES, spot).moves == [] and plan(packed, NODES, spot).assignment == spot


@pytest.mark.parametrize("seed", range(200))
def test_random_inputs_respect_capacity_rules_and_determinism(seed):
    rng = random.Random(seed)
    nodes = [NodeSupply(f"n{i}", alive=rng.random() > 0.2, cpu=rng.choice([1, 2, 4]), memory=rng.choice([1000, 4000]))
             for i in range(rng.randint(1, 6))]
    agents = [AgentDemand(f"g{i}", home=rng.choice(nodes).name, replicas=rng.randint(1, 4),
                          placement=rng.choice(["spread", "pack", "local"]), cpu=rng.choice([0, 0.25, 0.5, 1]),
                          memory=rng.choice([0, 100, 500])) for i in range(rng.randint(1, 8))]
    p = plan(agents, nodes)
    assert p == plan(agents, nodes)  # deterministic
    alive = {n.name: n for n in nodes if n.alive}
    by_name = {r: a for a in agents for r in a.replica_names()}
    for node, supply in alive.items():
        placed = [by_name[r] for r, n in p.assignment.items() if n == node]
        assert sum(a.cpu for a in placed) <= supply.cpu + 1e-9
        assert sum(a.memory for a in placed) <= supply.memory
    for r, n in p.assignment.items():
        assert n in alive
        if by_name[r].placement == "local":
            assert n == by_name[r].home
    assert set(p.assignment) | set(p.unplaced) == set(by_name)
    assert not set(p.assignment) & set(p.unplaced)


# -- properties over random inputs (hypothesis) ---------------------------------------------------

NAMES = [f"n{i}" for i in range(8)]
supplies = st.builds(lambda alive, cpu, mem: (alive, cpu, mem), st.booleans() | st.just(True),
                     st.sampled_from([0.5, 1, 2, 4, float("inf")]), st.sampled_from([500, 4000, float("inf")]))
meshes = st.lists(supplies, min_size=1, max_size=8).map(
    lambda xs: [NodeSupply(NAMES[i], alive=a, cpu=c, memory=m) for i, (a, c, m) in enumerate(xs)])


@st.composite
def demands(draw: st.DrawFn, nodes: list[NodeSupply], placements=("spread", "pack", "local"), pins: bool = True,
            sizes: bool = True) -> list[AgentDemand]:
    count = draw(st.integers(1, 10))
    out = []
    for i in range(count):
        out.append(AgentDemand(
            f"g{i}", home=draw(st.sampled_from(nodes)).name, replicas=draw(st.integers(1, 6)),
            placement=draw(st.sampled_from(placements)),
            node=draw(st.none() | st.sampled_from(nodes).map(lambda n: n.name)) if pins else None,
            cpu=draw(st.sampled_from([0, 0.25, 0.5, 1])) if sizes else 0.0,
            memory=draw(st.sampled_from([0, 100, 500])) if sizes else 0))
    return out


@st.composite
def problems(draw: st.DrawFn) -> tuple[list[AgentDemand], list[NodeSupply], dict[str, str]]:
    nodes = draw(meshes)
    agents = draw(demands(nodes))
    replicas = [r for a in agents for r in a.replica_names()]
    current = draw(st.dictionaries(st.sampled_from(replicas), st.sampled_from(NAMES), max_size=len(replicas)))
    return agents, nodes, current


def counts(p: Plan, nodes: list[NodeSupply]) -> dict[str, int]:
    out = {n.name: 0 for n in nodes if n.alive}
    for n in p.assignment.values():
        out[n] += 1
    return out


@settings(max_examples=300, deadline=None)
@given(problems())
def test_a_plan_depends_on_its_inputs_only_never_on_their_order(problem):
    agents, nodes, current = problem
    p = plan(agents, nodes, current)
    assert p == plan(list(reversed(agents)), list(reversed(nodes)), dict(reversed(list(current.items()))))


@settings(max_examples=300, deadline=None)
@given(problems())
def test_no_live_node_gets_more_than_its_capacity_and_every_replica_is_placed_or_says_why(problem):
    agents, nodes, current = problem
    p = plan(agents, nodes, current)
    by_name = {r: a for a in agents for r in a.replica_names()}
    live = {n.name: n for n in nodes if n.alive}
    for node, supply in live.items():
        placed = [by_name[r] for r, n in p.assignment.items() if n == node]
        assert sum(a.cpu for a in placed) <= supply.cpu + 1e-9
        assert sum(a.memory for a in placed) <= supply.memory
    for r, n in p.assignment.items():
        a = by_name[r]
        assert n in live and (a.node is None or n == a.node) and (a.placement != "local" or a.node or n == a.home)
    assert set(p.assignment) | set(p.unplaced) == set(by_name) and not set(p.assignment) & set(p.unplaced)
    assert sorted(p.moves) == sorted(r for r, n in p.assignment.items() if current.get(r) not in (None, n))


@settings(max_examples=300, deadline=None)
@given(problems())
def test_planning_again_keeps_every_replica_where_it_is_but_a_second_spread_replica_on_one_node(problem):
    agents, nodes, current = problem
    first = plan(agents, nodes, current)
    second = plan(agents, nodes, first.assignment)
    by_name = {r: a for a in agents for r in a.replica_names()}
    doubled = set()
    for a in agents:
        seen: set[str] = set()
        for r in a.replica_names():
            at = first.assignment.get(r)
            if at is not None and a.placement == "spread" and a.node is None and at in seen:
                doubled.add(r)
            if at is not None:
                seen.add(at)
    for r, n in first.assignment.items():
        if r not in doubled:
            assert second.assignment[r] == n, (r, by_name[r])
    if not doubled:
        assert second.moves == [] and second.assignment == first.assignment


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 32), st.lists(st.integers(1, 8), min_size=1, max_size=40), st.sampled_from([2.0, float("inf")]))
def test_spread_on_alike_nodes_balances_counts_to_within_one(nodes_n, replicas, cpu):
    nodes = [NodeSupply(f"n{i:02d}", cpu=cpu, memory=8 << 30) for i in range(nodes_n)]
    agents = [AgentDemand(f"g{i:02d}", home=f"n{i % nodes_n:02d}", replicas=k) for i, k in enumerate(replicas)]
    p = plan(agents, nodes)
    c = counts(p, nodes)
    assert max(c.values()) - min(c.values()) <= 1
    for a in agents:
        mine = [p.assignment[r] for r in a.replica_names()]
        per = {n.name: mine.count(n.name) for n in nodes}
        assert max(per.values()) - min(per.values()) <= 1  # and each agent spreads as evenly as it can


def test_sixteen_nodes_declaring_five_agents_each_get_five_each_and_mostly_their_own():
    nodes = [NodeSupply(f"n{i:02d}", cpu=2.0, memory=8 << 30) for i in range(16)]
    agents = [AgentDemand(f"n{i:02d}-a{j}", home=f"n{i:02d}") for i in range(16) for j in range(5)]
    p = plan(agents, nodes)
    assert set(counts(p, nodes).values()) == {5}
    assert all(p.assignment[a.name] == a.home for a in agents)  # each its own


def test_a_node_that_joins_gets_its_own_agents_without_moving_anyone_elses():
    nodes = [NodeSupply(f"n{i:02d}") for i in range(4)]
    agents = [AgentDemand(f"n{i:02d}-a{j}", home=f"n{i:02d}") for i in range(4) for j in range(5)]
    p = plan(agents, nodes)
    joined = agents + [AgentDemand(f"n04-a{j}", home="n04") for j in range(5)]
    q = plan(joined, nodes + [NodeSupply("n04")], p.assignment)
    assert q.moves == [] and set(counts(q, nodes + [NodeSupply("n04")]).values()) == {5}
    assert all(q.assignment[f"n04-a{j}"] == "n04" for j in range(5))


def reference_plan(agents: list[AgentDemand], nodes: list[NodeSupply], current: dict[str, str]) -> Plan:
    """The rules of the module note, written the slow and obvious way: every replica looks at every node
    (the order agents are taken in is the planner's own, in_turns)."""
    live = {n.name: n for n in nodes if n.alive}
    free = {n: [s.cpu, s.memory] for n, s in live.items()}
    count = dict.fromkeys(live, 0)
    out = Plan()

    def allowed(a: AgentDemand, n: str) -> bool:
        return n == a.node if a.node is not None else n == a.home if a.placement == "local" else True

    def fits(a: AgentDemand, n: str) -> bool:
        return free[n][0] >= a.cpu and free[n][1] >= a.memory

    def take(a: AgentDemand, r: str, n: str) -> None:
        out.assignment[r] = n
        free[n][0] -= a.cpu
        free[n][1] -= a.memory
        count[n] += 1
        if current.get(r) not in (None, n):
            out.moves.append(r)

    ordered = in_turns(agents)
    for a in ordered:
        kept: list[str] = []
        for r in a.replica_names():
            n = current.get(r)
            if n in live and allowed(a, n) and fits(a, n) and not (a.placement == "spread" and a.node is None and n in kept):
                kept.append(n)
                take(a, r, n)
    for a in ordered:
        for r in a.replica_names():
            if r in out.assignment:
                continue
            fit = [n for n in sorted(live) if allowed(a, n) and fits(a, n)]
            if not fit:
                out.unplaced[r] = "x"
                continue
            mine = [out.assignment[x] for x in a.replica_names() if x in out.assignment]
            if a.placement == "pack":
                n = min(fit, key=lambda n: (free[n][0], free[n][1], n))
            else:
                n = min(fit, key=lambda n: (mine.count(n), count[n], n != a.home, -free[n][0], -free[n][1], n))
            take(a, r, n)
    return out


@settings(max_examples=500, deadline=None)
@given(problems())
def test_the_planner_decides_as_the_rules_written_the_obvious_way(problem):
    agents, nodes, current = problem
    p, ref = plan(agents, nodes, current), reference_plan(agents, nodes, current)
    assert p.assignment == ref.assignment and p.moves == ref.moves and set(p.unplaced) == set(ref.unplaced)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 12), st.integers(1, 60), st.data())
def test_the_planner_decides_as_the_obvious_way_for_many_agents_of_one_replica(nodes_n, agents_n, data):
    nodes = [NodeSupply(f"n{i:02d}", cpu=data.draw(st.sampled_from([1.0, 2.0, float("inf")])),
                        memory=data.draw(st.sampled_from([1000, float("inf")]))) for i in range(nodes_n)]
    agents = [AgentDemand(f"a{i:02d}", home=f"n{data.draw(st.integers(0, nodes_n - 1)):02d}",
                          cpu=data.draw(st.sampled_from([0.0, 0.25, 0.5])), memory=data.draw(st.sampled_from([0, 100])))
              for i in range(agents_n)]
    current = data.draw(st.dictionaries(st.sampled_from([a.name for a in agents]),
                                        st.sampled_from([n.name for n in nodes]), max_size=agents_n))
    p, ref = plan(agents, nodes, current), reference_plan(agents, nodes, current)
    assert p.assignment == ref.assignment and p.moves == ref.moves and set(p.unplaced) == set(ref.unplaced)


def test_agents_are_placed_in_turns_by_home_so_each_home_keeps_its_own_while_counts_are_even():
    agents = [AgentDemand(n, home=h) for n, h in [("b1", "b"), ("a2", "a"), ("a1", "a"), ("c1", "c"), ("b2", "b")]]
    assert [a.name for a in in_turns(agents)] == ["a1", "b1", "c1", "a2", "b2"]
    p = plan(agents, [NodeSupply("a"), NodeSupply("b"), NodeSupply("c"), NodeSupply("d")])
    assert p.assignment == {"a1": "a", "b1": "b", "c1": "c", "a2": "d", "b2": "b"}  # a2: d had none
