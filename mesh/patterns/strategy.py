"""Which pattern fits: the playbook's ``choose_orchestration_strategy``, as a pure function.

The rules are the playbook's, in its order; the first that matches decides:

=================================================  ==========================  =====================
context                                            pattern                     class
=================================================  ==========================  =====================
workflow "linear" and speed not "critical"         Sequential Pipeline         Pipeline
tasks "independent" and speed "critical"           Parallel Burst              Burst
workflow "complex" and flexibility "high"          Event-Driven Choreography   Choreography
decisions "complex" and authority "clear"          Hierarchical Command        Commander
environment "dynamic" and resilience "critical"    Adaptive Mesh               AdaptiveMesh
anything else                                      Start with Sequential,      Pipeline
                                                   evolve as needed
=================================================  ==========================  =====================

Keys that are missing count as unknown (they match no rule that needs them), and values are
compared without regard to case. The fallback is the playbook's golden rule 1, "Start
Sequential: you can always parallelize later".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .adaptive import AdaptiveMesh
from .burst import Burst
from .choreography import Choreography
from .hierarchy import Commander
from .pipeline import Pipeline

KEYS = ("workflow", "speed", "tasks", "flexibility", "decisions", "authority", "environment", "resilience")
FALLBACK = "Start with Sequential, evolve as needed"


@dataclass(frozen=True)
class Strategy:
    """The pattern that fits a context, and the class that runs it."""

    name: str  #: the playbook's name for it ("Parallel Burst"; or the fallback's sentence)
    pattern: type  #: the class to use (Pipeline, Burst, Choreography, Commander, AdaptiveMesh)
    reason: str  #: the rule that matched, in the playbook's words
    fallback: bool = False  #: no rule matched: start sequential

    @property
    def module(self) -> str:
        return self.pattern.__module__


def choose_strategy(context: Mapping[str, Any] | None = None, **keys: Any) -> Strategy:
    """The playbook's decision: ``context`` (a dict, or an object with those attributes) and/or
    keyword arguments among KEYS, e.g. ``choose_strategy(tasks="independent", speed="critical")``.
    Raises ValueError for a key the playbook does not know (a typo would silently fall back)."""
    given: dict[str, Any] = {}
    if context is not None:
        if isinstance(context, Mapping):
            given.update(context)
        else:
            given.update({k: getattr(context, k) for k in KEYS if hasattr(context, k)})
    given.update(keys)
    unknown = sorted(set(given) - set(KEYS))
    if unknown:
        raise ValueError(f"unknown context keys {unknown}: the playbook decides on {', '.join(KEYS)}")
    c = {k: str(v).lower() if v is not None else None for k, v in given.items()}

    if c.get("workflow") == "linear" and c.get("speed") != "critical":
        return Strategy("Sequential Pipeline", Pipeline, "workflow is linear and speed is not critical")
    if c.get("tasks") == "independent" and c.get("speed") == "critical":
        return Strategy("Parallel Burst", Burst, "tasks are independent and speed is critical")
    if c.get("workflow") == "complex" and c.get("flexibility") == "high":
        return Strategy("Event-Driven Choreography", Choreography, "workflow is complex and flexibility is high")
    if c.get("decisions") == "complex" and c.get("authority") == "clear":
        return Strategy("Hierarchical Command", Commander, "decisions are complex and authority is clear")
    if c.get("environment") == "dynamic" and c.get("resilience") == "critical":
        return Strategy("Adaptive Mesh", AdaptiveMesh, "environment is dynamic and resilience is critical")
    return Strategy(FALLBACK, Pipeline, "no rule matched: start simple", fallback=True)


__all__ = ["FALLBACK", "KEYS", "Strategy", "choose_strategy"]
