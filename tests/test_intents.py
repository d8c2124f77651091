"""Intentions with real processes: contention over one resource never overlaps, objections come
with their reasons, escalations are decided by the leader or by a person from the CLI."""

from __future__ import annotations

import concurrent.futures
import json
import os
import time

import pytest
import zmq

from mesh import wire

from conftest import run_cli, wait_until

pytestmark = pytest.mark.timeout(180)


def contenders(journal, replicas: int = 10) -> str:
    return (f'[[agents]]\nname = "c"\nclass = "actors:Contender"\nreplicas = {replicas}\n'
            f'config = {{ journal = "{journal}" }}\n')


OBJECTOR = ('[[agents]]\nname = "critic"\nclass = "actors:Objector"\nnode = "a"\n'
            'config = { rules = { drop-table = { reason = "backups not verified", weight = 2.0 },'
            ' rewrite = { reason = "we agreed on a refactor instead", weight = 0.5, kind = "strategy" } } }\n')


# How long a proposer waits for objections (and the vote). A decision comes as soon as every listener
# has answered, so a generous window costs nothing on a quiet machine, and on a loaded one the critic's
# objection still counts (with the default 0.3 s it could arrive too late, and the intention passed).
WINDOW = 10.0


def running(node, name: str, timeout: float = 30.0) -> None:
    wait_until(lambda: any(x["name"] == name and x["state"] == "running" for x in node.status()["agents"]), timeout,
               f"{name} running")


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
    running(a, "c")
    ref = client.actor("c")
    d = ref.ask({"propose": "drop-table", "claims": ["db:users"], "window": WINDOW}, timeout=30)
    assert d["outcome"] == "objected" and d["decided_by"] == "weights"
    assert d["objections"] == [["critic", "backups not verified", 2.0, "finding"]]
    assert any("weigh 2 against evidence 1" in r for r in d["reasons"])
    # With stronger evidence the same intention is approved, the objection overruled but listed.
    d = ref.ask({"propose": "drop-table", "claims": ["db:users"], "evidence": 3.0, "window": WINDOW}, timeout=30)
    assert d["outcome"] == "approved" and d["objections"][0][1] == "backups not verified"
    # A strategy disagreement is escalated, and the leader (a) decides.
    d = ref.ask({"propose": "rewrite", "claims": ["repo:app"], "window": WINDOW}, timeout=30)
    assert d["escalated"] and d["outcome"] == "approved" and d["decided_by"] == "leader a"
    d = ref.ask({"propose": "rewrite", "claims": ["repo:app"], "evidence": 0.25, "window": WINDOW}, timeout=30)
    assert d["escalated"] and d["outcome"] == "objected" and "0.25 < strategy objections 0.5" in d["reasons"][-1]
    # Without objections: approved by the vote alone.
    d = ref.ask({"propose": "read", "claims": ["repo:app"], "window": WINDOW}, timeout=30)
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
    running(b, "c")
    ref = client.actor("c")
    for verb, outcome in (("approve", "approved"), ("deny", "objected")):
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(ref.ask, {"propose": "rewrite", "claims": ["repo:app"], "window": WINDOW}, 60)
            listed = wait_until(lambda: json.loads(run_cli("intents", "--json", "--node", b.address).stdout)["escalations"],
                                40, "the escalation listed")
            (esc,) = listed
            assert esc["proposer"] == "c" and esc["objections"][0]["reason"] == "we agreed on a refactor instead"
            table = run_cli("intents", "--node", b.address).stdout
            assert "ESCALATED" in table and esc["id"] in table
            status = json.loads(run_cli("status", "--json", "--node", a.address).stdout)
            assert [e["id"] for e in status["escalations"]] == [esc["id"]]
            assert "1 escalated" in run_cli("status", "--node", a.address).stdout
            res = run_cli(verb, esc["id"], "--node", b.address)
            assert res.returncode == 0, res.stderr
            d = pending.result(timeout=40)
        assert d["escalated"] and d["outcome"] == outcome and d["decided_by"].startswith("human")
    res = run_cli("approve", "nope", "--node", b.address)
    assert res.returncode == 1 and "UnknownEscalation: no escalation 'nope'" in res.stderr


# --------------------------------------------------------------------------- malformed proposals


