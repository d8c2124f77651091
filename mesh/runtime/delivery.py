"""Reliable delivery: ``tell(message, ack=True)``.

The message goes out as a TELL_ACK envelope. The receiving actor's process runs the
handler, then acknowledges (a REPLY to the message id). Until acknowledged, the
sender resends it after ``RETRY_S``, then backing off to every 4 s (to wherever the
actor runs now: a restarted actor, or one re-placed elsewhere, is looked up again,
once per round for all its messages) until its deadline,
then the :class:`Delivery` fails with AskTimeout. The receiver remembers the ids of
the acknowledged messages it handled (the last ``DEDUP_MAX``, all senders together,
about 30 MB at most whatever the sender names), so a resent message whose
acknowledgement was lost is acknowledged again without running the handler: the
handler runs once per message per incarnation. (A new incarnation remembers nothing:
a message it may have handled before its crash, but not acknowledged, runs again there. That is at-least-once across crashes,
exactly-once within an incarnation.)

One thread per client sends, resends and collects acknowledgements, so ``tell(...,
ack=True)`` never blocks on the network; ``Delivery.wait()`` and ``Client.drain()``
wait for acknowledgements. Messages to one actor leave in the order they were told
(resends may of course arrive after later messages).
"""

from __future__ import annotations

import collections
import hashlib
import logging
import queue
import threading
import time
from typing import Any

from .. import wire
from ..errors import AskTimeout, MeshError, WireError, from_wire
from ..wire import BODY, CORR_ID, KIND
from .clock import REAL_CLOCK, Clock
from .transport import POLLIN, Outlet, Poller, Transport
from .zeromq import ZMQ

log = logging.getLogger("mesh.delivery")

RETRY_S = 0.5  #: seconds before an unacknowledged message is sent again
DEDUP_MAX = 100_000  #: message ids a receiver remembers
MAX_OUTSTANDING = 10_000  #: unacknowledged messages a client keeps in flight before tell(ack=True) waits
RESEND_BATCH = 2000  #: resends per round at most, so acknowledgements keep being collected
_TELL_ACK = int(wire.Kind.TELL_ACK)
_REPLY = int(wire.Kind.REPLY)
_FAIL = int(wire.Kind.FAIL)


class Delivery:
    """One ``tell(..., ack=True)``: ``wait()`` until the receiver acknowledged it."""

    __slots__ = ("msg_id", "target", "frame", "deadline", "next_send", "attempts", "_done", "error", "endpoint")

    def __init__(self, msg_id: int, target: str, frame: bytes, deadline: float):
        self.msg_id = msg_id
        self.target = target
        self.frame = frame
        self.deadline = deadline
        self.next_send = 0.0
        self.attempts = 0
        self._done = threading.Event()
        self.error: MeshError | None = None
        self.endpoint: str | None = None

    @property
    def acked(self) -> bool:
        return self._done.is_set() and self.error is None

    def wait(self, timeout: float | None = None) -> None:
        """Block until acknowledged; raise the delivery's error (AskTimeout at its deadline)."""
        if not self._done.wait(timeout):
            raise AskTimeout(f"message {self.msg_id} to {self.target} not acknowledged within {timeout:g} s (still trying)")
        if self.error is not None:
            raise self.error

    def _finish(self, error: MeshError | None = None) -> None:
        self.error = error
        self._done.set()


