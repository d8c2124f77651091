"""How well a node enforces agents' CPU and memory budgets, and what the sampling costs it, on this machine.

    python benchmarks/budgets.py                  # a table
    python benchmarks/budgets.py --json           # one JSON object
    python benchmarks/budgets.py --both           # the table, then the JSON object on one line
    python benchmarks/budgets.py --cpu-apart      # CPU budgets one at a time instead of all at once

Every part starts a real node (`python -m mesh.cli up SPEC`, MESH_HOME and the actors'
module in a temporary folder) and stops it, with everything it started, before the next.

(1) Memory: an agent that allocates 5 MB every 50 ms (100 MB/s, every page touched) under
    ``budget = { memory = "256MB" }`` with ``restart = "always"`` (constant 100 ms backoff),
    killed ``--memory-trials`` times. The agent journals the time and its own PSS before
    each step (as the MemoryHog of tests/actors.py does) and also right after it; the
    benchmark reads the journal and polls each pid at 5 ms with psutil. (Each incarnation
    waits a random 0-100 ms before its first step, or every trial would cross the budget
    at the same phase of the node's 0.1 s sampling and time the same case.) Kill latency = the
    time the process is seen ended (gone or a zombie) minus the crossing, the first
    after-step entry over the budget (if the process ended before it could write that
    entry, the last entry stands in: an upper bound). Also printed: the latency counted
    from the first before-step entry over the budget (what tests/test_budgets.py times),
    which comes up to one 50 ms step after the crossing and is missing when the node ends
    the agent before its next step. Overshoot = the agent's largest journaled PSS minus
    the budget; also the figure the node gives in its reason (``memory budget exceeded:
    X MB > 256 MB``, read from the shared state key ``$budget/hog``) minus the budget.
    MB are 10^6 bytes, as in budgets.
(2) CPU: agents that spin one Python thread, with ``budget = { cpu = B }`` for B in 0.1,
    0.25, 0.5 and 1.0 cores, all on one node at once (1.85 cores of budgets on this
    machine's cores; ``--cpu-apart``: each alone, one after another). After a 1 s warm-up,
    each agent's process tree CPU time (psutil, user + system) over a 5 s window gives its
    average cores; its status is polled every 10 ms to find the longest SIGSTOP.
(3) The node's own CPU (user + system of the `mesh up` process, psutil, over 10 s) with 50
    idle agents that have ``budget = { cpu = 1.0, memory = "1GB" }`` (sampled every 0.1 s),
    and with 50 without a budget (sampled every 1 s), in percent of one core.

Targets: memory kill latency p50 and max under 1000 ms (for scale: Circus's resource
watcher polls every 60 s and acts after 3 checks); each CPU average within +-20 % of its
budget. Figures are printed, never asserted. Other load on the machine skews (2) and (3):
the busy cores of the whole machine during each window are printed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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

MB = 1_000_000
MEMORY_BUDGET_MB = 256
CPU_BUDGETS = (0.1, 0.25, 0.5, 1.0)
IDLE_AGENTS = 50
LEFTOVERS: list[int] = []  # processes that outlived their node (then killed), over the whole run

ACTORS = '''"""Actors of benchmarks/budgets.py (written into its temporary folder)."""

import os
import random
import threading
import time

import psutil

import mesh


class Echo(mesh.Actor):
    def on_message(self, message):
        return message


class MemoryHog(mesh.Actor):
    """Allocates ``step_mb`` every ``every`` seconds, touching every page; journals the time and
    its own PSS before and after each step."""

    def __init__(self, journal: str, step_mb: int = 5, every: float = 0.05):
        self.journal, self.step, self.every = journal, step_mb * 1_000_000, every
        self.blocks = []

    def on_start(self):
        self.me = psutil.Process()
        time.sleep(random.uniform(0, 0.1))  # a random phase against the node's 0.1 s samples
        self.mesh.every(self.every, {"grow": True})

    def _note(self, tag):
        pss = self.me.memory_full_info().pss
        with open(self.journal, "a") as f:
            f.write(f"{time.time()} {pss} {os.getpid()} {tag}\\n")

    def on_message(self, message):
        if isinstance(message, dict) and message.get("grow"):
            self._note("before")
            block = bytearray(self.step)
            for i in range(0, len(block), 4096):  # resident, not just reserved
                block[i] = 1
            self.blocks.append(block)
            self._note("after")
        return None


class BusyLoop(mesh.Actor):
    """Spins one Python thread while answering asks."""

    def on_start(self):
        threading.Thread(target=self._burn, daemon=True).start()

    @staticmethod
    def _burn():
        x = 0
        while True:
            x += 1

    def on_message(self, message):
        return {"pid": os.getpid()}
'''


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(q / 100 * (len(values) - 1)))))
    return values[k]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ended(pid: int) -> bool:
    """Whether ``pid`` has ended (a zombie not reaped yet has ended)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and every live descendant."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores, everything but idle and iowait)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


