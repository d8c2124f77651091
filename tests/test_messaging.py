"""Messaging between real processes: a real `mesh up` node, its agents, and clients.

Each test starts a node with the agents it needs (tests/actors.py) and talks to
them the way a user would: mesh.connect(), ActorRef.tell/ask and their async twins.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import mesh
from conftest import pid_gone, run_cli, wait_until


def agent(name: str, cls: str, **keys: object) -> str:
    """One [[agents]] table for ``actors:CLS``; string values are quoted, ``config`` is a dict."""
    lines = ["[[agents]]", f'name = "{name}"', f'class = "actors:{cls}"']
    for key, value in keys.items():
        if key == "config":
            inner = ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items())
            lines.append(f"config = {{ {inner} }}")
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def journal_lines(path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def ask_until(ref, message, predicate, timeout: float, what: str):
    """Ask ``ref`` again and again until ``predicate(answer)`` holds; return that answer."""
    return wait_until(lambda: (lambda answer: answer if predicate(answer) else None)(ref.ask(message)), timeout, what)


class Background:
    """Runs ``fn`` in a thread and keeps what it returned or raised."""

    def __init__(self, fn):
        self.result = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn):
        try:
            self.result = fn()
        except BaseException as exc:  # handed to the test
            self.error = exc

    def join(self, timeout: float):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the background call did not finish in time"
        if self.error is not None:
            raise self.error
        return self.result


# ----------------------------------------------------------------------------- lifecycle


@pytest.mark.parametrize("how", ["mesh down", "SIGTERM to the node"])
def test_on_start_runs_before_the_first_message_and_on_stop_runs_on_a_graceful_stop(start_node, tmp_path, how):
    journal = tmp_path / "journal.txt"
    node = start_node(agent("life", "Lifecycle", config={"journal": str(journal)}))
    pid = node.agent("life")["pid"]

    assert node.client().actor("life").ask("hello") == "ok"
    assert journal_lines(journal) == [f"start {pid}", f"message hello {pid}"]

    if how == "mesh down":
        done = run_cli("down", "--node", node.address)
        assert done.returncode == 0, done.stderr
        assert "stopped" in done.stdout
    else:
        node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(timeout=20) == 0, node.log()

    assert journal_lines(journal) == [f"start {pid}", f"message hello {pid}", f"stop {pid}"]
    assert pid_gone(pid)


# ----------------------------------------------------------------------------- tell and ask


def test_ask_returns_the_reply_and_the_actor_sees_who_sent_it(echo_node):
    client = echo_node.client(name="tester")
    echo = client.actor("echo")

    message = {"text": "hi", "n": [1, 2.5, None, True], "raw": b"\x00\xff"}
    assert echo.ask(message) == message
    assert echo.ask("again") == "again"


def test_tells_arrive_and_the_actor_sees_the_sender_name(start_node):
    node = start_node(agent("counter", "Counter"))
    client = node.client(name="tester")
    counter = client.actor("counter")

    counter.tell("one")
    counter.tell({"two": 2})

    answer = counter.ask({"get": True})
    assert answer == {"seen": ["one", {"two": 2}], "sender": "tester"}


def test_an_actor_that_asks_another_sees_itself_as_the_sender(start_node):
    node = start_node(agent("counter", "Counter") + agent("relay", "Relay"))

    answer = node.client().actor("relay").ask({"to": "counter", "message": {"get": True}})

    assert answer == {"seen": [], "sender": "relay"}


# ----------------------------------------------------------------------------- ordering


def test_five_thousand_tells_then_an_ask_are_all_handled_in_order(start_node):
    node = start_node(agent("counter", "Counter"))
    counter = node.client().actor("counter")

    for i in range(5000):
        counter.tell(i)

    assert counter.ask({"get": True}, timeout=10)["seen"] == list(range(5000))


def test_tells_interleaved_with_asks_keep_their_order(start_node):
    node = start_node(agent("counter", "Counter"))
    counter = node.client().actor("counter")

    for i in range(1000):
        counter.tell(i)
        if i % 37 == 0:
            # An ask must see every tell sent before it, even ones still held for batching.
            assert counter.ask({"get": True})["seen"] == list(range(i + 1))

    assert counter.ask({"get": True})["seen"] == list(range(1000))


def test_two_threads_telling_through_one_ref_each_keep_their_own_order(start_node):
    node = start_node(agent("counter", "Counter"))
    counter = node.client().actor("counter")
    n = 2000
    start = threading.Barrier(2)

    def send(thread: str):
        start.wait(timeout=10)
        for i in range(n):
            counter.tell([thread, i])
        return thread

    a = Background(lambda: send("a"))
    b = Background(lambda: send("b"))
    a.join(30)
    b.join(30)

    seen = ask_until(counter, {"get": True}, lambda a: len(a["seen"]) >= 2 * n, 15, "both threads' tells")["seen"]
    assert len(seen) == 2 * n
    assert [i for t, i in seen if t == "a"] == list(range(n))
    assert [i for t, i in seen if t == "b"] == list(range(n))


# ----------------------------------------------------------------------------- errors


def test_an_ask_that_times_out_raises_ask_timeout_and_the_next_ask_gets_its_own_reply(start_node):
    node = start_node(agent("sleepy", "SleepEcho"))
    sleepy = node.client().actor("sleepy")

    t0 = time.monotonic()
    with pytest.raises(mesh.AskTimeout, match="did not answer within"):
        sleepy.ask({"sleep": 1.0, "reply": "stale"}, timeout=0.2)
    assert time.monotonic() - t0 < 1.0

    # The stale reply to the first ask arrives while this one waits: it must be skipped.
    assert sleepy.ask({"sleep": 0, "reply": "fresh"}, timeout=5) == "fresh"
    assert sleepy.ask({"reply": "fresher"}) == "fresher"


def test_asking_an_unknown_name_raises_actor_not_found_at_once(echo_node):
    client = echo_node.client(resolve_timeout=10)

    t0 = time.monotonic()
    with pytest.raises(mesh.ActorNotFound, match="ghost"):
        client.actor("ghost").ask("anyone?")
    with pytest.raises(mesh.ActorNotFound, match="ghost"):
        client.actor("ghost").tell("anyone?")
    assert time.monotonic() - t0 < 2.0, "an unknown name must not wait for the resolve timeout"

    assert client.actor("echo").ask("still here") == "still here"


def test_an_actor_killed_mid_ask_raises_actor_died_at_once(start_node, tmp_path):
    node = start_node(agent("sleepy", "SleepEcho", restart="never"))
    pid = node.agent("sleepy")["pid"]
    sleepy = node.client().actor("sleepy")
    mark = tmp_path / "handling"

    def kill_when_handling():
        wait_until(mark.exists, 10, "the ask to be handled")
        os.kill(pid, signal.SIGKILL)
        return time.monotonic()

    killer = Background(kill_when_handling)
    with pytest.raises(mesh.ActorDied):
        sleepy.ask({"sleep": 10, "mark": str(mark), "reply": "too late"}, timeout=15)
    noticed = time.monotonic()
    killed = killer.join(5)

    assert noticed - killed < 2.0, "ActorDied must come from the dead connection, not the ask timeout"
    wait_until(lambda: pid_gone(pid), 5, "the killed agent to be reaped")

    # restart = "never": the node reports it down, and asking it again fails fast.
    node.wait_agent("sleepy", lambda a: a["state"] in ("failed", "stopped"), what="sleepy down")
    t0 = time.monotonic()
    with pytest.raises(mesh.ActorNotFound, match="sleepy"):
        sleepy.ask({"reply": "anyone?"})
    assert time.monotonic() - t0 < 2.0


def test_an_exception_in_an_ask_handler_comes_back_as_remote_error_and_the_actor_goes_on(start_node):
    node = start_node(agent("crasher", "Crasher"))
    crasher = node.client().actor("crasher")
    before = crasher.ask({})

    with pytest.raises(mesh.RemoteError) as info:
        crasher.ask({"crash": "exception"})

    err = info.value
    assert isinstance(err, mesh.MeshError)
    assert err.type == "RuntimeError"
    assert err.message == "boom on purpose"
    assert str(err) == "RuntimeError: boom on purpose"
    assert "Traceback (most recent call last)" in err.traceback
    assert "on_message" in err.traceback and "actors.py" in err.traceback
    assert "RuntimeError: boom on purpose" in err.traceback

    assert crasher.ask({}) == before  # same pid, same incarnation
    status = node.agent("crasher")
    assert status["pid"] == before["pid"]
    assert status["restarts"] == 0
    assert status["state"] == "running"


def test_a_message_msgpack_cannot_carry_raises_wire_error_and_nothing_is_sent(start_node):
    node = start_node(agent("counter", "Counter"))
    counter = node.client().actor("counter")

    with pytest.raises(mesh.WireError, match="not serializable"):
        counter.ask(object())
    with pytest.raises(mesh.WireError, match="not serializable"):
        counter.tell({"a set": {1, 2}})

    counter.tell("fine")
    assert counter.ask({"get": True})["seen"] == ["fine"]


def test_a_full_mailbox_raises_mailbox_full_and_every_accepted_tell_is_handled(start_node, tmp_path):
    node = start_node(agent("gate", "Gate", mailbox=1))
    blocked, gate = tmp_path / "blocked", tmp_path / "gate"

    # One client keeps the actor busy in a long ask...
    busy = Background(
        lambda: node.client().actor("gate").ask({"block": str(blocked), "gate": str(gate), "max": 45}, timeout=60)
    )
    try:
        wait_until(blocked.exists, 10, "the gate actor to be busy")

        # ...while another tells as fast as it can until the mailbox pushes back.
        teller = node.client(send_timeout=0.2).actor("gate")
        accepted = 0
        full = None
        deadline = time.monotonic() + 30
        while accepted < 300_000 and time.monotonic() < deadline:
            try:
                teller.tell(accepted)
            except mesh.MailboxFull as exc:
                full = exc
                break
            accepted += 1
        assert full is not None, f"{accepted} tells were accepted without MailboxFull"
        assert "stayed full" in str(full)
        assert accepted > 0
    finally:
        gate.write_text("open")
    assert busy.join(30) == "released"

    # Nothing accepted was dropped: the actor handles every tell, in order.
    observer = node.client().actor("gate")
    got = ask_until(observer, {"get": True}, lambda g: g["count"] >= accepted, 30, f"{accepted} tells handled")
    assert got == {"count": accepted, "in_order": True, "last": accepted - 1}
    # An ask flushes whatever the teller still holds; the refused tell was never sent.
    assert teller.ask({"get": True}, timeout=10)["count"] == accepted


# ----------------------------------------------------------------------------- asyncio


def test_an_actor_with_an_async_on_message_answers(start_node):
    node = start_node(agent("aecho", "AsyncEcho"))

    assert node.client().actor("aecho").ask([1, "two"]) == {"async": [1, "two"]}


def test_two_hundred_concurrent_async_asks_all_get_their_own_reply(start_node, run_async):
    node = start_node(agent("aecho", "AsyncEcho") + agent("echo", "Echo"))
    client = node.client()

    async def main():
        aecho, echo = client.actor("aecho"), client.actor("echo")
        replies = await asyncio.gather(*(aecho.ask_async({"i": i}) for i in range(200)))
        echoes = await asyncio.gather(*(echo.ask_async(i) for i in range(200)))
        return replies, echoes

    replies, echoes = run_async(main(), 30)
    assert replies == [{"async": {"i": i}} for i in range(200)]
    assert echoes == list(range(200))


def test_tell_async_delivers_in_order(start_node, run_async):
    node = start_node(agent("counter", "Counter"))
    client = node.client(name="async-tester")

    async def main():
        counter = client.actor("counter")
        for i in range(300):
            await counter.tell_async(i)
        return await counter.ask_async({"get": True})

    answer = run_async(main(), 30)
    assert answer == {"seen": list(range(300)), "sender": "async-tester"}


def test_async_ask_errors_are_the_same_as_sync_ones(start_node, run_async, tmp_path):
    node = start_node(agent("crasher", "Crasher") + agent("sleepy", "SleepEcho", restart="never"))
    client = node.client()
    mark = tmp_path / "handling"
    pid = node.agent("sleepy")["pid"]

    async def main():
        with pytest.raises(mesh.RemoteError, match="boom on purpose"):
            await client.actor("crasher").ask_async({"crash": "exception"})
        with pytest.raises(mesh.ActorNotFound, match="ghost"):
            await client.actor("ghost").ask_async("anyone?")
        sleepy = client.actor("sleepy")
        with pytest.raises(mesh.AskTimeout):
            await sleepy.ask_async({"sleep": 0.6, "reply": "stale"}, timeout=0.1)
        assert await sleepy.ask_async({"reply": "fresh"}) == "fresh"

        async def kill_when_handling():
            for _ in range(500):
                if mark.exists():
                    os.kill(pid, signal.SIGKILL)
                    return time.monotonic()
                await asyncio.sleep(0.02)
            raise AssertionError("the ask was never handled")

        killer = asyncio.ensure_future(kill_when_handling())
        with pytest.raises(mesh.ActorDied):
            await sleepy.ask_async({"sleep": 10, "mark": str(mark)}, timeout=15)
        return time.monotonic() - await killer

    t0 = time.monotonic()
    after_kill = run_async(main(), 30)
    assert after_kill < 2.0
    assert time.monotonic() - t0 < 10


def test_async_asks_time_out_each_at_its_own_deadline_on_one_link(start_node, run_async):
    """One heap of deadlines and one timer per link (issue 17): an ask with a short timeout made after
    one with a long timeout times out on time, the long one is still answered, and what the link
    keeps of answered asks stays bounded."""
    node = start_node(agent("sleepy", "SleepEcho", restart="never"))
    client = node.client()

    async def main():
        sleepy = client.actor("sleepy")
        slow = asyncio.ensure_future(sleepy.ask_async({"sleep": 1.0, "reply": "slow"}, timeout=20))
        await asyncio.sleep(0.05)
        began = time.monotonic()
        with pytest.raises(mesh.AskTimeout):
            await sleepy.ask_async({"reply": "queued behind the slow one"}, timeout=0.3)
        short = time.monotonic() - began
        assert await slow == "slow"
        for i in range(2000):
            assert await sleepy.ask_async({"reply": i}, timeout=60) == i
        link = next(iter(client._all_alinks))
        return short, len(link._deadlines), len(link.waiting)

    short, kept, waiting = run_async(main(), 60)
    assert 0.3 <= short < 0.9  # at its own deadline, not the slow ask's
    assert waiting == 0 and kept <= 2 * waiting + 65


# ----------------------------------------------------------------------------- actor to actor


def test_an_actor_asks_another_by_name_inside_its_handler(start_node):
    node = start_node(
        agent("echo", "Echo") + agent("aecho", "AsyncEcho") + agent("relay", "Relay") + agent("relay2", "Relay")
    )
    relay = node.client().actor("relay")

    assert relay.ask({"to": "echo", "message": {"n": 1}}) == {"n": 1}
    assert relay.ask({"to": "aecho", "message": "x"}) == {"async": "x"}
    # Two hops: client -> relay -> relay2 -> echo, and the reply all the way back.
    assert relay.ask({"to": "relay2", "message": {"to": "echo", "message": "deep"}}) == "deep"
    for i in range(50):
        assert relay.ask({"to": "echo", "message": i}) == i


# ----------------------------------------------------------------------------- restarts


def test_the_same_ref_finds_a_restarted_actor(start_node):
    node = start_node(agent("crasher", "Crasher", restart="on-failure", backoff="100ms"))
    crasher = node.client().actor("crasher")
    first = crasher.ask({})
    assert first["incarnation"] == 0

    os.kill(first["pid"], signal.SIGKILL)

    def new_incarnation():
        answer = crasher.ask({}, timeout=2)
        return answer if answer["pid"] != first["pid"] else None

    second = wait_until(new_incarnation, 15, "the restarted crasher to answer")
    assert second["incarnation"] == 1
    assert pid_gone(first["pid"])
    status = node.agent("crasher")
    assert (status["pid"], status["incarnation"], status["restarts"]) == (second["pid"], 1, 1)
    assert crasher.ask({}) == second


def restarted(node, name: str, old_pid: int) -> dict:
    return node.wait_agent(name, lambda a: a["state"] == "running" and a["pid"] != old_pid, what=f"{name} restarted")


def test_the_first_ask_after_a_finished_restart_reaches_the_new_incarnation(start_node):
    node = start_node(agent("crasher", "Crasher", restart="on-failure", backoff="100ms"))
    crasher = node.client().actor("crasher")
    first = crasher.ask({})

    os.kill(first["pid"], signal.SIGKILL)
    now = restarted(node, "crasher", first["pid"])

    # No ask was in flight when it died, so none may fail: the ref re-resolves the name.
    assert crasher.ask({}, timeout=5) == {"pid": now["pid"], "incarnation": 1}


def test_tells_after_a_restart_reach_the_new_incarnation_in_order(start_node):
    node = start_node(agent("counter", "Counter", restart="on-failure", backoff="100ms"))
    counter = node.client().actor("counter")
    counter.tell("before")
    assert counter.ask({"get": True})["seen"] == ["before"]
    pid = node.agent("counter")["pid"]

    os.kill(pid, signal.SIGKILL)
    restarted(node, "counter", pid)
    for i in range(200):
        counter.tell(i)

    # The new incarnation starts empty and gets every tell sent after the restart, in order.
    assert counter.ask({"get": True}, timeout=10)["seen"] == list(range(200))


# Runs in a process of its own: when this breaks, every ZeroMQ socket of that process stops
# (a dropped channel's monitor closed before its DEALER blocked libzmq's I/O thread).
THREAD_AFTER_RESTART = """
import gc, os, signal, sys, threading, time
import mesh

