"""mesh at scale on one machine (issue 17), in one run: a table, or one JSON object.

    python benchmarks/scale.py                          # everything (about 20-30 minutes on 2 cores)
    python benchmarks/scale.py --json                   # one JSON object
    python benchmarks/scale.py --agents 10 100 --nodes 16 --skip inflight   # a part of it

Sections (each is its own script too, with the details of what it measures):

* **agents** (``benchmarks/scale_agents.py``): N echo agents on one node (default N = 10, 100,
  500, 1,000), forked by the node's zygote and, beside each, spawned as fresh interpreters
  (``--spawn-max``: the largest N also run spawned; default all): time from ``mesh up`` to every
  agent answering, PSS per idle agent and in total, and again once the kernel merged the pages
  the agents hold alike (``merge_pages = true``; root and a kernel with KSM; ``--no-merge``: not),
  with the CPU ksmd spent per full scan; the node's CPU (and its agents') while idle for
  ``--idle`` seconds, ``mesh status --json`` time, ``mesh down`` time.
* **plan** and **nodes** (``benchmarks/scale_nodes.py``): ``plan()`` time for 10, 100, 1,000
  replicas before issue 17 and now; the leader's housekeeping pass; 16 and 32 nodes on this
  machine, 5 agents each: time to settled, extra spawns and leases lost during start-up.
* **inflight** (``benchmarks/scale_inflight.py``): asks per second from an asyncio client with 1,
  10 and 100 in flight, to one agent and to ten, beside raw pipelined pyzmq.

Goals (issue 17): 1,000 agents answering in under 10 s and 100 in under 1 s; under 4 MB PSS per
agent (merged or not: both are printed; the Python that runs the benchmark runs the nodes and
agents, and its version moves the unmerged figure: see the README, "Memory per agent"); the node
under 5 % of a core idle at 1,000 agents and not growing more than 2x from 100; no extra spawns
and no lease lost while 16 or 32 nodes start; asks in flight >= 0.9x raw.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import scale_agents  # noqa: E402
import scale_inflight  # noqa: E402
import scale_nodes  # noqa: E402

SECTIONS = ("agents", "nodes", "inflight")


def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"machine_cores": os.cpu_count(), "python": platform.python_version()}
    if "agents" not in args.skip:
        rows = []
        for n in args.agents:
            for start in args.starts:
                if start == "spawn" and args.spawn_max is not None and n > args.spawn_max:
                    continue
                try:
                    rows.append(scale_agents.measure(n, start, idle_s=args.idle, merge=args.merge))
                except Exception as exc:  # a size that does not come up is a figure too
                    rows.append({"agents": n, "start": start, "error": str(exc)[:300]})
                if not args.json:
                    print(_agent_row(rows[-1]), flush=True)
        out["agents"] = rows
    if "nodes" not in args.skip:
        out["nodes"] = scale_nodes.measure(tuple(args.nodes), plan=True, timeout=args.timeout)
    if "inflight" not in args.skip:
        out["inflight"] = scale_inflight.run(args.asks, args.rounds)
    return out


def _agent_row(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"{row['agents']:>6} {row['start']:>5}  did not come up: {row['error']}"
    return (f"{row['agents']:>6} {row['start']:>5} {row['all_answering_s']:>12} {str(row['pss_mb']):>7}"
            f" {row['pss_total_mb']:>9} {str(row.get('pss_merged_mb')):>7} {str(row.get('ksm_last_scan_cpu_s')):>8}"
            f" {str(row.get('node_idle_cpu_pct')):>9} {str(row.get('agents_idle_cpu_pct')):>10}"
            f" {row['status_s']:>8} {row['down_s']:>7} {row['restarts']:>8}")


AGENT_HEAD = (f"{'agents':>6} {'start':>5} {'answering s':>12} {'PSS MB':>7} {'total MB':>9} {'merged':>7}"
              f" {'scan cpu':>8} {'node cpu%':>9}"
              f" {'agents cpu%':>10} {'status s':>8} {'down s':>7} {'restarts':>8}")


def table(out: dict[str, Any]) -> str:
    parts = [f"Python {out.get('python')}, {out.get('machine_cores')} cores"]
    if "agents" in out:
        parts.append("agents on one node (answering: from mesh up to every agent answering an ask; merged: PSS MB once"
                     " the kernel merged pages alike, merge_pages = true; scan cpu: ksmd's CPU s per full scan once merged;"
                     " cpu%: of one core while idle)\n" + AGENT_HEAD + "\n" + "\n".join(_agent_row(r) for r in out["agents"]))
    if "nodes" in out:
        parts.append(scale_nodes.table(out["nodes"]))
    if "inflight" in out:
        parts.append("asks in flight from an asyncio client\n" + scale_inflight.table(out["inflight"]))
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--agents", type=int, nargs="+", default=[10, 100, 500, 1000])
    parser.add_argument("--starts", nargs="+", default=["fork", "spawn"], choices=["fork", "spawn"])
    parser.add_argument("--spawn-max", type=int, default=None, help="largest N also run spawned (default: all)")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idling for the CPU figures")
    parser.add_argument("--no-merge", dest="merge", action="store_false",
                        help="agents without merge_pages, and no PSS once the kernel merged pages")
    parser.add_argument("--nodes", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds for a mesh of nodes to settle")
    parser.add_argument("--asks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip", nargs="*", default=[], choices=SECTIONS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.json and "agents" not in args.skip:
        print(AGENT_HEAD, flush=True)
    out = run(args)
    if args.json:
        print(json.dumps(out))
    else:
        print()
        print(table(out))


if __name__ == "__main__":
    main()
