"""The fencing rules and the majority rule, as pure functions of time and views (mesh.core.fencing, quorum)."""

from __future__ import annotations

import pytest

from mesh.core import fencing
from mesh.core.fencing import (FenceConfig, Handoff, HeartbeatLedger, Lease, StaleDecisions, accept, carry_out,
                               may_replace)
from mesh.core.quorum import blocks_majority, has_quorum, majority

pytestmark = [pytest.mark.timeout(30), pytest.mark.fast_check]


# -- the majority rule -----------------------------------------------------------------------------


def test_a_majority_is_more_than_half():
    assert [majority(n) for n in range(1, 8)] == [1, 2, 2, 3, 3, 4, 4]
    with pytest.raises(ValueError):
        majority(-1)


def test_any_two_majorities_of_one_voter_list_share_a_voter():
    from itertools import combinations

    for n in range(1, 7):
        voters = [f"v{i}" for i in range(n)]
        quorums = [set(c) for k in range(1, n + 1) for c in combinations(voters, k) if has_quorum(voters, c)]
        assert all(a & b for a, b in combinations(quorums, 2))


def test_has_quorum_counts_only_voters_and_an_empty_list_has_none():
    assert has_quorum(["a", "b", "c"], ["a", "b", "x", "y"])
    assert not has_quorum(["a", "b", "c"], ["a", "x", "y"])
    assert not has_quorum([], ["a"])


def test_blocking_a_majority_takes_a_majority_of_an_odd_list_and_half_of_an_even_one():
    assert [blocks_majority(3, k) for k in range(4)] == [False, False, True, True]
    assert [blocks_majority(4, k) for k in range(5)] == [False, False, True, True, True]


def test_election_and_intentions_count_with_the_one_majority_rule():
    import inspect

    from mesh.core import election, intentions

    for module in (election, intentions):
        source = inspect.getsource(module)
        assert "// 2 + 1" not in source.split('"""', 2)[2], module.__name__  # the note may state the formula


# -- the config ------------------------------------------------------------------------------------


def test_the_defaults_are_the_runtime_timings_and_nonsense_is_refused():
    assert (fencing.LEASE_S, fencing.FENCE_GRACE_S, fencing.REPLACE_AFTER_S) == (1.5, 0.5, 3.0)
    with pytest.raises(ValueError, match="replace_after > lease \\+ grace"):
        FenceConfig(lease=2.0, grace=1.0, replace_after=3.0)
    with pytest.raises(ValueError, match="lease > 0"):
        FenceConfig(lease=0.0)


# -- accepting an assignment ----------------------------------------------------------------------------


def entry(leader="n1", term=2, seq=3, replicas=None):
    return {"term": term, "leader": leader, "seq": seq, "replicas": {} if replicas is None else replicas}


def test_only_the_current_leaders_assignment_of_the_current_term_and_seq_is_accepted():
    assert accept(entry(), "n1", 2, 3) is not None
    assert accept(entry(), None, 2, 0) is None
    assert accept(entry(leader="n2"), "n1", 2, 0) is None
    assert accept(entry(term=1), "n1", 2, 0) is None
    assert accept(entry(seq=2), "n1", 2, 3) is None  # older than the leader's heartbeat announced
    assert accept(entry(), "n1", 2, 3, newest_term=3) is None  # a newer term's assignment is in view
    assert accept({"term": 2, "leader": "n1", "seq": "3", "replicas": {}}, "n1", 2, 0) is None
    assert accept({"term": 2, "leader": "n1", "seq": 3, "replicas": []}, "n1", 2, 0) is None
    assert accept("not a dict", "n1", 2, 0) is None


def test_a_node_stops_what_is_not_given_to_it_and_starts_what_is_unless_held():
    replicas = {"a": {"node": "n1"}, "b": {"node": "n2"}, "c": {"node": "n1"}, "d": {"node": "n1", "hold": ["n2"]},
                "e": {"node": "n1", "hold": ["n2"]}, "bad": "junk"}
    stop, start = carry_out({"replicas": replicas}, "n1", ["a", "b", "e", "gone"])
    assert stop == ["b", "gone"]
    assert start == ["c"]  # d is held (not started); e is held and kept


# -- the lease -------------------------------------------------------------------------------------------


