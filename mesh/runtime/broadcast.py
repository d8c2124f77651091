"""Broadcasts on PUB/SUB: events on topics, and the intentions that ``on_intention`` hears.

Topology. Every node runs a forwarder (:class:`NodeBroadcast`: a PULL and a PUB joined by
libzmq's proxy on a thread, see :mod:`.zeromq_broadcast`). A publisher sends a broadcast
once, to its own node's forwarder; the forwarder's PUB sends it to every subscriber whose
subscriptions match its topic frame (ZeroMQ filters by prefix on the publishing side). A
subscriber's one SUB connects to the forwarder of *every* live node (their ``broadcast``
addresses are in the gossiped ``$node/NAME`` records), so a broadcast crosses the mesh in
two hops whatever node it starts on, and a node forwards only what its own processes
publish (no loops, no node-to-node relaying). Why not one forwarder per node relaying to
the others: a relay chain would need loop prevention and adds a hop; a SUB connected to a
handful of nodes costs one TCP connection each.

Topic frames: ``e/TOPIC\\0`` for events (the terminator makes a subscription exact),
``i/`` for intentions, ``h/SUBSCRIBER\\0`` for the handshake below. The second frame is
an ordinary envelope (:mod:`mesh.wire`), so a subscriber hands an event to its actor's own
ROUTER unchanged and the actor's loop handles it like any EVENT (``on_event``), in order
with its other messages.

The slow joiner, handled. A SUB's subscription reaches a PUB asynchronously; until it
has, the PUB drops what it would have sent. So :meth:`Subscriptions.subscribe` returns
only once every known node's forwarder has *echoed a hello*: the subscriber subscribes to
its own ``h/ID`` topic after its other subscriptions, asks each node (on the router path)
to publish a hello there, and retries until each hello comes back. A PUB applies one
subscriber's subscriptions in the order they were sent, so a hello received proves the
earlier subscriptions are in place at that forwarder: a broadcast published after
``subscribe()`` returned is delivered (barring a full queue or a node that dies).

Guarantees (events): fire-and-forget, like a tell: no acknowledgement, no retry. Order is
kept per publisher thread and node (one PUSH, one forwarder, one PUB, one SUB: FIFO all
along). A subscriber that leaves more than ``BROADCAST_HWM`` broadcasts unread loses the
excess (the PUB drops them, so that a slow subscriber never holds up the others). A
broadcast carries at most ``BROADCAST_MAX_BYTES`` (a larger publish raises WireError). A node
that restarts loses what its forwarder held; its subscribers reconnect on their own (the
SUB resubscribes) and the nodes that join are connected within ``REFRESH_S``. A publisher's
PUSH queues only on a live connection, so once its node's forwarder is gone a publish times
out and asks the node where the forwarder is now (:meth:`Publishers.publish`).
"""

from __future__ import annotations

import itertools
import logging
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack

from .. import wire
from . import rpc, tracing
from ..errors import MeshError, WireError
from .transport import Broadcaster, Publisher, Subscriber, Transport

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client

log = logging.getLogger("mesh.broadcast")

#: Broadcasts queued per subscriber connection (at the PUB, and at the SUB) and per publisher, at most.
BROADCAST_HWM = 10_000
#: The largest broadcast, in bytes (envelope included): with BROADCAST_HWM, what bounds each queue
#: (2.5 GiB at worst, for a stuck subscriber of a publisher of the largest events at full speed;
#: events are usually tens of bytes). Larger data belongs in a tell or the shared state.
BROADCAST_MAX_BYTES = 256 * 1024
#: Seconds between a subscriber's looks at which nodes are alive (to connect to new ones).
REFRESH_S = 2.0
#: Seconds between a subscriber's hello requests while it waits for the echoes.
HELLO_RETRY_S = 0.02
HELLO_WAIT_MS = int(HELLO_RETRY_S * 1000)
#: The recipient named in a broadcast envelope.
BROADCAST_RECIPIENT = "$broadcast"

