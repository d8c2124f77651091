"""The leader with real processes on loopback: election, placement, failover, rejoin, waiting.

Each node is a real `mesh up`; the leader is SIGKILLed like a crashed machine.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
import zmq

from mesh import wire
from mesh.core.hlc import make as stamp
from mesh.spec import agent_to_wire, parse_spec
from conftest import RunningNode, free_port, mesh_command, run_cli, stop_node, wait_until

pytestmark = pytest.mark.timeout(150)

WORKERS = '[[agents]]\nname = "w"\nclass = "actors:WhoAmI"\nreplicas = {n}\nbackoff = "100ms"\n'
PINNED = '[[agents]]\nname = "pinned-{node}"\nclass = "actors:WhoAmI"\nnode = "{node}"\n'


def quiet(node, default=None):
    try:
        return node.status()
    except Exception:  # a node that is down or busy: the caller polls again
        return default


def agreed_leader(nodes) -> tuple[str, int] | None:
    seen = set()
    for n in nodes:
        st = quiet(n)
        if st is None or st["leader"] is None:
            return None
        seen.add((st["leader"], st["term"]))
    return seen.pop() if len(seen) == 1 else None


def running_instances(nodes) -> dict[str, list[tuple[str, int]]]:
    """Every agent process the nodes run themselves (not what they know of others): name -> [(node, pid)]."""
    out: dict[str, list[tuple[str, int]]] = {}
    for n in nodes:
        st = quiet(n, {"agents": [], "node": {"name": "?"}})
        for a in st["agents"]:
            if not a.get("remote") and a["state"] in ("running", "starting", "restarting") and a["pid"]:
                out.setdefault(a["name"], []).append((st["node"]["name"], a["pid"]))
    return out


def spec_of(name: str, replicas: int) -> str:
    """Node a declares w (replicas spread over the mesh); every other node an agent pinned to itself."""
    return WORKERS.format(n=replicas) if name == "a" else PINNED.format(node=name)


def start_mesh(start_node, n: int, replicas: int):
    names = "abcde"[:n]
    first = start_node(spec_of("a", replicas), name=names[0], wait=False)
    wait_until(lambda: quiet(first), 15, "the first node to answer")
    nodes = [first]
    for name in names[1:]:
        nodes.append(start_node(spec_of(name, replicas), name=name, wait=False, args=("--join", first.address)))
    for node in nodes:
        wait_until(lambda node=node: quiet(node), 15, "a node to answer")
    wait_until(lambda: all(len([m for m in quiet(x, {"members": []})["members"] if m["state"] == "alive"]) == n
                           for x in nodes), 20, f"{n} nodes to meet")
    return nodes


def spread_over(instances: dict | None, n: int) -> dict | None:
    """``instances`` if the replicas of w run on n different nodes."""
    if instances and len({v[0][0] for r, v in instances.items() if r.startswith("w.")}) == n:
        return instances
    return None


def all_running(nodes, expected: set[str]) -> dict | None:
    inst = running_instances(nodes)
    if set(inst) != expected or any(len(v) != 1 for v in inst.values()):
        return None
    st = quiet(nodes[0])
    if st is None or any(a["state"] != "running" for a in st["agents"] if a["name"] in expected):
        return None
    return inst


@pytest.mark.parametrize("n", [3, 5])
def test_the_leader_is_sigkilled_a_new_one_takes_over_and_its_agents_run_elsewhere_then_it_rejoins(start_node, n):
    nodes = start_mesh(start_node, n, replicas=n)
    expected = {f"w.{i}" for i in range(n)} | {f"pinned-{x}" for x in "abcde"[1:n]}
    lead = wait_until(lambda: agreed_leader(nodes), 20, "one leader all agree on")
    # Spread: once settled, the n replicas of w are on n different nodes.
    before = wait_until(lambda: spread_over(all_running(nodes, expected), n), 30, "every agent running once, spread")
    # status --json carries leader, term and each agent's node; the table shows the leader.
    res = run_cli("status", "--json", "--node", nodes[1].address)
    st = json.loads(res.stdout)
    assert st["leader"] == lead[0] and st["term"] == lead[1]
    assert {a["name"]: a["node"] for a in st["agents"] if a["name"] in before} == {r: v[0][0] for r, v in before.items()}
    table = run_cli("status", "--node", nodes[1].address).stdout
    assert f"leader {lead[0]} (term {lead[1]})" in table

    victim = next(x for x in nodes if quiet(x)["node"]["name"] == lead[0])
    survivors = [x for x in nodes if x is not victim]
    lost = {r for r, [(where, _)] in before.items() if where == lead[0]}
    assert lost  # the leader ran a replica of w
    victim.proc.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    victim.proc.wait()
    new = wait_until(lambda: (lambda ld: ld if ld and ld[0] != lead[0] else None)(agreed_leader(survivors)), 30,
                     "a new leader")
    assert new[1] > lead[1]
    survivors_expected = expected
    after = wait_until(lambda: all_running(survivors, survivors_expected - {f"pinned-{lead[0]}"}), 30,
                       "the dead leader's agents running again elsewhere")
    seen_running = time.monotonic() - killed_at
    for r in lost:
        (where, pid), = after[r]
        assert where != lead[0]
        assert json.loads(run_cli("ask", r, "{}", "--node", survivors[0].address).stdout)["pid"] == pid
        # Its recovery time: from its node last being heard (before the kill) to answering on the new one.
        host = next(x for x in survivors if quiet(x, {}).get("node", {}).get("name") == where)
        metrics = next(a["metrics"] for a in host.status()["agents"] if a["name"] == r)
        assert metrics["recovery_s"] is not None and 0 < metrics["recovery_s"] <= seen_running + 5, metrics
        assert metrics["failures"] == 0  # its node died, the agent did not fail
    # What did not run on the dead node stayed where it was: no reshuffle. (The same process, unless
    # its node's lease lapsed while the election ran on a starved machine: the agent's watchdog then
    # stops it and its node starts it again in place, and says so.)
    for r, [(where, pid)] in before.items():
        if where != lead[0]:
            [(now_where, now_pid)] = after[r]
            assert now_where == where, f"{r} moved from {where} to {now_where}"
            if now_pid != pid:
                host = next(x for x in survivors if quiet(x, {}).get("node", {}).get("name") == where)
                assert f"{r} stopped itself: this node did not renew its lease in time" in host.log(), \
                    f"{r} restarted on {where} (pid {pid} -> {now_pid}) with no lease lapse logged"

    # The old leader comes back (same name, port and disk): it rejoins as a follower.
    port = int(victim.address.rsplit(":", 1)[1])
    back = start_node(spec_of(lead[0], n), name=lead[0], wait=False, port=port, args=("--join", survivors[0].address))
    everyone = survivors + [back]
    wait_until(lambda: agreed_leader(everyone) == new, 20, "the returning node to follow the new leader")
    wanted = expected
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:  # watch it settle: never two instances of anything, same leader
        inst = running_instances(everyone)
        assert all(len(v) == 1 for v in inst.values()), inst
        assert agreed_leader(everyone) in (new, None)
        time.sleep(0.1)
    final = wait_until(lambda: spread_over(all_running(everyone, wanted), n), 30,
                       "every agent running once, w spread over all nodes again")
    for r, [(where, pid)] in after.items():
        if r.startswith("pinned"):
            assert final[r] == [(where, pid)]  # what needed no move did not move
    assert agreed_leader(everyone) == new


def test_a_spec_waits_for_a_leader_and_says_so(start_node, tmp_path):
    # A node told to join a mesh that is not there does not lead a mesh of one: its agents wait.
    node = start_node(WORKERS.format(n=1), name="lonely", wait=False, args=("--join", "tcp://127.0.0.1:9"))
    st = wait_until(lambda: quiet(node), 15, "the node to answer")
    time.sleep(0.5)  # several election timeouts
    st = node.status()
    assert st["leader"] is None
    (w,) = [a for a in st["agents"] if a["name"] == "w"]
    assert w["state"] == "waiting" and w["node"] is None
    assert "no leader" in w["reason"] and "not joined" in w["reason"]
    table = run_cli("status", "--node", node.address).stdout
    assert "no leader" in table


def test_a_single_node_leads_itself_and_persists_its_term_before_answering(start_node, mesh_home):
    node = start_node(WORKERS.format(n=2), name="solo")
    st = node.status()
    assert st["leader"] == "solo" and st["term"] >= 1
    assert {a["name"]: a["node"] for a in st["agents"]} == {"w.0": "solo", "w.1": "solo"}
    (record,) = list(mesh_home.glob("nodes/solo-*/election.json"))
    saved = json.loads(record.read_text())
    assert saved["term"] == st["term"] and saved["voted_for"] == "solo" and saved["voters"] == ["solo"]


def test_graceful_down_of_the_leader_hands_over_and_withdraws_its_own_agents(start_node):
    nodes = start_mesh(start_node, 3, replicas=3)
    lead = wait_until(lambda: agreed_leader(nodes), 20, "one leader")
    expected = {"w.0", "w.1", "w.2", "pinned-b", "pinned-c"}
    wait_until(lambda: all_running(nodes, expected), 30, "every agent running once")
    a = nodes[0]  # declares w
    others = nodes[1:]
    if lead[0] != "a":
        leader_node = next(x for x in nodes if quiet(x)["node"]["name"] == lead[0])
        rest = [x for x in nodes if x is not leader_node]
        started = time.monotonic()
        assert run_cli("down", "--node", leader_node.address).returncode == 0
        new = wait_until(lambda: (lambda ld: ld if ld and ld[0] != lead[0] else None)(agreed_leader(rest)), 30,
                         "the hand-over")
        handover = time.monotonic() - started
        assert handover < 5
        # The w replica it ran moves; its pinned agent goes with it.
        wait_until(lambda: all_running(rest, expected - {f"pinned-{lead[0]}"}), 30, "w placed on the other two")
        assert new[1] > lead[1]
    else:
        assert run_cli("down", "--node", a.address).returncode == 0
        # a declared w: w leaves with a; the others elect a leader among themselves.
        wait_until(lambda: agreed_leader(others) and not any(r.startswith("w") for r in running_instances(others)), 20,
                   "w withdrawn with its node")


def test_mesh_up_join_without_a_spec_adds_a_worker_the_leader_places_agents_on(start_node, tmp_path):
    a = start_node(WORKERS.format(n=2), name="a")
    address = f"tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "worker.out"
    with open(out, "wb") as f:
        proc = subprocess.Popen([*mesh_command(), "up", "--join", a.address, "--listen", address, "--name", "worker"],
                                stdout=f, stderr=subprocess.STDOUT)
    worker = RunningNode(proc, address, None, out)
    try:
        # The demo's agents stay home: the worker declares nothing, and w spreads onto it.
        placed = wait_until(lambda: (lambda inst: inst if sorted(v[0][0] for v in inst.values()) == ["a", "worker"]
                                     else None)(running_instances([a, worker])), 30, "w spread onto the worker")
        assert set(placed) == {"w.0", "w.1"}
        assert all(x["name"].startswith("w.") for x in worker.status()["agents"])
    finally:
        assert stop_node(worker) == []


def test_a_decision_from_an_older_term_is_refused_logged_and_counted(start_node):
    """Fencing, end to end: a forged assignment of term 0 reaches a node whose term is newer
    through gossip. The node must not run what it says, and must say that it refused it."""
    node = start_node(WORKERS.format(n=1), name="t")
    # Once the node has followed a leader for a second, what it sees of older terms is a refusal, not history.
    st = wait_until(lambda: (lambda s: s if s["term"] >= 1 and s["election"]["settled"] else None)(node.status()), 10,
                    "a settled term")
    agent = parse_spec({"agents": [{"name": "forged", "class": "actors:WhoAmI"}]})
    decision = {"term": 0, "leader": "ghost", "seq": 99, "unplaced": {}, "conflicts": [],
                "replicas": {"forged": {"node": "t", "group": "forged", "home": "ghost",
                                        "spec": agent_to_wire(agent.agents[0], agent)}}}
    entry = ["$assign/0", decision, stamp(int(time.time() * 1000)), "ghost", 1, False]
    push = {"t": "push", "from": "ghost", "delta": [["ghost@1", 0, 1, [entry]]]}
    sock = zmq.Context.instance().socket(zmq.DEALER)
    try:
        sock.connect(node.address)
        # A digest makes the ghost a member (deltas from unknown origins are ignored); then its decision.
        introduce = {"t": "syn", "from": "ghost", "digest": {"ghost@1": [1, 1, "", False]}}
        sock.send(wire.encode(int(wire.Kind.EVENT), 1, 0, "ghost", "$gossip", introduce))
        sock.send(wire.encode(int(wire.Kind.EVENT), 2, 0, "ghost", "$gossip", push))
        refused = wait_until(lambda: (lambda s: s if s["election"]["stale_decisions"] >= 1 else None)(node.status()),
                             10, "the stale decision to be refused")
    finally:
        sock.close(0)
    assert refused["term"] == st["term"]
    assert "forged" not in {a["name"] for a in refused["agents"] if not a.get("remote")}
    wait_until(lambda: "refused a decision of term 0 (seq 99) from ghost" in node.log(), 5, "the refusal in the log")
    assert node.agent("w")["state"] == "running"  # and the node keeps serving its real assignment


def test_mesh_kill_stops_every_agent_on_every_node_and_release_brings_them_back(start_node):
    nodes = start_mesh(start_node, 3, replicas=3)
    expected = {"w.0", "w.1", "w.2", "pinned-b", "pinned-c"}
    before = wait_until(lambda: all_running(nodes, expected), 30, "every agent running once")
    pids = [pid for v in before.values() for _, pid in v]
    res = run_cli("kill", "--node", nodes[2].address)
    assert res.returncode == 0 and "kill switch pulled" in res.stdout
    pulled = time.monotonic()
    wait_until(lambda: all(not psutil_alive(p) for p in pids), 5, "every agent process gone")
    took = time.monotonic() - pulled
    assert took < 3.0, took
    time.sleep(1.0)  # restart policies and the leader must not bring anything back
    assert running_instances(nodes) == {}
    for n in nodes:
        st = n.status()
        assert st["kill_switch"]["pulled"] is True and "mesh kill" in st["kill_switch"]["by"]
        assert all(a["state"] != "running" for a in st["agents"])
    assert "KILL SWITCH PULLED" in run_cli("status", "--node", nodes[0].address).stdout
    assert run_cli("kill", "--release", "--node", nodes[0].address).returncode == 0
    after = wait_until(lambda: all_running(nodes, expected), 30, "every agent running again")
    assert not set(pid for v in after.values() for _, pid in v) & set(pids)


def psutil_alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
