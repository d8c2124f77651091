"""Real nodes in this process, on ZeroMQ or on the in-memory twin, for the same test bodies.

``NodeMesh(kind, home)`` starts :class:`~mesh.runtime.node.Node` objects in threads, each on
a host of its own (the node's name), serves embedded actors in threads (host ``actors``,
unless told another), and makes clients (host ``test``, unless told another). On ZeroMQ the
hosts are :class:`hosts.ZmqHosts` (loopback TCP, every link between two hosts through a
relay that can be cut); on the twin they are the hosts of one
:class:`~mesh.runtime.memory.MemoryNetwork`. Either way ``cut(a, b)`` and ``heal()`` act on
the links between hosts, and ``cut_off(name)`` cuts a node from the other nodes only (its
clients still reach it, so a test reads what it says of itself).

A node reads its time from the clock it is given (``clock=``, a FakeClock to run its lease or
heartbeat ages to the instant); its loop still waits in real time.

Agents that a node would spawn as OS processes cannot reach a memory network: tests here
run embedded actors, or none.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import free_port, wait_until
from hosts import ZmqHosts
from mesh import wire
from mesh.actor import Actor
from mesh.runtime.client import Client
from mesh.runtime.clock import REAL_CLOCK, Clock, FakeClock
from mesh.runtime.memory import MemoryNetwork
from mesh.runtime.node import Node
from mesh.runtime.server import Server
from mesh.runtime.transport import Transport
from mesh.spec import NodeSpec, parse_spec

KINDS = ("memory", "zmq")
#: Settings of every test node: fast elections, no pools, a capacity that fits anything.
ELECTION = {"election_timeout_min": 0.6, "election_timeout_max": 1.2, "heartbeat": 0.05}


def declared(*names: str, cls: str = "actors:WhoAmI") -> tuple:
    """Agent specs named ``names`` (for a node spec that declares agents)."""
    return parse_spec({"agents": [{"name": n, "class": cls} for n in names]}).agents


class InProcessNode:
    """A Node running in a thread; ``events`` are the lines it logged, ``housekept`` the clock
    times its loop did housekeeping at (on_tick)."""

    def __init__(self, mesh: "NodeMesh", name: str, node: Node) -> None:
        self.mesh = mesh
        self.name = name
        self.node = node
        self.address = node.address
        self.clock = node.clock
        self.events: list[str] = []
        self.housekept: list[float] = []
        self.failure: BaseException | None = None
        self._status_client: Client | None = None
        self.thread = threading.Thread(target=self._run, name=f"test-node-{name}", daemon=True)

    def _run(self) -> None:
        try:
            self.node.run()
        except BaseException as exc:  # kept for the test to see
            self.failure = exc

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    def status(self) -> dict:
        """What `mesh status --json` shows of this node, asked through its loop."""
        if self._status_client is None:
            self._status_client = self.mesh.client(self, host="test")
        return self._status_client.status()

    def election(self) -> dict:
        return self.status()["election"]

    def logged(self, text: str) -> int:
        """How many lines the node logged that contain ``text``."""
        return sum(text in line for line in list(self.events))

    def housekeeping_at(self, when: float) -> None:
        """Wait until the loop has done housekeeping at clock time ``when`` or later."""
        wait_until(lambda: self.housekept and self.housekept[-1] >= when, 10, f"{self.name} housekeeping at {when:g}")

    def stop(self) -> None:
        self.node.request_stop()
        deadline = time.monotonic() + 20
        while self.thread.is_alive() and time.monotonic() < deadline:
            if isinstance(self.clock, FakeClock):
                self.clock.advance(0.2)  # its housekeeping, and so its stop, runs on its clock
            self.thread.join(0.05)
        assert not self.thread.is_alive(), f"node {self.name} did not stop"


class NodeMesh:
    """In-process nodes, embedded actors and clients on one kind of transport; all closed by close()."""

    def __init__(self, kind: str, home: Path) -> None:
        assert kind in KINDS
        self.kind = kind
        self.home = home
        self.network = MemoryNetwork() if kind == "memory" else None
        self.hosts = ZmqHosts() if kind == "zmq" else None
        self.nodes: dict[str, InProcessNode] = {}
        self._servers: list[tuple[Server, threading.Thread]] = []
        self._clients: list[Client] = []
        self.crashes: dict[str, BaseException] = {}

    def transport(self, host: str) -> Transport:
        if self.network is not None:
            return self.network.transport(host)
        assert self.hosts is not None
        return self.hosts.transport(host)

    # -- nodes ------------------------------------------------------------------------------

    def start(self, name: str, *, join: tuple[InProcessNode | str, ...] = (), agents: tuple = (), voter: bool = True,
              clock: Clock = REAL_CLOCK, **spec: Any) -> InProcessNode:
        """Start node ``name`` (joining ``join``: nodes, or addresses) in a thread; returns once it listens."""
        address = f"mem://{name}:1" if self.kind == "memory" else f"tcp://127.0.0.1:{free_port()}"
        settings = {**ELECTION, **spec}
        node_spec = NodeSpec(file="<spec>", base_dir=str(self.home), name=name, listen=address, voter=voter,
                             capacity_cpu=64.0, capacity_memory=64 << 30, agents=agents, **settings)
        events: list[str] = []
        housekept: list[float] = []
        node = Node(node_spec, on_event=events.append, join=tuple(j if isinstance(j, str) else j.address for j in join),
                    on_tick=lambda n: housekept.append(n.clock.monotonic()), transport=self.transport(name), clock=clock)
        node.bind()
        handle = InProcessNode(self, name, node)
        handle.events, handle.housekept = events, housekept
        self.nodes[name] = handle
        handle.thread.start()
        return handle

    def start_mesh(self, *names: str, **options: Any) -> list[InProcessNode]:
        """Nodes ``names``: the first alone, the others joining it; once all know each other alive."""
        first = self.start(names[0], **options)
        nodes = [first] + [self.start(n, join=(first,), **options) for n in names[1:]]
        wait_until(lambda: all(self.alive_members(x) == set(names) for x in nodes), 20, f"{names} to meet")
        return nodes

    def alive_members(self, node: InProcessNode) -> set[str]:
        return {m["name"] for m in node.status()["members"] if m["state"] == "alive"}

    def agreed_leader(self, nodes: list[InProcessNode]) -> tuple[str, int] | None:
        """(leader, term) if every one of ``nodes`` names the same leader in the same term."""
        seen = set()
        for n in nodes:
            st = n.status()
            if st["leader"] is None:
                return None
            seen.add((st["leader"], st["term"]))
        return seen.pop() if len(seen) == 1 else None

    # -- links between hosts ---------------------------------------------------------------

    def cut(self, a: str, b: str, *, one_way: bool = False) -> None:
        if self.network is not None:
            self.network.cut(a, b, one_way=one_way)
        else:
            assert self.hosts is not None
            self.hosts.cut(a, b, one_way=one_way)

    def cut_off(self, name: str) -> None:
        """Cut node ``name`` from every other node (both ways); clients and actors still reach it."""
        for other in self.nodes:
            if other != name:
                self.cut(name, other)

    def heal(self) -> None:
        if self.network is not None:
            self.network.heal()
        else:
            assert self.hosts is not None
            self.hosts.heal()

    # -- actors and clients ----------------------------------------------------------------

    def client(self, node: InProcessNode, *, host: str = "test", **options: Any) -> Client:
        client = Client(node.address, transport=self.transport(host), **options)
        self._clients.append(client)
        return client

    def serve(self, actor: Actor, name: str, node: InProcessNode, *, host: str = "actors", wait: bool = True,
              **options: Any) -> Server:
        """Serve ``actor`` in a thread (as ``mesh.serve`` embeds one), registered with ``node``."""
        bind = f"mem://{host}" if self.kind == "memory" else None
        server = Server(actor, name, node.address, transport=self.transport(host), bind=bind, **options)

        def run() -> None:
            try:
                server.run()
            except BaseException as exc:  # kept for the test to see
                self.crashes[name] = exc

        thread = threading.Thread(target=run, name=f"test-serve-{name}", daemon=True)
        thread.start()
        self._servers.append((server, thread))
        if wait:
            wait_until(lambda: server.endpoint is not None and self._registered(node, name, server.endpoint) or
                       self.crashes.get(name), 15, f"{name} registered with {node.name}")
            if name in self.crashes:
                raise self.crashes[name]
        return server

    def stop_serving(self, server: Server) -> None:
        """Stop a served actor the way its process would (it unregisters) and wait for its thread."""
        for s, thread in self._servers:
            if s is server:
                server.request_stop()
                thread.join(15)
                assert not thread.is_alive(), f"{server.name} did not stop"

    def _registered(self, node: InProcessNode, name: str, endpoint: str) -> bool:
        return any(a["name"] == name and a["endpoint"] == endpoint and a["state"] == "running"
                   for a in node.status()["agents"])

    def close(self) -> None:
        self.heal()
        for client in self._clients:
            client.close()
        for server, _ in self._servers:
            server.request_stop()
        for _, thread in self._servers:
            thread.join(10)
        for node in self.nodes.values():
            if node.running:
                node.stop()
        if self.hosts is not None:
            self.hosts.close()


@pytest.fixture(name="world", params=KINDS)
def world_fixture(request, tmp_path, monkeypatch):
    """A NodeMesh on each transport in turn; the nodes keep their files under the test's folder."""
    monkeypatch.setenv("MESH_HOME", str(tmp_path / "home"))
    made = NodeMesh(request.param, tmp_path)
    yield made
    made.close()


