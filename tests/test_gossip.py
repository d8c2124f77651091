"""Gossip under the deterministic simulator: convergence, deletes, restarts, failure detection.

The many-seed runs are the point: each seed is a different schedule of loss,
duplication, reordering, partitions and writes. `MESH_SOAK_SEEDS=20000 pytest
tests/test_gossip.py -k many_seeds` runs a longer soak.
"""

from __future__ import annotations

import os
import random

import pytest

from gossip_harness import converged, expected_state, make_sim, random_workload, write
from mesh.core.gossip import DEAD, GossipConfig, GossipNode

SEEDS = int(os.environ.get("MESH_SOAK_SEEDS", "1000"))


def run_scenario(seed: int):
    sim, names = make_sim(seed)
    rng = random.Random(seed)
    log: list = []
    random_workload(sim, names, rng, 0.5, 4.0, 40, log)
    # A partition somewhere in the middle, healed before the end.
    start = rng.uniform(0.5, 2.5)
    split = rng.randint(1, len(names) - 1)
    shuffled = names[:]
    rng.shuffle(shuffled)
    sim.at(start, lambda: sim.partition(shuffled[:split], shuffled[split:]))
    sim.at(start + rng.uniform(0.5, 2.0), sim.heal)
    sim.run(4.5)
    want = expected_state(log)
    ok = sim.run_until(lambda s: converged(s) and next(iter(s.live().values())).items() == want, 40.0)
    return ok, sim, want


@pytest.mark.timeout(600)
def test_many_seeds_of_loss_duplication_reordering_and_partitions_all_converge_to_last_writer_wins():
    failures = [seed for seed in range(SEEDS) if not run_scenario(seed)[0]]
    assert failures == [], f"seeds that did not converge: {failures[:20]}"


def test_the_same_seed_gives_the_same_gossip_trace():
    a, b = run_scenario(7)[1], run_scenario(7)[1]
    assert a.trace_hash() == b.trace_hash()


def test_a_key_deleted_during_a_partition_does_not_come_back_when_it_heals():
    sim, names = make_sim(11, loss=0.0, duplicate=0.0)
    log: list = []
    write(sim, "n0", "k", "old", log)
    sim.run(2.0)
    assert all(m.get("k") == "old" for m in sim.live().values())
    sim.partition(["n0", "n1"], ["n2", "n3", "n4"])
    write(sim, "n3", "k", None, log)  # deleted on the majority side only
    sim.run(4.0)
    assert sim.nodes["n0"].get("k") == "old"
    sim.heal()
    assert sim.run_until(lambda s: all(m.get("k") is None for m in s.live().values()), 20.0)
    # ... and stays gone once the tombstone itself is collected.
    sim.run(sim.now + 40.0)
    assert all(m.get("k") is None and "k" not in m.view for m in sim.live().values())


def test_a_collected_tombstone_takes_older_values_of_its_key_from_every_origin():
    sim, names = make_sim(12, loss=0.0, duplicate=0.0)
    log: list = []
    write(sim, "n0", "k", "a", log)
    sim.run(1.0)
    write(sim, "n1", "k", None, log)
    sim.run(1.0 + 35.0)  # past the 30 s tombstone grace
    for m in sim.live().values():
        assert all("k" not in o.entries for o in m.origins.values())


def test_a_crashed_node_is_marked_dead_and_a_restart_is_a_new_incarnation():
    sim, names = make_sim(13, loss=0.1, duplicate=0.1)
    log: list = []
    sim.run(2.0)
    sim._apply("n4", sim.nodes["n4"].set("$agents/worker", {"node": "n4"}, sim.now, system=True))
    write(sim, "n4", "user/k", "kept", log)
    sim.run(4.0)
    sim.crash("n4")
    crashed_at = sim.now
    assert sim.run_until(lambda s: all(m.state_of("n4") == DEAD for m in s.live().values()), crashed_at + 10.0)
    detected = sim.now - crashed_at
    assert detected < 5.0
    sim.restart("n4")
    assert sim.nodes["n4"].incarnation == 1
    assert sim.run_until(
        lambda s: all(any(x["id"] == "n4@1" and x["state"] == "alive" for x in m.members()) for m in s.live().values()),
        sim.now + 10.0,
    )
    # The old incarnation is dead everywhere, its runtime keys go with it, and the user's write survives.
    sim.run(sim.now + 15.0)
    for m in sim.live().values():
        assert "n4@0" not in m.origins
        assert m.get("$agents/worker") is None
        assert m.get("user/k") == "kept"


