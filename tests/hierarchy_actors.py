"""Actors for tests/test_patterns_hierarchy.py: squad leaders and workers with faults on demand."""

from __future__ import annotations

import os
import threading

import mesh
from mesh.patterns.hierarchy import SquadLeader, Worker


class Tester(Worker):
    """Answers {"worker": NAME, "task": TASK}; with ``crash`` set, its process dies on every task
    (a crash, not an error: the leader sees ActorDied); with ``fail`` it raises."""

    def __init__(self, crash: bool = False, fail: bool = False):
        self.crash = crash
        self.fail = fail

    def perform(self, task):
        if self.crash:
            os._exit(3)
        if self.fail:
            raise RuntimeError(f"{self.mesh.name} cannot do {task!r}")
        return {"worker": self.mesh.name, "task": task}


class Leader(SquadLeader):
    """A squad leader; ``hang`` seconds before coordinating (a leader that overruns its time),
    ``decision`` what it decides of a worker's failure ("" for the default: retry once, then
    escalate)."""

    def __init__(self, hang: float = 0.0, decision: str = ""):
        self.hang = hang
        self.decision = decision
        self.quiet = threading.Event()

    async def coordinate(self, order):
        if self.hang:
            self.quiet.wait(self.hang)  # blocks like a stuck leader would
        return await super().coordinate(order)

    def on_worker_failure(self, failure):
        return self.decision or super().on_worker_failure(failure)


class Numbers(Leader):
    """Splits {"numbers": [...]} among its workers in turn and combines their answers into one list."""

    def split(self, objective, workers):
        parts = {w: [] for w in workers}
        for i, n in enumerate(objective["numbers"]):
            parts[workers[i % len(workers)]].append(n)
        return parts

    def combine(self, results):
        return sorted(n for r in results.values() for n in r["task"])


__all__ = ["Leader", "Numbers", "Tester", "mesh"]
