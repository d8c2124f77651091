"""Alerts that wait for a person: ``client.alert``, ``client.alerts``, ``client.ack_alert``
(``self.mesh.alert`` in an actor; ``mesh alerts``, ``mesh ack``).

An alert is kept in the shared state before anyone hears of it (see
:mod:`mesh.runtime.node.alerts`: where, how many, which are dropped), then published on the
playbook's HELP topic with the alert as the event's data, so subscribers hear it at once. The
event is fire-and-forget; the kept alert is what a person is sure to see (``mesh status``
counts those not acknowledged), even if the kill switch is pulled the next instant.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..errors import MeshError
from ..topics import HELP
from . import rpc

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client

log = logging.getLogger("mesh.alerts")


def alert(client: "Client", reason: str, data: object = None, *, by: str | None = None) -> rpc.Alert:
    """Raise an alert that waits for a person: kept in the shared state until acknowledged
    (``mesh ack ID``), shown by ``mesh status`` and ``mesh alerts``, and published on the HELP
    topic (the event's data is the alert). ``reason``: one line for a person; ``data``: anything
    msgpack carries (at most 256 KiB); ``by``: who raises it (default: this client's name).
    Returns the alert (``id``, ``reason``, ``data``, ``by``, ``node``, ``at``, ``acknowledged``...)."""
    if not isinstance(reason, str) or not reason:
        raise ValueError("an alert's reason is a non-empty string")
    kept = rpc.alert(client, reason, data, by or client.name)
    try:
        client.publish(HELP, kept)
    except MeshError as exc:  # kept all the same: the event is only the news of it
        log.warning("alert %s kept, but not published on %s: %s", kept["id"], HELP, exc)
    return kept


def alerts(client: "Client", *, unacknowledged: bool = False) -> list[rpc.Alert]:
    """The alerts kept, mesh-wide, oldest first (``mesh alerts``); ``unacknowledged``: only those
    that still wait for a person."""
    return rpc.alerts(client, unacknowledged)


def ack_alert(client: "Client", alert_id: str, *, by: str | None = None) -> rpc.Alert:
    """Acknowledge alert ``alert_id`` (``mesh ack ID``): it no longer waits for a person (it is kept,
    marked, until room is needed). ``by``: who (default: this client's name). Returns the alert;
    raises UnknownAlert if none is kept under that id. Acknowledging twice keeps the first."""
    return rpc.alert_ack(client, alert_id, by or client.name)
