"""Asks in flight go in batches (issue 17): an asyncio client sends the asks it made in one turn of its
event loop as one batch frame, and an actor answers a batch's asks in batches, without holding a
slow handler's answer; order, back-pressure and every answer are kept."""

from __future__ import annotations

import asyncio
import threading

import pytest
import zmq

import mesh
from mesh import wire
from mesh.runtime.asynclink import AsyncLink
from test_messaging import agent

pytestmark = pytest.mark.timeout(120)


class RawActor:
    """A plain ZeroMQ ROUTER standing in for an actor: records every frame it gets (its envelopes'
    kinds and ids) and answers each frame's asks with one batch frame, unless ``answer`` is False.
    ``answer_at``: counts of envelopes received; answers wait until the next count is reached (a
    thread of the test's own process answers fast enough to settle an ask before the event loop's
    turn ends, which would leave nothing out to batch with)."""

    def __init__(self, answer: bool = True, rcvhwm: int = 1000, answer_at: tuple[int, ...] = (), paused: bool = False):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self.sock.setsockopt(zmq.LINGER, 0)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.answer = answer
        self.answer_at = list(answer_at)
        self.frames: list[list[tuple[int, int]]] = []  # per frame: (kind, msg_id) of each envelope
        self.stop = threading.Event()
        self.go = threading.Event()  # reads nothing until set (at once unless ``paused``)
        if not paused:
            self.go.set()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        due: list[tuple[bytes, bytes]] = []
        received = 0
        while not self.go.wait(0.05):
            if self.stop.is_set():
                return
        while not self.stop.is_set():
            if not poller.poll(50):
                continue
            ident, frame = self.sock.recv_multipart()
            envelopes = wire.decode(frame)
            self.frames.append([(env[wire.KIND], env[wire.MSG_ID]) for env in envelopes])
            received += len(envelopes)
            answers = [wire.encode(wire.Kind.REPLY, 0, env[wire.MSG_ID], "raw", env[wire.SENDER], env[wire.BODY])
                       for env in envelopes if env[wire.KIND] == wire.Kind.ASK]
            if self.answer and answers:
                out = answers[0] if len(answers) == 1 else wire.batch_header(len(answers)) + b"".join(answers)
                due.append((ident, out))
            reached = False
            while self.answer_at and received >= self.answer_at[0]:
                self.answer_at.pop(0)
                reached = True
            if reached or not self.answer_at:
                for asker, out in due:
                    self.sock.send_multipart([asker, out])
                due.clear()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close(0)
        self.ctx.term()


@pytest.fixture
def raw_actor():
    made: list[RawActor] = []

    def make(**options) -> RawActor:
        made.append(RawActor(**options))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def client(start_node):
    return start_node().client(send_timeout=0.5)


def on_link(client, raw: RawActor, work, timeout: float = 60.0, run=None):
    """Run ``work(link)`` on an event loop (asyncio's, or ``run``'s: see conftest.run_async), with an
    asyncio link from ``client`` to ``raw``."""
    async def main():
        link = AsyncLink(raw.endpoint, client)
        try:
            return await work(link)
        finally:
            link.close()

    return run(main(), timeout) if run is not None else asyncio.run(asyncio.wait_for(main(), timeout))


def _ask(client, link: AsyncLink, body: object, timeout: float = 20.0, msg_id: int = 0):
    msg_id = msg_id or next(client.ids)
    frame = wire.encode(wire.Kind.ASK, msg_id, 0, client.name, "raw", body)
    return link.request(frame, msg_id, timeout, "the raw actor")


