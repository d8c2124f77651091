"""Prometheus /metrics (issue 16): every metric the status knows, on a real 3-node mesh, with
values that follow what the test did; a snapshot full of junk still renders; the shipped
Grafana dashboard queries only metrics the node can emit."""

from __future__ import annotations

import http.client
import json
import re
from pathlib import Path

import mesh
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port, wait_until
from mesh.runtime.node.prometheus import metric_names, render

DASHBOARD = Path(__file__).resolve().parent.parent / "examples" / "grafana" / "mesh-dashboard.json"


def scrape(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        res = conn.getresponse()
        assert res.status == 200
        return res.read().decode()
    finally:
        conn.close()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict, name: str, **labels) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


# -- a real 3-node mesh -----------------------------------------------------------------------------

POOL_AND_AGENTS_OF_A = ('[pools.db]\nsize = 3\n\n'
                        '[[agents]]\nname = "crash"\nclass = "actors:Crasher"\nnode = "a"\nbackoff = "100ms"\n'
                        'max_restarts = 10\n\n'
                        '[[agents]]\nname = "echo"\nclass = "actors:Echo"\nnode = "a"\n')
PINNED = '[[agents]]\nname = "pinned-{node}"\nclass = "actors:WhoAmI"\nnode = "{node}"\n'
CRASHES = 3
ASKS = 5


def start_mesh_with_metrics(start_node) -> list[tuple[object, int, str]]:
    """Nodes a, b, c, each serving /metrics: (node, metrics port, name)."""
    out = []
    for name in "abc":
        port = free_port()
        spec = POOL_AND_AGENTS_OF_A if name == "a" else PINNED.format(node=name)
        args = () if name == "a" else ("--join", out[0][0].address)
        node = start_node(spec, name=name, node_extra=f'metrics = "127.0.0.1:{port}"', wait=False, args=args)
        wait_until(lambda node=node: quiet(node), 20, f"node {name} to answer")
        out.append((node, port, name))
    wait_until(lambda: all(len([m for m in quiet(n, {"members": []})["members"] if m["state"] == "alive"]) == 3
                           for n, _, _ in out), 30, "3 nodes to meet")
    return out


def quiet(node, default=None):
    try:
        return node.status()
    except Exception:  # a node still starting: the caller polls again
        return default


def scraped(port: int) -> dict:
    try:
        return samples(scrape(port))
    except OSError:
        return {}


@pytest.mark.timeout(150)
def test_a_three_node_mesh_exports_what_the_test_did(start_node):
    nodes = start_mesh_with_metrics(start_node)
    (a, a_port, _), *_ = nodes
    a.wait_running("crash", "echo", timeout=30)
    client = a.client()
    for n in range(1, CRASHES + 1):
        with pytest.raises(mesh.MeshError):
            client.actor("crash").ask({"crash": "exit"}, timeout=10)
        wait_until(lambda n=n: (x := a.agent("crash"))["state"] == "running" and x["restarts"] == n, 20,
                   f"crash {n} restarted")
    for i in range(ASKS):
        assert client.actor("echo").ask(i, timeout=10) == i

    def a_counted():
        found = scraped(a_port)
        done = (value(found, "mesh_agent_restarts_total", node="a", agent="crash") == CRASHES
                and value(found, "mesh_agent_messages_total", node="a", agent="echo") == ASKS
                and value(found, "mesh_agent_up", node="a", agent="crash") == 1)
        return done and found

    found = wait_until(a_counted, 20, f"{CRASHES} restarts and {ASKS} messages on a's /metrics")
    assert value(found, "mesh_agent_memory_bytes", node="a", agent="echo") > 1_000_000
    assert value(found, "mesh_agent_cpu_cores", node="a", agent="echo") >= 0
    assert value(found, "mesh_agent_budget_kills_total", node="a", agent="crash") == 0
    # The playbook's failures, once the runtime computes them: one per crash.
    failures = value(found, "mesh_agent_failures_total", node="a", agent="crash")
    assert failures in (None, CRASHES)

    # Every node agrees on the term; exactly the leader says it leads; each sees 3 members.
    def agreed():
        scrapes = {name: scraped(port) for _, port, name in nodes}
        terms = {value(f, "mesh_election_term", node=name) for name, f in scrapes.items()}
        leaders = [name for name, f in scrapes.items() if value(f, "mesh_is_leader", node=name) == 1]
        if len(terms) != 1 or None in terms or len(leaders) != 1:
            return None
        if any(value(f, "mesh_is_leader", node=name) != 0 for name, f in scrapes.items() if name != leaders[0]):
            return None
        return scrapes, terms.pop(), leaders[0]

    scrapes, term, leader = wait_until(agreed, 30, "one leader and one term on every node's /metrics")
    status_leader = quiet(a)
    assert status_leader["term"] == term and status_leader["leader"] == leader
    for name, f in scrapes.items():
        assert value(f, "mesh_members", node=name, state="alive") == 3
        assert value(f, "mesh_voters", node=name) == 3
        assert value(f, "mesh_kill_switch_pulled", node=name) == 0
        assert value(f, "mesh_node_stale_decisions_total", node=name) is not None
        if name != "a":
            assert value(f, "mesh_agent_up", node=name, agent=f"pinned-{name}") == 1
            assert value(f, "mesh_agent_up", node=name, agent="echo") is None  # a's agent: a exports it
    # The pool from a's spec: the leader counts it.
    leader_port = next(port for _, port, name in nodes if name == leader)
    wait_until(lambda: value(scraped(leader_port), "mesh_pool_size", node=leader, pool="db") == 3, 15,
               "the leader's pool db of 3 on its /metrics")


