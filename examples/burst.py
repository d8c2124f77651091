"""Parallel burst: ten agents test a service's endpoints at once, three database connections shared.

Run it: `mesh up examples/burst.toml`, then `python examples/burst.py`.
"""

import sys
import time

import mesh
from mesh.patterns import Burst

ROUTES = {"/login": "POST", "/cart": "GET", "/pay": "POST", "/search": "GET", "/items": "GET"}


class EndpointTester(mesh.Actor):  # one of ten replicas: tests the endpoint it is given
    def on_message(self, endpoint):
        time.sleep(0.1)  # the request, and a query over its database connection
        if endpoint not in ROUTES:
            raise LookupError(f"{endpoint} answers 404")
        return {"endpoint": endpoint, "method": ROUTES[endpoint], "by": self.mesh.name}


def summary(results):  # the merge step: one line for the whole burst
    return {"passed": sorted(r.value["endpoint"] for r in results if r.ok),
            "failed": {r.key: r.status for r in results if not r.ok}}


if __name__ == "__main__":
    endpoints = [*ROUTES, "/admin"]
    with mesh.connect() as client:
        burst = Burst(client, "endpoint_tester", limit=10, timeout=5, pool="db", merge=summary)
        report = burst.run(endpoints, on_result=lambda r: print(r.status, endpoints[r.key], r.agent, r.error or ""))
    print(report.status, report.merged)
    sys.exit(0 if report.merged["passed"] == sorted(ROUTES) else 1)
