"""Runs the gossip state machine inside a node: the bytes and the time, nothing else.

The node hands every GOSSIP envelope it receives on its ROUTER to
:meth:`Gossiper.receive`, and calls :meth:`Gossiper.tick` from its loop. Gossip goes
out over one DEALER per peer address, with small queues and no blocking: gossip
tolerates loss by design, so a slow or dead peer costs a dropped frame, never a
stalled node.

Until it has met a live peer, the node sends a syn to each ``--join`` address once
a second; a peer learns the joiner's name and address from that syn's digest.
"""

from __future__ import annotations

import logging
import random
import time

import zmq

from .. import wire
from ..errors import WireError
from ..core.effects import Event, Send
from ..core.gossip import ALIVE, SUSPECT, GossipConfig, GossipNode
from .transport import context, tune_socket

log = logging.getLogger("mesh.gossip")

_GOSSIP = int(wire.Kind.EVENT)  # gossip travels as one-way EVENT envelopes addressed to "$gossip"
GOSSIP_RECIPIENT = "$gossip"
JOIN_RETRY_S = 1.0


class Gossiper:
    def __init__(self, name: str, advertise: str, seeds: list[str], config: GossipConfig | None = None,
                 max_bytes: int = wire.MAX_FRAME_BYTES, on_event=None):
        self.name = name
        self.advertise = advertise
        self.seeds = [s for s in seeds if s != advertise]
        self.max_bytes = max_bytes
        self.config = config or GossipConfig()
        # A fresh incarnation on every start, without a disk: wall-clock milliseconds.
        self.incarnation = int(time.time() * 1000)
        self.node = GossipNode(name, self.incarnation, self.config, random.Random(), time.time(), address=advertise)
        self.on_event = on_event or (lambda ev: None)
        self._out: dict[str, zmq.Socket] = {}
        self._ids = iter(range(1, 1 << 62))
        self._next_tick = 0.0
        self._next_join = 0.0
        self.dropped = 0

    # -- time and bytes in --------------------------------------------------------------

    def receive(self, sender: str, body: object) -> None:
        """Feed one gossip message in. Raises ValueError for a malformed one (nothing changes)."""
        self._apply(self.node.step(sender, body, time.time()))

    def tick(self) -> None:
        now = time.time()
        if now < self._next_tick:
            return
        self._next_tick = now + self.config.interval
        self._apply(self.node.tick(now))
        if self.seeds and now >= self._next_join and not self._live_peers():
            self._next_join = now + JOIN_RETRY_S
            syn = {"t": "syn", "from": self.name, "digest": self.node._digest()}
            for address in self.seeds:
                self._send_to(address, syn)

    # -- state API used by the node's control ops ----------------------------------------------

    def write(self, key: str, value: object, *, system: bool = False) -> None:
        self._apply(self.node.set(key, value, time.time(), system=system))

    def delete(self, key: str, *, system: bool = False) -> None:
        self._apply(self.node.delete(key, time.time(), system=system))

    def leave(self) -> None:
        self._apply(self.node.leave(time.time()))

    # -- bytes out ---------------------------------------------------------------------------------

    def _apply(self, outputs: list) -> None:
        for out in outputs:
            if type(out) is Send:
                address = self._address_of(out.to)
                if address:
                    self._send_to(address, out.message)
            elif type(out) is Event:
                self.on_event(out)

    def _address_of(self, name: str) -> str | None:
        best = None
        for o in self.node.origins.values():
            if o.name == name and o.address and (best is None or o.incarnation > best.incarnation):
                best = o
        return best.address if best else None

    def _live_peers(self) -> list[str]:
        return [o.name for o in self.node.origins.values() if o.name != self.name and o.state in (ALIVE, SUSPECT)]

    def _send_to(self, address: str, body: object, recipient: str = GOSSIP_RECIPIENT) -> None:
        sock = self._out.get(address)
        if sock is None:
            sock = context().socket(zmq.DEALER)
            tune_socket(sock, hwm=100, max_bytes=self.max_bytes)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.IMMEDIATE, 1)  # queue nothing for a peer that is not connected
            sock.connect(address)
            self._out[address] = sock
        try:
            frame = wire.encode(_GOSSIP, next(self._ids), 0, self.name, recipient, body)
        except WireError as exc:  # never let one unsendable message stop the node
            log.warning("not sending to %s: %s", address, exc)
            return
        try:
            sock.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1

    def close(self) -> None:
        for sock in self._out.values():
            sock.close(0)
        self._out.clear()
