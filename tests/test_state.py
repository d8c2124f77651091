"""The shared state through the public API and the CLI, on one real node."""

from __future__ import annotations

import json
import threading

import pytest

import mesh
from conftest import run_cli, wait_until


def test_a_client_sets_gets_lists_and_deletes_keys(echo_node):
    state = echo_node.client().state
    state.set("user/a", {"n": 1})
    state.set("user/b", [1, 2])
    assert state.get("user/a") == {"n": 1}
    assert state.get("missing", "default") == "default"
    assert state.items("user/") == {"user/a": {"n": 1}, "user/b": [1, 2]}
    state.delete("user/a")
    assert state.get("user/a") is None
    assert "user/a" not in state.items("user/")


def test_reserved_keys_are_readable_but_not_writable(echo_node):
    state = echo_node.client().state
    wait_until(lambda: state.get("$agents/echo"), 5, "the agent directory entry for echo")
    assert state.get("$agents/echo")["node"] == "t"
    with pytest.raises(mesh.WireError, match="reserved"):
        state.set("$agents/echo", {"node": "evil"})


def test_watch_reports_changes_and_deletions(echo_node):
    state = echo_node.client().state
    seen = []
    got = threading.Event()

    def on_change(key, value):
        seen.append((key, value))
        if value is None:
            got.set()

    watch = state.watch("jobs/", on_change, interval=0.05)
    try:
        state.set("jobs/1", "queued")
        state.set("jobs/1", "done")
        wait_until(lambda: ("jobs/1", "done") in seen, 5, "the change to be seen")
        state.delete("jobs/1")
        assert got.wait(5)
    finally:
        watch.stop()
    assert seen[-1] == ("jobs/1", None)


def test_the_state_commands_of_the_cli(echo_node):
    node = ["--node", echo_node.address]
    assert run_cli("state", "set", "cfg/mode", '{"fast": true}', *node).returncode == 0
    res = run_cli("state", "get", "cfg/mode", *node)
    assert res.returncode == 0 and json.loads(res.stdout) == {"fast": True}
    res = run_cli("state", "ls", "cfg/", *node)
    assert res.stdout.strip() == 'cfg/mode\t{"fast": true}'
    assert run_cli("state", "delete", "cfg/mode", *node).returncode == 0
    res = run_cli("state", "get", "cfg/mode", *node)
    assert res.returncode == 1 and "no key" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("state", "set", "$agents/x", "1", *node)
    assert res.returncode == 1 and "reserved" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_status_json_lists_the_node_as_a_member(echo_node):
    st = echo_node.status()
    (me,) = st["members"]
    assert me["name"] == "t" and me["state"] == "alive" and me["address"] == echo_node.address
    assert set(me) >= {"name", "address", "state", "incarnation", "last_heard_s"}


def test_malformed_gossip_sent_to_a_node_is_counted_and_the_node_keeps_serving(echo_node):
    import zmq

    from mesh import wire

    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(echo_node.address)
    try:
        for body in ({"t": "syn", "digest": [1]}, {"t": "push", "delta": 5}, "junk",
                     {"t": "syn", "digest": {"x@1": [2**70, 1, "", False]}}):
            try:
                sock.send(wire.encode(wire.Kind.EVENT, 1, 0, "evil", "$gossip", body))
            except mesh.WireError:
                continue
        client = echo_node.client()
        wait_until(lambda: client.status()["node"]["bad_frames"] >= 3, 5, "the bad gossip to be counted")
        assert client.actor("echo").ask("still here") == "still here"
    finally:
        sock.close(0)
