"""``/metrics``: a node's status in the Prometheus text format, made by ``prometheus_client``.

The node collects from its agents (their heartbeats carry their counters), so one scrape of a
node covers every agent it runs: no multiprocess directories. Each scrape reads the status
snapshot the node's loop published last (:mod:`.web`); a custom collector turns it into metric
families, so nothing is registered globally and nothing is counted twice.

Labels stay few and bounded: ``node``; ``agent`` (an instance name the node runs: agents of other
nodes are theirs to export); ``pool`` and ``limit`` (names from specs); ``state`` (a member's or
an agent's, from fixed sets); ``op`` and ``kind`` (the node's op table, the peer envelope kinds);
``quantile``. Never ids, never peer addresses.

What the snapshot does not know is not exported: a missing or null value, or one that is not a
number (a snapshot field of the wrong type), is skipped, never turned into a 0 that pretends to
know. Every family is always described, with or without samples, so the names a dashboard may
query are the names :func:`metric_names` lists.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .constants import PLACEMENT_STATES, STATES

#: The states a member of the mesh may be in (gossip's), and an agent's (the node's own and
#: the placement's); anything else counts as "other", so a label never takes an unbounded value.
MEMBER_STATES = ("alive", "suspect", "dead", "left")
AGENT_STATES = STATES + PLACEMENT_STATES
#: Longest label value taken from the snapshot (names from specs; a longer one is cut).
MAX_LABEL = 200

COUNTER, GAUGE = "counter", "gauge"

#: Each local agent's entry in the status: (key, metric, type, help). Counters get ``_total``.
AGENT_FIELDS: tuple[tuple[str, str, str, str], ...] = (
    ("messages", "mesh_agent_messages", COUNTER, "Messages the agent handled"),
    ("restarts", "mesh_agent_restarts", COUNTER, "Times the node restarted the agent"),
    ("budget_kills", "mesh_agent_budget_kills", COUNTER, "Times the node ended the agent for its memory budget"),
    ("cpu", "mesh_agent_cpu_cores", GAUGE, "CPU the agent's processes use, in cores, over the last second"),
    ("memory_bytes", "mesh_agent_memory_bytes", GAUGE, "Memory the agent's processes use (PSS over budget, else RSS)"),
    ("peak_memory_bytes", "mesh_agent_peak_memory_bytes", GAUGE, "The most memory the agent used"),
    ("throttled_s", "mesh_agent_throttled_seconds", COUNTER, "Seconds the agent was stopped for its CPU budget"),
    ("bad_frames", "mesh_agent_bad_frames", COUNTER, "Malformed frames the agent's process dropped"),
)

#: The playbook's metrics under each local agent's ``metrics`` (present once the runtime computes them).
AGENT_PLAYBOOK: tuple[tuple[str, str, str, str], ...] = (
    ("utilization", "mesh_agent_utilization_ratio", GAUGE, "Share of the window the agent spent in handlers (0..1)"),
    ("busy_s", "mesh_agent_busy_seconds", COUNTER, "Seconds the agent spent in handlers since it started"),
    ("throughput_per_s", "mesh_agent_throughput_per_second", GAUGE, "Messages per second over the window"),
    ("wait_s_avg", "mesh_agent_wait_seconds_avg", GAUGE,
     "Mean seconds a message waited in the agent's process before its handler (window)"),
    ("failures", "mesh_agent_failures", COUNTER, "Crashes and budget kills since the node started"),
    ("recovery_s", "mesh_agent_recovery_seconds", GAUGE, "Seconds from its last failure (or dead node) to running again"),
    ("deadlocks", "mesh_agent_deadlocks", COUNTER, "DeadlockDetected raised in the agent"),
    ("pool_waits", "mesh_agent_pool_waits", COUNTER, "Times the agent waited for a pool"),
    ("pool_wait_s", "mesh_agent_pool_wait_seconds", COUNTER, "Seconds the agent waited for pools"),
    ("tasks_completed", "mesh_agent_tasks_completed", COUNTER, "Tasks the agent completed (patterns, task_done)"),
)
#: Sampled ask round trips the agent made: (key, quantile label).
ASK_RTT = (("ask_rtt_p50_s", "0.5"), ("ask_rtt_p99_s", "0.99"))

#: The node's own, under ``node`` in the status.
NODE_FIELDS: tuple[tuple[str, str, str, str], ...] = (
    ("uptime_s", "mesh_node_uptime_seconds", GAUGE, "Seconds since the node started"),
    ("bad_frames", "mesh_node_bad_frames", COUNTER, "Malformed frames the node dropped"),
    ("bad_gossip", "mesh_node_bad_gossip", COUNTER, "Gossip entries refused: their origin may not write them"),
    ("answers_dropped", "mesh_node_answers_dropped", COUNTER, "Intention answers dropped: late, unknown, malformed"),
)

#: The election's, under ``election``.
ELECTION_FIELDS: tuple[tuple[str, str, str, str], ...] = (
    ("stale_decisions", "mesh_node_stale_decisions", COUNTER,
     "Decisions from a leader of an older term, refused (fencing)"),
    ("decisions_issued", "mesh_node_decisions_issued", COUNTER, "Decisions this node issued as leader"),
    ("candidacies", "mesh_node_candidacies", COUNTER, "Times this node stood for election"),
    ("terms_led", "mesh_node_terms_led", COUNTER, "Terms this node led"),
)

#: The node's totals of the playbook's metrics, under the status's ``metrics``.
NODE_PLAYBOOK: tuple[tuple[str, str, str, str], ...] = (
    ("window_s", "mesh_metrics_window_seconds", GAUGE, "The sliding window the windowed metrics cover"),
    ("failures", "mesh_failures", COUNTER, "Crashes and budget kills of the node's agents"),
    ("recovery_s_avg", "mesh_recovery_seconds_avg", GAUGE, "Mean seconds from an agent's failure to running again"),
    ("utilization_avg", "mesh_utilization_avg_ratio", GAUGE, "Mean utilization of the node's agents (0..1)"),
    ("throughput_per_s", "mesh_throughput_per_second", GAUGE, "Messages per second the node's agents handled"),
    ("pool_waits", "mesh_pool_waits", COUNTER, "Times the node's agents waited for a pool"),
    ("pool_wait_s", "mesh_pool_wait_seconds", COUNTER, "Seconds the node's agents waited for pools"),
    ("tasks_completed", "mesh_tasks_completed", COUNTER, "Tasks the node's agents completed"),
    ("deadlocks", "mesh_deadlocks", COUNTER, "DeadlockDetected raised in the node's agents"),
)

#: Intention outcomes, under the status's ``metrics.intentions``.
INTENTION_FIELDS: tuple[tuple[str, str, str, str], ...] = (
    ("proposed", "mesh_intentions_proposed", COUNTER, "Intentions proposed"),
    ("approved", "mesh_intentions_approved", COUNTER, "Intentions approved"),
    ("objected", "mesh_intentions_objected", COUNTER, "Intentions objected to"),
    ("escalated", "mesh_intentions_escalated", COUNTER, "Intentions escalated to a person"),
    ("conflicts_per_100", "mesh_intentions_conflicts_per_100", GAUGE,
     "Objected and escalated intentions per 100 proposed (the conflict rate)"),
)

#: A pool's fields under ``resources.pools.NAME`` (the leader's), and a rate limit's.
POOL_FIELDS: tuple[tuple[str, str, str, str], ...] = (
    ("size", "mesh_pool_size", GAUGE, "Units the pool has"),
    ("held", "mesh_pool_held", GAUGE, "Units held now"),
    ("queued", "mesh_pool_queued", GAUGE, "Requests waiting in line for the pool"),
    ("leases", "mesh_pool_leases", GAUGE, "Leases granted and not released"),
)
LIMIT_FIELDS: tuple[tuple[str, str, str, str], ...] = (
    ("rate", "mesh_limit_rate", GAUGE, "Permits the rate limit grants per period"),
    ("per", "mesh_limit_period_seconds", GAUGE, "The rate limit's period"),
    ("available", "mesh_limit_available", GAUGE, "Permits available now"),
)


def number(value: object) -> float | None:
    """``value`` as a float if it is a finite number (not a bool, not a string), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def flag(value: object) -> float | None:
    """A bool as 1 or 0; anything else is not known."""
    return float(value) if isinstance(value, bool) else None


def mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def items(value: object) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def label(value: object) -> str:
    return str(value)[:MAX_LABEL]


def bounded(state: object, allowed: tuple[str, ...]) -> str:
    return state if isinstance(state, str) and state in allowed else "other"


Family = CounterMetricFamily | GaugeMetricFamily


def family(name: str, kind: str, help_text: str, labels: list[str]) -> Family:
    make = CounterMetricFamily if kind == COUNTER else GaugeMetricFamily
    return make(name, help_text, labels=labels)


def table(fields: Iterable[tuple[str, str, str, str]], labels: list[str],
          rows: Iterable[tuple[list[str], dict[str, Any]]]) -> Iterator[Metric]:
    """One family per field, a sample per row whose value there is a number."""
    rows = list(rows)
    for key, name, kind, help_text in fields:
        metric = family(name, kind, help_text, labels)
        for values, entry in rows:
            maybe_add(metric, values, number(entry.get(key)))
        yield metric


def maybe_add(metric: Family, labels: list[str], value: float | None) -> None:
    if value is not None:
        metric.add_metric(labels, value)


def sums(value: object) -> float | None:
    """The total of a ``{what: count}`` map, or None if it is not one."""
    if not isinstance(value, dict):
        return None
    counts = [number(v) for v in value.values()]
    return sum(c for c in counts if c is not None)


