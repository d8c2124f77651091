"""The actor base class users subclass. (``self.mesh``, its view of the mesh, is a
:class:`mesh.runtime.context.ActorContext`.)

Failure rules (one per send mode, as in pykka):

* ask: an exception raised by ``on_message`` travels back to the asker as
  :class:`mesh.RemoteError` (type, message and traceback text); the actor goes on.
* tell: nobody waits for an answer, so an exception is logged and the actor's
  process ends with exit code 1; its node's restart policy then applies.
* ``on_start`` raising ends the process the same way; ``on_stop`` raising is logged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .intentions import Intention
    from .runtime.context import ActorContext
    from .topics import Event


class Actor:
    """Subclass this and override the hooks you need. Hooks may be ``async def``.

    * ``on_start()``: runs in the actor's process before the first message.
    * ``on_message(message)``: one message at a time; the return value is the
      reply to an ask (ignored for a tell).
    * ``on_stop()``: runs once when the actor is stopped gracefully.
    * ``on_event(event)``: an event on a topic this actor subscribed to
      (:class:`mesh.topics.Event`: topic, data, id, corr, sender).
    * ``on_intention(intention)``: another actor's intention; runs beside ``on_message``
      (on its own thread, see there).
    """

    mesh: "ActorContext"

    def on_start(self) -> object:
        return None

    def on_message(self, message: object) -> object:
        return None

    def on_stop(self) -> object:
        return None

    def on_event(self, event: "Event") -> object:
        return None

    def on_intention(self, intention: "Intention") -> object:
        """Another actor proposes ``intention``: return None to approve, or
        ``mesh.Objection(reason, weight=1.0, kind="finding" | "strategy")`` to object.

        Runs on a thread of its own, beside ``on_message`` (not after it), so that a busy actor
        still answers within the proposal's window; an ``async def`` hook runs on an event loop
        of that thread. It runs *concurrently* with the other hooks: read state mostly, or guard
        what it shares with them with a lock (``threading.Lock``). An answer that comes after
        the window is ignored (silence: no objection, unless the proposer required this actor's
        answer). An actor does not hear its own intentions."""
        return None
