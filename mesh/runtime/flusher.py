"""The two threads a process runs for its links: the flusher and the janitor.

The :class:`Flusher` sends the tells a burst left held back for batching (see
:mod:`.channel`) once they have waited LINGER_S. The :class:`Janitor` closes ZeroMQ
channels whose peer is gone before their monitors fill up. At interpreter exit both
stop first, then the tells still held are sent (:func:`_flush_at_exit`).

Both work on any link of the transport interface (its ``lock``, ``pending``, ``closed``,
``flush_locked``, ``poll_events`` and ``close``); only ZeroMQ channels are given to the
janitor, since only their monitors can fill.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterable
from typing import TypeVar

import zmq

from ..errors import MailboxFull
from .transport import Link

log = logging.getLogger("mesh.transport")

#: How long a tell may wait for company before the flusher sends it, in seconds.
LINGER_S = 0.0002

T = TypeVar("T")


def snapshot(items: Iterable[T]) -> list[T]:
    """A list copy of a set another thread may be adding to (a WeakSet raises then)."""
    for _ in range(100):
        try:
            return list(items)
        except RuntimeError:  # "changed size during iteration": try again
            continue
    return []


class Flusher:
    """One daemon thread per process that sends tells left pending by a burst."""

    def __init__(self) -> None:
        self.dirty: set[Link] = set()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._stopped = False

    def stop(self, timeout: float) -> None:
        """At interpreter exit: end the thread, so it is not inside libzmq while the interpreter
        finalizes (a daemon thread still sending then can crash the process)."""
        self._stopped = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def arm(self, channel: Link) -> None:
        self.dirty.add(channel)
        if self._thread is None:
            self._start()
        self._wake.set()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                t = threading.Thread(target=self._run, name="mesh-flusher", daemon=True)
                t.start()
                self._thread = t

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if self._stopped:
                return
            time.sleep(LINGER_S)
            self._wake.clear()
            retry = False
            for ch in list(self.dirty):
                self.dirty.discard(ch)
                if not ch.lock.acquire(blocking=False):
                    # Its owner is using it (an ask flushes it first anyway): next round.
                    self.dirty.add(ch)
                    retry = True
                    continue
                try:
                    if ch.pending and not ch.closed:
                        ch.flush_locked()
                except MailboxFull:
                    # Keep the frames; try again on the next round.
                    self.dirty.add(ch)
                    retry = True
                except zmq.ZMQError as exc:
                    log.warning("could not flush tells to %s: %s", ch.endpoint, exc)
                finally:
                    ch.lock.release()
            if retry:
                time.sleep(0.001)
                self._wake.set()


FLUSHER = Flusher()


class Janitor:
    """Closes channels whose peer is gone, so their monitors cannot fill up.

    A DEALER whose peer died keeps reconnecting, and its monitor gets an event every
    reconnect interval. Unread, that queue fills and libzmq's I/O thread blocks on it,
    which stops every socket of the process (libzmq #3575). Once a second this thread
    reads the monitors of channels nobody is using at the moment and closes the dead
    ones; their owners open a fresh channel on next use.

    A process that has a thread waking at least every HOSTED_INTERVAL_S anyway (an agent's link
    to its node, every 2 s when idle: :mod:`.nodelink`) hosts the sweeps there instead
    (:meth:`host`, :meth:`sweep_if_due`): an idle agent then has one thread and its wake-ups
    fewer (about 100 kB of memory). Slower sweeps are safe: a dead peer's channel gets about ten
    events a second (one per reconnect try, every 100 ms), and its monitor holds a thousand.
    """

    INTERVAL_S = 1.0
    #: The longest a hosting thread may leave between sweeps, in seconds.
    HOSTED_INTERVAL_S = 2.0
    #: How often the channels to a spared endpoint are swept, in seconds (see spare).
    SPARED_INTERVAL_S = 30.0

    def __init__(self) -> None:
        self._stopped = threading.Event()
        self._channels: weakref.WeakSet[Link] = weakref.WeakSet()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._hosted = False  # another thread sweeps: no thread of the janitor's own is started
        self._next_sweep = 0.0  # when the hosting thread sweeps next (time.monotonic)
        self._spared: str | None = None  # an endpoint whose channels are swept less often (see spare)
        self._next_spared_sweep = 0.0  # when the hosting thread sweeps those next

    def host(self) -> None:
        """From now on the calling thread sweeps (:meth:`sweep_if_due` at least every HOSTED_INTERVAL_S) until
        it calls :meth:`unhost`: the janitor starts no thread of its own meanwhile (one already
        running keeps running; two sweepers do no harm)."""
        self._hosted = True

    def spare(self, endpoint: str | None) -> None:
        """The hosting thread sweeps the channels to ``endpoint`` only every SPARED_INTERVAL_S
        (None: no endpoint is spared). For an endpoint this process ends with, which it sees end at
        once (an agent's node, watched by its node link): a look at each of their monitors every
        sweep would cost more than all else an idle agent does, and a monitor that a peer which
        refuses the channel over and over (a revoked key) fills holds some 100 s of events."""
        self._spared = endpoint

    def unhost(self) -> None:
        """The hosting thread stops sweeping (it ends): the janitor's own thread takes over, now if
        there are channels to sweep, else when the first one is watched."""
        self._hosted = False
        if self._channels and not self._stopped.is_set():
            self._start()

    def sweep_if_due(self, now: float) -> None:
        """The hosting thread's sweep: at most once per INTERVAL_S (``now``: ``time.monotonic()``);
        none once the janitor is stopped (at exit)."""
        if now < self._next_sweep or self._stopped.is_set():
            return
        self._next_sweep = now + self.INTERVAL_S
        spared = self._spared
        if spared is not None and now >= self._next_spared_sweep:
            self._next_spared_sweep = now + self.SPARED_INTERVAL_S
            spared = None
        self._sweep_logged(spared)

    def watch(self, channel: Link) -> None:
        self._channels.add(channel)
        if self._thread is None and not self._hosted:
            self._start()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None and not self._hosted:
                self._thread = threading.Thread(target=self._run, name="mesh-janitor", daemon=True)
                self._thread.start()

    def _forked(self) -> None:
        """In a forked child: the parent's thread is not there, nor (until it says so) a host."""
        self._thread = None
        self._hosted = False
        self._spared = None
        self._start_lock = threading.Lock()

    def sweep(self, spared: str | None = None) -> int:
        """Close the idle channels whose peer is gone (except those to ``spared``); how many."""
        closed = 0
        for ch in snapshot(self._channels):
            if ch.closed or ch.endpoint == spared or not ch.lock.acquire(blocking=False):
                continue  # busy channels read their own monitor
            try:
                if not ch.closed and ch.poll_events():
                    ch.close(linger_ms=0)
                    closed += 1
            except zmq.ZMQError:
                pass
            finally:
                ch.lock.release()
        return closed

    def stop(self, timeout: float) -> None:
        """At interpreter exit, like Flusher.stop."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopped.wait(self.INTERVAL_S):
            self._sweep_logged()

    def _sweep_logged(self, spared: str | None = None) -> None:
        try:
            self.sweep(spared)
        except Exception:  # never let the sweeping thread (the janitor's, or its host) die of it
            log.exception("janitor sweep failed")


JANITOR = Janitor()
os.register_at_fork(after_in_child=JANITOR._forked)


def _flush_at_exit() -> None:
    """At interpreter exit, send the tells still held back, then close with a short linger.

    A script that tells and exits without ``client.close()`` loses nothing it was told
    was sent (unless the receiver is gone, or the channel stays busy for 0.5 s).
    """
    FLUSHER.stop(1.0)
    JANITOR.stop(1.0)
    for ch in snapshot(JANITOR._channels):
        if ch.closed or not ch.lock.acquire(timeout=0.5):
            continue
        try:
            if ch.pending:
                ch.flush_locked()
            ch.close(linger_ms=1000)
        except (zmq.ZMQError, MailboxFull):
            pass
        finally:
            ch.lock.release()


atexit.register(_flush_at_exit)
