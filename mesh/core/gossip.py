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
  on a wrong guess of what it had never leaves a hole.
* Each round a node pushes what it believes each of ``fanout`` peers lacks (it
  remembers their last digest), and every ``sync_every`` rounds runs a full
  exchange with one peer (syn -> ack -> ack2) that repairs anything lost.
* The heartbeat of an origin rises every round; a phi-accrual detector per origin
  turns silence into ``suspect``, then ``dead`` after ``dead_after`` seconds.
  A node that leaves says so (``left``). When ``name@k`` appears, every older
  incarnation of ``name`` is dead at once: a restarted node is never confused with
  its former self.

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
  users cannot write them, and they are never adopted from a dead incarnation.

Pure: no sockets, no clock, no ``random``; ``now`` is wall-clock seconds and the RNG
is injected.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import msgpack

from .effects import Event, Send
from .failure import DetectorConfig, PhiAccrualDetector
from .hlc import HybridClock
from .hlc import make as make_stamp

RESERVED_PREFIX = "$"
#: Entries stamped further than this in the future (seconds) are refused.
MAX_CLOCK_SKEW_S = 60.0
#: Members remembered at most; more are ignored (a flood of made-up names).
MAX_ORIGINS = 4096
_KINDS = ("push", "syn", "ack", "ack2")


def check_message(message: object) -> None:
    """Raise ValueError unless ``message`` has the shape of a gossip message (the network is untrusted)."""
    if not isinstance(message, dict) or message.get("t") not in _KINDS:
        raise ValueError("not a gossip message")
    digest = message.get("digest")
    if digest is not None:
        if not isinstance(digest, dict):
            raise ValueError("digest must be a map")
        for oid, info in digest.items():
            if not isinstance(oid, str) or "@" not in oid:
                raise ValueError("digest keys must be origin ids")
            if not (isinstance(info, list) and len(info) == 4 and type(info[0]) is int and type(info[1]) is int
                    and isinstance(info[2], str) and isinstance(info[3], bool)):
                raise ValueError("digest entries must be [heartbeat, version, address, left]")
            if info[2] and not info[2].startswith("tcp://"):
                raise ValueError("addresses must be tcp://HOST:PORT")
    delta = message.get("delta")
    if delta is not None:
        if not isinstance(delta, list):
            raise ValueError("delta must be a list")
        for item in delta:
            if not (isinstance(item, list) and len(item) == 4 and isinstance(item[0], str)
                    and type(item[1]) is int and type(item[2]) is int and isinstance(item[3], list)):
                raise ValueError("delta items must be [origin, base, upto, entries]")
            for raw in item[3]:
                if not (isinstance(raw, list) and len(raw) == 6 and isinstance(raw[0], str) and type(raw[2]) is int
                        and isinstance(raw[3], str) and type(raw[4]) is int and isinstance(raw[5], bool)):
                    raise ValueError("entries must be [key, value, hlc, writer, version, tombstone]")
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


@dataclass
class Entry:
    key: str
    value: object
    hlc: int
    writer: str
    version: int
    tombstone: bool = False
    collected_at: float = 0.0  # when a tombstone was first seen here (for its grace)

    def wire(self) -> list:
        return [self.key, self.value, self.hlc, self.writer, self.version, self.tombstone]

    @property
    def size(self) -> int:
        """Packed size in bytes (what it costs in a delta)."""
        return len(msgpack.packb(self.wire(), use_bin_type=True))

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


def origin_id(name: str, incarnation: int) -> str:
    return f"{name}@{incarnation}"


def parse_origin(oid: str) -> tuple[str, int]:
    name, _, inc = oid.rpartition("@")
    if not name or not inc.isdigit():
        raise ValueError(f"bad origin id {oid!r:.60}")
    return name, int(inc)


