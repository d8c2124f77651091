"""An asyncio DEALER to one endpoint, shared by every async request of one event loop.

``ask_async``, ``tell_async`` and the client's ``control_async`` ride it: many requests
in flight at once on one socket, answered by correlation id. Its monitor marks it dead when
the peer disconnects, failing what waits with ActorDied (or Unreachable, if nobody ever
listened there), so the next request finds the actor again.

The sockets are plain ZeroMQ sockets used without blocking, and the event loop watches their
file descriptors (``loop.add_reader``), not pyzmq's asyncio wrapper: a send goes out at once
(it waits for room only when the peer's mailbox is full, up to the send timeout), every reply
waiting on the socket is read in one pass. ZeroMQ's file
descriptor is edge-triggered, so the socket's events are read again after every send and
receive (benchmarks/scale_inflight.py measures it against raw pipelined pyzmq). Asks made while
others are out are held for the rest of the event loop's turn and go out together, as one batch
frame (at most BATCH_ASKS of them, SMALL_FRAME bytes; an ask that is the only one out, or larger
than BATCH_SOLO_BYTES, goes at once, alone), and the actor answers a batch's asks in batches
(server.py): what ZeroMQ costs per frame, on both sides, is paid once for many asks. Timeouts: one
heap of deadlines per link and one timer, armed for the earliest, not a timer per request (a
timer made and cancelled per ask was a quarter of the client's time at 100 asks in flight).

ZeroMQ only: the in-memory twin of the transport (:mod:`.memory`) has no asyncio link, so
a client on another transport refuses the asyncio forms with NotImplementedError when
it would open one (the blocking forms, and the ``*_async`` twins of ``aio``, work on any).
"""

from __future__ import annotations

import asyncio
import heapq
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

import zmq
from zmq.utils.monitor import parse_monitor_message

from .. import wire
from ..errors import ActorDied, AskTimeout, MailboxFull, from_wire
from ..wire import BODY, CORR_ID, KIND, SMALL_FRAME, batch_header, decode
from .channel import BATCH_SOLO_BYTES, _close_dropped
from .sockets import async_channel_socket
from .transport import Unreachable, frames_within

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client

_REPLY = int(wire.Kind.REPLY)
_NEVER = float("inf")
_NOBLOCK = int(zmq.NOBLOCK)
_POLLIN = int(zmq.POLLIN)
_POLLOUT = int(zmq.POLLOUT)
_EVENTS = int(zmq.EVENTS)

#: Asks held for one turn of the event loop that go out in one batch frame, at most.
BATCH_ASKS = 64


