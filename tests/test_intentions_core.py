"""Intentions (mesh.core.intentions): voters approve or object, two overlapping never both held.

Unit tests of each behaviour, then a randomized simulation over many seeds: 5 voters (and
3), proposers (one of them also a voter) proposing random overlapping claim sets at random
times, over a network that loses, duplicates and delays messages, with partitions and
crashes of voters and proposers. Safety is checked over continuous time: no two approved
intentions with overlapping claims are held at one moment, an intention being held, in its
proposer's view, from its approval until done() or its hold deadline ("until"), crash or
not; the proposers' own ``holding()`` is probed every tick as well. Then, on a healthy network,
every proposal is decided within its window, and among concurrent proposals every one that
outranks all those overlapping it is approved.

`MESH_SOAK_SEEDS=10000 pytest tests/test_intentions_core.py -k many_seeds` runs a longer soak.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass, field

import pytest

from mesh.core.effects import Event
from mesh.core.intentions import (
    ACK,
    APPROVED,
    COMMIT,
    NO,
    OBJECTED,
    PREPARE,
    PROMISE,
    PROPOSER_KINDS,
    RELEASE,
    RELEASED,
    VOTER_KINDS,
    WAIT,
    WITHDRAWN,
    Intention,
    IntentionProposer,
    IntentionVoter,
    overlap,
    precedence,
)
from mesh.sim import Network, Simulation

SEEDS = int(os.environ.get("MESH_SOAK_SEEDS", "1000"))
SETTLE = 0.05
RETRY = 0.04
TICK = 0.01


class Both:
    """A node that is a voter and a proposer: messages routed by their kind, as the runtime does."""

    def __init__(self, name, voters, storage, now):
        self.voter = IntentionVoter(name, storage, now)
        self.proposer = IntentionProposer(name, voters, now, settle=SETTLE, retry=RETRY)

    def step(self, sender, message, now):
        kind = message.get("t") if isinstance(message, dict) else None
        kind = kind if isinstance(kind, str) else None
        if kind in VOTER_KINDS:
            return self.voter.step(sender, message, now)
        if kind in PROPOSER_KINDS:
            return self.proposer.step(sender, message, now)
        return []

    def tick(self, now):
        return self.voter.tick(now) + self.proposer.tick(now)


def proposer_of(node) -> IntentionProposer:
    return node.proposer if isinstance(node, Both) else node


def build(seed=0, n_voters=5, proposers=("a", "b"), both=(), delay=(0.001, 0.005), loss=0.0, duplicate=0.0,
          tick=TICK, trace=True):
    voters = [f"v{i}" for i in range(n_voters)]

    def factory(name, rng, storage, now):
        if name in both:
            return Both(name, voters, storage, now)
        if name in voters:
            return IntentionVoter(name, storage, now)
        return IntentionProposer(name, voters, now, settle=SETTLE, retry=RETRY)

    names = voters + [p for p in proposers if p not in voters]
    return Simulation(seed, names, factory, Network(delay=delay, loss=loss, duplicate=duplicate), tick_interval=tick,
                      trace=trace)


def propose(sim, node, iid, claims, priority=0, timestamp=None, window=0.5, hold=1.0):
    p = proposer_of(sim.nodes[node])
    ts = sim.now if timestamp is None else timestamp
    sim._apply(node, p.propose(iid, claims, priority, ts, window, hold, sim.now))


def done(sim, node, iid):
    sim._apply(node, proposer_of(sim.nodes[node]).done(iid, sim.now))


def decisions(sim) -> dict:
    """id -> (time, node, data) of every ``decided`` event; fails on a second decision."""
    out = {}
    for at, node, ev in sim.events:
        if ev.name == "decided":
            assert ev.data["id"] not in out, f"decided twice: {ev.data['id']}"
            out[ev.data["id"]] = (at, node, ev.data)
    return out


def outcome(sim, iid):
    found = decisions(sim).get(iid)
    return found and found[2]["outcome"]


# -- unit tests ----------------------------------------------------------------------------


def test_precedence_is_priority_then_timestamp_then_id():
    a = Intention("z", "p", frozenset({"x"}), 2, 5.0)
    b = Intention("a", "p", frozenset({"x"}), 1, 0.0)
    c = Intention("b", "p", frozenset({"y"}), 1, 1.0)
    d = Intention("c", "p", frozenset({"y", "x"}), 1, 1.0)
    assert sorted([d, c, b, a], key=precedence) == [a, b, c, d]
    assert overlap(a, d) and not overlap(a, c)


def test_a_lone_intention_is_approved_and_held_until_its_hold_deadline():
    sim = build()
    propose(sim, "a", "a1", ["db"], hold=1.0)
    sim.run(0.5)
    at, node, data = decisions(sim)["a1"]
    assert (node, data["outcome"], data["reasons"], data["holders"]) == ("a", APPROVED, [], [])
    assert SETTLE <= at < SETTLE + 0.05
    until = data["until"]
    assert at < until <= at + 1.0
    assert sim.nodes["a"].holding(sim.now) == {"a1": until}
    sim.run(until + 0.05)
    assert sim.nodes["a"].holding(sim.now) == {}
    assert [ev.data for _, _, ev in sim.events if ev.name == "expired"] == [{"id": "a1"}]
    assert all(not sim.nodes[v].owners() for v in ("v0", "v1", "v2", "v3", "v4"))  # released at the deadline


CONTESTS = {
    # name: (first, second, winner): each (id, priority, timestamp)
    "priority": (("a1", 1, 5.0), ("b1", 2, 9.0), "b1"),
    "timestamp": (("a1", 1, 5.0), ("b1", 1, 4.0), "b1"),
    "id": (("b1", 1, 5.0), ("a1", 1, 5.0), "a1"),
}


@pytest.mark.parametrize("case", sorted(CONTESTS))
@pytest.mark.parametrize("seed", range(25))
def test_of_two_overlapping_concurrent_intentions_the_one_of_higher_precedence_is_approved(case, seed):
    (id1, prio1, ts1), (id2, prio2, ts2), winner = CONTESTS[case]
    sim = build(seed, delay=(0.001, 0.02), duplicate=0.2)
    first, second = ("a", "b") if seed % 2 else ("b", "a")  # whoever sends first
    propose(sim, first, id1, ["db", "x"], prio1, ts1)
    propose(sim, second, id2, ["db", "y"], prio2, ts2)
    sim.run(1.0)
    found = decisions(sim)
    loser = id2 if winner == id1 else id1
    assert found[winner][2]["outcome"] == APPROVED
    lost = found[loser][2]
    assert lost["outcome"] == OBJECTED
    assert winner in lost["holders"] + lost["outranked_by"]
    assert any(repr(winner) in r and "'db'" in r for r in lost["reasons"]), lost["reasons"]


def test_intentions_that_do_not_overlap_are_both_approved():
    sim = build()
    propose(sim, "a", "a1", ["db", "x"])
    propose(sim, "b", "b1", ["cache", "y"], priority=5)
    sim.run(0.5)
    assert outcome(sim, "a1") == outcome(sim, "b1") == APPROVED


def test_an_objection_names_the_holder_and_done_frees_the_claims_for_a_later_intention():
    sim = build()
    propose(sim, "a", "a1", ["db"], hold=10.0)
    sim.run(0.3)
    assert outcome(sim, "a1") == APPROVED
    propose(sim, "b", "b1", ["db", "cache"], priority=9)  # precedence does not preempt a hold
    sim.run(0.6)
    at, _, data = decisions(sim)["b1"]
    assert data["outcome"] == OBJECTED and data["holders"] == ["a1"]
    assert at - 0.3 < 0.05  # fail fast: a majority refused at once
    assert "claim 'db' is held by intention 'a1' of 'a'" in data["reasons"]
    done(sim, "a", "a1")
    assert sim.nodes["a"].holding(sim.now) == {}
    sim.run(0.65)
    propose(sim, "b", "b2", ["db", "cache"])
    sim.run(1.0)
    assert outcome(sim, "b2") == APPROVED


def test_a_hold_lapses_and_frees_the_claims_even_if_its_proposer_is_gone():
    sim = build()
    propose(sim, "a", "a1", ["db"], hold=0.5)
    sim.run(0.2)
    until = decisions(sim)["a1"][2]["until"]
    sim.crash("a")  # no release will ever come: the voters' own expiry frees the claims
    propose(sim, "b", "b1", ["db"])
    sim.run(until - 0.01)
    assert outcome(sim, "b1") == OBJECTED
    sim.run(until + 0.03)  # each voter expires it hold seconds after it accepted the commit
    propose(sim, "b", "b2", ["db"])
    sim.run(until + 0.5)
    (b2_at, _, data) = decisions(sim)["b2"]
    assert data["outcome"] == APPROVED and b2_at > until


def test_voters_restarted_all_at_once_still_hold_what_they_committed():
    sim = build()
    propose(sim, "a", "a1", ["db"], hold=5.0)
    sim.run(0.3)
    assert outcome(sim, "a1") == APPROVED
    for v in ("v0", "v1", "v2", "v3", "v4"):
        sim.crash(v)
        sim.restart(v)
    propose(sim, "b", "b1", ["db"], priority=100)
    sim.run(1.0)
    assert decisions(sim)["b1"][2]["holders"] == ["a1"]


def test_an_undecided_intention_can_be_withdrawn_and_frees_its_promises():
    sim = build()
    propose(sim, "a", "a1", ["db"])
    sim.run(0.02)  # promised, not yet committed (settle)
    done(sim, "a", "a1")
    sim.run(0.1)
    assert decisions(sim)["a1"][2]["outcome"] == WITHDRAWN
    assert all(not sim.nodes[f"v{i}"].owners() for i in range(5))
    propose(sim, "b", "b1", ["db"], priority=-1)
    sim.run(0.5)
    assert outcome(sim, "b1") == APPROVED


def test_a_majority_of_voters_unreachable_means_objected_at_the_window():
    sim = build()
    for v in ("v0", "v1", "v2"):
        sim.isolate(v)
    propose(sim, "a", "a1", ["db"], window=0.4)
    sim.run(1.0)
    at, _, data = decisions(sim)["a1"]
    assert data["outcome"] == OBJECTED and 0.4 <= at <= 0.4 + 2 * TICK
    assert "no majority promised within the 0.4 s window: 2 promised, 0 refused, 3 did not answer" in data["reasons"][-1]


def voter(storage=None, now=0.0, **kw):
    return IntentionVoter("v", {} if storage is None else storage, now, **kw)


def prepare(iid, claims, prio=0, ts=0.0, window=1.0):
    return {"t": PREPARE, "id": iid, "claims": claims, "prio": prio, "ts": ts, "window": window}


def kinds(effects):
    return [(e.to, e.message["t"]) for e in effects]


def test_a_voter_revokes_a_promise_of_lower_precedence_and_the_revoked_one_waits_in_line():
    v = voter()
    assert kinds(v.step("a", prepare("low", ["db", "x"], prio=1), 0.0)) == [("a", PROMISE)]
    out = v.step("b", prepare("high", ["db", "y"], prio=2), 0.1)
    assert kinds(out) == [("a", WAIT), ("b", PROMISE)]
    assert out[0].message["outranked"] == [["high", "b", ["db"]]]
    assert v.owners()["db"]["id"] == "high" and "x" not in v.owners()  # all of "low" is dropped
    assert [w["id"] for w in v.waiting()] == ["low"]  # it still wants its claims
    # The loser asks again: still in line, naming who outranks it; nothing changes.
    (again,) = v.step("a", prepare("low", ["db", "x"], prio=1), 0.2)
    assert again.message == {"t": WAIT, "id": "low", "outranked": [["high", "b", ["db"]]]}
    # A COMMIT of an intention that only waits (its proposer counted the promise before the
    # revocation reached it) is not accepted, nor refused: it waits in line still.
    (commit,) = v.step("a", {"t": COMMIT, "id": "low", "hold": 1.0}, 0.2)
    assert commit.message == {"t": WAIT, "id": "low", "outranked": [["high", "b", ["db"]]]}
    assert [w["id"] for w in v.waiting()] == ["low"] and v.owners()["db"]["id"] == "high"
    # The commit is acknowledged, and the one in line is told who holds the claim now.
    assert kinds(v.step("b", {"t": COMMIT, "id": "high", "hold": 1.0}, 0.3)) == [("b", ACK), ("a", WAIT)]
    # A committed claim is never taken, not even by higher precedence.
    (held,) = v.step("c", prepare("top", ["y", "z"], prio=99), 0.4)
    assert held.message == {"t": NO, "id": "top", "held": [["high", "b", ["y"]]]}


def test_duplicates_are_idempotent_and_stale_messages_of_a_finished_intention_are_refused():
    storage: dict = {}
    v = voter(storage)
    for _ in range(2):
        assert kinds(v.step("a", prepare("a1", ["db"]), 0.0)) == [("a", PROMISE)]
    for _ in range(2):
        assert kinds(v.step("a", {"t": COMMIT, "id": "a1", "hold": 5.0}, 0.1)) == [("a", ACK)]
    assert kinds(v.step("a", prepare("a1", ["db"]), 0.15)) == [("a", ACK)]  # a late duplicate PREPARE
    assert len(storage["commits"]) == 1 and v.owners()["db"]["expires"] == pytest.approx(5.1)  # not extended
    for _ in range(2):
        assert kinds(v.step("a", {"t": RELEASE, "id": "a1"}, 0.2)) == [("a", RELEASED)]
    assert storage["commits"] == {} and v.owners() == {}
    for stale in (prepare("a1", ["db"]), {"t": COMMIT, "id": "a1", "hold": 5.0}):
        (no,) = v.step("a", stale, 0.3)
        assert no.message["t"] == NO and "finished" in no.message["why"]
    assert v.owners() == {}
    # Another node cannot release (or commit) a's intention.
    v.step("a", prepare("a2", ["db"]), 0.4)
    v.step("b", {"t": RELEASE, "id": "a2"}, 0.4)
    assert v.owners()["db"]["id"] == "a2"


def test_a_promise_expires_at_the_proposers_deadline_and_a_commit_after_its_hold():
    v = voter()
    v.step("a", prepare("a1", ["db"], window=0.5), 0.0)
    v.step("a", prepare("a1", ["db"], window=0.5), 0.3)  # a retransmission does not lengthen it
    assert v.tick(0.49) == [] and "db" in v.owners()
    v.tick(0.5)  # the proposer decided by then: a stale promise blocks nobody after
    assert v.owners() == {}
    v.step("a", prepare("a2", ["db"], window=0.5), 1.0)
    v.step("a", {"t": COMMIT, "id": "a2", "hold": 2.0}, 1.1)
    v.tick(3.09)
    assert v.owners()["db"]["state"] == "committed"
    v.tick(3.1)
    assert v.owners() == {}


def test_a_restarted_voter_keeps_its_commits_but_not_its_promises():
    storage: dict = {}
    v = voter(storage)
    v.step("a", prepare("a1", ["db", "x"], prio=1), 0.0)
    v.step("a", {"t": COMMIT, "id": "a1", "hold": 10.0}, 0.1)
    v.step("b", prepare("b1", ["cache"]), 0.2)
    storage = json.loads(json.dumps(storage))  # what the runtime writes to disk and reads back
    again = voter(storage, now=1.0)
    assert again.owners() == {"db": {"id": "a1", "proposer": "a", "state": "committed", "expires": 10.1},
                              "x": {"id": "a1", "proposer": "a", "state": "committed", "expires": 10.1}}
    (no,) = again.step("c", prepare("c1", ["x"], prio=50), 1.0)
    assert no.message["held"] == [["a1", "a", ["x"]]]
    # The promise to b1 was lost: its COMMIT is refused (that is what makes losing it safe).
    (no,) = again.step("b", {"t": COMMIT, "id": "b1", "hold": 10.0}, 1.0)
    assert no.message["t"] == NO and "no promise" in no.message["why"]
    assert kinds(again.step("a", {"t": COMMIT, "id": "a1", "hold": 10.0}, 1.0)) == [("a", ACK)]
    # A clock that restarted (monotonic after a reboot) never lengthens a commit.
    rebooted = voter(json.loads(json.dumps(storage)), now=0.0)
    assert rebooted.owners()["db"]["expires"] == 10.0
    assert voter(json.loads(json.dumps(storage)), now=20.0).owners() == {}


def test_a_voter_refuses_windows_and_holds_beyond_its_limits():
    v = voter(max_window=2.0, max_hold=5.0)
    (no,) = v.step("a", prepare("a1", ["db"], window=3.0), 0.0)
    assert "window of 3 s exceeds" in no.message["why"]
    v.step("a", prepare("a2", ["db"]), 0.0)
    (no,) = v.step("a", {"t": COMMIT, "id": "a2", "hold": 6.0}, 0.0)
    assert "hold of 6 s exceeds" in no.message["why"]


def test_the_proposer_releases_what_it_hears_of_a_closed_intention():
    p = IntentionProposer("a", ["v0", "v1", "v2"], 0.0, settle=0.0, retry=0.1)
    p.propose("a1", ["db"], 0, 0.0, 1.0, 1.0, 0.0)
    assert kinds(p.step("v0", {"t": PROMISE, "id": "a1"}, 0.01)) == []
    assert kinds(p.step("v1", {"t": PROMISE, "id": "a1"}, 0.01)) == [("v0", COMMIT), ("v1", COMMIT)]
    assert kinds(p.step("v2", {"t": PROMISE, "id": "a1"}, 0.01)) == [("v2", COMMIT)]
    p.step("v0", {"t": ACK, "id": "a1"}, 0.02)
    (decided,) = p.step("v1", {"t": ACK, "id": "a1"}, 0.02)
    assert decided.data["outcome"] == APPROVED and decided.data["until"] == 1.01
    assert kinds(p.done("a1", 0.5)) == [("v0", RELEASE), ("v1", RELEASE), ("v2", RELEASE)]
    assert kinds(p.step("v2", {"t": ACK, "id": "a1"}, 0.51)) == [("v2", RELEASE)]
    assert p.done("a1", 0.6) == []
    for v in ("v0", "v1"):
        p.step(v, {"t": RELEASED, "id": "a1"}, 0.6)
    assert kinds(p.tick(0.61)) == [("v2", RELEASE)]  # retried until each voter confirms
    p.step("v2", {"t": RELEASED, "id": "a1"}, 0.62)
    assert p.tick(0.63) == [] and p.pending() == [] and p.holding(0.63) == {}
    p.propose("a2", ["db"], 0, 0.0, 1.0, 1.0, 0.7)  # the id is free again only once forgotten


def test_propose_refuses_nonsense():
    p = IntentionProposer("a", ["v0"], 0.0, settle=0.05)
    good = dict(intention_id="a1", claims=["db"], priority=0, timestamp=0.0, window=1.0, hold=1.0, now=0.0)
    for bad in ({"intention_id": ""}, {"claims": []}, {"claims": "db"}, {"claims": ["db", 3]}, {"claims": [""]},
                {"priority": math.nan}, {"priority": True}, {"timestamp": "now"}, {"window": 0.05}, {"window": -1},
                {"hold": 0}, {"hold": math.inf}, {"claims": [f"c{i}" for i in range(1000)]}):
        with pytest.raises(ValueError):
            p.propose(**{**good, **bad})
    p.propose(**good)
    with pytest.raises(ValueError):
        p.propose(**good)  # the id is in use
    with pytest.raises(ValueError):
        IntentionProposer("a", [], 0.0)
    with pytest.raises(ValueError):
        IntentionVoter("v", {}, 0.0, max_hold=0)


JUNK = [None, 3, "x", b"x", [], {}, {"t": None}, {"t": PREPARE}, {"t": PREPARE, "id": 3},
        {"t": PREPARE, "id": "", "claims": ["a"], "prio": 0, "ts": 0, "window": 1},
        {"t": PREPARE, "id": "q", "claims": "a", "prio": 0, "ts": 0, "window": 1},
        {"t": PREPARE, "id": "q", "claims": [], "prio": 0, "ts": 0, "window": 1},
        {"t": PREPARE, "id": "q", "claims": [["a"]], "prio": 0, "ts": 0, "window": 1},
        {"t": PREPARE, "id": "q", "claims": ["a"], "prio": math.nan, "ts": 0, "window": 1},
        {"t": PREPARE, "id": "q", "claims": ["a"], "prio": 10**400, "ts": 0, "window": 1},
        {"t": PREPARE, "id": "q", "claims": ["a"], "prio": 0, "ts": math.inf, "window": 1},
        {"t": PREPARE, "id": "q", "claims": ["a"], "prio": 0, "ts": 0, "window": 0},
        {"t": PREPARE, "id": "q", "claims": ["a"], "prio": False, "ts": 0, "window": 1},
        {"t": PREPARE, "id": "q" * 10_000, "claims": ["a"], "prio": 0, "ts": 0, "window": 1},
        {"t": PREPARE, "id": "q", "claims": ["a"] * 100_000, "prio": 0, "ts": 0, "window": 1},
        {"t": COMMIT, "id": "q", "hold": -1}, {"t": COMMIT, "id": "q", "hold": "1"}, {"t": COMMIT, "id": "q"},
        {"t": RELEASE, "id": ["q"]}, {"t": RELEASE}, {"t": "i.what", "id": "q"},
        {"t": NO, "id": "a1", "held": "x"}, {"t": NO, "id": "a1", "held": [["x"]]},
        {"t": NO, "id": "a1", "held": [["x", "y", "z"]]}, {"t": NO, "id": "a1", "outranked": [[1, "y", ["z"]]]},
        {"t": NO, "id": "a1", "held": [["x", "y", ["z"]]] * 50}, {"t": NO, "id": "a1", "why": 7},
        {"t": NO, "id": "a1", "why": "w" * 10_000}, {"t": ACK, "id": None}, {"t": PROMISE, "id": {}}]


def test_malformed_messages_are_ignored():
    rng = random.Random(5)
    v = voter()
    v.step("a", prepare("held", ["a", "z"]), 0.0)
    v.step("a", {"t": COMMIT, "id": "held", "hold": 100.0}, 0.0)
    before = v.owners()
    for message in JUNK + [{k: rng.choice([None, 1, "q", ["a"], math.nan, {}]) for k in ("t", "id", "claims", "hold")}
                           for _ in range(300)]:
        for sender in ("a", "", None, 7, "s" * 1000):
            assert v.step(sender, message, 1.0) == [] or message.get("t") in VOTER_KINDS
    assert v.owners() == before
    p = IntentionProposer("a", ["v0", "v1", "v2"], 0.0, settle=0.0)
    p.propose("a1", ["z"], 0, 0.0, 1.0, 1.0, 0.0)
    for message in JUNK:
        for sender in ("v0", "stranger", None):
            assert p.step(sender, message, 0.1) == []
    # A well-formed refusal from a non-voter is ignored too.
    for sender in ("x", "y", "z"):
        assert p.step(sender, {"t": NO, "id": "a1"}, 0.1) == []
    assert p.pending() == ["a1"]


def test_junk_mixed_into_a_simulation_changes_nothing():
    sim = build()
    for i, message in enumerate(JUNK):
        for v in ("v0", "v1", "a"):
            sim.at(0.001 * i, lambda v=v, m=message: sim._apply(v, sim.nodes[v].step("b", m, sim.now)))
    propose(sim, "a", "a1", ["a", "z"])
    sim.run(0.5)
    assert outcome(sim, "a1") == APPROVED


# -- simulation over many seeds --------------------------------------------------------------

RESOURCES = [f"r{i}" for i in range(6)]
SOAK_TICK = 0.02  # every node ticks this often: the granularity of retries and deadlines
WINDOW = (0.15, 0.3)
HOLD = (0.05, 0.4)
JITTER = 0.02  # < SETTLE + min delay - max delay: a healthy batch is concurrent
DELAY = (0.001, 0.02)
CHAOS_END = 2.0
HEALTHY = CHAOS_END + 2 * WINDOW[1] + HOLD[1] + 0.2  # every chaos promise and commit has expired
BATCH_GAP = JITTER + WINDOW[1] + HOLD[1] + 0.1
BATCHES = 3


@dataclass
class Proposal:
    iid: str
    node: str
    claims: frozenset
    priority: int
    timestamp: float
    window: float
    hold: float
    at: float
    batch: int | None  # None: chaos phase
    ended: float = math.inf  # when done() ended its hold

    @property
    def intention(self) -> Intention:
        return Intention(self.iid, self.node, self.claims, self.priority, self.timestamp)


@dataclass
class World:
    sim: Simulation
    proposers: list
    rng: random.Random
    proposals: dict = field(default_factory=dict)
    violations: list = field(default_factory=list)
    crashes: int = 0
    end: float = 0.0

    def propose(self, node, batch=None):
        if node not in self.sim.live():
            return
        rng, now = self.rng, self.sim.now
        iid = f"{node}#{len(self.proposals)}"
        p = Proposal(iid, node, frozenset(rng.sample(RESOURCES, rng.choice((1, 1, 2, 2, 3)))), rng.randint(0, 2),
                     now, rng.uniform(*WINDOW), rng.uniform(*HOLD), now, batch)
        self.proposals[iid] = p
        self.sim._apply(node, proposer_of(self.sim.nodes[node]).propose(iid, p.claims, p.priority, p.timestamp,
                                                                         p.window, p.hold, now))
        if batch is None:  # sometimes during the window (a withdrawal), sometimes never (the hold lapses)
            if rng.random() < 0.7:
                self.sim.at(now + rng.uniform(0, p.window + p.hold), lambda: self.done(p))
        elif rng.random() < 0.5:  # healthy phase: only after the decision, or never
            self.sim.at(now + p.window + 2 * SOAK_TICK + rng.uniform(0, p.hold), lambda: self.done(p))

    def done(self, p: Proposal):
        node = self.sim.live().get(p.node)
        if node is None:
            return
        proposer = proposer_of(node)
        if p.iid in proposer.holding(self.sim.now):
            p.ended = self.sim.now
        self.sim._apply(p.node, proposer.done(p.iid, self.sim.now))

    def probe(self):
        """What the live proposers believe they hold right now: never two overlapping."""
        held = []
        for node in self.proposers:
            machine = self.sim.live().get(node)
            if machine is not None:
                held += [self.proposals[iid] for iid in proposer_of(machine).holding(self.sim.now)]
        for i, a in enumerate(held):
            for b in held[i + 1:]:
                if a.claims & b.claims:
                    self.violations.append(("probe", self.sim.now, a.iid, b.iid))
        if self.sim.now + SOAK_TICK < self.end:
            self.sim.at(self.sim.now + SOAK_TICK, self.probe)


def world(seed: int, n_voters: int, trace: bool = False) -> World:
    rng = random.Random(seed)
    voters = [f"v{i}" for i in range(n_voters)]
    proposers = ["p0", "p1", "p2", "v0"]  # v0 is a voter and a proposer
    sim = build(seed, n_voters, proposers, both=("v0",), delay=DELAY, loss=rng.choice((0.0, 0.05, 0.15, 0.3)),
                duplicate=0.1, tick=SOAK_TICK, trace=trace)
    w = World(sim, proposers, rng)
    for node in proposers:  # the chaos phase: proposals at random times
        t = rng.uniform(0, 0.3)
        while t < CHAOS_END:
            sim.at(t, lambda node=node: w.propose(node))
            t += rng.expovariate(1 / 0.25)
    everyone = voters + proposers[:3]
    t = 0.1
    while t < CHAOS_END:
        what = rng.random()
        if what < 0.35:
            side = rng.sample(everyone, rng.randint(1, len(everyone) - 1))
            sim.at(t, lambda side=side: sim.partition(side, [n for n in everyone if n not in side]))
            sim.at(t + rng.uniform(0.1, 0.8), sim.heal)
        elif what < 0.85:
            victim = rng.choice(voters if what < 0.7 else proposers)
            sim.at(t, lambda v=victim: v in sim.live() and (sim.crash(v), setattr(w, "crashes", w.crashes + 1)))
            sim.at(t + rng.uniform(0.05, 0.8), lambda v=victim: v not in sim.live() and sim.restart(v))
        t += rng.uniform(0.2, 0.6)

    def calm():
        sim.heal()
        sim.network = Network(delay=DELAY, loss=0.0, duplicate=0.1)
        for n in list(sim.storage):
            if n not in sim.live():
                sim.restart(n)

    sim.at(CHAOS_END, calm)
    for b in range(BATCHES):  # the healthy phase: batches of concurrent proposals
        start = HEALTHY + b * BATCH_GAP
        for _ in range(rng.randint(2, 5)):
            at, node = start + rng.uniform(0, JITTER), rng.choice(proposers)
            sim.at(at, lambda node=node, b=b: w.propose(node, b))
    w.end = HEALTHY + BATCHES * BATCH_GAP
    sim.at(0.0, w.probe)
    return w


def check(w: World, seed: int, stats: dict) -> list:
    problems = [(seed,) + v for v in w.violations]
    found = decisions(w.sim)
    # Safety, over continuous time: an approved intention is held from its approval until done() or "until".
    spans = []
    for iid, (at, _, data) in found.items():
        p = w.proposals[iid]
        if data["outcome"] == APPROVED:
            if not (at < data["until"] <= p.at + p.window + p.hold + 1e-9 and data["until"] <= at + p.hold):
                problems.append((seed, "bad until", iid, at, data["until"]))
            spans.append((at, min(data["until"], p.ended), p))
    spans.sort(key=lambda s: s[0])
    for i, (start, end, p) in enumerate(spans):
        for start2, end2, q in spans[i + 1:]:
            if start2 >= end:
                break
            if p.claims & q.claims:
                problems.append((seed, "both held", p.iid, (start, end), q.iid, (start2, end2)))
    for p in w.proposals.values():
        outcome_ = found.get(p.iid, (None, None, {}))[2].get("outcome")
        key = "healthy" if p.batch is not None else "chaos"
        stats[f"{key} {outcome_ or 'undecided'}"] = stats.get(f"{key} {outcome_ or 'undecided'}", 0) + 1
    # Liveness on the healthy network: decided within the window; every local top approved.
    healthy = [p for p in w.proposals.values() if p.batch is not None]
    for p in healthy:
        if p.iid not in found:
            problems.append((seed, "undecided", p.iid))
            continue
        took = found[p.iid][0] - p.at
        if took > p.window + 2 * SOAK_TICK:
            problems.append((seed, "decided late", p.iid, took, p.window))
        stats.setdefault("latency", []).append(took)
        rivals = [q for q in healthy if q.batch == p.batch and q is not p and q.claims & p.claims]
        top = all(precedence(p.intention) < precedence(q.intention) for q in rivals)
        if top and found[p.iid][2]["outcome"] != APPROVED:
            problems.append((seed, "the top of its batch was not approved", p.iid, found[p.iid][2]))
        if top and rivals:
            stats["contested tops"] = stats.get("contested tops", 0) + 1
    stats["crashes"] = stats.get("crashes", 0) + w.crashes
    return problems


def soak(n_voters: int, seeds: int):
    problems: list = []
    stats: dict = {}
    started = time.perf_counter()
    for seed in range(seeds):
        w = world(seed, n_voters)
        w.sim.run(w.end)
        problems += check(w, seed, stats)
        if len(problems) > 20:
            break
    assert problems == [], problems[:10]
    latency = sorted(stats.pop("latency"))
    p50, p99 = latency[len(latency) // 2], latency[int(len(latency) * 0.99)]
    print(f"\n{n_voters} voters, {seeds} seeds in {time.perf_counter() - started:.1f} s: "
          + ", ".join(f"{k} {v}" for k, v in sorted(stats.items()))
          + f"; healthy propose-to-decision p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
    return stats


@pytest.mark.timeout(900)
@pytest.mark.parametrize("n_voters,share", [(5, 1.0), (3, 0.2)])
def test_many_seeds_never_hold_overlapping_intentions_and_decide_in_time_when_healthy(n_voters, share):
    seeds = max(1, int(SEEDS * share))
    stats = soak(n_voters, seeds)
    # The chaos really contended, lost, crashed and approved; the healthy phase really contested.
    assert stats["chaos approved"] > 3 * seeds and stats["chaos objected"] > seeds
    assert stats["chaos withdrawn"] > 0 and stats["crashes"] > seeds
    assert stats["healthy approved"] > 3 * seeds and stats["healthy objected"] > seeds
    assert stats["contested tops"] > seeds
    assert not any(k.endswith("undecided") and k.startswith("healthy") for k in stats)


def test_the_same_seed_gives_the_same_trace():
    a, b = world(11, 5, trace=True), world(11, 5, trace=True)
    a.sim.run(a.end)
    b.sim.run(b.end)
    assert a.sim.trace_hash() == b.sim.trace_hash() and len(a.sim.events) > 20


def test_voters_only_send_and_proposers_emit_decided_and_expired():
    w = world(3, 5)
    w.sim.run(w.end)
    assert {node for _, node, _ in w.sim.events} <= set(w.proposers)
    assert {ev.name for _, _, ev in w.sim.events} == {"decided", "expired"}
    assert all(type(ev) is Event for _, _, ev in w.sim.events)


def test_a_proposal_is_checked_whole_before_it_is_kept_and_errors_quote_little_of_it():
    from mesh.core.intentions import MAX_HOLD, MAX_WINDOW, check_proposal

    good = dict(intention_id="a1", claims=["db"], priority=0, timestamp=0.0, window=1.0, hold=1.0)
    assert check_proposal(**good) == frozenset({"db"})
    for bad, named in (({"intention_id": "x" * 100_000}, "intention id"), ({"claims": {"db": 1}}, "claims"),
                       ({"claims": b"db"}, "claims"), ({"claims": ["y" * 100_000]}, "claims"),
                       ({"window": MAX_WINDOW + 1}, "window"), ({"hold": MAX_HOLD + 1}, "hold"),
                       ({"priority": "z" * 100_000}, "priority"), ({"hold": [1] * 100_000}, "hold")):
        with pytest.raises(ValueError) as refused:
            check_proposal(**{**good, **bad})
        assert named in str(refused.value) and len(str(refused.value)) < 300, str(refused.value)[:300]
    p = IntentionProposer("a", ["v0"], 0.0)
    with pytest.raises(ValueError):
        p.propose("a1", ["db"], 0, 0.0, MAX_WINDOW + 1, 1.0, 0.0)  # the proposer applies the same checks
    assert p.kept() == 0 and not p.in_use("a1")
    p.propose("a1", ["db"], 0, 0.0, 1.0, 1.0, 0.0)
    assert p.kept() == 1 and p.in_use("a1")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("proposer, iid", [("n1", "c1-abc"), ("a:b", "1:2"), ("12", "34"), ("é", ":"), ("x" * 200, "y")])
def test_a_storage_key_gives_back_its_proposer_and_intention_exactly(proposer, iid):
    from mesh.core.intentions import _parse_storage_key, storage_key

    assert _parse_storage_key(storage_key((proposer, iid))) == (proposer, iid)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("skey", ["", "x", ":ab", "5:ab", "-1:ab", None, 3, ["n", "i"]])
def test_a_malformed_storage_key_is_skipped_not_raised(skey):
    from mesh.core.intentions import _parse_storage_key

    assert _parse_storage_key(skey) is None


@pytest.mark.timeout(30)
def test_commits_written_in_the_old_json_key_form_still_bind_the_voter_after_an_upgrade(tmp_path):
    """intentions.json from before the core dropped its JSON codec: the node rewrites the keys on load,
    so the commit still holds its claim (an upgrade must not free a claim someone holds)."""
    import json

    from mesh.runtime.intents import NodeIntents

    old = {"commits": {json.dumps(["n2", "c7-x"]): {"claims": ["printer"], "prio": 0, "ts": 1.0, "expires": 1e12,
                                                       "hold": 60.0}}}
    (tmp_path / "intentions.json").write_text(json.dumps(old))
    node = NodeIntents("n1", True, tmp_path, lambda *a: None, ["n1"])
    assert list(node.storage["commits"]) == ["2:n2c7-x"]
    assert node.voter._owner == {"printer": ("n2", "c7-x")}  # the claim is still committed to its holder


# -- liveness under contention (issue 13) ----------------------------------------------------------
#
# N proposers (2 to 10, by seed) each propose in a loop on one claim over a healthy network:
# again as soon as the last proposal is decided; when approved, hold briefly, then done().
# The ideal is one approval per round of concurrent proposals: total proposals / N.

CONTENTION_S = 0.6  # simulated seconds per seed
CONTENTION_SEEDS = 10_000 if os.environ.get("MESH_SOAK") else 1000
CONTENTION_TIMEOUT_S = 300 * CONTENTION_SEEDS // 1000  # about 25 s per 1000 seeds on a quiet core
#: Approvals over the ideal, at least. Measured over 1000 seeds (3 voters, delays 1-5 ms,
#: windows 0.1-0.3 s, holds 1-10 ms, no wait): lowest 0.90 (two proposers: about 30
#: proposals a seed, so one approval is 0.07 of it), median 3.2 (deferred proposals are
#: served in turn within their window: more than one approval per round). The bound keeps a
#: margin below the lowest.
LEAST_OF_IDEAL = 0.75


class Looper:
    """A proposer that proposes again as soon as its last proposal is decided (see above)."""

    def __init__(self, name, voters, now, rng, wait):
        self.proposer = IntentionProposer(name, voters, now, settle=SETTLE, retry=RETRY)
        self.name, self.rng, self.wait = name, rng, wait
        self.sim = None
        self.proposed = self.approved = self.objected = 0
        self.late = []  # (iid, seconds from proposal to decision) beyond the deadline

    def start(self, sim):
        self.sim = sim
        sim.at(sim.now + self.rng.uniform(0, 0.01), self.propose)

    def propose(self):
        sim = self.sim
        iid = f"{self.name}#{self.proposed}"
        self.proposed += 1
        self.window = self.rng.uniform(0.1, 0.3)
        self.since = sim.now
        sim._apply(self.name, self._watch(self.proposer.propose(iid, ["printer"], 0, sim.now, self.window, 1.0,
                                                                 sim.now, self.wait)))

    def done(self, iid):
        self.sim._apply(self.name, self._watch(self.proposer.done(iid, self.sim.now)))
        self.propose()

    def _watch(self, effects):
        for e in effects:
            if type(e) is Event and e.name == "decided":
                took = self.sim.now - self.since
                if took > max(self.window, self.wait) + 2 * TICK:
                    self.late.append((e.data["id"], took))
                if e.data["outcome"] == APPROVED:
                    self.approved += 1
                    self.sim.at(self.sim.now + self.rng.uniform(0.001, 0.01), lambda iid=e.data["id"]: self.done(iid))
                else:
                    self.objected += 1
                    self.sim.at(self.sim.now, self.propose)
        return effects

    def step(self, sender, message, now):
        return self._watch(self.proposer.step(sender, message, now))

    def tick(self, now):
        return self._watch(self.proposer.tick(now))


def contention(seed: int, wait: float = 0.0):
    """One seed's world: (number of proposers, their Loopers, the simulation), run for CONTENTION_S."""
    rng = random.Random(seed)
    n = rng.randint(2, 10)
    voters = ["v0", "v1", "v2"]
    names = [f"p{i}" for i in range(n)]

    def factory(name, node_rng, storage, now):
        if name in voters:
            return IntentionVoter(name, storage, now)
        return Looper(name, voters, now, node_rng, wait)

    sim = Simulation(seed, voters + names, factory, Network(delay=(0.001, 0.005)), tick_interval=TICK, trace=False)
    loopers = [sim.nodes[name] for name in names]
    for looper in loopers:
        looper.start(sim)
    sim.run(CONTENTION_S)
    return n, loopers, sim


