"""The actor base class users subclass, and the context every actor gets as ``self.mesh``.

Failure rules (one per send mode, as in pykka):

* ask: an exception raised by ``on_message`` travels back to the asker as
  :class:`mesh.RemoteError` (type, message and traceback text); the actor goes on.
* tell: nobody waits for an answer, so an exception is logged and the actor's
  process ends with exit code 1; its node's restart policy then applies.
* ``on_start`` raising ends the process the same way; ``on_stop`` raising is logged.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .runtime.client import ActorRef, Client
    from .runtime.server import Server


class Actor:
    """Subclass this and override the hooks you need. Hooks may be ``async def``.

    * ``on_start()``: runs in the actor's process before the first message.
    * ``on_message(message)``: one message at a time; the return value is the
      reply to an ask (ignored for a tell).
    * ``on_stop()``: runs once when the actor is stopped gracefully.
    * ``on_event(event)``: an event on a topic this actor subscribed to
      (:class:`mesh.topics.Event`: topic, data, id, corr, sender).
    """

    mesh: "ActorContext"

    def on_start(self) -> object:
        return None

    def on_message(self, message: object) -> object:
        return None

    def on_stop(self) -> object:
        return None

    def on_event(self, event) -> object:
        return None

    def on_intention(self, intention) -> object:
        """Another actor proposes ``intention``: return None to approve, or
        ``mesh.Objection(reason, weight=1.0, kind="finding" | "strategy")`` to object."""
        return None


class ActorContext:
    """What an actor knows of the mesh: ``self.mesh`` inside every hook."""

    def __init__(self, server: "Server", client: "Client"):
        self._server = server
        self.client = client
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
    def state(self):
        """The mesh's shared key/value state: ``get``, ``set``, ``delete``, ``items``, ``watch``."""
        return self.client.state

    def actor(self, name: str) -> "ActorRef":
        """A reference to another actor, by name, anywhere in the mesh."""
        return self.client.actor(name)

    def propose(self, action: object, claims=(), priority: float = 0, window: float = 0.2, hold: float = 30.0,
                evidence: float = 1.0, escalation_timeout: float = 60.0):
        """Announce ``action`` before doing it; returns a :class:`mesh.Decision` within about
        ``window`` seconds (longer if escalated). See :mod:`mesh.runtime.intents`."""
        from .runtime.intents import propose

        return propose(self.client, self.name, action, claims, priority, window, hold, evidence, escalation_timeout)

    async def propose_async(self, action: object, claims=(), priority: float = 0, window: float = 0.2,
                            hold: float = 30.0, evidence: float = 1.0, escalation_timeout: float = 60.0):
        import asyncio

        return await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.propose(action, claims, priority, window, hold, evidence, escalation_timeout))

    def publish(self, topic: str, data: object = None, corr: str | None = None) -> str:
        """Send ``data`` to every subscriber of ``topic`` (fire-and-forget); returns the event id."""
        return self.client.publish(topic, data, corr)

    def subscribe(self, topic: str) -> None:
        """Receive the events published on ``topic`` in ``on_event``, from now on."""
        self.client.control("subscribe", topic=topic, actor=self.name)

    def unsubscribe(self, topic: str) -> None:
        self.client.control("unsubscribe", topic=topic, actor=self.name)

    def acquire(self, name: str, n: int = 1, timeout: float = 10.0):
        """Wait for ``n`` units of the mesh-wide pool ``name`` (or permits of rate limit ``name``),
        at most ``timeout`` seconds; returns a Lease, a context manager that releases them."""
        return self.client.acquire(name, n, timeout, holder=self.name)

    async def acquire_async(self, name: str, n: int = 1, timeout: float = 10.0):
        """:meth:`acquire` for async handlers: ``async with await self.mesh.acquire_async("db"):``."""
        return await self.client.acquire_async(name, n, timeout, holder=self.name)

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
