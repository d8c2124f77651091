"""Clients and actor references: how any process talks to actors in the mesh.

A :class:`Client` belongs to one process (``mesh.connect``), or to one served actor
(``self.mesh``). It asks its node where an actor lives (its endpoint), caches the
answer, and then talks to the actor's own ROUTER directly: one hop per message.
When the actor's process dies the channel's monitor notices, the cache entry is
dropped, and the next message asks the node again, so a restarted actor is found
at its new endpoint.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import os
import random
import socket
import threading
import time
import uuid
import weakref
from typing import TYPE_CHECKING

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from .. import wire
from ..errors import AcquireTimeout, ActorDied, DeadlockDetected, ActorNotFound, AskTimeout, NodeUnavailable, NotLeader, from_wire
from .transport import FLUSHER, SEND_BYTES, Channel, Unreachable, _close_dropped, context, frames_within, snapshot, tune_socket

if TYPE_CHECKING:  # pragma: no cover
    from .resources import Lease
    from .state import SharedState

DEFAULT_NODE = "tcp://127.0.0.1:7700"
#: The recipient name of requests meant for the node itself.
NODE_RECIPIENT = "$node"

#: Per thread: the actor server whose handler runs on it (set by the server's loop), so that
#: an ask made by a handler carries the chain of actors waiting on it (deadlock detection).
ACTING = threading.local()
#: The same for async handlers that run on a program's own event loop (``serve_async``).
ACTING_TASK: contextvars.ContextVar = contextvars.ContextVar("mesh_acting", default=None)

_client_seq = itertools.count(1)
_deliverer_lock = threading.Lock()
_alink_ids = itertools.count(1)
_get_ident = threading.get_ident
_encode = wire.encode
_TELL = int(wire.Kind.TELL)
_ASK = int(wire.Kind.ASK)
_TELL_ACK = int(wire.Kind.TELL_ACK)
_EVENT = int(wire.Kind.EVENT)
_CONTROL = int(wire.Kind.CONTROL)


def node_address(address: str | None = None) -> str:
    """The node to talk to: ``address``, else ``$MESH_NODE``, else the default. Adds tcp://."""
    address = address or os.environ.get("MESH_NODE") or DEFAULT_NODE
    address = address.strip()
    if "://" not in address:
        address = "tcp://" + address
    return address


def check_address(address: str) -> str:
    """``address`` if it is tcp://HOST:PORT, else NodeUnavailable naming what is wrong."""
    scheme, _, rest = address.partition("://")
    host, _, port = rest.rpartition(":")
    if scheme != "tcp" or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise NodeUnavailable(f"invalid node address {address!r}: expected tcp://HOST:PORT")
    return address


