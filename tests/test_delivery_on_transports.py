"""Reliable delivery through real in-process nodes, the same test on ZeroMQ and on the in-memory twin.

An embedded actor registers with node ``a``; a sender, a client of node ``b``, resolves it by
name through the directory the nodes gossip and tells it with ``ack=True``. The link between
the sender's host and the actor's is cut while the tells are resent, then healed: every tell
is acknowledged, none is lost, and each is handled once, in the order told.
"""

from __future__ import annotations

import threading

import pytest

from conftest import wait_until
from mesh.actor import Actor
from mesh.runtime import rpc
from node_mesh import world_fixture  # noqa: F401  (world: the fixture, once per transport)

pytestmark = pytest.mark.timeout(90)


class Recorder(Actor):
    """Keeps every message it handled; ``"seen"`` asks for them."""

    def __init__(self) -> None:
        self.seen: list = []
        self.lock = threading.Lock()

    def on_message(self, message):
        if message == "seen":
            return list(self.seen)
        with self.lock:
            self.seen.append(message)
        return message


def test_acknowledged_tells_to_a_node_resolved_name_cross_a_cut_and_heal_none_lost_each_handled_once(world):
    a, b = world.start_mesh("a", "b")
    recorder = Recorder()
    world.serve(recorder, "recorder", a, host="actors")
    sender = world.client(b, host="sender", resolve_timeout=0.2)
    ref = sender.actor("recorder")
    wait_until(lambda: rpc.resolve(sender, "recorder").get("endpoint"), 10, "node b to know the recorder")
    assert ref.ask("ready") == "ready"

    world.cut("sender", "actors")
    deliveries = [ref.tell(i, ack=True, timeout=60) for i in range(20)]
    wait_until(lambda: all(d.attempts >= 2 for d in deliveries), 10, "every tell sent again while cut")
    assert not any(d.acked for d in deliveries)
    assert recorder.seen == ["ready"]  # nothing crossed the cut

    world.heal()
    for d in deliveries:
        d.wait(30)
    assert all(d.acked for d in deliveries)
    assert recorder.seen == ["ready", *range(20)]  # none lost, none twice, in the order told
    assert ref.ask("seen", timeout=10) == ["ready", *range(20)]
