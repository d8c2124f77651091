"""Every ZeroMQ socket mesh opens is built here, with the options every mesh socket needs.

One function per kind of socket: :func:`channel_socket` (a DEALER and its monitor, for a
:class:`~mesh.runtime.channel.Channel`), :func:`async_channel_socket` (the same for an
asyncio link), :func:`router` (a bound ROUTER: a node's or an actor's listener),
:func:`outlet` (a never-blocking DEALER: gossip, delivery resends). The sockets they
return are the transport interface's objects themselves (see :mod:`.transport`): a
:class:`RouterSocket` is a Listener and an :class:`OutletSocket` an Outlet, with no
wrapper on the message path. Sockets use the process's one context (:func:`context`),
and ``LINGER`` is always set explicitly. Given keys (:mod:`.keys`, carried by the
transport), each listening socket (ROUTER, PUB, PULL) is a CURVE server behind the gate
(:mod:`.zap`) and each connecting one (DEALER, SUB, PUSH) a CURVE client: :func:`serve_curve`,
:func:`connect_curve`. Without keys the sockets are exactly what they were.

Why no ZMTP heartbeats (issue 10): libzmq 4.3.5, the newest release and what pyzmq's
wheels bundle (27.x), aborts the whole process (``Assertion failed: !_io_error
(src/stream_engine_base.cpp:310)``, zeromq/libzmq #4364, #3937, #4767) when a socket
whose receive queue is full loses its peer. A full queue stops the connection's input;
an error or hang-up seen while input is stopped sets ``_io_error``; and the two code
paths that then call ``out_event`` without checking it are both heartbeats: our own
HEARTBEAT_IVL timer, and a PING from the peer decoded when the queue drains
(``restart_input``). Everything else (a reply sent to a gone asker, a write error)
checks the flag, and a write error alone never sets it. So no mesh socket sends
ZMTP heartbeats, and none of mesh's peers sends PINGs. A full mailbox is a normal state
(a slow actor), so this is the only configuration that cannot abort; heartbeats on the
sockets that never receive would still PING peers whose queues can fill. (Heartbeats
also cut a slow actor's connection: its PONGs sit unread behind a full mailbox for
the heartbeat timeout, and the tells in flight were lost.)

What they were for, noticing a silent peer, is now done by:
  * TCP keepalive on every socket (kernel probes, no libzmq timer): a peer whose host
    vanished from an idle connection is dropped after about KEEPALIVE_IDLE_S +
    KEEPALIVE_CNT * KEEPALIVE_INTVL_S seconds, and the monitor reports DISCONNECTED.
    The peer's kernel answers them even while its process is busy or its mailbox full,
    so a slow actor is never taken for a dead one.
  * the application's own liveness: an ask's timeout, the channel monitor
    (DISCONNECTED when the process dies), an agent's heartbeats to its node
    (server.py ``_link``), and the gossip failure detector between nodes.
A peer that sends ZMTP PINGs on purpose (not a mesh process) while it fills a mailbox
and then resets the connection can still trip the assertion when the mailbox drains:
no socket option prevents that in libzmq 4.3.5 (without keys, a node and its agents
listen on loopback only).
"""

from __future__ import annotations

import itertools
import os
from typing import TYPE_CHECKING, Any

import zmq

from .intake import recv_request
from .transport import POLLIN, WAKE_ID, AddressError

if TYPE_CHECKING:  # pragma: no cover
    from .keys import Keys

#: TCP keepalive (not ZMTP heartbeats, see above): an idle connection is probed after
#: KEEPALIVE_IDLE_S seconds of silence, every KEEPALIVE_INTVL_S seconds, and dropped after
#: KEEPALIVE_CNT unanswered probes.
KEEPALIVE_IDLE_S = 5
KEEPALIVE_INTVL_S = 1
KEEPALIVE_CNT = 5

#: What a channel's monitor reports: a peer that accepted, left, or refuses connections.
CHANNEL_EVENTS = zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED
#: What an asyncio link's monitor reports: only events that happen once per connection. An event
#: loop that stops running leaves the monitor unread, and a stream of reconnect events would fill
#: it and stall libzmq (#3575).
ASYNC_CHANNEL_EVENTS = zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED

_monitor_ids = itertools.count(1)
_SNDMORE = int(zmq.SNDMORE)
_NOBLOCK = int(zmq.NOBLOCK)


#: Sockets the process's context may hold at once (libzmq's default is 1,023): a node or a client
#: that talks to a thousand agents holds two per agent (a channel and its monitor). Each costs a
#: pointer in libzmq's table whether used or not (8 bytes). ``MESH_MAX_SOCKETS`` overrides it.
MAX_SOCKETS = 8192

