"""The endpoints of the in-memory transport: listeners, sockets, channels and pollers.

They are the twin's objects of the transport interface (see :mod:`.memory` for how the
twin behaves): a :class:`MemoryListener` is a Listener, a :class:`MemoryChannel` a Link
(BaseChannel's batching and requests over a :class:`MemorySocket`), a
:class:`MemorySocket` an Outlet, a :class:`MemoryPoller` a Poller. Each keeps its queues;
the network they belong to routes between them, under its one lock.
"""

from __future__ import annotations

import collections
import select
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .channel import WAIT_SLICE_MS, BaseChannel
from .clock import REAL_CLOCK, Clock
from .transport import NOWAIT, POLLIN, SEND_BYTES, NothingYet, frames_within

if TYPE_CHECKING:  # pragma: no cover
    from .intake import BadFrames
    from .memory import MemoryNetwork, _Connection

__all__ = ["MemoryListener", "MemoryChannel", "MemorySocket", "MemoryPoller"]

_real_monotonic = time.monotonic
T = TypeVar("T")


def _take(queue: collections.deque[T], arrived: threading.Condition, wait_s: float, flags: int,
          closed: Callable[[], bool]) -> T:
    """The oldest item of ``queue``, waiting up to ``wait_s`` for one (NOWAIT: not at all); hold the lock."""
    if not queue:
        if flags & NOWAIT or not arrived.wait_for(lambda: queue or closed(), wait_s) or not queue:
            raise NothingYet()
    return queue.popleft()


def _readable(fd: int) -> bool:
    poller = select.poll()  # (select.select takes no descriptor past 1023)
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


class MemoryListener:
    """A bound endpoint of the twin (a ROUTER's part): the Listener of :mod:`.transport`."""

    def __init__(self, network: MemoryNetwork, host: str, address: str, *, mailbox: int, replies: int, max_bytes: int,
                 wait_ms: int):
        self.network = network
        self.host = host
        self.address = address
        self.mailbox = mailbox
        self.replies = replies
        self.max_bytes = max_bytes
        self.wait_s = wait_ms / 1000
        self.closed = False
        self._mailbox: collections.deque[tuple[bytes, _Connection, bytes]] = collections.deque()
        self._peers: dict[bytes, _Connection] = {}
        self._arrived = threading.Condition(network.lock)

    def receive(self, bad: "BadFrames", flags: int = 0) -> tuple[bytes, bytes] | None:
        with self.network.lock:
            ident, conn, frame = _take(self._mailbox, self._arrived, self.wait_s, flags, lambda: self.closed)
            if conn.ident == ident and conn.queued:
                conn.queued -= 1
                conn.socket._room.notify_all()
        if bad.shed and bad.shedding(ident):
            bad.total += 1
            bad.shed_frames += 1
            return None
        return ident, frame

    def reply(self, identity: bytes, frame: bytes) -> None:
        network = self.network
        with network.lock:
            conn = self._peers.get(bytes(identity))
            if conn is None or self.closed:
                return  # its peer is gone: dropped, as a ROUTER drops it
            if (self.host, conn.src) in network._cut:
                if len(conn.held_answers) < self.replies:
                    conn.held_answers.append(bytes(frame))
            else:
                network._answer(conn, bytes(frame))

    def set_wait(self, ms: int) -> None:
        self.wait_s = ms / 1000

    def wait_for_input(self, ms: int, fd: int | None = None) -> tuple[bool, bool]:
        """As a ROUTER's; ``fd`` is looked at once the wait is over (the twin's listeners live in the
        process of their peers: nothing it serves waits on a descriptor)."""
        with self.network.lock:
            waiting = self._arrived.wait_for(lambda: self._mailbox or self.closed, ms / 1000) and bool(self._mailbox)
        return waiting, fd is not None and _readable(fd)

    def close(self, linger: int | None = None) -> None:
        network = self.network
        with network.lock:
            if self.closed:
                return
            self.closed = True
            if network._listeners.get(self.address) is self:
                del network._listeners[self.address]
            network.lost += len(self._mailbox)
            self._mailbox.clear()
            for conn in list(self._peers.values()):
                network._detach(conn)
            self._arrived.notify_all()

    def __repr__(self) -> str:
        return f"MemoryListener({self.address!r}, host={self.host!r})"


