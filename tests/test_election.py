"""Raft-lite election under the simulator: one leader per term, a leader again after healing.

`MESH_SOAK_SEEDS=10000 pytest tests/test_election.py -k many_seeds` runs a longer soak.
"""

from __future__ import annotations

import os
import random

import pytest

from mesh.core.effects import Send
from mesh.core.election import LEADER, ElectionConfig, Elector
from mesh.core.fencing import accept
from mesh.sim import Network, Simulation

SEEDS = int(os.environ.get("MESH_SOAK_SEEDS", "1000"))
# Fast timings keep 1000 seeds quick (the protocol only cares about ratios); the defaults are 10x.
CFG = ElectionConfig(election_min=0.150, election_max=0.300, heartbeat=0.050)


class Conducting(Elector):
    """An elector whose leader makes a decision every tick, fenced by the rule the runtime calls
    (:func:`mesh.core.fencing.accept`): a node acts on a decision only from the leader it
    follows, of its current term, and at least as new as that leader's last heartbeat announced."""

    accepted: list  # (node, term, seq, node's persisted term when it accepted)

    def tick(self, now):
        out = super().tick(now)
        if self.role == LEADER:
            seq = self.decided()
            out += [Send(p, {"t": "decide", "term": self.term, "seq": seq}) for p in self.peers]
        return out

    def step(self, sender, message, now):
        if isinstance(message, dict) and message.get("t") == "decide":
            term, seq = message["term"], message["seq"]
            decision = {"term": term, "leader": sender, "seq": seq, "replicas": {}}
            if accept(decision, self.leader, self.term, self.leader_seq) is not None:
                self.accepted.append((self.name, term, seq, self.storage.get("term", 0)))
                self.leader_seq = seq
            return []
        return super().step(sender, message, now)


def make(seed: int, n: int = 5, loss: float = 0.1, duplicate: float = 0.05, log: list | None = None):
    names = [f"v{i}" for i in range(n)]

    def factory(name, rng, storage, now):
        if log is None:
            return Elector(name, names, CFG, rng, storage, now)
        node = Conducting(name, names, CFG, rng, storage, now)
        node.accepted = log
        return node

    sim = Simulation(seed, names, factory, Network(delay=(0.001, 0.02), loss=loss, duplicate=duplicate),
                     tick_interval=0.01)
    return sim, names


def leaders_per_term(sim: Simulation) -> dict[int, set[str]]:
    seen: dict[int, set[str]] = {}
    for _, node, ev in sim.events:
        if ev.name == "leader":
            seen.setdefault(ev.data["term"], set()).add(node)
    return seen


def one_agreed_leader(sim: Simulation):
    live = sim.live()
    leaders = [m for m in live.values() if m.role == LEADER]
    if len(leaders) != 1:
        return None
    lead = leaders[0]
    if all(m.leader == lead.name and m.term == lead.term for m in live.values()):
        return lead
    return None


def chaos(seed: int, log: list | None = None):
    sim, names = make(seed, log=log)
    rng = random.Random(seed)
    t = 0.5
    for _ in range(6):
        t += rng.uniform(0.2, 1.0)
        what = rng.random()
        if what < 0.3:
            a = rng.sample(names, rng.randint(1, 2))
            sim.at(t, lambda a=a: sim.partition(a, [n for n in names if n not in a]))
            sim.at(t + rng.uniform(0.2, 1.5), sim.heal)
        elif what < 0.6:
            victim = rng.choice(names)
            sim.at(t, lambda v=victim: v in sim.live() and sim.crash(v))
            sim.at(t + rng.uniform(0.1, 1.0), lambda v=victim: v not in sim.live() and sim.restart(v))
        else:
            sim.at(t, lambda: None)
    end = t + 2.0
    sim.at(end, sim.heal)
    for n in names:
        sim.at(end, lambda n=n: n not in sim.live() and sim.restart(n))
    sim.run(end)
    return sim, end


@pytest.mark.timeout(600)
def test_many_seeds_never_have_two_leaders_in_a_term_and_elect_one_after_healing():
    problems = []
    terms_with_a_leader = 0
    terms_started = 0
    decisions = 0
    for seed in range(SEEDS):
        log: list = []
        sim, end = chaos(seed, log)
        # Fencing: no node ever acts on a decision of a term older than the newest it knows,
        # and each node acts on terms in order.
        stale = [entry for entry in log if entry[1] < entry[3]]
        if stale:
            problems.append((seed, "stale decisions accepted", stale[:3]))
        last: dict[str, int] = {}
        for node, term, _, _ in log:
            if term < last.get(node, 0):
                problems.append((seed, "a node went back to an older term's decisions", node))
                break
            last[node] = term
        decisions += len(log)
        terms_started += len({ev.data["term"] for _, _, ev in sim.events if ev.name == "candidate"})
        two = {t: ls for t, ls in leaders_per_term(sim).items() if len(ls) > 1}
        if two:
            problems.append((seed, "two leaders", two))
            continue
        # After the network heals, a leader within a bounded number of election timeouts.
        if not sim.run_until(lambda s: one_agreed_leader(s) is not None, end + 10 * CFG.election_max, step=0.01):
            problems.append((seed, "no leader after healing"))
        terms_with_a_leader += len(leaders_per_term(sim))
    assert problems == [], problems[:10]
    assert terms_with_a_leader > SEEDS  # the chaos really made elections happen, again and again
    assert decisions > 100 * SEEDS  # and leaders really decided, and followers really acted
    split = 1 - terms_with_a_leader / terms_started
    print(f"\n{SEEDS} seeds: {terms_started} terms started, {terms_with_a_leader} elected a leader;"
          f" split-vote (or lost) rate {split:.1%}; {decisions} decisions acted on, 0 stale")