def test_a_dead_incarnation_is_not_gossiped_forever():
    sim, names = make_sim(14, loss=0.2, duplicate=0.1)
    sim.run(2.0)
    sim.crash("n2")
    sim.run(sim.now + 20.0)  # dead after ~1-3 s, buried after the 5 s dead grace
    for m in sim.live().values():
        assert "n2@0" not in m.origins and "n2@0" not in m._digest()
        assert "n2@0" in m.graveyard


class Sluggish:
    """A live node whose heartbeats leave at a third of the normal rate, with jitter."""

    def __init__(self, inner: GossipNode, rng: random.Random):
        self.inner, self.rng, self.n = inner, rng, 0

    def step(self, sender, message, now):
        return self.inner.step(sender, message, now)

    def tick(self, now):
        self.n += 1
        if self.n % 3 or self.rng.random() < 0.2:
            return []
        return self.inner.tick(now)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.mark.parametrize("seed", range(5))
def test_a_slow_but_live_node_is_never_marked_dead(seed):
    sim, names = make_sim(seed, loss=0.1, duplicate=0.0)
    original = sim.factory

    def factory(name, rng, storage, now):
        m = original(name, rng, storage, now)
        return Sluggish(m, rng) if name == "n1" else m

    sim.factory = factory
    sim.restart("n1")  # rebuilt as the sluggish kind
    deaths = []
    sim.run(60.0)
    for t, node, ev in sim.events:
        if ev.name == "member" and ev.data["name"] == "n1" and ev.data["state"] == DEAD and ev.data["id"] == "n1@1":
            deaths.append((t, node))
    assert deaths == []


def test_deltas_are_bounded_and_large_states_still_converge():
    cfg = GossipConfig(interval=0.1, max_delta_entries=20, dead_after=1.0, dead_grace=5.0, tombstone_grace=30.0)
    sim, names = make_sim(15, config=cfg, loss=0.1)
    log: list = []
    for i in range(300):
        write(sim, names[i % 5], f"big/{i}", i, log)
    sizes = []
    original_send = sim._send

    def spy(src, dst, message):
        if isinstance(message, dict):
            sizes.append(sum(len(d[3]) for d in message.get("delta") or []))
        original_send(src, dst, message)

    sim._send = spy
    assert sim.run_until(lambda s: converged(s) and len(s.nodes["n0"].items("big/")) == 300, 60.0)
    assert max(sizes) <= 20


def test_users_cannot_write_reserved_keys():
    node = GossipNode("a", 0, GossipConfig(), random.Random(1), 0.0)
    with pytest.raises(ValueError, match="reserved"):
        node.set("$members/a", 1, 0.0)
    with pytest.raises(ValueError):
        node.set("", 1, 0.0)


BAD_GOSSIP = [
    "not a map",
    {"t": "nonsense"},
    {"t": "syn", "digest": [1]},
    {"t": "syn", "digest": {5: [1, 1, "", False]}},
    {"t": "syn", "digest": {"x@1": [1, 1, "not-an-address", False]}},
    {"t": "syn", "digest": {"x@1": ["1", 1, "", False]}},
    {"t": "push", "delta": 5},
    {"t": "push", "delta": [["x@1", 0, 1, [["k", 1, "stamp", "x", 1, False]]]]},
    {"t": "ack", "digest": {"x@1": [1, 1, "", False]}, "delta": [["x@1"]]},
]


@pytest.mark.parametrize("message", BAD_GOSSIP)
def test_a_malformed_gossip_message_is_refused_and_changes_nothing(message):
    node = GossipNode("a", 0, GossipConfig(), random.Random(1), 0.0)
    node.set("k", "v", 0.0)
    before = (dict(node.origins), dict(node.view))
    with pytest.raises(ValueError):
        node.step("peer", message, 1.0)
    assert (dict(node.origins), dict(node.view)) == before


