"""What a protocol state machine returns: messages to send and events, as data.

Core machines never do I/O. ``step(sender, message, now)`` and ``tick(now)``
return a list of these; the runtime (or the simulator) carries them out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias


@dataclass(frozen=True)
class Send:
    """Deliver ``message`` to node ``to``."""

    to: str
    message: object


@dataclass(frozen=True)
class Emit:
    """Something happened that the outside world may care about (a member died, a key changed).

    (Named Emit, a command like Send, so that ``mesh.Event``, an event on a topic, is the one
    Event users meet.)"""

    name: str
    #: What happened, as a dict whose keys depend on ``name`` (each machine's note lists its events);
    #: Any, so that a reader who matched the name can take the fields it knows are there.
    data: Any = None


#: The former name of :class:`Emit`, for code not moved over yet.
Event = Emit

#: What a machine's ``step`` and ``tick`` return a list of.
Effect: TypeAlias = Send | Emit
