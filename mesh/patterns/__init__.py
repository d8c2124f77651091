"""The playbook's orchestration patterns, built on mesh's public API only (each module says
when to use its pattern, and its pros and cons)."""

from .adaptive import Action, AdaptiveAgent, AdaptiveMesh
from .burst import Burst, BurstReport, TaskResult
from .hierarchy import Commander, Failure, Hierarchy, Squad, SquadLeader, Worker
from .pipeline import Pipeline, Stage

__all__ = ["Action", "AdaptiveAgent", "AdaptiveMesh", "Burst", "BurstReport", "Commander", "Failure", "Hierarchy",
           "Pipeline", "Squad", "SquadLeader", "Stage", "TaskResult", "Worker"]
