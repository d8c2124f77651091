"""Intentions: how long a vote on claims takes, and how many approvals one contended claim gets, on this machine.

    python benchmarks/intentions.py                         # a table (latency: 3, 5, 10 voters; contention: 3; listeners)
    python benchmarks/intentions.py --json                  # one JSON object
    python benchmarks/intentions.py --both                  # the table, then the JSON object on one line
    python benchmarks/intentions.py --voters 3 --proposals 50 --contenders 2,5 --duration 3 --listeners ""   # quick (~40 s)

For each mesh size N in ``--voters`` (default 3,5,10) and ``--contention-voters`` (default
3) the benchmark starts N `mesh up` processes on loopback (n0 alone, the others with
``--join`` n0; every node is a voter, so N nodes = N voters), with MESH_HOME, the specs and
the actors' module in a temporary folder, and waits until every node sees N alive members
and N voters, all agree on one leader and term, and the agents run. n0's spec declares
them: ``lat``, pinned to n0, and, where contention is measured, ``c``: as many replicas as
the largest of ``--contenders`` (default 2,5,10), spread over the nodes. (If n0 leads alone
for a moment it places every replica on itself, and the leader moves them once the others
have joined, so the benchmark also waits until the replicas are on every node, or on as
many as there are replicas, and nothing has moved for 2 s.) Then:

(1) Latency, uncontended (every mesh size). ``lat`` makes ``--warmup`` untimed proposals, then
    ``--proposals`` (default 200) one after another, each on its own fresh claim, and
    times each ``self.mesh.propose(...)`` with time.perf_counter inside the actor (so the
    benchmark's ask to the actor is left out), calling ``done()`` after the clock stops.
    Printed: p50 and p99 in ms, and how many were approved (all should be). The protocol
    waits ``settle`` (50 ms) after the proposal before it commits, and the node works in
    10 ms loop slices: expect a floor of about 50-60 ms.
(2) Approvals under contention (``--contention-voters``). For each count K in ``--contenders``
    and each W in ``--wait`` (default 0 and 2 s; 0 is without ``wait=``), one run: the first
    K ``c`` replicas start at the same moment (a wall-clock start time sent with the ask)
    and, for ``--duration`` seconds (default 10), propose on ONE claim (fresh for the run) in
    a loop, with ``wait=W`` if W > 0: an approved intention is held ~2 ms (``--hold-ms``)
    and then released with ``done()``; a lost one backs off a random 0-30 ms
    (``--backoff-ms``). Printed: approvals/s (over the time from the first start to the last
    decision) beside the *ideal*, one approval per vote round: 1 / (the uncontended p50 of
    (1) on the same mesh + the hold), and their ratio; decisions/s (approved + objected), the
    approval share (approved / decisions), the spread of approvals among the contenders, why
    the others were not approved (``held``: the claim was committed to another intention;
    ``outranked``: promised to one of higher precedence; ``in line``: another was ahead in
    line; ``window``: the window or wait ran out first), and the safety check: every
    contender journals ``approve`` (after propose returned) and ``done`` (before done() is
    called) with time.time() per approved intention; the benchmark merges the journals and
    counts the approved intervals that begin before an earlier one ended: printed as
    "overlaps: 0". A summary gives approvals/s per K, without and with wait, beside the ideal.

    What to expect now (issue 13: deferral and lines). A contender outranked by a concurrent
    one is no longer refused at once: it waits in line at the voters and is promised as soon
    as the claim is free, and since its ``settle`` has run out while it waited, it commits
    one round trip later. So the claim changes hands faster than one vote round, and
    approvals/s exceeds the ideal once there are two contenders or more (measured on 2 busy
    cores, three runs: 2 contenders about 1.8-1.95x the ideal of ~16/s, 5 about 3.4-4.7x,
    10 about 6-8x, 100-130/s); the old ceiling of about 1 / (approval latency + hold), ~16/s, no
    longer holds. Without ``wait=`` the losses are mostly proposals that met the claim
    *held* (a holder is not waited for); with ``wait=2`` every proposal waits its turn and
    the approval share is 1.0. On a starved machine a node may miss its lease renewal and
    the watchdog stop its agents mid-run (seen with 10 contenders beside other loads): that
    run is reported FAILED (ActorDied) with the agents' "stopping" lines, and the others go on.
(3) Listeners (``--listeners``, default 10,50; ``--listeners ""`` for none). Decision latency
    p50/p99 with that many ``on_intention`` listeners, measured by ``listener_latency`` of
    benchmarks/intention_listeners.py (its own one-node mesh per count, ``--listener-proposals``
    proposals each); skipped, with a printed note, if that module or function is missing.

Every proposal uses ``window = --window`` (default 0.3 s) and priority 0. The leader and
term are read before and after each part (a change means an election happened under
the load) and the intentions still listed mesh-wide after the run are counted.

This machine has few cores (2 where these figures were taken): the 10-voter mesh runs 10
node processes, and the contention mesh 3 nodes and 11 agent processes, beside this
benchmark, so the figures measure CPU contention as much as the protocol. The load average
and the cores the whole machine kept busy during each part are printed beside the figures.
The default run takes about 2.5 minutes.

Targets: none for speed (p50/p99 per voter count and approvals/s beside the ideal are
printed for the record); the one hard target is safety: no two approved intentions on the
claim overlap. Figures are printed, never asserted. Every node is stopped (SIGTERM, then
SIGKILL after 20 s) with everything it started before the next mesh starts; processes that
outlived their node are killed and listed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib.util
import inspect
import json
import os
import signal
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

ACTORS = '''"""Actors of benchmarks/intentions.py (written into its temporary folder)."""

import random
import time

import mesh


class Proposer(mesh.Actor):
    """{"latency": N, ...}: N timed proposals one after another, each on a fresh claim.
    {"contend": CLAIM, ...}: propose on CLAIM in a loop from start_at until end_at, journaling
    every approved intention's hold ("approve" when propose returned, "done" before done())."""

    def on_message(self, message):
        if "latency" in message:
            return self.latency(message)
        return self.contend(message)

    def latency(self, m):
        prefix, window = m["prefix"], m["window"]
        for i in range(m["warmup"]):
            self.mesh.propose("warm-up", claims=[f"{prefix}/warm/{i}"], window=window).done()
        perf = time.perf_counter
        times, outcomes, reasons = [], {}, []
        for i in range(m["latency"]):
            t0 = perf()
            d = self.mesh.propose("bench", claims=[f"{prefix}/{i}"], window=window)
            times.append((perf() - t0) * 1000.0)
            d.done()
            outcomes[d.outcome] = outcomes.get(d.outcome, 0) + 1
            if not d.approved and len(reasons) < 5:
                reasons.append(f"{d.outcome}: {'; '.join(d.reasons)}")
        return {"ms": times, "outcomes": outcomes, "reasons": reasons}

    def contend(self, m):
        claim, window, hold, backoff = m["contend"], m["window"], m["hold"], m["backoff"]
        options = {"wait": m["wait"]} if m.get("wait") else {}
        time.sleep(max(0.0, m["start_at"] - time.time()))
        perf = time.perf_counter
        outcomes, approved_ms, objected_ms, reasons, why_counts = {}, [], [], [], {}
        first = time.time()
        with open(m["journal"], "a", buffering=1) as journal:  # line-buffered: each line written at once
            while time.time() < m["end_at"]:
                t0 = perf()
                d = self.mesh.propose("work", claims=[claim], window=window, **options)
                took = (perf() - t0) * 1000.0
                outcomes[d.outcome] = outcomes.get(d.outcome, 0) + 1
                if d.approved:
                    approved_ms.append(took)
                    journal.write(f"{time.time():.6f} approve {d.id}\\n")
                    time.sleep(hold)
                    journal.write(f"{time.time():.6f} done {d.id}\\n")
                    d.done()
                else:
                    objected_ms.append(took)
                    why = why_not(d)
                    why_counts[why] = why_counts.get(why, 0) + 1
                    if (d.outcome != "objected" or why == "other") and len(reasons) < 5:
                        reasons.append(f"{d.outcome}: {'; '.join(d.reasons)}")
                    time.sleep(random.uniform(0.0, backoff))
        return {"outcomes": outcomes, "first": first, "last": time.time(), "approved_ms": approved_ms,
                "objected_ms": objected_ms, "why_not": why_counts, "reasons": reasons}


