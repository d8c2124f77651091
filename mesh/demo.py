"""The demo that ``mesh up`` runs with no spec: the playbook's sequential pipeline.

Five agents, each in its own process (scout, validator, executor, synthesizer,
reporter), and a conductor that runs them as a pipeline over a sample task every
few seconds. Ask the conductor for the latest report::

    mesh ask conductor '{"report": true}'
"""

from __future__ import annotations

import hashlib
from typing import Any

import mesh
from mesh.patterns.pipeline import Pipeline, Stage

FEATURES = ["checkout", "login", "search", "profile", "payments"]


def _stable_fraction(*parts: object) -> float:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32


class Scout(mesh.Actor):
    """Discovers test scenarios for the task's feature."""

    def on_message(self, context: Any) -> dict[str, object]:
        feature = context["task"]["feature"]
        kinds = ["happy path", "empty input", "huge input", "unicode", "timeout", "concurrent users"]
        return {"scenarios": [f"{feature}: {k}" for k in kinds]}


class Validator(mesh.Actor):
    """Keeps the scenarios that make sense; drops the ones that do not apply."""

    def on_message(self, context: Any) -> dict[str, object]:
        scenarios = context["results"]["scout"]["scenarios"]
        run = context["task"]["run"]
        keep = [s for s in scenarios if _stable_fraction(s, run) > 0.15]
        return {"valid": keep, "dropped": len(scenarios) - len(keep)}


class Executor(mesh.Actor):
    """Runs every valid scenario (here: a deterministic stand-in for a real test run)."""

    def on_message(self, context: Any) -> dict[str, object]:
        run = context["task"]["run"]
        outcomes = {s: ("pass" if _stable_fraction("exec", s, run) > 0.2 else "fail")
                    for s in context["results"]["validator"]["valid"]}
        return {"outcomes": outcomes}


class Synthesizer(mesh.Actor):
    """Turns outcomes into findings."""

    def on_message(self, context: Any) -> dict[str, object]:
        outcomes = context["results"]["executor"]["outcomes"]
        failed = sorted(s for s, o in outcomes.items() if o == "fail")
        total = len(outcomes)
        return {"total": total, "failed": failed, "pass_rate": round((total - len(failed)) / total, 3) if total else 1.0}


class Reporter(mesh.Actor):
    """Writes the report (and logs it, so `mesh logs reporter` shows it)."""

    def on_message(self, context: Any) -> dict[str, object]:
        s = context["results"]["synthesizer"]
        task = context["task"]
        text = (f"run {task['run']} ({task['feature']}): {s['total']} scenarios, "
                f"pass rate {s['pass_rate']:.0%}, failed: {', '.join(s['failed']) or 'none'}")
        self.mesh.log.info("%s", text)
        return {"report": text}


class Conductor(mesh.Actor):
    """Runs the pipeline over a sample task every ``interval`` seconds."""

    def __init__(self, interval: float = 5.0) -> None:
        self.interval = float(interval)
        self.runs = 0
        self.last: dict[str, Any] | None = None

    def on_start(self) -> None:
        self.pipeline = Pipeline(
            [
                Stage("scout", "scout", timeout=30, on_failure="stop"),
                Stage("validator", "validator", timeout=10, on_failure="continue_with_warning"),
                Stage("executor", "executor", timeout=300, on_failure="retry_once"),
                Stage("synthesizer", "synthesizer", timeout=20, on_failure="stop"),
                Stage("reporter", "reporter", timeout=20, on_failure="stop"),
            ],
            self.mesh,
        )
        self.mesh.after(0.5, {"run": True})
        self.mesh.every(self.interval, {"run": True})

    def on_message(self, message: object) -> object:
        if isinstance(message, dict) and message.get("run"):
            task = {"feature": FEATURES[self.runs % len(FEATURES)], "run": self.runs}
            self.runs += 1
            self.last = self.pipeline.run(task)
            if self.last["status"] == "ok":
                self.mesh.log.info("%s", self.last["results"]["reporter"]["report"])
            else:
                self.mesh.log.warning("pipeline failed at %s: %s", self.last["failed_stage"], self.last["error"])
            return self.last
        if isinstance(message, dict) and message.get("report"):
            return {"runs": self.runs, "last": self.last}
        raise ValueError("send {'report': true} for the latest report, or {'run': true} to run the pipeline now")
