"""The node daemon: what ``mesh up`` runs.

A node listens on one ROUTER (its address) for control requests from the CLI, clients and its
own agents (the op table, :mod:`.ops`), and for gossip, election and intention messages from
the other nodes. One loop serves them all: it takes what arrived, in bounded bursts, then ticks
the election, pools and intentions, and every HOUSEKEEPING_S reaps and starts agents
(:mod:`.supervisor`), obeys the kill switch (:mod:`.killswitch`), follows the leader
(:mod:`.follower`), publishes the node record and the directory (:mod:`.registry`), and gossips.

Stopping (SIGINT, SIGTERM, ``mesh down``): every agent gets SIGTERM, which makes it finish its
current message, run ``on_stop`` and exit; whatever still runs after the stop timeout is
SIGKILLed with its whole process group. If the node itself is SIGKILLed, the agents see their
parent change (and get the kernel's PDEATHSIG) and exit by themselves.

With keys, the gate (:mod:`..zap`) tells the node whose key sent each request, and its role:
control ops check the role (:mod:`.ops`), gossip, election and intention envelopes are taken
from node keys only (others are dropped and counted), and a peer's name is the one its key was
issued for, whatever its envelope claims. Without keys nothing of this is read.

The node never runs user code in its own process, except to import agent classes when it
checks the spec before starting anything.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

from ... import wire
from ...core.effects import Emit
from ...core.election import ElectionConfig
from ...core.gossip import GossipConfig
from ...errors import MeshError, WireError
from ...spec import NodeSpec
from ...wire import BODY, KIND, RECIPIENT, SENDER
from ..budgets import Enforcer
from ..clock import REAL_CLOCK, Clock
from ..containment import become_subreaper
from ..pagemerge import kernel_warning
from ..gossiper import GOSSIP_RECIPIENT, JOIN_WAIT_S, Directory, Gossiper, by_key
from ..intents import INTENT_RECIPIENT, NodeIntents
from ..broadcast import NodeBroadcast, host_of
from ..leadership import ELECTION_RECIPIENT, NODE_PREFIX, Leadership
from .broadcasts import Broadcasts
from ..intake import BadFrames
from ..transport import NOWAIT, AddressError, Listener, NothingYet, Transport
from ..keys import NODE, KeysError, agents_keys, voter_check
from ..zap import caller
from ..zeromq import ZMQ, transport_for
from .constants import (GOSSIP_DIGEST_BYTES, HOUSEKEEPING_S, INTAKE_BURST, INTAKE_BURST_S, INTAKE_CONNECTION_BYTES,
                        INTAKE_FRAMES_MAX, LOOP_S, mesh_home)
from .escalations import Escalations
from .follower import Follower, member_states
from .instance import Instance
from .intentions import Intentions, send_intent
from .killswitch import KillSwitch
from .ops import Control, control_ops
from .pools import Pools
from .registry import Registry
from .replies import Replies
from .shared import Shared
from .status import election_status, members, status
from .supervisor import Supervisor
from .web import Web, serve_web

log = logging.getLogger("mesh.node")

_CONTROL = int(wire.Kind.CONTROL)
_EVENT = int(wire.Kind.EVENT)
_PEER_RECIPIENTS = frozenset((GOSSIP_RECIPIENT, ELECTION_RECIPIENT, INTENT_RECIPIENT))


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
    #: How the node listens and reaches its peers (ZeroMQ; the in-memory twin runs a mesh in one process).
    transport: Transport = ZMQ
    #: Where the node reads the time: its housekeeping, the election's timers, the lease, the
    #: intentions' votes, heartbeats' ages, stamps. (The loop's own intake pace stays on real time.)
    clock: Clock = REAL_CLOCK

    # What the node makes when it binds: the parts that hold a socket, a file or a thread, and
    # the parts made of them. (Declared here, set by bind(): a node serves only once bound.)
    router: Listener = field(init=False, repr=False, compare=False)
    leadership: Leadership = field(init=False, repr=False, compare=False)
    broadcasts: Broadcasts = field(init=False, repr=False, compare=False)
    enforcer: Enforcer = field(init=False, repr=False, compare=False)
    intents: NodeIntents = field(init=False, repr=False, compare=False)
    replies: Replies = field(init=False, repr=False, compare=False)
    supervisor: Supervisor = field(init=False, repr=False, compare=False)
    registry: Registry = field(init=False, repr=False, compare=False)
    kill_switch: KillSwitch = field(init=False, repr=False, compare=False)
    follower: Follower = field(init=False, repr=False, compare=False)
    pools: Pools = field(init=False, repr=False, compare=False)
    intentions: Intentions = field(init=False, repr=False, compare=False)
    escalations: Escalations = field(init=False, repr=False, compare=False)
    shared: Shared = field(init=False, repr=False, compare=False)
    control: Control = field(init=False, repr=False, compare=False)
    web: Web | None = field(default=None, init=False, repr=False, compare=False)  #: [node] metrics: HTTP

    def __post_init__(self) -> None:
        self.name = self.spec.name
        if self.spec.keys and self.transport is ZMQ:
            try:
                self.transport = transport_for(self.spec.keys, name=self.name)  # CURVE on every socket
            except KeysError as exc:
                raise MeshError(f"node {self.name}: {exc}") from None
        keys = getattr(self.transport, "keys", None)
        if keys is not None and keys.name != self.name:
            raise MeshError(f"node {self.name}: its keypair is {keys.name}'s ({keys.source}); with keys a node is the"
                            f" name its key was issued for: give it {self.name}'s keypair (mesh keys init DIR --node"
                            f" {self.name})")
        self.address = self.spec.listen
        self.bad = BadFrames(f"node {self.name}")
        self.started = self.clock.time()
        self.run_dir = mesh_home() / "nodes" / f"{self.name}-{self.address.rsplit(':', 1)[-1]}"
        self._stop_requested = False
        self._bound = False
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
            transport=self.transport,
            clock=self.clock,
        )
        #: With keys, the gate names whose key sent each request: gossip believes the key, not the claim.
        self.keyed = keys is not None
        if self.keyed:
            self.gossip.identify = by_key
        #: Gossip, election and intention envelopes dropped because their key's role is not node, by kind.
        self.peer_refused: dict[str, int] = {}
        self.directory = Directory(self.gossip)
        self._guard_logged: dict[str, float] = {}
        self._next_record = 0.0

    @property
    def instances(self) -> dict[str, Instance]:
        """Every actor this node supervises or hosts the registration of, by name."""
        return self.supervisor.instances

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    # -- set-up --------------------------------------------------------------------

    def bind(self) -> None:
        gossip = self.gossip.config
        #: The largest frame this node takes, in bytes (see GOSSIP_DIGEST_BYTES).
        self.max_frame = min(self.spec.max_message, gossip.max_delta_bytes + gossip.max_value_bytes + GOSSIP_DIGEST_BYTES)
        frames = max(2, min(INTAKE_FRAMES_MAX, INTAKE_CONNECTION_BYTES // self.max_frame))
        try:
            # replies: answers a peer leaves unread beyond this are dropped (as a ROUTER drops them)
            router = self.transport.listen(self.address, mailbox=frames, replies=10000, max_bytes=self.max_frame,
                                           linger_ms=500, wait_ms=int(LOOP_S * 1000))
        except AddressError as exc:
            raise MeshError(f"cannot listen on {self.address}: {exc.strerror} (is another node running there?)") from None
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        config = ElectionConfig(self.spec.election_timeout_min, self.spec.election_timeout_max, self.spec.heartbeat)
        try:
            self.leadership = Leadership(self.name, self.spec.voter, config, self.run_dir, self.gossip, bool(self.join),
                                         on_event=self.on_event, clock=self.clock)
        except RuntimeError as exc:
            router.close(0)
            raise MeshError(str(exc)) from None
        keys = getattr(self.transport, "keys", None)
        if keys is not None and keys.trusted is not None:
            self.leadership.may_vote = voter_check(keys.trusted)  # with keys, a vote is the key's to give
        self.router = router
        try:
            forwarder = NodeBroadcast(self.name, self.transport, self.address, self.advertise or self.connect_address,
                                      self.max_frame)
        except AddressError as exc:
            router.close(0)
            raise MeshError(f"cannot listen for broadcasts on {host_of(self.address)}: {exc.strerror}") from None
        local_in = host_of(self.connect_address) + ":" + forwarder.in_address.rsplit(":", 1)[1]
        self.broadcasts = Broadcasts(self.name, forwarder, local_in, self.directory)
        self.enforcer = Enforcer(on_event=self.on_event)
        try:
            self.intents = NodeIntents(self.name, self.spec.voter, self.run_dir, partial(send_intent, self.directory),
                                       self.leadership.elector.voters, clock=self.clock)
        except (RuntimeError, ValueError) as exc:
            raise MeshError(f"cannot start the intentions of node {self.name}: {exc}") from None
        may_vote = self.leadership.may_vote
        if may_vote is not None:  # with keys, intention votes too are the key's to give
            self.intents.may_vote = partial(may_vote, self.name)
        self._assemble()
        self.registry.broadcast = forwarder.out_address
        self._bound = True
        self.registry.publish_record()

    def _assemble(self) -> None:
        """The node's parts, each with what it needs of the others."""
        name, directory, on_event, clock = self.name, self.directory, self.on_event, self.clock
        self.replies = Replies(self.router)
        self.supervisor = Supervisor(self.spec, self.connect_address, self.run_dir / "logs", directory, self.enforcer,
                                     on_event, self.own_process, clock=clock)
        self.registry = Registry(self.spec, self.advertise or self.connect_address, directory, self.supervisor, on_event,
                                 clock=clock)
        self.kill_switch = KillSwitch(name, directory, self.supervisor, on_event, clock=clock)
        self.follower = Follower(name, self.leadership, directory, self.supervisor, on_event, clock=clock)
        self.follower.gather_until = 0.0 if self.gossip.seeds else clock.monotonic() + JOIN_WAIT_S
        self.supervisor.lease_left = self.follower.lease_left  # each movable agent's watchdog deadline
        self.supervisor.node_max_frame = self.max_frame  # agents learn it as they start: no start-up ping
        keys = getattr(self.transport, "keys", None)
        self.supervisor.agent_keys = agents_keys(keys) if keys is not None else None
        if keys is not None and self.supervisor.agent_keys == keys.source:
            on_event(f"no {keys.name}+agents keypair beside {keys.source}: this node's agents get its own keypair"
                     " (role node); `mesh keys add DIR NAME+agents --role agent` makes theirs")
        self.pools = Pools(name, self.leadership, self.replies, self.supervisor, on_event, clock=clock)
        self.intentions = Intentions(name, self.intents, directory, self.replies, self.supervisor, clock=clock,
                                     publish=self.broadcasts.forwarder.publish,
                                     address=self.advertise or self.connect_address)
        self.escalations = Escalations(self.spec, self.leadership, directory, self.replies, on_event, clock=clock)
        self.shared = Shared(name, directory)
        self.control = Control(name, control_ops(self), self.replies)

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
        if not self._bound:
            self.bind()
        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, self.request_stop)
            except ValueError:  # not the main thread: the caller stops us with request_stop()
                pass
        try:
            self.supervisor.warm_zygote()  # its start overlaps the meeting (a node of its own process only)
            if self._meet_the_mesh():
                if self.own_process:
                    become_subreaper()  # what a dying agent leaves behind is re-parented here, and ended (sweep)
                logs = self.run_dir / "logs"
                self.on_event(f"node {self.name} listening on {self.address} (pid {os.getpid()}, logs in {logs})")
                if self.spec.merge_pages and (warning := kernel_warning()) is not None:
                    self.on_event(warning)
                self.web = serve_web(self)
                self._serve()
        finally:
            if self.web is not None:
                self.web.close()
            self.enforcer.close()  # nothing stays stopped
            self.supervisor.kill_everything()
            if self._stop_requested:
                self.leadership.forget_peers()
            self.registry.publish()
            try:
                self.gossip.leave()
            except Exception:  # leaving is a courtesy; peers find out anyway
                log.exception("could not announce leaving")
            self.gossip.close()
            self.broadcasts.close()
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
                got = self.router.receive(self.bad)
            except NothingYet:
                got = None
            if got is not None:
                self._handle(*got)
            self._guarded("gossip", self.gossip.tick)
        return True

    def _serve(self) -> None:
        router = self.router
        supervisor = self.supervisor
        clock = self.clock
        next_housekeeping = 0.0
        next_tick = 0.0
        wait_ms = int(LOOP_S * 1000)
        bad = self.bad
        while True:
            try:
                got = router.receive(bad)
            except NothingYet:
                got = None
            if got is not None:
                self._handle(*got)
                # Take what else is queued, within bounds, so a flood cannot outrun the loop and fill
                # the transport's queues; the timers below still run at least every INTAKE_BURST_S.
                until = REAL_CLOCK.monotonic() + INTAKE_BURST_S  # the loop's own pace: real time
                for _ in range(INTAKE_BURST):
                    try:
                        got = router.receive(bad, NOWAIT)
                    except NothingYet:
                        break
                    if got is not None:
                        self._handle(*got)
                    if REAL_CLOCK.monotonic() >= until:
                        break
            # Sleep until the next thing to do (an election timer, a waiting request, housekeeping),
            # at most HOUSEKEEPING_S: an idle node does not wake 100 times a second.
            wake_in = min(self.leadership.elector.wake_at() - clock.monotonic(),
                          next_housekeeping - clock.monotonic())
            if self.pools.waiting or self.intentions.busy:
                wake_in = -1.0
            if self.web is not None:
                self.web.tick(self)
            ms = max(1, min(int(HOUSEKEEPING_S * 1000), int(wake_in * 1000) + 1))
            if ms != wait_ms:
                wait_ms = ms
                router.set_wait(ms if ms > int(LOOP_S * 1000) else int(LOOP_S * 1000))
            if not supervisor.stopping:
                self._guarded("election", self.leadership.tick)
                self._guarded("pools", self.pools.tick)
                self._guarded("intentions", self.intentions.tick)
            now = clock.monotonic()
            if now >= next_housekeeping:
                next_housekeeping = now + HOUSEKEEPING_S
                if self._stop_requested and not supervisor.stopping:
                    self._begin_stop(now)
                supervisor.reap(now)
                if supervisor.stopping:
                    supervisor.kill_overdue(now)
                    deadline = supervisor.stop_deadline
                    if not supervisor.live() or (deadline is not None and now >= deadline):
                        return
                else:
                    self._guarded("kill switch", self.kill_switch.obey)
                    self._guarded("leader", self._follow_the_leader, now)
                    if now >= self._next_record:
                        self._next_record = now + 1.0
                        self._guarded("node record", self.registry.publish_record)
                    supervisor.start_due(now)
                    supervisor.expire_embedded(now)
                    self.registry.publish()
                    self.follower.publish_acted()  # after the directory: the leader's handoff relies on the order
                    self._guarded("gossip", self.gossip.tick)
                    self._guarded("broadcasts", self.broadcasts.tick)
                if self.on_tick is not None and now >= next_tick:
                    next_tick = now + 1.0
                    self.on_tick(self)

    def _follow_the_leader(self, now: float) -> None:
        """Learn the voters, conduct if leading, keep what leading serves, and follow the assignment."""
        states = member_states(self.directory)
        records = {}
        for key, value in self.directory.items(NODE_PREFIX).items():
            if isinstance(value, dict):
                records[key[len(NODE_PREFIX):]] = value
        self.leadership.learn(records, {n: m["state"] for n, m in states.items()})
        if self.leadership.is_leader:
            self.follower.conduct(states, records)
        self.pools.keep(records)
        self.intents.set_voters(self.leadership.elector.voters)
        self.escalations.expire()
        self.follower.follow(now)

    def _begin_stop(self, now: float) -> None:
        window = self.supervisor.begin_stop(now)
        if self.pools.resources is not None:
            self.pools.drop("it is stopping")
        self.leadership.transfer()  # a leader hands over before it goes
        self.registry.publish_record()  # and says it is stopping: nothing new is placed here
        self.supervisor.terminate_all(now, window)

    def _guarded(self, what: str, step: Callable[..., object], *args: object) -> None:
        """Run one housekeeping step; a failure (say, a malformed value some peer gossiped that a
        check missed) is logged, at most every 10 s per step, and the node keeps serving."""
        try:
            step(*args)
        except Exception:
            self._log_failure(what, "step")

    def _log_failure(self, what: str, of: str) -> None:
        """Log the exception being handled, at most every 10 s per ``what``."""
        now = REAL_CLOCK.monotonic()  # rate-limits the log, in real time
        if now - self._guard_logged.get(what, -1e9) >= 10.0:
            self._guard_logged[what] = now
            log.exception("node %s: %s %s failed; carrying on", self.name, what, of)

    # -- what arrives --------------------------------------------------------------------------

    def _handle(self, ident: Any, frame: Any) -> None:
        try:
            envelopes = wire.decode(frame, self.max_frame)
        except WireError as exc:
            if len(frame) > wire.SMALL_FRAME and self.replies.refuse(ident, frame, exc):
                self.bad.record(ident, exc)  # a well-formed request whose body was refused: told why, not shed for the size
            else:
                self.bad.record(ident, exc, len(frame))
            return
        peer = role = None
        if self.keyed:  # only with keys: without, the request path reads no more than it did
            peer, role = caller(frame)
        for env in envelopes:
            if env[KIND] == _EVENT and env[RECIPIENT] in _PEER_RECIPIENTS:
                if role is None or role == NODE:
                    self._from_peer(ident, env, peer)
                else:
                    self._refuse_peer(env[RECIPIENT][1:], peer, role)
            elif env[KIND] != _CONTROL or not isinstance(env[BODY], dict) or not isinstance(env[BODY].get("op"), str):
                self.bad.record(ident, "the node takes only CONTROL envelopes with an 'op'")
            else:
                self.control.handle(ident, env, role)

    def _refuse_peer(self, what: str, peer: str | None, role: str) -> None:
        """A gossip, election or intention envelope from a key that is not a node's: dropped, counted."""
        first = not self.peer_refused
        self.peer_refused[what] = self.peer_refused.get(what, 0) + 1
        if first or REAL_CLOCK.monotonic() - self._guard_logged.get("peer role", -1e9) >= 60.0:
            self._guard_logged["peer role"] = REAL_CLOCK.monotonic()
            log.warning("node %s: dropped a %s message from key %r, a %s: only node keys take part (counted"
                        " in status: peer_refused)", self.name, what, peer, role)

    def _from_peer(self, ident: Any, env: list, peer: str | None = None) -> None:
        """A gossip, election or intention message from another node (``peer``: the name its key
        was issued for, with keys). The machines ignore or refuse what they cannot read; whatever
        still fails is counted as a bad frame and logged (rate-limited): nothing a peer sends ends the node."""
        what = env[RECIPIENT][1:]
        try:
            if env[RECIPIENT] == GOSSIP_RECIPIENT:
                self.gossip.receive(env[SENDER], env[BODY], peer)
            elif env[RECIPIENT] == ELECTION_RECIPIENT:
                self.leadership.receive(self.gossip.identify(env[SENDER], peer), env[BODY])
            else:
                self.intentions.receive(self.gossip.identify(env[SENDER], peer), env[BODY])
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            self.bad.record(ident, f"bad {what} message: {exc}")
        except Exception as exc:
            self.bad.record(ident, f"{what} message failed: {type(exc).__name__}")
            self._log_failure(what, "message")

    def _on_gossip_event(self, event: Emit) -> None:
        if event.name == "name_taken" and event.data.get("announced"):
            # Two meshes met and an older live member has this node's name: this one yields.
            self.on_event(f"STOPPING: {self.gossip.refused}")
            self.request_stop()
            return
        if event.name == "member" and self.gossip.announced:  # a joining node says nothing yet
            d = event.data
            if d["name"] != self.name:
                self.on_event(f"member {d['name']} ({d['id']}) is {d['state']}")

    # -- what it shows ----------------------------------------------------------------------------------

    def status(self) -> dict:
        return status(self)

    def members(self) -> list[dict]:
        return members(self.directory, self.clock)

    def election_status(self) -> dict:
        return election_status(self)
