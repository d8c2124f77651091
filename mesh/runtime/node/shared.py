"""The shared state and topic subscriptions, as actors and clients read and write them through
their node (the node's gossip replicates them mesh-wide)."""

from __future__ import annotations

from ...topics import SUBS_PREFIX
from ..gossiper import Directory


class Shared:
    """Control ops over the shared state; their fields are checked by the op table."""

    def __init__(self, name: str, directory: Directory):
        self.name = name
        self.directory = directory

    def state_get(self, body: dict) -> dict:
        found, value = self.directory.lookup(body["key"])
        return {"found": True, "value": value} if found else {"found": False}

    def state_set(self, body: dict) -> dict:
        self.directory.write(body["key"], body["value"])
        return {"ok": True}

    def state_delete(self, body: dict) -> dict:
        self.directory.delete(body["key"])
        return {"ok": True}

    def state_items(self, body: dict) -> dict:
        return {"items": self.directory.items(body.get("prefix") or "")}

    def subscribe(self, body: dict) -> dict:
        self.directory.write(f"{SUBS_PREFIX}{body['topic']}/{body['actor']}", {"node": self.name}, system=True)
        return {"subscribed": body["topic"]}

    def unsubscribe(self, body: dict) -> dict:
        self.directory.delete(f"{SUBS_PREFIX}{body['topic']}/{body['actor']}", system=True)
        return {"unsubscribed": body["topic"]}

    def subscribers(self, body: dict) -> dict:
        prefix = f"{SUBS_PREFIX}{body['topic']}/"
        return {"actors": sorted(k[len(prefix):] for k in self.directory.items(prefix))}
