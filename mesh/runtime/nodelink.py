"""A served actor's bond with its node: registration, heartbeats, and stopping with it.

The server registers its actor once ``on_start`` has returned and unregisters it when it
stops. Meanwhile a thread reports it alive every ``HEARTBEAT_S`` (an agent its node started
that holds no watchdog deadline: every ``IDLE_BEAT_S`` from a random first moment, so that
many agents do not wake their node together, and only when its counters changed, else every
``QUIET_BEAT_S``: its node reads the silence as "unchanged") and registers it again if the node
forgot it (an embedded actor whose node restarted). An agent that its node started (``supervised``)
stops when the node dies: SIGTERM starts a graceful stop, the kernel's parent-death signal
resumes an agent the node had throttled, and the thread notices the lost parent at once: it
waits on a descriptor of the node's process (``pidfd_open``), which becomes readable when the
node ends (where there is none, it looks every ``PARENT_CHECK_S``, 1 s). An ``on_stop`` that
hangs is cut short after ``ORPHAN_GRACE_S`` by ending the agent's whole process tree. An idle
agent's thread so wakes once per ``IDLE_BEAT_S``, not once a second (it also sweeps the agent's
channels then: :class:`~mesh.runtime.flusher.Janitor`).

The watchdog (:mod:`mesh.core.fencing`, rule 2): a replica that a leader placed on the node and
could place elsewhere is given a deadline, at spawn (``MESH_LEASE_UNTIL``) and in each heartbeat's
answer (``lease_s``, counted from when the heartbeat was sent): when the node's lease lapses
unless renewed. If the deadline passes without a renewal (the node is paused, hung, or cut off
and too slow to stop it), the agent stops itself: a graceful stop, cut short after
``FENCE_GRACE_S``, and the exit status ``LEASE_EXIT``, which tells its node to start it again at
once if the lease holds by then. Heartbeats come sooner while the deadline is near, and wait
for their answer no later than it. An agent whose first deadline came while it was starting asks
its node before running any of its own code (:func:`confirm_first_lease`): the node renews a
deadline only if its lease held through it (:func:`mesh.core.fencing.renews`).

An agent its node started never gives up on a timer while that node lives: its start-up requests
(:func:`confirm_first_lease`, registration; the connect ping only where the node did not give its
frame limit) retry with a longer wait each time
(:func:`while_node_lives`), checking between tries that the node is still its parent. A loaded
node that answers late delays the agent; it does not fail it.

Between heartbeats the thread waits on the actor's cancel listener rather than sleeping, so a
cancel (an asker whose ask timed out, :mod:`.cancels`) reaches the handler at once.
"""

from __future__ import annotations

import logging
import math
import os
import random
import signal
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, Callable, TypeVar

from ..actor import Actor
from ..core.fencing import FENCE_GRACE_S
from ..errors import MailboxFull, MeshError, NodeUnavailable
from . import rpc
from .containment import PR_SET_PDEATHSIG, prctl
from .flusher import JANITOR
from .intake import BadFrames
from .transport import NOWAIT, Listener, NothingYet
from .usage import USAGE

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client
    from .server import Server

T = TypeVar("T")
#: What a heartbeat reports (see _counters).
Counters = tuple[int, int, float, float, dict[str, float | int | None]]

log = logging.getLogger("mesh.server")

#: How often a served actor reports to its node, in seconds, while it holds a watchdog deadline
#: or is embedded (not started by its node).
HEARTBEAT_S = 0.5
#: How often an agent its node started and that holds no deadline reports (its counters only:
#: the node watches its process), in seconds, when they changed.
IDLE_BEAT_S = 2.0
#: How long such an agent whose counters did not change stays silent at most, in seconds (its
#: node reads the silence as "unchanged": a thousand idle agents send it almost nothing).
QUIET_BEAT_S = 30.0
#: How often an agent its node started looks whether its parent (the node) is still there, in
#: seconds, where it cannot wait on a descriptor of the node's process (the kernel's parent-death
#: signal only resumes it, see the module note).
PARENT_CHECK_S = 1.0
#: How long an orphaned agent may take to stop gracefully before it is killed, in seconds.
ORPHAN_GRACE_S = 3.0
#: The environment variable that gives a spawned agent its first watchdog deadline: seconds on the
#: system's monotonic clock (``time.monotonic()``), absent when it has none.
LEASE_UNTIL_ENV = "MESH_LEASE_UNTIL"
#: The exit status of an agent its watchdog stopped (EX_TEMPFAIL): not a failure of the agent.
LEASE_EXIT = 75
#: How long the first try of a start-up request (the connect ping, the lease, registration) waits
#: for the node, in seconds; each further try waits twice as long, up to HANDSHAKE_MAX_TRY_S. An
#: agent its node started tries again for as long as that node lives: a loaded node answers late,
#: and a timer must not turn that into an exit that counts against the agent's restarts.
HANDSHAKE_TRY_S = 3.0
HANDSHAKE_MAX_TRY_S = 30.0