class Node:
    """`mesh up` on a spec of its own; on exit it is stopped (SIGTERM, then SIGKILL) and every process
    it started is waited for (and killed if it outlives the node: such pids go to ``LEFTOVERS``)."""

    def __init__(self, tmp: Path, name: str, agents: str, node_extra: str = "", start_timeout: float = 60.0):
        self.tmp, self.name, self.agents, self.node_extra, self.start_timeout = tmp, name, agents, node_extra, start_timeout
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.proc: subprocess.Popen | None = None
        self.seen: dict[int, psutil.Process] = {}  # agents seen in status

    def __enter__(self) -> Node:
        spec = self.tmp / f"{self.name}.toml"
        spec.write_text(f'[node]\nname = "{self.name}"\nlisten = "{self.address}"\npath = ["{self.tmp}"]\n'
                        f"{self.node_extra}\n\n{self.agents}")
        env = dict(os.environ, MESH_HOME=str(self.tmp / f"home-{self.name}"), MESH_NO_LIVE="1", MESH_LOG_LEVEL="WARNING")
        env.pop("MESH_NODE", None)
        self.log = self.tmp / f"{self.name}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "mesh.cli", "up", str(spec)],
                                         stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            self.wait_running(self.start_timeout)
        except BaseException:
            self.__exit__()
            raise
        return self

    def status(self) -> dict:
        with mesh.connect(self.address, connect_timeout=0.5) as c:
            st = c.status()
        for a in st["agents"]:
            if a.get("pid") and not a.get("embedded") and a["pid"] not in self.seen:
                try:
                    self.seen[a["pid"]] = psutil.Process(a["pid"])
                except psutil.NoSuchProcess:
                    pass
        return st

    def wait_running(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"mesh up exited with {self.proc.returncode}:\n{self.log.read_text(errors='replace')}")
            try:
                st = self.status()
                states = [a["state"] for a in st["agents"]]
                if states and all(s == "running" for s in states):
                    return st
            except mesh.MeshError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"the agents of node {self.name} were not all running after {timeout:g} s")

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        try:
            procs = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            procs = []
        procs += [p for pid, p in self.seen.items() if pid not in {c.pid for c in procs}]
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for p in procs:
            if not p.is_running():  # ended (psutil compares start times: a reused pid is not it)
                continue
            try:
                p.wait(timeout=8)
            except psutil.TimeoutExpired:
                LEFTOVERS.append(p.pid)
                try:
                    p.kill()  # psutil checks the pid is still that process
                except psutil.NoSuchProcess:
                    pass
            except psutil.NoSuchProcess:
                pass


# -- (1) memory --------------------------------------------------------------------------------


