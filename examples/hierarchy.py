"""Hierarchical command: QE Mission Control and three squads check a service's endpoints.

Run it: `mesh up examples/hierarchy.toml`, then `python examples/hierarchy.py`.
"""

import sys

import mesh
from mesh.patterns.hierarchy import Commander, SquadLeader, Worker

HIERARCHY = {  # the playbook's YAML, as a dict (Hierarchy.load reads the same keys from TOML)
    "commander": {"name": "QE Mission Control", "responsibilities": ["Strategic planning", "Final decisions"]},
    "squad_leaders": {
        "functional_testing": {"workers": ["ui_tester", "api_tester"], "worker_timeout": 5},
        "performance_testing": {"workers": ["load_generator", "metric_collector"], "worker_timeout": 5},
        "security_testing": {"workers": ["vulnerability_scanner"], "worker_timeout": 5},
    },
}


class Checker(Worker):  # a worker: checks the endpoints its squad leader gives it
    def perform(self, endpoints):
        return {e: e.startswith("/") and " " not in e for e in endpoints}


class Lead(SquadLeader):  # a squad leader: shares the endpoints out, then puts the answers together
    def split(self, objective, workers):
        return {w: objective["endpoints"][i::len(workers)] for i, w in enumerate(workers)}

    def combine(self, results):
        return {e: ok for part in results.values() for e, ok in part.items()}


class MissionControl(Commander):  # the commander: one objective per squad; a failed squad gets one more try
    def plan(self, mission):
        return [{"squad": s.name, "endpoints": mission["endpoints"]} for s in self.hierarchy.squads]

    def on_squad_failure(self, failure):
        return "retry" if failure.attempt == 1 else "skip"


if __name__ == "__main__":
    with mesh.connect() as client:
        summary = MissionControl(HIERARCHY, client).run({"endpoints": ["/login", "/cart", "/pay"]})
    for objective in summary["objectives"]:
        print(objective["squad"], objective["status"], (objective["report"] or {}).get("result"))
    sys.exit(0 if summary["status"] == "ok" else 1)
