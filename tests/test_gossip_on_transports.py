"""Gossipers on ZeroMQ and on the in-memory twin, the same tests, at the pace of a FakeClock.

Each peer is a Gossiper with the transport and clock it is given, and a listener the test
pumps as a node's loop would: every step the clock moves ``STEP_S`` and each peer reads
what arrived and ticks. Time is the fake clock's alone (join waits, rounds, suspicion);
ZeroMQ frames still cross real sockets, so each step also gives them a moment to arrive.
"""

from __future__ import annotations

import time

import pytest

from mesh import wire
from mesh.core.gossip import valid_address
from mesh.runtime.clock import FakeClock
from mesh.runtime.gossiper import Gossiper
from mesh.runtime.intake import BadFrames
from mesh.runtime.memory import MemoryNetwork
from mesh.runtime.transport import NOWAIT, NothingYet, Transport
from mesh.runtime.zeromq import ZmqTransport

pytestmark = pytest.mark.fast_check

STEP_S = 0.05  #: fake seconds per step


class Peer:
    def __init__(self, transport: Transport, bind: str, name: str, seeds: list[str], clock: FakeClock):
        self.listener = transport.listen(bind, mailbox=1000, replies=10, max_bytes=wire.MAX_FRAME_BYTES, linger_ms=0,
                                         wait_ms=0, any_port=True)
        self.address = self.listener.address
        self.gossiper = Gossiper(name, self.address, seeds, transport=transport, clock=clock)
        self._bad = BadFrames(f"gossip peer {name}")
        self.closed = False

    def pump(self) -> None:
        if self.closed:
            return
        while True:
            try:
                got = self.listener.receive(self._bad, NOWAIT)
            except NothingYet:
                break
            if got is not None:
                for env in wire.decode(got[1]):
                    self.gossiper.receive(env[wire.SENDER], env[wire.BODY])
        self.gossiper.tick()

    def crash(self) -> None:
        self.closed = True
        self.gossiper.close()
        self.listener.close(0)

    def knows(self, name: str) -> str | None:
        return self.gossiper.node.state_of(name)


class Mesh:
    """Peers on one transport and one fake clock; ``run`` steps them all."""

    def __init__(self, kind: str):
        self.kind = kind
        self.clock = FakeClock()
        self.network = MemoryNetwork(self.clock)
        self.peers: dict[str, Peer] = {}

    def add(self, name: str, seeds: list[str]) -> Peer:
        if self.kind == "memory":
            transport: Transport = self.network.transport(name)
            bind = f"mem://{name}"
        else:
            transport, bind = ZmqTransport(self.clock), "tcp://127.0.0.1"
        peer = self.peers[name] = Peer(transport, bind, name, seeds, self.clock)
        return peer

    def run_until(self, done, fake_seconds: float, what: str) -> None:
        deadline = self.clock.monotonic() + fake_seconds
        while not done():
            if self.clock.monotonic() >= deadline:
                raise AssertionError(f"not within {fake_seconds:g} fake seconds: {what}")
            self.clock.advance(STEP_S)
            for peer in self.peers.values():
                peer.pump()
            if self.kind == "zmq":
                time.sleep(0.002)  # real sockets: let the frames of this step arrive

    def all_know_each_other(self, names: list[str]) -> bool:
        return all(self.peers[a].knows(b) == "alive" for a in names for b in names if a != b)

    def close(self) -> None:
        for peer in self.peers.values():
            if not peer.closed:
                peer.crash()


@pytest.fixture(params=["memory", "zmq"])
def mesh_of(request):
    made = Mesh(request.param)
    yield made
    made.close()


@pytest.mark.timeout(60)
def test_peers_that_name_one_seed_join_and_learn_each_others_writes(mesh_of):
    a = mesh_of.add("a", [])
    mesh_of.add("b", [a.address])
    c = mesh_of.add("c", [a.address])
    mesh_of.run_until(lambda: mesh_of.all_know_each_other(["a", "b", "c"]), 20, "a, b and c alive to each other")
    a.gossiper.write("greeting", "hello")
    mesh_of.run_until(lambda: c.gossiper.node.get("greeting") == "hello", 10, "c to learn a's write")


