"""Actors for tests/test_patterns_adaptive.py: agents that process work items held in the shared
state, and a guardian that objects to intentions on the items it protects."""

from __future__ import annotations

import threading

import mesh
from mesh.patterns.adaptive import Action, AdaptiveAgent


class ItemWorker(AdaptiveAgent):
    """Processes the items ``work/*`` whose value is "todo", the first it does not avoid: so
    agents started together contend for the same item (the claims decide, ``expect`` catches the
    ones approved after the work was done)."""

    prefix = "work/"

    def analyze(self, state):
        todo = sorted(k for k, v in state.items() if v == "todo" and k not in self.avoided)
        if not todo:
            return None
        return Action(["process", todo[0]], claims=(todo[0],), expect={todo[0]: "todo"})

    def execute(self, action):
        return {action.claims[0]: f"done by {self.mesh.name}"}

    def objective_met(self, state):
        return bool(state) and all(v != "todo" for v in state.values())


class Guardian(mesh.Actor):
    """Objects to intentions whose claims include a key of ``veto``, that many times (-1: always)."""

    def __init__(self, veto: dict):
        self.veto = dict(veto)
        self.lock = threading.Lock()

    def on_intention(self, intention):
        with self.lock:
            for claim in intention.claims:
                left = self.veto.get(claim, 0)
                if left:
                    self.veto[claim] = left - 1 if left > 0 else left
                    return mesh.Objection(f"{claim} is not ready", weight=2.0)
        return None
