"""Runs the gossip state machine inside a node: the bytes and the time, nothing else.

The node hands every GOSSIP envelope it receives on its ROUTER to
:meth:`Gossiper.receive`, and calls :meth:`Gossiper.tick` from its loop. Gossip goes
out over one DEALER per peer address, with small queues and no blocking: gossip
tolerates loss by design, so a slow or dead peer costs a dropped frame, never a
stalled node.

Joining: the node starts unannounced (see :mod:`mesh.core.gossip`). Every round it
asks each ``--join`` address and each member it has heard of for the live
incarnations they know, with its own origin left out; the first member to answer
settles it. If a live member holds the node's name elsewhere, :attr:`Gossiper.refused`
says who and the node must not start; nobody has heard of it. If no member answers
within ``JOIN_WAIT_S`` the node announces itself anyway (its seeds are down); a node
without seeds announces itself at once (the first of a mesh: nobody could answer).

Seeds: the node keeps sending a small syn (its own digest entry, marked with the seed's
address) to every ``--join`` address at which no live member is known, every
``JOIN_RETRY_S``, for as long as it runs: a seed that starts late, or restarts, is found;
the first syn to a new address is dropped while ZeroMQ connects (``ZMQ_IMMEDIATE``), so
retrying is what makes it arrive. The member that answers is the seed's (whatever address
it advertises: ``localhost`` and ``127.0.0.1`` are one seed), and the seed is asked again
only once that member is no longer live.

Who a peer is: the name its envelope claims, unless :attr:`Gossiper.identify` says otherwise.
Without keys a peer is who it says it is; with keys the node maps the peer to the name its key
was issued for (:func:`by_key`), and a message whose claim is not that name is an impostor's:
refused whole, its entries counted in :attr:`Gossiper.bad_gossip`. What a member may write once
its name is known is decided by the core (the owner rules of :mod:`mesh.core.ownership`):
entries it may not write are refused, counted in :attr:`Gossiper.bad_gossip` (``mesh status``)
and logged once per cause.

Addresses come from peers: one that cannot be connected to costs a dropped message
(counted in :attr:`Gossiper.dropped`), never the node.

The outlets come from the node's transport, and the time from its clock (``transport=``,
``clock=``; default ZeroMQ and the system's clock), so a mesh of gossipers runs in one
process on the in-memory twin, at a test's pace.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from .. import wire
from ..core.effects import Effect, Emit, Send
from ..core.gossip import ALIVE, SUSPECT, GossipConfig, GossipNode
from ..errors import MeshError, WireError
from .clock import Clock
from .transport import AddressError, Outlet, Transport
from .zeromq import ZMQ

log = logging.getLogger("mesh.gossip")

_GOSSIP = int(wire.Kind.EVENT)  # gossip travels as one-way EVENT envelopes addressed to "$gossip"
GOSSIP_RECIPIENT = "$gossip"
#: DEALER sockets to peer addresses kept open at most (the least recently used is closed).
MAX_PEER_SOCKETS = 256
#: Seconds between syns to a seed at which no live member is known.
JOIN_RETRY_S = 0.5
#: Seconds a joining node waits for a member to answer before it announces itself. Longer
#: than JOIN_RETRY_S: a node that others list as a seed hears from them first.
JOIN_WAIT_S = 1.2


class NameTaken(MeshError):
    """A live member of the mesh holds this node's name."""


def by_key(claimed: str, peer: object) -> str:
    """With keys: a peer is the name its key was issued for (the gate's User-Id), whatever it claims."""
    return peer if isinstance(peer, str) and peer else claimed