_context: zmq.Context[Any] | None = None


def context() -> zmq.Context[Any]:
    # Any: the process's one context makes sockets of several classes (socket_class=), and pyzmq
    # types what socket() returns by the context's parameter, not by the class asked for.
    global _context
    ctx: zmq.Context[Any] = zmq.Context.instance()
    if ctx is not _context:  # first use in this process (or after a fork made a new instance)
        _context = ctx
        _allow_many_sockets(ctx)
    return ctx


def _allow_many_sockets(ctx: zmq.Context[Any]) -> None:
    """Raise the context's socket limit, and the process's open-file limit up to its hard limit as
    far as that needs (a socket is a descriptor or more): before any socket of the context exists."""
    try:
        wanted = int(os.environ.get("MESH_MAX_SOCKETS") or MAX_SOCKETS)
    except ValueError:
        wanted = MAX_SOCKETS
    wanted = max(1023, min(wanted, int(ctx.get(zmq.SOCKET_LIMIT))))
    try:
        ctx.set(zmq.MAX_SOCKETS, wanted)
    except zmq.ZMQError:  # sockets exist already: the limit stays
        return
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        need = 2 * wanted + 256
        if soft != resource.RLIM_INFINITY and soft < need:
            top = need if hard == resource.RLIM_INFINITY else min(need, hard)
            if top > soft:
                resource.setrlimit(resource.RLIMIT_NOFILE, (top, hard))
    except (ImportError, ValueError, OSError):  # no such limit here, or not allowed: libzmq says EMFILE then
        pass


def tune_socket(sock: zmq.Socket[object], *, hwm: int, max_bytes: int) -> None:
    """Options every mesh socket gets: bounded queues, capped frames, TCP keepalive.

    ZMTP heartbeats stay off (libzmq's default, set here so nobody turns them on by
    accident): with a full receive queue they abort the process (see the module note).
    """
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.MAXMSGSIZE, max_bytes)
    sock.setsockopt(zmq.HEARTBEAT_IVL, 0)
    sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
    sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, KEEPALIVE_IDLE_S)
    sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, KEEPALIVE_INTVL_S)
    sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, KEEPALIVE_CNT)


def serve_curve(sock: zmq.Socket[Any], keys: "Keys | None") -> None:
    """With keys, ``sock`` listens as a CURVE server with the mesh's server keypair and admits
    only the trusted keys (the gate, :mod:`.zap`). Without, nothing changes. Before bind."""
    if keys is None:
        return
    from .keys import KeysError
    from .zap import admit

    if keys.server_secret is None or keys.trusted is None:
        raise KeysError(f"the keys of {keys.name} ({keys.source}) may connect but not listen: a listener needs "
                        "the mesh's server keypair (mesh.key_secret) and a trusted/ directory beside it")
    sock.setsockopt(zmq.ZAP_DOMAIN, admit(keys.trusted).encode())
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.server_secret)


def connect_curve(sock: zmq.Socket[Any], keys: "Keys | None") -> None:
    """With keys, ``sock`` connects as a CURVE client: its own keypair, the mesh's server key.
    Before connect."""
    if keys is None:
        return
    sock.setsockopt(zmq.CURVE_SERVERKEY, keys.server_public)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)


def _monitor_address(kind: str) -> str:
    # A unique in-process address (a monitor's, a wake-up's). Unique: pyzmq's default names a
    # monitor after the socket's fd, which the kernel reuses once a socket is closed.
    return f"inproc://mesh-{kind}-{next(_monitor_ids)}"


def channel_socket(endpoint: str, *, hwm: int, max_bytes: int, send_timeout: float, wait_ms: int,
                   linger_ms: int, keys: "Keys | None" = None) -> tuple[zmq.SyncSocket, zmq.SyncSocket]:
    """A DEALER connected to ``endpoint`` and its monitor (CHANNEL_EVENTS): a channel's sockets.

    A send blocks ``send_timeout`` seconds on a full queue, a receive ``wait_ms``."""
    sock = context().socket(zmq.DEALER)
    tune_socket(sock, hwm=hwm, max_bytes=max_bytes)
    sock.setsockopt(zmq.SNDTIMEO, max(0, int(send_timeout * 1000)))
    sock.setsockopt(zmq.RCVTIMEO, wait_ms)
    sock.setsockopt(zmq.LINGER, linger_ms)
    connect_curve(sock, keys)
    monitor = sock.get_monitor_socket(CHANNEL_EVENTS, addr=_monitor_address("channel-monitor"))
    sock.connect(endpoint)
    return sock, monitor


