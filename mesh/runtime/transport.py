"""ZeroMQ sockets for the message path.

A :class:`Channel` is one DEALER connected to one endpoint (an actor's ROUTER or a
node's). Every process keeps its channels per thread, because ZeroMQ sockets must
not be used from two threads at once; the one exception is the :class:`Flusher`,
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

import atexit
import itertools
import logging
import threading
import time
import weakref

import zmq
from zmq.utils.monitor import recv_monitor_message

from .. import wire
from ..errors import ActorDied, AskTimeout, MailboxFull, WireError, from_wire

log = logging.getLogger("mesh.transport")

#: How long a tell may wait for company before the flusher sends it, in seconds.
LINGER_S = 0.0002
#: Envelopes per batch frame at most.
BATCH_MAX = 64
#: How often a blocked receive wakes to check deadlines and peer death, in ms.
WAIT_SLICE_MS = 25
#: TCP keepalive (not ZMTP heartbeats, see above): an idle connection is probed after
#: KEEPALIVE_IDLE_S seconds of silence, every KEEPALIVE_INTVL_S seconds, and dropped after
#: KEEPALIVE_CNT unanswered probes.
KEEPALIVE_IDLE_S = 5
KEEPALIVE_INTVL_S = 1
KEEPALIVE_CNT = 5
#: Bytes one channel may hold queued for its peer, by default (Client option ``send_bytes``).
SEND_BYTES = 32 * 1024 * 1024
#: A tell larger than this, in bytes, goes out in a frame of its own, never in a batch.
BATCH_SOLO_BYTES = 16 * 1024

_MONITOR_EVENTS = zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED

_monitor_ids = itertools.count(1)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
#: A channel idle for longer than this (seconds) reads its monitor before sending, so a
#: message is not sent into the connection of a process that died in the meantime.
#: A busy channel skips the check: it costs a syscall, and the wait loop sees deaths anyway.
IDLE_CHECK_S = 0.05
_REPLY = int(wire.Kind.REPLY)


class Unreachable(ActorDied):
    """Nothing ever listened at the endpoint: the request never reached any process."""

_perf = time.perf_counter
_monotonic = time.monotonic


def context() -> zmq.Context:
    return zmq.Context.instance()


def tune_socket(sock: zmq.Socket, *, hwm: int, max_bytes: int) -> None:
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


def frames_within(budget: int, frame_bytes: int, most: int) -> int:
    """How many frames of up to ``frame_bytes`` fit in ``budget`` bytes: at least 1, at most ``most``."""
    return max(1, min(int(most), int(budget) // max(1, int(frame_bytes))))


class Channel:
    """A DEALER to one endpoint, with its monitor, its lock and its pending tells."""

    __slots__ = (
        "endpoint",
        "sock",
        "monitor",
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
        "__weakref__",
    )

    def __init__(self, endpoint: str, *, hwm: int, send_timeout: float, max_bytes: int, limit: int | None = None,
                 send_bytes: int = SEND_BYTES):
        # The peer's frame limit: a larger frame would make libzmq cut the connection.
        limit = limit or max_bytes
        sock = context().socket(zmq.DEALER)
        # Bytes, not frames: as many frames of the largest size this channel sends (or
        # receives, for answers) as fit in send_bytes, and never more than hwm.
        tune_socket(sock, hwm=frames_within(send_bytes, max(limit, max_bytes), hwm), max_bytes=max_bytes)
        sock.setsockopt(zmq.SNDTIMEO, max(0, int(send_timeout * 1000)))
        sock.setsockopt(zmq.RCVTIMEO, WAIT_SLICE_MS)
        sock.setsockopt(zmq.LINGER, 2000)
        # A unique inproc address: pyzmq's default names it after the socket's fd, which
        # the kernel reuses once a socket is closed.
        self.monitor = sock.get_monitor_socket(_MONITOR_EVENTS, addr=f"inproc://mesh-monitor-{next(_monitor_ids)}")
        sock.connect(endpoint)
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
        JANITOR.watch(self)
        # A channel dropped without close() (say, with the thread that owned it) must still
        # stop its monitor before its sockets close: see _close_dropped.
        # Not at exit, though: _flush_at_exit sends what is held first, then closes.
        weakref.finalize(self, _close_dropped, sock, self.monitor).atexit = False

    # -- peer liveness -------------------------------------------------------

    def poll_events(self) -> bool:
        """Read pending monitor events; return True if the peer is gone."""
        mon = self.monitor
        while mon.getsockopt(_EVENTS) & _POLLIN:
            try:
                event = recv_monitor_message(mon, zmq.NOBLOCK)["event"]
            except zmq.Again:
                break
            if event == zmq.EVENT_CONNECTED:
                self.connected = True
                self.refused = False
            elif event == zmq.EVENT_DISCONNECTED:
                self.dead = True
            elif event == zmq.EVENT_CONNECT_RETRIED and not self.connected:
                # The endpoint refuses connections: nobody listens there any more.
                self.refused = True
                self.dead = True
        return self.dead

    # -- sending ---------------------------------------------------------------

    def send_frame(self, frame: bytes) -> None:
        # Always copied. A frame sent without a copy lives on in libzmq's I/O thread after
        # send() returns, kept alive only by pyzmq's garbage collector, whose atexit hook
        # (registered on the first such send, so it runs before ours) drops those
        # references: the I/O thread then reads freed memory and the process dies with
        # SIGSEGV while it exits. A copy costs 3 us at 64 KiB and 120 us at 4 MiB.
        try:
            self.sock.send(frame)
        except zmq.Again:
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
            except zmq.Again:
                raise MailboxFull(f"mailbox at {self.endpoint} stayed full for the send timeout") from None
            self.last_send = now
            deadline = _monotonic() + timeout
            while True:
                try:
                    answer = sock.recv()
                except zmq.Again:
                    if self.poll_events():
                        answer = self._recv_nowait()
                        if answer is None:
                            if not self.connected:
                                raise Unreachable(f"{what} is not reachable at {self.endpoint}") from None
                            raise ActorDied(f"{what} died while the request was in flight") from None
                    elif _monotonic() >= deadline:
                        raise AskTimeout(f"{what} did not answer within {timeout:g} s") from None
                    else:
                        continue
                try:
                    env = wire.decode_one(answer, self.max_bytes)
                except WireError as exc:
                    log.warning("dropped a bad answer from %s: %s", self.endpoint, exc)
                    continue
                if env[3] == msg_id:
                    if env[1] == _REPLY:
                        return env[6]
                    raise from_wire(env[6])
                # Anything else is a late answer to an earlier request that timed out.

    def _recv_nowait(self) -> bytes | None:
        try:
            return self.sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return None

    def close(self, linger_ms: int = 0) -> None:
        """Close both sockets (monitor first: see _close_dropped). Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        self.dead = True
        try:
            self.sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self.monitor.close(0)
        self.sock.close(linger_ms)


