"""Event-driven choreography: the playbook's chain, from scout to reporter, with nobody in charge.

Run it: `mesh up examples/choreography.toml`, then `python examples/choreography.py`.
"""

import sys

import mesh
from mesh.patterns import Choreography, Reactor, reaction


class Scout(Reactor):  # START_TESTING -> scout finds an issue
    @reaction("START_TESTING", publishes="ISSUE_FOUND")
    def explore(self, target):
        return {"target": target, "issue": "login takes 3 s"}


class Validator(Reactor):  # ISSUE_FOUND -> validator confirms; FIX_ATTEMPTED -> validator re-checks
    @reaction("ISSUE_FOUND", publishes="ISSUE_CONFIRMED")
    def confirm(self, found):
        return {**found, "confirmed": True}

    @reaction("FIX_ATTEMPTED", publishes="VALIDATION_COMPLETE")
    def recheck(self, attempt):
        return {**attempt, "fixed": attempt["fix"] == "cache the session"}


class Healer(Reactor):  # ISSUE_CONFIRMED -> healer attempts a fix
    @reaction("ISSUE_CONFIRMED", publishes="FIX_ATTEMPTED")
    def heal(self, issue):
        return {**issue, "fix": "cache the session"}


class Reporter(Reactor):  # VALIDATION_COMPLETE -> reporter summarizes
    @reaction("VALIDATION_COMPLETE")
    def summarize(self, outcome):
        self.mesh.log.info("%s on %s: fixed=%s", outcome["issue"], outcome["target"], outcome["fixed"])


if __name__ == "__main__":
    with mesh.connect() as client:
        testing = Choreography(client, start="START_TESTING", terminal=["VALIDATION_COMPLETE"])
        run = testing.run("shop.example", timeout=30)
    for step in run.trace:  # who reacted to what, when, and what it published next
        print(f"+{(step['time'] - run.trace[0]['time']) * 1000:5.1f} ms {step['agent']:>9} heard {step['topic']:<19} "
              f"{step['event']} (corr {step['corr']}) -> {(step['published'] or {}).get('topic')}")
    sys.exit(0 if run.status == "complete" else 1)
