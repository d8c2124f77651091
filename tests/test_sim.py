"""The simulator: same seed, same trace; the network faults it promises."""

from __future__ import annotations

import pytest

from mesh.core.effects import Event, Send
from mesh.sim import Network, Simulation


class Flood:
    """A toy protocol: every node re-sends each new rumour to every other node once."""

    def __init__(self, node, rng, storage, now, peers):
        self.node = node
        self.peers = [p for p in peers if p != node]
        self.known: set[str] = set(storage.get("known", ()))
        self.storage = storage
        self.rng = rng

    def start(self, rumour):
        return self._learn(rumour)

    def _learn(self, rumour):
        if rumour in self.known:
            return []
        self.known.add(rumour)
        self.storage["known"] = sorted(self.known)
        return [Event("learned", rumour)] + [Send(p, rumour) for p in self.peers]

    def step(self, sender, message, now):
        return self._learn(message)

    def tick(self, now):
        # A little randomness of its own, so determinism covers the node RNGs too.
        if self.rng.random() < 0.01 and self.known:
            return [Send(self.rng.choice(self.peers), sorted(self.known)[0])]
        return []


NODES = [f"n{i}" for i in range(6)]


def flood_sim(seed, network=None):
    sim = Simulation(seed, NODES, lambda n, rng, st, now: Flood(n, rng, st, now, NODES),
                     network or Network(delay=(0.001, 0.05), loss=0.2, duplicate=0.2))
    sim.at(0.1, lambda: sim._apply("n0", sim.nodes["n0"].start("hello")))
    return sim


@pytest.mark.parametrize("seed", range(20))
def test_the_same_seed_gives_the_same_trace(seed):
    a, b = flood_sim(seed), flood_sim(seed)
    a.run(5.0)
    b.run(5.0)
    assert a.trace_hash() == b.trace_hash()
    assert a.events == b.events


def test_different_seeds_give_different_traces():
    hashes = set()
    for seed in range(10):
        sim = flood_sim(seed)
        sim.run(5.0)
        hashes.add(sim.trace_hash())
    assert len(hashes) == 10


def test_a_lossless_network_delivers_every_message():
    sim = flood_sim(1, Network(delay=(0.001, 0.002)))
    sim.run(2.0)
    assert all("hello" in m.known for m in sim.nodes.values())
    assert sim.delivered == sim.sent


class Quiet:
    def step(self, sender, message, now):
        return []

    def tick(self, now):
        return []


def test_loss_and_duplication_happen_at_about_their_rates():
    sim = Simulation(3, ["a", "b"], lambda n, rng, st, now: Quiet(),
                     Network(delay=(0.001, 0.002), loss=0.3, duplicate=0.5))
    for i in range(4000):
        sim._send("a", "b", f"m{i}")
    sim.run(1.0)
    # Of 4000 sends about 70% survive the loss, and about half of those arrive twice.
    assert 0.66 * 4000 * 1.5 < sim.delivered < 0.74 * 4000 * 1.5


def test_a_cut_link_delivers_nothing_until_healed():
    sim = Simulation(4, ["a", "b", "c"], lambda n, rng, st, now: Flood(n, rng, st, now, ["a", "b", "c"]),
                     Network(delay=(0.001, 0.002)))
    sim.isolate("c")
    sim._apply("a", sim.nodes["a"].start("x"))
    sim.run(1.0)
    assert "x" in sim.nodes["b"].known and "x" not in sim.nodes["c"].known
    sim.heal()
    sim._apply("a", sim.nodes["a"].start("y"))
    sim.run(2.0)
    assert "y" in sim.nodes["c"].known


def test_a_crashed_node_receives_nothing_and_restarts_with_its_storage_only():
    sim = Simulation(5, ["a", "b"], lambda n, rng, st, now: Flood(n, rng, st, now, ["a", "b"]),
                     Network(delay=(0.001, 0.002)))
    sim._apply("a", sim.nodes["a"].start("before"))
    sim.run(1.0)
    sim.crash("b")
    sim._apply("a", sim.nodes["a"].start("during"))
    sim.run(2.0)
    assert "b" not in sim.live()
    sim.restart("b")
    assert sim.nodes["b"].known == {"before"}  # what it stored survived; nothing else did


def test_network_rejects_nonsense_settings():
    with pytest.raises(ValueError):
        Network(loss=1.5)
    with pytest.raises(ValueError):
        Network(delay=(0.2, 0.1))
