"""A plain client hears topics: ``client.subscribe(topic, callback)`` and ``client.unsubscribe(topic)``.

An actor's events go through its own mailbox (``on_event``); a client has no mailbox, so its
events are handed to callbacks instead, on the one thread of the client's
:class:`~mesh.runtime.broadcast.Subscriptions` (so a callback that blocks holds up the client's
other callbacks, not the publishers: past ``BROADCAST_HWM`` unread events the excess is dropped).
A callback that raises is logged and the next event still comes. ``subscribe`` returns once
every live node's forwarder has the subscription in place: an event published anywhere after
that reaches the callback. The client's subscriptions end when it closes. (A client is not
listed in ``$subs/``: that list names actors, to whom events can be sent one by one.)
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Callable

from .. import wire
from ..errors import WireError
from ..topics import Event, check_topic
from .broadcast import BROADCAST_MAX_BYTES, Subscriptions, event_topic

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client

log = logging.getLogger("mesh.broadcast")

Callback = Callable[[Event], object]


class TopicCallbacks:
    """A client's subscriptions: one callback per topic, called on one thread."""

    def __init__(self, client: "Client"):
        self._client = client
        self._callbacks: dict[bytes, Callback] = {}
        self._lock = threading.Lock()
        self._subscriptions: Subscriptions | None = None

    def subscribe(self, topic: str, callback: Callback) -> list[str]:
        """Call ``callback(event)`` for each event on ``topic`` from now on (a second subscribe to
        the same topic replaces its callback); returns the nodes that did not confirm in time."""
        check_topic(topic)
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        frame_topic = event_topic(topic)
        with self._lock:
            if self._subscriptions is None:
                self._subscriptions = Subscriptions(self._client, self._deliver, self._client.name)
            subscriptions = self._subscriptions
            self._callbacks[frame_topic] = callback
        return subscriptions.subscribe(frame_topic)

    def unsubscribe(self, topic: str) -> None:
        """No more events on ``topic`` (an event already received may still be handed over)."""
        check_topic(topic)
        frame_topic = event_topic(topic)
        with self._lock:
            self._callbacks.pop(frame_topic, None)
            if self._subscriptions is not None:
                self._subscriptions.unsubscribe(frame_topic)

    def close(self) -> None:
        with self._lock:
            subscriptions, self._subscriptions = self._subscriptions, None
            self._callbacks.clear()
        if subscriptions is not None:
            subscriptions.close()

    def _deliver(self, topic: bytes, frame: bytes) -> None:
        """A broadcast, on the subscriptions' thread."""
        callback = self._callbacks.get(topic)
        if callback is None:
            return  # unsubscribed meanwhile, or not an event
        try:
            env = wire.decode_one(frame, BROADCAST_MAX_BYTES)
        except WireError as exc:
            log.warning("%s: a malformed event dropped: %s", self._client.name, exc)
            return
        body = env[wire.BODY]
        if env[wire.KIND] != int(wire.Kind.EVENT) or not isinstance(body, dict) \
                or not isinstance(body.get("topic"), str) or not isinstance(body.get("id"), str):
            log.warning("%s: a broadcast that is not an event dropped", self._client.name)
            return
        corr = body.get("corr")
        callback(Event(body["topic"], body.get("data"), body["id"], corr if isinstance(corr, str) else None,
                       env[wire.SENDER]))
