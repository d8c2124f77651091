"""The budget policy under simulation: CPU averages converge to the budget, stops are bounded,
memory verdicts use the exact figure only when the cheap one is over.

`MESH_SOAK_SEEDS=10000 pytest tests/test_budget_core.py -k many_seeds` runs a longer soak.
"""

from __future__ import annotations

import os
import random

import pytest

from mesh.core.budget import CpuThrottle, MemoryCheck

SEEDS = int(os.environ.get("MESH_SOAK_SEEDS", "1000"))


def simulate(budget: float, demand, seconds: float, rng: random.Random, jitter: float = 0.01):
    """A process tree that burns ``demand(t)`` cores whenever it is not stopped; the sampler
    wakes at the policy's next_check plus scheduling jitter. Returns (cpu used per second
    sampled every 0.5 s, longest stop)."""
    t, cpu = 0.0, 0.0
    policy = CpuThrottle(budget, t, cpu)
    stopped, stop_began, longest = False, 0.0, 0.0
    step = 0.001
    next_check = 0.0
    used_at: list[tuple[float, float]] = []
    while t < seconds:
        if t >= next_check:
            verdict = policy.sample(t, cpu)
            if verdict.stop and not stopped:
                stop_began = t
            if not verdict.stop and stopped:
                longest = max(longest, t - stop_began)
            stopped = verdict.stop
            next_check = verdict.next_check + rng.uniform(0, jitter)
        if not stopped:
            cpu += demand(t) * step
        t += step
        if not used_at or t - used_at[-1][0] >= 0.5:
            used_at.append((t, cpu))
    return used_at, longest, policy


def average(used_at, start: float, end: float) -> float:
    a = min(used_at, key=lambda p: abs(p[0] - start))
    b = min(used_at, key=lambda p: abs(p[0] - end))
    return (b[1] - a[1]) / (b[0] - a[0])


@pytest.mark.parametrize("budget", [0.1, 0.25, 0.5, 1.0])
def test_a_busy_loop_averages_its_budget_over_five_seconds(budget):
    used_at, longest, policy = simulate(budget, lambda t: 1.0, 7.0, random.Random(1))
    assert abs(average(used_at, 2.0, 7.0) - min(budget, 1.0)) <= 0.05 * max(budget, 0.2)
    assert longest <= 1.0 + 0.02
    if budget < 1.0:
        assert policy.throttled_for(7.0) > 0


def test_an_agent_under_its_budget_is_never_stopped():
    used_at, longest, policy = simulate(0.5, lambda t: 0.3, 5.0, random.Random(2))
    assert policy.throttled_for(5.0) == 0 and abs(average(used_at, 1.0, 5.0) - 0.3) < 0.01


@pytest.mark.timeout(600)
def test_many_seeds_random_demands_never_get_ahead_of_the_budget_and_stops_stay_short():
    """Whatever the tree does (idle, one busy process, eight), the CPU it has used by any time t
    stays within budget x t plus the burst and the overrun of the slices it took to learn its
    demand; no stop lasts longer than max_stop."""
    problems = []
    for seed in range(SEEDS // 10):  # each seed simulates 10 s in 1 ms steps
        rng = random.Random(seed)
        budget = rng.choice([0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0])
        changes = sorted((rng.uniform(0, 10), rng.choice([0.0, 0.2, 1.0, 2.0, 4.0, 8.0])) for _ in range(4))
        jitter = rng.choice([0.0, 0.002, 0.01])

        def demand(t, changes=changes):
            level = 1.0
            for at, d in changes:
                if t >= at:
                    level = d
            return level

        used_at, longest, policy = simulate(budget, demand, 10.0, rng, jitter=jitter)
        peak = max([1.0] + [d for _, d in changes])
        slack = policy.capacity + 2 * peak * (0.1 + jitter) + 0.01
        for t, used in used_at:
            if used > budget * t + slack:
                problems.append((seed, budget, round(t, 2), round(used, 3), round(budget * t + slack, 3)))
                break
        if longest > 1.0 + jitter + 0.002:
            problems.append((seed, "a stop of", longest))
    assert problems == [], problems[:5]


def test_memory_is_checked_exactly_only_when_the_upper_bound_is_over():
    check = MemoryCheck(256_000_000)
    assert not check.needs_exact(200_000_000)
    assert check.needs_exact(300_000_000)
    assert check.over(250_000_000) is None  # PSS under: shared pages made RSS look bigger
    assert check.over(301_000_000) == "memory budget exceeded: 301 MB > 256 MB"


def test_nonsense_budgets_are_refused():
    with pytest.raises(ValueError):
        CpuThrottle(0, 0.0, 0.0)
    with pytest.raises(ValueError):
        MemoryCheck(0)