class Deliverer:
    """The client's delivery thread.

    It sends over ``transport`` and keeps its deadlines by ``clock`` (by default the
    client's own, else ZeroMQ and the real clock); a Delivery's deadline is on that clock.
    """

    def __init__(self, client: Any, transport: Transport | None = None, clock: Clock | None = None):
        self.client = client
        self.transport = transport or getattr(client, "transport", None) or ZMQ
        self.clock = clock or getattr(client, "clock", None) or REAL_CLOCK
        self._inbox: queue.Queue[Delivery] = queue.Queue()
        self._pending: dict[int, Delivery] = {}
        self._socks: dict[str, Outlet] = {}
        self._slots = threading.BoundedSemaphore(MAX_OUTSTANDING)
        self._next_round = 0.0
        self._next_sweep = self.clock.monotonic() + 5.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mesh-deliverer", daemon=True)
        self._thread.start()

    def submit(self, d: Delivery) -> Delivery:
        self._slots.acquire()
        self._inbox.put(d)
        return d

    def drain(self, timeout: float) -> int:
        """Wait until every delivery so far is acknowledged or failed; returns how many are left."""
        monotonic = self.clock.monotonic
        deadline = monotonic() + timeout
        while monotonic() < deadline:
            if self._inbox.empty() and not self._pending:
                return 0
            time.sleep(0.01)  # a real pause: the deliverer thread does the work
        return self._inbox.qsize() + len(self._pending)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    # -- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        poller = self.transport.poller()
        try:
            while not self._stop.is_set():
                self._take_new(poller)
                now = self.clock.monotonic()
                self._resend(now, poller)
                for sock, _ in poller.poll(10):
                    self._collect(sock)
        finally:
            for sock in self._socks.values():
                sock.close(0)
            for d in self._pending.values():
                d._finish(AskTimeout(f"message {d.msg_id} to {d.target}: the client closed before it was acknowledged"))

    def _take_new(self, poller: Poller) -> None:
        for _ in range(1000):
            try:
                d = self._inbox.get_nowait()
            except queue.Empty:
                return
            self._pending[d.msg_id] = d
            self._send(d, self.clock.monotonic(), poller)

    def _resend(self, now: float, poller: Poller) -> None:
        if now < self._next_round:
            return
        self._next_round = now + 0.05
        looked_up: dict[str, str | None] = {}  # one lookup per target per round, not per message
        sent = 0
        for d in list(self._pending.values()):
            if now >= d.deadline:
                self._done(d, AskTimeout(f"message {d.msg_id} to {d.target} not acknowledged by its deadline"
                                         f" ({d.attempts} attempt(s))"))
            elif now >= d.next_send and sent < RESEND_BATCH:
                if d.attempts:
                    if d.target not in looked_up:  # it may have restarted, or moved: look it up again
                        self.client._forget(d.target)
                        looked_up[d.target] = self._lookup(d.target)
                    d.endpoint = looked_up[d.target]
                self._send(d, now, poller)
                sent += 1
        if now >= self._next_sweep:
            self._next_sweep = now + 5.0
            used = {d.endpoint for d in self._pending.values()}
            for endpoint in [e for e in self._socks if e not in used]:  # endpoints of restarted actors
                sock = self._socks.pop(endpoint)
                poller.unregister(sock)
                sock.close(0)

    def _lookup(self, target: str) -> str | None:
        try:
            return self.client.endpoint_of(target, timeout=0.0)
        except MeshError:
            return None  # (re)starting or unknown for now: try again at the next round

    def _send(self, d: Delivery, now: float, poller: Poller) -> None:
        # Back off: 0.5 s, 1 s, 2 s, then every 4 s, so a slow receiver is not flooded with copies.
        d.next_send = now + min(RETRY_S * (1 << min(d.attempts, 3)), 4.0)
        if d.endpoint is None:
            d.endpoint = self._lookup(d.target)
            if d.endpoint is None:
                return
        sock = self._socks.get(d.endpoint)
        if sock is None:
            sock = self.transport.outlet(d.endpoint, hwm=MAX_OUTSTANDING, max_bytes=self.client.max_frame_bytes)
            self._socks[d.endpoint] = sock
            poller.register(sock, POLLIN)
        if sock.send_nowait(d.frame):
            d.attempts += 1
        # else the receiver's mailbox is full: the next round tries again

    def _collect(self, sock: Outlet) -> None:
        for _ in range(1000):
            frame = sock.recv_nowait()
            if frame is None:
                return
            try:
                env = wire.decode_one(frame, self.client.max_frame_bytes)
            except WireError:
                continue
            d = self._pending.get(env[CORR_ID])
            if d is None:
                continue  # a second acknowledgement of a resent message
            if env[KIND] == _REPLY:
                self._done(d, None)
            elif env[KIND] == _FAIL:
                self._done(d, from_wire(env[BODY]))

    def _done(self, d: Delivery, error: MeshError | None) -> None:
        if self._pending.pop(d.msg_id, None) is not None:
            self._slots.release()
            d._finish(error)


class Seen:
    """The receiver's memory of handled acknowledged messages: (sender, msg_id), oldest dropped first.

    Bounded in entries (``limit``) and in bytes whatever the senders send: an ASCII sender
    name of up to ``NAME_MAX`` characters is kept as it is, any other by a 16-byte digest of
    it (BLAKE2b: a duplicate from such a sender is still recognised, and no two names are
    mistaken for each other in practice), so an entry costs at most ``ENTRY_BYTES``
    (``limit`` entries: about 30 MB).
    """

    NAME_MAX = 64  #: characters of an ASCII sender name kept as they are
    ENTRY_BYTES = 320  #: bytes an entry costs at most: the name, the message id, the table's share

    def __init__(self, limit: int = DEDUP_MAX):
        self.limit = limit
        self._ids: collections.OrderedDict[tuple[str | bytes, int], None] = collections.OrderedDict()

    @classmethod
    def _key(cls, key: tuple[str, int]) -> tuple[str | bytes, int]:
        sender = key[0]
        if type(sender) is str and len(sender) <= cls.NAME_MAX and sender.isascii():
            return key  # the common case allocates nothing
        name = sender.encode("utf-8", "surrogatepass") if type(sender) is str else repr(sender).encode()
        return (hashlib.blake2b(name, digest_size=16).digest(), key[1])

    def __contains__(self, key: tuple[str, int]) -> bool:
        return self._key(key) in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def max_bytes(self) -> int:
        """What the filter may hold at most, in bytes."""
        return self.limit * self.ENTRY_BYTES

    def add(self, key: tuple[str, int]) -> None:
        self._ids[self._key(key)] = None
        if len(self._ids) > self.limit:
            self._ids.popitem(last=False)


__all__ = ["Delivery", "Deliverer", "Seen", "RETRY_S"]
