"""The node's side of its zygote (:mod:`mesh.runtime.zygote`): start it, ask it for agents, watch it.

Requests go out as JSON lines on the zygote's stdin (buffered here and written without blocking
the node's loop); answers come back on its stdout and are read whenever the supervisor looks (every
housekeeping tick, and when an agent registers before its answer was read). So a fork is
asynchronous: until its answer arrives a :class:`ForkedProcess` has no pid, and signals sent to it
wait for one.

Each agent the zygote forks is a child of the node (see the zygote's note): a ForkedProcess reaps
it by pid, as :class:`subprocess.Popen` reaps a spawned one, so the supervisor has one code path
for both (:class:`AgentProcess`). The zygote itself is a child the node started with Popen; when
it dies, the forks it had not answered are lost (the supervisor starts those agents again) and the
next fork starts a new zygote. Agents already running are not its children and run on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from itertools import count
from pathlib import Path
from typing import Any, Protocol

#: Zygotes that may die in a row without one fork between them before the node gives up on
#: forking and spawns its agents instead.
MAX_ZYGOTE_DEATHS = 3


class AgentProcess(Protocol):
    """What the supervisor needs of an agent's process, spawned (Popen) or forked alike."""

    @property
    def pid(self) -> Any: ...  # int; None for a fork not answered yet

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def send_signal(self, sig: int) -> None: ...


class ForkedProcess:
    """An agent the zygote forked: the node's child once its pid is known."""

    def __init__(self, name: str):
        self.name = name
        self.pid: int | None = None
        self.returncode: int | None = None
        self.lost = ""  #: why the fork never happened (the zygote died, or could not fork); "" if not lost
        self._signals: list[int] = []  #: sent before the pid was known: delivered to its group then

    def started(self, pid: int) -> None:
        self.pid = pid
        for sig in self._signals:
            try:
                os.killpg(pid, sig)
            except OSError:
                pass
        self._signals = []

    def poll(self) -> int | None:
        if self.returncode is None and self.pid is not None:
            try:
                done, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: its status is lost
                done, status = self.pid, 9  # as if killed (SIGKILL)
            if done:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if self.pid is not None and deadline is None:
                try:
                    _, status = os.waitpid(self.pid, 0)
                    self.returncode = os.waitstatus_to_exitcode(status)
                except ChildProcessError:
                    self.returncode = -signal.SIGKILL
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"agent {self.name}", timeout or 0.0)
            time.sleep(0.005)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is not None:
            return
        if self.pid is None:
            self._signals.append(sig)
        else:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass


def run_nicer(pid: int, by: int) -> None:
    """Lower process ``pid``'s CPU priority to ``by`` nicer than this process's (at most 19).

    A node's agents (and its zygote, whose forks inherit it) run nicer than the node, so that the
    node's control loop gets the CPU first, also when hundreds of agents start at once."""
    if by <= 0:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, pid, min(19, os.getpriority(os.PRIO_PROCESS, 0) + by))
    except OSError:  # gone already: nothing to lower
        pass