class GossipNode:
    """One node's replica and membership view. Feed it messages and ticks; send what it returns."""

    def __init__(self, name: str, incarnation: int, config: GossipConfig, rng: random.Random, now: float,
                 address: str = "", seeds: tuple[str, ...] = ()):
        self.name = name
        self.config = config
        self.rng = rng
        self.clock = HybridClock()
        self.address = address
        self.seeds = [s for s in seeds if s != name]
        self.origins: dict[str, Origin] = {}
        self.view: dict[str, Entry] = {}  # key -> winning entry (tombstones included)
        self._tombstones: set[str] = set()  # keys whose winner is a tombstone (collected by _collect)
        self.graveyard: dict[str, tuple[float, int]] = {}  # origin id -> (when buried, its last heartbeat)
        self.peer_digest: dict[str, dict] = {}  # peer name -> its last known digest (oid -> max_version)
        self.last_contact: dict[str, float] = {}
        self.rounds = 0
        self._events: list = []
        self._become(incarnation, now)

    # -- identity -----------------------------------------------------------------

    def _become(self, incarnation: int, now: float) -> None:
        self.incarnation = incarnation
        self.id = origin_id(self.name, incarnation)
        me = Origin(self.id, self.name, incarnation, address=self.address, last_heard=now)
        self.origins[self.id] = me
        self.me = me
        self._supersede_older(self.name, incarnation, now)

    # -- the user's API ---------------------------------------------------------------

    def get(self, key: str, default: object = None) -> object:
        e = self.view.get(key)
        return default if e is None or e.tombstone else e.value

    def items(self, prefix: str = "") -> dict[str, object]:
        return {k: e.value for k, e in self.view.items() if not e.tombstone and k.startswith(prefix)}

    def set(self, key: str, value: object, now: float, *, system: bool = False) -> list:
        self._check_key(key, system)
        return self._write(key, value, False, now)

    def delete(self, key: str, now: float, *, system: bool = False) -> list:
        self._check_key(key, system)
        if key not in self.view or self.view[key].tombstone:
            return []
        return self._write(key, None, True, now)

    def _check_key(self, key: str, system: bool) -> None:
        if not isinstance(key, str) or not key:
            raise ValueError("a key is a non-empty string")
        if key.startswith(RESERVED_PREFIX) and not system:
            raise ValueError(f"keys starting with {RESERVED_PREFIX!r} are reserved for the runtime: {key!r}")

    def _write(self, key: str, value: object, tombstone: bool, now: float) -> list:
        me = self.me
        entry = Entry(key, value, self.clock.now(int(now * 1000)), self.name, me.max_version + 1, tombstone,
                      collected_at=now)
        try:
            size = entry.size
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"the value of {key!r} is not a msgpack value: {exc}") from None
        if size > self.config.max_value_bytes:
            raise ValueError(f"the value of {key!r} packs to {size} bytes; the limit is {self.config.max_value_bytes}")
        me.max_version += 1
        me.entries[key] = entry
        self._consider(entry)
        return self._drain()

    # -- membership ---------------------------------------------------------------------------

    def members(self) -> list[dict]:
        now_states = []
        for o in self.origins.values():
            now_states.append({"name": o.name, "incarnation": o.incarnation, "state": o.state,
                               "address": o.address, "id": o.id, "heartbeat": o.heartbeat,
                               "last_heard": o.last_heard})
        return sorted(now_states, key=lambda m: (m["name"], m["incarnation"]))

    def state_of(self, name: str) -> str | None:
        best = None
        for o in self.origins.values():
            if o.name == name and (best is None or o.incarnation > best.incarnation):
                best = o
        return best.state if best else None

    def leave(self, now: float) -> list:
        """Announce a graceful departure: peers mark this incarnation ``left``, not dead."""
        self.me.state = LEFT
        self.me.heartbeat += 1
        out = []
        for peer in self._live_peer_names():
            out.append(Send(peer, {"t": "syn", "from": self.name, "digest": self._digest(), "left": True,
                                   "delta": self._delta_for(self.peer_digest.get(peer, {}))}))
        return out

    # -- the protocol ---------------------------------------------------------------------------

    def tick(self, now: float) -> list:
        if self.me.state == LEFT:
            return []
        self.rounds += 1
        self.me.heartbeat += 1
        self.me.last_heard = now
        self._update_states(now)
        self._collect(now)
        out: list = []
        peers = self._live_peer_names()
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

    def step(self, sender: str, message: object, now: float) -> list:
        """Handle one message from ``sender``. Malformed input raises ValueError and changes nothing."""
        check_message(message)
        kind = message.get("t")
        self.last_contact[sender] = now
        if kind == "push":
            self._apply_delta(message.get("delta") or [], now)
            return self._drain()
        if kind == "syn":
            digest = message.get("digest") or {}
            self._observe_digest(sender, digest, now)
            self._apply_delta(message.get("delta") or [], now)
            if message.get("left"):
                self._mark_left(digest)
            delta = self._delta_for(digest)
            self._assume_sent(sender, delta)
            return [Send(sender, {"t": "ack", "from": self.name, "digest": self._digest(), "delta": delta})] + self._drain()
        if kind == "ack":
            digest = message.get("digest") or {}
            self._observe_digest(sender, digest, now)
            self._apply_delta(message.get("delta") or [], now)
            delta = self._delta_for(digest)
            self._assume_sent(sender, delta)
            out = [Send(sender, {"t": "ack2", "from": self.name, "delta": delta})] if delta else []
            return out + self._drain()
        if kind == "ack2":
            self._apply_delta(message.get("delta") or [], now)
            return self._drain()
        return []

    # -- digests and deltas ---------------------------------------------------------------------

    def _digest(self) -> dict:
        # Dead origins stay in the digest until buried: their data may not be adopted yet,
        # and if their heartbeat still rises somewhere they were only cut off.
        return {oid: [o.heartbeat, o.max_version, o.address, o.state == LEFT] for oid, o in self.origins.items()}

    def _lacks(self, peer: str) -> bool:
        known = self.peer_digest.get(peer)
        if known is None:
            return False
        for oid, o in self.origins.items():
            if known.get(oid, 0) < o.max_version and o.entries:
                return True
        return False

    def _delta_for(self, digest: dict) -> list:
        """Entries the holder of ``digest`` lacks, oldest version first, within the count and byte budgets."""
        budget = self.config.max_delta_entries
        byte_budget = self.config.max_delta_bytes
        delta: list = []
        for oid, o in self.origins.items():
            if not o.entries:
                continue
            theirs = digest.get(oid)
            have = theirs[1] if isinstance(theirs, list) else (theirs if isinstance(theirs, int) else 0)
            if have >= o.max_version:
                continue
            newer = sorted((e for e in o.entries.values() if e.version > have), key=lambda e: e.version)
            if not newer:
                continue
            take = []
            for e in newer[:budget]:
                size = e.size
                if (take or delta) and size > byte_budget:
                    break
                take.append(e)
                byte_budget -= size
            if not take:
                break
            # The receiver may raise its version to the last one we send: gaps are superseded writes.
            upto = o.max_version if len(take) == len(newer) else take[-1].version
            delta.append([oid, have, upto, [e.wire() for e in take]])
            budget -= len(take)
            if budget <= 0 or byte_budget <= 0 or len(take) < len(newer):
                break
        return delta

    def _assume_sent(self, peer: str, delta: list) -> None:
        known = self.peer_digest.setdefault(peer, {})
        for oid, _base, upto, _ in delta:
            if known.get(oid, 0) < upto:
                known[oid] = upto

    def _observe_digest(self, peer: str, digest: dict, now: float) -> None:
        if len(self.origins) >= MAX_ORIGINS:
            digest = {oid: info for oid, info in digest.items() if oid in self.origins}
        known = self.peer_digest.setdefault(peer, {})
        for oid, info in digest.items():
            if not isinstance(info, list) or len(info) < 2:
                continue
            heartbeat, version = info[0], info[1]
            known[oid] = version
            if oid in self.graveyard:
                # Buried, but its heartbeat still rises: it was cut off, not dead. Take it back.
                if isinstance(heartbeat, int) and heartbeat > self.graveyard[oid][1]:
                    del self.graveyard[oid]
                else:
                    continue
            o = self._origin(oid, now, address=info[2] if len(info) > 2 else "")
            if o is None:
                continue
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

    def _mark_left(self, digest: dict) -> None:
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
            return None  # a former (or impossible future) self: never a member
        for other in self.origins.values():
            if other.name == name and other.incarnation > inc:
                return None  # an older incarnation than one we know: dead already
        o = Origin(oid, name, inc, address=address, last_heard=now,
                   detector=PhiAccrualDetector(self.config.detector, now))
        self.origins[oid] = o
        self._events.append(Event("member", {"name": name, "state": ALIVE, "id": oid, "address": address}))
        self._supersede_older(name, inc, now)
        return o

    def _apply_delta(self, delta: list, now: float) -> None:
        for item in delta:
            if not (isinstance(item, list) and len(item) == 4):
                continue
            oid, base, upto, entries = item
            if oid in self.graveyard or not isinstance(entries, list) or type(upto) is not int or type(base) is not int:
                continue
            o = self._origin(oid, now)
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
                self.clock.observe(stamp, int(now * 1000))
                entry = Entry(key, value, stamp, str(writer), version, bool(tomb), collected_at=now)
                o.entries[key] = entry
                self._consider(entry)
            # Versions are contiguous knowledge: raise ours only if this delta starts where we are
            # (an optimistic sender may have skipped what it wrongly thought we had).
            if base <= o.max_version < upto:
                o.max_version = upto

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
        return any(x.name == o.name and x.incarnation > o.incarnation for x in self.origins.values())

    def _supersede_older(self, name: str, inc: int, now: float) -> None:
        for o in list(self.origins.values()):
            if o.name == name and o.incarnation < inc and o.state not in (DEAD, LEFT):
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
        if peers and (self.rng.random() < 0.9 or len(others) == len(peers)):
            return self.rng.choice(peers)
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
            del self.origins[oid]
            self.graveyard[oid] = (now, o.heartbeat)
            for key in list(o.entries):
                if self.view.get(key) is o.entries[key]:
                    self._recompute(key)
        for oid, (t, _) in list(self.graveyard.items()):
            if now - t > 20 * cfg.dead_grace:
                del self.graveyard[oid]

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
            me.entries[e.key] = copy
            self.view[e.key] = copy  # same stamp: the winner does not change, only its holder

    def _drain(self) -> list:
        events, self._events = self._events, []
        return events
