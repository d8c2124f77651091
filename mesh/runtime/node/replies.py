"""Every answer the node sends to a request leaves through :class:`Replies`.

A control request is answered at once (its op's result, or the error it raised), or later: a
pool request waiting in line, an intention being decided, an escalation waiting for a person.
Those keep a :class:`Waiter` (who asked, and the id to answer) until the answer is known.
A frame refused before it could be decoded is answered too when it opens like a request
(``wire.refusal``), so the asker learns why instead of timing out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from ... import wire
from ...errors import MeshError, WireError, to_wire

if TYPE_CHECKING:  # pragma: no cover
    from ..transport import Listener

_REPLY = int(wire.Kind.REPLY)
_FAIL = int(wire.Kind.FAIL)
#: The sender every answer of the node carries.
NODE_SENDER = "$node"
#: What an op handler returns when it will answer later, through a Waiter it kept.
DEFER = object()


class Waiter(NamedTuple):
    """A request that waits for its answer: the ROUTER identity it came from, its id, its sender."""

    ident: Any  # the peer's identity as the node's listener gave it
    corr: int
    sender: str


class Replies:
    def __init__(self, router: "Listener") -> None:
        self.router = router  # the node's listener (a ROUTER on ZeroMQ)
        self._ids = iter(range(1, 1 << 62))

    def answer(self, to: Waiter, result: object) -> bytes:
        """The REPLY frame carrying ``result`` (raises WireError if the result cannot travel)."""
        return wire.encode(_REPLY, next(self._ids), to.corr, NODE_SENDER, to.sender, result)

    def failure(self, to: Waiter, exc: MeshError) -> bytes:
        """The FAIL frame carrying ``exc`` (the asker raises it)."""
        return wire.encode(_FAIL, next(self._ids), to.corr, NODE_SENDER, to.sender, to_wire(exc))

    def send(self, ident: Any, frame: bytes) -> None:
        """The one way out: every answer frame of the node leaves through its listener here."""
        self.router.reply(ident, frame)

    def reply(self, to: Waiter, result: object) -> None:
        self.send(to.ident, self.answer(to, result))

    def fail(self, to: Waiter, exc: MeshError) -> None:
        self.send(to.ident, self.failure(to, exc))

    def refuse(self, ident: Any, frame: Any, exc: WireError) -> bool:
        """Answer a frame refused whole with why, if it opens like a request; whether it did."""
        answer = wire.refusal(frame, exc, next(self._ids), NODE_SENDER)
        if answer is None:
            return False
        self.send(ident, answer)
        return True
