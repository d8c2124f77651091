"""Listeners that answer in time (issue 13): ``on_intention`` runs beside a busy handler, a proposer
hears back as soon as every listener has answered, and ``require=[...]`` makes silence an objection.
Real processes: one node, its agents, the intention published once on the node's forwarder."""

from __future__ import annotations

import time

import pytest

from conftest import wait_until

pytestmark = pytest.mark.timeout(120)


def agents(journal, silent: bool = False) -> str:
    spec = ('[[agents]]\nname = "proposer"\nclass = "actors:Proposer"\n\n'
            '[[agents]]\nname = "critic"\nclass = "actors:BusyObjector"\n'
            f'config = {{ journal = "{journal}", rules = {{ drop-table = {{ reason = "backups not verified",'
            ' weight = 2.0 } } }\n\n'
            '[[agents]]\nname = "reviewer"\nclass = "actors:Objector"\nconfig = { rules = {} }\n')
    if silent:
        spec += '\n[[agents]]\nname = "quiet"\nclass = "actors:SilentListener"\nconfig = { delay = 2.0 }\n'
    return spec


def listening(node, names: list[str]):
    client = node.client()
    wait_until(lambda: client.control("intent_listeners")["actors"] == sorted(names), 30, f"{names} listening")
    return client


def test_a_listener_busy_in_a_two_second_handler_still_objects_within_a_short_window(start_node, tmp_path):
    journal = tmp_path / "critic"
    node = start_node(agents(journal), name="a")
    client = listening(node, ["critic", "reviewer"])
    client.actor("critic").tell({"busy": 2.0})
    wait_until(lambda: journal.exists() and journal.read_text() == "busy\n", 10, "the critic busy")
    d = client.actor("proposer").ask({"propose": "drop-table", "claims": ["db:users"], "window": 0.2}, timeout=10)
    assert journal.read_text() == "busy\n", "the critic's handler was still busy when the decision came"
    assert d["outcome"] == "objected" and d["decided_by"] == "weights", d
    assert d["objections"] == [["critic", "backups not verified", 2.0, "finding"]]
    assert d["took"] < 1.0, d


def test_the_decision_comes_as_soon_as_every_listener_has_answered_not_at_the_windows_end(start_node, tmp_path):
    node = start_node(agents(tmp_path / "critic"), name="a")
    client = listening(node, ["critic", "reviewer"])
    proposer = client.actor("proposer")
    for claims in ([], ["repo:app"]):  # listeners only, and a vote beside them
        d = proposer.ask({"propose": "read", "claims": claims, "window": 5.0}, timeout=10)
        assert d["outcome"] == "approved" and d["objections"] == [] and d["took"] < 1.0, (claims, d)
        d = proposer.ask({"propose": "drop-table", "claims": claims, "window": 5.0}, timeout=10)
        assert d["outcome"] == "objected" and d["took"] < 1.0, (claims, d)


def test_a_required_listener_that_is_silent_or_absent_objects_and_one_that_answers_approves(start_node, tmp_path):
    node = start_node(agents(tmp_path / "critic", silent=True), name="a")
    client = listening(node, ["critic", "quiet", "reviewer"])
    proposer = client.actor("proposer")
    # Silence objects only when required: otherwise the window ends and the intention passes.
    d = proposer.ask({"propose": "read", "window": 0.2}, timeout=10)
    assert d["outcome"] == "approved" and d["objections"] == [], d
    d = proposer.ask({"propose": "read", "window": 0.2, "require": ["quiet"]}, timeout=10)
    assert d["outcome"] == "objected" and d["decided_by"] == "require", d
    assert d["reasons"] == ["required listener 'quiet' did not answer within the window"], d
    assert d["objections"][0][0] == "quiet" and d["objections"][0][3] == "silence"
    # Not listening at all: objected at once, whatever the window.
    d = proposer.ask({"propose": "read", "claims": ["repo:app"], "window": 5.0, "require": ["ghost"]}, timeout=10)
    assert d["outcome"] == "objected" and d["decided_by"] == "require", d
    assert any("'ghost' does not listen" in r for r in d["reasons"]), d
    # A required listener that answers without objecting: approved.
    d = proposer.ask({"propose": "read", "claims": ["repo:app"], "window": 0.5, "require": ["reviewer", "critic"]},
                     timeout=10)
    assert d["outcome"] == "approved" and d["decided_by"] == "vote" and d["objections"] == [], d


@pytest.mark.timeout(60)
def test_late_and_unknown_answers_are_dropped_and_counted(start_node):
    node = start_node(name="a")
    client = node.client()
    assert client.control("intent_answer", id="nope", listener="x", objection=None) == {"counted": False}
    assert client.control("intent_answer", id="nope", listener="x", objection={"weight": "heavy"}) == {"counted": False}
    started = time.monotonic()
    d = client.control("intent_propose", 10, id="lonely", action="read", priority=0, window=0.3, hold=5.0,
                       proposer="p", require=["ghost"])
    assert time.monotonic() - started < 0.25, "nobody listens: no reason to wait for the window"
    assert d["outcome"] == "approved" and [o["by"] for o in d["objections"]] == ["ghost"], d
    assert client.control("intent_answer", id="lonely", listener="ghost", objection=None) == {"counted": False}
    assert node.status()["node"]["answers_dropped"] == 3
    import mesh

    for bad, named in (({"require": "ghost"}, "require"), ({"listen": False, "require": ["ghost"]}, "require needs listen"),
                       ({"listen": "yes"}, "listen")):
        with pytest.raises(mesh.WireError, match=named):
            client.control("intent_propose", 10, id="bad", action="read", priority=0, window=0.3, hold=5.0,
                           proposer="p", **bad)


@pytest.mark.timeout(60)
def test_an_intention_too_large_to_broadcast_is_refused_whole_and_a_too_large_event_too(start_node, tmp_path):
    """Listeners hear at most BROADCAST_MAX_BYTES of action and claims: a larger proposal is refused
    before anything of it is kept (not voted on unheard); a larger event raises at publish."""
    import mesh
    from mesh.runtime.broadcast import BROADCAST_MAX_BYTES

    node = start_node(agents(tmp_path / "critic"), name="a")
    client = listening(node, ["critic", "reviewer"])
    big = "x" * (BROADCAST_MAX_BYTES + 1)
    with pytest.raises(mesh.WireError, match="listeners hear at most 256 KiB"):
        client.control("intent_propose", id="big-1", action=big, claims=["c"], proposer="p", window=0.2)
    assert client.intents()["intents"] == []
    with pytest.raises(mesh.WireError, match="a broadcast carries at most 256 KiB"):
        client.publish("ALERT", big)
    client.publish("ALERT", "small")  # the publisher still works
