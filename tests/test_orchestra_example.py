"""The shipped Test Orchestra (examples/orchestra/, nodes/orchestra.toml, nodes/orchestra-run.toml)
as a user runs it: `mesh up nodes/orchestra.toml`, then `mesh run nodes/orchestra-run.toml`; its
agents test the sample project with real pytest and find its bug."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import TESTS, RunningNode, free_port, mesh_command, run_cli, stop_node, wait_until, _pings

ROOT = TESTS.parent
pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def orchestra_node(tmp_path, mesh_home):
    address = f"tcp://127.0.0.1:{free_port()}"
    output = tmp_path / "node.out"
    with open(output, "wb") as out:
        proc = subprocess.Popen([*mesh_command(), "up", "nodes/orchestra.toml", "--listen", address], cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT)
    node = RunningNode(proc, address, ROOT / "nodes/orchestra.toml", output)
    try:
        wait_until(lambda: proc.poll() is not None or _pings(address), 30, "the orchestra's node")
        assert proc.poll() is None, node.log()
        node.wait_running(timeout=60)
        yield node
    finally:
        leftovers = stop_node(node)
        assert not leftovers, f"processes outlived their node: {leftovers}"


def test_the_shipped_orchestra_tests_the_sample_project_and_finds_its_bug(orchestra_node):
    result = run_cli("run", "nodes/orchestra-run.toml", "--node", orchestra_node.address, "--json", timeout=150)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "ok" and report["orchestra"] == "E2E Test Orchestra"
    answers = {p["agent"]: p["value"] for s in report["sections"] for p in s["agents"]}
    assert len(answers) == 12
    # Real pytest ran the tests derived from the examples: one kind per tester, one failure (calc.div).
    assert {answers[t]["kind"] for t in ("UITester", "APITester", "IntegrationTester")} == {"ui", "api", "integration"}
    totals = answers["ResultAnalyzer"]
    assert totals["tests"] == answers["TestGenerator"]["count"] > 10 and totals["failed"] == 1
    assert answers["APITester"]["failures"][0]["test"] == "test_calc.test_div_2"
    assert answers["PatternDetector"]["patterns"] == [{"function": "calc.div", "failures": 1, "risk": 1}]
    written = Path(answers["ReportGenerator"]["path"])
    try:
        assert "calc.div failed 1 example(s)" in written.read_text() == answers["ReportGenerator"]["report"]
    finally:
        written.unlink()
    # Two test environments for three testers: the lowest in priority waited in line for one.
    waits = {w["agent"]: w["waited"] for w in report["waits"]}
    assert waits["UITester"] > 0.5 and max(waits, key=waits.get) == "UITester"


def test_the_summary_shows_sections_parts_and_the_reports_line(orchestra_node):
    result = run_cli("run", "nodes/orchestra-run.toml", "--node", orchestra_node.address, timeout=150)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "[execution] begins" in out and "E2E Test Orchestra: OK" in out
    assert "analysis (sequential): ok" in out and "1 failed. Report:" in out
    Path(out.split("Report: ")[1].split()[0]).unlink()
