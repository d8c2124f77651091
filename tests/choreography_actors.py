"""The reactors of tests/test_patterns_choreography.py: the playbook's chain, with faults on request.

START_TESTING -> scout -> ISSUE_FOUND -> validator -> ISSUE_CONFIRMED -> healer -> FIX_ATTEMPTED
-> validator -> VALIDATION_COMPLETE -> reporter. The run's data says where to fail:
{"fail": "healer"} makes the healer raise; {"quiet": "scout"} makes the scout publish nothing.
"""

from __future__ import annotations

from mesh.patterns.choreography import NOTHING, Next, Reactor, reaction


class Scout(Reactor):
    @reaction("START_TESTING", publishes="ISSUE_FOUND")
    def explore(self, data):
        if data.get("quiet") == "scout":
            return NOTHING
        if data.get("branch"):
            return Next("LOW_RISK", {**data, "issue": "typo"})
        return {**data, "issue": "login is slow", "found_by": self.mesh.name}


class Validator(Reactor):
    @reaction("ISSUE_FOUND", publishes="ISSUE_CONFIRMED")
    def confirm(self, data):
        return {**data, "confirmed": True}

    @reaction("FIX_ATTEMPTED", publishes="VALIDATION_COMPLETE")
    def recheck(self, data):
        return {**data, "fixed": data["fix"] == "cache added"}


class Healer(Reactor):
    @reaction("ISSUE_CONFIRMED", publishes="FIX_ATTEMPTED")
    def heal(self, data):
        if data.get("fail") == "healer":
            raise RuntimeError("no fix for " + data["issue"])
        return {**data, "fix": "cache added"}


class Reporter(Reactor):
    """Ends the chain; keeps every summary, and answers asks with them."""

    def on_start(self):
        super().on_start()
        self.summaries = []

    @reaction("VALIDATION_COMPLETE")
    def summarize(self, data):
        self.summaries.append({"run": self.run, "issue": data["issue"], "fixed": data["fixed"],
                               "corr": self.event.corr})

    @reaction("LOW_RISK")
    def record(self, data):
        self.summaries.append({"run": self.run, "issue": data["issue"], "logged": True})

    def on_message(self, message):
        return self.summaries
