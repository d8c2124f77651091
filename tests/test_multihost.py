"""One mesh across three hosts: Linux network namespaces on a bridge, one node each.

Needs root (CI runs as root); without it these tests skip and say why.
"""

from __future__ import annotations

import json
import subprocess
import pytest

from conftest import TESTS, mesh_command, wait_until
from netns import Hosts, have_netns

ok, why = have_netns()
pytestmark = [pytest.mark.skipif(not ok, reason=why), pytest.mark.timeout(180)]

PORT = 7700


def cli(host, *args: str, timeout: float = 15) -> subprocess.CompletedProcess:
    return host.run([*mesh_command(), *args, "--node", f"tcp://{host.ip}:{PORT}"], capture_output=True, text=True,
                    timeout=timeout)


def status(host) -> dict:
    res = cli(host, "status", "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def member_states(host) -> dict:
    try:
        return {m["name"]: m["state"] for m in status(host)["members"]}
    except (AssertionError, json.JSONDecodeError, subprocess.TimeoutExpired):
        return {}


@pytest.fixture
def three_hosts(tmp_path, mesh_home):
    with Hosts(3) as hosts:
        for i, host in enumerate(hosts.hosts):
            name = "abc"[i]
            spec = tmp_path / f"{name}.toml"
            spec.write_text(
                f'[node]\nname = "{name}"\nlisten = "tcp://{host.ip}:{PORT}"\npath = ["{TESTS}"]\n\n'
                f'[[agents]]\nname = "echo-{name}"\nclass = "actors:Echo"\n\n'
                f'[[agents]]\nname = "relay-{name}"\nclass = "actors:Relay"\n'
            )
            join = [] if i == 0 else ["--join", f"tcp://{hosts[0].ip}:{PORT}"]
            out = open(tmp_path / f"{name}.out", "wb")
            host.popen([*mesh_command(), "up", str(spec), "--insecure", *join], stdout=out, stderr=subprocess.STDOUT)
        for host in hosts.hosts:
            wait_until(lambda h=host: len([s for s in member_states(h).values() if s == "alive"]) == 3, 30,
                       f"three alive members seen from {host.ns}")
        yield hosts
        for host in hosts.hosts:
            cli(host, "down", timeout=30)


def test_an_agent_on_one_host_asks_an_agent_on_another_by_name_and_state_spreads(three_hosts):
    a, b, c = three_hosts.hosts
    # relay-a, an agent on host a, asks echo-b on host b by name: it finds it in the gossiped directory.
    res = cli(a, "ask", "relay-a", json.dumps({"to": "echo-b", "message": {"hello": "from a"}}))
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"hello": "from a"}
    # And a client connected to host c reaches the agent on host a.
    res = cli(c, "ask", "echo-a", '"via c"')
    assert res.returncode == 0 and json.loads(res.stdout) == "via c", res.stderr
    assert cli(a, "state", "set", "user/written-on-a", '{"n": 1}').returncode == 0
    wait_until(lambda: cli(c, "state", "get", "user/written-on-a").stdout.strip() == '{"n": 1}', 10, "the write on a read on c")
    agents = {x["name"]: x["node"] for x in status(c)["agents"]}
    assert {k: v for k, v in agents.items() if k.startswith("echo")} == {"echo-a": "a", "echo-b": "b", "echo-c": "c"}


def test_a_cut_host_is_marked_dead_and_comes_back_alive_with_nothing_lost(three_hosts):
    a, b, c = three_hosts.hosts
    three_hosts.cut(2)
    wait_until(lambda: member_states(a).get("c") == "dead" and member_states(b).get("c") == "dead", 30,
               "a and b to mark c dead")
    # Writes acknowledged on both sides of the cut.
    assert cli(a, "state", "set", "user/during-cut-a", '"from a"').returncode == 0
    assert cli(c, "state", "set", "user/during-cut-c", '"from c"').returncode == 0
    three_hosts.restore(2)
    wait_until(lambda: all(member_states(h).get("c") == "alive" for h in (a, b)), 30, "c alive again on a and b")
    for host in (a, b, c):
        wait_until(lambda h=host: cli(h, "state", "get", "user/during-cut-a").stdout.strip() == '"from a"'
                   and cli(h, "state", "get", "user/during-cut-c").stdout.strip() == '"from c"', 20,
                   f"both writes on {host.ns}")


