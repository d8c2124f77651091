"""Reliable delivery with real processes: tell(ack=True) survives the receiver being SIGKILLed and
restarted mid-stream; every message is handled, none twice within an incarnation."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter

import psutil
import pytest
import zmq

import mesh
from mesh import wire
from conftest import wait_until

pytestmark = pytest.mark.timeout(120)


def test_ten_thousand_acked_tells_through_a_sigkill_and_restart(start_node, tmp_path):
    journal = tmp_path / "journal"
    node = start_node(f'[[agents]]\nname = "j"\nclass = "actors:Journal"\nbackoff = "100ms"\nmax_restarts = 3\n'
                      f'config = {{ journal = "{journal}" }}\n')
    client = node.client()
    ref = client.actor("j")
    first = ref.ask({}, timeout=5)
    killed = threading.Event()

    def killer():
        wait_until(lambda: journal.exists() and len(journal.read_text().splitlines()) > 3000, 30, "a third handled")
        psutil.Process(first["pid"]).send_signal(signal.SIGKILL)
        killed.set()

    t = threading.Thread(target=killer)
    t.start()
    deliveries = [ref.tell({"seq": i}, ack=True, timeout=60) for i in range(10_000)]
    assert client.drain(60) == 0
    t.join()
    assert killed.is_set()
    for d in deliveries:
        d.wait(0)  # raises if one was not acknowledged
    rows = [tuple(map(int, line.split())) for line in journal.read_text().splitlines()]
    handled = Counter(rows)
    assert {seq for _, seq in rows} == set(range(10_000))  # every message handled
    assert max(handled.values()) == 1  # none twice within an incarnation
    incarnations = {inc for inc, _ in rows}
    assert incarnations == {0, 1}, incarnations  # it really was killed and restarted mid-stream
    again = sum(1 for seq in range(10_000) if (0, seq) in handled and (1, seq) in handled)
    print(f"\n10,000 acked tells: {len(rows)} handlings, {again} handled again by the new incarnation")
    assert node.agent("j")["restarts"] == 1


def test_an_acked_tell_to_nobody_fails_at_its_deadline_and_plain_tells_stay_fire_and_forget(start_node, tmp_path):
    node = start_node(f'[[agents]]\nname = "j"\nclass = "actors:Journal"\nconfig = {{ journal = "{tmp_path / "j"}" }}\n')
    client = node.client()
    d = client.actor("nobody").tell({"seq": 1}, ack=True, timeout=1.0)
    with pytest.raises(mesh.AskTimeout):
        d.wait(5)
    assert client.actor("j").tell({"seq": 1}) is None
    ok = client.actor("j").tell({"seq": 2}, ack=True)
    ok.wait(5)
    assert ok.acked
    start = time.monotonic()
    assert client.drain(5) == 0 and time.monotonic() - start < 1


# --------------------------------------------------------------------------- the receiver's duplicate filter


def _acked_tells(endpoint: str, messages, window: int = 64, timeout: float = 120.0) -> int:
    """Send TELL_ACK frames ``(sender, msg_id, body)`` from one raw DEALER, at most ``window`` unacknowledged;
    returns how many were acknowledged."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    outstanding: set = set()
    acked = 0
    deadline = time.monotonic() + timeout
    try:
        for sender, msg_id, body in messages:
            while len(outstanding) >= window:
                acked += _collect(sock, outstanding, deadline)
            sock.send(wire.encode(int(wire.Kind.TELL_ACK), msg_id, 0, sender, "j", body))
            outstanding.add((msg_id, len(sender), sender[:8]))
        while outstanding:
            acked += _collect(sock, outstanding, deadline)
    finally:
        sock.close()
    return acked


def _collect(sock, outstanding: set, deadline: float) -> int:
    if time.monotonic() > deadline or not sock.poll(int(max(0.0, deadline - time.monotonic()) * 1000)):
        raise AssertionError(f"{len(outstanding)} acknowledgement(s) missing")
    env = wire.decode_one(sock.recv(), 64 * 1024 * 1024)
    assert env[1] == int(wire.Kind.REPLY), env
    key = (env[3], len(env[5]), env[5][:8])  # the reply goes back to the sender (its name as recipient)
    assert key in outstanding, key[:2]
    outstanding.discard(key)
    return 1


@pytest.mark.timeout(300)
def test_the_duplicate_filter_stays_small_whatever_the_sender_names_and_still_drops_duplicates(start_node, tmp_path):
    journal = tmp_path / "journal"
    node = start_node(f'[[agents]]\nname = "j"\nclass = "actors:Journal"\nconfig = {{ journal = "{journal}" }}\n')
    client = node.client()
    agent = psutil.Process(client.actor("j").ask({}, timeout=5)["pid"])
    endpoint = client.endpoint_of("j", timeout=5)

    def long_named(start: int, count: int):  # 100 KB sender names, each unique
        return ((f"{i:06d}" + "x" * 100_000, 1, {"seq": i}) for i in range(start, start + count))

    assert _acked_tells(endpoint, long_named(0, 200)) == 200  # warm up: buffers and allocator at their working size
    before = agent.memory_info().rss
    assert _acked_tells(endpoint, long_named(200, 1800)) == 1800
    grown = agent.memory_info().rss - before
    print(f"\n2,000 unique 100 KB sender names: the receiver grew by {grown / 1e6:.1f} MB")
    assert grown < 64e6, f"the receiver grew by {grown / 1e6:.0f} MB for 2,000 acked tells"

    # Duplicates are still dropped, for long names and for ordinary ones: acknowledged again, not handled again.
    legit = [("sender-a", n, {"seq": 10_000 + n}) for n in range(1, 101)]
    assert _acked_tells(endpoint, legit) == 100
    assert _acked_tells(endpoint, [*legit, *long_named(1900, 100)]) == 200
    rows = journal.read_text().splitlines()
    assert len(rows) == 2100 and len(set(rows)) == 2100, f"{len(rows)} handled, {len(set(rows))} distinct"


def test_the_duplicate_filter_is_bounded_in_entries_and_bytes_for_names_of_any_size():
    import tracemalloc

    from mesh.runtime.delivery import Seen

    tracemalloc.start()
    try:
        seen = Seen(limit=5000)
        for i in range(20_000):
            seen.add((f"{i:06d}" + "\u00e9" * 10_000, 1))  # 10,000-character names, none of them ASCII
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(seen) == 5000
    assert held < seen.max_bytes, f"{held} bytes held for {len(seen)} entries (bound {seen.max_bytes})"
    assert (f"{19_999:06d}" + "\u00e9" * 10_000, 1) in seen  # the newest are remembered...
    assert (f"{19_999:06d}" + "\u00e9" * 10_000, 2) not in seen
    assert (f"{0:06d}" + "\u00e9" * 10_000, 1) not in seen  # ...the oldest forgotten
    seen.add(("sender-a", 7))
    assert ("sender-a", 7) in seen and ("sender-b", 7) not in seen
