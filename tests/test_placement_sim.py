"""The whole placement loop under the simulator (mesh.sim.placement): election, conductor, fencing.

Over many seeds of partitions, one-way link losses, crashes, restarts and paused daemons:
no replica ever runs on two nodes at once (counting time), and once the network is whole
again every replica runs somewhere within a bounded time.

1000 seeds per suite run: 26 s on the 2-core machine this was written on, 51 s with two
CPU hogs beside it. ``MESH_SOAK=1`` runs 10,000 (about 4 minutes); ``MESH_SOAK_SEEDS=N``
any number; ``python -m mesh.sim.placement --seeds 10000`` is the same soak from the
command line.
"""

from __future__ import annotations

import os
import random
import time
from functools import partial

import pytest

from mesh.sim import Network
from mesh.sim.placement import (LIVENESS_S, ORPHAN_S, SPECS, Outcome, PlacementWorld, Rules, main, run_seed, soak)

SEEDS = int(os.environ.get("MESH_SOAK_SEEDS") or (10_000 if os.environ.get("MESH_SOAK") == "1" else 1000))


def describe(o: Outcome) -> str:
    faults = "\n".join(f"  {t:7.3f} {what}" for t, what in o.faults)
    return f"seed {o.seed} ({o.nodes} nodes): overlaps {o.overlaps}, not running {o.unplaced}\n{faults}"


@pytest.mark.timeout(max(300, SEEDS // 3))
def test_many_seeds_never_run_a_replica_twice_and_run_every_replica_after_healing():
    failures: list[str] = []
    started = time.monotonic()
    summary = soak(range(SEEDS), report=lambda o: failures.append(describe(o)))
    elapsed = time.monotonic() - started
    assert not failures, "\n".join(failures[:5])
    assert summary["slowest_recovery_s"] <= LIVENESS_S
    print(f"\n{SEEDS} seeds in {elapsed:.1f} s; slowest recovery after healing {summary['slowest_recovery_s']} s;"
          f" {summary['refused']} stale decisions refused")


# Seeds on which the simulation finds a replica running twice when one rule is left out
# (found with `python -m mesh.sim.placement --without RULE` and `--evidence heard`): each of
# these rules is needed, and the simulation sees what it prevents. Two rules of
# mesh.core.fencing are not here: the leader's majority guard and refusing to act once a
# newer term's assignment is in view. Their removal showed nothing in 2000 seeds each; they are
# what the safety argument of the module note rests on (the first) and defence in depth (the
# second), and the fencing scenarios show what each decides.
NEEDED = [("evidence", 46), ("evidence", 97), ("handoff", 149), ("handoff", 165), ("catch_up", 37),
          ("catch_up", 536), ("watchdog", 1), ("watchdog", 17)]


@pytest.mark.fast_check
@pytest.mark.timeout(60)
@pytest.mark.parametrize("rule, seed", NEEDED)
def test_without_each_rule_the_simulation_finds_a_replica_running_twice(rule, seed):
    weaker = Rules.without([], evidence="heard") if rule == "evidence" else Rules.without([rule])
    assert run_seed(seed, weaker).overlaps, f"seed {seed} no longer shows what {rule} prevents: pick another"
    assert run_seed(seed).ok


@pytest.mark.fast_check
@pytest.mark.timeout(60)
def test_the_same_seed_replays_the_same_run():
    for seed in (3, 37, 149):
        a, b = run_seed(seed), run_seed(seed)
        assert a.runs == b.runs and a.faults == b.faults and a.recovered_in == b.recovered_in
        assert a.runs  # something ran


def world(*off: str) -> PlacementWorld:
    names = ["n0", "n1", "n2"]
    return PlacementWorld(1, names, {k: v for k, v in SPECS.items() if k in names}, Network(delay=(0.001, 0.01)),
                          Rules.without(off))


def running(w: PlacementWorld) -> dict[str, str]:
    return {p.replica: p.node for p in w.procs.all if p.end is None or p.end > w.now}


@pytest.mark.fast_check
@pytest.mark.timeout(30)
def test_a_healthy_mesh_runs_every_replica_once_within_a_few_seconds():
    w = world()
    w.run(3.0)
    assert sorted(running(w)) == ["a.0", "a.1", "b", "c"]
    assert len({p.node for p in w.procs.all}) >= 2  # spread
    w.run(20.0)
    assert len(w.procs.all) == 4 and not w.procs.overlaps()  # nothing moved, nothing restarted


@pytest.mark.fast_check
@pytest.mark.timeout(30)
def test_a_crashed_nodes_agents_stop_soon_and_run_elsewhere_after_replace_after():
    w = world()
    w.run(5.0)
    victim = running(w)["a.1"]
    w.crash(victim)
    crashed_at = w.now
    w.run(crashed_at + ORPHAN_S)
    assert victim not in running(w).values()
    w.run(crashed_at + 10.0)
    assert sorted(running(w)) == ["a.0", "a.1", "b", "c"] and victim not in running(w).values()
    moved = [p for p in w.procs.all if p.replica == "a.1" and p.node != victim]
    assert moved and moved[0].start >= crashed_at + 3.0  # REPLACE_AFTER_S of silence first
    assert not w.procs.overlaps()


@pytest.mark.fast_check
@pytest.mark.timeout(30)
def test_a_one_way_cut_loses_one_direction_only_and_a_pause_holds_messages_until_resumed():
    w = world()
    w.run(3.0)
    w.cut_one_way("n0", "n1")
    w.cut_one_way("n0", "n2")
    w.run(5.0)
    assert w.now - w.nodes["n1"].gossip.view["n0"].heard_at > 1.5  # nothing of n0 gets out
    assert w.now - w.node("n0").gossip.view["n1"].heard_at < 0.5  # n0 still hears the others
    assert w.node("n0").follower.lease.fenced  # and nobody confirms its heartbeats
    w.heal()
    w.pause("n2")
    w.run(6.0)
    assert w.held["n2"]  # messages wait in its socket buffer
    before = w.node("n2").gossip.view["n0"].hb
    w.resume("n2")
    assert "n2" not in w.held and w.node("n2").gossip.view["n0"].hb > before


@pytest.mark.fast_check
@pytest.mark.timeout(30)
def test_the_soak_command_prints_a_summary_and_refuses_unknown_rules(capsys):
    assert main(["--seeds", "2"]) == 0
    assert "'failing': []" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--seeds", "1", "--without", "nonsense"])


@pytest.mark.fast_check
@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", range(3))
def test_a_mesh_whose_nodes_start_one_by_one_starts_every_agent_once_five_per_node_and_moves_nothing(seed):
    # Eight nodes declaring five agents each, started within 4 s in random order (n0 first), 2 % loss:
    # every agent starts once (no extra spawn), spread leaves five on each node, no decision moves one.
    names = [f"n{i}" for i in range(8)]
    specs = {x: [{"name": f"{x}-a{j}", "replicas": 1} for j in range(5)] for x in names}
    w = PlacementWorld(seed, names, specs, Network(delay=(0.0005, 0.05), loss=0.02))
    rng = random.Random(seed)
    for x in names[1:]:
        w.crash(x)
        w.at(rng.uniform(0.0, 4.0), partial(w.restart, x))
    w.run(20.0)
    assert len(w.procs.all) == 40 and not w.procs.overlaps()
    per_node: dict[str, int] = {}
    for p in w.procs.all:
        per_node[p.node] = per_node.get(p.node, 0) + 1
    assert sorted(per_node.values()) == [5] * 8
    assert sum(w.node(x).moves for x in w.nodes) == 0
