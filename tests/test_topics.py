"""Events on named topics across two nodes: subscribers get every event of their topics with its
id and correlation id; the playbook's message types are ready-made topics."""

from __future__ import annotations

import json

import pytest

import mesh
from conftest import stop_node, wait_until

pytestmark = pytest.mark.timeout(60)


def listener(name: str, node: str, journal, topics: list[str]) -> str:
    return (f'[[agents]]\nname = "{name}"\nclass = "actors:Listener"\nnode = "{node}"\n'
            f'config = {{ journal = "{journal}", topics = {json.dumps(topics)} }}\n')


def test_publish_reaches_every_subscriber_on_any_node_with_ids_and_correlation(start_node, tmp_path):
    journal = tmp_path / "events"
    a = start_node(listener("la", "a", journal, [mesh.ALERT, mesh.HELP]), name="a")
    start_node(listener("lb", "b", journal, [mesh.ALERT]), name="b", wait=False, args=("--join", a.address))
    client = a.client()
    wait_until(lambda: sorted(client.control("subscribers", topic=mesh.ALERT)["actors"]) == ["la", "lb"], 30,
               "both subscriptions known")
    # Events are fire-and-forget: a subscriber must be reachable from here (its directory entry
    # gossiped to node a) to get one. A subscription can arrive before that entry does.
    for name in ("la", "lb"):
        wait_until(lambda name=name: client.endpoint_of(name, timeout=0.0), 30, f"{name} reachable from node a")
    # Events travel on PUB/SUB: each subscriber connects to every live node's forwarder, a node
    # that joined later within moments of its being known alive (a node tells its subscribers).
    for name in ("la", "lb"):
        wait_until(lambda name=name: client.actor(name).ask({"subscribed_nodes": True}, timeout=5) == ["a", "b"], 10,
                   f"{name} subscribed at both nodes")
    first = client.publish(mesh.ALERT, {"disk": "full"})
    events = lambda: [json.loads(x) for x in journal.read_text().splitlines()] if journal.exists() else []  # noqa: E731
    got = wait_until(lambda: (lambda ev: ev if len(ev) == 2 else None)(events()), 10, "both subscribers")
    assert {e["me"] for e in got} == {"la", "lb"}
    assert all(e["data"] == {"disk": "full"} and e["id"] == first and e["topic"] == "ALERT" for e in got)
    # An actor answers on HELP, correlated with the alert; only la listens to HELP.
    reply_id = client.actor("lb").ask({"publish": mesh.HELP, "data": "on it", "corr": first}, timeout=5)
    got = wait_until(lambda: (lambda ev: ev if len(ev) == 3 else None)(events()), 10, "the HELP event")
    help_event = got[-1]
    assert help_event == {"me": "la", "topic": "HELP", "data": "on it", "id": reply_id, "corr": first, "sender": "lb"}
    assert mesh.DISCOVERY == "DISCOVERY" and {mesh.REQUEST, mesh.COMPLETE} == {"REQUEST", "COMPLETE"}


def test_a_bad_topic_is_refused(start_node):
    node = start_node("", name="t")
    client = node.client()
    with pytest.raises(ValueError):
        client.publish("a/b", 1)
    with pytest.raises(mesh.WireError):
        client.control("subscribe", topic="", actor="x")


def test_a_subscriber_gets_an_event_published_the_moment_its_subscribe_returned_200_times(start_node, tmp_path):
    """No slow-joiner loss: ``subscribe()`` returns only once every live node's forwarder has the
    subscription (a hello echoed through it), so an event published right after, on the
    subscriber's node or on another one, arrives. 200 fresh topics, alternating the two nodes."""
    journal = tmp_path / "events"
    a = start_node(listener("sj", "a", journal, []), name="a")
    b = start_node("", name="b", args=("--join", a.address))
    on_a, on_b = a.client(), b.client()
    sj = on_a.actor("sj")
    wait_until(lambda: sj.ask({"subscribed_nodes": True}, timeout=5) == ["a", "b"], 30, "sj connected to both nodes")
    ids = {}
    for i in range(200):
        topic = f"fresh-{i}"
        assert sj.ask({"subscribe": topic}, timeout=10) is True
        ids[topic] = (on_b if i % 2 else on_a).publish(topic, i)
    events = lambda: [json.loads(x) for x in journal.read_text().splitlines()] if journal.exists() else []  # noqa: E731
    got = wait_until(lambda: (lambda ev: ev if len(ev) >= 200 else None)(events()), 30, "200 events")
    assert sorted((e["topic"], e["id"], e["data"]) for e in got) == sorted((t, ids[t], int(t.split("-")[1])) for t in ids)


def test_a_publisher_whose_node_restarted_reaches_the_subscribers_again(start_node, tmp_path):
    """A restarted node's forwarder listens on new ports: the publisher's events must go there, not
    into a queue for the old ports that nothing reads (fire-and-forget would hide that forever)."""
    journal = tmp_path / "events"
    a = start_node("", name="a")
    port = int(a.address.rsplit(":", 1)[1])
    b = start_node(listener("lr", "b", journal, ["RESTART"]), name="b", args=("--join", a.address))
    lr = b.client().actor("lr")
    wait_until(lambda: lr.ask({"subscribed_nodes": True}, timeout=5) == ["a", "b"], 30, "lr subscribed at both nodes")
    publisher = mesh.connect(a.address, send_timeout=0.5)
    try:
        events = lambda: [json.loads(x)["data"] for x in journal.read_text().splitlines()] if journal.exists() else []  # noqa: E731
        publisher.publish("RESTART", 0)
        wait_until(lambda: 0 in events(), 10, "the event before the restart")
        stop_node(a)
        start_node("", name="a", port=port, args=("--join", b.address))
        sent = iter(range(1, 1_000_000))

        def a_later_event_arrived() -> bool:
            try:
                publisher.publish("RESTART", next(sent))
            except mesh.MeshError:
                pass  # the node not back yet, or its forwarder not yet told apart
            return any(d >= 1 for d in events())

        wait_until(a_later_event_arrived, 30, "an event published through the restarted node")
    finally:
        publisher.close()
