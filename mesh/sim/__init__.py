"""A deterministic simulator for mesh's protocol state machines.

Any object with ``step(sender, message, now) -> list`` and ``tick(now) -> list``
(returning :class:`mesh.core.effects.Send` and :class:`~mesh.core.effects.Event`)
can run here under virtual time on a seeded network::

    from mesh.core.effects import Event, Send
    from mesh.sim import Network, Simulation

    class Pinger:                               # a toy protocol: ping every peer once a second
        def __init__(self, node, rng, storage, now):
            self.node, self.peers, self.next_at = node, [p for p in "abc" if p != node], now + 1.0

        def step(self, sender, message, now):   # a message arrived
            return [Event("heard", (sender, message))]

        def tick(self, now):                    # called every tick_interval of virtual time
            if now < self.next_at:
                return []
            self.next_at = now + 1.0
            return [Send(peer, "ping") for peer in self.peers]

    def make_machine(node, rng, storage, now):  # also called again when a node restarts
        return Pinger(node, rng, storage, now)

    sim = Simulation(seed=7, nodes=["a", "b", "c"], factory=make_machine,
                     network=Network(delay=(0.001, 0.02), loss=0.3, duplicate=0.1))
    sim.run(until=30.0)
    sim.cut("a", "b"); sim.run(until=40.0); sim.heal()
    sim.crash("c"); sim.run(until=45.0); sim.restart("c"); sim.run(until=50.0)
    print(len(sim.events), sim.trace_hash())    # the same seed prints the same line

The network delays each message by a random time within ``delay`` (so messages
are reordered), drops it with probability ``loss``, delivers it twice with
probability ``duplicate``, and never delivers across a cut link. Nodes can crash
(they stop receiving and ticking, and lose everything but their ``storage``) and
restart (the factory builds them again with the same storage). The same seed gives
the same trace, event for event; :meth:`Simulation.trace_hash` proves it.

Invariant checkers are plain functions over ``sim.nodes`` (the live machines) or
``sim.events`` (every Event emitted, with its time and node).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..core.effects import Event, Send


class Machine(Protocol):
    """A protocol machine: its outputs are Send and Event (others are not carried out here)."""

    def step(self, sender: str, message: object, now: float) -> Sequence[object]: ...

    def tick(self, now: float) -> Sequence[object]: ...


@dataclass
class Network:
    """Link behaviour. Times in seconds, probabilities in [0, 1]."""

    delay: tuple[float, float] = (0.001, 0.010)
    loss: float = 0.0
    duplicate: float = 0.0

    def __post_init__(self) -> None:
        lo, hi = self.delay
        if not 0 <= lo <= hi:
            raise ValueError("delay must be (min, max) with 0 <= min <= max seconds")
        for name in ("loss", "duplicate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1]")


@dataclass(order=True)
class _Item:
    at: float
    seq: int
    action: Callable[[], None] = field(compare=False)


#: Builds a node's machine: factory(node_id, rng, storage, now) -> Machine.
Factory = Callable[[str, random.Random, dict[str, Any], float], Machine]


class Simulation:
    def __init__(
        self,
        seed: int,
        nodes: list[str],
        factory: Factory,
        network: Network | None = None,
        tick_interval: float = 0.01,
        trace: bool = True,
    ):
        self.seed = seed
        self.rng = random.Random(seed)
        self.network = network or Network()
        self.tick_interval = tick_interval
        self.factory = factory
        self.now = 0.0
        self.nodes: dict[str, Machine] = {}
        self.storage: dict[str, dict[str, Any]] = {n: {} for n in nodes}
        self.crashed: set[str] = set()
        self.cuts: set[frozenset[str]] = set()
        self.events: list[tuple[float, str, Event]] = []
        self.sent = 0
        self.delivered = 0
        self._queue: list[_Item] = []
        self._seq = itertools.count()
        self._trace_on = trace
        self._hash = hashlib.sha256()
        self._incarnation: dict[str, int] = {}
        self.node_rng: dict[str, random.Random] = {}
        for n in nodes:
            self._boot(n)

    # -- the world ---------------------------------------------------------------

    def _boot(self, node: str) -> None:
        inc = self._incarnation.get(node, -1) + 1
        self._incarnation[node] = inc
        rng = random.Random(f"{self.seed}/{node}/{inc}")
        self.node_rng[node] = rng
        self.nodes[node] = self.factory(node, rng, self.storage[node], self.now)
        self._at(self.now + rng.uniform(0, self.tick_interval), lambda: self._tick(node, inc))

    def _at(self, at: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._queue, _Item(at, next(self._seq), action))

    def at(self, at: float, action: Callable[[], None]) -> None:
        """Run ``action()`` at virtual time ``at`` (for scripted scenarios)."""
        self._at(at, action)

    def _record(self, *parts: object) -> None:
        if self._trace_on:
            self._hash.update(repr((round(self.now, 9),) + parts).encode())

    def _tick(self, node: str, inc: int) -> None:
        if node in self.crashed or self._incarnation[node] != inc:
            return
        self._apply(node, self.nodes[node].tick(self.now))
        self._at(self.now + self.tick_interval, lambda: self._tick(node, inc))

    def _apply(self, node: str, outputs: Sequence[object]) -> None:
        for out in outputs:
            if type(out) is Send:
                self._send(node, out.to, out.message)
            elif type(out) is Event:
                self.events.append((self.now, node, out))
                self._record("event", node, out.name, out.data)

    def _send(self, src: str, dst: str, message: object) -> None:
        self.sent += 1
        net = self.network
        rng = self.rng
        if rng.random() < net.loss:
            self._record("lost", src, dst)
            return
        copies = 2 if rng.random() < net.duplicate else 1
        for _ in range(copies):
            delay = rng.uniform(*net.delay)
            self._at(self.now + delay, lambda: self._deliver(src, dst, message))

    def _deliver(self, src: str, dst: str, message: object) -> None:
        if dst in self.crashed or dst not in self.nodes or frozenset((src, dst)) in self.cuts:
            self._record("dropped", src, dst)
            return
        self.delivered += 1
        self._record("deliver", src, dst, message)
        self._apply(dst, self.nodes[dst].step(src, message, self.now))

    # -- running ------------------------------------------------------------------------

    def run(self, until: float) -> None:
        """Advance virtual time to ``until`` seconds, carrying out everything due."""
        queue = self._queue
        while queue and queue[0].at <= until:
            item = heapq.heappop(queue)
            self.now = item.at
            item.action()
        self.now = max(self.now, until)

    def run_until(self, predicate: Callable[["Simulation"], bool], limit: float, step: float = 0.05) -> bool:
        """Run until ``predicate(sim)`` holds (checked every ``step`` s) or time ``limit``."""
        while self.now < limit:
            if predicate(self):
                return True
            self.run(min(limit, self.now + step))
        return predicate(self)

    # -- faults ---------------------------------------------------------------------------

    def cut(self, a: str, b: str) -> None:
        self.cuts.add(frozenset((a, b)))
        self._record("cut", a, b)

    def isolate(self, node: str) -> None:
        for other in self.storage:
            if other != node:
                self.cut(node, other)

    def partition(self, *groups: list[str]) -> None:
        """Cut every link between different groups."""
        for g1, g2 in itertools.combinations(groups, 2):
            for a in g1:
                for b in g2:
                    self.cut(a, b)

    def heal(self) -> None:
        self.cuts.clear()
        self._record("heal")

    def crash(self, node: str) -> None:
        self.crashed.add(node)
        self.nodes.pop(node, None)
        self._record("crash", node)

    def restart(self, node: str) -> None:
        self.crashed.discard(node)
        self._record("restart", node)
        self._boot(node)

    # -- results --------------------------------------------------------------------------

    def live(self) -> dict[str, Machine]:
        return {n: m for n, m in self.nodes.items() if n not in self.crashed}

    def trace_hash(self) -> str:
        return self._hash.hexdigest()
