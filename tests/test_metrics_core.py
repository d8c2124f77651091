"""mesh.core.metrics: the playbook's windowed figures from cumulative counters (pure)."""

from __future__ import annotations

import random

import pytest

from mesh.core.metrics import Reading, Window, conflicts_per_100, percentile


def test_rates_over_the_window_from_cumulative_counters():
    w = Window(window=60.0, resolution=5.0)
    assert w.rates().utilization is None
    for t in range(0, 121):  # a heartbeat a second: busy half the time, 10 messages a second, 2 ms wait each
        w.add(Reading(at=float(t), busy=t * 0.5, handled=t * 10, waited=t * 10 * 0.002))
    r = w.rates()
    assert r.utilization == pytest.approx(0.5)
    assert r.throughput_per_s == pytest.approx(10.0)
    assert r.wait_s_avg == pytest.approx(0.002)
    # Only the last minute counts: idle from now on, the figures fall to zero within a window.
    for t in range(121, 190):
        w.add(Reading(at=float(t), busy=60.0, handled=1200, waited=2.4))
    r = w.rates()
    assert r.utilization == 0.0 and r.throughput_per_s == 0.0 and r.wait_s_avg is None
    assert len(w.readings) <= 60 / 5 + 2  # bounded whatever the heartbeat rate


def test_rates_until_now_read_the_silence_since_the_latest_reading_as_unchanged_counters():
    """Issue 17: an agent reports only when its counters change, so its rates run until now."""
    w = Window(window=60.0, resolution=1.0)
    w.add(Reading(0.0, 0.0, 0, 0.0))
    w.add(Reading(10.0, 5.0, 10, 1.0))
    assert w.rates().utilization == 0.5 and w.rates().throughput_per_s == 1.0
    assert w.rates(5.0) == w.rates()  # a "now" before the latest reading changes nothing
    later = w.rates(20.0)
    assert later.utilization == 0.25 and later.throughput_per_s == 0.5 and later.wait_s_avg == 0.1
    # Silent for more than a window: nothing happened within it.
    idle = w.rates(100.0)
    assert idle.utilization == 0.0 and idle.throughput_per_s == 0.0 and idle.wait_s_avg is None
    # The window starts at the newest reading a whole window before the end (as readings are kept).
    assert w.rates(65.0).utilization == 5.0 / 65.0
    assert w.rates(75.0).utilization == 0.0  # from the reading at 10 s on, nothing changed


def test_a_restart_that_counts_from_zero_starts_afresh_instead_of_negative_rates():
    w = Window(window=60.0, resolution=1.0)
    for t in range(10):
        w.add(Reading(float(t), busy=t * 0.9, handled=t * 100, waited=0.0))
    w.add(Reading(10.0, busy=0.0, handled=0, waited=0.0))  # the agent restarted
    assert w.rates().utilization is None  # one reading: no span yet
    w.add(Reading(12.0, busy=0.2, handled=20, waited=0.0))
    r = w.rates()
    assert r.utilization == pytest.approx(0.1) and r.throughput_per_s == pytest.approx(10.0)


def test_utilization_stays_within_0_and_1_for_any_readings():
    rng = random.Random(7)
    for seed in range(200):
        w = Window(window=rng.uniform(1, 30), resolution=rng.uniform(0.1, 1))
        t = busy = waited = 0.0
        handled = 0
        for _ in range(rng.randint(1, 60)):
            t += rng.uniform(0, 2)
            busy += rng.uniform(0, 3)  # jittery counters may claim more busy time than elapsed
            handled += rng.randint(0, 5)
            waited += rng.uniform(0, 0.1)
            w.add(Reading(t, busy, handled, waited))
        u = w.rates().utilization
        assert u is None or 0.0 <= u <= 1.0, seed


def test_percentile_and_conflict_rate():
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    samples = [float(i) for i in range(1, 101)]
    assert percentile(samples, 50) == 50.0 and percentile(samples, 99) == 99.0 and percentile(samples, 100) == 100.0
    assert conflicts_per_100({}) is None
    assert conflicts_per_100({"approved": 75, "objected": 20, "withdrawn": 5}) == pytest.approx(25.0)
    with pytest.raises(ValueError):
        Window(window=0)
