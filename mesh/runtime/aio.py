"""The one adapter that makes the ``*_async`` form of a blocking call.

``acquire_async = async_twin(acquire)`` in a class body gives ``await obj.acquire_async(...)``:
the blocking call runs on the event loop's default executor with the caller's context
variables (an ask made there still carries the handler's waiting chain), so the loop stays
free. The twin takes the same arguments and returns the same value.

Calls that are many at once on the message path (``ask_async``, ``tell_async``) are
natively asynchronous instead: a thread each would cap them at the executor's size.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, Awaitable, Callable, TypeVar

T = TypeVar("T")


def async_twin(method: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    """The ``*_async`` form of ``method``: ``await``-able, run in a worker thread."""

    @functools.wraps(method)
    async def twin(*args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(method, *args, **kwargs)

    twin.__name__ = f"{method.__name__}_async"
    twin.__qualname__ = f"{method.__qualname__}_async"
    twin.__doc__ = f":meth:`{method.__name__}` for asyncio code: the same call in a worker thread, the event loop stays free."
    return twin