@pytest.mark.timeout(60)
def test_a_peer_that_crashes_is_suspected_then_dead_and_the_others_stay_alive(mesh_of):
    a = mesh_of.add("a", [])
    b = mesh_of.add("b", [a.address])
    c = mesh_of.add("c", [a.address])
    mesh_of.run_until(lambda: mesh_of.all_know_each_other(["a", "b", "c"]), 20, "a, b and c alive to each other")
    c.crash()
    mesh_of.run_until(lambda: a.knows("c") == b.knows("c") == "dead", 30, "a and b to find c dead")
    assert a.knows("b") == b.knows("a") == "alive"


@pytest.mark.timeout(60)
def test_on_the_twin_an_isolated_peer_is_suspected_and_back_once_healed():
    made = Mesh("memory")
    try:
        a = made.add("a", [])
        b = made.add("b", [a.address])
        made.add("c", [a.address])
        made.run_until(lambda: made.all_know_each_other(["a", "b", "c"]), 20, "a, b and c alive to each other")
        made.network.isolate("c")
        made.run_until(lambda: a.knows("c") != "alive" and b.knows("c") != "alive", 20, "a and b to suspect c")
        made.network.heal()
        made.run_until(lambda: made.all_know_each_other(["a", "b", "c"]), 20, "c alive to all again")
    finally:
        made.close()


@pytest.mark.parametrize("address", ["mem://a:1", "mem://node-2.x_y:65535", "tcp://127.0.0.1:7700", "tcp://[::1]:5"])
def test_the_gossip_core_takes_the_addresses_of_both_transports(address):
    assert valid_address(address)


@pytest.mark.parametrize("address", ["mem://a", "mem://:1", "mem://a:0", "mem://a:99999", "mem://-a:1", "mem://a b:1",
                                     "mem://a:1;b:2", "mem://*:1", "memx://a:1", "inproc://a:1", "mem://" + "a" * 300 + ":1"])
def test_the_gossip_core_refuses_what_neither_transport_can_connect_to(address):
    assert not valid_address(address)


@pytest.mark.timeout(60)
def test_a_directorys_indexes_stay_the_views_prefixes_through_joins_writes_deletes_and_a_dead_member():
    # The indexes are kept from the gossip's change events only: whatever a joiner learns in the
    # member's answer that welcomes it, a delete, a tombstone collected, a dead member's entries
    # dropped, each must reach them, or the node's housekeeping reads a stale view.
    from mesh.runtime.gossiper import INDEXED, Directory

    made = Mesh("memory")
    try:
        a = made.add("a", [])
        for i in range(20):
            a.gossiper.write(f"$agents/x{i}", {"node": "a", "i": i}, system=True)
        b = made.add("b", [a.address])
        c = made.add("c", [a.address])
        dirs = {name: Directory(p.gossiper) for name, p in made.peers.items()}

        def consistent() -> bool:
            return all(d.items(prefix) == made.peers[n].gossiper.node.items(prefix)
                       for n, d in dirs.items() if not made.peers[n].closed for prefix in INDEXED)

        made.run_until(lambda: made.all_know_each_other(["a", "b", "c"]), 20, "a, b and c alive to each other")
        assert consistent() and len(dirs["b"].items("$agents/")) == 20
        before = dirs["b"].version("$agents/")
        c.gossiper.write("$node/c", {"agents": []}, system=True)
        a.gossiper.delete("$agents/x3", system=True)
        b.gossiper.write("$acted/b", {"term": 1, "seq": 1, "runs": []}, system=True)
        made.run_until(lambda: "$agents/x3" not in dirs["c"].items("$agents/") and "$node/c" in dirs["a"].items("$node/"),
                       10, "the changes everywhere")
        assert consistent() and dirs["b"].version("$agents/") > before
        c.crash()
        made.run_until(lambda: "$node/c" not in a.gossiper.node.items("$node/"), 120, "c's record gone with c")
        assert consistent()
    finally:
        made.close()