class Gossiper:
    def __init__(self, name: str, advertise: str, seeds: list[str], config: GossipConfig | None = None,
                 max_bytes: int = wire.MAX_FRAME_BYTES, on_event: Callable[[Emit], object] | None = None, *,
                 transport: Transport | None = None, clock: Clock | None = None):
        self.name = name
        self.transport: Transport = transport or ZMQ
        self.clock: Clock = clock or self.transport.clock
        self.advertise = advertise
        self.seeds = [s for s in seeds if s != advertise]
        self.max_bytes = max_bytes
        self.config = config or GossipConfig()
        # A fresh incarnation on every start, without a disk: wall-clock milliseconds.
        self.incarnation = int(self.clock.time() * 1000)
        self.node = GossipNode(name, self.incarnation, self.config, random.Random(), self.clock.time(), address=advertise,
                               joining=True)
        self.on_event = on_event or (lambda ev: None)
        #: Also called with every event, before ``on_event`` (the :class:`Directory`'s indexes).
        self.listeners: list[Callable[[Emit], object]] = []
        self._out: dict[str, Outlet] = {}
        self._ids = iter(range(1, 1 << 62))
        self._next_tick = 0.0
        self._next_join = 0.0
        # With no seed nobody could answer: the first node of a mesh announces itself at once (its
        # leader gathers the nodes started with it before it places anything: see the follower).
        self._join_until = self.clock.monotonic() + (JOIN_WAIT_S if self.seeds else 0.0)
        self._seed_members: dict[str, str] = {}  # seed address -> the name of the member that answered there
        self.dropped = 0  #: messages not sent: a full queue or an address that cannot be connected to
        #: The peer's name as gossip should know it: ``identify(claimed name, peer)`` -> name. The default
        #: believes the claim (no keys); with keys, the name the peer's verified key was issued for.
        self.identify: Callable[[str, object], str] = lambda claimed, peer: claimed
        self.impostor_entries = 0  #: entries in messages whose claimed sender is not who sent them (with keys)
        self._impostors_logged: set[tuple[str, str]] = set()

    @property
    def announced(self) -> bool:
        """Whether the node has joined (its own origin travels with its gossip)."""
        return self.node.announced

    @property
    def refused(self) -> NameTaken | None:
        """Why this node must not start, if a live member holds its name."""
        taken = self.node.name_taken
        if taken is None:
            return None
        oid, address = taken
        return NameTaken(f"node name {self.name!r} is taken by a live member of the mesh at {address or '?'}"
                         f" ({oid}); choose another with --name NAME (or [node] name in the spec)")

    # -- time and bytes in --------------------------------------------------------------

    @property
    def bad_gossip(self) -> int:
        """Entries peers sent that their origin may not write (refused: see :mod:`mesh.core.ownership`),
        and, with keys, entries in messages whose sender claimed a name not its key's."""
        return self.node.refused_entries + self.impostor_entries

    def receive(self, sender: str, body: object, peer: object = None) -> None:
        """Feed one gossip message in (``peer``: what the transport knows of who sent it, for
        :attr:`identify`). Raises ValueError for a malformed one (nothing changes)."""
        verified = self.identify(sender, peer)
        if verified != sender:
            self._refuse_impostor(sender, verified, body)
            return
        outputs = self.node.step(sender, body, self.clock.time())
        if not isinstance(body, dict):  # step() has refused it already; this tells the type checker
            return
        if body.get("t") == "ack" and body.get("seed") in self.seeds:
            self._seed_members[body["seed"]] = sender  # the member behind that seed: no need to ask it again
        if body.get("join") and body.get("address"):
            # A joiner is answered at the address it gave: its name may be a live member's.
            for out in outputs:
                if type(out) is Send and out.to == sender:
                    self._send_to(body["address"], out.message)
            outputs = [out for out in outputs if not (type(out) is Send and out.to == sender)]
        self._apply(outputs)

    def tick(self) -> None:
        now = self.clock.time()
        if now < self._next_tick:
            return
        self._next_tick = now + self.config.interval
        self._apply(self.node.tick(now))
        if not self.node.announced:
            if self.node.name_taken is not None:
                return
            ask = self.node.join_message()
            for address in self.seeds:
                self._send_to(address, ask)
            if self.clock.monotonic() >= self._join_until:
                self._apply(self.node.announce(now))
            return
        if self.seeds and now >= self._next_join:
            self._next_join = now + JOIN_RETRY_S
            for address in self.unanswered_seeds():
                self._send_to(address, self.node.seed_message(address))

    def unanswered_seeds(self) -> list[str]:
        """The ``--join`` addresses at which no live member is known (asked again every JOIN_RETRY_S)."""
        node = self.node
        known = {o.address for o in node.origins.values() if o.state in (ALIVE, SUSPECT)}
        return [a for a in self.seeds
                if a not in known and node.state_of(self._seed_members.get(a, "")) not in (ALIVE, SUSPECT)]

    # -- state API used by the node's control ops ----------------------------------------------

    def write(self, key: str, value: object, *, system: bool = False) -> None:
        self._apply(self.node.set(key, value, self.clock.time(), system=system))

    def delete(self, key: str, *, system: bool = False) -> None:
        self._apply(self.node.delete(key, self.clock.time(), system=system))

    def leave(self) -> None:
        self._apply(self.node.leave(self.clock.time()))

    def send_to_member(self, name: str, body: object, recipient: str) -> None:
        """Send ``body`` to the current address of member ``name`` over the gossip outlets (election
        and intention messages ride them too); nothing is sent to a member with no known address."""
        address = self._address_of(name)
        if address:
            self._send_to(address, body, recipient)

    # -- bytes out ---------------------------------------------------------------------------------

    def _apply(self, outputs: list[Effect]) -> None:
        for out in outputs:
            if type(out) is Send:
                address = self._address_of(out.to)
                if address:
                    self._send_to(address, out.message)
            elif type(out) is Emit:
                if out.name == "refused":  # the core reports each cause once
                    d = out.data
                    log.warning("refused gossip from member %.130s: %s (%.130s); later ones are counted in"
                                " bad_gossip", d.get("origin"), d.get("why"), d.get("key"))
                for listener in self.listeners:
                    listener(out)
                self.on_event(out)

    def _refuse_impostor(self, claimed: str, verified: str, body: object) -> None:
        """A message from ``verified``'s key claiming to come from ``claimed``: none of it is believed."""
        entries = 0
        delta = body.get("delta") if isinstance(body, dict) else None
        for part in delta if isinstance(delta, list) else ():
            if isinstance(part, list) and len(part) == 4 and isinstance(part[3], list):
                entries += len(part[3])
        self.impostor_entries += max(1, entries)
        cause = (str(claimed)[:130], verified)
        if cause not in self._impostors_logged and len(self._impostors_logged) < 64:
            self._impostors_logged.add(cause)
            log.warning("refused gossip from the key of %.130s claiming to be %.130s; later ones are counted in"
                        " bad_gossip", verified, claimed)

    def _address_of(self, name: str) -> str | None:
        o = self.node.current_of(name)
        return o.address if o is not None and o.address else None

    def _live_peers(self) -> list[str]:
        return [o.name for o in self.node.origins.values() if o.name != self.name and o.state in (ALIVE, SUSPECT)]

    def _send_to(self, address: str, body: object, recipient: str = GOSSIP_RECIPIENT) -> None:
        sock = self._out.pop(address, None)
        if sock is not None:
            self._out[address] = sock  # most recently used last
        else:
            if len(self._out) >= MAX_PEER_SOCKETS:  # addresses come from peers: keep the recent ones
                oldest = next(iter(self._out))
                self._out.pop(oldest).close(0)
            try:  # immediate: queue nothing for a peer that is not connected
                sock = self.transport.outlet(address, hwm=100, max_bytes=self.max_bytes, immediate=True)
            except AddressError as exc:  # an address from a peer the transport refuses: never the node's end
                self.dropped += 1
                log.warning("not sending to %.300r: %s", address, exc)
                return
            self._out[address] = sock
        try:
            frame = wire.encode(_GOSSIP, next(self._ids), 0, self.name, recipient, body)
        except WireError as exc:  # never let one unsendable message stop the node
            log.warning("not sending to %s: %s", address, exc)
            return
        if not sock.send_nowait(frame):
            self.dropped += 1

    def close(self) -> None:
        for sock in self._out.values():
            sock.close(0)
        self._out.clear()


