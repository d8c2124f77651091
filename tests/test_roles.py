"""Who may do what (issue 15): each trusted key has a role (operator, node, agent, client) that the gate
tells the node; operators alone stop, kill and decide, clients ask and write user state, only node
keys gossip, elect and vote, and a node key is the name it was issued for, whatever it claims."""

from __future__ import annotations

import time

import pytest
import zmq

import mesh
from conftest import env_with, run_cli, wait_until
from mesh import wire
from mesh.core.hlc import make as stamp
from mesh.runtime.keys import add_key, init_keys, load_keys, role_of, voter_of
from mesh.runtime.sockets import connect_curve

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def keyed(tmp_path, start_node):
    """Node ``a`` with keys and an echo agent; ``b`` is another node's key, ``alice`` an operator's,
    ``carol`` a client's."""
    k = tmp_path / "keys"
    init_keys(k, ["a", "b"], operators=["alice"], clients=["carol"])
    a = start_node('[[agents]]\nname = "echo"\nclass = "actors:Echo"\n', name="a", node_extra=f'keys = "{k}"',
                   wait=False)
    alice = k / "private" / "alice.key_secret"
    wait_until(lambda: _answers(a.address, alice), 20, "node a to answer alice")
    a.client(keys=alice)  # what a.status() uses
    a.wait_running("echo")
    return k, a


def _answers(address: str, keys) -> bool:
    try:
        with mesh.connect(address, connect_timeout=0.5, keys=keys):
            return True
    except mesh.NodeUnavailable:
        return False


def _key(k, name: str):
    return k / "private" / f"{name}.key_secret"