# -- render() on hand-made snapshots ---------------------------------------------------------------

FULL = {
    "node": {"name": "n1", "uptime_s": 12.5, "bad_frames": 2, "bad_gossip": 1, "answers_dropped": 0,
             "refused": {"10.0.0.1:5": 3, "10.0.0.2:7": 4}, "forbidden": {"kill": 2}, "peer_refused": {"gossip": 5}},
    "leader": "n1", "term": 4, "kill_switch": {"pulled": True, "by": "alice"},
    "alerts": {"unacknowledged": 2, "newest": []},
    "intents": [{"id": "i1", "state": "pending"}, {"id": "i2", "state": "held"}, {"id": "i3", "state": "held"}],
    "escalations": [{"id": "e1"}],
    "resources": {"pools": {"db": {"size": 3, "held": 2, "queued": 1, "leases": 2}},
                  "limits": {"api": {"rate": 10, "per": 60.0, "available": 7}}, "recovering_s": 0.0},
    "election": {"voters": ["n1", "n2", "n3"], "voters_heard": ["n1", "n2"], "stale_decisions": 6, "fenced": False,
                 "decisions_issued": 9, "candidacies": 1, "terms_led": 1},
    "members": [{"name": "n1", "state": "alive"}, {"name": "n2", "state": "alive"}, {"name": "n3", "state": "dead"}],
    "agents": [
        {"name": "w.0", "state": "running", "messages": 10, "restarts": 3, "budget_kills": 1, "cpu": 0.25,
         "memory_bytes": 1000, "throttled_s": 1.5, "throttled": True, "bad_frames": 0,
         "budget": {"cpu": 0.5, "memory": 2000},
         "metrics": {"utilization": 0.4, "busy_s": 8.0, "throughput_per_s": 2.5, "wait_s_avg": 0.01, "failures": 4,
                     "recovery_s": 0.7, "deadlocks": 1, "ask_rtt_p50_s": 0.002, "ask_rtt_p99_s": 0.02,
                     "pool_waits": 3, "pool_wait_s": 1.25}},
        {"name": "far", "node": "n2", "state": "running", "remote": True, "messages": None},
        {"name": "nobody", "node": None, "state": "unplaced", "remote": True},
    ],
    "metrics": {"window_s": 60, "failures": 4, "recovery_s_avg": 0.7, "utilization_avg": 0.4,
                "throughput_per_s": 2.5, "pool_waits": 3, "pool_wait_s": 1.25, "deadlocks": 1,
                "intentions": {"proposed": 20, "approved": 15, "objected": 3, "escalated": 2,
                               "conflicts_per_100": 25.0}},
}


