"""Reading the leaders' assignments (``$assign/TERM``) from the shared state: which replica
runs on which node, as each term's leader decided it."""

from __future__ import annotations

from ...spec import NodeSpec
from ..gossiper import Directory
from .constants import ASSIGN_PREFIX


def assignments(directory: Directory) -> dict[int, dict]:
    """Every well-formed assignment in view, by term."""
    out = {}
    for key, value in directory.items(ASSIGN_PREFIX).items():
        term = key[len(ASSIGN_PREFIX):]
        if term.isdigit() and isinstance(value, dict) and isinstance(value.get("replicas"), dict):
            out[int(term)] = value
    return out


def latest_assignment(directory: Directory) -> dict[str, dict]:
    """The replicas of the newest assignment in view (for status and name lookups)."""
    found = assignments(directory)
    if not found:
        return {}
    return {r: e for r, e in found[max(found)]["replicas"].items() if isinstance(e, dict)}


def placement_state(directory: Directory, spec: NodeSpec, name: str) -> str | None:
    """For a name this node does not run: waiting / assigned / unplaced, or None if unknown."""
    latest = latest_assignment(directory)
    if name in latest:
        return "assigned" if latest[name].get("node") else "waiting"
    for a in spec.agents:
        if name == a.name or name in a.instance_names():
            return "waiting"
    return None
