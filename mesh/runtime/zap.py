"""The gate: the process's ZAP handler, which admits only trusted keys and counts who it refused.

ZeroMQ asks a ZAP handler (ZeroMQ's authentication protocol, over inproc in the process's one
context) about every CURVE connection a listening socket accepts; without a handler, any
client that knows the server's public key gets in. So the first socket of a process that
listens with keys starts the gate (pyzmq's ThreadAuthenticator, on a thread of its own), and
each trusted directory becomes a ZAP domain the listening sockets name.

Revocation without a restart: a thread re-reads each trusted directory every WATCH_S seconds
when its listing changed (pyzmq's authenticator reads it only when configured), so a key
revoked there is refused from the next connection on. A connection already admitted stays
open until it breaks: ZAP is asked once per connection.

Who is asking: for an admitted key the gate answers ZeroMQ with a User-Id, ``NAME/ROLE`` (the
name the key was trusted under and its role, :func:`.keys.trusted_identities`), which every
message of that connection then carries (``zmq.Frame.get("User-Id")``, :func:`caller`).

Refusals: ZeroMQ drops a refused peer silently; the gate counts each refused handshake by the
peer's address (:func:`refusals`, what ``mesh status`` shows) and logs the first of each
address once per LOG_EVERY_S.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import threading
import time
from pathlib import Path
from typing import Any

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from .keys import CLIENT, ROLES, trusted_identities
from .sockets import context

#: Seconds between two looks at the trusted directories.
WATCH_S = 1.0
#: Seconds between two log lines about the same refused address.
LOG_EVERY_S = 60.0

log = logging.getLogger("mesh.keys")


class _CountingAuthenticator(ThreadAuthenticator):
    """pyzmq's authenticator, counting refusals by address (its ZAP requests come one at a time)."""

    def __init__(self, ctx: zmq.Context[Any]):
        super().__init__(ctx, log=logging.getLogger("mesh.keys.zap"))
        self.refused: collections.Counter[str] = collections.Counter()
        self._logged: dict[str, float] = {}
        self._address = "?"
        self._domain = ""
        #: domain -> trusted public key (z85) -> (name, role); replaced whole, never changed in place
        self.identities: dict[str, dict[bytes, tuple[str, str]]] = {}

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        self._address = msg[3].decode("utf-8", "replace") if len(msg) > 3 else "?"
        self._domain = msg[2].decode("utf-8", "replace") if len(msg) > 2 else ""
        await super().handle_zap_message(msg)

    def curve_user_id(self, client_public_key: bytes) -> str:
        name, role = self.identities.get(self._domain, {}).get(z85.encode(client_public_key), ("?", CLIENT))
        return f"{name}/{role}"

    def _send_zap_reply(self, request_id: bytes, status_code: bytes, status_text: bytes,
                        user_id: str = "anonymous") -> None:
        if status_code != b"200":
            address = self._address
            self.refused[address] += 1
            now = time.monotonic()
            if now - self._logged.get(address, -LOG_EVERY_S) >= LOG_EVERY_S:
                self._logged[address] = now
                log.warning("refused a connection from %s: %s", address, status_text.decode("utf-8", "replace"))
        super()._send_zap_reply(request_id, status_code, status_text, user_id)


class _Gate:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._auth: _CountingAuthenticator | None = None
        self._dirs: dict[str, tuple[Path, tuple]] = {}  # domain -> (directory, its last listing)
        self._watcher: threading.Thread | None = None

    def admit(self, trusted: Path) -> str:
        """The ZAP domain that admits the keys in ``trusted``, starting the gate if needed."""
        domain = "mesh-" + hashlib.sha1(str(trusted).encode()).hexdigest()[:16]
        with self._lock:
            if self._auth is None:
                self._auth = _CountingAuthenticator(context())
                self._auth.start()
            if domain not in self._dirs:
                self._dirs[domain] = (trusted, _listing(trusted))
                self._configure(domain, trusted)
            if self._watcher is None:
                self._watcher = threading.Thread(target=self._watch, name="mesh-keys-watch", daemon=True)
                self._watcher.start()
        return domain

    def _watch(self) -> None:
        while True:
            time.sleep(WATCH_S)
            with self._lock:
                for domain, (trusted, seen) in list(self._dirs.items()):
                    now = _listing(trusted)
                    if now != seen and self._auth is not None:
                        self._dirs[domain] = (trusted, now)
                        self._configure(domain, trusted)
                        log.info("trusted keys in %s changed: now %d", trusted, len(now))

    def _configure(self, domain: str, trusted: Path) -> None:
        assert self._auth is not None
        self._auth.identities = {**self._auth.identities, domain: trusted_identities(trusted)}
        self._auth.configure_curve(domain=domain, location=str(trusted))

    def refusals(self) -> dict[str, int]:
        auth = self._auth
        return dict(auth.refused) if auth is not None else {}


def _listing(trusted: Path) -> tuple:
    try:
        return tuple(sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in trusted.glob("*.key")))
    except OSError:
        return ()


GATE = _Gate()


def admit(trusted: Path) -> str:
    return GATE.admit(trusted)


def caller(frame: zmq.Frame) -> tuple[str, str]:
    """(name, role) of the key that sent ``frame`` (a message received with copy=False on a
    listener with keys); a frame without a User-Id is a nameless CLIENT."""
    try:
        user = frame.get("User-Id")
    except zmq.ZMQError:  # no such property: not from a CURVE connection behind the gate
        return "", CLIENT
    name, _, role = str(user).rpartition("/")
    return name, role if role in ROLES else CLIENT


def refusals() -> dict[str, int]:
    """Refused connections by peer address since the process started (empty without keys)."""
    return GATE.refusals()
