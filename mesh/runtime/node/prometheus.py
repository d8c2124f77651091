"""``/metrics``: a node's status in the Prometheus text format, made by ``prometheus_client``.

The node collects from its agents (their heartbeats carry their counters), so one scrape of a
node covers every agent it runs: no multiprocess directories. Each scrape reads the status
snapshot the node's loop published last (:mod:`.web`); a custom collector turns it into metric
families, so nothing is registered globally and nothing is counted twice. Labels: ``node``,
and ``agent`` (an agent's instance name) where the value is an agent's; never message ids.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class StatusCollector:
    """Metric families from one status snapshot (``collect`` is what the registry calls)."""

    def __init__(self, snapshot: dict[str, Any]):
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        st = self.snapshot
        node = str((st.get("node") or {}).get("name") or "")
        agents = [a for a in st.get("agents") or [] if not a.get("remote")]
        up = GaugeMetricFamily("mesh_agent_up", "1 while the agent runs, else 0", labels=["node", "agent"])
        messages = CounterMetricFamily("mesh_agent_messages", "Messages the agent handled", labels=["node", "agent"])
        restarts = CounterMetricFamily("mesh_agent_restarts", "Times the node restarted the agent",
                                       labels=["node", "agent"])
        for a in agents:
            labels = [node, str(a.get("name"))]
            up.add_metric(labels, 1.0 if a.get("state") == "running" else 0.0)
            messages.add_metric(labels, float(a.get("messages") or 0))
            restarts.add_metric(labels, float(a.get("restarts") or 0))
        yield up
        yield messages
        yield restarts
        term = GaugeMetricFamily("mesh_election_term", "The election term this node is in", labels=["node"])
        term.add_metric([node], float(st.get("term") or 0))
        yield term
        leader = GaugeMetricFamily("mesh_is_leader", "1 if this node leads", labels=["node"])
        leader.add_metric([node], 1.0 if st.get("leader") == node else 0.0)
        yield leader


def render(snapshot: dict[str, Any]) -> tuple[bytes, str]:
    """The Prometheus text exposition of ``snapshot``, and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(snapshot))
    return generate_latest(registry), CONTENT_TYPE_LATEST
