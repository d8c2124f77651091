"""The first node of a mesh (no ``--join``) with real in-process nodes, on ZeroMQ and on the
in-memory twin: nobody could answer its join, so it announces itself at once; as leader it places
at once the agents that can run on it alone (``local``, pinned), and waits JOIN_WAIT_S for the
nodes started with it before it places any other (so spread agents are placed knowing them).

Its clock is a test's (FakeClock): what it decides when is exact. The agent it places is spawned
as an OS process that cannot reach a memory network; these tests only read the assignment."""

from __future__ import annotations

import pytest

from conftest import wait_until
from mesh.runtime.clock import FakeClock
from mesh.runtime.gossiper import JOIN_WAIT_S
from mesh.runtime.node.assignments import latest_assignment
from mesh.spec import parse_spec
from node_mesh import world_fixture  # noqa: F401  (world: the fixture, once per transport)

pytestmark = pytest.mark.timeout(90)


def placed_on(node) -> set[str]:
    return {r for r, e in latest_assignment(node.node.directory).items() if e.get("node") == node.name}


def test_a_first_node_places_what_can_run_only_on_it_at_once_and_the_rest_after_the_join_wait(world):
    agents = parse_spec({"agents": [{"name": "here", "class": "actors:WhoAmI", "placement": "local"},
                                    {"name": "pinned", "class": "actors:WhoAmI", "node": "a"},
                                    {"name": "anywhere", "class": "actors:WhoAmI"}]}).agents
    clock = FakeClock()
    a = world.start("a", agents=agents, clock=clock)
    started = clock.monotonic()
    wait_until(lambda: a.node.gossip.announced, 10, "a to announce itself, its clock not moved")  # no seed

    def decided_what_only_it_can_run() -> bool:
        if clock.monotonic() < started + JOIN_WAIT_S / 2:  # its clock moves, within the join wait
            clock.advance(0.05)
        return {"here", "pinned"} <= placed_on(a)

    wait_until(decided_what_only_it_can_run, 15, "the local and pinned agents placed within the join wait")
    assert clock.monotonic() - started <= JOIN_WAIT_S / 2 + 0.05
    assert "anywhere" not in placed_on(a) and "anywhere" not in latest_assignment(a.node.directory)
    assert a.node.status()["agents"]  # the node serves meanwhile

    clock.advance(started + JOIN_WAIT_S + 0.05 - clock.monotonic())  # the nodes started with it had their time
    wait_until(lambda: "anywhere" in placed_on(a), 10, "the spread agent placed after the join wait")


def test_a_node_with_seeds_still_waits_for_them_before_it_announces_itself(world):
    clock = FakeClock()
    down = "mem://down:1" if world.kind == "memory" else "tcp://127.0.0.1:9"
    b = world.start("b", join=(down,), clock=clock)
    assert not b.node.gossip.announced  # its seed may yet answer (and say its name is taken)
    clock.advance(JOIN_WAIT_S + 0.1)
    wait_until(lambda: b.node.gossip.announced, 10, "b to announce itself after the join wait")
