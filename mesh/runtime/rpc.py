"""The node's control operations: one typed function each, the one place that names them.

Every request a process makes of a node goes through here: the :class:`~mesh.runtime.client.Client`,
the shared state, an actor's context and its link to its node, leases, the intention flow
and the ``mesh`` command. Each function says which operation it is, what it sends, what the
answer holds (a TypedDict: the node's dict as it comes, nothing copied) and where it goes:

* to the client's own node (most operations; the node's ``_op_NAME`` handler answers);
* to the leader (``acquire``, ``renew``, ``release``, ``intent_escalate``,
  ``intent_decide``): pools, leases and escalations live there. The leader's address is
  asked of the node once and kept on the client until a request finds that node no longer
  leads or gone (:class:`~mesh.errors.NotLeader`, :class:`~mesh.errors.NodeUnavailable`);
  the next request asks again. Callers that must ride out an election retry;
* to another node (``intent_answer``: what a listener's ``on_intention`` answers, to the node
  that published the intention; ``broadcast_hello``).

On the wire a request is a CONTROL envelope with the body ``{"op": NAME, **fields}``; its
answer is the REPLY's body, or the FAIL's error raised as the mesh exception it names.
None of this is on the message path: asks and tells go straight to the actor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NotRequired, TypedDict, cast

from ..errors import NodeUnavailable, NotLeader

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client


# -- answers --------------------------------------------------------------------------------


class Ping(TypedDict, total=False):
    """A node's answer (``node``, ``pid``, ``address``, ``max_frame``); an actor's own socket
    answers ``name``, ``pid`` and ``messages`` instead."""

    node: str
    pid: int
    address: str
    max_frame: int  #: the largest frame the node accepts, in bytes
    name: str
    messages: int


class Leader(TypedDict):
    leader: str | None
    term: int
    address: str | None  #: where the leader listens (tcp://HOST:PORT)
    waiting: NotRequired[str | None]  #: with no leader: what the election waits for


class Grant(TypedDict):
    """Units of a pool (``lease_id`` set) or a rate limit's permit (``lease_id`` None)."""

    request_id: str
    name: str
    n: int
    lease_id: str | None
    waited: float  #: seconds the request waited in line
    lease_ttl: float | None  #: seconds a lease lives unless renewed


class Renewed(TypedDict):
    renewed: str
    lease_ttl: float | None


class Vote(TypedDict):
    """The voters' outcome for an intention's claims."""

    id: str
    outcome: str  #: "approved" or "objected"
    reasons: list[str]
    holders: list[str]  #: ids of the intentions holding overlapping claims, if objected
    until_in: float | None  #: seconds until the claims' hold ends, if approved
    #: the listeners' objections ({by, reason, weight, kind}), then the required listeners' silence
    objections: list[dict[str, Any]]


class Forwarder(TypedDict):
    out: str  #: where subscribers connect (the node's PUB)
    address: str  #: the node's own address (where a subscriber asks it for hellos)


#: ``in``: where the node's own processes publish (its forwarder's PULL); ``nodes``: every live
#: node's forwarder, by node name. (Functional form: ``in`` is a keyword.)
Broadcast = TypedDict("Broadcast", {"in": str, "nodes": dict[str, Forwarder]})


class Ruling(TypedDict):
    """How the leader (or a person) decided an escalated intention."""

    approve: bool
    by: str
    why: str


class Decided(TypedDict):
    id: str
    approved: bool


class Listing(TypedDict):
    """Pending and held intentions, and escalations waiting for a person, mesh-wide."""

    intents: list[dict[str, Any]]
    escalations: list[dict[str, Any]]


class KillSwitch(TypedDict):
    pulled: bool
    at: float  #: time.time() when it was pulled or released
    by: str


class Registered(TypedDict):
    incarnation: int
    node: str


class Resolved(TypedDict, total=False):
    """Where an actor listens (``endpoint`` set), or its state while it has no endpoint."""

    endpoint: str
    incarnation: int
    state: str
    name: str  #: the replica that answers, for a replica group's name
    node: str
    max_frame: int  #: the largest frame the actor accepts, in bytes
    cancel: str  #: where its askers send cancels (absent: the actor takes none)


class Member(TypedDict, total=False):
    """One running replica of a group: its name and how to reach it (as :class:`Resolved`)."""

    name: str
    endpoint: str
    max_frame: int
    cancel: str


class Beat(TypedDict, total=False):
    """The node's answer to a served actor's heartbeat."""

    known: bool  #: False: the node does not know it (say it restarted); absent: it does
    #: Seconds from when the heartbeat was sent until the agent must stop unless renewed (its
    #: node's lease, for a replica a leader could place elsewhere); absent: no such deadline.
    lease_s: float


