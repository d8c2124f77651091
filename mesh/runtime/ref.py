"""References to actors: ``client.actor(name)``, ``self.mesh.actor(name)``.

A ref sends straight to the actor's own ROUTER (one hop), over the channel of the calling
thread (``tell``, ``ask``) or the asyncio link of the running event loop (``tell_async``,
``ask_async``). This is the message path: nothing here may cost a message more than it does.

An ask made inside a handler carries the chain of actors waiting on it, so that an ask
that would close a cycle raises DeadlockDetected at once (see README, "Deadlocks").

A ref to a replica group's name sends each message to the next running replica (see
:mod:`mesh.runtime.groups`); the ref learns it is one when it first resolves the name. An ask
that times out sends its target a cancel (see :mod:`mesh.runtime.cancels`).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from typing import TYPE_CHECKING, Any, Coroutine, Protocol

from .. import wire
from ..errors import ActorDied, ActorNotFound, AskTimeout, DeadlockDetected
from .cancels import send_cancel
from .flusher import FLUSHER
from .transport import Link, Unreachable
from . import tracing
from .usage import SAMPLE_EVERY, USAGE

TRACED = tracing.ENABLED  #: OpenTelemetry is installed: a message sent under a span carries it
_active = tracing.active

_perf = time.perf_counter
_running_loop = asyncio.get_running_loop

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

    __slots__ = ("name", "_client", "_ch", "_what", "_group", "_alink")

    def __init__(self, name: str, client: Client):
        self.name = name
        self._client = client
        self._ch: Link | None = None
        self._what = f"actor {name!r}"  # for error messages, made once
        self._group = False  # the name is a replica group's: each message picks a replica
        self._alink: AsyncLink | None = None  # the asyncio link the last ask_async went over

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
        self._group = self.name in client._groups.names
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

    def tell(self, message: object, ack: bool = False, timeout: float = 30.0, *,
             _traceparent: str | None = None) -> "Delivery | None":
        """Send ``message`` and return at once. Raises MailboxFull if the mailbox stays full.

        With ``ack=True`` the receiver acknowledges the message after handling it, and it is
        sent again (to wherever the actor runs by then) until acknowledged or ``timeout``
        seconds pass; returns a Delivery (``wait()``, ``acked``). The handler runs once per
        message per incarnation of the receiver. See :mod:`mesh.runtime.delivery`."""
        if TRACED and _traceparent is None and _active():  # under a span: this tell in a span of its own
            with tracing.sending(self.name, ask=False) as traced:
                return self.tell(message, ack, timeout, _traceparent=traced or "")
        traceparent = _traceparent or None
        client = self._client
        if ack:
            from .delivery import Delivery

            msg_id = next(client.ids)
            frame = (_encode(_TELL_ACK, msg_id, 0, client.name, self.name, message) if traceparent is None else
                     wire.encode_traced(_TELL_ACK, msg_id, client.name, self.name, message, [], traceparent))
            return client._delivery().submit(Delivery(msg_id, self.name, frame, client.clock.monotonic() + timeout))
        frame = (_encode(_TELL, next(client.ids), 0, client.name, self.name, message) if traceparent is None else
                 wire.encode_traced(_TELL, next(client.ids), client.name, self.name, message, [], traceparent))
        ch = self._channel()
        if self._group:
            self._tell_group(frame)
            return None
        try:
            ch.tell(frame, FLUSHER)
        except Unreachable:
            ch.dead = True
            self._rebind().tell(frame, FLUSHER)
        return None

    def ask(self, message: object, timeout: float = 5.0, *, _traceparent: str | None = None) -> object:
        """Send ``message`` and return the actor's reply.

        Raises AskTimeout, ActorNotFound, ActorDied (the actor's process ended while
        the ask was in flight), MailboxFull, or RemoteError (the handler raised).
        """
        if TRACED and _traceparent is None and _active():  # under a span: this ask in a span of its own
            with tracing.sending(self.name, ask=True) as traced:
                return self.ask(message, timeout, _traceparent=traced or "")
        traceparent = _traceparent or None
        client = self._client
        msg_id = next(client.ids)
        server = getattr(ACTING, "server", None) or ACTING_TASK.get()
        if server is None:
            frame = (_encode(_ASK, msg_id, 0, client.name, self.name, message) if traceparent is None else
                     wire.encode_traced(_ASK, msg_id, client.name, self.name, message, [], traceparent))
        else:
            frame = _ask_from_handler(server, msg_id, client.name, self.name, message, traceparent)
        ch = self._channel()
        if self._group:
            return self._ask_group(frame, msg_id, timeout)
        try:
            USAGE.asks += 1
            if USAGE.asks & (SAMPLE_EVERY - 1):
                return ch.request(frame, msg_id, timeout, self._what)
            began = _perf()
            answer = ch.request(frame, msg_id, timeout, self._what)
            USAGE.ask_samples.append(_perf() - began)
            return answer
        except Unreachable:
            # A stale address (the actor restarted elsewhere): the ask never left, so
            # sending it to the actor's current address is safe.
            ch.dead = True
            ch = self._rebind()
        except ActorDied:
            client._forget(self.name)
            self._ch = None
            raise
        except AskTimeout:
            send_cancel(client, ch.endpoint, msg_id)
            raise
        try:
            return ch.request(frame, msg_id, timeout, self._what)
        except ActorDied:
            client._forget(self.name)
            self._ch = None
            raise
        except AskTimeout:
            send_cancel(client, ch.endpoint, msg_id)
            raise

    # -- replica groups (see groups.py) --------------------------------------------------

    def _member(self, skip: list[str], refreshed: bool) -> tuple[str, str]:
        """The next replica to send to (name, endpoint), not at an endpoint of ``skip``; with none
        listed (or all skipped even after asking the node again), wait for one as for a single name."""
        groups = self._client._groups
        member = groups.pick(self.name, groups.members(self.name), skip)
        if member is not None:
            return member["name"], member["endpoint"]
        if skip and not refreshed:
            groups.expire(self.name)
            return self._member(skip, True)
        endpoint = self._client.endpoint_of(self.name)
        if endpoint in skip:
            raise ActorNotFound(f"no replica of group {self.name!r} is reachable")
        return self.name, endpoint

    def _gone(self, endpoint: str, skip: list[str]) -> None:
        """The replica at ``endpoint`` is gone: leave it out of this group's list."""
        self._client._groups.drop(self.name, endpoint)
        self._client._forget(self.name)
        skip.append(endpoint)

    def _ask_group(self, frame: bytes, msg_id: int, timeout: float) -> object:
        client = self._client
        skip: list[str] = []
        while True:
            replica, endpoint = self._member(skip, False)
            ch = client._channel(endpoint)
            try:
                return ch.request(frame, msg_id, timeout, f"replica {replica!r} of group {self.name!r}")
            except Unreachable:  # the ask never left: the next replica may take it
                ch.dead = True
                self._gone(endpoint, skip)
            except ActorDied:  # it may have run: as for a single actor, the asker decides
                self._gone(endpoint, skip)
                raise
            except AskTimeout:
                send_cancel(client, endpoint, msg_id)
                raise

    def _tell_group(self, frame: bytes) -> None:
        client = self._client
        skip: list[str] = []
        while True:
            _, endpoint = self._member(skip, False)
            ch = client._channel(endpoint)
            try:
                ch.tell(frame, FLUSHER)
                return
            except Unreachable:
                ch.dead = True
                self._gone(endpoint, skip)

    async def _member_async(self, skip: list[str]) -> tuple[str, str]:
        groups = self._client._groups
        member = groups.pick(self.name, await groups.members_async(self.name), skip)
        if member is None and skip:
            groups.expire(self.name)
            member = groups.pick(self.name, await groups.members_async(self.name), skip)
        if member is not None:
            return member["name"], member["endpoint"]
        endpoint = await self._client.endpoint_of_async(self.name)
        if endpoint in skip:
            raise ActorNotFound(f"no replica of group {self.name!r} is reachable")
        return self.name, endpoint

    async def _ask_group_async(self, frame: bytes, msg_id: int, timeout: float) -> object:
        client = self._client
        skip: list[str] = []
        while True:
            replica, endpoint = await self._member_async(skip)
            try:
                return await client._alink(endpoint).request(frame, msg_id, timeout,
                                                               f"replica {replica!r} of group {self.name!r}")
            except Unreachable:
                self._gone(endpoint, skip)
            except ActorDied:
                self._gone(endpoint, skip)
                raise
            except AskTimeout:
                send_cancel(client, endpoint, msg_id)
                raise

    async def _link(self) -> "AsyncLink":
        client = self._client
        endpoint = await client.endpoint_of_async(self.name)
        if not self._group and self.name in client._groups.names:
            self._group = True
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
        if TRACED and _active():  # under a span: this tell in a span of its own
            with tracing.sending(self.name, ask=False) as traceparent:
                return await self._tell_async(message, traceparent)
        return await self._tell_async(message, None)

    async def _tell_async(self, message: object, traceparent: str | None) -> None:
        client = self._client
        frame = (_encode(_TELL, next(client.ids), 0, client.name, self.name, message) if traceparent is None else
                 wire.encode_traced(_TELL, next(client.ids), client.name, self.name, message, [], traceparent))
        link = await self._link()
        if self._group:
            _, endpoint = await self._member_async([])
            link = client._alink(endpoint)
        await link.send(frame)

    def ask_async(self, message: object, timeout: float = 5.0) -> Coroutine[Any, Any, object]:
        """``ask`` for asyncio code: many asks may be in flight at once. Returns a coroutine
        (``await ref.ask_async(m)``, or a task of it), whose await is the ask itself: no
        coroutine wraps it (this is the message path)."""
        if TRACED and _active():
            return self._ask_traced_async(message, timeout)
        return self._ask_async(message, timeout, None)

    async def _ask_traced_async(self, message: object, timeout: float) -> object:
        with tracing.sending(self.name, ask=True) as traceparent:
            return await self._ask_async(message, timeout, traceparent)

    async def _ask_async(self, message: object, timeout: float, traceparent: str | None) -> object:
        client = self._client
        msg_id = next(client.ids)
        server = getattr(ACTING, "server", None) or ACTING_TASK.get()
        if server is None:
            frame = (_encode(_ASK, msg_id, 0, client.name, self.name, message) if traceparent is None else
                     wire.encode_traced(_ASK, msg_id, client.name, self.name, message, [], traceparent))
        else:
            frame = _ask_from_handler(server, msg_id, client.name, self.name, message, traceparent)
        link = self._alink
        # The link of the last ask, while it still is what _link would give: alive, on this
        # event loop, and the client still lists the actor there (one coroutine fewer per ask).
        if (link is None or link.dead or link.loop is not _running_loop()
                or client._endpoints.get(self.name) != link.endpoint or self._group
                or self.name in client._groups.names):
            link = await self._link()
            if self._group:
                return await self._ask_group_async(frame, msg_id, timeout)
            self._alink = link
        try:
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
        except AskTimeout:
            send_cancel(client, link.endpoint, msg_id)
            raise


class Acting(Protocol):
    """What an ask made inside a handler reads of the actor whose handler runs: its name, the
    chain of actors waiting on the ask it handles, and ``[name]`` (the chain when none waits)."""

    name: str
    chain_in: list[str]
    alone: list[str]


def _ask_from_handler(server: Acting, msg_id: int, sender: str, target: str, message: object,
                      traceparent: str | None = None) -> bytes:
    """An ask made inside a handler: raise DeadlockDetected if ``target`` already waits on this
    actor (directly or down a chain), else carry the chain to it."""
    chain_in = server.chain_in
    waiting = server.alone if not chain_in else [*chain_in, server.name]  # the common case allocates nothing
    if target in waiting:
        cycle = waiting[waiting.index(target):] + [target]
        USAGE.deadlocks += 1
        raise DeadlockDetected(f"{server.name} asking {target} would close the cycle {' -> '.join(cycle)}", cycle)
    if traceparent is not None:
        return wire.encode_traced(_ASK, msg_id, sender, target, message, waiting, traceparent)
    return wire.encode_ask(msg_id, sender, target, message, waiting)
