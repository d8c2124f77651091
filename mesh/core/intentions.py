"""Intentions: agents announce what they are about to touch, and the voters approve or object.

Before an agent acts it *proposes an intention*: an id, a set of *claims* (resource names:
``"repo:src/app.py"``, ``"db:users"``...), a priority and a timestamp. The mesh's voter nodes
(a fixed list, the same everywhere) vote on it; two intentions whose claims overlap are never
both approved while either is *held*.

Each voter runs an :class:`IntentionVoter`; each node that proposes runs one
:class:`IntentionProposer` for all its intentions (a node can run both; the runtime routes a
message to the voter if its ``"t"`` is in :data:`VOTER_KINDS`, to the proposer if it is in
:data:`PROPOSER_KINDS`, and must deliver a Send addressed to the node itself locally).

The protocol, two phases as in Paxos-style locking, with preemption by precedence:

* Precedence is a total order: higher priority first, then earlier timestamp, then smaller
  id (then proposer name, should two proposers pick the same id): :func:`precedence` sorts
  ascending.
* PREPARE. The proposer sends the intention (with ``wait``, seconds, if above 0) to every
  voter. A voter keeps, per claim, at most one *owner*: an intention it has *promised* or
  *committed* to, and a *line* of intentions waiting for it. It promises the intention iff
  none of its claims is committed to another intention, none is promised to one of higher
  precedence and none is wanted by one of higher precedence in line; promises of lower
  precedence on its claims are then revoked in favour of the newcomer, and the revoked go
  back in line (they still want their claims; the voter tells their proposers, WAIT). All or
  nothing: a PREPARE that is not promised changes no owner. Otherwise the intention waits in
  line (the voter answers WAIT) if nothing *holds* its claims (it is only outranked by a
  concurrent one that may yet fail: *deferred*) or if it may wait (``wait`` > 0: *queued*,
  behind holders too); else it is refused (NO): it met a holder and did not ask to wait. A
  WAIT or NO names the intentions that hold or outrank it, and the claims in question. A
  voter keeps at most ``max_waiting`` intentions in line (default :data:`MAX_WAITING`); more
  are refused with the reason.
* Who goes next. Whenever an owner or an intention in line leaves a voter (released, expired,
  revoked, committed elsewhere), the voter promises, in precedence order, each intention in
  line for the freed claims that the PREPARE rule above would now promise (revoking lower
  promises as a newcomer would), and sends it PROMISE. When a promise becomes a commit, those
  in line for its claims are told who holds them now (WAIT), and stay in line: the holder
  may be done long before its hold ends. Promises and places in line end ``max(window,
  wait)`` after the voter first heard the PREPARE: by then its proposer has decided (it
  proposed no later than the voter heard of it), so nothing stale outranks a live intention
  for longer than that, even if the RELEASE is lost.
* COMMIT. With promises from a majority, and no sooner than ``settle`` seconds after it
  proposed, the proposer sends COMMIT (with the hold, in seconds) to the voters that
  promised (and to any that promise later). A voter accepts a COMMIT only if it still holds
  its promise to that intention (for one that waits in line again, its promise revoked in
  the meantime, it answers WAIT: the proposer sends COMMIT again if it is promised again);
  the claims are then *committed*: held for that intention
  until RELEASE or until ``hold`` seconds after the voter accepted the COMMIT (its own
  clock). The commit goes to ``storage`` before the voter acknowledges (the runtime makes
  ``storage`` durable, as for the election's vote). Promises are not stored.
* The proposer's *hold deadline* is the time it *first* sent COMMIT plus ``hold``, on its own
  clock. The intention is APPROVED when a majority has acknowledged the COMMIT before the hold
  deadline and before its *deadline*: ``max(window, wait)`` after it proposed. It is
  OBJECTED as soon as so many voters refused (NO) that a majority is impossible, when the
  deadline comes first, or when the hold deadline passes before a majority acknowledged.
  A voter's refusal is final for that intention: the proposer does not ask it again. A
  voter where it waits in line is asked again every ``retry`` (the PROMISE may be lost); a
  WAIT after a PROMISE (a revocation) makes the voter count as waiting again.
* RELEASE. When the intention is done (:meth:`IntentionProposer.done`), objected,
  withdrawn (done before it was decided) or its hold lapsed, the proposer sends RELEASE to
  every voter, again every ``retry`` seconds until each confirms, for at most two windows
  plus the hold (by then the voters have dropped it on their own). A voter drops the
  intention's promise or commit and remembers the intention as *finished* for a while, so
  a stale PREPARE or COMMIT of it (delayed or duplicated) is refused. A proposer that hears a promise or an acknowledgement
  for an intention it has closed answers with RELEASE again.

Guarantee (safety). For two intentions A and B with overlapping claims, at no moment are
both held, where an intention is *held* from the moment its proposer decides it approved
until the earlier of :meth:`IntentionProposer.done` and its hold deadline (the ``until`` of
the ``decided`` event). This holds whatever messages are lost, duplicated, reordered or
delayed, whatever partitions, and whatever voters crash and restart with their storage;
it holds even if a proposer crashes (its holds still end at ``until`` at the latest, so an
agent may keep acting on one until then).

Why. Each of A and B was acknowledged by a majority, so some voter v acknowledged both.
At v, a claim has one owner at a time; a COMMIT is accepted only by the owner of all its
claims; a committed claim cannot be promised to anyone else. (Lines change none of this: an
intention in line owns nothing, a COMMIT for it is not accepted, and it becomes an owner
only through the same rule as a newcomer, never of a committed claim. Deferral, queueing
and promotion only change *who* is promised *when*.) So v accepted B's COMMIT only
after A's commit at v ended: by A's RELEASE, which A's proposer sends only after A stopped
being held, or by expiry, ``hold`` after v accepted A's COMMIT, which was sent no earlier
than A's first COMMIT, so no earlier than A's hold deadline. B's approval comes later still.
A voter that restarts reloads its commits from storage, so the single-owner rule still
covers them. It forgets its promises, and that is safe because promises carry no safety of
their own: losing one can only make the voter refuse a COMMIT (a COMMIT for an intention it
does not remember is refused), and it may then promise the claims to another intention,
which it could have done anyway after a revocation or expiry. Quorums of acknowledgements,
not of promises, are what intersect.

What the guarantee assumes: every proposer and voter uses the same voter list (quorum =
``len(voters) // 2 + 1``); storage is durable before an acknowledgement leaves; clocks run
at the same rate (only durations, ``window`` and ``hold``, cross the wire; to cover drift a
proposer can count with a shorter hold than it asks for); a proposer never reuses an
intention id, not even after a restart (put an incarnation nonce in the id); voters are not
malicious. A voter's clock may restart (``time.monotonic`` after a reboot): a commit
reloaded from storage ends at ``min(stored expiry, now + hold)``, never later than it would
have in real time.

Liveness. Every proposal is decided by its deadline (at the first :meth:`tick` after),
approved, objected or withdrawn, and every approval ends by its ``until``. Nothing
retries forever, so contention never live-locks: lower precedence gives way (it waits in
line, within its deadline), and the proposer gives up at its deadline. Precedence never
preempts a hold (a commit is only ever released or expired). With a majority of voters
reachable and no messages lost, an intention whose claims nobody holds or outranks is
approved one round trip after the
later of ``settle`` (rounded up to a tick) and its promises. Intentions are *concurrent*
when each one's PREPARE reaches the voters before another's COMMIT does: the ``settle``
delay ensures that for intentions proposed within ``settle + min delay - max delay`` of
each other. Among concurrent intentions, on such a network, one that outranks every
intention overlapping it (and meets no hold, nor a promise to an earlier intention of
higher precedence) is approved: nobody can refuse it, and it revokes the others' promises
before they can commit. A lower one is not refused for it: it waits in line and is promised
when the higher one is objected, withdrawn or done, if that happens before its own deadline
(voters promote the same one: the first in line in precedence order). Under contention, the
simulation (``tests/test_intentions_core.py``: 2 to 10 proposers, each proposing again as
soon as its last proposal is decided, holding 1 to 10 ms when approved, 3 voters, 1000 seeds)
finds at least 0.75 of the ideal number of approvals, one per round of concurrent proposals
(measured: lowest 0.90, median 3.2: those in line are served in turn within their windows);
with ``wait`` every proposal in line was approved within its wait. Crashed proposers block
nothing for long: their promises and places in line end at their deadlines, their commits
at the hold.

Messages (dicts, ``"t"`` first; every field is validated and anything malformed ignored):

* proposer to voter: ``{"t": "i.prepare", "id", "claims": [str], "prio", "ts", "window",
  "wait"?}``, ``{"t": "i.commit", "id", "hold"}``, ``{"t": "i.release", "id"}``;
* voter to proposer: ``{"t": "i.promise", "id"}``, ``{"t": "i.ack", "id"}``,
  ``{"t": "i.released", "id"}``, ``{"t": "i.no", "id", "held"?, "outranked"?, "ahead"?, "why"?}``
  (a refusal or a refused COMMIT) and ``{"t": "i.wait", "id", "held"?, "outranked"?,
  "ahead"?}`` (in line: deferred, queued, or revoked), where ``held``, ``outranked`` (promised,
  higher precedence) and ``ahead`` (in line before it) are lists of ``[id, proposer, [claims]]``.

Intentions are keyed by ``(proposer, id)``: a voter answers the node that sent the PREPARE,
and only that node may commit or release its intention.

The proposer's effects: ``Event("decided", {"id", "outcome", "reasons", "holders",
"outranked_by", "until"})`` exactly once per proposal, ``outcome`` being :data:`APPROVED`
(``until`` is the hold deadline, the proposer's clock), :data:`OBJECTED` (``reasons`` says
why in words, ``holders`` lists the ids of intentions that hold overlapping claims,
``outranked_by`` those of higher precedence that were promised them or in line before it)
or :data:`WITHDRAWN`
(done before decided); ``Event("expired", {"id"})`` when a hold lapses without done.
Voters only send.

Pure: time comes in as ``now`` in seconds (an older ``now`` counts as the latest seen); no
randomness is needed.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeGuard

from .effects import Effect, Event, Send
from .quorum import blocks_majority, majority

APPROVED, OBJECTED, WITHDRAWN = "approved", "objected", "withdrawn"

PREPARE, COMMIT, RELEASE = "i.prepare", "i.commit", "i.release"
PROMISE, ACK, NO, RELEASED, WAIT = "i.promise", "i.ack", "i.no", "i.released", "i.wait"
VOTER_KINDS = frozenset({PREPARE, COMMIT, RELEASE})  #: messages for the IntentionVoter
PROPOSER_KINDS = frozenset({PROMISE, ACK, NO, RELEASED, WAIT})  #: messages for the IntentionProposer

MAX_ID = 200  #: characters in an intention id or a node name
MAX_CLAIM = 500  #: characters in a claim
MAX_CLAIMS = 256  #: claims per intention
MAX_REPORT = 8  #: intentions named in one refusal
MAX_WHY = 300  #: characters of a refusal's ``why``
MAX_WINDOW = 300.0  #: seconds: the longest window a proposal may ask for (and a voter's default)
MAX_HOLD = 3600.0  #: seconds: the longest hold a proposal may ask for (and a voter's default)
MAX_WAITING = 1000  #: intentions waiting in line at one voter at once (its default); more are refused

_FINISHED = "the intention was already finished (released, objected or expired)"
_NO_PROMISE = "no promise to commit (it was revoked, expired, or lost in a restart)"


# -- intentions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class IntentionRecord:
    """An intention as the voters and the proposer's node know it."""

    id: str
    proposer: str  #: the node that proposed it (it alone may commit or release it)
    claims: frozenset[str]  #: the resources it claims
    priority: float  #: higher goes first
    timestamp: float  #: earlier goes first among equal priorities

    @property
    def key(self) -> tuple[str, str]:
        return (self.proposer, self.id)


