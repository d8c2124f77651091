"""Mesh-wide pools and rate limits: the leader's coordinators, and the holder's leases.

The leader node runs :class:`Resources` (one :class:`mesh.core.pools.Coordinator` per
lease time, as pools may declare different ones); every node answers ``leader`` so a
client can find it; ``acquire`` waits at the leader, in line, until granted, refused
or timed out. A client holds a :class:`Lease` and renews it in the background every
third of its lease time; a holder that dies stops renewing, and its units come back
when the lease expires.

During an election nothing is granted (there is no leader to ask: ``acquire`` keeps
trying the new leader until its own timeout). A new leader knows nothing of the
leases the old one granted, so for one lease time it grants nothing from pools and
adopts the leases their holders renew to it (rate limits start empty): see the
docstring of :mod:`mesh.core.pools` for why that keeps every pool within its size.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, TypeAlias

from ..core.pools import Coordinator, Granted, HeldLease, LimitSpec, Outcome, PoolSpec, Refused
from ..errors import AcquireTimeout, MeshError, NodeUnavailable, NotLeader, ResourceError
from . import rpc

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client

log = logging.getLogger("mesh.resources")

DEFAULT_LEASE_S = 10.0

#: One declared resource: ("pool", size, lease seconds) or ("limit", rate, per seconds).
Declaration: TypeAlias = tuple[str, int, float]


class Resources:
    """The leader's side: requests in, grants and refusals out (as effects)."""

    def __init__(self, prefix: str, declared: dict[str, Declaration], recovering: bool, now: float):
        self.prefix = prefix
        self.recovering = recovering
        self._by_ttl: dict[float, Coordinator] = {}
        self._route: dict[str, Coordinator] = {}
        self._ids = itertools.count()
        self.update(declared, now)

    def update(self, declared: dict[str, Declaration], now: float) -> None:
        """``declared``: name -> ("pool", size, lease seconds) | ("limit", rate, per seconds)."""
        for name, (kind, count, seconds) in sorted(declared.items()):
            if name in self._route:
                continue
            ttl = float(seconds) if kind == "pool" else DEFAULT_LEASE_S
            coord = self._by_ttl.get(ttl)
            if coord is None:
                coord = self._by_ttl[ttl] = Coordinator({}, {}, ttl, now, self.recovering,
                                                        prefix=f"{self.prefix}.{next(self._ids)}")
            if kind == "pool":
                coord.add({name: PoolSpec(count)}, {})
            else:
                coord.add({}, {name: LimitSpec(count, float(seconds))})
            self._route[name] = coord

    def coordinator(self, name: str) -> Coordinator | None:
        return self._route.get(name)

    def lease_ttl(self, name: str) -> float | None:
        c = self._route.get(name)
        return c.lease_ttl if c else None

    def acquire(self, request_id: str, holder: str, name: str, n: int, deadline: float, now: float) -> list[Outcome]:
        c = self._route.get(name)
        if c is None:
            known = ", ".join(sorted(self._route)) or "none are declared"
            return [Refused(request_id, holder, name, f"no pool or limit named {name!r} (known: {known})")]
        return c.acquire(request_id, holder, name, n, deadline, now)

    def renew(self, lease_id: str, holder: str, name: str, n: object, now: float) -> list[Outcome]:
        c = self._route.get(name)
        if c is None:
            return [Refused(lease_id, holder, name, f"no pool named {name!r}")]
        return c.renew(lease_id, holder, name, n, now)

    def release(self, lease_id: str, name: str, now: float) -> list[Outcome]:
        c = self._route.get(name)
        return c.release(lease_id, now) if c else []

    def tick(self, now: float) -> list[Outcome]:
        out: list[Outcome] = []
        for c in self._by_ttl.values():
            wake = c.wake_at()
            if wake is not None and now >= wake:
                out += c.tick(now)
        return out

    def snapshot(self, now: float) -> dict[str, Any]:
        pools: dict[str, Any] = {}
        limits: dict[str, Any] = {}
        grace = 0.0
        for c in self._by_ttl.values():
            snap = c.snapshot(now)
            pools.update(snap.get("pools", {}))
            limits.update(snap.get("limits", {}))
            grace = max(grace, snap.get("recovering") or 0.0)
        return {"pools": pools, "limits": limits, "recovering_s": round(grace, 3)}


def declared_resources(records: dict[str, Any]) -> tuple[dict[str, Declaration], list[str]]:
    """Merge the pools and limits every node's spec declares (the lowest node name wins a
    clash). Returns the declarations and the clashes, as sentences."""
    out: dict[str, Declaration] = {}
    owner: dict[str, str] = {}
    clashes: list[str] = []
    for node in sorted(records):
        rec = records[node]
        for kind, key in (("pool", "pools"), ("limit", "limits")):
            items = rec.get(key) if isinstance(rec, dict) else None
            for item in items if isinstance(items, list) else []:
                if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)
                        and type(item[1]) is int and item[1] >= 1 and isinstance(item[2], (int, float)) and item[2] > 0):
                    continue
                name, count, seconds = item
                entry = (kind, count, float(seconds))
                if name in out:
                    if out[name] != entry:
                        clashes.append(f"{kind} {name!r} is declared differently by nodes {owner[name]!r} and"
                                       f" {node!r}: {owner[name]!r}'s declaration holds")
                    continue
                out[name] = entry
                owner[name] = node
    return out, clashes


