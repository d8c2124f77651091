"""Alerts that wait for a person: the control ops ``alert``, ``alerts`` and ``alert_ack``.

An alert (``client.alert(reason)``, ``self.mesh.alert(reason)``) is kept in the shared state as
``$alerts/ID`` (id, reason, data, by, node, at, acknowledged...), written by the node the raiser
talks to, so it spreads with gossip and outlives the process that raised it and any event: a
kill switch pulled the next instant stops agents, not nodes, and the alert is still listed.
It stays until a person acknowledges it (``mesh ack ID``); acknowledged, it is kept (marked)
until room is needed. At most ALERTS_MAX are kept: when a node writes one more, it drops the
oldest acknowledged first, then the oldest unacknowledged (two nodes writing at once may hold
a few more for a moment: the next write trims them).
"""

from __future__ import annotations

import uuid

from ...errors import UnknownAlert
from ..clock import REAL_CLOCK, Clock
from ..gossiper import Directory

ALERTS_PREFIX = "$alerts/"  #: $alerts/ID: one alert, until dropped
ALERTS_MAX = 100  #: alerts kept at most, mesh-wide
NEWEST_IN_STATUS = 5  #: the unacknowledged alerts `mesh status` shows, newest first
REASON_MAX = 1000  #: characters of a reason kept


def all_alerts(directory: Directory) -> list[dict]:
    """Every alert kept, oldest first."""
    found = [v for v in directory.items(ALERTS_PREFIX).values() if isinstance(v, dict) and isinstance(v.get("id"), str)]
    return sorted(found, key=_age)


def summary(directory: Directory) -> dict:
    """What `mesh status` shows: how many wait for a person, and the newest of them."""
    waiting = [a for a in all_alerts(directory) if not a.get("acknowledged")]
    return {"unacknowledged": len(waiting), "newest": waiting[::-1][:NEWEST_IN_STATUS]}


def _age(alert: dict) -> tuple[float, str]:
    at = alert.get("at")
    return (float(at) if isinstance(at, (int, float)) else 0.0, str(alert.get("id")))


class Alerts:
    def __init__(self, name: str, directory: Directory, *, clock: Clock = REAL_CLOCK):
        self.name = name
        self.directory = directory
        self.clock = clock

    def raise_alert(self, body: dict) -> dict:
        """Keep a new alert (field ``reason`` checked by the op table); answers it whole."""
        alert = {"id": uuid.uuid4().hex[:10], "reason": body["reason"][:REASON_MAX], "data": body.get("data"),
                 "by": str(body.get("by") or "?")[:200], "node": self.name, "at": self.clock.time(),
                 "acknowledged": False, "acknowledged_by": None, "acknowledged_at": None}
        self.directory.write(ALERTS_PREFIX + alert["id"], alert, system=True)
        self._trim()
        return alert

    def listing(self, body: dict) -> dict:
        alerts = all_alerts(self.directory)
        if not body.get("all", True):
            alerts = [a for a in alerts if not a.get("acknowledged")]
        return {"alerts": alerts}

    def acknowledge(self, body: dict) -> dict:
        """Mark alert ``id`` acknowledged by ``by``; answers it (acknowledged once: the first stands)."""
        alert_id = body["id"]
        alert = self.directory.get(ALERTS_PREFIX + alert_id) if "/" not in alert_id else None
        if not isinstance(alert, dict):
            raise UnknownAlert(f"no alert {alert_id[:100]!r} is kept (`mesh alerts` lists them)")
        if alert.get("acknowledged"):
            return alert
        alert = {**alert, "acknowledged": True, "acknowledged_by": str(body.get("by") or "?")[:200],
                 "acknowledged_at": self.clock.time()}
        self.directory.write(ALERTS_PREFIX + alert_id, alert, system=True)
        return alert

    def _trim(self) -> None:
        alerts = all_alerts(self.directory)
        excess = len(alerts) - ALERTS_MAX
        if excess <= 0:
            return
        done = [a for a in alerts if a.get("acknowledged")]
        waiting = [a for a in alerts if not a.get("acknowledged")]
        for alert in (done + waiting)[:excess]:
            self.directory.delete(ALERTS_PREFIX + alert["id"], system=True)