#: The former name of :class:`IntentionRecord` (``mesh.Intention`` is what ``on_intention`` hears).
Intention = IntentionRecord


def precedence(intention: IntentionRecord) -> tuple[float, float, str, str]:
    """Sort key: the intention that sorts first takes precedence (higher priority, then
    earlier timestamp, then smaller id, then smaller proposer name)."""
    return (-intention.priority, intention.timestamp, intention.id, intention.proposer)


def overlap(a: IntentionRecord, b: IntentionRecord) -> bool:
    return not a.claims.isdisjoint(b.claims)


# -- validation (every message is untrusted) -------------------------------------------------


def _number(x: object) -> TypeGuard[float]:
    if type(x) is int:
        return -(2**63) <= x < 2**63
    return type(x) is float and math.isfinite(x)


def _positive(x: object) -> TypeGuard[float]:
    return _number(x) and x > 0


def _text(x: object, limit: int = MAX_ID) -> TypeGuard[str]:
    return type(x) is str and 0 < len(x) <= limit


def _claims(x: object) -> frozenset[str] | None:
    if (type(x) is not list and type(x) is not tuple) or not 0 < len(x) <= MAX_CLAIMS:
        return None
    if not all(_text(c, MAX_CLAIM) for c in x):
        return None
    return frozenset(x)