def async_channel_socket(endpoint: str, *, hwm: int, max_bytes: int,
                         linger_ms: int, keys: "Keys | None" = None) -> tuple[zmq.SyncSocket, zmq.SyncSocket]:
    """A DEALER connected to ``endpoint`` and its monitor (ASYNC_CHANNEL_EVENTS), for an event loop:
    plain sockets, used without blocking; the loop watches their file descriptors (see asynclink.py)."""
    sock = context().socket(zmq.DEALER)
    tune_socket(sock, hwm=hwm, max_bytes=max_bytes)
    sock.setsockopt(zmq.LINGER, linger_ms)
    connect_curve(sock, keys)
    monitor = sock.get_monitor_socket(ASYNC_CHANNEL_EVENTS, addr=_monitor_address("async-monitor"))
    sock.connect(endpoint)
    return sock, monitor


class RouterSocket(zmq.Socket[bytes]):
    """A bound ROUTER that is a :class:`~mesh.runtime.transport.Listener` itself."""

    address: str = ""  #: what peers connect to
    wake_address: str = ""  #: where wake() sends ("" until listen_for_wakes())

    #: One ``(identity, frame)`` under the rules of ``bad`` (see intake.recv_request): the
    #: function itself, not a wrapper, since this is the message path.
    receive = recv_request

    def reply(self, identity: zmq.Frame | bytes, frame: bytes) -> None:
        self.send(identity, _SNDMORE)
        self.send(frame)

    def set_wait(self, ms: int) -> None:
        self.setsockopt(zmq.RCVTIMEO, ms)

    def wait_for_input(self, ms: int, fd: int | None = None) -> tuple[bool, bool]:
        items: list[tuple[Any, int]] = [(self, POLLIN)] if fd is None else [(self, POLLIN), (fd, POLLIN)]
        mine = other = False
        for what, _ in zmq.zmq_poll(items, ms):
            if what is self:
                mine = True
            else:
                other = True
        return mine, other

    def listen_for_wakes(self) -> str:
        """Also listen on an in-process endpoint that :meth:`wake` sends to (on the thread that owns
        the socket, before it waits); returns it."""
        if not self.wake_address:
            address = _monitor_address("wake")
            self.bind(address)
            self.wake_address = address
        return self.wake_address

    def wake(self) -> None:
        """From any thread: end the owner's current wait (it receives ``(WAKE_ID, b"")``, which is no
        request). Needs :meth:`listen_for_wakes` first."""
        sock = context().socket(zmq.DEALER)
        try:
            sock.setsockopt(zmq.ROUTING_ID, WAKE_ID)
            sock.setsockopt(zmq.LINGER, 1000)
            sock.connect(self.wake_address)
            sock.send(b"", _NOBLOCK)
        except zmq.ZMQError:
            pass  # the listener is closed: there is no wait to end
        finally:
            sock.close()


def router(address: str, *, mailbox: int, replies: int, max_bytes: int, linger_ms: int, wait_ms: int,
           any_port: bool = False, keys: "Keys | None" = None) -> RouterSocket:
    """A ROUTER listening on ``address`` (``any_port``: on a free port of its host).

    ``mailbox``: frames queued per sending connection (RCVHWM); ``replies``: answers queued
    per peer before the ROUTER drops them (SNDHWM). Raises AddressError."""
    sock = context().socket(zmq.ROUTER, socket_class=RouterSocket)
    tune_socket(sock, hwm=mailbox, max_bytes=max_bytes)
    sock.setsockopt(zmq.SNDHWM, replies)
    sock.setsockopt(zmq.LINGER, linger_ms)
    sock.setsockopt(zmq.RCVTIMEO, wait_ms)
    try:
        serve_curve(sock, keys)
        if any_port:
            port = sock.bind_to_random_port(address)
            host = address.rsplit(":", 1)[0] if address.count(":") > 1 else address
            sock.address = f"{host}:{port}"
        else:
            sock.bind(address)
            sock.address = address
    except zmq.ZMQBindError as exc:  # no free port found
        sock.close(0)
        raise AddressError(0, str(exc)) from None
    except zmq.ZMQError as exc:
        sock.close(0)
        raise AddressError(exc.errno, exc.strerror) from None
    return sock


class OutletSocket(zmq.Socket[bytes]):
    """A DEALER that is a :class:`~mesh.runtime.transport.Outlet` itself: it never blocks."""

    def send_nowait(self, frame: bytes) -> bool:
        try:
            self.send(frame, _NOBLOCK)
        except zmq.Again:
            return False
        return True

    def recv_nowait(self) -> bytes | None:
        try:
            return self.recv(_NOBLOCK)
        except zmq.Again:
            return None


