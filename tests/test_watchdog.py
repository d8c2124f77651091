"""The agents' watchdog, end to end: a paused node cannot stop its agents, so each replica a
leader placed on it and could place elsewhere stops itself once the node's lease would have
lapsed unrenewed (mesh.core.fencing, rule 2); an agent pinned to the node has no lease and runs
on; and once the node is back every replica runs again, once."""

from __future__ import annotations

import os
import signal
import time

import pytest

from conftest import wait_until
from mesh.core.fencing import FENCE_GRACE_S, LEASE_S
from test_leader import all_running, psutil_alive, start_mesh

pytestmark = pytest.mark.timeout(150)

#: Beyond the lease and the grace: the graceful stop itself and a loaded machine's delays.
MARGIN_S = 1.5


def test_a_paused_nodes_movable_agents_stop_themselves_in_time_and_run_again_once_it_is_back(start_node):
    nodes = start_mesh(start_node, 3, replicas=3)
    expected = {"w.0", "w.1", "w.2", "pinned-b", "pinned-c"}
    before = wait_until(lambda: all_running(nodes, expected), 30, "every agent running once")
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
    assert "stopped itself: this node did not renew its lease in time" in victim.log()  # its exit status said so