def test_an_entry_stamped_far_in_the_future_is_ignored():
    node = GossipNode("a", 0, GossipConfig(), random.Random(1), 1000.0)
    future = (int((1000.0 + 3600) * 1000)) << 16
    node.step("b", {"t": "push", "delta": [["b@1", 0, 1, [["k", "v", future, "b", 1, False]]]]}, 1000.0)
    assert node.get("k") is None


def test_deltas_stay_within_their_byte_budget_and_big_values_still_spread():
    cfg = GossipConfig(interval=0.1, max_delta_bytes=40_000, max_value_bytes=20_000, dead_after=1.0,
                       dead_grace=5.0, tombstone_grace=30.0)
    sim, names = make_sim(16, config=cfg, loss=0.0, duplicate=0.0)
    log: list = []
    for i in range(40):
        write(sim, names[i % 5], f"blob/{i}", "x" * 15_000, log)
    biggest = []
    original_send = sim._send

    def spy(src, dst, message):
        if isinstance(message, dict) and message.get("delta"):
            import msgpack

            biggest.append(sum(len(msgpack.packb(e)) for d in message["delta"] for e in d[3]))
        original_send(src, dst, message)

    sim._send = spy
    assert sim.run_until(lambda s: converged(s) and len(s.nodes["n0"].items("blob/")) == 40, 60.0)
    assert max(biggest) <= 40_000


def test_a_value_too_big_for_the_shared_state_is_refused():
    node = GossipNode("a", 0, GossipConfig(max_value_bytes=1000, max_delta_bytes=2000), random.Random(1), 0.0)
    with pytest.raises(ValueError, match="limit"):
        node.set("k", "x" * 2000, 0.0)
    with pytest.raises(ValueError, match="msgpack"):
        node.set("k", object(), 0.0)
    assert node.get("k") is None and node.me.max_version == 0


# -- joining, names and incarnations ------------------------------------------------------------


def _joiner_sim(seed: int, joiner_name: str, loss: float = 0.2):
    """Four members n0..n3 gossiping; sim node "x" runs a joining GossipNode called ``joiner_name``
    at its own address (the runtime answers a joiner at the address it gives)."""
    cfg = GossipConfig(interval=0.1, dead_after=1.0, dead_grace=5.0, tombstone_grace=30.0)
    names = ["n0", "n1", "n2", "n3"]

    def factory(node, rng, storage, now):
        inc = storage.get("incarnation", 0) + 1
        storage["incarnation"] = inc
        if node == "x":
            return GossipNode(joiner_name, 1000 + inc, cfg, rng, now, address="tcp://x:1", seeds=("n0",), joining=True)
        return GossipNode(node, inc, cfg, rng, now, address=f"tcp://{node}:1", seeds=tuple(names))

    from mesh.sim import Network, Simulation

    sim = Simulation(seed, [*names, "x"], factory, Network(delay=(0.001, 0.05), loss=loss, duplicate=0.1),
                     tick_interval=cfg.interval)
    sim.crash("x")
    # The members know each other before the joiner starts.
    assert sim.run_until(lambda s: all(all(m.state_of(n) == "alive" for n in names) for m in s.live().values()), 30.0)
    sim.restart("x")
    return sim, names


@pytest.mark.parametrize("seed", range(100))
def test_a_joiner_with_a_live_members_name_is_refused_and_nobody_ever_hears_of_it(seed):
    sim, names = _joiner_sim(seed, "n2")
    x = sim.nodes["x"]
    assert sim.run_until(lambda s: x.name_taken is not None, 20.0)
    assert x.name_taken[1] == "tcp://n2:1" and not x.announced
    sim.run(sim.now + 5.0)
    for n in names:
        m = sim.nodes[n]
        assert all(o.address != "tcp://x:1" for o in m.origins.values())
        assert m.state_of("n2") == "alive" and m.current()["n2"].address == "tcp://n2:1"
    assert x.leave(sim.now) == []