class NodeLink:
    def __init__(self, server: "Server"):
        self.server = server
        self.registered = False
        #: The watchdog's deadline (the server's monotonic clock), or None: none (not a movable replica).
        self.lease_until = _first_lease() if server.supervised else None
        self.lease_ran_out = False  #: the watchdog stopped the agent
        self.cancels: Listener | None = None  #: where askers send cancels; read by the watch thread only
        self.node_fd: int | None = None  #: readable once the node has ended (_watch_node); the watch thread's
        self.bad = BadFrames(f"actor {server.name} (cancels)")

    def listen_for_cancels(self) -> None:
        """Bind the cancel listener (before the watch thread starts, which then owns it)."""
        server = self.server
        self.cancels = server.transport.listen(server.bind, mailbox=1000, replies=1, max_bytes=4096, linger_ms=0,
                                               wait_ms=50, any_port=True)

    def _wait(self, seconds: float) -> bool:
        """Wait ``seconds`` taking cancels meanwhile; True once the actor has stopped. Ends early
        (False) when the node ends (``node_fd``): the caller looks at its parent at once."""
        server = self.server
        listener = self.cancels
        if listener is None:
            return server.stopped.wait(seconds)
        monotonic = time.monotonic  # real time, as stopped.wait waits: a test's FakeClock must not stall the link
        deadline = monotonic() + seconds
        while not server.stopped.is_set():
            left = deadline - monotonic()
            if left <= 0:
                return False
            # A poll, not a receive that times out: no exception (nor option set) per wake-up.
            node_fd = self.node_fd
            # Rounded up: a poll never ends before its time, so one poll covers the slice.
            cancel, node_ended = listener.wait_for_input(max(1, math.ceil(left * 1000)), node_fd)
            if node_ended and node_fd is not None:  # (it stays readable: the parent check takes over)
                self.node_fd = None
                os.close(node_fd)
                return server.stopped.is_set()
            if not cancel:
                continue
            try:
                got = listener.receive(self.bad, NOWAIT)
            except NothingYet:
                continue
            if got is not None:
                server.cancels.take(got[1], self.bad)
        return True

    def install_signals(self) -> Callable[[], object]:
        """SIGTERM stops the actor gracefully (unless the program handles SIGTERM itself); returns
        what restores the previous handler."""
        server = self.server
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = signal.getsignal(signal.SIGTERM)
        if previous not in (signal.SIG_DFL, None) and not server.supervised:
            return lambda: None

        def on_term(signum: int, frame: FrameType | None) -> None:
            server.request_stop()

        signal.signal(signal.SIGTERM, on_term)
        if server.supervised:
            _die_with_parent()
        return lambda: signal.signal(signal.SIGTERM, previous)

    def register(self) -> None:
        server = self.server
        assert server.endpoint is not None, "an actor registers once its socket is bound"
        endpoint = server.endpoint
        intentions = type(server.actor).on_intention is not Actor.on_intention
        cancel = self.cancels.address if self.cancels is not None else None

        def register(timeout: float) -> rpc.Registered:
            return rpc.register(server.client, server.name, endpoint, os.getpid(), server.supervised,
                                server.max_frame_bytes, intentions, timeout, cancel=cancel)

        answer = while_node_lives(register, server.name, "registration") if server.supervised else register(5.0)
        if isinstance(answer, dict):
            server.incarnation = int(answer.get("incarnation", 0))
        self.registered = True

    def unregister(self) -> None:
        if not self.registered or self.lease_ran_out:  # a node that let the lease run out may not answer
            return
        try:
            rpc.unregister(self.server.client, self.server.name, self.server.endpoint)
        except MeshError:
            pass

    def watch(self) -> None:
        """Heartbeats to the node; re-registration after a node restart; orphan detection.

        The parent is watched until the actor has stopped, not only until a stop is
        asked for: when the node dies the kernel's PDEATHSIG (SIGCONT) resumes an agent
        the node had stopped, this watch starts the graceful stop, and an on_stop that
        hangs is still cut short.
        """
        server = self.server
        parent = int(os.environ.get("MESH_NODE_PID") or os.getppid()) if server.supervised else os.getppid()
        try:
            if server.supervised:
                self.node_fd = _watch_node(parent)
                if self.node_fd is not None:  # it ends with its node, which it sees end at once
                    JANITOR.spare(server.client.node)
            self._watch(parent)
        finally:
            if server.supervised:
                JANITOR.spare(None)
                JANITOR.unhost()  # (the process may go on: its user threads, a failed watch)
            if self.cancels is not None:
                self.cancels.close(0)
            if self.node_fd is not None:
                os.close(self.node_fd)
                self.node_fd = None

    def _watch(self, parent: int) -> None:
        server = self.server
        # The first beat at a random point of the first period: a thousand agents started together
        # do not report together ever after.
        next_beat = server.clock.monotonic() + random.uniform(0.0, IDLE_BEAT_S if server.supervised else HEARTBEAT_S)
        reported: Counters | None = _counters(server)  # what the node has heard (all zero at registration)
        quiet_until = next_beat + QUIET_BEAT_S
        monotonic = time.monotonic
        while not self._wait(self._slice(next_beat)):
            if server.supervised:
                JANITOR.sweep_if_due(monotonic())
                if os.getppid() != parent:
                    self._orphaned()
                    return
            now = server.clock.monotonic()
            if self.lease_until is not None and now >= self.lease_until:
                self._lease_ran_out()
                return
            # While stopping, heartbeats only renew the lease (a stop may take its stop timeout).
            if not self.registered or (server.stopping.is_set() and self.lease_until is None):
                continue
            near = self.lease_until is not None and self.lease_until - now < HEARTBEAT_S + 0.25
            if now < next_beat and not near:
                continue
            # An agent with a deadline, or an embedded actor (its node forgets it after EMBEDDED_TTL_S),
            # reports every HEARTBEAT_S; an agent without one only brings its counters, less often, and
            # only when they changed (or after QUIET_BEAT_S).
            beats_anyway = self.lease_until is not None or not server.supervised
            next_beat = now + (HEARTBEAT_S if beats_anyway else IDLE_BEAT_S)
            counters = _counters(server)
            if not beats_anyway and counters == reported and now < quiet_until:
                continue
            reported, quiet_until = counters, now + QUIET_BEAT_S
            # With a deadline, no later answer than it: the watchdog must fire on time.
            timeout = 2.0 if self.lease_until is None else min(2.0, max(0.05, self.lease_until - now))
            try:
                beat = rpc.heartbeat(server.client, server.name, server.endpoint, counters[0], counters[1],
                                     timeout=timeout, until=self.lease_until,
                                     usage={"busy_s": counters[2], "waited_s": counters[3], **counters[4]})
            except MeshError:
                reported = None  # not heard: said again at the next beat
                continue
            if not beat.get("known", True) and not server.supervised and not server.stopping.is_set():
                self.register()
            if server.supervised:
                lease = beat.get("lease_s")
                self.lease_until = now + float(lease) if isinstance(lease, (int, float)) else None

    def _slice(self, next_beat: float) -> float:
        """How long the thread waits before it looks again: until the next beat, the deadline's
        approach, or the next look at the parent, whichever comes first."""
        server = self.server
        now = server.clock.monotonic()
        wait = max(0.0, next_beat - now)
        if server.supervised:  # it sweeps the channels (JANITOR.host) and looks at its parent
            wait = min(wait, JANITOR.HOSTED_INTERVAL_S if self.node_fd is not None else PARENT_CHECK_S)
        if self.lease_until is not None:
            wait = min(wait, max(0.0, self.lease_until - now - HEARTBEAT_S - 0.25))
        return max(0.05, wait)

    def _lease_ran_out(self) -> None:
        server = self.server
        log.warning("%s: its node did not renew its lease in time; stopping (a leader may run it elsewhere)",
                    server.name)
        self.lease_ran_out = True
        server.request_stop()
        if server.stopped.wait(FENCE_GRACE_S):
            return
        from .containment import end_own_tree

        end_own_tree()

    def _orphaned(self) -> None:
        server = self.server
        log.warning("%s: the node that started this agent is gone; stopping", server.name)
        try:  # the node may have left the whole group stopped (CPU throttling): resume it
            os.killpg(os.getpgrp(), signal.SIGCONT)
        except OSError:
            pass
        server.request_stop()
        if server.stopped.wait(ORPHAN_GRACE_S):
            return
        # on_stop did not finish in time: end everything this agent started (sessions of their
        # own included), then its process group, this process with it.
        from .containment import end_own_tree

        end_own_tree()