def test_asks_made_in_one_turn_go_out_in_batch_frames_and_batched_answers_are_read(client, raw_actor, run_async):
    raw = raw_actor(answer_at=(200,))

    async def work(link):
        return await asyncio.gather(*(_ask(client, link, {"i": i}) for i in range(200)))

    answers = on_link(client, raw, work, run=run_async)
    assert answers == [{"i": i} for i in range(200)]  # every answer to its own ask, batched or not
    asks = sum(len(f) for f in raw.frames)
    assert asks == 200
    # Made in one turn: the first alone, the rest in batches (half of what is out at a time, at most
    # BATCH_ASKS a frame), not a frame each.
    assert len(raw.frames) <= 12, [len(f) for f in raw.frames]
    assert max(len(f) for f in raw.frames) <= 64


def test_an_ask_alone_goes_at_once_and_a_large_one_alone(client, raw_actor, run_async):
    raw = raw_actor(answer_at=(1, 6))

    async def work(link):
        first = await _ask(client, link, "one")
        small = [_ask(client, link, i) for i in range(4)]
        big = _ask(client, link, "x" * 20_000)  # over BATCH_SOLO_BYTES: never held
        return first, await asyncio.gather(*small, big)

    first, answers = on_link(client, raw, work, run=run_async)
    assert first == "one" and answers == [0, 1, 2, 3, "x" * 20_000]
    assert raw.frames[0] == [(wire.Kind.ASK, raw.frames[0][0][1])]  # the lone ask: a frame of its own
    assert [len(f) for f in raw.frames if len(f) > 1], "the small asks were batched"
    sizes = [len(f) for f in raw.frames]
    assert sum(sizes) == 6 and sizes[-1] == 1  # the large ask went last, alone, after the held ones


def test_a_tell_after_held_asks_goes_after_them(client, raw_actor, run_async):
    """tell_async (link.send) first sends the asks held before it: one event loop's messages to one
    actor arrive in the order they were made."""
    raw = raw_actor(answer_at=(7,))

    async def work(link):
        asks = [asyncio.ensure_future(_ask(client, link, i)) for i in range(6)]
        await asyncio.sleep(0)  # the asks run (all but the first held for the turn's end)...
        tell_id = next(client.ids)
        await link.send(wire.encode(wire.Kind.TELL, tell_id, 0, client.name, "raw", "after"))  # ...then the tell
        await asyncio.gather(*asks)
        return tell_id

    tell_id = on_link(client, raw, work, run=run_async)
    order = [e for f in raw.frames for e in f]
    assert order[-1] == (wire.Kind.TELL, tell_id), order
    assert [k for k, _ in order[:-1]] == [wire.Kind.ASK] * 6


def test_held_asks_that_find_no_room_fail_with_mailbox_full_after_the_send_timeout(client, raw_actor):
    """Back-pressure on held asks: an actor that reads nothing fills its mailbox and the link's queue;
    the asks that could not go fail with MailboxFull after the send timeout (never dropped silently),
    and the ones that went out are still in flight (the client's send timeout: 0.5 s)."""
    raw = raw_actor(answer=False, rcvhwm=1)
    raw.stop.set()  # reads nothing from now on
    raw.thread.join(5)

    async def work(link):
        body = "x" * 10_000  # held (under BATCH_SOLO_BYTES): batches of six, some 60 KB a frame
        tasks = [asyncio.ensure_future(_ask(client, link, body, timeout=30)) for _ in range(4000)]
        done, pending = await asyncio.wait(tasks, timeout=15, return_when=asyncio.FIRST_EXCEPTION)
        full = [t for t in done if isinstance(t.exception(), mesh.MailboxFull)]
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return len(full), len(pending), [t.exception() for t in done if not isinstance(t.exception(), mesh.MailboxFull)]

    full, pending, other = on_link(client, raw, work)
    assert full > 0, "no ask was refused by a full mailbox"
    assert pending > 0, "the asks that went out should still be waiting for their answers"
    assert other == []


