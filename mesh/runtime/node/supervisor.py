"""The supervisor: starts the agents this node runs, reaps them, restarts them by their
policy, stops them, and kills what they leave behind.

Every agent runs in a process group of its own, in the node's session, without its terminal and
``agent_nice`` nicer than the node (so a signal to the terminal reaches the node only, the node can
kill an agent together with everything it forked, and its control loop gets the CPU first), started
one of two ways (its spec's ``start``, else the node's): forked by the node's zygote (:mod:`.zygote`;
the default, where the node runs in a process of its own on Linux, a child subreaper), or spawned as
a fresh ``python -m mesh.runtime.agent``. Either way the agent is the node's child and an
:class:`~.zygote.AgentProcess`: one code path reaps, signals and kills both. New agents start in a
sliding wave: at most ``wave_size`` at once, the next as each registers (or its wave timeout
passes); by default FORK_WAVE when they fork (the CPU, not the wait, bounds how fast a thousand
start), SPAWN_WAVE when they spawn (an interpreter's start costs some 160 ms of CPU). An agent that
exits is handled by :mod:`mesh.core.restart`, unless it was being retired (taken off this node) or
the node is stopping. Embedded actors (in processes the node did not start) are only listed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import Callable

from ...core.restart import RestartTracker, describe_exit
from ...spec import NodeSpec
from ..budgets import Enforcer
from ..clock import REAL_CLOCK, Clock
from ..containment import a_child_exited, become_subreaper, has_exited, kill_descendants, kill_group, sweep_orphans
from ..gossiper import Directory
from ..nodelink import LEASE_EXIT, LEASE_UNTIL_ENV
from .constants import BUDGET_PREFIX, EMBEDDED_TTL_S, REAP_ALL_S, SWEEP_S
from .instance import VERSION, Instance, changed
from .killswitch import clock, pulled_kill_switch
from .logs import with_last_error
from .zygote import AgentProcess, ForkedProcess, Zygote, run_nicer

#: Why an agent stopped by the kill switch is retiring.
KILL_SWITCH = "kill switch"
#: Agents started at once when they fork, and when they spawn (unless the spec's ``wave_size`` says).
FORK_WAVE = 100
SPAWN_WAVE = 4


class Supervisor:
    def __init__(self, spec: NodeSpec, node_address: str, logs_dir: Path, directory: Directory, enforcer: Enforcer,
                 on_event: Callable[[str], None], own_process: bool, *, clock: Clock = REAL_CLOCK):
        self.spec = spec
        self.clock = clock
        self.name = spec.name
        self.node_address = node_address  # what agents connect to
        self.logs_dir = logs_dir
        self.directory = directory
        self.on_event = on_event
        #: The process is the node's own: every child that is not an agent is an orphan of a dead agent.
        self.own_process = own_process
        self.enforcer = enforcer  # samples the agents' CPU and memory, throttles and ends them
        self.node_max_frame = spec.max_message  #: the largest frame the node takes (set by the node)
        self.instances: dict[str, Instance] = {}
        self.stop_deadline: float | None = None  # when the node stops waiting for its agents (monotonic)
        self._queue: list[str] = []
        self._no_restarts_at = -1  # the instances' VERSION at which none was restarting (start_due)
        self._wave: dict[str, float] = {}  # the agents starting now -> when they stop counting against the wave
        self._next_reap_all = self._next_expiry = 0.0
        self._next_sweep = 0.0  # when to look for orphans of dead agents again (monotonic)
        self._embedded: tuple[int, list[Instance]] = (-1, [])  # the embedded instances, at a VERSION
        self._by_person: set[str] = set()  # the agents a person is stopping or restarting (SIGTERM sent)
        #: Seconds until the node's lease lapses unless renewed, or None (set by the node: its follower's).
        self.lease_left: Callable[[float | None], float | None] = lambda deadline: None
        #: The agents' secret certificate (set by the node when it has keys): agents get its path,
        #: never the secret itself, so nothing secret is on a command line or in an environment.
        self.agent_keys: Path | None = None
        self.zygote = Zygote(logs_dir / "$zygote.log", spec.base_dir, on_event, spec.agent_nice, spec.merge_pages)
        #: Agents may fork: they are re-parented to this process (a subreaper of its own, Linux).
        self.can_fork = own_process and hasattr(os, "fork") and sys.platform.startswith("linux")

    @property
    def stopping(self) -> bool:
        return self.stop_deadline is not None

    def lease_of(self, inst: Instance, deadline: float | None = None) -> float | None:
        """Seconds ``inst`` may run unless its node renews the lease (its watchdog), for a replica a leader
        placed here and could place elsewhere; else None. ``deadline``: its current one (else 0.0)."""
        return self.lease_left(deadline) if inst.placed_by and inst.movable else None

    def log_path_of(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def admit(self, inst: Instance) -> None:
        """Run ``inst`` here: it starts with the next wave."""
        self.instances[inst.name] = inst
        self._queue.append(inst.name)

    def replicas_of(self, group: str) -> list[str]:
        """The replicas of group ``group`` that this node runs (empty for a plain name)."""
        return sorted(n for n, i in self.instances.items() if i.group == group and n != group and not i.embedded)

    def live(self) -> list[Instance]:
        return [i for i in self.instances.values() if i.proc is not None]

    # -- starting -----------------------------------------------------------------------------

    def start_due(self, now: float) -> None:
        # A sliding wave: at most wave_size agents start at once (see the module note).
        wave = self._wave
        if wave:  # those that registered (or whose wave_timeout passed) make room for the next
            for name in [n for n, due in wave.items() if now >= due or self.instances[n].state != "starting"]:
                del wave[name]
        if self._queue:
            size = self.spec.wave_size or (FORK_WAVE if self.forks(self.instances[self._queue[0]]) else SPAWN_WAVE)
            room = size - len(wave)
            if room > 0:
                starting, self._queue = self._queue[:room], self._queue[room:]
                for name in starting:
                    wave[name] = now + self.spec.wave_timeout
                    self._spawn(self.instances[name], now)
        if self._no_restarts_at == VERSION[0]:
            return  # none was restarting, and no instance changed since (instance.VERSION)
        restarting = False
        for inst in self.instances.values():
            if inst.state == "restarting":
                restarting = True
                if inst.proc is None and now >= inst.restart_at:
                    self._spawn(inst, now)
        self._no_restarts_at = -1 if restarting else VERSION[0]

    def forks(self, inst: Instance) -> bool:
        """Whether ``inst`` starts by fork (else spawned): see the module note."""
        return self._forks(inst.spec.start if inst.spec is not None and inst.spec.start else self.spec.start)

    def _forks(self, start: str) -> bool:
        return start == "fork" and self.can_fork and self.zygote.usable and become_subreaper()

    def warm_zygote(self) -> None:
        """Start the zygote now if this node's own agents fork: its start (a fresh interpreter) then
        overlaps the node's meeting the mesh instead of delaying the first agents."""
        if any(self._forks(a.start or self.spec.start) for a in self.spec.agents):
            self.zygote.start()

    def _spawn(self, inst: Instance, now: float) -> None:
        spec, log_path = inst.spec, inst.log_path
        assert spec is not None and log_path is not None  # only agents of a spec are spawned, never embedded ones
        env = dict(os.environ)
        env.update(
            MESH_NODE=self.node_address,
            MESH_AGENT_NAME=inst.name,
            MESH_AGENT_CLASS=spec.cls,
            MESH_AGENT_PATH=os.pathsep.join(inst.import_path or self.spec.import_path()),
            MESH_AGENT_CONFIG=json.dumps(spec.config, default=str),
            MESH_AGENT_MAILBOX=str(spec.mailbox),
            MESH_AGENT_MAILBOX_BYTES=str(spec.mailbox_bytes),
            MESH_MAX_FRAME=str(self.spec.max_message),
            MESH_NODE_MAX_FRAME=str(self.node_max_frame),
            MESH_SUPERVISED="1",
            MESH_NODE_PID=str(os.getpid()),
            MESH_MERGE_PAGES="1" if self.spec.merge_pages else "0", PYTHONUNBUFFERED="1",
        )
        env.pop("MESH_KEY_NAME", None)
        if self.agent_keys is not None:
            env["MESH_KEYS"] = str(self.agent_keys)  # a path to a 0600 file: the agents' keypair, or the node's
        else:
            env.pop("MESH_KEYS", None)  # the node speaks plain ZeroMQ: so must its agents
        lease = self.lease_of(inst)
        if lease is not None:  # the watchdog's deadline, on the system's monotonic clock (the agent's)
            env[LEASE_UNTIL_ENV] = repr(time.monotonic() + lease)
        cwd = inst.cwd if inst.cwd and os.path.isdir(inst.cwd) else self.spec.base_dir
        forks = self.forks(inst)
        with open(log_path, "ab") as out:
            out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {inst.name}"
                      f" ({'forked' if forks else 'spawned'}) ---\n".encode())
            out.flush()
            if forks:
                inst.proc = self.zygote.fork(inst.name, env, cwd, log_path, spec.module if spec.preload else None,
                                             inst.import_path or self.spec.import_path())
            else:
                inst.proc = subprocess.Popen([sys.executable, "-m", "mesh.runtime.agent"], stdin=subprocess.DEVNULL,
                                             stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                             process_group=0)  # the node's session: see the zygote's setpgid
                run_nicer(inst.proc.pid, self.spec.agent_nice)
        inst.pid = inst.proc.pid  # None until the zygote answers: collect_forks
        if inst.pid is not None:
            self.enforcer.track(inst.name, inst.pid, spec.budget_cpu, spec.budget_memory)
        inst.state = "starting"
        inst.endpoint = None
        inst.started_at = now
        inst.term_sent_at = None

    def collect_forks(self, now: float) -> None:
        """Learn the pids of the agents the zygote forked, and start again those it lost."""
        for proc in self.zygote.collect():
            inst = self.instances.get(proc.name)
            if inst is None or inst.proc is not proc:
                continue
            if proc.pid is not None:
                inst.pid = proc.pid
                assert inst.spec is not None
                self.enforcer.track(inst.name, proc.pid, inst.spec.budget_cpu, inst.spec.budget_memory)
                continue
            inst.proc = None  # never ran: not a failure of the agent
            if inst.retiring and inst.retiring != KILL_SWITCH and not self.stopping:
                self.forget(inst)
            elif self.stopping or inst.held or inst.retiring:
                inst.state, inst.reason = "stopped", inst.held or inst.reason or "node stopped"
            else:
                inst.state, inst.restart_at = "restarting", now
                self.on_event(f"{inst.name} was not forked ({proc.lost}); starting it again")

    def pid_of(self, inst: Instance) -> int | None:
        """``inst``'s pid, read from the zygote now if it was forked and the answer is waiting."""
        if inst.pid is None and isinstance(inst.proc, ForkedProcess):
            self.collect_forks(self.clock.monotonic())
        return inst.pid

    # -- exits --------------------------------------------------------------------------------

    def reap(self, now: float) -> None:
        self.collect_forks(now)
        self._kill_overdue_by_person(now)
        exited = a_child_exited()  # one system call, not one per agent, unless one exited
        if exited or now >= self._next_reap_all:  # (all are looked at every REAP_ALL_S all the same)
            self._next_reap_all = now + REAP_ALL_S
            self._next_sweep = 0.0 if exited else self._next_sweep  # (an orphan still dying last time, say)
            self._reap_exited(now)
        if now >= self._next_sweep and not self.zygote.pending:  # (a fork's pid may not be known yet)
            self._next_sweep = now + SWEEP_S
            self.sweep()

    def _reap_exited(self, now: float) -> None:
        for inst in list(self.instances.values()):
            proc = inst.proc
            if proc is None or proc.pid is None or not has_exited(proc.pid):
                continue
            # Kill what the agent forked while its pid still names the group, then reap it. (What
            # left the group was re-parented to the node when the agent died: the sweep ends it.)
            why = self.enforcer.untrack(inst.name)
            kill_group(proc.pid)
            code = proc.wait()
            inst.proc = None
            inst.endpoint = None
            if inst.held and inst.retiring in ("", KILL_SWITCH) and not self.stopping:
                # A person stopped it (`mesh stop`): it stays stopped, whatever its restart policy.
                self.on_event(f"{inst.name} stopped ({describe_exit(code)}): {inst.held}")
                inst.state, inst.reason, inst.retiring, inst.respawn = "stopped", inst.held, "", ""
                continue
            if inst.retiring == KILL_SWITCH and not self.stopping:
                pulled = pulled_kill_switch(self.directory)
                if pulled is None and inst.placed_by:  # released meanwhile: the leader's assignment places it again
                    self.forget(inst)
                    continue
                pulled = pulled or {}
                inst.state, inst.retiring = "stopped", ""
                inst.reason = f"kill switch pulled by {pulled.get('by', '?')} at {clock(pulled.get('at'))}"
                continue
            if inst.retiring and not self.stopping:
                if code == LEASE_EXIT and inst.placed_by and inst.movable:  # its watchdog was first
                    self.on_event(f"{inst.name} stopped itself: this node did not renew its lease in time"
                                  f" ({inst.retiring})")
                else:
                    self.on_event(f"{inst.name} stopped ({describe_exit(code)}): {inst.retiring}")
                self.forget(inst)
                continue
            if self.stopping:
                inst.state = "stopped"
                inst.reason = "node stopped"
                continue
            if inst.respawn:  # a person restarted it (`mesh restart`): a fresh process now, not by policy
                self.on_event(f"{inst.name} {describe_exit(code)}: {inst.respawn}; starting again now")
                inst.state, inst.reason, inst.restart_at, inst.respawn = "restarting", inst.respawn, now, ""
                inst.stop_grace = None  # the grace was for that stop
                inst.restarts += 1
                continue
            if code == LEASE_EXIT and inst.placed_by and inst.movable:
                # Its watchdog stopped it: this node did not renew its lease in time (stalled). Not a
                # failure: it starts again at once if the lease holds (else the follower retires it).
                inst.state, inst.restart_at = "restarting", now
                self.on_event(f"{inst.name} stopped itself: this node did not renew its lease in time; starting again")
                continue
            assert inst.tracker is not None  # every spawned agent has one
            decision = inst.tracker.on_exit(now, code, why)
            if why or code != 0:
                inst.metrics.failed(now)
            inst.reason = with_last_error(decision.reason, code, why, inst.log_path)
            if why:
                inst.budget_kills += 1
                self.directory.write(BUDGET_PREFIX + inst.name, {"agent": inst.name, "node": self.name, "reason": why,
                                                                 "kills": inst.budget_kills, "at": self.clock.time()},
                                     system=True)
            if decision.action == "restart":
                inst.state = "restarting"
                inst.restarts += 1
                inst.restart_at = now + decision.delay
                self.on_event(f"{inst.name} {decision.reason}; restarting in {decision.delay:g} s")
            else:
                inst.state = "stopped" if decision.action == "stop" else "failed"
                self.on_event(f"{inst.name} {inst.state}: {decision.reason}")

    def sweep(self) -> list[int]:
        """End the orphans of dead agents: every child of the node that is not an agent."""
        if not self.own_process or self.zygote.pending:  # a fork's pid may not be known yet
            return []
        keep = {i.proc.pid for i in self.instances.values() if i.proc is not None and i.proc.pid is not None}
        if self.zygote.pid is not None:
            keep.add(self.zygote.pid)
        ended = sweep_orphans(keep)
        if ended:
            self.on_event(f"ended {len(ended)} process(es) left behind by agents that exited (pids {ended[:10]})")
        return ended

    def expire_embedded(self, now: float) -> None:
        if now < self._next_expiry:
            return
        self._next_expiry = now + 1.0
        if self._embedded[0] != VERSION[0]:  # listed again only when an instance came, went or changed
            self._embedded = (VERSION[0], [i for i in self.instances.values() if i.embedded])
        for name in [i.name for i in self._embedded[1] if now - i.last_heard > EMBEDDED_TTL_S]:
            del self.instances[name]
            changed()
            self.on_event(f"{name} dropped (embedded, no heartbeat for {EMBEDDED_TTL_S:g} s)")

    # -- taking agents off this node ---------------------------------------------------------

    def retire(self, inst: Instance, why: str, now: float, grace: float | None) -> None:
        """Stop an agent for good on this node: it runs elsewhere now, or may soon."""
        if inst.retiring:
            return
        inst.retiring = why
        self.on_event(f"{inst.name} stopping: {why}")
        if inst.name in self._queue:
            self._queue.remove(inst.name)
        if inst.proc is None:
            self.forget(inst)
            return
        self.enforcer.untrack(inst.name)  # resumed if throttled, so it can stop
        _stop_term(inst)
        inst.term_sent_at = now
        if grace is not None:
            inst.stop_grace = grace

    # -- a person stops or restarts one agent (`mesh stop`, `mesh restart`) ----------------------

    def stop_by_person(self, inst: Instance, why: str, now: float, grace: float | None) -> None:
        """End ``inst``'s process (SIGTERM, then SIGKILL after ``grace`` or its stop timeout); it stays
        stopped, with ``why`` as its reason, until :meth:`restart_by_person` (or the node restarts)."""
        inst.held, inst.respawn = why, ""
        self.on_event(f"{inst.name} stopping: {why}")
        if inst.name in self._queue:
            self._queue.remove(inst.name)
        if inst.proc is None:
            inst.state, inst.reason = "stopped", why
            return
        self._terminate(inst, now, grace)

    def restart_by_person(self, inst: Instance, why: str, now: float, grace: float | None) -> None:
        """A fresh process for ``inst`` now: the running one is ended first (as by
        :meth:`stop_by_person`); a stopped or failed one starts at once, its restart history cleared."""
        inst.held = ""
        if inst.tracker is not None:
            inst.tracker = RestartTracker(inst.tracker.policy)  # a person's restart: the policy starts over
        if inst.proc is None:
            if inst.name not in self._queue and inst.name not in self._wave:
                inst.state, inst.reason, inst.restart_at = "restarting", why, now
                self.on_event(f"{inst.name} starting: {why}")
            return
        inst.respawn = why
        self.on_event(f"{inst.name} restarting: {why}")
        self._terminate(inst, now, grace)

    def _terminate(self, inst: Instance, now: float, grace: float | None) -> None:
        if inst.term_sent_at is not None:
            return  # already ending: its first grace holds
        self.enforcer.untrack(inst.name)  # resumed if throttled, so it can stop
        _stop_term(inst)
        inst.term_sent_at = now
        self._by_person.add(inst.name)
        if grace is not None:
            inst.stop_grace = grace

    def _kill_overdue_by_person(self, now: float) -> None:
        """A person's stop or restart still running after its grace: SIGKILL (only those are looked at)."""
        for name in list(self._by_person):
            inst = self.instances.get(name)
            if inst is None or not (inst.held or inst.respawn) or inst.proc is None or inst.term_sent_at is None:
                self._by_person.discard(name)
            elif now - inst.term_sent_at >= self.stop_timeout_of(inst) and not has_exited(inst.proc.pid):
                self.on_event(f"{inst.name} did not stop within {self.stop_timeout_of(inst):g} s: SIGKILL")
                kill_tree(inst.proc)
                inst.term_sent_at = None

    def forget(self, inst: Instance) -> None:
        self.instances.pop(inst.name, None)
        changed()
        self._wave.pop(inst.name, None)

    def kill_all(self, reason: str) -> None:
        """The kill switch: every agent of this node ends now, without grace; nothing starts."""
        self._queue = []
        self._wave = {}
        for inst in list(self.instances.values()):
            if inst.embedded:
                continue
            if inst.proc is None:
                if inst.state in ("starting", "restarting"):
                    inst.state, inst.reason = "stopped", reason
                continue
            self.enforcer.untrack(inst.name)
            inst.retiring = KILL_SWITCH
            kill_tree(inst.proc, descendants=False)  # now: no grace

    def forget_stopped_placements(self) -> None:
        """Forget the stopped agents the leader placed here: its assignment places them again (not
        those a person stopped: they stay stopped until `mesh restart`)."""
        for inst in list(self.instances.values()):
            if inst.placed_by and inst.proc is None and inst.state == "stopped" and not inst.held:
                self.forget(inst)

    # -- the node stops -------------------------------------------------------------------------

    def stop_timeout_of(self, inst: Instance) -> float:
        if inst.stop_grace is not None:
            return inst.stop_grace
        if inst.spec is not None and inst.spec.stop_timeout is not None:
            return inst.spec.stop_timeout
        return self.spec.stop_timeout

    def begin_stop(self, now: float) -> float:
        """Nothing starts any more; returns how long the agents get to stop, in seconds."""
        longest = max([self.stop_timeout_of(i) for i in self.instances.values() if i.proc is not None] or [0.0])
        window = max(self.spec.stop_timeout, longest)
        # A little beyond the longest stop timeout, so the per-agent SIGKILLs happen first.
        self.stop_deadline = now + window + 1.0
        self._queue = []
        return window

    def terminate_all(self, now: float, window: float) -> None:
        """SIGTERM every agent: it finishes its message, runs on_stop and exits."""
        for inst in self.instances.values():
            if inst.proc is not None:
                self.enforcer.untrack(inst.name)  # resumed if throttled, so it can stop
                _stop_term(inst)
                inst.term_sent_at = now
            elif inst.state in ("restarting", "starting"):
                inst.state, inst.reason = "stopped", "node stopped"
        self.on_event(f"stopping {len(self.live())} agent(s), at most {window:g} s")

    def kill_overdue(self, now: float) -> None:
        """An agent still running after its own stop timeout is SIGKILLed with its group."""
        for inst in self.instances.values():
            if inst.proc is not None and inst.term_sent_at is not None:
                if now - inst.term_sent_at >= self.stop_timeout_of(inst) and not has_exited(inst.proc.pid):
                    self.on_event(f"{inst.name} did not stop in time: SIGKILL (stop timeout {self.stop_timeout_of(inst):g} s)")
                    kill_tree(inst.proc)
                    inst.term_sent_at = None  # killed once is enough; reap collects it

    def kill_everything(self) -> None:
        """Last line of defence: no agent process, nor anything it forked, outlives the node."""
        self.collect_forks(self.clock.monotonic())
        self.zygote.close()  # a fork it had not answered is a child of the node: the sweep ends it
        for inst in self.instances.values():
            proc = inst.proc
            if proc is None:
                continue
            if proc.pid is not None:
                if proc.poll() is None:
                    self.on_event(f"{inst.name} did not stop in time: SIGKILL")
                kill_tree(proc)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            inst.proc, inst.state, inst.endpoint = None, "stopped", None
            if not inst.reason or inst.reason == "node stopped":
                inst.reason = "node stopped"
        # And whatever the agents left behind (re-parented to the node): again until none is left,
        # since each one killed re-parents its own children here (bounded: a second at most).
        deadline = time.monotonic() + 1.0
        while self.sweep() and time.monotonic() < deadline:
            time.sleep(0.01)


def _stop_term(inst: Instance) -> None:
    if inst.proc is not None:
        with suppress(ProcessLookupError):
            inst.proc.send_signal(signal.SIGTERM)


def kill_tree(proc: AgentProcess, descendants: bool = True) -> None:
    """SIGKILL a live agent with everything it started: its tree (the agent is the subreaper of
    its descendants, so those in sessions of their own are in it too), then its process group.
    A fork whose pid is not known yet gets the SIGKILL, to its group, as soon as it is."""
    if proc.pid is None:
        proc.send_signal(signal.SIGKILL)
        return
    if descendants:
        kill_descendants(proc.pid)
    kill_group(proc.pid)