@pytest.fixture
def leader_hosts(tmp_path, mesh_home):
    """Three hosts; a declares w with three spread replicas, b and c an agent pinned to themselves."""
    with Hosts(3) as hosts:
        for i, host in enumerate(hosts.hosts):
            name = "abc"[i]
            agents = ('[[agents]]\nname = "w"\nclass = "actors:WhoAmI"\nreplicas = 3\n' if i == 0 else
                      f'[[agents]]\nname = "pinned-{name}"\nclass = "actors:WhoAmI"\nnode = "{name}"\n')
            spec = tmp_path / f"{name}.toml"
            spec.write_text(f'[node]\nname = "{name}"\nlisten = "tcp://{host.ip}:{PORT}"\npath = ["{TESTS}"]\n\n{agents}')
            join = [] if i == 0 else ["--join", f"tcp://{hosts[0].ip}:{PORT}"]
            out = open(tmp_path / f"{name}.out", "wb")
            host.popen([*mesh_command(), "up", str(spec), "--insecure", *join], stdout=out, stderr=subprocess.STDOUT)
        yield hosts
        for host in hosts.hosts:
            cli(host, "down", timeout=30)


def quiet_status(host) -> dict | None:
    try:
        return status(host)
    except (AssertionError, json.JSONDecodeError, subprocess.TimeoutExpired):
        return None


def leader_of(hosts) -> tuple[str, int] | None:
    seen = {(s["leader"], s["term"]) if s else None for s in map(quiet_status, hosts)}
    return seen.pop() if len(seen) == 1 and None not in seen and next(iter(seen))[0] else None


def instances(hosts) -> dict[str, list[str]]:
    """Agent processes each host runs itself: name -> [node, ...]."""
    out: dict[str, list[str]] = {}
    for s in filter(None, map(quiet_status, hosts)):
        for a in s["agents"]:
            if not a.get("remote") and a["pid"] and a["state"] in ("running", "starting", "restarting"):
                out.setdefault(a["name"], []).append(s["node"]["name"])
    return out


def once_each(hosts, names: set[str]) -> dict | None:
    got = instances(hosts)
    return got if set(got) == names and all(len(v) == 1 for v in got.values()) else None


def test_an_isolated_leader_steps_down_the_majority_takes_over_and_one_of_everything_remains(leader_hosts):
    hosts = leader_hosts.hosts
    everything = {"w.0", "w.1", "w.2", "pinned-b", "pinned-c"}
    old = wait_until(lambda: leader_of(hosts), 40, "one leader all three agree on")
    wait_until(lambda: once_each(hosts, everything), 40, "every agent running once")
    i = "abc".index(old[0])
    isolated, majority = hosts[i], [h for j, h in enumerate(hosts) if j != i]
    leader_hosts.cut(i)
    # The majority elects a new leader of a newer term.
    new = wait_until(lambda: (lambda ld: ld if ld and ld[0] != old[0] else None)(leader_of(majority)), 20,
                     "the majority to elect a new leader")
    assert new[1] > old[1]
    # The old leader steps down (check-quorum), its lease runs out, and it stops what could move.
    s = wait_until(lambda: (lambda s: s if s and s["election"]["role"] != "leader" and s["election"]["fenced"]
                            else None)(quiet_status(isolated)), 15, "the old leader to step down and fence itself")
    assert s["leader"] in (None, old[0]) or s["term"] >= old[1]
    wait_until(lambda: not any(n == old[0] for name, nodes in instances([isolated]).items()
                               for n in nodes if not name.startswith("pinned")), 10,
               "the isolated node to stop its movable agents")
    issued = quiet_status(isolated)["election"]["decisions_issued"]
    # The majority re-places them: every movable agent runs once on the majority side.
    wanted = everything - {f"pinned-{old[0]}"}
    wait_until(lambda: (lambda got: got if got and all(n != old[0] for v in got.values() for n in v) else None)(
        once_each(majority, wanted)), 30, "the isolated node's agents running on the majority side")
    assert quiet_status(isolated)["election"]["decisions_issued"] == issued  # it decides nothing any more
    leader_hosts.restore(i)
    # One leader again (the majority's, or a later one), and one instance of everything.
    wait_until(lambda: (lambda ld: ld if ld and ld[1] >= new[1] else None)(leader_of(hosts)), 30,
               "one leader after the link returns")
    final = wait_until(lambda: once_each(hosts, everything), 40, "one instance of every agent after the link returns")
    assert final["pinned-b"] == ["b"] and final["pinned-c"] == ["c"]
    back = quiet_status(isolated)
    assert not back["election"]["fenced"]
