"""Pattern 2 of the playbook: the parallel burst.

**When to use:** independent tasks, and speed matters ("10 agents test different endpoints
simultaneously: a 5-minute suite in 45 seconds"). **Pros:** fast; one slow or failing task
does not hold up the others. **Cons:** everyone starts at once, so shared resources need a
limit (the playbook "had to add resource pooling to prevent DB connection exhaustion"), and
the results must be merged.

A :class:`Burst` sends tasks to many agents at once (a list of names, or a replica group)
and collects the answers as they come:

* at most ``limit`` tasks in flight; each task goes to the agent with the fewest tasks in
  flight (ties in turn), or to the agent a dict of tasks names;
* each task has ``timeout`` seconds: a task that overruns is reported ``timeout``, one whose
  agent raised or died is reported ``error``, and the others' results are kept;
* with ``pool="db"`` each task runs inside a lease of the mesh-wide pool ``db``: acquired
  before the ask (waiting in line, up to ``pool_timeout``), released after the answer, so
  the burst never holds more units than the pool has, whatever ``limit`` says;
* results come as they complete: ``for result in burst.results(tasks)`` (an iterator), or
  ``burst.run(tasks, on_result=callback)``; ``run`` returns a :class:`BurstReport` with every
  result in task order and ``merged``, the ``merge`` callable applied to them.

The asks are ``ask_async`` on one event loop (many in flight without a thread each; see
``benchmarks/patterns.py`` for the figures against a thread per ask). A synchronous caller's
burst runs on a loop thread this module keeps per process; ``results_async`` and
``run_async`` run on the caller's own loop (an ``async def`` handler). Built on the public
API only: ``mesh`` is a Client or an actor's ``self.mesh``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Iterable, Iterator, Mapping, Protocol

from ..errors import AskTimeout
from .counting import count_done

STATUSES = ("ok", "timeout", "error")


@dataclass(frozen=True)
class TaskResult:
    """What became of one task."""

    key: object  #: the task's position in the list, or its agent's name for a dict of tasks
    agent: str  #: the agent that was asked
    status: str  #: "ok", "timeout" (no answer within the task's timeout) or "error"
    value: object = None  #: the agent's answer, when ok
    error: str | None = None  #: "ExceptionType: message", when not ok
    elapsed: float = 0.0  #: seconds from the ask to its outcome
    waited: float = 0.0  #: seconds spent waiting for the pool lease (0 without a pool)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class BurstReport:
    """Every task's result, in task order, and what ``merge`` made of them."""

    results: list[TaskResult]
    merged: object  #: ``merge(results)``, or None without a merge step
    elapsed: float  #: seconds the whole burst took

    @property
    def status(self) -> str:
        """"ok" (every task ok), "partial" (some) or "failed" (none; also for no tasks at all)."""
        ok = sum(r.ok for r in self.results)
        return "ok" if self.results and ok == len(self.results) else "partial" if ok else "failed"

    @property
    def values(self) -> list[object]:
        """The answers of the tasks that succeeded, in task order."""
        return [r.value for r in self.results if r.ok]

    @property
    def failures(self) -> list[TaskResult]:
        return [r for r in self.results if not r.ok]


class _Ref(Protocol):
    async def ask_async(self, message: object, timeout: float = ...) -> object: ...


class _Lease(Protocol):
    def release(self) -> None: ...


class MeshHandle(Protocol):
    """What a burst runs through: a Client, or an actor's ``self.mesh``."""

    def actor(self, name: str) -> _Ref: ...

    def acquire(self, name: str, *, n: int = ..., timeout: float = ...) -> _Lease: ...