def test_the_lease_lapses_when_the_evidence_is_older_than_the_lease_and_holds_again_with_fresh_evidence():
    lease = Lease("n1")
    voters = ["n1", "n2", "n3"]
    first = lease.check(voters, {"n2": 10.0}, 10.5, ["a"])
    assert first.holds and first.until == 11.5 and not first.lapsed and first.stop == ()
    lapsed = lease.check(voters, {"n2": 10.0}, 11.5, ["a", "b"])
    assert not lapsed.holds and lapsed.lapsed and lapsed.stop == ("a", "b") and lapsed.grace == 0.5
    again = lease.check(voters, {"n2": 10.0}, 11.6, ["a"])
    assert not again.lapsed and again.stop == ("a",)  # logged once, stopped every time
    back = lease.check(voters, {"n3": 11.7}, 11.8)
    assert back.holds and back.regained and back.since == 11.8


def test_the_voters_in_touch_are_those_the_lease_counts_and_the_node_itself():
    lease = Lease("n1")
    voters = ["n3", "n1", "n2", "n4"]
    evidence = {"n2": 10.0, "n3": 8.0}
    assert lease.in_touch(voters, evidence, 11.0) == ["n1", "n2"]
    assert lease.in_touch(voters, evidence, 9.0) == ["n3", "n1", "n2"]
    assert lease.in_touch(voters, evidence, 11.5) == ["n1"]  # exactly `lease` old: out of touch, as check counts
    assert lease.check(voters, evidence, 11.5).holds is False


def test_a_node_alone_or_without_voters_always_holds_its_lease():
    assert Lease("n1").check(["n1"], {}, 1e9).holds
    assert Lease("n1").check([], {}, 1e9).holds


def test_an_agents_watchdog_gets_a_deadline_whenever_other_voters_exist_even_if_the_lease_cannot_lapse():
    # Two voters: n1's silence cannot let n2 form a majority, so the lease cannot lapse ...
    until = Lease("n1").check(["n1", "n2"], {"n2": 0.0}, 100.0).until
    assert until == float("inf")
    # ... but a third voter may join before n1 (paused) tells its agents: they get now + lease.
    assert fencing.watchdog_until(until, 100.0, ["n1", "n2"], "n1") == 100.0 + fencing.LEASE_S
    assert fencing.watchdog_until(until, 100.0, ["n1", "n2"], "n1", lease=4.0) == 104.0
    # A finite lease is handed on as it is; the sole voter (or no voters) gives no deadline.
    assert fencing.watchdog_until(42.0, 100.0, ["n1", "n2", "n3"], "n1") == 42.0
    assert fencing.watchdog_until(float("inf"), 100.0, ["n1"], "n1") == float("inf")
    assert fencing.watchdog_until(float("inf"), 100.0, [], "n1") == float("inf")


def test_an_agents_deadline_is_renewed_only_if_the_lease_held_through_it():
    lease = Lease("n1")
    three = ["n1", "n2", "n3"]
    assert lease.check(three, {"n2": 10.0}, 10.5).holds and lease.since == 10.5
    assert fencing.renews(lease.since, 11.0)  # held since 10.5, through the deadline 11.0
    assert not fencing.renews(lease.since, 10.0)  # it began to hold after the deadline 10.0
    assert not lease.check(three, {"n2": 10.0}, 12.0).holds  # lapsed at 11.5 ...
    assert not fencing.renews(lease.since, 11.0) and not fencing.renews(lease.since, None)
    assert lease.check(three, {"n2": 12.5}, 13.0).holds  # ... and holds again from 13.0:
    assert not fencing.renews(lease.since, 11.0)  # an agent whose deadline was 11.0 must stop
    assert fencing.renews(lease.since, 13.2) and fencing.renews(lease.since, None)


def test_a_leader_may_decide_only_with_a_majority_in_touch():
    lease = Lease("n1")
    four = ["n1", "n2", "n3", "n4"]
    half = lease.check(four, {"n2": 0.0}, 0.5)
    assert half.holds and not half.may_decide
    assert lease.check(four, {"n2": 0.0, "n3": 0.0}, 0.5).may_decide


def test_a_node_that_comes_back_starts_nothing_until_its_leader_confirms_a_newer_heartbeat():
    lease = Lease("n1")
    assert not lease.may_start("n2", {"n2": 5.0})  # never checked: does not hold
    lease.check(["n1", "n2", "n3"], {"n2": 5.0, "n3": 5.0}, 5.5)  # holds since 5.5
    assert not lease.may_start("n2", {"n2": 5.0, "n3": 5.0})
    assert lease.may_start("n2", {"n2": 5.5})
    assert lease.may_start("n1", {})  # its own decisions
    assert not lease.may_start(None, {"n2": 9.0})


