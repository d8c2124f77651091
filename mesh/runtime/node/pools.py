"""Pools and rate limits, as the leader serves them.

The leader of each term runs the coordinators of the pools and limits the node records declare
(:class:`mesh.runtime.resources.Resources`); any other node runs none and answers NotLeader.
An acquire waits in line: the request is answered when the coordinator grants or refuses it,
and with NotLeader if this node stops leading meanwhile.
"""

from __future__ import annotations

from typing import Callable

from ...core.pools import Granted, Refused
from ...errors import AcquireTimeout, NotLeader, ResourceError, WireError
from ..clock import REAL_CLOCK, Clock
from ..leadership import Leadership
from ..resources import Resources, declared_resources
from .replies import DEFER, Replies, Waiter
from .supervisor import Supervisor


class Pools:
    def __init__(self, name: str, leadership: Leadership, replies: Replies, supervisor: Supervisor,
                 on_event: Callable[[str], None], *, clock: Clock = REAL_CLOCK):
        self.name = name
        self.clock = clock  # the coordinators' time: lines, leases, rates
        self.leadership = leadership
        self.replies = replies
        self.supervisor = supervisor
        self.on_event = on_event
        self.resources: Resources | None = None  # the coordinators, while this node leads
        self._term = -1  # the term they belong to
        self._waiting: dict[str, Waiter] = {}  # request id -> who waits for the grant
        self._clashes: set[str] = set()

    @property
    def waiting(self) -> bool:
        return bool(self._waiting)

    def require_leading(self, body: dict | None = None) -> Resources:
        """The coordinators, or NotLeader (which names the leader if there is one)."""
        if self.resources is None or not self.leadership.is_leader:
            lead = self.leadership.leader
            raise NotLeader(f"node {self.name} is not the leader" + (f" (the leader is {lead})" if lead else
                                                                     " and no leader is elected yet"))
        return self.resources

    # -- control ops (the leader is required and the fields checked by the op table) ---------------

    def acquire(self, body: dict, waiter: Waiter) -> object:
        res = self.require_leading()
        request_id, holder, name = body["request_id"], body["holder"], body["name"]
        n, timeout = body.get("n", 1), body.get("timeout", 10.0)
        if request_id in self._waiting:
            raise WireError(f"request {request_id!r} is already waiting")
        self._waiting[request_id] = waiter
        now = self.clock.monotonic()
        self._deliver(res, res.acquire(request_id, holder, name, n, now + min(float(timeout), 86400.0), now))
        return DEFER

    def renew(self, body: dict) -> dict:
        res = self.require_leading()
        lease_id, name = body["lease_id"], body["name"]
        effects = res.renew(lease_id, body["holder"], name, body.get("n"), self.clock.monotonic())
        self._deliver(res, effects)
        for e in effects:
            if type(e) is Refused and e.request_id == lease_id:
                raise ResourceError(e.reason)
        return {"renewed": lease_id, "lease_ttl": res.lease_ttl(name)}

    def release(self, body: dict) -> dict:
        res = self.require_leading()
        self._deliver(res, res.release(body["lease_id"], body["name"], self.clock.monotonic()))
        return {"released": True}

    # -- time and leadership ------------------------------------------------------------------------

    def tick(self) -> None:
        res = self.resources
        if res is not None:
            self._deliver(res, res.tick(self.clock.monotonic()))

    def _deliver(self, res: Resources, effects: list) -> None:
        """Answer the waiting acquire requests the coordinator decided."""
        for e in effects:
            if type(e) is Granted:
                waiter = self._waiting.pop(e.request_id, None)
                if waiter is None:
                    continue
                body = {"request_id": e.request_id, "name": e.name, "n": e.n, "lease_id": e.lease_id,
                        "waited": e.waited, "lease_ttl": res.lease_ttl(e.name) if e.lease_id else None}
                self.replies.reply(waiter, body)
            elif type(e) is Refused:
                waiter = self._waiting.pop(e.request_id, None)
                if waiter is None:
                    continue
                err = AcquireTimeout(e.reason) if e.reason.startswith("timed out") else ResourceError(e.reason)
                self.replies.fail(waiter, err)

    def keep(self, records: dict[str, dict]) -> None:
        """The leader runs the coordinators of its term; anyone else runs none."""
        lead = self.leadership
        if not lead.is_leader or self.supervisor.stopping:
            if self.resources is not None:
                self.drop("leadership moved on")
            return
        declared, clashes = declared_resources(records)
        for why in clashes:
            if why not in self._clashes:
                self._clashes.add(why)
                self.on_event(why)
        now = self.clock.monotonic()
        if self.resources is None or self._term != lead.term:
            if self.resources is not None:
                self.drop("a new term")
            recovering = lead.term > 1
            self.resources = Resources(f"{self.name}.{lead.term}", declared, recovering, now)
            self._term = lead.term
            if declared:
                self.on_event(f"keeping pools and limits {', '.join(sorted(declared))}"
                              + (" (granting nothing new for one lease time: leases may still be held)"
                                 if recovering else ""))
        else:
            self.resources.update(declared, now)

    def drop(self, why: str) -> None:
        """Stop coordinating: whoever waits in line is told to ask the new leader."""
        for waiter in list(self._waiting.values()):
            self.replies.fail(waiter, NotLeader(f"node {self.name} stopped leading ({why}); ask the new leader"))
        self._waiting.clear()
        self.resources = None

    def snapshot(self) -> dict | None:
        return self.resources.snapshot(self.clock.monotonic()) if self.resources is not None else None