class MemorySocket:
    """The connecting end of the twin (a DEALER's part), with ZeroMQ's send and receive semantics.

    A channel's socket, and, as it is, an Outlet (``send_nowait``, ``recv_nowait``)."""

    def __init__(self, network: MemoryNetwork, host: str, endpoint: str, *, hwm: int, max_bytes: int,
                 send_timeout: float = 0.0, wait_ms: int = 0, immediate: bool = False):
        self.network = network
        self.endpoint = endpoint
        self.hwm = max(1, hwm)
        self.max_bytes = max_bytes
        self.send_timeout = send_timeout
        self.wait_s = wait_ms / 1000
        self.immediate = immediate
        self.closed = False
        self._events: collections.deque[int] = collections.deque()
        self._answers: collections.deque[bytes] = collections.deque()
        self._pollers: set[MemoryPoller] = set()
        self._answered = threading.Condition(network.lock)
        self._room = threading.Condition(network.lock)
        self._conn = network._connect(self, host, endpoint)

    def _event(self, event: int) -> None:
        self._events.append(event)

    def take_events(self) -> list[int]:
        """The connection events since last time (CONNECTED, DISCONNECTED, RETRIED), oldest first."""
        with self.network.lock:
            events = list(self._events)
            self._events.clear()
            return events

    def send(self, frame: bytes, flags: int = 0) -> None:
        """Queue ``frame``; while the connection is full, wait up to the send timeout, then NothingYet."""
        network = self.network
        frame = bytes(frame)
        with network.lock:
            if self.closed:
                network.lost += 1
                return
            if network._push(self._conn, frame):
                return
            if flags & NOWAIT or self.send_timeout <= 0:
                raise NothingYet()
            deadline = _real_monotonic() + self.send_timeout
            while not network._push(self._conn, frame):
                remaining = deadline - _real_monotonic()
                if remaining <= 0 or self.closed:
                    raise NothingYet()
                self._room.wait(remaining)

    def recv(self, flags: int = 0) -> bytes:
        """The next answer; waits up to the socket's wait (not at all with NOWAIT), then NothingYet."""
        with self.network.lock:
            return _take(self._answers, self._answered, self.wait_s, flags, lambda: self.closed)

    def send_nowait(self, frame: bytes) -> bool:
        try:
            self.send(frame, NOWAIT)
        except NothingYet:
            return False
        return True

    def recv_nowait(self) -> bytes | None:
        try:
            return self.recv(NOWAIT)
        except NothingYet:
            return None

    def close(self, linger: int | None = None) -> None:
        """Close; frames already handed to the listener stay there, what waits on this side is lost."""
        network = self.network
        with network.lock:
            if self.closed:
                return
            self.closed = True
            conn = self._conn
            network.lost += len(conn.outbox)
            conn.outbox.clear()
            network._forget(conn)
            self._answered.notify_all()
            self._room.notify_all()
            for poller in self._pollers:
                poller._registered.pop(self, None)
            self._pollers.clear()

    def __repr__(self) -> str:
        return f"MemorySocket({self.endpoint!r})"


class MemoryChannel(BaseChannel):
    """A link of the twin: BaseChannel's batching and requests over a :class:`MemorySocket`."""

    __slots__ = ()

    def __init__(self, network: MemoryNetwork, host: str, endpoint: str, *, hwm: int, send_timeout: float,
                 max_bytes: int, limit: int | None = None, send_bytes: int = SEND_BYTES, clock: Clock = REAL_CLOCK):
        limit = limit or max_bytes
        sock = MemorySocket(network, host, endpoint, hwm=frames_within(send_bytes, max(limit, max_bytes), hwm),
                            max_bytes=max_bytes, send_timeout=send_timeout, wait_ms=WAIT_SLICE_MS)
        self._start(endpoint, sock, max_bytes=max_bytes, limit=limit, clock=clock)

    def poll_events(self) -> bool:
        for event in self.sock.take_events():
            self._saw(event)
        return self.dead

    def _close_sockets(self, linger_ms: int) -> None:
        self.sock.close(linger_ms)


class MemoryPoller:
    """``zmq.Poller``'s shape over memory sockets: which of them have answers to read."""

    def __init__(self, network: MemoryNetwork):
        self.network = network
        self._registered: dict[MemorySocket, int] = {}
        self._ready = threading.Condition(network.lock)

    def register(self, socket: Any, flags: int = POLLIN) -> None:
        with self.network.lock:
            self._registered[socket] = flags
            socket._pollers.add(self)

    def unregister(self, socket: Any) -> None:
        with self.network.lock:
            self._registered.pop(socket, None)
            socket._pollers.discard(self)

    def poll(self, timeout: int | None = None) -> list[tuple[Any, int]]:
        with self.network.lock:
            ready = self._readable()
            if not ready and timeout != 0:
                self._ready.wait_for(self._readable, None if timeout is None or timeout < 0 else timeout / 1000)
                ready = self._readable()
            return ready

    def _readable(self) -> list[tuple[Any, int]]:
        return [(s, POLLIN) for s, flags in self._registered.items() if flags & POLLIN and s._answers]
