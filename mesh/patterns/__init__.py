"""The playbook's orchestration patterns, built on mesh's public API only (each module says
when to use its pattern, and its pros and cons)."""

from .adaptive import Action, AdaptiveAgent, AdaptiveMesh
from .burst import Burst, BurstReport, TaskResult
from .choreography import NOTHING, Choreography, ChoreographyRun, Next, Reaction, Reactor, reaction
from .hierarchy import Commander, Failure, Hierarchy, Squad, SquadLeader, Worker
from .pipeline import Pipeline, Stage
from .strategy import Strategy, choose_strategy

__all__ = ["NOTHING", "Action", "AdaptiveAgent", "AdaptiveMesh", "Burst", "BurstReport", "Choreography",
           "ChoreographyRun", "Commander", "Failure", "Hierarchy", "Next", "Pipeline", "Reaction", "reaction",
           "Reactor", "Squad", "SquadLeader", "Stage", "Strategy", "TaskResult", "Worker", "choose_strategy"]
