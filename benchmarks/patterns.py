"""What the orchestration patterns cost over the bare messages they send, in one run, on this machine.

    python benchmarks/patterns.py            # a table
    python benchmarks/patterns.py --json     # one JSON object
    python benchmarks/patterns.py --quick    # small counts, 2 rounds

One node runs 10 echo agents (a replica group), a plain chain of 5 event relays and a
choreography of 5 reactors. Measured from this process (a client):

(a) parallel burst: ``--tasks`` small asks (default 1000) over the 10 agents, at most
    ``--limit`` in flight (10 and 100): ``Burst.run`` beside the same asks issued by hand with
    ``ask_async`` (a semaphore for the limit, on one event loop) and by hand with a thread per
    task in flight (a ThreadPoolExecutor of ``limit`` threads, plain ``ask``): wall time, tasks/s;
(b) sequential pipeline: a 5-stage ``Pipeline.run`` beside the same 5 asks in a loop, per run;
(c) event-driven choreography: per hop, the time from one reaction's start to the next one's
    (the reactors' own clocks, same machine), beside a plain chain of actors that publish the
    next event from ``on_event``; and the wall time of ``Choreography.run`` (start to end seen,
    including the 20 ms polls of the shared state).

(d) hierarchical command: a mission of 3 squads x 3 workers (the echo agents) through
    ``Commander`` -> ``SquadLeader`` -> workers, beside the same two-level asks by hand (the
    client asks the 3 leaders at once, each leader asks its 3 workers at once with ``ask_async``)
    and beside the 9 worker asks alone (``ask_async`` gathered from the client); per mission, all
    three on one event loop kept from round to round;
(e) adaptive mesh: ``--items`` work items in the shared state (default 30) processed through
    propose/act/update by 3 agents (``AdaptiveMesh.run``; each picks a random item left to do, as
    examples/adaptive.py does) and by 1 agent, beside one agent doing the same read -> decide ->
    write per item with no intention: time per item, and proposals per item (1.0 when no round
    was objected or stale).

Each figure is the median of ``--rounds`` rounds (default 5). Figures are printed, never asserted.
``--quick`` makes every count small (a minute or so), for a first look.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import mesh  # noqa: E402
from mesh.patterns import Burst, Choreography, Commander, Pipeline, Reactor, Stage, reaction  # noqa: E402
from mesh.patterns.adaptive import Action, AdaptiveAgent, AdaptiveMesh  # noqa: E402
from mesh.patterns.hierarchy import SquadLeader  # noqa: E402

WORKERS = 10
HOPS = 5
SQUADS, SQUAD_SIZE = 3, 3  # the squads' workers are the echo agents w.0 .. w.8
FLOCK = 3  # adaptive agents
ITEMS_PREFIX = "bench/items/"
AGENTS = WORKERS + 2 * HOPS + SQUADS + FLOCK


class Echo(mesh.Actor):
    def on_message(self, message):
        return message


class Hop(mesh.Actor):
    """A plain relay: hears PLAIN{index}, notes when, publishes PLAIN{index + 1} (unless last)."""

    def __init__(self, index: int, last: bool):
        self.index, self.last = index, last
        self.times: dict[str, float] = {}

    def on_start(self):
        self.mesh.subscribe(f"PLAIN{self.index}")
        self.mesh.state.set(f"bench/hop/{self.index}", True)

    def on_event(self, event):
        self.times[event.data] = time.time()
        if not self.last:
            self.mesh.publish(f"PLAIN{self.index + 1}", event.data, corr=event.id)

    def on_message(self, run):
        return self.times.get(run)


def _step(index: int) -> type:
    publishes = f"CHOREO{index + 1}" if index < HOPS - 1 else None

    class Step(Reactor):
        @reaction(f"CHOREO{index}", publishes=publishes)
        def react(self, data):
            return data

    Step.__name__ = Step.__qualname__ = f"Step{index}"
    return Step


Step0, Step1, Step2, Step3, Step4 = (_step(i) for i in range(HOPS))


class Lead(SquadLeader):
    """A squad leader with the default hooks (each worker gets the objective); ``{"by_hand": ...}``
    makes the same asks of its workers with no pattern: the comparison runs in the same process."""

    async def on_request(self, message):
        order = message["by_hand"]
        refs = [self.mesh.actor(w) for w in order["workers"]]
        answers = await asyncio.gather(*(ref.ask_async(order["task"], timeout=30) for ref in refs))
        return dict(zip(order["workers"], answers, strict=True))


class Item(AdaptiveAgent):
    """Processes the items under ITEMS_PREFIX left "todo", a random one each round (as
    examples/adaptive.py does); ``{"solo": {}}`` does the same work with no intentions."""

    prefix = ITEMS_PREFIX

    def analyze(self, state):
        todo = [k for k, v in state.items() if v == "todo" and k not in self.avoided]
        if not todo:
            return None
        key = random.choice(todo)
        return Action(("process", key), claims=(key,), expect={key: "todo"})

    def execute(self, action):
        return {action.claims[0]: f"done by {self.mesh.name}"}

    def objective_met(self, state):
        return bool(state) and all(v != "todo" for v in state.values())

    def on_message(self, message):
        if isinstance(message, dict) and isinstance(message.get("solo"), dict):
            return self.solo()
        return super().on_message(message)

    def solo(self) -> int:
        # The loop's own steps (read the state, pick an item, write it back), without propose.
        done = 0
        while True:
            todo = [k for k, v in self.mesh.state.items(self.prefix).items() if v == "todo"]
            if not todo:
                return done
            self.mesh.state.set(random.choice(todo), f"done by {self.mesh.name}")
            done += 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spec(address: str) -> str:
    agents = [f'[[agents]]\nname = "w"\nclass = "patterns:Echo"\nreplicas = {WORKERS}\nmailbox = 100000\n']
    agents += [f'[[agents]]\nname = "hop{i}"\nclass = "patterns:Hop"\n'
               f'config = {{ index = {i}, last = {str(i == HOPS - 1).lower()} }}\n' for i in range(HOPS)]
    agents += [f'[[agents]]\nname = "step{i}"\nclass = "patterns:Step{i}"\n' for i in range(HOPS)]
    agents += [f'[[agents]]\nname = "lead{i}"\nclass = "patterns:Lead"\n' for i in range(SQUADS)]
    agents += [f'[[agents]]\nname = "item"\nclass = "patterns:Item"\nreplicas = {FLOCK}\n']
    return f'[node]\nname = "bench"\nlisten = "{address}"\npath = ["{HERE}"]\n\n' + "\n".join(agents)


def start_node(tmp: Path) -> tuple[subprocess.Popen, mesh.Client]:
    address = f"tcp://127.0.0.1:{free_port()}"
    (tmp / "bench.toml").write_text(spec(address))
    env = dict(os.environ, MESH_HOME=str(tmp / "home"), MESH_NO_LIVE="1", MESH_LOG_LEVEL="WARNING")
    proc = subprocess.Popen([sys.executable, "-m", "mesh.cli", "up", str(tmp / "bench.toml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 180
    client = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"mesh up exited with {proc.returncode}")
        try:
            client = client or mesh.connect(address, connect_timeout=0.5)
            states = [a["state"] for a in client.status()["agents"]]
            if len(states) == AGENTS and all(s == "running" for s in states):
                return proc, client
        except mesh.NodeUnavailable:
            client = None
        time.sleep(0.2)
    raise SystemExit("the benchmark's agents did not all run within 180 s")


# -- (a) burst ----------------------------------------------------------------------------------


# One loop for the asks by hand, kept from round to round as the burst keeps its own: its links to
# the agents are made once, not per round.
HAND_LOOP = asyncio.new_event_loop()


def by_hand_async(client: mesh.Client, names: list[str], tasks: list[object], limit: int) -> float:
    async def go() -> None:
        slots = asyncio.Semaphore(limit)

        async def one(i: int, message: object) -> None:
            async with slots:
                await client.actor(names[i % len(names)]).ask_async(message, timeout=30)

        await asyncio.gather(*(one(i, m) for i, m in enumerate(tasks)))

    t0 = time.perf_counter()
    HAND_LOOP.run_until_complete(go())
    return time.perf_counter() - t0


# The threads by hand, kept from round to round (limit -> pool): each thread has a channel (a socket)
# to each agent, so fresh threads every round would open sockets until the process runs out of files.
HAND_THREADS: dict[int, concurrent.futures.ThreadPoolExecutor] = {}
THREAD_SOCKETS_MAX = 400  # threads x agents: each is a channel, a socket and its monitor


def by_hand_threads(client: mesh.Client, names: list[str], tasks: list[object], limit: int) -> float:
    refs = [client.actor(n) for n in names]
    pool = HAND_THREADS.setdefault(limit, concurrent.futures.ThreadPoolExecutor(limit))
    t0 = time.perf_counter()
    list(pool.map(lambda im: refs[im[0] % len(refs)].ask(im[1], timeout=30), enumerate(tasks)))
    return time.perf_counter() - t0


def with_burst(client: mesh.Client, names: list[str], tasks: list[object], limit: int) -> float:
    report = Burst(client, names, limit=limit, timeout=30).run(tasks)
    if report.status != "ok":
        raise SystemExit(f"the burst failed: {report.failures[:3]}")
    return report.elapsed


def measure_burst(client: mesh.Client, tasks_n: int, limits: list[int], rounds: int) -> list[dict]:
    names = [f"w.{i}" for i in range(WORKERS)]
    tasks = [{"n": i, "body": "x" * 64} for i in range(tasks_n)]
    rows = []
    for limit in limits:
        ways = {"burst": with_burst, "ask_async by hand": by_hand_async, "threads by hand": by_hand_threads}
        if limit * WORKERS > THREAD_SOCKETS_MAX:
            del ways["threads by hand"]
            rows.append({"pattern": "burst", "limit": limit, "tasks": tasks_n, "way": "threads by hand",
                         "wall_s": None, "tasks_per_s": None,
                         "note": f"not run: {limit} threads x {WORKERS} agents is a socket each, and more "
                                 "than libzmq's 1023 sockets with their monitors"})
        for way in ways.values():  # warm up: links and threads made once
            way(client, names, tasks[:200], limit)
        times: dict[str, list[float]] = {w: [] for w in ways}
        for _ in range(rounds):  # interleaved, so load on the machine falls on every way alike
            for name, way in ways.items():
                times[name].append(way(client, names, tasks, limit))
        for name, values in times.items():
            wall = statistics.median(values)
            rows.append({"pattern": "burst", "limit": limit, "tasks": tasks_n, "way": name,
                         "wall_s": round(wall, 4), "tasks_per_s": round(tasks_n / wall)})
    return rows


# -- (b) pipeline -------------------------------------------------------------------------------


def measure_pipeline(client: mesh.Client, runs: int, rounds: int) -> list[dict]:
    names = [f"w.{i}" for i in range(HOPS)]
    pipeline = Pipeline([Stage(f"s{i}", name, timeout=30) for i, name in enumerate(names)], client)
    refs = [client.actor(n) for n in names]

    def by_pipeline() -> float:
        t0 = time.perf_counter()
        for i in range(runs):
            assert pipeline.run({"n": i})["status"] == "ok"
        return time.perf_counter() - t0

    def by_hand() -> float:
        t0 = time.perf_counter()
        for i in range(runs):
            results: dict = {}
            for ref in refs:  # the same context a pipeline sends: the task and the results so far
                results[ref.name] = ref.ask({"task": {"n": i}, "results": results}, timeout=30)
        return time.perf_counter() - t0

    by_pipeline(), by_hand()
    times: dict[str, list[float]] = {"pipeline": [], "asks by hand": []}
    for _ in range(rounds):
        times["pipeline"].append(by_pipeline())
        times["asks by hand"].append(by_hand())
    return [{"pattern": "pipeline", "stages": HOPS, "runs": runs, "way": way,
             "per_run_ms": round(statistics.median(v) / runs * 1000, 3)} for way, v in times.items()]


# -- (c) choreography ---------------------------------------------------------------------------


def measure_choreography(client: mesh.Client, runs: int, rounds: int) -> list[dict]:
    choreography = Choreography(client, start="CHOREO0", terminal=[f"CHOREO{HOPS - 1}"])
    deadline = time.monotonic() + 60
    while len(client.state.items("bench/hop/")) < HOPS and time.monotonic() < deadline:
        time.sleep(0.1)
    hop_refs = [client.actor(f"hop{i}") for i in range(HOPS)]
    chor_hop, plain_hop, wall = [], [], []
    for r in range(rounds):
        for k in range(runs):
            outcome = choreography.run({"k": k}, timeout=30)
            if outcome.status != "complete":
                raise SystemExit(f"a choreography run ended {outcome.status}: {outcome.trace}")
            times = [step["time"] for step in outcome.trace]
            chor_hop.append((times[-1] - times[0]) / (HOPS - 1))
            wall.append(outcome.elapsed)
            choreography.forget(outcome.run)
            run = f"plain-{r}-{k}"
            client.publish("PLAIN0", run)
            deadline = time.monotonic() + 30
            while (last := hop_refs[-1].ask(run, timeout=10)) is None and time.monotonic() < deadline:
                time.sleep(0.002)
            first = hop_refs[0].ask(run, timeout=10)
            plain_hop.append((last - first) / (HOPS - 1))
    ms = lambda values: round(statistics.median(values) * 1000, 3)  # noqa: E731
    return [{"pattern": "choreography", "hops": HOPS, "runs": runs * rounds, "way": "choreography",
             "per_hop_ms": ms(chor_hop), "run_wall_ms": ms(wall)},
            {"pattern": "choreography", "hops": HOPS, "runs": runs * rounds, "way": "plain publish",
             "per_hop_ms": ms(plain_hop), "run_wall_ms": None}]


# -- (d) hierarchical command --------------------------------------------------------------------


def squads() -> dict[str, list[str]]:
    return {f"lead{i}": [f"w.{i * SQUAD_SIZE + j}" for j in range(SQUAD_SIZE)] for i in range(SQUADS)}


def measure_hierarchy(client: mesh.Client, missions: int, rounds: int) -> list[dict]:
    hierarchy = {"commander": {"name": "bench"},
                 "squad_leaders": {lead: {"workers": workers, "worker_timeout": 30} for lead, workers in squads().items()}}
    commander = Commander(hierarchy, client)
    leads = {lead: client.actor(lead) for lead in squads()}
    workers = [client.actor(w) for ws in squads().values() for w in ws]

    async def by_commander(mission: object) -> None:
        summary = await commander.run_async(mission)
        if summary["status"] != "ok":
            raise SystemExit(f"a mission ended {summary['status']}: {summary['escalations'][:3]}")

    async def two_levels_by_hand(mission: object) -> None:
        await asyncio.gather(*(ref.ask_async({"by_hand": {"workers": squads()[lead], "task": mission}}, timeout=30)
                               for lead, ref in leads.items()))

    async def worker_asks_alone(mission: object) -> None:
        await asyncio.gather(*(ref.ask_async(mission, timeout=30) for ref in workers))

    ways = {"commander": by_commander, "two levels by hand": two_levels_by_hand, "worker asks alone": worker_asks_alone}

    def timed(way, count: int) -> float:  # on the loop the burst by hand uses: links made once
        async def go() -> None:
            for k in range(count):
                await way({"n": k})

        t0 = time.perf_counter()
        HAND_LOOP.run_until_complete(go())
        return time.perf_counter() - t0

    for way in ways.values():  # warm up
        timed(way, 5)
    times: dict[str, list[float]] = {w: [] for w in ways}
    for _ in range(rounds):
        for name, way in ways.items():
            times[name].append(timed(way, missions) / missions)
    return [{"pattern": "hierarchy", "squads": SQUADS, "workers": SQUADS * SQUAD_SIZE, "missions": missions,
             "way": way, "per_mission_ms": round(statistics.median(v) * 1000, 3)} for way, v in times.items()]


# -- (e) adaptive mesh --------------------------------------------------------------------------


def lay_out_items(client: mesh.Client, items: int) -> None:
    for key in client.state.items(ITEMS_PREFIX):
        client.state.delete(key)
    for i in range(items):
        client.state.set(f"{ITEMS_PREFIX}{i:04d}", "todo")
    if len(client.state.items(ITEMS_PREFIX)) != items:
        raise SystemExit("the work items are not all in the shared state")


def measure_adaptive(client: mesh.Client, items: int, rounds: int) -> list[dict]:
    flock = [f"item.{i}" for i in range(FLOCK)]

    def adaptive(agents: list[str]):
        def run() -> tuple[float, dict]:
            lay_out_items(client, items)
            result = AdaptiveMesh(agents, client).run(deadline=120)
            if result["status"] != "objective_met" or result["acted"] != items:
                raise SystemExit(f"an adaptive run ended {result['status']} with {result['acted']} of {items} acted")
            return result["elapsed"], result
        return run

    def solo() -> tuple[float, dict]:
        lay_out_items(client, items)
        t0 = time.perf_counter()
        done = client.actor(flock[0]).ask({"solo": {}}, timeout=120)
        if done != items:
            raise SystemExit(f"the agent alone did {done} of {items} items")
        return time.perf_counter() - t0, {}

    ways = {f"{FLOCK} agents, propose": adaptive(flock), "1 agent, propose": adaptive(flock[:1]),
            "1 agent, no intention": solo}
    for way in ways.values():  # warm up
        way()
    walls: dict[str, list[float]] = {w: [] for w in ways}
    counts: dict[str, dict[str, list[int]]] = {w: {"rounds": [], "objected": [], "stale": []} for w in ways}
    for _ in range(rounds):
        for name, way in ways.items():
            wall, result = way()
            walls[name].append(wall)
            for count, values in counts[name].items():
                values.append(sum(r.get(count, 0) for r in result.get("agents", {}).values()))
    rows = []
    for name, values in walls.items():
        row = {"pattern": "adaptive", "items": items, "way": name,
               "per_item_ms": round(statistics.median(values) / items * 1000, 3)}
        if name != "1 agent, no intention":
            c = counts[name]
            row.update(proposals_per_item=round(statistics.median(c["rounds"]) / items, 3),
                       objected=statistics.median(c["objected"]), stale=statistics.median(c["stale"]))
        else:
            row.update(proposals_per_item=0.0, objected=None, stale=None)
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    out = [f"{'pattern':<13} {'case':<22} {'way':<22} {'figure':>34}"]
    for r in rows:
        if r["pattern"] == "hierarchy":
            case = f"{SQUADS} squads x {SQUAD_SIZE} workers"
            figure = f"{r['per_mission_ms']:.3f} ms/mission"
        elif r["pattern"] == "adaptive":
            case = f"{r['items']} items"
            figure = f"{r['per_item_ms']:.3f} ms/item"
            if r["proposals_per_item"]:
                figure += f", {r['proposals_per_item']:.2f} proposals/item"
        elif r["pattern"] == "burst":
            case = f"{r['tasks']} tasks, limit {r['limit']}"
            figure = f"{r['wall_s']:.3f} s  {r['tasks_per_s']:>6}/s" if r["wall_s"] else "not run (sockets)"
        elif r["pattern"] == "pipeline":
            case, figure = f"{r['stages']} stages", f"{r['per_run_ms']:.3f} ms/run"
        else:
            case = f"{r['hops']} hops"
            figure = f"{r['per_hop_ms']:.3f} ms/hop" + (f", {r['run_wall_ms']:.1f} ms/run" if r["run_wall_ms"] else "")
        out.append(f"{r['pattern']:<13} {case:<22} {r['way']:<22} {figure:>34}")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--limits", default="10,100", help="tasks in flight, comma-separated")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pipeline-runs", type=int, default=200)
    parser.add_argument("--choreography-runs", type=int, default=10, help="runs per round")
    parser.add_argument("--missions", type=int, default=50, help="hierarchy missions per round")
    parser.add_argument("--items", type=int, default=30, help="adaptive work items per run")
    parser.add_argument("--quick", action="store_true", help="small counts and 2 rounds (explicit options still win)")
    if parser.parse_known_args()[0].quick:
        parser.set_defaults(tasks=200, limits="10", rounds=2, pipeline_runs=50, choreography_runs=3, missions=10,
                            items=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, client = start_node(Path(tmp))
        try:
            rows = measure_burst(client, args.tasks, [int(x) for x in args.limits.split(",")], args.rounds)
            rows += measure_pipeline(client, args.pipeline_runs, args.rounds)
            rows += measure_choreography(client, args.choreography_runs, args.rounds)
            rows += measure_hierarchy(client, args.missions, args.rounds)
            rows += measure_adaptive(client, args.items, args.rounds)
        finally:
            client.close()
            HAND_LOOP.run_until_complete(asyncio.sleep(0.05))  # its links' tasks end, cancelled by the close
            HAND_LOOP.close()
            proc.terminate()
            proc.wait(60)
    result = {"benchmark": "patterns", "cpus": os.cpu_count(), "rounds": args.rounds, "rows": rows}
    print(json.dumps(result) if args.json else table(rows))


if __name__ == "__main__":
    main()