@pytest.mark.parametrize("seed", range(100))
def test_a_joiner_with_a_fresh_name_is_welcomed_and_becomes_a_member_everywhere(seed):
    sim, names = _joiner_sim(seed, "fresh")
    assert sim.run_until(lambda s: all(m.state_of("fresh") == "alive" for m in s.live().values() if m.name != "fresh"),
                         20.0)
    assert sim.nodes["x"].announced and sim.nodes["x"].name_taken is None


@pytest.mark.parametrize("seed", range(50))
def test_an_impostor_that_leaves_or_dies_never_ends_the_live_member_of_its_name(seed):
    sim, names = _joiner_sim(seed, "fresh", loss=0.1)
    inc = sim.nodes["n1"].incarnation
    # Newer incarnations of "n1" elsewhere: one leaves at once, one is never heard again.
    for n in names:
        if n != "n1":
            sim._apply(n, sim.nodes[n].step("x", {"t": "syn", "from": "x", "digest": {
                f"n1@{inc + 5}": [3, 0, "tcp://elsewhere:1", True], f"n1@{inc + 6}": [3, 0, "tcp://elsewhere:2", False]}},
                sim.now))
    sim.run(sim.now + 12.0)
    for n in names:
        m = sim.nodes[n]
        assert m.state_of("n1") == "alive" and m.current()["n1"].incarnation == inc, (n, m.members())


def test_a_restarted_node_at_its_own_address_supersedes_its_former_self_at_once():
    sim, names = _joiner_sim(3, "fresh", loss=0.0)
    sim.crash("n3")
    sim.restart("n3")  # same address, next incarnation
    assert sim.run_until(lambda s: all(m.current()["n3"].incarnation == 2 and m.state_of("n3") == "alive"
                                       for n, m in s.live().items() if n != "n3"), sim.now + 3.0)


def test_tables_keyed_by_what_peers_send_stay_bounded():
    from mesh.core import gossip as g

    node = GossipNode("a", 1, GossipConfig(), random.Random(1), 0.0)
    assert not hasattr(node, "last_contact")
    with pytest.raises(ValueError, match="sender"):
        node.step("s" * 1_000_000, {"t": "syn", "from": "s", "digest": {}}, 1.0)
    with pytest.raises(ValueError, match="origin"):
        node.step("b", {"t": "syn", "from": "b", "digest": {"x" * 1000 + "@1": [1, 0, "", False]}}, 1.0)
    for i in range(3 * g.MAX_PEER_DIGESTS):  # senders that are members, each with a digest
        node.step(f"p{i}", {"t": "syn", "from": f"p{i}", "digest": {f"p{i}@1": [1, 0, "", False]}}, 1.0)
        node.step(f"p{i}", {"t": "syn", "from": f"p{i}", "digest": {f"p{i}@1": [2, 0, "", False]}}, 1.0)
    assert len(node.peer_digest) <= g.MAX_PEER_DIGESTS
    for i in range(2000):  # senders that are not members leave nothing behind
        node.step(f"q{i}", {"t": "syn", "from": f"q{i}", "digest": {}}, 1.0)
    assert not any(p.startswith("q") for p in node.peer_digest)


# -- review of issue 10: members only from digests, density, rivals, joins, peer tables ----------------


def _member(node: GossipNode, name: str, now: float, address: str = "", heartbeat: int = 1, version: int = 0) -> None:
    """``name@1`` tells ``node`` of itself (a syn with its digest entry)."""
    node.step(name, {"t": "syn", "from": name, "digest": {f"{name}@1": [heartbeat, version, address, False]}}, now)


def _entry(key: str, value, version: int, now: float = 0.0) -> list:
    from mesh.core.hlc import make as stamp

    return [key, value, stamp(int(now * 1000)), "ghost", version, False]


