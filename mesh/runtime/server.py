"""Serving an actor: its ROUTER and its receive loop (its bond with its node: :mod:`.nodelink`).

This is the one code path for every actor: a process that a node spawns runs
``mesh.serve`` exactly like a user's script that embeds an actor.

The receive loop is a plain blocking loop over the actor's ROUTER (no asyncio on
the message path: it measured 1.5x slower). It reads ``[identity, frame]``,
decodes the frame into one envelope or a batch, calls ``on_message`` for each in
order, and answers asks on the same ROUTER. ``async def`` hooks run on an event
loop owned by the server, so ``await ref.ask_async(...)`` works inside them.

The mailbox is the ROUTER's receive queue, bounded per sending connection by
``mailbox`` frames and ``mailbox_bytes`` bytes (RCVHWM: as many frames of
``max_frame_bytes`` as fit in ``mailbox_bytes``, at least one, at most ``mailbox``).
When it is full, ZeroMQ stops reading from the sender's connection, the sender's
own queue fills (bounded in bytes too, see channel.py), and its send blocks for its
``send_timeout`` and then raises MailboxFull: back-pressure, never a silent drop.

The ROUTER is the transport's listener (:mod:`.transport`): ZeroMQ's by default, or the
in-memory twin's when the server is given that transport (``transport=``), which bounds
a mailbox the same way. The loop calls the listener's ``receive`` and ``reply``, which for
ZeroMQ are the socket's own methods: no wrapper on the message path.
"""

from __future__ import annotations

import asyncio
import heapq
import inspect
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from .. import wire
from ..actor import Actor
from ..errors import MailboxFull, WireError, handler_error, to_wire
from ..topics import Event as TopicEvent
from ..wire import BODY, KIND, MSG_ID, SENDER, TRACE, WAITING
from . import tracing
from .client import Client
from .broadcast import EVENT_PREFIX, INTENTION_TOPIC, Subscriptions
from .answers import HeldAnswers
from .cancels import Cancels, run_cancellable
from .clock import Clock
from .context import ActorContext
from .delivery import Seen
from .flusher import FLUSHER, JANITOR
from .hearer import Hearer, hears_intentions
from .intake import BadFrames
from .nodelink import LEASE_EXIT, NodeLink, wait_for_node
from .ref import ACTING
from .transport import SEND_BYTES, WAKE_ID, Listener, NothingYet, Transport, frames_within

log = logging.getLogger("mesh.server")

_NO_CHAIN: list[str] = []
_ASK, _TELL_ACK, _EVENT, _TELL = int(wire.Kind.ASK), int(wire.Kind.TELL_ACK), int(wire.Kind.EVENT), int(wire.Kind.TELL)
_CONTROL, _REPLY, _FAIL = int(wire.Kind.CONTROL), int(wire.Kind.REPLY), int(wire.Kind.FAIL)

#: Longest time the loop blocks before it looks at timers and the stop flag, in ms; on a listener
#: that can be woken (ZeroMQ), WOKEN_SLICE_MS: a stop or a timer set from another thread wakes it,
#: so a thousand idle agents do not each wake five times a second.
IDLE_SLICE_MS = 200
WOKEN_SLICE_MS = 2000
#: Bytes a mailbox may hold per sending connection, by default (spec key ``mailbox_bytes``).
MAILBOX_BYTES = 32 * 1024 * 1024
#: Replies queued per asker before the ROUTER drops them, in frames.
REPLY_HWM = 100_000


