"""The orchestra spec: the playbook's YAML key for key in TOML, every bad key named."""

from __future__ import annotations

import pytest

from mesh import SpecError
from mesh.orchestra import load_orchestra, parse_orchestra

pytestmark = pytest.mark.timeout(30)

PLAYBOOK = '''
name = "E2E Test Orchestra"
pattern = "Hierarchical with Event-Driven elements"

[conductor]
role = "Test Orchestration Manager"
decisions = ["Test prioritization", "Resource allocation", "Failure handling"]

[sections.preparation]
agents = ["EnvironmentProvisioner", "DataSeeder", "ConfigValidator"]
pattern = "Sequential"

[sections.discovery]
agents = ["FeatureScout", "RiskAnalyzer", "TestGenerator"]
pattern = "Parallel"

[sections.execution]
agents = ["UITester", "APITester", "IntegrationTester"]
pattern = "Parallel with resource management"
timeout = "2m"
timeouts = { UITester = "30s" }

[sections.analysis]
agents = ["ResultAnalyzer", "PatternDetector", "ReportGenerator"]
pattern = "Sequential"

[coordination]
communication = "Event bus with message queue"
conflicts = "Conductor has final say"

[coordination.resources]
pool = "test-env"
priority = { APITester = 2, UITester = 1 }

[failure_handling]
agent_failure = "Restart once, then skip"
resource_exhaustion = "Queue and wait"
timeout = "Kill and report"
critical_failure = "Stop orchestra, alert humans"
'''


def parse(text: str):
    import tomllib

    return parse_orchestra(tomllib.loads(text), "o.toml")


def test_the_playbooks_orchestra_parses_key_for_key():
    orchestra = parse(PLAYBOOK)
    assert [s.name for s in orchestra.sections] == ["preparation", "discovery", "execution", "analysis"]
    assert [s.pattern for s in orchestra.sections] == ["sequential", "parallel", "parallel with resource management",
                                                       "sequential"]
    execution = orchestra.sections[2]
    assert execution.pool == "test-env" and execution.units == 1
    assert execution.timeout_of("UITester") == 30.0 and execution.timeout_of("APITester") == 120.0
    assert orchestra.priority_of("APITester") == 2 and orchestra.priority_of("IntegrationTester") == 0
    assert orchestra.rule("agent_failure") == "restart once, then skip"
    assert orchestra.rule("critical_failure") == "stop orchestra, alert humans"


def test_the_rules_default_to_the_playbooks_texts():
    orchestra = parse('name = "x"\n[sections.a]\nagents = ["A"]\npattern = "sequential"\n')
    assert dict(orchestra.rules) == {"agent_failure": "restart once, then skip", "resource_exhaustion": "queue and wait",
                                     "timeout": "kill and report", "critical_failure": "stop orchestra, alert humans"}


@pytest.mark.parametrize("change, key", [
    (("Kill and report", "Kill it maybe"), "failure_handling.timeout"),
    (("Restart once, then skip", "Restart twice"), "failure_handling.agent_failure"),
    (('pattern = "Parallel"\n', 'pattern = "Scattered"\n'), "sections.discovery.pattern"),
    (('conflicts = "Conductor has final say"', 'conflicts = "Loudest wins"'), "coordination.conflicts"),
    (('"Failure handling"]', '"Coffee"]'), "conductor.decisions[2]"),
    (("[failure_handling]", "[failure_handling]\nagent_crash = \"skip\""), "failure_handling.agent_crash"),
    (('timeouts = { UITester = "30s" }', 'timeouts = { Nobody = "30s" }'), "sections.execution.timeouts.Nobody"),
    (('timeout = "2m"', 'timeout = "0s"'), "sections.execution.timeout"),
    (('priority = { APITester = 2, UITester = 1 }', 'priority = { Ghost = 2 }'), "coordination.resources.priority"),
    (('pool = "test-env"\n', ''), "sections.execution.pool"),
    (('agents = ["FeatureScout", "RiskAnalyzer", "TestGenerator"]', 'agents = ["FeatureScout", "UITester"]'),
     "sections.execution.agents"),
    (('[sections.analysis]', '[sections.analysis]\nlimit = 2'), "sections.analysis.limit"),
    (('pattern = "Hierarchical with Event-Driven elements"', 'pattern = "Anarchy"'), "pattern"),
])
def test_a_bad_key_or_an_unknown_text_is_refused_naming_the_key(change, key):
    old, new = change
    assert old in PLAYBOOK
    with pytest.raises(SpecError) as caught:
        parse(PLAYBOOK.replace(old, new, 1))
    assert caught.value.key == key and caught.value.file == "o.toml"


def test_a_missing_file_and_bad_toml_are_spec_errors(tmp_path):
    with pytest.raises(SpecError, match="no such file"):
        load_orchestra(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(SpecError) as caught:
        load_orchestra(bad)
    assert caught.value.key == "toml"
