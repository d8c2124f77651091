"""Hearing intentions in an actor's process: ``on_intention`` beside the handler.

An actor that defines ``on_intention`` subscribes to the intentions' topic (``i/``, see
:mod:`.broadcast`) and completes the subscription handshake *before* it registers with its
node as a listener: a proposer's node counts a listener only once its subscription is in
place at every live node's forwarder, so no listener it waits for misses the broadcast.

The subscriptions' thread hands each intention to the hearer's own thread (so a slow
``on_intention`` holds up no event), which calls ``on_intention`` there (an ``async def``
hook on an event loop that thread owns) and answers the node that published the intention,
on the router path (op ``intent_answer``). That node counts the answer if it comes within
the intention's window.

So ``on_intention`` runs concurrently with ``on_message`` and the other hooks, never behind
them: a busy listener still answers in time. It should read mostly, or guard what it shares
with the handler with a lock. An intention this actor proposed is not heard. At most
``QUEUED`` intentions wait to be heard; more are dropped (silence).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import queue
import threading
from typing import TYPE_CHECKING, Any

import msgpack

from ..actor import Actor
from ..errors import MeshError
from ..intentions import Intention, Objection
from . import rpc, tracing

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client

log = logging.getLogger("mesh.server")

#: Intentions waiting to be heard, at most; more are dropped (their proposers hear silence).
QUEUED = 1000
#: Seconds an answer may take to reach the proposer's node beyond the intention's window.
ANSWER_SLACK_S = 0.5


def hears_intentions(actor: Actor) -> bool:
    """Whether ``actor`` defines ``on_intention``."""
    return type(actor).on_intention is not Actor.on_intention


def intention_of(data: dict[str, Any]) -> Intention:
    """An intention as ``on_intention`` hears it, from the broadcast's fields."""
    listed = data.get("claims")
    claims = listed if isinstance(listed, list) else []
    window = data.get("window", 0)
    return Intention(str(data.get("id")), data.get("action"), tuple(map(str, claims)), data.get("priority", 0),
                     str(data.get("proposer")), window if isinstance(window, (int, float)) else 0)


def objection_body(result: object) -> dict[str, Any] | None:
    """What ``on_intention`` returned, as its answer carries it."""
    if isinstance(result, Objection):
        return {"reason": result.reason, "weight": result.weight, "kind": result.kind}
    return None


class Hearer:
    """Runs ``on_intention`` on a thread of its own and answers the proposers' nodes."""

    def __init__(self, actor: Actor, name: str, client: "Client", stopping: threading.Event):
        self.actor = actor
        self.name = name
        self.client = client
        self.stopping = stopping
        self.dropped = 0  #: intentions not heard: the queue was full, or the broadcast malformed
        self._queue: queue.Queue[bytes] = queue.Queue(QUEUED)
        self._aloop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="mesh-intentions", daemon=True)
        self._thread.start()

    def take(self, frame: bytes) -> None:
        """An intention's broadcast, on the subscriptions' thread: queued, never waited on."""
        try:
            self._queue.put_nowait(frame)
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                try:
                    frame = self._queue.get(timeout=0.2)
                except queue.Empty:
                    continue
                self._hear(frame)
        finally:
            if self._aloop is not None:
                self._aloop.close()

    def _hear(self, frame: bytes) -> None:
        try:
            data = msgpack.unpackb(frame, strict_map_key=False)
        except (ValueError, TypeError, msgpack.ExtraData):
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not isinstance(data.get("answer"), str):
            self.dropped += 1
            return
        if data.get("proposer") == self.name:
            return  # a proposer does not answer its own intention
        intention = intention_of(data)
        traceparent = data.get("trace")  # untrusted: tracing.handling checks it
        if traceparent is None or not tracing.ENABLED:
            result = self._heard(intention)
        else:  # in a CONSUMER span of the proposer's trace
            with tracing.handling(self.name, traceparent, ask=False):
                result = self._heard(intention)
        try:
            rpc.intent_answer(self.client, data["answer"], intention.id, self.name, objection_body(result),
                              timeout=min(5.0, float(intention.window) + ANSWER_SLACK_S))
        except MeshError as exc:  # the proposer's node gone or slow: it counts silence
            log.debug("%s: answer to %s not delivered: %s", self.name, intention.id, exc)

    def _heard(self, intention: Intention) -> object:
        """What ``on_intention`` returned (None if it raised)."""
        try:
            result = self.actor.on_intention(intention)
            if inspect.iscoroutine(result):
                if self._aloop is None:
                    self._aloop = asyncio.new_event_loop()
                result = self._aloop.run_until_complete(result)
        except Exception:
            log.exception("%s: on_intention raised; no objection", self.name)
            return None
        return result