client = mesh.connect(sys.argv[1])
first = client.actor("crasher").ask({})        # the client caches the first address
os.kill(first["pid"], signal.SIGKILL)
deadline = time.monotonic() + 15
while time.monotonic() < deadline:
    agents = {a["name"]: a for a in client.status()["agents"]}
    if agents["crasher"]["state"] == "running" and agents["crasher"]["pid"] != first["pid"]:
        break
    time.sleep(0.05)
new_pid = agents["crasher"]["pid"]

# A short-lived thread asks through the same client: its channel goes to the old address
# first, is refused, and the ask is sent again to the new one. Then the thread ends.
replies = []
worker = threading.Thread(target=lambda: replies.append(client.actor("crasher").ask({}, timeout=5)))
worker.start()
worker.join(10)
assert replies and replies[0]["pid"] == new_pid, replies
del worker
gc.collect()

# The rest of the process must go on talking (connections are retried every 100 ms).
t0 = time.monotonic()
while time.monotonic() - t0 < 1.5:
    try:
        assert client.actor("crasher").ask({}, timeout=2)["pid"] == new_pid
    except mesh.MeshError as exc:
        print(f"STALLED {time.monotonic() - t0:.2f} s after the thread ended: {exc!r}", flush=True)
        os._exit(1)
print("OK", flush=True)
os._exit(0)
"""


def test_a_thread_that_first_tried_a_restarted_actors_old_address_can_end_without_stalling_its_process(
    start_node, tmp_path
):
    node = start_node(agent("crasher", "Crasher", restart="on-failure", backoff="100ms"))
    script = tmp_path / "thread_after_restart.py"
    script.write_text(THREAD_AFTER_RESTART)

    done = subprocess.run([sys.executable, str(script), node.address], capture_output=True, text=True, timeout=60)

    assert done.returncode == 0 and "OK" in done.stdout, done.stdout + done.stderr


async def restarted_async(client, name: str, old_pid: int, timeout: float = 15) -> dict:
    """Wait (on the event loop, no threads) until the node runs ``name`` in a new process."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = await client.control_async("status")
        for a in status["agents"]:
            if a["name"] == name and a["state"] == "running" and a["pid"] != old_pid:
                return a
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} was not restarted within {timeout} s")