def origin_entries(node_address: str, timeout: float = 10.0) -> dict[str, bool]:
    """Every key the node at ``node_address`` wrote to the shared state and still keeps, tombstones
    included, as a gossip peer receives them (key -> whether it is a tombstone). The state ops show
    live keys only; a peer is sent the deleted ones too."""
    ctx = zmq.Context.instance()
    inbox, out = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    for sock in (inbox, out):
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, 64 * 1024 * 1024)
    try:
        address = f"tcp://127.0.0.1:{inbox.bind_to_random_port('tcp://127.0.0.1')}"
        out.connect(node_address)
        oid = f"peek-{os.getpid()}@{time.time_ns() // 1000}"
        syn = wire.encode(int(wire.Kind.EVENT), 1, 0, oid.split("@")[0], "$gossip",
                          {"t": "syn", "from": oid.split("@")[0], "digest": {oid: [1, 0, address, False]}})
        found: dict[str, bool] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out.send(syn)  # again until answered: the node drops what it sends before it is connected to us
            if not inbox.poll(200):
                continue
            frames = inbox.recv_multipart()
            for env in wire.decode(frames[-1], 64 * 1024 * 1024):
                body = env[6]
                if isinstance(body, dict) and body.get("t") == "ack":
                    for origin, _base, _upto, entries in body.get("delta") or []:
                        if origin.startswith(body.get("from", "?") + "@"):
                            found.update({e[0]: e[5] for e in entries})
                    out.send(wire.encode(int(wire.Kind.EVENT), 2, 0, oid.split("@")[0], "$gossip",
                                         {"t": "syn", "from": oid.split("@")[0], "digest": {oid: [2, 0, address, True]},
                                          "left": True}))
                    return found
        raise AssertionError(f"no gossip answer from {node_address} within {timeout} s")
    finally:
        inbox.close()
        out.close()


MALFORMED = [  # (fields of an intent_propose, what the error must name)
    ({"id": "x" * 120_000}, "intention id"),  # with its listing, within what the shared state takes
    ({"id": 5}, "intention id"),
    ({"claims": "db"}, "claims"),
    ({"claims": []}, "claims"),
    ({"claims": ["c" * 1000]}, "claims"),
    ({"claims": [f"c{i}" for i in range(1000)]}, "claims"),
    ({"claims": {"db": 1}}, "claims"),
    ({"priority": "high"}, "priority"),
    ({"window": float("nan")}, "window"),
    ({"window": 1e9}, "window"),
    ({"hold": 0}, "hold"),
    ({"hold": 10 ** 12}, "hold"),
    ({"proposer": ["p"] * 1000}, "proposer"),
    ({"action": {b"bytes key": 1}}, "action"),
    ({"trace": 5}, "trace"),  # the proposer's traceparent (mesh.runtime.tracing): a short string or nothing
    ({"trace": "t" * 200}, "trace"),
]


@pytest.mark.timeout(90)
def test_a_malformed_proposal_is_refused_with_its_reason_and_leaves_nothing_in_the_shared_state(start_node):
    import mesh

    node = start_node(name="a")
    client = node.client()
    wait_until(lambda: node.status()["leader"] == "a", 20, "a to lead")
    before = origin_entries(node.address)

    for i, (fields, named) in enumerate(MALFORMED):
        request = {"id": f"bad-{i}", "claims": ["db"], "priority": 0, "window": 0.5, "hold": 5.0, "proposer": "p",
                   "action": "x", **fields}
        with pytest.raises(mesh.WireError) as refused:
            client.control("intent_propose", 10, **request)
        message = str(refused.value)
        assert "bad intention" in message and named in message and len(message) < 400, (fields.keys(), message)

    assert client.control("intents")["intents"] == []
    after = origin_entries(node.address)
    # Placement bookkeeping ($assign/ from the new leader, $acted/ from its follower) may land between the
    # two looks: a node with no agents writes it too. What a proposal would write is anything else.
    written = sorted(k[:60] for k in after.keys() - before.keys() if not k.startswith(("$assign/", "$acted/")))
    assert written == [], f"refused proposals wrote {written} to the shared state"
    # A good proposal still goes through, and its listing is small whatever it claims.
    claims = [f"{i:03d}" + "c" * 400 for i in range(256)]
    answer = client.control("intent_propose", 10, id="good", claims=claims, priority=0, window=0.5, hold=5.0,
                            proposer="p", action="x" * 100_000)
    assert answer["outcome"] == "approved", answer
    (listed,) = client.control("intents")["intents"]
    assert listed["claims_count"] == 256 and len(json.dumps(listed)) < 5000
    client.control("intent_done", id="good")
    assert client.control("intents")["intents"] == []


