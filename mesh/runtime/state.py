"""The shared key/value state as a client or an actor sees it: ``client.state``, ``self.mesh.state``.

Writes go to the local node, which accepts them and spreads them by gossip;
``set`` returns once the node has accepted the write. Reads ask the local node's
replica (one loopback round trip, never a remote node). Keys starting with ``$``
are the runtime's (membership, agent directory): readable, not writable.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Callable

_MISSING = object()


class SharedState:
    def __init__(self, client) -> None:
        self._client = client

    def get(self, key: str, default: object = None) -> object:
        answer = self._client.control("state_get", key=key)
        return answer["value"] if answer.get("found") else default

    def set(self, key: str, value: object) -> None:
        self._client.control("state_set", key=key, value=value)

    def delete(self, key: str) -> None:
        self._client.control("state_delete", key=key)

    def items(self, prefix: str = "") -> dict[str, object]:
        return self._client.control("state_items", prefix=prefix)["items"]

    def watch(self, prefix: str, callback: Callable[[str, object], None], interval: float = 0.1) -> "Watch":
        """Call ``callback(key, value)`` for every change under ``prefix`` (value None: deleted).

        Runs in a daemon thread until ``.stop()``. Changes are seen at most ``interval`` s late.
        """
        return Watch(self._client, prefix, callback, interval)

    async def watch_async(self, prefix: str, interval: float = 0.1):
        """``async for key, value in state.watch_async(prefix)``: the same changes, for asyncio code."""
        seen: dict = {}
        while True:
            items = (await self._client.control_async("state_items", prefix=prefix))["items"]
            for key, value in _diff(seen, items):
                yield key, value
            seen = items
            await asyncio.sleep(interval)


def _diff(before: dict, after: dict):
    for key in sorted(after):
        if key not in before or before[key] != after[key]:
            yield key, after[key]
    for key in sorted(set(before) - set(after)):
        yield key, None


class Watch:
    def __init__(self, client, prefix: str, callback, interval: float) -> None:
        self._stop = threading.Event()
        self._client, self._prefix, self._callback, self._interval = client, prefix, callback, interval
        self._seen = client.control("state_items", prefix=prefix)["items"]
        self._thread = threading.Thread(target=self._run, name=f"mesh-watch-{prefix}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from ..errors import MeshError

        while not self._stop.wait(self._interval):
            try:
                items = self._client.control("state_items", prefix=self._prefix)["items"]
            except MeshError:
                continue
            for key, value in _diff(self._seen, items):
                self._callback(key, value)
            self._seen = items

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
