"""The transport: what the runtime needs from a network, as an interface with two implementations.

A transport moves frames (bytes) between processes. The runtime asks five things of it:

* :class:`Listener`: listen on an address and receive ``(identity, frame)`` pairs from any
  number of peers, with a bounded wait; answer a peer by its identity (a node's or an
  actor's ROUTER);
* :class:`Link`: connect to one endpoint, send tells (batched when the sender runs ahead),
  send a request and wait for its answer with a timeout, and know whether the peer is
  still there (connected, disconnected, refused: the ZeroMQ monitor events);
* :class:`Outlet`: a connection for fire-and-forget traffic that never blocks (gossip,
  the resends of reliable delivery), read with a :class:`Poller`;
* broadcasts (:class:`Broadcaster`, :class:`Publisher`, :class:`Subscriber`): a publisher
  sends once, the node's forwarder fans out to the subscribers whose topic prefixes match;
* bounded queues everywhere: a send to a peer whose queues are full waits for the send
  timeout and then raises MailboxFull; nothing is dropped silently on the sending side.

Two implementations: ZeroMQ (:mod:`mesh.runtime.zeromq`, what runs in production; every
ZeroMQ socket is built in :mod:`mesh.runtime.sockets`) and an in-memory twin
(:mod:`mesh.runtime.memory`) that runs a whole mesh in one process, with links that can be
cut and healed. ``tests/test_transport.py`` runs the same tests against both.

The ZeroMQ objects are the interface's objects themselves (a :class:`Channel` is the link,
a ROUTER socket of class ``RouterSocket`` the listener): the message path goes through no
wrapper. That is why a receive that waited in vain raises :data:`NothingYet`, which is
ZeroMQ's own ``zmq.Again``: ZeroMQ's socket raises it with no translation, and the twin
raises the same class.

Where the notes on the ZeroMQ transport moved (issue 12 split this module):
:mod:`.channel` (batching, the monitor, the byte budget of a channel),
:mod:`.sockets` (socket options; why no ZMTP heartbeats; TCP keepalive),
:mod:`.flusher` (the flusher and janitor threads), :mod:`.intake` (bad frames, shedding).
The names that lived here before are still importable from here.
"""

from __future__ import annotations

import importlib
import threading
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import zmq

from ..errors import ActorDied

if TYPE_CHECKING:  # pragma: no cover
    from .clock import Clock
    from .intake import BadFrames

#: Raised by a receive whose wait ended with nothing (and by a send that found the queue full).
NothingYet = zmq.Again
#: The flag that makes a receive return at once: ``listener.receive(bad, NOWAIT)``.
NOWAIT: int = int(zmq.NOBLOCK)
#: What a poller reports for a connection with something to read.
POLLIN: int = int(zmq.POLLIN)
#: What a link learns of its connection (ZeroMQ's monitor events, which the twin reports too):
#: the peer accepted it; the peer went away; a connection attempt failed (nobody listens).
CONNECTED: int = int(zmq.EVENT_CONNECTED)
DISCONNECTED: int = int(zmq.EVENT_DISCONNECTED)
RETRIED: int = int(zmq.EVENT_CONNECT_RETRIED)
#: Bytes one channel may hold queued for its peer, by default (Client option ``send_bytes``).
SEND_BYTES = 32 * 1024 * 1024


class Unreachable(ActorDied):
    """Nothing ever listened at the endpoint: the request never reached any process."""


class AddressError(OSError):
    """An address a transport cannot listen on (taken, invalid) or connect to (invalid).

    ``strerror`` says why, as for any OSError."""


