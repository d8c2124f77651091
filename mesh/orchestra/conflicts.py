"""The coordination rule "conflicts: the conductor has the final say".

When an orchestra's agent proposes an intention (``self.mesh.propose``) and another agent objects
to it with a strategy objection, the mesh escalates the intention (README "Intentions"). If the
leader waits for a person (``[intents] escalate = "human"`` in its node spec), the escalation is
listed in ``client.intents()["escalations"]`` until somebody approves or denies it: while a run
goes on, the conductor is that somebody for the escalations of its own agents (proposer one of
the orchestra's agents). A :class:`ConflictWatcher` polls the list on a thread of its own every
:data:`POLL_S` seconds, asks the hook ``on_conflict(Conflict)`` for a ruling, and decides with
``client.approve/deny(id, by="conductor ORCHESTRA")``; the proposer's decision then says
``decided_by`` "human (conductor ORCHESTRA)". Escalations of other proposers are left alone.

When the leader decides escalations itself (``escalate = "leader"``, the default), nothing waits,
the conductor sees none, and the report's ``conflicts`` is empty.

The default hook, :func:`by_evidence`, is the playbook's "strongest evidence wins" (Conflict
Resolution): approve when the proposal's evidence is at least the strategy objections' weight,
else deny; the same rule the leader applies on its own, so the conductor's default changes who
decides (and what the report records), not what is decided.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Union

from ..errors import MeshError, UnknownEscalation

#: Seconds between two looks at the escalations waiting: well within a leader's
#: escalation_timeout (default 60 s), and a light load on the node (one listing per look).
POLL_S = 0.25

log = logging.getLogger("mesh.orchestra")


@dataclass(frozen=True)
class Conflict:
    """An escalated intention of one of the orchestra's agents, as the leader lists it."""

    id: str
    proposer: str  #: the agent that proposed it
    action: str
    claims: tuple[str, ...] = ()
    objections: tuple[dict[str, Any], ...] = ()  #: each {"by", "reason", "kind", "weight"}
    evidence: float = 1.0  #: the proposal's evidence

    @property
    def strategy_weight(self) -> float:
        """The strategy objections' total weight."""
        return sum(float(o.get("weight", 0.0)) for o in self.objections if o.get("kind") == "strategy")

    @classmethod
    def from_listing(cls, entry: dict[str, Any]) -> "Conflict":
        evidence = entry.get("evidence", 1.0)
        return cls(id=str(entry["id"]), proposer=str(entry.get("proposer", "")), action=str(entry.get("action", "")),
                   claims=tuple(str(c) for c in entry.get("claims") or ()),
                   objections=tuple(dict(o) for o in entry.get("objections") or () if isinstance(o, dict)),
                   evidence=float(evidence) if isinstance(evidence, (int, float)) else 0.0)


#: What a hook answers: approve or not, optionally with the reason (shown in the report).
Ruling = Union[bool, tuple[bool, str]]


def by_evidence(conflict: Conflict) -> Ruling:
    """The playbook's evidence-based resolution: approve when evidence >= strategy objections' weight."""
    weight = conflict.strategy_weight
    approve = conflict.evidence >= weight
    return approve, f"evidence {conflict.evidence:g} {'>=' if approve else '<'} strategy objections {weight:g}"


@dataclass
class Settled:
    """One conflict the conductor decided (a line of the report's ``conflicts``)."""

    id: str
    proposer: str
    action: str
    claims: list[str]
    objections: list[dict[str, Any]]
    evidence: float
    section: str | None  #: the proposer's section in the orchestra
    decision: str  #: "approved" or "denied"; "unknown" if it was decided elsewhere first
    why: str
    by: str
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        objected = "; ".join(f"{o.get('by') or '?'} ({o.get('kind')}, {float(o.get('weight', 0.0)):g}):"
                             f" {o.get('reason')}" for o in self.objections) or "no objection listed"
        return f"{self.proposer} proposed {self.action!r}, objected by {objected}: {self.decision} ({self.why})"


class ConflictWatcher:
    """Decides the escalations of ``agents`` (name -> section) through ``mesh`` (a Client) while it runs.

    ``on_settled(Settled)`` hears each decision. :meth:`start` begins watching, :meth:`stop` ends
    it (after one last look, so that an escalation raised just before the end is decided too)."""

    def __init__(self, mesh: Any, orchestra: str, agents: dict[str, str],
                 on_conflict: Callable[[Conflict], Ruling] | None = None,
                 on_settled: Callable[[Settled], None] | None = None, poll: float = POLL_S) -> None:
        self.mesh = mesh
        self.by = f"conductor {orchestra}"
        self.agents = dict(agents)
        self.on_conflict = on_conflict or by_evidence
        self.on_settled = on_settled or (lambda settled: None)
        self.poll = poll
        self.settled: list[Settled] = []
        self._seen: set[str] = set()  # decided ones linger in the gossiped listing for a moment
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name=f"orchestra-conflicts-{self.by}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _watch(self) -> None:
        while True:
            stopping = self._stop.is_set()
            self.look()
            if stopping:
                return
            self._stop.wait(self.poll)

    def look(self) -> None:
        """Decide every escalation of the orchestra's agents waiting now."""
        listing = getattr(self.mesh, "intents", None)
        if listing is None:  # a mesh without intentions (a stand-in in a test): nothing to decide
            return
        try:
            waiting = listing().get("escalations", [])
        except MeshError as exc:  # the node is busy or gone: look again next time
            log.warning("escalations not listed: %s", exc)
            return
        for entry in waiting:
            if not isinstance(entry, dict) or entry.get("id") in self._seen or entry.get("proposer") not in self.agents:
                continue
            self._seen.add(str(entry["id"]))
            self._decide(Conflict.from_listing(entry))

    def _decide(self, conflict: Conflict) -> None:
        try:
            ruling = self.on_conflict(conflict)
            approve, why = ruling if isinstance(ruling, tuple) else (bool(ruling), "the conductor's hook ruled so")
            approve = bool(approve)
        except Exception as exc:  # a broken hook must not leave the proposer waiting: the objection stands
            approve, why = False, f"the conductor's hook raised {type(exc).__name__}: {exc}; denied"
        settled = Settled(conflict.id, conflict.proposer, conflict.action, list(conflict.claims),
                          [dict(o) for o in conflict.objections], conflict.evidence, self.agents.get(conflict.proposer),
                          "approved" if approve else "denied", str(why), self.by)
        try:
            (self.mesh.approve if approve else self.mesh.deny)(conflict.id, by=self.by)
        except UnknownEscalation:
            settled.decision = "unknown"
            settled.notes.append("no longer waiting when the conductor decided (a person, or the leader's"
                                 " escalation_timeout, decided it first)")
        except MeshError as exc:
            settled.decision = "unknown"
            settled.notes.append(f"the decision was not delivered: {type(exc).__name__}: {exc}")
        self.settled.append(settled)
        self.on_settled(settled)
