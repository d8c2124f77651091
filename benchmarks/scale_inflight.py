"""Asks per second with many in flight: an asyncio client against raw pipelined pyzmq, in one run.

    python benchmarks/scale_inflight.py            # a table
    python benchmarks/scale_inflight.py --json     # one JSON object

mesh: one node on loopback with ten echo agents (``bench_actors:Echo``; ``agent_nice = 0``, as
nice as the raw echoes: by default agents run 10 nicer than their node, see the README, and then
lose the CPU to this client whenever both are busy); an asyncio client
(``mesh.connect``) runs K coroutines that each ``await ref.ask_async(body)`` in turn, so K asks
are in flight, to one agent or spread over the ten.
raw: the same echo in plain pyzmq, a ROUTER per echo process (``benchmarks/latency.py``'s:
msgpack in, msgpack out), and one DEALER that keeps K requests in flight (sends K, then
one more for each answer), connected to one ROUTER or to ten (ZeroMQ spreads the sends).
raw on asyncio: the same DEALER driven the least an asyncio client can that sends a frame per
ask: K coroutines that each send and await a future the socket's reader settles (on this 2-core
machine about 0.6x the blocking loop with 100 in flight: a frame per ask costs more in an event
loop). mesh's asyncio link sends the asks made in one turn of the loop as one batch frame and
the actor answers in batches (README, "Asks in flight go in batches"), so with 10 or 100 in
flight to one agent it runs above both; with one in flight per agent there is nothing to batch,
and an event loop's turn per answer is what it costs beside the blocking loop. Both ratios are
printed.

mesh on uvloop (when ``uvloop`` is installed: ``pip install -e '.[test]'`` brings it): the same
client on uvloop's event loop, whose turn costs less than asyncio's own.

Each figure: ``--asks`` asks (default 10,000) after a warm-up of 1,000, in ``--rounds``
interleaved rounds (raw, then mesh; default 3), the median; the ratio is the median of the
rounds' own ratios. Goal (issue 17): mesh >= 0.9x raw at every K. Printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import zmq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import mesh  # noqa: E402
from latency import _raw_router  # noqa: E402

IN_FLIGHT = (1, 10, 100)
TARGETS = (1, 10)
BODY = {"n": 0, "body": "x" * 64}


try:
    import uvloop
except ImportError:  # the column is left out
    uvloop = None


def _run(coroutine, on_uvloop: bool = False):
    """``coroutine`` to its end on a fresh event loop: asyncio's own, or uvloop's."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop if on_uvloop else None) as runner:
        return runner.run(coroutine)


def _median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


async def _burst(worker, in_flight: int, total: int) -> float:
    """Asks per second of ``in_flight`` workers (``worker(k, count)``) making ``total`` asks together."""
    per, extra = divmod(total, in_flight)
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k, per + (1 if k < extra else 0)) for k in range(in_flight)))
    return total / (time.perf_counter() - t0)


# -- raw pyzmq -----------------------------------------------------------------------------


def raw_echoes(n: int) -> tuple[list, list[int]]:
    ctx = mp.get_context("spawn")
    procs, ports = [], []
    for _ in range(n):
        q = ctx.Queue()
        proc = ctx.Process(target=_raw_router, args=(q,), daemon=True)  # latency.py's echo
        proc.start()
        procs.append(proc)
        ports.append(q.get(timeout=30))
    return procs, ports


