"""Membership with real `mesh up` processes: late seeds, one name per live member, default names.

`MESH_SOAK=1 pytest tests/test_membership.py -k late_seed` runs the late-seed start order
20 times (the default is 2).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest
import zmq

import mesh
from mesh import wire
from conftest import RunningNode, free_port, mesh_command, stop_node, wait_until
from test_leader import agreed_leader, quiet

RUNS = 20 if os.environ.get("MESH_SOAK") == "1" else 2
POOL = '[pools.db]\nsize = 3\nlease = "3s"\n'


def alive_members(node) -> set[str]:
    st = quiet(node, {"members": []})
    return {m["name"] for m in st["members"] if m["state"] == "alive"}


class Holders:
    """Clients on every node that take units of pool db and keep them; a sampler counts the
    units their holders believe valid at once."""

    def __init__(self, nodes, per_node: int = 3):
        self.stop = threading.Event()
        self.leases: list = []
        self.lock = threading.Lock()
        self.most = 0
        self.threads = [threading.Thread(target=self._hold, args=(n,), daemon=True) for n in nodes for _ in range(per_node)]
        self.threads.append(threading.Thread(target=self._sample, daemon=True))
        for t in self.threads:
            t.start()

    def _hold(self, node) -> None:
        client = None
        while not self.stop.is_set():
            try:
                client = client or mesh.connect(node.address, connect_timeout=1.0)
                lease = client.acquire("db", timeout=1.0)
            except mesh.MeshError:
                time.sleep(0.05)
                continue
            with self.lock:
                self.leases.append(lease)
            while not self.stop.is_set() and lease.valid:
                time.sleep(0.05)
        if client is not None:
            client.close()

    def _sample(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                held = sum(lease.n for lease in self.leases if lease.valid)
            self.most = max(self.most, held)
            time.sleep(0.02)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=15)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("run", range(RUNS))
def test_a_late_seed_joins_the_mesh_of_those_who_list_it_one_leader_and_the_pool_within_its_size(start_node, run):
    port_a = free_port()
    address_a = f"tcp://127.0.0.1:{port_a}"
    b = start_node(node_extra=POOL.replace("[pools", "\n[pools"), name="b", args=("--join", address_a))
    c = start_node(node_extra="\n" + POOL, name="c", args=("--join", address_a, "--join", b.address))
    holders = Holders([b, c])
    try:
        wait_until(lambda: alive_members(b) == {"b", "c"} == alive_members(c), 30, "b and c to meet")
        time.sleep(3.0)  # the scenario: a starts 3 s after the nodes that list it as a seed
        a = start_node(node_extra="\n" + POOL, name="a", port=port_a)
        holders_a = Holders([a])
        try:
            nodes = [a, b, c]
            wait_until(lambda: all(alive_members(n) == {"a", "b", "c"} for n in nodes), 30, "one mesh of a, b and c")
            wait_until(lambda: agreed_leader(nodes), 30, "one leader agreed by a, b and c")
            time.sleep(2.0)  # the holders keep asking on every node meanwhile
            lead = agreed_leader(nodes)
            assert lead is not None, [quiet(n, {}).get("leader") for n in nodes]
        finally:
            holders_a.close()
    finally:
        holders.close()
    assert max(holders.most, holders_a.most) <= 3
    with holders.lock, holders_a.lock:
        assert sum(lease.n for lease in holders.leases + holders_a.leases if lease.valid) <= 3


def spawn(tmp_path, nodes: list, *args: str, label: str) -> RunningNode:
    """`mesh up ARGS` with no spec file (a spec-less worker, say); stopped at teardown."""
    output = tmp_path / f"{label}.out"
    listen = args[args.index("--listen") + 1]
    with open(output, "wb") as out:
        proc = subprocess.Popen([*mesh_command(), "up", *args], stdout=out, stderr=subprocess.STDOUT)
    node = RunningNode(proc, listen, tmp_path / "none.toml", output)
    nodes.append(node)
    return node


@pytest.fixture
def spawned(mesh_home):
    nodes: list[RunningNode] = []
    yield nodes
    leftovers = []
    for node in nodes:
        leftovers += stop_node(node)
    assert not leftovers, f"processes outlived their node: {leftovers}"


@pytest.mark.timeout(120)
def test_three_spec_less_workers_get_names_of_their_own_and_all_become_members(start_node, spawned, tmp_path):
    a = start_node(name="a")
    workers = [spawn(tmp_path, spawned, "--join", a.address, "--listen", f"tcp://127.0.0.1:{free_port()}", label=f"w{i}")
               for i in range(3)]
    wait_until(lambda: len(alive_members(a)) == 4, 30, "a and three workers alive")
    names = alive_members(a) - {"a"}
    ports = {w.address.rsplit(":", 1)[1] for w in workers}
    assert {n.rsplit("-", 1)[1] for n in names} == ports  # HOST-PORT: one name per worker
    for w in workers:
        wait_until(lambda w=w: alive_members(w) == alive_members(a), 30, "every worker to see the same members")


@pytest.mark.timeout(120)
def test_a_node_whose_name_a_live_member_holds_refuses_to_start_and_changes_nothing(start_node, tmp_path):
    a = start_node(name="a")
    w = start_node('[[agents]]\nname = "pw"\nclass = "actors:Echo"\nnode = "w"\n', name="w", args=("--join", a.address),
                   wait=False)
    client = a.client()
    wait_until(lambda: client.actor("pw").ask("hi", timeout=2) == "hi", 30, "w's agent answering through a")
    before = {m["name"]: (m["address"], m["incarnation"]) for m in a.status()["members"]}
    failures: list = []
    stop = threading.Event()

    def ask_forever():
        with mesh.connect(a.address) as c:
            while not stop.is_set():
                try:
                    assert c.actor("pw").ask("still", timeout=5) == "still"
                except Exception as exc:  # any failure counts: the first w must stay reachable
                    failures.append(repr(exc))
                time.sleep(0.02)

    asker = threading.Thread(target=ask_forever, daemon=True)
    asker.start()
    try:
        port = free_port()
        spec = tmp_path / "impostor.toml"
        spec.write_text(f'[node]\nname = "w"\nlisten = "tcp://127.0.0.1:{port}"\n')
        second = subprocess.run([*mesh_command(), "up", str(spec), "--join", a.address], capture_output=True, text=True,
                                timeout=60, env={**os.environ, "MESH_NO_LIVE": "1"})
        assert second.returncode == 2, second.stdout + second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "'w'" in lines[0] and w.address in lines[0] and "--name" in lines[0], second.stderr
        time.sleep(2.0)  # the others keep the first w throughout; the asker keeps asking meanwhile
    finally:
        stop.set()
        asker.join(timeout=15)
    assert failures == []
    after = {m["name"]: (m["address"], m["incarnation"]) for m in a.status()["members"]}
    assert after == before
    assert "w" in a.status()["election"]["voters_heard"] and w.status()["leader"] == a.status()["leader"]


def forge(address: str, sender: str, digest: dict) -> None:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    try:
        sock.connect(address)
        sock.send(wire.encode(int(wire.Kind.EVENT), 1, 0, sender, "$gossip", {"t": "syn", "from": sender, "digest": digest}))
    finally:
        sock.close(linger=1000)


@pytest.mark.timeout(120)
def test_an_impostor_that_leaves_or_dies_never_marks_the_live_member_left_or_dead(start_node):
    a = start_node(name="a")
    w = start_node('[[agents]]\nname = "pw"\nclass = "actors:Echo"\nnode = "w"\n', name="w", args=("--join", a.address),
                   wait=False)
    client = a.client()
    wait_until(lambda: client.actor("pw").ask("hi", timeout=2) == "hi", 30, "w's agent answering through a")
    inc = next(m["incarnation"] for m in a.status()["members"] if m["name"] == "w")
    # A newer incarnation of "w" elsewhere that leaves at once, and another that is never heard again.
    forge(a.address, "w", {f"w@{inc + 1}": [5, 0, "tcp://127.0.0.1:9", True]})
    forge(a.address, "w", {f"w@{inc + 2}": [5, 0, "tcp://127.0.0.1:10", False]})
    deadline = time.monotonic() + 8.0  # past the impostors' suspicion and death
    while time.monotonic() < deadline:
        st = a.status()
        (member,) = [m for m in st["members"] if m["name"] == "w"]
        assert (member["state"], member["incarnation"], member["address"]) == ("alive", inc, w.address)
        assert "w" in st["election"]["voters"]
        time.sleep(0.2)
    assert client.actor("pw").ask("still", timeout=5) == "still"


class GossipPeer:
    """A Gossiper on a real ROUTER socket, pumped by the test as a node's loop pumps it; counts the
    frames that arrive over each connection."""

    def __init__(self, name: str, seeds: list[str]):
        from collections import Counter

        from mesh.runtime.gossiper import Gossiper

        self.router = zmq.Context.instance().socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        port = self.router.bind_to_random_port("tcp://127.0.0.1")
        self.address = f"tcp://127.0.0.1:{port}"
        self.gossiper = Gossiper(name, self.address, seeds)
        self.frames: Counter = Counter()  # connection (ROUTER identity) -> frames received
        self.first: bytes | None = None

    def pump(self) -> None:
        while self.router.poll(0):
            ident, frame = self.router.recv_multipart()
            self.first = self.first or ident
            self.frames[ident] += 1
            env = wire.decode(frame)[0]
            self.gossiper.receive(env[4], env[6])
        self.gossiper.tick()

    def close(self) -> None:
        self.gossiper.close()
        self.router.close(0)


@pytest.mark.timeout(60)
def test_a_seed_given_by_another_name_than_its_member_advertises_is_not_asked_again_once_it_answered():
    a = GossipPeer("a", [])
    b = GossipPeer("b", [a.address.replace("127.0.0.1", "localhost")])  # the member advertises 127.0.0.1

    def pumped(pred):
        def check():
            a.pump()
            b.pump()
            return pred()
        return check

    try:
        wait_until(pumped(lambda: a.gossiper.node.state_of("b") == "alive" and b.gossiper.node.state_of("a") == "alive"),
                   30, "a and b to know each other", interval=0.01)
        seed_connection = a.first  # b's first message went to the seed: a join syn
        wait_until(pumped(lambda: b.gossiper.unanswered_seeds() == []), 30, "the seed to answer", interval=0.01)
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:  # what was on its way arrives
            a.pump(), b.pump()
            time.sleep(0.01)
        before = a.frames[seed_connection]
        deadline = time.monotonic() + 3.0  # six retry periods (JOIN_RETRY_S)
        while time.monotonic() < deadline:
            a.pump(), b.pump()
            time.sleep(0.01)
        assert a.frames[seed_connection] == before, "b still sends to the seed address"
        assert len(a.frames) == 2  # the seed connection and the one to a's advertised address
    finally:
        a.close()
        b.close()
