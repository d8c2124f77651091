"""The node daemon: what ``mesh up`` runs.

A node listens on one ROUTER (its address) for control requests from the CLI,
clients and its own agents: register, resolve, heartbeat, status, logs, down. It
spawns every agent instance of its spec as ``python -m mesh.runtime.agent`` in a
session of its own (so a signal to the terminal reaches the node only, and the
node can kill an agent together with everything it forked), in waves, and
supervises them with :mod:`mesh.core.restart`.

Stopping (SIGINT, SIGTERM, ``mesh down``): every agent gets SIGTERM, which makes it
finish its current message, run ``on_stop`` and exit; whatever still runs after
the stop timeout is SIGKILLed with its whole process group. If the node itself is
SIGKILLed, the agents see their parent change (and get the kernel's
PDEATHSIG) and exit by themselves.

The node never runs user code in its own process, except to import agent classes
when it checks the spec before starting anything.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import zmq

from .. import wire
from ..core.restart import DEFAULT_MAX_RESTARTS, RestartPolicy, RestartTracker, describe_exit
from ..core.pools import Granted, Refused
from ..errors import (AcquireTimeout, ActorNotFound, MeshError, NameConflict, NotLeader, ReservedKey, ResourceError,
                      UnknownEscalation, WireError, to_wire)
from ..core.conductor import conduct
from ..core.election import ElectionConfig
from ..core.gossip import GossipConfig
from ..spec import AgentSpec, NodeSpec, agent_from_wire, agent_to_wire
from .budgets import Enforcer
from .containment import become_subreaper, kill_descendants, sweep_orphans
from .gossiper import GOSSIP_RECIPIENT, Gossiper
from .intents import (ESCALATIONS_PREFIX, INTENT_RECIPIENT, INTENTS_PREFIX, LISTED_CHARS, LISTED_CLAIMS, MAX_ESCALATIONS,
                      NodeIntents)
from .leadership import ELECTION_RECIPIENT, NODE_PREFIX, Leadership
from ..topics import SUBS_PREFIX, check_topic
from .resources import Resources, declared_resources
from .transport import BadFrames, context, recv_request, tune_socket

log = logging.getLogger("mesh.node")

_CONTROL = int(wire.Kind.CONTROL)
_REPLY = int(wire.Kind.REPLY)
_FAIL = int(wire.Kind.FAIL)
_EVENT = int(wire.Kind.EVENT)
_DEFER = object()  # a control handler that will answer later (a pool request waiting in line)
AGENTS_PREFIX = "$agents/"
ASSIGN_PREFIX = "$assign/"
KILL_KEY = "$kill"  #: the kill switch: {"pulled", "at", "by", "id"}
BUDGET_PREFIX = "$budget/"  #: $budget/AGENT: the last time the node ended AGENT for its budget, and why

STATES = ("starting", "running", "restarting", "failed", "stopped")
#: States an agent the node does not run may show in `mesh status`: declared but no leader
#: yet, assigned by the leader to a node that has not started it, or placed nowhere.
PLACEMENT_STATES = ("waiting", "assigned", "unplaced", "draining")
#: How often the node reaps children and starts due restarts, in seconds.
HOUSEKEEPING_S = 0.1
#: How long the node's loop waits for a request before it ticks the election, in seconds.
LOOP_S = 0.01
#: The lease, in seconds: a node that has heard (through gossip) from too few voters for a
#: majority to be impossible elsewhere for this long stops the agents the leader could move.
LEASE_S = 1.5
#: Seconds a lease-expired agent gets to stop before SIGKILL.
FENCE_GRACE_S = 0.5
#: The leader re-places a node's agents only after hearing nothing from it for this long
#: (seconds): longer than LEASE_S + FENCE_GRACE_S, so the node has stopped them by then.
REPLACE_AFTER_S = 3.0
#: An embedded actor that has not sent a heartbeat for this long is dropped, in seconds.
EMBEDDED_TTL_S = 3.0
#: The largest chunk of a log file one `logs` request returns, in bytes.
LOG_CHUNK = 256 * 1024
#: What the node's ROUTER takes in (issue 10). The node receives control requests, election and
#: intention messages (small) and gossip: at most max_delta_bytes of entries (the first may be a
#: whole value, max_value_bytes) and a digest of up to 4096 origins (GOSSIP_DIGEST_BYTES). So its
#: frame limit is min(max_message, max_delta_bytes + max_value_bytes + GOSSIP_DIGEST_BYTES),
#: 2.25 MiB by default, not an actor's 4 MiB of user data.
GOSSIP_DIGEST_BYTES = 1 << 20
#: Bytes libzmq may queue for the node per connection: RCVHWM is this many frames of the node's
#: frame limit (14 by default), at least 2, at most INTAKE_FRAMES_MAX. In all, libzmq holds at most
#: connections x (RCVHWM + 1) x frame limit (one frame in the making per connection), about
#: 34 MB per connection by default; the loop keeps the queues near empty (INTAKE_BURST) and drops
#: a shed peer's frames unread (transport.BadFrames).
INTAKE_CONNECTION_BYTES = 32 << 20
INTAKE_FRAMES_MAX = 1000
#: Messages the loop takes in one go before it ticks its timers, and for at most how long (s).
INTAKE_BURST = 256
INTAKE_BURST_S = 0.02


def mesh_home() -> Path:
    """Where nodes keep their logs: ``$MESH_HOME``, else ``~/.mesh``."""
    return Path(os.environ.get("MESH_HOME") or Path.home() / ".mesh")


@dataclass
class Instance:
    """One running (or supervised) actor known to this node."""

    name: str
    spec: AgentSpec | None  # None for an embedded actor (it lives in someone else's process)
    group: str
    state: str = "starting"
    pid: int | None = None
    endpoint: str | None = None
    restarts: int = 0
    messages: int = 0
    bad_frames: int = 0
    incarnation: int = -1
    reason: str = ""
    popen: subprocess.Popen | None = None
    tracker: RestartTracker | None = None
    restart_at: float = 0.0
    started_at: float = 0.0
    last_heard: float = 0.0
    log_path: Path | None = None
    term_sent_at: float | None = None
    max_frame: int | None = None  # the largest frame the actor accepts, in bytes
    placed_by: str | None = None  # "leader@term" that assigned it here (None: embedded)
    movable: bool = True  # the leader could place it elsewhere (not pinned or local to this node)
    retiring: str = ""  # why it is being stopped for good (taken off this node)
    import_path: list[str] = field(default_factory=list)
    cwd: str | None = None
    stop_grace: float | None = None  # seconds before SIGKILL when retiring, if not the stop timeout
    budget_kills: int = 0
    hears_intentions: bool = False

    @property
    def embedded(self) -> bool:
        return self.spec is None

    def as_status(self, node_name: str) -> dict:
        return {
            "name": self.name,
            "node": node_name,
            "pid": self.pid,
            "state": self.state,
            "restarts": self.restarts,
            "messages": self.messages,
            "incarnation": max(self.incarnation, 0),
            "endpoint": self.endpoint,
            "embedded": self.embedded,
            "group": self.group,
            "reason": self.reason,
            "bad_frames": self.bad_frames,
            "budget": _budget_of(self.spec),
            "budget_kills": self.budget_kills,
        }


def _budget_of(spec: AgentSpec | None) -> dict | None:
    if spec is None or (spec.budget_cpu is None and spec.budget_memory is None):
        return None
    return {"cpu": spec.budget_cpu, "memory": spec.budget_memory}


def _stop_term(inst: "Instance") -> None:
    if inst.popen is not None:
        try:
            inst.popen.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass


@dataclass
class Node:
    """A mesh node. ``run()`` serves until stopped; it is what ``mesh up`` calls."""

    spec: NodeSpec
    on_event: Callable[[str], None] = field(default=lambda line: log.info("%s", line))
    on_tick: Callable[["Node"], None] | None = None
    join: tuple[str, ...] = ()  #: addresses of any members of the mesh to join
    advertise: str | None = None  #: the address other nodes use to reach this one
    gossip_config: GossipConfig | None = None
    #: The process is the node's own (``mesh up``): it is a child subreaper, and every child that is
    #: not one of its agents is an orphan of a dead agent, ended by the sweep. A node run inside
    #: another program's process leaves that program's children alone.
    own_process: bool = False

    def __post_init__(self) -> None:
        self.name = self.spec.name
        self.address = self.spec.listen
        self.instances: dict[str, Instance] = {}
        self.bad = BadFrames(f"node {self.name}")
        self.started = time.time()
        self.run_dir = mesh_home() / "nodes" / f"{self.name}-{self.address.rsplit(':', 1)[-1]}"
        self._ids = iter(range(1, 1 << 62))
        self._stop_requested = False
        self._stop_deadline: float | None = None
        self._queue: list[str] = []
        self._wave: list[str] = []
        self._wave_deadline = 0.0
        self.router: zmq.Socket | None = None
        if self.gossip_config is None:
            budget = min(1 << 20, self.spec.max_message // 2)
            # Density as the receiving nodes' codec checks it, so no delta is ever refused by a peer.
            self.gossip_config = GossipConfig(max_delta_bytes=budget, max_value_bytes=min(256 * 1024, budget // 2),
                                              bytes_per_container=wire.BYTES_PER_CONTAINER,
                                              dense_slack_bytes=wire.SMALL_FRAME)
        self.gossip = Gossiper(
            self.name,
            self.advertise or self.connect_address,
            list(self.join),
            self.gossip_config,
            max_bytes=self.spec.max_message,
            on_event=self._on_gossip_event,
        )
        self._published: dict[str, dict] = {}
        self.leadership: Leadership | None = None
        self.enforcer: Enforcer | None = None
        self.resources: Resources | None = None
        self._resources_term = -1
        self._replies: dict[str, tuple[bytes, int, str]] = {}  # request id -> (ident, corr id, sender)
        self._resource_clashes: set[str] = set()
        self._kill_seen: str | None = None  # the id of the last kill switch pull this node obeyed
        self._guard_logged: dict[str, float] = {}
        self.intents: NodeIntents | None = None
        self._intent_replies: dict[str, tuple[bytes, int, str, float]] = {}  # id -> (ident, corr, sender, started)
        self._escalations: dict[str, tuple[bytes, int, str, float]] = {}  # leader: id -> (ident, corr, sender, deadline)
        self._record: dict | None = None
        self._next_record = 0.0
        self._written_assignment: dict | None = None
        self._stale_seen: set[tuple] = set()
        self.stale_decisions = 0  #: decisions from an older term this node refused
        self.decisions_issued = 0  #: assignments this node published as leader
        self.last_decision: dict | None = None
        self.fenced = False
        self._ever_led_by: float | None = None  # when this node first followed (or was) a leader
        self._spec_problems: dict[str, str] = {}
        self._next_sweep = 0.0  # when to look for orphans of dead agents again (monotonic)

    # -- set-up --------------------------------------------------------------------

    def bind(self) -> None:
        router = context().socket(zmq.ROUTER)
        gossip = self.gossip_config
        #: The largest frame this node takes, in bytes (see GOSSIP_DIGEST_BYTES).
        self.max_frame = min(self.spec.max_message, gossip.max_delta_bytes + gossip.max_value_bytes + GOSSIP_DIGEST_BYTES)
        frames = max(2, min(INTAKE_FRAMES_MAX, INTAKE_CONNECTION_BYTES // self.max_frame))
        tune_socket(router, hwm=frames, max_bytes=self.max_frame)
        router.setsockopt(zmq.SNDHWM, 10000)  # answers: the ROUTER drops what a peer leaves unread beyond this
        router.setsockopt(zmq.LINGER, 500)
        router.setsockopt(zmq.RCVTIMEO, int(LOOP_S * 1000))
        try:
            router.bind(self.address)
        except zmq.ZMQError as exc:
            router.close(0)
            raise MeshError(f"cannot listen on {self.address}: {exc.strerror} (is another node running there?)") from None
        self.router = router
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        config = ElectionConfig(self.spec.election_timeout_min, self.spec.election_timeout_max, self.spec.heartbeat)
        try:
            self.leadership = Leadership(self.name, self.spec.voter, config, self.run_dir, self.gossip, bool(self.join),
                                         on_event=self.on_event)
        except RuntimeError as exc:
            router.close(0)
            self.router = None
            raise MeshError(str(exc)) from None
        self.enforcer = Enforcer(on_event=self.on_event)
        try:
            self.intents = NodeIntents(self.name, self.spec.voter, self.run_dir, self._send_intent,
                                       self.leadership.elector.voters)
        except (RuntimeError, ValueError) as exc:
            raise MeshError(f"cannot start the intentions of node {self.name}: {exc}") from None
        self._publish_record()

    def _publish_record(self) -> None:
        """``$node/NAME``: whether this node votes, the agents its spec declares, its pools and
        limits, its capacity and load (for the leader). Rewritten only when it changes."""
        cpu, memory = self.spec.capacity()
        used_cpu, used_memory = self.enforcer.load() if self.enforcer else (0.0, 0)
        record = {"voter": self.spec.voter, "address": self.advertise or self.connect_address,
                  "agents": [agent_to_wire(a, self.spec) for a in self.spec.agents],
                  "pools": [list(p) for p in self.spec.pools], "limits": [list(x) for x in self.spec.limits],
                  "capacity": {"cpu": cpu, "memory": memory},
                  "load": {"cpu": round(used_cpu, 1), "memory": used_memory // 10_000_000 * 10_000_000},
                  "stopping": self._stop_deadline is not None}
        if record != self._record:
            self._record = record
            self.gossip.write(NODE_PREFIX + self.name, record, system=True)

    @property
    def connect_address(self) -> str:
        """The address agents use to reach this node."""
        host, port = self.address.rsplit(":", 1)
        if host in ("tcp://0.0.0.0", "tcp://*"):
            host = "tcp://127.0.0.1"
        return f"{host}:{port}"

    # -- the loop ---------------------------------------------------------------------

    def request_stop(self, *_: object) -> None:
        self._stop_requested = True

    def run(self) -> None:
        if self.router is None:
            self.bind()
        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, self.request_stop)
            except ValueError:  # not the main thread: the caller stops us with request_stop()
                pass
        try:
            if self._meet_the_mesh():
                if self.own_process:
                    become_subreaper()  # what a dying agent leaves behind is re-parented here, and ended (_sweep)
                logs = self.run_dir / "logs"
                self.on_event(f"node {self.name} listening on {self.address} (pid {os.getpid()}, logs in {logs})")
                self._serve()
        finally:
            self.enforcer.close()  # nothing stays stopped
            self._kill_everything()
            if self._stop_requested:
                self.leadership.forget_peers()
            self._publish_directory()
            try:
                self.gossip.leave()
            except Exception:  # leaving is a courtesy; peers find out anyway
                log.exception("could not announce leaving")
            self.gossip.close()
            self.router.close(0)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self.gossip.announced:
                self.on_event(f"node {self.name} stopped")
        if self.gossip.refused is not None:
            raise self.gossip.refused

    def _meet_the_mesh(self) -> bool:
        """Before anything else, gossip until a member has said whether a live member holds this
        node's name (or none answered within JOIN_WAIT_S), serving requests meanwhile. False if
        the node must not start (its name is taken) or was stopped."""
        while not self.gossip.announced:
            if self.gossip.refused is not None or self._stop_requested:
                return False
            try:
                got = recv_request(self.router, self.bad)
            except zmq.Again:
                got = None
            if got is not None:
                self._handle(*got)
            self._guarded("gossip", self.gossip.tick)
        return True

    def _serve(self) -> None:
        router = self.router
        next_housekeeping = 0.0
        next_tick = 0.0
        wait_ms = int(LOOP_S * 1000)
        bad = self.bad
        while True:
            try:
                got = recv_request(router, bad)
            except zmq.Again:
                got = None
            if got is not None:
                self._handle(*got)
                # Take what else is queued, within bounds, so a flood cannot outrun the loop and fill
                # libzmq's queues; the timers below still run at least every INTAKE_BURST_S.
                until = time.monotonic() + INTAKE_BURST_S
                for _ in range(INTAKE_BURST):
                    try:
                        got = recv_request(router, bad, zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    if got is not None:
                        self._handle(*got)
                    if time.monotonic() >= until:
                        break
            # Sleep until the next thing to do (an election timer, a waiting request, housekeeping),
            # at most HOUSEKEEPING_S: an idle node does not wake 100 times a second.
            wake = min(self.leadership.elector.wake_at(), next_housekeeping)
            if self._replies or self._intent_replies or (self.intents and self.intents.busy()):
                wake = 0.0
            ms = max(1, min(int(HOUSEKEEPING_S * 1000), int((wake - time.monotonic()) * 1000) + 1))
            if ms != wait_ms:
                wait_ms = ms
                router.setsockopt(zmq.RCVTIMEO, ms if ms > int(LOOP_S * 1000) else int(LOOP_S * 1000))
            if self._stop_deadline is None:
                self._guarded("election", self.leadership.tick)
                if self.resources is not None:
                    self._guarded("pools", lambda: self._deliver(self.resources.tick(time.monotonic())))
                self._guarded("intentions", lambda: (self.intents.tick(), self._intent_events()))
            now = time.monotonic()
            if now >= next_housekeeping:
                next_housekeeping = now + HOUSEKEEPING_S
                if self._stop_requested and self._stop_deadline is None:
                    self._begin_stop(now)
                self._reap(now)
                if self._stop_deadline is not None:
                    self._kill_overdue(now)
                    if not self._live():
                        return
                    if now >= self._stop_deadline:
                        return
                else:
                    self._guarded("kill switch", self._obey_kill_switch, now)
                    self._guarded("leader", self._follow_the_leader, now)
                    if now >= self._next_record:
                        self._next_record = now + 1.0
                        self._guarded("node record", self._publish_record)
                    self._start_due(now)
                    self._expire_embedded(now)
                    self._publish_directory()
                    self._guarded("gossip", self.gossip.tick)
                if self.on_tick is not None and now >= next_tick:
                    next_tick = now + 1.0
                    self.on_tick(self)

    def _guarded(self, what: str, step, *args) -> None:
        """Run one housekeeping step; a failure (say, a malformed value some peer gossiped that a
        check missed) is logged, at most every 10 s per step, and the node keeps serving."""
        try:
            step(*args)
        except Exception:
            self._log_failure(what, "step")

    def _log_failure(self, what: str, of: str) -> None:
        """Log the exception being handled, at most every 10 s per ``what``."""
        now = time.monotonic()
        if now - self._guard_logged.get(what, -1e9) >= 10.0:
            self._guard_logged[what] = now
            log.exception("node %s: %s %s failed; carrying on", self.name, what, of)

    def _from_peer(self, ident: bytes, env: list) -> None:
        """A gossip, election or intention message from another node. The machines ignore or refuse
        what they cannot read; whatever still fails is counted as a bad frame and logged (rate-limited):
        nothing a peer sends ends the node."""
        what = env[5][1:]
        try:
            if env[5] == GOSSIP_RECIPIENT:
                self.gossip.receive(env[4], env[6])
            elif env[5] == ELECTION_RECIPIENT:
                self.leadership.receive(env[4], env[6])
            else:
                self.intents.receive(env[4], env[6])
                self._intent_events()
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            self.bad.record(ident, f"bad {what} message: {exc}")
        except Exception as exc:
            self.bad.record(ident, f"{what} message failed: {type(exc).__name__}")
            self._log_failure(what, "message")

    # -- control requests ------------------------------------------------------------------

    def _handle(self, ident: bytes, frame: bytes) -> None:
        try:
            envelopes = wire.decode(frame, self.max_frame)
        except WireError as exc:
            answer = wire.refusal(frame, exc, next(self._ids), "$node") if len(frame) > wire.SMALL_FRAME else None
            if answer is None:
                self.bad.record(ident, exc, len(frame))
            else:  # a well-formed request whose body was refused: told why, counted, not shed for the size
                self.router.send_multipart((ident, answer))
                self.bad.record(ident, exc)
            return
        for env in envelopes:
            if env[1] == _EVENT and env[5] in _PEER_RECIPIENTS:
                self._from_peer(ident, env)
                continue
            if env[1] != _CONTROL or not isinstance(env[6], dict) or not isinstance(env[6].get("op"), str):
                self.bad.record(ident, "the node takes only CONTROL envelopes with an 'op'")
                continue
            body = env[6]
            handler = getattr(self, "_op_" + body["op"], None)
            try:
                if handler is None:
                    raise WireError(f"unknown op {body['op']!r:.40}")
                result = handler(body) if body["op"] not in _DEFERRING else handler(body, ident, env[2], env[4])
                if result is _DEFER:
                    continue
                answer = wire.encode(_REPLY, next(self._ids), env[2], "$node", env[4], result)
            except MeshError as exc:
                answer = wire.encode(_FAIL, next(self._ids), env[2], "$node", env[4], to_wire(exc))
            except (KeyError, TypeError, ValueError, OverflowError) as exc:  # int(inf) raises OverflowError
                err = WireError(f"bad {body['op']} request: {type(exc).__name__}: {exc}")
                answer = wire.encode(_FAIL, next(self._ids), env[2], "$node", env[4], to_wire(err))
            except Exception as exc:  # last resort: a request must never end the node
                log.exception("node %s: %s request failed", self.name, body["op"])
                err = WireError(f"{body['op']} failed on node {self.name}: {type(exc).__name__}: {exc}")
                answer = wire.encode(_FAIL, next(self._ids), env[2], "$node", env[4], to_wire(err))
            self.router.send_multipart((ident, answer))

    # -- pools and rate limits: the leader answers --------------------------------------------

    def _op_leader(self, body: dict) -> dict:
        lead = self.leadership.leader
        address = None
        if lead is not None:
            record = self.gossip.node.get(NODE_PREFIX + lead)
            address = record.get("address") if isinstance(record, dict) else None
        out = {"leader": lead, "term": self.leadership.term, "address": address}
        if lead is None:
            out["waiting"] = self.election_status().get("waiting")
        return out

    def _leading(self) -> Resources:
        if self.resources is None or not self.leadership.is_leader:
            lead = self.leadership.leader
            raise NotLeader(f"node {self.name} is not the leader" + (f" (the leader is {lead})" if lead else
                                                                     " and no leader is elected yet"))
        return self.resources

    def _op_acquire(self, body: dict, ident: bytes, corr: int, sender: str) -> object:
        res = self._leading()
        request_id, holder, name = _str(body, "request_id"), _str(body, "holder"), _str(body, "name")
        n, timeout = body.get("n", 1), body.get("timeout", 10.0)
        if type(timeout) not in (int, float) or not timeout >= 0:
            raise WireError("field 'timeout' must be a number of seconds")
        if request_id in self._replies:
            raise WireError(f"request {request_id!r} is already waiting")
        self._replies[request_id] = (ident, corr, sender)
        now = time.monotonic()
        self._deliver(res.acquire(request_id, holder, name, n, now + min(float(timeout), 86400.0), now))
        return _DEFER

    def _op_renew(self, body: dict) -> dict:
        res = self._leading()
        lease_id, name = _str(body, "lease_id"), _str(body, "name")
        effects = res.renew(lease_id, _str(body, "holder"), name, body.get("n"), time.monotonic())
        self._deliver(effects)
        for e in effects:
            if type(e) is Refused and e.request_id == lease_id:
                raise ResourceError(e.reason)
        return {"renewed": lease_id, "lease_ttl": res.lease_ttl(name)}

    def _op_release(self, body: dict) -> dict:
        res = self._leading()
        self._deliver(res.release(_str(body, "lease_id"), _str(body, "name"), time.monotonic()))
        return {"released": True}

    def _deliver(self, effects: list) -> None:
        """Answer the waiting acquire requests the coordinator decided."""
        for e in effects:
            if type(e) is Granted:
                waiter = self._replies.pop(e.request_id, None)
                if waiter is None:
                    continue
                ident, corr, sender = waiter
                body = {"request_id": e.request_id, "name": e.name, "n": e.n, "lease_id": e.lease_id,
                        "waited": e.waited, "lease_ttl": self.resources.lease_ttl(e.name) if e.lease_id else None}
                self.router.send_multipart((ident, wire.encode(_REPLY, next(self._ids), corr, "$node", sender, body)))
            elif type(e) is Refused:
                waiter = self._replies.pop(e.request_id, None)
                if waiter is None:
                    continue
                ident, corr, sender = waiter
                err = AcquireTimeout(e.reason) if e.reason.startswith("timed out") else ResourceError(e.reason)
                self.router.send_multipart((ident, wire.encode(_FAIL, next(self._ids), corr, "$node", sender,
                                                               to_wire(err))))

    def _keep_resources(self, records: dict[str, dict]) -> None:
        """The leader runs the coordinators of its term; anyone else runs none."""
        lead = self.leadership
        if not lead.is_leader or self._stop_deadline is not None:
            if self.resources is not None:
                self._drop_resources("leadership moved on")
            return
        declared, clashes = declared_resources(records)
        for why in clashes:
            if why not in self._resource_clashes:
                self._resource_clashes.add(why)
                self.on_event(why)
        now = time.monotonic()
        if self.resources is None or self._resources_term != lead.term:
            if self.resources is not None:
                self._drop_resources("a new term")
            recovering = lead.term > 1
            self.resources = Resources(f"{self.name}.{lead.term}", declared, recovering, now)
            self._resources_term = lead.term
            if declared:
                self.on_event(f"keeping pools and limits {', '.join(sorted(declared))}"
                              + (" (granting nothing new for one lease time: leases may still be held)"
                                 if recovering else ""))
        else:
            self.resources.update(declared, now)

    def _drop_resources(self, why: str) -> None:
        for ident, corr, sender in list(self._replies.values()):
            err = NotLeader(f"node {self.name} stopped leading ({why}); ask the new leader")
            self.router.send_multipart((ident, wire.encode(_FAIL, next(self._ids), corr, "$node", sender, to_wire(err))))
        self._replies.clear()
        self.resources = None

    # -- intentions ---------------------------------------------------------------------------

    def _send_intent(self, to: str, message: dict) -> None:
        address = self.gossip._address_of(to)
        if address:
            self.gossip._send_to(address, message, recipient=INTENT_RECIPIENT)

    def _op_intent_propose(self, body: dict, ident: bytes, corr: int, sender: str) -> object:
        # Everything is checked before anything is written: a refused proposal leaves nothing in
        # the shared state (not even a tombstone), and a listing is small whatever was sent.
        iid = body.get("id")
        if isinstance(iid, str) and iid in self._intent_replies:
            raise WireError(f"intention {iid[:200]!r} is already being decided")
        priority, window, hold = body.get("priority", 0), body.get("window", 0.2), body.get("hold", 30.0)
        proposer = body.get("proposer")
        try:
            claims = self.intents.check(iid, body.get("claims"), priority, window, hold)
            if not isinstance(proposer, str):
                raise ValueError(f"proposer must be an actor name, not a {type(proposer).__name__}")
            action = _short(body.get("action"))
        except (ValueError, TypeError, RecursionError) as exc:  # json.dumps: bytes keys, nesting
            why = exc if isinstance(exc, ValueError) else f"action cannot be shown as JSON ({type(exc).__name__})"
            raise WireError(f"bad intention: {why}") from None
        listing = {"id": iid, "action": action, "claims": [c[:LISTED_CHARS] for c in claims[:LISTED_CLAIMS]],
                   "claims_count": len(claims), "proposer": proposer[:200], "node": self.name, "priority": priority,
                   "state": "pending", "since": time.time()}
        try:  # listed first: a listing the shared state refuses refuses the proposal, nothing is held
            self.gossip.write(INTENTS_PREFIX + iid, listing, system=True)
        except ValueError as exc:
            raise WireError(f"bad intention: {exc}") from None
        try:
            self.intents.propose(iid, claims, priority, window, hold)
        except (ValueError, NotLeader) as exc:  # checked above: not expected
            self.gossip.delete(INTENTS_PREFIX + iid, system=True)
            if isinstance(exc, NotLeader):
                raise
            raise WireError(f"bad intention: {exc}") from None
        self._intent_replies[iid] = (ident, corr, sender, time.monotonic())
        self._intent_events()
        return _DEFER

    def _op_intent_done(self, body: dict) -> dict:
        iid = _str(body, "id")
        self.intents.done(iid)
        self._intent_events()
        self.gossip.delete(INTENTS_PREFIX + iid, system=True)
        return {"done": iid}

    def _op_intent_listeners(self, body: dict) -> dict:
        actors = {n for n, i in self.instances.items() if i.hears_intentions and i.state == "running"}
        for key, entry in self.gossip.node.items(AGENTS_PREFIX).items():
            if isinstance(entry, dict) and entry.get("intentions") and entry.get("state") == "running":
                if self.gossip.node.state_of(entry.get("node")) in ("alive", "suspect") or entry.get("node") == self.name:
                    actors.add(key[len(AGENTS_PREFIX):])
        return {"actors": sorted(actors)}

    def _intent_events(self) -> None:
        events, self.intents.events = self.intents.events, []
        for ev in events:
            iid = ev.data.get("id")
            if ev.name == "decided":
                outcome = ev.data.get("outcome")
                waiter = self._intent_replies.pop(iid, None)
                if waiter is not None:
                    ident, corr, sender, _ = waiter
                    until = ev.data.get("until")
                    body = {"id": iid, "outcome": outcome, "reasons": ev.data.get("reasons", []),
                            "holders": ev.data.get("holders", []),
                            "until_in": max(0.0, until - time.monotonic()) if isinstance(until, (int, float)) else None}
                    self.router.send_multipart((ident, wire.encode(_REPLY, next(self._ids), corr, "$node", sender, body)))
                entry = self.gossip.node.get(INTENTS_PREFIX + iid)
                if outcome == "approved" and isinstance(entry, dict):
                    self.gossip.write(INTENTS_PREFIX + iid, {**entry, "state": "held"}, system=True)
                else:
                    self.gossip.delete(INTENTS_PREFIX + iid, system=True)
            elif ev.name == "expired":
                self.gossip.delete(INTENTS_PREFIX + iid, system=True)

    def _op_intent_escalate(self, body: dict, ident: bytes, corr: int, sender: str) -> object:
        if not self.leadership.is_leader:
            raise NotLeader(f"node {self.name} is not the leader")
        iid = _str(body, "id")[:200]
        if iid in self._escalations:
            raise WireError(f"escalation {iid!r} is already waiting")
        if len(self._escalations) >= MAX_ESCALATIONS:
            raise ResourceError(f"{MAX_ESCALATIONS} escalations wait for a person already (the most the leader"
                                f" {self.name} keeps): decide some (mesh intents, mesh approve/deny) first")
        raw = body.get("objections") if isinstance(body.get("objections"), list) else []
        objections = [{"reason": str(o.get("reason", ""))[:500], "weight": _weight(o.get("weight", 1.0)),
                       "kind": str(o.get("kind"))[:20], "by": str(o.get("by", ""))[:200]}
                      for o in raw[:50] if isinstance(o, dict)]
        strategy = sum(float(o["weight"]) for o in objections if o["kind"] == "strategy"
                       and isinstance(o["weight"], (int, float)) and math.isfinite(o["weight"]))
        evidence = body.get("evidence", 1.0)
        evidence = float(evidence) if isinstance(evidence, (int, float)) else 0.0
        if self.spec.escalate == "leader":
            approve = evidence >= strategy
            why = (f"the leader {self.name} decided: evidence {evidence:g} "
                   f"{'>=' if approve else '<'} strategy objections {strategy:g}")
            self.on_event(f"escalation {iid}: {'approved' if approve else 'denied'} ({why})")
            return {"approve": approve, "by": f"leader {self.name}", "why": why}
        timeout = body.get("timeout", self.spec.escalation_timeout)
        if not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0:
            timeout = self.spec.escalation_timeout
        timeout = min(float(timeout), self.spec.escalation_timeout)
        claims = body.get("claims") if isinstance(body.get("claims"), list) else []
        self.gossip.write(ESCALATIONS_PREFIX + iid, {"id": iid, "action": _short(body.get("action")),
                                                     "claims": [str(c)[:LISTED_CHARS] for c in claims[:LISTED_CLAIMS]],
                                                     "proposer": str(body.get("proposer"))[:200],
                                                     "objections": objections, "evidence": evidence, "state": "pending",
                                                     "leader": self.name, "since": time.time()}, system=True)
        self._escalations[iid] = (ident, corr, sender, time.monotonic() + timeout)
        self.on_event(f"escalation {iid} waits for a person: mesh approve {iid} / mesh deny {iid}")
        return _DEFER

    def _op_intent_decide(self, body: dict) -> dict:
        iid, approve = _str(body, "id"), body.get("approve") is True
        waiter = self._escalations.pop(iid, None)
        if waiter is None:
            if not self.leadership.is_leader:
                raise NotLeader(f"node {self.name} is not the leader")
            raise UnknownEscalation(f"no escalation {iid!r} is waiting (decided already, timed out, or never escalated);"
                                    " `mesh intents` lists those that wait")
        by = str(body.get("by") or "a person")[:200]
        self._answer_escalation(iid, waiter, approve, f"human ({by})", f"{'approved' if approve else 'denied'} by {by}")
        return {"id": iid, "approved": approve}

    def _answer_escalation(self, iid: str, waiter: tuple, approve: bool, by: str, why: str) -> None:
        ident, corr, sender, _ = waiter
        self.router.send_multipart((ident, wire.encode(_REPLY, next(self._ids), corr, "$node", sender,
                                                       {"approve": approve, "by": by, "why": why})))
        self.gossip.delete(ESCALATIONS_PREFIX + iid, system=True)
        self.on_event(f"escalation {iid}: {why}")

    def _expire_escalations(self) -> None:
        now = time.monotonic()
        for iid, waiter in list(self._escalations.items()):
            if now >= waiter[3] or not self.leadership.is_leader:
                del self._escalations[iid]
                why = "nobody decided in time: denied" if now >= waiter[3] else "the leader changed: denied"
                self._answer_escalation(iid, waiter, False, f"leader {self.name}", why)

    def _op_intents(self, body: dict) -> dict:
        """Every pending and held intention, and every escalation waiting for a person, mesh-wide."""
        def listed(prefix: str) -> list:
            found = [e for e in self.gossip.node.items(prefix).values() if isinstance(e, dict)]
            return sorted(found, key=lambda e: str(e.get("since")))

        return {"intents": listed(INTENTS_PREFIX), "escalations": listed(ESCALATIONS_PREFIX)}

    # -- topics ---------------------------------------------------------------------------------

    def _op_subscribe(self, body: dict) -> dict:
        topic, actor = check_topic_field(body), _str(body, "actor")
        self.gossip.write(f"{SUBS_PREFIX}{topic}/{actor}", {"node": self.name}, system=True)
        return {"subscribed": topic}

    def _op_unsubscribe(self, body: dict) -> dict:
        topic, actor = check_topic_field(body), _str(body, "actor")
        self.gossip.delete(f"{SUBS_PREFIX}{topic}/{actor}", system=True)
        return {"unsubscribed": topic}

    def _op_subscribers(self, body: dict) -> dict:
        prefix = f"{SUBS_PREFIX}{check_topic_field(body)}/"
        return {"actors": sorted(k[len(prefix):] for k in self.gossip.node.items(prefix))}

    # -- the kill switch ------------------------------------------------------------------------

    def _op_kill(self, body: dict) -> dict:
        """Pull (or, with release, let go of) the kill switch: every node stops every agent now."""
        release = bool(body.get("release"))
        by = str(body.get("by") or "mesh kill")[:200]
        entry = {"pulled": not release, "at": time.time(), "by": f"{by} via node {self.name}",
                 "id": f"{self.name}-{time.time_ns()}"}
        self.gossip.write(KILL_KEY, entry, system=True)
        self._obey_kill_switch(time.monotonic())
        return {"pulled": entry["pulled"], "at": entry["at"], "by": entry["by"]}

    def _kill_switch(self) -> dict | None:
        entry = self.gossip.node.get(KILL_KEY)
        return entry if isinstance(entry, dict) and entry.get("pulled") is True else None

    def _obey_kill_switch(self, now: float) -> None:
        entry = self.gossip.node.get(KILL_KEY)
        if not isinstance(entry, dict) or entry.get("id") == self._kill_seen:
            return
        self._kill_seen = entry.get("id")
        if entry.get("pulled") is True:
            self.on_event(f"KILL SWITCH pulled by {entry.get('by')}: stopping every agent now")
            self._queue = []
            self._wave = []
            for inst in list(self.instances.values()):
                if inst.embedded:
                    continue
                if inst.popen is None:
                    if inst.state in ("starting", "restarting"):
                        inst.state, inst.reason = "stopped", f"kill switch pulled by {entry.get('by')}"
                    continue
                self.enforcer.untrack(inst.name)
                inst.retiring = "kill switch"
                _kill_group(inst.popen.pid)  # now: no grace
        else:
            self.on_event(f"kill switch released by {entry.get('by')}: agents may run again")
            for inst in list(self.instances.values()):
                if inst.placed_by and inst.popen is None and inst.state == "stopped":
                    self._forget(inst)  # the leader's assignment places it again

    def _op_ping(self, body: dict) -> dict:
        return {"node": self.name, "pid": os.getpid(), "address": self.address, "max_frame": self.max_frame}

    def _op_register(self, body: dict) -> dict:
        name, endpoint, pid = _str(body, "name"), _str(body, "endpoint"), _int(body, "pid")
        inst = self.instances.get(name)
        now = time.monotonic()
        if body.get("supervised"):
            if inst is None or inst.embedded or inst.pid != pid:
                raise WireError(f"no agent {name!r} with pid {pid} was started by node {self.name}")
        else:
            if self._local_group(name) and self._local_group(name) != [name]:
                raise NameConflict(f"name {name!r} is taken by a replica group of node {self.name}: serve under another name")
            if inst is not None and not inst.embedded:
                raise NameConflict(f"name {name!r} is taken by an agent of node {self.name}: serve under another name")
            if inst is not None and inst.state == "running" and inst.pid != pid and now - inst.last_heard < EMBEDDED_TTL_S:
                raise NameConflict(f"name {name!r} is taken by a live actor in pid {inst.pid}: serve under another name, "
                                   "or stop that one first")
            if inst is None:
                inst = self.instances[name] = Instance(name=name, spec=None, group=name)
            inst.pid = pid
        inst.incarnation += 1
        inst.endpoint = endpoint
        limit = body.get("max_frame")
        inst.max_frame = limit if type(limit) is int and limit > 0 else None
        inst.hears_intentions = body.get("intentions") is True
        inst.state = "running"
        inst.last_heard = now
        inst.messages = 0
        self.on_event(f"{name} running (pid {pid}, incarnation {inst.incarnation}{', embedded' if inst.embedded else ''})")
        return {"incarnation": inst.incarnation, "node": self.name}

    def _op_unregister(self, body: dict) -> dict:
        name = _str(body, "name")
        inst = self.instances.get(name)
        if inst is not None and inst.endpoint == body.get("endpoint"):
            inst.endpoint = None
            if inst.embedded:
                del self.instances[name]
                self.on_event(f"{name} left (embedded)")
        return {}

    def _op_heartbeat(self, body: dict) -> dict:
        inst = self.instances.get(_str(body, "name"))
        if inst is None or inst.endpoint != body.get("endpoint"):
            return {"known": False}
        inst.last_heard = time.monotonic()
        inst.messages = _int(body, "messages")
        inst.bad_frames = int(body.get("bad_frames") or 0)
        return {"known": True}

    def _op_resolve(self, body: dict) -> dict:
        name = _str(body, "name")
        inst = self.instances.get(name)
        group = self._local_group(name) if inst is None else []
        if group:
            running = [self.instances[n] for n in group if self.instances[n].state == "running"]
            inst = random.choice(running) if running else None
        if inst is None:
            replicas = [r for r, e in self._latest_assignment().items() if e.get("group") == name and r != name]
            if replicas:  # a replica group placed on other nodes: any running replica will do
                found = [self._remote_agent(r) for r in replicas]
                found = [(r, e) for r, e in zip(replicas, found, strict=True) if e and isinstance(e.get("endpoint"), str)]
                if found:
                    r, e = random.choice(found)
                    return {"endpoint": e["endpoint"], "incarnation": e.get("incarnation", 0), "state": "running",
                            "name": r, "node": e.get("node"), "max_frame": e.get("max_frame") or self.spec.max_message}
                if group:
                    return {"state": self.instances[group[0]].state}
                return {"state": "starting"}
            if group:
                inst = self.instances[group[0]]
        if inst is None:
            remote = self._remote_agent(name)
            if remote is not None and isinstance(remote.get("endpoint"), str):
                return {"endpoint": remote["endpoint"], "incarnation": remote.get("incarnation", 0), "state": "running",
                        "name": name, "node": remote.get("node"), "max_frame": remote.get("max_frame") or self.spec.max_message}
            if remote is not None and remote.get("state") in ("starting", "restarting", "running"):
                # "running" with no endpoint: it unregistered (stopping, or moving) and its node has not
                # reaped it yet. The asker waits for what comes next, as for a restart.
                return {"state": remote["state"], "node": remote.get("node")}
            if remote is not None:
                why = f": {remote['reason']}" if remote.get("reason") else ""
                raise ActorNotFound(f"actor {name!r} on node {remote.get('node')} is {remote.get('state')}{why}")
            waiting = self._placement_state(name)
            if waiting is not None:
                return {"state": waiting}
            raise ActorNotFound(f"no actor named {name!r} in the mesh (asked node {self.name})")
        if inst.state == "running" and inst.endpoint:
            return {"endpoint": inst.endpoint, "incarnation": inst.incarnation, "state": "running", "name": inst.name,
                    "max_frame": inst.max_frame or self.spec.max_message}
        if inst.state in ("failed", "stopped"):
            raise ActorNotFound(f"actor {name!r} is {inst.state}{': ' + inst.reason if inst.reason else ''}")
        return {"state": inst.state}

    def _op_status(self, body: dict) -> dict:
        return self.status()

    def _op_down(self, body: dict) -> dict:
        self.on_event("stop requested by `mesh down`")
        self._stop_requested = True
        return {"stopping": True, "pid": os.getpid()}

    def _op_logs(self, body: dict) -> dict:
        name = _str(body, "name")
        inst = self.instances.get(name)
        if inst is None:
            raise ActorNotFound(f"no actor named {name!r} on node {self.name}")
        if inst.log_path is None:
            raise WireError(f"{name!r} is embedded in pid {inst.pid}: its output stays in that process")
        offset = max(0, int(body.get("offset") or 0))
        try:
            with open(inst.log_path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                if body.get("tail") is not None and offset == 0:
                    offset = max(0, size - int(body["tail"]))
                f.seek(min(offset, size))
                data = f.read(LOG_CHUNK)
        except FileNotFoundError:
            return {"data": "", "offset": 0, "size": 0}
        return {"data": data.decode("utf-8", "replace"), "offset": offset + len(data), "size": size}

    # -- status ---------------------------------------------------------------------------

    def _remote_agent(self, name: str) -> dict | None:
        entry = self.gossip.node.get(AGENTS_PREFIX + name)
        if isinstance(entry, dict) and entry.get("node") != self.name:
            if self.gossip.node.state_of(entry.get("node")) in ("alive", "suspect"):
                return entry
        return None

    def _publish_directory(self) -> None:
        """Keep ``$agents/NAME`` in the shared state in step with what runs here."""
        want = {}
        if self._stop_deadline is None:
            for inst in self.instances.values():
                if inst.state == "running" and inst.endpoint:
                    want[inst.name] = {"node": self.name, "endpoint": inst.endpoint, "incarnation": inst.incarnation,
                                       "pid": inst.pid, "max_frame": inst.max_frame or self.spec.max_message,
                                       "state": "running", "budget": _budget_of(inst.spec),
                                       "intentions": inst.hears_intentions}
                elif not inst.embedded:
                    # Not reachable right now, but ours: senders elsewhere wait for a restart,
                    # and learn why when it has failed.
                    want[inst.name] = {"node": self.name, "endpoint": None, "state": inst.state,
                                       "reason": inst.reason}
        for name, entry in want.items():
            if self._published.get(name) != entry:
                self.gossip.write(AGENTS_PREFIX + name, entry, system=True)
        for name in list(self._published):
            if name not in want:
                self.gossip.delete(AGENTS_PREFIX + name, system=True)
        self._published = want

    def _on_gossip_event(self, event) -> None:
        if event.name == "name_taken" and event.data.get("announced"):
            # Two meshes met and an older live member has this node's name: this one yields.
            self.on_event(f"STOPPING: {self.gossip.refused}")
            self.request_stop()
            return
        if event.name == "member" and self.gossip.announced:  # a joining node says nothing yet
            d = event.data
            if d["name"] != self.name:
                self.on_event(f"member {d['name']} ({d['id']}) is {d['state']}")

    def members(self) -> list[dict]:
        now = time.time()
        latest = self._latest_states()
        return [
            {"name": m["name"], "address": m["address"], "state": m["state"], "incarnation": m["incarnation"],
             "last_heard_s": round(max(0.0, now - m["last_heard"]), 3)}
            for m in sorted(latest.values(), key=lambda m: m["name"])
        ]

    def status(self) -> dict:
        agents = []
        for inst in self.instances.values():
            entry = inst.as_status(self.name)
            entry.update({"cpu": None, "memory_bytes": None, "throttled_s": 0.0, "throttled": False})
            entry.update(self.enforcer.info(inst.name) if self.enforcer else {})
            agents.append(entry)
        local = {a["name"] for a in agents}
        for key, entry in sorted(self.gossip.node.items(AGENTS_PREFIX).items()):
            name = key[len(AGENTS_PREFIX):]
            if name in local or not isinstance(entry, dict) or entry.get("node") == self.name:
                continue
            if self.gossip.node.state_of(entry.get("node")) not in ("alive", "suspect"):
                continue  # its node is gone: the entry goes with that node's incarnation
            agents.append({"name": name, "node": entry.get("node"), "pid": entry.get("pid"),
                           "state": entry.get("state", "running"),
                           "restarts": None, "messages": None, "incarnation": entry.get("incarnation", 0),
                           "endpoint": entry.get("endpoint"), "embedded": False, "group": name,
                           "reason": entry.get("reason", ""),
                           "bad_frames": None, "remote": True, "budget": entry.get("budget"), "budget_kills": None,
                           "cpu": None, "memory_bytes": None, "throttled_s": None, "throttled": None})
        # What the leader assigned but no node runs yet, and what waits for a leader.
        listed = {a["name"] for a in agents}
        latest = self._latest_assignment()
        found = self._assignments()
        unplaced = found[max(found)].get("unplaced", {}) if found else {}
        unplaced = unplaced if isinstance(unplaced, dict) else {}
        for name, entry in sorted(latest.items()):
            if name in listed:
                continue
            listed.add(name)
            node = entry.get("node")
            if node:
                state, reason = "assigned", f"assigned to {node}"
            elif entry.get("draining"):
                state, reason = "draining", f"stopping on {entry['draining']} before it moves"
            else:
                state, reason = "unplaced", str(unplaced.get(name, "placed nowhere"))
            agents.append(_placeholder(name, node, state, reason, entry.get("group") or name))
        election = self.election_status()
        for a in self.spec.agents:
            for name in a.instance_names():
                if name not in listed:
                    agents.append(_placeholder(name, None, "waiting", election.get("waiting", "waiting for the leader"), a.name))
        return {
            "node": {
                "name": self.name,
                "address": self.address,
                "pid": os.getpid(),
                "uptime_s": round(time.time() - self.started, 3),
                "stopping": self._stop_requested,
                "bad_frames": self.bad.total,
            },
            "leader": self.leadership.leader,
            "term": self.leadership.term,
            "kill_switch": self._kill_switch(),
            **self._op_intents({}),
            "resources": self.resources.snapshot(time.monotonic()) if self.resources is not None else None,
            "election": election,
            "agents": agents,
            "members": self.members(),
        }

    # -- shared state --------------------------------------------------------------------------

    def _op_state_get(self, body: dict) -> dict:
        key = _str(body, "key")
        entry = self.gossip.node.view.get(key)
        if entry is None or entry.tombstone:
            return {"found": False}
        return {"found": True, "value": entry.value}

    def _op_state_set(self, body: dict) -> dict:
        if "value" not in body:
            raise WireError("field 'value' is missing")
        self.gossip.write(_writable_key(body), body["value"])
        return {"ok": True}

    def _op_state_delete(self, body: dict) -> dict:
        self.gossip.delete(_writable_key(body))
        return {"ok": True}

    def _op_state_items(self, body: dict) -> dict:
        prefix = body.get("prefix") or ""
        if not isinstance(prefix, str):
            raise WireError("field 'prefix' must be a string")
        return {"items": self.gossip.node.items(prefix)}

    # -- the leader and its decisions --------------------------------------------------------

    def _local_group(self, name: str) -> list[str]:
        """The replicas of group ``name`` that this node runs (empty for a plain name)."""
        return sorted(n for n, i in self.instances.items() if i.group == name and n != name and not i.embedded)

    def _latest_states(self) -> dict[str, dict]:
        """Each known node's current incarnation as gossip sees it (a live one before a newer
        dead or departed one of the same name): state and wall-clock last_heard."""
        return {m["name"]: m for m in self.gossip.node.current_members()}

    def _assignments(self) -> dict[int, dict]:
        out = {}
        for key, value in self.gossip.node.items(ASSIGN_PREFIX).items():
            term = key[len(ASSIGN_PREFIX):]
            if term.isdigit() and isinstance(value, dict) and isinstance(value.get("replicas"), dict):
                out[int(term)] = value
        return out

    def _latest_assignment(self) -> dict[str, dict]:
        """The replicas of the newest assignment in view (for status and name lookups)."""
        found = self._assignments()
        if not found:
            return {}
        return {r: e for r, e in found[max(found)]["replicas"].items() if isinstance(e, dict)}

    def _accepted(self) -> dict | None:
        """The assignment this node may act on now, or None.

        Fencing: only the current leader's assignment of the current term, and only once
        it is at least as new as the leader's last heartbeat said (``seq``), so a node
        coming back from a partition never acts on what it saw before."""
        lead = self.leadership
        if lead.leader is None:
            return None
        entry = self.gossip.node.get(f"{ASSIGN_PREFIX}{lead.term}")
        if not isinstance(entry, dict) or entry.get("term") != lead.term or entry.get("leader") != lead.leader:
            return None
        seq = entry.get("seq")
        need = lead.elector.seq if lead.is_leader else lead.elector.leader_seq
        if type(seq) is not int or seq < need or not isinstance(entry.get("replicas"), dict):
            return None
        return entry

    def _refuse_stale(self) -> None:
        """Log and count each decision first seen when its term was already over (fencing)."""
        term = self.leadership.term
        if self.leadership.leader is not None and self._ever_led_by is None:
            self._ever_led_by = time.monotonic()
        # Decisions already in the view while a (re)started node catches up are history, not refusals.
        settled = self._ever_led_by is not None and time.monotonic() - self._ever_led_by > 1.0
        found = self._assignments()
        if len(self._stale_seen) > 4 * len(found) + 64:  # forget what is no longer in view
            self._stale_seen = {m for m in self._stale_seen if m[0] in found}
        for t, entry in found.items():
            mark = (t, str(entry.get("leader")), str(entry.get("seq")))
            if mark in self._stale_seen:
                continue
            self._stale_seen.add(mark)
            if t < term and settled:
                self.stale_decisions += 1
                self.on_event(f"refused a decision of term {t} (seq {entry.get('seq')}) from {entry.get('leader')}:"
                              f" term {term} is current")

    def _quorum_visible(self, states: dict[str, dict]) -> bool:
        """False when the voters this node cannot hear could form a majority without it."""
        voters = self.leadership.elector.voters
        if not voters:
            return True
        now = time.time()
        seen = sum(1 for v in voters if v == self.name or (
            v in states and states[v]["state"] in ("alive", "suspect") and now - states[v]["last_heard"] < LEASE_S))
        return len(voters) - seen < len(voters) // 2 + 1

    def _follow_the_leader(self, now: float) -> None:
        states = self._latest_states()
        records = {}
        for key, value in self.gossip.node.items(NODE_PREFIX).items():
            if isinstance(value, dict):
                records[key[len(NODE_PREFIX):]] = value
        self.leadership.learn(records, {n: m["state"] for n, m in states.items()})
        if self.leadership.is_leader:
            self._conduct(states, records)
        self._keep_resources(records)
        self.intents.set_voters(self.leadership.elector.voters)
        self._expire_escalations()
        self._refuse_stale()
        visible = self._quorum_visible(states)
        if not visible:
            if not self.fenced:
                self.fenced = True
                if any(i.placed_by and i.movable for i in self.instances.values()):
                    self.on_event(f"lease lost: cannot hear enough voters ({', '.join(self.leadership.elector.voters)});"
                                  " stopping the agents the leader could place elsewhere")
            for inst in list(self.instances.values()):
                if inst.placed_by and inst.movable:
                    self._retire(inst, "lease lost (this node cannot hear a majority of voters)", now, FENCE_GRACE_S)
            return
        if self.fenced:
            self.fenced = False
            if self._ever_led_by is not None:
                self.on_event("lease regained: following the leader's assignment again")
        accepted = self._accepted()
        if accepted is None or self._kill_switch() is not None:
            return
        stamp = f"{accepted['leader']}@{accepted['term']}"
        mine = {r: e for r, e in accepted["replicas"].items() if isinstance(e, dict) and e.get("node") == self.name}
        for inst in list(self.instances.values()):
            if inst.placed_by and inst.name not in mine:
                elsewhere = accepted["replicas"].get(inst.name, {})
                where = elsewhere.get("node") if isinstance(elsewhere, dict) else None
                why = f"moved to {where}" if where else "taken off this node"
                self._retire(inst, f"{why} by {accepted['leader']} (term {accepted['term']})", now, None)
        for replica, entry in sorted(mine.items()):
            inst = self.instances.get(replica)
            if inst is not None:
                if inst.placed_by:
                    inst.placed_by = stamp
                continue
            self._place(replica, entry, stamp)

    def _place(self, replica: str, entry: dict, stamp: str) -> None:
        try:
            agent, path, cwd = agent_from_wire(entry.get("spec"), f"<agent {replica} from {stamp}>")
        except MeshError as exc:
            if self._spec_problems.get(replica) != str(exc):
                self._spec_problems[replica] = str(exc)
                self.on_event(f"cannot run {replica}: {exc}")
            return
        policy = RestartPolicy(agent.restart, agent.max_restarts if agent.max_restarts is not None
                               else DEFAULT_MAX_RESTARTS[agent.restart], agent.restart_window, agent.backoff,
                               agent.backoff_max)
        home = entry.get("home")
        self.instances[replica] = Instance(
            name=replica, spec=agent, group=str(entry.get("group") or agent.name), tracker=RestartTracker(policy),
            log_path=self.run_dir / "logs" / f"{replica}.log", placed_by=stamp,
            movable=not (agent.node == self.name or (agent.placement == "local" and home == self.name)),
            import_path=path, cwd=cwd)
        self._queue.append(replica)
        self.on_event(f"{replica} placed here by {stamp.replace('@', ' (term ')})")

    def _retire(self, inst: Instance, why: str, now: float, grace: float | None) -> None:
        """Stop an agent for good on this node: it runs elsewhere now, or may soon."""
        if inst.retiring:
            return
        inst.retiring = why
        self.on_event(f"{inst.name} stopping: {why}")
        if inst.name in self._queue:
            self._queue.remove(inst.name)
        if inst.popen is None:
            self._forget(inst)
            return
        self.enforcer.untrack(inst.name)  # resumed if throttled, so it can stop
        _stop_term(inst)
        inst.term_sent_at = now
        if grace is not None:
            inst.stop_grace = grace

    def _forget(self, inst: Instance) -> None:
        self.instances.pop(inst.name, None)
        if inst.name in self._wave:
            self._wave.remove(inst.name)

    def _conduct(self, states: dict[str, dict], records: dict[str, dict]) -> None:
        """The leader's part: place every wanted agent, publish the assignment with its term."""
        lead = self.leadership
        now = time.time()
        state_of = {n: m["state"] for n, m in states.items()}
        usable = {n for n, m in states.items() if m["state"] in ("alive", "suspect") and now - m["last_heard"] < REPLACE_AFTER_S
                  and n in records and not records[n].get("stopping")}
        if self._stop_deadline is None:
            usable.add(self.name)
        else:
            usable.discard(self.name)
        specs = {n: [a for a in r.get("agents", []) if isinstance(a, dict) and isinstance(a.get("name"), str)]
                 for n, r in records.items() if n in state_of and isinstance(r.get("agents", []), list)}
        mine = self.gossip.node.get(f"{ASSIGN_PREFIX}{lead.term}")
        if isinstance(mine, dict) and mine.get("leader") == self.name and isinstance(mine.get("replicas"), dict):
            previous = mine["replicas"]
        else:
            previous = self._latest_assignment()
        running = {}
        for key, entry in self.gossip.node.items(AGENTS_PREFIX).items():
            if isinstance(entry, dict) and entry.get("state") in ("running", "starting", "restarting") \
                    and isinstance(entry.get("node"), str):
                node = entry.get("node")
                if node == self.name or state_of.get(node) in ("alive", "suspect"):
                    running[key[len(AGENTS_PREFIX):]] = node
        try:
            supply = {}
            for n, r in records.items():
                cap = r.get("capacity")
                if isinstance(cap, dict) and isinstance(cap.get("cpu"), (int, float)) and isinstance(cap.get("memory"), int):
                    supply[n] = (float(cap["cpu"]), cap["memory"])
            decision = conduct(specs, state_of, usable, previous, running, supply)
        except (KeyError, TypeError, ValueError) as exc:  # a malformed record from some node
            log.warning("cannot place agents: %s", exc)
            return
        body = {"replicas": decision["replicas"], "unplaced": decision["unplaced"], "conflicts": decision["conflicts"]}
        if body == self._written_assignment and isinstance(mine, dict) and mine.get("leader") == self.name:
            return
        for why in decision["conflicts"]:
            if not self._written_assignment or why not in self._written_assignment.get("conflicts", []):
                self.on_event(why)
        self._written_assignment = body
        seq = lead.elector.seq + 1
        self.decisions_issued += 1
        self.last_decision = {"term": lead.term, "seq": seq}
        self.gossip.write(f"{ASSIGN_PREFIX}{lead.term}", {"term": lead.term, "leader": self.name, "seq": seq, **body},
                          system=True)
        lead.elector.decided()  # the next heartbeats say: act on seq or newer
        for t in self._assignments():
            if t < lead.term:
                self.gossip.delete(f"{ASSIGN_PREFIX}{t}", system=True)

    def _placement_state(self, name: str) -> str | None:
        """For a name this node does not run: waiting / assigned / unplaced, or None if unknown."""
        latest = self._latest_assignment()
        if name in latest:
            return "assigned" if latest[name].get("node") else "waiting"
        for a in self.spec.agents:
            if name == a.name or name in a.instance_names():
                return "waiting"
        return None

    def election_status(self) -> dict:
        lead = self.leadership
        states = self._latest_states()
        voters = lead.elector.voters
        now = time.time()
        heard = [v for v in voters if v == self.name or (
            v in states and states[v]["state"] in ("alive", "suspect") and now - states[v]["last_heard"] < LEASE_S)]
        out = {"role": lead.elector.role if lead.elector.voter else "observer", "voter": lead.elector.voter,
               "voters": voters, "voters_heard": heard, "quorum": len(voters) // 2 + 1 if voters else 0,
               "leader_since": lead.leader_since if lead.is_leader else None, "candidacies": lead.candidacies,
               "terms_led": lead.terms_led, "stale_decisions": self.stale_decisions, "fenced": self.fenced,
               "decisions_issued": self.decisions_issued, "last_decision": self.last_decision,
               "settled": self._ever_led_by is not None and time.monotonic() - self._ever_led_by > 1.0,
               "joined": lead.joined, "lease_s": LEASE_S, "replace_after_s": REPLACE_AFTER_S}
        if lead.leader is None:
            if not lead.joined:
                why = f"not joined yet (trying {', '.join(self.join)})"
            elif len(heard) < out["quorum"]:
                why = f"{len(heard)} of {len(voters)} voters heard, {out['quorum']} needed"
            else:
                why = "an election is under way"
            out["waiting"] = f"no leader: {why}"
        return out

    # -- supervision ---------------------------------------------------------------------------

    def _start_due(self, now: float) -> None:
        # Waves: the next wave starts when the current one has registered (or timed out).
        if self._wave:
            settled = all(self.instances[n].state != "starting" for n in self._wave)
            if settled or now >= self._wave_deadline:
                self._wave = []
        if not self._wave and self._queue:
            self._wave, self._queue = self._queue[: self.spec.wave_size], self._queue[self.spec.wave_size :]
            self._wave_deadline = now + self.spec.wave_timeout
            for name in self._wave:
                self._spawn(self.instances[name], now)
        for inst in self.instances.values():
            if inst.state == "restarting" and inst.popen is None and now >= inst.restart_at:
                self._spawn(inst, now)

    def _spawn(self, inst: Instance, now: float) -> None:
        spec = inst.spec
        env = dict(os.environ)
        env.update(
            MESH_NODE=self.connect_address,
            MESH_AGENT_NAME=inst.name,
            MESH_AGENT_CLASS=spec.cls,
            MESH_AGENT_PATH=os.pathsep.join(inst.import_path or self.spec.import_path()),
            MESH_AGENT_CONFIG=json.dumps(spec.config, default=str),
            MESH_AGENT_MAILBOX=str(spec.mailbox),
            MESH_AGENT_MAILBOX_BYTES=str(spec.mailbox_bytes),
            MESH_MAX_FRAME=str(self.spec.max_message),
            MESH_SUPERVISED="1",
            MESH_NODE_PID=str(os.getpid()),
            PYTHONUNBUFFERED="1",
        )
        with open(inst.log_path, "ab") as out:
            out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {inst.name} ---\n".encode())
            out.flush()
            inst.popen = subprocess.Popen(
                [sys.executable, "-m", "mesh.runtime.agent"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=inst.cwd if inst.cwd and os.path.isdir(inst.cwd) else self.spec.base_dir,
                start_new_session=True,
            )
        inst.pid = inst.popen.pid
        self.enforcer.track(inst.name, inst.pid, spec.budget_cpu, spec.budget_memory)
        inst.state = "starting"
        inst.endpoint = None
        inst.started_at = now
        inst.term_sent_at = None

    def _reap(self, now: float) -> None:
        for inst in list(self.instances.values()):
            popen = inst.popen
            if popen is None:
                continue
            try:
                exited = os.waitid(os.P_PID, popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                exited = True
            if exited is None:
                continue
            # Kill what the agent forked while its pid still names the group, then reap it. (What
            # left the group was re-parented to the node when the agent died: the sweep ends it.)
            why = self.enforcer.untrack(inst.name)
            _kill_group(popen.pid)
            code = popen.wait()
            self._next_sweep = 0.0
            inst.popen = None
            inst.endpoint = None
            if inst.retiring == "kill switch" and self._stop_deadline is None:
                pulled = self._kill_switch()
                if pulled is None and inst.placed_by:  # released meanwhile: the leader's assignment places it again
                    self._forget(inst)
                    continue
                pulled = pulled or {}
                inst.state, inst.retiring = "stopped", ""
                inst.reason = f"kill switch pulled by {pulled.get('by', '?')} at {_clock(pulled.get('at'))}"
                continue
            if inst.retiring and self._stop_deadline is None:
                self.on_event(f"{inst.name} stopped ({describe_exit(code)}): {inst.retiring}")
                self._forget(inst)
                continue
            if self._stop_deadline is not None:
                inst.state = "stopped"
                inst.reason = "node stopped"
                continue
            decision = inst.tracker.on_exit(now, code, why)
            inst.reason = _with_last_error(decision.reason, code, why, inst.log_path)
            if why:
                inst.budget_kills += 1
                self.gossip.write(BUDGET_PREFIX + inst.name, {"agent": inst.name, "node": self.name, "reason": why,
                                                              "kills": inst.budget_kills, "at": time.time()}, system=True)
            if decision.action == "restart":
                inst.state = "restarting"
                inst.restarts += 1
                inst.restart_at = now + decision.delay
                self.on_event(f"{inst.name} {decision.reason}; restarting in {decision.delay:g} s")
            else:
                inst.state = "stopped" if decision.action == "stop" else "failed"
                self.on_event(f"{inst.name} {inst.state}: {decision.reason}")
        if now >= self._next_sweep:
            self._next_sweep = now + 1.0
            self._sweep()

    def _sweep(self) -> list[int]:
        """End the orphans of dead agents: every child of the node that is not an agent."""
        if not self.own_process:
            return []
        ended = sweep_orphans({i.popen.pid for i in self.instances.values() if i.popen is not None})
        if ended:
            self.on_event(f"ended {len(ended)} process(es) left behind by agents that exited (pids {ended[:10]})")
        return ended

    def _expire_embedded(self, now: float) -> None:
        gone = [n for n, i in self.instances.items() if i.embedded and now - i.last_heard > EMBEDDED_TTL_S]
        for name in gone:
            del self.instances[name]
            self.on_event(f"{name} dropped (embedded, no heartbeat for {EMBEDDED_TTL_S:g} s)")

    def _live(self) -> list[Instance]:
        return [i for i in self.instances.values() if i.popen is not None]

    def _stop_timeout_of(self, inst: Instance) -> float:
        if inst.stop_grace is not None:
            return inst.stop_grace
        if inst.spec is not None and inst.spec.stop_timeout is not None:
            return inst.spec.stop_timeout
        return self.spec.stop_timeout

    def _kill_overdue(self, now: float) -> None:
        """An agent still running after its own stop timeout is SIGKILLed with its group."""
        for inst in self.instances.values():
            if inst.popen is not None and inst.term_sent_at is not None:
                if now - inst.term_sent_at >= self._stop_timeout_of(inst) and inst.popen.poll() is None:
                    self.on_event(f"{inst.name} did not stop in time: SIGKILL (stop timeout {self._stop_timeout_of(inst):g} s)")
                    _kill_tree(inst.popen.pid)
                    inst.term_sent_at = None  # killed once is enough; _reap collects it

    def _begin_stop(self, now: float) -> None:
        longest = max([self._stop_timeout_of(i) for i in self.instances.values() if i.popen is not None] or [0.0])
        # A little beyond the longest stop timeout, so the per-agent SIGKILLs happen first.
        self._stop_deadline = now + max(self.spec.stop_timeout, longest) + 1.0
        self._queue = []
        if self.resources is not None:
            self._drop_resources("it is stopping")
        if self.leadership is not None:
            self.leadership.transfer()  # a leader hands over before it goes
            self._publish_record()  # and says it is stopping: nothing new is placed here
        for inst in self.instances.values():
            if inst.popen is not None:
                self.enforcer.untrack(inst.name)  # resumed if throttled, so it can stop
                try:
                    inst.popen.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
                inst.term_sent_at = now
            elif inst.state in ("restarting", "starting"):
                inst.state = "stopped"
                inst.reason = "node stopped"
        self.on_event(f"stopping {len(self._live())} agent(s), at most {max(self.spec.stop_timeout, longest):g} s")

    def _kill_everything(self) -> None:
        """Last line of defence: no agent process, nor anything it forked, outlives the node."""
        for inst in self.instances.values():
            popen = inst.popen
            if popen is None:
                continue
            if popen.poll() is None:
                self.on_event(f"{inst.name} did not stop in time: SIGKILL")
            _kill_tree(popen.pid)
            try:
                popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            inst.popen = None
            inst.state = "stopped"
            inst.endpoint = None
            if not inst.reason or inst.reason == "node stopped":
                inst.reason = "node stopped"
        # And whatever the agents left behind (re-parented to the node): again until none is left,
        # since each one killed re-parents its own children here (bounded: a second at most).
        deadline = time.monotonic() + 1.0
        while self._sweep() and time.monotonic() < deadline:
            time.sleep(0.01)


_DEFERRING = ("acquire", "intent_propose", "intent_escalate")
_PEER_RECIPIENTS = frozenset((GOSSIP_RECIPIENT, ELECTION_RECIPIENT, INTENT_RECIPIENT))


def _weight(value: object) -> float:
    """An objection's weight as listed and summed: a finite number, else 0 (it counts for nothing)."""
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0.0


def _short(value: object) -> object:
    """An action as shown in listings: JSON-ish, at most 200 characters."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 200 else text[:197] + "..."


def _writable_key(body: dict) -> str:
    key = _str(body, "key")
    if key.startswith("$"):
        raise ReservedKey(f"key {key[:200]!r} is reserved: keys starting with '$' belong to the runtime (readable, not writable);"
                          " use a key without '$'")
    return key


def _with_last_error(reason: str, code: int, why: str | None, log_path: Path | None) -> str:
    """``exited with code 1`` becomes ``exited with code 1 (TypeError: ...)`` when the agent's log
    ends its last run with the traceback of what ended it (the status says why, not only how)."""
    head = describe_exit(code)
    if code != 1 or why or log_path is None or not reason.startswith(head):
        return reason
    last = last_exception_line(log_path)
    return f"{head} ({last}){reason[len(head):]}" if last else reason


def last_exception_line(log_path: Path, window: int = 64 * 1024) -> str | None:
    """The last line (``Type: message``) of the traceback that ended an agent's latest run, from
    the end of its log; None if that run did not end with one. A traceback a hook logged and
    survived (a log record that does not say the actor stops) does not count."""
    try:
        with open(log_path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - window))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    start = max((i for i, line in enumerate(lines) if line.startswith("--- ") and " starting " in line), default=-1)
    lines = lines[start + 1:]
    header = max((i for i, line in enumerate(lines) if line == "Traceback (most recent call last):"), default=None)
    if header is None:
        return None
    before = lines[header - 1] if header > 0 else ""
    if " ERROR " in before and not before.endswith("the actor stops"):
        return None  # logged by a hook that went on (on_intention, on_stop): not what ended the run
    for line in lines[header + 1:]:
        if line and not line[0].isspace():
            return line[:300]
    return None


def _placeholder(name: str, node: str | None, state: str, reason: str, group: str) -> dict:
    return {"name": name, "node": node, "pid": None, "state": state, "restarts": None, "messages": None,
            "incarnation": 0, "endpoint": None, "embedded": False, "group": group, "reason": reason,
            "bad_frames": None, "remote": True, "budget": None, "budget_kills": None, "cpu": None,
            "memory_bytes": None, "throttled_s": None, "throttled": None}


def check_topic_field(body: dict) -> str:
    try:
        return check_topic(body.get("topic"))
    except ValueError as exc:
        raise WireError(str(exc)) from None


def _clock(at: object) -> str:
    try:
        return time.strftime("%H:%M:%S", time.localtime(at)) if isinstance(at, (int, float)) else "?"
    except (OverflowError, ValueError, OSError):  # a time from the network: 1e300, nan
        return "?"


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_tree(pid: int) -> None:
    """SIGKILL a live agent with everything it started: its tree (the agent is the subreaper of
    its descendants, so those in sessions of their own are in it too), then its process group."""
    kill_descendants(pid)
    _kill_group(pid)


def _str(body: dict, key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise WireError(f"field {key!r} must be a non-empty string")
    return value


def _int(body: dict, key: str) -> int:
    value = body.get(key)
    if type(value) is not int:
        raise WireError(f"field {key!r} must be an integer")
    return value


__all__ = ["Node", "Instance", "STATES", "mesh_home", "describe_exit"]