EVENT_PREFIX = b"e/"
INTENTION_TOPIC = b"i/"
HELLO_PREFIX = b"h/"
MEMBERSHIP_TOPIC = b"m/"  #: a node's note to its subscribers that the live forwarders changed


def event_topic(topic: str) -> bytes:
    """The topic frame of events on ``topic``: exact, thanks to the terminator."""
    return EVENT_PREFIX + topic.encode() + b"\0"


def hello_topic(subscriber: str) -> bytes:
    return HELLO_PREFIX + subscriber.encode() + b"\0"


def host_of(address: str) -> str:
    """``tcp://HOST`` of ``tcp://HOST:PORT`` (``mem://NAME`` of ``mem://NAME:PORT``)."""
    return address.rsplit(":", 1)[0] if address.count(":") > 1 else address


# -- the node's side ----------------------------------------------------------------------------


class NodeBroadcast:
    """A node's forwarder, and the node's own publisher into it (hellos, intentions)."""

    def __init__(self, name: str, transport: Transport, listen: str, advertise: str, max_bytes: int):
        self.name = name
        max_bytes = min(max_bytes, BROADCAST_MAX_BYTES)
        self.broadcaster: Broadcaster = transport.broadcaster(host_of(listen), hwm=BROADCAST_HWM, max_bytes=max_bytes)
        # Others reach the ports on the host they reach the node at.
        advertised = host_of(advertise)
        self.in_address = advertised + ":" + self.broadcaster.in_address.rsplit(":", 1)[1]
        self.out_address = advertised + ":" + self.broadcaster.out_address.rsplit(":", 1)[1]
        self._own: Publisher = transport.publisher(self.broadcaster.in_address, hwm=BROADCAST_HWM, max_bytes=max_bytes,
                                                   send_timeout=0.0)

    def publish(self, topic: bytes, frame: bytes) -> bool:
        """Broadcast from the node itself; False if the forwarder's queue is full or the frame is
        over BROADCAST_MAX_BYTES (dropped: the forwarder would cut a sender of a larger one)."""
        if len(frame) > BROADCAST_MAX_BYTES:
            log.warning("node %s: a broadcast of %d bytes not sent (at most %d)", self.name, len(frame),
                        BROADCAST_MAX_BYTES)
            return False
        try:
            self._own.publish(topic, frame)
        except MeshError:
            return False
        return True

    def hello(self, subscriber: str, seq: int) -> bool:
        return self.publish(hello_topic(subscriber), msgpack.packb([self.name, seq]))

    def close(self) -> None:
        self._own.close()
        self.broadcaster.close()


# -- the publisher's side -----------------------------------------------------------------------


class Publishers:
    """A client's publishers: one per thread (a socket belongs to one thread), to its node's forwarder."""

    def __init__(self, client: "Client"):
        self.client = client
        self._local = threading.local()
        self._all: list[Publisher] = []
        self._lock = threading.Lock()
        self.address: str | None = None

    def _publisher(self) -> Publisher:
        pub: Publisher | None = getattr(self._local, "pub", None)
        address = self.address
        if address is None:
            address = self.address = rpc.broadcast(self.client)["in"]
        if pub is None or getattr(self._local, "address", None) != address:
            pub = self.client.transport.publisher(address, hwm=BROADCAST_HWM, max_bytes=BROADCAST_MAX_BYTES,
                                                  send_timeout=self.client.send_timeout)
            self._local.pub, self._local.address = pub, address
            with self._lock:
                self._all.append(pub)
        return pub

    def publish(self, topic: bytes, frame: bytes) -> None:
        if len(frame) > BROADCAST_MAX_BYTES:
            raise WireError(f"a broadcast carries at most {BROADCAST_MAX_BYTES // 1024} KiB; this one is {len(frame)} bytes"
                            " (send large data with a tell, or put it in the shared state and publish its key)")
        try:
            self._publisher().publish(topic, frame)
        except MeshError:
            # The forwarder took nothing for the send timeout: the node may have restarted on new
            # ports. Ask again once; a node that is gone raises NodeUnavailable here.
            fresh = rpc.broadcast(self.client)["in"]
            if fresh == self.address:
                raise
            self.address = fresh
            self._publisher().publish(topic, frame)

    def close(self) -> None:
        with self._lock:
            pubs, self._all = self._all, []
        for pub in pubs:
            pub.close()


