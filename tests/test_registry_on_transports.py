"""The node's registry with real in-process nodes, the same tests on ZeroMQ and on the in-memory twin.

Embedded actors (served in threads, as ``mesh.serve`` embeds one) register with a node, are
resolved by name from a client of any node of the mesh, and leave when they stop; a name a
live actor holds is refused to another process; an actor whose heartbeats stop is dropped
once EMBEDDED_TTL_S of the node's clock has passed (a FakeClock runs it to the instant); a name
that is declared but runs nowhere yet is waited for, not refused.
"""

from __future__ import annotations

import os
import time

import pytest

from conftest import wait_until
from mesh import wire
from mesh.actor import Actor
from mesh.errors import ActorNotFound, NameConflict
from mesh.runtime import rpc
from mesh.runtime.clock import FakeClock
from mesh.runtime.gossiper import JOIN_WAIT_S
from mesh.runtime.node import EMBEDDED_TTL_S
from node_mesh import declared, world_fixture  # noqa: F401  (world: the fixture, once per transport)

pytestmark = pytest.mark.timeout(60)


class Echo(Actor):
    def on_message(self, message):
        return message


def names_at(node) -> set[str]:
    return {a["name"] for a in node.status()["agents"] if a["state"] == "running"}


def register_by_hand(client, name: str, endpoint: str, pid: int):
    """Register ``name`` as an embedded actor of process ``pid`` would, and then never send a heartbeat."""
    return rpc.register(client, name, endpoint, pid, False, wire.MAX_FRAME_BYTES, False)


def test_an_embedded_actor_is_resolved_by_name_from_any_node_and_is_gone_once_it_stops(world):
    a, b = world.start_mesh("a", "b")
    server = world.serve(Echo(), "echo", a)
    assert world.client(a).actor("echo").ask("at a") == "at a"
    (listed,) = [x for x in a.status()["agents"] if x["name"] == "echo"]
    assert (listed["node"], listed["embedded"], listed["pid"], listed["endpoint"]) == ("a", True, os.getpid(),
                                                                                       server.endpoint)
    # Node b knows it through the directory the nodes gossip, and sends there directly.
    via_b = world.client(b, resolve_timeout=0.2)
    assert wait_until(lambda: via_b.actor("echo").ask("via b", timeout=2), 10, "b to resolve echo") == "via b"
    assert rpc.resolve(via_b, "echo")["endpoint"] == server.endpoint

    world.stop_serving(server)  # it unregisters
    assert "echo" not in names_at(a)
    with pytest.raises(ActorNotFound):
        world.client(a).actor("echo").ask("anyone?")
    wait_until(lambda: "echo" not in names_at(b), 10, "b to forget echo")
    with pytest.raises(ActorNotFound):
        world.client(b).actor("echo").ask("anyone?")


def test_a_name_a_live_actor_holds_is_refused_to_another_process_and_free_once_it_leaves(world):
    (a,) = world.start_mesh("a")
    server = world.serve(Echo(), "echo", a)
    client = world.client(a)
    elsewhere = f"{server.endpoint}0"  # where the other process would listen: never reached
    with pytest.raises(NameConflict, match="taken by a live actor"):
        register_by_hand(client, "echo", elsewhere, os.getpid() + 1)
    assert client.actor("echo").ask("still mine") == "still mine"
    assert rpc.resolve(client, "echo")["endpoint"] == server.endpoint

    world.stop_serving(server)
    assert register_by_hand(client, "echo", elsewhere, os.getpid() + 1)["node"] == "a"
    assert rpc.resolve(client, "echo")["endpoint"] == elsewhere


def test_a_restarted_actor_is_found_again_at_its_new_endpoint(world):
    (a,) = world.start_mesh("a")
    first = world.serve(Echo(), "echo", a)
    ref = world.client(a).actor("echo")
    assert ref.ask("first") == "first"
    world.stop_serving(first)
    second = world.serve(Echo(), "echo", a)
    assert second.endpoint != first.endpoint
    assert wait_until(lambda: ref.ask("second", timeout=2), 10, "the same reference to reach the new endpoint") == "second"


def test_an_actor_whose_heartbeats_stop_is_dropped_after_the_ttl_of_the_nodes_clock(world):
    clock = FakeClock()
    a = world.start("a", clock=clock)
    clock.advance(JOIN_WAIT_S + 0.1)  # nobody to join: it announces itself after the join wait
    a.housekeeping_at(clock.monotonic())
    client = world.client(a)
    registered = clock.monotonic()
    register_by_hand(client, "silent", "nowhere:1", os.getpid())

    clock.advance(EMBEDDED_TTL_S - 1.0)
    a.housekeeping_at(clock.monotonic())
    assert rpc.resolve(client, "silent")["endpoint"] == "nowhere:1"
    assert rpc.heartbeat(client, "silent", "nowhere:1", 0, 0)  # heard from: its TTL starts again
    heard = clock.monotonic()

    clock.advance(registered + EMBEDDED_TTL_S + 1.0 - clock.monotonic())  # past the first TTL, not the second
    a.housekeeping_at(clock.monotonic())
    assert rpc.resolve(client, "silent")["endpoint"] == "nowhere:1"
    assert a.logged("silent dropped") == 0

    clock.advance(heard + EMBEDDED_TTL_S + 0.5 - clock.monotonic())
    a.housekeeping_at(clock.monotonic())
    with pytest.raises(ActorNotFound, match="no actor named 'silent'"):
        rpc.resolve(client, "silent")
    assert a.logged(f"silent dropped (embedded, no heartbeat for {EMBEDDED_TTL_S:g} s)") == 1


def test_a_declared_agent_that_runs_nowhere_yet_is_waited_for_then_reported_with_its_state(world):
    # A node that joins a mesh nobody answers for never leads: what it declares waits for a leader.
    nowhere = "mem://nobody:1" if world.kind == "memory" else "tcp://127.0.0.1:9"
    a = world.start("a", join=(nowhere,), agents=declared("late"))
    client = world.client(a, resolve_timeout=0.6)
    assert rpc.resolve(client, "late") == {"state": "waiting"}
    started = time.monotonic()
    with pytest.raises(ActorNotFound, match="actor 'late' is waiting and did not come up within 0.6 s"):
        client.actor("late").ask("hello?")
    assert time.monotonic() - started >= 0.6  # waited for it, as for an agent restarting
    with pytest.raises(ActorNotFound, match="no actor named 'nobody-declared-this'"):
        client.actor("nobody-declared-this").ask("hello?")
