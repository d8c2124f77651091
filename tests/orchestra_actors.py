"""Agents for the orchestra's tests: each does a small step and can be told to fail in the ways
the failure-handling rules are about (a crash, a hang, a critical failure)."""

from __future__ import annotations

import os
import time

import mesh


class Step(mesh.Actor):
    """Answers {"agent", "pid", "saw"} (``saw``: "SECTION/AGENT" of every answer in its context).

    ``crash``: the first N asks end the process mid-ask (counted in the file ``counter``, which
    outlives restarts); ``hang``: never answers (ignores cancellation too); ``critical``: reports
    a critical failure; ``sleep``: seconds of work; ``journal``: a file where "start|end TIME NAME"
    lines show when it worked; ``propose``: an intention it proposes (with ``evidence``) before it
    answers, its decision in the answer (``decision``)."""

    def __init__(self, crash: int = 0, counter: str = "", hang: bool = False, critical: bool = False,
                 sleep: float = 0.0, journal: str = "", propose: str = "", evidence: float = 1.0):
        self.crash = crash
        self.counter = counter
        self.hang = hang
        self.critical = critical
        self.sleep = sleep
        self.journal = journal
        self.proposal = propose
        self.evidence = evidence

    def _note(self, what: str) -> None:
        if self.journal:
            with open(self.journal, "a") as f:
                f.write(f"{what} {time.time():.6f} {self.mesh.name}\n")

    def _crashes_left(self) -> bool:
        asked = int(open(self.counter).read() or 0) if os.path.exists(self.counter) else 0
        with open(self.counter, "w") as f:
            f.write(str(asked + 1))
        return asked < self.crash

    def on_message(self, context):
        self._note("start")
        try:
            if self.crash and self._crashes_left():
                os._exit(3)
            if self.hang:
                while True:
                    time.sleep(1)
            time.sleep(self.sleep)
            if self.critical:
                return {"status": "critical_failure", "reason": f"{self.mesh.name} found the environment broken"}
            answer: dict = {}
            if self.proposal:
                d = self.mesh.propose(self.proposal, claims=[f"orchestra:{self.proposal}"], window=1.0,
                                      evidence=self.evidence)
                d.done()
                answer["decision"] = {"outcome": d.outcome, "decided_by": d.decided_by, "escalated": d.escalated,
                                      "reasons": d.reasons}
            saw = sorted(f"{section}/{agent}" for section, answers in context["results"].items() for agent in answers)
            return {"agent": self.mesh.name, "pid": os.getpid(), "saw": saw, "section": context["section"], **answer}
        finally:
            self._note("end")


class Critic(Step):
    """A Step that objects to the intentions named in ``objects_to`` with a strategy objection of
    ``weight``: the orchestra's conflicts."""

    def __init__(self, objects_to: list | None = None, weight: float = 0.5, **step):
        super().__init__(**step)
        self.objects_to = set(objects_to or ())
        self.weight = weight

    def on_intention(self, intention):
        if intention.action in self.objects_to:
            return mesh.Objection(f"{intention.action} is not what this run is for", self.weight, "strategy")
        return None
