"""Hierarchical command (issue 14, pattern 4): a declared chain of command is checked; a mission
runs down it with real processes (three squads at once); a worker's crash escalates to its squad
leader and then to the commander; a squad leader that overruns its time is the commander's to
decide; an aborted mission raises an alert."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import mesh
from mesh.patterns.hierarchy import Commander, Hierarchy

SQUADS = {
    "functional": ["ui_tester", "api_tester"],
    "performance": ["load_generator", "metric_collector"],
    "security": ["scanner"],
}


def declaration(**squad_options) -> dict:
    return {"commander": {"name": "QE Mission Control", "responsibilities": ["Strategic planning"]},
            "squad_leaders": {name: {"workers": workers, "worker_timeout": 5, **squad_options.get(name, {})}
                              for name, workers in SQUADS.items()}}


def agents(leader: dict | None = None, worker: dict | None = None) -> str:
    """The spec: the three leaders (performance splits numbers) and their workers; ``leader`` and
    ``worker`` give some of them a config (faults)."""
    leader, worker = leader or {}, worker or {}
    classes = {"functional": "Leader", "performance": "Numbers", "security": "Leader"}
    spec = []
    for name, workers in SQUADS.items():
        spec.append(_agent(name, classes[name], leader.get(name)))
        spec += [_agent(w, "Tester", worker.get(w)) for w in workers]
    return "\n".join(spec)


def _agent(name: str, cls: str, config: str | None) -> str:
    entry = f'[[agents]]\nname = "{name}"\nclass = "hierarchy_actors:{cls}"\nrestart = "never"\n'
    return entry + (f"config = {config}\n" if config else "")


MISSION = {"numbers": [1, 2, 3, 4, 5, 6]}


# -- the declaration -------------------------------------------------------------------------


@pytest.mark.fast_check
def test_a_declared_hierarchy_mirrors_the_playbook_and_fills_in_timeouts(tmp_path):
    file = tmp_path / "h.toml"
    file.write_text(textwrap.dedent("""
        [commander]
        name = "QE Mission Control"
        responsibilities = ["Strategic planning", "Resource allocation", "Final decisions"]

        [squad_leaders.functional_testing]
        workers = ["ui_tester", "api_tester", "integration_tester"]
        worker_timeout = "2s"

        [squad_leaders.performance_testing]
        workers = ["load_generator", "metric_collector", "analyzer"]
        timeout = "1m"
    """))
    h = Hierarchy.load(file, agents=["functional_testing", "performance_testing", "ui_tester", "api_tester",
                                     "integration_tester", "load_generator", "metric_collector", "analyzer"])
    assert h.commander == "QE Mission Control" and len(h.responsibilities) == 3
    functional, performance = h.squads
    assert (functional.leader, functional.worker_timeout, functional.timeout) == ("functional_testing", 2.0, 9.0)
    assert (performance.worker_timeout, performance.timeout) == (30.0, 60.0)
    assert Hierarchy.from_dict({"hierarchy": declaration()}).squad("security").workers == ("scanner",)


@pytest.mark.fast_check
@pytest.mark.parametrize("change, key, reason", [
    (lambda d: d["squad_leaders"]["security"].update(workers=[]), "squad_leaders.security.workers", "an empty squad"),
    (lambda d: d["squad_leaders"]["security"].update(workers=["security"]), "squad_leaders",
     "a cycle in the chain of command: security -> security"),
    (lambda d: (d["squad_leaders"]["security"].update(workers=["functional"]),
                d["squad_leaders"]["functional"].update(workers=["security"])), "squad_leaders",
     "a cycle in the chain of command: functional -> security -> functional"),
    (lambda d: d["commander"].update(agent="boss") or d["squad_leaders"]["security"].update(workers=["boss"]),
     "squad_leaders", "a cycle in the chain of command: boss -> security -> boss"),
    (lambda d: d["squad_leaders"]["security"].update(workers=["functional"]), "squad_leaders.security.workers",
     "'functional' holds two ranks"),
    (lambda d: d["squad_leaders"]["security"].update(workers=["ui_tester"]), "squad_leaders.security.workers",
     "'ui_tester' answers to two squad leaders (functional and security)"),
    (lambda d: d["squad_leaders"]["security"].update(worker=["x"]), "squad_leaders.security.worker", "unknown key"),
    (lambda d: d["squad_leaders"]["security"].update(timeout="soon"), "squad_leaders.security.timeout", ""),
    (lambda d: d.pop("commander"), "commander", "missing"),
    (lambda d: d.update(squad_leaders={}), "squad_leaders", "at least one squad leader"),
])
def test_a_hierarchy_with_a_mistake_is_refused_naming_the_key(change, key, reason):
    data = declaration()
    change(data)
    with pytest.raises(mesh.SpecError) as caught:
        Hierarchy.from_dict(data)
    assert caught.value.key == key and reason in caught.value.reason, caught.value


@pytest.mark.fast_check
def test_ranks_held_by_agents_that_do_not_exist_are_refused():
    known = [*SQUADS, *[w for ws in SQUADS.values() for w in ws]]
    Hierarchy.from_dict(declaration(), agents=known)
    with pytest.raises(mesh.SpecError, match="squad_leaders.performance.workers: unknown agents: metric_collector"):
        Hierarchy.from_dict(declaration(), agents=[a for a in known if a != "metric_collector"])
    with pytest.raises(mesh.SpecError, match="squad_leaders.security: unknown agent 'security'"):
        Hierarchy.from_dict(declaration(), agents=[a for a in known if a != "security"])


# -- missions with real processes ------------------------------------------------------------


@pytest.mark.timeout(120)
def test_a_mission_runs_down_three_squads_at_once_and_reports_up(start_node):
    node = start_node(agents(), name="hq", timeout=60)
    summary = Commander(declaration(), node.client()).run(MISSION)
    assert summary["status"] == "ok", summary
    assert [(o["squad"], o["status"], o["attempts"]) for o in summary["objectives"]] == [
        ("functional", "done", 1), ("performance", "done", 1), ("security", "done", 1)]
    reports = {o["squad"]: o["report"] for o in summary["objectives"]}
    assert reports["performance"]["result"] == [1, 2, 3, 4, 5, 6]  # split among two workers, combined
    assert reports["performance"]["results"]["load_generator"]["task"] == [1, 3, 5]
    assert reports["functional"]["results"]["api_tester"] == {"worker": "api_tester", "task": MISSION}
    assert summary["escalations"] == [] and summary["alerts"] == []
    assert {e["squad"] for e in summary["log"] if e["event"] == "order"} == set(SQUADS)


class Planner(Commander):
    """Two objectives for security (in order), one for performance; plans name their squad."""

    def plan(self, mission):
        return [{"squad": "security", "step": 1}, {"squad": "performance", "numbers": [7]},
                {"squad": "security", "step": 2}]


@pytest.mark.timeout(120)
def test_the_commanders_plan_assigns_objectives_and_a_squad_takes_its_own_in_order(start_node):
    node = start_node(agents(), name="hq", timeout=60)
    summary = Planner(declaration(), node.client()).run("go")
    assert summary["status"] == "ok", summary
    assert [o["squad"] for o in summary["objectives"]] == ["security", "performance", "security"]
    security = [e for e in summary["log"] if e["event"] == "order" and e["squad"] == "security"]
    assert len(security) == 2
    assert summary["objectives"][2]["report"]["results"]["scanner"]["task"] == {"squad": "security", "step": 2}


class Aborting(Commander):
    def on_squad_failure(self, failure):
        return "abort"


@pytest.mark.timeout(120)
def test_a_crashed_worker_escalates_to_its_leader_then_to_the_commander(start_node):
    node = start_node(agents(worker={"api_tester": "{ crash = true }"}), name="hq", timeout=60)
    summary = Commander(declaration(), node.client()).run(MISSION)
    assert summary["status"] == "partial", summary
    functional = summary["objectives"][0]
    assert functional["status"] == "skipped" and functional["report"]["status"] == "escalated"
    assert functional["report"]["results"] == {"ui_tester": {"worker": "ui_tester", "task": MISSION}}
    # The leader retried once (the crash, then a worker that is gone), then escalated; the commander skipped.
    leader_says = [(e["event"], e["attempt"]) for e in summary["log"] if e["who"] == "functional"]
    assert leader_says == [("retry", 1), ("escalate", 2)], summary["log"]
    first = next(e for e in summary["log"] if e["who"] == "functional")
    assert first["kind"] == "died", first
    [escalation] = summary["escalations"]
    assert escalation["worker"] == "api_tester" and escalation["leader"] == "functional"
    assert (escalation["leader_decision"], escalation["commander_decision"]) == ("escalate", "skip")
    assert [o["status"] for o in summary["objectives"][1:]] == ["done", "done"]


@pytest.mark.timeout(120)
def test_a_worker_failure_the_leader_skips_stays_in_the_squad_and_an_abort_raises_an_alert(start_node):
    node = start_node(agents(leader={"security": '{ decision = "escalate" }', "functional": '{ decision = "skip" }'},
                             worker={"scanner": "{ fail = true }", "ui_tester": "{ fail = true }"}),
                      name="hq", timeout=60)
    summary = Aborting(declaration(), node.client()).run(MISSION)
    functional, _, security = summary["objectives"]
    assert functional["status"] == "partial" and functional["report"]["skipped"] == ["ui_tester"]
    assert security["status"] == "not_run" or security["report"]["status"] == "escalated"
    assert summary["status"] == "aborted", summary
    [escalation] = summary["escalations"]
    assert escalation["worker"] == "scanner" and escalation["kind"] == "error"
    assert "RuntimeError: scanner cannot do" in escalation["reason"]
    assert escalation["commander_decision"] == "abort"
    [alert] = summary["alerts"]
    assert alert["reason"].startswith("mission aborted: squad security failed") and alert["squad"] == "security"


class RetryOnce(Commander):
    def on_squad_failure(self, failure):
        return "retry" if failure.attempt == 1 else "skip"


@pytest.mark.timeout(120)
def test_a_squad_leader_that_overruns_its_time_is_detected_and_the_commander_decides(start_node):
    node = start_node(agents(leader={"security": "{ hang = 30.0 }"}), name="hq", timeout=60)
    h = declaration(security={"worker_timeout": 0.5, "timeout": 1.5})
    summary = RetryOnce(h, node.client()).run(MISSION)
    assert summary["status"] == "partial", summary
    security = summary["objectives"][2]
    assert (security["status"], security["attempts"], security["report"]) == ("skipped", 2, None)
    decisions = [(e["kind"], e["commander_decision"]) for e in summary["escalations"]]
    assert decisions == [("timeout", "retry"), ("timeout", "skip")], summary["escalations"]
    assert summary["escalations"][0]["leader"] == "security"
    assert [o["status"] for o in summary["objectives"][:2]] == ["done", "done"]


@pytest.mark.fast_check
def test_the_readme_shows_the_hierarchy_example_as_it_is_in_examples():
    root = Path(__file__).resolve().parent.parent
    example = (root / "examples/hierarchy.py").read_text()
    assert example.split('"""', 2)[2].strip() in (root / "README.md").read_text()
