"""Events on topics: PUB/SUB through the nodes' forwarders against one send per subscriber, in one run.

    python benchmarks/events.py                               # a table
    python benchmarks/events.py --json                        # one JSON object
    python benchmarks/events.py --subscribers 1,10 --events 500 --placements one-node

For 1, 10 and 100 subscribers, and two placements:

- ``one-node``: the publisher (this process's client) and the subscribers on node ``a``;
- ``two-nodes``: the publisher's client on node ``a``, every subscriber on node ``b``;

each measured two ways in the same run: ``pubsub`` (``Client.publish``: one send to the
node's forwarder, ZeroMQ fans out) and ``each`` (``Client._publish_each``: the way events
went before, one send per subscriber, straight to its process).

- events/s delivered: ``--events`` events published back to back; the deliveries to all
  subscribers together, divided by the time from the first publish to the last handler run.
  Deliveries that never arrived are counted (``lost``): events are fire-and-forget.
- publish-to-handler latency p50/p99: ``--latency-events`` events, paced so that they do not
  queue (a gap that grows with the subscribers), each stamped with ``time.monotonic_ns()`` at
  publish; the subscriber's ``on_event`` takes the difference on the same clock (one machine,
  CLOCK_MONOTONIC is system-wide), and answers its samples to an ask at the end.

Subscribers are ordinary agents, each in its own process, started by ``mesh up`` from a spec
(agent class :class:`Subscriber` of this file). A hundred of them fit this 2-core machine:
measured, they start in about 20 s and each costs about 19 MB of PSS (24 GB of memory here),
so they are not packed into fewer processes (the table's last lines give both per run). At most ``max(--subscribers)``
subscriber processes run at once: the one-node placement's nodes are stopped before the
two-node placement's start. Subscriber ``i`` listens to topic ``nK`` for every size ``K > i``,
so a publish on ``n10`` reaches exactly the first ten. Every node is stopped at the end and
the run checks that no process outlived it (``orphans``). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import mesh  # noqa: E402

WAYS = ("pubsub", "each")
PLACEMENTS = ("one-node", "two-nodes")


class Subscriber(mesh.Actor):
    """Subscribes to ``topics``; counts events, notes when the last one ran, and for events marked
    for latency the delay since the stamp. An ask {"report": true} answers and resets all that."""

    def __init__(self, topics: list):
        self.topics = topics

    def on_start(self):
        self._reset()
        for topic in self.topics:
            self.mesh.subscribe(topic)

    def _reset(self):
        self.count, self.last_ns, self.samples = 0, 0, []

    def on_event(self, event):
        now = time.monotonic_ns()
        self.count += 1
        self.last_ns = now
        stamp, timed = event.data[1], event.data[2]
        if timed:
            self.samples.append(now - stamp)

    def on_message(self, message):
        if "report" in message:
            report = {"count": self.count, "last_ns": self.last_ns, "samples": self.samples}
            self._reset()
            return report
        if "subscribed_nodes" in message:
            return self.mesh.subscribed_nodes()
        return None


# -- nodes --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    """A ``mesh up`` process; ``stop()`` ends it and returns the pids of processes that outlived it."""

    def __init__(self, tmp: Path, name: str, subscribers: list[str], sizes: list[int], join: str | None = None):
        self.name = name
        self.address = f"tcp://127.0.0.1:{free_port()}"
        agents = "".join(
            f'[[agents]]\nname = "{sub}"\nclass = "events:Subscriber"\nnode = "{name}"\nmailbox = 100000\n'
            f'config = {{ topics = {json.dumps([f"n{k}" for k in sizes if k > i])} }}\n\n'
            for i, sub in enumerate(subscribers)
        )
        spec = tmp / f"{name}.toml"
        spec.write_text(f'[node]\nname = "{name}"\nlisten = "{self.address}"\npath = ["{HERE}"]\n\n{agents}')
        env = dict(os.environ, MESH_HOME=str(tmp / f"home-{name}"), MESH_NO_LIVE="1", MESH_LOG_LEVEL="WARNING")
        args = [sys.executable, "-m", "mesh.cli", "up", str(spec)] + (["--join", join] if join else [])
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        self.client: mesh.Client | None = None

    def wait_running(self, agents: int, timeout: float = 120.0) -> float:
        """Seconds until the node answers and its ``agents`` agents run."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"node {self.name} exited with {self.proc.returncode}")
            try:
                if self.client is None:
                    self.client = mesh.connect(self.address, connect_timeout=0.5)
                states = [a["state"] for a in self.client.status()["agents"] if a.get("node", self.name) == self.name]
                if len(states) >= agents and all(s == "running" for s in states):
                    return time.monotonic() - t0
            except mesh.NodeUnavailable:
                if self.client is not None:
                    self.client.close()
                    self.client = None
            time.sleep(0.2)
        raise SystemExit(f"node {self.name}: its {agents} agents did not all run within {timeout:.0f} s")

    def pss_mb(self) -> float:
        """The PSS of the node's agent processes, in MB (the node and its zygote left out)."""
        assert self.client is not None
        total = 0
        for agent in self.client.status()["agents"]:
            try:
                total += psutil.Process(agent["pid"]).memory_full_info().pss
            except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, TypeError):
                pass
        return total / 2**20

    def stop(self) -> list[int]:
        procs: list[psutil.Process] = []
        try:
            procs = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        if self.client is not None:
            self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        orphans = []
        for p in procs:
            try:
                p.wait(timeout=10)
            except psutil.TimeoutExpired:
                orphans.append(p.pid)
                p.kill()
            except psutil.NoSuchProcess:
                pass
        return orphans


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


