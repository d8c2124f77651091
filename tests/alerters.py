"""Actors of tests/test_alerts.py (the spec's `path` points here)."""

from __future__ import annotations

import mesh


class Alerter(mesh.Actor):
    """{"alert": REASON, "data": X} raises an alert that waits for a person; answers it."""

    def on_message(self, message):
        return self.mesh.alert(message["alert"], message.get("data"))