def _raw_dealer(address: str, cert) -> zmq.Socket:
    """A DEALER speaking CURVE with ``cert``'s keypair: sends whatever a test forges."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    connect_curve(sock, load_keys(cert))
    sock.setsockopt(zmq.LINGER, 1000)
    sock.connect(address)
    return sock


def _gossip(sock: zmq.Socket, claimed: str, entries: list[tuple[str, object]]) -> None:
    """A syn and a push claiming to come from member ``claimed``, its own origin holding ``entries``."""
    origin = f"{claimed}@1"
    now = stamp(int(time.time() * 1000))
    delta = [[origin, 0, len(entries), [[key, value, now, claimed, i + 1, False] for i, (key, value) in enumerate(entries)]]]
    for i, body in enumerate(({"t": "syn", "from": claimed, "digest": {origin: [1, len(entries), "", False]}},
                              {"t": "push", "from": claimed, "delta": delta})):
        sock.send(wire.encode(int(wire.Kind.EVENT), i + 1, 0, claimed, "$gossip", body))


def test_keys_carry_their_role_and_a_key_added_without_one_is_a_client(tmp_path):
    k = tmp_path / "k"
    init_keys(k, ["n1"], operators=["op"], clients=["cl"])
    assert [role_of(k / "trusted" / f"{n}.key") for n in ("n1", "op", "cl")] == ["node", "operator", "client"]
    add_key(k, "plain")
    assert role_of(k / "trusted" / "plain.key") == "client"
    res = run_cli("keys", "add", str(k), "n2", "--role", "node")
    assert res.returncode == 0 and "as node" in res.stdout, res.stderr
    assert role_of(k / "trusted" / "n2.key") == "node"
    res = run_cli("keys", "add", str(k), "x", "--role", "king")
    assert res.returncode != 0 and "king" in res.stderr


def test_node_keys_vote_when_init_makes_them_or_add_says_so_and_no_other_key_votes(tmp_path):
    k = tmp_path / "k"
    init_keys(k, ["n1"], operators=["op"], non_voters=["n2"])
    add_key(k, "n3", role="node")
    add_key(k, "n4", role="node", voter=True)
    assert {n: voter_of(k / "trusted" / f"{n}.key") for n in ("n1", "n2", "n3", "n4", "op")} == {
        "n1": True, "n2": False, "n3": False, "n4": True, "op": False}
    res = run_cli("keys", "add", str(k), "n3", "--role", "node", "--voter")
    assert res.returncode == 0 and "as node, voter" in res.stdout, res.stderr
    assert voter_of(k / "trusted" / "n3.key")
    res = run_cli("keys", "add", str(k), "c", "--voter")
    assert res.returncode != 0 and "--role node" in res.stderr
    res = run_cli("keys", "init", str(k), "--non-voter", "n5")
    assert res.returncode == 0 and not voter_of(k / "trusted" / "n5.key"), res.stderr


def test_a_node_whose_key_does_not_say_voter_is_not_counted_as_one_though_its_spec_claims_it(tmp_path, start_node):
    k = tmp_path / "keys"
    init_keys(k, ["a", "b"], operators=["alice"])
    add_key(k, "c", role="node")  # trusted, but without the voter flag
    extra = f'keys = "{k}"\nvoter = true'
    alice = _key(k, "alice")
    a = start_node("", name="a", node_extra=extra, wait=False)
    wait_until(lambda: _answers(a.address, alice), 20, "node a to answer alice")
    others = [start_node("", name=n, node_extra=extra, wait=False, args=("--join", a.address)) for n in ("b", "c")]
    nodes = [a, *others]
    for node in others:
        wait_until(lambda node=node: _answers(node.address, alice), 20, "the node to answer alice")
    for node in nodes:
        node.client(keys=alice)
    wait_until(lambda: all(sorted(m["name"] for m in n.status()["members"] if m["state"] == "alive") == ["a", "b", "c"]
                           for n in nodes), 30, "the three nodes to meet")
    wait_until(lambda: all(n.status()["election"]["voters"] == ["a", "b"] for n in nodes), 20,
               "voters a and b everywhere, c not")
    wait_until(lambda: all(n.status()["leader"] in ("a", "b") for n in nodes)
               and len({n.status()["leader"] for n in nodes}) == 1, 30, "one leader, a voter")
    assert "c claims voter = true but its trusted key does not let it vote" in a.log()
    assert a.log().count("c claims voter = true") == 1
    # Nor does c answer intention votes: its key says no, whatever its spec says.
    assert [n.status()["node"]["votes_intentions"] for n in nodes] == [True, True, False]


def test_a_node_given_another_names_keypair_refuses_to_start(tmp_path):
    from mesh.runtime.node.daemon import Node
    from mesh.runtime.zeromq import ZmqTransport
    from mesh.spec import NodeSpec

    init_keys(tmp_path / "k", ["a", "b"])
    spec = NodeSpec(file="<spec>", base_dir=str(tmp_path), name="a", listen="tcp://127.0.0.1:1")
    with pytest.raises(mesh.MeshError, match="keypair is b's"):
        Node(spec, transport=ZmqTransport(keys=load_keys(tmp_path / "k", "b")))


def _gossip_and_vote(node, cert, claimed: str, key: str) -> None:
    """Gossip ``key`` and send an election message with ``cert``'s keypair, claiming to be
    ``claimed``; wait until ``node`` has counted both as refused (not a node key)."""
    sock = _raw_dealer(node.address, cert)
    try:
        _gossip(sock, claimed, [(key, 1)])
        sock.send(wire.encode(int(wire.Kind.EVENT), 3, 0, claimed, "$election", {"t": "vote", "term": 99}))
    finally:
        sock.close()
    wait_until(lambda: node.status()["node"]["peer_refused"] == {"gossip": 2, "election": 1}, 10, "the envelopes counted")


def _probe_node(tmp_path, start_node, agents_key: bool = True):
    """Node ``a`` with keys (``alice`` its operator) running a KeyProbe; without ``agents_key``, its
    agents' keypair is gone (as for a node key made elsewhere, trusted by --public)."""
    k = tmp_path / "keys"
    init_keys(k, ["a"], operators=["alice"])
    if not agents_key:
        (k / "private" / "a+agents.key_secret").unlink()
    a = start_node('[[agents]]\nname = "probe"\nclass = "actors:KeyProbe"\n', name="a", node_extra=f'keys = "{k}"',
                   wait=False)
    wait_until(lambda: _answers(a.address, _key(k, "alice")), 20, "node a to answer alice")
    a.client(keys=_key(k, "alice"))
    a.wait_running("probe")
    return k, a


def test_a_nodes_agents_get_a_key_of_their_own_whose_role_is_agent_not_node(tmp_path, start_node):
    k, a = _probe_node(tmp_path, start_node)
    found = a.client_once().actor("probe").ask("hello", timeout=10)
    assert found["key"] == "a+agents"  # not the node's own keypair
    assert "down needs a key whose role is operator" in found["down"]
    assert a.client_once().state.get("user/by-agent") == "hello"  # what a client may, an agent may
    # What only nodes send, an agent's key may not: its gossip and election messages are dropped.
    _gossip_and_vote(a, _key(k, "a+agents"), "a+agents", "user/from-agent-gossip")
    assert a.client_once().state.get("user/from-agent-gossip") is None
    assert a.status()["node"]["forbidden"] == {"down": 1}
    assert a.proc.poll() is None


