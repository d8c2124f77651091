"""The zygote: one process per node that has imported mesh once and forks each agent on request.

An agent started as a fresh interpreter (``python -m mesh.runtime.agent``) spends some 160 ms of
CPU importing and holds some 16 MB of its own. Forked from a process that already imported mesh
(and, for agents whose spec says ``preload = true``, their modules) and froze its heap
(``gc.freeze()``: the collector never writes to those objects, so their pages stay shared), an
agent starts in a few milliseconds and owns a few MB. Before it freezes, the zygote takes every
free block of the memory pools it has partly used (:func:`_fill_free_blocks`), so that an agent's
new objects are packed into pages of its own, not one here and one there into pages it shares
(each such write copies a whole page). The node starts the zygote as
``python -m mesh.runtime.zygote`` (:mod:`mesh.runtime.node.zygote` is its side) and talks to it
over its stdin and stdout, one JSON object a line each way.

How it is safe to fork: the zygote runs no thread and makes no ZeroMQ context (``import zmq``
makes none); it checks that it has one thread before every fork and refuses (then exits) if an
imported module started one. It never runs agent code itself, only imports modules.

How supervision stays exact (the double fork): for each request the zygote forks an
intermediate process, which forks the agent and exits at once. The node is a child subreaper
(``mesh up``), so the agent is re-parented to the node: the node reaps it by pid and learns its
exit status, signals it, kills its group, and the agent's parent check and PDEATHSIG are relative
to the node, exactly as for a spawned agent. The zygote keeps nothing of its agents: when it dies
they run on, and the node starts another zygote. The agent:

1. makes a process group of its own (in the node's session), then writes its pid to the zygote, which
   answers the node with it once the intermediate has exited (the agent is the node's child by
   then); only then does the zygote let the agent go on, so the node can know the pid before the
   agent's first request (registration) arrives;
2. closes the zygote's pipes, points its stdin at /dev/null and its stdout and stderr at its log,
   takes its folder, environment (the MESH_* values a spawned agent gets, keys by path only) and
   default signal handlers;
3. returns to :func:`main`, which runs :func:`mesh.runtime.agent.main` there: the interpreter ends
   the agent as it ends a spawned one (exit status, traceback, atexit, non-daemon threads).

The zygote dies with its node: PDEATHSIG (SIGKILL) and the end of its stdin. Every forked agent
shares the zygote's hash seed (``PYTHONHASHSEED``); ``random`` reseeds itself at fork.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import json
import os
import signal
import _signal  # type: ignore[import-not-found]  # what signal wraps (CPython), stubless
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

from .containment import PR_SET_PDEATHSIG, prctl
from .pagemerge import mark_if_asked

#: What every agent imports: imported here once, so forked agents share these pages.
PRELOAD = ("mesh", "mesh.runtime.agent", "mesh.runtime.server", "mesh.runtime.nodelink", "zmq", "msgpack", "psutil",
           "asyncio", "logging", "ctypes")


#: Requests forked together at most (each holds two pipes until its agent has started).
MAX_BATCH = 128


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:  # pragma: no cover - not Linux
        import threading

        return threading.active_count()


def _die_with_node() -> None:
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # where it cannot be asked, the end of stdin still ends the zygote


def _preload(module: str, path: list[str]) -> str | None:
    """Import ``module`` here (with ``path`` first on sys.path); why not, or None."""
    if module in sys.modules:
        return None
    saved = list(sys.path)
    sys.path[:0] = [p for p in path if p]
    try:
        importlib.import_module(module)
    except BaseException as exc:  # noqa: BLE001 - user code may raise anything; the agent reports it itself
        if isinstance(exc, KeyboardInterrupt):
            raise
        return f"{type(exc).__name__}: {exc}"
    finally:
        sys.path[:] = saved
    _share_heap()
    return None


_FILLED: list[list[object]] = []


def _pool_stats() -> dict[int, tuple[int, int]]:
    """pymalloc's blocks in use and free blocks in its partly used pools, by block size
    (``sys._debugmallocstats``, CPython's own report)."""
    import tempfile

    if not hasattr(sys, "_debugmallocstats"):  # not CPython: nothing to fill
        return {}
    saved = os.dup(2)
    with tempfile.TemporaryFile() as f:
        os.dup2(f.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        text = f.read().decode(errors="replace")
    stats: dict[int, tuple[int, int]] = {}
    for line in text.splitlines():
        parts = line.split()  # class, size, num pools, blocks in use, avail blocks
        if len(parts) == 5 and all(p.isdigit() for p in parts):
            stats[int(parts[1])] = (int(parts[3]), int(parts[4]))
    return stats


def _fill_free_blocks() -> None:
    """Take every free block of the pools the zygote has partly used, and malloc's free chunks back
    to the system: an agent's new objects then go to pools and pages of their own, packed, instead
    of one here and one there into pages it shares with the zygote (each write copies a page)."""
    try:
        free = {size: avail for size, (_, avail) in _pool_stats().items()}
    except Exception:  # noqa: BLE001 - a saving, never a reason not to fork
        return
    filler: list[object] = [None] * sum(free.values())  # its own array first, once
    _FILLED.append(filler)  # kept (and frozen) for good: a filler freed would free its block again
    i = 0
    for size, count in free.items():
        for _ in range(count):
            # object(): 16 bytes; a float: 24; a bytes object of n bytes: 33 + n
            filler[i] = object() if size <= 16 else float(i) if size <= 32 else bytes(size - 33)
            i += 1
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # no glibc: nothing to give back this way
        pass


def _share_heap() -> None:
    """Make what is imported so far the agents' to share: collected, free blocks taken, frozen."""
    gc.collect()
    _fill_free_blocks()
    gc.freeze()


class _Fork:
    """One agent being forked: the intermediate's pid and the pipes to the agent."""

    __slots__ = ("middle", "pid_r", "go_w")

    def __init__(self, middle: int, pid_r: int, go_w: int):
        self.middle, self.pid_r, self.go_w = middle, pid_r, go_w


def _fork(request: dict[str, Any], node_pid: int, requests: int, replies: int, others: list[_Fork]) -> _Fork | None:
    """Fork the intermediate that forks the agent ``request`` describes, without waiting for it;
    None in the agent itself (which then runs). ``others``: the forks of this batch before it,
    whose pipes the new processes close (an agent holding a sibling's "go" pipe open could leave
    that sibling waiting for good)."""
    pid_r, pid_w = os.pipe()
    go_r, go_w = os.pipe()
    try:
        middle = os.fork()
    except OSError:
        for fd in (pid_r, pid_w, go_r, go_w):
            os.close(fd)
        raise
    if middle == 0:  # the intermediate: fork the agent and go, so the agent is re-parented to the node
        try:
            for other in others:
                os.close(other.pid_r)
                os.close(other.go_w)
            if os.fork() == 0:
                os.close(pid_r)
                os.close(go_w)
                _become_agent(request, node_pid, requests, replies, pid_w, go_r)
                return None
        except BaseException:
            os._exit(1)
        os._exit(0)
    os.close(pid_w)
    os.close(go_r)
    return _Fork(middle, pid_r, go_w)


def _started(fork: _Fork) -> int:
    """The agent's pid once it has its process group and the intermediate is gone (the agent is the
    node's child by then); raises OSError if it never started."""
    try:
        got = b""
        while True:
            chunk = os.read(fork.pid_r, 32)
            if not chunk:
                break
            got += chunk
        os.waitpid(fork.middle, 0)
        if not got:
            raise OSError("the forked agent ended before it started")
        return int(got)
    finally:
        os.close(fork.pid_r)


def _become_agent(request: dict[str, Any], node_pid: int, requests: int, replies: int, pid_w: int,
                  go_r: int) -> None:
    os.close(requests)
    os.close(replies)
    # A process group of its own, before the node may signal the group; in the node's session, so
    # that the kernel's autogroup counts it with its node, not as a session that weighs as much as
    # the node and all its other agents together (see README, "Agents' priority").
    os.setpgid(0, 0)
    os.write(pid_w, str(os.getpid()).encode())
    os.close(pid_w)
    go = os.read(go_r, 1)  # the node has the pid (and the intermediate is gone)
    os.close(go_r)
    if go != b"1" or os.getppid() != node_pid:
        os._exit(1)  # the zygote or the node died meanwhile: the node's sweep ends what is left
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    cwd = request["cwd"]
    os.chdir(cwd)
    _take_environment(request["env"])
    sys.path[0] = cwd  # as `python -m` puts the folder it starts in first
    sys.argv = [sys.argv[0]]
    # _signal: what signal.signal wraps, without turning numbers and handlers into enums and back
    # (enum's machinery would write to pages shared with the zygote: some 40 kB).
    _signal.signal(_signal.SIGINT, _signal.default_int_handler)
    _signal.signal(_signal.SIGTERM, _signal.SIG_DFL)
    _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)


def _take_environment(env: dict[str, str]) -> None:
    """Make ``os.environ`` ``env``, touching only the entries that differ: the zygote's own (its
    node's environment, mostly the same as an agent's) are shared with every agent, and each one
    freed here would write to pages of it (a clear and update copied some 330 kB of them)."""
    for key in [key for key in os.environ if key not in env]:
        del os.environ[key]
    for key, value in env.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


def _reply(fd: int, answer: dict[str, Any]) -> None:
    data = (json.dumps(answer) + "\n").encode()
    while data:
        data = data[os.write(fd, data):]


def _lines(fd: int) -> Iterator[list[bytes]]:
    """The request lines from ``fd``, as many as have arrived at a time (waiting for at least one),
    at most MAX_BATCH at a time, until it ends."""
    buffer = b""
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for first in range(0, len(lines), MAX_BATCH):
            yield lines[first:first + MAX_BATCH]


def serve(node_pid: int) -> bool:
    """Answer the node's requests until its pipe ends; True in a forked agent (which then runs).

    The requests that arrived together are forked together: each intermediate is forked before
    any agent is waited for, so a wave of agents waits for the scheduler once, not once each."""
    requests = os.dup(0)
    replies = os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(2, 1)  # print() in a preloaded module goes to the zygote's log, never into the pipe
    os.close(null)
    for module in PRELOAD:
        importlib.import_module(module)
    from .agent import prepare_logging

    prepare_logging()
    _share_heap()
    _reply(replies, {"ready": os.getpid()})
    for lines in _lines(requests):
        mark_if_asked()  # merge_pages (before every batch only for kernels before 6.4: the arenas made since)
        forks: list[tuple[dict[str, Any], _Fork]] = []
        for line in lines:
            try:
                request = json.loads(line)
                rid = request["id"]
            except (ValueError, KeyError, TypeError):
                continue
            answer: dict[str, Any] = {"id": rid}
            preload = request.get("preload")
            if isinstance(preload, str):
                problem = _preload(preload, request.get("path") or [])
                if problem is not None:
                    answer["preload"] = problem
            threads = _threads()
            if threads != 1:
                _reply(replies, {"id": rid, "error": f"the zygote runs {threads} threads: it may not fork (a preloaded"
                                                     f" module started one: {preload})", "fatal": True})
                return False
            try:
                fork = _fork(request, node_pid, requests, replies, [f for _, f in forks])
            except OSError as exc:
                answer["error"] = f"cannot fork: {exc}"
                _reply(replies, answer)
                continue
            if fork is None:
                return True  # the agent
            forks.append((answer, fork))
        for answer, fork in forks:
            try:
                answer["pid"] = _started(fork)
            except OSError as exc:
                answer["error"] = f"cannot fork: {exc}"
            _reply(replies, answer)
            if "pid" in answer:
                os.write(fork.go_w, b"1")  # the node has the pid (and the intermediate is gone): go on
            os.close(fork.go_w)
    return False


def main() -> None:
    node_pid = int(os.environ["MESH_NODE_PID"])
    _die_with_node()
    if os.getppid() != node_pid:
        return  # the node died before PDEATHSIG was set
    if serve(node_pid):
        from .agent import main as agent_main

        run_to_exit(agent_main)


def run_to_exit(body: Callable[[], object]) -> NoReturn:
    """Run a forked agent's ``body`` and end the process as the interpreter would (the exit status
    of SystemExit or 1 with the traceback of an exception, non-daemon threads joined, atexit run,
    ZeroMQ's queued frames given their linger), then ``os._exit``: without the interpreter's
    finalization, which touches every object the agent shares with the zygote. (Through it, a
    thousand agents stopping together copied some 30 MB each and stalled the machine for 20 s.)"""
    code = 0
    try:
        body()
    except SystemExit as exc:
        code = _exit_status(exc.code)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = 128 + signal.SIGINT
    except BaseException:  # noqa: BLE001 - what the interpreter prints for an uncaught exception
        traceback.print_exc()
        code = 1
    try:
        threading._shutdown()  # type: ignore[attr-defined]  # as the interpreter: non-daemon threads first
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a closed or broken stream: nothing more to say
                pass
        # What daemon threads say as the context ends under them is no news: the log's last error
        # stays the agent's own (its node reports it as the reason it exited).
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        _let_zeromq_flush()
        os._exit(code)


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _let_zeromq_flush(timeout: float = 0.5) -> None:
    """Give frames still queued on closed sockets their linger (the context's end waits for them;
    bounded, as a socket left open would make it wait for good)."""
    zmq = sys.modules.get("zmq")
    if zmq is None or zmq.Context._instance is None:
        return
    ended = threading.Thread(target=zmq.Context._instance.term, daemon=True)
    ended.start()
    ended.join(timeout)


if __name__ == "__main__":
    main()
