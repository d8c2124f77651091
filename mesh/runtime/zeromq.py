"""The ZeroMQ transport: the interface of :mod:`.transport` over the sockets of :mod:`.sockets`.

What production runs. ``ZMQ`` is the default transport of every component; pass another
(the in-memory twin, :mod:`.memory`) to run them without sockets.
"""

from __future__ import annotations

from typing import Any

import zmq

from .channel import Channel
from .clock import REAL_CLOCK, Clock
from .sockets import OutletSocket, RouterSocket, outlet, router
from .transport import POLLIN, SEND_BYTES
from .zeromq_broadcast import ZmqBroadcaster, ZmqPublisher, ZmqSubscriber


class ZmqPoller(zmq.Poller):
    """``zmq.Poller`` whose ``register`` watches for input unless told otherwise (zmq's default adds
    POLLOUT, which is always ready on an outlet with room, so every poll would return at once)."""

    def register(self, socket: Any, flags: int = POLLIN) -> Any:
        return super().register(socket, flags)


class ZmqTransport:
    """Listeners are ROUTERs, links are :class:`Channel` DEALERs, outlets are DEALERs; tcp:// addresses."""

    scheme = "tcp"

    def __init__(self, clock: Clock = REAL_CLOCK):
        self.clock = clock

    def listen(self, address: str, *, mailbox: int, replies: int, max_bytes: int, linger_ms: int, wait_ms: int,
               any_port: bool = False) -> RouterSocket:
        return router(address, mailbox=mailbox, replies=replies, max_bytes=max_bytes, linger_ms=linger_ms,
                      wait_ms=wait_ms, any_port=any_port)

    def channel(self, endpoint: str, *, hwm: int, send_timeout: float, max_bytes: int, limit: int | None = None,
                send_bytes: int = SEND_BYTES, clock: Clock | None = None) -> Channel:
        return Channel(endpoint, hwm=hwm, send_timeout=send_timeout, max_bytes=max_bytes, limit=limit,
                       send_bytes=send_bytes, clock=clock or self.clock)

    def outlet(self, endpoint: str, *, hwm: int, max_bytes: int, linger_ms: int = 0,
               immediate: bool = False) -> OutletSocket:
        return outlet(endpoint, hwm=hwm, max_bytes=max_bytes, linger_ms=linger_ms, immediate=immediate)

    def poller(self) -> ZmqPoller:
        return ZmqPoller()

    def is_address(self, address: str) -> bool:
        scheme, _, rest = address.partition("://")
        host, _, port = rest.rpartition(":")
        return scheme == "tcp" and bool(host) and port.isdigit() and 0 < int(port) < 65536

    def broadcaster(self, host: str, *, hwm: int, max_bytes: int) -> ZmqBroadcaster:
        return ZmqBroadcaster(host, hwm=hwm, max_bytes=max_bytes)

    def publisher(self, endpoint: str, *, hwm: int, max_bytes: int, send_timeout: float) -> ZmqPublisher:
        return ZmqPublisher(endpoint, hwm=hwm, max_bytes=max_bytes, send_timeout=send_timeout)

    def subscriber(self, *, hwm: int, max_bytes: int) -> ZmqSubscriber:
        return ZmqSubscriber(hwm=hwm, max_bytes=max_bytes)

    def __repr__(self) -> str:
        return "ZmqTransport()"


#: The transport components use unless given another.
ZMQ = ZmqTransport()
