"""References to actors: ``client.actor(name)``, ``self.mesh.actor(name)``.

A ref sends straight to the actor's own ROUTER (one hop), over the channel of the calling
thread (``tell``, ``ask``) or the asyncio link of the running event loop (``tell_async``,
``ask_async``). This is the message path: nothing here may cost a message more than it does.

An ask made inside a handler carries the chain of actors waiting on it, so that an ask
that would close a cycle raises DeadlockDetected at once (see README, "Deadlocks").
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import TYPE_CHECKING, Protocol

from .. import wire
from ..errors import ActorDied, ActorNotFound, DeadlockDetected
from .flusher import FLUSHER
from .transport import Link, Unreachable

if TYPE_CHECKING:  # pragma: no cover
    from .asynclink import AsyncLink
    from .client import Client
    from .delivery import Delivery

#: Per thread: the actor server whose handler runs on it (set by the server's loop), so that
#: an ask made by a handler carries the chain of actors waiting on it (deadlock detection).
ACTING = threading.local()
#: The same for async handlers that run on a program's own event loop (``serve_async``).
ACTING_TASK: contextvars.ContextVar[Acting | None] = contextvars.ContextVar("mesh_acting", default=None)

_get_ident = threading.get_ident
_encode = wire.encode
_TELL = int(wire.Kind.TELL)
_ASK = int(wire.Kind.ASK)
_TELL_ACK = int(wire.Kind.TELL_ACK)


class ActorRef:
    """A handle on a named actor. ``tell`` does not wait; ``ask`` waits for the reply.

    Messages are msgpack values: dicts, lists, str, bytes, numbers, bool and None.
    Messages from one sender to one actor arrive in the order they were sent.
    """

    __slots__ = ("name", "_client", "_ch", "_what")

    def __init__(self, name: str, client: Client):
        self.name = name
        self._client = client
        self._ch: Link | None = None
        self._what = f"actor {name!r}"  # for error messages, made once

    def __repr__(self) -> str:
        return f"ActorRef({self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorRef) and other.name == self.name and other._client is self._client

    def __hash__(self) -> int:
        return hash(self.name)

    def _channel(self) -> Link:
        ch = self._ch
        if ch is not None and ch.thread == _get_ident() and not ch.dead:
            return ch
        return self._rebind()

    def _rebind(self) -> Link:
        old = self._ch
        client = self._client
        if old is not None and old.dead:
            client._forget(self.name)
        ch = client._channel(client.endpoint_of(self.name))
        if old is not None and old is not ch and old.dead:
            with old.lock:
                moved, old.pending = old.pending, []
                old.close()
            if moved:
                # Tells held for a process that died go to its successor: nothing is dropped here.
                with ch.lock:
                    ch.pending[:0] = moved
                FLUSHER.arm(ch)
        self._ch = ch
        return ch

    def tell(self, message: object, ack: bool = False, timeout: float = 30.0) -> "Delivery | None":
        """Send ``message`` and return at once. Raises MailboxFull if the mailbox stays full.

        With ``ack=True`` the receiver acknowledges the message after handling it, and it is
        sent again (to wherever the actor runs by then) until acknowledged or ``timeout``
        seconds pass; returns a Delivery (``wait()``, ``acked``). The handler runs once per
        message per incarnation of the receiver. See :mod:`mesh.runtime.delivery`."""
        client = self._client
        if ack:
            from .delivery import Delivery

            msg_id = next(client.ids)
            frame = _encode(_TELL_ACK, msg_id, 0, client.name, self.name, message)
            return client._delivery().submit(Delivery(msg_id, self.name, frame, client.clock.monotonic() + timeout))
        frame = _encode(_TELL, next(client.ids), 0, client.name, self.name, message)
        ch = self._channel()
        try:
            ch.tell(frame, FLUSHER)
        except Unreachable:
            ch.dead = True
            self._rebind().tell(frame, FLUSHER)
        return None

    def ask(self, message: object, timeout: float = 5.0) -> object:
        """Send ``message`` and return the actor's reply.

        Raises AskTimeout, ActorNotFound, ActorDied (the actor's process ended while
        the ask was in flight), MailboxFull, or RemoteError (the handler raised).
        """
        client = self._client
        msg_id = next(client.ids)
        server = getattr(ACTING, "server", None) or ACTING_TASK.get()
        if server is None:
            frame = _encode(_ASK, msg_id, 0, client.name, self.name, message)
        else:
            frame = _ask_from_handler(server, msg_id, client.name, self.name, message)
        ch = self._channel()
        try:
            return ch.request(frame, msg_id, timeout, self._what)
        except Unreachable:
            # A stale address (the actor restarted elsewhere): the ask never left, so
            # sending it to the actor's current address is safe.
            ch.dead = True
            ch = self._rebind()
        except ActorDied:
            client._forget(self.name)
            self._ch = None
            raise
        try:
            return ch.request(frame, msg_id, timeout, self._what)
        except ActorDied:
            client._forget(self.name)
            self._ch = None
            raise

    async def _link(self) -> "AsyncLink":
        client = self._client
        endpoint = await client.endpoint_of_async(self.name)
        link = client._open_alink(endpoint)
        if link is not None and link.dead:
            # The actor behind the cached address went away: ask the node where it is now,
            # until it names another address (for a moment it may still list the old one).
            dead_endpoint = endpoint
            monotonic = client.clock.monotonic
            deadline = monotonic() + client.resolve_timeout
            while endpoint == dead_endpoint:
                client._forget(self.name)
                endpoint = await client.endpoint_of_async(self.name)
                if endpoint == dead_endpoint:
                    if monotonic() >= deadline:
                        raise ActorNotFound(f"actor {self.name!r} did not come back within {client.resolve_timeout:g} s")
                    await asyncio.sleep(0.05)
        return client._alink(endpoint)

    async def tell_async(self, message: object) -> None:
        """``tell`` for asyncio code: never blocks the event loop."""
        client = self._client
        frame = _encode(_TELL, next(client.ids), 0, client.name, self.name, message)
        await (await self._link()).send(frame)

    async def ask_async(self, message: object, timeout: float = 5.0) -> object:
        """``ask`` for asyncio code: many asks may be in flight at once."""
        client = self._client
        msg_id = next(client.ids)
        server = getattr(ACTING, "server", None) or ACTING_TASK.get()
        if server is None:
            frame = _encode(_ASK, msg_id, 0, client.name, self.name, message)
        else:
            frame = _ask_from_handler(server, msg_id, client.name, self.name, message)
        link = await self._link()
        try:
            return await link.request(frame, msg_id, timeout, self._what)
        except Unreachable:
            # Nobody ever listened at that address: the ask never left. Once more, fresh.
            client._forget(self.name)
            link = await self._link()
            return await link.request(frame, msg_id, timeout, self._what)
        except ActorDied:
            client._forget(self.name)
            raise


class Acting(Protocol):
    """What an ask made inside a handler reads of the actor whose handler runs: its name, the
    chain of actors waiting on the ask it handles, and ``[name]`` (the chain when none waits)."""

    name: str
    chain_in: list[str]
    alone: list[str]


def _ask_from_handler(server: Acting, msg_id: int, sender: str, target: str, message: object) -> bytes:
    """An ask made inside a handler: raise DeadlockDetected if ``target`` already waits on this
    actor (directly or down a chain), else carry the chain to it."""
    chain_in = server.chain_in
    waiting = server.alone if not chain_in else [*chain_in, server.name]  # the common case allocates nothing
    if target in waiting:
        cycle = waiting[waiting.index(target):] + [target]
        raise DeadlockDetected(f"{server.name} asking {target} would close the cycle {' -> '.join(cycle)}", cycle)
    return wire.encode_ask(msg_id, sender, target, message, waiting)