def test_the_ledger_turns_confirmed_heartbeats_into_when_they_were_issued():
    ledger = HeartbeatLedger(keep=3.0)
    for counter in range(1, 40):
        ledger.issued(counter, counter * 0.1)
    ledger.confirmed("n2", 35)
    assert ledger.evidence == {"n2": pytest.approx(3.5)}
    ledger.confirmed("n2", 30)  # an older confirmation changes nothing
    assert ledger.evidence["n2"] == pytest.approx(3.5)
    ledger.confirmed("n3", 2)  # long forgotten: too old to count anyway
    assert "n3" not in ledger.evidence
    assert len(ledger._issued) <= 31  # bounded by keep / interval
    ledger.confirmed("n4", 1000)  # never issued
    assert "n4" not in ledger.evidence


def test_a_restarted_counter_starts_the_ledger_afresh():
    ledger = HeartbeatLedger()
    ledger.issued(100, 1.0)
    ledger.confirmed("n2", 100)
    ledger.issued(1, 2.0)
    assert ledger.evidence == {}  # what the last incarnation's heartbeats proved is gone
    ledger.confirmed("n2", 100)
    assert ledger.evidence == {}
    ledger.confirmed("n2", 1)
    assert ledger.evidence == {"n2": 2.0}


def test_the_voter_to_sync_with_next_is_the_one_longest_out_of_touch_taken_in_turn():
    ledger = HeartbeatLedger()
    for counter, at in enumerate([1.0, 2.0, 3.0], start=1):
        ledger.issued(counter, at)
    ledger.confirmed("n2", 1)
    ledger.confirmed("n3", 2)
    ledger.confirmed("n4", 3)
    assert ledger.sync_next(["n2", "n3", "n4"], 3.2, every=0.5) == "n2"  # n4 is not due
    assert ledger.sync_next(["n2", "n3", "n4"], 3.3, every=0.5) == "n3"  # n2 was just asked
    assert ledger.sync_next(["n2", "n3", "n4"], 3.4, every=0.5) == "n2"  # neither answered: in turn
    assert ledger.sync_next(["n4"], 3.4, every=0.5) is None  # nobody due: any peer will do
    assert ledger.sync_next(["n5"], 3.4, every=0.5) == "n5"  # never confirmed: due


# -- the leader's side --------------------------------------------------------------------------------------


def test_a_leader_replaces_a_node_only_after_replace_after_of_silence():
    assert not may_replace(10.0, 12.99)
    assert may_replace(10.0, 13.0)


def test_a_replica_is_given_only_once_every_other_usable_node_let_it_go():
    h = Handoff()
    give = {"a": {"node": "n2", "group": "a"}}
    usable = ["n1", "n2", "n3"]
    held = h.release(3, 1, give, {}, {}, usable)
    assert held["a"]["hold"] == ["n1", "n3"] and held["a"]["node"] == "n2"
    acted = {"n1": (3, 1), "n3": (3, 1)}
    assert h.release(3, 2, give, acted, {"n1": ["a"]}, usable)["a"]["hold"] == ["n1"]
    released = h.release(3, 3, give, acted, {}, usable)["a"]
    assert "hold" not in released and released["group"] == "a"
    # Given to n2 at seq 3: moving it on waits until n2 has acted after that and let it go.
    move = {"a": {"node": "n1"}}
    assert h.release(3, 4, move, {"n2": (3, 3), "n3": (3, 3)}, {}, usable)["a"]["hold"] == ["n2"]
    assert "hold" not in h.release(3, 5, move, {"n2": (3, 4), "n3": (3, 4)}, {}, usable)["a"]


def test_a_decision_computed_but_not_published_gives_nothing_so_a_move_is_released_after_one_round():
    h = Handoff()
    give, usable = {"a": {"node": "n1"}}, ["n1", "n2"]
    h.record(1, 2, h.holds(1, give, {"n2": (1, 1)}, {}, usable))  # published as seq 2: n1 may start it
    assert h.given == {"a": {"n1": 2}}
    assert h.holds(1, give, {"n1": (1, 2), "n2": (1, 2)}, {"n1": ["a"]}, usable) == give  # unchanged: not published
    move = {"a": {"node": "n2"}}
    held = h.holds(1, move, {"n1": (1, 2), "n2": (1, 2)}, {"n1": ["a"]}, usable)
    assert held["a"]["hold"] == ["n1"]
    h.record(1, 3, held)  # published as seq 3: n1 acts on it and lets go
    assert "hold" not in h.holds(1, move, {"n1": (1, 3), "n2": (1, 3)}, {}, usable)["a"]


