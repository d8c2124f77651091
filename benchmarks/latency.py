"""Message latency and throughput of mesh against raw pyzmq, in one run, on this machine.

    python benchmarks/latency.py            # a table
    python benchmarks/latency.py --json     # one JSON object
    python benchmarks/latency.py --curve    # everything over CURVE (mesh with keys, raw with CURVE keys)

(a) raw pyzmq DEALER->ROUTER ping-pong between two processes, msgpack payload
    {"n": i, "body": "x" * 64};
(b) ask round trip between two actor processes hosted by a node (actor A asks B);
(c) ask from an embedded client (this process) to an actor;
(d) tell throughput: a stream of small messages acknowledged at the end, from an
    actor and from a client, beside raw PUSH->PULL (also acknowledged at the end);
plus the proportional set size (PSS) of an idle agent process.

With --curve, every socket on both sides speaks CURVE: the node runs with a keys directory made
for the run (``mesh keys``, so ZAP admits each connection once), the raw sockets with a server
and a client keypair (no ZAP: it is asked once per connection, never per message).

Raw pyzmq and mesh are measured in ``--rounds`` interleaved rounds (default 5): each figure is the
median over the rounds, and each ratio the median of the rounds' own ratios, so a machine whose
speed drifts during the run (shared cores, frequency scaling) moves both sides of a ratio alike.

Targets (same run): ask p50 <= 1.15x raw p50, ask p99 <= 1.5x raw p99,
tell >= 0.5x raw PUSH->PULL. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import psutil
import zmq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import mesh  # noqa: E402


def pct(values: list[int], q: float) -> float:
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(q / 100 * (len(values) - 1)))))
    return values[k] / 1000.0  # ns -> us


# -- raw pyzmq ------------------------------------------------------------------


def _serve_curve(sock: zmq.Socket, curve: dict | None) -> None:
    if curve:
        sock.curve_server = True
        sock.curve_secretkey = curve["server_secret"]


def _connect_curve(sock: zmq.Socket, curve: dict | None) -> None:
    if curve:
        sock.curve_serverkey = curve["server_public"]
        sock.curve_publickey = curve["client_public"]
        sock.curve_secretkey = curve["client_secret"]


def raw_curve_keys() -> dict:
    server_public, server_secret = zmq.curve_keypair()
    client_public, client_secret = zmq.curve_keypair()
    return {"server_public": server_public, "server_secret": server_secret, "client_public": client_public,
            "client_secret": client_secret}


def _raw_router(addr_q, curve: dict | None = None) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    _serve_curve(sock, curve)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    addr_q.put(port)
    unpackb, packb = msgpack.unpackb, msgpack.packb
    while True:
        ident, data = sock.recv_multipart()
        msg = unpackb(data)
        if msg == "stop":
            sock.send_multipart([ident, packb("bye")])
            break
        sock.send_multipart([ident, packb(msg)])
    sock.close(0)
    ctx.term()


def raw_pingpong(warmup: int, n: int, curve: dict | None = None) -> list[int]:
    q = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(target=_raw_router, args=(q, curve), daemon=True)
    proc.start()
    port = q.get(timeout=30)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    _connect_curve(sock, curve)
    sock.connect(f"tcp://127.0.0.1:{port}")
    packb, unpackb = msgpack.packb, msgpack.unpackb
    body = {"n": 0, "body": "x" * 64}
    perf = time.perf_counter_ns
    for i in range(warmup):
        body["n"] = i
        sock.send(packb(body))
        unpackb(sock.recv())
    times = []
    for i in range(n):
        body["n"] = i
        t0 = perf()
        sock.send(packb(body))
        unpackb(sock.recv())
        times.append(perf() - t0)
    sock.send(packb("stop"))
    sock.recv()
    sock.close(0)
    ctx.term()
    proc.join(10)
    return times


def _raw_pull(port_q, n: int, curve: dict | None = None) -> None:
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    _serve_curve(pull, curve)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    ack = ctx.socket(zmq.PUSH)
    _serve_curve(ack, curve)
    ack_port = ack.bind_to_random_port("tcp://127.0.0.1")
    port_q.put((port, ack_port))
    unpackb = msgpack.unpackb
    for _ in range(2):  # a warm-up round, then the timed one
        count = 0
        while count < n:
            unpackb(pull.recv())
            count += 1
        ack.send(msgpack.packb(count))
    pull.close(0)
    ack.close()
    ctx.term()


def raw_push_throughput(n: int, curve: dict | None = None) -> float:
    q = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(target=_raw_pull, args=(q, n, curve), daemon=True)
    proc.start()
    port, ack_port = q.get(timeout=30)
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    _connect_curve(push, curve)
    push.connect(f"tcp://127.0.0.1:{port}")
    ack = ctx.socket(zmq.PULL)
    _connect_curve(ack, curve)
    ack.connect(f"tcp://127.0.0.1:{ack_port}")
    packb = msgpack.packb
    elapsed = 0.0
    for _ in range(2):
        t0 = time.perf_counter()
        for i in range(n):
            push.send(packb({"n": i}))
        ack.recv()
        elapsed = time.perf_counter() - t0
    push.close()
    ack.close(0)
    ctx.term()
    proc.join(10)
    return n / elapsed


# -- mesh -----------------------------------------------------------------------------


def start_node(tmp: Path, keys: Path | None = None) -> tuple[subprocess.Popen, str]:
    import socket as pysocket

    with pysocket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    spec = tmp / "bench.toml"
    agents = "".join(
        f'[[agents]]\nname = "{name}"\nclass = "bench_actors:{cls}"\nmailbox = 10000\n\n'
        for name, cls in [("echo", "Echo"), ("pinger", "Pinger"), ("sink", "Sink"), ("streamer", "Streamer")]
    )
    keyed = f'keys = "{keys}"\n' if keys else ""
    spec.write_text(f'[node]\nname = "bench"\nlisten = "{address}"\npath = ["{HERE}"]\n{keyed}\n{agents}')
    env = dict(os.environ, MESH_HOME=str(tmp / "home"), MESH_NO_LIVE="1", MESH_LOG_LEVEL="WARNING")
    env.pop("MESH_KEYS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mesh.cli", "up", str(spec)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with mesh.connect(address, connect_timeout=0.5, keys=_operator(keys)) as c:
                states = [a["state"] for a in c.status()["agents"]]
                if states and all(s == "running" for s in states):
                    return proc, address
        except mesh.NodeUnavailable:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("the benchmark node did not start")


def _operator(keys: Path | None) -> Path | None:
    return keys / "private" / "operator.key_secret" if keys else None


FIGURES = ("raw_rtt_p50_us", "raw_rtt_p99_us", "raw_push_msgs_per_s", "ask_rtt_p50_us", "ask_rtt_p99_us",
           "client_ask_rtt_p50_us", "client_ask_rtt_p99_us", "tell_msgs_per_s", "client_tell_msgs_per_s")


def run(warmup: int, n: int, stream: int, curve: bool = False, rounds: int = 5) -> dict:
    """``rounds`` interleaved rounds, each raw pyzmq then mesh, and the median of each figure over
    them; a ratio is the median of each round's own ratio (raw and mesh measured side by side, so a
    machine whose speed drifts between rounds moves both)."""
    results: dict = {"warmup": warmup, "round_trips": n, "stream_messages": stream, "curve": curve,
                     "rounds": rounds}
    raw_keys = raw_curve_keys() if curve else None
    per_round: list[dict] = []

    with tempfile.TemporaryDirectory() as tmp:
        keys = None
        if curve:
            from mesh.runtime.keys import init_keys

            keys = Path(tmp) / "keys"
            init_keys(keys, ["bench", "operator"])
        proc, address = start_node(Path(tmp), keys)
        try:
            with mesh.connect(address, keys=_operator(keys)) as client:
                st = client.status()
                pids = {a["name"]: a["pid"] for a in st["agents"]}
                results["idle_agent_pss_mb"] = psutil.Process(pids["echo"]).memory_full_info().pss / 2**20
                for _ in range(rounds):
                    per_round.append(_one_round(client, warmup, n, stream, raw_keys))
        finally:
            proc.terminate()
            proc.wait(30)

    for key in FIGURES:
        results[key] = _median([r[key] for r in per_round])

    def ratio(a: str, b: str) -> float:
        return _median([r[a] / r[b] for r in per_round])

    results["ask_p50_vs_raw"] = ratio("ask_rtt_p50_us", "raw_rtt_p50_us")
    results["ask_p99_vs_raw"] = ratio("ask_rtt_p99_us", "raw_rtt_p99_us")
    results["client_ask_p50_vs_raw"] = ratio("client_ask_rtt_p50_us", "raw_rtt_p50_us")
    results["tell_vs_raw_push"] = ratio("tell_msgs_per_s", "raw_push_msgs_per_s")
    results["targets_met"] = {
        "ask_p50 <= 1.15x raw": results["ask_p50_vs_raw"] <= 1.15,
        "ask_p99 <= 1.5x raw": results["ask_p99_vs_raw"] <= 1.5,
        "tell >= 0.5x raw push": results["tell_vs_raw_push"] >= 0.5,
    }
    results["per_round"] = [{k: round(v, 3) for k, v in r.items()} for r in per_round]
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in results.items()}


def _median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def _one_round(client: mesh.Client, warmup: int, n: int, stream: int, raw_keys: dict | None) -> dict:
    """One round: raw pyzmq's round trips and stream, then mesh's, one after the other."""
    r: dict = {}
    raw = raw_pingpong(warmup, n, raw_keys)
    r["raw_rtt_p50_us"] = pct(raw, 50)
    r["raw_rtt_p99_us"] = pct(raw, 99)

    actor_times = client.actor("pinger").ask({"target": "echo", "n": n, "warmup": warmup}, timeout=300)
    r["ask_rtt_p50_us"] = pct(actor_times, 50)
    r["ask_rtt_p99_us"] = pct(actor_times, 99)

    echo = client.actor("echo")
    body = {"n": 0, "body": "x" * 64}
    for i in range(warmup):
        body["n"] = i
        echo.ask(body)
    times = []
    perf = time.perf_counter_ns
    for i in range(n):
        body["n"] = i
        t0 = perf()
        echo.ask(body)
        times.append(perf() - t0)
    r["client_ask_rtt_p50_us"] = pct(times, 50)
    r["client_ask_rtt_p99_us"] = pct(times, 99)

    r["raw_push_msgs_per_s"] = raw_push_throughput(stream, raw_keys)
    streamer = client.actor("streamer")
    streamer.ask({"target": "sink", "n": stream}, timeout=300)  # warm-up
    out = streamer.ask({"target": "sink", "n": stream}, timeout=300)
    assert out["handled"] == stream, out
    r["tell_msgs_per_s"] = stream / (out["ns"] / 1e9)

    sink = client.actor("sink")
    for _ in range(2):
        t0 = time.perf_counter()
        for i in range(stream):
            sink.tell({"n": i})
        handled = sink.ask({"count": True}, timeout=300)
        elapsed = time.perf_counter() - t0
    assert handled == stream, handled
    r["client_tell_msgs_per_s"] = stream / elapsed
    return r


def table(r: dict) -> str:
    over = " (CURVE)" if r.get("curve") else ""
    rows = [
        ("raw pyzmq DEALER->ROUTER rtt", f"p50 {r['raw_rtt_p50_us']:.1f} us", f"p99 {r['raw_rtt_p99_us']:.1f} us", ""),
        ("actor -> actor ask rtt", f"p50 {r['ask_rtt_p50_us']:.1f} us", f"p99 {r['ask_rtt_p99_us']:.1f} us",
         f"{r['ask_p50_vs_raw']:.2f}x / {r['ask_p99_vs_raw']:.2f}x raw"),
        ("client -> actor ask rtt", f"p50 {r['client_ask_rtt_p50_us']:.1f} us", f"p99 {r['client_ask_rtt_p99_us']:.1f} us",
         f"{r['client_ask_p50_vs_raw']:.2f}x raw p50"),
        ("raw pyzmq PUSH->PULL", f"{r['raw_push_msgs_per_s']:,.0f} msg/s", "", ""),
        ("actor -> actor tell stream", f"{r['tell_msgs_per_s']:,.0f} msg/s", "", f"{r['tell_vs_raw_push']:.2f}x raw"),
        ("client -> actor tell stream", f"{r['client_tell_msgs_per_s']:,.0f} msg/s", "", ""),
        ("idle agent PSS", f"{r['idle_agent_pss_mb']:.1f} MB", "", ""),
    ]
    rows = [(row[0] + over, *row[1:]) for row in rows]
    w = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w[i]) for i, c in enumerate(row)).rstrip() for row in rows]
    lines.append(f"medians of {r['rounds']} interleaved rounds (raw pyzmq, then mesh, in each); a ratio is the "
                 "median of the rounds' own ratios")
    lines.append("targets: " + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in r["targets_met"].items()))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="mesh message latency and throughput against raw pyzmq")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("-n", "--round-trips", type=int, default=5000)
    parser.add_argument("--stream", type=int, default=200_000, help="messages per throughput stream")
    parser.add_argument("--curve", action="store_true", help="every socket over CURVE, mesh's and raw pyzmq's")
    parser.add_argument("--rounds", type=int, default=5,
                        help="interleaved rounds of raw pyzmq then mesh; each figure is their median")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    r = run(args.warmup, args.round_trips, args.stream, curve=args.curve, rounds=args.rounds)
    print(json.dumps(r) if args.json else table(r))


if __name__ == "__main__":
    main()