# -- measuring ----------------------------------------------------------------------------------


def pct(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(q / 100 * (len(values) - 1)))))
    return values[k] / 1000.0  # ns -> us


def reports(client: mesh.Client, subs: list[str]) -> list[dict]:
    return [client.actor(s).ask({"report": True}, timeout=30) for s in subs]


def settle(client: mesh.Client, subs: list[str], want: int, quiet_s: float = 5.0) -> list[dict]:
    """Reports once every subscriber counted ``want`` events, or nothing new came for ``quiet_s``.
    Counts accumulate (a report resets the subscriber), so reports are merged here."""
    merged = [{"count": 0, "last_ns": 0, "samples": []} for _ in subs]
    last_change = time.monotonic()
    while True:
        changed = False
        for m, r in zip(merged, reports(client, subs), strict=True):
            if r["count"]:
                changed = True
                m["count"] += r["count"]
                m["last_ns"] = max(m["last_ns"], r["last_ns"])
                m["samples"] += r["samples"]
        if all(m["count"] >= want for m in merged):
            return merged
        now = time.monotonic()
        if changed:
            last_change = now
        elif now - last_change > quiet_s:
            return merged
        time.sleep(0.05)


def measure(client: mesh.Client, subs: list[str], way: str, events: int, latency_events: int) -> dict:
    topic = f"n{len(subs)}"
    send = client.publish if way == "pubsub" else client._publish_each
    now = time.monotonic_ns
    # Warm-up: the publisher's socket or its connections to each subscriber, the subscriber list.
    for i in range(20):
        send(topic, [i, now(), False])
    settle(client, subs, 20)

    t0 = now()
    for i in range(events):
        send(topic, [i, now(), False])
    published_ns = now() - t0
    got = settle(client, subs, events)
    delivered = sum(r["count"] for r in got)
    end = max((r["last_ns"] for r in got), default=t0)
    rate = delivered / ((end - t0) / 1e9) if end > t0 else 0.0

    # Paced so that an event's deliveries are done before the next one is published.
    gap = 0.001 + 0.0002 * len(subs)
    for i in range(latency_events):
        send(topic, [i, now(), True])
        time.sleep(gap)
    timed = settle(client, subs, latency_events)
    samples = [s for r in timed for s in r["samples"]]
    return {
        "subscribers": len(subs),
        "way": way,
        "events": events,
        "delivered": delivered,
        "lost": len(subs) * events - delivered,
        "delivered_per_s": round(rate, 1),
        "publish_per_s": round(events / (published_ns / 1e9), 1),
        "latency_samples": len(samples),
        "latency_lost": len(subs) * latency_events - len(samples),
        "latency_p50_us": round(pct(samples, 50), 1),
        "latency_p99_us": round(pct(samples, 99), 1),
    }