@pytest.mark.timeout(10)
def test_every_field_of_a_full_snapshot_becomes_its_metric():
    body, content_type = render(FULL)
    assert content_type.startswith("text/plain")
    found = samples(body.decode())
    agent = {"node": "n1", "agent": "w.0"}
    expected_agent = {
        "mesh_agent_up": 1, "mesh_agent_messages_total": 10, "mesh_agent_restarts_total": 3,
        "mesh_agent_budget_kills_total": 1, "mesh_agent_cpu_cores": 0.25, "mesh_agent_memory_bytes": 1000,
        "mesh_agent_throttled_seconds_total": 1.5, "mesh_agent_throttled": 1, "mesh_agent_bad_frames_total": 0,
        "mesh_agent_budget_cpu_cores": 0.5, "mesh_agent_budget_memory_bytes": 2000,
        "mesh_agent_utilization_ratio": 0.4, "mesh_agent_busy_seconds_total": 8.0,
        "mesh_agent_throughput_per_second": 2.5, "mesh_agent_wait_seconds_avg": 0.01, "mesh_agent_failures_total": 4,
        "mesh_agent_recovery_seconds": 0.7, "mesh_agent_deadlocks_total": 1, "mesh_agent_pool_waits_total": 3,
        "mesh_agent_pool_wait_seconds_total": 1.25,
    }
    for name, want in expected_agent.items():
        assert value(found, name, **agent) == want, name
    assert value(found, "mesh_agent_ask_rtt_seconds", **agent, quantile="0.5") == 0.002
    assert value(found, "mesh_agent_ask_rtt_seconds", **agent, quantile="0.99") == 0.02
    # Agents of other nodes are theirs to export; one nobody runs counts among the placement states.
    assert not any(labels and ("agent", "far") in labels for _, labels in found)
    assert value(found, "mesh_agents", node="n1", state="running") == 1
    assert value(found, "mesh_agents", node="n1", state="unplaced") == 1
    expected_node = {
        "mesh_node_uptime_seconds": 12.5, "mesh_node_bad_frames_total": 2, "mesh_node_bad_gossip_total": 1,
        "mesh_node_refused_connections_total": 7, "mesh_election_term": 4, "mesh_is_leader": 1,
        "mesh_leader_known": 1, "mesh_voters": 3, "mesh_voters_heard": 2, "mesh_node_fenced": 0,
        "mesh_node_stale_decisions_total": 6, "mesh_node_decisions_issued_total": 9,
        "mesh_alerts_unacknowledged": 2, "mesh_kill_switch_pulled": 1, "mesh_escalations_waiting": 1,
        "mesh_intentions_proposed_total": 20, "mesh_intentions_approved_total": 15,
        "mesh_intentions_objected_total": 3, "mesh_intentions_escalated_total": 2,
        "mesh_intentions_conflicts_per_100": 25.0, "mesh_metrics_window_seconds": 60, "mesh_failures_total": 4,
        "mesh_recovery_seconds_avg": 0.7, "mesh_utilization_avg_ratio": 0.4, "mesh_throughput_per_second": 2.5,
        "mesh_pool_waits_total": 3, "mesh_pool_wait_seconds_total": 1.25, "mesh_deadlocks_total": 1,
    }
    for name, want in expected_node.items():
        assert value(found, name, node="n1") == want, name
    assert value(found, "mesh_node_forbidden_requests_total", node="n1", op="kill") == 2
    assert value(found, "mesh_node_peer_refused_total", node="n1", kind="gossip") == 5
    assert value(found, "mesh_members", node="n1", state="alive") == 2
    assert value(found, "mesh_members", node="n1", state="dead") == 1
    assert value(found, "mesh_intentions", node="n1", state="pending") == 1
    assert value(found, "mesh_intentions", node="n1", state="held") == 2
    for name, want in {"mesh_pool_size": 3, "mesh_pool_held": 2, "mesh_pool_queued": 1, "mesh_pool_leases": 2}.items():
        assert value(found, name, node="n1", pool="db") == want, name
    assert value(found, "mesh_limit_available", node="n1", limit="api") == 7
    # Never an address as a label.
    assert "10.0.0.1" not in body.decode()
    # Every sample's name is one metric_names() lists (what the dashboard test relies on).
    assert {name for name, _ in found} <= metric_names()


JUNK = {
    "node": {"name": "j", "bad_frames": "many", "uptime_s": float("nan"), "refused": ["not", "a", "map"],
             "forbidden": {"kill": "x", "stop": 1}, "peer_refused": "junk"},
    "leader": None, "term": "four", "kill_switch": None, "alerts": "none",
    "intents": [{"state": "exploded"}, "junk", 5], "escalations": {"not": "a list"},
    "resources": {"pools": {"db": {"size": "three", "held": None}, "bad": "junk"}, "limits": []},
    "election": {"voters": "n1", "stale_decisions": None, "fenced": "no"},
    "members": [{"state": "alive"}, {"state": {"weird": 1}}, None],
    "agents": [
        {"name": "a", "state": "running", "messages": "ten", "restarts": None, "cpu": True, "memory_bytes": [],
         "budget": "lots", "metrics": {"utilization": "high", "ask_rtt_p50_s": None, "failures": 2}},
        {"state": "stopped", "messages": 1},  # no name
        "not an agent", None,
    ],
    "metrics": {"intentions": "junk", "failures": {"a": 1}, "window_s": 60},
}


