"""An assignment in the shared state carries each agent group's spec once (``specs``), not once per
replica: 1,000 replicas of one agent fit under gossip's value limit, and every reader sees each
replica's entry with its spec, as before."""

from __future__ import annotations

import msgpack
import pytest

from mesh.core.conductor import conduct
from mesh.core.gossip import GossipConfig
from mesh.runtime.node.assignments import compact, expand

SPEC = {"name": "echo", "class": "bench_actors:Echo", "replicas": 1000, "placement": "local", "restart": "never",
        "path": ["/srv/agents"], "cwd": "/srv", "mailbox": 10000, "config": {"greeting": "x" * 100}}


def decided(replicas: int = 1000) -> dict:
    spec = dict(SPEC, replicas=replicas)
    return conduct({"a": [spec]}, {"a": "alive"}, {"a"}, {}, {}, {})


def test_a_thousand_replicas_of_one_agent_fit_in_one_gossip_value_and_read_back_the_same():
    body = decided()
    assert len(body["replicas"]) == 1000 and not body["unplaced"]
    limit = GossipConfig().max_value_bytes
    assert len(msgpack.packb(body)) > limit  # as it was written before: over the limit
    written = compact({"term": 2, "leader": "a", "seq": 1, **body})
    assert len(msgpack.packb(written)) < limit / 2
    assert written["specs"] == {"echo": body["replicas"]["echo.0"]["spec"]}
    assert all("spec" not in e for e in written["replicas"].values())
    read = expand(msgpack.unpackb(msgpack.packb(written)))
    assert read == {"term": 2, "leader": "a", "seq": 1, **body}


def test_an_entry_whose_spec_differs_from_its_group_keeps_its_own():
    body = decided(3)
    odd = dict(body["replicas"]["echo.2"]["spec"], mailbox=5)
    body["replicas"]["echo.2"] = dict(body["replicas"]["echo.2"], spec=odd)
    written = compact(body)
    assert written["replicas"]["echo.2"]["spec"] == odd and "spec" not in written["replicas"]["echo.0"]
    assert expand(written) == body


@pytest.mark.parametrize("value", [
    {"replicas": {"r": {"group": "g"}}, "specs": ["not", "a", "map"]},
    {"replicas": {"r": {"group": "g"}}, "specs": {"other": {}}},
    {"replicas": {"r": "not a dict", "s": {"group": ["x"]}}, "specs": {"g": {}}},
    {"replicas": "nope", "specs": {}},
])
def test_malformed_specs_add_nothing_and_raise_nothing(value):
    replicas = expand(value)["replicas"]
    if isinstance(replicas, dict):
        assert all(not isinstance(e, dict) or "spec" not in e for e in replicas.values())


def test_an_assignment_of_the_old_form_reads_as_it_is():
    body = decided(3)
    assert expand(body) is body