#: Intentions that stand in the way, as a voter reports them: (proposer, id) -> the claims they hold.
Holders: TypeAlias = dict[tuple[str, str], frozenset[str]]


def _report(x: object) -> Holders | None:
    """``[[id, proposer, [claims]], ...]`` as ``{(proposer, id): claims}``, or None if malformed."""
    if x is None:
        return {}
    if (type(x) is not list and type(x) is not tuple) or len(x) > MAX_REPORT:
        return None
    out: Holders = {}
    for entry in x:
        if (type(entry) is not list and type(entry) is not tuple) or len(entry) != 3:
            return None
        iid, proposer, claims = entry
        claims = _claims(claims)
        if not _text(iid) or not _text(proposer) or claims is None:
            return None
        out[(proposer, iid)] = out.get((proposer, iid), frozenset()) | claims
    return out


def _collection(x: object) -> TypeGuard[Collection[object]]:
    """A list, tuple, set or frozenset (exactly: no subclass)."""
    return type(x) in (list, tuple, set, frozenset)


def _shown(x: object) -> str:
    """A value from outside, as an error message may quote it: short, whatever its size."""
    if type(x) is str:
        return repr(x[:40]) + (f" ({len(x)} characters)" if len(x) > 40 else "")
    if type(x) in (int, float, bool) or x is None:
        return repr(x)[:40]
    return f"a {type(x).__name__}"


def check_proposal(intention_id: object, claims: object, priority: object, timestamp: object, window: object,
                   hold: object, *, settle: float = 0.0, max_window: float = MAX_WINDOW,
                   max_hold: float = MAX_HOLD, wait: object = 0.0) -> frozenset[str]:
    """What a proposal must be, checked before anything of it is kept or sent anywhere: returns
    its claims as a frozenset; raises ValueError naming the first field that is wrong (quoting
    at most a few dozen characters of it, whatever its size)."""
    if not _text(intention_id):
        raise ValueError(f"an intention id must be a string of 1 to {MAX_ID} characters, not {_shown(intention_id)}")
    if not _collection(claims):
        raise ValueError(f"claims must be a list of strings, not {_shown(claims)}")
    checked = _claims(list(claims))
    if checked is None:
        raise ValueError(f"claims must be 1 to {MAX_CLAIMS} non-empty strings of at most {MAX_CLAIM} characters"
                         f" ({len(claims)} given)")
    for label, value in (("priority", priority), ("timestamp", timestamp)):
        if not _number(value):
            raise ValueError(f"{label} must be a finite number, not {_shown(value)}")
    if not _positive(hold) or hold > max_hold:
        raise ValueError(f"hold must be a number of seconds above 0 and at most {max_hold:g}, not {_shown(hold)}")
    if not _positive(window) or window <= settle or window > max_window:
        raise ValueError(f"window must be a number of seconds above settle ({settle:g}) and at most {max_window:g},"
                         f" not {_shown(window)}")
    if not _number(wait) or not 0 <= wait <= max_window:
        raise ValueError(f"wait must be a number of seconds from 0 to {max_window:g}, not {_shown(wait)}")
    return checked


def _reported(entries: Holders) -> list[list[object]]:
    return [[iid, proposer, sorted(claims)[:16]] for (proposer, iid), claims in sorted(entries.items())[:MAX_REPORT]]


def _quote(claims: Iterable[str]) -> str:
    claims = sorted(claims)
    shown = ", ".join(repr(c) for c in claims[:5]) + (f" and {len(claims) - 5} more" if len(claims) > 5 else "")
    return f"claim {shown} is" if len(claims) == 1 else f"claims {shown} are"


def _secs(x: float) -> str:
    return f"{round(x, 3):g} s"


# -- the voter -----------------------------------------------------------------------------