class Client:
    """A connection to a mesh node and, through it, to every actor in the mesh.

    Parameters (all optional):
        node: the node's address (``tcp://HOST:PORT`` or ``HOST:PORT``).
        name: the sender name actors see; defaults to ``client-HOST-PID-N``.
        send_timeout: seconds a send may block on a full mailbox before MailboxFull.
        resolve_timeout: seconds to wait for an actor that is (re)starting.
        hwm: frames queued per channel before sends block (the sender's side of a mailbox), at most.
        send_bytes: bytes queued per channel before sends block, at most: the channel queues
            as many frames of the peer's frame limit as fit (at least one), never over ``hwm``.
        max_frame_bytes: the largest frame sent or accepted, in bytes.
        check: ping the node now, raising NodeUnavailable if nobody answers.
    """

    def __init__(
        self,
        node: str | None = None,
        *,
        name: str | None = None,
        send_timeout: float = 5.0,
        resolve_timeout: float = 10.0,
        hwm: int = 1000,
        max_frame_bytes: int = wire.MAX_FRAME_BYTES,
        check: bool = True,
        send_bytes: int = SEND_BYTES,
        connect_timeout: float = 3.0,
    ):
        self.node = check_address(node_address(node))
        self.name = name or f"client-{socket.gethostname()}-{os.getpid()}-{next(_client_seq)}"
        self.send_timeout = send_timeout
        self.resolve_timeout = resolve_timeout
        self.hwm = hwm
        if send_bytes < 1:
            raise ValueError("send_bytes must be at least 1 byte")
        self.send_bytes = send_bytes
        self.max_frame_bytes = max_frame_bytes
        # Message ids start at a random point: a restarted process reusing this client's name must
        # not reuse its ids (receivers drop acknowledged tells they have seen, by sender and id).
        self.ids = itertools.count(random.getrandbits(52) + 1)
        self._local = threading.local()
        self._endpoints: dict[str, str] = {}
        self.limits: dict[str, int] = {}  # endpoint -> the largest frame its owner accepts, in bytes
        self._channels: weakref.WeakSet[Channel] = weakref.WeakSet()
        self._alinks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._all_alinks: weakref.WeakSet = weakref.WeakSet()
        self._closed = False
        self._leases: weakref.WeakSet = weakref.WeakSet()
        self._renewer = None
        self._leader_address: str | None = None
        self._deliverer = None
        self._subscribers: dict[str, tuple[float, list[str]]] = {}
        if check:
            try:
                answer = self.control("ping", timeout=connect_timeout)
                if isinstance(answer, dict):
                    self._learn_limit(self.node, answer)
                    if self.node in self.limits:
                        self.channel(self.node).limit = self.limits[self.node]
            except BaseException:
                self.close()
                raise

    # -- channels --------------------------------------------------------------

    def channel(self, endpoint: str) -> Channel:
        """This thread's channel to ``endpoint``, made on first use or after the peer died."""
        try:
            chans = self._local.channels
        except AttributeError:
            chans = self._local.channels = {}
        ch = chans.get(endpoint)
        if ch is None or ch.dead:
            if self._closed:
                raise NodeUnavailable("this client is closed")
            if ch is not None:
                with ch.lock:
                    ch.close()
            ch = Channel(endpoint, hwm=self.hwm, send_timeout=self.send_timeout, max_bytes=self.max_frame_bytes,
                         limit=self.limits.get(endpoint, self.max_frame_bytes), send_bytes=self.send_bytes)
            chans[endpoint] = ch
            self._channels.add(ch)
        return ch

    def control(self, op: str, timeout: float = 5.0, **fields: object) -> object:
        """Send a request to the node and return its answer."""
        return self.control_at(self.node, op, timeout, **fields)

    def control_at(self, address: str, op: str, timeout: float = 5.0, /, **fields: object) -> object:
        """Send a request to the node at ``address`` (another member) and return its answer."""
        msg_id = next(self.ids)
        frame = _encode(_CONTROL, msg_id, 0, self.name, NODE_RECIPIENT, {"op": op, **fields})
        ch = self.channel(address)
        try:
            try:
                return ch.request(frame, msg_id, timeout, f"node at {address}")
            except Unreachable:
                # The request never left (the channel knew the node was gone, or nothing ever
                # listened): once more on a fresh connection, say to a restarted node.
                ch.dead = True
                ch = self.channel(address)
                return ch.request(frame, msg_id, timeout, f"node at {address}")
        except (AskTimeout, ActorDied):
            ch.dead = True
            raise NodeUnavailable(f"no mesh node answers at {address} (is `mesh up` running?)") from None

    # -- topics --------------------------------------------------------------------------

    def publish(self, topic: str, data: object = None, corr: str | None = None) -> str:
        """Send an event to every subscriber of ``topic`` (see :mod:`mesh.topics`); returns its id."""
        from ..topics import CACHE_S, check_topic

        check_topic(topic)
        now = time.monotonic()
        cached = self._subscribers.get(topic)
        if cached is None or now - cached[0] > CACHE_S:
            answer = self.control("subscribers", topic=topic)
            cached = self._subscribers[topic] = (now, list(answer.get("actors", [])) if isinstance(answer, dict) else [])
        event_id = f"{self.name}:{next(self.ids)}"
        body = {"topic": topic, "data": data, "id": event_id, "corr": corr}
        for name in cached[1]:
            try:
                ch = self.channel(self.endpoint_of(name, timeout=0.0))
                ch.tell(_encode(_EVENT, next(self.ids), 0, self.name, name, body), FLUSHER)
            except (ActorNotFound, Unreachable, NodeUnavailable, ActorDied):
                continue  # a subscriber that is gone or restarting misses it: events are fire-and-forget
        return event_id

    # -- reliable delivery ---------------------------------------------------------------

    def _delivery(self):
        if self._deliverer is None:
            with _deliverer_lock:
                if self._deliverer is None:
                    from .delivery import Deliverer

                    self._deliverer = Deliverer(self)
        return self._deliverer

    def drain(self, timeout: float = 30.0) -> int:
        """Wait until every ``tell(..., ack=True)`` so far is acknowledged (or failed at its
        deadline); returns how many are still unsettled after ``timeout`` seconds (0: all)."""
        return self._deliverer.drain(timeout) if self._deliverer is not None else 0

    # -- pools and rate limits (kept by the leader) -----------------------------------

    def acquire(self, name: str, n: int = 1, timeout: float = 10.0, *, holder: str | None = None) -> "Lease":
        """Wait (in line, mesh-wide) for ``n`` units of pool ``name``, or ``n`` permits of rate
        limit ``name``, at most ``timeout`` seconds. Returns a :class:`Lease` (a context
        manager); raises AcquireTimeout, or ResourceError for a request that can never be
        granted. While the mesh has no leader the request keeps trying until its timeout."""
        from .resources import Renewer, granted_lease

        holder = holder or self.name
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                why = f" (last: {last})" if last else ""
                raise AcquireTimeout(f"no grant of {n} of {name!r} within {timeout:g} s{why}")
            sent = time.monotonic()
            request_id = f"{self.name}:{uuid.uuid4().hex}"
            try:
                answer = self._resource_call("acquire", remaining + 2.0, request_id=request_id, holder=holder,
                                             name=name, n=n, timeout=remaining)
            except (NotLeader, NodeUnavailable) as exc:  # an election, or the leader just died
                last = exc
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
                continue
            lease = granted_lease(self, answer, sent, holder)
            if lease.lease_id is not None:
                self._leases.add(lease)
                if self._renewer is None:
                    self._renewer = Renewer(self._leases)
            return lease

    async def acquire_async(self, name: str, n: int = 1, timeout: float = 10.0, *, holder: str | None = None):
        """:meth:`acquire` without blocking the event loop (``async with await ...`` or ``await``)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, lambda: self.acquire(name, n, timeout, holder=holder))

    def _resource_call(self, op: str, timeout: float, /, **fields: object) -> object:
        address = self._leader_address
        if address is None:
            info = self.control("leader", timeout=min(timeout, 5.0))
            if not isinstance(info, dict) or not info.get("address"):
                raise NotLeader(f"no leader is elected yet ({info.get('waiting') if isinstance(info, dict) else info})")
            address = self._leader_address = info["address"]
        try:
            return self.control_at(address, op, timeout, **fields)
        except (NotLeader, NodeUnavailable):
            self._leader_address = None
            raise

    # -- the directory -----------------------------------------------------------

    def endpoint_of(self, name: str, timeout: float | None = None) -> str:
        """Where actor ``name`` listens. Waits while it is (re)starting, up to ``timeout``."""
        endpoint = self._endpoints.get(name)
        if endpoint is not None:
            ch = getattr(self._local, "channels", {}).get(endpoint)
            if ch is None or not (ch.dead or ch.closed):
                return endpoint
            # This thread's channel there found the process gone (maybe the janitor closed
            # it): a fresh channel to that address would swallow tells. Ask the node again.
            self._endpoints.pop(name, None)
        timeout = self.resolve_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            answer = self.control("resolve", name=name)
            if isinstance(answer, dict) and isinstance(answer.get("endpoint"), str):
                endpoint = answer["endpoint"]
                self._learn_limit(endpoint, answer)
                self._endpoints[name] = endpoint
                return endpoint
            state = answer.get("state") if isinstance(answer, dict) else None
            if time.monotonic() >= deadline:
                raise ActorNotFound(f"actor {name!r} is {state or 'not running'} and did not come up within {timeout:g} s")
            time.sleep(0.05)

    def _learn_limit(self, endpoint: str, answer: dict) -> None:
        limit = answer.get("max_frame")
        if type(limit) is int and limit > 0:
            self.limits[endpoint] = min(limit, self.max_frame_bytes)

    def forget(self, name: str) -> None:
        self._endpoints.pop(name, None)

    # -- public surface ------------------------------------------------------------

    def actor(self, name: str) -> "ActorRef":
        """A reference to the actor called ``name``, wherever it runs."""
        if not isinstance(name, str) or not name:
            raise ValueError("an actor name is a non-empty string")
        return ActorRef(name, self)

    @property
    def state(self) -> "SharedState":
        """The shared key/value state of the mesh (get, set, delete, items, watch)."""
        from .state import SharedState

        return SharedState(self)

    def status(self) -> dict:
        """The node's status: the same object ``mesh status --json`` prints."""
        return self.control("status")

    def flush(self) -> None:
        """Send every tell this process still holds back for batching."""
        for ch in snapshot(self._channels):
            if not ch.closed:
                ch.flush()

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.flush()
        except Exception:
            pass
        for lease in list(self._leases):
            lease.release()
        if self._renewer is not None:
            self._renewer.stop()
        if self._deliverer is not None:
            self._deliverer.close()
        self._closed = True
        for ch in snapshot(self._channels):
            with ch.lock:
                ch.close(linger_ms=1000)
        self._channels = weakref.WeakSet()
        self._local = threading.local()
        for link in snapshot(self._all_alinks):
            link.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- asyncio ----------------------------------------------------------------

    def _alink(self, endpoint: str, create: bool = True) -> "_AsyncLink | None":
        loop = asyncio.get_running_loop()
        links = self._alinks.get(loop)
        if links is None:
            links = self._alinks[loop] = {}
        link = links.get(endpoint)
        if not create:
            return link
        if link is None or link.dead:
            link = links[endpoint] = _AsyncLink(endpoint, self)
        return link

    async def control_async(self, op: str, timeout: float = 5.0, **fields: object) -> object:
        link = self._alink(self.node)
        msg_id = next(self.ids)
        frame = _encode(_CONTROL, msg_id, 0, self.name, NODE_RECIPIENT, {"op": op, **fields})
        try:
            return await link.request(frame, msg_id, timeout, f"node at {self.node}")
        except (AskTimeout, ActorDied):
            raise NodeUnavailable(f"no mesh node answers at {self.node} (is `mesh up` running?)") from None

    async def endpoint_of_async(self, name: str) -> str:
        endpoint = self._endpoints.get(name)
        if endpoint is not None:
            return endpoint
        deadline = time.monotonic() + self.resolve_timeout
        while True:
            answer = await self.control_async("resolve", name=name)
            if isinstance(answer, dict) and isinstance(answer.get("endpoint"), str):
                self._learn_limit(answer["endpoint"], answer)
                self._endpoints[name] = answer["endpoint"]
                return answer["endpoint"]
            if time.monotonic() >= deadline:
                raise ActorNotFound(f"actor {name!r} did not come up within {self.resolve_timeout:g} s")
            await asyncio.sleep(0.05)


