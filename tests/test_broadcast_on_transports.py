"""Broadcasts (a forwarder, publishers, subscribers), the same tests on ZeroMQ and on the in-memory twin.

What the runtime relies on (mesh.runtime.broadcast): a broadcast published once reaches every
subscriber whose prefixes match its topic and no other; a terminator makes a topic exact;
subscriptions apply in order, so a hello echoed after a subscription proves it in place; an
unsubscribed prefix stops; changes may come from any thread while one thread receives.
"""

from __future__ import annotations

import threading
import time

import pytest

from mesh.runtime.broadcast import event_topic, hello_topic
from mesh.runtime.memory import MemoryNetwork
from mesh.runtime.transport import Broadcaster, Publisher, Subscriber, Transport
from mesh.runtime.zeromq import ZmqTransport

pytestmark = [pytest.mark.fast_check, pytest.mark.timeout(30)]

MiB = 1024 * 1024


@pytest.fixture(params=["zmq", "memory"])
def world(request):
    opened: list = []
    if request.param == "zmq":
        transport: Transport = ZmqTransport()
        host = "tcp://127.0.0.1"
    else:
        transport = MemoryNetwork().transport("a")
        host = "mem://a"

    class World:
        def broadcaster(self) -> Broadcaster:
            b = transport.broadcaster(host, hwm=1000, max_bytes=MiB)
            opened.append(b)
            return b

        def publisher(self, b: Broadcaster) -> Publisher:
            p = transport.publisher(b.in_address, hwm=1000, max_bytes=MiB, send_timeout=1.0)
            opened.append(p)
            return p

        def subscriber(self, b: Broadcaster) -> Subscriber:
            s = transport.subscriber(hwm=1000, max_bytes=MiB)
            s.connect(b.out_address)
            opened.append(s)
            return s

    yield World()
    for thing in reversed(opened):
        thing.close()


def drain(sub: Subscriber, until: float, want: int | None = None) -> list[tuple[bytes, bytes]]:
    """What arrives until ``until`` (or ``want`` items), hellos left out (extra ones may trail)."""
    got = []
    while time.monotonic() < until and (want is None or len(got) < want):
        item = sub.receive(20)
        if item is not None and not item[0].startswith(b"h/"):
            got.append(item)
    return got


def confirmed(sub: Subscriber, pub: Publisher, name: str, deadline: float = 5.0) -> None:
    """The handshake: publish hellos until one comes back (then earlier subscriptions are in place)."""
    topic = hello_topic(name)
    sub.subscribe(topic)
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        pub.publish(topic, b"hello")
        item = sub.receive(20)
        while item is not None:
            if item[0] == topic:
                return
            item = sub.receive(0)
    raise AssertionError("no hello came back")


def test_one_publish_reaches_every_matching_subscriber_and_no_other(world):
    b = world.broadcaster()
    pub = world.publisher(b)
    subs = [world.subscriber(b) for _ in range(3)]
    subs[0].subscribe(event_topic("alerts"))
    subs[1].subscribe(event_topic("alerts"))
    subs[2].subscribe(event_topic("alert"))  # a topic that is a prefix of another is still its own
    for i, s in enumerate(subs):
        confirmed(s, pub, f"s{i}")
    for n in range(5):
        pub.publish(event_topic("alerts"), b"%d" % n)
    pub.publish(event_topic("alert"), b"short")
    until = time.monotonic() + 3
    assert [f for _, f in drain(subs[0], until, 5)] == [b"0", b"1", b"2", b"3", b"4"]  # in order
    assert [f for _, f in drain(subs[1], until, 5)] == [b"0", b"1", b"2", b"3", b"4"]
    assert drain(subs[2], until, 1) == [(event_topic("alert"), b"short")]
    assert drain(subs[2], time.monotonic() + 0.2) == []  # nothing of "alerts"


def test_an_unsubscribed_topic_stops_and_changes_from_another_thread_take_effect(world):
    b = world.broadcaster()
    pub = world.publisher(b)
    sub = world.subscriber(b)
    received: list[tuple[bytes, bytes]] = []
    stop = threading.Event()

    def receiving() -> None:  # the one thread that receives
        while not stop.is_set():
            item = sub.receive(20)
            if item is not None:
                received.append(item)

    t = threading.Thread(target=receiving)
    t.start()
    try:
        sub.subscribe(event_topic("t"))  # from this thread, while the other receives
        sub.subscribe(hello_topic("me"))
        end = time.monotonic() + 5
        while not any(topic == hello_topic("me") for topic, _ in received) and time.monotonic() < end:
            pub.publish(hello_topic("me"), b"")
            time.sleep(0.01)
        pub.publish(event_topic("t"), b"before")
        end = time.monotonic() + 5
        while (event_topic("t"), b"before") not in received and time.monotonic() < end:
            time.sleep(0.01)
        assert (event_topic("t"), b"before") in received
        sub.unsubscribe(event_topic("t"))
        received.clear()
        end = time.monotonic() + 5
        while not any(topic == hello_topic("me") for topic, _ in received) and time.monotonic() < end:
            pub.publish(hello_topic("me"), b"")  # echoed after the unsubscribe: it is applied
            time.sleep(0.01)
        pub.publish(event_topic("t"), b"after")
        pub.publish(hello_topic("me"), b"last")
        end = time.monotonic() + 5
        while (hello_topic("me"), b"last") not in received and time.monotonic() < end:
            time.sleep(0.01)
        assert (hello_topic("me"), b"last") in received
        assert (event_topic("t"), b"after") not in received
    finally:
        stop.set()
        t.join()


def test_a_closed_broadcaster_frees_its_thread(world):
    b = world.broadcaster()
    before = threading.active_count()
    b.close()
    assert threading.active_count() <= before
