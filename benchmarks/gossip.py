"""Gossip dissemination, measured in the deterministic simulator.

    python benchmarks/gossip.py            # a table
    python benchmarks/gossip.py --json     # one JSON object

1. Spread of one update in meshes of N = 8, 32, 128, 256 nodes (1 ms links, no
   loss): gossip rounds until every node has it, and messages that carried it.
2. The Gossip Glomers 3d setting: 25 nodes, 100 ms link latency, 100 writes per
   second at random nodes for 20 simulated seconds: messages between nodes per
   write, and the median and maximum time for a write to reach every node.
   Targets: fewer than 20 messages per write, median under 400 ms, max under 600 ms.

3. Real processes: 16 `mesh up` nodes on loopback; the time for a write to reach
   all of them (p50, p99; target p99 under 500 ms), and the time until every
   survivor marks a SIGKILLed node dead.

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mesh.core.effects import Event  # noqa: E402
from mesh.core.gossip import GossipConfig, GossipNode  # noqa: E402
from mesh.sim import Network, Simulation  # noqa: E402


def build(n: int, seed: int, delay: tuple[float, float], config: GossipConfig) -> tuple[Simulation, list[str]]:
    names = [f"n{i}" for i in range(n)]

    def factory(name, rng, storage, now):
        return GossipNode(name, 0, config, rng, now, seeds=tuple(names))

    sim = Simulation(seed, names, factory, Network(delay=delay), tick_interval=config.interval, trace=False)
    return sim, names


def carried(message: object, key: str) -> bool:
    if not isinstance(message, dict):
        return False
    for item in message.get("delta") or []:
        for entry in item[3]:
            if entry[0] == key:
                return True
    return False


def spread_one(n: int, seed: int = 1) -> dict:
    config = GossipConfig(interval=0.1)
    sim, names = build(n, seed, (0.001, 0.001), config)
    sim.run(3.0)  # everyone has met everyone
    counted = {"messages": 0}
    original = sim._send

    def spy(src, dst, message):
        if carried(message, "probe"):
            counted["messages"] += 1
        original(src, dst, message)

    sim._send = spy
    start = sim.now
    sim._apply(names[0], sim.nodes[names[0]].set("probe", 1, sim.now))
    sim.run_until(lambda s: all(m.get("probe") == 1 for m in s.nodes.values()), start + 60.0, step=config.interval / 4)
    elapsed = sim.now - start
    return {"nodes": n, "rounds": round(elapsed / config.interval, 1), "seconds": round(elapsed, 3),
            "messages_per_update": counted["messages"]}


def glomers(seed: int = 1, nodes: int = 25, rate: float = 100.0, seconds: float = 20.0) -> dict:
    config = GossipConfig(interval=0.1)
    sim, names = build(nodes, seed, (0.1, 0.1), config)
    sim.run(3.0)
    rng = random.Random(seed)
    writes: dict[str, float] = {}
    start = sim.now
    sent_before = sim.sent
    t = start
    i = 0
    while t < start + seconds:
        t += rng.expovariate(rate)
        key = f"w{i}"
        node = rng.choice(names)
        sim.at(t, lambda key=key, node=node, t=t: (writes.__setitem__(key, t),
                                                   sim._apply(node, sim.nodes[node].set(key, 1, sim.now))))
        i += 1
    sim.run(start + seconds)
    sent_during = sim.sent - sent_before
    sim.run(start + seconds + 10.0)
    reached: dict[str, dict[str, float]] = {}
    for when, node, ev in sim.events:
        if isinstance(ev, Event) and ev.name == "changed":
            key = ev.data["key"]
            if key in writes:
                reached.setdefault(key, {}).setdefault(node, when)
    spread = []
    for key, t0 in writes.items():
        seen = reached.get(key, {})
        if len(seen) == nodes:
            spread.append(max(seen.values()) - t0)
    return {
        "nodes": nodes,
        "writes": len(writes),
        "writes_everywhere": len(spread),
        "messages_per_write": round(sent_during / max(1, len(writes)), 2),
        "spread_median_ms": round(statistics.median(spread) * 1000, 1) if spread else None,
        "spread_max_ms": round(max(spread) * 1000, 1) if spread else None,
    }


def real_processes(nodes: int = 16, writes: int = 40) -> dict:
    """Real `mesh up` processes on loopback: write spread and death detection times."""
    import os
    import signal
    import socket
    import subprocess
    import tempfile
    import time

    import mesh

    def free_port() -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    tmp = Path(tempfile.mkdtemp(prefix="mesh-gossip-bench-"))
    env = dict(os.environ, MESH_HOME=str(tmp / "home"), MESH_NO_LIVE="1", MESH_LOG_LEVEL="WARNING")
    addresses = [f"tcp://127.0.0.1:{free_port()}" for _ in range(nodes)]
    procs = []
    try:
        for i, address in enumerate(addresses):
            spec = tmp / f"n{i}.toml"
            spec.write_text(f'[node]\nname = "n{i}"\nlisten = "{address}"\n')
            join = ["--join", addresses[0]] if i else []
            procs.append(subprocess.Popen([sys.executable, "-m", "mesh.cli", "up", str(spec), *join],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
        clients = []
        deadline = time.monotonic() + 60
        for address in addresses:
            while True:
                try:
                    clients.append(mesh.connect(address, connect_timeout=0.5))
                    break
                except mesh.NodeUnavailable:
                    if time.monotonic() > deadline:
                        raise SystemExit("the benchmark nodes did not start") from None
                    time.sleep(0.1)

        def alive_everywhere(count: int) -> bool:
            return all(sum(m["state"] == "alive" for m in c.status()["members"]) == count for c in clients)

        while not alive_everywhere(nodes):
            if time.monotonic() > deadline:
                raise SystemExit("the benchmark nodes did not all meet")
            time.sleep(0.2)
        spread = []
        rng = random.Random(1)
        for i in range(writes):
            writer = rng.randrange(nodes)
            key = f"bench/{i}"
            t0 = time.perf_counter()
            clients[writer].state.set(key, i)
            pending = set(range(nodes))
            while pending:
                pending = {j for j in pending if clients[j].state.get(key) != i}
                if time.perf_counter() - t0 > 10:
                    break
            spread.append(time.perf_counter() - t0)
        victim = nodes - 1
        procs[victim].send_signal(signal.SIGKILL)
        t0 = time.perf_counter()
        survivors = clients[:victim]
        while True:
            states = [next((m["state"] for m in c.status()["members"] if m["name"] == f"n{victim}"), None)
                      for c in survivors]
            if all(st == "dead" for st in states) or time.perf_counter() - t0 > 60:
                break
            time.sleep(0.05)
        dead_after = time.perf_counter() - t0
        for c in clients:
            c.close()
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
    spread.sort()
    return {
        "nodes": nodes,
        "writes": writes,
        "write_spread_p50_ms": round(statistics.median(spread) * 1000, 1),
        "write_spread_p99_ms": round(spread[min(len(spread) - 1, int(0.99 * len(spread)))] * 1000, 1),
        "sigkill_to_dead_everywhere_s": round(dead_after, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--sizes", default="8,32,128,256")
    parser.add_argument("--real-nodes", type=int, default=16, help="real node processes on loopback (0: skip)")
    args = parser.parse_args()
    result = {
        "spread": [spread_one(int(n)) for n in args.sizes.split(",")],
        "glomers_3d": glomers(),
    }
    if args.real_nodes:
        result["real"] = real_processes(args.real_nodes)
    g = result["glomers_3d"]
    result["targets_met"] = {
        "messages per write < 20": g["messages_per_write"] < 20,
        "median < 400 ms": (g["spread_median_ms"] or 1e9) < 400,
        "max < 600 ms": (g["spread_max_ms"] or 1e9) < 600,
    }
    if "real" in result:
        result["targets_met"]["real p99 < 500 ms"] = result["real"]["write_spread_p99_ms"] < 500
    if args.json:
        print(json.dumps(result))
        return
    print("one update, 1 ms links, no loss")
    print(f"  {'nodes':>6} {'rounds':>7} {'seconds':>8} {'messages':>9}")
    for r in result["spread"]:
        print(f"  {r['nodes']:>6} {r['rounds']:>7} {r['seconds']:>8} {r['messages_per_update']:>9}")
    print("Gossip Glomers 3d: 25 nodes, 100 ms links, 100 writes/s for 20 s")
    print(f"  messages per write {g['messages_per_write']}, spread median {g['spread_median_ms']} ms, "
          f"max {g['spread_max_ms']} ms ({g['writes_everywhere']}/{g['writes']} writes reached every node)")
    if "real" in result:
        r = result["real"]
        print(f"real processes: {r['nodes']} nodes on loopback, {r['writes']} writes")
        print(f"  write reaches every node: p50 {r['write_spread_p50_ms']} ms, p99 {r['write_spread_p99_ms']} ms")
        print(f"  SIGKILLed node marked dead by every survivor after {r['sigkill_to_dead_everywhere_s']} s")
    print("targets: " + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in result["targets_met"].items()))


if __name__ == "__main__":
    main()