@dataclass(eq=False)
class _Vote:
    intention: IntentionRecord
    committed: bool
    expires: float  #: the voter's clock
    hold: float = 0.0
    wait: float = 0.0  #: seconds it may wait in line, should it be revoked


@dataclass(eq=False)
class _InLine:
    """An intention waiting at a voter: deferred (``wait`` 0: behind a promise of higher
    precedence only) or queued (``wait`` > 0: behind a hold too)."""

    intention: IntentionRecord
    wait: float
    expires: float  #: the voter's clock: the proposer's deadline at the latest
    rank: tuple[float, float, str, str] = ()  # type: ignore[assignment]  # set in __post_init__

    def __post_init__(self) -> None:
        self.rank = precedence(self.intention)


#: What stands in a PREPARE's way at one voter: holders, promises of higher precedence,
#: intentions of higher precedence in line before it, and promises it would revoke.
_Blockers: TypeAlias = tuple[Holders, Holders, Holders, set[tuple[str, str]]]


def storage_key(key: tuple[str, str]) -> str:
    """``(proposer, id)`` as one text key: the proposer's length, a colon, then both.

    Files written before this form keyed by the JSON list ``["proposer", "id"]``; the runtime
    rewrites those keys when it loads them (core stays free of a codec)."""
    proposer, iid = key
    return f"{len(proposer)}:{proposer}{iid}"


def _parse_storage_key(skey: object) -> tuple[str, str] | None:
    if type(skey) is not str:
        return None
    size, colon, rest = skey.partition(":")
    if not colon or not size.isdigit() or int(size) > len(rest):
        return None
    n = int(size)
    return rest[:n], rest[n:]