def _close_dropped(sock: zmq.Socket, monitor: zmq.Socket) -> None:
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


def snapshot(items) -> list:
    """A list copy of a set another thread may be adding to (a WeakSet raises then)."""
    for _ in range(100):
        try:
            return list(items)
        except RuntimeError:  # "changed size during iteration": try again
            continue
    return []


class Flusher:
    """One daemon thread per process that sends tells left pending by a burst."""

    def __init__(self) -> None:
        self.dirty: set[Channel] = set()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._stopped = False

    def stop(self, timeout: float) -> None:
        """At interpreter exit: end the thread, so it is not inside libzmq while the interpreter
        finalizes (a daemon thread still sending then can crash the process)."""
        self._stopped = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def arm(self, channel: Channel) -> None:
        self.dirty.add(channel)
        if self._thread is None:
            self._start()
        self._wake.set()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                t = threading.Thread(target=self._run, name="mesh-flusher", daemon=True)
                t.start()
                self._thread = t

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if self._stopped:
                return
            time.sleep(LINGER_S)
            self._wake.clear()
            retry = False
            for ch in list(self.dirty):
                self.dirty.discard(ch)
                if not ch.lock.acquire(blocking=False):
                    # Its owner is using it (an ask flushes it first anyway): next round.
                    self.dirty.add(ch)
                    retry = True
                    continue
                try:
                    if ch.pending and not ch.closed:
                        ch.flush_locked()
                except MailboxFull:
                    # Keep the frames; try again on the next round.
                    self.dirty.add(ch)
                    retry = True
                except zmq.ZMQError as exc:
                    log.warning("could not flush tells to %s: %s", ch.endpoint, exc)
                finally:
                    ch.lock.release()
            if retry:
                time.sleep(0.001)
                self._wake.set()


