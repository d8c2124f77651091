"""Channels: a connection to one endpoint, with batching of tells and requests that wait for answers.

A :class:`Channel` is one ZeroMQ DEALER connected to one endpoint (an actor's ROUTER or a
node's). What it does above the socket (batching, request and answer, peer liveness)
is in :class:`BaseChannel`, which the in-memory twin's channel shares (:mod:`.memory`).
Every process keeps its channels per thread, because ZeroMQ sockets must not be used
from two threads at once; the one exception is the flusher thread (:mod:`.flusher`),
which takes the channel's lock before it touches the socket.

Why batching: a stream of tells with one envelope per frame runs at about half the
speed of raw PUSH->PULL, because the receiver pays per frame. When a sender is
ahead of the socket (a tell follows another within ``LINGER_S``), its tells are
held and sent together as one batch frame: at ``BATCH_MAX`` envelopes, before any
ask on the same channel (so order is kept), when a served actor's handler returns,
or by the flusher thread after ``LINGER_S``. An isolated tell goes out at once.

Why a monitor: when the peer's process dies, its TCP connection closes and the
DEALER's monitor reports DISCONNECTED within milliseconds. An ask waiting on that
channel then fails with ActorDied instead of waiting for its timeout.

Why bytes (issue 10): libzmq bounds queues in messages, not bytes. A sender's queue
for one peer (its DEALER's SNDHWM) and a mailbox (the actor ROUTER's RCVHWM, per
sending connection) are therefore sized from a byte budget and the largest frame
that can sit in them: ``frames_within(budget, frame)``. Frames are at most the peer's
frame limit, and a batch frame at most BATCH_MAX * BATCH_SOLO_BYTES (larger tells go
alone), so what one channel holds in its process is at most
``SNDHWM * limit <= send_bytes`` (at least one frame), plus up to BATCH_MAX pending
tells of at most BATCH_SOLO_BYTES each. When the queue is full a send blocks for the
send timeout and raises MailboxFull, whatever the message size. The kernel's socket
buffers come on top (net.ipv4.tcp_wmem / tcp_rmem maxima per connection), in kernel
memory, not in either process.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any, cast

import zmq
from zmq.utils.monitor import recv_monitor_message

from .. import wire
from ..errors import ActorDied, AskTimeout, MailboxFull, WireError, from_wire
from ..wire import BODY, CORR_ID, KIND
from .clock import REAL_CLOCK, Clock
from .flusher import JANITOR, LINGER_S, Flusher
from .sockets import channel_socket
from .transport import CONNECTED, DISCONNECTED, NOWAIT, RETRIED, SEND_BYTES, NothingYet, Unreachable, frames_within

log = logging.getLogger("mesh.transport")

#: Envelopes per batch frame at most.
BATCH_MAX = 64
#: How long a receive waits for an answer before the request looks at the peer's liveness and its
#: deadline, in ms; after that a ZeroMQ channel sleeps in one poll until the answer, a connection
#: event or the deadline (a test's fake clock: one slice at a time).
WAIT_SLICE_MS = 25
#: A tell larger than this, in bytes, goes out in a frame of its own, never in a batch.
BATCH_SOLO_BYTES = 16 * 1024
#: A channel idle for longer than this (seconds) reads its monitor before sending, so a
#: message is not sent into the connection of a process that died in the meantime.
#: A busy channel skips the check: it costs a syscall, and the wait loop sees deaths anyway.
IDLE_CHECK_S = 0.05
#: How long frames still queued may take to leave when a channel is garbage-collected, in ms.
CHANNEL_LINGER_MS = 2000

_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_REPLY = int(wire.Kind.REPLY)
_perf = time.perf_counter

__all__ = ["BaseChannel", "Channel", "Unreachable", "LINGER_S", "BATCH_MAX", "BATCH_SOLO_BYTES", "WAIT_SLICE_MS",
           "IDLE_CHECK_S"]


class BaseChannel:
    """A link to one endpoint over a socket with ZeroMQ's send and receive semantics.

    ``sock.send(frame)`` blocks while the queue is full, up to the send timeout, then
    raises NothingYet; ``sock.recv()`` waits one WAIT_SLICE_MS slice, then raises NothingYet
    (``sock.recv(NOWAIT)`` returns at once). Subclasses open the socket and say whether the
    peer is still there (:meth:`poll_events`) and how to close.
    """

    __slots__ = (
        "endpoint",
        "sock",
        "lock",
        "pending",
        "last_send",
        "connected",
        "dead",
        "refused",
        "thread",
        "max_bytes",
        "limit",
        "solo",
        "closed",
        "monotonic",
        "__weakref__",
    )

    def _start(self, endpoint: str, sock: Any, *, max_bytes: int, limit: int, clock: Clock) -> None:
        self.endpoint = endpoint
        self.sock = sock
        self.lock = threading.Lock()
        self.pending: list[bytes] = []
        self.last_send = 0.0
        self.connected = False
        self.dead = False
        self.refused = False
        self.thread = threading.get_ident()
        self.max_bytes = max_bytes
        self.limit = limit
        # Tells larger than this are never held back for a batch (see tell()).
        self.solo = min(BATCH_SOLO_BYTES, limit)
        self.closed = False
        # Requests time out by this clock (a test's fake clock, say); batching uses real time.
        self.monotonic = clock.monotonic

    def poll_events(self) -> bool:
        """Read what happened to the connection; return True if the peer is gone."""
        raise NotImplementedError

    def _saw(self, event: int) -> None:
        """What one connection event (transport.CONNECTED, DISCONNECTED, RETRIED) says of the peer."""
        if event == CONNECTED:
            self.connected = True
            self.refused = False
        elif event == DISCONNECTED:
            self.dead = True
        elif event == RETRIED and not self.connected:
            # The endpoint refuses connections: nobody listens there any more.
            self.refused = True
            self.dead = True

    def close(self, linger_ms: int = 0) -> None:
        """Close the connection; frames still queued get ``linger_ms`` to leave. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        self.dead = True
        self._close_sockets(linger_ms)

    def _close_sockets(self, linger_ms: int) -> None:
        raise NotImplementedError

    # -- sending ---------------------------------------------------------------

    def send_frame(self, frame: bytes) -> None:
        # Always copied. A frame sent without a copy lives on in libzmq's I/O thread after
        # send() returns, kept alive only by pyzmq's garbage collector, whose atexit hook
        # (registered on the first such send, so it runs before ours) drops those
        # references: the I/O thread then reads freed memory and the process dies with
        # SIGSEGV while it exits. A copy costs 3 us at 64 KiB and 120 us at 4 MiB.
        try:
            self.sock.send(frame)
        except NothingYet:
            raise MailboxFull(f"mailbox at {self.endpoint} stayed full for the send timeout") from None
        self.last_send = _perf()

    def flush_locked(self) -> None:
        """Send the pending tells, as few frames as the size cap allows. Hold ``lock``."""
        pending = self.pending
        while pending:
            n = len(pending)
            frame = pending[0] if n == 1 else b"".join([wire.batch_header(n), *pending])
            while len(frame) > self.limit and n > 1:
                n //= 2
                frame = b"".join([wire.batch_header(n), *pending[:n]])
            self.send_frame(frame)
            del pending[:n]

    def flush(self) -> None:
        with self.lock:
            if not self.closed:
                self.flush_locked()

    def tell(self, frame: bytes, flusher: "Flusher") -> None:
        if len(frame) > self.solo:
            self._tell_alone(frame)
            return
        with self.lock:
            pending = self.pending
            if not pending:
                now = _perf()
                if now - self.last_send > LINGER_S:
                    if self.closed or (now - self.last_send > IDLE_CHECK_S and self.poll_events()):
                        raise Unreachable(f"nothing listens at {self.endpoint} any more")
                    self.send_frame(frame)
                    return
                pending.append(frame)
                flusher.arm(self)
                return
            pending.append(frame)
            if len(pending) >= BATCH_MAX:
                try:
                    self.flush_locked()
                except MailboxFull:
                    # This tell was not accepted; the ones before it stay pending.
                    if pending and pending[-1] is frame:
                        pending.pop()
                    raise

    def _tell_alone(self, frame: bytes) -> None:
        """A large tell: sent now in a frame of its own, after the tells held before it.

        Held tells are small, so a batch frame stays small, and the pipe's frame count
        bounds its bytes (see the module note)."""
        if len(frame) > self.limit:
            raise WireError(f"a message of {len(frame)} bytes exceeds the {self.limit}-byte limit of {self.endpoint}")
        with self.lock:
            if self.closed or (_perf() - self.last_send > IDLE_CHECK_S and not self.pending and self.poll_events()):
                raise Unreachable(f"nothing listens at {self.endpoint} any more")
            if self.pending:
                self.flush_locked()
            self.send_frame(frame)

    def request(self, frame: bytes, msg_id: int, timeout: float, what: str) -> object:
        """Send an ASK or CONTROL frame and wait for the answer with ``corr_id == msg_id``.

        Raises Unreachable if the endpoint never accepted a connection (the frame
        never left: safe to send again elsewhere), ActorDied if the peer went away
        after that, AskTimeout, MailboxFull, or the error the peer answered with.
        """
        if len(frame) > self.limit:
            raise WireError(f"a message of {len(frame)} bytes exceeds the {self.limit}-byte limit of {self.endpoint}")
        with self.lock:
            now = _perf()
            if self.closed or (now - self.last_send > IDLE_CHECK_S and self.poll_events()):
                # Known gone before anything was sent (say, the actor restarted elsewhere).
                raise Unreachable(f"{what} is no longer at {self.endpoint}")
            if self.pending:
                self.flush_locked()
            sock = self.sock
            try:
                sock.send(frame)
            except NothingYet:
                raise MailboxFull(f"mailbox at {self.endpoint} stayed full for the send timeout") from None
            self.last_send = now
            deadline = self.monotonic() + timeout
            while True:
                try:
                    answer = sock.recv()
                except NothingYet:
                    if self.poll_events():
                        answer = self._recv_nowait()
                        if answer is None:
                            if not self.connected:
                                raise Unreachable(f"{what} is not reachable at {self.endpoint}") from None
                            raise ActorDied(f"{what} died while the request was in flight") from None
                    elif self.monotonic() >= deadline:
                        raise AskTimeout(f"{what} did not answer within {timeout:g} s") from None
                    else:
                        self._await(deadline)
                        continue
                try:
                    env = wire.decode_one(answer, self.max_bytes)
                except WireError as exc:
                    log.warning("dropped a bad answer from %s: %s", self.endpoint, exc)
                    continue
                if env[CORR_ID] == msg_id:
                    if env[KIND] == _REPLY:
                        return env[BODY]
                    raise from_wire(env[BODY])
                # Anything else is a late answer to an earlier request that timed out.

    def _recv_nowait(self) -> bytes | None:
        try:
            return self.sock.recv(NOWAIT)
        except NothingYet:
            return None

    def _await(self, deadline: float) -> None:
        """An answer is late (a first slice went by): wait for it, for a connection event, or for
        ``deadline``, whichever comes first, before looking again. Here: at once (the next receive
        waits one slice); a ZeroMQ channel on real time sleeps until one of them (see Channel)."""


