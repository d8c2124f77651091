"""Event-driven choreography with real processes: the playbook's chain START_TESTING -> ISSUE_FOUND
-> ISSUE_CONFIRMED -> FIX_ATTEMPTED -> VALIDATION_COMPLETE runs from reactor to reactor, each
event's correlation id naming the event it answers, and the run's trace reads back who reacted to
what and when; a reaction that raises is recorded and stops the chain; a branch; a quiet end."""

from __future__ import annotations

from pathlib import Path

import pytest

from mesh.patterns import Choreography, Reaction, Reactor, reaction

pytestmark = pytest.mark.timeout(180)

CHAIN = ["START_TESTING", "ISSUE_FOUND", "ISSUE_CONFIRMED", "FIX_ATTEMPTED", "VALIDATION_COMPLETE"]
AGENTS = {"scout": "Scout", "validator": "Validator", "healer": "Healer", "reporter": "Reporter"}


@pytest.fixture(scope="module")
def spec() -> str:
    return "\n".join(f'[[agents]]\nname = "{name}"\nclass = "choreography_actors:{cls}"\n' for name, cls in AGENTS.items())


@pytest.fixture
def testing(start_node, spec):
    node = start_node(spec, timeout=90)
    client = node.client()
    return node, client, Choreography(client, start="START_TESTING", terminal=["VALIDATION_COMPLETE"])


def test_the_playbooks_chain_runs_end_to_end_linked_by_correlation_ids_and_reads_back(testing):
    node, client, choreography = testing
    assert Reaction("ISSUE_FOUND", "validator", "ISSUE_CONFIRMED") in choreography.reactions()
    outcome = choreography.run({"target": "shop"}, timeout=60)
    assert outcome.status == "complete", outcome.trace
    trace = outcome.trace
    assert [r["topic"] for r in trace] == CHAIN
    assert [r["agent"] for r in trace] == ["scout", "validator", "healer", "validator", "reporter"]
    assert [r["hop"] for r in trace] == [0, 1, 2, 3, 4]
    # Each event answers the one before it: its corr is the event the previous reaction reacted to.
    assert trace[0]["event"] == outcome.start_event and trace[0]["corr"] is None
    for before, after in zip(trace, trace[1:], strict=False):
        assert after["corr"] == before["event"]
        assert before["published"] == {"topic": after["topic"], "event": after["event"]}
    assert trace[-1]["published"] is None and not outcome.errors
    assert all(a["time"] <= b["time"] for a, b in zip(trace, trace[1:], strict=False))
    assert choreography.trace(outcome.run) == trace  # read back later, the same
    summaries = client.actor("reporter").ask("summaries", timeout=10)
    assert summaries == [{"run": outcome.run, "issue": "login is slow", "fixed": True, "corr": trace[3]["event"]}]
    assert choreography.forget(outcome.run) == 5 and choreography.trace(outcome.run) == []


def test_runs_at_once_keep_their_chains_apart(testing):
    _, client, choreography = testing
    runs = [choreography.start({"target": f"shop{i}"})[0] for i in range(3)]
    for run in runs:
        status, trace = choreography.wait(run, timeout=60)
        assert status == "complete" and [r["topic"] for r in trace] == CHAIN
        assert {r["run"] for r in trace} == {run}


def test_a_reaction_that_raises_is_recorded_and_stops_the_chain(testing):
    _, client, choreography = testing
    outcome = choreography.run({"target": "shop", "fail": "healer"}, timeout=60)
    assert outcome.status == "failed"
    assert [(r["topic"], r["agent"]) for r in outcome.trace] == [
        ("START_TESTING", "scout"), ("ISSUE_FOUND", "validator"), ("ISSUE_CONFIRMED", "healer")]
    failed = outcome.trace[-1]
    assert outcome.errors == [failed] and failed["published"] is None
    assert failed["error"] == "RuntimeError: no fix for login is slow" and "heal" in failed["traceback"]
    # The healer's process goes on: the next run gets through.
    assert choreography.run({"target": "shop"}, timeout=60).status == "complete"


def test_a_branch_ends_on_another_terminal_and_a_quiet_reaction_ends_nothing(testing):
    _, client, choreography = testing
    branching = Choreography(client, start="START_TESTING", terminal=["VALIDATION_COMPLETE", "LOW_RISK"])
    outcome = branching.run({"branch": True}, timeout=60)
    assert outcome.status == "complete"
    assert [(r["topic"], r["agent"]) for r in outcome.trace] == [("START_TESTING", "scout"), ("LOW_RISK", "reporter")]
    quiet = choreography.run({"quiet": "scout"}, timeout=2)
    assert quiet.status == "timeout" and [r["published"] for r in quiet.trace] == [None]


def test_a_start_nobody_hears_is_refused(testing):
    _, client, _ = testing
    with pytest.raises(LookupError, match="NOBODY_LISTENS"):
        Choreography(client, start="NOBODY_LISTENS", terminal=["X"], ready_timeout=0.5).start()


def test_a_reactor_declares_one_reaction_per_topic():
    class Twice(Reactor):
        @reaction("A")
        def first(self, data):
            return data

        @reaction("A")
        def second(self, data):
            return data

    with pytest.raises(TypeError, match="two reactions to 'A'"):
        Twice.declared()


@pytest.mark.fast_check
def test_the_readme_shows_the_example_as_it_is():
    root = Path(__file__).resolve().parent.parent
    example = (root / "examples" / "choreography.py").read_text()
    assert example.split('"""', 2)[2].strip() in (root / "README.md").read_text()