def ready(client: mesh.Client, subs: list[str], nodes: list[str], sizes: list[int]) -> None:
    """Every subscriber connected to every node's forwarder, listed and reachable from ``client``."""
    for sub in subs:
        wait_for(lambda sub=sub: client.actor(sub).ask({"subscribed_nodes": True}, timeout=10) == nodes, 60,
                 f"{sub} subscribed at {nodes}")
        wait_for(lambda sub=sub: client.endpoint_of(sub, timeout=0.0), 60, f"{sub} reachable")
    for k in sizes:
        wait_for(lambda k=k: len(client.control("subscribers", topic=f"n{k}")["actors"]) == k, 60,
                 f"the {k} subscribers of n{k} listed")


def run_placement(placement: str, sizes: list[int], events: int, latency_events: int) -> dict:
    top = max(sizes)
    out: dict = {"placement": placement, "results": []}
    with tempfile.TemporaryDirectory() as tmp:
        host = "a" if placement == "one-node" else "b"
        subs = [f"{host}-{i:03d}" for i in range(top)]
        nodes: list[Node] = []
        try:
            if placement == "one-node":
                a = Node(Path(tmp), "a", subs, sizes)
                nodes.append(a)
                out["start_s"] = round(a.wait_running(top), 1)
                out["subscriber_pss_mb"] = round(a.pss_mb() / top, 1)
                names = ["a"]
            else:
                a = Node(Path(tmp), "a", [], sizes)
                nodes.append(a)
                a.wait_running(0)
                b = Node(Path(tmp), "b", subs, sizes, join=a.address)
                nodes.append(b)
                out["start_s"] = round(b.wait_running(top), 1)
                out["subscriber_pss_mb"] = round(b.pss_mb() / top, 1)
                names = ["a", "b"]
            client = a.client
            assert client is not None
            ready(client, subs, names, sizes)
            for k in sizes:
                for way in WAYS:
                    out["results"].append(measure(client, subs[:k], way, events, latency_events))
        finally:
            orphans: list[int] = []
            for node in reversed(nodes):
                orphans += node.stop()
            out["orphans"] = orphans
    return out


def table(r: dict) -> str:
    head = ("placement", "subs", "way", "delivered/s", "lost", "publish/s", "p50 us", "p99 us")
    rows = [head]
    for p in r["placements"]:
        for m in p["results"]:
            rows.append((p["placement"], str(m["subscribers"]), m["way"], f"{m['delivered_per_s']:,.0f}",
                         str(m["lost"]), f"{m['publish_per_s']:,.0f}", f"{m['latency_p50_us']:,.0f}",
                         f"{m['latency_p99_us']:,.0f}"))
    w = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w[i]) if i > 2 else c.ljust(w[i]) for i, c in enumerate(row)) for row in rows]
    for p in r["placements"]:
        lines.append(f"{p['placement']}: {max(r['sizes'])} subscribers started in {p['start_s']} s, "
                     f"{p['subscriber_pss_mb']} MB PSS each; orphans: {len(p['orphans'])}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="mesh events: PUB/SUB against one send per subscriber")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--subscribers", default="1,10,100", help="comma-separated subscriber counts")
    parser.add_argument("--events", type=int, default=2000, help="events per throughput measurement")
    parser.add_argument("--latency-events", type=int, default=200, help="paced events per latency measurement")
    parser.add_argument("--placements", default=",".join(PLACEMENTS), help="one-node, two-nodes or both")
    args = parser.parse_args()
    sizes = sorted({int(x) for x in args.subscribers.split(",") if x.strip()})
    placements = [p.strip() for p in args.placements.split(",") if p.strip()]
    for p in placements:
        if p not in PLACEMENTS:
            parser.error(f"unknown placement {p!r} (one of {', '.join(PLACEMENTS)})")
    r = {"sizes": sizes, "events": args.events, "latency_events": args.latency_events,
         "placements": [run_placement(p, sizes, args.events, args.latency_events) for p in placements]}
    print(json.dumps(r) if args.json else table(r))


if __name__ == "__main__":
    main()
