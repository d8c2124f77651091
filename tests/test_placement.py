"""The placement planner: rules, capacity, stickiness, and properties over random inputs."""

from __future__ import annotations

import random

import pytest

from mesh.core.placement import AgentDemand, NodeSupply, plan

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