def test_ask_async_finds_a_restarted_actor(start_node, run_async):
    node = start_node(agent("crasher", "Crasher", restart="on-failure", backoff="100ms"))
    client = node.client()

    async def main():
        crasher = client.actor("crasher")
        first = await crasher.ask_async({})
        os.kill(first["pid"], signal.SIGKILL)
        now = await restarted_async(client, "crasher", first["pid"])
        return now, await crasher.ask_async({}, timeout=3)

    now, answer = run_async(main(), 30)
    assert answer == {"pid": now["pid"], "incarnation": 1}


def test_tell_async_after_a_restart_reaches_the_new_incarnation(start_node):
    node = start_node(agent("counter", "Counter", restart="on-failure", backoff="100ms"))
    client = node.client()

    async def main():
        counter = client.actor("counter")
        await counter.tell_async("before")
        assert (await counter.ask_async({"get": True}))["seen"] == ["before"]
        pid = node.agent("counter")["pid"]
        os.kill(pid, signal.SIGKILL)
        await restarted_async(client, "counter", pid)
        for i in range(3):
            await counter.tell_async(i)  # each returned, so none may be lost

    asyncio.run(asyncio.wait_for(main(), 30))
    # Another client (no cached address) sees what the new incarnation got: all three, in order (an
    # ask from another client may overtake tells still on their way, so wait for the third).
    fresh = node.client().actor("counter")
    seen = wait_until(lambda: (lambda s: s if len(s) >= 3 else None)(fresh.ask({"get": True})["seen"]), 10,
                      "the three tells")
    assert seen == [0, 1, 2]


