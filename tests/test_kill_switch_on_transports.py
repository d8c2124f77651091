"""The kill switch with real in-process nodes, the same tests on ZeroMQ and on the in-memory twin.

Pulled at one node (``Client.kill``), it spreads with gossip and every node obeys it once; while
it stays pulled no node starts an agent (a declared agent is placed by the leader, and waits);
released, every node lets go of it once. The agents a node spawns are OS processes, which
cannot reach a memory network: these tests declare agents only where none may start, and
serve embedded actors (in processes the node did not start, which the switch does not end).
"""

from __future__ import annotations

import pytest

from conftest import wait_until
from mesh.actor import Actor
from mesh.errors import ActorNotFound
from node_mesh import declared, world_fixture  # noqa: F401  (world: the fixture, once per transport)

pytestmark = pytest.mark.timeout(90)


class Echo(Actor):
    def on_message(self, message):
        return message


def switch(node) -> dict | None:
    return node.status()["kill_switch"]


def more_housekeeping(nodes, passes: int = 3) -> None:
    """Wait until every node has done housekeeping ``passes`` more times (where it obeys the switch)."""
    marks = {n.name: len(n.housekept) for n in nodes}
    wait_until(lambda: all(len(n.housekept) >= marks[n.name] + passes for n in nodes), 15, "more housekeeping")


def local_agents(node) -> set[str]:
    """The agents a node runs itself (not those it lists for others)."""
    return {a["name"] for a in node.status()["agents"] if not a.get("remote")}


def test_pulled_at_one_node_every_node_obeys_the_kill_switch_once_and_the_release_the_same_way(world):
    nodes = world.start_mesh("a", "b", "c")
    a, b, c = nodes
    pulled = world.client(b).kill(by="the test")
    assert pulled["pulled"] is True and pulled["by"] == "the test via node b"
    wait_until(lambda: all((switch(n) or {}).get("by") == "the test via node b" for n in nodes), 10,
               "every node to see the switch pulled")
    wait_until(lambda: all(n.logged("KILL SWITCH pulled by the test via node b") == 1 for n in nodes), 10,
               "every node to obey it")
    more_housekeeping(nodes)
    assert [n.logged("KILL SWITCH pulled") for n in nodes] == [1, 1, 1]  # once each, not once a pass

    released = world.client(c).kill(release=True, by="the test")
    assert released["pulled"] is False and released["by"] == "the test via node c"
    wait_until(lambda: all(switch(n) is None for n in nodes), 10, "every node to see the switch released")
    wait_until(lambda: all(n.logged("kill switch released by the test via node c") == 1 for n in nodes), 10,
               "every node to let go of it")
    more_housekeeping(nodes)
    assert [n.logged("kill switch released") for n in nodes] == [1, 1, 1]
    assert [n.logged("KILL SWITCH pulled") for n in nodes] == [1, 1, 1]


def test_while_it_is_pulled_the_leader_places_a_declared_agent_and_no_node_starts_it(world):
    a, b = world.start_mesh("a", "b")
    wait_until(lambda: world.agreed_leader([a, b]), 15, "a leader")
    world.client(a).kill(by="the test")
    wait_until(lambda: all(switch(n) for n in (a, b)), 10, "both nodes to see the switch pulled")
    # A node that joins now declares an agent: the leader places it, but nobody may start it.
    c = world.start("c", join=(a,), agents=declared("late"))
    nodes = [a, b, c]
    assert wait_until(lambda: switch(c), 10, "the node that joined to see the switch pulled")["pulled"] is True
    assigned = wait_until(lambda: [x for x in c.status()["agents"] if x["name"] == "late" and x["state"] == "assigned"],
                          15, "the leader to place the declared agent")
    assert assigned[0]["node"] in ("a", "b", "c")
    more_housekeeping(nodes)
    assert all("late" not in local_agents(n) for n in nodes)
    assert c.logged("KILL SWITCH pulled by the test via node a") == 1
    # A client asking for it waits, as for an agent starting, then is told where it stands.
    client = world.client(b, resolve_timeout=0.5)
    with pytest.raises(ActorNotFound, match="actor 'late' is assigned and did not come up"):
        client.actor("late").ask("hello?")


def test_actors_embedded_in_other_processes_keep_serving_and_may_register_while_it_is_pulled(world):
    a, b = world.start_mesh("a", "b")
    world.serve(Echo(), "before", a)
    world.client(b).kill(by="the test")
    wait_until(lambda: all(switch(n) for n in (a, b)), 10, "both nodes to see the switch pulled")
    more_housekeeping([a, b])
    assert world.client(a).actor("before").ask("still here") == "still here"
    world.serve(Echo(), "after", b)
    assert world.client(b).actor("after").ask("registered") == "registered"
