"""The Test Orchestra on one node, end to end with the real `mesh run`: the sections run by their
patterns with every answer flowing on, and each failure-handling rule, its fault injected, does
what it says (and the report says what happened)."""

from __future__ import annotations

import io
import json

import pytest

from conftest import run_cli, wait_until

pytestmark = pytest.mark.timeout(120)


def agents(*names: str, **config: dict) -> str:
    """[[agents]] tables of orchestra_actors.Step, ``config[name]`` its keyword arguments."""
    tables = []
    for name in names:
        options = "".join(f"{key} = {json.dumps(value)}\n" for key, value in config.get(name, {}).items())
        tables.append(f'[[agents]]\nname = "{name}"\nclass = "orchestra_actors:Step"\n'
                      + (f"[agents.config]\n{options}" if options else ""))
    return "\n".join(tables)


RULES = '''
[failure_handling]
agent_failure = "Restart once, then skip"
resource_exhaustion = "Queue and wait"
timeout = "Kill and report"
critical_failure = "Stop orchestra, alert humans"
'''


def write_orchestra(tmp_path, sections: str, extra: str = "") -> str:
    path = tmp_path / "orchestra-run.toml"
    path.write_text(f'name = "Test Orchestra"\npattern = "Hierarchical with Event-Driven elements"\n{extra}\n'
                    f'{sections}\n{RULES}')
    return str(path)


def run(node, orchestra: str, *args: str, timeout: float = 90):
    result = run_cli("run", orchestra, "--node", node.address, "--json", *args, timeout=timeout)
    report = json.loads(result.stdout) if result.stdout.strip() else None
    return result, report


def parts(report: dict) -> dict:
    return {p["agent"]: p for s in report["sections"] for p in s["agents"]}


FOUR_SECTIONS = '''
[sections.preparation]
agents = ["Provisioner", "Seeder"]
pattern = "Sequential"
[sections.discovery]
agents = ["Scout", "Generator"]
pattern = "Parallel"
[sections.execution]
agents = ["UITester", "APITester"]
pattern = "Parallel with resource management"
pool = "env"
[sections.analysis]
agents = ["Analyzer"]
pattern = "Sequential"
'''
ALL = ("Provisioner", "Seeder", "Scout", "Generator", "UITester", "APITester", "Analyzer")


def test_the_sections_run_in_order_by_their_patterns_and_every_answer_flows_to_the_next(start_node, tmp_path):
    node = start_node('[pools.env]\nsize = 2\n\n' + agents(*ALL))
    result, report = run(node, write_orchestra(tmp_path, FOUR_SECTIONS))
    assert result.returncode == 0, result.stderr
    assert report["status"] == "ok" and [s["status"] for s in report["sections"]] == ["ok"] * 4
    seen = {agent: p["value"]["saw"] for agent, p in parts(report).items()}
    # Sequential: the second agent sees the first's answer; parallel: each sees the sections before.
    assert seen["Provisioner"] == [] and seen["Seeder"] == ["preparation/Provisioner"]
    assert seen["Scout"] == seen["Generator"] == ["preparation/Provisioner", "preparation/Seeder"]
    assert seen["Analyzer"] == sorted(f"{s}/{a}" for s, a in [
        ("preparation", "Provisioner"), ("preparation", "Seeder"), ("discovery", "Scout"), ("discovery", "Generator"),
        ("execution", "UITester"), ("execution", "APITester")])
    assert {p["node"] for p in parts(report).values()} == {"t"}
    assert report["skips"] == report["kills"] == report["alerts"] == [] and report["retries"] == 0
    # The live lines (on stderr with --json) say what runs where.
    assert "[execution] UITester on t: asked" in result.stderr and "(7/7)" in result.stderr
    # Where the run stands is in the node's status too (the dashboard shows it): done, 7 of 7.
    (progress,) = node.status()["orchestra"].values()
    assert progress["state"] == "done" and progress["done"] == progress["total"] == 7
    assert progress["status"] == "ok" and progress["run"] == report["run"]


