"""Alerts that wait for a person: raised by an actor (self.mesh.alert) or a client, kept in the
shared state, heard on HELP, shown by `mesh status` and `mesh alerts` until `mesh ack`, and still
there after the kill switch is pulled."""

from __future__ import annotations

import json
import threading

import pytest

import mesh
from conftest import run_cli, wait_until
from mesh.runtime.node.alerts import ALERTS_MAX

pytestmark = pytest.mark.timeout(120)

ALERTER = '[[agents]]\nname = "alerter"\nclass = "alerters:Alerter"\n'


def cli_json(*args: str):
    done = run_cli(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_an_alert_raised_just_before_the_kill_switch_waits_for_a_person(start_node):
    node = start_node(ALERTER)
    watcher = node.client()
    heard: list[mesh.Event] = []
    arrived = threading.Event()
    watcher.subscribe(mesh.HELP, lambda event: (heard.append(event), arrived.set()))

    raised = node.client().actor("alerter").ask({"alert": "the database is gone", "data": {"db": "main"}})
    pulled = run_cli("kill", "--node", node.address)  # at once: the agent that raised it dies
    assert pulled.returncode == 0, pulled.stderr
    try:
        assert raised["by"] == "alerter" and raised["node"] == "t" and raised["acknowledged"] is False
        assert arrived.wait(10) and heard[0].data == raised and heard[0].topic == mesh.HELP

        listed = cli_json("alerts", "--node", node.address)
        assert [a["id"] for a in listed] == [raised["id"]]
        assert listed[0]["reason"] == "the database is gone" and listed[0]["data"] == {"db": "main"}
        status = cli_json("status", "--node", node.address)
        assert status["kill_switch"] is not None
        assert status["alerts"]["unacknowledged"] == 1 and status["alerts"]["newest"][0]["id"] == raised["id"]
        table = run_cli("status", "--node", node.address).stdout
        assert "ALERTS: 1 waiting for a person" in table and "the database is gone" in table

        # Nothing restarts while the switch is pulled.
        refused = run_cli("restart", "alerter", "--node", node.address)
        assert refused.returncode == 1 and "kill switch is pulled" in refused.stderr

        acked = cli_json("ack", raised["id"], "--node", node.address)
        assert acked["acknowledged"] is True and "mesh ack" in acked["acknowledged_by"]
        assert cli_json("status", "--node", node.address)["alerts"] == {"unacknowledged": 0, "newest": []}
        assert cli_json("alerts", "--unacknowledged", "--node", node.address) == []
        assert cli_json("alerts", "--node", node.address)[0]["acknowledged"] is True
        assert "ALERTS" not in run_cli("status", "--node", node.address).stdout

        unknown = run_cli("ack", "nope", "--node", node.address)
        assert unknown.returncode == 1 and "UnknownAlert" in unknown.stderr
        with pytest.raises(mesh.UnknownAlert):
            watcher.ack_alert("nope")
    finally:
        run_cli("kill", "--release", "--node", node.address)


def test_alerts_are_bounded_and_the_oldest_acknowledged_go_first(echo_node):
    client = echo_node.client()
    first = client.alert("first")
    second = client.alert("second", by="someone")
    assert second["by"] == "someone"
    client.ack_alert(second["id"], by="a person")
    assert client.ack_alert(second["id"], by="another")["acknowledged_by"] == "a person"  # the first stands
    for i in range(ALERTS_MAX - 1):  # one over the bound: the acknowledged one goes
        client.alert(f"filler {i}")
    ids = [a["id"] for a in client.alerts()]
    assert len(ids) == ALERTS_MAX and second["id"] not in ids and ids[0] == first["id"]
    client.alert("one more")  # none acknowledged: the oldest goes
    ids = [a["id"] for a in client.alerts()]
    assert len(ids) == ALERTS_MAX and first["id"] not in ids
    assert len(client.alerts(unacknowledged=True)) == ALERTS_MAX
    status = client.status()["alerts"]
    assert status["unacknowledged"] == ALERTS_MAX and [a["reason"] for a in status["newest"]][0] == "one more"
    with pytest.raises(ValueError):
        client.alert("")


def test_an_alert_raised_on_one_node_is_listed_and_acknowledged_from_another(start_node):
    a = start_node("", name="a")
    b = start_node("", name="b", args=("--join", a.address))
    raised = a.client().alert("seen everywhere")
    wait_until(lambda: [x["id"] for x in b.client().alerts()] == [raised["id"]], 15, "the alert at node b")
    done = run_cli("ack", raised["id"], "--node", b.address)
    assert done.returncode == 0 and "acknowledged by" in done.stdout
    wait_until(lambda: a.client().status()["alerts"]["unacknowledged"] == 0, 15, "node a to see it acknowledged")