# ----------------------------------------------------------------------------- timers


def test_timers_set_with_every_and_after_deliver_their_messages(start_node):
    t0 = time.monotonic()
    node = start_node(agent("ticker", "Ticker", config={"interval": 0.05, "delay": 0.2}))
    ticker = node.client().actor("ticker")

    get = {"get": True}
    got = ask_until(ticker, get, lambda g: g["ticks"] >= 10 and g["once"], 10, "ten ticks and the `after`")
    assert got["once"] == 1
    assert got["senders"] == ["ticker"]  # timer messages come from the actor itself
    assert got["ticks"] <= (time.monotonic() - t0) / 0.05 + 2

    assert ticker.ask({"after": 0.1, "message": "later"}) == "scheduled"
    got = ask_until(ticker, get, lambda g: g["later"], 5, "the timer set in a handler")
    assert got["later"] == ["later"]

    before = got["ticks"]
    got = ask_until(ticker, get, lambda g: g["ticks"] >= before + 5, 5, "more ticks")
    assert got["once"] == 1 and got["later"] == ["later"], "an `after` timer fires once"


# ----------------------------------------------------------------------------- status


def test_status_counts_the_messages_an_agent_handled(start_node):
    node = start_node(agent("counter", "Counter"))
    counter = node.client().actor("counter")

    for i in range(250):
        counter.tell(i)
    assert len(counter.ask({"get": True})["seen"]) == 250

    # 250 tells + 1 ask; heartbeats bring the count to the node every 0.5 s.
    node.wait_agent("counter", lambda a: a["messages"] == 251, timeout=5, what="messages == 251")