def test_an_agent_that_crashes_twice_is_restarted_once_then_skipped_and_the_orchestra_goes_on(start_node, tmp_path):
    counters = {name: {"crash": crash, "counter": str(tmp_path / f"{name}.count")}
                for name, crash in (("Seeder", 1), ("Scout", 2))}
    node = start_node('[pools.env]\nsize = 2\n\n' + agents(*ALL, **counters))
    result, report = run(node, write_orchestra(tmp_path, FOUR_SECTIONS))
    assert result.returncode == 1, result.stderr
    assert report["status"] == "partial"
    got = parts(report)
    # Seeder crashed once: restarted, asked again, ok. Scout crashed twice: restarted once, then skipped.
    assert got["Seeder"]["status"] == "ok" and got["Seeder"]["restarts"] == 1 and got["Seeder"]["attempts"] == 2
    assert got["Scout"]["status"] == "skipped" and got["Scout"]["restarts"] == 1 and got["Scout"]["attempts"] == 2
    assert "ActorDied" in got["Scout"]["error"]
    assert report["skips"] == [{"section": "discovery", "agent": "Scout", "reason": got["Scout"]["error"]}]
    assert report["retries"] == 2
    # The rest went on, and the later sections saw no answer from Scout.
    assert all(got[a]["status"] == "ok" for a in ALL if a != "Scout")
    assert "discovery/Scout" not in got["Analyzer"]["value"]["saw"]


def test_a_pool_too_small_makes_the_parts_queue_and_wait_in_priority_order(start_node, tmp_path):
    journal = tmp_path / "journal"
    testers = ("UITester", "APITester", "IntegrationTester")
    node = start_node('[pools.env]\nsize = 1\n\n'
                      + agents(*testers, **{t: {"sleep": 0.5, "journal": str(journal)} for t in testers}))
    sections = ('[sections.execution]\nagents = ["UITester", "APITester", "IntegrationTester"]\n'
                'pattern = "Parallel with resource management"\n')
    extra = '[coordination.resources]\npool = "env"\npriority = { IntegrationTester = 5, APITester = 3 }\n'
    result, report = run(node, write_orchestra(tmp_path, sections, extra))
    assert result.returncode == 0, result.stderr
    got = parts(report)
    assert all(got[t]["status"] == "ok" for t in testers)
    # One unit: one tester at a time, in priority order; the others waited in line instead of failing.
    lines = [line.split() for line in journal.read_text().splitlines()]
    assert [name for what, _, name in lines if what == "start"] == ["IntegrationTester", "APITester", "UITester"]
    spans = sorted((float(t), what) for what, t, _ in lines)
    assert [what for _, what in spans] == ["start", "end"] * 3  # never two at once
    assert got["IntegrationTester"]["ahead"] == 0 and got["UITester"]["ahead"] == 2
    assert got["UITester"]["waited"] >= 0.9 and got["APITester"]["waited"] >= 0.4
    assert {w["agent"] for w in report["waits"]} >= {"UITester", "APITester"}


def test_an_agent_that_hangs_is_killed_and_the_report_says_which_and_after_how_long(start_node, tmp_path):
    node = start_node(agents("Provisioner", "Hanger", "Analyzer", Hanger={"hang": True}))
    before = node.agent("Hanger")["pid"]
    sections = ('[sections.execution]\nagents = ["Provisioner", "Hanger"]\npattern = "Parallel"\n'
                'timeout = "5s"\ntimeouts = { Hanger = "1s" }\n'
                '[sections.analysis]\nagents = ["Analyzer"]\npattern = "Sequential"\n')
    result, report = run(node, write_orchestra(tmp_path, sections))
    assert result.returncode == 1, result.stderr
    got = parts(report)
    assert got["Hanger"]["status"] == "killed" and got["Provisioner"]["status"] == "ok"
    assert got["Analyzer"]["status"] == "ok"  # the orchestra went on
    [kill] = report["kills"]
    assert kill["agent"] == "Hanger" and kill["pid"] == before and kill["node"] == "t" and kill["timeout"] == 1.0
    assert 1.0 <= kill["after"] < 3.0
    # Its process is gone, and a fresh one serves in its place.
    assert kill["fresh_pid"] not in (None, before)
    now = node.wait_agent("Hanger", lambda a: a["state"] == "running")
    assert now["pid"] == kill["fresh_pid"]
    assert "killed" in result.stderr


