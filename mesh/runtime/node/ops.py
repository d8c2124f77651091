"""The control operations the node serves: an explicit table of op name -> handler and the
checks its request must pass, and the one place a request becomes an answer.

Checks run in the order listed, before the handler; the first that fails decides the error the
asker gets (a field check: WireError, code ``bad_request``; a leader check: NotLeader). With
keys, who may call an op comes first: each op names the roles that may (``Op.roles``; the key's
role, :mod:`mesh.runtime.keys`), and a caller of another role gets Forbidden, counted in
``Control.forbidden`` (``mesh status``). Without keys there is no role and every op is open. A
handler reads the checked fields as they are. An op marked ``deferred`` gets the request's
:class:`~mesh.runtime.node.replies.Waiter` and may return DEFER: it answers later (a pool
request waiting in line, an intention being decided, an escalation waiting for a person).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Callable

from ...errors import Forbidden, MeshError, ReservedKey, WireError
from ...topics import check_topic
from ...wire import BODY, MSG_ID, SENDER
from ..keys import AGENT, CLIENT, NODE, OPERATOR
from .agent_ops import AgentOps
from .alerts import Alerts
from .logs import read_log
from .replies import DEFER, Replies, Waiter
from .status import leader_info

if TYPE_CHECKING:
    from .daemon import Node

log = logging.getLogger("mesh.node")

Check = Callable[[dict], object]


# -- checks ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    """Field ``key`` is a non-empty string."""

    key: str

    def __call__(self, body: dict) -> None:
        value = body.get(self.key)
        if not isinstance(value, str) or not value:
            raise WireError(f"field {self.key!r} must be a non-empty string")


@dataclass(frozen=True)
class Integer:
    """Field ``key`` is an integer (not a bool, not a float)."""

    key: str

    def __call__(self, body: dict) -> None:
        if type(body.get(self.key)) is not int:
            raise WireError(f"field {self.key!r} must be an integer")


@dataclass(frozen=True)
class Seconds:
    """Field ``key``, if given, is a number of seconds, at least 0."""

    key: str

    def __call__(self, body: dict) -> None:
        if self.key in body:
            value = body[self.key]
            if type(value) not in (int, float) or not value >= 0:
                raise WireError(f"field {self.key!r} must be a number of seconds")


@dataclass(frozen=True)
class Present:
    """Field ``key`` is there (any value, None too)."""

    key: str

    def __call__(self, body: dict) -> None:
        if self.key not in body:
            raise WireError(f"field {self.key!r} is missing")


@dataclass(frozen=True)
class Prefix:
    """Field ``key``, if given and not empty, is a string."""

    key: str

    def __call__(self, body: dict) -> None:
        if not isinstance(body.get(self.key) or "", str):
            raise WireError(f"field {self.key!r} must be a string")


def check_topic_field(body: dict) -> str:
    """Field ``topic`` is a topic (see :func:`mesh.topics.check_topic`)."""
    try:
        return check_topic(body.get("topic"))
    except ValueError as exc:
        raise WireError(str(exc)) from None


def writable_key(body: dict) -> str:
    """Field ``key`` names a key users may write: not the runtime's (``$...``)."""
    Text("key")(body)
    key = body["key"]
    if key.startswith("$"):
        raise ReservedKey(f"key {key[:200]!r} is reserved: keys starting with '$' belong to the runtime (readable, not writable);"
                          " use a key without '$'")
    return key


# -- the table ---------------------------------------------------------------------------------


#: Who may call an op, by the role of the caller's key. Operators only for what stops or overrides
#: the mesh (a person's decision); what nodes send each other travels as gossip, election and
#: intention envelopes (node keys only, :meth:`Node._from_peer`), and the control ops that nodes
#: and agents call (register, heartbeat, acquire, escalate...) are the ones users call too.
ANYONE = frozenset((OPERATOR, NODE, AGENT, CLIENT))
OPERATORS = frozenset((OPERATOR,))


@dataclass(frozen=True)
class Op:
    handler: Callable[..., object]  #: handler(body), or handler(body, waiter) when deferred
    checks: tuple[Check, ...] = ()  #: run in order before the handler
    deferred: bool = False  #: may return DEFER and answer later through the waiter
    roles: frozenset[str] = ANYONE  #: the roles of keys that may call it (with keys)


def _ping(node: Node, body: dict) -> dict:
    return {"node": node.name, "pid": os.getpid(), "address": node.address, "max_frame": node.max_frame}


def _down(node: Node, body: dict) -> dict:
    node.on_event("stop requested by `mesh down`")
    node.request_stop()
    return {"stopping": True, "pid": os.getpid()}


def _status(node: Node, body: dict) -> dict:
    return node.status()


