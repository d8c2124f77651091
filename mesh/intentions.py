"""The intention types users see: what ``on_intention`` hears, what it returns, what ``propose`` decides.

``self.mesh.propose(action, claims=[...])`` returns a :class:`Decision`; an actor that
defines ``on_intention(intention)`` hears an :class:`Intention` and may return an
:class:`Objection`. How proposals are voted on, weighed and escalated:
:mod:`mesh.runtime.intents`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Objection:
    """What ``on_intention`` returns to object. ``kind``: "finding" (weighed against the
    proposal's evidence), "strategy" (escalated) or "contention" (the vote's own)."""

    reason: str
    weight: float = 1.0
    kind: str = "finding"
    by: str = ""


@dataclass(frozen=True)
class Intention:
    """What ``on_intention`` hears."""

    id: str
    action: object
    claims: tuple[str, ...]
    priority: float
    proposer: str
    window: float


@dataclass
class Decision:
    """The outcome of a proposal; a context manager that calls :meth:`done` on exit."""

    id: str
    outcome: str  #: "approved", "objected" or "escalated" (not decided within the escalation timeout)
    objections: list[Objection] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    escalated: bool = False
    decided_by: str = "vote"  #: "vote", "weights", "leader NAME" or "human (via NODE)"
    until: float | None = None  #: time.monotonic() at which the claims' hold ends, if approved
    _release: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    @property
    def approved(self) -> bool:
        return self.outcome == "approved"

    def done(self) -> None:
        """Release the claims (idempotent)."""
        if self._release is not None:
            release, self._release = self._release, None
            release()

    def __enter__(self) -> "Decision":
        return self

    def __exit__(self, *exc: object) -> None:
        self.done()