def _counters(server: "Server") -> Counters:
    """What a heartbeat reports: messages handled, bad frames, busy and waited seconds, the rest."""
    return server.handled, server.bad.total, server.busy_s, server.waited_s, USAGE.report()


def confirm_first_lease(name: str, node: str) -> None:
    """Before an agent its node started runs any of its own code: if its first deadline
    (``MESH_LEASE_UNTIL``) has come, or nearly, ask the node for a new one, given only if the
    node's lease held through it (the agent took long to start: a loaded machine). Exits with
    LEASE_EXIT (start me again if the lease holds) when the node gives none or does not answer."""
    until = _first_lease()
    now = time.monotonic()
    if until is None or until - now >= HEARTBEAT_S + 0.25:
        return
    from .client import Client

    with Client(node, check=False) as client:
        beat = while_node_lives(lambda timeout: rpc.lease(client, name, os.getpid(), until, timeout), name, "its lease")
    lease = beat.get("lease_s")
    if lease is None:
        os.environ.pop(LEASE_UNTIL_ENV, None)  # no deadline needed (any more)
    elif lease > 0:
        os.environ[LEASE_UNTIL_ENV] = repr(now + float(lease))
    else:
        log.warning("%s: its lease ran out before it started (a leader may run it elsewhere); not starting", name)
        raise SystemExit(LEASE_EXIT)


