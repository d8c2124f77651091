"""The handoff's records with three real in-process nodes, on ZeroMQ and on the twin: every node
publishes, under ``$acted/NAME``, the leader's decision it last acted on and the replicas it runs,
which the leader reads before it lets a replica start anywhere (mesh.core.fencing.Handoff)."""

from __future__ import annotations

import pytest

from conftest import wait_until
from node_mesh import world_fixture  # noqa: F401  (world: the fixture)

pytestmark = pytest.mark.timeout(120)


def test_every_node_publishes_the_decision_it_acted_on_and_what_it_runs(world):
    nodes = world.start_mesh("a", "b", "c")
    client = world.client(nodes[0])

    def records():
        lead = next((n for n in nodes if n.election()["role"] == "leader"), None)
        if lead is None or lead.election()["last_decision"] is None:
            return None
        want = {**lead.election()["last_decision"], "runs": []}
        acted = client.state.items("$acted/")
        return acted if acted == {f"$acted/{n.name}": want for n in nodes} else None

    acted = wait_until(records, 20, "every node's record of the leader's last decision")
    assert {v["term"] for v in acted.values()} == {nodes[0].status()["term"]}
