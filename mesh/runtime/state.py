"""The shared key/value state as a client or an actor sees it: ``client.state``, ``self.mesh.state``.

Writes go to the local node, which accepts them and spreads them by gossip;
``set`` returns once the node has accepted the write. Reads ask the local node's
replica (one loopback round trip, never a remote node). Keys starting with ``$``
are the runtime's (membership, agent directory): readable, not writable.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, AsyncIterator, Callable, Iterator

from ..errors import MeshError
from . import rpc

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client


class SharedState:
    def __init__(self, client: "Client") -> None:
        self._client = client

    def get(self, key: str, default: object = None) -> object:
        answer = rpc.state_get(self._client, key)
        return answer["value"] if answer.get("found") else default

    def set(self, key: str, value: object) -> None:
        rpc.state_set(self._client, key, value)

    def delete(self, key: str) -> None:
        rpc.state_delete(self._client, key)

    def items(self, prefix: str = "") -> dict[str, object]:
        return rpc.state_items(self._client, prefix)

    def watch(self, prefix: str, callback: Callable[[str, object], None], interval: float = 0.1) -> "Watch":
        """Call ``callback(key, value)`` for every change under ``prefix`` (value None: deleted).

        Runs in a daemon thread until ``.stop()``. Changes are seen at most ``interval`` s late.
        """
        return Watch(self._client, prefix, callback, interval)

    async def watch_async(self, prefix: str, interval: float = 0.1) -> AsyncIterator[tuple[str, object]]:
        """``async for key, value in state.watch_async(prefix)``: the same changes, for asyncio code."""
        seen: dict[str, object] = {}
        while True:
            items = await rpc.state_items_async(self._client, prefix)
            for key, value in _diff(seen, items):
                yield key, value
            seen = items
            await asyncio.sleep(interval)


def _diff(before: dict[str, object], after: dict[str, object]) -> Iterator[tuple[str, object]]:
    for key in sorted(after):
        if key not in before or before[key] != after[key]:
            yield key, after[key]
    for key in sorted(set(before) - set(after)):
        yield key, None


class Watch:
    def __init__(self, client: "Client", prefix: str, callback: Callable[[str, object], None], interval: float) -> None:
        self._stop = threading.Event()
        self._client, self._prefix, self._callback, self._interval = client, prefix, callback, interval
        self._seen = rpc.state_items(client, prefix)
        self._thread = threading.Thread(target=self._run, name=f"mesh-watch-{prefix}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                items = rpc.state_items(self._client, self._prefix)
            except MeshError:
                continue
            for key, value in _diff(self._seen, items):
                self._callback(key, value)
            self._seen = items

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
