"""The in-memory transport: a whole mesh in one process, with links a test can cut and heal.

The twin of the ZeroMQ transport (:mod:`.zeromq`), with the same interface
(:mod:`.transport`), so that nodes, servers and clients run in one process without
sockets, and the same tests run against both (``tests/test_transport.py``)::

    from mesh.runtime.memory import MemoryNetwork

    network = MemoryNetwork()                   # the world: addresses, links, cuts
    a, b = network.transport("a"), network.transport("b")   # one per host
    listener = b.listen("mem://b:1", mailbox=10, replies=100, max_bytes=1 << 20,
                        linger_ms=0, wait_ms=25)
    channel = a.channel("mem://b:1", hwm=10, send_timeout=1.0, max_bytes=1 << 20)
    network.cut("a", "b")                       # frames between the hosts wait...
    network.heal("a", "b")                      # ...and go on, in order
    channel.close()
    listener.close()

How it behaves, and where that mirrors ZeroMQ over TCP:

* Addresses are ``mem://NAME`` or ``mem://NAME:PORT``; listening on one that is taken
  raises AddressError, and ``any_port`` picks the next free port number.
* A connection holds at most the sender's ``hwm`` frames plus the listener's ``mailbox``
  frames (a DEALER's send queue plus a ROUTER's receive queue per connection); a send to
  a full connection waits for the send timeout, then raises NothingYet (the channel
  raises MailboxFull). Answers a peer leaves unread beyond ``replies`` plus its ``hwm``
  are dropped, as a ROUTER drops them.
* Connecting where nobody listens reports RETRIED (refused) at once; frames sent then
  wait (up to ``hwm``) and go to whoever listens there later, as ZeroMQ reconnects.
  An ``immediate`` outlet queues nothing while not connected.
* A listener that closes (``crash``) loses the frames it held unread; its peers see
  DISCONNECTED, and then CONNECTED again if something listens there later, with a new
  identity. A frame over the listener's ``max_bytes`` is lost and resets the connection
  (libzmq drops a peer that sends one), and so is an answer over the link's.
* A cut link (one way or both) delivers nothing: frames wait on the sender's side,
  counting against its bounds, and arrive in order when the link heals, as a TCP
  connection that outlives a short partition delivers them late. A cut reports no
  event: as over TCP, a silent peer is found by timeouts.
* Deterministic where the interface allows: one lock, FIFO queues, identities and ports
  from counters, no randomness. Threads still interleave as the scheduler decides.
* Waits of the transport (a receive's wait, a blocked send) run in real time; a link's
  request times out by the network's clock (a FakeClock holds it still until advanced).

This module routes (the network, a connection's queues, the cuts); the endpoints that
queue and wait are in :mod:`.memory_endpoints`.
"""

from __future__ import annotations

import collections
import errno
import itertools
import threading

from .clock import REAL_CLOCK, Clock
from .memory_broadcast import BroadcastRegistry, MemoryBroadcaster, MemoryPublisher, MemorySubscriber
from .memory_endpoints import MemoryChannel, MemoryListener, MemoryPoller, MemorySocket
from .transport import CONNECTED, DISCONNECTED, RETRIED, SEND_BYTES, AddressError

__all__ = ["MemoryNetwork", "MemoryTransport", "MemoryListener", "MemoryChannel", "MemorySocket", "MemoryPoller"]


def _check_address(address: str) -> str:
    scheme, sep, rest = address.partition("://")
    if scheme != "mem" or not sep or not rest.rsplit(":", 1)[0]:
        raise AddressError(errno.EINVAL, f"not an in-memory address (mem://NAME or mem://NAME:PORT): {address!r}")
    return address


class _Connection:
    """One socket's connection to one address: what waits on the sender's side, and its identity there."""

    __slots__ = ("socket", "src", "address", "listener", "ident", "queued", "outbox", "held_answers")

    def __init__(self, socket: "MemorySocket", src: str, address: str):
        self.socket = socket
        self.src = src
        self.address = address
        self.listener: MemoryListener | None = None
        self.ident = b""
        self.queued = 0  # frames of this connection in the listener's mailbox
        self.outbox: collections.deque[bytes] = collections.deque()  # not delivered yet: no listener, or a cut
        self.held_answers: collections.deque[bytes] = collections.deque()  # answers held by a cut

    def room(self) -> int:
        listener = self.listener
        most = self.socket.hwm + (listener.mailbox if listener is not None else 0)
        return most - self.queued - len(self.outbox)


