"""Placement at scale: plan() time by replicas, and many nodes on one machine settling once.

    python benchmarks/scale_nodes.py                   # plan() times, then 16 and 32 nodes (a table)
    python benchmarks/scale_nodes.py --json            # one JSON object
    python benchmarks/scale_nodes.py --nodes 16 --no-plan -v   # one mesh size, progress on stderr
    python benchmarks/scale_nodes.py --voters 0 --stagger 0.5  # every node a voter; one node every 0.5 s

**plan()**: :func:`mesh.core.placement.plan` for 10, 100 and 1,000 replicas on 16 alike
nodes, in two shapes: one agent with R replicas, and R agents of one replica each (spread), the
nodes declaring R/16 each (``away``: how many are placed off their home node);
the median of repeated calls. ``before`` is the planner as it was before issue 17 (commit
8fac1dc), loaded from this checkout's git history so both run in the same process; ``after``
is the one in the tree.

**The leader's pass**: one node, leader of a mesh of one, running N agents (10, 100, 1,000; as
instances and directory entries, with N other keys in the view): the median time of one
housekeeping pass over following the leader (conducting, as leader) and publishing what it
acted on, on BEFORE's tree and on this one (each in a child process).

**Nodes**: ``--nodes`` N `mesh up` processes (default 16 and 32) on loopback ports, sharing a
temporary MESH_HOME. n00 starts alone, the others join it, all started at once (``--stagger``:
one every S seconds); every spec declares 5 echo agents (``nXX-e0`` .. ``nXX-e4``), default
timings and capacity; n00-n02 are voters, the others not (``--voters``; the README's advice is 3
or 5). Measured:

* **settled**: seconds from the first ``mesh up`` until every node answers, all name one
  leader and term, every agent shows ``running`` once, and each answers an ask (through n00);
* **extra spawns**: agent processes started beyond one per agent, from the nodes' logs
  (``placed here by`` lines, plus the restarts ``mesh status`` counts), until settled and
  ``--quiet`` seconds after (default 3: a late shuffle counts);
* **leases lost**: ``lease lost: out of touch`` lines in the nodes' logs over the same time (one
  per node each time its lease lapsed with agents to stop);
* **elections**: ``elected leader`` lines (terms won) over the same time;
* **per node**: the fewest and most agents a node runs once settled (spread: 5 and 5).

Every wait is bounded (``--timeout``, default 120 s); every process started is stopped
(SIGTERM, then SIGKILL after 20 s, with its agents). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import mesh  # noqa: E402
from mesh.core import placement  # noqa: E402

from election import free_port  # noqa: E402

ACTORS = '''"""The actor of benchmarks/scale_nodes.py: answers with what it was sent."""

import mesh


class Echo(mesh.Actor):
    def on_message(self, message):
        return message
'''

AGENTS_PER_NODE = 5
STATUS_TIMEOUT = 2.0
ASK_TIMEOUT = 1.0


# -- plan() ------------------------------------------------------------------------------------


#: The commit whose planner is "before": the tree as issue 17 found it.
BEFORE = "8fac1dc"


def _plan_before() -> Any:
    """plan() as of commit BEFORE, loaded from this checkout's git history (None without git)."""
    try:
        source = subprocess.run(["git", "-C", str(HERE.parent), "show", f"{BEFORE}:mesh/core/placement.py"],
                                capture_output=True, text=True, check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    module = types.ModuleType("placement_before")
    sys.modules[module.__name__] = module  # its dataclasses look their module up
    exec(compile(source, f"{BEFORE}:mesh/core/placement.py", "exec"), module.__dict__)
    return module


def _time(fn: Any, *args: Any, budget: float = 0.5) -> float:
    """Median seconds of one call, over repeated calls for about ``budget`` seconds (at least 3)."""
    times = []
    started = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - started < budget:
        t = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def plan_times(sizes: tuple[int, ...] = (10, 100, 1000), nodes: int = 16) -> list[dict[str, Any]]:
    """plan() before and after, in ms, for each size and shape; with the spread's counts per node."""
    rows = []
    versions = [("before", _plan_before()), ("after", placement)]
    for r in sizes:
        for shape in ("one agent", "agents of one"):
            row: dict[str, Any] = {"replicas": r, "shape": shape, "nodes": nodes}
            for label, module in versions:
                if module is None:
                    continue
                supply = [module.NodeSupply(f"n{i:02d}", cpu=2.0, memory=8 << 30) for i in range(nodes)]
                agents = ([module.AgentDemand("w", home="n00", replicas=r)] if shape == "one agent" else
                          [module.AgentDemand(f"n{i * nodes // r:02d}-a{i:04d}", home=f"n{i * nodes // r:02d}")
                           for i in range(r)])
                row[f"{label}_ms"] = round(_time(module.plan, agents, supply) * 1000, 3)
                placed = module.plan(agents, supply).assignment
                per = list(_counts(placed).values())
                row[f"{label}_per_node"] = [min(per), max(per)]
                row[f"{label}_away"] = sum(1 for a in agents if a.replicas == 1 and placed.get(a.name) != a.home)
            rows.append(row)
    return rows


def _counts(assignment: dict[str, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in assignment.values():
        out[n] = out.get(n, 0) + 1
    return out


# -- the leader's pass --------------------------------------------------------------------------------

#: A timed loop run in a child process on one tree (this one, or BEFORE's): one node on the in-memory
#: transport, leader of a mesh of one, that runs N agents placed by itself (instances the supervisor
#: knows, as running; their directory entries and the assignment in the gossip view, with N other keys
#: besides). Prints the median microseconds of one housekeeping pass over the leader's part:
#: following (and conducting, when leading) and publishing what it acted on.
TICK_LOOP = r"""
import os, sys, statistics, tempfile, time
os.environ["MESH_HOME"] = tempfile.mkdtemp(prefix="mesh-tick-")
from mesh.runtime.clock import FakeClock
from mesh.runtime.memory import MemoryNetwork
from mesh.runtime.node import Node
from mesh.runtime.node.instance import Instance
from mesh.spec import NodeSpec

n = int(sys.argv[1])
clock = FakeClock()
spec = NodeSpec(file="<spec>", base_dir=os.environ["MESH_HOME"], name="solo", listen="mem://solo:1",
                capacity_cpu=64.0, capacity_memory=64 << 30)
node = Node(spec, on_event=lambda line: None, transport=MemoryNetwork().transport("solo"), clock=clock)
node.bind()
node.gossip._join_until = 0.0
node.gossip.tick()
node._follow_the_leader(clock.monotonic())
node.leadership.tick(); clock.advance(0.2); node.leadership.tick()
assert node.leadership.is_leader
term, g = node.leadership.term, node.gossip
g.write(f"$assign/{term}", {"term": term, "leader": "solo", "seq": 0, "unplaced": {}, "conflicts": [], "replicas": {
    f"a{i}": {"node": "solo", "group": f"a{i}", "home": "other", "spec": {"name": f"a{i}", "class": "m:C"}}
    for i in range(n)}}, system=True)
for i in range(n):
    g.write(f"$agents/a{i}", {"node": "solo", "state": "running", "pid": 1000 + i}, system=True)
    g.write(f"user/k{i}", i)
    node.supervisor.instances[f"a{i}"] = Instance(name=f"a{i}", spec=None, group=f"a{i}", state="running",
                                                   placed_by=f"solo@{term}")
times = []
for _ in range(300):
    clock.advance(0.1)
    t = time.perf_counter()
    node._follow_the_leader(clock.monotonic())
    node.follower.publish_acted()
    times.append(time.perf_counter() - t)
print(round(statistics.median(times[50:]) * 1e6, 1))
node.gossip.close(); node.broadcasts.close(); node.router.close(0)
"""


def tick_times(sizes: tuple[int, ...] = (10, 100, 1000)) -> list[dict[str, Any]]:
    """The leader's housekeeping pass (follow, conduct, publish acted) with N agents, median us, before and after."""
    rows = [{"agents": n} for n in sizes]
    with tempfile.TemporaryDirectory(prefix="mesh-before-") as before:
        try:
            archive = subprocess.run(["git", "-C", str(HERE.parent), "archive", BEFORE, "mesh"], capture_output=True,
                                     check=True, timeout=60).stdout
            subprocess.run(["tar", "-x", "-C", before], input=archive, check=True, timeout=60)
            trees = [("before", Path(before)), ("after", HERE.parent)]
        except (OSError, subprocess.SubprocessError):
            trees = [("after", HERE.parent)]
        for label, tree in trees:
            for row in rows:
                done = subprocess.run([sys.executable, "-c", TICK_LOOP, str(row["agents"])], capture_output=True,
                                      text=True, timeout=600, env=dict(os.environ, PYTHONPATH=str(tree)), cwd=tree)
                row[f"{label}_us"] = float(done.stdout.strip()) if done.returncode == 0 else None
    return rows


# -- many nodes -------------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    port: int
    spec: Path
    log: Path
    popen: subprocess.Popen | None = None
    client: mesh.Client | None = None

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"


@dataclass
class Mesh:
    n: int
    root: Path
    tree: Path = HERE.parent  #: the mesh source tree the nodes run (another checkout: its code, before/after)
    voters: int = 3  #: the first this many nodes are voters, the others not (0: every node is one)
    procs: list[Proc] = field(default_factory=list)

    def agents(self) -> list[str]:
        return [f"{p.name}-e{j}" for p in self.procs for j in range(AGENTS_PER_NODE)]

    def write(self) -> None:
        (self.root / "actors").mkdir(parents=True, exist_ok=True)
        (self.root / "actors" / "scale_actors.py").write_text(ACTORS)
        for i in range(self.n):
            name, port = f"n{i:02d}", free_port()
            agents = "".join(f'\n[[agents]]\nname = "{name}-e{j}"\nclass = "scale_actors:Echo"\n'
                             for j in range(AGENTS_PER_NODE))
            spec = self.root / f"{name}.toml"
            voter = "" if not self.voters or i < self.voters else "voter = false\n"
            spec.write_text(f'[node]\nname = "{name}"\nlisten = "tcp://127.0.0.1:{port}"\n{voter}'
                            f'path = ["{self.root / "actors"}"]\n{agents}')
            self.procs.append(Proc(name, port, spec, self.root / f"{name}.log"))

    def start(self, stagger: float = 0.0) -> None:
        env = dict(os.environ, MESH_HOME=str(self.root / "home"), MESH_NO_LIVE="1", MESH_LOG_LEVEL="WARNING",
                   PYTHONPATH=str(self.tree))
        env.pop("MESH_NODE", None)
        first = self.procs[0]
        for p in self.procs:
            join = [] if p is first else ["--join", first.address]
            with open(p.log, "wb") as out:
                p.popen = subprocess.Popen([sys.executable, "-m", "mesh.cli", "up", str(p.spec), *join], stdout=out,
                                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=self.root)
            if stagger:
                time.sleep(stagger)

    def status(self, p: Proc) -> dict | None:
        try:
            if p.client is None:
                p.client = mesh.connect(p.address, connect_timeout=0.5)
            return p.client.control("status", timeout=STATUS_TIMEOUT)
        except mesh.MeshError:
            return None

    def settled(self, asked: set[str], progress: Any) -> bool:
        """One poll: all agree on a leader, every agent runs once, and (once so) each answers an ask."""
        statuses = [self.status(p) for p in self.procs]
        if any(s is None for s in statuses):
            return False
        leaders = {(s.get("leader"), s.get("term")) for s in statuses if s}
        if len(leaders) != 1 or None in next(iter(leaders)):
            return False
        running: dict[str, int] = {}
        for s in statuses:
            for a in s["agents"] if s else ():
                if not a.get("remote") and a.get("state") == "running":
                    running[a["name"]] = running.get(a["name"], 0) + 1
        wanted = self.agents()
        if any(running.get(a) != 1 for a in wanted):
            return False
        client = self.procs[0].client
        assert client is not None
        for a in wanted:
            if a in asked:
                continue
            try:
                if client.actor(a).ask({"ping": a}, timeout=ASK_TIMEOUT) != {"ping": a}:
                    return False
            except mesh.MeshError:
                return False
            asked.add(a)
        return True

    def counts(self) -> dict[str, Any]:
        """Spawns, leases lost and agents per node, from the logs and the statuses."""
        placed = lost = elected = 0
        for p in self.procs:
            text = p.log.read_text(errors="replace") if p.log.exists() else ""
            placed += len(re.findall(r" placed here by ", text))
            lost += len(re.findall(r"lease lost: out of touch", text))  # once per lapse, not per agent stopped
            elected += len(re.findall(r"elected leader of term", text))
        restarts, per_node = 0, {}
        for p in self.procs:
            s = self.status(p)
            mine = [a for a in (s or {}).get("agents", []) if not a.get("remote") and a.get("state") == "running"]
            per_node[p.name] = len(mine)
            restarts += sum(a.get("restarts") or 0 for a in (s or {}).get("agents", []) if not a.get("remote"))
        own = self.n * AGENTS_PER_NODE
        # An agent of a node's own spec placed on that node is started without a "placed here" line
        # only when the node runs it itself (local); every spread agent the leader places logs one.
        return {"spawns": placed + restarts, "extra_spawns": placed + restarts - own, "restarts": restarts,
                "leases_lost": lost, "elections_won": elected,
                "per_node": [min(per_node.values()), max(per_node.values())]}

    def stop(self) -> None:
        for p in self.procs:
            if p.client is not None:
                try:
                    p.client.close()
                except Exception:  # a broken client must not keep the nodes running
                    pass
                p.client = None
        children: list[psutil.Process] = []
        for p in self.procs:
            if p.popen is not None and p.popen.poll() is None:
                try:
                    children += psutil.Process(p.popen.pid).children(recursive=True)
                except psutil.NoSuchProcess:
                    pass
                p.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for p in self.procs:
            if p.popen is None:
                continue
            try:
                p.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait()
        for c in children:
            try:
                c.kill()
            except psutil.NoSuchProcess:
                pass


def run_mesh(n: int, timeout: float = 120.0, quiet: float = 3.0, verbose: bool = False, voters: int = 3,
             stagger: float = 0.0) -> dict[str, Any]:
    """Start N nodes with 5 agents each (``voters`` of them voters; 0: all); time to settled, extra
    spawns and leases lost. ``stagger``: seconds between two nodes' starts (0: all at once)."""
    def progress(line: str) -> None:
        if verbose:
            print(f"[{n} nodes] {line}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="mesh-scale-") as tmp:
        m = Mesh(n, Path(tmp), voters=voters)
        m.write()
        out: dict[str, Any] = {"nodes": n, "agents": n * AGENTS_PER_NODE, "voters": voters or n, "stagger_s": stagger}
        try:
            t0 = time.monotonic()
            m.start(stagger)
            asked: set[str] = set()
            settled_at = None
            while time.monotonic() - t0 < timeout:
                if m.settled(asked, progress):
                    settled_at = time.monotonic() - t0
                    break
                time.sleep(0.2)
            out["settled_s"] = None if settled_at is None else round(settled_at, 2)
            progress(f"settled in {out['settled_s']} s" if settled_at else "did not settle")
            time.sleep(quiet)
            out.update(m.counts())
            if verbose:
                for p in m.procs:
                    for line in p.log.read_text(errors="replace").splitlines():
                        if "lease lost" in line or "stepped down" in line or "elected" in line:
                            progress(f"{p.name}: {line}")
        finally:
            m.stop()
        return out


def measure(nodes: tuple[int, ...] = (16, 32), plan: bool = True, timeout: float = 120.0, quiet: float = 3.0,
            verbose: bool = False, voters: int = 3, stagger: float = 0.0) -> dict[str, Any]:
    """Everything this benchmark measures, as one dict."""
    out: dict[str, Any] = {}
    if plan:
        out["plan"] = plan_times()
        out["tick"] = tick_times()
    out["meshes"] = [run_mesh(n, timeout, quiet, verbose, voters, stagger) for n in nodes]
    return out


def table(result: dict[str, Any]) -> str:
    """The tables :func:`main` prints."""
    out: list[str] = []
    if "plan" in result:
        out.append("plan() on 16 nodes, median ms (before: commit 8fac1dc; after: this tree); replicas per node min-max;"
              " away: agents of one replica not on their home node")
        out.append(f"{'replicas':>8} {'shape':<14} {'before ms':>10} {'after ms':>9} {'before/node':>12} {'after/node':>11}"
              f" {'before away':>11} {'after away':>10}")
        for row in result["plan"]:
            out.append(f"{row['replicas']:>8} {row['shape']:<14} {row.get('before_ms', '-'):>10} {row['after_ms']:>9}"
                  f" {'-'.join(map(str, row.get('before_per_node', []))):>12}"
                  f" {'-'.join(map(str, row['after_per_node'])):>11} {row.get('before_away', '-'):>11}"
                  f" {row['after_away']:>10}")
    if "tick" in result:
        out.append("\nthe leader's housekeeping pass (follow, conduct, publish acted) with N agents, median us")
        out.append(f"{'agents':>6} {'before us':>10} {'after us':>9}")
        for row in result["tick"]:
            out.append(f"{row['agents']:>6} {str(row.get('before_us', '-')):>10} {str(row['after_us']):>9}")
    out.append(f"\n{'nodes':>5} {'voters':>6} {'agents':>6} {'settled s':>9} {'spawns':>6} {'extra':>5} {'restarts':>8}"
          f" {'leases lost':>11} {'elections':>9} {'agents/node':>11}")
    for row in result["meshes"]:
        per = "-".join(map(str, row.get("per_node", [])))
        out.append(f"{row['nodes']:>5} {row['voters']:>6} {row['agents']:>6} {str(row['settled_s']):>9}"
              f" {row.get('spawns', '?'):>6} {row.get('extra_spawns', '?'):>5} {row.get('restarts', '?'):>8}"
              f" {row.get('leases_lost', '?'):>11} {row.get('elections_won', '?'):>9} {per:>11}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--nodes", type=int, action="append", help="mesh sizes (default 16 and 32)")
    parser.add_argument("--no-plan", action="store_true", help="skip the plan() timings")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for a mesh to settle")
    parser.add_argument("--quiet", type=float, default=3.0, help="seconds counted after settling")
    parser.add_argument("--voters", type=int, default=3, help="how many nodes are voters (default 3; 0: all)")
    parser.add_argument("--stagger", type=float, default=0.0, help="seconds between two nodes' starts (default 0)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    result = measure(tuple(args.nodes or (16, 32)), not args.no_plan, args.timeout, args.quiet, args.verbose,
                     args.voters, args.stagger)
    if args.json:
        print(json.dumps(result))
        return 0
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