def test_a_node_without_an_agents_keypair_hands_its_own_and_says_so(tmp_path, start_node):
    k, a = _probe_node(tmp_path, start_node, agents_key=False)
    assert a.client_once().actor("probe").ask("x", timeout=10)["key"] == "a"
    assert "this node's agents get its own keypair (role node)" in a.log()


def test_a_client_key_asks_and_writes_user_state_but_cannot_stop_kill_or_decide(keyed):
    k, a = keyed
    with mesh.connect(a.address, keys=_key(k, "carol")) as carol:
        assert carol.actor("echo").ask("hi", timeout=5) == "hi"
        carol.state.set("user/by-carol", {"n": 1})
        assert carol.state.get("user/by-carol") == {"n": 1}
        with pytest.raises(mesh.Forbidden, match="down needs a key whose role is operator"):
            carol.down()
        with pytest.raises(mesh.Forbidden, match="operator"):
            carol.kill()
        with pytest.raises(mesh.Forbidden, match="operator"):
            carol.stop_agent("echo")
        wait_until(lambda: a.status()["leader"] == "a", 20, "a to lead")
        with pytest.raises(mesh.Forbidden, match="operator"):
            carol.approve("nothing-waits")
        assert carol.actor("echo").ask("still here", timeout=5) == "still here"  # the node and its agent are up
    res = run_cli("down", "--node", a.address, env=env_with(MESH_KEYS=str(_key(k, "carol"))))
    assert res.returncode != 0 and "operator" in res.stderr, (res.stdout, res.stderr)
    st = a.status()
    assert st["node"]["forbidden"] == {"down": 2, "kill": 1, "agent_stop": 1, "intent_decide": 1}
    res = run_cli("status", "--node", a.address, env=env_with(MESH_KEYS=str(_key(k, "alice"))))
    assert res.returncode == 0, res.stderr
    assert "forbidden (role may not): agent_stop x1, down x2, intent_decide x1, kill x1" in res.stdout
    assert a.proc.poll() is None
    # A node's key used as a client is no operator either.
    with mesh.connect(a.address, keys=_key(k, "b")) as b:
        assert b.actor("echo").ask("from b", timeout=5) == "from b"
        with pytest.raises(mesh.Forbidden):
            b.down()


def test_an_operator_key_may_decide_kill_and_stop_the_node(keyed):
    k, a = keyed
    alice = a.client_once()
    wait_until(lambda: a.status()["leader"] == "a", 20, "a to lead")
    with pytest.raises(mesh.UnknownEscalation):  # past the role check: nothing waits under that id
        alice.approve("nothing-waits")
    alice.kill()
    wait_until(lambda: a.agent("echo")["state"] != "running", 15, "echo stopped by the kill switch")
    alice.kill(release=True)
    assert a.status()["node"]["forbidden"] == {}
    alice.down()
    wait_until(lambda: a.proc.poll() is not None, 30, "the node to stop")


def test_a_node_key_claiming_another_name_in_gossip_has_its_entries_refused(keyed):
    k, a = keyed
    before = a.status()["node"]["bad_gossip"]
    sock = _raw_dealer(a.address, _key(k, "b"))
    try:
        # The key issued for b claims to be c (c's record, and a user key); then gossips as itself.
        _gossip(sock, "c", [("$node/c", {"voter": True, "agents": []}), ("user/from-c", 1)])
        _gossip(sock, "b", [("user/from-b", 1)])
    finally:
        sock.close()
    client = a.client_once()
    wait_until(lambda: client.state.get("user/from-b") == 1, 10, "b's own gossip taken")  # after c's, same connection
    assert client.state.get("user/from-c") is None and client.state.get("$node/c") is None
    assert a.status()["node"]["bad_gossip"] >= before + 2
    assert "c" not in {m["name"] for m in a.status()["members"]}
    assert "claiming to be c" in a.log()


def test_gossip_and_election_envelopes_from_a_client_key_are_dropped_and_counted(keyed):
    k, a = keyed
    _gossip_and_vote(a, _key(k, "carol"), "carol", "user/from-carol-gossip")
    res = run_cli("status", "--node", a.address, env=env_with(MESH_KEYS=str(_key(k, "alice"))))
    assert "peer_refused (not a node key): election x1, gossip x2" in res.stdout, (res.stdout, res.stderr)
    assert a.client_once().state.get("user/from-carol-gossip") is None
    assert "carol" not in {m["name"] for m in a.status()["members"]}
    assert a.status()["leader"] in (None, "a")