class MemoryNetwork:
    """The in-process world the memory transports share: who listens where, and which links are cut.

    ``lost`` counts frames that vanished (held by a listener that closed, or too large);
    ``clock`` is what the links of its transports time requests by.
    """

    def __init__(self, clock: Clock = REAL_CLOCK):
        self.clock = clock
        self.lock = threading.Lock()
        self.lost = 0
        self._listeners: dict[str, MemoryListener] = {}
        self._connections: dict[str, list[_Connection]] = {}  # address -> connections to it, listened at or not
        self._cut: set[tuple[str, str]] = set()  # (from host, to host)
        self._idents = itertools.count(1)
        self._ports = itertools.count(1)
        self.broadcasters = BroadcastRegistry()

    def transport(self, host: str = "local") -> "MemoryTransport":
        """The transport of one host (a process, or a machine): its links can be cut from others'."""
        return MemoryTransport(self, host)

    # -- faults a test injects ------------------------------------------------------------

    def cut(self, a: str, b: str, *, one_way: bool = False) -> None:
        """Stop delivery from host ``a`` to host ``b`` (and back, unless ``one_way``)."""
        with self.lock:
            self._cut.add((a, b))
            if not one_way:
                self._cut.add((b, a))

    def isolate(self, host: str) -> None:
        """Cut ``host`` from every other host that listens or connects."""
        with self.lock:
            hosts = {listener.host for listener in self._listeners.values()}
            hosts.update(c.src for conns in self._connections.values() for c in conns)
            for other in hosts - {host}:
                self._cut.update({(host, other), (other, host)})

    def heal(self, a: str | None = None, b: str | None = None, *, one_way: bool = False) -> None:
        """Deliver again from ``a`` to ``b`` (and back, unless ``one_way``); no hosts: heal every cut.
        What waited goes on, in order."""
        with self.lock:
            if a is None:
                self._cut.clear()
            elif b is None:
                self._cut = {pair for pair in self._cut if a not in pair}
            else:
                self._cut.discard((a, b))
                if not one_way:
                    self._cut.discard((b, a))
            for conns in self._connections.values():
                for conn in conns:
                    self._forward(conn)

    def crash(self, address: str) -> None:
        """The process listening at ``address`` dies: frames it held unread are lost, its peers see
        DISCONNECTED."""
        listener = self._listeners.get(address)
        if listener is not None:
            listener.close(0)

    def cuts(self) -> set[tuple[str, str]]:
        with self.lock:
            return set(self._cut)

    def listening(self, address: str) -> bool:
        return address in self._listeners

    # -- the machinery (hold ``lock``) ------------------------------------------------------

    def _connect(self, socket: "MemorySocket", src: str, address: str) -> _Connection:
        conn = _Connection(socket, src, address)
        with self.lock:
            self._connections.setdefault(address, []).append(conn)
            listener = self._listeners.get(address)
            if listener is None:
                socket._event(RETRIED)
            else:
                self._attach(conn, listener)
        return conn

    def _attach(self, conn: _Connection, listener: "MemoryListener") -> None:
        conn.listener = listener
        conn.ident = b"\x00" + next(self._idents).to_bytes(4, "big")  # as libzmq names its peers
        conn.queued = 0
        listener._peers[conn.ident] = conn
        conn.socket._event(CONNECTED)
        self._forward(conn)
        conn.socket._room.notify_all()  # the listener's mailbox adds to the room

    def _detach(self, conn: _Connection) -> None:
        listener = conn.listener
        if listener is not None:
            listener._peers.pop(conn.ident, None)
        conn.listener = None
        conn.queued = 0
        conn.socket._event(DISCONNECTED)

    def _reset(self, conn: _Connection) -> None:
        """The connection broke (a frame too large): the socket reconnects, with a new identity."""
        listener = conn.listener
        self._detach(conn)
        if listener is not None and not listener.closed:
            self._attach(conn, listener)

    def _forward(self, conn: _Connection) -> None:
        """Deliver what waits on either side of ``conn`` as far as the cuts allow."""
        listener = conn.listener
        if listener is None or conn.socket.closed:
            return
        if conn.outbox and (conn.src, listener.host) not in self._cut:
            while conn.outbox:
                self._deliver(conn, listener, conn.outbox.popleft())
        if conn.held_answers and (listener.host, conn.src) not in self._cut:
            while conn.held_answers:
                self._answer(conn, conn.held_answers.popleft())

    def _deliver(self, conn: _Connection, listener: "MemoryListener", frame: bytes) -> None:
        if len(frame) > listener.max_bytes:
            self.lost += 1
            self._reset(conn)
            return
        listener._mailbox.append((conn.ident, conn, frame))
        conn.queued += 1
        listener._arrived.notify()

    def _push(self, conn: _Connection, frame: bytes) -> bool:
        """Queue ``frame`` on ``conn`` if there is room; False if the connection is full."""
        listener = conn.listener
        if listener is None and conn.socket.immediate:
            return False
        if conn.room() <= 0:
            return False
        if listener is None or conn.outbox or (conn.src, listener.host) in self._cut:
            conn.outbox.append(frame)
        else:
            self._deliver(conn, listener, frame)
        return True

    def _answer(self, conn: _Connection, frame: bytes) -> None:
        socket = conn.socket
        if socket.closed:
            return
        if len(frame) > socket.max_bytes:
            self.lost += 1
            self._reset(conn)
            return
        listener = conn.listener
        if listener is not None and len(socket._answers) >= listener.replies + socket.hwm:
            return  # a ROUTER drops what a peer leaves unread beyond its bounds
        socket._answers.append(frame)
        socket._answered.notify()
        for poller in socket._pollers:
            poller._ready.notify()

    def _forget(self, conn: _Connection) -> None:
        conns = self._connections.get(conn.address)
        if conns is not None and conn in conns:
            conns.remove(conn)
            if not conns:
                del self._connections[conn.address]
        if conn.listener is not None:
            conn.listener._peers.pop(conn.ident, None)