def test_a_critical_failure_stops_the_orchestra_publishes_help_and_raises_an_alert_for_a_person(start_node, tmp_path):
    node = start_node(agents("Provisioner", "Validator", "Scout", "Analyzer", Validator={"critical": True}))
    sections = ('[sections.preparation]\nagents = ["Provisioner", "Validator"]\npattern = "Sequential"\n'
                '[sections.discovery]\nagents = ["Scout"]\npattern = "Parallel"\n'
                '[sections.analysis]\nagents = ["Analyzer"]\npattern = "Sequential"\n')
    client = node.client()
    heard = []
    client.subscribe("HELP", heard.append)
    result, report = run(node, write_orchestra(tmp_path, sections))
    assert result.returncode == 1, result.stderr
    assert report["status"] == "stopped"
    assert report["stopped_by"].startswith("preparation/Validator: critical failure")
    got = parts(report)
    assert got["Validator"]["status"] == "critical"
    assert got["Scout"]["status"] == got["Analyzer"]["status"] == "not run"
    assert [s["status"] for s in report["sections"]] == ["stopped", "not run", "not run"]
    [alert] = report["alerts"]
    assert alert["kept"] is True
    # The alert waits for a person: mesh alerts shows it until mesh ack.
    shown = run_cli("alerts", "--unacknowledged", "--json", "--node", node.address)
    assert alert["id"] in shown.stdout
    assert run_cli("ack", alert["id"], "--node", node.address).returncode == 0
    assert alert["id"] not in run_cli("alerts", "--unacknowledged", "--json", "--node", node.address).stdout
    wait_until(lambda: any(e.data.get("id") == alert["id"] for e in heard), 10, "the HELP event")


def test_a_bad_orchestra_spec_exits_2_naming_the_key(start_node, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\n[sections.a]\nagents = ["A"]\npattern = "Sequential"\n'
                    '[failure_handling]\ntimeout = "Ignore it"\n')
    result = run_cli("run", str(path))
    assert result.returncode == 2
    assert "failure_handling.timeout" in result.stderr and "Ignore it" in result.stderr


def test_the_events_of_a_run_are_linked_by_correlation_ids_from_the_run_down_to_each_part(start_node, tmp_path):
    node = start_node(agents("Provisioner", "Scout", "Crasher", Crasher={"crash": 5, "counter": str(tmp_path / "n")}))
    client = node.client()
    heard: list = []
    for topic in ("START", "COMPLETE", "ALERT"):
        client.subscribe(topic, heard.append)
    sections = ('[sections.preparation]\nagents = ["Provisioner"]\npattern = "Sequential"\n'
                '[sections.discovery]\nagents = ["Scout", "Crasher"]\npattern = "Parallel"\n')
    result, report = run(node, write_orchestra(tmp_path, sections))
    assert result.returncode == 1, result.stderr
    run_id = report["run"]
    # The run's COMPLETE is the last event published: once heard, every event of the run was sent.
    wait_until(lambda: any(e.topic == "COMPLETE" and e.corr == run_id for e in heard), 10, "the run's COMPLETE")
    events = [e for e in heard if e.data.get("run") == run_id or e.id == run_id]
    by_id = {e.id: e for e in events}
    sections_started = {e.data["section"]: e.id for e in events
                        if e.topic == "START" and e.corr == run_id and "agent" not in e.data}
    assert set(sections_started) == {"preparation", "discovery"}
    parts_started = [e for e in events if e.topic == "START" and "agent" in e.data]
    assert all(e.corr == sections_started[e.data["section"]] for e in parts_started)
    assert sorted(e.data["agent"] for e in parts_started) == ["Crasher", "Crasher", "Provisioner", "Scout"]
    # Each part's outcome answers its own START: COMPLETE when ok, ALERT when it failed.
    answers = {(e.topic, by_id[e.corr].data["agent"]) for e in events
               if e.topic in ("COMPLETE", "ALERT") and e.corr in by_id and "agent" in by_id[e.corr].data}
    assert answers == {("COMPLETE", "Provisioner"), ("COMPLETE", "Scout"), ("ALERT", "Crasher")}
    assert sum(e.topic == "ALERT" and e.data["agent"] == "Crasher" for e in events) == 2  # one per crash


@pytest.mark.fast_check
def test_the_live_view_draws_a_bar_under_the_lines_on_a_terminal_and_plain_lines_otherwise():
    from mesh.orchestra import LiveView, Outcome, Progress

    steps = [Progress("run", total=2), Progress("section", "s", total=2)]
    outcome = Outcome("s", "A", node="a", attempts=1)
    steps.append(Progress("start", "s", outcome, 0, 2))
    steps.append(Progress("end", "s", Outcome("s", "A", status="ok", node="a", elapsed=0.25), 1, 2))
    for bar in (True, False):
        out = io.StringIO()
        view = LiveView(out, bar=bar)
        for step in steps:
            view(step)
        text = out.getvalue()
        assert "[s] A on a: asked" in text and "[s] A on a: ok in 0.2 s  (1/2)" in text
        assert ("running: A@a" in text and "[############------------] 1/2" in text and "\r\033[K" in text) is bar
        assert ("\r" in text) is bar