class Stopping(TypedDict):
    stopping: bool
    pid: int


class LogChunk(TypedDict):
    data: str
    offset: int  #: the byte offset after ``data``: where the next read starts
    size: int  #: the log's size in bytes when read


class Found(TypedDict):
    found: bool
    value: NotRequired[object]


class Counted(TypedDict):
    counted: bool  #: False: dropped (late, for an intention the node does not know, or malformed)


# -- how a request travels ------------------------------------------------------------------


def _node(client: "Client", op: str, timeout: float, /, **fields: object) -> Any:
    return client._control_at(client.node, op, timeout, **fields)


def _leader(client: "Client", op: str, timeout: float, /, **fields: object) -> Any:
    address = client._leader_address
    if address is None:
        info = leader(client, timeout=min(timeout, 5.0))
        address = info.get("address") if isinstance(info, dict) else None
        if not address:
            raise NotLeader(f"no leader is elected yet ({info.get('waiting') if isinstance(info, dict) else info})")
        client._leader_address = address
    try:
        return client._control_at(address, op, timeout, **fields)
    except (NotLeader, NodeUnavailable):
        client._leader_address = None
        raise


# -- the node and its agents ----------------------------------------------------------------


def ping(client: "Client", timeout: float = 5.0) -> Ping:
    return _node(client, "ping", timeout)


def status(client: "Client", timeout: float = 5.0) -> dict[str, Any]:
    """What ``mesh status --json`` prints."""
    return _node(client, "status", timeout)


def down(client: "Client", timeout: float = 5.0) -> Stopping:
    """Ask the node to stop gracefully (its agents' ``on_stop`` run); answers at once."""
    return _node(client, "down", timeout)


def logs(client: "Client", name: str, offset: int = 0, tail: int | None = None, timeout: float = 5.0) -> LogChunk:
    """One chunk of agent ``name``'s log from byte ``offset``; with ``tail`` (bytes) and offset 0,
    from that many bytes before its end."""
    if tail is None:
        return _node(client, "logs", timeout, name=name, offset=offset)
    return _node(client, "logs", timeout, name=name, offset=offset, tail=tail)


def kill(client: "Client", release: bool, by: str, timeout: float = 5.0) -> KillSwitch:
    """Pull the kill switch (every node stops every agent now), or with ``release`` let go of it."""
    return _node(client, "kill", timeout, release=release, by=by)


def resolve(client: "Client", name: str, timeout: float = 5.0) -> Resolved:
    return _node(client, "resolve", timeout, name=name)


def group(client: "Client", name: str, timeout: float = 5.0) -> list[Member]:
    """The running replicas of replica group ``name``, mesh-wide, by name (none: not a group, or
    none runs right now)."""
    return _node(client, "group", timeout, name=name)["members"]


async def group_async(client: "Client", name: str, timeout: float = 5.0) -> list[Member]:
    """:func:`group` over the client's asyncio link."""
    return (await client.control_async("group", timeout, name=name))["members"]


async def resolve_async(client: "Client", name: str, timeout: float = 5.0) -> Resolved:
    """:func:`resolve` over the client's asyncio link (the path of ``ask_async``)."""
    return await client.control_async("resolve", timeout, name=name)


def register(client: "Client", name: str, endpoint: str, pid: int, supervised: bool, max_frame: int,
             intentions: bool, timeout: float = 5.0, *, cancel: str | None = None) -> Registered:
    """Register a served actor: ``intentions`` says whether it hears intentions (``on_intention``);
    ``cancel``: where its askers send cancels (:mod:`mesh.runtime.cancels`)."""
    more = {"cancel": cancel} if cancel else {}
    return _node(client, "register", timeout, name=name, endpoint=endpoint, pid=pid, supervised=supervised,
                 max_frame=max_frame, intentions=intentions, **more)


def unregister(client: "Client", name: str, endpoint: str | None, timeout: float = 1.0) -> None:
    _node(client, "unregister", timeout, name=name, endpoint=endpoint)


def heartbeat(client: "Client", name: str, endpoint: str | None, messages: int, bad_frames: int,
              timeout: float = 2.0, until: float | None = None, usage: dict[str, Any] | None = None) -> Beat:
    """Report a served actor alive: whether the node knows it, and the agent's lease if it has one
    (``until``: its current deadline, which the node's lease must have held through)."""
    answer = _node(client, "heartbeat", timeout, name=name, endpoint=endpoint, messages=messages,
                   bad_frames=bad_frames, until=until, usage=usage)
    return cast(Beat, answer) if isinstance(answer, dict) else Beat()