class Server:
    """Runs one actor. Use :func:`mesh.serve`; this class is its machinery.

    ``transport`` and ``clock`` (default: ZeroMQ and its clock) are handed to the actor's
    own client too, so the actor, its client and its node link all use the same ones; its
    timers run by that clock. See :class:`~mesh.runtime.client.Client` for the other options.
    """

    def __init__(
        self,
        actor: Actor,
        name: str,
        node: str | None = None,
        *,
        mailbox: int = 1000,
        mailbox_bytes: int = MAILBOX_BYTES,
        send_bytes: int = SEND_BYTES,
        bind: str | None = None,
        max_frame_bytes: int = wire.MAX_FRAME_BYTES,
        send_timeout: float = 5.0,
        supervised: bool | None = None,
        transport: Transport | None = None,
        clock: Clock | None = None,
        keys: Any = None,
    ):
        if not isinstance(actor, Actor):
            raise TypeError(f"serve() needs a mesh.Actor instance, not {type(actor).__name__}")
        if not isinstance(name, str) or not name or name.startswith("$"):
            raise ValueError(f"invalid actor name {name!r}")
        if mailbox < 1:
            raise ValueError("mailbox must be at least 1 frame")
        if mailbox_bytes < 1:
            raise ValueError("mailbox_bytes must be at least 1 byte")
        self.actor = actor
        self.name = name
        self.mailbox = mailbox
        self.mailbox_bytes = mailbox_bytes
        self.max_frame_bytes = max_frame_bytes
        if supervised is None:
            supervised = os.environ.get("MESH_SUPERVISED") == "1" and os.environ.get("MESH_AGENT_NAME") == name
        self.supervised = supervised
        if supervised:
            # Its node link's thread wakes at least every 2 s: it sweeps this process's channels,
            # and no janitor thread is started (see flusher.Janitor).
            JANITOR.host()
        self.client = Client(node, name=name, send_timeout=send_timeout, max_frame_bytes=max_frame_bytes,
                             send_bytes=send_bytes, transport=transport, clock=clock, keys=keys,
                             check=not supervised)  # an agent waits for its node while it lives:
        if supervised:
            wait_for_node(self.client, name)
        self.transport = self.client.transport
        self.clock = self.client.clock
        self.bind = bind or _bind_for(self.client.node)
        self.incarnation = 0
        self.handled = 0
        self.busy_s = 0.0  #: seconds in handlers (with the reply's send), read by the heartbeat
        self.waited_s = 0.0  #: seconds messages waited in this process before their handler began
        self.current_sender: str | None = None
        self.current_id = 0  # the msg id of the ask being handled (0: none): what a cancel names
        self.cancels = Cancels(self)  # asks cancelled by their askers (see cancels.py)
        self.handler_task: tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]] | None = None
        self.chain_in: list[str] = _NO_CHAIN  # the actors waiting on the ask being handled
        self.alone: list[str] = [self.name]  # the chain of an ask made while nobody waits on this actor
        self.seen = Seen()  # ids of the acknowledged tells handled in this incarnation
        self.bad = BadFrames(f"actor {name}")
        self.endpoint: str | None = None
        self.stopping = threading.Event()
        self.stopped = threading.Event()
        self._timers: list[tuple[float, int, float | None, object]] = []  # (due, seq, interval, message)
        self._timer_seq = itertools.count()
        self._ids = itertools.count(1)
        self._aloop: asyncio.AbstractEventLoop | None = None
        self.run_coroutine = self._run_coroutine_here
        self.router: Listener | None = None
        self._idle_ms = IDLE_SLICE_MS  #: the loop's longest wait (WOKEN_SLICE_MS once its listener can be woken)
        self._wake_router: Callable[[], None] | None = None  #: ends the loop's wait, if its listener can be woken
        self._loop_thread = threading.get_ident()  #: the thread that runs the loop (set by run())
        self.link = NodeLink(self)
        self._subscriptions: Subscriptions | None = None
        self._subscriptions_lock = threading.Lock()
        self.hearer: Hearer | None = None  # on_intention's thread, if the actor defines it

    # -- public controls ---------------------------------------------------------

    def request_stop(self) -> None:
        """Stop after the current message (from any thread, or a signal handler)."""
        self.stopping.set()
        self._wake()

    def _wake(self) -> None:
        """End the loop's current wait, if it can be woken: from another thread, or from a signal
        handler (it runs on the loop's thread, inside the wait, which then goes on waiting)."""
        if self._wake_router is not None:
            self._wake_router()

    def schedule(self, delay: float, message: object, interval: float | None) -> None:
        due = self.clock.monotonic() + max(0.0, float(delay))
        heapq.heappush(self._timers, (due, next(self._timer_seq), interval, message))
        if self.router is not None and self._timers[0][0] == due:
            # The earliest timer now: wake in time for it, not at the end of the idle slice.
            if threading.get_ident() == self._loop_thread:
                self.router.set_wait(max(1, min(self._idle_ms, int(delay * 1000) + 1)))
            else:
                self._wake()

    def subscriptions(self) -> Subscriptions:
        """The actor's broadcasts (events on topics), received on a thread of their own and handed
        to its ROUTER, so ``on_event`` runs on the actor's loop in order with its messages."""
        with self._subscriptions_lock:
            if self._subscriptions is None:
                self._subscriptions = Subscriptions(self.client, self._broadcast, self.name)
            return self._subscriptions

    def _broadcast(self, topic: bytes, frame: bytes) -> None:
        """A broadcast, on the subscriptions' thread: an event goes to this actor's own ROUTER, an
        intention to the hearer's thread (``on_intention`` runs beside the handler)."""
        if topic.startswith(EVENT_PREFIX) and self.endpoint is not None and not self.stopping.is_set():
            self.client._channel(self.endpoint).tell(frame, FLUSHER)
        elif topic == INTENTION_TOPIC and self.hearer is not None:
            self.hearer.take(frame)

    def _listen_for_intentions(self) -> None:
        """Before registering as a listener: the intentions' subscription in place at every live
        node (see :mod:`.hearer`)."""
        if hears_intentions(self.actor):
            self.hearer = Hearer(self.actor, self.name, self.client, self.stopping)
            missing = self.subscriptions().subscribe(INTENTION_TOPIC)
            if missing:
                log.warning("%s hears no intentions proposed through %s yet", self.name, ", ".join(missing))

    # -- life cycle ----------------------------------------------------------------

    def run(self) -> None:
        """Serve until stopped: SIGTERM, ``self.mesh.stop()``, Ctrl-C, or the node going away."""
        self._loop_thread = threading.get_ident()
        # The mailbox in bytes: a frame may be as large as max_frame_bytes (see the module note).
        # Replies queue on the way out until the asker reads them; a ROUTER drops what is over
        # its bound, so that one is generous (an asker with many asks in flight, say async).
        router = self.transport.listen(self.bind, mailbox=frames_within(self.mailbox_bytes, self.max_frame_bytes,
                                                                        self.mailbox),
                                       replies=max(self.mailbox, REPLY_HWM), max_bytes=self.max_frame_bytes,
                                       linger_ms=1000, wait_ms=IDLE_SLICE_MS, any_port=True)
        self.endpoint = router.address
        listen_for_wakes = getattr(router, "listen_for_wakes", None)
        self.router = router
        if listen_for_wakes is not None:
            listen_for_wakes()
            self._idle_ms = WOKEN_SLICE_MS
            router.set_wait(WOKEN_SLICE_MS)
            self._wake_router = router.wake  # type: ignore[attr-defined]
        self.actor.mesh = ActorContext(self, self.client)
        restore = self.link.install_signals()
        watchdog = None
        crashed: BaseException | None = None
        try:
            # Watch the node from the start: an on_start that hangs must not outlive it.
            self.link.listen_for_cancels()
            watchdog = threading.Thread(target=self.link.watch, name="mesh-node-link", daemon=True)
            watchdog.start()
            self._call_hook(self.actor.on_start)
            self._listen_for_intentions()
            self.link.register()
            self._loop(router)
        except KeyboardInterrupt:
            pass
        except BaseException as exc:
            crashed = exc
            raise
        finally:
            self.stopping.set()
            if crashed is None:
                try:
                    self._call_hook(self.actor.on_stop)
                except Exception:
                    log.exception("on_stop of %s raised", self.name)
            self.link.unregister()
            if self._subscriptions is not None:
                self._subscriptions.close()
            self.stopped.set()
            router.close(0 if crashed else 200)
            self.client.close()
            if self._aloop is not None and self.run_coroutine == self._run_coroutine_here:
                self._aloop.close()
            restore()
        if self.link.lease_ran_out:
            raise SystemExit(LEASE_EXIT)  # tells the node: not a failure, start it again if the lease holds

    # -- the loop --------------------------------------------------------------------

    def _loop(self, router: Listener) -> None:
        ACTING.server = self  # asks made by handlers on this thread carry the waiting chain
        decode = wire.decode
        encode = wire.encode
        on_message = self.actor.on_message
        is_coroutine = inspect.iscoroutine
        name = self.name
        ids = self._ids
        max_bytes = self.max_frame_bytes
        bad = self.bad
        stopping = self.stopping
        client = self.client
        timers = self._timers
        receive = router.receive
        reply = router.reply
        answers = HeldAnswers(reply)
        monotonic = self.clock.monotonic
        dirty = FLUSHER.dirty
        perf = time.perf_counter
        traceable = tracing.ENABLED  # a trace a sender sent is taken only where OpenTelemetry is installed
        while not stopping.is_set():
            try:
                got = receive(bad)
            except NothingYet:
                if timers:
                    self._fire_timers()
                continue
            if got is None:
                continue
            ident, frame = got
            received = perf()
            try:
                envelopes = decode(frame, max_bytes)
            except WireError as exc:
                if not len(frame) and ident.bytes == WAKE_ID:  # a wake-up (see _wake): no request
                    if timers:
                        self._fire_timers()
                    continue
                answer = wire.refusal(frame, exc, next(ids), name) if len(frame) > wire.SMALL_FRAME else None
                if answer is None:
                    bad.record(ident, exc, len(frame))
                else:  # a well-formed sender whose body was refused: told why, counted, not shed for the size
                    reply(ident, answer)
                    bad.record(ident, exc)
                continue
            many = len(envelopes) > 1 and answers.open(ident, len(frame))  # held and sent together: answers.py
            for env in envelopes:
                kind = env[KIND]
                if many and kind != _ASK:  # answered before anything else runs (a tell may end the actor)
                    answers.flush()
                self.current_sender = env[SENDER]
                # A traced message (9 fields, when the sender had a span): handled in a child span.
                traced = tracing.handling(name, env[TRACE], kind == _ASK) if traceable and len(env) == 9 else None
                if traced is not None:
                    traced.__enter__()
                if kind == _ASK:
                    # Who waits on this ask (deadlock detection): its chain, if it came from a handler.
                    self.chain_in = env[WAITING] if len(env) >= 8 else _NO_CHAIN
                    self.current_id = env[MSG_ID]
                    began = perf() if many else 0.0
                    try:
                        result = on_message(env[BODY])
                        if is_coroutine(result):
                            result = self.run_coroutine(result)
                        out = encode(_REPLY, next(ids), env[MSG_ID], name, env[SENDER], result)
                    except Exception as exc:
                        out = encode(_FAIL, next(ids), env[MSG_ID], name, env[SENDER], handler_error(exc))
                    except BaseException:
                        if many:
                            answers.flush()
                        raise
                    self.chain_in = _NO_CHAIN
                    self.current_id = 0
                    if many:
                        answers.add(out, began)
                    else:
                        reply(ident, out)
                elif kind == _TELL:
                    try:
                        result = on_message(env[BODY])
                        if is_coroutine(result):
                            self.run_coroutine(result)
                    except Exception:
                        log.exception("%s: on_message raised while handling a tell; the actor stops", name)
                        raise SystemExit(1) from None
                elif kind == _TELL_ACK:
                    # Reliable delivery: handled once per message id in this incarnation, then acknowledged.
                    key = (env[SENDER], env[MSG_ID])
                    if key not in self.seen:
                        self._one_way(on_message, env[BODY], "on_message raised while handling a tell")
                        self.seen.add(key)
                    reply(ident, encode(_REPLY, next(ids), env[MSG_ID], name, env[SENDER], None))
                elif kind == _EVENT:
                    self._event(env)
                elif kind == _CONTROL:
                    reply(ident, self._control(env))
                else:
                    bad.record(ident, f"unexpected {wire.Kind(kind).name} envelope")
                    continue
                self.handled += 1
                if traced is not None:
                    traced.__exit__(None, None, None)
            if many:
                answers.flush()
            # Timed per frame, not per message (a batch of tells costs two clock reads): each message of
            # a batch waited, on average, for half of the others to be handled before it.
            busy = perf() - received
            self.busy_s += busy
            self.waited_s += busy * (len(envelopes) - 1) / 2
            if dirty:
                client_flush_local(client)
            if timers and timers[0][0] <= monotonic():
                self._fire_timers()

    def _event(self, env: wire.Envelope) -> None:
        """An event on a topic: ``on_event`` runs; a failure there ends the actor, as for a tell."""
        body = env[BODY]
        if not isinstance(body, dict) or not isinstance(body.get("topic"), str) or not isinstance(body.get("id"), str):
            self.bad.record(b"", "an EVENT without topic and id")
            return
        corr = body.get("corr")
        event = TopicEvent(body["topic"], body.get("data"), body["id"], corr if isinstance(corr, str) else None,
                           env[SENDER])
        self._one_way(self.actor.on_event, event, "on_event raised")

    def _one_way(self, hook: Callable[[Any], object], arg: object, what: str) -> None:
        """Run a hook nobody waits on (a tell, an event, a timer): a failure ends the actor's
        process with exit code 1, and its restart policy applies. (Plain tells do the same
        inline: they are the message path.)"""
        try:
            result = hook(arg)
            if inspect.iscoroutine(result):
                self.run_coroutine(result)
        except Exception:
            log.exception("%s: %s; the actor stops", self.name, what)
            raise SystemExit(1) from None

    def _control(self, env: wire.Envelope) -> bytes:
        """Requests any peer may send to an actor's own socket (used by tools and tests)."""
        body = env[BODY]
        asker, asked = env[SENDER], env[MSG_ID]
        op = body.get("op") if isinstance(body, dict) else None
        if op == "ping":
            answer = {"name": self.name, "pid": os.getpid(), "messages": self.handled}
            return wire.encode(_REPLY, next(self._ids), asked, self.name, asker, answer)
        err = to_wire(WireError(f"unknown control op {op!r:.40}"))
        return wire.encode(_FAIL, next(self._ids), asked, self.name, asker, err)

    def _fire_timers(self) -> None:
        timers = self._timers
        monotonic = self.clock.monotonic
        now = monotonic()
        while timers and timers[0][0] <= now and not self.stopping.is_set():
            due, _, interval, message = heapq.heappop(timers)
            if interval is not None:
                heapq.heappush(timers, (max(due + interval, now), next(self._timer_seq), interval, message))
            self.current_sender = self.name
            self._one_way(self.actor.on_message, message, "on_message raised while handling a timer")
            self.handled += 1
        client_flush_local(self.client)
        # Wake in time for the next timer, but never sleep longer than the idle slice.
        wait = self._idle_ms
        if timers:
            wait = max(1, min(wait, int((timers[0][0] - monotonic()) * 1000) + 1))
        if self.router is not None:
            self.router.set_wait(wait)

    # -- hooks and coroutines ------------------------------------------------------------

    def _call_hook(self, hook: Callable[[], object]) -> object:
        result = hook()
        if inspect.iscoroutine(result):
            result = self.run_coroutine(result)
        client_flush_local(self.client)
        return result

    def _run_coroutine_here(self, coro: Coroutine[Any, Any, object]) -> object:
        if self._aloop is None:
            self._aloop = asyncio.new_event_loop()
        return run_cancellable(self, self._aloop, coro)

