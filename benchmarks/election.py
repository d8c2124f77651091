"""Leader failover of the Raft-lite election, with real `mesh up` processes on loopback.

    python benchmarks/election.py                          # a table (200 trials, about 5 min)
    python benchmarks/election.py --json                   # one JSON object
    python benchmarks/election.py --trials 10 --agent-trials 3 -v   # a quick run, one line per trial

The mesh: ``--nodes`` N (default 3) `mesh up` processes, each with its own spec and
loopback port, sharing a temporary MESH_HOME. n0 starts alone; the others join it.
n0's spec declares ``w``, N replicas of a tiny actor that answers with its pid;
spread placement puts one replica on every node. Every spec gives the election
timings explicitly (defaults: the spec's own, timeouts 1-2 s and heartbeat 100 ms;
``--election-timeout-min 150 --election-timeout-max 300 --heartbeat 50`` measures
the fast-failover tuning of the README).

One trial:

1. Wait until the mesh is settled: every node answers, all agree on one leader
   and term, every node sees all N members alive, each replica of ``w`` runs
   exactly once (one per node) and every node's status shows all of them running.
2. Sleep a random time, uniform in [0, heartbeat): the crash falls anywhere within
   the leader's heartbeat interval.
3. ``t0 = time.time()``; SIGKILL the leader's `mesh up` process (its agent
   processes are left to notice and exit on their own).
4. Poll the survivors' status every ~5 ms until they all agree on a new leader in a
   higher term. The **election time** is the new leader's
   ``election.leader_since - t0``: from the crash to the moment the new leader
   became leader and sent its first heartbeats (both wall-clock, same machine).
   A term jump of more than one means a round was lost (split vote, or a
   candidate that did not win): counted in the **split-vote rate**.
5. For the first ``--agent-trials`` trials, also the **agent failover** time: from
   t0 until the replica of ``w`` that ran on the dead node answers an ask again (a
   new process, asked through a survivor). Expect ~3-4 s: the leader waits out a
   3 s lease before it re-places the dead node's agents.
6. Check that the dead node's agent processes are gone (5 s grace from t0; any
   still alive is reported as an orphan, watched until it exits and killed if it
   lives 60 s), restart the dead node with the same spec, port and MESH_HOME,
   joining through a survivor, and wait until the mesh is settled again (this is
   step 1 of the next trial). If the leader or term then differs from the one just
   elected, the leader changed without a crash (a step-down, or the returning node
   disrupting the term): counted as a **leader change without a crash**.

Every wait is bounded. A trial that times out is counted as failed, the reason
is printed on stderr and the whole mesh is restarted from scratch. An election
time measured in a trial that failed later (in agent failover or rejoin) still
counts in the election figures.

Targets: election p50 <= election_timeout_max and p99 <= 2 x election_timeout_max
(2 s and 4 s with the default 1-2 s timeouts). Figures are printed,
never asserted. The benchmark makes itself a child subreaper (Linux), so agent
processes orphaned by a SIGKILLed node are reaped here rather than left as zombies.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import mesh  # noqa: E402
from mesh.spec import NodeSpec  # noqa: E402

ACTORS = '''"""The actor the election benchmark runs (written by benchmarks/election.py)."""

import os

import mesh


class WhoAmI(mesh.Actor):
    def on_message(self, message):
        return {"pid": os.getpid()}
'''

#: Seconds to wait for a started node to answer a ping.
START_TIMEOUT = 30.0
#: Seconds to wait for the mesh to settle (after a restart: rejoin and re-spread of w).
SETTLE_TIMEOUT = 60.0
#: Seconds to wait for the survivors to agree on a new leader.
ELECTION_TIMEOUT = 15.0
#: Seconds to wait for the dead node's replica of w to answer again.
FAILOVER_TIMEOUT = 30.0
#: Seconds a SIGKILLed node's agent processes get to exit on their own.
ORPHAN_GRACE = 5.0
#: Seconds after which an orphan that has not exited on its own is killed (and reported so).
ORPHAN_KILL = 60.0
#: Timeout of one status request, in seconds (a settled node answers in about a millisecond).
STATUS_TIMEOUT = 2.0
#: Polling intervals, in seconds.
ELECTION_POLL = 0.005
SETTLE_POLL = 0.02
#: Timeout of one ask while polling for the moved replica, in seconds.
ASK_TIMEOUT = 0.1


class TrialFailed(Exception):
    """A bounded wait ran out; ``phase`` says which."""

    def __init__(self, phase: str, reason: str):
        super().__init__(f"{phase}: {reason}")
        self.phase = phase
        self.reason = reason


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (as in latency.py)."""
    values = sorted(values)
    return values[min(len(values) - 1, max(0, int(round(q / 100 * (len(values) - 1)))))]