class Journal:
    """The hog's journal, read as it grows: (time, pss, pid, "before" or "after") per complete line."""

    def __init__(self, path: Path):
        self.path, self.file, self.rest = path, None, ""

    def read(self) -> list[tuple[float, int, int, str]]:
        if self.file is None:
            if not self.path.exists():
                return []
            self.file = open(self.path)  # kept open: read on from where it was
        self.rest += self.file.read()
        *lines, self.rest = self.rest.split("\n")
        return [(float(t), int(pss), int(pid), tag) for t, pss, pid, tag in (line.split() for line in lines if line)]

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def run_memory(tmp: Path, trials: int) -> dict:
    budget = MEMORY_BUDGET_MB * MB
    journal_path = tmp / "hog.journal"
    agents = (f'[[agents]]\nname = "hog"\nclass = "budget_actors:MemoryHog"\nrestart = "always"\n'
              f'max_restarts = {trials + 10}\nbackoff = "100ms"\nbackoff_max = "100ms"\n'
              f'budget = {{ memory = "{MEMORY_BUDGET_MB}MB" }}\nconfig = {{ journal = "{journal_path}" }}\n')
    rows: dict[int, list[tuple[float, int, str]]] = {}  # pid -> [(time, pss, tag)]
    ends: dict[int, float] = {}  # pid -> time it was seen ended
    reasons: dict[int, str] = {}  # the node's kill count -> its reason
    journal = Journal(journal_path)
    with Node(tmp, "memory", agents) as node, mesh.connect(node.address) as client:
        deadline = time.monotonic() + 30 + 10 * trials
        next_event = 0.0
        try:
            while len(ends) < trials and time.monotonic() < deadline:
                for t, pss, pid, tag in journal.read():
                    rows.setdefault(pid, []).append((t, pss, tag))
                now = time.time()
                for pid in rows:
                    if pid not in ends and ended(pid):
                        ends[pid] = now
                if time.monotonic() >= next_event:
                    event = client.state.get("$budget/hog")
                    if isinstance(event, dict):
                        reasons[event["kills"]] = event["reason"]
                    next_event = time.monotonic() + 0.1
                time.sleep(0.005)
            time.sleep(0.3)  # the last kill's event and journal lines
            for t, pss, pid, tag in journal.read():
                rows.setdefault(pid, []).append((t, pss, tag))
            event = client.state.get("$budget/hog")
            if isinstance(event, dict):
                reasons[event["kills"]] = event["reason"]
            hog = next(a for a in node.status()["agents"] if a["name"] == "hog")
        finally:
            journal.close()

    kills = []
    for pid, end in sorted(ends.items(), key=lambda kv: kv[1]):
        mine = sorted(rows[pid])
        after = [t for t, pss, tag in mine if tag == "after" and pss > budget]
        before = [t for t, pss, tag in mine if tag == "before" and pss > budget]
        crossed = after[0] if after else mine[-1][0]
        peak = max(pss for _, pss, _ in mine)
        kills.append({"pid": pid, "latency_ms": (end - crossed) * 1000, "crossing_journaled": bool(after),
                      "latency_from_before_entry_ms": (end - before[0]) * 1000 if before else None,
                      "entries_after_crossing": sum(t > crossed for t, _, _ in mine),
                      "peak_pss_mb": peak / MB, "overshoot_mb": (peak - budget) / MB})
    node_mb = [float(m.group(1)) for _, r in sorted(reasons.items())
               if (m := re.match(r"memory budget exceeded: (\d+) MB", r))]
    latency = [k["latency_ms"] for k in kills]
    from_before = [k["latency_from_before_entry_ms"] for k in kills if k["latency_from_before_entry_ms"] is not None]
    overshoot = [k["overshoot_mb"] for k in kills]
    return {
        "budget_mb": MEMORY_BUDGET_MB,
        "trials": trials,
        "kills_observed": len(kills),
        "crossings_not_journaled": sum(not k["crossing_journaled"] for k in kills),
        "kill_latency_p50_ms": pct(latency, 50) if kills else None,
        "kill_latency_max_ms": max(latency) if kills else None,
        "before_entry_latency_p50_ms": pct(from_before, 50) if from_before else None,
        "before_entry_latency_max_ms": max(from_before) if from_before else None,
        "kills_without_before_entry_over": len(kills) - len(from_before),
        "overshoot_p50_mb": pct(overshoot, 50) if kills else None,
        "overshoot_max_mb": max(overshoot) if kills else None,
        "node_overshoot_p50_mb": pct(node_mb, 50) - MEMORY_BUDGET_MB if node_mb else None,
        "node_overshoot_max_mb": max(node_mb) - MEMORY_BUDGET_MB if node_mb else None,
        "node_reasons_seen": len(node_mb),
        "status_budget_kills": hog["budget_kills"],
        "status_restarts": hog["restarts"],
        "status_state": hog["state"],
        "status_reason": hog["reason"],
        "kills": kills,
    }


# -- (2) CPU --------------------------------------------------------------------------------------


def busy_agents(budgets: tuple[float, ...]) -> str:
    return "".join(f'[[agents]]\nname = "{busy_name(b)}"\nclass = "budget_actors:BusyLoop"\nbudget = {{ cpu = {b} }}\n\n'
                   for b in budgets)


def busy_name(budget: float) -> str:
    return f"busy{round(budget * 100):03d}"