def test_a_critical_failure_in_a_parallel_section_stops_the_parts_still_waiting_in_line(start_node, tmp_path):
    testers = ("Breaker", "Second", "Third")
    node = start_node('[pools.env]\nsize = 1\n\n'
                      + agents(*testers, "Analyzer", Breaker={"critical": True, "sleep": 0.5}))
    sections = ('[sections.execution]\nagents = ["Second", "Third", "Breaker"]\n'
                'pattern = "Parallel with resource management"\n'
                '[sections.analysis]\nagents = ["Analyzer"]\npattern = "Sequential"\n')
    extra = '[coordination.resources]\npool = "env"\npriority = { Breaker = 9 }\n'
    result, report = run(node, write_orchestra(tmp_path, sections, extra))
    assert result.returncode == 1, result.stderr
    got = parts(report)
    # Breaker held the only unit first (priority) and reported a critical failure: the two parts
    # waiting in line for the unit never ran, nor did the next section.
    assert got["Breaker"]["status"] == "critical" and report["stopped_by"].startswith("execution/Breaker")
    assert got["Second"]["status"] == got["Third"]["status"] == got["Analyzer"]["status"] == "not run"
    assert got["Second"]["attempts"] == got["Third"]["attempts"] == 0
    assert len(report["alerts"]) == 1 and report["alerts"][0]["kept"]
    run_cli("ack", report["alerts"][0]["id"], "--node", node.address)


# -- conflicts: the conductor has the final say -------------------------------------------------

HUMAN_DECIDES = '[intents]\nescalate = "human"\nescalation_timeout = "40s"\n'
CONFLICT_SECTIONS = {"review": {"agents": ["Critic"], "pattern": "Sequential"},
                     "execution": {"agents": ["Rewriter", "Dropper"], "pattern": "Parallel"}}


def conflict_node(start_node, node_extra: str = HUMAN_DECIDES, dropper_evidence: float = 1.0):
    """A node whose Critic objects (strategy, weight 0.5) to what Rewriter and Dropper propose."""
    critic = ('[[agents]]\nname = "Critic"\nclass = "orchestra_actors:Critic"\n'
              '[agents.config]\nobjects_to = ["rewrite app", "drop table"]\n')
    node = start_node(critic + agents("Rewriter", "Dropper", Rewriter={"propose": "rewrite app"},
                                      Dropper={"propose": "drop table", "evidence": dropper_evidence}),
                      node_extra=node_extra)
    client = node.client()
    wait_until(lambda: client.control("intent_listeners")["actors"] == ["Critic"], 20, "the Critic listening")
    return node, client


def test_the_conductor_decides_its_agents_escalated_intentions_with_its_hook(start_node):
    from mesh.orchestra import Conductor, LiveView, parse_orchestra

    node, client = conflict_node(start_node)
    ruled = []

    def on_conflict(conflict):
        ruled.append(conflict)
        if conflict.action == "rewrite app":
            return True
        return False, "no table is dropped during a test run"

    live = io.StringIO()
    orchestra = parse_orchestra({"name": "Test Orchestra", "sections": CONFLICT_SECTIONS,
                                 "coordination": {"conflicts": "Conductor has final say"}})
    report = Conductor(orchestra, client, LiveView(live, bar=False), on_conflict=on_conflict).run()
    got = {p.agent: p for p in report.parts}
    assert report.status == "ok", report.summary()
    # Each proposer saw the conductor's decision, not the leader's rule nor a person's.
    rewrite, drop = got["Rewriter"].value["decision"], got["Dropper"].value["decision"]
    assert rewrite["escalated"] and rewrite["outcome"] == "approved"
    assert drop["escalated"] and drop["outcome"] == "objected"
    assert rewrite["decided_by"] == drop["decided_by"] == "human (conductor Test Orchestra)"
    # The hook saw who proposed what and the objection; the report lists each conflict and its decision.
    assert sorted((c.proposer, c.action) for c in ruled) == [("Dropper", "drop table"), ("Rewriter", "rewrite app")]
    conflicts = {c["proposer"]: c for c in report.as_json()["conflicts"]}
    assert set(conflicts) == {"Rewriter", "Dropper"}
    assert conflicts["Rewriter"]["decision"] == "approved" and conflicts["Dropper"]["decision"] == "denied"
    assert conflicts["Dropper"]["why"] == "no table is dropped during a test run"
    assert conflicts["Dropper"]["action"] == "drop table" and conflicts["Dropper"]["section"] == "execution"
    [objection] = conflicts["Dropper"]["objections"]
    assert objection["by"] == "Critic" and objection["kind"] == "strategy" and objection["weight"] == 0.5
    assert "drop table is not what this run is for" in objection["reason"]
    assert conflicts["Rewriter"]["by"] == "conductor Test Orchestra"
    assert "conflicts: the conductor decided 2" in report.summary()
    assert "[execution] conflict: Dropper proposed 'drop table', objected by Critic" in live.getvalue()
    assert not client.intents()["escalations"]


