"""Mesh-wide pools and rate limits with real processes: never more leases than the size, a dead
holder's units come back when its lease expires, and an election neither loses nor doubles them."""

from __future__ import annotations

import concurrent.futures
import signal
import time

import psutil
import pytest

import mesh
from conftest import wait_until

pytestmark = pytest.mark.timeout(120)

POOL = '[pools.db]\nsize = 3\nlease = "2s"\n\n[limits.api]\nrate = 5\nper = "1s"\n\n'


def max_overlap(journal) -> tuple[int, int]:
    events = []
    for line in journal.read_text().splitlines():
        t, what, who = line.split()
        events.append((float(t), 0 if what == "release" else 1, who))
    events.sort()
    held, peak, grants = set(), 0, 0
    for _, kind, who in events:
        if kind:
            assert who not in held, f"{who} granted twice without a release"
            held.add(who)
            grants += 1
        else:
            held.discard(who)
        peak = max(peak, len(held))
    return peak, grants


def test_many_agents_contend_for_a_pool_of_three_and_never_hold_more(start_node, tmp_path):
    journal = tmp_path / "pool.journal"
    spec_agents = (f'[[agents]]\nname = "user"\nclass = "actors:PoolUser"\nreplicas = 8\n'
                   f'config = {{ journal = "{journal}" }}\n')
    node = start_node(POOL + spec_agents, name="t")
    client = node.client()
    refs = [client.actor(f"user.{i}") for i in range(8)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda r: r.ask({"rounds": 12}, timeout=90), refs))
    assert got == [12] * 8
    peak, grants = max_overlap(journal)
    assert grants == 96 and peak == 3, (peak, grants)
    snap = node.status()["resources"]
    assert snap["pools"]["db"]["held"] == 0 and snap["pools"]["db"]["size"] == 3


def test_a_holder_sigkilled_mid_lease_gives_its_share_back_when_the_lease_expires(start_node, tmp_path):
    node = start_node(POOL + f'[[agents]]\nname = "holder"\nclass = "actors:PoolUser"\nrestart = "never"\n'
                      f'config = {{ journal = "{tmp_path / "j"}" }}\n', name="t")
    client = node.client()
    held = client.actor("holder").ask({"hold": 3}, timeout=10)
    # The pool is exhausted: a request waits in line and times out, with the reason.
    with pytest.raises(mesh.AcquireTimeout) as info:
        client.acquire("db", n=1, timeout=0.5)
    assert "timed out" in str(info.value) and "3 of 3" in str(info.value)
    time.sleep(2.5)  # past one lease time: the holder's renewals keep it
    with pytest.raises(mesh.AcquireTimeout):
        client.acquire("db", n=1, timeout=0.3)
    psutil.Process(held["pid"]).send_signal(signal.SIGKILL)
    killed = time.monotonic()
    lease = client.acquire("db", n=3, timeout=10)
    back = time.monotonic() - killed
    assert lease.valid and 0.0 < back <= 2.0 + 0.5, back  # within one lease time (2 s) of the last renewal
    lease.release()


def test_rate_limits_and_bad_requests(start_node):
    node = start_node(POOL, name="t")
    client = node.client()
    wait_until(lambda: node.status()["resources"], 10, "the node to lead and keep the limits")
    start = time.monotonic()
    stamps = []
    for _ in range(10):
        permit = client.acquire("api", timeout=5)
        assert permit.lease_id is None and permit.valid
        stamps.append(time.monotonic() - start)
    assert stamps[4] < 0.2  # a burst of 5 (the rate) at once
    assert 0.8 <= stamps[9] <= 1.6  # then 5 per second
    with pytest.raises(mesh.ResourceError) as info:
        client.acquire("db", n=4, timeout=1)
    assert "only 3" in str(info.value)
    with pytest.raises(mesh.ResourceError) as info:
        client.acquire("nope", timeout=1)
    assert "no pool or limit named 'nope'" in str(info.value)


def test_an_election_neither_loses_nor_doubles_the_units(start_node, tmp_path):
    # A lease of 8 s: the election (1-2 s timeouts, longer on a loaded machine) must fit in one lease time
    # for renewals to reach the new leader in time; a 2 s lease was lost under load, and a 4 s one beside
    # a CPU hog with the suite on two workers.
    a = start_node(POOL.replace('lease = "2s"', 'lease = "8s"'), name="a")
    b = start_node("", name="b", wait=False, args=("--join", a.address))
    c = start_node("", name="c", wait=False, args=("--join", a.address))
    nodes = [a, b, c]
    wait_until(lambda: all(len([m for m in n.status()["members"] if m["state"] == "alive"]) == 3 for n in nodes), 20,
               "three nodes")
    wait_until(lambda: {n.status()["leader"] for n in nodes} == {"a"}, 10, "a to lead")
    holder = b.client()
    lease = holder.acquire("db", n=3, timeout=5)
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    lost_at = time.monotonic()
    new = wait_until(lambda: (lambda s: s["leader"] if s["leader"] in ("b", "c") else None)(c.status()), 10,
                     "a new leader")
    # During the new leader's grace nothing is granted: the holder still holds all three.
    other = c.client()
    with pytest.raises(mesh.AcquireTimeout):
        other.acquire("db", n=1, timeout=1.5)
    # The holder keeps its lease through the election: its renewals are adopted by the new leader (10 s after
    # the old one died is past any validity it had from the old leader).
    time.sleep(max(0.0, 10.0 - (time.monotonic() - lost_at)))
    assert lease.valid, lease
    leader_node = b if new == "b" else c
    snap = leader_node.status()["resources"]
    assert snap["pools"]["db"]["held"] == 3
    with pytest.raises(mesh.AcquireTimeout):
        other.acquire("db", n=1, timeout=1.0)
    lease.release()
    again = other.acquire("db", n=3, timeout=5)
    assert again.valid
    again.release()
