"""The resource coordinator: mesh-wide pools (leased units) and rate limits (permits).

The elected leader runs one :class:`Coordinator` (the playbook's resource coordinator);
agents anywhere in the mesh ask it for units through their node.

Pools. ``[pools.db] size = 100`` declares 100 interchangeable units. A holder asks for
``n`` of them (:meth:`Coordinator.acquire`); the grant is a *lease* that lives
``lease_ttl`` seconds unless the holder renews it (:meth:`Coordinator.renew`), and ends
early when the holder releases it (:meth:`Coordinator.release`) or the runtime reports
the holder dead (:meth:`Coordinator.forget_holder`). Requests of a pool are served
strictly first come, first served: a request that does not fit blocks the ones behind
it, so a big request is never starved by a stream of small ones (the price is
head-of-line blocking, bounded by each request's deadline). A request still waiting at
its deadline is refused, with the reason (how long it waited, how much was held, how
many were ahead of it).

Rate limits. ``[limits.api] rate = 1000, per = "60s"`` is a token bucket of capacity
``rate``, refilled continuously at ``rate / per`` tokens a second: a burst of up to
``rate`` permits, and ``rate`` per ``per`` seconds sustained. Requests are served in
order too. A permit is spent when granted: there is no lease and nothing to release.

Bad requests (an unknown name, ``n < 1``, more than the pool's size or the limit's
rate, a request id that is already waiting or was decided within ``lease_ttl``) are
refused at once, with a reason naming what is wrong.

The holder's rule (:class:`HeldLease` implements it), all on the holder's own clock:

* a lease granted in reply to a request the holder *sent* at ``t`` is valid until
  ``t + waited + lease_ttl``, where ``waited`` (:attr:`Granted.waited`) is how long the
  request waited in the coordinator's queue: a duration, so the clocks need not agree,
  and measured from sending, so network delay only shortens the holder's view;
* a renewal sent at ``t`` extends it to ``t + lease_ttl``, but only if the reply comes
  back while the lease is still valid: a lease that lapsed stays lapsed (the holder
  releases it and acquires again);
* a holder stops using the units before it sends a release.

Guarantee: at no moment are more units of a pool held than its size, counting every
lease that some holder may still believe valid by this rule.

* Under one coordinator: it counts a lease until ``expires``, the time of the latest
  grant or renewal plus ``lease_ttl``, never before the end of the holder's view (which
  is measured from the holder's sending, earlier); it renews only leases it still
  counts, and grants only what fits (``held + n <= size``).
* Across a leader change: the new leader's coordinator (``recovering=True``) does not
  know the leases the old one granted. For one ``lease_ttl`` it grants nothing from
  pools, so a holder can only believe a lease the old leader granted, or one it renewed
  to the new leader. The old leader's replies answered requests sent before the change,
  so each of its leases ends in its holder's view within one ``lease_ttl`` of the
  change: when the grace ends, every lease a holder may believe was either renewed to
  the new leader or has lapsed. A renewal of a lease the new coordinator does not know
  is *adopted* (recorded with the holder, pool and ``n`` the renewal names) if it fits
  within the pool's size among the leases adopted so far, refused otherwise; after the
  grace an unknown lease is treated as expired. A renewal can cross the change in
  flight and reach the new leader after the old one had already expired that lease and
  granted its units again: the new leader cannot tell, and adopts it. That is why the
  holder's rule ignores a renewal whose reply arrives after its lease lapsed: every
  renewal a holder does believe renews a lease the old leader still counted, so what
  holders believe during the grace is a subset of what was valid at the change, which
  fit. (The coordinator only over-counts such a ghost until it expires or its holder
  releases it. A lease released during the grace is never adopted again.)

What the guarantee assumes: the old leader stops granting before the new one starts
(the runtime fences decisions by election term), and the clocks of holders and leaders
run at the same rate (only durations cross the wire; to cover drift, holders should
count with a ``lease_ttl`` a little shorter than the coordinator's).

A rate limit across a leader change: the new coordinator cannot know what the old one
handed out, so it starts with an empty bucket (a fresh mesh starts full). Old and new
leaders together then never issue more than one bucket would have: at most ``rate`` in
a burst, ``rate`` per ``per`` seconds sustained.

Lease ids are ``f"{prefix}:{k}"`` with a ``prefix`` the caller gives each coordinator
(the election term and leader name, say), so ids never repeat across leaders.

Pure: time comes in as ``now`` in seconds (it never goes backwards: an older ``now``
counts as the latest seen), answers are lists of effects (:class:`Granted`,
:class:`Refused`, :class:`Renewed`, :class:`Expired`) for the runtime to deliver. No
randomness is needed.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass
from typing import Any, TypeAlias, cast

_EPS = 1e-9  #: tolerance of the token bucket's float arithmetic, in tokens


def _secs(x: float) -> str:
    return f"{round(x, 3):g} s"


def _units(n: int) -> str:
    return f"{n} unit" if n == 1 else f"{n} units"


# -- the spec ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolSpec:
    size: int  #: units in the pool

    def __post_init__(self) -> None:
        if type(self.size) is not int or self.size < 1:
            raise ValueError(f"a pool's size must be a whole number of at least 1, not {self.size!r}")


@dataclass(frozen=True)
class LimitSpec:
    rate: int  #: permits per ``per`` seconds, and the largest burst
    per: float  #: seconds

    def __post_init__(self) -> None:
        if type(self.rate) is not int or self.rate < 1:
            raise ValueError(f"a limit's rate must be a whole number of at least 1, not {self.rate!r}")
        if type(self.per) not in (int, float) or not math.isfinite(self.per) or self.per <= 0:
            raise ValueError(f"a limit's period must be a positive number of seconds, not {self.per!r}")


# -- effects -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Granted:
    """``n`` units of pool (or permits of limit) ``name`` for the request. A pool grant is a
    lease ``lease_id`` the coordinator counts until ``expires`` (its own clock) unless
    renewed; a limit's permit has ``lease_id`` and ``expires`` None. ``waited`` is how long
    the request waited in the queue, in seconds: the holder adds it to the time it sent the
    request (see :class:`HeldLease`)."""

    request_id: str
    holder: str
    name: str
    n: int
    lease_id: str | None
    expires: float | None
    waited: float = 0.0


@dataclass(frozen=True)
class Refused:
    """A request (or, with ``request_id`` the lease id, a renewal) that will not be granted."""

    request_id: str
    holder: str
    name: str
    reason: str


@dataclass(frozen=True)
class Renewed:
    lease_id: str
    expires: float  #: the coordinator's clock; the holder keeps its own view (see HeldLease)


@dataclass(frozen=True)
class Expired:
    """A lease ran out without renewal; its units are free again."""

    lease_id: str
    holder: str
    name: str
    n: int


#: What the coordinator's methods return a list of: the runtime answers or tells each holder.
Outcome: TypeAlias = Granted | Refused | Renewed | Expired


# -- the holder's side ---------------------------------------------------------------------


@dataclass
class HeldLease:
    """A holder's view of one lease: the rule the coordinator's guarantee rests on. Times are
    the holder's own clock."""

    lease_id: str
    name: str
    n: int
    valid_until: float

    @classmethod
    def from_grant(cls, granted: Granted, sent: float, lease_ttl: float) -> HeldLease:
        """The lease of a grant answering a request sent at ``sent``."""
        if granted.lease_id is None:
            raise ValueError("a rate limit's permit has no lease")
        return cls(granted.lease_id, granted.name, granted.n, sent + granted.waited + lease_ttl)

    def valid(self, now: float) -> bool:
        return now < self.valid_until

    def renewed(self, sent: float, now: float, lease_ttl: float) -> bool:
        """A Renewed arrived at ``now`` for a renewal sent at ``sent``. False if the lease had
        already lapsed: it stays lapsed, and the holder should release it."""
        if not self.valid(now):
            return False
        self.valid_until = max(self.valid_until, sent + lease_ttl)
        return True