def test_held_asks_that_waited_for_room_go_once_there_is_room(start_node, raw_actor):
    """An actor that reads nothing for a while: the held asks wait for room (within the send timeout)
    and go, in order, once it reads again; every one is answered, but those given up (cancelled)
    while held, which are never sent."""
    client = start_node().client(send_timeout=20)
    raw = raw_actor(rcvhwm=1, paused=True)
    ids = [next(client.ids) for _ in range(3000)]

    async def work(link):
        body = "x" * 10_000
        tasks = [asyncio.ensure_future(_ask(client, link, [i, body], timeout=60, msg_id=ids[i])) for i in range(3000)]
        for _ in range(1000):  # until the link's queue is full and asks wait for room
            if link._stall is not None:
                break
            await asyncio.sleep(0.01)
        held = {m for _, m, _ in link._held}
        stalled = link._stall is not None and ids[-1] in held
        for task in tasks[-10:]:  # held, given up
            task.cancel()
        raw.go.set()
        answers = await asyncio.gather(*tasks[:-10])
        return stalled, [a[0] for a in answers]

    stalled, answers = on_link(client, raw, work, timeout=90)
    assert stalled, "the asks never had to wait for room"
    assert answers == list(range(2990))
    sent = [m for f in raw.frames for _, m in f]
    assert sent == ids[:2990]  # in the order they were made; the cancelled ones never


def test_frames_waiting_for_room_go_in_the_order_they_were_made(start_node, raw_actor):
    """While the link waits for room: held asks, then a tell made after them, then asks made after
    the tell, reach the actor in that order."""
    client = start_node().client(send_timeout=20)
    raw = raw_actor(rcvhwm=1, paused=True)
    first_ids = [next(client.ids) for _ in range(3000)]
    later_ids = [next(client.ids) for _ in range(50)]
    tell_id = next(client.ids)

    async def work(link):
        body = "x" * 10_000
        first = [asyncio.ensure_future(_ask(client, link, body, timeout=60, msg_id=m)) for m in first_ids]
        for _ in range(1000):
            if link._stall is not None:
                break
            await asyncio.sleep(0.01)
        tell = asyncio.ensure_future(link.send(wire.encode(wire.Kind.TELL, tell_id, 0, client.name, "raw", "t")))
        await asyncio.sleep(0.05)  # the tell waits for room
        later = [asyncio.ensure_future(_ask(client, link, "later", timeout=60, msg_id=m)) for m in later_ids]
        await asyncio.sleep(0.05)
        raw.go.set()
        await asyncio.gather(*first, tell, *later)

    on_link(client, raw, work, timeout=90)
    sent = [m for f in raw.frames for _, m in f]
    assert sent == first_ids + [tell_id] + later_ids


def test_each_held_ask_waits_for_room_its_own_send_timeout(start_node, raw_actor):
    """Held asks that find no room fail with MailboxFull each a send timeout after it was held: asks
    held later still wait when the first ones fail, and go once there is room."""
    client = start_node().client(send_timeout=3.0)
    raw = raw_actor(rcvhwm=1, paused=True)

    async def work(link):
        body = "x" * 10_000
        first = [asyncio.ensure_future(_ask(client, link, [i, body], timeout=60)) for i in range(3000)]
        for _ in range(1000):
            if link._stall is not None:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.5)
        later = [asyncio.ensure_future(_ask(client, link, [i, "later"], timeout=60)) for i in range(100)]
        await asyncio.sleep(0)  # they are made, and held (the link waits for room)
        done, _ = await asyncio.wait(first, timeout=20, return_when=asyncio.FIRST_EXCEPTION)
        first_full = any(isinstance(t.exception(), mesh.MailboxFull) for t in done)
        later_waiting = not any(t.done() for t in later)
        raw.go.set()
        answers = await asyncio.gather(*later, return_exceptions=True)
        for t in first:
            t.cancel()
        await asyncio.gather(*first, return_exceptions=True)
        return first_full, later_waiting, answers

    first_full, later_waiting, answers = on_link(client, raw, work, timeout=90)
    assert first_full, "no ask held first failed with MailboxFull"
    assert later_waiting, "asks held later failed with the first ones, before their own send timeout"
    assert answers == [[i, "later"] for i in range(100)]


