"""Broadcasts in memory: the twin of :mod:`.zeromq_broadcast`, for the in-memory transport.

A broadcaster listens on two addresses of a :class:`~.memory.MemoryNetwork` (``in`` and
``out``); a publisher's broadcast goes straight to the queue of every subscriber connected
to the ``out`` address whose prefixes match the topic, unless the link between their hosts
is cut (then it is lost: a broadcast is fire-and-forget, and a PUB drops what it cannot
send). A subscriber's queue holds at most ``hwm`` broadcasts; more are dropped, as a PUB
drops them for a slow subscriber. Subscriptions take effect at once (no slow joiner here:
the handshake of :mod:`.broadcast` still runs, and passes on its first try).
"""

from __future__ import annotations

import collections
import errno
import itertools
import threading
from typing import TYPE_CHECKING

from .transport import AddressError

if TYPE_CHECKING:  # pragma: no cover
    from .memory import MemoryNetwork

_ports = itertools.count(1)


class BroadcastRegistry:
    """A network's broadcasters, by address (``MemoryNetwork.broadcasters``)."""

    def __init__(self) -> None:
        self.by_in: dict[str, MemoryBroadcaster] = {}
        self.by_out: dict[str, MemoryBroadcaster] = {}


def _registry(network: "MemoryNetwork") -> BroadcastRegistry:
    return network.broadcasters


class MemoryBroadcaster:
    def __init__(self, network: "MemoryNetwork", host: str, address_host: str):
        self.network = network
        self.host = host
        n = next(_ports)
        self.in_address = f"{address_host}:b{n}in"
        self.out_address = f"{address_host}:b{n}out"
        self.subscribers: list[MemorySubscriber] = []
        reg = _registry(network)
        with network.lock:
            reg.by_in[self.in_address] = self
            reg.by_out[self.out_address] = self

    def deliver(self, src: str, topic: bytes, frame: bytes) -> None:
        network = self.network
        with network.lock:
            if (src, self.host) in network._cut:
                return
            for sub in self.subscribers:
                if (self.host, sub.host) not in network._cut:
                    sub._offer(topic, frame)

    def close(self) -> None:
        reg = _registry(self.network)
        with self.network.lock:
            reg.by_in.pop(self.in_address, None)
            reg.by_out.pop(self.out_address, None)
            self.subscribers.clear()


class MemoryPublisher:
    def __init__(self, network: "MemoryNetwork", host: str, endpoint: str):
        self.network = network
        self.host = host
        self.endpoint = endpoint

    def publish(self, topic: bytes, frame: bytes) -> None:
        target = _registry(self.network).by_in.get(self.endpoint)
        if target is not None:  # nobody there: lost, as a broadcast to a gone node is
            target.deliver(self.host, topic, frame)

    def close(self) -> None:
        pass


class MemorySubscriber:
    def __init__(self, network: "MemoryNetwork", host: str, hwm: int):
        self.network = network
        self.host = host
        self.hwm = max(1, hwm)
        self.prefixes: collections.Counter[bytes] = collections.Counter()
        self.addresses: set[str] = set()
        self.dropped = 0
        self._queue: collections.deque[tuple[bytes, bytes]] = collections.deque()
        self._ready = threading.Condition(network.lock)

    def _offer(self, topic: bytes, frame: bytes) -> None:  # under the network's lock
        if not any(topic.startswith(p) for p in self.prefixes):
            return
        if len(self._queue) >= self.hwm:
            self.dropped += 1
            return
        self._queue.append((topic, frame))
        self._ready.notify()

    def connect(self, address: str) -> None:
        if not address.startswith("mem://"):
            raise AddressError(errno.EINVAL, f"not an in-memory address: {address!r}")
        target = _registry(self.network).by_out.get(address)
        with self.network.lock:
            self.addresses.add(address)
            if target is not None and self not in target.subscribers:
                target.subscribers.append(self)

    def disconnect(self, address: str) -> None:
        target = _registry(self.network).by_out.get(address)
        with self.network.lock:
            self.addresses.discard(address)
            if target is not None and self in target.subscribers:
                target.subscribers.remove(self)

    def subscribe(self, prefix: bytes) -> None:
        with self.network.lock:
            self.prefixes[prefix] += 1

    def unsubscribe(self, prefix: bytes) -> None:
        with self.network.lock:
            if self.prefixes[prefix] > 0:
                self.prefixes[prefix] -= 1
            if self.prefixes[prefix] <= 0:
                del self.prefixes[prefix]

    def receive(self, timeout_ms: int) -> tuple[bytes, bytes] | None:
        with self._ready:
            if not self._queue and timeout_ms > 0:
                self._ready.wait(timeout_ms / 1000.0)
            return self._queue.popleft() if self._queue else None

    def close(self) -> None:
        for address in list(self.addresses):
            self.disconnect(address)