def measure_cpu(node: Node, budgets: tuple[float, ...], warmup: float, window: float) -> list[dict]:
    agents = {a["name"]: a for a in node.status()["agents"]}
    pids = {b: agents[busy_name(b)]["pid"] for b in budgets}
    procs = {b: psutil.Process(pid) for b, pid in pids.items()}
    time.sleep(warmup)
    start_cpu = {b: tree_cpu(pid) for b, pid in pids.items()}
    start_machine, start = machine_busy(), time.monotonic()
    stopped_since: dict[float, float | None] = dict.fromkeys(budgets)
    longest = dict.fromkeys(budgets, 0.0)
    while (now := time.monotonic()) - start < window:
        for b, p in procs.items():
            try:
                stopped = p.status() == psutil.STATUS_STOPPED
            except psutil.NoSuchProcess:
                stopped = False
            if stopped and stopped_since[b] is None:
                stopped_since[b] = now
            elif not stopped and stopped_since[b] is not None:
                longest[b] = max(longest[b], now - stopped_since[b])
                stopped_since[b] = None
        time.sleep(0.01)
    for b, since in stopped_since.items():
        if since is not None:
            longest[b] = max(longest[b], now - since)
    elapsed = time.monotonic() - start
    machine = (machine_busy() - start_machine) / elapsed
    out = []
    for b in budgets:
        cores = (tree_cpu(pids[b]) - start_cpu[b]) / elapsed
        out.append({"budget": b, "cores": cores, "ratio": cores / b, "longest_stop_ms": longest[b] * 1000,
                    "machine_busy_cores": machine})
    agents = {a["name"]: a for a in node.status()["agents"]}
    for row in out:
        a = agents[busy_name(row["budget"])]
        row.update(node_cpu=a["cpu"], throttled_s=a["throttled_s"], state=a["state"],
                   pid_unchanged=a["pid"] == pids[row["budget"]])
    return out


def run_cpu(tmp: Path, apart: bool, warmup: float, window: float) -> dict:
    rows = []
    groups = [(b,) for b in CPU_BUDGETS] if apart else [CPU_BUDGETS]
    for i, group in enumerate(groups):
        with Node(tmp, f"cpu{i}", busy_agents(group)) as node:
            rows += measure_cpu(node, group, warmup, window)
    return {"mode": "apart" if apart else "together", "total_budget": sum(CPU_BUDGETS), "cores": psutil.cpu_count(),
            "warmup_s": warmup, "window_s": window, "agents": rows}


# -- (3) the node's own CPU -------------------------------------------------------------------------


def running(status: dict) -> int:
    return sum(a["state"] == "running" for a in status["agents"])


def node_cpu(tmp: Path, budgeted: bool, window: float) -> dict:
    budget = 'budget = { cpu = 1.0, memory = "1GB" }\n' if budgeted else ""
    agents = f'[[agents]]\nname = "idle"\nclass = "budget_actors:Echo"\nreplicas = {IDLE_AGENTS}\n{budget}\n'
    extra = 'wave_size = 10\ncapacity = { cpu = 64.0, memory = "64GB" }\n'  # 50 x 1 core does not fit 2 cores
    with Node(tmp, "idle-budgeted" if budgeted else "idle-plain", agents, extra, start_timeout=180) as node:
        before = node.status()
        time.sleep(2.0)  # let the start-up settle
        me = psutil.Process(node.proc.pid)
        t0, c0, m0 = time.monotonic(), sum(me.cpu_times()[:2]), machine_busy()
        time.sleep(window)
        t1, c1, m1 = time.monotonic(), sum(me.cpu_times()[:2]), machine_busy()
        after = node.status()
    return {"budgeted": budgeted, "agents": len(after["agents"]), "running_before": running(before),
            "running_after": running(after), "node_cpu_percent": (c1 - c0) / (t1 - t0) * 100,
            "machine_busy_cores": (m1 - m0) / (t1 - t0), "window_s": window}


