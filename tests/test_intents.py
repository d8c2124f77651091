"""Intentions with real processes: contention over one resource never overlaps, objections come
with their reasons, escalations are decided by the leader or by a person from the CLI."""

from __future__ import annotations

import concurrent.futures
import json

import pytest

from conftest import run_cli, wait_until

pytestmark = pytest.mark.timeout(180)


def contenders(journal, replicas: int = 10) -> str:
    return (f'[[agents]]\nname = "c"\nclass = "actors:Contender"\nreplicas = {replicas}\n'
            f'config = {{ journal = "{journal}" }}\n')


OBJECTOR = ('[[agents]]\nname = "critic"\nclass = "actors:Objector"\nnode = "a"\n'
            'config = { rules = { drop-table = { reason = "backups not verified", weight = 2.0 },'
            ' rewrite = { reason = "we agreed on a refactor instead", weight = 0.5, kind = "strategy" } } }\n')


def two_nodes(start_node, agents_a: str, extra_a: str = "", agents_b: str = ""):
    a = start_node(agents_a, name="a", node_extra=extra_a, wait=False)
    wait_until(lambda: a.status(), 15, "a")
    b = start_node(agents_b, name="b", wait=False, args=("--join", a.address))
    wait_until(lambda: all(len([m for m in n.status()["members"] if m["state"] == "alive"]) == 2 for n in (a, b)), 20,
               "two members")
    wait_until(lambda: all(n.status()["leader"] == "a" for n in (a, b)), 10, "a to lead")
    return a, b


def test_ten_agents_on_two_nodes_contend_for_one_resource_a_thousand_times_without_overlap(start_node, tmp_path):
    journal = tmp_path / "holds"
    a, b = two_nodes(start_node, contenders(journal))
    wait_until(lambda: sorted({x["node"] for x in a.status()["agents"] if x["name"].startswith("c.")
                               and x["state"] == "running"}) == ["a", "b"] and
               len([x for x in a.status()["agents"] if x["state"] == "running"]) == 10, 30, "ten contenders on two nodes")
    client = a.client()
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        approved = list(pool.map(lambda i: client.actor(f"c.{i}").ask({"rounds": 100, "claim": "res"}, timeout=150),
                                 range(10)))
    events = sorted((float(t), what, iid) for t, what, iid in (line.split() for line in journal.read_text().splitlines()))
    holding = None
    for _, what, iid in events:
        if what == "approve":
            assert holding is None, f"{iid} approved while {holding} held the resource"
            holding = iid
        else:
            assert holding == iid
            holding = None
    print(f"\n1000 proposals on one resource: {sum(approved)} approved, none overlapping")
    assert sum(approved) == len([e for e in events if e[1] == "approve"]) and sum(approved) >= 20


def test_objections_arrive_with_their_reasons_and_escalations_go_to_the_leader(start_node, tmp_path):
    a, b = two_nodes(start_node, OBJECTOR, agents_b=contenders(tmp_path / "j", 1))
    client = a.client()
    wait_until(lambda: client.control("intent_listeners")["actors"] == ["critic"], 20, "the critic listening")
    ref = client.actor("c")
    d = ref.ask({"propose": "drop-table", "claims": ["db:users"]}, timeout=10)
    assert d["outcome"] == "objected" and d["decided_by"] == "weights"
    assert d["objections"] == [["critic", "backups not verified", 2.0, "finding"]]
    assert any("weigh 2 against evidence 1" in r for r in d["reasons"])
    # With stronger evidence the same intention is approved, the objection overruled but listed.
    d = ref.ask({"propose": "drop-table", "claims": ["db:users"], "evidence": 3.0}, timeout=10)
    assert d["outcome"] == "approved" and d["objections"][0][1] == "backups not verified"
    # A strategy disagreement is escalated, and the leader (a) decides.
    d = ref.ask({"propose": "rewrite", "claims": ["repo:app"]}, timeout=10)
    assert d["escalated"] and d["outcome"] == "approved" and d["decided_by"] == "leader a"
    d = ref.ask({"propose": "rewrite", "claims": ["repo:app"], "evidence": 0.25}, timeout=10)
    assert d["escalated"] and d["outcome"] == "objected" and "0.25 < strategy objections 0.5" in d["reasons"][-1]
    # Without objections: approved by the vote alone.
    d = ref.ask({"propose": "read", "claims": ["repo:app"]}, timeout=10)
    assert d == {"outcome": "approved", "reasons": [], "escalated": False, "decided_by": "vote", "objections": []}


@pytest.fixture
def human_mesh(start_node, tmp_path):
    a = start_node(OBJECTOR + '\n[intents]\nescalate = "human"\nescalation_timeout = "30s"\n', name="a", wait=False)
    wait_until(lambda: a.status(), 15, "a")
    b = start_node(contenders(tmp_path / "j", 1), name="b", wait=False, args=("--join", a.address))
    wait_until(lambda: all(n.status()["leader"] == "a" for n in (a, b)), 20, "a to lead")
    return a, b


def test_mesh_approve_and_deny_decide_escalations(human_mesh):
    a, b = human_mesh
    client = b.client()
    wait_until(lambda: client.control("intent_listeners")["actors"] == ["critic"], 20, "the critic listening")
    ref = client.actor("c")
    for verb, outcome in (("approve", "approved"), ("deny", "objected")):
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(ref.ask, {"propose": "rewrite", "claims": ["repo:app"]}, 40)
            listed = wait_until(lambda: json.loads(run_cli("intents", "--json", "--node", b.address).stdout)["escalations"],
                                20, "the escalation listed")
            (esc,) = listed
            assert esc["proposer"] == "c" and esc["objections"][0]["reason"] == "we agreed on a refactor instead"
            table = run_cli("intents", "--node", b.address).stdout
            assert "ESCALATED" in table and esc["id"] in table
            status = json.loads(run_cli("status", "--json", "--node", a.address).stdout)
            assert [e["id"] for e in status["escalations"]] == [esc["id"]]
            assert "1 escalated" in run_cli("status", "--node", a.address).stdout
            res = run_cli(verb, esc["id"], "--node", b.address)
            assert res.returncode == 0, res.stderr
            d = pending.result(timeout=20)
        assert d["escalated"] and d["outcome"] == outcome and d["decided_by"].startswith("human")
    res = run_cli("approve", "nope", "--node", b.address)
    assert res.returncode == 1 and "no escalation 'nope'" in res.stderr