# -- the holder's side ------------------------------------------------------------------------


class Lease:
    """Units of a pool held by this process (or a rate limit's permit, which needs no release).

    A context manager (``with client.acquire("db") as lease:``) that releases on exit. The
    client renews it in the background; ``valid`` turns False if a renewal could not be
    confirmed in time (say the mesh lost its leader for longer than the lease time), and the
    holder should then stop using the units.
    """

    def __init__(self, client: "Client", name: str, n: int, lease_id: str | None, valid_until: float | None,
                 lease_ttl: float | None, holder: str):
        self.client = client
        self.name = name
        self.n = n
        self.lease_id = lease_id
        self.lease_ttl = lease_ttl
        self.holder = holder
        self._held: HeldLease | None = None
        if lease_id:
            if valid_until is None:
                raise ValueError(f"lease {lease_id} of {name!r} needs the time it is valid until")
            self._held = HeldLease(lease_id, name, n, valid_until)
        self.renew_at = time.monotonic() + (lease_ttl / 3 if lease_ttl else 0.0)  # the renewer's schedule
        self.released = False
        self.lost = False

    @property
    def valid(self) -> bool:
        if self._held is None:
            return not self.released
        return not self.released and not self.lost and self._held.valid(time.monotonic())

    @property
    def valid_until(self) -> float | None:
        """This holder's own deadline (``time.monotonic()``) for the units, renewals included."""
        return self._held.valid_until if self._held else None

    def release(self) -> None:
        """Give the units back (idempotent). A rate limit's permit has nothing to give back."""
        if self.released:
            return
        self.released = True
        if self._held is None:
            return
        self.client._leases.discard(self)
        try:
            rpc.release(self.client, self._held.lease_id, self.name)
        except MeshError as exc:  # the lease expires by itself
            log.info("release of %s (%s) not confirmed: %s", self.lease_id, self.name, exc)

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    async def __aenter__(self) -> "Lease":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.release)

    def __repr__(self) -> str:
        state = "released" if self.released else ("valid" if self.valid else "lost")
        return f"Lease({self.name!r}, n={self.n}, {self.lease_id or 'permit'}, {state})"

    # -- renewal (the client's renewer thread) --------------------------------------------

    def _renew(self) -> bool:
        """One renewal; False if it could not be confirmed (the renewer tries again soon)."""
        held, ttl = self._held, self.lease_ttl
        if held is None or ttl is None or self.released or self.lost:
            return True
        sent = time.monotonic()
        try:
            rpc.renew(self.client, held.lease_id, self.holder, self.name, self.n, min(1.0, ttl / 4))
        except (ResourceError, NotLeader, NodeUnavailable, MeshError) as exc:
            if isinstance(exc, ResourceError):
                self._lose(f"renewal refused: {exc}")
            elif not held.valid(time.monotonic()):
                self._lose(f"no renewal confirmed within the lease time ({exc})")
            return False
        if not held.renewed(sent, time.monotonic(), ttl):
            self._lose("the renewal came back after the lease had lapsed")
        return True

    def _lose(self, why: str) -> None:
        if not self.lost:
            self.lost = True
            log.warning("lease %s of %s lost: %s", self.lease_id, self.name, why)
            self.client._leases.discard(self)


class Renewer:
    """One thread per client that renews its leases every third of their lease time."""

    def __init__(self, leases: "weakref.WeakSet[Lease]"):
        self.leases = leases
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mesh-lease-renewer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for lease in list(self.leases):
                ttl = lease.lease_ttl
                if ttl is None:  # a rate limit's permit: nothing to renew (the client hands over none)
                    continue
                if time.monotonic() >= lease.renew_at:
                    ok = lease._renew()
                    # After a failure (an election, a dead leader) try again soon, not in a third.
                    lease.renew_at = time.monotonic() + (ttl / 3 if ok else min(0.1, ttl / 10))

    def stop(self) -> None:
        self._stop.set()


def granted_lease(client: "Client", answer: "rpc.Grant", sent: float, holder: str) -> Lease:
    """The Lease for an ``acquire`` answer of the leader."""
    lease_id = answer.get("lease_id")
    ttl = answer.get("lease_ttl")
    if lease_id is None:
        return Lease(client, answer["name"], answer["n"], None, None, None, holder)
    if ttl is None:  # the leader answers every lease with its lease time
        raise MeshError(f"lease {lease_id} of {answer['name']!r} came without its lease time")
    g = Granted(answer.get("request_id", ""), holder, answer["name"], answer["n"], lease_id, None,
                float(answer.get("waited") or 0.0))
    held = HeldLease.from_grant(g, sent, float(ttl))
    return Lease(client, answer["name"], answer["n"], lease_id, held.valid_until, float(ttl), holder)


__all__ = ["Resources", "Lease", "Renewer", "declared_resources", "granted_lease", "AcquireTimeout"]