def test_a_restarted_voter_never_votes_twice_in_a_term():
    storage: dict = {}
    rng = random.Random(1)
    a = Elector("a", ["a", "b", "c"], CFG, rng, storage, 0.0)
    assert [type(o).__name__ for o in a.step("b", {"t": "vote", "term": 1}, 0.0)] == ["Send"]
    assert storage == {"term": 1, "voted_for": "b"}
    again = Elector("a", ["a", "b", "c"], CFG, rng, storage, 0.5)  # the same storage after a restart
    (reply,) = again.step("c", {"t": "vote", "term": 1}, 0.5)
    assert reply.message["granted"] is False


def test_pre_vote_keeps_a_rejoining_node_from_deposing_a_healthy_leader():
    sim, names = make(3, loss=0.0, duplicate=0.0)
    assert sim.run_until(lambda s: one_agreed_leader(s) is not None, 5.0, step=0.01)
    leader = one_agreed_leader(sim)
    term = leader.term
    outsider = next(n for n in names if n != leader.name)
    sim.isolate(outsider)
    sim.run(sim.now + 3.0)  # the outsider times out again and again, but only pre-votes
    assert sim.nodes[outsider].term == term
    sim.heal()
    sim.run(sim.now + 2.0)
    assert one_agreed_leader(sim) is not None and one_agreed_leader(sim).name == leader.name
    assert one_agreed_leader(sim).term == term


def test_an_isolated_leader_steps_down_and_the_majority_elects_another():
    sim, names = make(4, loss=0.0, duplicate=0.0)
    assert sim.run_until(lambda s: one_agreed_leader(s) is not None, 5.0, step=0.01)
    old = one_agreed_leader(sim)
    sim.isolate(old.name)
    sim.run(sim.now + 2.0)
    assert old.role != LEADER  # check-quorum
    others = [m for n, m in sim.live().items() if n != old.name]
    assert sum(m.role == LEADER for m in others) == 1
    # Fencing: every node of the majority now refuses decisions from the old leader's term.
    assert all(m.term > old.term and not m.accepts(old.term) for m in others)


def test_leadership_transfer_hands_over_at_once():
    sim, names = make(5, loss=0.0, duplicate=0.0)
    assert sim.run_until(lambda s: one_agreed_leader(s) is not None, 5.0, step=0.01)
    old = one_agreed_leader(sim)
    sim._apply(old.name, old.transfer(sim.now))
    started = sim.now
    assert sim.run_until(lambda s: (lambda lead: lead is not None and lead.name != old.name)(one_agreed_leader(s)),
                         started + 1.0, step=0.005)
    assert sim.now - started < CFG.election_min


def test_the_config_refuses_nonsense():
    with pytest.raises(ValueError):
        ElectionConfig(heartbeat=0.2, election_min=0.15)


def test_an_observer_follows_the_leader_and_never_stands():
    storage: dict = {}
    obs = Elector("o", ["a", "b", "c"], CFG, random.Random(2), storage, 0.0)
    assert not obs.voter
    assert obs.tick(10.0) == []  # far past any election timeout: it never stands
    obs.step("a", {"t": "heartbeat", "term": 4, "seq": 7}, 10.0)
    assert (obs.leader, obs.term, obs.leader_seq) == ("a", 4, 7)
    assert obs.step("a", {"t": "vote", "term": 5}, 10.1) == [] and storage.get("voted_for") is None
    # A leader's heartbeats go to observers too.
    lead = Elector("a", ["a"], CFG, random.Random(3), {}, 0.0)
    lead.set_voters(["a"], ["o"], 0.0)
    out = lead.tick(1.0)
    assert lead.role == LEADER and any(isinstance(o, Send) and o.to == "o" for o in lead.tick(1.1) + out)


