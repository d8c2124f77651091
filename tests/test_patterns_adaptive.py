"""The adaptive mesh (issue 14, pattern 5), with real processes: three agents with no leader
process work items held in the shared state, each exactly once (claims keep two agents off one
item); an objected intention makes an agent adapt; the loop ends at the objective, or at its
deadline (or its bound on rounds) when the objective cannot be reached."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from conftest import wait_until
from mesh.patterns.adaptive import AdaptiveMesh

pytestmark = pytest.mark.timeout(150)
AGENTS = ["a1", "a2", "a3"]


def spec(veto: str | None = None) -> str:
    text = "".join(f'[[agents]]\nname = "{a}"\nclass = "adaptive_actors:ItemWorker"\n\n' for a in AGENTS)
    if veto is not None:
        text += f'[[agents]]\nname = "guardian"\nclass = "adaptive_actors:Guardian"\nconfig = {{ veto = {veto} }}\n'
    return text


def start(start_node, items: int, veto: str | None = None):
    node = start_node(spec(veto), name="flock", timeout=60)
    client = node.client()
    if veto is not None:
        wait_until(lambda: "guardian" in client.control("intent_listeners")["actors"], 30, "the guardian listening")
    for i in range(items):
        client.state.set(f"work/item-{i}", "todo")
    wait_until(lambda: len(client.state.items("work/")) == items, 10, "the items in the shared state")
    return client


def acted_on(result) -> list[str]:
    return [e["claims"][0] for r in result["agents"].values() for e in r["history"] if e["acted"]]


def test_three_agents_process_every_item_exactly_once_and_stop_at_the_objective(start_node):
    client = start(start_node, items=9)
    result = AdaptiveMesh(AGENTS, client).run(deadline=60)
    assert result["status"] == "objective_met", result
    assert Counter(acted_on(result)) == Counter(f"work/item-{i}" for i in range(9))  # each once, by one agent
    state = client.state.items("work/")
    assert all(value.startswith("done by a") for value in state.values()), state
    assert result["acted"] == 9
    for record in result["agents"].values():
        assert record["status"] == "objective_met" and record["rounds"] == len(record["history"])
        for entry in record["history"]:  # an approval that came after another agent did the work is not acted on
            assert entry["acted"] == (entry["outcome"] == "approved"), entry


def test_an_objected_intention_makes_the_agent_adapt_and_the_objective_is_still_met(start_node):
    client = start(start_node, items=6, veto='{ "work/item-3" = 1 }')
    result = AdaptiveMesh(AGENTS, client).run(deadline=60)
    assert result["status"] == "objective_met", result
    assert Counter(acted_on(result)) == Counter(f"work/item-{i}" for i in range(6))
    objected = [(r["agent"], e) for r in result["agents"].values() for e in r["history"] if e["outcome"] == "objected"]
    [(agent, entry)] = [(a, e) for a, e in objected if e.get("objections")]
    assert entry["claims"] == ["work/item-3"] and entry["objections"][0]["by"] == "guardian", entry
    assert entry["objections"][0]["reason"] == "work/item-3 is not ready"
    history = result["agents"][agent]["history"]
    after = history[history.index(entry) + 1:]
    if after:  # the agent steered clear of the objected item in its next round
        assert after[0]["claims"] != ["work/item-3"], history


def test_an_unreachable_objective_ends_the_loop_at_its_deadline_or_its_rounds(start_node):
    client = start(start_node, items=3, veto='{ "work/item-1" = -1 }')
    result = AdaptiveMesh(AGENTS, client).run(deadline=3)
    assert result["status"] == "deadline", result
    assert sorted(acted_on(result)) == ["work/item-0", "work/item-2"]
    assert client.state.get("work/item-1") == "todo"
    for record in result["agents"].values():
        assert record["status"] == "deadline" and 2.5 < record["elapsed"] < 10, record
    assert sum(r["objected"] for r in result["agents"].values()) >= 3  # tried again after idling, objected again
    bounded = AdaptiveMesh(AGENTS, client).run(deadline=30, max_rounds=2)
    assert {r["status"] for r in bounded["agents"].values()} == {"max_rounds"}, bounded
    assert bounded["status"] == "max_rounds" and all(r["rounds"] == 2 for r in bounded["agents"].values())


@pytest.mark.fast_check
def test_the_readme_shows_the_adaptive_example_as_it_is_in_examples():
    root = Path(__file__).resolve().parent.parent
    example = (root / "examples/adaptive.py").read_text()
    assert example.split('"""', 2)[2].strip() in (root / "README.md").read_text()


def test_a_proposal_the_node_refuses_ends_the_loop_at_once_saying_why(start_node):
    """A wrong proposal (a window not above the vote's settle delay) cannot get better by trying
    again: the loop stops at the first round with the node's reason, not after max_rounds."""
    client = start(start_node, items=2)
    result = AdaptiveMesh(AGENTS, client).run(deadline=30, window=0.05)
    assert result["status"] == "error", result
    for record in result["agents"].values():
        assert record["status"] == "error" and "window must be" in record["error"], record
        assert record["rounds"] <= 1 and record["elapsed"] < 5, record
