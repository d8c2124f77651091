"""The adaptive mesh: three indexers share out the pages held in the shared state, no leader.

Run it: `mesh up examples/adaptive.toml`, then `python examples/adaptive.py`.
"""

import random
import sys

import mesh
from mesh.patterns.adaptive import Action, AdaptiveAgent, AdaptiveMesh

PAGES = ["home", "about", "pricing", "docs", "blog", "careers"]


class Indexer(AdaptiveAgent):
    prefix = "pages/"  # the shared state it reads each round

    def analyze(self, state):  # a page nobody has indexed, and nobody objected to lately
        new = [page for page, value in state.items() if value == "new" and page not in self.avoided]
        if not new:
            return None
        page = random.choice(new)
        return Action(("index", page), claims=(page,), expect={page: "new"})

    def execute(self, action):  # the work; what it returns goes to the shared state
        page = action.claims[0]
        return {page: f"indexed by {self.mesh.name}"}

    def objective_met(self, state):
        return all(value != "new" for value in state.values())


class Legal(mesh.Actor):  # hears every intention: the first try at the pricing page must wait
    def on_start(self):
        self.heard = set()

    def on_intention(self, intention):
        if "pages/pricing" in intention.claims and "pricing" not in self.heard:
            self.heard.add("pricing")
            return mesh.Objection("pricing: legal review first", weight=2.0)
        return None


if __name__ == "__main__":
    with mesh.connect() as client:
        for page in PAGES:
            client.state.set(f"pages/{page}", "new")
        result = AdaptiveMesh(["indexer.0", "indexer.1", "indexer.2"], client).run(deadline=30)
        print(result["status"], client.state.items("pages/"))
    for name, record in result["agents"].items():
        print(name, record["status"], "acted", record["acted"], "objected", record["objected"])
    sys.exit(0 if result["status"] == "objective_met" else 1)
