"""An idle served actor's loop waits long on a ZeroMQ listener (issue 17: a thousand idle agents
each woke five times a second to look at their stop flag), and is woken at once by what it waits
for: a stop from another thread or from SIGTERM, or a timer set from another thread."""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import pytest

import mesh
from conftest import wait_until
from mesh.runtime.server import WOKEN_SLICE_MS, Server

pytestmark = pytest.mark.timeout(90)

#: Well under the loop's long wait: a stop or timer that waited for the wait to end would miss it.
PROMPT_S = WOKEN_SLICE_MS / 1000 / 2


class Ticker(mesh.Actor):
    def __init__(self) -> None:
        self.ticks: list[float] = []

    def on_message(self, message):
        if message == "tick later":  # a timer set from another thread a moment from now
            def later() -> None:
                time.sleep(0.3)
                self.mesh.after(0.05, "tick")

            threading.Thread(target=later, daemon=True).start()
            return "ok"
        if message == "tick":
            self.ticks.append(time.monotonic())
            return None
        return message


def served(node, actor: mesh.Actor, name: str) -> tuple[Server, threading.Thread]:
    server = Server(actor, name, node.address)
    thread = threading.Thread(target=server.run, name=f"test-serve-{name}", daemon=True)
    thread.start()
    wait_until(lambda: server.link.registered, 20, f"{name} registered")
    return server, thread


def test_a_stop_from_another_thread_ends_the_long_idle_wait_at_once(start_node):
    node = start_node()
    server, thread = served(node, Ticker(), "stopped-at-once")
    assert server._idle_ms == WOKEN_SLICE_MS  # it does wait long
    client = node.client()
    assert client.actor("stopped-at-once").ask("hi", timeout=10) == "hi"  # the loop now begins a fresh wait
    began = time.monotonic()
    server.request_stop()
    assert server.stopped.wait(20)
    assert time.monotonic() - began < PROMPT_S
    thread.join(10)


def test_a_timer_set_from_another_thread_fires_on_time_not_at_the_end_of_the_wait(start_node):
    node = start_node()
    actor = Ticker()
    server, thread = served(node, actor, "ticker")
    client = node.client()
    asked = time.monotonic()
    assert client.actor("ticker").ask("tick later", timeout=10) == "ok"
    wait_until(lambda: actor.ticks, 20, "the tick")
    assert actor.ticks[0] - asked < 0.35 + PROMPT_S
    server.request_stop()
    thread.join(20)


def test_an_idle_agent_stops_at_once_on_sigterm(start_node):
    node = start_node('[[agents]]\nname = "idle"\nclass = "actors:WhoAmI"\nrestart = "never"\n')
    pid = node.agent("idle")["pid"]
    node.client().actor("idle").ask({}, timeout=10)  # its loop now begins a fresh wait
    began = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    try:
        psutil.Process(pid).wait(20)
    except psutil.NoSuchProcess:
        pass
    assert time.monotonic() - began < PROMPT_S