def test_pushes_from_a_non_member_create_no_members():
    from mesh.core import gossip as g

    node = GossipNode("a", 1, GossipConfig(), random.Random(1), 0.0)
    for burst in range(3):  # what used to raise the member table past its cap, one slow step each
        delta = [[f"m{burst}x{i}@1", 0, 1, [_entry("k", i, 1)]] for i in range(2000)]
        node.step("ghost", {"t": "push", "from": "ghost", "delta": delta}, 1.0)
    assert list(node.origins) == ["a@1"] and node.get("k") is None
    # Digests introduce members, up to the cap.
    for burst in range(3):
        node.step("ghost", {"t": "syn", "from": "ghost",
                            "digest": {f"d{burst}x{i}@1": [1, 0, "", False] for i in range(2000)}}, 1.0)
    assert len(node.origins) == g.MAX_ORIGINS


def test_entries_of_an_origin_a_digest_introduced_are_applied():
    node = GossipNode("a", 1, GossipConfig(), random.Random(1), 0.0)
    _member(node, "b", 0.0, "tcp://b:1", version=1)
    node.step("b", {"t": "push", "from": "b", "delta": [["b@1", 0, 1, [_entry("k", "v", 1)]]]}, 0.5)
    assert node.get("k") == "v" and node.origins["b@1"].max_version == 1


def test_a_newer_incarnation_named_in_a_push_or_at_an_unknown_address_never_ends_the_live_member():
    node = GossipNode("c", 1, GossipConfig(), random.Random(1), 0.0)
    _member(node, "a", 0.0, "tcp://a:1")
    node.step("x", {"t": "push", "from": "x", "delta": [["a@2", 0, 1, [_entry("k", "v", 1)]]]}, 0.1)
    node.step("x", {"t": "syn", "from": "x", "digest": {"a@3": [1, 0, "", False]}}, 0.2)
    assert node.origins["a@1"].state == "alive" and node.current()["a"].id == "a@1"
    # A restart known at the same address still ends the former incarnation at once.
    node.step("x", {"t": "syn", "from": "x", "digest": {"a@4": [1, 0, "tcp://a:1", False]}}, 0.3)
    assert node.origins["a@1"].state == DEAD and node.origins["a@4"].state == "alive"
    assert node.state_of(["a"]) is None and node.state_of(None) is None  # what runtime code reads from gossiped values


def _wire_takes(message: dict) -> None:
    """Raise WireError unless a peer's wire would take ``message`` (mesh.wire's default density rule)."""
    from mesh import wire

    wire.decode(wire.encode(int(wire.Kind.EVENT), 1, 0, "n0", "$gossip", message))


def test_a_value_too_dense_to_ever_send_is_refused_at_set_naming_the_key_and_the_rule():
    node = GossipNode("a", 1, GossipConfig(), random.Random(1), 0.0)
    with pytest.raises(ValueError, match=r"'dense'.*too dense.*one array or map per 3 bytes"):
        node.set("dense", [[0]] * 100_000, 0.0)  # 200 KB: under max_value_bytes
    assert node.get("dense") is None and node.me.max_version == 0
    node.set("fine", [[0]] * 10_000, 0.0)
    node.set("pairs", [[i, i] for i in range(20_000)], 0.0)  # one array per 3-4 bytes: the rule's own example
    assert node.me.max_version == 2


def test_every_message_a_node_builds_is_one_its_peers_take_and_dense_values_still_spread():
    cfg = GossipConfig(interval=0.1, dead_after=1.0, dead_grace=5.0, tombstone_grace=30.0)
    sim, names = make_sim(17, config=cfg, loss=0.05, duplicate=0.0)
    log: list = []
    sizes = []
    original_send = sim._send

    def spy(src, dst, message):
        _wire_takes(message)  # raises: the run stops at the first message a peer would refuse
        sizes.append(sum(len(d[3]) for d in message.get("delta") or []))
        original_send(src, dst, message)

    sim._send = spy
    sim.run(1.0)
    for i in range(12):  # each value may be sent, a few of them together may not
        write(sim, names[i % 2], f"dense/{i}", [[0]] * 20_000 if i % 3 else [[]] * 9_000, log)
    write(sim, "n0", "after", "the dense values", log)
    assert sim.run_until(lambda s: converged(s) and len(s.nodes["n4"].items("dense/")) == 12
                         and s.nodes["n4"].get("after") == "the dense values", 60.0)
    assert max(sizes) < 12  # deltas were cut to what fits


