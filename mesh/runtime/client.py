"""Clients: how any process talks to the mesh.

A :class:`Client` belongs to one process (``mesh.connect``), or to one served actor
(``self.mesh``). It asks its node where an actor lives (its endpoint), caches the
answer, and then talks to the actor's own ROUTER directly: one hop per message.
When the actor's process dies the channel's monitor notices, the cache entry is
dropped, and the next message asks the node again, so a restarted actor is found
at its new endpoint.

References to actors are in :mod:`mesh.runtime.ref`; requests to the node, one typed
function per operation, in :mod:`mesh.runtime.rpc`.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import socket
import threading
import time
import uuid
import weakref
from typing import TYPE_CHECKING, Any, Mapping

from .. import wire
from ..errors import AcquireTimeout, ActorDied, ActorNotFound, AskTimeout, NodeUnavailable, NotLeader
from ..topics import CACHE_S, check_topic
from . import agent_control, alerting, rpc
from .aio import async_twin
from .asynclink import AsyncLink
from .broadcast import Publishers, encode_event, event_topic
from .clock import Clock
from .flusher import FLUSHER, snapshot
from .groups import Groups
from .ref import ActorRef
from .topic_callbacks import Callback, TopicCallbacks
from .transport import SEND_BYTES, Link, Transport, Unreachable
from .keys import Keys
from .zeromq import ZMQ, transport_for
from .usage import USAGE

if TYPE_CHECKING:  # pragma: no cover
    from .delivery import Deliverer
    from .resources import Lease, Renewer
    from .state import SharedState

DEFAULT_NODE = "tcp://127.0.0.1:7700"
#: The recipient name of requests meant for the node itself.
NODE_RECIPIENT = "$node"

_client_seq = itertools.count(1)
_deliverer_lock = threading.Lock()
_encode = wire.encode
_EVENT = int(wire.Kind.EVENT)
_CONTROL = int(wire.Kind.CONTROL)


def node_address(address: str | None = None) -> str:
    """The node to talk to: ``address``, else ``$MESH_NODE``, else the default. Adds tcp://."""
    address = address or os.environ.get("MESH_NODE") or DEFAULT_NODE
    address = address.strip()
    if "://" not in address:
        address = "tcp://" + address
    return address


