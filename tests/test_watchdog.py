"""The agents' watchdog, end to end: a paused node cannot stop its agents, so each replica a
leader placed on it and could place elsewhere stops itself once the node's lease would have
lapsed unrenewed (mesh.core.fencing, rule 2); an agent pinned to the node has no lease and runs
on; and once the node is back every replica runs again, once."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

import mesh

from conftest import wait_until
from mesh.core.fencing import FENCE_GRACE_S, LEASE_S
from test_leader import all_running, psutil_alive, spread_over, start_mesh

pytestmark = pytest.mark.timeout(150)

#: Beyond the lease and the grace: the graceful stop itself and a loaded machine's delays.
MARGIN_S = 1.5


def test_a_paused_nodes_movable_agents_stop_themselves_in_time_and_run_again_once_it_is_back(start_node):
    nodes = start_mesh(start_node, 3, replicas=3)
    expected = {"w.0", "w.1", "w.2", "pinned-b", "pinned-c"}
    # Settled: the first node places w once the nodes started with it joined, or spreads it to them later.
    before = wait_until(lambda: spread_over(all_running(nodes, expected), 3), 45, "every agent running once, spread")
    victim = nodes[1]  # node b: one replica of w, and pinned-b
    movable = [pid for r, v in before.items() for node, pid in v if node == "b" and r.startswith("w.")]
    pinned = before["pinned-b"][0][1]
    assert movable, before
    os.kill(victim.proc.pid, signal.SIGSTOP)
    paused = time.monotonic()
    try:
        wait_until(lambda: not any(psutil_alive(p) for p in movable), LEASE_S + FENCE_GRACE_S + 10,
                   "the paused node's movable agents to stop themselves")
        took = time.monotonic() - paused
        assert took <= LEASE_S + FENCE_GRACE_S + MARGIN_S, f"stopped {took:.2f} s after the pause"
        assert psutil_alive(pinned)  # pinned to its node: no lease to lose
    finally:
        os.kill(victim.proc.pid, signal.SIGCONT)
    wait_until(lambda: all_running(nodes, expected), 45, "every agent running once again")
    # Its exit status said so; the resumed node logs it once it reaps the process (it may run again elsewhere first).
    wait_until(lambda: "stopped itself: this node did not renew its lease in time" in victim.log(), 15,
               "the resumed node to log why its agent stopped")


SLOW_START = """import os, time
if os.environ.get("MESH_AGENT_NAME", "").startswith("w."):
    time.sleep({seconds})  # before mesh's own code: the agent takes that long to start
"""


@pytest.mark.parametrize("start_mode", ["spawn"])  # a slow interpreter start: sitecustomize runs in each agent
def test_agents_slower_to_start_than_the_lease_run_once_without_restarts_when_the_lease_held(
        start_node, tmp_path, monkeypatch, start_mode):
    # Every replica of w takes longer to start than its first deadline (a loaded machine); before
    # its actor runs it asks its node, which renews the deadline since its lease held through it.
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text(SLOW_START.format(seconds=LEASE_S + 1.0))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(slow), os.environ.get("PYTHONPATH")) if p))
    nodes = start_mesh(start_node, 3, replicas=3)
    expected = {"w.0", "w.1", "w.2", "pinned-b", "pinned-c"}
    first = wait_until(lambda: all_running(nodes, expected), 45, "every agent running once")
    # The deadlines they were spawned with (their environment): by one lease past the last of them, a
    # replica that had missed its own would have stopped itself (its watch looks every 0.25 s).
    environs = [psutil.Process(pid).environ() for r, [(_, pid)] in first.items() if r.startswith("w.")]
    # (one placed while its node was the only voter it knew has none: its lease could not lapse then)
    spawned = [float(env["MESH_LEASE_UNTIL"]) for env in environs if "MESH_LEASE_UNTIL" in env]
    assert spawned and max(spawned) < time.monotonic()  # those with one started past it
    wait_until(lambda: time.monotonic() > max(spawned) + LEASE_S + FENCE_GRACE_S, 10, "the old deadlines long past")
    for node in nodes:
        agents = {a["name"]: a for a in node.status()["agents"] if not a.get("remote")}
        assert all(a["restarts"] == 0 for a in agents.values()), agents
        assert "stopped itself" not in node.log()
    assert all_running(nodes, expected) == first  # the same processes: none stopped itself since
    logs = "".join(p.read_text() for p in tmp_path.glob("**/logs/w.*.log"))
    assert "lease ran out" not in logs and "did not renew its lease" not in logs


def test_a_node_gives_a_new_deadline_only_to_its_own_agent_and_only_if_its_lease_held_through_the_old_one(
        start_node):
    nodes = start_mesh(start_node, 3, replicas=3)
    expected = {"w.0", "w.1", "w.2", "pinned-b", "pinned-c"}
    running = wait_until(lambda: spread_over(all_running(nodes, expected), 3), 45, "every agent running once, spread")
    b = nodes[1]
    replica, = [r for r, v in running.items() if r.startswith("w.") and v[0][0] == "b"]
    pid = running[replica][0][1]
    client = b.client()

    def ask(**body):
        return client._control_at(b.address, "lease", 5.0, **body)

    fresh = ask(name=replica, pid=pid, until=time.monotonic())
    assert fresh["known"] and 0 < fresh["lease_s"] <= LEASE_S  # held through now: a new deadline
    assert ask(name=replica, pid=pid, until=0.0)["lease_s"] == 0.0  # its lease began after that one
    assert ask(name=replica, pid=pid + 100000, until=time.monotonic()) == {"known": False, "lease_s": 0.0}
    assert "lease_s" not in ask(name="pinned-b", pid=running["pinned-b"][0][1], until=time.monotonic())
    with pytest.raises(mesh.MeshError, match="pid"):
        ask(name=replica, until=time.monotonic())  # a malformed request is refused, the node serves on
    assert b.proc.poll() is None
