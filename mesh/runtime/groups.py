"""Replica groups on the client's side: a group's name spreads messages over its replicas.

A node spec's ``replicas = N`` runs ``NAME.0`` .. ``NAME.N-1``; ``NAME`` is the group. A ref to
the group (``client.actor("worker")``) learns that its name is a group when it first resolves
it (the node answers with a replica's name), and from then on sends each ask and each tell to the
next running replica, round robin, from the member list the node gives (op ``group``: every
running replica, local and on other nodes), kept GROUP_TTL_S seconds. A replica that turns out
gone before the message left (Unreachable) is dropped from the list and the message goes to the
next one; one that died with the ask in flight raises ActorDied, as for a single actor, since
the ask may have run. Round robin (not least loaded): it needs nothing from the replicas, costs
one counter step per message, and a burst of N asks from one thread lands on N replicas.
"""

from __future__ import annotations

import itertools
import threading
from typing import TYPE_CHECKING

from . import rpc

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client

#: How long a group's member list is used before the node is asked again, in seconds.
GROUP_TTL_S = 1.0


class Groups:
    """One client's view of the replica groups it sends to."""

    def __init__(self, client: "Client"):
        self.client = client
        self.names: set[str] = set()  #: names known to be groups (learnt from resolve answers)
        self._lists: dict[str, tuple[float, list[rpc.Member]]] = {}  # name -> (fetched at, members)
        self._turns: dict[str, itertools.count[int]] = {}
        self._lock = threading.Lock()

    def learn(self, name: str, members: list[rpc.Member]) -> list[rpc.Member]:
        """Keep ``members`` as group ``name``'s list, with their limits and cancel addresses."""
        client = self.client
        for m in members:
            client._learn_limit(m["endpoint"], m)
            if "cancel" in m:
                client.cancel_at[m["endpoint"]] = m["cancel"]
        self._lists[name] = (client.clock.monotonic(), members)
        return members

    def fresh(self, name: str) -> list[rpc.Member] | None:
        """The members of ``name`` if listed less than GROUP_TTL_S ago, else None."""
        listed = self._lists.get(name)
        if listed is None or self.client.clock.monotonic() - listed[0] > GROUP_TTL_S:
            return None
        return listed[1]

    def pick(self, name: str, members: list[rpc.Member], skip: list[str]) -> rpc.Member | None:
        """The next member of ``name`` in turn, not one at an endpoint of ``skip``; None: none left."""
        if skip:
            members = [m for m in members if m["endpoint"] not in skip]
        if not members:
            return None
        turn = self._turns.get(name)
        if turn is None:
            with self._lock:
                turn = self._turns.setdefault(name, itertools.count())
        return members[next(turn) % len(members)]

    def members(self, name: str) -> list[rpc.Member]:
        """The members of ``name``: the cached list, or the node's answer once it is stale."""
        members = self.fresh(name)
        return self.learn(name, rpc.group(self.client, name)) if members is None else members

    async def members_async(self, name: str) -> list[rpc.Member]:
        members = self.fresh(name)
        return self.learn(name, await rpc.group_async(self.client, name)) if members is None else members

    def drop(self, name: str, endpoint: str) -> None:
        """The replica of ``name`` at ``endpoint`` is gone: leave it out until the node lists it again."""
        listed = self._lists.get(name)
        if listed is not None:
            self._lists[name] = (listed[0], [m for m in listed[1] if m["endpoint"] != endpoint])

    def expire(self, name: str) -> None:
        """Ask the node for ``name``'s members on the next message."""
        self._lists.pop(name, None)
