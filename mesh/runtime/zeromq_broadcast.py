"""Broadcasts on ZeroMQ: the node's forwarder (PULL -> PUB), a publisher's PUSH, a subscriber's SUB.

A publisher pushes each broadcast once to its node's PULL; libzmq's proxy (C, on a thread of
its own, no Python per message) hands it to the node's PUB, which sends it to every
connected SUB whose subscriptions match the topic frame's prefix (the PUB filters: a
subscriber is never sent what it did not ask for). Why PUSH and not PUB on the publisher's
side: a PUSH queues from its first send, while a PUB drops everything until its peer's
subscriptions arrive (the slow joiner on the publishing side). The subscribing side's slow
joiner is handled above this layer, by a handshake (:mod:`.broadcast`).

Every socket is built in :mod:`.sockets`.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import zmq

from ..errors import MailboxFull
from .sockets import forwarder_sockets, proxy_control, push_socket, sub_socket, wake_pair

if TYPE_CHECKING:  # pragma: no cover
    from .keys import Keys

_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE = int(zmq.SNDMORE)
_POLLIN = int(zmq.POLLIN)


class ZmqBroadcaster:
    """A PULL and a PUB on free ports of a host, joined by ``zmq.proxy_steerable`` on a thread."""

    def __init__(self, host: str, *, hwm: int, max_bytes: int, keys: "Keys | None" = None):
        self._pull, self._pub, self.in_address, self.out_address = forwarder_sockets(host, hwm=hwm, max_bytes=max_bytes,
                                                                                     keys=keys)
        self._control, self._terminate = proxy_control()
        self._thread = threading.Thread(target=self._run, name="mesh-broadcast", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            zmq.proxy_steerable(self._pull, self._pub, None, self._control)
        except zmq.ZMQError:
            pass  # the context is ending (the process exits)
        finally:
            for sock in (self._pull, self._pub, self._control):
                sock.close(0)

    def close(self) -> None:
        if self._thread.is_alive():
            try:
                self._terminate.send(b"TERMINATE")
            except zmq.ZMQError:
                pass
            self._thread.join(timeout=2.0)
        self._terminate.close(0)


class ZmqPublisher:
    """A PUSH to a broadcaster's PULL (one thread's)."""

    def __init__(self, endpoint: str, *, hwm: int, max_bytes: int, send_timeout: float, keys: "Keys | None" = None):
        self.endpoint = endpoint
        self._sock = push_socket(endpoint, hwm=hwm, max_bytes=max_bytes, send_timeout=send_timeout, keys=keys)

    def publish(self, topic: bytes, frame: bytes) -> None:
        try:
            self._sock.send(topic, _SNDMORE)
            self._sock.send(frame)
        except zmq.Again:
            raise MailboxFull(f"the broadcaster at {self.endpoint} takes no more (its queue stayed full)") from None

    def close(self) -> None:
        self._sock.close()


class ZmqSubscriber:
    """A SUB owned by the thread that receives. Other threads' changes go into a queue and wake
    that thread through an inproc pair, so only it ever touches the SUB."""

    def __init__(self, *, hwm: int, max_bytes: int, keys: "Keys | None" = None):
        self._sub = sub_socket(hwm=hwm, max_bytes=max_bytes, keys=keys)
        self._wake_in, self._wake_out = wake_pair()
        self._lock = threading.Lock()  # guards the queue and the waking PUSH (used by any thread)
        self._changes: collections.deque[Callable[[], None]] = collections.deque()
        self._poller = zmq.Poller()
        self._poller.register(self._sub, _POLLIN)
        self._poller.register(self._wake_in, _POLLIN)
        self._closed = False

    def _change(self, change: Callable[[], None]) -> None:
        with self._lock:
            if self._closed:
                return
            self._changes.append(change)
            try:
                self._wake_out.send(b"", _NOBLOCK)
            except zmq.Again:
                pass  # a wake-up is queued already

    def connect(self, address: str) -> None:
        def connect() -> None:
            try:
                self._sub.connect(address)
            except zmq.ZMQError:
                pass  # an address libzmq refuses: nothing comes from it
        self._change(connect)

    def disconnect(self, address: str) -> None:
        def disconnect() -> None:
            try:
                self._sub.disconnect(address)
            except zmq.ZMQError:
                pass  # not connected there
        self._change(disconnect)

    def subscribe(self, prefix: bytes) -> None:
        self._change(lambda: self._sub.setsockopt(zmq.SUBSCRIBE, prefix))

    def unsubscribe(self, prefix: bytes) -> None:
        self._change(lambda: self._sub.setsockopt(zmq.UNSUBSCRIBE, prefix))

    def receive(self, timeout_ms: int) -> tuple[bytes, bytes] | None:
        ready = dict(self._poller.poll(timeout_ms))
        if self._wake_in in ready:
            while True:
                try:
                    self._wake_in.recv(_NOBLOCK)
                except zmq.Again:
                    break
            while True:
                with self._lock:
                    if not self._changes:
                        break
                    change = self._changes.popleft()
                change()
        if self._sub not in ready:
            return None
        try:
            parts = self._sub.recv_multipart(_NOBLOCK)
        except zmq.Again:
            return None
        if len(parts) != 2:
            return None  # not a broadcast of ours: dropped
        return parts[0], parts[1]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._wake_out.close(0)
        self._wake_in.close(0)
        self._sub.close(0)
