"""Pattern 1 of the playbook: the sequential pipeline.

Each stage is an actor; the pipeline asks them in order with a context that holds
the task and every earlier stage's result, so each agent builds on the ones
before it. Built on the public API only: any actor (``self.mesh``) or client can
run a pipeline.

A stage's ``on_failure`` says what a failure (timeout, error, or a result with
``"status": "critical_failure"``) does:

* ``stop``: the pipeline ends there, with status ``failed``;
* ``continue_with_warning``: the failure is recorded in ``warnings`` and the
  next stage runs;
* ``retry_once``: the stage is asked once more; a second failure stops.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import MeshError
from .counting import count_done

ON_FAILURE = ("stop", "continue_with_warning", "retry_once")


@dataclass(frozen=True)
class Stage:
    name: str  #: the stage's name in the results
    agent: str  #: the actor that does the stage
    timeout: float = 30.0  #: seconds the stage may take
    on_failure: str = "stop"  #: one of ON_FAILURE

    def __post_init__(self) -> None:
        if self.on_failure not in ON_FAILURE:
            raise ValueError(f"on_failure must be one of {', '.join(ON_FAILURE)}, not {self.on_failure!r}")
        if self.timeout <= 0:
            raise ValueError("timeout must be > 0 seconds")


class StageRef(Protocol):
    def ask(self, message: object, timeout: float = ...) -> object: ...


class MeshHandle(Protocol):
    """What a pipeline runs through: a Client, or an actor's ``self.mesh``."""

    def actor(self, name: str) -> StageRef: ...


class Pipeline:
    """Run ``stages`` in order through ``mesh`` (a Client or an actor's ``self.mesh``)."""

    def __init__(self, stages: list[Stage], mesh: MeshHandle) -> None:
        if not stages:
            raise ValueError("a pipeline needs at least one stage")
        self.stages = list(stages)
        self.mesh = mesh

    def run(self, task: object) -> dict[str, Any]:
        results: dict[str, object] = {}
        context: dict[str, object] = {"task": task, "results": results}
        warnings: list[str] = []
        timings: dict[str, float] = {}
        for stage in self.stages:
            attempts = 2 if stage.on_failure == "retry_once" else 1
            error = None
            for _ in range(attempts):
                started = time.perf_counter()
                error, result = self._attempt(stage, context)
                timings[stage.name] = round(time.perf_counter() - started, 6)
                if error is None:
                    break
            if error is None:
                results[stage.name] = result
                continue
            if stage.on_failure == "continue_with_warning":
                warnings.append(f"{stage.name}: {error}")
                continue
            return {"status": "failed", "failed_stage": stage.name, "error": error,
                    "results": results, "warnings": warnings, "timings": timings}
        count_done(self.mesh, 1)  # the task went through every stage
        return {"status": "ok", "results": results, "warnings": warnings, "timings": timings}

    def _attempt(self, stage: Stage, context: dict[str, object]) -> tuple[str | None, object]:
        try:
            result = self.mesh.actor(stage.agent).ask(context, timeout=stage.timeout)
        except MeshError as exc:
            return f"{type(exc).__name__}: {exc}", None
        if isinstance(result, dict) and result.get("status") == "critical_failure":
            return f"critical failure: {result.get('reason', 'no reason given')}", result
        return None, result