#: The prefixes a :class:`Directory` keeps an index of: what the node's housekeeping reads every pass.
INDEXED = ("$node/", "$assign/", "$agents/", "$acted/")


class Directory:
    """The node's view of the shared state and the membership, read from its gossiper: the one
    place where the runtime reads the gossip state machine (``Gossiper.node``). Names of members
    often come from gossiped values, so every lookup takes any object and finds nothing for it.

    The keys under each of :data:`INDEXED` are kept in an index, updated from the gossip's
    ``changed`` events (a local write or delete, a merged delta, an entry collected or dropped
    with a dead member), so reading one prefix costs what it holds, not the whole view; and
    :meth:`version` counts the changes under each, so a reader can tell that nothing changed
    without reading anything."""

    def __init__(self, gossiper: Gossiper) -> None:
        self._gossiper = gossiper
        self._index: dict[str, dict[str, object]] = {p: gossiper.node.items(p) for p in INDEXED}
        self._versions = dict.fromkeys(INDEXED, 0)
        gossiper.listeners.append(self._changed)

    def _changed(self, event: Emit) -> None:
        if event.name != "changed":
            return
        key = event.data["key"]
        for prefix, index in self._index.items():
            if key.startswith(prefix):
                if event.data["deleted"]:
                    index.pop(key, None)
                else:
                    index[key] = event.data["value"]
                self._versions[prefix] += 1
                return

    def version(self, prefix: str) -> int:
        """How many changes the keys under ``prefix`` (one of :data:`INDEXED`) have seen: equal
        numbers, nothing under it changed in between."""
        return self._versions[prefix]

    def get(self, key: str, default: object = None) -> object:
        """The value of ``key``, or ``default`` if it is not set (or deleted)."""
        return self._gossiper.node.get(key, default)

    def lookup(self, key: str) -> tuple[bool, object]:
        """``(found, value)``: a key set to None is found, a deleted one is not."""
        entry = self._gossiper.node.view.get(key)
        if entry is None or entry.tombstone:
            return False, None
        return True, entry.value

    def items(self, prefix: str = "") -> dict[str, object]:
        """Every key set under ``prefix``, with its value (a copy: the caller may keep it)."""
        index = self._index.get(prefix)
        return dict(index) if index is not None else self._gossiper.node.items(prefix)

    def state_of(self, member: object) -> str | None:
        """``alive``, ``suspect``, ``dead`` or ``left`` for the current incarnation of ``member``."""
        return self._gossiper.node.state_of(member) if isinstance(member, str) else None

    def is_live(self, member: object) -> bool:
        """Whether ``member`` is alive or suspect (not known to be gone)."""
        return self.state_of(member) in (ALIVE, SUSPECT)

    def current_members(self) -> list[dict]:
        """Each member's current incarnation: name, address, state, incarnation, id, last_heard (wall clock)."""
        return self._gossiper.node.current_members()

    def own_heartbeat(self) -> int:
        """The heartbeat this node's gossip sent last (it rises by one each round)."""
        return self._gossiper.node.me.heartbeat

    def heartbeats_seen(self) -> dict[str, int]:
        """Each peer's newest heartbeat of this node that the peer's own digest showed (the lease's evidence)."""
        return dict(self._gossiper.node.seen_by)

    def sync_first(self, member: str | None) -> None:
        """Run the next full exchange of digests with ``member`` if it is live (None: a random peer)."""
        self._gossiper.node.sync_first = member

    def write(self, key: str, value: object, *, system: bool = False) -> None:
        self._gossiper.write(key, value, system=system)

    def delete(self, key: str, *, system: bool = False) -> None:
        self._gossiper.delete(key, system=system)

    def send(self, member: str, body: object, recipient: str) -> None:
        """A message for ``recipient`` on node ``member`` (dropped if its address is unknown)."""
        self._gossiper.send_to_member(member, body, recipient)
