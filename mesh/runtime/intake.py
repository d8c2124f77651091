"""What a listener does with frames it did not ask for: count them, log a few, shed their senders.

Everything from a socket is untrusted. A malformed message is dropped and counted per
peer; the log gets at most one line a second per peer and LOG_LINES_PER_S lines in all.
A peer that keeps sending garbage is *shed*: its frames are dropped unread for a while,
because decoding is what garbage costs. :func:`recv_request` is how a ZeroMQ ROUTER
reads one request under those rules (``RouterSocket.receive``); the in-memory twin's
listener applies the same :class:`BadFrames`.
"""

from __future__ import annotations

import logging
import time

import zmq

log = logging.getLogger("mesh.transport")

_monotonic = time.monotonic

#: Shedding (issue 10): a peer whose bad frames weigh SHED_AFTER within SHED_WINDOW_S is shed:
#: its frames are then dropped unread (not decoded, not logged, only counted) for SHED_FOR_S
#: seconds. A bad frame weighs 1, plus 1 per SHED_WEIGHT_BYTES it carried, because decoding is
#: what a garbage frame costs: one bad frame of 4 MiB sheds its sender at once. A peer is a
#: ROUTER identity, that is one connection: a peer that reconnects is a new peer, and a shed
#: mesh process whose requests time out opens a new channel (a new identity) anyway.
SHED_AFTER = 64
SHED_WEIGHT_BYTES = 64 * 1024
SHED_WINDOW_S = 10.0
SHED_FOR_S = 10.0
#: Peers remembered for shedding at most, in the strike table and in the shed table each: a
#: flood of fresh identities forgets the oldest, it does not grow the tables.
SHED_PEERS = 4096
#: Log lines about bad frames per second at most, all peers together (the rest are counted).
LOG_LINES_PER_S = 10


class BadFrames:
    """Counts frames dropped per peer, logs each peer at most once a second, and sheds peers
    that send garbage (see SHED_AFTER). Every table here is bounded."""

    def __init__(self, where: str, interval_s: float = 1.0):
        self.where = where
        self.interval_s = interval_s
        self.by_peer: dict[str, int] = {}
        self.total = 0  #: bad frames, shed ones included
        self.shed_frames = 0  #: frames dropped unread because their peer was shed
        self.peers_shed = 0  #: times a peer was shed
        #: identity -> monotonic time its shedding ends; recv_request reads it on every message,
        #: so it stays empty (falsy) unless somebody sends garbage.
        self.shed: dict[bytes, float] = {}
        self._strikes: dict[bytes, list[float]] = {}  # identity -> [weight, start of its window]
        self._last_log: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._log_second = 0.0
        self._log_lines = 0
        self._log_dropped = 0

    def record(self, peer: bytes | str, reason: object, size: int = 0) -> None:
        """Count one bad frame (``size`` bytes) from ``peer``; shed the peer if it is the last straw."""
        if isinstance(peer, zmq.Frame):
            peer = peer.bytes
        key = peer.hex() if isinstance(peer, bytes) else str(peer)
        if len(self.by_peer) > 10000 and key not in self.by_peer:
            key = "other"  # a flood of fresh identities must not grow this map without bound
        self.by_peer[key] = self.by_peer.get(key, 0) + 1
        self.total += 1
        now = _monotonic()
        if isinstance(peer, bytes):
            self._strike(peer, 1 + size // SHED_WEIGHT_BYTES, now)
        if now - self._last_log.get(key, -1e9) >= self.interval_s and self._may_log(now):
            extra = self._suppressed.pop(key, 0)
            more = f" (+{extra} more since last report)" if extra else ""
            log.warning("%s: dropped a bad frame from peer %s: %s%s", self.where, key, reason, more)
            self._last_log[key] = now
        else:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            if len(self._suppressed) > 10001:
                self._suppressed.clear()

    def _may_log(self, now: float) -> bool:
        if now - self._log_second >= 1.0:
            if self._log_dropped:
                log.warning("%s: %d more bad-frame reports in the last second were not logged", self.where,
                            self._log_dropped)
            self._log_second, self._log_lines, self._log_dropped = now, 0, 0
        if self._log_lines < LOG_LINES_PER_S:
            self._log_lines += 1
            return True
        self._log_dropped += 1
        return False

    def _strike(self, ident: bytes, weight: int, now: float) -> None:
        strikes = self._strikes
        s = strikes.get(ident)
        if s is None or now - s[1] > SHED_WINDOW_S:
            if s is None and len(strikes) >= SHED_PEERS:
                for old in [k for k, v in strikes.items() if now - v[1] > SHED_WINDOW_S]:
                    del strikes[old]
                if len(strikes) >= SHED_PEERS:
                    del strikes[next(iter(strikes))]  # the oldest window goes
            s = strikes[ident] = [0, now]
        s[0] += weight
        if s[0] >= SHED_AFTER:
            del strikes[ident]
            self._shed(ident, now)

    def _shed(self, ident: bytes, now: float) -> None:
        shed = self.shed
        if len(shed) >= SHED_PEERS:
            for old in [k for k, until in shed.items() if until <= now]:
                del shed[old]
            if len(shed) >= SHED_PEERS:
                del shed[next(iter(shed))]
        shed[ident] = now + SHED_FOR_S
        self.peers_shed += 1
        if self._may_log(now):
            log.warning("%s: peer %s sent too many bad frames; its frames are dropped unread for %g s",
                        self.where, ident.hex(), SHED_FOR_S)

    def shedding(self, ident: bytes) -> bool:
        """Whether ``ident``'s frames are to be dropped unread now (and forget it once its time is up)."""
        until = self.shed.get(ident)
        if until is None:
            return False
        if _monotonic() < until:
            return True
        del self.shed[ident]
        return False


def recv_request(sock: zmq.SyncSocket, bad: BadFrames, flags: int = 0) -> tuple[zmq.Frame, zmq.Frame] | None:
    """Read one [identity, frame] message from a ROUTER; anything else is dropped and counted.

    Returns (identity, body) as zmq Frames (cheaper than bytes; msgpack reads the
    buffer directly and the identity frame is sent back as it is), or None, also for
    every message of a peer that ``bad`` sheds (dropped unread, counted).
    Raises zmq.Again when nothing arrived within the socket's RCVTIMEO (at once with
    ``flags=zmq.NOBLOCK``).
    """
    ident = sock.recv(flags, copy=False)
    if bad.shed and bad.shedding(ident.bytes):
        # A shed peer: drop the whole message unread (libzmq delivers its parts together).
        more = ident.more
        while more:
            more = sock.recv(copy=False).more
        bad.total += 1
        bad.shed_frames += 1
        return None
    if not ident.more:
        bad.record(ident.bytes, "message has no body frame")
        return None
    frame = sock.recv(copy=False)
    if frame.more:
        extra = 0
        size = len(frame)
        while sock.rcvmore:
            size += len(sock.recv(copy=False))
            extra += 1
        bad.record(ident.bytes, f"message has {extra + 2} frames, at most 2 are allowed", size)
        return None
    return ident, frame
