"""Hosts over real ZeroMQ whose links a test cuts and heals, as the twin's MemoryNetwork cuts its hosts'.

``ZmqHosts().transport(host)`` is the ZeroMQ transport of one host (a node, a client, a process
of actors): what it listens on belongs to that host, and every connection it makes to another
host's address goes through a TCP relay of its own (:mod:`relay`), one per (host, address).
So ``cut(a, b)`` stops the bytes between hosts ``a`` and ``b`` both ways (``one_way``: only
from ``a`` to ``b``), whoever opened the connection, and ``heal()`` lets them go on, in order:
the twin's ``cut``, ``heal`` and the same test bodies, over loopback TCP. As through the
twin, a cut reports no event: the connections stay up, bytes wait.
"""

from __future__ import annotations

import threading
from typing import Any

from mesh.runtime.clock import Clock
from mesh.runtime.transport import Listener, Link, Outlet, Poller, Transport
from mesh.runtime.zeromq import ZMQ
from relay import Relay


class ZmqHosts:
    def __init__(self, base: Transport = ZMQ) -> None:
        self.base = base
        self._lock = threading.Lock()
        self._owner: dict[int, str] = {}  # listening port -> its host
        self._relays: dict[tuple[str, int], tuple[Relay, str]] = {}  # (from host, to port) -> (relay, to host)
        self._cut: set[tuple[str, str]] = set()  # (from host, to host)

    def transport(self, host: str) -> "HostTransport":
        return HostTransport(self, host)

    # -- faults ----------------------------------------------------------------------------

    def cut(self, a: str, b: str, *, one_way: bool = False) -> None:
        """Stop the bytes from host ``a`` to host ``b`` (and back, unless ``one_way``)."""
        with self._lock:
            self._cut.add((a, b))
            if not one_way:
                self._cut.add((b, a))
            self._apply()

    def heal(self) -> None:
        """Every cut heals; what waited goes on, in order."""
        with self._lock:
            self._cut.clear()
            self._apply()

    def close(self) -> None:
        with self._lock:
            relays = [relay for relay, _ in self._relays.values()]
            self._relays.clear()
        for relay in relays:
            relay.close()

    # -- routing ---------------------------------------------------------------------------

    def listening(self, host: str, address: str) -> None:
        with self._lock:
            self._owner[_port(address)] = host

    def route(self, src: str, endpoint: str) -> str:
        """Where host ``src`` connects to reach ``endpoint``: its own relay to another host's address."""
        port = _port(endpoint)
        with self._lock:
            dst = self._owner.get(port)
            if dst is None or dst == src:
                return endpoint
            known = self._relays.get((src, port))
            if known is None:
                relay = Relay(port)
                known = self._relays[(src, port)] = (relay, dst)
                self._set(src, relay, dst)
            return known[0].address

    def _apply(self) -> None:
        for (src, _), (relay, dst) in self._relays.items():
            self._set(src, relay, dst)

    def _set(self, src: str, relay: Relay, dst: str) -> None:
        forward, back = (src, dst) in self._cut, (dst, src) in self._cut
        if forward or back:
            relay.cut(forward, back)
        else:
            relay.heal()


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


class HostTransport:
    """ZeroMQ for one host of :class:`ZmqHosts`: its connections to other hosts go through relays."""

    scheme = "tcp"

    def __init__(self, hosts: ZmqHosts, host: str) -> None:
        self.hosts = hosts
        self.host = host
        self.clock: Clock = hosts.base.clock

    def listen(self, address: str, **options: Any) -> Listener:
        listener = self.hosts.base.listen(address, **options)
        self.hosts.listening(self.host, listener.address)
        return listener

    def channel(self, endpoint: str, **options: Any) -> Link:
        return self.hosts.base.channel(self.hosts.route(self.host, endpoint), **options)

    def outlet(self, endpoint: str, **options: Any) -> Outlet:
        return self.hosts.base.outlet(self.hosts.route(self.host, endpoint), **options)

    def poller(self) -> Poller:
        return self.hosts.base.poller()

    def is_address(self, address: str) -> bool:
        return self.hosts.base.is_address(address)

    # Broadcasts go straight, not through the relays: cutting hosts apart does not stop them.
    def broadcaster(self, host: str, **options: Any) -> Any:
        return self.hosts.base.broadcaster(host, **options)

    def publisher(self, endpoint: str, **options: Any) -> Any:
        return self.hosts.base.publisher(endpoint, **options)

    def subscriber(self, **options: Any) -> Any:
        return self.hosts.base.subscriber(**options)

    def __repr__(self) -> str:
        return f"HostTransport({self.host!r})"
