"""What `mesh status` shows: this node, its agents and the mesh's as the directory lists them,
what the leader assigned but nobody runs yet, the election, and the members."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ...core.quorum import majority
from ..clock import REAL_CLOCK, Clock
from ..gossiper import Directory
from ..leadership import NODE_PREFIX
from ..zap import refusals
from .alerts import summary as alert_summary
from .assignments import assignments, latest_assignment
from .agent_metrics import node_metrics
from .constants import AGENTS_PREFIX, LEASE_S, REPLACE_AFTER_S
from .follower import member_states

if TYPE_CHECKING:
    from .daemon import Node


def _placeholder(name: str, node: str | None, state: str, reason: str, group: str) -> dict:
    return {"name": name, "node": node, "pid": None, "state": state, "restarts": None, "messages": None,
            "incarnation": 0, "endpoint": None, "embedded": False, "group": group, "reason": reason,
            "bad_frames": None, "remote": True, "budget": None, "budget_kills": None, "cpu": None,
            "memory_bytes": None, "throttled_s": None, "throttled": None}


def members(directory: Directory, clock: Clock = REAL_CLOCK) -> list[dict]:
    now = clock.time()  # the gossiper's clock: last_heard is on it
    latest = member_states(directory)
    return [
        {"name": m["name"], "address": m["address"], "state": m["state"], "incarnation": m["incarnation"],
         "last_heard_s": round(max(0.0, now - m["last_heard"]), 3)}
        for m in sorted(latest.values(), key=lambda m: m["name"])
    ]


def status(node: Node) -> dict:
    directory = node.directory
    agents = []
    now = node.clock.monotonic()  # the heartbeats' clock
    for inst in node.supervisor.instances.values():
        entry = inst.as_status(node.name)
        # An agent the node started reports its counters only when they change: rates run until now.
        entry.update({"cpu": None, "memory_bytes": None, "throttled_s": 0.0, "throttled": False,
                      "metrics": inst.metrics.as_status(None if inst.embedded or inst.state != "running" else now),
                      "last_report_s": round(max(0.0, now - inst.last_heard), 3) if inst.state == "running" else None})
        entry.update(node.enforcer.info(inst.name))
        agents.append(entry)
    local = {a["name"] for a in agents}
    for key, listed_at in sorted(directory.items(AGENTS_PREFIX).items()):
        name = key[len(AGENTS_PREFIX):]
        if name in local or not isinstance(listed_at, dict) or listed_at.get("node") == node.name:
            continue
        if not directory.is_live(listed_at.get("node")):
            continue  # its node is gone: the entry goes with that node's incarnation
        agents.append({"name": name, "node": listed_at.get("node"), "pid": listed_at.get("pid"),
                       "state": listed_at.get("state", "running"),
                       "restarts": None, "messages": None, "incarnation": listed_at.get("incarnation", 0),
                       "endpoint": listed_at.get("endpoint"), "embedded": False, "group": name,
                       "reason": listed_at.get("reason", ""),
                       "bad_frames": None, "remote": True, "budget": listed_at.get("budget"), "budget_kills": None,
                       "cpu": None, "memory_bytes": None, "throttled_s": None, "throttled": None})
    # What the leader assigned but no node runs yet, and what waits for a leader.
    listed = {a["name"] for a in agents}
    latest = latest_assignment(directory)
    found = assignments(directory)
    unplaced = found[max(found)].get("unplaced", {}) if found else {}
    unplaced = unplaced if isinstance(unplaced, dict) else {}
    for name, entry in sorted(latest.items()):
        if name in listed:
            continue
        listed.add(name)
        where = entry.get("node")
        if where:
            state, reason = "assigned", f"assigned to {where}"
        elif entry.get("draining"):
            state, reason = "draining", f"stopping on {entry['draining']} before it moves"
        else:
            state, reason = "unplaced", str(unplaced.get(name, "placed nowhere"))
        agents.append(_placeholder(name, where, state, reason, entry.get("group") or name))
    election = election_status(node)
    for a in node.spec.agents:
        for name in a.instance_names():
            if name not in listed:
                agents.append(_placeholder(name, None, "waiting", election.get("waiting", "waiting for the leader"), a.name))
    return {
        "node": {
            "name": node.name,
            "address": node.address,
            "pid": os.getpid(),
            "uptime_s": round(node.clock.time() - node.started, 3),
            "stopping": node.stop_requested,
            "bad_frames": node.bad.total,
            "bad_gossip": node.gossip.bad_gossip,  # entries peers sent that their origin may not write (refused)
            "refused": refusals(),  # connections the gate refused (a key not trusted), by peer address
            # with keys: requests refused for the caller's role, by op; peer envelopes from non-node keys, by kind
            "forbidden": dict(node.control.forbidden),
            "peer_refused": dict(node.peer_refused),
            "answers_dropped": node.intentions.answers_dropped,  # listeners' answers: late, unknown, malformed
            "votes_intentions": node.intents.votes,  # its spec says voter and (with keys) its key does
        },
        "leader": node.leadership.leader,
        "term": node.leadership.term,
        "kill_switch": node.kill_switch.pulled(),
        "alerts": alert_summary(directory),  # what waits for a person: {unacknowledged, newest}
        **node.intentions.listing(),
        "resources": node.pools.snapshot(),
        # Test Orchestra runs, as their conductors keep them (``orchestra/NAME``): at most 20.
        "orchestra": {k[len("orchestra/"):]: v for k, v in list(directory.items("orchestra/").items())[:20]
                      if isinstance(v, dict)},
        "metrics": node_metrics([a["metrics"] for a in agents if "metrics" in a], node.intentions.outcomes,
                                node.escalations.escalated),
        "election": election,
        "agents": agents,
        "members": members(directory, node.clock),
    }


def election_status(node: Node) -> dict:
    lead = node.leadership
    follower = node.follower
    voters = lead.elector.voters
    heard = follower.voters_heard()
    quorum = majority(len(voters)) if voters else 0
    out = {"role": lead.elector.role if lead.elector.voter else "observer", "voter": lead.elector.voter,
           "voters": voters, "voters_heard": heard, "quorum": quorum,
           "leader_since": lead.leader_since if lead.is_leader else None, "candidacies": lead.candidacies,
           "terms_led": lead.terms_led, "stale_decisions": follower.stale_decisions, "fenced": follower.fenced,
           "decisions_issued": follower.decisions_issued, "last_decision": follower.last_decision,
           "settled": follower.settled, "joined": lead.joined, "lease_s": LEASE_S, "replace_after_s": REPLACE_AFTER_S}
    if lead.leader is None:
        if not lead.joined:
            why = f"not joined yet (trying {', '.join(node.join)})"
        elif len(heard) < quorum:
            why = f"{len(heard)} of {len(voters)} voters heard, {quorum} needed"
        else:
            why = "an election is under way"
        out["waiting"] = f"no leader: {why}"
    return out


def leader_info(node: Node, body: dict) -> dict:
    """The ``leader`` op: who leads, in which term, at which address (or why nobody does)."""
    lead = node.leadership.leader
    address = None
    if lead is not None:
        record = node.directory.get(NODE_PREFIX + lead)
        address = record.get("address") if isinstance(record, dict) else None
    out = {"leader": lead, "term": node.leadership.term, "address": address}
    if lead is None:
        out["waiting"] = election_status(node).get("waiting")
    return out
