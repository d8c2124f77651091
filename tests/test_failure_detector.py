"""The phi-accrual detector and the hybrid logical clock, fed synthetic time."""

from __future__ import annotations

import random

import pytest

from mesh.core import hlc
from mesh.core.failure import DetectorConfig, PhiAccrualDetector


def feed(det, start, interval, count, jitter=0.0, rng=None):
    t = start
    for _ in range(count):
        t += interval + (rng.uniform(-jitter, jitter) if rng else 0.0)
        det.heartbeat(t)
    return t


def test_a_regular_peer_is_not_suspected_between_heartbeats():
    det = PhiAccrualDetector(DetectorConfig(), 0.0)
    t = feed(det, 0.0, 0.5, 100)
    assert det.phi(t + 0.5) < 1.0
    assert not det.suspect(t + 0.6)


def test_a_silent_peer_is_suspected_within_a_few_intervals():
    det = PhiAccrualDetector(DetectorConfig(), 0.0)
    t = feed(det, 0.0, 0.5, 100)
    assert det.suspect(t + 2.5)


def test_a_slow_but_regular_peer_is_not_suspected():
    det = PhiAccrualDetector(DetectorConfig(), 0.0)
    t = feed(det, 0.0, 2.0, 100, jitter=0.3, rng=random.Random(1))
    assert not det.suspect(t + 2.3)


def test_phi_grows_with_silence():
    det = PhiAccrualDetector(DetectorConfig(), 0.0)
    t = feed(det, 0.0, 0.5, 50, jitter=0.05, rng=random.Random(2))
    values = [det.phi(t + d) for d in (0.1, 0.5, 1.0, 2.0, 5.0, 60.0)]
    assert values == sorted(values)
    assert values[-1] > 8


def test_the_detector_config_refuses_nonsense():
    with pytest.raises(ValueError):
        DetectorConfig(threshold=0)
    with pytest.raises(ValueError):
        DetectorConfig(acceptable_pause=-1)


def test_hlc_timestamps_increase_even_when_the_wall_clock_stands_still_or_goes_back():
    clock = hlc.HybridClock()
    stamps = [clock.now(1000), clock.now(1000), clock.now(999), clock.now(1001)]
    assert stamps == sorted(stamps) and len(set(stamps)) == 4


def test_hlc_orders_a_received_event_after_its_cause():
    a, b = hlc.HybridClock(), hlc.HybridClock()
    sent = a.now(5000)  # a's clock runs ahead of b's
    received = b.observe(sent, 1000)
    assert received > sent
    assert b.now(1000) > received
    assert hlc.wall_ms(received) == 5000