#: The largest frame the node takes, given to the agents it starts (no start-up ping needed).
NODE_MAX_FRAME_ENV = "MESH_NODE_MAX_FRAME"


def node_lives() -> bool:
    """Whether the node that started this process still runs: it is still the parent (by the pid
    the node gave in ``MESH_NODE_PID``; else not re-parented to init)."""
    given = os.environ.get("MESH_NODE_PID")
    try:
        return os.getppid() == int(given) if given else os.getppid() != 1
    except ValueError:
        return os.getppid() != 1


def while_node_lives(request: Callable[[float], T], name: str, what: str) -> T:
    """``request(timeout)`` until the node answers, for as long as the node lives: each try waits
    longer (HANDSHAKE_TRY_S, doubling up to HANDSHAKE_MAX_TRY_S). An answer that is an error is
    raised at once; when the node is gone, the last "no answer" is."""
    timeout = HANDSHAKE_TRY_S
    waited = 0.0
    while True:
        started = time.monotonic()
        try:
            return request(timeout)
        except (NodeUnavailable, MailboxFull) as exc:
            if not node_lives():
                raise
            waited += time.monotonic() - started
            log.warning("%s: its node has not answered about %s for %.0f s (%s); still waiting, as it runs",
                        name, what, waited, exc)
            timeout = min(HANDSHAKE_MAX_TRY_S, timeout * 2)


def wait_for_node(client: "Client", name: str) -> None:
    """The start-up ping of an agent its node started (:func:`while_node_lives`); it also learns the
    largest frame the node takes, as a client's own check does. Closes ``client`` if it fails.
    Skipped when the node gave that limit as it started the agent (``MESH_NODE_MAX_FRAME``): the
    registration that follows waits for the node the same way, and a thousand agents starting
    together cost their node a thousand requests fewer."""
    given = os.environ.get(NODE_MAX_FRAME_ENV, "")
    if given.isdigit() and int(given) > 0:
        if not node_lives():  # as the ping would have found: no actor code runs for a node that is gone
            client.close()
            raise NodeUnavailable(f"{name}: the node that started it is gone")
        client._learn_node({"max_frame": int(given)})
        return
    try:
        client._learn_node(while_node_lives(lambda timeout: rpc.ping(client, timeout), name, "the start-up ping"))
    except BaseException:
        client.close()
        raise


def _first_lease() -> float | None:
    """The deadline the node gave at spawn, on this process's clock (the system's monotonic one)."""
    given = os.environ.get(LEASE_UNTIL_ENV)
    try:
        return float(given) if given else None
    except ValueError:
        return None


def _watch_node(node: int) -> int | None:
    """A descriptor that becomes readable when process ``node`` (this agent's parent) ends, or None
    where there is none (not Linux 5.3 or later, or the node is gone already: the parent check
    that follows sees it)."""
    try:
        fd = os.pidfd_open(node)
    except (AttributeError, OSError):
        return None
    if os.getppid() != node:  # the pid was another process's: the node had ended before
        os.close(fd)
        return None
    return fd


def _die_with_parent() -> None:
    """Ask the kernel to SIGCONT this process when its parent (the node) dies."""
    # SIGCONT, not SIGTERM: an agent the node had stopped (CPU throttling) must first run again;
    # the parent watch in the link thread then stops it (at once; within PARENT_CHECK_S where the
    # link has no descriptor of the node's process). Where it cannot be
    # asked, the getppid() watch in the link thread still covers it.
    prctl(PR_SET_PDEATHSIG, signal.SIGCONT)
