"""What an orchestra run did: each agent's outcome, each section's, and the whole run's report
(JSON with :meth:`Report.as_json`, a readable summary with :meth:`Report.summary`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .conflicts import Settled

#: An agent's part: "ok"; "skipped" (it failed, and the rule skipped it); "killed" (it overran its
#: time); "critical" (it reported a critical failure); "failed" (no rule could help: no such agent,
#: the pool could never be granted...); "not run" (the orchestra stopped before it).
PART_STATUSES = ("ok", "skipped", "killed", "critical", "failed", "not run")


@dataclass
class Outcome:
    """One agent's part in one section."""

    section: str
    agent: str
    status: str = "not run"  #: one of PART_STATUSES
    node: str | None = None  #: the node that ran it (last attempt)
    value: object = None  #: the agent's answer (ok, critical)
    error: str | None = None  #: why it is not ok
    attempts: int = 0  #: asks made
    restarts: int = 0  #: restarts by the agent_failure rule
    elapsed: float = 0.0  #: seconds from its first ask to its outcome
    waited: float = 0.0  #: seconds in line for its pool lease
    ahead: int = 0  #: parts of the orchestra ahead of it in that line (priority order)
    killed: dict[str, Any] | None = None  #: the kill: after (seconds), timeout, pid, node
    notes: list[str] = field(default_factory=list)  #: what the rules did, in order

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SectionReport:
    name: str
    pattern: str
    parts: list[Outcome]
    elapsed: float = 0.0

    @property
    def status(self) -> str:
        """"ok" (every part ok), "not run", "stopped" (a critical failure here), else "partial"."""
        statuses = {p.status for p in self.parts}
        if statuses == {"ok"}:
            return "ok"
        if statuses == {"not run"}:
            return "not run"
        return "stopped" if "critical" in statuses else "partial"

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "pattern": self.pattern, "status": self.status,
                "elapsed": round(self.elapsed, 3), "agents": [p.as_json() for p in self.parts]}


@dataclass
class Report:
    """The whole run."""

    orchestra: str
    run: str  #: the run's correlation id (the id of its START event)
    role: str
    rules: dict[str, str]
    sections: list[SectionReport]
    started_at: float  #: time.time()
    elapsed: float = 0.0
    alerts: list[dict[str, Any]] = field(default_factory=list)  #: raised for a person (id, reason, kept)
    stopped_by: str | None = None  #: "SECTION/AGENT: reason" of the critical failure that stopped it
    conflicts: list[Settled] = field(default_factory=list)  #: escalations the conductor decided

    @property
    def parts(self) -> list[Outcome]:
        return [p for s in self.sections for p in s.parts]

    @property
    def status(self) -> str:
        """"ok" (every part ok), "stopped" (a critical failure), else "partial" (the orchestra went
        on past skipped, killed or failed parts)."""
        if self.stopped_by is not None:
            return "stopped"
        return "ok" if all(p.status == "ok" for p in self.parts) else "partial"

    def as_json(self) -> dict[str, Any]:
        parts = self.parts
        return {
            "orchestra": self.orchestra, "run": self.run, "status": self.status, "conductor": self.role,
            "started_at": self.started_at, "elapsed": round(self.elapsed, 3), "rules": dict(self.rules),
            "sections": [s.as_json() for s in self.sections],
            "retries": sum(p.restarts for p in parts),
            "skips": [{"section": p.section, "agent": p.agent, "reason": p.error} for p in parts if p.status == "skipped"],
            "kills": [{"section": p.section, "agent": p.agent, **(p.killed or {})} for p in parts if p.killed],
            "waits": [{"section": p.section, "agent": p.agent, "waited": round(p.waited, 3), "ahead": p.ahead}
                      for p in parts if p.waited > 0],
            "alerts": list(self.alerts), "stopped_by": self.stopped_by,
            "conflicts": [c.as_json() for c in self.conflicts],
        }

    def summary(self) -> str:
        """A few lines for a person: each section, each agent, and what the rules did; an answer with a
        ``summary`` (a string) is shown under its agent."""
        lines = [f"{self.orchestra}: {self.status.upper()} in {self.elapsed:.1f} s (run {self.run})"]
        for section in self.sections:
            lines.append(f"  {section.name} ({section.pattern}): {section.status}, {section.elapsed:.1f} s")
            for p in section.parts:
                where = f" on {p.node}" if p.node else ""
                why = f": {p.error}" if p.error and p.status != "ok" else ""
                lines.append(f"    {p.status:<8} {p.agent}{where}, {p.elapsed:.1f} s{why}")
                lines.extend(f"             - {note}" for note in p.notes)
                if p.status == "ok" and isinstance(p.value, dict) and isinstance(p.value.get("summary"), str):
                    lines.extend(f"             > {line}" for line in p.value["summary"].splitlines())
        parts = self.parts
        counts = {status: sum(p.status == status for p in parts) for status in ("ok", "skipped", "killed", "failed")}
        lines.append("  parts: " + ", ".join(f"{n} {status}" for status, n in counts.items())
                     + f"; {sum(p.restarts for p in parts)} restarts")
        lines.append(f"  conflicts: the conductor decided {len(self.conflicts) or 'none'}")
        lines.extend(f"    - {c.line()}" for c in self.conflicts)
        if self.stopped_by:
            lines.append(f"  STOPPED by a critical failure: {self.stopped_by}")
        for alert in self.alerts:
            if alert.get("id"):
                lines.append(f"  ALERT {alert['id']} waits for a person: {alert['reason']}"
                             f" (mesh alerts; mesh ack {alert['id']})")
            else:
                lines.append(f"  HELP published: {alert['reason']} ({alert.get('note', 'no alert kept')})")
        return "\n".join(lines)