def check_address(address: str, transport: Transport = ZMQ) -> str:
    """``address`` if ``transport`` can reach it (ZeroMQ: tcp://HOST:PORT; the in-memory twin:
    mem://NAME:PORT), else NodeUnavailable naming what is wrong."""
    if not transport.is_address(address):
        expected = "tcp://HOST:PORT" if transport.scheme == "tcp" else f"{transport.scheme}://NAME:PORT"
        raise NodeUnavailable(f"invalid node address {address!r}: expected {expected}")
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
        transport: what carries the messages (:mod:`mesh.runtime.transport`): ZeroMQ by
            default, or a host of the in-memory twin (``MemoryNetwork().transport("a")``),
            whose addresses are mem://NAME:PORT. The asyncio forms (``ask_async``,
            ``tell_async``, ``control_async``...) run on ZeroMQ only.
        clock: where timeouts and deadlines read the time (default: the transport's clock,
            the system's unless a test gives a FakeClock).
        keys: CURVE keys for every socket (a keys directory, then ``$MESH_KEY_NAME`` or its
            only keypair picks whose, or ``DIR/private/NAME.key_secret``); default ``$MESH_KEYS``,
            else none (:mod:`mesh.runtime.keys`).
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
        transport: Transport | None = None,
        clock: Clock | None = None,
        keys: str | os.PathLike[str] | Keys | None = None,
    ):
        # keys: CURVE on every socket (a keys directory or a secret certificate; default $MESH_KEYS)
        self.transport: Transport = transport or transport_for(keys)
        self.clock: Clock = clock or self.transport.clock
        self.node = check_address(node_address(node), self.transport)
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
        self.cancel_at: dict[str, str] = {}  # an actor's endpoint -> where cancels of asks to it go
        self._groups = Groups(self)
        self.limits: dict[str, int] = {}  # endpoint -> the largest frame its owner accepts, in bytes
        self._channels: weakref.WeakSet[Link] = weakref.WeakSet()
        self._alinks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, AsyncLink]] = \
            weakref.WeakKeyDictionary()
        self._all_alinks: weakref.WeakSet[AsyncLink] = weakref.WeakSet()
        self._closed = False
        self._leases: weakref.WeakSet[Lease] = weakref.WeakSet()
        self._renewer: Renewer | None = None
        self._leader_address: str | None = None  # kept by rpc: where the leader listens, while it leads
        self._deliverer: Deliverer | None = None
        self._subscribers: dict[str, tuple[float, list[str]]] = {}
        self._publishers: Publishers | None = None
        self._topics = TopicCallbacks(self)  # subscribe(topic, callback): its thread starts on first use
        if check:
            try:
                self._learn_node(rpc.ping(self, connect_timeout))
            except BaseException:
                self.close()
                raise

    # -- channels --------------------------------------------------------------

    def _channel(self, endpoint: str) -> Link:
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
            ch = self.transport.channel(endpoint, hwm=self.hwm, send_timeout=self.send_timeout,
                                        max_bytes=self.max_frame_bytes,
                                        limit=self.limits.get(endpoint, self.max_frame_bytes),
                                        send_bytes=self.send_bytes, clock=self.clock)
            chans[endpoint] = ch
            self._channels.add(ch)
        return ch

    def control(self, op: str, timeout: float = 5.0, **fields: object) -> Any:
        """Send the control request ``op`` to the node and return its answer (:mod:`mesh.runtime.rpc`
        has a typed function for each operation)."""
        return self._control_at(self.node, op, timeout, **fields)

    def _control_at(self, address: str, op: str, timeout: float = 5.0, /, **fields: object) -> Any:
        """Send a control request to ``address`` (a node, or an actor's own socket); its answer."""
        msg_id = next(self.ids)
        frame = _encode(_CONTROL, msg_id, 0, self.name, NODE_RECIPIENT, {"op": op, **fields})
        ch = self._channel(address)
        try:
            try:
                return ch.request(frame, msg_id, timeout, f"node at {address}")
            except Unreachable:
                # The request never left (the channel knew the node was gone, or nothing ever
                # listened): once more on a fresh connection, say to a restarted node.
                ch.dead = True
                ch = self._channel(address)
                return ch.request(frame, msg_id, timeout, f"node at {address}")
        except (AskTimeout, ActorDied) as exc:
            # A connection that stands (the node is slow, paused or loaded) is kept: its late answer
            # is dropped by id, and a thousand agents reconnecting every heartbeat would load it more.
            if isinstance(exc, ActorDied) or not ch.connected:
                ch.dead = True
            raise NodeUnavailable(f"no mesh node answers at {address} (is `mesh up` running?)") from None

    # -- topics --------------------------------------------------------------------------

    def publish(self, topic: str, data: object = None, corr: str | None = None) -> str:
        """Send an event to every subscriber of ``topic``, once, through this node's forwarder
        (PUB/SUB, see :mod:`mesh.runtime.broadcast`); returns its id. Fire-and-forget."""
        check_topic(topic)
        event_id, frame = encode_event(self, topic, data, corr)
        if self._publishers is None:
            self._publishers = Publishers(self)
        self._publishers.publish(event_topic(topic), frame)
        return event_id

    def _publish_each(self, topic: str, data: object = None, corr: str | None = None) -> str:
        """The way events went before PUB/SUB: one send per subscriber, looked up in the shared
        state (``$subs/``). Kept for ``benchmarks/events.py``, which measures both."""
        check_topic(topic)
        now = self.clock.monotonic()
        cached = self._subscribers.get(topic)
        if cached is None or now - cached[0] > CACHE_S:
            cached = self._subscribers[topic] = (now, rpc.subscribers(self, topic))
        event_id = f"{self.name}:{next(self.ids)}"
        body = {"topic": topic, "data": data, "id": event_id, "corr": corr}
        for name in cached[1]:
            try:
                ch = self._channel(self.endpoint_of(name, timeout=0.0))
                ch.tell(_encode(_EVENT, next(self.ids), 0, self.name, name, body), FLUSHER)
            except (ActorNotFound, Unreachable, NodeUnavailable, ActorDied):
                continue  # a subscriber that is gone or restarting misses it: events are fire-and-forget
        return event_id

    # -- reliable delivery ---------------------------------------------------------------

    def _delivery(self) -> Deliverer:
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

    def task_done(self, n: int = 1) -> None:
        """Count ``n`` tasks completed in this process (reported if it serves an actor; see ActorContext)."""
        USAGE.tasks += max(0, int(n))

    def acquire(self, name: str, *, n: int = 1, timeout: float = 10.0, holder: str | None = None) -> "Lease":
        """Wait (in line, mesh-wide) for ``n`` units of pool ``name``, or ``n`` permits of rate
        limit ``name``, at most ``timeout`` seconds. Returns a :class:`Lease` (a context
        manager); raises AcquireTimeout, or ResourceError for a request that can never be
        granted. While the mesh has no leader the request keeps trying until its timeout."""
        from .resources import Renewer, granted_lease

        holder = holder or self.name
        deadline = self.clock.monotonic() + timeout
        last: Exception | None = None
        while True:
            remaining = deadline - self.clock.monotonic()
            if remaining <= 0:
                why = f" (last: {last})" if last else ""
                raise AcquireTimeout(f"no grant of {n} of {name!r} within {timeout:g} s{why}")
            sent = time.monotonic()  # the lease's own clock (resources.py keeps leases in real time)
            request_id = f"{self.name}:{uuid.uuid4().hex}"
            try:
                answer = rpc.acquire(self, request_id, holder, name, n, remaining)
            except (NotLeader, NodeUnavailable) as exc:  # an election, or the leader just died
                last = exc
                self.clock.sleep(min(0.05, max(0.0, deadline - self.clock.monotonic())))
                continue
            lease = granted_lease(self, answer, sent, holder)
            if lease.lease_id is not None:
                self._leases.add(lease)
                if self._renewer is None:
                    self._renewer = Renewer(self._leases)
            return lease

    acquire_async = async_twin(acquire)

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
        deadline = self.clock.monotonic() + timeout
        while True:
            answer = rpc.resolve(self, name)
            if isinstance(answer, dict) and isinstance(answer.get("endpoint"), str):
                endpoint = answer["endpoint"]
                self._learn_limit(endpoint, answer)
                if answer.get("name", name) != name:  # a replica answered: a group (see groups.py)
                    self._groups.names.add(name)
                self._endpoints[name] = endpoint
                return endpoint
            state = answer.get("state") if isinstance(answer, dict) else None
            if self.clock.monotonic() >= deadline:
                raise ActorNotFound(f"actor {name!r} is {state or 'not running'} and did not come up within {timeout:g} s")
            self.clock.sleep(0.05)

    def _learn_node(self, answer: object) -> None:
        """What the node's answer to a ping says of it: the largest frame it takes."""
        if isinstance(answer, dict):
            self._learn_limit(self.node, answer)
            if self.node in self.limits:
                self._channel(self.node).limit = self.limits[self.node]

    def _learn_limit(self, endpoint: str, answer: Mapping[str, object]) -> None:
        """What a resolve (or group) answer says of ``endpoint``: its frame limit, its cancel address."""
        cancel = answer.get("cancel")
        if isinstance(cancel, str):
            self.cancel_at[endpoint] = cancel
        limit = answer.get("max_frame")
        if type(limit) is int and limit > 0:
            self.limits[endpoint] = min(limit, self.max_frame_bytes)

    def _forget(self, name: str) -> None:
        """Drop the cached address of ``name``: the next message asks the node where it is."""
        self._endpoints.pop(name, None)

    # -- public surface ------------------------------------------------------------

    def actor(self, name: str) -> "ActorRef":
        """A reference to the actor called ``name``, wherever it runs. For a replica group's name,
        each message goes to the next running replica (round robin, see :mod:`mesh.runtime.groups`)."""
        if not isinstance(name, str) or not name:
            raise ValueError("an actor name is a non-empty string")
        return ActorRef(name, self)

    def group(self, name: str) -> list[str]:
        """The names of the running replicas of replica group ``name``, mesh-wide, in order (empty:
        ``name`` is not a group, or none of its replicas runs right now)."""
        return [m["name"] for m in self._groups.learn(name, rpc.group(self, name))]

    @property
    def state(self) -> "SharedState":
        """The shared key/value state of the mesh (get, set, delete, items, watch)."""
        from .state import SharedState

        return SharedState(self)

    def status(self) -> dict[str, Any]:
        """The node's status: the same object ``mesh status --json`` prints."""
        return rpc.status(self)

    def ping(self, timeout: float = 5.0) -> "rpc.Ping":
        """The node's answer to a ping (``node``, ``pid``, ``address``); NodeUnavailable if none."""
        return rpc.ping(self, timeout)

    def intents(self) -> "rpc.Listing":
        """Pending and held intentions, and escalations waiting for a person, mesh-wide
        (what ``mesh intents`` lists)."""
        return rpc.intents(self)

    def approve(self, intention_id: str, *, by: str | None = None) -> "rpc.Decided":
        """Approve an escalation that waits for a person (``mesh approve ID``). ``by``: who decides
        (default: this client's name). Raises UnknownEscalation if none waits under that id."""
        return rpc.intent_decide(self, intention_id, True, by or self.name)

    def deny(self, intention_id: str, *, by: str | None = None) -> "rpc.Decided":
        """Deny an escalation that waits for a person (``mesh deny ID``)."""
        return rpc.intent_decide(self, intention_id, False, by or self.name)

    def kill(self, *, release: bool = False, by: str | None = None) -> "rpc.KillSwitch":
        """Pull the kill switch: every node stops every agent now (``mesh kill``); with ``release``
        let go of it (``mesh kill --release``). ``by``: who (default: this client's name)."""
        return rpc.kill(self, release, by or self.name)

    def logs(self, name: str, *, offset: int = 0, tail: int | None = None) -> "rpc.LogChunk":
        """A chunk of agent ``name``'s output from byte ``offset`` (``mesh logs``): ``data``, and the
        ``offset`` to read from next, and the log's ``size``. ``tail``: start that many bytes
        before the end instead. Only the node that runs the agent has its log."""
        return rpc.logs(self, name, offset, tail)

    def down(self) -> "rpc.Stopping":
        """Ask the node to stop gracefully (``mesh down``): its agents' ``on_stop`` run, then it
        exits. Returns at once (``stopping``, the node's ``pid``)."""
        return rpc.down(self)

    def subscribe(self, topic: str, callback: Callback) -> None:
        """Call ``callback(event)`` (a :class:`mesh.Event`) for every event published on ``topic``
        from now on, anywhere in the mesh: when this returns, every live node has the subscription in
        place. Callbacks run one at a time on this client's subscriptions thread (keep them short; one
        that raises is logged). Subscribing again to a topic replaces its callback. See
        :mod:`mesh.runtime.topic_callbacks`."""
        self._topics.subscribe(topic, callback)

    def unsubscribe(self, topic: str) -> None:
        """No more events on ``topic`` for this client."""
        self._topics.unsubscribe(topic)

    # A person's controls: one agent (mesh stop/restart), alerts (mesh alerts/ack). Each documented where defined.
    stop_agent = agent_control.stop_agent
    restart_agent = agent_control.restart_agent
    alert = alerting.alert
    alerts = alerting.alerts
    ack_alert = alerting.ack_alert

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
        if self._publishers is not None:
            self._publishers.close()
        self._topics.close()
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

    def _open_alink(self, endpoint: str) -> AsyncLink | None:
        """This event loop's link to ``endpoint`` if it has one (alive or dead), else None."""
        links = self._alinks.get(asyncio.get_running_loop())
        return None if links is None else links.get(endpoint)

    def _alink(self, endpoint: str) -> AsyncLink:
        """This event loop's link to ``endpoint``, made on first use or after the peer died."""
        loop = asyncio.get_running_loop()
        links = self._alinks.get(loop)
        if links is None:
            links = self._alinks[loop] = {}
        link = links.get(endpoint)
        if link is None or link.dead:
            link = links[endpoint] = AsyncLink(endpoint, self)
        return link

    async def control_async(self, op: str, timeout: float = 5.0, **fields: object) -> Any:
        """:meth:`control` for asyncio code, on this event loop's own link to the node."""
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
        deadline = self.clock.monotonic() + self.resolve_timeout
        while True:
            answer = await rpc.resolve_async(self, name)
            if isinstance(answer, dict) and isinstance(answer.get("endpoint"), str):
                self._learn_limit(answer["endpoint"], answer)
                if answer.get("name", name) != name:
                    self._groups.names.add(name)
                self._endpoints[name] = answer["endpoint"]
                return answer["endpoint"]
            if self.clock.monotonic() >= deadline:
                raise ActorNotFound(f"actor {name!r} did not come up within {self.resolve_timeout:g} s")
            await asyncio.sleep(0.05)


__all__ = ["ActorRef", "Client", "check_address", "node_address"]