def frames_within(budget: int, frame_bytes: int, most: int) -> int:
    """How many frames of up to ``frame_bytes`` fit in ``budget`` bytes: at least 1, at most ``most``.

    Queues are bounded in frames (libzmq's high-water marks), budgets in bytes: a queue gets
    as many frames of the largest size it may carry as fit in its budget."""
    return max(1, min(int(most), int(budget) // max(1, int(frame_bytes))))


#: The identity of a wake-up: a listener that can be woken (a ZeroMQ ROUTER, ``wake()``) receives
#: ``(WAKE_ID, b"")`` from it, which is no request: its owner only looks at its stop flag and timers.
WAKE_ID = b"mesh-wake"


# -- the interface ------------------------------------------------------------------------


@runtime_checkable
class Listener(Protocol):
    """A bound endpoint that many peers send to (a ROUTER): one per node, one per served actor."""

    #: The address peers connect to (with the port chosen when listening on any port).
    address: str

    def receive(self, bad: "BadFrames", flags: int = 0) -> tuple[Any, Any] | None:
        """One ``(identity, frame)`` from a peer, waiting up to the listener's wait (``flags=NOWAIT``:
        not at all). None for a message dropped unread (malformed, or from a peer ``bad`` sheds).
        Raises :data:`NothingYet` when nothing arrived in time."""
        ...

    def reply(self, identity: Any, frame: bytes) -> None:
        """Send ``frame`` to the peer ``identity`` came from. Never blocks: an answer to a peer
        that is gone, or that leaves more than the reply bound unread, is dropped."""
        ...

    def set_wait(self, ms: int) -> None:
        """How long a receive waits, in milliseconds."""
        ...

    def wait_for_input(self, ms: int, fd: int | None = None) -> tuple[bool, bool]:
        """Wait up to ``ms`` milliseconds for a frame to receive, or for ``fd`` (a descriptor, if
        given) to be readable: ``(a frame waits, fd is readable)``. Receives nothing itself."""
        ...

    def close(self, linger: int | None = None) -> None:
        """Stop listening; answers still queued get ``linger`` ms to leave."""
        ...


@runtime_checkable
class Link(Protocol):
    """A connection to one endpoint, owned by one thread (a :class:`~mesh.runtime.channel.Channel`).

    ``tell`` may hold a frame back to batch it with the next ones (the flusher sends it
    within LINGER_S); ``request`` sends what is held first, so order is kept."""

    endpoint: str
    lock: threading.Lock
    pending: list[bytes]
    #: The peer accepted the connection at least once.
    connected: bool
    #: The peer went away, or nothing listens: open a fresh link (the address may be stale).
    dead: bool
    #: Nothing ever accepted the connection.
    refused: bool
    closed: bool
    #: The largest frame the peer takes, in bytes.
    limit: int
    #: The thread that owns the link.
    thread: int

    def poll_events(self) -> bool:
        """Read what happened to the connection since last time; True if the peer is gone."""
        ...

    def tell(self, frame: bytes, flusher: Any) -> None:
        """Send (or hold for a batch) a one-way frame. Raises Unreachable, MailboxFull, WireError."""
        ...

    def request(self, frame: bytes, msg_id: int, timeout: float, what: str) -> object:
        """Send a request and return the body of the answer whose ``corr_id`` is ``msg_id``.
        Raises Unreachable, ActorDied, AskTimeout, MailboxFull or the error the peer answered."""
        ...

    def flush(self) -> None:
        """Send what ``tell`` holds back."""
        ...

    def flush_locked(self) -> None:
        """``flush`` for a caller that holds ``lock``."""
        ...

    def close(self, linger_ms: int = 0) -> None:
        """Close the connection (frames still queued get ``linger_ms``). Safe to call twice."""
        ...


@runtime_checkable
class Outlet(Protocol):
    """A connection for traffic that must never block its sender (gossip, delivery resends)."""

    def send_nowait(self, frame: bytes) -> bool:
        """Queue ``frame`` if there is room (and, for an ``immediate`` outlet, a connected peer)."""
        ...

    def recv_nowait(self) -> bytes | None:
        """An answer that arrived, or None."""
        ...

    def close(self, linger: int | None = None) -> None:
        ...


@runtime_checkable
class Poller(Protocol):
    """Waits until one of several outlets has something to read (``zmq.Poller``'s shape)."""

    def register(self, outlet: Any, flags: int = POLLIN) -> None:
        ...

    def unregister(self, outlet: Any) -> None:
        ...

    def poll(self, timeout: int | None = None) -> list[tuple[Any, int]]:
        """``(outlet, POLLIN)`` for each outlet with something to read, waiting up to ``timeout`` ms."""
        ...


@runtime_checkable
class Broadcaster(Protocol):
    """A node's forwarder of broadcasts: publishers send each broadcast once to ``in_address``,
    and it fans out to every subscriber connected to ``out_address`` whose prefixes match its
    topic (ZeroMQ: a PULL and a PUB joined by libzmq's proxy, on a thread of their own)."""

    in_address: str
    out_address: str

    def close(self) -> None:
        ...


@runtime_checkable
class Publisher(Protocol):
    """A connection to one broadcaster's ``in_address``; owned by one thread."""

    def publish(self, topic: bytes, frame: bytes) -> None:
        """Send ``frame`` under ``topic`` once. Raises MailboxFull if the queue stays full for the
        send timeout (the forwarder is gone or far behind)."""
        ...

    def close(self) -> None:
        ...


@runtime_checkable
class Subscriber(Protocol):
    """Subscriptions to any number of broadcasters. ``connect``, ``disconnect``, ``subscribe``
    and ``unsubscribe`` may be called from any thread (they take effect in the receiving
    thread, in order); ``receive`` only from the one thread that receives."""

    def connect(self, address: str) -> None:
        ...

    def disconnect(self, address: str) -> None:
        ...

    def subscribe(self, prefix: bytes) -> None:
        ...

    def unsubscribe(self, prefix: bytes) -> None:
        ...

    def receive(self, timeout_ms: int) -> tuple[bytes, bytes] | None:
        """The next ``(topic, frame)``, waiting up to ``timeout_ms``; None if nothing came (or the
        wait was cut short by a change of subscriptions)."""
        ...

    def close(self) -> None:
        ...


@runtime_checkable
class Transport(Protocol):
    """Makes listeners, links and outlets. Pass one to the node, the server and the client."""

    #: The address scheme this transport speaks: "tcp" (ZeroMQ) or "mem" (the twin).
    scheme: str
    #: The clock links measure request timeouts with, unless given another.
    clock: "Clock"

    def listen(self, address: str, *, mailbox: int, replies: int, max_bytes: int, linger_ms: int, wait_ms: int,
               any_port: bool = False) -> Listener:
        """Listen on ``address`` (``any_port``: on a free port of its host; the listener's ``address``
        says which). ``mailbox``: frames queued per sending peer; ``replies``: answers queued per
        peer before they are dropped; ``max_bytes``: the largest frame taken (a larger one cuts
        the sender's connection); ``wait_ms``: how long a receive waits. Raises AddressError."""
        ...

    def channel(self, endpoint: str, *, hwm: int, send_timeout: float, max_bytes: int, limit: int | None = None,
                send_bytes: int = SEND_BYTES, clock: "Clock | None" = None) -> Link:
        """A link to ``endpoint`` queuing at most ``hwm`` frames and ``send_bytes`` bytes (see
        frames_within); a full queue blocks a send ``send_timeout`` seconds, then MailboxFull.
        ``limit``: the largest frame the peer takes; ``max_bytes``: the largest answer taken."""
        ...

    def outlet(self, endpoint: str, *, hwm: int, max_bytes: int, linger_ms: int = 0, immediate: bool = False) -> Outlet:
        """A never-blocking connection to ``endpoint`` (``immediate``: queue nothing while not
        connected). Raises AddressError for an address the transport cannot connect to."""
        ...

    def poller(self) -> Poller:
        ...

    def is_address(self, address: str) -> bool:
        """Whether ``address`` is one this transport can listen on or connect to (HOST:PORT form)."""
        ...

    def broadcaster(self, host: str, *, hwm: int, max_bytes: int) -> Broadcaster:
        """A forwarder of broadcasts listening on two free ports of ``host`` (``tcp://HOST``)."""
        ...

    def publisher(self, endpoint: str, *, hwm: int, max_bytes: int, send_timeout: float) -> Publisher:
        ...

    def subscriber(self, *, hwm: int, max_bytes: int) -> Subscriber:
        ...


# -- names that lived here before the split (issue 12) -------------------------------------

_MOVED = {
    "Channel": "channel", "LINGER_S": "channel", "BATCH_MAX": "channel", "BATCH_SOLO_BYTES": "channel",
    "WAIT_SLICE_MS": "channel", "IDLE_CHECK_S": "channel", "_close_dropped": "channel",
    "Flusher": "flusher", "FLUSHER": "flusher", "Janitor": "flusher", "JANITOR": "flusher", "snapshot": "flusher",
    "BadFrames": "intake", "recv_request": "intake", "SHED_AFTER": "intake", "SHED_WEIGHT_BYTES": "intake",
    "SHED_WINDOW_S": "intake", "SHED_FOR_S": "intake", "SHED_PEERS": "intake", "LOG_LINES_PER_S": "intake",
    "context": "sockets", "tune_socket": "sockets", "KEEPALIVE_IDLE_S": "sockets", "KEEPALIVE_INTVL_S": "sockets",
    "KEEPALIVE_CNT": "sockets",
}

if TYPE_CHECKING:  # pragma: no cover  (for type checkers: the moved names others import from here)
    from .channel import Channel, _close_dropped  # noqa: F401
    from .flusher import FLUSHER, snapshot  # noqa: F401
    from .intake import recv_request  # noqa: F401
    from .sockets import context, tune_socket  # noqa: F401


def __getattr__(name: str) -> Any:
    # Lazily: those modules import this one (for the interface), so this one cannot import them first.
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__package__}.{module}"), name)