def control_ops(node: Node) -> dict[str, Op]:
    """Every control operation of ``node``."""
    pools, intentions, escalations = node.pools, node.intentions, node.escalations
    registry, shared, supervisor = node.registry, node.shared, node.supervisor
    leading = pools.require_leading
    agent_ops = AgentOps(node.name, node.directory, supervisor, clock=node.clock)
    alerts = Alerts(node.name, node.directory, clock=node.clock)
    return {
        # the node itself
        "ping": Op(partial(_ping, node)),
        "status": Op(partial(_status, node)),
        "down": Op(partial(_down, node), roles=OPERATORS),
        "leader": Op(partial(leader_info, node)),
        "logs": Op(partial(read_log, supervisor), (Text("name"),)),
        # the registry and the directory
        "register": Op(registry.register, (Text("name"), Text("endpoint"), Integer("pid"))),
        "unregister": Op(registry.unregister, (Text("name"),)),
        "heartbeat": Op(registry.heartbeat, (Text("name"), Integer("messages"))),
        "lease": Op(registry.lease, (Text("name"), Integer("pid"))),
        "resolve": Op(registry.resolve, (Text("name"),)),
        "group": Op(registry.group, (Text("name"),)),
        # the shared state and topics
        "state_get": Op(shared.state_get, (Text("key"),)),
        "state_set": Op(shared.state_set, (Present("value"), writable_key)),
        "state_delete": Op(shared.state_delete, (writable_key,)),
        "state_items": Op(shared.state_items, (Prefix("prefix"),)),
        "subscribe": Op(shared.subscribe, (check_topic_field, Text("actor"))),
        "unsubscribe": Op(shared.unsubscribe, (check_topic_field, Text("actor"))),
        "subscribers": Op(shared.subscribers, (check_topic_field,)),
        "broadcast": Op(node.broadcasts.broadcast),
        "broadcast_hello": Op(node.broadcasts.hello, (Text("subscriber"), Integer("seq"))),
        # pools and rate limits: the leader answers
        "acquire": Op(pools.acquire, (leading, Text("request_id"), Text("holder"), Text("name"), Seconds("timeout")),
                      deferred=True),
        "renew": Op(pools.renew, (leading, Text("lease_id"), Text("name"), Text("holder"))),
        "release": Op(pools.release, (leading, Text("lease_id"), Text("name"))),
        # intentions and escalations
        "intent_propose": Op(intentions.propose, (Seconds("wait"),), deferred=True),
        "intent_done": Op(intentions.done, (Text("id"),)),
        "intent_answer": Op(intentions.answer, (Text("id"), Text("listener"), Present("objection"))),
        "intent_listeners": Op(intentions.listeners),
        "intents": Op(intentions.listing),
        "intent_escalate": Op(escalations.escalate, (escalations.require_leader, Text("id")), deferred=True),
        "intent_decide": Op(escalations.decide, (Text("id"),), roles=OPERATORS),
        # the kill switch
        "kill": Op(node.kill_switch.op_kill, roles=OPERATORS),
        # a person stops or restarts one agent; alerts that wait for a person
        "agent_stop": Op(agent_ops.stop, (Text("name"), Seconds("grace")), roles=OPERATORS),
        "agent_restart": Op(agent_ops.restart, (Text("name"), Seconds("grace")), roles=OPERATORS),
        "agent_info": Op(agent_ops.info, (Text("name"),)),
        "alert": Op(alerts.raise_alert, (Text("reason"),)),
        "alerts": Op(alerts.listing),
        "alert_ack": Op(alerts.acknowledge, (Text("id"),), roles=OPERATORS),
    }


class Control:
    """Runs one control request into one answer (or none yet, for a deferred op)."""

    def __init__(self, name: str, ops: dict[str, Op], replies: Replies):
        self.name = name
        self.ops = ops
        self.replies = replies
        #: Requests refused because the caller's role may not call the op, by op (with keys).
        self.forbidden: dict[str, int] = {}

    def handle(self, ident: bytes, env: list, role: str | None = None) -> None:
        """``env``: a CONTROL envelope whose body is a dict with a string ``op``; ``role``: the
        role of the caller's key (None without keys: every op is open)."""
        body = env[BODY]
        name = body["op"]
        waiter = Waiter(ident, env[MSG_ID], env[SENDER])
        op = self.ops.get(name)
        try:
            if op is None:
                raise WireError(f"unknown op {name!r:.40}")
            if role is not None and role not in op.roles:
                self.forbidden[name] = self.forbidden.get(name, 0) + 1
                raise Forbidden(f"{name} needs a key whose role is {' or '.join(sorted(op.roles))};"
                                f" this key is a {role} (mesh keys add DIR NAME --role ...)")
            for check in op.checks:
                check(body)
            result = op.handler(body, waiter) if op.deferred else op.handler(body)
            if result is DEFER:
                return
            answer = self.replies.answer(waiter, result)
        except MeshError as exc:
            answer = self.replies.failure(waiter, exc)
        except (KeyError, TypeError, ValueError, OverflowError) as exc:  # int(inf) raises OverflowError
            answer = self.replies.failure(waiter, WireError(f"bad {name} request: {type(exc).__name__}: {exc}"))
        except Exception as exc:  # last resort: a request must never end the node
            log.exception("node %s: %s request failed", self.name, name)
            answer = self.replies.failure(waiter, WireError(f"{name} failed on node {self.name}: {type(exc).__name__}: {exc}"))
        self.replies.send(ident, answer)
