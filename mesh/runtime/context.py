"""``self.mesh``: what an actor knows of the mesh, inside every hook from ``on_start`` on.

The server that runs the actor makes one (:mod:`mesh.runtime.server`); its requests to the
node go through the actor's own client and :mod:`mesh.runtime.rpc`.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Iterable

from . import rpc
from ..topics import check_topic
from .aio import async_twin
from .broadcast import event_topic
from .cancels import cancelled_now
from .intents import propose
from .usage import USAGE

if TYPE_CHECKING:  # pragma: no cover
    from ..intentions import Decision
    from .client import Client
    from .ref import ActorRef
    from .resources import Lease
    from .server import Server
    from .state import SharedState


class ActorContext:
    """What an actor knows of the mesh: ``self.mesh`` inside every hook."""

    def __init__(self, server: "Server", client: "Client"):
        self._server = server
        self._client = client
        self.name: str = server.name
        self.node: str = client.node
        self.log = logging.getLogger(f"mesh.actor.{server.name}")

    @property
    def incarnation(self) -> int:
        """How many times the node has started an actor with this name before (0 = first)."""
        return self._server.incarnation

    @property
    def sender(self) -> str | None:
        """The name of the sender of the message being handled."""
        return self._server.current_sender

    @property
    def cancelled(self) -> bool:
        """Whether the asker of the message being handled gave up on it (its ask timed out): a long
        handler polls this and stops early. ``async def`` handlers are cancelled instead
        (``asyncio.CancelledError``). Seen within ``CANCEL_BOUND_S``; see :mod:`mesh.runtime.cancels`."""
        return cancelled_now(self._server)

    @property
    def state(self) -> "SharedState":
        """The mesh's shared key/value state: ``get``, ``set``, ``delete``, ``items``, ``watch``."""
        return self._client.state

    def actor(self, name: str) -> "ActorRef":
        """A reference to another actor, by name, anywhere in the mesh."""
        return self._client.actor(name)

    def propose(self, action: object, *, claims: Iterable[str] = (), priority: float = 0, window: float = 0.2, hold: float = 30.0,
                evidence: float = 1.0, escalation_timeout: float = 60.0, wait: float = 0.0,
                require: Iterable[str] = ()) -> "Decision":
        """Announce ``action`` before doing it; returns a :class:`mesh.Decision` within about
        ``window`` seconds (``wait`` if longer: up to that long in line for claims others hold;
        longer if escalated), sooner once every listener has answered. ``require``: actors whose
        silence (or not listening) objects. See :mod:`mesh.runtime.intents`."""
        return propose(self._client, self.name, action, claims=claims, priority=priority, window=window, hold=hold,
                       evidence=evidence, escalation_timeout=escalation_timeout, wait=wait, require=require)

    propose_async = async_twin(propose)

    def publish(self, topic: str, data: object = None, corr: str | None = None) -> str:
        """Send ``data`` to every subscriber of ``topic`` (fire-and-forget); returns the event id."""
        return self._client.publish(topic, data, corr)

    def subscribe(self, topic: str) -> None:
        """Receive the events published on ``topic`` in ``on_event``, from now on: when this
        returns, every live node's forwarder has the subscription in place, so an event published
        anywhere after it is delivered (see :mod:`mesh.runtime.broadcast`)."""
        check_topic(topic)
        rpc.subscribe(self._client, topic, self.name)  # listed in the shared state ($subs/TOPIC/ACTOR)
        self._server.subscriptions().subscribe(event_topic(topic))

    def subscribed_nodes(self) -> list[str]:
        """The nodes whose forwarders have this actor's subscriptions in place (all live nodes,
        a few milliseconds after one joins): events published there reach it."""
        return self._server.subscriptions().confirmed()

    def unsubscribe(self, topic: str) -> None:
        check_topic(topic)
        rpc.unsubscribe(self._client, topic, self.name)
        self._server.subscriptions().unsubscribe(event_topic(topic))

    def alert(self, reason: str, data: object = None, *, by: str | None = None) -> "rpc.Alert":
        """Raise an alert that waits for a person: kept in the shared state until acknowledged
        (``mesh ack ID``), shown by ``mesh status`` and ``mesh alerts``, and published on the HELP
        topic. ``by`` defaults to this actor's name. See :meth:`mesh.Client.alert`."""
        return self._client.alert(reason, data, by=by or self.name)

    def task_done(self, n: int = 1) -> None:
        """Count ``n`` tasks this agent completed: the playbook's throughput in tasks, reported with its
        heartbeat (``tasks_completed`` in its metrics). The patterns count theirs."""
        USAGE.tasks += max(0, int(n))

    def acquire(self, name: str, *, n: int = 1, timeout: float = 10.0) -> "Lease":
        """Wait for ``n`` units of the mesh-wide pool ``name`` (or permits of rate limit ``name``),
        at most ``timeout`` seconds; returns a Lease, a context manager that releases them."""
        began = time.perf_counter()
        try:
            return self._client.acquire(name, n=n, timeout=timeout, holder=self.name)
        finally:
            USAGE.pool_waits += 1
            USAGE.pool_wait_s += time.perf_counter() - began

    acquire_async = async_twin(acquire)

    def after(self, delay: float, message: object) -> None:
        """Deliver ``message`` to this actor as a tell after ``delay`` seconds."""
        self._server.schedule(delay, message, None)

    def every(self, interval: float, message: object) -> None:
        """Deliver ``message`` to this actor as a tell every ``interval`` seconds."""
        if interval <= 0:
            raise ValueError("interval must be > 0 seconds")
        self._server.schedule(interval, message, interval)

    def stop(self) -> None:
        """Stop this actor after the current message: ``on_stop`` runs, then the process exits 0."""
        self._server.request_stop()