class Zygote:
    """The node's zygote: started on the first fork, and again after it died."""

    def __init__(self, log_path: Path, cwd: str, on_event: Callable[[str], None], nice: int = 0,
                 merge_pages: bool = False):
        self.log_path = log_path
        self.cwd = cwd
        self.on_event = on_event
        self.nice = nice  #: how much nicer than the node the zygote, and so every agent it forks, runs
        self.merge_pages = merge_pages  #: the zygote's memory, and so its forks', marked mergeable
        self.popen: subprocess.Popen | None = None
        self.pending: dict[int, ForkedProcess] = {}  # request id -> the fork it asked for
        self.deaths = 0  #: zygotes that died in a row without forking anything
        self._ids = count(1)
        self._out = bytearray()
        self._in = bytearray()

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    @property
    def usable(self) -> bool:
        return self.deaths < MAX_ZYGOTE_DEATHS

    def start(self) -> None:
        """Start the zygote unless it runs (it is started on the first fork otherwise)."""
        if self.popen is None:
            self._start()

    def fork(self, name: str, env: dict[str, str], cwd: str, log: Path, preload: str | None,
             path: list[str]) -> ForkedProcess:
        """Ask for agent ``name`` (its answer arrives later: :meth:`collect`)."""
        self.start()
        proc = ForkedProcess(name)
        rid = next(self._ids)
        self.pending[rid] = proc
        request: dict[str, Any] = {"id": rid, "name": name, "env": env, "cwd": cwd, "log": str(log)}
        if preload:
            request.update(preload=preload, path=path)
        self._out += (json.dumps(request) + "\n").encode()
        self._flush()
        return proc

    def collect(self) -> list[ForkedProcess]:
        """Read the zygote's answers: the forks that got a pid or were lost since the last call.
        Notices a dead zygote (its unanswered forks are lost)."""
        if self.popen is None:
            return []
        self._flush()
        dead = self.popen.poll() is not None  # checked first: all a dead zygote wrote is in the pipe now
        done: list[ForkedProcess] = []
        assert self.popen.stdout is not None
        while True:
            try:
                chunk = os.read(self.popen.stdout.fileno(), 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self._in += chunk
        *lines, rest = self._in.split(b"\n")
        self._in = bytearray(rest)
        for line in lines:
            done += self._answer(line)
        if dead:
            done += self._died(f"the zygote exited ({self.popen.returncode})")
        return done

    def _answer(self, line: bytes | bytearray) -> list[ForkedProcess]:
        try:
            answer = json.loads(line)
        except ValueError:
            return []
        if not isinstance(answer, dict) or "id" not in answer:
            return []  # "ready"
        proc = self.pending.pop(answer["id"], None)
        if proc is None:
            return []
        if isinstance(answer.get("preload"), str):
            self.on_event(f"{proc.name}: the zygote could not preload its module ({answer['preload']});"
                          " the agent imports it itself")
        pid = answer.get("pid")
        if isinstance(pid, int) and pid > 0:
            self.deaths = 0
            proc.started(pid)
        else:
            proc.lost = str(answer.get("error") or "no pid")
            if answer.get("fatal"):
                self.deaths = MAX_ZYGOTE_DEATHS  # forking is unsafe in this node: spawn from now on
        return [proc]

    def _died(self, why: str) -> list[ForkedProcess]:
        self.deaths += 1
        self.on_event(why + (f"; {len(self.pending)} fork(s) it had not answered start again" if self.pending else "")
                      + ("" if self.usable else f"; {MAX_ZYGOTE_DEATHS} in a row: agents start as fresh"
                                                " interpreters from now on"))
        return self.close(why)

    def _start(self) -> None:
        env = dict(os.environ, MESH_NODE_PID=str(os.getpid()), PYTHONUNBUFFERED="1",
                   MESH_MERGE_PAGES="1" if self.merge_pages else "0")
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen([sys.executable, "-m", "mesh.runtime.zygote"], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=log, env=env, cwd=self.cwd,
                                          process_group=0)  # the node's session: see the zygote's setpgid
        run_nicer(self.popen.pid, self.nice)
        assert self.popen.stdin is not None and self.popen.stdout is not None
        os.set_blocking(self.popen.stdin.fileno(), False)
        os.set_blocking(self.popen.stdout.fileno(), False)
        self._out.clear()
        self._in.clear()
        self.on_event(f"zygote started (pid {self.popen.pid})")

    def _flush(self) -> None:
        if not self._out or self.popen is None or self.popen.stdin is None:
            return
        try:
            written = os.write(self.popen.stdin.fileno(), self._out)
        except BlockingIOError:
            return
        except BrokenPipeError:
            return  # dead: collect() notices
        del self._out[:written]

    def close(self, why: str = "the node is stopping") -> list[ForkedProcess]:
        """End the zygote (the node stops, or it died): its running agents are not affected. Returns
        the forks it had not answered, lost (``why``)."""
        lost = list(self.pending.values())
        for proc in lost:
            proc.lost = why
        self.pending.clear()
        popen, self.popen = self.popen, None
        if popen is None:
            return lost
        try:
            popen.kill()
        except OSError:
            pass
        popen.wait()
        for pipe in (popen.stdin, popen.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass
        return lost