class ActorRef:
    """A handle on a named actor. ``tell`` does not wait; ``ask`` waits for the reply.

    Messages are msgpack values: dicts, lists, str, bytes, numbers, bool and None.
    Messages from one sender to one actor arrive in the order they were sent.
    """

    __slots__ = ("name", "_client", "_ch", "_what")

    def __init__(self, name: str, client: Client):
        self.name = name
        self._client = client
        self._ch: Channel | None = None
        self._what = f"actor {name!r}"  # for error messages, made once

    def __repr__(self) -> str:
        return f"ActorRef({self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorRef) and other.name == self.name and other._client is self._client

    def __hash__(self) -> int:
        return hash(self.name)

    def _channel(self) -> Channel:
        ch = self._ch
        if ch is not None and ch.thread == _get_ident() and not ch.dead:
            return ch
        return self._rebind()

    def _rebind(self) -> Channel:
        old = self._ch
        client = self._client
        if old is not None and old.dead:
            client.forget(self.name)
        ch = client.channel(client.endpoint_of(self.name))
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

    def tell(self, message: object, ack: bool = False, timeout: float = 30.0):
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
            return client._delivery().submit(Delivery(msg_id, self.name, frame, time.monotonic() + timeout))
        frame = _encode(_TELL, next(client.ids), 0, client.name, self.name, message)
        ch = self._channel()
        try:
            ch.tell(frame, FLUSHER)
        except Unreachable:
            ch.dead = True
            self._rebind().tell(frame, FLUSHER)

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
            client.forget(self.name)
            self._ch = None
            raise
        try:
            return ch.request(frame, msg_id, timeout, self._what)
        except ActorDied:
            client.forget(self.name)
            self._ch = None
            raise

    async def _link(self) -> "_AsyncLink":
        client = self._client
        endpoint = await client.endpoint_of_async(self.name)
        link = client._alink(endpoint, create=False)
        if link is not None and link.dead:
            # The actor behind the cached address went away: ask the node where it is now,
            # until it names another address (for a moment it may still list the old one).
            dead_endpoint = endpoint
            deadline = time.monotonic() + client.resolve_timeout
            while endpoint == dead_endpoint:
                client.forget(self.name)
                endpoint = await client.endpoint_of_async(self.name)
                if endpoint == dead_endpoint:
                    if time.monotonic() >= deadline:
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
            client.forget(self.name)
            link = await self._link()
            return await link.request(frame, msg_id, timeout, self._what)
        except ActorDied:
            client.forget(self.name)
            raise