class IntentionVoter:
    """One voter's promises, commits and line of waiting intentions. Durable state (the
    commits) lives in ``storage`` under ``"commits"``, JSON-friendly; the runtime must write it
    to disk before it sends what a :meth:`step` returns.

    ``max_window`` and ``max_hold`` (seconds) bound what a proposer may ask for (``max_window``
    bounds ``wait`` too); more is refused with the reason. ``max_waiting`` bounds how many
    intentions wait in line at this voter at once; more are refused with the reason.
    ``remember`` is how long a finished intention is remembered, to refuse its stale messages."""

    def __init__(self, name: str, storage: dict[str, Any], now: float, *, max_window: float = MAX_WINDOW,
                 max_hold: float = MAX_HOLD, remember: float = 60.0, max_waiting: int = MAX_WAITING):
        for label, value in (("max_window", max_window), ("max_hold", max_hold), ("remember", remember)):
            if not _positive(value):
                raise ValueError(f"{label} must be a positive number of seconds, not {value!r}")
        if type(max_waiting) is not int or max_waiting < 0:
            raise ValueError(f"max_waiting must be a count >= 0, not {max_waiting!r}")
        self.name = name
        self.storage = storage
        self.now = now
        self.max_window = max_window
        self.max_hold = max_hold
        self.remember = remember
        self.max_waiting = max_waiting
        self._votes: dict[tuple[str, str], _Vote] = {}
        self._owner: dict[str, tuple[str, str]] = {}  # claim -> the intention promised or committed it
        self._line: dict[tuple[str, str], _InLine] = {}  # intentions waiting for their claims
        self._line_of: dict[str, set[tuple[str, str]]] = {}  # claim -> the keys in line for it
        self._freed: set[str] = set()  # claims an owner or a waiting intention left: see who may go next
        self._expiries: list[tuple[float, tuple[str, str]]] = []  # heap; stale entries skipped
        self._finished: dict[tuple[str, str], float] = {}  # -> when to forget it; in time order
        self._load()

    def _load(self) -> None:
        stored = self.storage.get("commits")
        if not isinstance(stored, dict):
            stored = self.storage["commits"] = {}
        for skey, rec in sorted(stored.items()):
            vote = self._decode(skey, rec)
            if vote is None or any(c in self._owner for c in vote.intention.claims):
                del stored[skey]  # corrupt (or expired): nothing of it can be trusted
                continue
            # The clock may have restarted: never count a commit beyond one hold from now.
            vote.expires = min(vote.expires, self.now + vote.hold)
            if vote.expires <= self.now:
                del stored[skey]
                continue
            rec["expires"] = vote.expires
            self._install(vote)

    @staticmethod
    def _decode(skey: object, rec: object) -> _Vote | None:
        parsed = _parse_storage_key(skey)
        if parsed is None:
            return None
        proposer, iid = parsed
        if not isinstance(rec, dict) or not _text(proposer) or not _text(iid):
            return None
        claims = _claims(rec.get("claims"))
        prio, ts, expires, hold = (rec.get(k) for k in ("prio", "ts", "expires", "hold"))
        if claims is None or not (_number(prio) and _number(ts) and _number(expires)) or not _positive(hold):
            return None
        return _Vote(IntentionRecord(iid, proposer, claims, prio, ts), True, expires, hold)

    # -- status -------------------------------------------------------------------------

    def owners(self) -> dict[str, dict[str, object]]:
        """``{claim: {"id", "proposer", "state": "promised" | "committed", "expires"}}`` (read only)."""
        out = {}
        for claim, key in sorted(self._owner.items()):
            vote = self._votes[key]
            out[claim] = {"id": key[1], "proposer": key[0], "expires": vote.expires,
                          "state": "committed" if vote.committed else "promised"}
        return out

    def waiting(self) -> list[dict[str, object]]:
        """The intentions in line, in precedence order: ``[{"id", "proposer", "claims", "wait",
        "expires"}]`` (read only)."""
        return [{"id": e.intention.id, "proposer": e.intention.proposer, "claims": sorted(e.intention.claims),
                 "wait": e.wait, "expires": e.expires} for e in sorted(self._line.values(), key=lambda e: e.rank)]

    # -- inputs -------------------------------------------------------------------------

    def tick(self, now: float) -> list[Effect]:
        self._advance(now)
        return self._promote()

    def step(self, sender: str, message: object, now: float) -> list[Effect]:
        self._advance(now)
        out = self._promote()  # what expired may let others go
        if not _text(sender) or not isinstance(message, dict):
            return out
        kind, iid = message.get("t"), message.get("id")
        if type(kind) is not str or kind not in VOTER_KINDS or not _text(iid):
            return out
        key = (sender, iid)
        if kind == PREPARE:
            out += self._prepare(key, message)
        elif kind == COMMIT:
            out += self._commit(key, message)
        else:
            out += self._release(key)
        return out + self._promote()

    def _prepare(self, key: tuple[str, str], message: dict[str, Any]) -> list[Effect]:
        claims = _claims(message.get("claims"))
        prio, ts, window, wait = message.get("prio"), message.get("ts"), message.get("window"), message.get("wait", 0)
        if claims is None or not _number(prio) or not _number(ts) or not _positive(window):
            return []
        if not _number(wait) or wait < 0:
            return []
        sender, iid = key
        me = IntentionRecord(iid, sender, claims, prio, ts)
        if key in self._finished:
            return [self._no(key, why=_FINISHED)]
        known = self._votes.get(key) or self._line.get(key)
        if known is not None:
            if known.intention != me:
                return [self._no(key, why="the id names another intention of this proposer")]
            if key in self._line:  # still in line: say so again (the first answer may be lost)
                held, outranked, ahead, _ = self._blockers(me, key)
                return [self._reply(WAIT, key, held=held, outranked=outranked, ahead=ahead)]
            return [Send(sender, {"t": ACK if self._votes[key].committed else PROMISE, "id": iid})]
        for label, value in (("window", window), ("wait", wait)):
            if value > self.max_window:
                return [self._no(key, why=f"a {label} of {_secs(value)} exceeds this voter's limit of"
                                          f" {_secs(self.max_window)}")]
        # The proposer decides by max(window, wait) after it proposed, which is no later than now:
        # nothing of this intention outlives that here (stale promises never block live ones long).
        expires = self.now + max(window, wait)
        held, outranked, ahead, _ = self._blockers(me, key)
        if held and not wait:
            return [self._no(key, held=held, outranked=outranked, ahead=ahead)]
        if held or outranked or ahead:
            if len(self._line) >= self.max_waiting:
                return [self._no(key, held=held, outranked=outranked, ahead=ahead, why=self._full())]
            self._enqueue(_InLine(me, wait, expires))
            return [self._reply(WAIT, key, held=held, outranked=outranked, ahead=ahead)]
        return self._grant(me, wait, expires)

    def _commit(self, key: tuple[str, str], message: dict[str, Any]) -> list[Effect]:
        hold = message.get("hold")
        if not _positive(hold):
            return []
        vote = self._votes.get(key)
        if vote is None:
            entry = self._line.get(key)
            if entry is not None:  # revoked after its proposer counted the promise: not refused, in line still
                held, outranked, ahead, _ = self._blockers(entry.intention, key)
                return [self._reply(WAIT, key, held=held, outranked=outranked, ahead=ahead)]
            return [self._no(key, why=_FINISHED if key in self._finished else _NO_PROMISE)]
        out: list[Effect] = []
        if not vote.committed:
            if hold > self.max_hold:
                return [self._no(key, why=f"a hold of {_secs(hold)} exceeds this voter's limit of {_secs(self.max_hold)}")]
            vote.committed = True
            vote.hold = hold
            self._set_expiry(vote, self.now + hold)
            i = vote.intention
            self.storage["commits"][storage_key(key)] = {"claims": sorted(i.claims), "prio": i.priority,
                                                          "ts": i.timestamp, "expires": vote.expires, "hold": hold}
            # Those in line behind it now wait for a holder: tell them who (their reasons, should
            # their deadline come first). They stay in line: it may be done long before its hold ends.
            for other in sorted({k for c in i.claims for k in self._line_of.get(c, ())}):
                out.append(self._reply(WAIT, other, held={key: i.claims & self._line[other].intention.claims}))
        return [Send(key[0], {"t": ACK, "id": key[1]})] + out

    def _release(self, key: tuple[str, str]) -> list[Effect]:
        if key in self._votes:
            self._drop(key)
        if key in self._line:
            self._unline(key)
        self._finish(key)
        return [Send(key[0], {"t": RELEASED, "id": key[1]})]

    # -- who goes next ----------------------------------------------------------------------

    def _blockers(self, me: IntentionRecord, key: tuple[str, str]) -> _Blockers:
        held: Holders = {}
        outranked: Holders = {}
        ahead: Holders = {}
        losers: set[tuple[str, str]] = set()
        rank = precedence(me)
        for claim in me.claims:
            other = self._owner.get(claim)
            if other is not None and other != key:
                vote = self._votes[other]
                if vote.committed:
                    held[other] = held.get(other, frozenset()) | {claim}
                elif precedence(vote.intention) < rank:
                    outranked[other] = outranked.get(other, frozenset()) | {claim}
                else:
                    losers.add(other)
            for waiting in self._line_of.get(claim, ()):
                if waiting != key and self._line[waiting].rank < rank:
                    ahead[waiting] = ahead.get(waiting, frozenset()) | {claim}
        return held, outranked, ahead, losers

    def _grant(self, me: IntentionRecord, wait: float, expires: float) -> list[Effect]:
        """Promise ``me`` (nothing holds or outranks it here): promises of lower precedence on its
        claims are revoked, and go back in line (they still want their claims)."""
        key = me.key
        out: list[Effect] = []
        for other in sorted(self._blockers(me, key)[3]):
            lost = self._votes[other]
            self._drop(other)
            taken = {key: me.claims & lost.intention.claims}
            if len(self._line) < self.max_waiting:
                self._enqueue(_InLine(lost.intention, lost.wait, lost.expires))
                out.append(self._reply(WAIT, other, outranked=taken))
            else:
                out.append(self._no(other, outranked=taken, why=self._full()))
        self._install(_Vote(me, False, expires, wait=wait))
        return out + [Send(key[0], {"t": PROMISE, "id": key[1]})]

    def _promote(self) -> list[Effect]:
        """Promise, in precedence order, the intentions in line that nothing holds or outranks any
        longer, among those waiting for claims that were freed."""
        out: list[Effect] = []
        while self._freed:
            freed, self._freed = self._freed, set()
            candidates = {k for c in freed for k in self._line_of.get(c, ())}
            for key in sorted(candidates, key=lambda k: self._line[k].rank):
                entry = self._line.get(key)
                if entry is None:
                    continue
                held, outranked, ahead, _ = self._blockers(entry.intention, key)
                if held or outranked or ahead:
                    continue
                self._unline(key)
                out += self._grant(entry.intention, entry.wait, entry.expires)
        return out

    def _full(self) -> str:
        return f"{len(self._line)} intentions wait in line at this voter already, the most it keeps"

    # -- state ----------------------------------------------------------------------------

    def _reply(self, kind: str, key: tuple[str, str], held: Holders | None = None, outranked: Holders | None = None,
               ahead: Holders | None = None, why: str | None = None) -> Send:
        message: dict[str, Any] = {"t": kind, "id": key[1]}
        if ahead:
            message["ahead"] = _reported(ahead)
        if held:
            message["held"] = _reported(held)
        if outranked:
            message["outranked"] = _reported(outranked)
        if why:
            message["why"] = why
        return Send(key[0], message)

    def _no(self, key: tuple[str, str], held: Holders | None = None, outranked: Holders | None = None,
            ahead: Holders | None = None, why: str | None = None) -> Send:
        return self._reply(NO, key, held, outranked, ahead, why)

    def _install(self, vote: _Vote) -> None:
        key = vote.intention.key
        self._votes[key] = vote
        for claim in vote.intention.claims:
            self._owner[claim] = key
        heapq.heappush(self._expiries, (vote.expires, key))

    def _enqueue(self, entry: _InLine) -> None:
        key = entry.intention.key
        self._line[key] = entry
        for claim in entry.intention.claims:
            self._line_of.setdefault(claim, set()).add(key)
        heapq.heappush(self._expiries, (entry.expires, key))

    def _unline(self, key: tuple[str, str]) -> None:
        entry = self._line.pop(key)
        for claim in entry.intention.claims:
            keys = self._line_of[claim]
            keys.discard(key)
            if not keys:
                del self._line_of[claim]
        self._freed |= entry.intention.claims  # those behind it in line may go now

    def _set_expiry(self, vote: _Vote, expires: float) -> None:
        vote.expires = expires
        heapq.heappush(self._expiries, (expires, vote.intention.key))

    def _drop(self, key: tuple[str, str]) -> None:
        vote = self._votes.pop(key)
        for claim in vote.intention.claims:
            if self._owner.get(claim) == key:
                del self._owner[claim]
        if vote.committed:
            self.storage["commits"].pop(storage_key(key), None)
        self._freed |= vote.intention.claims

    def _finish(self, key: tuple[str, str]) -> None:
        self._finished.pop(key, None)
        self._finished[key] = self.now + self.remember  # now never decreases: stays in time order

    def _advance(self, now: float) -> None:
        if _number(now) and now > self.now:
            self.now = now
        while self._expiries and self._expiries[0][0] <= self.now:
            _, key = heapq.heappop(self._expiries)
            vote = self._votes.get(key)
            if vote is not None and vote.expires <= self.now:
                self._drop(key)
                if vote.committed:
                    self._finish(key)
            entry = self._line.get(key)
            if entry is not None and entry.expires <= self.now:
                self._unline(key)  # its proposer has decided by now (objected at its deadline)
        while self._finished:
            key, until = next(iter(self._finished.items()))
            if until > self.now:
                break
            del self._finished[key]