# -- the run -------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict:
    results: dict = {"machine": {"cores": psutil.cpu_count(), "available_mb": psutil.virtual_memory().available / 2**20,
                                 "load_avg_1m": os.getloadavg()[0]}}
    with tempfile.TemporaryDirectory(prefix="mesh-budgets-bench-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "budget_actors.py").write_text(ACTORS)
        try:
            results["memory"] = run_memory(tmp, args.memory_trials)
            results["cpu"] = run_cpu(tmp, args.cpu_apart, args.warmup, args.window)
            results["node_cpu"] = [node_cpu(tmp, True, args.node_window), node_cpu(tmp, False, args.node_window)]
        finally:
            results["leftover_processes"] = LEFTOVERS
    m = results["memory"]
    results["targets_met"] = {
        "memory kill p50 < 1000 ms": m["kill_latency_p50_ms"] is not None and m["kill_latency_p50_ms"] < 1000,
        "memory kill max < 1000 ms": m["kill_latency_max_ms"] is not None and m["kill_latency_max_ms"] < 1000,
        f"memory kills observed >= {m['trials']}": m["kills_observed"] >= m["trials"],
        **{f"cpu {r['budget']:g} within +-20%": 0.8 <= r["ratio"] <= 1.2 for r in results["cpu"]["agents"]},
    }
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
    m, c = r["memory"], r["cpu"]
    rows = [
        (f"memory kill latency ({m['kills_observed']} kills, {m['budget_mb']} MB, 100 MB/s)",
         f"p50 {m['kill_latency_p50_ms']:.0f} ms", f"max {m['kill_latency_max_ms']:.0f} ms",
         f"{m['crossings_not_journaled']} crossing(s) not journaled"),
        ("  timed from the first before-step entry over",
         f"p50 {m['before_entry_latency_p50_ms']:.0f} ms" if m["before_entry_latency_p50_ms"] is not None else "-",
         f"max {m['before_entry_latency_max_ms']:.0f} ms" if m["before_entry_latency_max_ms"] is not None else "-",
         f"{m['kills_without_before_entry_over']} kill(s) with no such entry"),
        ("memory overshoot, agent's peak PSS", f"p50 {m['overshoot_p50_mb']:.1f} MB", f"max {m['overshoot_max_mb']:.1f} MB", ""),
        ("memory overshoot, node's reason", f"p50 {m['node_overshoot_p50_mb']:.0f} MB" if m["node_reasons_seen"] else "-",
         f"max {m['node_overshoot_max_mb']:.0f} MB" if m["node_reasons_seen"] else "-",
         f"{m['node_reasons_seen']} reasons; status: {m['status_budget_kills']} budget kills, {m['status_restarts']} restarts"),
    ]
    for a in c["agents"]:
        rows.append((f"cpu budget {a['budget']:g} ({c['mode']})", f"{a['cores']:.3f} cores", f"ratio {a['ratio']:.2f}",
                     f"longest stop {a['longest_stop_ms']:.0f} ms, node says {a['node_cpu']}, throttled {a['throttled_s']:.1f} s,"
                     f" machine busy {a['machine_busy_cores']:.2f} cores"))
    for n in r["node_cpu"]:
        rows.append((f"node CPU, {n['agents']} idle agents " + ("with budgets (0.1 s)" if n["budgeted"] else "without (1 s)"),
                     f"{n['node_cpu_percent']:.1f} % of a core", f"{n['running_after']} running",
                     f"machine busy {n['machine_busy_cores']:.2f} cores"))
    w = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(col.ljust(w[i]) for i, col in enumerate(row)).rstrip() for row in rows]
    if c["mode"] == "together" and c["total_budget"] > 0.9 * c["cores"]:
        lines.append(f"note: the {len(c['agents'])} busy agents ran at once: {c['total_budget']:g} cores of budgets on"
                     f" {c['cores']} cores, beside the node and this benchmark")
    lines.append("targets: " + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in r["targets_met"].items()))
    if r["leftover_processes"]:
        lines.append(f"processes that outlived their node (killed): {r['leftover_processes']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="mesh CPU and memory budget enforcement, and its cost to the node")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON object")
    out.add_argument("--both", action="store_true", help="print the table, then the JSON object on one line")
    parser.add_argument("--memory-trials", type=int, default=10, help="memory budget kills to time")
    parser.add_argument("--cpu-apart", action="store_true", help="run the CPU budgets one at a time, not all at once")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each CPU window")
    parser.add_argument("--window", type=float, default=5.0, help="seconds of each CPU window")
    parser.add_argument("--node-window", type=float, default=10.0, help="seconds the node's own CPU is measured")
    args = parser.parse_args()
    r = run(args)
    if args.json:
        print(json.dumps(r))
    else:
        print(table(r))
        if args.both:
            print(json.dumps(r))


if __name__ == "__main__":
    main()