class MemoryTransport:
    """The twin's Transport, for one host of a :class:`MemoryNetwork`."""

    scheme = "mem"

    def __init__(self, network: MemoryNetwork, host: str):
        self.network = network
        self.host = host
        self.clock = network.clock

    def listen(self, address: str, *, mailbox: int, replies: int, max_bytes: int, linger_ms: int, wait_ms: int,
               any_port: bool = False) -> MemoryListener:
        network = self.network
        _check_address(address)
        with network.lock:
            if any_port:
                host_part = address.rsplit(":", 1)[0] if address.count(":") > 1 else address
                address = f"{host_part}:{next(network._ports)}"
                while address in network._listeners:
                    address = f"{host_part}:{next(network._ports)}"
            elif address in network._listeners:
                raise AddressError(errno.EADDRINUSE, "Address already in use")
            listener = MemoryListener(network, self.host, address, mailbox=max(1, mailbox), replies=max(1, replies),
                                      max_bytes=max_bytes, wait_ms=wait_ms)
            network._listeners[address] = listener
            for conn in network._connections.get(address, []):  # they were waiting for a listener here
                if conn.listener is None and not conn.socket.closed:
                    network._attach(conn, listener)
        return listener

    def channel(self, endpoint: str, *, hwm: int, send_timeout: float, max_bytes: int, limit: int | None = None,
                send_bytes: int = SEND_BYTES, clock: Clock | None = None) -> MemoryChannel:
        return MemoryChannel(self.network, self.host, _check_address(endpoint), hwm=hwm, send_timeout=send_timeout,
                             max_bytes=max_bytes, limit=limit, send_bytes=send_bytes, clock=clock or self.clock)

    def outlet(self, endpoint: str, *, hwm: int, max_bytes: int, linger_ms: int = 0,
               immediate: bool = False) -> MemorySocket:
        return MemorySocket(self.network, self.host, _check_address(endpoint), hwm=hwm, max_bytes=max_bytes,
                            immediate=immediate)

    def poller(self) -> MemoryPoller:
        return MemoryPoller(self.network)

    def is_address(self, address: str) -> bool:
        try:
            _check_address(address)
        except AddressError:
            return False
        return True

    def broadcaster(self, host: str, *, hwm: int, max_bytes: int) -> MemoryBroadcaster:
        return MemoryBroadcaster(self.network, self.host, host)

    def publisher(self, endpoint: str, *, hwm: int, max_bytes: int, send_timeout: float) -> MemoryPublisher:
        return MemoryPublisher(self.network, self.host, endpoint)

    def subscriber(self, *, hwm: int, max_bytes: int) -> MemorySubscriber:
        return MemorySubscriber(self.network, self.host, hwm)

    def __repr__(self) -> str:
        return f"MemoryTransport(host={self.host!r})"
