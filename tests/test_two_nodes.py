"""Two nodes on loopback joined into one mesh: names resolve across them."""

from __future__ import annotations

import os
import signal

import mesh
from conftest import wait_until


def two_nodes(start_node, agents_b: str):
    a = start_node('[[agents]]\nname = "relay"\nclass = "actors:Relay"\n', name="a")
    b = start_node(agents_b, name="b", args=("--join", a.address))
    wait_until(lambda: all(len([m for m in n.status()["members"] if m["state"] == "alive"]) == 2 for n in (a, b)),
               15, "the two nodes to meet")
    return a, b


def test_a_client_of_one_node_finds_an_agent_restarted_on_the_other(start_node):
    a, b = two_nodes(start_node, '[[agents]]\nname = "crasher"\nclass = "actors:Crasher"\nbackoff = "300ms"\n')
    client = a.client()
    crasher = client.actor("crasher")
    first = wait_until(lambda: crasher.ask({}), 10, "crasher reachable from node a")
    os.kill(first["pid"], signal.SIGKILL)
    # While it restarts on node b, node a says "restarting" and the ask waits for it.
    second = wait_until(lambda: _ask_new(crasher, first["pid"]), 15, "the restarted crasher")
    assert second["incarnation"] == 1
    # An agent on node a reaches it by name as well.
    assert client.actor("relay").ask({"to": "crasher", "message": {}})["pid"] == second["pid"]


def _ask_new(ref, old_pid):
    try:
        answer = ref.ask({}, timeout=3)
    except mesh.ActorDied:
        return None
    return answer if answer["pid"] != old_pid else None


def test_a_failed_agent_on_the_other_node_is_reported_with_its_reason(start_node):
    a, b = two_nodes(start_node, '[[agents]]\nname = "crasher"\nclass = "actors:Crasher"\nrestart = "never"\n')
    client = a.client()
    wait_until(lambda: client.actor("crasher").ask({}), 10, "crasher reachable from node a")
    client.actor("crasher").tell({"crash": "exit"})
    def failed():
        try:
            client.actor("crasher").ask({}, timeout=1)
        except mesh.ActorNotFound as exc:
            return str(exc)
        except mesh.MeshError:
            return None
    message = wait_until(failed, 15, "crasher reported failed")
    assert "failed" in message and "exited with code 3" in message
