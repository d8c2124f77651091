"""A flood of malformed frames at a node and at an agent, while a client keeps asking both.

    python benchmarks/flood.py                  # 5 minutes, a table
    python benchmarks/flood.py --seconds 30     # shorter
    python benchmarks/flood.py --json           # one JSON object

Starts a real node (``mesh up``) with one echo agent and floods both ROUTERs from
``--workers`` processes per target, each with ``--connections`` DEALERs that are
replaced by fresh ones (fresh identities) every ``--reconnect`` seconds, plus a
thread of raw TCP connections that send bytes that are not ZMTP. Every worker sends,
in turn: random bytes, truncated envelopes, huge declared lengths (arrays, maps,
strings, binaries of 4 billion items), nesting 1000 and 5000 deep (also inside a
field), messages of many frames, envelopes with fields of the wrong type, and frames
as large as the target takes (4 MiB for the agent, the node's 2.25 MiB) made of
random bytes, of empty arrays, and of a valid envelope whose body is millions of
empty arrays; and a frame over the limit now and then (libzmq cuts that connection).
Traffic goes to 127.0.0.1 only; every loop is bounded by the deadline.

Meanwhile the main process asks the agent (echo) and the node (ping) ``--rate`` times a
second each with a mesh client and samples both processes' RSS every 0.2 s.

Reported: frames sent per kind, bad frames counted by each target, RSS (start, max, end)
against the documented bounds (README, "Bounds under hostile input"), asks answered,
failed, p50/p99/max latency, and aborts (the node's exit, the agent's restarts or a
changed pid). Goals (issue 10): 0 aborts, RSS below the bounds throughout, every legit
ask answered, p99 < 100 ms.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import socket
import struct
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
from mesh import wire  # noqa: E402

#: Documented bounds on RSS under this flood, in MB (README, "Bounds under hostile input").
NODE_RSS_BOUND_MB = 256
AGENT_RSS_BOUND_MB = 384

MiB = 1024 * 1024


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, max(0, int(round(q / 100 * (len(values) - 1)))))]


# -- the hostile frames ----------------------------------------------------------------------------------


def hostile_messages(recipient: str, limit: int, rng: random.Random) -> list[tuple[str, list[bytes]]]:
    """(kind, multipart message) for one target whose frame limit is ``limit`` bytes."""
    good = wire.encode(wire.Kind.ASK, 1, 0, "flood", recipient, {"op": "ping"})
    head6 = msgpack.packb([1, int(wire.Kind.ASK), 7, 0, "flood", recipient])[1:]  # 6 fields, no array header

    def envelope(body: bytes) -> bytes:
        return b"\x97" + head6 + body

    def body_of_empty_arrays(size: int) -> bytes:
        n = size - len(envelope(b"")) - 5
        return envelope(b"\xdd" + n.to_bytes(4, "big") + b"\x90" * n)

    pack = msgpack.packb
    out: list[tuple[str, list[bytes]]] = []
    for size in (1, 17, 512, 4096):
        out.append(("random bytes", [rng.randbytes(size)]))
    for cut in (1, 5, len(good) // 2, len(good) - 1):
        out.append(("truncated msgpack", [good[:cut]]))
    out.append(("truncated msgpack", [wire.batch_header(3) + good * 2]))
    for header in (b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff",
                   b"\xdc\xff\xff"):
        out.append(("huge declared lengths", [header + b"\x00" * 16]))
        out.append(("huge declared lengths", [envelope(header + b"\x00" * 16)]))
    out.append(("deep nesting", [b"\x91" * 5000 + b"\xc0"]))
    out.append(("deep nesting", [envelope(b"\x91" * 1000 + b"\xc0")]))  # within msgpack's 1024 levels
    out.append(("deep nesting", [b"\x97\x01" + b"\x91" * 1000 + b"\x01" + pack([7, 0, "flood", recipient, None])[1:]]))
    out.append(("many-frame messages", [good] * 50))
    out.append(("many-frame messages", [good, b"trailer"]))
    for bad in ([1, 2, "1", 0, "flood", recipient, None], [1, 2, 1, 0, b"flood", recipient, None], [2, 2, 1, 0, "a", "b", 1],
                [1, 99, 1, 0, "a", "b", 1], [1, 2, 1.5, 0, "a", "b", 1], [1, 2, 1, 0, "a", None, 1], {"op": "ping"}, [1, 2, 3],
                [1, 2, 1, 0, "a", recipient, msgpack.ExtType(1, b"x")]):
        out.append(("wrong field types", [pack(bad)]))
    big = limit - 64
    out.append(("max-size frames", [rng.randbytes(big)]))
    out.append(("max-size frames", [b"\xdd" + (big - 5).to_bytes(4, "big") + b"\x90" * (big - 5)]))
    out.append(("max-size frames", [body_of_empty_arrays(big)]))
    return out


def _dealer(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.SNDHWM, 64)
    s.setsockopt(zmq.RCVHWM, 64)
    s.connect(endpoint)
    return s


def flood_worker(where: str, endpoint: str, recipient: str, limit: int, seconds: float, connections: int,
                 reconnect: float, seed: int, counts: "mp.Queue") -> None:
    """Send hostile messages to ``endpoint`` until the deadline; report how many of each kind."""
    rng = random.Random(seed)
    messages = hostile_messages(recipient, limit, rng)
    over = [b"\x97" + rng.randbytes(limit + 1024)]
    ctx = zmq.Context()
    socks = [_dealer(ctx, endpoint) for _ in range(connections)]
    sent: dict[str, int] = {}
    deadline = time.monotonic() + seconds
    next_reconnect = time.monotonic() + reconnect
    i = 0
    try:
        while time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_reconnect:
                next_reconnect = now + reconnect
                for s in socks:
                    s.close(0)
                socks = [_dealer(ctx, endpoint) for _ in range(connections)]
                sent["fresh connections"] = sent.get("fresh connections", 0) + connections
                if rng.random() < 0.5:  # over the limit: libzmq cuts that connection
                    try:
                        socks[0].send(over[0], zmq.NOBLOCK, copy=False)
                        sent["over the limit"] = sent.get("over the limit", 0) + 1
                    except zmq.Again:
                        pass
            kind, parts = messages[i % len(messages)]
            s = socks[i % len(socks)]
            i += 1
            try:
                s.send_multipart(parts, zmq.NOBLOCK, copy=len(parts[0]) < 65536)
                sent[kind] = sent.get(kind, 0) + 1
            except zmq.Again:
                time.sleep(0.0005)  # the target's queue for this connection is full: back-pressure
            # Drain answers (bad frames get none; a valid deep ask does), so nothing piles up here.
            while s.poll(0):
                s.recv(zmq.NOBLOCK)
    finally:
        for s in socks:
            s.close(0)
        ctx.term()
        counts.put((where, sent))


JUNK = [
    b"GET / HTTP/1.1\r\nHost: mesh\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
    b"\xff" + b"\x00" * 8 + b"\x7f\x03\x00EVIL" + b"\x00" * 60,
    b"\xff\x00\x00",
    b"\x00" * 100_000,
    bytes(range(256)) * 400,
]


def raw_tcp_garbage(endpoints: list[str], seconds: float, counts: "mp.Queue") -> None:
    """Open TCP connections that send bytes that are not ZMTP, then reset them (a process of its own,
    so that it never holds the measuring client's interpreter lock)."""
    deadline = time.monotonic() + seconds
    sent: dict[str, int] = {}
    i = 0
    while time.monotonic() < deadline:
        endpoint = endpoints[i % len(endpoints)]
        host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
        try:
            with socket.create_connection((host, int(port)), timeout=2) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.sendall(JUNK[i % len(JUNK)])
        except OSError:
            pass
        sent["raw tcp garbage"] = sent.get("raw tcp garbage", 0) + 1
        i += 1
        time.sleep(0.002)
    counts.put(("raw", sent))


# -- the run ---------------------------------------------------------------------------------------------


def start_node(tmp: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    spec = tmp / "flood.toml"
    spec.write_text(f'[node]\nname = "flood"\nlisten = "{address}"\npath = ["{HERE}"]\n\n'
                    '[[agents]]\nname = "echo"\nclass = "bench_actors:Echo"\n')
    env = dict(os.environ, MESH_HOME=str(tmp / "home"), MESH_NO_LIVE="1", MESH_LOG_LEVEL="WARNING")
    proc = subprocess.Popen([sys.executable, "-m", "mesh.cli", "up", str(spec)], stdout=subprocess.DEVNULL,
                            stderr=open(tmp / "node.err", "wb"), env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with mesh.connect(address, connect_timeout=0.5) as c:
                agents = c.status()["agents"]
                if agents and all(a["state"] == "running" for a in agents):
                    return proc, address
        except mesh.NodeUnavailable:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("the flood node did not start")


def flood(address: str, node_proc: subprocess.Popen, *, seconds: float, workers: int = 2, connections: int = 2,
          reconnect: float = 10.0, rate: float = 20.0) -> dict:
    """Flood the node at ``address`` and its agent ``echo`` for ``seconds``; return the figures."""
    client = mesh.connect(address)
    status = client.status()
    agent = next(a for a in status["agents"] if a["name"] == "echo")
    agent_pid, agent_endpoint = agent["pid"], agent["endpoint"]
    node_limit = client.control("ping")["max_frame"]
    agent_limit = wire.MAX_FRAME_BYTES
    procs = {"node": psutil.Process(node_proc.pid), "agent": psutil.Process(agent_pid)}
    rss = {k: [p.memory_info().rss / MiB] for k, p in procs.items()}
    start_rss = {k: v[0] for k, v in rss.items()}
    bad_before = {"node": status["node"]["bad_frames"], "agent": agent["bad_frames"]}

    counts: mp.Queue = mp.Queue()
    ctx = mp.get_context("fork")
    floods = []
    for w in range(workers):
        for where, endpoint, recipient, limit in (("node", address, "$node", node_limit),
                                                  ("agent", agent_endpoint, "echo", agent_limit)):
            p = ctx.Process(target=flood_worker, args=(where, endpoint, recipient, limit, seconds, connections, reconnect,
                                                       1000 * w + len(floods), counts), daemon=True)
            p.start()
            floods.append((where, p))
    deadline = time.monotonic() + seconds
    raw = ctx.Process(target=raw_tcp_garbage, args=([address, agent_endpoint], seconds, counts), daemon=True)
    raw.start()

    lat = {"node": [], "agent": []}
    failures = {"node": [], "agent": []}
    echo = client.actor("echo")
    period = 1.0 / rate
    next_ask = time.monotonic()
    next_sample = 0.0
    while time.monotonic() < deadline:
        now = time.monotonic()
        if now >= next_sample:
            next_sample = now + 0.2
            for k, p in procs.items():
                try:
                    rss[k].append(p.memory_info().rss / MiB)
                except psutil.NoSuchProcess:
                    pass
        if now >= next_ask:
            next_ask += period
            for where, call in (("agent", lambda: echo.ask({"n": 1}, timeout=5)), ("node", lambda: client.control("ping"))):
                t0 = time.perf_counter()
                try:
                    call()
                    lat[where].append((time.perf_counter() - t0) * 1000)
                except mesh.MeshError as exc:
                    failures[where].append(f"{type(exc).__name__}: {exc}")
        time.sleep(max(0.0, min(next_ask, next_sample) - time.monotonic()))
    sent = {"node": {}, "agent": {}}
    raw_sent: dict = {}
    for _where, p in [*floods, ("raw", raw)]:
        p.join(30)
        if p.is_alive():
            p.kill()
    for _ in range(len(floods) + 1):
        try:
            where, got = counts.get(timeout=5)
        except Exception:
            continue
        into = raw_sent if where == "raw" else sent[where]
        for k, v in got.items():
            into[k] = into.get(k, 0) + v
    sent["raw tcp connections, both"] = raw_sent.get("raw tcp garbage", 0)

    final = client.status()
    agent_after = next(a for a in final["agents"] if a["name"] == "echo")
    for k, p in procs.items():
        try:
            rss[k].append(p.memory_info().rss / MiB)
        except psutil.NoSuchProcess:
            pass
    client.close()
    result = {
        "seconds": seconds, "workers_per_target": workers, "connections_per_worker": connections,
        "reconnect_s": reconnect, "node_frame_limit": node_limit, "agent_frame_limit": agent_limit,
        "sent": sent,
        "bounds_mb": {"node": NODE_RSS_BOUND_MB, "agent": AGENT_RSS_BOUND_MB},
    }
    for where in ("node", "agent"):
        ms = lat[where]
        result[where] = {
            "rss_start_mb": round(start_rss[where], 1), "rss_max_mb": round(max(rss[where]), 1),
            "rss_end_mb": round(rss[where][-1], 1),
            "bad_frames": (final["node"]["bad_frames"] if where == "node" else agent_after["bad_frames"]) - bad_before[where],
            "asks": len(ms) + len(failures[where]), "answered": len(ms), "failed": len(failures[where]),
            "failures": failures[where][:5],
            "p50_ms": round(_pct(ms, 50), 2), "p99_ms": round(_pct(ms, 99), 2), "max_ms": round(max(ms, default=float("nan")), 1),
        }
    result["aborts"] = {
        "node_exit_code": node_proc.poll(),
        "agent_restarts": agent_after["restarts"],
        "agent_pid_changed": agent_after["pid"] != agent_pid,
    }
    return result


def print_table(r: dict) -> None:
    print(f"flood: {r['seconds']:g} s, {r['workers_per_target']} workers x {r['connections_per_worker']} connections per target,"
          f" fresh connections every {r['reconnect_s']:g} s; frame limits node {r['node_frame_limit']:,} B,"
          f" agent {r['agent_frame_limit']:,} B")
    for where in ("node", "agent"):
        print(f"sent to the {where}: " + ", ".join(f"{k} {v:,}" for k, v in sorted(r["sent"][where].items())))
    print(f"raw TCP connections with garbage (both): {r['sent']['raw tcp connections, both']:,}")
    print(f"{'target':8} {'bad frames':>11} {'RSS start':>10} {'RSS max':>9} {'RSS end':>9} {'bound':>7}"
          f" {'asks':>6} {'failed':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for where in ("node", "agent"):
        t = r[where]
        print(f"{where:8} {t['bad_frames']:>11,} {t['rss_start_mb']:>9.1f}M {t['rss_max_mb']:>8.1f}M {t['rss_end_mb']:>8.1f}M"
              f" {r['bounds_mb'][where]:>6}M {t['asks']:>6} {t['failed']:>7} {t['p50_ms']:>8.2f} {t['p99_ms']:>8.2f}"
              f" {t['max_ms']:>8.1f}")
        for f in t["failures"]:
            print(f"    failure: {f}")
    a = r["aborts"]
    print(f"aborts: node exit code {a['node_exit_code']}, agent restarts {a['agent_restarts']},"
          f" agent pid changed {a['agent_pid_changed']}")
    ok = (a["node_exit_code"] is None and not a["agent_restarts"] and not a["agent_pid_changed"]
          and all(r[w]["rss_max_mb"] < r["bounds_mb"][w] and not r[w]["failed"] and r[w]["p99_ms"] < 100
                  for w in ("node", "agent")))
    print("goals (0 aborts, RSS below the bounds, every ask answered, p99 < 100 ms): " + ("met" if ok else "MISSED"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--workers", type=int, default=1, help="flooding processes per target (default 1: with the raw TCP "
                    "one, three flooders at full speed on two cores)")
    ap.add_argument("--connections", type=int, default=4, help="DEALERs per flooding process (default 4)")
    ap.add_argument("--reconnect", type=float, default=10.0, help="seconds between fresh connections")
    ap.add_argument("--rate", type=float, default=20.0, help="legit asks per second, per target")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, address = start_node(Path(tmp))
        try:
            r = flood(address, proc, seconds=args.seconds, workers=args.workers, connections=args.connections,
                      reconnect=args.reconnect, rate=args.rate)
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
            err = (Path(tmp) / "node.err").read_text(errors="replace")
    if "Assertion failed" in err:
        r.setdefault("aborts", {})["libzmq_assertion"] = [ln for ln in err.splitlines() if "Assertion" in ln][:3]
    if args.json:
        print(json.dumps(r))
    else:
        print_table(r)


if __name__ == "__main__":
    main()