def free_port() -> int:
    """A free loopback port below the ephemeral range, so no outgoing connection (say, a
    survivor reconnecting to the dead node) can take it while a node is down."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 0
    for _ in range(100):
        port = random.randrange(20000, low) if low > 21000 else 0
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free loopback port")


def become_subreaper() -> bool:
    """Orphaned descendants (agents of a SIGKILLed node) become our children, so we can reap them."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def gone(proc: psutil.Process) -> bool:
    """True if the process has exited (reaping it if it is our zombie child)."""
    try:
        os.waitpid(proc.pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def describe_process(proc: psutil.Process, t0: float) -> dict:
    """What a process left behind by a killed node is: pid, agent name, state, age at t0."""
    out: dict = {"pid": proc.pid}
    try:
        with proc.oneshot():
            out["agent"] = proc.environ().get("MESH_AGENT_NAME")
            out["status"] = proc.status()
            out["started_before_kill_s"] = round(t0 - proc.create_time(), 2)
            out["parent"] = proc.ppid()
    except (psutil.Error, OSError) as exc:
        out["error"] = type(exc).__name__
    return out


def watch_lingering(lingering: list, progress) -> list:
    """Orphans seen alive after the grace: note when they are gone; kill those older than ORPHAN_KILL."""
    still = []
    for proc, t0, record in lingering:
        if gone(proc):
            record["gone_within_s"] = round(time.time() - t0, 1)
            progress(f"orphan {record['pid']} ({record.get('agent')}) is gone, {record['gone_within_s']} s after its node's kill")
        elif time.time() - t0 > ORPHAN_KILL:
            record["killed_after_s"] = round(time.time() - t0, 1)
            progress(f"orphan {record['pid']} ({record.get('agent')}) still alive {record['killed_after_s']} s after "
                     f"its node's kill: killing it")
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
            gone(proc)
        else:
            still.append((proc, t0, record))
    return still


def status(client: mesh.Client) -> dict | None:
    """The node's status (client.status() with a short timeout), or None if it does not answer."""
    try:
        return client.control("status", timeout=STATUS_TIMEOUT)
    except mesh.MeshError:
        return None


@dataclass
class Node:
    name: str
    port: int
    spec: Path
    proc: subprocess.Popen | None = None
    client: mesh.Client | None = None
    starts: int = 0

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close_client(self) -> None:
        if self.client is not None:
            try:
                self.client.close()
            except Exception:  # a broken client must not stop the benchmark
                pass
            self.client = None


@dataclass
class Settled:
    leader: str
    term: int
    placement: dict[str, tuple[str, int]]  # replica -> (node, pid)


@dataclass
class Cluster:
    """N `mesh up` processes on loopback, started, killed and restarted by name."""

    n: int
    timings: dict[str, float]  # spec key -> seconds
    root: Path
    nodes: list[Node] = field(default_factory=list)
    orphans: list[psutil.Process] = field(default_factory=list)  # to kill at the end if still alive
    generation: int = 0  # meshes created: a fresh one (new ports and MESH_HOME) after a failed trial
    home: Path | None = None  # this generation's MESH_HOME

    def __post_init__(self) -> None:
        (self.root / "actors").mkdir(parents=True, exist_ok=True)
        (self.root / "actors" / "bench_actors.py").write_text(ACTORS)

    @property
    def replicas(self) -> set[str]:
        return {f"w.{i}" for i in range(self.n)}

    def by_name(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    # -- processes ---------------------------------------------------------------------

    def create(self) -> None:
        """A fresh mesh: new ports, new MESH_HOME, specs written, every node started."""
        self.generation += 1
        self.home = self.root / f"home-{self.generation}"
        self.nodes = []
        for i in range(self.n):
            port = free_port()
            spec = self.root / f"n{i}-{self.generation}.toml"
            timing = "".join(f'{key} = "{round(value * 1000)}ms"\n' for key, value in self.timings.items())
            agents = f'\n[[agents]]\nname = "w"\nclass = "bench_actors:WhoAmI"\nreplicas = {self.n}\n' if i == 0 else ""
            spec.write_text(f'[node]\nname = "n{i}"\nlisten = "tcp://127.0.0.1:{port}"\n'
                            f'path = ["{self.root / "actors"}"]\n{timing}{agents}')
            self.nodes.append(Node(f"n{i}", port, spec))
        self.start(self.nodes[0])
        for node in self.nodes[1:]:
            self.start(node, join=self.nodes[0].address)

    def start(self, node: Node, join: str | None = None) -> None:
        """Start (or restart) the node's `mesh up` and wait until it answers."""
        node.close_client()
        env = dict(os.environ, MESH_HOME=str(self.home), MESH_NO_LIVE="1", MESH_LOG_LEVEL="WARNING")
        env.pop("MESH_NODE", None)
        node.starts += 1
        log = open(self.root / f"{node.name}-{self.generation}.{node.starts}.log", "wb")
        try:
            node.proc = subprocess.Popen(
                [sys.executable, "-m", "mesh.cli", "up", str(node.spec), *(["--join", join] if join else [])],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=self.root,
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if node.proc.poll() is not None:
                raise TrialFailed("start", f"{node.name}: mesh up exited with {node.proc.returncode} "
                                           f"(log: {log.name})")
            try:
                node.client = mesh.connect(node.address, connect_timeout=0.5)
                return
            except mesh.NodeUnavailable:
                if time.monotonic() > deadline:
                    raise TrialFailed("start", f"{node.name} did not answer within {START_TIMEOUT:g} s") from None
                time.sleep(0.05)

    def kill(self, node: Node) -> list[psutil.Process]:
        """SIGKILL the node's `mesh up` (only it); return its agent processes, left to exit on their own."""
        try:
            children = psutil.Process(node.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait()
        node.close_client()
        return children

    def stop(self) -> None:
        """SIGTERM every node (SIGKILL after 20 s) and kill anything they left behind."""
        procs = list(self.orphans)
        for node in self.nodes:
            node.close_client()
            if node.alive:
                try:
                    procs += psutil.Process(node.proc.pid).children(recursive=True)
                except psutil.NoSuchProcess:
                    pass
                node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes:
            if node.proc is None:
                continue
            try:
                node.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait()
        deadline = time.monotonic() + 10
        for proc in procs:
            while not gone(proc) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not gone(proc):
                try:
                    proc.kill()
                except psutil.NoSuchProcess:
                    pass
                gone(proc)
        self.orphans = []

    # -- observations ----------------------------------------------------------------------

    def settled(self) -> Settled | None:
        """The settled mesh (see the module docstring, step 1), or None if it is not (yet)."""
        names = {node.name for node in self.nodes}
        statuses = []
        for node in self.nodes:
            st = status(node.client) if node.alive and node.client else None
            if st is None:
                return None
            statuses.append(st)
        views = {(st["leader"], st["term"]) for st in statuses}
        if len(views) != 1:
            return None
        ((leader, term),) = views
        if leader not in names:
            return None
        placement: dict[str, list[tuple[str, int]]] = {}
        for st in statuses:
            if {m["name"] for m in st["members"] if m["state"] == "alive"} != names:
                return None
            shown = {a["name"]: a["state"] for a in st["agents"]}
            if any(shown.get(r) != "running" for r in self.replicas):
                return None
            for a in st["agents"]:
                if not a.get("remote") and a["name"] in self.replicas and a["pid"]:
                    placement.setdefault(a["name"], []).append((st["node"]["name"], a["pid"]))
        if set(placement) != self.replicas or any(len(v) != 1 for v in placement.values()):
            return None
        if {v[0][0] for v in placement.values()} != names:  # spread: one replica on every node
            return None
        return Settled(leader, term, {r: v[0] for r, v in placement.items()})

    def wait_settled(self) -> Settled:
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            found = self.settled()
            if found:
                return found
            if time.monotonic() > deadline:
                raise TrialFailed("settle", f"the mesh did not settle within {SETTLE_TIMEOUT:g} s "
                                            f"({self.describe()})")
            time.sleep(SETTLE_POLL)

    def describe(self) -> str:
        """What each node sees, for failure messages."""
        parts = []
        for node in self.nodes:
            st = status(node.client) if node.alive and node.client else None
            if st is None:
                parts.append(f"{node.name}: {'down' if not node.alive else 'no answer'}")
                continue
            alive = sum(m["state"] == "alive" for m in st["members"])
            local = ",".join(f"{a['name']}={a['state']}" for a in st["agents"] if not a.get("remote"))
            parts.append(f"{node.name}: leader {st['leader']} term {st['term']}, {alive} alive, local [{local}]")
        return "; ".join(parts)


def wait_new_leader(survivors: list[Node], old: Settled) -> tuple[dict, float]:
    """Poll the survivors until they agree on a new leader in a higher term: (its status, when seen)."""
    deadline = time.monotonic() + ELECTION_TIMEOUT
    while time.monotonic() < deadline:
        statuses = [status(node.client) for node in survivors]
        seen = time.time()
        if all(statuses):
            views = {(st["leader"], st["term"]) for st in statuses}
            if len(views) == 1:
                ((leader, term),) = views
                if leader is not None and leader != old.leader and term > old.term:
                    st = next((st for st in statuses if st["node"]["name"] == leader), None)
                    if st is not None and st["election"].get("leader_since") is not None:
                        return st, seen
        time.sleep(ELECTION_POLL)
    views = [(node.name, st and (st["leader"], st["term"]))
             for node, st in ((node, status(node.client)) for node in survivors)]
    raise TrialFailed("election", f"no new leader agreed on within {ELECTION_TIMEOUT:g} s "
                                  f"(old: {old.leader} term {old.term}; survivors see {views})")


def wait_replica(survivor: Node, replica: str, old_pid: int, t0: float) -> float:
    """Ask ``replica`` through ``survivor`` until a new process answers: seconds since t0."""
    client = mesh.connect(survivor.address, resolve_timeout=0.0, connect_timeout=1.0)
    try:
        ref = client.actor(replica)
        deadline = time.monotonic() + FAILOVER_TIMEOUT
        while time.monotonic() < deadline:
            try:
                answer = ref.ask({}, timeout=ASK_TIMEOUT)
                if isinstance(answer, dict) and answer.get("pid") != old_pid:
                    return time.time() - t0
            except mesh.MeshError:
                client._forget(replica)  # resolve it again: it may have moved
            time.sleep(0.01)
    finally:
        client.close()
    raise TrialFailed("agent failover", f"{replica} (pid {old_pid} on the dead node) did not answer from a new "
                                        f"process within {FAILOVER_TIMEOUT:g} s")


def run(args: argparse.Namespace, progress) -> dict:
    timings = {"election_timeout_min": args.election_timeout_min / 1000,
               "election_timeout_max": args.election_timeout_max / 1000,
               "heartbeat": args.heartbeat / 1000}
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="mesh-election-bench-"))
    cluster = Cluster(args.nodes, timings, root)
    subreaper = become_subreaper()
    elections: list[float] = []  # seconds
    observed: list[float] = []  # seconds from t0 until the benchmark saw the survivors agree
    jumps: Counter = Counter()  # term jumps of each measured election
    killed: Counter = Counter()  # which node led when it was killed
    failovers: list[float] = []
    failures: list[dict] = []
    orphans: list[dict] = []
    changes: list[dict] = []  # leader changes nobody caused: between the election and the next settle
    lingering: list[tuple[psutil.Process, float, dict]] = []  # orphans not seen to exit yet
    done = 0
    mesh_starts = 0
    started = time.monotonic()
    try:
        current: Settled | None = None
        for trial in range(args.trials):
            rejoining = False
            try:
                if current is None:  # first trial, or after a failure: a fresh mesh
                    if mesh_starts:
                        cluster.stop()
                    mesh_starts += 1
                    cluster.create()
                    current = cluster.wait_settled()
                victim = cluster.by_name(current.leader)
                survivors = [node for node in cluster.nodes if node is not victim]
                lost = next(r for r, (where, _) in current.placement.items() if where == victim.name)
                time.sleep(rng.uniform(0, timings["heartbeat"]))
                t0 = time.time()
                children = cluster.kill(victim)
                killed[victim.name] += 1
                leader_status, seen = wait_new_leader(survivors, current)
                election = leader_status["election"]["leader_since"] - t0
                jump = leader_status["term"] - current.term
                elections.append(election)
                observed.append(seen - t0)
                jumps[jump] += 1
                line = (f"trial {trial + 1}: {victim.name} (term {current.term}) killed; "
                        f"{leader_status['leader']} leads term {leader_status['term']} after {election * 1000:.0f} ms")
                if trial < args.agent_trials:
                    survivor = next(node for node in survivors if node.name != leader_status["leader"])
                    failover = wait_replica(survivor, lost, current.placement[lost][1], t0)
                    failovers.append(failover)
                    line += f"; {lost} answers again after {failover * 1000:.0f} ms"
                deadline = t0 + ORPHAN_GRACE
                while not all(gone(p) for p in children) and time.time() < deadline:
                    time.sleep(0.05)
                left = [p for p in children if not gone(p)]
                if left:
                    found = [describe_process(p, t0) for p in left]
                    orphans.append({"trial": trial + 1, "node": victim.name, "processes": found})
                    progress(f"trial {trial + 1}: {len(left)} process(es) of the killed {victim.name} still alive "
                             f"{time.time() - t0:.1f} s after the kill: {found}")
                    lingering += [(p, t0, record) for p, record in zip(left, found, strict=True)]
                rejoining = True
                cluster.start(victim, join=survivors[0].address)
                current = cluster.wait_settled()
                if (current.leader, current.term) != (leader_status["leader"], leader_status["term"]):
                    changes.append({"trial": trial + 1, "elected": f"{leader_status['leader']} term {leader_status['term']}",
                                    "settled": f"{current.leader} term {current.term}"})
                    progress(f"trial {trial + 1}: the leader changed without a crash: "
                             f"{changes[-1]['elected']} -> {changes[-1]['settled']}")
                done += 1
                lingering = watch_lingering(lingering, progress)
                if args.verbose:
                    progress(line)
            except TrialFailed as exc:
                failures.append({"trial": trial + 1, "phase": f"rejoin ({exc.phase})" if rejoining else exc.phase,
                                 "reason": exc.reason})
                progress(f"trial {trial + 1} FAILED in {failures[-1]['phase']}: {exc.reason}; "
                         f"restarting the mesh")
                current = None
    finally:
        for proc, _, record in lingering:
            if not gone(proc):
                record["still_alive_at_end"] = True
        cluster.orphans += [proc for proc, _, _ in lingering]
        cluster.stop()
        if args.keep:
            progress(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    ms = [e * 1000 for e in elections]
    seen_ms = [e * 1000 for e in observed]
    failover_ms = [f * 1000 for f in failovers]
    split = sum(count for jump, count in jumps.items() if jump > 1)
    r: dict = {
        "nodes": args.nodes,
        "election_timeout_min_ms": args.election_timeout_min,
        "election_timeout_max_ms": args.election_timeout_max,
        "heartbeat_ms": args.heartbeat,
        "seed": args.seed,
        "trials": args.trials,
        "trials_done": done,
        "trials_failed": len(failures),
        "elections": len(ms),
        "election_p50_ms": pct(ms, 50) if ms else None,
        "election_p99_ms": pct(ms, 99) if ms else None,
        "election_max_ms": max(ms) if ms else None,
        "election_min_ms": min(ms) if ms else None,
        "observed_p50_ms": pct(seen_ms, 50) if seen_ms else None,
        "split_votes": split,
        "split_vote_rate": split / len(ms) if ms else None,
        "term_jumps": {str(k): v for k, v in sorted(jumps.items())},
        "leaders_killed": dict(sorted(killed.items())),
        "agent_failovers": len(failover_ms),
        "agent_failover_p50_ms": pct(failover_ms, 50) if failover_ms else None,
        "agent_failover_max_ms": max(failover_ms) if failover_ms else None,
        "leader_changes_without_crash": len(changes),
        "orphaned_agents": sum(len(o["processes"]) for o in orphans),
        "mesh_starts": mesh_starts,
        "subreaper": subreaper,
        "wall_s": time.monotonic() - started,
        "failures": failures,
        "orphans": orphans,
        "leader_changes": changes,
    }
    p50_target, p99_target = args.election_timeout_max, 2 * args.election_timeout_max
    r["targets_met"] = {
        f"election p50 <= {p50_target:g} ms": ms != [] and r["election_p50_ms"] <= p50_target,
        f"election p99 <= {p99_target:g} ms": ms != [] and r["election_p99_ms"] <= p99_target,
    }
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}


def table(r: dict) -> str:
    def f(v, unit=" ms", fmt=".1f"):
        return "-" if v is None else f"{v:{fmt}}{unit}"

    rows = [
        ("mesh", f"{r['nodes']} nodes on loopback, election timeouts {r['election_timeout_min_ms']:g}-"
                 f"{r['election_timeout_max_ms']:g} ms, heartbeat {r['heartbeat_ms']:g} ms"),
        ("trials", f"{r['trials_done']} done, {r['trials_failed']} failed (of {r['trials']}); "
                   f"mesh started {r['mesh_starts']}x; {r['wall_s']:.0f} s"),
        ("election (crash -> new leader)", f"p50 {f(r['election_p50_ms'])}, p99 {f(r['election_p99_ms'])}, "
                                           f"max {f(r['election_max_ms'])}, min {f(r['election_min_ms'])} "
                                           f"({r['elections']} elections)"),
        ("  seen agreed by every survivor", f"p50 {f(r['observed_p50_ms'])}"),
        ("split votes (term jump > 1)", f"{r['split_votes']} of {r['elections']}"
                                        + (f" ({r['split_vote_rate'] * 100:.1f}%)" if r["elections"] else "")
                                        + f"; term jumps {r['term_jumps']}"),
        ("leaders killed", ", ".join(f"{k} {v}" for k, v in r["leaders_killed"].items()) or "-"),
        ("agent failover (crash -> answers)", f"p50 {f(r['agent_failover_p50_ms'])}, "
                                              f"max {f(r['agent_failover_max_ms'])} ({r['agent_failovers']} trials)"),
        ("leader changes without a crash", f"{r['leader_changes_without_crash']} (between an election and the next settle)"),
        ("orphaned agent processes", f"{r['orphaned_agents']} (alive {ORPHAN_GRACE:g} s after their node's SIGKILL)"),
    ]
    w = max(len(row[0]) for row in rows)
    lines = [f"{a.ljust(w)}  {b}" for a, b in rows]
    for c in r["leader_changes"]:
        lines.append(f"leader change without a crash in trial {c['trial']}: {c['elected']} -> {c['settled']}")
    for o in r["orphans"]:
        lines.append(f"orphans of {o['node']} in trial {o['trial']}: {o['processes']}")
    for fail in r["failures"]:
        lines.append(f"failed trial {fail['trial']} ({fail['phase']}): {fail['reason']}")
    lines.append("targets: " + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in r["targets_met"].items()))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--nodes", type=int, default=3, help="node processes (default 3)")
    parser.add_argument("--trials", type=int, default=200, help="leader kills (default 200)")
    parser.add_argument("--agent-trials", type=int, default=20,
                        help="the first K trials also time the dead node's replica answering again (default 20)")
    parser.add_argument("--election-timeout-min", type=float, default=NodeSpec.election_timeout_min * 1000, metavar="MS",
                        help="default: the spec's default")
    parser.add_argument("--election-timeout-max", type=float, default=NodeSpec.election_timeout_max * 1000, metavar="MS",
                        help="default: the spec's default")
    parser.add_argument("--heartbeat", type=float, default=NodeSpec.heartbeat * 1000, metavar="MS",
                        help="default: the spec's default")
    parser.add_argument("--seed", type=int, default=1, help="seed of the crash offsets")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (specs, node output)")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per trial on stderr")
    args = parser.parse_args()
    if args.nodes < 3:
        parser.error("--nodes must be at least 3 (the survivors of a crash must be a majority)")

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    r = run(args, progress)
    print(json.dumps(r) if args.json else table(r))


if __name__ == "__main__":
    main()