def client_flush_local(client: Client) -> None:
    """Send the tells this thread holds back, now that the handler returned.

    A full mailbox downstream must not end this actor: what cannot go now stays
    held, and the flusher keeps trying.
    """
    try:
        chans = client._local.channels
    except AttributeError:
        return
    for ch in list(chans.values()):
        if ch.pending:
            try:
                ch.flush()
            except MailboxFull:
                FLUSHER.arm(ch)


def _bind_for(node: str) -> str:
    """Bind actors on the interface the node is reached on: loopback stays loopback.

    (For the in-memory twin, mem://NAME:PORT: on a port of NAME.)"""
    host = node.rsplit(":", 1)[0] if node.count(":") > 1 else node
    if host in ("tcp://localhost",):
        host = "tcp://127.0.0.1"
    if host == "tcp://0.0.0.0" or host == "tcp://*":
        host = "tcp://127.0.0.1"
    return host


def serve(actor: Actor, name: str, node: str | None = None, **options: Any) -> None:
    """Run ``actor`` in this process under ``name``, registered with the node at ``node``.

    Blocks until the actor stops (SIGTERM, Ctrl-C, ``self.mesh.stop()``). Options:
    ``mailbox`` (frames), ``mailbox_bytes`` (bytes per sending connection), ``bind``
    (tcp://HOST to listen on), ``send_timeout`` (s), ``send_bytes`` (bytes queued per peer by
    this actor's own sends), ``max_frame_bytes``, ``transport`` (default ZeroMQ; the in-memory
    twin's, to run the actor in one process with its peers), ``clock`` (default the
    transport's) and ``keys`` (CURVE keys, as for ``mesh.connect``; default ``$MESH_KEYS``).
    """
    Server(actor, name, node, **options).run()


from .serving_async import serve_async  # noqa: E402,F401 - kept importable here; it builds on Server (above)
