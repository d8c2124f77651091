"""The ZeroMQ transport: the interface of :mod:`.transport` over the sockets of :mod:`.sockets`.

What production runs. ``ZMQ`` is the default transport of every component; pass another
(the in-memory twin, :mod:`.memory`) to run them without sockets.

A transport made with keys (:func:`transport_for`, ``ZmqTransport(keys=...)``) carries them to
every socket it builds: listeners are CURVE servers behind the gate, links and outlets CURVE
clients (:mod:`.sockets`). ``ZMQ`` has none: without keys nothing changes.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

import zmq

from .channel import Channel
from .clock import REAL_CLOCK, Clock
from .sockets import OutletSocket, RouterSocket, outlet, router
from .transport import POLLIN, SEND_BYTES
from .zeromq_broadcast import ZmqBroadcaster, ZmqPublisher, ZmqSubscriber

if TYPE_CHECKING:  # pragma: no cover
    from .keys import Keys


class ZmqPoller(zmq.Poller):
    """``zmq.Poller`` whose ``register`` watches for input unless told otherwise (zmq's default adds
    POLLOUT, which is always ready on an outlet with room, so every poll would return at once)."""

    def register(self, socket: Any, flags: int = POLLIN) -> Any:
        return super().register(socket, flags)


class ZmqTransport:
    """Listeners are ROUTERs, links are :class:`Channel` DEALERs, outlets are DEALERs; tcp:// addresses."""

    scheme = "tcp"

    def __init__(self, clock: Clock = REAL_CLOCK, keys: "Keys | None" = None):
        self.clock = clock
        self.keys = keys  #: this process's CURVE keys, or None (plain ZeroMQ, as before)

    def listen(self, address: str, *, mailbox: int, replies: int, max_bytes: int, linger_ms: int, wait_ms: int,
               any_port: bool = False) -> RouterSocket:
        return router(address, mailbox=mailbox, replies=replies, max_bytes=max_bytes, linger_ms=linger_ms,
                      wait_ms=wait_ms, any_port=any_port, keys=self.keys)

    def channel(self, endpoint: str, *, hwm: int, send_timeout: float, max_bytes: int, limit: int | None = None,
                send_bytes: int = SEND_BYTES, clock: Clock | None = None) -> Channel:
        return Channel(endpoint, hwm=hwm, send_timeout=send_timeout, max_bytes=max_bytes, limit=limit,
                       send_bytes=send_bytes, clock=clock or self.clock, keys=self.keys)

    def outlet(self, endpoint: str, *, hwm: int, max_bytes: int, linger_ms: int = 0,
               immediate: bool = False) -> OutletSocket:
        return outlet(endpoint, hwm=hwm, max_bytes=max_bytes, linger_ms=linger_ms, immediate=immediate, keys=self.keys)

    def poller(self) -> ZmqPoller:
        return ZmqPoller()

    def is_address(self, address: str) -> bool:
        scheme, _, rest = address.partition("://")
        host, _, port = rest.rpartition(":")
        return scheme == "tcp" and bool(host) and port.isdigit() and 0 < int(port) < 65536

    def broadcaster(self, host: str, *, hwm: int, max_bytes: int) -> ZmqBroadcaster:
        return ZmqBroadcaster(host, hwm=hwm, max_bytes=max_bytes, keys=self.keys)

    def publisher(self, endpoint: str, *, hwm: int, max_bytes: int, send_timeout: float) -> ZmqPublisher:
        return ZmqPublisher(endpoint, hwm=hwm, max_bytes=max_bytes, send_timeout=send_timeout, keys=self.keys)

    def subscriber(self, *, hwm: int, max_bytes: int) -> ZmqSubscriber:
        return ZmqSubscriber(hwm=hwm, max_bytes=max_bytes, keys=self.keys)

    def __repr__(self) -> str:
        return f"ZmqTransport(keys={self.keys.name!r})" if self.keys else "ZmqTransport()"


#: The transport components use unless given another.
ZMQ = ZmqTransport()

_with_keys: dict[tuple[str, str | None], ZmqTransport] = {}
_with_keys_lock = threading.Lock()


def transport_for(keys: "str | os.PathLike[str] | Keys | None" = None, name: str | None = None) -> ZmqTransport:
    """The ZeroMQ transport with ``keys`` (a keys directory, a secret certificate or Keys; None:
    ``$MESH_KEYS``; neither: ``ZMQ``, no keys). ``name`` picks the keypair in a directory.
    One transport per key source in a process. Raises KeysError."""
    from .keys import Keys, load_keys

    where = keys if keys is not None else os.environ.get("MESH_KEYS") or None
    if where is None:
        return ZMQ
    if isinstance(where, Keys):
        return ZmqTransport(keys=where)
    slot = (os.fspath(where), name)
    with _with_keys_lock:
        transport = _with_keys.get(slot)
        if transport is None:
            transport = _with_keys[slot] = ZmqTransport(keys=load_keys(where, name))
        return transport