class Channel(BaseChannel):
    """A ZeroMQ DEALER to one endpoint, with its monitor, its lock and its pending tells."""

    __slots__ = ("monitor", "_wait_on")

    def __init__(self, endpoint: str, *, hwm: int, send_timeout: float, max_bytes: int, limit: int | None = None,
                 send_bytes: int = SEND_BYTES, clock: Clock = REAL_CLOCK, keys: Any = None):
        # The peer's frame limit: a larger frame would make libzmq cut the connection.
        limit = limit or max_bytes
        # Bytes, not frames: as many frames of the largest size this channel sends (or
        # receives, for answers) as fit in send_bytes, and never more than hwm.
        sock, self.monitor = channel_socket(endpoint, hwm=frames_within(send_bytes, max(limit, max_bytes), hwm),
                                            max_bytes=max_bytes, send_timeout=send_timeout, wait_ms=WAIT_SLICE_MS,
                                            linger_ms=CHANNEL_LINGER_MS, keys=keys)
        self._start(endpoint, sock, max_bytes=max_bytes, limit=limit, clock=clock)
        # A late answer is awaited in one poll over the socket and its monitor (real time only: a
        # test's fake clock moves on its own, so its deadline is looked at every slice).
        self._wait_on = [(sock, _POLLIN), (self.monitor, _POLLIN)] if clock is REAL_CLOCK else None
        JANITOR.watch(self)
        # A channel dropped without close() (say, with the thread that owned it) must still
        # stop its monitor before its sockets close: see _close_dropped.
        # Not at exit, though: _flush_at_exit sends what is held first, then closes.
        weakref.finalize(self, _close_dropped, sock, self.monitor).atexit = False

    # -- peer liveness -------------------------------------------------------

    def _await(self, deadline: float) -> None:
        # One wake-up per answer, connection event or deadline, not one per WAIT_SLICE_MS: a
        # thousand agents whose node is slow to answer must not spin while they wait (their
        # wake-ups took the CPU the node needed to answer them).
        wait_on = self._wait_on
        if wait_on is not None:
            zmq.zmq_poll(wait_on, max(1, int((deadline - self.monotonic()) * 1000) + 1))

    def poll_events(self) -> bool:
        """Read pending monitor events; return True if the peer is gone."""
        mon = self.monitor
        while cast(int, mon.getsockopt(_EVENTS)) & _POLLIN:
            try:
                self._saw(recv_monitor_message(mon, zmq.NOBLOCK)["event"])
            except zmq.Again:
                break
        return self.dead

    def _close_sockets(self, linger_ms: int) -> None:
        # The monitor first: see _close_dropped.
        try:
            self.sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self.monitor.close(0)
        self.sock.close(linger_ms)


def _close_dropped(sock: zmq.Socket[object], monitor: zmq.Socket[object]) -> None:
    """Close the sockets of a channel that was garbage-collected without close().

    Left to pyzmq, the two sockets close in any order. If the monitor closes first
    while the DEALER lingers (a queued frame, a peer that is gone), libzmq's I/O thread
    blocks for good sending it the next event, and every socket of the process stops.
    So: monitor off first, then close; the DEALER keeps its own LINGER.
    """
    if sock.closed:
        return
    try:
        sock.disable_monitor()
    except zmq.ZMQError:
        pass
    monitor.close(0)
    sock.close()