@pytest.mark.timeout(120)
def test_a_node_keeps_at_most_a_bounded_number_of_intentions_and_refuses_more_with_the_reason(start_node):
    from mesh.errors import from_wire
    from mesh.runtime.intents import MAX_KEPT

    node = start_node(name="a")
    wait_until(lambda: node.status()["leader"] == "a", 20, "a to lead")
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(node.address)
    total = MAX_KEPT + 20
    try:
        for i in range(total):  # all at once: each is kept (pending, then held for a minute)
            sock.send(wire.encode(int(wire.Kind.CONTROL), i + 1, 0, "flooder", "$node",
                                  {"op": "intent_propose", "id": f"i{i}", "claims": [f"r{i}"], "priority": 0,
                                   "window": 10.0, "hold": 60.0, "proposer": "p", "action": "x"}))
        answers: dict[int, object] = {}
        deadline = time.monotonic() + 90
        while len(answers) < total and time.monotonic() < deadline:
            if sock.poll(1000):
                env = wire.decode_one(sock.recv())
                answers[env[3]] = env[6] if env[1] == int(wire.Kind.REPLY) else from_wire(env[6])
    finally:
        sock.close()
    assert len(answers) == total, f"{len(answers)} of {total} answered"
    approved = [a for a in answers.values() if isinstance(a, dict) and a.get("outcome") == "approved"]
    refused = [a for a in answers.values() if isinstance(a, Exception)]
    assert len(approved) == MAX_KEPT and len(refused) == 20, (len(approved), refused[:1])
    assert all(f"keeps {MAX_KEPT} intentions already" in str(e) for e in refused), refused[0]
    assert len(node.client().control("intents")["intents"]) == MAX_KEPT


# -- contention: somebody proceeds (issue 13) ----------------------------------------------------


def overlaps(journal) -> list[str]:
    """Approved holds (from the contenders' journals) that began before the previous one ended."""
    events = sorted((float(t), what, iid) for t, what, iid in (line.split() for line in journal.read_text().splitlines()))
    found, holding = [], None
    for _, what, iid in events:
        if what == "approve":
            if holding is not None:
                found.append(f"{iid} approved while {holding} held the claim")
            holding = iid
        elif holding == iid:
            holding = None
    return found


def five_contenders(start_node, journal):
    a, b = two_nodes(start_node, contenders(journal, 5))
    wait_until(lambda: sorted({x["node"] for x in a.status()["agents"] if x["name"].startswith("c.")
                               and x["state"] == "running"}) == ["a", "b"] and
               len([x for x in a.status()["agents"] if x["state"] == "running"]) == 5, 30, "five contenders on two nodes")
    return a, b


@pytest.mark.parametrize("wait,least", [(None, 30), (2.0, 150)], ids=["at-once", "wait-2s"])
def test_five_agents_on_two_voter_nodes_contending_for_one_claim_get_it_in_turn(start_node, tmp_path, wait, least):
    """The issue's user program: 5 agents, 40 proposals each on one claim, window 0.1 s, 2 ms holds,
    no back-off. Without waiting at least 30 of 200 are approved (11 before the fix); waiting up to
    2 s in line, at least 150; never two holds at once."""
    journal = tmp_path / "holds"
    a, b = five_contenders(start_node, journal)
    client = a.client()
    ask = {"rounds": 40, "claim": "printer", "window": 0.1, "hold": 0.002, "backoff": 0, "wait": wait}
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        approved = list(pool.map(lambda i: client.actor(f"c.{i}").ask(ask, timeout=150), range(5)))
    assert overlaps(journal) == []
    if os.environ.get("MESH_WHY"):
        print(open(str(journal) + ".why").read())
    print(f"\n200 proposals on one claim (wait={wait}): {sum(approved)} approved {approved}")
    assert sum(approved) >= least, f"only {sum(approved)} of 200 approved: {approved}"
