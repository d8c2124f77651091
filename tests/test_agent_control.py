"""A person stops and restarts one agent (`mesh stop`, `mesh restart`, Client.stop_agent and
restart_agent) on whichever node runs it; and a plain client subscribes to topics."""

from __future__ import annotations

import json
import threading
import time

import psutil
import pytest

import mesh
from conftest import pid_gone, run_cli, wait_until
from test_two_nodes import two_nodes

pytestmark = pytest.mark.timeout(120)

CRASHER_ON_B = '[[agents]]\nname = "crasher"\nclass = "actors:Crasher"\nrestart = "always"\nnode = "b"\n'


def cli_json(*args: str) -> dict:
    done = run_cli(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_stop_then_restart_an_agent_on_another_node_than_the_clients(start_node):
    a, b = two_nodes(start_node, CRASHER_ON_B)
    client = a.client()
    first = wait_until(lambda: client.actor("crasher").ask({}, timeout=2), 15, "crasher reachable from node a")
    assert b.agent("crasher")["node"] == "b"

    stopped = cli_json("stop", "crasher", "--node", a.address)
    assert stopped["node"] == "b" and stopped["state"] == "stopped" and stopped["pid"] == first["pid"]
    assert "mesh stop" in stopped["reason"]
    assert pid_gone(first["pid"])

    # It stays stopped (restart = "always" notwithstanding) across b's housekeeping and the leader's
    # conducting, for over 3 s: no process starts, on b or anywhere else.
    until = time.monotonic() + 3.5
    while time.monotonic() < until:
        here = b.agent("crasher")
        assert here["state"] == "stopped" and here["pid"] == first["pid"], here
        time.sleep(0.2)
    assert not [p for p in b.descendants() if "mesh.runtime.agent" in " ".join(_cmdline(p))
                and p.environ().get("MESH_AGENT_NAME") == "crasher"]
    with pytest.raises(mesh.ActorNotFound, match="stopped"):
        client.actor("crasher").ask({}, timeout=2)
    # Its node's status, and the other node's (from the directory), say so and why.
    wait_until(lambda: a.agent("crasher")["state"] == "stopped", 10, "node a to see crasher stopped")
    assert "stopped by" in a.agent("crasher")["reason"]

    restarted = cli_json("restart", "crasher", "--node", a.address)
    assert restarted["state"] == "running" and restarted["node"] == "b"
    assert restarted["pid"] != first["pid"] and restarted["incarnation"] == first["incarnation"] + 1
    second = wait_until(lambda: client.actor("crasher").ask({}, timeout=2), 15, "the restarted crasher")
    assert second == {"pid": restarted["pid"], "incarnation": restarted["incarnation"]}

    # A restart of a running agent: the client's API, a fresh process now.
    third = client.restart_agent("crasher")
    assert third["pid"] != second["pid"] and third["incarnation"] == second["incarnation"] + 1
    assert pid_gone(second["pid"])


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def test_a_stop_that_on_stop_ignores_is_a_sigkill_after_the_grace(start_node):
    node = start_node('[[agents]]\nname = "slow"\nclass = "actors:SlowStop"\n')
    client = node.client()
    pid = node.wait_running("slow")["agents"][0]["pid"]
    started = time.monotonic()
    info = client.stop_agent("slow", grace=0.5, timeout=15)
    assert info["state"] == "stopped" and pid_gone(pid)
    assert time.monotonic() - started < 5  # SlowStop's on_stop sleeps 60 s; the SIGKILL comes at the grace's end
    assert "did not stop within 0.5 s: SIGKILL" in node.log()
    # Stopping a stopped agent again changes nothing; restarting it runs it again.
    assert client.stop_agent("slow")["state"] == "stopped"
    assert client.restart_agent("slow")["state"] == "running"


def test_bad_names_are_refused_with_what_is_wrong(start_node):
    node = start_node('[[agents]]\nname = "worker"\nclass = "actors:Echo"\nreplicas = 2\n')
    client = node.client()
    done = run_cli("stop", "nobody", "--node", node.address)
    assert done.returncode == 1 and "ActorNotFound" in done.stderr and "'nobody'" in done.stderr
    done = run_cli("restart", "worker", "--node", node.address)
    assert done.returncode == 1 and "replica group" in done.stderr
    assert "worker.0" in done.stderr and "worker.1" in done.stderr
    with pytest.raises(mesh.WireError, match=r"replica group \(worker\.0, worker\.1\)"):
        client.stop_agent("worker")
    with pytest.raises(mesh.ActorNotFound):
        client.restart_agent("nobody")
    # A replica's own name works, and the other replica runs on.
    assert client.stop_agent("worker.1")["state"] == "stopped"
    assert node.agent("worker.0")["state"] == "running"
    done = run_cli("restart", "worker.1", "--node", node.address)
    assert done.returncode == 0 and "worker.1 on node t: running" in done.stdout
    # Missing or bad arguments are usage errors (exit 2).
    assert run_cli("stop", "--node", node.address).returncode == 2
    assert run_cli("stop", "worker.0", "--grace", "-1", "--node", node.address).returncode == 2


def test_a_client_subscribes_with_a_callback_and_unsubscribes(echo_node):
    listener = echo_node.client()
    publisher = echo_node.client()
    got: list[mesh.Event] = []
    threads: set[str] = set()
    arrived = threading.Condition()

    def hear(event: mesh.Event) -> None:
        with arrived:
            got.append(event)
            threads.add(threading.current_thread().name)
            arrived.notify_all()

    def wait_for(n: int) -> None:
        with arrived:
            assert arrived.wait_for(lambda: len(got) >= n, timeout=10), got

    listener.subscribe("NEWS", hear)
    listener.subscribe("MARK", hear)
    sent = publisher.publish("NEWS", {"n": 1}, corr="c-1")
    wait_for(1)
    assert got[0] == mesh.Event("NEWS", {"n": 1}, sent, "c-1", publisher.name)
    assert threads == {"mesh-subscriptions"}  # the subscriptions' thread, not the caller's

    listener.unsubscribe("NEWS")
    publisher.publish("NEWS", {"n": 2})
    publisher.publish("MARK", "after")  # the same publisher and forwarder: in order after NEWS 2
    wait_for(2)
    assert [(e.topic, e.data) for e in got] == [("NEWS", {"n": 1}), ("MARK", "after")]

    # A callback that raises is logged; the next event still comes.
    def boom(event: mesh.Event) -> None:
        hear(event)
        raise RuntimeError("a broken callback")

    listener.subscribe("MARK", boom)
    publisher.publish("MARK", "x")
    publisher.publish("MARK", "y")
    wait_for(4)
    assert [e.data for e in got[2:]] == ["x", "y"]
    with pytest.raises(ValueError):
        listener.subscribe("a/b", hear)
    listener.close()
    assert not [t for t in threading.enumerate() if t.name == "mesh-subscriptions" and t.is_alive()]
