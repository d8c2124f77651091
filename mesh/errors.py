"""Every exception a user of mesh can meet, in one module.

All of them derive from :class:`MeshError`, so ``except mesh.MeshError`` catches
anything the runtime raises on purpose. Errors that cross the wire (an ask that
failed remotely) are rebuilt here from their wire form by :func:`from_wire`.
"""

from __future__ import annotations

import traceback as _traceback


class MeshError(Exception):
    """Base class of every error mesh raises on purpose."""


class AskTimeout(MeshError, TimeoutError):
    """An ask got no reply within its timeout."""


class ActorNotFound(MeshError, LookupError):
    """No running actor has this name in the mesh."""


class ActorDied(MeshError):
    """The target actor's process went away while a request to it was in flight."""


class MailboxFull(MeshError):
    """The target's mailbox stayed full for the whole send timeout."""


class NodeUnavailable(MeshError, ConnectionError):
    """No mesh node answers at the given address."""


class WireError(MeshError, ValueError):
    """A frame is not a valid mesh envelope (bad size, encoding or schema)."""


class NameConflict(WireError):
    """The name asked for is already served by a live actor or an agent of a node (``mesh.serve``).

    Serve under another name, or stop the actor that holds it. (A WireError before, so
    ``except WireError`` still catches it.)"""


class ReservedKey(WireError):
    """A write or delete of a shared-state key starting with ``$``: those belong to the runtime
    (readable, not writable). (A WireError before, so ``except WireError`` still catches it.)"""


class SpecError(MeshError, ValueError):
    """A node spec is invalid. ``file``, ``key`` and ``reason`` say where and why."""

    def __init__(self, file: str, key: str, reason: str):
        self.file = str(file)
        self.key = key
        self.reason = reason
        # "-" stands for the file as a whole (missing, unreadable): no key to name then.
        super().__init__(f"{self.file}: {reason}" if key in ("", "-") else f"{self.file}: {key}: {reason}")


class RemoteError(MeshError):
    """The remote handler raised. ``type``, ``message`` and ``traceback`` are its text."""

    def __init__(self, type: str, message: str, traceback: str = ""):
        self.type = type
        self.message = message
        self.traceback = traceback
        super().__init__(f"{type}: {message}")


class DeadlockDetected(MeshError):
    """An ask would close a cycle of actors waiting on each other (A asks B, B asks A).

    ``cycle`` names the actors in order, the first repeated at the end: ``["a", "b", "a"]``.
    Raised at once in the actor whose ask would close the cycle, and, unless a handler
    catches it, in every actor of the cycle waiting for an answer."""

    def __init__(self, message: str, cycle: list[str] | None = None):
        super().__init__(message)
        self.cycle = list(cycle or [])


class NotLeader(MeshError):
    """A request only the leader can answer reached another node (or no leader is elected yet)."""


class ResourceError(MeshError):
    """A pool or rate limit request was refused: an unknown name, too many units, a lost lease."""


class AcquireTimeout(ResourceError, TimeoutError):
    """A pool or rate limit request waited in line until its timeout."""


class UnknownEscalation(ActorNotFound):
    """``mesh approve``/``mesh deny`` (intent_decide) named no escalation that is waiting: decided
    already, timed out, or never escalated; ``mesh intents`` lists those that wait. (An
    ActorNotFound before, so ``except ActorNotFound`` still catches it.)"""


class UnknownAlert(ActorNotFound):
    """``mesh ack`` (``Client.ack_alert``) named no alert that is kept: never raised, or dropped
    (the oldest acknowledged ones go first); ``mesh alerts`` lists those kept."""


class Forbidden(MeshError, PermissionError):
    """The key that sent a request may not do it (a mesh with keys: each trusted key has a role,
    see ``mesh keys add --role``); the message names the op and the roles that may."""


# Errors that travel in FAIL envelopes carry one of these codes; anything else
# (an exception raised by user code) travels as "remote".
_CODES: dict[str, type[MeshError]] = {
    "not_found": ActorNotFound,
    "died": ActorDied,
    "mailbox_full": MailboxFull,
    "timeout": AskTimeout,
    "bad_request": WireError,
    "not_leader": NotLeader,
    "deadlock": DeadlockDetected,
    "refused": ResourceError,
    "acquire_timeout": AcquireTimeout,
    "name_conflict": NameConflict,
    "reserved_key": ReservedKey,
    "unknown_escalation": UnknownEscalation,
    "unknown_alert": UnknownAlert,
    "forbidden": Forbidden,
}
_NAMES: dict[type[BaseException], str] = {cls: code for code, cls in _CODES.items()}


def to_wire(exc: BaseException, traceback_text: str = "") -> dict[str, object]:
    """The FAIL body for ``exc``: a small dict of strings, safe to msgpack."""
    code = _NAMES.get(type(exc))
    if code is not None:
        if type(exc) is DeadlockDetected:
            return {"code": code, "message": str(exc), "cycle": exc.cycle}
        return {"code": code, "message": str(exc)}
    if isinstance(exc, RemoteError):
        return {"code": "remote", "type": exc.type, "message": exc.message, "traceback": exc.traceback}
    return {
        "code": "remote",
        "type": type(exc).__qualname__,
        "message": str(exc),
        "traceback": traceback_text,
    }


def from_wire(body: object) -> MeshError:
    """Rebuild the exception described by a FAIL body; unknown shapes become RemoteError."""
    if not isinstance(body, dict):
        return RemoteError("MeshError", f"malformed error reply: {body!r:.200}")
    code = body.get("code")
    message = str(body.get("message", ""))
    cls = _CODES.get(code) if isinstance(code, str) else None
    if cls is DeadlockDetected:
        cycle = body.get("cycle")
        return DeadlockDetected(message, [str(c) for c in cycle[:1000]] if isinstance(cycle, list) else None)
    if cls is not None:
        return cls(message)
    return RemoteError(str(body.get("type", "Exception")), message, str(body.get("traceback", "")))


def handler_error(exc: BaseException) -> dict[str, object]:
    """The FAIL body for an exception raised by user code: always a RemoteError for the asker.

    (A mesh error raised inside a handler, say an AskTimeout of a nested ask, is the
    handler's failure, not the asker's own AskTimeout.)
    """
    if type(exc) is DeadlockDetected:
        return to_wire(exc)  # every waiter of the cycle learns it as such, not as a RemoteError
    return {"code": "remote", "type": type(exc).__qualname__, "message": str(exc),
            "traceback": _traceback.format_exc()}
