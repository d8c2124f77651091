"""``serve_async``: an actor served beside a running event loop, its async hooks run on that loop.

The actor's loop runs on a thread of its own (:class:`~mesh.runtime.server.Server`); its
coroutine handlers are handed to the caller's event loop, which stays free meanwhile.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

from ..actor import Actor
from .cancels import as_cancellable
from .ref import ACTING_TASK
from .server import Server


async def serve_async(actor: Actor, name: str, node: str | None = None, **options: Any) -> None:
    """``serve`` for a running event loop: the loop stays free, async hooks run on it.

    Cancel the task to stop the actor (``on_stop`` runs first).
    """
    loop = asyncio.get_running_loop()
    server = Server(actor, name, node, **options)

    def on_loop(coro: Coroutine[Any, Any, object]) -> object:
        async def acting(chain_in: list[str] = server.chain_in) -> object:
            # Asks the handler makes on this loop carry the waiting chain (deadlock detection).
            ACTING_TASK.set(_Acting(server.name, chain_in))
            return await as_cancellable(server, coro)

        return asyncio.run_coroutine_threadsafe(acting(), loop).result()

    server.run_coroutine = on_loop
    thread_done = loop.create_future()

    def target() -> None:
        try:
            server.run()
            loop.call_soon_threadsafe(_settle, thread_done, None)
        except BaseException as exc:  # hand it to the awaiting task
            loop.call_soon_threadsafe(_settle, thread_done, exc)

    threading.Thread(target=target, name=f"mesh-serve-{name}", daemon=True).start()
    try:
        await asyncio.shield(thread_done)
    except asyncio.CancelledError:
        server.request_stop()
        while not server.stopped.is_set():
            await asyncio.sleep(0.02)
        raise


class _Acting:
    """What an async handler's asks need of its server: the name and the chain it handles."""

    __slots__ = ("name", "chain_in", "alone")

    def __init__(self, name: str, chain_in: list[str]):
        self.name, self.chain_in, self.alone = name, chain_in, [name]


def _settle(fut: asyncio.Future[None], exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is None:
        fut.set_result(None)
    else:
        fut.set_exception(exc)