def _dealer(ports: list[int]) -> tuple[zmq.Context, zmq.Socket]:
    """A DEALER with unbounded queues, connected to every echo."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    for port in ports:
        sock.connect(f"tcp://127.0.0.1:{port}")
    time.sleep(0.2)  # every connection up, so the sends spread over them all
    return ctx, sock


def raw_pipelined(ports: list[int], in_flight: int, asks: int) -> float:
    """Asks per second from one DEALER keeping ``in_flight`` requests out."""
    ctx, sock = _dealer(ports)
    packb, unpackb = msgpack.packb, msgpack.unpackb
    body = dict(BODY)

    def burst(total: int) -> float:
        t0 = time.perf_counter()
        sent = received = 0
        while sent < min(in_flight, total):
            body["n"] = sent
            sock.send(packb(body))
            sent += 1
        while received < total:
            unpackb(sock.recv())
            received += 1
            if sent < total:
                body["n"] = sent
                sock.send(packb(body))
                sent += 1
        return total / (time.perf_counter() - t0)

    burst(1000)
    rate = burst(asks)
    sock.close(0)
    ctx.term()
    return rate


def raw_asyncio(ports: list[int], in_flight: int, asks: int) -> float:
    """Asks per second from the least an asyncio client can do per ask on raw pyzmq: ``in_flight``
    coroutines that each send and await a future, which the socket's reader settles (a DEALER
    watched with ``loop.add_reader``, no envelope, no timeout). The floor under any asyncio client."""
    ctx, sock = _dealer(ports)
    packb, unpackb = msgpack.packb, msgpack.unpackb
    waiting: dict[int, asyncio.Future] = {}
    events, pollin, noblock = zmq.EVENTS, zmq.POLLIN, zmq.NOBLOCK

    def ready() -> None:
        while sock.getsockopt(events) & pollin:
            answer = unpackb(sock.recv(noblock))
            waiting.pop(answer["n"]).set_result(answer)

    async def worker(k: int, count: int) -> None:
        loop = asyncio.get_running_loop()
        body = dict(BODY)
        for i in range(count):
            n = body["n"] = k * asks + i
            fut = waiting[n] = loop.create_future()
            sock.send(packb(body), noblock)
            ready()  # the send may take the descriptor's edge
            await fut

    async def main() -> float:
        fd = sock.getsockopt(zmq.FD)
        asyncio.get_running_loop().add_reader(fd, ready)
        try:
            await _burst(worker, in_flight, 1000)
            return await _burst(worker, in_flight, asks)
        finally:
            asyncio.get_running_loop().remove_reader(fd)

    rate = asyncio.run(main())
    sock.close(0)
    ctx.term()
    return rate


def stop_raw(procs: list, ports: list[int]) -> None:
    ctx = zmq.Context()
    for port in ports:
        s = ctx.socket(zmq.DEALER)
        s.connect(f"tcp://127.0.0.1:{port}")
        s.send(msgpack.packb("stop"))
        s.poll(2000)
        s.close(0)
    ctx.term()
    for p in procs:
        p.join(5)
        if p.is_alive():
            p.kill()


# -- mesh --------------------------------------------------------------------------------------


def start_node(tmp: Path, agents: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    spec = tmp / "inflight.toml"
    # agent_nice = 0: the echo agents as nice as the raw echo processes and this client (by default
    # agents run 10 nicer than their node, and a busy client on the same 2 cores then outruns them).
    spec.write_text(f'[node]\nname = "inflight"\nlisten = "{address}"\npath = ["{HERE}"]\nagent_nice = 0\n\n'
                    f'[[agents]]\nname = "e"\nclass = "bench_actors:Echo"\nreplicas = {agents}\nmailbox = 10000\n')
    env = dict(os.environ, MESH_HOME=str(tmp / "home"), MESH_NO_LIVE="1", MESH_LOG_LEVEL="WARNING")
    env.pop("MESH_KEYS", None)
    proc = subprocess.Popen([sys.executable, "-m", "mesh.cli", "up", str(spec)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with mesh.connect(address, connect_timeout=0.5) as c:
                states = [a["state"] for a in c.status()["agents"]]
                if len(states) == agents and all(s == "running" for s in states):
                    return proc, address
        except mesh.NodeUnavailable:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the benchmark node did not start")


def mesh_in_flight(client: mesh.Client, names: list[str], in_flight: int, asks: int, on_uvloop: bool = False) -> float:
    refs = [client.actor(n) for n in names]

    async def worker(k: int, count: int) -> None:
        ref = refs[k % len(refs)]
        body = dict(BODY)
        for i in range(count):
            body["n"] = i
            await ref.ask_async(body, timeout=60)

    async def main() -> float:
        await _burst(worker, in_flight, 1000)
        return await _burst(worker, in_flight, asks)

    return _run(main(), on_uvloop)


def run(asks: int, rounds: int) -> dict:
    results: dict = {"asks": asks, "rounds": rounds, "cases": []}
    procs, ports = raw_echoes(max(TARGETS))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            proc, address = start_node(Path(tmp), max(TARGETS))
            try:
                with mesh.connect(address) as client:
                    for targets in TARGETS:
                        names = [f"e.{i}" for i in range(targets)]
                        for k in IN_FLIGHT:
                            raw, raw_aio, ours, uv = [], [], [], []
                            for _ in range(rounds):
                                raw.append(raw_pipelined(ports[:targets], k, asks))
                                raw_aio.append(raw_asyncio(ports[:targets], k, asks))
                                ours.append(mesh_in_flight(client, names, k, asks))
                                if uvloop is not None:
                                    uv.append(mesh_in_flight(client, names, k, asks, on_uvloop=True))
                            results["cases"].append({
                                "targets": targets, "in_flight": k, "raw_asks_per_s": round(_median(raw)),
                                "raw_asyncio_asks_per_s": round(_median(raw_aio)),
                                "mesh_asks_per_s": round(_median(ours)),
                                "vs_raw": round(_median([m / r for m, r in zip(ours, raw, strict=True)]), 3),
                                "vs_raw_asyncio": round(_median([m / r for m, r in zip(ours, raw_aio, strict=True)]), 3),
                                "mesh_uvloop_asks_per_s": round(_median(uv)) if uv else None,
                                "uvloop_vs_raw": round(_median([m / r for m, r in zip(uv, raw, strict=True)]), 3)
                                if uv else None})
            finally:
                proc.terminate()
                proc.wait(30)
    finally:
        stop_raw(procs, ports)
    results["goal_met"] = all(c["vs_raw"] >= 0.9 for c in results["cases"])
    results["goal_met_vs_raw_asyncio"] = all(c["vs_raw_asyncio"] >= 0.9 for c in results["cases"])
    results["goal_met_on_uvloop"] = (all(c["uvloop_vs_raw"] >= 0.9 for c in results["cases"])
                                     if uvloop is not None else None)
    return results


def table(r: dict) -> str:
    uv = r.get("goal_met_on_uvloop") is not None
    lines = [f"{'targets':>7}  {'in flight':>9}  {'raw pyzmq asks/s':>16}  {'raw on asyncio/s':>16}  "
             f"{'mesh ask_async/s':>16}  vs raw  vs raw asyncio" + ("  mesh on uvloop/s  vs raw" if uv else "")]
    for c in r["cases"]:
        lines.append(f"{c['targets']:>7}  {c['in_flight']:>9}  {c['raw_asks_per_s']:>16,}  {c['raw_asyncio_asks_per_s']:>16,}"
                     f"  {c['mesh_asks_per_s']:>16,}  {c['vs_raw']:5.2f}x  {c['vs_raw_asyncio']:13.2f}x"
                     + (f"  {c['mesh_uvloop_asks_per_s']:>16,}  {c['uvloop_vs_raw']:5.2f}x" if uv else ""))
    lines.append(f"medians of {r['rounds']} interleaved rounds of {r['asks']:,} asks; goal >= 0.9x raw: "
                 + ("met" if r["goal_met"] else "MISSED")
                 + "; >= 0.9x raw on asyncio: " + ("met" if r["goal_met_vs_raw_asyncio"] else "MISSED")
                 + ("; >= 0.9x raw on uvloop: " + ("met" if r["goal_met_on_uvloop"] else "MISSED") if uv else ""))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--asks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    r = run(args.asks, args.rounds)
    print(json.dumps(r) if args.json else table(r))


if __name__ == "__main__":
    main()
