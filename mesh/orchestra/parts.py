"""One agent's part in a section, under the orchestra's failure-handling rules.

A part asks its agent once with the run's context and the section's time for it. Then:

* **agent failure, "restart once, then skip"**: the agent's process died during the ask
  (ActorDied), its handler raised (RemoteError), or it is not there (ActorNotFound): the
  agent is restarted (``restart_agent``: a fresh process) and asked once more; a second
  failure skips the part, with the reason, and the orchestra goes on.
* **timeout, "kill and report"**: no answer within the time: the ask is cancelled, the agent's
  process is killed (``stop_agent``: SIGTERM, SIGKILL after :data:`KILL_GRACE_S`) and a fresh
  one started so that the mesh stays usable; the outcome records which process, on which node,
  after how long. The part is not asked again.
* **resource exhaustion, "queue and wait"**: in a section with resource management the whole
  part (asks, restart, retry) runs inside one lease of the section's pool, waited for in
  priority order (:mod:`mesh.orchestra.line`).
* **critical failure, "stop orchestra, alert humans"**: an answer ``{"status":
  "critical_failure", "reason": ...}`` ends the part as ``critical``; the conductor stops.

Every ask is announced on START and ends with COMPLETE (or ALERT for a failure), the START's
id as the correlation id of what follows it.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from ..errors import ActorDied, ActorNotFound, AskTimeout, MeshError, RemoteError
from .events import ALERT, COMPLETE, START, Bus
from .line import PriorityLine, Stopped
from .report import Outcome

#: Seconds a timed-out agent has to end on SIGTERM before SIGKILL.
KILL_GRACE_S = 0.5
#: Seconds a restart or a kill may take before the part gives up on it.
CONTROL_TIMEOUT_S = 30.0

AGENT_FAILURES = (ActorDied, RemoteError, ActorNotFound)


class Parts:
    """Runs parts through ``mesh`` (a Client): ``run(section, agent, timeout, message, line)``.

    ``progress(kind, outcome)`` hears "start", "restart", "kill" and "end" of every part;
    ``stopped`` set means the orchestra stopped: parts not begun are not run."""

    def __init__(self, mesh: Any, bus: Bus, progress: Callable[[str, Outcome], None], stopped: threading.Event) -> None:
        self.mesh = mesh
        self.bus = bus
        self.progress = progress
        self.stopped = stopped

    def run(self, outcome: Outcome, timeout: float, message: Callable[[], object], corr: str | None,
            line: PriorityLine | None = None) -> Outcome:
        """Fill ``outcome`` (its section and agent set) by running the part; never raises."""
        if self.stopped.is_set():
            outcome.error = "the orchestra stopped before this part"
            return outcome
        lease = None
        started = time.monotonic()
        try:
            if line is not None:
                outcome.ahead = line.ahead_of(outcome.agent)
                lease, outcome.waited = line.lease(outcome.agent)
                if self.stopped.is_set():  # stopped while this part's grant was on its way
                    raise Stopped()
                if outcome.waited >= 0.05:
                    outcome.notes.append(f"waited {outcome.waited:.1f} s in line for pool {line.pool!r}"
                                         f" ({outcome.ahead} ahead of it by priority)")
            started = time.monotonic()
            self._attempts(outcome, timeout, message, corr)
        except Stopped:
            outcome.error = "the orchestra stopped while this part waited for its pool"
        except MeshError as exc:  # the pool refused, or no lease within max_wait
            outcome.status, outcome.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            outcome.elapsed = round(time.monotonic() - started, 3)
            # The end is heard before the lease goes: a critical failure stops the orchestra
            # before the next part in line can be granted the units.
            self.progress("end", outcome)
            if lease is not None:
                try:
                    lease.release()
                except MeshError as exc:  # it lapses on its own at its lease's end
                    outcome.notes.append(f"lease not released ({exc}); it lapses by itself")
        return outcome

    def _attempts(self, outcome: Outcome, timeout: float, message: Callable[[], object], corr: str | None) -> None:
        agent = outcome.agent
        while True:
            outcome.attempts += 1
            outcome.node = self._where(agent).get("node")
            asked = self.bus.publish(START, {"section": outcome.section, "agent": agent, "node": outcome.node,
                                             "attempt": outcome.attempts}, corr)
            self.progress("start", outcome)
            sent = time.monotonic()
            try:
                value = self.mesh.actor(agent).ask(message(), timeout=timeout)
            except AskTimeout:
                self._kill(outcome, time.monotonic() - sent, timeout, asked)
                return
            except AGENT_FAILURES as exc:
                error = f"{type(exc).__name__}: {exc}"
                self.bus.publish(ALERT, {"section": outcome.section, "agent": agent, "error": error}, asked)
                if outcome.restarts == 0 and not self.stopped.is_set() and self._restart(outcome, error):
                    continue
                outcome.status, outcome.error = "skipped", error
                outcome.notes.append(f"failed again ({error}): part skipped" if outcome.restarts
                                     else f"failed ({error}): part skipped")
                return
            if isinstance(value, dict) and value.get("status") == "critical_failure":
                outcome.status, outcome.value = "critical", value
                outcome.error = f"critical failure: {value.get('reason', 'no reason given')}"
                self.bus.publish(ALERT, {"section": outcome.section, "agent": agent, "error": outcome.error}, asked)
                return
            outcome.status, outcome.value = "ok", value
            self.bus.publish(COMPLETE, {"section": outcome.section, "agent": agent, "node": outcome.node}, asked)
            return

    def _restart(self, outcome: Outcome, error: str) -> bool:
        """Restart the agent for its one retry; False if it cannot be restarted (then: skip)."""
        outcome.restarts += 1
        try:
            info = self.mesh.restart_agent(outcome.agent, timeout=CONTROL_TIMEOUT_S)
        except MeshError as exc:
            outcome.notes.append(f"failed ({error}); restart refused: {type(exc).__name__}: {exc}")
            return False
        outcome.notes.append(f"failed ({error}); restarted once (pid {info.get('pid')} on {info.get('node')})"
                             " and asked again")
        self.progress("restart", outcome)
        return True

    def _kill(self, outcome: Outcome, after: float, timeout: float, corr: str | None) -> None:
        where = self._where(outcome.agent)
        kill: dict[str, Any] = {"after": round(after, 3), "timeout": timeout, "pid": where.get("pid"),
                                "node": where.get("node")}
        outcome.status, outcome.killed = "killed", kill
        outcome.error = f"no answer within {timeout:g} s: killed after {after:.1f} s"
        try:
            stopped = self.mesh.stop_agent(outcome.agent, grace=KILL_GRACE_S, timeout=CONTROL_TIMEOUT_S)
            kill["state"] = stopped.get("state")
            fresh = self.mesh.restart_agent(outcome.agent, timeout=CONTROL_TIMEOUT_S)
            kill["fresh_pid"] = fresh.get("pid")
            outcome.notes.append(f"timed out: killed pid {kill['pid']} on {kill['node']} after {after:.1f} s"
                                 f" (limit {timeout:g} s); a fresh process (pid {kill['fresh_pid']}) took its place")
        except MeshError as exc:
            kill["error"] = f"{type(exc).__name__}: {exc}"
            outcome.notes.append(f"timed out after {after:.1f} s; the kill failed: {kill['error']}")
        self.bus.publish(ALERT, {"section": outcome.section, "agent": outcome.agent, "error": outcome.error,
                                 "killed": kill}, corr)
        self.progress("kill", outcome)

    def _where(self, agent: str) -> dict[str, Any]:
        """The node and pid of ``agent`` now, as the mesh's status lists it ({} if not listed)."""
        try:
            agents = self.mesh.status().get("agents", [])
        except MeshError:
            return {}
        return next((a for a in agents if a.get("name") == agent), {})
