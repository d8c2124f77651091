"""A member writes only what is its own (mesh.core.ownership): forged runtime entries are refused
and counted, under the simulator and from a real peer; voters count only from members heard first
hand; and a node starts only agent classes that some node's spec declared."""

from __future__ import annotations

import os
import random

import pytest

from gossip_harness import make_sim
from mesh.core.gossip import GossipConfig, GossipNode
from mesh.core.hlc import make as stamp
from mesh.core.ownership import refusal

pytestmark = pytest.mark.timeout(120)
SEEDS = int(os.environ.get("MESH_OWNERSHIP_SEEDS", "150"))


# -- the rule ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("origin", "writer", "key", "value", "tombstone", "allowed"), [
    ("a", "a", "user/k", 1, False, True),
    ("a", "b", "user/k", 1, False, True),  # users' keys are anyone's (and adopted from the dead)
    ("a", "a", "$node/a", {"voter": True}, False, True),
    ("a", "a", "$node/b", {"voter": True}, False, False),
    ("a", "a", "$node/b", None, True, False),
    ("a", "b", "$node/b", {}, False, False),  # written by another member than its origin
    ("a", "a", "$acted/a", {}, False, True),
    ("a", "a", "$acted/b", {}, False, False),
    ("a", "a", "$agents/echo", {"node": "a"}, False, True),
    ("a", "a", "$agents/echo", {"node": "b"}, False, False),
    ("a", "a", "$agents/echo", 5, False, False),
    ("a", "a", "$agents/echo", None, True, True),
    ("a", "a", "$assign/3", {"leader": "a"}, False, True),
    ("a", "a", "$assign/3", {"leader": "b"}, False, False),
    ("a", "a", "$intents/x", {"node": "b"}, False, False),
    ("a", "a", "$subs/T/x", {"node": "a"}, False, True),
    ("a", "a", "$kill", {"pulled": True}, False, True),
    ("a", "a", "$alerts/1", {"node": "b"}, False, True),
    ("a", "a", "$whatever", 1, False, False),
])
def test_each_runtime_prefix_has_an_owner(origin, writer, key, value, tombstone, allowed):
    assert (refusal(origin, writer, key, value, tombstone) is None) is allowed


# -- the core -----------------------------------------------------------------------------------------

def _member(node: GossipNode, oid: str) -> None:
    node.step(oid.split("@")[0], {"t": "syn", "from": oid.split("@")[0], "digest": {oid: [1, 0, "", False]}}, 1.0)


def test_a_forged_runtime_entry_in_a_push_is_refused_counted_and_reported_once():
    node = GossipNode("victim", 1, GossipConfig(), random.Random(1), 0.0)
    node.set("$agents/echo", {"node": "victim", "endpoint": "tcp://127.0.0.1:1"}, 0.5, system=True)
    _member(node, "mallory@1")
    T = stamp(900)
    forged = [["$agents/echo", {"node": "victim", "endpoint": "tcp://evil:1"}, T, "mallory", 1, False],
              ["$node/victim", {"voter": True}, T, "mallory", 2, False],
              ["$agents/echo", {"node": "mallory"}, T, "victim", 3, False],  # a writer that is not its origin
              ["$node/mallory", {"voter": True}, T, "mallory", 4, False],  # its own: kept
              ["user/k", 1, T, "mallory", 5, False]]
    out = node.step("mallory", {"t": "push", "from": "mallory", "delta": [["mallory@1", 0, 5, forged]]}, 1.0)
    assert node.get("$agents/echo")["endpoint"] == "tcp://127.0.0.1:1"
    assert node.get("$node/victim") is None
    assert node.get("$node/mallory") == {"voter": True} and node.get("user/k") == 1
    assert node.refused_entries == 3
    reported = [e for e in out if getattr(e, "name", None) == "refused"]
    assert len(reported) == 3 and all(e.data["origin"] == "mallory" for e in reported)
    # Again: counted, not reported again; and the versions passed over are not asked for forever.
    out = node.step("mallory", {"t": "push", "from": "mallory", "delta": [["mallory@1", 0, 5, forged]]}, 1.1)
    assert not [e for e in out if getattr(e, "name", None) == "refused"]
    assert node.origins["mallory@1"].max_version == 5


