"""Reliable delivery with real processes: tell(ack=True) survives the receiver being SIGKILLed and
restarted mid-stream; every message is handled, none twice within an incarnation."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter

import psutil
import pytest

import mesh
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