# -- the coordinator -----------------------------------------------------------------------


@dataclass
class PoolLease:
    """A lease as the coordinator keeps it (the holder's side is :class:`mesh.runtime.resources.Lease`)."""

    lease_id: str
    holder: str
    name: str
    n: int
    expires: float
    request_id: str | None = None  #: None for a lease adopted from an earlier leader


#: The former name of :class:`PoolLease`, for code not moved over yet.
Lease = PoolLease


@dataclass(eq=False)
class _Waiting:
    request_id: str
    holder: str
    name: str
    n: int
    deadline: float
    since: float


class _Pool:
    def __init__(self, spec: PoolSpec):
        self.spec = spec
        self.leases: dict[str, PoolLease] = {}
        self.held = 0
        self.queue: deque[_Waiting] = deque()


class _Limit:
    def __init__(self, spec: LimitSpec, tokens: float, now: float):
        self.spec = spec
        self.per_second = spec.rate / spec.per
        self.tokens = tokens
        self.at = now
        self.queue: deque[_Waiting] = deque()

    def level(self, now: float) -> float:
        return min(float(self.spec.rate), self.tokens + max(0.0, now - self.at) * self.per_second)


class Coordinator:
    """The leader's pools and rate limits. Every method takes ``now`` and returns effects."""

    def __init__(self, pools: dict[str, PoolSpec], limits: dict[str, LimitSpec], lease_ttl: float, now: float,
                 recovering: bool = False, *, prefix: str):
        both = sorted(set(pools) & set(limits))
        if both:
            raise ValueError(f"{', '.join(map(repr, both))} cannot name both a pool and a limit")
        if type(lease_ttl) not in (int, float) or not math.isfinite(lease_ttl) or lease_ttl <= 0:
            raise ValueError(f"lease_ttl must be a positive number of seconds, not {lease_ttl!r}")
        if not isinstance(prefix, str) or not prefix:
            raise ValueError("prefix must be a non-empty string that no other coordinator uses (the term, say)")
        for pool in pools.values():
            if not isinstance(pool, PoolSpec):
                raise TypeError(f"pools must map names to PoolSpec, not {type(pool).__name__}")
        for limit in limits.values():
            if not isinstance(limit, LimitSpec):
                raise TypeError(f"limits must map names to LimitSpec, not {type(limit).__name__}")
        self.lease_ttl = float(lease_ttl)
        self.prefix = prefix
        self.now = now
        #: pools grant nothing before this time (one lease_ttl after a leader change)
        self.grace_until = now + self.lease_ttl if recovering else now
        self._pools = {name: _Pool(spec) for name, spec in sorted(pools.items())}
        self._limits = {name: _Limit(spec, 0.0 if recovering else float(spec.rate), now)
                        for name, spec in sorted(limits.items())}
        self._leases: dict[str, PoolLease] = {}
        self._waiting: dict[str, _Waiting] = {}
        self._decided: dict[str, float] = {}  # request id -> when to forget it (in time order)
        self._released: set[str] = set()  # lease ids gone during the grace: never adopted again
        self._expiries: list[tuple[float, str]] = []  # heap, stale entries skipped
        self._deadlines: list[tuple[float, str]] = []  # heap, stale entries skipped
        self._issued = 0

    def add(self, pools: dict[str, PoolSpec], limits: dict[str, LimitSpec]) -> None:
        """Declare pools and limits that appeared since (a node joined): names already known
        keep their spec. A new limit starts full unless the coordinator is recovering."""
        for name, pool in sorted(pools.items()):
            if name not in self._pools and name not in self._limits:
                self._pools[name] = _Pool(pool)
        for name, limit in sorted(limits.items()):
            if name not in self._pools and name not in self._limits:
                self._limits[name] = _Limit(limit, 0.0 if self.recovering else float(limit.rate), self.now)

    @property
    def recovering(self) -> bool:
        """In the grace after a leader change: pools grant nothing, renewals are adopted."""
        return self.now < self.grace_until

    @property
    def leases(self) -> dict[str, PoolLease]:
        """The live leases by id (read only)."""
        return self._leases

    # -- inputs ------------------------------------------------------------------------------

    def acquire(self, request_id: str, holder: str, name: str, n: int, deadline: float, now: float) -> list[Outcome]:
        """Ask for ``n`` units of pool ``name`` (or ``n`` permits of limit ``name``), waiting
        at most until ``deadline``."""
        out = self._advance(now)
        problem = self._check(request_id, name, n, deadline)
        if problem:
            return out + [Refused(request_id, holder, name, problem)]
        waiting = _Waiting(request_id, holder, name, n, deadline, self.now)
        self._waiting[request_id] = waiting
        self._resource(name).queue.append(waiting)
        heapq.heappush(self._deadlines, (deadline, request_id))
        out += self._serve(name)
        return out + self._time_out()

    def renew(self, lease_id: str, holder: str, name: str, n: object, now: float) -> list[Outcome]:
        """Extend a lease to ``now + lease_ttl``. In the grace after a leader change, a lease
        this coordinator does not know is adopted if it fits. ``n`` is as the holder sent it:
        anything but the lease's own count is refused."""
        out = self._advance(now)
        now = self.now

        def refuse(reason: str) -> list[Outcome]:
            return out + [Refused(lease_id, holder, name, reason)]

        lease = self._leases.get(lease_id) if isinstance(lease_id, str) else None
        if lease is not None:
            if (lease.holder, lease.name, lease.n) != (holder, name, n):
                return refuse(f"lease {lease_id!r} is {_units(lease.n)} of pool {lease.name!r} held by {lease.holder!r},"
                              f" not {_units(n) if type(n) is int else repr(n)} of {name!r} held by {holder!r}")
            self._set_expiry(lease, now + self.lease_ttl)
            return out + [Renewed(lease_id, lease.expires)]
        if not isinstance(lease_id, str) or not lease_id:
            return refuse(f"a lease id must be a non-empty string, not {lease_id!r}")
        if lease_id in self._released:
            return refuse(f"lease {lease_id!r} was released or expired; acquire {name!r} again")
        if not self.recovering:
            return refuse(f"lease {lease_id!r} is unknown or has expired; acquire {name!r} again")
        pool = self._pools.get(name)
        if pool is None:
            if name in self._limits:
                return refuse(f"cannot renew lease {lease_id!r}: {name!r} is a rate limit, whose permits have no lease")
            return refuse(f"cannot renew lease {lease_id!r}: {self._unknown(name)}")
        if type(n) is not int or not 1 <= n <= pool.spec.size:
            return refuse(f"cannot renew lease {lease_id!r} of {n!r} units: pool {name!r} has {_units(pool.spec.size)}")
        if pool.held + n > pool.spec.size:
            return refuse(f"cannot adopt lease {lease_id!r} ({_units(n)}) from the previous leader: pool {name!r}"
                          f" already has {pool.held} of {pool.spec.size} held by leases renewed to this leader")
        lease = PoolLease(lease_id, holder, name, n, now + self.lease_ttl)
        self._add(pool, lease)
        return out + [Renewed(lease_id, lease.expires)]

    def release(self, lease_id: str, now: float) -> list[Outcome]:
        """Free a lease's units (releasing twice, or an unknown lease, does nothing) and grant
        what now fits."""
        out = self._advance(now)
        if self.recovering and isinstance(lease_id, str):
            self._released.add(lease_id)
        lease = self._leases.get(lease_id) if isinstance(lease_id, str) else None
        if lease is None:
            return out
        self._drop(lease)
        return out + self._serve(lease.name)

    def forget_holder(self, holder: str, now: float) -> list[Outcome]:
        """The holder died: free everything it holds and drop its waiting requests."""
        out = self._advance(now)
        touched: set[str] = set()
        for lease in [lease for lease in self._leases.values() if lease.holder == holder]:
            self._drop(lease)
            touched.add(lease.name)
        for waiting in [w for w in self._waiting.values() if w.holder == holder]:
            self._resource(waiting.name).queue.remove(waiting)
            del self._waiting[waiting.request_id]
            touched.add(waiting.name)
        for name in sorted(touched):
            out += self._serve(name)
        return out

    def tick(self, now: float) -> list[Outcome]:
        """Expire leases, end the grace, refill buckets, grant what fits, time out the rest."""
        return self._advance(now)

    # -- status ------------------------------------------------------------------------------

    def snapshot(self, now: float) -> dict[str, Any]:
        """``{"pools": {name: {"size", "held", "queued", "leases"}}, "limits": {name: {"rate",
        "per", "available"}}, "recovering": seconds of grace left (0.0 when none)}``, as of
        ``now`` (nothing changes)."""
        now = max(now, self.now)
        pools = {}
        for name, pool in self._pools.items():
            live = [lease for lease in pool.leases.values() if lease.expires > now]
            pools[name] = {"size": pool.spec.size, "held": sum(lease.n for lease in live),
                           "queued": len(pool.queue), "leases": len(live)}
        limits = {name: {"rate": limit.spec.rate, "per": limit.spec.per,
                         "available": math.floor(limit.level(now) + _EPS), "queued": len(limit.queue)}
                  for name, limit in self._limits.items()}
        return {"pools": pools, "limits": limits, "recovering": max(0.0, self.grace_until - now)}

    def wake_at(self) -> float | None:
        """The earliest time a :meth:`tick` may have something to do (None: nothing pending).
        It can be early, never late."""
        times = []
        if self._expiries:
            times.append(self._expiries[0][0])
        if self._deadlines:
            times.append(self._deadlines[0][0])
        if self.recovering:
            times.append(self.grace_until)
        for limit in self._limits.values():
            if limit.queue:
                missing = limit.queue[0].n - limit.tokens
                times.append(limit.at + max(0.0, missing) / limit.per_second)
        return min(times) if times else None

    # -- the machinery -----------------------------------------------------------------------

    def _advance(self, now: float) -> list[Outcome]:
        if now > self.now:
            self.now = now
        now = self.now
        out: list[Outcome] = []
        if not self.recovering:
            self._released.clear()
        while self._expiries and self._expiries[0][0] <= now:
            _, lease_id = heapq.heappop(self._expiries)
            lease = self._leases.get(lease_id)
            if lease is not None and lease.expires <= now:
                self._drop(lease)
                out.append(Expired(lease.lease_id, lease.holder, lease.name, lease.n))
        while self._decided:
            request_id, until = next(iter(self._decided.items()))
            if until > now:
                break
            del self._decided[request_id]
        for limit in self._limits.values():
            limit.tokens = limit.level(now)
            limit.at = now
        for name in list(self._pools) + list(self._limits):
            out += self._serve(name)
        return out + self._time_out()

    def _serve(self, name: str) -> list[Outcome]:
        """Grant the head of ``name``'s queue while it fits, in order."""
        out: list[Outcome] = []
        pool = self._pools.get(name)
        if pool is not None:
            if self.recovering:
                return out
            while pool.queue and pool.held + pool.queue[0].n <= pool.spec.size:
                waiting = pool.queue.popleft()
                self._decide(waiting.request_id)
                self._issued += 1
                lease = PoolLease(f"{self.prefix}:{self._issued}", waiting.holder, name, waiting.n,
                              self.now + self.lease_ttl, waiting.request_id)
                self._add(pool, lease)
                out.append(Granted(waiting.request_id, waiting.holder, name, waiting.n, lease.lease_id, lease.expires,
                                   self.now - waiting.since))
            return out
        limit = self._limits[name]
        while limit.queue and limit.tokens + _EPS >= limit.queue[0].n:
            waiting = limit.queue.popleft()
            self._decide(waiting.request_id)
            limit.tokens = max(0.0, limit.tokens - waiting.n)
            out.append(Granted(waiting.request_id, waiting.holder, name, waiting.n, None, None, self.now - waiting.since))
        return out

    def _time_out(self) -> list[Outcome]:
        out: list[Outcome] = []
        now = self.now
        while self._deadlines and self._deadlines[0][0] <= now:
            _, request_id = heapq.heappop(self._deadlines)
            waiting = self._waiting.get(request_id)
            if waiting is None or waiting.deadline > now:
                continue
            queue = self._resource(waiting.name).queue
            ahead = queue.index(waiting)
            out.append(Refused(request_id, waiting.holder, waiting.name, self._timed_out(waiting, ahead)))
            queue.remove(waiting)
            self._decide(request_id)
            if ahead == 0:
                out += self._serve(waiting.name)
        return out

    def _timed_out(self, waiting: _Waiting, ahead: int) -> str:
        waited = _secs(self.now - waiting.since)
        queue = f"{ahead} ahead in the queue"
        pool = self._pools.get(waiting.name)
        if pool is not None:
            why = f"{pool.held} of {pool.spec.size} held, {queue}"
            if self.recovering:
                why += (f"; a new leader grants nothing for {_secs(self.grace_until - self.now)} more,"
                        " until the previous leader's leases have run out")
            return f"timed out after {waited} waiting for {_units(waiting.n)} of pool {waiting.name!r} ({why})"
        limit = self._limits[waiting.name]
        available = math.floor(limit.tokens + _EPS)
        return (f"timed out after {waited} waiting for {waiting.n} of limit {waiting.name!r}'s permits"
                f" ({available} of {limit.spec.rate} available, refilling {limit.per_second:g} a second, {queue})")

    def _check(self, request_id: object, name: object, n: object, deadline: object) -> str:
        if not isinstance(request_id, str) or not request_id:
            return f"a request id must be a non-empty string, not {request_id!r}"
        # type(), not isinstance(): a bool is no deadline. mypy narrows only the latter, hence the cast.
        if type(deadline) not in (int, float) or math.isnan(cast(float, deadline)):
            return f"a deadline must be a time in seconds, not {deadline!r}"
        if request_id in self._waiting:
            return f"duplicate request id {request_id!r}: a request with this id is already waiting"
        if request_id in self._decided:
            return f"duplicate request id {request_id!r}: a request with this id was already decided"
        if name in self._pools:
            kind, most = "pool", self._pools[name].spec.size
        elif name in self._limits:
            kind, most = "limit", self._limits[name].spec.rate
        else:
            return self._unknown(name)
        if type(n) is not int:
            return f"the number of units asked of {kind} {name!r} must be a whole number, not {n!r}"
        if n < 1:
            return f"asked for {n} units of {kind} {name!r}: ask for at least 1"
        if n > most:
            if kind == "pool":
                return f"asked for {n} units of pool {name!r}, which has only {most}: it could never be granted"
            return (f"asked for {n} permits of limit {name!r}, more than its rate of {most} per"
                    f" {_secs(self._limits[name].spec.per)}: it could never be granted")
        return ""

    def _unknown(self, name: object) -> str:
        pools = ", ".join(map(repr, self._pools)) or "none"
        limits = ", ".join(map(repr, self._limits)) or "none"
        return f"no pool or limit named {name!r} (pools: {pools}; limits: {limits})"

    def _resource(self, name: str) -> _Pool | _Limit:
        return self._pools[name] if name in self._pools else self._limits[name]

    def _decide(self, request_id: str) -> None:
        self._waiting.pop(request_id, None)
        self._decided.pop(request_id, None)  # keep the dict in time order
        self._decided[request_id] = self.now + self.lease_ttl

    def _set_expiry(self, lease: PoolLease, expires: float) -> None:
        lease.expires = expires
        heapq.heappush(self._expiries, (expires, lease.lease_id))

    def _add(self, pool: _Pool, lease: PoolLease) -> None:
        pool.leases[lease.lease_id] = lease
        pool.held += lease.n
        self._leases[lease.lease_id] = lease
        self._set_expiry(lease, lease.expires)

    def _drop(self, lease: PoolLease) -> None:
        pool = self._pools[lease.name]
        del pool.leases[lease.lease_id]
        pool.held -= lease.n
        del self._leases[lease.lease_id]
        if self.recovering:
            self._released.add(lease.lease_id)