def outlet(endpoint: str, *, hwm: int, max_bytes: int, linger_ms: int = 0, immediate: bool = False,
           keys: "Keys | None" = None) -> OutletSocket:
    """A DEALER to ``endpoint`` for traffic that must not block (``immediate``: queue nothing for a
    peer that is not connected). Raises AddressError for an address libzmq refuses."""
    sock = context().socket(zmq.DEALER, socket_class=OutletSocket)
    try:
        tune_socket(sock, hwm=hwm, max_bytes=max_bytes)
        sock.setsockopt(zmq.LINGER, linger_ms)
        if immediate:
            sock.setsockopt(zmq.IMMEDIATE, 1)
        connect_curve(sock, keys)
        sock.connect(endpoint)
    except zmq.ZMQError as exc:
        sock.close(0)
        raise AddressError(exc.errno, exc.strerror) from None
    return sock


# -- broadcasts (events and intentions on PUB/SUB) ------------------------------------------


def _bind_any(sock: zmq.Socket[Any], host: str) -> str:
    try:
        port = sock.bind_to_random_port(host)
    except zmq.ZMQBindError as exc:
        raise AddressError(0, str(exc)) from None
    except zmq.ZMQError as exc:
        raise AddressError(exc.errno, exc.strerror) from None
    return f"{host}:{port}"


def forwarder_sockets(host: str, *, hwm: int, max_bytes: int,
                      keys: "Keys | None" = None) -> tuple[zmq.SyncSocket, zmq.SyncSocket, str, str]:
    """A node's broadcast forwarder: a PULL its publishers push to, and a PUB its subscribers
    connect to, each bound on a free port of ``host`` (``tcp://HOST``). Returns both sockets and
    their addresses. The PUB drops what a subscriber leaves unread beyond ``hwm`` (pub/sub's
    rule: a slow subscriber never holds up the others)."""
    ctx = context()
    pull, pub = ctx.socket(zmq.PULL), ctx.socket(zmq.PUB)
    try:
        tune_socket(pull, hwm=hwm, max_bytes=max_bytes)
        tune_socket(pub, hwm=hwm, max_bytes=max_bytes)
        for sock in (pull, pub):
            sock.setsockopt(zmq.LINGER, 0)
            serve_curve(sock, keys)
        return pull, pub, _bind_any(pull, host), _bind_any(pub, host)
    except BaseException:
        pull.close(0)
        pub.close(0)
        raise


def _inproc_pair(kind: str, bound: int, connected: int) -> tuple[zmq.SyncSocket, zmq.SyncSocket]:
    """Two sockets joined over inproc (no linger): the bound one, then the connected one."""
    address = _monitor_address(kind)
    inside, outside = context().socket(bound), context().socket(connected)
    for sock in (inside, outside):
        sock.setsockopt(zmq.LINGER, 0)
    inside.bind(address)
    outside.connect(address)
    return inside, outside


def proxy_control() -> tuple[zmq.SyncSocket, zmq.SyncSocket]:
    """A PAIR the forwarder's proxy listens to for TERMINATE, and the PAIR that sends it."""
    return _inproc_pair("proxy-control", zmq.PAIR, zmq.PAIR)


def push_socket(endpoint: str, *, hwm: int, max_bytes: int, send_timeout: float,
                keys: "Keys | None" = None) -> zmq.SyncSocket:
    """A PUSH to a forwarder's PULL: what a publisher sends its events with. It queues once
    connected (no slow joiner on this side); a full queue, or no connection, blocks a send
    ``send_timeout`` s."""
    sock = context().socket(zmq.PUSH)
    try:
        tune_socket(sock, hwm=hwm, max_bytes=max_bytes)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.setsockopt(zmq.SNDTIMEO, max(0, int(send_timeout * 1000)))
        # Queue only on a live connection: when the forwarder goes (its node restarted, on new
        # ports) a send blocks and times out, so the publisher asks where it is now, instead of
        # queueing for an address that nothing will read again.
        sock.setsockopt(zmq.IMMEDIATE, 1)
        connect_curve(sock, keys)
        sock.connect(endpoint)
    except zmq.ZMQError as exc:
        sock.close(0)
        raise AddressError(exc.errno, exc.strerror) from None
    return sock


def sub_socket(*, hwm: int, max_bytes: int, keys: "Keys | None" = None) -> zmq.SyncSocket:
    """A SUB, connected to nothing yet, subscribed to nothing yet."""
    sock = context().socket(zmq.SUB)
    tune_socket(sock, hwm=hwm, max_bytes=max_bytes)
    sock.setsockopt(zmq.LINGER, 0)
    connect_curve(sock, keys)
    return sock


def wake_pair() -> tuple[zmq.SyncSocket, zmq.SyncSocket]:
    """A PULL a thread polls beside its other sockets, and the PUSH other threads wake it with."""
    return _inproc_pair("wake", zmq.PULL, zmq.PUSH)
