"""Fencing and the lease with three real in-process voters, the same tests on ZeroMQ and on the twin.

A node cut off from the other nodes (its clients still reach it) must report its lease lost
within LEASE_S (plus a margin for gossip rounds and the loop), while the others keep a
leader: the same one if the node cut off followed, a new one of a newer term if it led. Once
healed it hears a majority again, regains its lease and follows the current leader; and a
decision of an older term that it sees then, now that it has settled, is refused and counted.
What is asserted is the node's own fencing state and decisions (``mesh status``), not spawned
agents: an OS process cannot reach a memory network.
"""

from __future__ import annotations

import time

import pytest

from conftest import wait_until
from mesh.runtime.node import LEASE_S
from node_mesh import forged_decision, send_gossip, world_fixture  # noqa: F401  (world: the fixture)

pytestmark = pytest.mark.timeout(120)

#: Beyond LEASE_S: the age of the last gossip heard when the cut came (a round or two) and a
#: housekeeping pass, with room for a loaded machine.
MARGIN_S = 1.5


def settled_leader(world, nodes) -> tuple[str, int]:
    """The leader all of ``nodes`` follow, once every one of them holds its lease and has settled."""
    def ready():
        agreed = world.agreed_leader(nodes)
        if agreed and all(not (e := n.election())["fenced"] and e["settled"] for n in nodes):
            return agreed
        return None

    return wait_until(ready, 20, "a leader every node follows, settled")


def lease_lost_in_time(world, node) -> dict:
    """Cut ``node`` off from the other nodes; its election status once it reports the lease lost."""
    world.cut_off(node.name)
    cut_at = time.monotonic()
    election = wait_until(lambda: (lambda e: e if e["fenced"] else None)(node.election()), LEASE_S + 10,
                          f"{node.name} to report its lease lost")
    took = time.monotonic() - cut_at
    assert took <= LEASE_S + MARGIN_S, f"lease lost after {took:.2f} s"
    assert election["voters_heard"] == [node.name]
    return election


def test_a_follower_cut_off_loses_its_lease_the_others_keep_their_leader_and_healed_it_regains_it(world):
    nodes = world.start_mesh("a", "b", "c")
    lead = settled_leader(world, nodes)
    victim = next(n for n in nodes if n.name != lead[0])
    others = [n for n in nodes if n is not victim]

    lease_lost_in_time(world, victim)
    assert world.agreed_leader(others) == lead  # the same leader, the same term
    assert not any(n.election()["fenced"] for n in others)

    world.heal()
    wait_until(lambda: not victim.election()["fenced"], 10, f"{victim.name} to regain its lease")
    assert settled_leader(world, nodes) == lead
    assert sorted(victim.election()["voters_heard"]) == ["a", "b", "c"]


def test_the_leader_cut_off_loses_its_lease_the_others_elect_another_and_healed_it_follows_refusing_old_terms(world):
    nodes = world.start_mesh("a", "b", "c")
    lead = settled_leader(world, nodes)
    victim = next(n for n in nodes if n.name == lead[0])
    others = [n for n in nodes if n is not victim]

    lease_lost_in_time(world, victim)
    new = wait_until(lambda: (lambda ld: ld if ld and ld[0] != lead[0] else None)(world.agreed_leader(others)),
                     15, "the others to elect a new leader")
    assert new[1] > lead[1]
    assert not any(n.election()["fenced"] for n in others)

    world.heal()
    assert settled_leader(world, nodes) == new
    before = victim.election()["stale_decisions"]
    # A decision of the term it led reaches it late, from a member nobody knew: refused, counted, logged.
    send_gossip(world.transport("test"), victim.address, "ghost", *forged_decision(lead[1], victim.name))
    wait_until(lambda: victim.election()["stale_decisions"] == before + 1, 10, "the old decision to be refused")
    expected = f"refused a decision of term {lead[1]} (seq 99) from ghost: term {new[1]} is current"
    wait_until(lambda: victim.logged(expected) == 1, 5, "the refusal in its log")
    status = victim.status()
    assert "forged" not in {x["name"] for x in status["agents"] if not x.get("remote")}
    assert (status["leader"], status["term"], status["election"]["fenced"]) == (new[0], new[1], False)