def test_handoff_ignores_unusable_nodes_drained_replicas_and_forgets_the_last_term():
    h = Handoff()
    assert h.release(1, 1, {"a": {"node": None, "draining": "n2"}}, {}, {}, ["n1", "n2"]) == {
        "a": {"node": None, "draining": "n2"}}
    assert "hold" not in h.release(1, 2, {"a": {"node": "n1"}}, {}, {}, ["n1"])["a"]
    assert h.release(2, 1, {"a": {"node": "n1"}}, {"n2": (1, 9)}, {}, ["n1", "n2"])["a"]["hold"] == ["n2"]
    assert h.given == {}  # nothing given in term 2 yet
    h.release(2, 2, {"b": {"node": "n1"}}, {"n2": (2, 1)}, {}, ["n1", "n2"])
    assert set(h.given) == {"b"}  # replicas no longer decided are forgotten


def test_malformed_acted_records_never_count_as_letting_go():
    h = Handoff()
    for acted in ("3#1", [3], (3, "1"), None, {"term": 3}):
        out = h.release(3, 5, {"a": {"node": "n1"}}, {"n2": acted}, {}, ["n1", "n2"])
        assert out["a"]["hold"] == ["n2"], acted


# -- refused decisions ------------------------------------------------------------------------------------------


def test_older_decisions_count_as_refused_once_each_and_only_after_settling():
    stale = StaleDecisions()
    old = {2: {"leader": "n2", "seq": 7}, 3: {"leader": "n1", "seq": 1}}
    assert stale.observe(old, 3, following=True, now=0.0) == []  # history while catching up
    assert stale.observe({**old, 2: {"leader": "n2", "seq": 8}}, 3, True, 0.5) == []
    refusals = stale.observe({**old, 2: {"leader": "n2", "seq": 9}}, 3, True, 1.5)
    assert [(r.term, r.seq, r.leader, r.current) for r in refusals] == [(2, 9, "n2", 3)]
    assert stale.observe({**old, 2: {"leader": "n2", "seq": 9}}, 3, True, 1.6) == []
    assert stale.refused == 1


def test_stale_decision_marks_stay_bounded_by_what_is_in_view():
    stale = StaleDecisions()
    stale.observe({}, 5, True, 0.0)
    for seq in range(1000):
        stale.observe({4: {"leader": "n2", "seq": seq}}, 5, True, 2.0 + seq)
    assert len(stale._seen) <= 4 * 1 + 64 + 1
    assert stale.refused == 1000


def test_the_module_note_says_what_it_guarantees_and_assumes():
    note = fencing.__doc__ or ""
    for words in ("Guarantee", "Assumes", "one-way", "REPLACE_AFTER_S", "watchdog"):
        assert words in note, words


def test_a_followers_step_reuses_its_orders_only_for_the_same_assignment_and_the_same_placed_replicas():
    """A node steps every tick with the assignment and the placed replicas it keeps while unchanged;
    a new assignment, or a new mapping of what runs here, is worked out afresh (never a stale answer)."""
    f = fencing.Follower("a")
    entry = {"term": 1, "leader": "a", "seq": 1,
             "replicas": {"w.0": {"node": "a"}, "w.1": {"node": "a"}, "w.2": {"node": "b"}}}
    placed: dict[str, bool] = {}
    step = dict(voters=["a"], leader="a", term=1, need_seq=1)
    first = f.step(0.0, assignments={1: entry}, placed=placed, **step)
    assert (first.stop, first.start) == ((), ("w.0", "w.1"))
    assert f.step(0.1, assignments={1: entry}, placed=placed, **step).start == ("w.0", "w.1")
    running = {"w.0": True, "w.1": True}  # both started: the caller hands a new mapping
    assert f.step(0.2, assignments={1: entry}, placed=running, **step).start == ()
    moved = {**entry, "seq": 2, "replicas": {"w.0": {"node": "a"}, "w.1": {"node": "b"}, "w.2": {"node": "b"}}}
    orders = f.step(0.3, assignments={1: moved}, placed=running, **dict(step, need_seq=2))
    assert (orders.stop, orders.start) == (("w.1",), ())
    assert f.step(0.4, assignments={1: moved}, placed={"w.0": True}, **dict(step, need_seq=2)).stop == ()