class AsyncLink:
    """An asyncio DEALER to one endpoint, shared by every ask of one event loop."""

    def __init__(self, endpoint: str, client: Client):
        transport = client.transport
        if transport.scheme != "tcp":
            raise NotImplementedError(f"the asyncio forms (ask_async, tell_async, control_async) run on the ZeroMQ "
                                      f"transport only, not on {transport!r}: use the blocking forms there")
        frame = max(client.limits.get(endpoint, client.max_frame_bytes), client.max_frame_bytes)
        # The monitor reports only events that happen once per connection (see
        # sockets.ASYNC_CHANNEL_EVENTS): a dead peer is found by DISCONNECTED, a stale address
        # by ActorRef._link, which never reuses an address whose link died.
        sock, self.monitor = async_channel_socket(endpoint, hwm=frames_within(client.send_bytes, frame, client.hwm),
                                                  max_bytes=client.max_frame_bytes, linger_ms=1000,
                                                  keys=getattr(transport, "keys", None))
        self.connected = False
        self.sock = sock
        self.endpoint = endpoint
        self.max_bytes = client.max_frame_bytes
        self.send_timeout = client.send_timeout
        self.waiting: dict[int, asyncio.Future[object]] = {}
        self._deadlines: list[tuple[float, int]] = []  # a heap of (deadline, msg_id); answered ones linger
        self._expiry: asyncio.TimerHandle | None = None  # armed for the earliest deadline
        self._expiry_at = _NEVER
        self._room: list[asyncio.Future[None]] = []  # senders waiting for the queue to have room
        #: Asks (frame, msg_id, when held) to go out at the end of this turn of the loop, in order.
        self._held: list[tuple[bytes, int, float]] = []
        self._held_at = 0.0  # when this turn's first ask was held
        self._gave_up = False  # an ask timed out or was cancelled since the last flush
        self._stall: asyncio.TimerHandle | None = None  # held asks found no room: the oldest fails at its time
        #: Bytes a batch frame may hold: at most SMALL_FRAME, what the peer takes (its frame limit) and
        #: what this client takes (the peer's batch of answers is no larger than the batch it answers).
        self.batch_bytes = min(SMALL_FRAME, client.limits.get(endpoint, client.max_frame_bytes), client.max_frame_bytes)
        self.dead = False
        self.loop = asyncio.get_running_loop()
        self._fds = (int(sock.getsockopt(zmq.FD)), int(self.monitor.getsockopt(zmq.FD)))
        self.loop.add_reader(self._fds[0], self._ready)
        self.loop.add_reader(self._fds[1], self._watch)
        # What came before the watch began (the monitor's first event, say) raised no edge: look now.
        self.loop.call_soon(self._watch)
        weakref.finalize(self, _close_dropped, sock, self.monitor)
        client._all_alinks.add(self)

    def close(self) -> None:
        if not self.sock.closed:
            self._unwatch()
        self.dead = True
        if self._room or self._held:
            self._on_loop(self._fail_waiters, ActorDied("the link closed"))
        _close_dropped(self.sock, self.monitor)

    def _fail_waiters(self, exc: Exception) -> None:
        """Nothing waiting to be sent will be: senders waiting for room, and held asks, fail."""
        for fut in self._room:
            if not fut.done():
                fut.set_exception(exc)
        self._room.clear()
        self._fail_held(exc)

    def _on_loop(self, call: Callable[[Exception], None], exc: Exception) -> None:
        """``call(exc)`` now if this is the link's loop, else on it (futures are the loop's to settle)."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            call(exc)
        elif not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(call, exc)
            except RuntimeError:  # closed meanwhile: nobody waits any more
                pass

    def _unwatch(self) -> None:
        loop = self.loop
        if loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            for fd in self._fds:
                loop.remove_reader(fd)
        else:  # closed from another thread (Client.close): its loop drops the watch
            try:
                loop.call_soon_threadsafe(_remove_readers, loop, self._fds)
            except RuntimeError:  # the loop closed meanwhile
                pass

    def _sent(self, frame: bytes) -> bool:
        """Queue ``frame`` now if there is room (True), else False: the caller waits for room."""
        try:
            self.sock.send(frame, _NOBLOCK)
            return True
        except zmq.Again:
            return False
        except zmq.ZMQError:
            if self.sock.closed:
                raise ActorDied("the link closed") from None
            raise

    async def send(self, frame: bytes) -> None:
        if self._held:
            self._flush()  # the asks held before it go first
        if self._held or self._room or not self._sent(frame):  # (and the frames waiting for room)
            await self._send_when_room(frame)
        self._ready()  # a send may take the edge of the socket's descriptor: look at its events now

    async def _send_when_room(self, frame: bytes) -> None:
        """The peer's mailbox and this socket's queue are full: wait for room, up to the send timeout.

        Senders wait in a queue, in the order they came: room wakes the first only, which sends
        (the caller's look at the socket then wakes the next) or, finding none after all, waits at
        the head again. (Waking all at once let a later one find the room an earlier one had not.)"""
        loop = self.loop
        deadline = loop.time() + self.send_timeout
        again = False  # a sender woken that found no room keeps its place at the head
        while True:
            left = deadline - loop.time()
            if left <= 0:
                self._ready()  # (a send that found no room may have taken the socket's edge)
                raise MailboxFull(f"mailbox at {self.endpoint} stayed full for the send timeout")
            room = loop.create_future()
            if again:
                self._room.insert(0, room)
            else:
                self._room.append(room)
            self._ready()
            try:
                await asyncio.wait_for(room, left)
            except asyncio.TimeoutError:
                self._leave(room)
                raise MailboxFull(f"mailbox at {self.endpoint} stayed full for the send timeout") from None
            except BaseException:  # cancelled, or the link closed
                self._leave(room)
                raise
            if room in self._room:
                self._room.remove(room)
            again = True
            if self._held:  # asks held before it go first
                self._flush()
                if self._held:
                    continue
            if self._sent(frame):  # (ActorDied if the link closed meanwhile)
                return

    def _leave(self, room: asyncio.Future[None]) -> None:
        """A sender stops waiting for room: if it was woken, the next one's turn comes now."""
        if room in self._room:
            self._room.remove(room)
        self._ready()

    async def request(self, frame: bytes, msg_id: int, timeout: float, what: str) -> object:
        if self.dead:
            raise Unreachable(f"{what} is gone")
        loop = self.loop
        fut = loop.create_future()
        waiting = self.waiting
        waiting[msg_id] = fut
        try:
            if len(waiting) > 1 and len(frame) <= BATCH_SOLO_BYTES and not self._room:
                # Others are out: held until the loop's turn ends, then sent with the asks made
                # meanwhile, in one frame (and the socket's events looked at once for all).
                held = self._held
                if self._stall is None:  # (the time it is held: one clock read for this turn's asks)
                    if not held:
                        loop.call_soon(self._flush)
                        self._held_at = loop.time()
                    held.append((frame, msg_id, self._held_at))
                else:  # waiting for room, maybe for many turns: its own time
                    held.append((frame, msg_id, loop.time()))
                if 2 * len(held) >= len(waiting) and self._stall is None:
                    # Half of what is out: these go now, so that the actor works on them while the
                    # rest are made (two batches in flight, not one at a time each way).
                    self._flush()
            else:
                if self._held:
                    self._flush()  # the asks held before it go first
                if self._held or self._room or not self._sent(frame):  # self.send(frame), no coroutine
                    await self._send_when_room(frame)
                self._ready()  # a send may take the edge of the socket's descriptor: look now
            deadline = loop.time() + timeout
            deadlines = self._deadlines
            if len(deadlines) > 2 * len(waiting) + 64:  # mostly answered asks: keep it bounded
                deadlines[:] = [d for d in deadlines if d[1] in waiting]
                heapq.heapify(deadlines)
            heapq.heappush(deadlines, (deadline, msg_id))
            if deadline < self._expiry_at:
                self._arm(deadline)
            return await fut
        except asyncio.CancelledError:
            self._gave_up = True  # if it is still held, it is not sent
            raise
        except _TimedOut:
            self._gave_up = True
            raise AskTimeout(f"{what} did not answer within {timeout:g} s") from None
        except Unreachable:
            raise Unreachable(f"{what} is not reachable at {self.endpoint}") from None
        except ActorDied:
            raise ActorDied(f"{what} died while the request was in flight") from None
        finally:
            waiting.pop(msg_id, None)

    def _arm(self, at: float) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry = self.loop.call_at(at, self._expire)
        self._expiry_at = at

    def _expire(self) -> None:
        """Time out the requests whose deadline has come; arm for the next one."""
        self._expiry, self._expiry_at = None, _NEVER
        deadlines = self._deadlines
        waiting = self.waiting
        now = self.loop.time()
        while deadlines and deadlines[0][0] <= now:
            fut = waiting.get(heapq.heappop(deadlines)[1])
            if fut is not None and not fut.done():
                fut.set_exception(_TimedOut())
        if deadlines:
            self._arm(deadlines[0][0])

    def _flush(self, look: bool = True) -> bool:
        """Send the held asks (those still awaited), BATCH_ASKS and ``batch_bytes`` a frame at most;
        whether any went. What finds no room waits for it (``_ready`` sends it then), each ask up
        to the send timeout from when it was held. ``look``: read the socket's events after."""
        held = self._held
        if not held:
            if look:
                self._ready()
            return False
        waiting = self.waiting
        if self._gave_up:  # asks given up (timed out, cancelled) that are still held are never sent
            self._gave_up = False
            held[:] = [h for h in held if h[1] in waiting]
        sock, cap, progress = self.sock, self.batch_bytes, False
        while held:
            n, size = 0, 3
            for h in held:
                if n == BATCH_ASKS or (n and size + len(h[0]) > cap):
                    break
                n += 1
                size += len(h[0])
            frame = held[0][0] if n == 1 else b"".join([batch_header(n), *[h[0] for h in held[:n]]])
            try:
                sock.send(frame, _NOBLOCK)
            except zmq.Again:
                self._arm_stall()
                break
            except zmq.ZMQError:
                self._fail_held(ActorDied("the link closed"))
                return progress
            del held[:n]
            progress = True
        if not held and self._stall is not None:
            self._stall.cancel()
            self._stall = None
        elif held and progress:
            self._arm_stall()  # for the oldest ask still held
        if look:
            self._ready()  # a send, sent or not, may take the edge of the socket's descriptor
        return progress

    def _arm_stall(self) -> None:
        if self._stall is not None:
            self._stall.cancel()
        self._stall = self.loop.call_at(self._held[0][2] + self.send_timeout, self._stalled)

    def _stalled(self) -> None:
        """The held asks that waited the send timeout for room fail with MailboxFull."""
        self._stall = None
        now, held, waiting = self.loop.time(), self._held, self.waiting
        n = 0
        while n < len(held) and held[n][2] + self.send_timeout <= now:
            fut = waiting.get(held[n][1])
            if fut is not None and not fut.done():
                fut.set_exception(MailboxFull(f"mailbox at {self.endpoint} stayed full for the send timeout"))
            n += 1
        del held[:n]
        if held:
            self._arm_stall()

    def _fail_held(self, exc: Exception) -> None:
        """The held asks will not go: each fails with ``exc``."""
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        waiting = self.waiting
        for _, msg_id, _ in self._held:
            fut = waiting.get(msg_id)
            if fut is not None and not fut.done():
                fut.set_exception(exc)
        self._held.clear()

    def _ready(self) -> None:
        """Read every reply waiting on the socket; wake senders waiting for room."""
        sock = self.sock
        waiting = self.waiting
        max_bytes = self.max_bytes
        retry = True  # held asks waiting for room: tried again while each try sends some
        try:
            while True:
                events = int(sock.getsockopt(_EVENTS))
                if events & _POLLIN:
                    frame = sock.recv(_NOBLOCK)
                    try:
                        envelopes = decode(frame, max_bytes)  # one answer, or a batch's (server.py)
                    except Exception:
                        continue
                    for env in envelopes:
                        fut = waiting.get(env[CORR_ID])
                        if fut is not None and not fut.done():
                            if env[KIND] == _REPLY:
                                fut.set_result(env[BODY])
                            else:
                                fut.set_exception(from_wire(env[BODY]))
                    continue
                if events & _POLLOUT and self._held and self._stall is not None and retry:
                    retry = self._flush(look=False)  # held asks waited for room: they go first
                    continue  # (the events again: a send, sent or not, may take the edge)
                if events & _POLLOUT and self._room and not self._held:  # (held asks go first)
                    first = self._room[0]  # the first waiting sender only, see _send_when_room
                    if not first.done():
                        first.set_result(None)
                return
        except zmq.ZMQError:  # closed (or closing) meanwhile
            return

    def _watch(self) -> None:
        monitor = self.monitor
        try:
            while int(monitor.getsockopt(_EVENTS)) & _POLLIN:
                event = parse_monitor_message(monitor.recv_multipart(_NOBLOCK))["event"]
                if event == zmq.EVENT_CONNECTED:
                    self.connected = True
                elif event == zmq.EVENT_DISCONNECTED:
                    self._disconnected()
                    return
        except zmq.ZMQError:  # closed meanwhile
            return

    def _disconnected(self) -> None:
        self._ready()  # a reply that raced the disconnect is read first
        self.dead = True
        never = not self.connected
        for fut in list(self.waiting.values()):
            if not fut.done():
                fut.set_exception(Unreachable("nobody listens there") if never else ActorDied("peer disconnected"))
        self.close()


class _TimedOut(Exception):
    """A request's timer fired before its answer came."""


def _remove_readers(loop: asyncio.AbstractEventLoop, fds: tuple[int, int]) -> None:
    for fd in fds:
        try:
            loop.remove_reader(fd)
        except (ValueError, OSError):
            pass