def why_not(decision):
    """Why an intention was not approved, in a word: the window ran out, the claim was held, or outranked."""
    text = " ".join(decision.reasons)
    if "window" in text:
        return "window"
    if " held by " in text:
        return "held"
    if "takes precedence" in text:
        return "outranked"
    if "ahead in line" in text:
        return "in line"
    return "other"
'''

#: Seconds to wait for a mesh to be ready (every node started, joined, agreed; agents running).
READY_TIMEOUT = 180.0
#: Seconds a node gets to stop on SIGTERM before it is SIGKILLed.
STOP_TIMEOUT = 20.0
#: Seconds the agents' placement must stay unchanged before a mesh counts as ready.
STABLE_S = 2.0
#: Timeout of one status request while polling, in seconds.
STATUS_TIMEOUT = 3.0
LEFTOVERS: list[int] = []  # processes that outlived their node (then killed), over the whole run


class Interrupted(Exception):
    """SIGTERM to the benchmark: unwind through the finally blocks that stop the nodes."""


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (as in latency.py)."""
    values = sorted(values)
    return values[min(len(values) - 1, max(0, int(round(q / 100 * (len(values) - 1)))))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine_busy() -> float:
    """Seconds of CPU the whole machine has spent busy (all cores), for busy cores over a window."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0) + getattr(t, "steal", 0.0)


def status(client: mesh.Client) -> dict | None:
    try:
        return client.control("status", timeout=STATUS_TIMEOUT)
    except mesh.MeshError:
        return None


class Mesh:
    """N `mesh up` processes on loopback, n0 first, the others joining it; a context manager that stops them all."""

    def __init__(self, root: Path, n: int, contenders: int):
        self.root, self.n, self.contenders = root, n, contenders
        self.names = [f"n{i}" for i in range(n)]
        self.home = root / f"home-{n}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.addresses: dict[str, str] = {}
        self.clients: dict[str, mesh.Client] = {}
        self.agents = ["lat", *(f"c.{i}" for i in range(contenders))]
        self._placed: dict[str, tuple[str, int]] = {}
        self._placed_since = 0.0

    def __enter__(self) -> "Mesh":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        env = dict(os.environ, MESH_HOME=str(self.home), MESH_NO_LIVE="1", MESH_LOG_LEVEL="WARNING")
        env.pop("MESH_NODE", None)
        for i, name in enumerate(self.names):
            port = free_port()
            self.addresses[name] = f"tcp://127.0.0.1:{port}"
            agents = ""
            if i == 0:
                agents = '\n[[agents]]\nname = "lat"\nclass = "intent_actors:Proposer"\nnode = "n0"\n'
                if self.contenders:
                    agents += f'\n[[agents]]\nname = "c"\nclass = "intent_actors:Proposer"\nreplicas = {self.contenders}\n'
            spec = self.root / f"{name}-{self.n}.toml"
            spec.write_text(f'[node]\nname = "{name}"\nlisten = "{self.addresses[name]}"\npath = ["{self.root}"]\n{agents}')
            join = ["--join", self.addresses["n0"]] if i else []
            with open(self.root / f"{name}-{self.n}.log", "wb") as log:
                self.procs[name] = subprocess.Popen([sys.executable, "-m", "mesh.cli", "up", str(spec), *join],
                                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                    env=env, cwd=self.root)
            if i == 0:  # the others join through n0: let it answer first
                self.client("n0", time.monotonic() + 30)

    def client(self, name: str, deadline: float) -> mesh.Client:
        while name not in self.clients:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise RuntimeError(f"{name}: mesh up exited with {proc.returncode}: {self.log_tail(name)}")
            try:
                self.clients[name] = mesh.connect(self.addresses[name], connect_timeout=0.5)
            except mesh.NodeUnavailable:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not answer") from None
                time.sleep(0.1)
        return self.clients[name]

    def log_tail(self, name: str) -> str:
        try:
            return " | ".join((self.root / f"{name}-{self.n}.log").read_text(errors="replace").splitlines()[-5:])
        except OSError:
            return "(no log)"

    def ready(self) -> tuple[str, int] | None:
        """(leader, term) once every node sees all N alive, knows N voters, all agree on the leader
        and term, every agent runs on exactly one node, the contenders are spread (on every node,
        when there are enough of them) and nothing has moved for STABLE_S; None before."""
        views, names = set(), set(self.names)
        statuses = []
        for name in self.names:
            st = status(self.clients[name])
            if st is None:
                return None
            statuses.append(st)
            alive = {m["name"] for m in st["members"] if m["state"] == "alive"}
            if alive != names or set(st["election"].get("voters") or []) != names:
                return None
            views.add((st["leader"], st["term"]))
        if len(views) != 1 or next(iter(views))[0] not in names:
            return None
        for st in statuses:
            shown = {a["name"]: a["state"] for a in st["agents"]}
            if any(shown.get(a) != "running" for a in self.agents):
                return None
        placed = self.where(statuses)
        if sorted(placed) != sorted(self.agents):
            return None
        hosts = {node for name, (node, _) in placed.items() if name.startswith("c.")}
        if len(hosts) < min(self.n, self.contenders):
            return None  # the leader has not spread them yet (n0 may have placed them all before the others joined)
        now = time.monotonic()
        if placed != self._placed:
            self._placed, self._placed_since = placed, now
            return None
        return next(iter(views)) if now - self._placed_since >= STABLE_S else None

    def where(self, statuses: list[dict] | None = None) -> dict[str, tuple[str, int]]:
        """Each agent's node and pid, from the nodes' own (local) entries; an agent seen twice is left out."""
        if statuses is None:
            statuses = [st for st in (status(self.clients[name]) for name in self.names) if st is not None]
        seen: dict[str, list[tuple[str, int]]] = {}
        for st in statuses:
            for a in st["agents"]:
                if a["name"] in self.agents and not a.get("remote") and a.get("pid"):
                    seen.setdefault(a["name"], []).append((st["node"]["name"], a["pid"]))
        return {name: places[0] for name, places in seen.items() if len(places) == 1}

    def wait_ready(self) -> tuple[str, int]:
        deadline = time.monotonic() + READY_TIMEOUT
        for name in self.names:
            self.client(name, deadline)
        while True:
            found = self.ready()
            if found:
                return found
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {self.n}-node mesh was not ready within {READY_TIMEOUT:g} s: {self.describe()}")
            time.sleep(0.1)

    def describe(self) -> str:
        parts = []
        for name in self.names:
            st = status(self.clients[name]) if name in self.clients else None
            if st is None:
                parts.append(f"{name}: no answer")
                continue
            alive = sum(m["state"] == "alive" for m in st["members"])
            waiting = [a["name"] for a in st["agents"] if a["name"] in self.agents and a["state"] != "running"]
            parts.append(f"{name}: leader {st['leader']} term {st['term']}, {alive} alive, "
                         f"{len(st['election'].get('voters') or [])} voters, not running {waiting}")
        return "; ".join(parts)

    def view(self) -> dict:
        """The leader and term each node sees now."""
        out = {}
        for name in self.names:
            st = status(self.clients[name])
            out[name] = None if st is None else [st["leader"], st["term"]]
        return out

    @staticmethod
    def per_node(placed: dict[str, tuple[str, int]]) -> dict[str, int]:
        """How many contenders each node runs."""
        counts: dict[str, int] = {}
        for name, (node, _) in placed.items():
            if name.startswith("c."):
                counts[node] = counts.get(node, 0) + 1
        return dict(sorted(counts.items()))

    def scan_logs(self) -> dict:
        """Tracebacks and ERROR lines in the nodes' output and the agents' logs, and agents that stopped
        themselves (a lease not renewed in time on a starved machine, say: ActorDied for the ask)."""
        files = [self.root / f"{name}-{self.n}.log" for name in self.names]
        files += sorted((self.home / "nodes").glob("*/logs/*.log")) if (self.home / "nodes").exists() else []
        errors, examples, stops = 0, [], []
        for path in files:
            try:
                lines = path.read_text(errors="replace").splitlines()
            except OSError:
                continue
            for i, line in enumerate(lines):
                if "; stopping" in line and path.parent.name == "logs" and len(stops) < 5:  # agents' logs only
                    stops.append(f"{path.name}: {line.strip()[:200]}")
                if "Traceback" in line or " ERROR " in line or "ERROR:" in line:
                    errors += 1
                    if len(examples) < 5:
                        # a traceback is shown by its exception: the first line after it that is not indented
                        raised = next((x for x in lines[i + 1:] if x and not x[0].isspace()), "") if "Traceback" in line else ""
                        examples.append(f"{path.name}: {line.strip()[:200]}{' -> ' + raised[:200] if raised else ''}")
        return {"error_lines": errors, "examples": examples, "agents_stopped": stops}

    def stop(self) -> None:
        """SIGTERM every node (SIGKILL after STOP_TIMEOUT), then kill whatever they left behind."""
        for c in self.clients.values():
            try:
                c.close()
            except Exception:  # a broken client must not keep the nodes running
                pass
        self.clients = {}
        procs = []
        for proc in self.procs.values():
            try:
                procs += psutil.Process(proc.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                pass
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for p in procs:
            try:
                p.wait(timeout=8)
            except psutil.TimeoutExpired:
                LEFTOVERS.append(p.pid)
                try:
                    p.kill()  # psutil checks that the pid is still that process
                except psutil.NoSuchProcess:
                    pass
            except psutil.NoSuchProcess:
                pass
        self.procs = {}


# -- (1) latency ---------------------------------------------------------------------------------


def run_latency(m: Mesh, args: argparse.Namespace) -> dict:
    client = m.clients["n0"]
    busy0, t0 = machine_busy(), time.monotonic()
    out = client.actor("lat").ask({"latency": args.proposals, "warmup": args.warmup, "prefix": f"lat{m.n}",
                                   "window": args.window}, timeout=args.proposals * (args.window + 3) + 120)
    elapsed = time.monotonic() - t0
    ms = out["ms"]
    return {"proposals": len(ms), "approved": out["outcomes"].get("approved", 0), "outcomes": out["outcomes"],
            "not_approved_reasons": out["reasons"], "p50_ms": pct(ms, 50), "p99_ms": pct(ms, 99), "min_ms": min(ms),
            "max_ms": max(ms), "mean_ms": sum(ms) / len(ms), "machine_busy_cores": (machine_busy() - busy0) / elapsed,
            "load_avg_1m_after": os.getloadavg()[0]}


# -- (2) contention ------------------------------------------------------------------------------


def read_journals(paths: list[Path]) -> dict:
    """Pair approve/done per intention and count the holds that begin before an earlier one ended."""
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            t, what, iid = line.split()
            (starts if what == "approve" else ends)[iid] = float(t)
    holds = sorted((starts[i], ends.get(i, float("inf")), i) for i in starts)
    overlaps, examples = 0, []
    latest_end, latest = float("-inf"), None
    for start, end, iid in holds:
        if start < latest_end:
            overlaps += 1
            if len(examples) < 5:
                examples.append(f"{iid} approved at {start:.6f} while {latest} held until {latest_end:.6f}")
        if end > latest_end:
            latest_end, latest = end, iid
    held_ms = [(end - start) * 1000 for start, end, _ in holds if end != float("inf")]
    gaps_ms = [(b[0] - a[1]) * 1000 for a, b in zip(holds, holds[1:], strict=False) if a[1] != float("inf")]
    return {"journaled_approvals": len(holds), "unfinished": sum(i not in ends for i in starts),
            "done_without_approve": sum(i not in starts for i in ends), "overlaps": overlaps, "overlap_examples": examples,
            "held_p50_ms": pct(held_ms, 50) if held_ms else None, "held_max_ms": max(held_ms) if held_ms else None,
            "gap_p50_ms": pct(gaps_ms, 50) if gaps_ms else None}


def run_contention(m: Mesh, args: argparse.Namespace, contenders: int, wait: float, ideal_per_s: float | None) -> dict:
    """``contenders`` of the ``c`` replicas propose on one claim of their own (fresh for this run) for
    ``--duration`` seconds, with ``wait=`` if above 0; approvals/s beside ``ideal_per_s``."""
    client = m.clients["n0"]
    names = [f"c.{i}" for i in range(contenders)]
    run = f"{m.n}-{contenders}-w{wait:g}"
    journals = [m.root / f"journal-{run}-{name}" for name in names]
    start_at = time.time() + 1.0  # every contender gets the ask before it starts
    end_at = start_at + args.duration
    base = {"contend": f"res{run}", "window": args.window, "wait": wait, "hold": args.hold_ms / 1000,
            "backoff": args.backoff_ms / 1000, "start_at": start_at, "end_at": end_at}
    busy0, t0 = machine_busy(), time.monotonic()
    timeout = args.duration + max(args.window, wait) + 120
    with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
        futures = [pool.submit(client.actor(name).ask, {**base, "journal": str(path)}, timeout)
                   for name, path in zip(names, journals, strict=True)]
        replies = [f.result() for f in futures]
    elapsed_machine = time.monotonic() - t0
    outcomes: dict[str, int] = {}
    why_not: dict[str, int] = {}
    for r in replies:
        for k, v in r["outcomes"].items():
            outcomes[k] = outcomes.get(k, 0) + v
        for k, v in r["why_not"].items():
            why_not[k] = why_not.get(k, 0) + v
    elapsed = max(r["last"] for r in replies) - min(r["first"] for r in replies)
    approved = outcomes.get("approved", 0)
    decisions = approved + outcomes.get("objected", 0)
    per_agent = [r["outcomes"].get("approved", 0) for r in replies]
    placed = m.where()
    by_contender = {name: {"node": placed.get(name, (None, 0))[0], "approved": r["outcomes"].get("approved", 0),
                           "proposals": sum(r["outcomes"].values())} for name, r in zip(names, replies, strict=True)}
    approved_ms = [x for r in replies for x in r["approved_ms"]]
    objected_ms = [x for r in replies for x in r["objected_ms"]]
    return {"contenders": len(names), "wait_s": wait, "duration_s": elapsed, "outcomes": outcomes,
            "proposals": sum(outcomes.values()), "not_approved_because": dict(sorted(why_not.items())),
            "decisions": decisions, "approved": approved, "decisions_per_s": decisions / elapsed,
            "approvals_per_s": approved / elapsed, "ideal_approvals_per_s": ideal_per_s,
            "of_ideal": approved / elapsed / ideal_per_s if ideal_per_s else None,
            "approval_share": approved / decisions if decisions else None,
            "approvals_per_contender_min": min(per_agent), "approvals_per_contender_max": max(per_agent),
            "approved_latency_p50_ms": pct(approved_ms, 50) if approved_ms else None,
            "objected_latency_p50_ms": pct(objected_ms, 50) if objected_ms else None,
            "other_reasons": [x for r in replies for x in r["reasons"]][:5], "by_contender": by_contender,
            **read_journals(journals),
            "machine_busy_cores": (machine_busy() - busy0) / elapsed_machine, "load_avg_1m_after": os.getloadavg()[0]}


# -- (3) listeners -------------------------------------------------------------------------------


def run_listeners(args: argparse.Namespace, progress) -> dict:
    """Decision latency with ``--listeners`` on_intention actors, measured by
    benchmarks/intention_listeners.py's ``listener_latency`` (its own one-node mesh per count);
    {"skipped": why} when that module or function is not there."""
    path = HERE / "intention_listeners.py"
    try:
        spec = importlib.util.spec_from_file_location("intention_listeners", path)
        if spec is None or not path.exists():
            raise ImportError(f"{path.name} not found")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        measure = module.listener_latency
    except (ImportError, AttributeError, OSError) as exc:
        progress(f"listeners: skipped ({exc})")
        return {"skipped": f"benchmarks/intention_listeners.py has no listener_latency: {exc}"}
    accepted = inspect.signature(measure).parameters
    options = {k: v for k, v in {"proposals": args.listener_proposals}.items() if k in accepted}
    runs, failures = [], []
    for count in sorted(set(args.listeners)):
        try:
            runs.append(measure(count, **options))
        except (RuntimeError, mesh.MeshError) as exc:
            failures.append({"listeners": count, "error": f"{type(exc).__name__}: {exc}"})
            progress(f"{count} listeners FAILED: {exc}")
            continue
        r = runs[-1]
        progress(f"{count} listeners: p50 {r.get('p50_ms')} ms p99 {r.get('p99_ms')} ms (goal {r.get('goal_ms')} ms)")
    return {"runs": runs, "failures": failures}


# -- the run -------------------------------------------------------------------------------------


def ideal(latency: dict | None, hold_ms: float) -> float | None:
    """One approval per vote round: 1 / (uncontended approval latency p50 + hold), per second."""
    if not latency or not latency["approved"]:
        return None
    return 1000.0 / (latency["p50_ms"] + hold_ms)


def run_size(root: Path, n: int, args: argparse.Namespace, latency: bool, contention: bool, progress) -> dict:
    replicas = max(args.contenders) if contention else 0  # a latency-only mesh runs no contenders
    out: dict = {"voters": n, "nodes": n, "agent_processes": replicas + 1}
    t0 = time.monotonic()
    with Mesh(root, n, replicas) as m:
        leader, term = m.wait_ready()
        placed = m.where()
        out["ready_s"] = time.monotonic() - t0
        out["leader"], out["term"] = leader, term
        out["contenders_per_node"] = m.per_node(placed)
        out["load_avg_1m_ready"] = os.getloadavg()[0]
        progress(f"{n} voters: ready in {out['ready_s']:.1f} s, leader {leader} term {term}, "
                 f"contenders per node {out['contenders_per_node']}")
        if latency:
            out["latency"] = run_latency(m, args)
            out["latency"]["view_after"] = m.view()
            progress(f"{n} voters: latency p50 {out['latency']['p50_ms']:.1f} ms p99 {out['latency']['p99_ms']:.1f} ms, "
                     f"{out['latency']['approved']}/{out['latency']['proposals']} approved")
        if contention:
            per_s = ideal(out.get("latency"), args.hold_ms)
            out["contention"], out["contention_failures"] = [], []
            for count in sorted(set(args.contenders)):
                for wait in sorted(set(args.wait)):
                    try:
                        c = run_contention(m, args, count, wait, per_s)
                    except mesh.MeshError as exc:  # one run lost (an agent died...): the others still count
                        out["contention_failures"].append({"contenders": count, "wait_s": wait,
                                                           "error": f"{type(exc).__name__}: {exc}"})
                        progress(f"{n} voters, {count} contenders, wait {wait:g} s: FAILED: {exc}")
                        m.wait_ready()  # the dead agent restarted and placed again before the next run
                        continue
                    c["view_after"] = m.view()
                    out["contention"].append(c)
                    progress(f"{n} voters, {count} contenders, wait {wait:g} s: {c['decisions_per_s']:.1f} decisions/s,"
                             f" {c['approvals_per_s']:.1f} approvals/s (ideal {per_s or 0:.1f}), overlaps {c['overlaps']}")
        out["agents_moved"] = sorted(name for name, place in m.where().items() if placed.get(name) != place)
        time.sleep(1.0)  # releases and gossip settle
        st = status(m.clients["n0"]) or {}
        out["intents_listed_after"] = len(st.get("intents") or [])
        out["leader_changes"] = leader_changes(leader, term, out)
        out["logs"] = m.scan_logs()
    return out


def leader_changes(leader: str, term: int, out: dict) -> list[str]:
    """What the nodes saw after each part, where it differs from the leader and term the mesh was ready with."""
    changes = []
    parts = [("latency", out["latency"])] if "latency" in out else []
    parts += [(f"contention ({c['contenders']} contenders, wait {c['wait_s']:g} s)", c) for c in out.get("contention", [])]
    for part, figures in parts:
        views: dict[str, list[str]] = {}
        for node, view in figures["view_after"].items():
            key = "no answer" if view is None else f"{view[0]} term {view[1]}"
            views.setdefault(key, []).append(node)
        if set(views) != {f"{leader} term {term}"}:
            seen = "; ".join(f"{key} ({', '.join(nodes)})" for key, nodes in views.items())
            changes.append(f"after {part}: {seen}, was {leader} term {term}")
    return changes


def run(args: argparse.Namespace, progress) -> dict:
    voters = sorted(set(args.voters))
    contended = sorted(set(args.contention_voters))
    results: dict = {"machine": {"cores": psutil.cpu_count(), "available_mb": psutil.virtual_memory().available / 2**20,
                                 "load_avg_1m_start": os.getloadavg()[0]},
                     "settings": {"proposals": args.proposals, "warmup": args.warmup, "window_s": args.window,
                                  "contenders": args.contenders, "wait_s": args.wait, "duration_s": args.duration,
                                  "hold_ms": args.hold_ms, "backoff_ms": args.backoff_ms, "listeners": args.listeners},
                     "sizes": []}
    failures = []
    with tempfile.TemporaryDirectory(prefix="mesh-intentions-bench-") as tmp_name:
        root = Path(tmp_name)
        (root / "intent_actors.py").write_text(ACTORS)
        try:
            for n in sorted(set(voters) | set(contended)):
                try:
                    # the contention's ideal needs the uncontended latency of the same mesh
                    results["sizes"].append(run_size(root, n, args, n in voters or n in contended, n in contended,
                                                     progress))
                except (RuntimeError, mesh.MeshError) as exc:
                    failures.append({"voters": n, "error": f"{type(exc).__name__}: {exc}"})
                    progress(f"{n} voters FAILED: {exc}")
        finally:
            results["leftover_processes"] = LEFTOVERS
    if args.listeners:
        results["listeners"] = run_listeners(args, progress)
    results["failures"] = failures
    results["machine"]["load_avg_1m_end"] = os.getloadavg()[0]
    contention = [c for s in results["sizes"] for c in s.get("contention", [])]
    results["contention_summary"] = [
        {"voters": s["voters"], "contenders": c["contenders"], "wait_s": c["wait_s"], "approvals_per_s": c["approvals_per_s"],
         "ideal_approvals_per_s": c["ideal_approvals_per_s"], "of_ideal": c["of_ideal"],
         "approval_share": c["approval_share"], "overlaps": c["overlaps"]}
        for s in results["sizes"] for c in s.get("contention", [])]
    results["targets_met"] = {
        "no overlap": bool(contention) and all(c["overlaps"] == 0 and c["unfinished"] == 0 for c in contention)
                      and not any(f["voters"] in contended for f in failures)
                      and not any(s.get("contention_failures") for s in results["sizes"]),
    }
    results["latency_ms_by_voters"] = {str(s["voters"]): {"p50": s["latency"]["p50_ms"], "p99": s["latency"]["p99_ms"]}
                                       for s in results["sizes"] if "latency" in s}
    return rounded(results)


def rounded(value: object) -> object:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def table(r: dict) -> str:
    rows: list[tuple[str, str, str, str] | str] = []  # a string is a line of its own (a note)
    for size in r["sizes"]:
        n = size["voters"]
        rows.append((f"{n} voters: mesh ready", f"{size['ready_s']:.1f} s", f"leader {size['leader']} term {size['term']}",
                     f"contenders per node {size['contenders_per_node']}, load avg {size['load_avg_1m_ready']:.2f}"))
        if "latency" in size:
            lat = size["latency"]
            rows.append((f"  propose -> Decision, uncontended ({lat['proposals']})", f"p50 {lat['p50_ms']:.1f} ms",
                         f"p99 {lat['p99_ms']:.1f} ms",
                         f"{lat['approved']}/{lat['proposals']} approved, max {lat['max_ms']:.1f} ms,"
                         f" machine busy {lat['machine_busy_cores']:.2f} cores, load avg {lat['load_avg_1m_after']:.2f}"))
        for c in size.get("contention", []):
            share = f"{c['approval_share']:.3f}" if c["approval_share"] is not None else "-"
            per_s = (f"ideal {c['ideal_approvals_per_s']:.1f}/s (x{c['of_ideal']:.2f}), "
                     if c["ideal_approvals_per_s"] else "")
            rows.append((f"  one claim, {c['contenders']} contenders, {waited(c['wait_s'])}, {c['duration_s']:.1f} s",
                         f"{c['approvals_per_s']:.1f} approvals/s", f"{c['decisions_per_s']:.1f} decisions/s",
                         f"{per_s}approval share {share}, approvals per contender {c['approvals_per_contender_min']}-"
                         f"{c['approvals_per_contender_max']}, machine busy {c['machine_busy_cores']:.2f} cores,"
                         f" load avg {c['load_avg_1m_after']:.2f}"))
            why = ", ".join(f"{k} {v}" for k, v in c["not_approved_because"].items()) or "-"
            rows.append(("    latency under contention",
                         f"approved p50 {c['approved_latency_p50_ms']:.1f} ms" if c["approved_latency_p50_ms"] else "-",
                         f"objected p50 {c['objected_latency_p50_ms']:.1f} ms" if c["objected_latency_p50_ms"] else "-",
                         f"not approved because: {why}"))
            rows.append(("    safety (journal)", f"overlaps: {c['overlaps']}", f"{c['journaled_approvals']} holds",
                         f"{c['unfinished']} unfinished, held p50 {c['held_p50_ms'] or 0:.1f} ms,"
                         f" gap between holds p50 {c['gap_p50_ms'] or 0:.1f} ms"))
        notes = list(size["leader_changes"])
        if size["agents_moved"]:
            notes.append(f"agents moved during the run: {', '.join(size['agents_moved'])}")
        if size["intents_listed_after"]:
            notes.append(f"{size['intents_listed_after']} intentions still listed after the run")
        notes += [f"an agent stopped itself: {line}" for line in size["logs"].get("agents_stopped", [])]
        if size["logs"]["error_lines"]:
            notes.append(f"{size['logs']['error_lines']} error lines in the logs, e.g. {size['logs']['examples'][0]}")
        rows += [f"  note: {note}" for note in notes]
        rows += [f"  FAILED: one claim, {f['contenders']} contenders, {waited(f['wait_s'])}: {f['error']}"
                 for f in size.get("contention_failures", [])]
    cells = [row for row in rows if isinstance(row, tuple)]
    w = [max((len(row[i]) for row in cells), default=0) for i in range(4)]
    lines = [row if isinstance(row, str) else "  ".join(col.ljust(w[i]) for i, col in enumerate(row)).rstrip()
             for row in rows]
    m = r["machine"]
    biggest = max((x["voters"] for x in r["sizes"]), default=0)
    agents = max((x["agent_processes"] for x in r["sizes"] if x["voters"] == biggest), default=0)
    lines.append(f"note: {m['cores']} cores; the {biggest}-voter mesh runs {biggest} node processes and {agents}"
                 f" agent processes on them, so the figures include CPU contention (load average 1 min: "
                 f"{m['load_avg_1m_start']:.2f} at the start, {m['load_avg_1m_end']:.2f} at the end)")
    for f in r["failures"]:
        lines.append(f"FAILED with {f['voters']} voters: {f['error']}")
    lines += summary(r)
    overlaps = sum(c["overlaps"] for c in r["contention_summary"])
    lines.append(f"overlaps: {overlaps}")
    lat = ", ".join(f"{n} voters p50 {v['p50']:.1f} / p99 {v['p99']:.1f} ms" for n, v in r["latency_ms_by_voters"].items())
    lines.append("targets: " + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in r["targets_met"].items())
                 + f"; latency (no target): {lat or '-'}")
    if r["leftover_processes"]:
        lines.append(f"processes that outlived their node (killed): {r['leftover_processes']}")
    return "\n".join(lines)


def waited(wait: float) -> str:
    return f"wait={wait:g}" if wait else "no wait"


def summary(r: dict) -> list[str]:
    """Approvals/s under contention beside the ideal, one line per mesh size and count; then the listeners."""
    lines = []
    waits = sorted({c["wait_s"] for c in r["contention_summary"]})
    for size in r["sizes"]:
        runs = {(c["contenders"], c["wait_s"]): c for c in size.get("contention", [])}
        if not runs:
            continue
        lat = size.get("latency") or {}
        per_s = next(iter(runs.values()))["ideal_approvals_per_s"]
        ideal_text = (f"ideal {per_s:.1f}/s = 1 / (uncontended p50 {lat['p50_ms']:.1f} ms + hold {r['settings']['hold_ms']:g} ms)"
                      if per_s else "ideal unknown (no uncontended approval)")
        lines.append(f"approvals/s on one claim, {size['voters']} voters, {ideal_text}:")
        for count in sorted({k for k, _ in runs}):
            cells = []
            for wait in waits:
                c = runs.get((count, wait))
                if c is None:
                    continue
                of = f" (x{c['of_ideal']:.2f} ideal)" if c["of_ideal"] is not None else ""
                share = f"{c['approval_share']:.2f}" if c["approval_share"] is not None else "-"
                cells.append(f"{waited(wait)}: {c['approvals_per_s']:.1f}/s{of}, share {share}, overlaps {c['overlaps']}")
            lines.append(f"  {count:>3} contenders  " + "; ".join(cells))
    listeners = r.get("listeners")
    if listeners is not None:
        if "skipped" in listeners:
            lines.append(f"listeners: skipped: {listeners['skipped']}")
        for x in listeners.get("runs", []):
            goal = x.get("goal_ms")
            met = "" if goal is None else f", goal p50 <= {goal:g} ms: {'met' if x['p50_ms'] <= goal else 'MISSED'}"
            lines.append(f"decision latency, {x['listeners']} on_intention listeners ({x.get('proposals')} proposals,"
                         f" window {x.get('window_ms', 0):g} ms): p50 {x['p50_ms']:.1f} ms, p99 {x['p99_ms']:.1f} ms,"
                         f" max {x.get('max_ms', 0):.1f} ms{met}; outcomes {x.get('outcomes')}, dropped {x.get('dropped')}")
        for f in listeners.get("failures", []):
            lines.append(f"listeners FAILED with {f['listeners']}: {f['error']}")
    return lines


def listed(convert, least: float, what: str):
    """An argparse type: a comma-separated list of ``what``, each converted and at least ``least``."""
    def parse(text: str) -> list:
        try:
            values = [convert(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a comma-separated list of {what}: {text!r}") from None
        if any(v < least for v in values):
            raise argparse.ArgumentTypeError(f"{what} must be >= {least:g}")
        return values
    return parse


sizes = listed(int, 1, "counts")
seconds = listed(float, 0, "seconds")


def main() -> None:
    parser = argparse.ArgumentParser(description="mesh intentions: vote latency and decisions under contention")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON object")
    out.add_argument("--both", action="store_true", help="print the table, then the JSON object on one line")
    parser.add_argument("--voters", type=sizes, default=[3, 5, 10], help="mesh sizes for the latency (default 3,5,10)")
    parser.add_argument("--contention-voters", type=sizes, default=[3],
                        help="mesh sizes for the contention part (default 3; its latency is measured too, for the ideal)")
    parser.add_argument("--proposals", type=int, default=200, help="timed uncontended proposals per mesh size")
    parser.add_argument("--warmup", type=int, default=5, help="untimed proposals before them")
    parser.add_argument("--window", type=float, default=0.3, help="every proposal's window, in seconds")
    parser.add_argument("--contenders", type=sizes, default=[2, 5, 10],
                        help="counts of agents proposing on the one claim, one run each (default 2,5,10)")
    parser.add_argument("--wait", type=seconds, default=[0.0, 2.0],
                        help="the contenders' wait= in seconds, one run each; 0 is without (default 0,2)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each contention run")
    parser.add_argument("--hold-ms", type=float, default=2.0, help="how long an approved contender holds the claim")
    parser.add_argument("--backoff-ms", type=float, default=30.0, help="a lost contender waits uniform(0, this)")
    parser.add_argument("--listeners", type=sizes, default=[10, 50],
                        help="decision latency with this many on_intention listeners (default 10,50; \"\" for none;"
                             " benchmarks/intention_listeners.py)")
    parser.add_argument("--listener-proposals", type=int, default=100, help="timed proposals per listener count")
    parser.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    args = parser.parse_args()

    def interrupted(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the nodes are being stopped
        raise Interrupted()

    signal.signal(signal.SIGTERM, interrupted)
    progress = (lambda line: print(line, file=sys.stderr, flush=True)) if args.verbose else (lambda line: None)
    r = run(args, progress)
    if args.json:
        print(json.dumps(r))
    else:
        print(table(r))
        if args.both:
            print(json.dumps(r))


if __name__ == "__main__":
    main()