def test_an_async_link_left_behind_by_a_finished_event_loop_does_not_pile_up_monitor_events(start_node):
    # libzmq blocks its I/O thread (and so every socket of the process) when a monitor's
    # queue fills; a link whose loop has ended is never read again, so it must stay quiet.
    import zmq
    from zmq.utils.monitor import recv_monitor_message

    node = start_node(agent("crasher", "Crasher", restart="never"))
    client = node.client()
    pid = asyncio.run(client.actor("crasher").ask_async({}))["pid"]
    (link,) = [link for link in client._all_alinks if link.endpoint != client.node]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: pid_gone(pid), 5, "the actor to die")
    monitor = zmq.Socket.shadow(link.monitor.underlying)  # read it here, outside any loop
    started = time.monotonic()
    events = 0
    while time.monotonic() - started < 1.5:  # ~15 reconnect attempts happen meanwhile
        try:
            recv_monitor_message(monitor, zmq.NOBLOCK)
            events += 1
        except zmq.Again:
            time.sleep(0.05)
    assert events <= 2  # the one DISCONNECTED (and the CONNECTED before it, if unread)


def test_tells_held_for_batching_are_sent_when_a_script_exits_without_closing(start_node, tmp_path):
    node = start_node(agent("counter", "Counter"))
    script = tmp_path / "burst.py"
    script.write_text(
        "import sys, mesh\n"
        "ref = mesh.connect(sys.argv[1]).actor('counter')\n"
        "for i in range(10):\n"
        "    ref.tell(i)\n"  # a burst: all but the first are held for batching
        "# no close(), no flush(): the interpreter just exits\n"
    )
    done = subprocess.run([sys.executable, str(script), node.address], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    counter = node.client().actor("counter")
    seen = wait_until(lambda: (lambda s: s if len(s) == 10 else None)(counter.ask({"get": 1})["seen"]), 10, "all ten tells")
    assert seen == list(range(10))


def test_a_reply_with_tuple_keys_comes_back_as_sent(echo_node):
    # encode() packs tuple keys as arrays; both decoders (asks and replies) must read them back.
    assert echo_node.client().actor("echo").ask({(1, 2): "x"}, timeout=3) == {(1, 2): "x"}
