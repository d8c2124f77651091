"""An embedded actor and a client, the same tests over ZeroMQ and over the in-memory twin.

Each test gets ``world`` (once per transport): a real node (``n``) running in this process,
actors served in threads by the real :class:`~mesh.runtime.server.Server` (host ``b``) and
real clients (host ``a``), all on the world's transport (:class:`node_mesh.NodeMesh`).
``world.cut()`` stops delivery between the clients and the actors (a cut relay on every
link between the two hosts for ZeroMQ, the network's own cut between hosts for the twin),
``world.heal()`` resumes it; the node stays reachable from both.

What is tested here is the server's loop, the client, references and reliable delivery.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from conftest import wait_until
from mesh.actor import Actor
from mesh.errors import ActorDied, ActorNotFound, AskTimeout, MailboxFull, RemoteError
from mesh.runtime.client import Client
from mesh.runtime.clock import Clock, FakeClock
from mesh.runtime.server import Server
from node_mesh import KINDS, NodeMesh

pytestmark = pytest.mark.fast_check


class World:
    """A real node, served actors and clients on one transport; all closed at teardown.

    Hosts (for the cuts): clients on "a", actors on "b", the node on "n"."""

    def __init__(self, kind: str, home) -> None:
        self.kind = kind
        self.mesh = NodeMesh(kind, home)
        self.node = self.mesh.start("n")
        self.crashes = self.mesh.crashes  # actor name -> what ended its server's thread

    def serve(self, actor: Actor, name: str, *, clock: Clock | None = None, **options: object) -> Server:
        """Run ``actor`` in a thread (as ``mesh.serve`` embeds one) until it is registered."""
        return self.mesh.serve(actor, name, self.node, host="b", clock=clock, **options)

    def client(self, **options: object) -> Client:
        return self.mesh.client(self.node, host="a", **options)

    def cut(self) -> None:
        self.mesh.cut("a", "b")

    def heal(self) -> None:
        self.mesh.heal()

    def close(self) -> None:
        self.mesh.close()


@pytest.fixture(params=KINDS)
def world(request, tmp_path, monkeypatch):
    monkeypatch.setenv("MESH_HOME", str(tmp_path / "home"))
    made = World(request.param, tmp_path)
    yield made
    made.close()


# -- actors --------------------------------------------------------------------------------


class Recorder(Actor):
    """Answers an ask with its body and keeps every body it handled (of a list, its first item:
    an ordinal before bulk); ``"seen"`` asks for them, ``"raise"`` makes the handler fail,
    ``"die"`` ends its process (here: its server's thread)."""

    def __init__(self) -> None:
        self.seen: list = []

    def on_message(self, message):
        if message == "seen":
            return list(self.seen)
        if message == "raise":
            raise ValueError("the handler refuses")
        if message == "die":
            raise SystemExit(1)
        self.seen.append(message[0] if isinstance(message, list) else message)
        return message


class Gate(Recorder):
    """A Recorder whose handler waits at the gate (``opened``) from its first message on."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.opened = threading.Event()

    def on_message(self, message):
        if message != "seen":
            self.entered.set()
            self.opened.wait(30)
        return super().on_message(message)


class Forwarder(Actor):
    """Asks the actor named in the message and answers with what it answered."""

    def on_message(self, message):
        return {"via": self.mesh.name, "answer": self.mesh.actor(message["to"]).ask(message["body"])}


# -- asks and tells ------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_an_ask_gets_the_answer_and_tells_arrive_in_the_order_they_were_told(world):
    world.serve(Recorder(), "recorder")
    ref = world.client().actor("recorder")
    assert ref.ask({"hello": 1}) == {"hello": 1}
    for i in range(200):
        ref.tell(i)
    assert ref.ask("seen") == [{"hello": 1}, *range(200)]


@pytest.mark.timeout(30)
def test_an_actor_asks_another_through_its_own_client_on_the_same_transport(world):
    world.serve(Recorder(), "recorder")
    world.serve(Forwarder(), "forwarder")
    answer = world.client().actor("forwarder").ask({"to": "recorder", "body": "through"})
    assert answer == {"via": "forwarder", "answer": "through"}


@pytest.mark.timeout(30)
def test_an_ask_fails_with_the_handlers_error_the_timeout_or_a_missing_actor(world):
    gate = Gate()
    world.serve(Recorder(), "recorder")
    world.serve(gate, "gate")
    client = world.client(resolve_timeout=0.3)
    with pytest.raises(RemoteError, match="the handler refuses"):
        client.actor("recorder").ask("raise")
    assert client.actor("recorder").ask("still here") == "still here"
    with pytest.raises(AskTimeout):
        client.actor("gate").ask("held", timeout=0.3)
    gate.opened.set()
    assert client.actor("gate").ask("seen") == ["held"]
    with pytest.raises(ActorNotFound):
        client.actor("nobody").ask("hello?")


@pytest.mark.timeout(60)
def test_a_full_mailbox_raises_mailbox_full_and_loses_nothing_it_accepted(world):
    gate = Gate()
    world.serve(gate, "gate", mailbox=2)
    ref = world.client(hwm=2, send_timeout=0.2).actor("gate")
    body = b"x" * (256 * 1024)  # large, so TCP's buffers hold few of them
    ref.tell([0, body])
    assert gate.entered.wait(10)  # the handler holds the first; the mailbox and the sender's queue fill
    accepted = 1
    with pytest.raises(MailboxFull):
        while accepted < 500:
            ref.tell([accepted, body])
            accepted += 1
    if world.kind == "memory":
        assert accepted == 5  # exactly: the one being handled, the mailbox's 2, the sender's 2
    gate.opened.set()
    assert ref.ask("seen", timeout=20) == list(range(accepted))  # in order, none lost, none twice
    ref.tell(["after", body])  # room again
    assert ref.ask("seen", timeout=20)[-1] == "after"


@pytest.mark.timeout(30)
def test_an_ask_in_flight_when_the_actor_goes_away_fails_at_once_and_the_next_finds_it_gone(world):
    world.serve(Recorder(), "doomed")
    ref = world.client(resolve_timeout=0.3).actor("doomed")
    assert ref.ask("hello") == "hello"
    started = time.monotonic()
    with pytest.raises(ActorDied):
        ref.ask("die", timeout=20)
    assert time.monotonic() - started < 10  # the death was seen, not the 20 s timeout
    # the server's thread tells its clients of the death as it unwinds, then ends: wait for its end
    wait_until(lambda: "doomed" in world.crashes, 10, "the server's thread ended")
    assert type(world.crashes["doomed"]) is SystemExit
    with pytest.raises(ActorNotFound):
        ref.ask("anyone?")


@pytest.mark.timeout(60)
def test_a_cut_delivers_nothing_until_healed_and_then_everything_in_order(world):
    recorder = Recorder()
    world.serve(recorder, "recorder")
    ref = world.client().actor("recorder")
    assert ref.ask("before") == "before"
    world.cut()
    for i in range(5):
        ref.tell(i)
    with pytest.raises(AskTimeout):
        ref.ask("during", timeout=0.5)
    assert recorder.seen == ["before"]
    world.heal()
    assert ref.ask("after", timeout=10) == "after"  # the late answer to "during" is passed over
    assert recorder.seen == ["before", 0, 1, 2, 3, 4, "during", "after"]


@pytest.mark.timeout(30)
def test_an_actors_timers_run_by_the_clock_it_is_given(world):
    clock = FakeClock()
    fired = threading.Event()

    class Timed(Actor):
        def on_start(self):
            self.mesh.after(5.0, "tick")

        def on_message(self, message):
            if message == "tick":
                fired.set()

    world.serve(Timed(), "timed", clock=clock)
    assert not fired.wait(0.5)  # half a real second: its clock has not moved
    clock.advance(5.0)
    assert fired.wait(5)


# -- reliable delivery ---------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_an_acknowledged_tell_is_handled_once_and_acknowledged(world):
    recorder = Recorder()
    world.serve(recorder, "recorder")
    client = world.client()
    delivery = client.actor("recorder").tell("once", ack=True, timeout=10)
    delivery.wait(10)
    assert delivery.acked and delivery.attempts == 1
    assert recorder.seen == ["once"]
    assert client.drain(5) == 0


@pytest.mark.timeout(60)
def test_acknowledged_tells_are_resent_across_a_cut_and_handled_once_each_after_it_heals(world):
    recorder = Recorder()
    world.serve(recorder, "recorder")
    client = world.client()
    ref = client.actor("recorder")
    assert ref.ask("before") == "before"
    world.cut()
    deliveries = [ref.tell(i, ack=True, timeout=30) for i in range(3)]
    wait_until(lambda: all(d.attempts >= 2 for d in deliveries), 10, "resends while the link is cut")
    assert not any(d.acked for d in deliveries)
    assert recorder.seen == ["before"]
    world.heal()
    for d in deliveries:
        d.wait(20)
    assert all(d.acked for d in deliveries)
    assert recorder.seen == ["before", 0, 1, 2]  # every copy arrived; the handler ran once each


@pytest.mark.timeout(30)
def test_an_acknowledged_tell_to_an_actor_that_never_comes_fails_at_its_deadline(world):
    client = world.client()
    delivery = client.actor("nobody").tell("lost", ack=True, timeout=1.0)
    with pytest.raises(AskTimeout):
        delivery.wait(10)
    assert not delivery.acked


# -- the twin only -------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_the_asyncio_forms_refuse_a_transport_other_than_zeromq_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("MESH_HOME", str(tmp_path / "home"))
    world = World("memory", tmp_path)
    try:
        world.serve(Recorder(), "recorder")
        ref = world.client().actor("recorder")
        with pytest.raises(NotImplementedError, match="ZeroMQ transport only"):
            asyncio.run(ref.ask_async("hello"))
        assert ref.ask("hello") == "hello"  # the blocking forms work
    finally:
        world.close()
