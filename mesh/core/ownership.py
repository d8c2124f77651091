"""Who may write which runtime key: the owner rule of every ``$`` prefix of the shared state.

Gossip relays entries: a delta from one peer carries entries of every origin it holds. So the
rule is tied to an entry's *origin* (the member ``name@incarnation`` whose writes it holds) and
its ``writer``, not to whoever relayed it: a runtime entry is kept only if its origin's name, its
writer and the key's owner are one member. Runtime entries are never adopted from a dead origin
(see :mod:`mesh.core.gossip`), so for them writer and origin always agree.

Every rule depends only on the entry itself (key, value, origin): each node decides alike whatever
order entries arrive in, so refusing never makes two replicas differ.

==================  ======================================================================
prefix              who may write it
==================  ======================================================================
``$node/NAME``      member NAME only (its record: voter, declared agents, load), deletes too
``$acted/NAME``     member NAME only (what it acted on), deletes too
``$agents/X``       the node that runs X: the value's ``node`` is the writer
``$budget/X``       the node that ended X: the value's ``node`` is the writer
``$subs/T/A``       the node of subscriber A: the value's ``node`` is the writer
``$intents/ID``     the proposer's node: the value's ``node`` is the writer
``$assign/TERM``    that term's leader: the value's ``leader`` is the writer
``$escalations/ID`` the leader that took it: the value's ``leader`` is the writer
``$alerts/ID``      any member (any node acknowledges an alert)
``$kill``           any member (an operator pulls it through any node)
any other ``$``     nobody: an unknown runtime key from the network is refused
==================  ======================================================================

A delete carries no value: a tombstone of a key whose owner is named by the value is taken from
any member (it may hide an entry until its owner writes again; it never redirects one).

Identity: the origin's name is who the member says it is. Without keys a liar can still claim a
name; with keys the runtime ties a peer to the name its key was issued for (the hook is
``Gossiper.identify``).
"""

from __future__ import annotations

RESERVED_PREFIX = "$"
#: Keys whose NAME after the prefix is their owner (value and delete alike).
_NAMED_BY_KEY = ("$node/", "$acted/")
#: Keys whose value names their owner, in the field given.
_NAMED_BY_VALUE = (("$agents/", "node"), ("$budget/", "node"), ("$subs/", "node"), ("$intents/", "node"),
                   ("$assign/", "leader"), ("$escalations/", "leader"))
#: Keys any member may write.
_ANY_MEMBER = ("$alerts/",)
_ANY_MEMBER_KEYS = ("$kill",)


def refusal(origin: str, writer: str, key: str, value: object, tombstone: bool) -> str | None:
    """Why member ``origin`` may not hold this entry, or None if it may. ``origin`` is the name of
    the origin the entry arrived in, ``writer`` the name the entry gives."""
    if not key.startswith(RESERVED_PREFIX):
        return None  # users' keys: anyone's
    if writer != origin:
        return "a runtime entry written by another member than its origin"
    for prefix in _NAMED_BY_KEY:
        if key.startswith(prefix):
            return None if key[len(prefix):] == origin else f"{prefix}NAME written by another member than NAME"
    for prefix, field in _NAMED_BY_VALUE:
        if key.startswith(prefix):
            if tombstone:
                return None
            owner = value.get(field) if isinstance(value, dict) else None
            return None if owner == origin else f"{prefix}... whose {field} is not its writer"
    if key in _ANY_MEMBER_KEYS or key.startswith(_ANY_MEMBER):
        return None
    return "an unknown runtime key"