def forged_decision(term: int, node: str, *, leader: str = "ghost", seq: int = 99) -> tuple[dict, dict]:
    """Two gossip messages from a member ``leader`` nobody knew: one that makes it a member, and a push
    of its assignment of term ``term`` that places a replica on ``node`` (fencing must refuse it)."""
    from mesh.core.hlc import make as stamp
    from mesh.spec import agent_to_wire

    spec = parse_spec({"agents": [{"name": "forged", "class": "actors:WhoAmI"}]})
    decision = {"term": term, "leader": leader, "seq": seq, "unplaced": {}, "conflicts": [],
                "replicas": {"forged": {"node": node, "group": "forged", "home": leader,
                                        "spec": agent_to_wire(spec.agents[0], spec)}}}
    entry = [f"$assign/{term}", decision, stamp(int(time.time() * 1000)), leader, 1, False]
    introduce = {"t": "syn", "from": leader, "digest": {f"{leader}@1": [1, 1, "", False]}}
    push = {"t": "push", "from": leader, "delta": [[f"{leader}@1", 0, 1, [entry]]]}
    return introduce, push


def send_gossip(transport: Transport, address: str, sender: str, *bodies: dict) -> None:
    """Send gossip messages to a node's address as a peer would (one-way, never blocking)."""
    outlet = transport.outlet(address, hwm=100, max_bytes=wire.MAX_FRAME_BYTES, linger_ms=1000)
    try:
        for i, body in enumerate(bodies, 1):
            frame = wire.encode(int(wire.Kind.EVENT), i, 0, sender, "$gossip", body)
            wait_until(lambda frame=frame: outlet.send_nowait(frame), 5, "room to send gossip")
    finally:
        outlet.close(1000)


__all__ = ["KINDS", "InProcessNode", "NodeMesh", "declared", "forged_decision", "send_gossip", "world_fixture"]
