"""The node's forwarder of broadcasts (:mod:`mesh.runtime.broadcast`), as its processes reach it:
where to publish, every live node's forwarder, and the hellos of the subscription handshake."""

from __future__ import annotations

from ..broadcast import MEMBERSHIP_TOPIC, NodeBroadcast
from ..gossiper import Directory
from ..leadership import NODE_PREFIX


class Broadcasts:
    """Control ops ``broadcast`` and ``broadcast_hello``; the forwarder itself."""

    def __init__(self, name: str, forwarder: NodeBroadcast, local_in: str, directory: Directory):
        self.name = name
        self.forwarder = forwarder
        self.local_in = local_in  # where this node's own processes publish
        self.directory = directory
        self._known: dict[str, dict[str, str]] = {}

    def tick(self) -> None:
        """When the live nodes' forwarders change, tell this node's subscribers (topic ``m/``):
        they connect to a new node's forwarder at once instead of at their next look."""
        nodes = self._nodes()
        if nodes != self._known:
            self._known = nodes
            self.forwarder.publish(MEMBERSHIP_TOPIC, b"")

    def broadcast(self, body: dict) -> dict:
        return {"in": self.local_in, "nodes": self._nodes()}

    def _nodes(self) -> dict[str, dict[str, str]]:
        nodes = {}
        for key, record in self.directory.items(NODE_PREFIX).items():
            name = key[len(NODE_PREFIX):]
            if not isinstance(record, dict) or record.get("stopping"):
                continue
            out, address = record.get("broadcast"), record.get("address")
            if isinstance(out, str) and isinstance(address, str) and (name == self.name or self.directory.is_live(name)):
                nodes[name] = {"out": out, "address": address}
        return nodes

    def hello(self, body: dict) -> dict:
        return {"sent": self.forwarder.hello(body["subscriber"][:300], body["seq"])}

    def close(self) -> None:
        self.forwarder.close()