def test_an_entry_from_a_peer_too_dense_to_send_on_is_not_kept():
    node = GossipNode("a", 1, GossipConfig(), random.Random(1), 0.0)
    _member(node, "b", 0.0, "tcp://b:1", version=2)
    delta = [["b@1", 0, 2, [_entry("dense", [[]] * 60_000, 1), _entry("next", 1, 2)]]]
    _wire_takes({"t": "push", "from": "b", "delta": delta})  # a small frame: the wire does not count it
    node.step("b", {"t": "push", "from": "b", "delta": delta}, 0.5)
    assert node.get("dense") is None and node.get("next") is None and node.origins["b@1"].max_version == 0


def test_stale_heartbeats_of_a_dead_predecessor_from_different_peers_never_stop_a_restarted_node():
    cfg = GossipConfig()
    node = GossipNode("a", 4, cfg, random.Random(1), 100.0, address="tcp://a:2")  # a@1 was at tcp://a:1
    for n in ("b", "c"):
        _member(node, n, 100.0, f"tcp://{n}:1")
    t = 100.0
    for i in range(60):  # peers' views of the dead a@1 differ, and one of them catches up once
        t += 0.2
        hb = {"c": 46 if i < 3 else 50, "b": 50}
        for peer in ("c", "b"):
            node.step(peer, {"t": "syn", "from": peer, "digest": {
                "a@1": [hb[peer], 3, "tcp://a:1", False], f"{peer}@1": [i + 2, 0, f"tcp://{peer}:1", False]}}, t)
    assert node.name_taken is None
    # A predecessor whose heartbeat keeps rising is live elsewhere: the newer incarnation yields.
    for i in range(40):
        t += 0.2
        node.step("c", {"t": "syn", "from": "c", "digest": {"a@2": [10 + i, 3, "tcp://a:3", False]}}, t)
    assert node.name_taken == ("a@2", "tcp://a:3")


def _member_with_a_mesh() -> GossipNode:
    node = GossipNode("a", 1, GossipConfig(), random.Random(1), 0.0, address="tcp://a:1")
    node.step("m0", {"t": "syn", "from": "m0", "digest": {f"m{i}@1": [1, 0, f"tcp://m{i}:1", False] for i in range(100)}},
              0.0)
    _member(node, "b", 0.0, "tcp://b:1")
    node.set("k1", 1, 0.0)  # written since: b lacks them
    node.set("k2", 2, 0.0)
    return node


def test_a_join_answer_lists_only_the_incarnations_of_the_joiners_name_and_the_member_itself():
    node = _member_with_a_mesh()
    out = node.step("fresh", {"t": "syn", "from": "fresh", "join": True, "address": "tcp://f:1", "digest": {}}, 0.5)
    (ack,) = [o.message for o in out if hasattr(o, "message")]
    assert ack["live"] == {"a@1": "tcp://a:1"}
    out = node.step("b", {"t": "syn", "from": "b", "join": True, "address": "tcp://b:2", "digest": {}}, 0.5)
    (ack,) = [o.message for o in out if hasattr(o, "message")]
    assert ack["live"] == {"b@1": "tcp://b:1", "a@1": "tcp://a:1"}


def test_a_joiner_with_a_members_name_leaves_what_that_member_is_known_to_hold_alone():
    node = _member_with_a_mesh()
    assert node.peer_digest["b"].get("a@1", 0) == 0
    # A joiner called "b" (an impostor, or b's restart elsewhere) that holds everything.
    node.step("b", {"t": "syn", "from": "b", "join": True, "address": "tcp://b:2",
                    "digest": {"a@1": [5, 2, "tcp://a:1", False]}}, 0.5)
    assert node.peer_digest["b"].get("a@1", 0) == 0  # the live b still lacks a's writes: pushes go on
    node.step("b", {"t": "syn", "from": "b", "join": True, "address": "tcp://b:2", "digest": {}}, 0.6)
    assert node.peer_digest["b"].get("a@1", 0) == 0  # nor is the answer to the joiner taken as sent to b