FLUSHER = Flusher()


class Janitor:
    """Closes channels whose peer is gone, so their monitors cannot fill up.

    A DEALER whose peer died keeps reconnecting, and its monitor gets an event every
    reconnect interval. Unread, that queue fills and libzmq's I/O thread blocks on it,
    which stops every socket of the process (libzmq #3575). Once a second this thread
    reads the monitors of channels nobody is using at the moment and closes the dead
    ones; their owners open a fresh channel on next use.
    """

    INTERVAL_S = 1.0

    def __init__(self) -> None:
        self._stopped = threading.Event()
        self._channels: weakref.WeakSet[Channel] = weakref.WeakSet()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def watch(self, channel: Channel) -> None:
        self._channels.add(channel)
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="mesh-janitor", daemon=True)
                    self._thread.start()

    def sweep(self) -> int:
        closed = 0
        for ch in snapshot(self._channels):
            if ch.closed or not ch.lock.acquire(blocking=False):
                continue  # busy channels read their own monitor
            try:
                if not ch.closed and ch.poll_events():
                    ch.close(linger_ms=0)
                    closed += 1
            except zmq.ZMQError:
                pass
            finally:
                ch.lock.release()
        return closed

    def stop(self, timeout: float) -> None:
        """At interpreter exit, like Flusher.stop."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopped.wait(self.INTERVAL_S):
            try:
                self.sweep()
            except Exception:  # never let the janitor die
                log.exception("janitor sweep failed")


JANITOR = Janitor()


def _flush_at_exit() -> None:
    """At interpreter exit, send the tells still held back, then close with a short linger.

    A script that tells and exits without ``client.close()`` loses nothing it was told
    was sent (unless the receiver is gone, or the channel stays busy for 0.5 s).
    """
    FLUSHER.stop(1.0)
    JANITOR.stop(1.0)
    for ch in snapshot(JANITOR._channels):
        if ch.closed or not ch.lock.acquire(timeout=0.5):
            continue
        try:
            if ch.pending:
                ch.flush_locked()
            ch.close(linger_ms=1000)
        except (zmq.ZMQError, MailboxFull):
            pass
        finally:
            ch.lock.release()


atexit.register(_flush_at_exit)


#: Shedding (issue 10): a peer whose bad frames weigh SHED_AFTER within SHED_WINDOW_S is shed:
#: its frames are then dropped unread (not decoded, not logged, only counted) for SHED_FOR_S
#: seconds. A bad frame weighs 1, plus 1 per SHED_WEIGHT_BYTES it carried, because decoding is
#: what a garbage frame costs: one bad frame of 4 MiB sheds its sender at once. A peer is a
#: ROUTER identity, that is one connection: a peer that reconnects is a new peer, and a shed
#: mesh process whose requests time out opens a new channel (a new identity) anyway.
SHED_AFTER = 64
SHED_WEIGHT_BYTES = 64 * 1024
SHED_WINDOW_S = 10.0
SHED_FOR_S = 10.0
#: Peers remembered for shedding at most, in the strike table and in the shed table each: a
#: flood of fresh identities forgets the oldest, it does not grow the tables.
SHED_PEERS = 4096
#: Log lines about bad frames per second at most, all peers together (the rest are counted).
LOG_LINES_PER_S = 10


class BadFrames:
    """Counts frames dropped per peer, logs each peer at most once a second, and sheds peers
    that send garbage (see SHED_AFTER). Every table here is bounded."""

    def __init__(self, where: str, interval_s: float = 1.0):
        self.where = where
        self.interval_s = interval_s
        self.by_peer: dict[str, int] = {}
        self.total = 0  #: bad frames, shed ones included
        self.shed_frames = 0  #: frames dropped unread because their peer was shed
        self.peers_shed = 0  #: times a peer was shed
        #: identity -> monotonic time its shedding ends; recv_request reads it on every message,
        #: so it stays empty (falsy) unless somebody sends garbage.
        self.shed: dict[bytes, float] = {}
        self._strikes: dict[bytes, list] = {}  # identity -> [weight, start of its window]
        self._last_log: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._log_second = 0.0
        self._log_lines = 0
        self._log_dropped = 0

    def record(self, peer: bytes | str, reason: object, size: int = 0) -> None:
        """Count one bad frame (``size`` bytes) from ``peer``; shed the peer if it is the last straw."""
        if isinstance(peer, zmq.Frame):
            peer = peer.bytes
        key = peer.hex() if isinstance(peer, bytes) else str(peer)
        if len(self.by_peer) > 10000 and key not in self.by_peer:
            key = "other"  # a flood of fresh identities must not grow this map without bound
        self.by_peer[key] = self.by_peer.get(key, 0) + 1
        self.total += 1
        now = _monotonic()
        if isinstance(peer, bytes):
            self._strike(peer, 1 + size // SHED_WEIGHT_BYTES, now)
        if now - self._last_log.get(key, -1e9) >= self.interval_s and self._may_log(now):
            extra = self._suppressed.pop(key, 0)
            more = f" (+{extra} more since last report)" if extra else ""
            log.warning("%s: dropped a bad frame from peer %s: %s%s", self.where, key, reason, more)
            self._last_log[key] = now
        else:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            if len(self._suppressed) > 10001:
                self._suppressed.clear()

    def _may_log(self, now: float) -> bool:
        if now - self._log_second >= 1.0:
            if self._log_dropped:
                log.warning("%s: %d more bad-frame reports in the last second were not logged", self.where,
                            self._log_dropped)
            self._log_second, self._log_lines, self._log_dropped = now, 0, 0
        if self._log_lines < LOG_LINES_PER_S:
            self._log_lines += 1
            return True
        self._log_dropped += 1
        return False

    def _strike(self, ident: bytes, weight: int, now: float) -> None:
        strikes = self._strikes
        s = strikes.get(ident)
        if s is None or now - s[1] > SHED_WINDOW_S:
            if s is None and len(strikes) >= SHED_PEERS:
                for old in [k for k, v in strikes.items() if now - v[1] > SHED_WINDOW_S]:
                    del strikes[old]
                if len(strikes) >= SHED_PEERS:
                    del strikes[next(iter(strikes))]  # the oldest window goes
            s = strikes[ident] = [0, now]
        s[0] += weight
        if s[0] >= SHED_AFTER:
            del strikes[ident]
            self._shed(ident, now)

    def _shed(self, ident: bytes, now: float) -> None:
        shed = self.shed
        if len(shed) >= SHED_PEERS:
            for old in [k for k, until in shed.items() if until <= now]:
                del shed[old]
            if len(shed) >= SHED_PEERS:
                del shed[next(iter(shed))]
        shed[ident] = now + SHED_FOR_S
        self.peers_shed += 1
        if self._may_log(now):
            log.warning("%s: peer %s sent too many bad frames; its frames are dropped unread for %g s",
                        self.where, ident.hex(), SHED_FOR_S)

    def shedding(self, ident: bytes) -> bool:
        """Whether ``ident``'s frames are to be dropped unread now (and forget it once its time is up)."""
        until = self.shed.get(ident)
        if until is None:
            return False
        if _monotonic() < until:
            return True
        del self.shed[ident]
        return False


def recv_request(sock: zmq.Socket, bad: BadFrames, flags: int = 0):
    """Read one [identity, frame] message from a ROUTER; anything else is dropped and counted.

    Returns (identity, body) as zmq Frames (cheaper than bytes; msgpack reads the
    buffer directly and the identity frame is sent back as it is), or None, also for
    every message of a peer that ``bad`` sheds (dropped unread, counted).
    Raises zmq.Again when nothing arrived within the socket's RCVTIMEO (at once with
    ``flags=zmq.NOBLOCK``).
    """
    ident = sock.recv(flags, copy=False)
    if bad.shed and bad.shedding(ident.bytes):
        # A shed peer: drop the whole message unread (libzmq delivers its parts together).
        more = ident.more
        while more:
            more = sock.recv(copy=False).more
        bad.total += 1
        bad.shed_frames += 1
        return None
    if not ident.more:
        bad.record(ident.bytes, "message has no body frame")
        return None
    frame = sock.recv(copy=False)
    if frame.more:
        extra = 0
        size = len(frame)
        while sock.rcvmore:
            size += len(sock.recv(copy=False))
            extra += 1
        bad.record(ident.bytes, f"message has {extra + 2} frames, at most 2 are allowed", size)
        return None
    return ident, frame
