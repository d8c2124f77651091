"""The Test Orchestra across three hosts (network namespaces, one node each): the shipped example's
agents spread over the hosts, run from a fourth process with `mesh run`; then the failure rules
act on agents of other hosts (a kill and a restart go to the node that runs the agent).

Needs root (CI runs as root); without it these tests skip and say why. The namespaces and every
process in them are removed when the test ends, and when its process is killed (tests/netns.py)."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import TESTS, mesh_command, wait_until
from netns import Hosts, have_netns

ok, why = have_netns()
pytestmark = [pytest.mark.skipif(not ok, reason=why), pytest.mark.timeout(240)]

ROOT = TESTS.parent
PORT = 7700
EXAMPLE = "examples.orchestra.agents"
# Where each agent runs: the sections cross the hosts (preparation on a, discovery on b, execution on c).
PLACES = {
    "a": ["EnvironmentProvisioner", "DataSeeder", "ConfigValidator", "ResultAnalyzer"],
    "b": ["FeatureScout", "RiskAnalyzer", "TestGenerator", "PatternDetector"],
    "c": ["UITester", "APITester", "IntegrationTester", "ReportGenerator"],
}
FAULTS = {"b": ("Crasher", {"crash": 2}), "c": ("Hanger", {"hang": True})}


def cli(host, *args: str, timeout: float = 15) -> subprocess.CompletedProcess:
    return host.run([*mesh_command(), *args, "--node", f"tcp://{host.ip}:{PORT}"], capture_output=True, text=True,
                    timeout=timeout, cwd=ROOT)


def running(host) -> set[str]:
    res = cli(host, "status", "--json")
    if res.returncode != 0:
        return set()
    return {a["name"] for a in json.loads(res.stdout)["agents"] if a["state"] == "running"}


@pytest.fixture
def orchestra_hosts(tmp_path, mesh_home):
    with Hosts(3) as hosts:
        for i, host in enumerate(hosts.hosts):
            name = "abc"[i]
            tables = [f'[[agents]]\nname = "{agent}"\nclass = "{EXAMPLE}:{agent}"\nnode = "{name}"\n'
                      for agent in PLACES[name]]
            if name in FAULTS:
                agent, config = FAULTS[name]
                if "crash" in config:
                    config = {**config, "counter": str(tmp_path / f"{agent}.count")}
                options = "".join(f"{k} = {json.dumps(v)}\n" for k, v in config.items())
                tables.append(f'[[agents]]\nname = "{agent}"\nclass = "orchestra_actors:Step"\nnode = "{name}"\n'
                              f'[agents.config]\n{options}')
            spec = tmp_path / f"{name}.toml"
            spec.write_text(f'[node]\nname = "{name}"\nlisten = "tcp://{host.ip}:{PORT}"\npath = ["{ROOT}", "{TESTS}"]\n\n'
                            '[pools.test-env]\nsize = 2\nlease = "30s"\n\n' + "\n".join(tables))
            join = [] if i == 0 else ["--join", f"tcp://{hosts[0].ip}:{PORT}"]
            out = open(tmp_path / f"{name}.out", "wb")
            host.popen([*mesh_command(), "up", str(spec), "--insecure", *join], stdout=out, stderr=subprocess.STDOUT)
        everything = {agent for agents in PLACES.values() for agent in agents} | {a for a, _ in FAULTS.values()}
        wait_until(lambda: running(hosts[0]) >= everything, 90, "every agent of the three hosts running, seen from a")
        yield hosts
        for host in hosts.hosts:
            cli(host, "down", timeout=30)


def test_the_test_orchestra_runs_across_three_hosts_and_its_rules_act_on_other_hosts(orchestra_hosts, tmp_path):
    a, b, c = orchestra_hosts.hosts
    res = cli(a, "run", "nodes/orchestra-run.toml", "--json", timeout=180)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["status"] == "ok"
    got = {p["agent"]: p for s in report["sections"] for p in s["agents"]}
    assert {agent: p["node"] for agent, p in got.items()} == {
        agent: node for node, agents in PLACES.items() for agent in agents}
    # The work crossed the hosts: tests derived on b ran with real pytest on c, and were analysed on a.
    assert got["ResultAnalyzer"]["value"]["failed"] == 1
    assert got["PatternDetector"]["value"]["patterns"][0]["function"] == "calc.div"
    assert "[execution] APITester on c: asked" in res.stderr

    # A crash on b (twice: restarted once from a, then skipped) and a hang on c (killed from a).
    faults = tmp_path / "faults.toml"
    faults.write_text('name = "Faults"\n[sections.trouble]\nagents = ["Crasher", "Hanger"]\npattern = "Parallel"\n'
                      'timeout = "20s"\ntimeouts = { Hanger = "2s" }\n'
                      '[sections.after]\nagents = ["DataSeeder"]\npattern = "Sequential"\n')
    res = cli(a, "run", str(faults), "--json", timeout=120)
    assert res.returncode == 1, res.stderr
    report = json.loads(res.stdout)
    got = {p["agent"]: p for s in report["sections"] for p in s["agents"]}
    assert got["Crasher"]["status"] == "skipped" and got["Crasher"]["restarts"] == 1 and got["Crasher"]["node"] == "b"
    [kill] = report["kills"]
    assert kill["agent"] == "Hanger" and kill["node"] == "c" and kill["timeout"] == 2.0 and kill["state"] == "stopped"
    assert kill["fresh_pid"] not in (None, kill["pid"])
    assert got["DataSeeder"]["status"] == "ok"  # the orchestra went on
    wait_until(lambda: "Hanger" in running(c), 30, "a fresh Hanger on c")