def _ask_from_handler(server, msg_id: int, sender: str, target: str, message: object) -> bytes:
    """An ask made inside a handler: raise DeadlockDetected if ``target`` already waits on this
    actor (directly or down a chain), else carry the chain to it."""
    chain_in = server.chain_in
    waiting = server.alone if not chain_in else [*chain_in, server.name]  # the common case allocates nothing
    if target in waiting:
        cycle = waiting[waiting.index(target):] + [target]
        raise DeadlockDetected(f"{server.name} asking {target} would close the cycle {' -> '.join(cycle)}", cycle)
    return wire.encode_ask(msg_id, sender, target, message, waiting)


class _AsyncLink:
    """An asyncio DEALER to one endpoint, shared by every ask of one event loop."""

    def __init__(self, endpoint: str, client: Client):
        actx = zmq.asyncio.Context.shadow(context().underlying)
        sock = actx.socket(zmq.DEALER)
        frame = max(client.limits.get(endpoint, client.max_frame_bytes), client.max_frame_bytes)
        tune_socket(sock, hwm=frames_within(client.send_bytes, frame, client.hwm), max_bytes=client.max_frame_bytes)
        sock.setsockopt(zmq.LINGER, 1000)
        # Only events that happen once per connection: an event loop that stops running
        # leaves this monitor unread, and a stream of reconnect events would fill it and
        # stall libzmq (#3575). (A dead peer is found by DISCONNECTED; a stale address by
        # ActorRef._link, which never reuses an address whose link died.)
        self.monitor = sock.get_monitor_socket(
            zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECTED,
            addr=f"inproc://mesh-amonitor-{next(_alink_ids)}",
        )
        self.connected = False
        sock.connect(endpoint)
        self.sock = sock
        self.endpoint = endpoint
        self.max_bytes = client.max_frame_bytes
        self.send_timeout = client.send_timeout
        self.waiting: dict[int, asyncio.Future] = {}
        self.dead = False
        self._tasks = [asyncio.ensure_future(self._read()), asyncio.ensure_future(self._watch())]
        weakref.finalize(self, _close_dropped, sock, self.monitor)
        client._all_alinks.add(self)

    def close(self) -> None:
        self.dead = True
        try:
            current = asyncio.current_task()
        except RuntimeError:  # called outside any running loop (Client.close)
            current = None
        for task in self._tasks:
            if task is not current and not task.done():
                try:
                    task.cancel()
                except RuntimeError:  # its loop is closed: nothing runs it any more
                    pass
        _close_dropped(self.sock, self.monitor)

    async def send(self, frame: bytes) -> None:
        from ..errors import MailboxFull

        try:
            await asyncio.wait_for(self.sock.send(frame), self.send_timeout)
        except asyncio.TimeoutError:
            raise MailboxFull(f"mailbox at {self.endpoint} stayed full for the send timeout") from None

    async def request(self, frame: bytes, msg_id: int, timeout: float, what: str) -> object:
        if self.dead:
            raise Unreachable(f"{what} is gone")
        fut = asyncio.get_running_loop().create_future()
        self.waiting[msg_id] = fut
        try:
            await self.send(frame)
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise AskTimeout(f"{what} did not answer within {timeout:g} s") from None
        except Unreachable:
            raise Unreachable(f"{what} is not reachable at {self.endpoint}") from None
        except ActorDied:
            raise ActorDied(f"{what} died while the request was in flight") from None
        finally:
            self.waiting.pop(msg_id, None)

    async def _read(self) -> None:
        while True:
            frame = await self.sock.recv()
            try:
                envelopes = wire.decode(frame, self.max_bytes)
            except Exception:
                continue
            for env in envelopes:
                fut = self.waiting.get(env[3])
                if fut is not None and not fut.done():
                    if env[1] == wire.Kind.REPLY:
                        fut.set_result(env[6])
                    else:
                        fut.set_exception(from_wire(env[6]))

    async def _watch(self) -> None:
        while True:
            event = parse_monitor_message(await self.monitor.recv_multipart())["event"]
            if event == zmq.EVENT_CONNECTED:
                self.connected = True
            elif event == zmq.EVENT_DISCONNECTED:
                self.dead = True
                never = not self.connected
                # Let a reply that raced the disconnect be read first.
                await asyncio.sleep(0)
                for fut in list(self.waiting.values()):
                    if not fut.done():
                        fut.set_exception(Unreachable("nobody listens there") if never else ActorDied("peer disconnected"))
                self.close()
                return
