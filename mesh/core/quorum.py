"""The majority rule: the one place mesh counts a quorum of voters.

Every protocol that must not decide twice (the election's votes, the intention voters'
acknowledgements, the lease in :mod:`mesh.core.fencing`) counts a *majority* of one fixed
voter list: more than half of its members. Any two majorities of the same list share a
voter, which is what each protocol's safety argument rests on; so they must all count
with this rule, over the same list.

A voter list with no members has no majority: :func:`has_quorum` is false for it, and the
callers that treat "no voters known yet" specially (the lease) say so themselves.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable


def majority(n: int) -> int:
    """The fewest of ``n`` voters that form a majority: ``n // 2 + 1`` (1 of 1, 2 of 3, 3 of 4 and 5)."""
    if n < 0:
        raise ValueError("a voter count cannot be negative")
    return n // 2 + 1


def has_quorum(voters: Collection[str], present: Iterable[str]) -> bool:
    """Whether the voters among ``present`` (names; others are ignored) form a majority of ``voters``."""
    members = set(voters)
    return len(members.intersection(present)) >= majority(len(members)) if members else False


def fewest_blocking(n: int) -> int:
    """The fewest of ``n`` voters that leave too few others for a majority: ``n - majority(n) + 1``
    (a majority of an odd list, half of an even one)."""
    return n - majority(n) + 1


def blocks_majority(n: int, count: int) -> bool:
    """Whether ``count`` of ``n`` voters leave too few others to form a majority without them.

    Once that many voters refused an intention, no majority can approve it; while a node hears
    that many voters, no leader can be elected or keep its term among the voters it cannot hear
    (for odd ``n`` this is a majority, for even ``n`` half suffices)."""
    return count >= fewest_blocking(n)
