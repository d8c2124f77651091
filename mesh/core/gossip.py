"""Gossip: a replicated multi-writer key/value map, membership and failure detection.

How it works (Scuttlebutt anti-entropy, as in Cassandra and chitchat):

* Every node incarnation is an *origin* ``"name@incarnation"``. A write made at a
  node becomes an entry in that node's origin with the next version number of the
  origin. An entry carries the key, the value (or a tombstone), a hybrid logical
  clock timestamp and the writer's name.
* The value of a key is the entry with the greatest ``(hlc, writer)`` among all
  origins: last writer wins, the same everywhere.
* A *digest* maps each origin to ``(heartbeat, max_version)``. Comparing digests
  tells exactly which entries a peer lacks: those of each origin with a greater
  version. Deltas carry them in version order from a base version and are cut at
  ``max_delta_entries``; the rest follow in later rounds. A receiver raises its
  version of an origin only when a delta starts at or below it, so a delta built
  on a wrong guess of what it had never leaves a hole. A delta is also cut before it
  gets denser than the receiver's wire takes (``bytes_per_container``): each entry's
  arrays and maps are counted once, when it is written or received; a value that no
  message could carry is refused at ``set``, and such an entry from a peer is not kept.
* Origins (members) are learned from digests only, which carry each one's address:
  entries of an origin the receiver does not know yet are skipped (the next exchange
  of digests introduces it, and anti-entropy sends them again).
* Each round a node pushes what it believes each of ``fanout`` peers lacks (it
  remembers their last digest), and every ``sync_every`` rounds runs a full
  exchange with one peer (syn -> ack -> ack2) that repairs anything lost.
* The heartbeat of an origin rises every round; a phi-accrual detector per origin
  turns silence into ``suspect``, then ``dead`` after ``dead_after`` seconds.
  A node that leaves says so (``left``). When ``name@k`` appears at the address of
  an older incarnation of ``name``, that incarnation is dead at once: a restarted node
  is never confused with its former self.
* A member is a name *and* an incarnation. A node starts *joining*: it keeps its own
  origin out of everything it sends and asks members (``syn`` with ``join``); a member
  answers with the incarnations it holds live (``ack`` with ``live``). If another
  incarnation of its name is live at another address the joiner refuses (event
  ``name_taken``) and nobody ever heard of it; otherwise it announces itself
  (``announced``). Seen later, a rival incarnation whose heartbeat keeps rising (in
  one peer's digests, for longer than ``dead_after``: peers' stale views of a dead
  predecessor differ, and never stop a live node) makes the newer of the two yield
  (``name_taken`` again). Only a restart *known* at the same address ends an older
  incarnation at once. The state of a name is its live
  incarnation's, if any: an impostor that leaves or dies never makes the live
  member ``left`` or ``dead``.

Guarantees and their limits:

* Every live node that can reach the others ends with the same map, whatever
  messages are lost, duplicated or reordered.
* Deletes are tombstones, kept for ``tombstone_grace`` seconds; when a tombstone is
  collected, every older entry of its key goes with it, so the key cannot come back
  from another origin. As with Cassandra's gc_grace_seconds, a node cut off for
  longer than the grace may still hold a value deleted meanwhile and bring it back:
  keep the grace longer than any partition you expect (the default is an hour).
* A dead incarnation's origin is collected after ``dead_grace`` seconds, once each
  of its user entries that is still current is held by a live origin too (the live
  node with the lowest name adopts them, keeping their hlc and writer; after twice
  the grace any node does). Its name goes to a graveyard so that a stale peer cannot
  gossip it back.
* Keys that start with ``$`` are the runtime's (membership, agent directory, load):
  users cannot write them, and they are never adopted from a dead incarnation. A member
  writes only its own: an entry from a peer that its origin may not write (the owner
  rules of :mod:`mesh.core.ownership`) is refused, counted (``refused_entries``) and
  reported once per cause (event ``refused``).
* What a peer sends is checked before it is kept: member names follow the node-name
  rule, addresses are ``tcp://HOST:PORT``, and every table keyed by something from the
  network is bounded (origins by ``MAX_ORIGINS``, peers' digests to ``MAX_PEER_DIGESTS``
  members, the graveyard by ``MAX_GRAVEYARD``).

Pure: no sockets, no clock, no ``random``; ``now`` is wall-clock seconds and the RNG
is injected.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeGuard

from .effects import Effect, Event, Send
from .failure import DetectorConfig, PhiAccrualDetector
from .hlc import HybridClock
from .hlc import make as make_stamp
from .ownership import RESERVED_PREFIX, refusal
from .packing import density
from .rng import Rng

#: A digest as sent: origin id -> [heartbeat, max version, address, left].
Digest: TypeAlias = dict[str, list[Any]]
#: A delta as sent: [[origin id, base version, up to version, [entry wire form, ...]], ...].
Delta: TypeAlias = list[list[Any]]

#: Entries stamped further than this in the future (seconds) are refused.
MAX_CLOCK_SKEW_S = 60.0
#: Members remembered at most; more are ignored (a flood of made-up names).
MAX_ORIGINS = 4096
#: Buried incarnations remembered at most (the oldest are forgotten first).
MAX_GRAVEYARD = 4 * MAX_ORIGINS
#: Peers whose digests are remembered (for pushes) at most.
MAX_PEER_DIGESTS = 64
#: Distinct causes of refused entries remembered (each is reported once) at most.
MAX_REFUSAL_CAUSES = 64
#: Rival incarnations of this node's own name watched at most.
MAX_RIVALS = 16
#: The node-name rule (mesh.spec): 1-128 of A-Z a-z 0-9 _ . -, not starting with "."
NAME_MAX = 128
_NAME_RE = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,127}")
#: The longest address a peer may give, in characters.
ADDRESS_MAX = 300
#: A member's address: tcp://HOST:PORT, HOST a DNS name, an IPv4 address or [an IPv6 address]; or
#: mem://NAME:PORT, an address of the in-memory transport (a whole mesh in one process).
_ADDRESS_RE = re.compile(r"(?:tcp://(?:[A-Za-z0-9_](?:[A-Za-z0-9_.\-]*)|\[[0-9A-Fa-f:.]+(?:%[A-Za-z0-9_.\-]+)?\])"
                         r"|mem://[A-Za-z0-9_][A-Za-z0-9_.\-]*):([0-9]{1,5})")
_KINDS = ("push", "syn", "ack", "ack2")
#: Arrays and maps of a message besides its entries (envelope, body, digest, live, delta list), counted
#: at the start of every message: what a message costs against the density rule before its entries.
_MESSAGE_CONTAINERS = 8
#: Arrays and maps of one origin's item in a delta ([origin, base, upto, [entries]]).
_ITEM_CONTAINERS = 2
#: What a message holds besides its one entry, at least: an entry denser than the rule allows
#: after these can never be sent.
_LONE_ENTRY_CONTAINERS = _MESSAGE_CONTAINERS + _ITEM_CONTAINERS
#: Bytes between two looks at how dense a large entry is so far (see :meth:`Entry.measure`).
_DENSITY_STEP = 512


def valid_name(name: object) -> TypeGuard[str]:
    """Whether ``name`` may name a member (the node-name rule of mesh.spec)."""
    return type(name) is str and len(name) <= NAME_MAX and _NAME_RE.fullmatch(name) is not None


def valid_address(address: object) -> bool:
    """Whether ``address`` is one a transport may connect to: ``tcp://HOST:PORT`` or ``mem://NAME:PORT``,
    port 1-65535."""
    if type(address) is not str or len(address) > ADDRESS_MAX:
        return False
    m = _ADDRESS_RE.fullmatch(address)
    return m is not None and 1 <= int(m.group(1)) <= 65535


def _valid_oid(oid: object) -> bool:
    if type(oid) is not str or len(oid) > NAME_MAX + 21:
        return False
    name, _, inc = oid.rpartition("@")
    return valid_name(name) and 0 < len(inc) <= 20 and inc.isdigit()


def check_message(message: object) -> dict[str, Any]:
    """Return ``message``; raise ValueError unless it has the shape of a gossip message (the network is untrusted)."""
    if not isinstance(message, dict) or message.get("t") not in _KINDS:
        raise ValueError("not a gossip message")
    digest = message.get("digest")
    if digest is not None:
        if not isinstance(digest, dict):
            raise ValueError("digest must be a map")
        if len(digest) > MAX_ORIGINS:
            raise ValueError(f"a digest lists at most {MAX_ORIGINS} origins")
        for oid, info in digest.items():
            if not _valid_oid(oid):
                raise ValueError("digest keys must be origin ids NAME@INCARNATION with a valid node name")
            if not (isinstance(info, list) and len(info) == 4 and type(info[0]) is int and type(info[1]) is int
                    and isinstance(info[2], str) and isinstance(info[3], bool)):
                raise ValueError("digest entries must be [heartbeat, version, address, left]")
            if info[2] and not valid_address(info[2]):
                raise ValueError("addresses must be tcp://HOST:PORT (a port of 1-65535)")
    live = message.get("live")
    if live is not None:
        if not isinstance(live, dict) or len(live) > MAX_ORIGINS:
            raise ValueError(f"live must be a map of at most {MAX_ORIGINS} origins")
        for oid, address in live.items():
            if not _valid_oid(oid) or not (address == "" or valid_address(address)):
                raise ValueError("live must map origin ids to addresses tcp://HOST:PORT")
    if message.get("join") not in (None, True):
        raise ValueError("join must be true")
    address = message.get("address")
    if address is not None and not valid_address(address):
        raise ValueError("address must be tcp://HOST:PORT (a port of 1-65535)")
    seed = message.get("seed")
    if seed is not None and not (type(seed) is str and len(seed) <= ADDRESS_MAX):
        raise ValueError(f"seed must be a string of at most {ADDRESS_MAX} characters")
    delta = message.get("delta")
    if delta is not None:
        if not isinstance(delta, list):
            raise ValueError("delta must be a list")
        for item in delta:
            if not (isinstance(item, list) and len(item) == 4 and _valid_oid(item[0])
                    and type(item[1]) is int and type(item[2]) is int and isinstance(item[3], list)):
                raise ValueError("delta items must be [origin, base, upto, entries] with a valid origin id")
            for raw in item[3]:
                if not (isinstance(raw, list) and len(raw) == 6 and isinstance(raw[0], str) and raw[0]
                        and type(raw[2]) is int and valid_name(raw[3]) and type(raw[4]) is int
                        and isinstance(raw[5], bool)):
                    raise ValueError("entries must be [key, value, hlc, writer, version, tombstone] with a valid writer")
    return message
ALIVE, SUSPECT, DEAD, LEFT = "alive", "suspect", "dead", "left"


@dataclass(frozen=True)
class GossipConfig:
    interval: float = 0.1  #: seconds between rounds
    fanout: int = 4  #: peers pushed to per round
    sync_every: int = 1  #: a full digest exchange with one peer every N rounds
    max_delta_entries: int = 500  #: entries per message at most
    max_delta_bytes: int = 1 << 20  #: bytes of entries per message at most (keep it under the frame limit)
    max_value_bytes: int = 256 * 1024  #: the largest entry a write may make, in bytes (packed)
    dead_after: float = 3.0  #: seconds of suspicion before a member is dead
    tombstone_grace: float = 3600.0  #: seconds a tombstone is kept: longer than any partition you expect
    dead_grace: float = 30.0  #: seconds a dead incarnation's origin is kept
    #: The receiver's density rule (mesh.wire.BYTES_PER_CONTAINER): a message may hold at most one
    #: array or map per this many bytes (of any leading part of it), plus dense_slack_bytes' worth.
    bytes_per_container: int = 3
    #: Bytes of slack in that rule (mesh.wire.SMALL_FRAME): a message this size may be as dense as it likes.
    dense_slack_bytes: int = 64 * 1024
    detector: DetectorConfig = field(
        default_factory=lambda: DetectorConfig(first_interval=0.5, min_std=0.2, acceptable_pause=0.5)
    )

    def __post_init__(self) -> None:
        if self.interval <= 0 or self.fanout < 1 or self.sync_every < 1 or self.max_delta_entries < 1:
            raise ValueError("interval, fanout, sync_every and max_delta_entries must be positive")
        if not 0 < self.max_value_bytes <= self.max_delta_bytes:
            raise ValueError("max_value_bytes must be > 0 and at most max_delta_bytes")
        if self.tombstone_grace <= 0 or self.dead_grace <= 0 or self.dead_after <= 0:
            raise ValueError("tombstone_grace, dead_grace and dead_after must be > 0 seconds")
        if self.bytes_per_container < 1 or self.dense_slack_bytes < 2 * self.bytes_per_container * _LONE_ENTRY_CONTAINERS:
            raise ValueError("bytes_per_container must be >= 1 and dense_slack_bytes large enough for a message's own arrays")


@dataclass
class Entry:
    key: str
    value: object
    hlc: int
    writer: str
    version: int
    tombstone: bool = False
    collected_at: float = 0.0  # when a tombstone was first seen here (for its grace)
    size: int = 0  #: packed size in bytes (what it costs in a delta)
    containers: int = 0  #: arrays and maps in it (the entry's own included)
    excess: int = 0  #: what it adds at worst to a message's density count (see :meth:`Entry.measure`)

    def wire(self) -> list[object]:
        return [self.key, self.value, self.hlc, self.writer, self.version, self.tombstone]

    def measure(self, per: int) -> Entry:
        """Fill in size, containers and excess. Raises ValueError/TypeError/OverflowError for a non-msgpack value."""
        # The most that ``per * (arrays and maps completed) - bytes`` reaches over the entry's leading
        # parts: what it adds at worst, anywhere in a message, to the receiver's density count (see
        # ``mesh.wire``: every prefix of a frame over the slack may hold at most one array or map per
        # ``per`` bytes). Over-estimates by at most _DENSITY_STEP * per.
        self.size, self.containers, self.excess = density(self.wire(), per, _DENSITY_STEP)
        return self

    @property
    def stamp(self) -> tuple[int, str]:
        return (self.hlc, self.writer)


@dataclass
class Origin:
    id: str  # "name@incarnation"
    name: str
    incarnation: int
    heartbeat: int = 0
    max_version: int = 0
    entries: dict[str, Entry] = field(default_factory=dict)  # key -> latest entry of this origin
    state: str = ALIVE
    detector: PhiAccrualDetector | None = None
    suspect_since: float | None = None
    dead_since: float | None = None
    address: str = ""
    last_heard: float = 0.0


def _digest_excess(digest: Digest, per: int) -> int:
    """What a digest adds at most to a message's density count (see :meth:`Entry.measure`): one array per
    origin, in at least its origin id, its address and 6 bytes."""
    if per <= 9:
        return 0  # an origin id is at least 3 characters: every digest item is sparser than the rule
    return max(0, sum(per - len(oid) - len(info[2]) - 6 for oid, info in digest.items()))


def _rank(o: Origin) -> tuple[int, int, int]:
    """Order of preference among incarnations of one name (see :meth:`GossipNode.current`)."""
    live = {ALIVE: 0, SUSPECT: 1}.get(o.state)
    return (0, live, o.incarnation) if live is not None else (1, 0, -o.incarnation)


def _may_be_same_address(a: str, b: str) -> bool:
    """Whether two incarnations may be one node restarted (an unknown address might be anything)."""
    return not a or not b or a == b


def _same_address(a: str, b: str) -> bool:
    """Whether two incarnations are known to be one node restarted: what ends the older one at once."""
    return bool(a) and a == b


def origin_id(name: str, incarnation: int) -> str:
    return f"{name}@{incarnation}"


def parse_origin(oid: str) -> tuple[str, int]:
    name, _, inc = oid.rpartition("@")
    if not name or not inc.isdigit():
        raise ValueError(f"bad origin id {oid!r:.60}")
    return name, int(inc)


class GossipNode:
    """One node's replica and membership view. Feed it messages and ticks; send what it returns."""

    def __init__(self, name: str, incarnation: int, config: GossipConfig, rng: Rng, now: float,
                 address: str = "", seeds: tuple[str, ...] = (), joining: bool = False):
        self.name = name
        self.config = config
        self.rng = rng
        self.clock = HybridClock()
        self.address = address
        self.seeds = [s for s in seeds if s != name]
        self.origins: dict[str, Origin] = {}
        self._named: dict[str, dict[str, Origin]] = {}  # member name -> its incarnations (origin id -> origin)
        self.view: dict[str, Entry] = {}  # key -> winning entry (tombstones included)
        self._tombstones: set[str] = set()  # keys whose winner is a tombstone (collected by _collect)
        self.graveyard: dict[str, tuple[float, int]] = {}  # origin id -> (when buried, its last heartbeat)
        self.peer_digest: dict[str, dict[str, int]] = {}  # peer name -> its last known digest (oid -> max_version)
        #: False while joining: this node's own origin stays out of everything it sends.
        self.announced = not joining
        #: Set when a live member holds this node's name: (its origin id, its address).
        self.name_taken: tuple[str, str] | None = None
        #: Other incarnations of this name -> reporter -> [the last heartbeat it gave, when it first rose].
        self._rivals: dict[str, dict[str, list[Any]]] = {}
        self.rounds = 0
        #: Peer name -> the newest heartbeat of this node's own origin that the peer's own digest (a syn or
        #: an ack) listed: the peer has seen it. The round trip the lease counts (:mod:`mesh.core.fencing`).
        self.seen_by: dict[str, int] = {}
        #: A peer to run the next full exchange with, if it is live (set by the runtime, used once).
        self.sync_first: str | None = None
        #: Entries a peer sent that their origin may not write (mesh.core.ownership), and the causes seen.
        self.refused_entries = 0
        self.refusal_causes: set[str] = set()
        self._events: list[Effect] = []  # only Events, returned with the Sends of the call that made them
        self._become(incarnation, now)

    # -- identity -----------------------------------------------------------------

    def _become(self, incarnation: int, now: float) -> None:
        self.incarnation = incarnation
        self.id = origin_id(self.name, incarnation)
        me = Origin(self.id, self.name, incarnation, address=self.address, last_heard=now)
        self._add(me)
        self.me = me
        self._supersede_older(self.name, incarnation, now, self.address)

    def _add(self, o: Origin) -> None:
        self.origins[o.id] = o
        self._named.setdefault(o.name, {})[o.id] = o

    def _remove(self, o: Origin) -> None:
        del self.origins[o.id]
        same = self._named.get(o.name)
        if same is not None:
            same.pop(o.id, None)
            if not same:
                del self._named[o.name]

    # -- the user's API ---------------------------------------------------------------

    def get(self, key: str, default: object = None) -> object:
        e = self.view.get(key)
        return default if e is None or e.tombstone else e.value

    def items(self, prefix: str = "") -> dict[str, object]:
        return {k: e.value for k, e in self.view.items() if not e.tombstone and k.startswith(prefix)}

    def set(self, key: str, value: object, now: float, *, system: bool = False) -> list[Effect]:
        self._check_key(key, system)
        return self._write(key, value, False, now)

    def delete(self, key: str, now: float, *, system: bool = False) -> list[Effect]:
        self._check_key(key, system)
        if key not in self.view or self.view[key].tombstone:
            return []
        return self._write(key, None, True, now)

    def _check_key(self, key: str, system: bool) -> None:
        if not isinstance(key, str) or not key:
            raise ValueError("a key is a non-empty string")
        if key.startswith(RESERVED_PREFIX) and not system:
            raise ValueError(f"keys starting with {RESERVED_PREFIX!r} are reserved for the runtime: {key!r}")

    def _write(self, key: str, value: object, tombstone: bool, now: float) -> list[Effect]:
        me = self.me
        cfg = self.config
        entry = Entry(key, value, self.clock.now(int(now * 1000)), self.name, me.max_version + 1, tombstone,
                      collected_at=now)
        try:
            entry.measure(cfg.bytes_per_container)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"the value of {key!r} is not a msgpack value: {exc}") from None
        if entry.size > cfg.max_value_bytes:
            raise ValueError(f"the value of {key!r} packs to {entry.size} bytes; the limit is {cfg.max_value_bytes}")
        if entry.excess > cfg.dense_slack_bytes // 2:
            # Peers refuse a message denser than this (mesh.wire): the value could never be sent.
            raise ValueError(
                f"the value of {key!r} is too dense to share: {entry.containers} arrays and maps in {entry.size} bytes;"
                f" a value may hold at most one array or map per {cfg.bytes_per_container} bytes (of any leading part"
                f" of it) plus {cfg.dense_slack_bytes // 2 // cfg.bytes_per_container}")
        me.max_version += 1
        me.entries[key] = entry
        self._consider(entry)
        return self._drain()

    # -- membership ---------------------------------------------------------------------------

    def members(self) -> list[dict[str, Any]]:
        now_states = []
        for o in self.origins.values():
            now_states.append({"name": o.name, "incarnation": o.incarnation, "state": o.state,
                               "address": o.address, "id": o.id, "heartbeat": o.heartbeat,
                               "last_heard": o.last_heard})
        return sorted(now_states, key=lambda m: (m["name"], m["incarnation"]))

    def current(self) -> dict[str, Origin]:
        """Each member name's current incarnation: a live one if there is any (alive before
        suspect, then the oldest: a newcomer never displaces a live holder of its name), else
        the newest. What the runtime means by "the member NAME"."""
        best: dict[str, Origin] = {}
        for o in self.origins.values():
            b = best.get(o.name)
            if b is None or _rank(o) < _rank(b):
                best[o.name] = o
        return best

    def current_of(self, name: str) -> Origin | None:
        """The current incarnation of member ``name`` (see :meth:`current`), or None (for anything
        that is not a member's name too: callers pass what they read from gossiped values)."""
        same = self._named.get(name) if type(name) is str else None
        best = None
        for o in (same or {}).values():
            if best is None or _rank(o) < _rank(best):
                best = o
        return best

    def current_members(self) -> list[dict[str, Any]]:
        """:meth:`members`, one per name: its current incarnation (see :meth:`current`)."""
        ids = {o.id for o in self.current().values()}
        return [m for m in self.members() if m["id"] in ids]

    def state_of(self, name: str) -> str | None:
        best = self.current_of(name)
        return best.state if best else None

    # -- joining -------------------------------------------------------------------------------

    def join_message(self) -> dict[str, Any]:
        """What a joining node sends to a seed or a member: its digest without itself."""
        ask = {"t": "syn", "from": self.name, "digest": self._digest(), "join": True}
        if self.address:
            ask["address"] = self.address  # where to answer: the name may belong to someone else
        return ask

    def seed_message(self, seed: str) -> dict[str, Any]:
        """What a member sends to a seed at which it knows no live member: its own digest entry only
        (the seed learns of it and answers with all it holds), marked so that the answer says which
        seed it answers (the member behind it may advertise another address than the one given)."""
        me = self.me
        return {"t": "syn", "from": self.name, "digest": {self.id: [me.heartbeat, me.max_version, me.address, False]},
                "seed": seed}

    def announce(self, now: float) -> list[Effect]:
        """End the joining phase: from now on this node's origin travels with its digests."""
        self._announce(now)
        return self._drain()

    def _announce(self, now: float) -> None:
        if not self.announced and self.name_taken is None:
            self.announced = True
            self.me.last_heard = now
            self._events.append(Event("announced", {"id": self.id}))

    def _welcome(self, sender: str, live: dict[str, str], now: float) -> None:
        """A member's list of live incarnations, in answer to this joining node."""
        if self.announced or self.name_taken is not None:
            return
        if not any(parse_origin(oid)[0] == sender for oid in live):
            return  # the answer of another joiner, not of a member
        for oid, address in live.items():
            name, inc = parse_origin(oid)
            if name == self.name and inc != self.incarnation and not self._same_node(address):
                self._refuse(oid, address)
                return
        self._announce(now)  # its events go out with the rest of this message's (its entries' changes too)

    def _same_node(self, address: str) -> bool:
        # An incarnation at this node's own address is a former self (restarted), not a rival.
        return not address or not self.address or address == self.address

    def _refuse(self, oid: str, address: str) -> None:
        self.name_taken = (oid, address)
        self._events.append(Event("name_taken", {"name": self.name, "id": oid, "address": address,
                                                 "announced": self.announced}))

    def _watch_rival(self, oid: str, inc: int, heartbeat: int, address: str, reporter: str, now: float) -> None:
        """Another incarnation of this node's name: if its heartbeat keeps rising it is live. A joining
        node refuses; of two announced ones the newer yields.

        Rising means: in the digests of one reporter, rising again more than ``dead_after`` seconds
        after it first rose there. Different peers hold different stale heartbeats of a dead
        predecessor, and one peer's view of it rises while the last of them spreads; neither may
        stop a live node."""
        if self.name_taken is not None or self._same_node(address) or type(heartbeat) is not int:
            return
        reports = self._rivals.get(oid)
        if reports is None:
            if len(self._rivals) >= MAX_RIVALS:
                return
            reports = self._rivals[oid] = {}
        seen = reports.get(reporter)
        if seen is None:
            if len(reports) < MAX_PEER_DIGESTS:
                reports[reporter] = [heartbeat, None]
            return
        if heartbeat <= seen[0]:
            return
        seen[0] = heartbeat
        if seen[1] is None:
            seen[1] = now
        elif now - seen[1] > self.config.dead_after and (not self.announced or inc < self.incarnation):
            self._refuse(oid, address)

    def leave(self, now: float) -> list[Effect]:
        """Announce a graceful departure: peers mark this incarnation ``left``, not dead."""
        if not self.announced:
            return []  # nobody has heard of this incarnation
        self.me.state = LEFT
        self.me.heartbeat += 1
        out: list[Effect] = []
        for peer in self._live_peer_names():
            mine = self._digest()
            out.append(Send(peer, {"t": "syn", "from": self.name, "digest": mine, "left": True,
                                   "delta": self._delta_for(self.peer_digest.get(peer, {}), carried=mine)}))
        return out

    # -- the protocol ---------------------------------------------------------------------------

    def tick(self, now: float) -> list[Effect]:
        if self.me.state == LEFT:
            return []
        self.rounds += 1
        self.me.heartbeat += 1
        self.me.last_heard = now
        self._update_states(now)
        self._collect(now)
        out: list[Effect] = []
        peers = self._live_peer_names()
        if not self.announced:
            # Joining: ask every member and seed for its live incarnations; push nothing.
            if self.name_taken is None:
                ask = self.join_message()
                out += [Send(p, ask) for p in sorted(set(peers) | set(self.seeds))]
            return out + self._drain()
        # Push what each chosen peer lacks (from what we last learned of it).
        wanting = [p for p in peers if self._lacks(p)]
        self.rng.shuffle(wanting)
        for peer in wanting[: self.config.fanout]:
            delta = self._delta_for(self.peer_digest.get(peer, {}))
            out.append(Send(peer, {"t": "push", "from": self.name, "delta": delta}))
            self._assume_sent(peer, delta)
        # A full exchange now and then: heartbeats flow and anything lost is repaired.
        if self.rounds % self.config.sync_every == 0 or not peers:
            target = self._sync_target(peers)
            if target is not None:
                out.append(Send(target, {"t": "syn", "from": self.name, "digest": self._digest()}))
        return out + self._drain()

    def step(self, sender: str, message: object, now: float) -> list[Effect]:
        """Handle one message from ``sender``. Malformed input raises ValueError and changes nothing."""
        message = check_message(message)
        if not valid_name(sender):
            raise ValueError("the sender of a gossip message must be a valid node name")
        kind = message.get("t")
        if kind == "push":
            self._apply_delta(message.get("delta") or [], now)
            return self._drain()
        if kind == "syn":
            digest = message.get("digest") or {}
            # A joiner's name may be a live member's: what it holds says nothing of that member.
            join = message.get("join") is True
            self._observe_digest(sender, digest, now, peer=not join)
            self._apply_delta(message.get("delta") or [], now)
            if message.get("left"):
                self._mark_left(digest)
            mine = self._digest()
            delta = self._delta_for(digest, carried=mine)
            if not join:
                self._assume_sent(sender, delta)
            ack: dict[str, Any] = {"t": "ack", "from": self.name, "digest": mine, "delta": delta}
            if join and self.announced:
                # What the joiner needs: the live incarnations of its name, and this member itself.
                joiner = message.get("from")
                joiner = joiner if valid_name(joiner) else sender
                ack["live"] = {o.id: o.address for o in self._named.get(joiner, {}).values() if o.state in (ALIVE, SUSPECT)}
                if self.me.state in (ALIVE, SUSPECT):
                    ack["live"][self.id] = self.address
            if "seed" in message:
                ack["seed"] = message["seed"]  # tells the runtime which of its seeds answered
            return [Send(sender, ack)] + self._drain()
        if kind == "ack":
            digest = message.get("digest") or {}
            self._observe_digest(sender, digest, now)
            self._apply_delta(message.get("delta") or [], now)
            if message.get("live") is not None:
                self._welcome(sender, message["live"], now)
            delta = self._delta_for(digest)
            self._assume_sent(sender, delta)
            out = [Send(sender, {"t": "ack2", "from": self.name, "delta": delta})] if delta else []
            return out + self._drain()
        if kind == "ack2":
            self._apply_delta(message.get("delta") or [], now)
            return self._drain()
        return []

    # -- digests and deltas ---------------------------------------------------------------------

    def _digest(self) -> Digest:
        # Dead origins stay in the digest until buried: their data may not be adopted yet,
        # and if their heartbeat still rises somewhere they were only cut off.
        hidden = None if self.announced else self.me
        return {oid: [o.heartbeat, o.max_version, o.address, o.state == LEFT]
                for oid, o in self.origins.items() if o is not hidden}

    def _lacks(self, peer: str) -> bool:
        known = self.peer_digest.get(peer)
        if known is None:
            return False
        for oid, o in self.origins.items():
            if known.get(oid, 0) < o.max_version and o.entries and (self.announced or o is not self.me):
                return True
        return False

    def _delta_for(self, digest: Mapping[str, object], carried: Digest | None = None) -> Delta:
        """Entries the holder of ``digest`` lacks, oldest version first, within the count and byte budgets
        and never denser than the receiver takes (``bytes_per_container``: at every entry, what the message
        holds so far, entries before it and the worst of its own leading parts, stays within the rule).
        ``carried``: the digest that travels in the same message."""
        cfg = self.config
        budget = cfg.max_delta_entries
        byte_budget = cfg.max_delta_bytes
        per, slack = cfg.bytes_per_container, cfg.dense_slack_bytes
        # per * arrays and maps - bytes, so far; what the message holds besides entries is counted
        # first, with none of its bytes (the count of an array is due when it closes, the bytes before).
        dense = per * _MESSAGE_CONTAINERS + (_digest_excess(carried, per) if carried else 0)
        delta: Delta = []
        for oid, o in self.origins.items():
            if not o.entries or (o is self.me and not self.announced):
                continue
            theirs = digest.get(oid)
            have = theirs[1] if isinstance(theirs, list) else (theirs if isinstance(theirs, int) else 0)
            if have >= o.max_version:
                continue
            newer = sorted((e for e in o.entries.values() if e.version > have), key=lambda e: e.version)
            if not newer:
                continue
            take: list[Entry] = []
            for e in newer[:budget]:
                if (take or delta) and e.size > byte_budget:
                    break
                opening = 0 if take else per * _ITEM_CONTAINERS
                if dense + opening + e.excess > slack:
                    break  # the rest go in a later message, which starts afresh
                take.append(e)
                byte_budget -= e.size
                dense += opening + per * e.containers - e.size
            if not take:
                break
            # The receiver may raise its version to the last one we send: gaps are superseded writes.
            upto = o.max_version if len(take) == len(newer) else take[-1].version
            delta.append([oid, have, upto, [e.wire() for e in take]])
            budget -= len(take)
            if budget <= 0 or byte_budget <= 0 or len(take) < len(newer):
                break
        return delta

    def _assume_sent(self, peer: str, delta: Delta) -> None:
        known = self._known_by(peer)
        if known is None:
            return
        for oid, _base, upto, _ in delta:
            if known.get(oid, 0) < upto:
                known[oid] = upto

    def _observe_digest(self, sender: str, digest: dict[str, Any], now: float, peer: bool = True) -> None:
        """Learn from ``sender``'s digest; ``peer``: it is what ``sender`` holds (not a joiner's)."""
        known = self._known_by(sender) if peer else None
        for oid, info in digest.items():
            if not isinstance(info, list) or len(info) < 2:
                continue
            heartbeat, version = info[0], info[1]
            name, inc = parse_origin(oid)
            if name == self.name and inc != self.incarnation:
                self._watch_rival(oid, inc, heartbeat, info[2] if len(info) > 2 else "", sender, now)
            if oid in self.graveyard:
                # Buried, but its heartbeat still rises: it was cut off, not dead. Take it back.
                if isinstance(heartbeat, int) and heartbeat > self.graveyard[oid][1]:
                    del self.graveyard[oid]
                else:
                    continue
            o = self._origin(oid, now, address=info[2] if len(info) > 2 else "")
            if o is None:
                continue
            if known is not None:
                known[oid] = version
                # A heartbeat of ours that we have not sent yet was not seen: it is made up.
                if o is self.me and isinstance(heartbeat, int) and self.seen_by.get(sender, -1) < heartbeat <= o.heartbeat:
                    self.seen_by[sender] = heartbeat
            if isinstance(heartbeat, int) and heartbeat > o.heartbeat:
                o.heartbeat = heartbeat
                o.last_heard = now
                if o.detector is not None:
                    o.detector.heartbeat(now)
                if o.state == SUSPECT or (o.state == DEAD and not self._superseded(o)):
                    o.state = ALIVE
                    o.suspect_since = None
                    o.dead_since = None
                    o.detector = PhiAccrualDetector(self.config.detector, now)
                    self._events.append(Event("member", {"name": o.name, "state": ALIVE, "id": o.id}))
            if len(info) > 3 and info[3] and o.state not in (LEFT, DEAD):
                self._set_state(o, LEFT, now)

    def _known_by(self, peer: str) -> dict[str, int] | None:
        """What ``peer`` is known to hold, or None for a sender that is not a member (a joiner, a
        made-up name) or beyond ``MAX_PEER_DIGESTS`` peers (those get no pushes; syncs repair)."""
        known = self.peer_digest.get(peer)
        if known is None and len(self.peer_digest) < MAX_PEER_DIGESTS and peer in self._named:
            known = self.peer_digest[peer] = {}
        return known

    def _mark_left(self, digest: dict[str, Any]) -> None:
        for oid, info in digest.items():
            o = self.origins.get(oid)
            if o is not None and isinstance(info, list) and len(info) > 3 and info[3]:
                self._set_state(o, LEFT, o.last_heard)

    def _origin(self, oid: str, now: float, address: str = "") -> Origin | None:
        o = self.origins.get(oid)
        if o is not None:
            if address and not o.address:
                o.address = address
            return o
        try:
            name, inc = parse_origin(oid)
        except ValueError:
            return None
        if name == self.name and inc != self.incarnation:
            return None  # a former (or impossible future) self, or a rival: never a member here
        if len(self.origins) >= MAX_ORIGINS:
            return None  # a flood of made-up members
        for other in self._named.get(name, {}).values():
            if other.incarnation > inc and _may_be_same_address(other.address, address):
                return None  # an older incarnation of a node we know restarted: dead already
        o = Origin(oid, name, inc, address=address, last_heard=now,
                   detector=PhiAccrualDetector(self.config.detector, now))
        self._add(o)
        self._events.append(Event("member", {"name": name, "state": ALIVE, "id": oid, "address": address}))
        self._supersede_older(name, inc, now, address)
        return o

    def _apply_delta(self, delta: list[Any], now: float) -> None:
        cfg = self.config
        sendable = cfg.dense_slack_bytes - cfg.bytes_per_container * _LONE_ENTRY_CONTAINERS
        for item in delta:
            if not (isinstance(item, list) and len(item) == 4):
                continue
            oid, base, upto, entries = item
            if oid in self.graveyard or not isinstance(entries, list) or type(upto) is not int or type(base) is not int:
                continue
            # Only members: an origin is introduced by a digest, which gives its address (a delta
            # does not, and would let anyone add members without bound).
            o = self.origins.get(oid)
            if o is None or o is self.me:
                continue
            for raw in entries:
                if not (isinstance(raw, list) and len(raw) == 6):
                    continue
                key, value, stamp, writer, version, tomb = raw
                if not isinstance(key, str) or not isinstance(version, int) or not isinstance(stamp, int):
                    continue
                if stamp > make_stamp(int((now + MAX_CLOCK_SKEW_S) * 1000)):
                    continue  # from a clock far in the future: it would win every write after it
                if version <= o.max_version and key in o.entries and o.entries[key].version >= version:
                    continue
                current = o.entries.get(key)
                if current is not None and current.version >= version:
                    continue
                why = refusal(o.name, str(writer), key, value, bool(tomb))
                if why is not None:
                    # Not this member's to write (mesh.core.ownership): every node refuses it alike, so
                    # the version is passed over, not waited for.
                    self._refuse_entry(o.name, key, why)
                    continue
                self.clock.observe(stamp, int(now * 1000))
                entry = Entry(key, value, stamp, str(writer), version, bool(tomb), collected_at=now)
                try:
                    entry.measure(cfg.bytes_per_container)
                except (TypeError, ValueError, OverflowError):
                    entry.excess = cfg.dense_slack_bytes  # cannot happen for what msgpack decoded: treat as unsendable
                if entry.excess > sendable:
                    # Denser than any message this node may send (a peer with other limits, or a forged
                    # entry): kept out, and so is every later version of this origin from this delta,
                    # so that our versions of it stay contiguous.
                    upto = min(upto, version - 1)
                    break
                o.entries[key] = entry
                self._consider(entry)
            # Versions are contiguous knowledge: raise ours only if this delta starts where we are
            # (an optimistic sender may have skipped what it wrongly thought we had).
            if base <= o.max_version < upto:
                o.max_version = upto

    def _refuse_entry(self, origin: str, key: str, why: str) -> None:
        self.refused_entries += 1
        if why not in self.refusal_causes and len(self.refusal_causes) < MAX_REFUSAL_CAUSES:
            self.refusal_causes.add(why)  # said once per cause: a flood of forgeries is one line
            self._events.append(Event("refused", {"origin": origin, "key": key[:NAME_MAX], "why": why}))

    def _consider(self, entry: Entry) -> None:
        cur = self.view.get(entry.key)
        if cur is None or entry.stamp > cur.stamp:
            self.view[entry.key] = entry
            if entry.tombstone:
                self._tombstones.add(entry.key)
            else:
                self._tombstones.discard(entry.key)
            if cur is None or cur.tombstone != entry.tombstone or cur.value != entry.value:
                self._events.append(Event("changed", {"key": entry.key, "value": None if entry.tombstone else entry.value,
                                                      "deleted": entry.tombstone}))

    def _recompute(self, key: str) -> None:
        best = None
        for o in self.origins.values():
            e = o.entries.get(key)
            if e is not None and (best is None or e.stamp > best.stamp):
                best = e
        cur = self.view.get(key)
        was = cur is not None and not cur.tombstone
        now = best is not None and not best.tombstone
        if was != now or (was and now and cur is not None and best is not None and cur.value != best.value):
            self._events.append(Event("changed", {"key": key, "value": best.value if now and best else None,
                                                  "deleted": not now}))
        if best is None:
            self.view.pop(key, None)
            self._tombstones.discard(key)
        else:
            self.view[key] = best
            if best.tombstone:
                self._tombstones.add(key)
            else:
                self._tombstones.discard(key)

    # -- failure detection -------------------------------------------------------------------------

    def _set_state(self, o: Origin, state: str, now: float) -> None:
        if o.state == state:
            return
        o.state = state
        if state == DEAD or state == LEFT:
            o.dead_since = now
        self._events.append(Event("member", {"name": o.name, "state": state, "id": o.id}))

    def _superseded(self, o: Origin) -> bool:
        return any(x.incarnation > o.incarnation and _may_be_same_address(x.address, o.address)
                   for x in self._named.get(o.name, {}).values())

    def _supersede_older(self, name: str, inc: int, now: float, address: str) -> None:
        # Only a restart (known at the same address) ends an older incarnation at once: a newcomer
        # elsewhere with the same name, or one whose address is unknown, is not the member, and the
        # detector judges each alone.
        for o in list(self._named.get(name, {}).values()):
            if o.incarnation < inc and o.state not in (DEAD, LEFT) and _same_address(o.address, address):
                self._set_state(o, DEAD, now)

    def _update_states(self, now: float) -> None:
        for o in self.origins.values():
            if o is self.me or o.state in (DEAD, LEFT) or o.detector is None:
                continue
            if o.detector.suspect(now):
                if o.state == ALIVE:
                    o.state = SUSPECT
                    o.suspect_since = now
                    self._events.append(Event("member", {"name": o.name, "state": SUSPECT, "id": o.id}))
                elif now - (o.suspect_since or now) >= self.config.dead_after:
                    self._set_state(o, DEAD, now)

    def _live_peer_names(self) -> list[str]:
        names = {o.name for o in self.origins.values() if o is not self.me and o.state in (ALIVE, SUSPECT)}
        return sorted(names)

    def _sync_target(self, peers: list[str]) -> str | None:
        # Mostly live peers; sometimes a seed or a dead member, so partitions heal and joins happen.
        others = sorted({o.name for o in self.origins.values() if o.name != self.name} | set(self.seeds))
        first, self.sync_first = self.sync_first, None
        if peers and (self.rng.random() < 0.9 or len(others) == len(peers)):
            return first if first in peers else self.rng.choice(peers)
        return self.rng.choice(others) if others else None

    # -- garbage collection ------------------------------------------------------------------------

    def _collect(self, now: float) -> None:
        cfg = self.config
        # Tombstones past their grace go, and every older entry of their key with them.
        for key in list(self._tombstones):
            e = self.view.get(key)
            if e is None or not e.tombstone:
                self._tombstones.discard(key)
                continue
            if now - e.collected_at >= cfg.tombstone_grace:
                for o in self.origins.values():
                    old = o.entries.get(key)
                    if old is not None and old.stamp <= e.stamp:
                        del o.entries[key]
                self._recompute(key)
        # Dead incarnations go once their grace is over and their current user data lives on.
        live = sorted(o.name for o in self.origins.values() if o.state == ALIVE)
        for oid, o in list(self.origins.items()):
            if o is self.me or o.state not in (DEAD, LEFT) or o.dead_since is None:
                continue
            age = now - o.dead_since
            if age < cfg.dead_grace:
                continue
            orphans = [e for e in o.entries.values()
                       if not e.key.startswith(RESERVED_PREFIX) and self.view.get(e.key) is e
                       and not self._held_elsewhere(e, o)]
            if orphans:
                if (live and live[0] == self.name) or age >= 2 * cfg.dead_grace:
                    self._adopt(orphans)
                else:
                    continue
            self._remove(o)
            self.graveyard[oid] = (now, o.heartbeat)
            for key in list(o.entries):
                if self.view.get(key) is o.entries[key]:
                    self._recompute(key)
        for oid, (t, _) in list(self.graveyard.items()):
            if now - t > 20 * cfg.dead_grace:
                del self.graveyard[oid]
        if len(self.graveyard) > MAX_GRAVEYARD:  # a flood of made-up incarnations: forget the oldest
            for oid in sorted(self.graveyard, key=lambda k: self.graveyard[k][0])[: len(self.graveyard) - MAX_GRAVEYARD]:
                del self.graveyard[oid]
        # Peers' digests: only of members still known.
        for peer in [p for p in self.peer_digest if p not in self._named]:
            del self.peer_digest[peer]
        for peer in [p for p in self.seen_by if p not in self.peer_digest]:
            del self.seen_by[peer]

    def _held_elsewhere(self, entry: Entry, dead: Origin) -> bool:
        for o in self.origins.values():
            if o is not dead and o.state in (ALIVE, SUSPECT):
                other = o.entries.get(entry.key)
                if other is not None and other.stamp == entry.stamp:
                    return True
        return False

    def _adopt(self, entries: list[Entry]) -> None:
        me = self.me
        for e in entries:
            me.max_version += 1
            copy = Entry(e.key, e.value, e.hlc, e.writer, me.max_version, e.tombstone, collected_at=e.collected_at)
            copy.measure(self.config.bytes_per_container)
            me.entries[e.key] = copy
            self.view[e.key] = copy  # same stamp: the winner does not change, only its holder

    def _drain(self) -> list[Effect]:
        events, self._events = self._events, []
        return events
