"""The orchestra's events on the playbook's topics, linked by correlation ids.

The run's START event's id is the run's id; a section's START answers the run's, a part's
START answers its section's, and a part's COMPLETE or ALERT answers its own START: reading
the events of a run back (``corr`` upward) gives its whole tree. HELP carries the alert of a
critical failure. Events are fire-and-forget (as every publish in mesh): the report, not the
events, is the record of the run.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from ..errors import MeshError
from ..topics import ALERT, COMPLETE, HELP

START = "START"  #: a run, a section or a part begins

__all__ = ["ALERT", "COMPLETE", "HELP", "START", "Bus"]

log = logging.getLogger("mesh.orchestra")


class Bus:
    """Publishes through ``mesh`` (a Client) with the orchestra's name and run in every event."""

    def __init__(self, mesh: Any, orchestra: str) -> None:
        self.mesh = mesh
        self.orchestra = orchestra
        self.run: str | None = None

    def publish(self, topic: str, data: dict[str, Any], corr: str | None = None) -> str:
        """Publish; returns the event's id (a local id if the publish failed: the run goes on)."""
        try:
            return self.mesh.publish(topic, {"orchestra": self.orchestra, "run": self.run, **data}, corr=corr)
        except MeshError as exc:
            log.warning("event %s not published: %s", topic, exc)
            return f"unpublished-{uuid.uuid4().hex[:12]}"