def test_peer_digests_of_buried_members_are_dropped_whatever_the_size_of_the_mesh():
    from mesh.core import gossip as g

    cfg = GossipConfig(interval=0.1, dead_after=1.0, dead_grace=5.0)
    node = GossipNode("a", 1, cfg, random.Random(1), 0.0)
    for i in range(g.MAX_PEER_DIGESTS):
        _member(node, f"p{i}", 0.0)  # peers with digests, about to die
    assert len(node.peer_digest) == g.MAX_PEER_DIGESTS
    others = [f"o{i}" for i in range(2 * g.MAX_PEER_DIGESTS)]
    t = 0.0
    for step in range(300):  # 30 s: the p's die and are buried, the o's stay alive (o0 reports them)
        t += 0.1
        node.tick(t)
        if step % 2 == 0:
            node.step("o0", {"t": "syn", "from": "o0", "digest": {f"{o}@1": [step + 2, 0, "", False] for o in others}}, t)
    assert all(node.state_of(o) == "alive" for o in others)
    assert not any(p.startswith("p") for p in node.peer_digest) and "o0" in node.peer_digest


def test_the_density_rule_a_node_builds_deltas_for_is_its_wires_by_default():
    from mesh import wire

    cfg = GossipConfig()
    assert (cfg.bytes_per_container, cfg.dense_slack_bytes) == (wire.BYTES_PER_CONTAINER, wire.SMALL_FRAME)


def _random_value(rng: random.Random):
    kind = rng.randrange(6)
    n = rng.randrange(1, 30_000)
    if kind == 0:
        return [[]] * n
    if kind == 1:
        return [[0]] * n
    if kind == 2:
        return "x" * (n * 4)
    if kind == 3:
        return {f"k{i}": [[i]] for i in range(n // 4)}
    if kind == 4:
        return ["y" * rng.randrange(50_000), [[]] * n]  # sparse first, dense after
    return [[[]] * n, "z" * rng.randrange(100_000)]  # dense first, sparse after


@pytest.mark.parametrize("seed", range(20))
def test_whatever_values_a_node_holds_every_answer_it_sends_passes_the_wire(seed):
    rng = random.Random(seed)
    a = GossipNode("a", 1, GossipConfig(), random.Random(seed), 0.0, address="tcp://a:1")
    b = GossipNode("b", 1, GossipConfig(), random.Random(seed), 0.0, address="tcp://b:1")
    a.step("m", {"t": "syn", "from": "m", "digest": {f"m{i}@1": [1, 0, f"tcp://m{i}:1", False] for i in range(500)}}, 0.0)
    kept = 0
    for i in range(40):
        try:
            a.set(f"v{i}", _random_value(rng), 0.0)
            kept += 1
        except ValueError as exc:
            assert "too dense" in str(exc) or "limit" in str(exc)
    for _ in range(200):  # b asks a, again and again, until it holds all a wrote
        out = a.step("b", {"t": "syn", "from": "b", "digest": b._digest()}, 1.0)
        (ack,) = [o.message for o in out if hasattr(o, "message")]
        _wire_takes(ack)
        b.step("a", ack, 1.0)
        if b.origins.get("a@1") is not None and b.origins["a@1"].max_version == a.me.max_version:
            break
    assert len(b.items("v")) == kept


def test_a_joiner_welcomed_by_a_member_is_told_of_every_entry_the_welcome_brought():
    # The runtime keeps indexes of the view from the "changed" events (mesh.runtime.gossiper.Directory):
    # the answer that ends a join carries the member's entries, and announcing must not swallow them.
    member = GossipNode("m", 1, GossipConfig(), random.Random(1), 0.0, address="tcp://m:1")
    member.set("$node/m", {"agents": []}, 0.0, system=True)
    member.set("k", 1, 0.0)
    joiner = GossipNode("j", 2, GossipConfig(), random.Random(2), 0.0, address="tcp://j:1", joining=True)
    (ack,) = [out for out in member.step("j", joiner.join_message(), 0.1) if type(out).__name__ == "Send"]
    effects = joiner.step("m", ack.message, 0.2)
    assert joiner.announced
    changed = {e.data["key"] for e in effects if getattr(e, "name", None) == "changed"}
    assert changed == {"$node/m", "k"}
