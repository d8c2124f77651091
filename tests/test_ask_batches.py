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
    kinds and ids) and answers each frame's asks with one batch frame, unless ``answer`` is False."""

    def __init__(self, answer: bool = True, rcvhwm: int = 1000):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self.sock.setsockopt(zmq.LINGER, 0)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.answer = answer
        self.frames: list[list[tuple[int, int]]] = []  # per frame: (kind, msg_id) of each envelope
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        while not self.stop.is_set():
            if not poller.poll(50):
                continue
            ident, frame = self.sock.recv_multipart()
            envelopes = wire.decode(frame)
            self.frames.append([(env[wire.KIND], env[wire.MSG_ID]) for env in envelopes])
            answers = [wire.encode(wire.Kind.REPLY, 0, env[wire.MSG_ID], "raw", env[wire.SENDER], env[wire.BODY])
                       for env in envelopes if env[wire.KIND] == wire.Kind.ASK]
            if self.answer and answers:
                out = answers[0] if len(answers) == 1 else wire.batch_header(len(answers)) + b"".join(answers)
                self.sock.send_multipart([ident, out])

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


def on_link(client, raw: RawActor, work, timeout: float = 60.0):
    """Run ``work(link)`` on an event loop, with an asyncio link from ``client`` to ``raw``."""
    async def main():
        link = AsyncLink(raw.endpoint, client)
        try:
            return await work(link)
        finally:
            link.close()

    return asyncio.run(asyncio.wait_for(main(), timeout))


def _ask(client, link: AsyncLink, body: object, timeout: float = 20.0):
    msg_id = next(client.ids)
    frame = wire.encode(wire.Kind.ASK, msg_id, 0, client.name, "raw", body)
    return link.request(frame, msg_id, timeout, "the raw actor")


def test_asks_made_in_one_turn_go_out_in_batch_frames_and_batched_answers_are_read(client, raw_actor):
    raw = raw_actor()

    async def work(link):
        return await asyncio.gather(*(_ask(client, link, {"i": i}) for i in range(200)))

    answers = on_link(client, raw, work)
    assert answers == [{"i": i} for i in range(200)]  # every answer to its own ask, batched or not
    asks = sum(len(f) for f in raw.frames)
    assert asks == 200
    # Made in one turn: the first alone, the rest in batches (half of what is out at a time, at most
    # BATCH_ASKS a frame), not a frame each.
    assert len(raw.frames) <= 12, [len(f) for f in raw.frames]
    assert max(len(f) for f in raw.frames) <= 64


def test_an_ask_alone_goes_at_once_and_a_large_one_alone(client, raw_actor):
    raw = raw_actor()

    async def work(link):
        first = await _ask(client, link, "one")
        small = [_ask(client, link, i) for i in range(4)]
        big = _ask(client, link, "x" * 20_000)  # over BATCH_SOLO_BYTES: never held
        return first, await asyncio.gather(*small, big)

    first, answers = on_link(client, raw, work)
    assert first == "one" and answers == [0, 1, 2, 3, "x" * 20_000]
    assert raw.frames[0] == [(wire.Kind.ASK, raw.frames[0][0][1])]  # the lone ask: a frame of its own
    assert [len(f) for f in raw.frames if len(f) > 1], "the small asks were batched"
    sizes = [len(f) for f in raw.frames]
    assert sum(sizes) == 6 and sizes[-1] == 1  # the large ask went last, alone, after the held ones


def test_a_tell_after_held_asks_goes_after_them(client, raw_actor):
    """tell_async (link.send) first sends the asks held before it: one event loop's messages to one
    actor arrive in the order they were made."""
    raw = raw_actor()

    async def work(link):
        asks = [asyncio.ensure_future(_ask(client, link, i)) for i in range(6)]
        await asyncio.sleep(0)  # the asks run (all but the first held for the turn's end)...
        tell_id = next(client.ids)
        await link.send(wire.encode(wire.Kind.TELL, tell_id, 0, client.name, "raw", "after"))  # ...then the tell
        await asyncio.gather(*asks)
        return tell_id

    tell_id = on_link(client, raw, work)
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


def test_an_actor_answers_a_batch_of_asks_in_batches_but_a_slow_handler_at_once(start_node):
    node = start_node(agent("echo", "Echo") + agent("sleepy", "SleepEcho"))
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

    sizes, answers = ask_batch("echo", list(range(64)))
    assert answers == list(range(64))
    assert len(sizes) <= 8, sizes  # batched (a frame each only if the actor stalled over and over)
    # Each handler takes longer than REPLY_HOLD_S: each answer goes as soon as it is made.
    sizes, answers = ask_batch("sleepy", [{"sleep": 0.01, "reply": i} for i in range(8)])
    assert answers == list(range(8)) and sizes == [1] * 8