class Burst:
    """Run tasks on many agents at once through ``mesh`` (a Client or an actor's ``self.mesh``).

    Parameters:
        agents: the agents' names, or one name: a replica group (its running replicas, from
            ``mesh.group(name)`` where the mesh has it; else the name itself is asked).
        limit: tasks in flight at most (waiting for a lease counts as in flight).
        timeout: seconds each task's ask may take.
        pool: a mesh-wide pool whose ``pool_units`` units each task holds while it runs.
        pool_timeout: seconds a task may wait in line for its lease (then: ``error``,
            AcquireTimeout).
        merge: a callable over the list of results (task order) whose value is the report's
            ``merged``.
    """

    def __init__(self, mesh: Any, agents: Iterable[str] | str = (), *, limit: int = 10, timeout: float = 30.0,
                 pool: str | None = None, pool_units: int = 1, pool_timeout: float = 60.0,
                 merge: Callable[[list[TaskResult]], object] | None = None) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1 task in flight")
        if timeout <= 0 or pool_timeout <= 0:
            raise ValueError("timeout and pool_timeout must be > 0 seconds")
        if pool_units < 1:
            raise ValueError("pool_units must be at least 1")
        self.mesh = mesh
        self.agents: list[str] | str = agents if isinstance(agents, str) else list(agents)
        self.limit = limit
        self.timeout = timeout
        self.pool = pool
        self.pool_units = pool_units
        self.pool_timeout = pool_timeout
        self.merge = merge
        self._threads: dict[str, concurrent.futures.ThreadPoolExecutor] = {}
        self._threads_lock = threading.Lock()

    # -- which agents ------------------------------------------------------------------

    def members(self) -> list[str]:
        """The agents a list of tasks is spread over, now (a group's running replicas)."""
        if not isinstance(self.agents, str):
            return list(self.agents)
        group = getattr(self.mesh, "group", None)
        names = list(group(self.agents)) if callable(group) else []
        return names or [self.agents]

    def _plan(self, tasks: Iterable[object] | Mapping[str, object]) -> list[tuple[object, str | None, object]]:
        if isinstance(tasks, Mapping):
            return [(agent, agent, message) for agent, message in tasks.items()]
        return [(index, None, message) for index, message in enumerate(tasks)]

    # -- asyncio: the real work ------------------------------------------------------------

    async def results_async(self, tasks: Iterable[object] | Mapping[str, object]) -> AsyncIterator[TaskResult]:
        """``async for result in burst.results_async(tasks)``: each task's result as it completes.

        ``tasks``: a list of messages (spread over the agents) or a dict {agent: message}."""
        plan = self._plan(tasks)
        spread = [] if all(agent for _, agent, _ in plan) else self.members()
        load = {name: 0 for name in spread}
        turn = {name: i for i, name in enumerate(spread)}
        done: asyncio.Queue[TaskResult] = asyncio.Queue()
        slots = asyncio.Semaphore(self.limit)
        running: set[asyncio.Task[None]] = set()

        async def one(key: object, agent: str, message: object) -> None:
            try:
                await done.put(await self._task(key, agent, message))
            finally:
                if agent in load:
                    load[agent] -= 1
                slots.release()

        async def dispatch() -> None:
            for key, agent, message in plan:
                await slots.acquire()
                if agent is None:
                    # The least busy agent; among equals, the one whose turn it is (round robin).
                    agent = min(spread, key=lambda name: (load[name], turn[name]))
                    load[agent] += 1
                    turn[agent] += len(spread)
                task = asyncio.ensure_future(one(key, agent, message))
                running.add(task)
                task.add_done_callback(running.discard)

        dispatcher = asyncio.ensure_future(dispatch())
        try:
            for _ in range(len(plan)):
                yield await done.get()
            await dispatcher
        finally:
            for task in [dispatcher, *running]:
                task.cancel()

    async def _task(self, key: object, agent: str, message: object) -> TaskResult:
        loop = asyncio.get_running_loop()
        started = loop.time()
        waited = 0.0
        lease: _Lease | None = None
        try:
            if self.pool is not None:
                lease = await loop.run_in_executor(self._pool_threads("acquire", self.limit), functools.partial(
                    self.mesh.acquire, self.pool, n=self.pool_units, timeout=self.pool_timeout))
                waited = loop.time() - started
            asked = loop.time()
            try:
                value = await self.mesh.actor(agent).ask_async(message, timeout=self.timeout)
            except AskTimeout as exc:
                return TaskResult(key, agent, "timeout", error=f"AskTimeout: {exc}",
                                  elapsed=loop.time() - asked, waited=waited)
            return TaskResult(key, agent, "ok", value, elapsed=loop.time() - asked, waited=waited)
        except Exception as exc:  # one task's failure is its own result, never the burst's
            return TaskResult(key, agent, "error", error=f"{type(exc).__name__}: {exc}",
                              elapsed=loop.time() - started - waited, waited=waited)
        finally:
            if lease is not None:
                await loop.run_in_executor(self._pool_threads("release", 2), lease.release)

    def _pool_threads(self, role: str, size: int) -> concurrent.futures.ThreadPoolExecutor:
        """Threads of this burst for the blocking lease calls. Not the loop's default executor: its
        few threads, all waiting in line for the pool, would leave none to release a lease (a
        deadlock); and releases have threads of their own for the same reason."""
        with self._threads_lock:
            threads = self._threads.get(role)
            if threads is None:
                threads = self._threads[role] = concurrent.futures.ThreadPoolExecutor(size, f"mesh-burst-{role}")
            return threads

    async def run_async(self, tasks: Iterable[object] | Mapping[str, object],
                        on_result: Callable[[TaskResult], object] | None = None) -> BurstReport:
        """:meth:`run` for asyncio code (on the caller's event loop)."""
        started = time.perf_counter()
        tasks = tasks if isinstance(tasks, Mapping) else list(tasks)
        results = []
        async for result in self.results_async(tasks):
            if on_result is not None:
                on_result(result)
            results.append(result)
        return self._report(tasks, results, time.perf_counter() - started)

    # -- the synchronous forms ----------------------------------------------------------------

    def results(self, tasks: Iterable[object] | Mapping[str, object]) -> Iterator[TaskResult]:
        """``for result in burst.results(tasks)``: each task's result as it completes (the asks run
        on this process's burst loop thread; leaving the loop early cancels the rest)."""
        handed: queue.SimpleQueue[object] = queue.SimpleQueue()
        end = object()

        async def pump() -> None:
            try:
                async for result in self.results_async(tasks):
                    handed.put(result)
            except BaseException as exc:
                handed.put(exc)
                raise
            finally:
                handed.put(end)

        future = asyncio.run_coroutine_threadsafe(pump(), _loop())
        try:
            while True:
                item = handed.get()
                if item is end:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item  # type: ignore[misc]
        finally:
            future.cancel()

    def run(self, tasks: Iterable[object] | Mapping[str, object],
            on_result: Callable[[TaskResult], object] | None = None) -> BurstReport:
        """Run every task; ``on_result(result)`` (on this thread) as each completes. Returns the
        :class:`BurstReport`: never raises for a task's failure, which is in its result."""
        started = time.perf_counter()
        tasks = tasks if isinstance(tasks, Mapping) else list(tasks)
        results = []
        for result in self.results(tasks):
            if on_result is not None:
                on_result(result)
            results.append(result)
        return self._report(tasks, results, time.perf_counter() - started)

    def _report(self, tasks: list[object] | Mapping[str, object], results: list[TaskResult],
                elapsed: float) -> BurstReport:
        position = {key: i for i, key in enumerate(tasks)} if isinstance(tasks, Mapping) else None
        results.sort(key=lambda r: position[r.key] if position is not None else r.key)  # type: ignore[index, return-value, arg-type]
        merged = self.merge(results) if self.merge is not None else None
        count_done(self.mesh, sum(1 for r in results if r.ok))
        return BurstReport(results, merged, elapsed)


# One event loop thread per process for synchronous callers: the asyncio links it opens to agents
# stay open from one burst to the next (a fresh loop per burst would connect afresh every time).
_lock = threading.Lock()
_shared: tuple[int, asyncio.AbstractEventLoop] | None = None


def _loop() -> asyncio.AbstractEventLoop:
    global _shared
    with _lock:
        if _shared is None or _shared[0] != os.getpid():  # after a fork the thread is gone
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="mesh-burst-loop", daemon=True).start()
            _shared = (os.getpid(), loop)
        return _shared[1]
