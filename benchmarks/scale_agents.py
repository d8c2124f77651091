"""How fast N agents start on one node, and what each costs in memory: forked by the zygote or spawned.

    python benchmarks/scale_agents.py                    # 100 and 1000 echo agents, fork and spawn: a table
    python benchmarks/scale_agents.py --json             # one JSON object
    python benchmarks/scale_agents.py --agents 10 100    # other sizes
    python benchmarks/scale_agents.py --starts fork      # one start mode only

For each N and start mode, a real node (``python -m mesh.cli up SPEC`` with MESH_HOME in a
temporary folder) runs N echo agents (``benchmarks/bench_actors.py:Echo``, placement local; forked
ones with ``preload = true``, so the zygote imported their module). Measured:

* ``first_running_s``: from starting ``mesh up`` until the first agent runs (the node's own start
  and its election come first);
* ``all_running_s``: from starting ``mesh up`` until ``mesh status`` shows every agent running;
* ``all_answering_s``: until then, and one ask answered by every agent (from an asyncio client,
  ``ask_async``, at most ASK_FAN_OUT in flight: a caller that fans out, not one that asks in turn);
  ``mesh status`` is polled every STATUS_POLL_S meanwhile (each poll at 1,000 agents costs the node
  some milliseconds, so the benchmark does not load the node it measures);
* ``pss_mb`` (median, 10^6 bytes) and ``pss_total_mb`` of the idle agents (psutil
  ``memory_full_info().pss``, every agent, 2 s after all answered); the zygote's own PSS apart;
* ``node_idle_cpu_pct`` and ``agents_idle_cpu_pct``: the node's CPU and its agents' summed, in
  percent of one core, over ``--idle`` seconds (default 30) of idling after that;
* ``pss_merged_mb`` and ``pss_merged_total_mb``: the same once the kernel merged the pages the
  agents hold alike (the node says ``merge_pages = true``; the benchmark runs the kernel's page
  merging, KSM, as fast as a core scans until a full scan finds less than 1 % more to merge, then
  unmerges what it merged and puts the machine's settings back: root only); ``ksm_scan_cpu_s``:
  the CPU ksmd spent on one full scan of the machine's mergeable memory (these agents'), on
  average over the scans until merged, and
  ``ksm_last_scan_cpu_s`` the last one (what every later scan costs: ksmd repeats them for as long
  as it runs, so at a full scan every ``T`` seconds it costs ``ksm_last_scan_cpu_s / T`` of a
  core); ``ksm_scan_s`` the wall time of one scan here. ``--no-merge``: none of it;
* ``status_s``: one ``mesh status --json`` (through the client) with N agents;
* ``down_s``: from ``mesh down`` to the node's exit.

Figures are printed, never asserted. The lead folds :func:`measure` into ``benchmarks/scale.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import mesh  # noqa: E402
from mesh.errors import MeshError  # noqa: E402
from mesh.runtime import rpc  # noqa: E402


#: Asks in flight while every agent is asked once, and how often the start is polled (seconds).
ASK_FAN_OUT = 100
STATUS_POLL_S = 0.1


def _ask_all(client: mesh.Client, names: list[str]) -> None:
    """One ask answered by every agent in ``names``, at most ASK_FAN_OUT in flight."""
    async def worker(mine: list[str]) -> None:
        for name in mine:
            await client.actor(name).ask_async(name, timeout=60)

    async def main() -> None:
        await asyncio.gather(*(worker(names[k::ASK_FAN_OUT]) for k in range(min(ASK_FAN_OUT, len(names)))))

    asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_s(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def _idle_cpu(node_pid: int, agent_pids: list[int], seconds: float) -> tuple[float | None, float | None]:
    """The node's CPU and its agents' summed, in percent of one core, over ``seconds`` of idling."""
    if seconds <= 0:
        return None, None
    node = psutil.Process(node_pid)
    agents = []
    for pid in agent_pids:
        try:
            agents.append(psutil.Process(pid))
        except psutil.Error:
            continue
    n0, a0 = _cpu_s(node), {a.pid: _cpu_s(a) for a in agents}
    t0 = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    n1 = _cpu_s(node)
    spent = 0.0
    for a in agents:
        try:
            spent += _cpu_s(a) - a0[a.pid]
        except psutil.Error:
            continue
    return round(100 * (n1 - n0) / elapsed, 2), round(100 * spent / elapsed, 2)


KSM = Path("/sys/kernel/mm/ksm")
#: ksmd's batch while the benchmark merges (pages per 20 ms wake-up: as fast as one core scans).
KSM_BATCH = 20000
#: Full scans at least before the merged PSS is read (a page merges once it was the same in two).
MIN_SCANS = 3


def _pss(pids: list[int]) -> list[float]:
    out = []
    for pid in pids:
        try:
            out.append(psutil.Process(pid).memory_full_info().pss / 1e6)
        except psutil.Error:
            continue
    return out


def _ksm(name: str) -> str:
    return (KSM / name).read_text().strip()


def _merged(pids: list[int], timeout: float = 120.0) -> dict:
    """PSS of the agents once the kernel merged their pages (``merge_pages = true``): KSM run at
    KSM_BATCH until a full scan finds little more to merge, then the machine's settings put back. Needs
    root and a kernel with KSM; else the figures are None and ``merge_note`` says why."""
    empty = {"pss_merged_mb": None, "pss_merged_total_mb": None, "ksm_scan_s": None, "ksm_scan_cpu_s": None}
    if not (KSM / "run").exists():
        return dict(empty, merge_note="this kernel has no page merging (KSM)")
    saved = {k: _ksm(k) for k in ("run", "pages_to_scan", "sleep_millisecs")}
    ksmd = next((p for p in psutil.process_iter(["name"]) if p.info["name"] == "ksmd"), None)
    try:
        (KSM / "pages_to_scan").write_text(str(KSM_BATCH))
        (KSM / "sleep_millisecs").write_text("20")
        (KSM / "run").write_text("1")
    except OSError as exc:
        return dict(empty, merge_note=f"cannot run KSM here: {exc}")
    try:
        cpu0 = _cpu_s(ksmd) if ksmd else 0.0
        scans0, t0 = int(_ksm("full_scans")), time.monotonic()
        scans, sharing = scans0, [int(_ksm("pages_sharing"))]  # pages_sharing at the end of each scan
        at_scan = [cpu0]  # ksmd's CPU then
        while time.monotonic() < t0 + timeout:
            time.sleep(0.2)
            now = int(_ksm("full_scans"))
            if now > scans:
                scans = now
                sharing.append(int(_ksm("pages_sharing")))
                at_scan.append(_cpu_s(ksmd) if ksmd else 0.0)
                # a page merges once it was the same in two scans in a row: settled when a third
                # scan found less than 1 % more to merge
                if scans >= scans0 + MIN_SCANS and sharing[-1] - sharing[-2] <= sharing[-1] // 100:
                    break
        elapsed, cpu = time.monotonic() - t0, (_cpu_s(ksmd) - cpu0 if ksmd else None)
        pss = _pss(pids)
    finally:
        if saved["run"] != "1":  # the machine did not merge: unmerge everything (2) before it stops (0)
            (KSM / "run").write_text("2")
        for key in ("run", "pages_to_scan", "sleep_millisecs"):  # run last-but-not-least: as it was
            (KSM / key).write_text(saved[key])
    done = max(scans - scans0, 1)
    return {"pss_merged_mb": round(statistics.median(pss), 2) if pss else None,
            "pss_merged_total_mb": round(sum(pss), 1), "ksm_scan_s": round(elapsed / done, 2),
            "ksm_scan_cpu_s": round(cpu / done, 2) if cpu is not None else None,
            "ksm_last_scan_cpu_s": round(at_scan[-1] - at_scan[-2], 2) if ksmd and len(at_scan) > 1 else None,
            "ksm_scans": scans - scans0,
            "merge_note": None if time.monotonic() < t0 + timeout else f"still merging after {timeout:g} s",
            "ksm_was_on": saved["run"] == "1"}


def measure(agents: int, start: str, timeout: float = 300.0, idle_s: float = 30.0, merge: bool = True) -> dict:
    """Start ``agents`` echo agents on one node with ``start`` ("fork" or "spawn"); the figures.
    ``merge``: the node says ``merge_pages = true``, and the agents' PSS is measured again once
    the kernel merged their pages (:func:`_merged`)."""
    with tempfile.TemporaryDirectory(prefix="mesh-scale-") as tmp:
        port = _free_port()
        address = f"tcp://127.0.0.1:{port}"
        spec = Path(tmp) / "scale.toml"
        preload = "preload = true\n" if start == "fork" else ""
        merge_pages = "merge_pages = true\n" if merge else ""
        spec.write_text(f'[node]\nname = "scale"\nlisten = "{address}"\nstart = "{start}"\npath = ["{HERE}"]\n'
                        f'{merge_pages}\n'
                        f'[[agents]]\nname = "echo"\nclass = "bench_actors:Echo"\nreplicas = {agents}\n'
                        f'placement = "local"\nrestart = "never"\n{preload}')
        env = dict(os.environ, MESH_HOME=str(Path(tmp) / "home"), MESH_NO_LIVE="1",
                   PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
        with open(Path(tmp) / "node.out", "wb") as out:
            began = time.monotonic()
            node = subprocess.Popen([sys.executable, "-m", "mesh.cli", "up", str(spec)], stdout=out,
                                    stderr=subprocess.STDOUT, env=env)
        client = None
        try:
            deadline = began + timeout
            while client is None:
                try:
                    client = mesh.connect(address, connect_timeout=1.0)
                except MeshError:
                    if time.monotonic() > deadline or node.poll() is not None:
                        raise RuntimeError(f"the node did not answer: {(Path(tmp) / 'node.out').read_text()[-2000:]}") from None
            names = [f"echo.{i}" for i in range(agents)] if agents > 1 else ["echo"]
            first = None
            while True:
                st = rpc.status(client, timeout=30)
                states = [a["state"] for a in st["agents"] if not a["embedded"]]
                if first is None and "running" in states:
                    first = time.monotonic() - began
                if len(states) == agents and all(s == "running" for s in states):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"not all running after {timeout:g} s: {sorted(set(states))}")
                time.sleep(STATUS_POLL_S)
            running = time.monotonic() - began
            _ask_all(client, names)
            answering = time.monotonic() - began
            failed = sum(a["restarts"] for a in st["agents"])
            time.sleep(2.0)
            t = time.monotonic()
            st = rpc.status(client, timeout=60)
            status_s = time.monotonic() - t
            pids = [a["pid"] for a in st["agents"] if not a["embedded"] and a["pid"]]
            pss = _pss(pids)
            zygote_pss = None
            for child in psutil.Process(node.pid).children():
                if child.pid not in pids and "mesh.runtime.zygote" in " ".join(child.cmdline()):
                    zygote_pss = child.memory_full_info().pss / 1e6
            node_cpu, agents_cpu = _idle_cpu(node.pid, pids, idle_s)
            merged = _merged(pids) if merge else {}
            client.close()
            client = None
            t = time.monotonic()
            subprocess.run([sys.executable, "-m", "mesh.cli", "down", "--node", address], env=env,
                           capture_output=True, timeout=60)
            node.wait(timeout=120)
            down_s = time.monotonic() - t
        finally:
            if client is not None:
                client.close()
            if node.poll() is None:
                node.kill()
                node.wait()
        return {"agents": agents, "start": start, "first_running_s": round(first or running, 2),
                "all_running_s": round(running, 2),
                "all_answering_s": round(answering, 2), "restarts": failed,
                "pss_mb": round(statistics.median(pss), 2) if pss else None,
                "pss_total_mb": round(sum(pss), 1), "zygote_pss_mb": round(zygote_pss, 1) if zygote_pss else None,
                "node_idle_cpu_pct": node_cpu, "agents_idle_cpu_pct": agents_cpu,
                "status_s": round(status_s, 3), "down_s": round(down_s, 2), **merged}


def run(sizes: list[int], starts: list[str], idle_s: float = 30.0, merge: bool = True) -> list[dict]:
    return [measure(n, start, idle_s=idle_s, merge=merge) for n in sizes for start in starts]


def table(rows: list[dict]) -> str:
    head = ("agents", "start", "first_running_s", "all_running_s", "all_answering_s", "restarts", "pss_mb", "pss_total_mb",
            "pss_merged_mb", "ksm_scan_cpu_s", "zygote_pss_mb", "node_idle_cpu_pct", "agents_idle_cpu_pct", "status_s", "down_s")
    lines = [" ".join(f"{h:>15}" for h in head)]
    lines += [" ".join(f"{str(r.get(h)):>15}" for h in head) for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--starts", nargs="+", default=["fork", "spawn"], choices=["fork", "spawn"])
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idling over which CPU is measured")
    parser.add_argument("--no-merge", dest="merge", action="store_false",
                        help="no merge_pages, and no PSS once the kernel merged pages")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.json:
        print(f"Python {platform.python_version()}, {os.cpu_count()} cores", flush=True)
    rows = []
    for n in args.agents:
        for start in args.starts:
            rows.append(measure(n, start, idle_s=args.idle, merge=args.merge))
            if not args.json:
                print(table(rows[-1:]).splitlines()[-1] if len(rows) > 1 else table(rows), flush=True)
    if args.json:
        print(json.dumps({"machine_cores": os.cpu_count(), "python": platform.python_version(), "rows": rows}))


if __name__ == "__main__":
    main()
