"""A gossip mesh under the simulator, with a script of random writes, deletes and faults."""

from __future__ import annotations

import random

from mesh.core.gossip import GossipConfig, GossipNode
from mesh.sim import Network, Simulation

KEYS = [f"k{i}" for i in range(8)]


def make_sim(seed: int, n: int = 5, loss: float = 0.3, duplicate: float = 0.2, config: GossipConfig | None = None,
             delay=(0.001, 0.08)):
    names = [f"n{i}" for i in range(n)]
    cfg = config or GossipConfig(interval=0.1, dead_after=1.0, dead_grace=5.0, tombstone_grace=30.0)

    def factory(name, rng, storage, now):
        inc = storage.get("incarnation", -1) + 1
        storage["incarnation"] = inc
        return GossipNode(name, inc, cfg, rng, now, seeds=tuple(names))

    sim = Simulation(seed, names, factory, Network(delay=delay, loss=loss, duplicate=duplicate),
                     tick_interval=cfg.interval)
    return sim, names


def write(sim: Simulation, node: str, key: str, value, log: list) -> None:
    if node not in sim.live():
        return
    machine = sim.nodes[node]
    if value is None:
        sim._apply(node, machine.delete(key, sim.now))
    else:
        sim._apply(node, machine.set(key, value, sim.now))
    entry = machine.view.get(key)
    if entry is not None:
        log.append((entry.stamp, key, None if entry.tombstone else entry.value))


def random_workload(sim: Simulation, names: list[str], rng: random.Random, start: float, end: float, count: int,
                    log: list) -> None:
    for i in range(count):
        at = rng.uniform(start, end)
        node = rng.choice(names)
        key = rng.choice(KEYS)
        value = None if rng.random() < 0.3 else f"v{i}"
        sim.at(at, lambda node=node, key=key, value=value: write(sim, node, key, value, log))


def expected_state(log: list) -> dict:
    """Last writer wins over everything written: what every node must end with."""
    best: dict = {}
    for stamp, key, value in log:
        if key not in best or stamp > best[key][0]:
            best[key] = (stamp, value)
    return {k: v for k, (s, v) in best.items() if v is not None}


def converged(sim: Simulation) -> bool:
    views = [m.items() for m in sim.live().values()]
    return all(v == views[0] for v in views)