# -- the proposer --------------------------------------------------------------------------

PREPARING, COMMITTING, HELD, CLOSING = "preparing", "committing", "held", "closing"
_PROMISED, _ACKED, _REFUSED, _WAITING = "promised", "acked", "refused", "waiting"


@dataclass(eq=False)
class _Proposal:
    intention: IntentionRecord
    window: float
    hold: float
    proposed_at: float
    deadline: float  #: the window's end, or the wait's if later
    wait: float = 0.0
    phase: str = PREPARING
    votes: dict[str, str] = field(default_factory=dict)  #: voter -> _PROMISED | _ACKED | _REFUSED | _WAITING
    hold_end: float = math.inf  #: set when COMMIT is first sent
    held: Holders = field(default_factory=dict)  #: (proposer, id) -> claims, as voters reported
    outranked: Holders = field(default_factory=dict)
    ahead: Holders = field(default_factory=dict)
    whys: Counter[str] = field(default_factory=Counter)
    next_retry: float = 0.0
    released: set[str] = field(default_factory=set)  #: closing: voters that confirmed the release
    forget_at: float = math.inf

    def count(self, state: str) -> int:
        return sum(1 for s in self.votes.values() if s == state)


class IntentionProposer:
    """A node's intentions, from proposal to release. ``settle`` is how long it waits after
    proposing before it commits (see "concurrent" above); ``retry`` is the interval of its
    retransmissions."""

    def __init__(self, name: str, voters: list[str], now: float, *, settle: float = 0.05, retry: float = 0.1):
        voters = sorted(set(voters))
        if not voters or not all(_text(v) for v in voters):
            raise ValueError("voters must be a non-empty list of node names")
        if not _number(settle) or settle < 0:
            raise ValueError(f"settle must be a number of seconds >= 0, not {settle!r}")
        if not _positive(retry):
            raise ValueError(f"retry must be a positive number of seconds, not {retry!r}")
        self.name = name
        self.voters = voters
        self._voter_set = frozenset(voters)
        self.quorum = majority(len(voters))
        self.settle = settle
        self.retry = retry
        self.now = now
        self._proposals: dict[str, _Proposal] = {}

    # -- the caller's side ----------------------------------------------------------------

    def propose(self, intention_id: str, claims: Collection[str], priority: float, timestamp: float, window: float, hold: float,
                now: float, wait: float = 0.0) -> list[Effect]:
        """Propose an intention; it is decided (one ``decided`` event) within ``window``
        seconds, or ``wait`` seconds if longer: with ``wait`` it may wait in line at the voters
        for claims held by others (see above). If approved it is held for ``hold`` seconds at
        most. Raises ValueError for bad arguments or an id still in use (ids must never be
        reused)."""
        self._advance(now)
        claims = check_proposal(intention_id, claims, priority, timestamp, window, hold, settle=self.settle, wait=wait)
        if intention_id in self._proposals:
            raise ValueError(f"intention {_shown(intention_id)} is still in use; ids must never be reused")
        p = _Proposal(IntentionRecord(intention_id, self.name, claims, priority, timestamp), window, hold, self.now,
                      self.now + max(window, wait), wait, next_retry=self.now + self.retry)
        self._proposals[intention_id] = p
        return [Send(v, self._prepare_message(p)) for v in self.voters]

    def done(self, intention_id: str, now: float) -> list[Effect]:
        """The proposer is finished with the intention: a hold ends now (RELEASE goes to the
        voters); an undecided intention is withdrawn. Anything else does nothing."""
        self._advance(now)
        p = self._proposals.get(intention_id) if isinstance(intention_id, str) else None
        if p is None or p.phase == CLOSING:
            return []
        if p.phase == HELD:
            return self._close(p)
        return self._decide(p, WITHDRAWN, ["withdrawn by its proposer before it was decided"])

    def in_use(self, intention_id: object) -> bool:
        """Whether ``intention_id`` names an intention this proposer still keeps (its id is taken)."""
        return isinstance(intention_id, str) and intention_id in self._proposals

    def kept(self) -> int:
        """How many intentions it keeps now: pending, held, or closing (releases not confirmed yet)."""
        return len(self._proposals)

    def holding(self, now: float) -> dict[str, float]:
        """The intentions held at ``now``, each with its hold deadline."""
        now = max(now, self.now)
        return {iid: p.hold_end for iid, p in self._proposals.items() if p.phase == HELD and now < p.hold_end}

    def pending(self) -> list[str]:
        """Ids of the intentions not decided yet."""
        return [iid for iid, p in self._proposals.items() if p.phase in (PREPARING, COMMITTING)]

    # -- inputs -------------------------------------------------------------------------

    def tick(self, now: float) -> list[Effect]:
        self._advance(now)
        now = self.now
        out: list[Effect] = []
        for p in list(self._proposals.values()):
            if p.phase in (PREPARING, COMMITTING):
                if now >= p.deadline or now >= p.hold_end:
                    out += self._decide(p, OBJECTED, self._reasons(p, timed_out=True))
                    continue
                if p.phase == PREPARING and self._may_commit(p):
                    out += self._start_commit(p)
                elif now >= p.next_retry:
                    p.next_retry = now + self.retry
                    out += [Send(v, self._prepare_message(p)) for v in self.voters
                            if p.votes.get(v) in (None, _WAITING)]  # a waiting voter's promise may be lost
                    if p.phase == COMMITTING:
                        out += [Send(v, self._commit_message(p)) for v, s in p.votes.items() if s == _PROMISED]
            elif p.phase == HELD:
                if now >= p.hold_end:
                    out.append(Event("expired", {"id": p.intention.id}))
                    out += self._close(p)
            elif len(p.released) == len(self.voters) or now >= p.forget_at:
                del self._proposals[p.intention.id]
            elif now >= p.next_retry:
                p.next_retry = now + self.retry
                out += [Send(v, {"t": RELEASE, "id": p.intention.id}) for v in self.voters if v not in p.released]
        return out

    def step(self, sender: str, message: object, now: float) -> list[Effect]:
        self._advance(now)
        if sender not in self._voter_set or not isinstance(message, dict):
            return []
        kind, iid = message.get("t"), message.get("id")
        if type(kind) is not str or kind not in PROPOSER_KINDS or not _text(iid):
            return []
        p = self._proposals.get(iid)
        if p is None:
            return []  # unknown or forgotten (maybe from before a restart): voters expire it
        if p.phase == CLOSING:
            if kind == RELEASED:
                p.released.add(sender)
            elif kind in (PROMISE, ACK):
                return [Send(sender, {"t": RELEASE, "id": iid})]
            return []
        state = p.votes.get(sender)
        if kind == PROMISE:
            if state is None or state == _WAITING:
                p.votes[sender] = _PROMISED
                if p.phase == COMMITTING:
                    return [Send(sender, self._commit_message(p))]
                if self._may_commit(p):
                    return self._start_commit(p)
            return []
        if kind == ACK:
            if state != _ACKED:
                p.votes[sender] = _ACKED
            if (p.phase == COMMITTING and p.count(_ACKED) >= self.quorum
                    and self.now < p.hold_end and self.now < p.deadline):
                return self._decide(p, APPROVED, [])
            return []
        if kind in (NO, WAIT):
            held, outranked, ahead = (_report(message.get(k)) for k in ("held", "outranked", "ahead"))
            why = message.get("why")
            if held is None or outranked is None or ahead is None or not (why is None or _text(why, MAX_WHY)):
                return []
            if p.phase == HELD or state in (_ACKED, _REFUSED):
                return []  # stale (an acknowledgement is final, and so is a refusal), or said already
            # Waiting: the voter may still promise (a revoked promise waits in line again).
            p.votes[sender] = _REFUSED if kind == NO else _WAITING
            for mine, theirs in ((p.held, held), (p.outranked, outranked), (p.ahead, ahead)):
                for k, claims in theirs.items():
                    mine[k] = mine.get(k, frozenset()) | (claims & p.intention.claims)
            if why:
                p.whys[why] += 1
            if kind == NO and blocks_majority(len(self.voters), p.count(_REFUSED)):
                return self._decide(p, OBJECTED, self._reasons(p, timed_out=False))
        return []  # RELEASED of an intention not closing: stale

    # -- transitions ------------------------------------------------------------------------

    def _advance(self, now: float) -> None:
        if _number(now) and now > self.now:
            self.now = now

    def _prepare_message(self, p: _Proposal) -> dict[str, Any]:
        i = p.intention
        message = {"t": PREPARE, "id": i.id, "claims": sorted(i.claims), "prio": i.priority, "ts": i.timestamp,
                   "window": p.window}
        if p.wait:
            message["wait"] = p.wait
        return message

    def _commit_message(self, p: _Proposal) -> dict[str, Any]:
        return {"t": COMMIT, "id": p.intention.id, "hold": p.hold}

    def _may_commit(self, p: _Proposal) -> bool:
        return (p.phase == PREPARING and p.count(_PROMISED) >= self.quorum
                and self.now >= p.proposed_at + self.settle and self.now < p.deadline)

    def _start_commit(self, p: _Proposal) -> list[Effect]:
        p.phase = COMMITTING
        p.hold_end = self.now + p.hold  # voters count from when they accept: no earlier
        p.next_retry = self.now + self.retry
        message = self._commit_message(p)
        return [Send(v, message) for v, s in p.votes.items() if s == _PROMISED]

    def _decide(self, p: _Proposal, outcome: str, reasons: list[str]) -> list[Effect]:
        data = {"id": p.intention.id, "outcome": outcome, "reasons": reasons,
                "holders": sorted({iid for _, iid in p.held}) if outcome == OBJECTED else [],
                "outranked_by": sorted({iid for _, iid in (p.outranked.keys() | p.ahead.keys()) - p.held.keys()})
                if outcome == OBJECTED else [],
                "until": p.hold_end if outcome == APPROVED else None}
        out: list[Effect] = [Event("decided", data)]
        if outcome == APPROVED:
            p.phase = HELD
            return out
        return out + self._close(p)

    def _close(self, p: _Proposal) -> list[Effect]:
        p.phase = CLOSING
        p.next_retry = self.now + self.retry
        # By then every voter has freed the intention on its own (promises and places in line
        # last max(window, wait) from when the voter heard of it; a commit its hold).
        p.forget_at = self.now + 2 * max(p.window, p.wait) + p.hold
        return [Send(v, {"t": RELEASE, "id": p.intention.id}) for v in self.voters]

    @staticmethod
    def _outranked(p: _Proposal) -> Holders:
        """Promised ones that outranked it and did not come to hold its claims (those are holders)."""
        return {k: claims for k, claims in p.outranked.items() if k not in p.held}

    def _reasons(self, p: _Proposal, timed_out: bool) -> list[str]:
        reasons = []
        for (proposer, iid), claims in sorted(p.held.items()):
            reasons.append(f"{_quote(claims)} held by intention {iid!r} of {proposer!r}")
        for (proposer, iid), claims in sorted(self._outranked(p).items()):
            reasons.append(f"{_quote(claims)} promised to intention {iid!r} of {proposer!r}, which takes precedence")
        for (proposer, iid), claims in sorted((k, c) for k, c in p.ahead.items() if k not in p.held and k not in p.outranked):
            reasons.append(f"{_quote(claims)} wanted by intention {iid!r} of {proposer!r}, which is ahead in line")
        for why, n in sorted(p.whys.items()):
            reasons.append(f"{n} voter{'s' if n > 1 else ''}: {why}")
        n, promised, acked, refused = len(self.voters), p.count(_PROMISED), p.count(_ACKED), p.count(_REFUSED)
        waiting, silent = p.count(_WAITING), n - len(p.votes)
        tally = f"{refused} refused, " + (f"{waiting} waiting in line, " if waiting else "")
        tally += f"{silent} did not answer (quorum {self.quorum} of {n})"
        if not timed_out:
            reasons.append(f"a majority is impossible: {tally}")
        elif p.phase == COMMITTING and self.now >= p.hold_end:
            reasons.append(f"the hold ({_secs(p.hold)}) would have lapsed before a majority acknowledged the commit:"
                           f" {acked} acknowledged, {tally}")
        elif p.phase == COMMITTING:
            reasons.append(f"no majority acknowledged the commit within the {_secs(p.window)} window:"
                           f" {acked} acknowledged, {promised} promised, {tally}")
        elif p.wait > p.window:
            reasons.append(f"no majority promised within its {_secs(p.wait)} wait: {promised} promised, {tally}")
        else:
            reasons.append(f"no majority promised within the {_secs(p.window)} window: {promised} promised, {tally}")
        return reasons