def lease(client: "Client", name: str, pid: int, until: float, timeout: float = 5.0) -> Beat:
    """Ask the node that started this agent for a new deadline before its actor runs (``until``: the
    one it was given)."""
    answer = _node(client, "lease", timeout, name=name, pid=pid, until=until)
    return cast(Beat, answer) if isinstance(answer, dict) else Beat(lease_s=0.0)


# -- the shared state -----------------------------------------------------------------------


def state_get(client: "Client", key: str, timeout: float = 5.0) -> Found:
    return _node(client, "state_get", timeout, key=key)


def state_set(client: "Client", key: str, value: object, timeout: float = 5.0) -> None:
    _node(client, "state_set", timeout, key=key, value=value)


def state_delete(client: "Client", key: str, timeout: float = 5.0) -> None:
    _node(client, "state_delete", timeout, key=key)


def state_items(client: "Client", prefix: str = "", timeout: float = 5.0) -> dict[str, object]:
    return _node(client, "state_items", timeout, prefix=prefix)["items"]


async def state_items_async(client: "Client", prefix: str = "", timeout: float = 5.0) -> dict[str, object]:
    """:func:`state_items` over the client's asyncio link."""
    return (await client.control_async("state_items", timeout, prefix=prefix))["items"]


# -- topics ---------------------------------------------------------------------------------


def subscribe(client: "Client", topic: str, actor: str, timeout: float = 5.0) -> None:
    _node(client, "subscribe", timeout, topic=topic, actor=actor)


def unsubscribe(client: "Client", topic: str, actor: str, timeout: float = 5.0) -> None:
    _node(client, "unsubscribe", timeout, topic=topic, actor=actor)


def subscribers(client: "Client", topic: str, timeout: float = 5.0) -> list[str]:
    answer = _node(client, "subscribers", timeout, topic=topic)
    return list(answer.get("actors", [])) if isinstance(answer, dict) else []


def broadcast(client: "Client", timeout: float = 5.0) -> Broadcast:
    """Where the client's node takes broadcasts (``in``), and every live node's forwarder."""
    return _node(client, "broadcast", timeout)


def broadcast_hello(client: "Client", address: str, subscriber: str, seq: int, timeout: float = 1.0) -> None:
    """Ask the node at ``address`` to publish hello ``seq`` to ``subscriber`` (the handshake of
    :mod:`mesh.runtime.broadcast`)."""
    client._control_at(address, "broadcast_hello", timeout, subscriber=subscriber, seq=seq)


# -- pools and rate limits (at the leader) --------------------------------------------------


def leader(client: "Client", timeout: float = 5.0) -> Leader:
    """Who leads, as the client's node knows it."""
    return _node(client, "leader", timeout)


def acquire(client: "Client", request_id: str, holder: str, name: str, n: int, wait: float) -> Grant:
    """Wait in line at the leader up to ``wait`` seconds for ``n`` units (or permits) of ``name``."""
    return _leader(client, "acquire", wait + 2.0, request_id=request_id, holder=holder, name=name, n=n, timeout=wait)


def renew(client: "Client", lease_id: str, holder: str, name: str, n: int, timeout: float) -> Renewed:
    return _leader(client, "renew", timeout, lease_id=lease_id, holder=holder, name=name, n=n)


def release(client: "Client", lease_id: str, name: str, timeout: float = 5.0) -> None:
    _leader(client, "release", timeout, lease_id=lease_id, name=name)


# -- intentions -----------------------------------------------------------------------------


def intent_propose(client: "Client", id: str, action: object, claims: list[str] | None, priority: float,
                   window: float, hold: float, proposer: str, wait: float = 0.0, *, listen: bool = True,
                   require: list[str] | None = None, trace: str | None = None) -> Vote:
    """Have the voters vote on an intention's claims (None: no vote) and the listeners hear it
    (unless ``listen`` is False; ``require``: the listeners whose silence objects; ``trace``: a
    W3C traceparent the listeners' hooks join); answers once the vote has decided and the listeners
    have answered (within about ``window``, or ``wait`` if longer: it may wait in line that long)."""
    options: dict[str, object] = {"wait": wait} if wait else {}
    if trace:
        options["trace"] = trace
    if claims is not None:
        options["claims"] = claims
    if not listen:
        options["listen"] = False
    if require:
        options["require"] = require
    return _node(client, "intent_propose", max(window, wait) + 2.0, id=id, action=action, priority=priority,
                 window=window, hold=hold, proposer=proposer, **options)


def intent_done(client: "Client", id: str, timeout: float = 5.0) -> None:
    """Release an approved intention's claims."""
    _node(client, "intent_done", timeout, id=id)