def test_a_peer_cannot_claim_to_have_seen_a_heartbeat_not_sent_yet():
    node = GossipNode("a", 1, GossipConfig(), random.Random(1), 0.0)
    for t in range(3):
        node.tick(0.1 * t)
    mine = node.me.heartbeat
    node.step("ghost", {"t": "syn", "from": "ghost", "digest": {"ghost@1": [1, 0, "", False],
                                                                "a@1": [mine + 1000, 0, "", False]}}, 1.0)
    assert "ghost" not in node.seen_by
    node.step("ghost", {"t": "syn", "from": "ghost", "digest": {"ghost@1": [2, 0, "", False],
                                                                "a@1": [mine, 0, "", False]}}, 1.0)
    assert node.seen_by["ghost"] == mine


def _liar_scenario(seed: int):
    """n0..n3 write their own records; n4 writes its own, and forgeries of n0's record and of the
    directory entry of n0's agent, in its own origin, under loss, duplication and a partition."""
    sim, names = make_sim(seed)
    rng = random.Random(seed)
    honest = names[:4]
    for name in names:
        sim.at(rng.uniform(0.2, 1.0), lambda name=name: sim._apply(
            name, sim.nodes[name].set(f"$node/{name}", {"voter": True, "by": name}, sim.now, system=True)))
    sim.at(rng.uniform(0.2, 1.0), lambda: sim._apply(
        "n0", sim.nodes["n0"].set("$agents/echo", {"node": "n0", "endpoint": "tcp://n0:1"}, sim.now, system=True)))

    def forge():
        liar = sim.nodes["n4"]
        for key, value in (("$node/n0", {"voter": False, "by": "n4"}), ("$agents/echo", {"node": "n0", "endpoint": "tcp://evil:1"}),
                           ("$node/ghost", {"voter": True})):
            liar.set(key, value, sim.now, system=True)  # a liar's node does not check itself: the others do
    sim.at(rng.uniform(1.0, 2.0), forge)
    split = rng.randint(1, 4)
    sim.at(1.5, lambda: sim.partition(names[:split], names[split:]))
    sim.at(3.0, sim.heal)
    sim.run(4.0)

    def settled(s):
        live = s.live()
        views = [{k: v for k, v in live[n].items().items()} for n in honest]
        sent = s.nodes["n4"].me.max_version
        liar = s.nodes["n4"].id
        return (all(liar in live[n].origins and live[n].origins[liar].max_version == sent for n in honest)
                and all(v == views[0] for v in views) and all(f"$node/{n}" in views[0] for n in names)
                and "$agents/echo" in views[0])
    ok = sim.run_until(settled, 40.0)
    return ok, sim, honest


@pytest.mark.timeout(600)
def test_over_many_seeds_the_honest_members_converge_and_keep_no_forgery():
    failures = []
    for seed in range(SEEDS):
        ok, sim, honest = _liar_scenario(seed)
        view = sim.nodes[honest[0]]
        if not (ok and view.get("$node/n0") == {"voter": True, "by": "n0"}
                and view.get("$agents/echo")["endpoint"] == "tcp://n0:1" and view.get("$node/ghost") is None
                and any(sim.nodes[n].refused_entries > 0 for n in honest)):  # who relays n4's origin leaves them out
            failures.append(seed)
    assert failures == [], f"seeds where a forgery was kept or the mesh did not converge: {failures[:20]}"


def test_the_same_seed_gives_the_same_trace_with_a_liar():
    assert _liar_scenario(3)[1].trace_hash() == _liar_scenario(3)[1].trace_hash()


# -- a real node --------------------------------------------------------------------------------------

def gossip_as(address: str, origin: str, entries: list[tuple[str, object]], writer: str | None = None) -> None:
    """What a plain pyzmq script can send: a digest that makes ``origin`` a member (with no address,
    so it never answers), then a push of its entries, stamped now."""
    import time

    import zmq

    from mesh import wire

    name = origin.split("@")[0]
    now = stamp(int(time.time() * 1000))
    delta = [[origin, 0, len(entries), [[k, v, now, writer or name, i + 1, False] for i, (k, v) in enumerate(entries)]]]
    sock = zmq.Context.instance().socket(zmq.DEALER)
    try:
        sock.connect(address)
        for i, body in enumerate(({"t": "syn", "from": name, "digest": {origin: [1, len(entries), "", False]}},
                                  {"t": "push", "from": name, "delta": delta})):
            sock.send(wire.encode(int(wire.Kind.EVENT), i + 1, 0, name, "$gossip", body))
    finally:
        sock.close(linger=1000)  # the frames still leave