def test_an_actor_answers_a_batch_of_asks_in_batches_but_a_slow_handler_at_once(start_node):
    node = start_node(agent("echo", "Echo") + agent("sleepy", "SleepEcho"), node_extra="agent_nice = 0")
    ctx = zmq.Context.instance()

    def ask_batch(name: str, bodies: list) -> tuple[list[int], list]:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(node.agent(name)["endpoint"])
        try:
            frames = [wire.encode(wire.Kind.ASK, i + 1, 0, "batcher", name, b) for i, b in enumerate(bodies)]
            sock.send(wire.batch_header(len(frames)) + b"".join(frames))
            answers: dict[int, object] = {}
            sizes = []
            while len(answers) < len(bodies):
                assert sock.poll(20_000), f"{len(answers)} of {len(bodies)} answers"
                envelopes = wire.decode(sock.recv())
                sizes.append(len(envelopes))
                for env in envelopes:
                    assert env[wire.KIND] == wire.Kind.REPLY
                    answers[env[wire.CORR_ID]] = env[wire.BODY]
            return sizes, [answers[i + 1] for i in range(len(bodies))]
        finally:
            sock.close(0)

    assert ask_batch("echo", [0])[1] == [0]  # its first handler's one-off costs, apart
    sizes, answers = ask_batch("echo", list(range(64)))
    assert answers == list(range(64))
    assert sum(sizes) == 64 and max(sizes) > 1, sizes  # batched (split only where the actor was paused)
    # Each handler takes longer than REPLY_HOLD_S: each answer goes as soon as it is made.
    sizes, answers = ask_batch("sleepy", [{"sleep": 0.01, "reply": i} for i in range(8)])
    assert answers == list(range(8)) and sizes == [1] * 8


def test_after_a_slow_handler_an_actor_answers_one_by_one_for_a_while(start_node):
    """Only the first slow handler after a fast spell delays the answers held before it: then the
    actor holds none (SLOW_HOLD_OFF_S), and a quick ask in a batch is answered before a slow one
    after it is done."""
    node = start_node(agent("sleepy", "SleepEcho"))
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(node.agent("sleepy")["endpoint"])

    def batch(first_id: int, bodies: list) -> list[list[int]]:
        frames = [wire.encode(wire.Kind.ASK, first_id + i, 0, "batcher", "sleepy", b) for i, b in enumerate(bodies)]
        sock.send(wire.batch_header(len(frames)) + b"".join(frames))
        got: list[list[int]] = []
        while sum(len(g) for g in got) < len(bodies):
            assert sock.poll(20_000)
            got.append([env[wire.CORR_ID] for env in wire.decode(sock.recv())])
        return got

    try:
        # The first slow handler: the quick answers held before it wait for it (once).
        got = batch(1, [{"reply": "quick"}, {"reply": "quick"}, {"sleep": 0.05, "reply": "slow"}])
        assert [m for g in got for m in g] == [1, 2, 3] and got[-1][-1] == 3
        # From then on, one by one: the quick answer goes before the slow handler runs.
        assert batch(10, [{"reply": "quick"}, {"sleep": 0.05, "reply": "slow"}]) == [[10], [11]]
        assert batch(20, [{"reply": i} for i in range(5)]) == [[20], [21], [22], [23], [24]]
    finally:
        sock.close(0)


def test_batches_fit_a_client_that_takes_small_frames(start_node):
    """A client whose frame limit is small: its batches of asks, and the actor's batches of answers
    (no larger than the batch they answer), stay under it; every ask is answered."""
    node = start_node(agent("echo", "Echo"))
    client = node.client(max_frame_bytes=16_384)

    async def main():
        echo = client.actor("echo")
        return await asyncio.gather(*(echo.ask_async(f"{i:04}" + "x" * 900, timeout=30) for i in range(200)))

    answers = asyncio.run(asyncio.wait_for(main(), 60))
    assert answers == [f"{i:04}" + "x" * 900 for i in range(200)]