@pytest.mark.timeout(CONTENTION_TIMEOUT_S)
def test_under_contention_proposers_in_a_loop_get_at_least_the_ideal_share_of_approvals():
    started, fractions, problems = time.perf_counter(), [], []
    for seed in range(CONTENTION_SEEDS):
        n, loopers, sim = contention(seed)
        proposed = sum(x.proposed for x in loopers)
        decided = sum(x.approved + x.objected for x in loopers)
        fraction = sum(x.approved for x in loopers) / (proposed / n)
        fractions.append(fraction)
        problems += [(seed, late) for x in loopers for late in x.late]
        if fraction < LEAST_OF_IDEAL or decided < proposed - n:  # all but each one's last are decided
            problems.append((seed, n, fraction, proposed, decided))
    fractions.sort()
    print(f"\n{CONTENTION_SEEDS} seeds in {time.perf_counter() - started:.1f} s: approvals over the ideal, lowest"
          f" {fractions[0]:.2f}, median {fractions[len(fractions) // 2]:.2f}")
    assert problems == [], problems[:10]


@pytest.mark.timeout(CONTENTION_TIMEOUT_S)
def test_with_wait_every_proposal_in_line_is_approved_within_its_wait_when_holds_are_short():
    # Ten proposers at most, holds of 10 ms at most: a place in line comes within about a
    # second; 2 s of wait covers it with margin.
    seeds = CONTENTION_SEEDS // 10
    for seed in range(seeds):
        n, loopers, sim = contention(seed, wait=2.0)
        assert [x.late for x in loopers if x.late] == []
        assert sum(x.objected for x in loopers) == 0, (seed, [(x.name, x.objected) for x in loopers])
        assert sum(x.approved for x in loopers) >= sum(x.proposed for x in loopers) - n