def test_two_leaders_of_one_term_from_merged_meshes_hand_over_to_a_newer_term():
    a = Elector("a", ["a"], CFG, random.Random(4), {}, 0.0)
    b = Elector("b", ["b"], CFG, random.Random(5), {}, 0.0)
    a.tick(1.0)
    b.tick(1.0)
    assert a.role == b.role == LEADER and a.term == b.term == 1
    a.set_voters(["a", "b"], (), 1.0)
    b.set_voters(["a", "b"], (), 1.0)
    # The lower name stands for term 2 at once; the other leaves term 1 without a leader and votes.
    asks = a.step("b", {"t": "heartbeat", "term": 1, "seq": 0}, 1.01)
    assert a.role != LEADER and a.term == 2 and any(isinstance(o, Send) and o.message["t"] == "vote" for o in asks)
    assert b.step("a", {"t": "heartbeat", "term": 1, "seq": 0}, 1.01) == [Event_stepped_down(1)]
    assert b.role != LEADER and b.term == 2 and b.leader is None
    (reply,) = b.step("a", {"t": "vote", "term": 2}, 1.02)
    assert reply.message["granted"] is True
    a.step("b", reply.message, 1.03)
    assert a.role == LEADER and a.term == 2 and not b.accepts(1)


def Event_stepped_down(term):
    from mesh.core.effects import Event

    return Event("stepped_down", {"term": term, "why": "another leader of this term"})


def test_a_follower_that_hears_a_second_leader_in_its_term_ends_the_term():
    f = Elector("f", ["a", "b", "f"], CFG, random.Random(6), {}, 0.0)
    f.step("a", {"t": "heartbeat", "term": 3, "seq": 0}, 0.1)
    assert (f.leader, f.term) == ("a", 3)
    f.step("b", {"t": "heartbeat", "term": 3, "seq": 0}, 0.2)
    assert f.leader is None and f.term == 4
    # Both leaders learn term 4 from its answers and step down.
    (reply,) = f.step("a", {"t": "heartbeat", "term": 3, "seq": 0}, 0.3)
    assert reply.message == {"t": "heartbeat_reply", "term": 4}


def merging(seed: int, log: list):
    """Two meshes (a random split of five voters, each knowing only its own side) elect
    apart, then meet: they learn each other's voters at slightly different times."""
    rng = random.Random(seed)
    names = [f"v{i}" for i in range(5)]
    shuffled = names[:]
    rng.shuffle(shuffled)
    cut = rng.randint(1, 4)
    sides = [sorted(shuffled[:cut]), sorted(shuffled[cut:])]

    def factory(name, node_rng, storage, now):
        side = sides[0] if name in sides[0] else sides[1]
        node = Conducting(name, storage.get("voters", side), CFG, node_rng, storage, now)
        node.accepted = log
        return node

    sim = Simulation(seed, names, factory, Network(delay=(0.001, 0.02), loss=0.1, duplicate=0.05), tick_interval=0.01)
    sim.partition(*sides)
    return sim, names, sides, rng


@pytest.mark.timeout(600)
def test_many_seeds_of_two_meshes_meeting_end_with_one_leader_in_a_newer_term():
    problems = []
    for seed in range(max(50, SEEDS // 4)):
        log: list = []
        sim, names, sides, rng = merging(seed, log)
        # Each side elects a leader of its own (a side of two needs both; a side of one, itself).
        if not sim.run_until(lambda s, sides=sides: all(any(s.nodes[n].role == LEADER for n in side) for side in sides), 5.0,
                             step=0.01):
            problems.append((seed, "a side elected no leader", sides))
            continue
        sim.run(sim.now + rng.uniform(0.0, 1.0))
        before = max(m.term for m in sim.live().values())
        merged_at = sim.now
        sim.heal()
        for n in names:
            def learn(n=n, sim=sim, names=names):
                sim.nodes[n].storage["voters"] = names
                sim.nodes[n].set_voters(names, (), sim.now)
            sim.at(merged_at + rng.uniform(0.0, 0.2), learn)
        if not sim.run_until(lambda s, merged_at=merged_at: s.now > merged_at + 0.3 and one_agreed_leader(s) is not None,
                             merged_at + 10 * CFG.election_max, step=0.01):
            problems.append((seed, "no single leader after the meshes met"))
            continue
        lead = one_agreed_leader(sim)
        if lead.term <= before:
            problems.append((seed, f"the merged mesh is led in term {lead.term}, not newer than {before}"))
        after = {t: ls for t, ls in leaders_per_term(sim).items() if t > before and len(ls) > 1}
        if after:
            problems.append((seed, "two leaders of one term after the merge", after))
        stale = [entry for entry in log if entry[1] < entry[3]]
        if stale:
            problems.append((seed, "stale decisions accepted", stale[:3]))
        # Once the merged mesh has its leader, nobody acts on a decision of a term from before.
        late = [entry for entry in log if entry[1] <= before and entry[3] > before]
        if late:
            problems.append((seed, "a decision of a side's term acted on after the merge", late[:3]))
    assert problems == [], problems[:10]
