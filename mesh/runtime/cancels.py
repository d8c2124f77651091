"""Cancelled asks: an asker whose ask timed out tells the target to stop working on it.

How it works. The target's loop is busy in the handler, so a cancel cannot come through the
actor's ROUTER (nobody reads it until the handler returns). Each served actor therefore binds
a second, small listener, its *cancel address*, registered with its node beside its endpoint
and published in the directory, so a resolve answers both. The thread that already reports the
actor to its node (:mod:`.nodelink`) waits on that listener instead of sleeping between
heartbeats, so it reads a cancel as soon as it arrives: out of band, one frame, one hop.

When an ask raises AskTimeout, the asker sends ``{"op": "cancel", "id": MSG_ID}`` (a CONTROL
envelope whose sender is the asker's name) to the target's cancel address and forgets the ask
(its late reply is dropped, as every unmatched reply is). The target keeps the key
``(sender, msg id)``, which names one ask of one asker and never an unrelated message:

* the handler of that ask sees ``self.mesh.cancelled`` become true (a sync handler polls it);
* an ``async def`` handler of that ask has its task cancelled (``asyncio.CancelledError``
  inside it; the asker gets nothing, it already gave up);
* an ask cancelled while it still waited in the mailbox is handled all the same (a handler that
  never looks runs as it always did), with ``self.mesh.cancelled`` true from the start, and an
  ``async def`` handler's task cancelled before its first step.

Latency: the cancel leaves when the asker's timeout fires and the target's link thread wakes
on it at once: on one machine within a few milliseconds, and bounded by CANCEL_BOUND_S (what
the README promises, with room for a loaded machine). A cancel that arrives after the handler
returned changes nothing; keys are kept CANCEL_TTL_S, at most MAX_CANCELS of them.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from .. import wire
from ..errors import MeshError, WireError
from ..wire import BODY, KIND, SENDER
from .flusher import FLUSHER
from .transport import Unreachable

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client
    from .intake import BadFrames
    from .server import Server

#: The documented bound, in seconds, from an ask's timeout to its handler seeing the cancel.
CANCEL_BOUND_S = 0.5
#: How long a cancel is remembered (an ask may still wait in the mailbox), in seconds.
CANCEL_TTL_S = 60.0
#: Cancels remembered at most: a flood forgets the oldest.
MAX_CANCELS = 4096
#: The control op of a cancel.
CANCEL_OP = "cancel"

_CONTROL = int(wire.Kind.CONTROL)


def send_cancel(client: "Client", endpoint: str, msg_id: int) -> None:
    """Tell the actor at ``endpoint`` that ``client``'s ask ``msg_id`` timed out: best effort, one
    tell that never waits long (a client of an actor that takes no cancels sends nothing)."""
    address = client.cancel_at.get(endpoint)
    if address is None or client._closed:
        return
    frame = wire.encode(_CONTROL, next(client.ids), 0, client.name, "$cancel", {"op": CANCEL_OP, "id": msg_id})
    try:
        client._channel(address).tell(frame, FLUSHER)
    except (MeshError, Unreachable):
        pass  # the actor is gone or swamped: nothing is left to cancel, or there is no way to


class AskCancelled(MeshError):
    """The handler's ask was cancelled by its asker (what the target's loop answers, to nobody)."""


class Cancels:
    """The asks cancelled at one actor, by ``(sender, msg id)``: written by the link thread, read
    by the actor's loop (a dict: one lookup is atomic). Empty, hence falsy, unless an ask timed out."""

    def __init__(self, server: "Server"):
        self.server = server
        self.keys: dict[tuple[str, int], float] = {}

    def take(self, frame: Any, bad: "BadFrames") -> None:
        """A frame from the cancel listener: remember each cancel, and interrupt its handler if it runs."""
        try:
            envelopes = wire.decode(frame, 4096)
        except WireError as exc:
            bad.record(b"", exc)
            return
        for env in envelopes:
            body = env[BODY]
            msg_id = body.get("id") if isinstance(body, dict) and body.get("op") == CANCEL_OP else None
            if env[KIND] != _CONTROL or type(msg_id) is not int:
                bad.record(b"", "not a cancel")
                continue
            self.cancel((env[SENDER], msg_id))

    def cancel(self, key: tuple[str, int]) -> None:
        server = self.server
        keys = self.keys
        now = server.clock.monotonic()
        keys[key] = now
        # Oldest first (insertion order): drop what is over the bound or older than the TTL.
        while len(keys) > MAX_CANCELS or keys[next(iter(keys))] < now - CANCEL_TTL_S:
            del keys[next(iter(keys))]
        running = server.handler_task
        if running is not None and server.current_id == key[1] and server.current_sender == key[0]:
            loop, task = running
            loop.call_soon_threadsafe(_cancel_if_current, server, key, task)


def _cancel_if_current(server: "Server", key: tuple[str, int], task: asyncio.Future[Any]) -> None:
    """On the handler's event loop: cancel ``task`` if it still runs the cancelled ask."""
    if server.current_id == key[1] and server.current_sender == key[0] and server.handler_task is not None \
            and server.handler_task[1] is task:
        task.cancel()


def cancelled_now(server: "Server") -> bool:
    """Whether the ask being handled was cancelled (``self.mesh.cancelled``)."""
    msg_id = server.current_id
    return msg_id != 0 and (server.current_sender, msg_id) in server.cancels.keys


def run_cancellable(server: "Server", loop: asyncio.AbstractEventLoop, coro: Any) -> object:
    """Run ``coro`` to its end on ``loop`` (not running: this thread drives it), as a task a cancel
    can reach; a cancel it did not catch becomes AskCancelled, which the loop answers as a failure."""
    task = loop.create_task(coro)
    server.handler_task = (loop, task)
    if cancelled_now(server):
        task.cancel()
    try:
        return loop.run_until_complete(task)
    except asyncio.CancelledError:
        raise AskCancelled(f"{server.name}: the ask was cancelled by its asker") from None
    finally:
        server.handler_task = None


async def as_cancellable(server: "Server", coro: Any) -> object:
    """``coro`` on a loop another thread runs (``serve_async``), as a task a cancel can reach."""
    task = asyncio.ensure_future(coro)
    server.handler_task = (asyncio.get_running_loop(), task)
    if cancelled_now(server):
        task.cancel()
    try:
        return await task
    except asyncio.CancelledError:
        if task.cancelled() and not _self_cancelled():
            raise AskCancelled(f"{server.name}: the ask was cancelled by its asker") from None
        raise
    finally:
        server.handler_task = None


def _self_cancelled() -> bool:
    """Whether the task running this (not the handler's) is being cancelled: the program stops."""
    current = asyncio.current_task()
    return current is not None and current.cancelling() > 0