@pytest.mark.timeout(10)
def test_a_snapshot_full_of_junk_still_renders_and_skips_what_is_not_a_number():
    found = samples(render(JUNK)[0].decode())
    assert value(found, "mesh_agent_up", node="j", agent="a") == 1
    assert value(found, "mesh_agent_messages_total", node="j", agent="a") is None  # "ten": not known
    assert value(found, "mesh_agent_restarts_total", node="j", agent="a") is None  # null: not 0
    assert value(found, "mesh_agent_cpu_cores", node="j", agent="a") is None  # a bool is not a number
    assert value(found, "mesh_agent_utilization_ratio", node="j", agent="a") is None
    assert value(found, "mesh_agent_failures_total", node="j", agent="a") == 2
    assert not any(("agent", "None") in labels for _, labels in found)  # a nameless entry is junk
    assert value(found, "mesh_node_bad_frames_total", node="j") is None
    assert value(found, "mesh_node_uptime_seconds", node="j") is None  # NaN is not known either
    assert value(found, "mesh_node_refused_connections_total", node="j") is None
    assert value(found, "mesh_node_forbidden_requests_total", node="j", op="stop") == 1
    assert value(found, "mesh_node_forbidden_requests_total", node="j", op="kill") is None
    assert value(found, "mesh_election_term", node="j") is None
    assert value(found, "mesh_is_leader", node="j") == 0
    assert value(found, "mesh_kill_switch_pulled", node="j") == 0
    assert value(found, "mesh_alerts_unacknowledged", node="j") is None
    assert value(found, "mesh_voters", node="j") is None
    assert value(found, "mesh_node_fenced", node="j") is None
    assert value(found, "mesh_members", node="j", state="alive") == 1
    assert value(found, "mesh_members", node="j", state="other") == 1  # a state outside the set is bounded
    assert value(found, "mesh_intentions", node="j", state="other") == 1
    assert value(found, "mesh_escalations_waiting", node="j") is None
    assert value(found, "mesh_pool_size", node="j", pool="db") is None
    assert value(found, "mesh_failures_total", node="j") is None
    assert value(found, "mesh_metrics_window_seconds", node="j") == 60


@pytest.mark.timeout(10)
@pytest.mark.parametrize("snapshot", [{}, {"node": None, "agents": None, "members": "x"}, [], None, "junk"])
def test_an_empty_or_broken_snapshot_renders_no_samples_it_does_not_know(snapshot):
    assert samples(render(snapshot)[0].decode()) == {}


# -- the Grafana dashboard -------------------------------------------------------------------------

def panel_queries(dashboard: dict) -> list[str]:
    exprs = []
    stack = list(dashboard.get("panels", []))
    while stack:
        panel = stack.pop()
        stack.extend(panel.get("panels", []))  # panels inside collapsed rows
        exprs += [t["expr"] for t in panel.get("targets", []) if t.get("expr")]
    return exprs


PROMQL_WORDS = {"sum", "by", "max", "min", "avg", "rate", "irate", "increase", "without", "on", "ignoring",
                "group_left", "group_right", "topk", "bottomk", "count", "clamp_min", "clamp_max", "histogram_quantile",
                "delta", "deriv", "offset", "bool", "and", "or", "unless", "label_replace", "vector", "scalar",
                "max_over_time", "avg_over_time", "min_over_time", "sum_over_time", "changes", "resets", "abs"}


@pytest.mark.timeout(10)
def test_the_grafana_dashboard_queries_only_metrics_the_node_emits():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard.get("schemaVersion", 0) >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource" and variables["node"]["type"] == "query"
    exprs = panel_queries(dashboard)
    assert len(exprs) >= 12
    emitted = metric_names()
    queried = set()
    for expr in exprs:
        without_labels = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", "", expr)
        names = {w for w in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_labels) if w.startswith("mesh_")}
        assert names, f"a query without a mesh metric: {expr}"
        unknown = names - emitted
        assert not unknown, f"{expr} queries {unknown}, which render() never emits"
        queried |= names
        assert "$node" in expr, f"{expr} ignores the node variable"
    # The playbook's three groups and the runtime's own are all on it.
    for name in ("mesh_agent_utilization_ratio", "mesh_agent_wait_seconds_avg", "mesh_agent_throughput_per_second",
                 "mesh_agent_failures_total", "mesh_agent_recovery_seconds", "mesh_agent_deadlocks_total",
                 "mesh_agent_ask_rtt_seconds", "mesh_intentions_conflicts_per_100", "mesh_agent_pool_wait_seconds_total",
                 "mesh_agent_up", "mesh_agent_restarts_total", "mesh_agent_cpu_cores", "mesh_agent_memory_bytes",
                 "mesh_election_term", "mesh_is_leader"):
        assert name in queried, f"the dashboard has no panel on {name}"