def by_state(name: str, help_text: str, node: str, states: tuple[str, ...],
             entries: list[dict[str, Any]] | None) -> Metric:
    """How many ``entries`` are in each state (a state nobody is in is 0: counting a listing is
    knowing); no samples when the listing is missing."""
    metric = GaugeMetricFamily(name, help_text, labels=["node", "state"])
    if entries is None:
        return metric
    counts = dict.fromkeys(states, 0)
    for entry in entries:
        state = bounded(entry.get("state"), states)
        counts[state] = counts.get(state, 0) + 1
    for state, count in counts.items():
        metric.add_metric([node, state], float(count))
    return metric


class StatusCollector:
    """Metric families from one status snapshot (``collect`` is what the registry calls)."""

    def __init__(self, snapshot: dict[str, Any]):
        self.snapshot = mapping(snapshot)

    def collect(self) -> Iterator[Metric]:
        st = self.snapshot
        node = label(mapping(st.get("node")).get("name") or "")
        yield from self.agents(node)
        yield from self.node(node)
        yield from self.election(node)
        yield from self.resources(node)
        yield from self.intentions(node)
        yield from self.playbook(node)

    # -- agents -------------------------------------------------------------------------------

    def local_agents(self) -> list[dict[str, Any]]:
        return [a for a in items(self.snapshot.get("agents")) if not a.get("remote") and isinstance(a.get("name"), str)]

    def agents(self, node: str) -> Iterator[Metric]:
        agents = self.local_agents()
        rows = [([node, label(a.get("name"))], a) for a in agents]
        up = GaugeMetricFamily("mesh_agent_up", "1 while the agent runs, else 0", labels=["node", "agent"])
        throttled = GaugeMetricFamily("mesh_agent_throttled", "1 while the agent is stopped for its CPU budget",
                                      labels=["node", "agent"])
        for values, a in rows:
            up.add_metric(values, 1.0 if a.get("state") == "running" else 0.0)
            maybe_add(throttled, values, flag(a.get("throttled")))
        yield up
        yield throttled
        yield from table(AGENT_FIELDS, ["node", "agent"], rows)
        budget_cpu = GaugeMetricFamily("mesh_agent_budget_cpu_cores", "The agent's CPU budget, in cores",
                                       labels=["node", "agent"])
        budget_memory = GaugeMetricFamily("mesh_agent_budget_memory_bytes", "The agent's memory budget",
                                          labels=["node", "agent"])
        for values, a in rows:
            budget = mapping(a.get("budget"))
            maybe_add(budget_cpu, values, number(budget.get("cpu")))
            maybe_add(budget_memory, values, number(budget.get("memory")))
        yield budget_cpu
        yield budget_memory
        playbook_rows = [(values, mapping(a.get("metrics"))) for values, a in rows]
        yield from table(AGENT_PLAYBOOK, ["node", "agent"], playbook_rows)
        rtt = GaugeMetricFamily("mesh_agent_ask_rtt_seconds", "Round trips of the asks the agent made (sampled)",
                                labels=["node", "agent", "quantile"])
        for values, m in playbook_rows:
            for key, quantile in ASK_RTT:
                maybe_add(rtt, [*values, quantile], number(m.get(key)))
        yield rtt
        # Agents the node does not run count only in placement states: nobody runs them yet (this
        # node's view); the running ones are their nodes' to count.
        listed = self.snapshot.get("agents")
        counted = [a for a in items(listed) if not a.get("remote") or a.get("state") in PLACEMENT_STATES]
        yield by_state("mesh_agents", "Agents the node runs by state, and those nobody runs yet", node,
                       AGENT_STATES, counted if isinstance(listed, list) else None)

    # -- the node -----------------------------------------------------------------------------

    def node(self, node: str) -> Iterator[Metric]:
        st = self.snapshot
        info = mapping(st.get("node"))
        yield from table(NODE_FIELDS, ["node"], [([node], info)])
        yield self.one("mesh_node_refused_connections", COUNTER,
                       "Connections the gate refused (a key not trusted), all peers", node, sums(info.get("refused")))
        yield self.by_key("mesh_node_forbidden_requests", "Requests refused for the caller's role, by op",
                          node, "op", info.get("forbidden"))
        yield self.by_key("mesh_node_peer_refused", "Peer envelopes from keys that are not a node's, by kind",
                          node, "kind", info.get("peer_refused"))
        alerts = st.get("alerts")
        yield self.one("mesh_alerts_unacknowledged", GAUGE, "Alerts waiting for a person", node,
                       number(mapping(alerts).get("unacknowledged")))
        # The kill switch is null when not pulled, its entry when pulled; absent means not known.
        pulled = None if "kill_switch" not in st else 1.0 if isinstance(st.get("kill_switch"), dict) else 0.0
        yield self.one("mesh_kill_switch_pulled", GAUGE, "1 while the kill switch is pulled", node, pulled)
        members = st.get("members")
        yield by_state("mesh_members", "Members of the mesh by state, as this node sees them", node,
                       MEMBER_STATES, items(members) if isinstance(members, list) else None)

    def by_key(self, name: str, help_text: str, node: str, key_label: str, counts: object) -> Metric:
        metric = CounterMetricFamily(name, help_text, labels=["node", key_label])
        for key, count in mapping(counts).items():
            maybe_add(metric, [node, label(key)], number(count))
        return metric

    def one(self, name: str, kind: str, help_text: str, node: str, value: float | None) -> Metric:
        metric = family(name, kind, help_text, ["node"])
        maybe_add(metric, [node], value)
        return metric

    def election(self, node: str) -> Iterator[Metric]:
        st = self.snapshot
        election = mapping(st.get("election"))
        yield self.one("mesh_election_term", GAUGE, "The election term this node is in", node, number(st.get("term")))
        leader = st.get("leader")
        is_leader = None if "leader" not in st else 1.0 if leader is not None and label(leader) == node else 0.0
        yield self.one("mesh_is_leader", GAUGE, "1 if this node leads", node, is_leader)
        yield self.one("mesh_leader_known", GAUGE, "1 if this node knows a leader", node,
                       None if "leader" not in st else float(leader is not None))
        voters = election.get("voters")
        heard = election.get("voters_heard")
        yield self.one("mesh_voters", GAUGE, "Voters of the election", node,
                       float(len(voters)) if isinstance(voters, list) else None)
        yield self.one("mesh_voters_heard", GAUGE, "Voters this node hears from", node,
                       float(len(heard)) if isinstance(heard, list) else None)
        yield self.one("mesh_node_fenced", GAUGE, "1 while this node's lease lapsed: it stopped its agents",
                       node, flag(election.get("fenced")))
        yield from table(ELECTION_FIELDS, ["node"], [([node], election)])

    # -- pools, intentions, the playbook's totals ---------------------------------------------

    def resources(self, node: str) -> Iterator[Metric]:
        resources = mapping(self.snapshot.get("resources"))  # the leader's; null elsewhere
        pools = [([node, label(name)], mapping(p)) for name, p in mapping(resources.get("pools")).items()]
        limits = [([node, label(name)], mapping(x)) for name, x in mapping(resources.get("limits")).items()]
        yield from table(POOL_FIELDS, ["node", "pool"], pools)
        yield from table(LIMIT_FIELDS, ["node", "limit"], limits)

    def intentions(self, node: str) -> Iterator[Metric]:
        st = self.snapshot
        intents = st.get("intents")
        yield by_state("mesh_intentions", "Intentions listed mesh-wide, pending or held", node,
                       ("pending", "held"), items(intents) if isinstance(intents, list) else None)
        escalations = st.get("escalations")
        yield self.one("mesh_escalations_waiting", GAUGE, "Escalations waiting for a person, mesh-wide", node,
                       float(len(escalations)) if isinstance(escalations, list) else None)
        outcomes = mapping(mapping(st.get("metrics")).get("intentions"))
        yield from table(INTENTION_FIELDS, ["node"], [([node], outcomes)])

    def playbook(self, node: str) -> Iterator[Metric]:
        yield from table(NODE_PLAYBOOK, ["node"], [([node], mapping(self.snapshot.get("metrics")))])


def render(snapshot: dict[str, Any]) -> tuple[bytes, str]:
    """The Prometheus text exposition of ``snapshot``, and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(snapshot))
    return generate_latest(registry), CONTENT_TYPE_LATEST


def metric_names() -> set[str]:
    """Every sample name :func:`render` can emit (counters with ``_total``): what a dashboard may query."""
    names: set[str] = set()
    for metric in StatusCollector({}).collect():
        names.add(metric.name + "_total" if metric.type == COUNTER else metric.name)
    return names