def intent_listeners(client: "Client", timeout: float = 5.0) -> list[str]:
    """The actors, mesh-wide, that hear intentions (define ``on_intention``)."""
    return _node(client, "intent_listeners", timeout)["actors"]


def intent_answer(client: "Client", address: str, id: str, listener: str, objection: dict[str, Any] | None,
                  timeout: float) -> Counted:
    """A listener's answer to intention ``id``, to the node at ``address`` that published it:
    ``objection`` ({reason, weight, kind}) or None."""
    return client._control_at(address, "intent_answer", timeout, id=id, listener=listener, objection=objection)


def intent_escalate(client: "Client", id: str, action: object, claims: list[str], priority: float, proposer: str,
                    evidence: float, objections: list[dict[str, Any]], wait: float) -> Ruling:
    """Hand an intention with strategy objections to the leader; answers when it (or a person) has
    decided, or after ``wait`` seconds (denied)."""
    return _leader(client, "intent_escalate", wait + 5.0, id=id, action=action, claims=claims, priority=priority,
                   proposer=proposer, evidence=evidence, objections=objections, timeout=wait)


def intent_decide(client: "Client", id: str, approve: bool, by: str, timeout: float = 10.0) -> Decided:
    """A person's decision on an escalation that waits at the leader (``mesh approve``/``deny``)."""
    return _leader(client, "intent_decide", timeout, id=id, approve=approve, by=by)


def intents(client: "Client", timeout: float = 5.0) -> Listing:
    return _node(client, "intents", timeout)


# -- a person's controls: one agent, and alerts ---------------------------------------------


class AgentInfo(TypedDict):
    """Where one agent stands, as the node that runs it says."""

    name: str
    node: str
    state: str  #: starting, running, restarting, stopped or failed
    pid: int | None  #: its process (the last one, once stopped)
    incarnation: int
    reason: str  #: why it is in that state ("stopped by ...")


class Alert(TypedDict):
    """An alert kept in the shared state until a person acknowledges it."""

    id: str
    reason: str
    data: object
    by: str  #: who raised it
    node: str  #: the node that keeps it
    at: float  #: time.time() when raised
    acknowledged: bool
    acknowledged_by: str | None
    acknowledged_at: float | None


def _at_agent(client: "Client", op: str, timeout: float, /, **fields: object) -> tuple[str, Any]:
    """Send ``op`` to the client's node; if the agent runs on another node, that node's answer says
    where (``elsewhere``, ``address``) and the request goes there once. (address, answer)."""
    answer = _node(client, op, timeout, **fields)
    if isinstance(answer, dict) and "elsewhere" in answer and isinstance(answer.get("address"), str):
        address = answer["address"]
        return address, client._control_at(address, op, timeout, forwarded=True, **fields)
    return client.node, answer


def agent_stop(client: "Client", name: str, by: str, grace: float | None = None,
               timeout: float = 5.0) -> tuple[str, AgentInfo]:
    """Stop agent ``name`` where it runs (SIGTERM, SIGKILL after ``grace`` s or its stop timeout);
    it stays stopped. Answers at once: the acting node's address, and the agent as it was asked."""
    fields: dict[str, object] = {} if grace is None else {"grace": grace}
    return _at_agent(client, "agent_stop", timeout, name=name, by=by, **fields)


def agent_restart(client: "Client", name: str, by: str, grace: float | None = None,
                  timeout: float = 5.0) -> tuple[str, AgentInfo]:
    """Start a fresh process of agent ``name`` where it runs (the running one ended first)."""
    fields: dict[str, object] = {} if grace is None else {"grace": grace}
    return _at_agent(client, "agent_restart", timeout, name=name, by=by, **fields)


def agent_info(client: "Client", address: str, name: str, timeout: float = 5.0) -> AgentInfo:
    """Agent ``name`` as the node at ``address`` (the one that runs it) sees it now."""
    return client._control_at(address, "agent_info", timeout, name=name)


def alert(client: "Client", reason: str, data: object, by: str, timeout: float = 5.0) -> Alert:
    """Keep a new alert in the shared state (``$alerts/ID``); answers it whole."""
    return _node(client, "alert", timeout, reason=reason, data=data, by=by)


def alerts(client: "Client", unacknowledged: bool = False, timeout: float = 5.0) -> list[Alert]:
    """The alerts kept, oldest first (``unacknowledged``: only those that wait for a person)."""
    return _node(client, "alerts", timeout, all=not unacknowledged)["alerts"]


def alert_ack(client: "Client", id: str, by: str, timeout: float = 5.0) -> Alert:
    """Mark alert ``id`` acknowledged by ``by`` (UnknownAlert if none is kept under that id)."""
    return _node(client, "alert_ack", timeout, id=id, by=by)