# -- the subscriber's side ----------------------------------------------------------------------


class Subscriptions:
    """A process's subscriptions: one subscriber, received on a thread of its own.

    ``deliver(topic, frame)`` runs on that thread for every broadcast but the hellos (the
    server hands events to its actor's ROUTER; intentions are heard right there). The
    subscriber connects to every live node's forwarder and keeps up with the membership."""

    def __init__(self, client: "Client", deliver: Callable[[bytes, bytes], None], name: str = ""):
        self.client = client
        self.deliver = deliver
        self.id = f"{name or client.name}-{uuid.uuid4().hex[:12]}"
        self.subscriber: Subscriber = client.transport.subscriber(hwm=BROADCAST_HWM, max_bytes=BROADCAST_MAX_BYTES)
        self._hello = hello_topic(self.id)
        self.subscriber.subscribe(MEMBERSHIP_TOPIC)
        self.subscriber.subscribe(self._hello)
        self.nodes: dict[str, str] = {}  # node name -> its forwarder's out address, connected
        self._addresses: dict[str, str] = {}  # node name -> its router address (where to ask for hellos)
        self._echoed: dict[str, int] = {}  # node name -> the newest hello seq it echoed
        self._joining: dict[str, int] = {}  # node name -> the hello seq it must echo (connected since)
        self._seqs = itertools.count(1)
        self._cond = threading.Condition()
        self._membership = threading.Lock()  # one refresh at a time
        self._stop = threading.Event()
        self._refresh(wait=True)
        self._thread = threading.Thread(target=self._run, name="mesh-subscriptions", daemon=True)
        self._thread.start()

    # -- any thread ------------------------------------------------------------------------

    def subscribe(self, topic: bytes, timeout: float = 5.0) -> list[str]:
        """Subscribe to ``topic`` (a prefix) and return once every known node has confirmed it
        (see the module note); returns the nodes that did not within ``timeout`` (none, normally)."""
        self.subscriber.subscribe(topic)
        return self.confirm(timeout)

    def unsubscribe(self, topic: bytes) -> None:
        self.subscriber.unsubscribe(topic)

    def confirm(self, timeout: float = 5.0) -> list[str]:
        """Wait until every known node's forwarder applied the subscriptions made so far."""
        self._refresh(wait=False)
        seq = next(self._seqs)
        clock = self.client.clock
        deadline = clock.monotonic() + timeout
        with self._membership:
            pending = dict(self._addresses)
        while pending:
            for address in list(pending.values()):
                try:
                    rpc.broadcast_hello(self.client, address, self.id, seq, timeout=max(0.05, min(1.0, timeout)))
                except MeshError:
                    pass  # a node that went away: it is not waited for past the deadline
            end = min(deadline, clock.monotonic() + HELLO_RETRY_S)
            with self._cond:
                while True:
                    pending = {n: a for n, a in pending.items() if self._echoed.get(n, 0) < seq}
                    left = end - clock.monotonic()
                    if not pending or left <= 0:
                        break
                    self._cond.wait(left)
            if clock.monotonic() >= deadline:
                break
        if pending:
            log.warning("subscription %s not confirmed by %s within %.1f s", self.id, sorted(pending), timeout)
        return sorted(pending)

    def confirmed(self) -> list[str]:
        """The nodes whose forwarders have echoed a hello since this subscriber connected to them:
        every subscription made before then is in place there."""
        with self._cond:
            return sorted(n for n in self.nodes if n not in self._joining and self._echoed.get(n, 0) > 0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.subscriber.close()

    # -- membership ------------------------------------------------------------------------

    def _refresh(self, wait: bool) -> None:
        """Connect to the forwarders of nodes that joined; disconnect from those that are gone."""
        try:
            answer = rpc.broadcast(self.client)
        except MeshError as exc:
            if wait:
                raise
            log.debug("membership not refreshed: %s", exc)
            return
        nodes = answer.get("nodes") or {}
        with self._membership:
            for node, where in nodes.items():
                out, address = where.get("out"), where.get("address")
                if not isinstance(out, str) or not isinstance(address, str):
                    continue
                if self.nodes.get(node) != out:
                    if node in self.nodes:
                        self.subscriber.disconnect(self.nodes[node])
                    self.subscriber.connect(out)
                    self.nodes[node] = out
                    with self._cond:
                        self._joining[node] = next(self._seqs)  # confirmed by the receiving thread
                self._addresses[node] = address
            for node in [n for n in self.nodes if n not in nodes]:
                self.subscriber.disconnect(self.nodes.pop(node))
                self._addresses.pop(node, None)
                with self._cond:
                    self._joining.pop(node, None)

    # -- the receiving thread ----------------------------------------------------------------

    def _run(self) -> None:
        clock = self.client.clock
        next_refresh = clock.monotonic() + REFRESH_S
        next_hello = 0.0
        hello = self._hello
        receive = self.subscriber.receive
        while not self._stop.is_set():
            try:
                got = receive(HELLO_WAIT_MS if self._joining else 200)
            except Exception:  # the socket closed under us: the process is ending
                if self._stop.is_set():
                    return
                raise
            if got is not None:
                topic, frame = got
                if topic == hello:
                    self._echo(frame)
                elif topic == MEMBERSHIP_TOPIC:
                    next_refresh = 0.0
                else:
                    try:
                        self.deliver(topic, frame)
                    except Exception:
                        log.exception("a broadcast could not be handled")
            now = clock.monotonic()
            if now >= next_refresh:
                next_refresh = now + REFRESH_S
                self._refresh(wait=False)
            if self._joining and now >= next_hello:
                next_hello = now + HELLO_RETRY_S
                self._greet_joining()

    def _greet_joining(self) -> None:
        """Ask the nodes connected since the last look for a hello, until each has echoed one."""
        with self._cond:
            joining = {n: seq for n, seq in self._joining.items() if self._echoed.get(n, 0) < seq}
            for n in [n for n in self._joining if n not in joining]:
                del self._joining[n]
        for node, seq in joining.items():
            address = self._addresses.get(node)
            if address is not None:
                try:
                    rpc.broadcast_hello(self.client, address, self.id, seq, timeout=0.5)
                except MeshError:
                    pass  # asked again at the next look

    def _echo(self, frame: bytes) -> None:
        try:
            node, seq = msgpack.unpackb(frame)
        except (ValueError, TypeError, msgpack.ExtraData):
            return
        if isinstance(node, str) and isinstance(seq, int):
            with self._cond:
                if seq > self._echoed.get(node, 0):
                    self._echoed[node] = seq
                self._cond.notify_all()


def encode_event(client: "Client", topic: str, data: object, corr: str | None) -> tuple[str, bytes]:
    """An event's id and envelope (EVENT, from the client's name)."""
    event_id = f"{client.name}:{next(client.ids)}"
    body: dict[str, Any] = {"topic": topic, "data": data, "id": event_id, "corr": corr}
    if tracing.ENABLED and tracing.active():  # under a span: the subscribers' handling joins its trace
        with tracing.sending(topic, ask=False, verb="publish") as traceparent:
            if traceparent is not None:
                return event_id, wire.encode_traced(int(wire.Kind.EVENT), next(client.ids), client.name,
                                                    BROADCAST_RECIPIENT, body, [], traceparent)
    return event_id, wire.encode(int(wire.Kind.EVENT), next(client.ids), 0, client.name, BROADCAST_RECIPIENT, body)