def test_by_default_the_conductor_approves_when_the_evidence_outweighs_the_strategy_objections(start_node, tmp_path):
    node, _ = conflict_node(start_node, dropper_evidence=0.25)
    path = tmp_path / "conflicts.toml"
    path.write_text('name = "Test Orchestra"\n[sections.review]\nagents = ["Critic"]\npattern = "Sequential"\n'
                    '[sections.execution]\nagents = ["Rewriter", "Dropper"]\npattern = "Parallel"\n'
                    '[coordination]\nconflicts = "Conductor has final say"\n')
    result, report = run(node, str(path))
    assert result.returncode == 0, result.stderr
    got = parts(report)
    assert got["Rewriter"]["value"]["decision"]["outcome"] == "approved"
    assert got["Dropper"]["value"]["decision"]["outcome"] == "objected"
    conflicts = {c["proposer"]: c for c in report["conflicts"]}
    assert conflicts["Rewriter"]["why"] == "evidence 1 >= strategy objections 0.5"
    assert conflicts["Dropper"]["why"] == "evidence 0.25 < strategy objections 0.5"
    assert "conflict: Rewriter proposed 'rewrite app'" in result.stderr


def test_when_the_leader_decides_escalations_itself_the_conductor_decides_none(start_node):
    from mesh.orchestra import Conductor, parse_orchestra

    node, client = conflict_node(start_node, node_extra="")
    orchestra = parse_orchestra({"name": "Test Orchestra", "sections": CONFLICT_SECTIONS})
    report = Conductor(orchestra, client, on_conflict=lambda conflict: False).run()
    decision = next(p for p in report.parts if p.agent == "Rewriter").value["decision"]
    assert decision["escalated"] and decision["outcome"] == "approved" and decision["decided_by"] == "leader t"
    assert report.conflicts == [] and "conflicts: the conductor decided none" in report.summary()


@pytest.mark.fast_check
def test_the_conductor_decides_only_its_own_agents_escalations_once_each_and_a_broken_hook_denies():
    from mesh.errors import UnknownEscalation
    from mesh.orchestra.conflicts import ConflictWatcher

    def escalation(iid, proposer, evidence=1.0):
        return {"id": iid, "proposer": proposer, "action": f"act {iid}", "claims": [], "evidence": evidence,
                "objections": [{"by": "Critic", "reason": "no", "kind": "strategy", "weight": 0.5}]}

    class Listing:
        """Stands in for a client: the escalations waiting, and the decisions it was sent."""
        def __init__(self):
            self.waiting = [escalation("a", "Mine"), escalation("b", "Stranger"), escalation("c", "Mine", 0.1),
                            escalation("gone", "Mine")]
            self.sent: list = []

        def intents(self):
            return {"intents": [], "escalations": list(self.waiting)}

        def approve(self, iid, *, by):
            self._decide(iid, True, by)

        def deny(self, iid, *, by):
            self._decide(iid, False, by)

        def _decide(self, iid, approve, by):
            if iid == "gone":
                raise UnknownEscalation("decided already")
            self.sent.append((iid, approve, by))

    def hook(conflict):
        if conflict.id == "c":
            raise ValueError("hook bug")
        return None  # falsy, not a tuple: deny

    mesh = Listing()
    watcher = ConflictWatcher(mesh, "O", {"Mine": "s"}, hook)
    watcher.look()
    watcher.look()  # the decided ones may still be listed for a moment: not decided twice
    assert mesh.sent == [("a", False, "conductor O"), ("c", False, "conductor O")]
    settled = {s.id: s for s in watcher.settled}
    assert set(settled) == {"a", "c", "gone"}  # the stranger's escalation is left alone
    assert "hook raised ValueError: hook bug" in settled["c"].why and settled["c"].decision == "denied"
    assert settled["gone"].decision == "unknown" and "decided it first" in settled["gone"].notes[0]
    # The default rule: evidence against the strategy objections' weight.
    mesh = Listing()
    ConflictWatcher(mesh, "O", {"Mine": "s"}).look()
    assert [(iid, approve) for iid, approve, _ in mesh.sent] == [("a", True), ("c", False)]