def test_a_forged_directory_entry_in_a_gossip_push_is_refused_and_counted(echo_node):
    from conftest import wait_until

    node = echo_node
    client = node.client()
    # The entry is there from "starting" on; its endpoint only once echo runs (a loaded machine shows the gap).
    real = wait_until(lambda: (client.state.get("$agents/echo") or {}).get("endpoint"), 10, "echo's endpoint listed")
    # The probe's redirect, in a member's own origin and in a name it does not hold; and a record of another.
    gossip_as(node.address, "mallory@1", [("$agents/echo", {**client.state.get("$agents/echo"), "endpoint": "tcp://127.0.0.1:9"}),
                                          ("$node/t", {"voter": False}), ("$node/mallory", {"voter": False})])
    wait_until(lambda: node.status()["node"]["bad_gossip"] >= 2, 10, "the forged entries counted")
    wait_until(lambda: client.state.get("$node/mallory") is not None, 10, "mallory's own record kept")
    assert client.state.get("$agents/echo")["endpoint"] == real
    assert client.state.get("$node/t")["voter"] is True
    assert node.client().actor("echo").ask("still here", timeout=5) == "still here"
    assert "refused gossip from member mallory" in node.log()


def test_forged_voters_leave_the_mesh_with_its_leader(start_node):
    """The probe's case: four made-up members, each with its own record saying voter = true
    (and one writing records for the others). None ever answers: none becomes a voter."""
    import time

    from conftest import wait_until

    node = start_node(name="t")
    wait_until(lambda: node.status()["leader"] == "t", 10, "t to lead")
    gossip_as(node.address, "ghost@1", [(f"$node/ghost{i}", {"voter": True}) for i in range(4)])
    for i in range(4):
        gossip_as(node.address, f"ghost{i}@1", [(f"$node/ghost{i}", {"voter": True, "agents": []})])
    client = node.client()
    wait_until(lambda: all(client.state.get(f"$node/ghost{i}") for i in range(4)), 10, "the ghosts' records in view")
    assert node.status()["node"]["bad_gossip"] >= 4
    # A leader that counted five voters would step down within its election timeout: watch past it.
    until = time.monotonic() + 4.0
    while time.monotonic() < until:
        st = node.status()
        assert st["leader"] == "t" and st["election"]["voters"] == ["t"], st["election"]
        time.sleep(0.2)


EVIL_MODULE = '''
import pathlib
pathlib.Path(__file__).with_name("imported").write_text("the attacker's code ran")


class Evil:
    pass
'''


def test_an_assignment_for_a_class_no_spec_declared_is_refused_and_never_imported(start_node, tmp_path):
    """The probe's code execution: a made-up member's record declares an agent pinned to the victim,
    from a folder the attacker chose; the leader places it there; the victim refuses to import it."""
    from conftest import wait_until
    from mesh.spec import agent_to_wire, parse_spec

    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "evil_mod.py").write_text(EVIL_MODULE)
    spec = parse_spec({"node": {"name": "mallory", "path": [str(evil)]},
                       "agents": [{"name": "evil", "class": "evil_mod:Evil", "node": "t"}]}, base_dir=str(evil))
    record = {"voter": False, "address": "", "agents": [agent_to_wire(a, spec) for a in spec.agents], "pools": [],
              "limits": [], "capacity": {"cpu": 8.0, "memory": 1 << 34}, "load": {"cpu": 0.0, "memory": 0},
              "stopping": False, "broadcast": None}
    node = start_node(name="t")
    wait_until(lambda: node.status()["leader"] == "t", 10, "t to lead")
    gossip_as(node.address, "mallory@1", [("$node/mallory", record)])
    wait_until(lambda: "refused to run evil" in node.log(), 15, "the assignment of evil refused")
    assert "no spec in the mesh declares agent 'evil'" in node.log()
    assert not (evil / "imported").exists()
    assert node.log().count("refused to run evil") == 1  # once per cause, however often the leader decides
    assert all(a["name"] != "evil" or a["state"] != "running" for a in node.status()["agents"])
