"""Runs the Raft-lite elector inside a node: durable term and vote, the voter set, the bytes.

* Term, vote and the voters this node has learned go to ``election.json`` in the
  node's run folder, written to a temporary file, fsynced and renamed (and the
  folder fsynced) *before* any message that follows from them is sent: a node
  SIGKILLed and restarted never votes twice in a term.
* Election messages travel like gossip, as EVENT envelopes addressed to
  ``$election`` over the gossiper's per-peer DEALERs (no queueing for a peer that
  is not connected: a lost election message is retried by the protocol itself).
* Voters are learned from the gossiped ``$node/NAME`` records (``voter = true`` in a
  node's spec), which only NAME may write (:mod:`mesh.core.ownership`), and only once
  this node has heard NAME first hand: NAME's own gossip showed a heartbeat this node
  sent (a round trip; the gossip's ``seen_by``). A record is easy to forge, a round
  trip is not: made-up members that never answer can never add voters and leave the
  mesh without a quorum. A learned voter is remembered on disk and counts for the quorum
  until it leaves with ``mesh down``: a node that dies still counts, so two sides
  of a partition can never both have a majority.
* A node started with ``--join`` does not stand for election before it knows another
  voter of the mesh, so it cannot lead a mesh of one by mistake.
* Nothing election-related leaves or enters a node before its gossip has announced it
  (a node whose name a live member holds must change nothing in the mesh), and it
  stands only once it has learned the voters the gossip brought since: a node that
  others list as a seed joins their mesh instead of leading one of its own.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import wire
from ..core.effects import Event, Send
from ..core.election import LEADER, ElectionConfig, Elector
from ..spec import _name_problem
from .clock import REAL_CLOCK, Clock

if TYPE_CHECKING:
    from .gossiper import Gossiper

log = logging.getLogger("mesh.election")

ELECTION_RECIPIENT = "$election"
NODE_PREFIX = "$node/"
_EVENT = int(wire.Kind.EVENT)


class Leadership:
    def __init__(self, name: str, voter: bool, config: ElectionConfig, run_dir: Path, gossiper: Gossiper, seeded: bool,
                 on_event: Callable[[str], None] = lambda line: None, clock: Clock = REAL_CLOCK,
                 rng: random.Random | None = None):
        self.name = name
        self.clock = clock
        self.voter = voter
        self.config = config
        self.path = run_dir / "election.json"
        self.gossiper = gossiper
        self.on_event = on_event
        self.joined = not seeded
        #: With keys, whether NAME's trusted key lets it vote (the daemon's hook); None: the records' word.
        self.may_vote: Callable[[str], bool] | None = None
        self._unvouched: set[str] = set()  # claims already logged, so each is logged once
        self._learned = False  # learn() ran since the gossip announced this node
        self.storage = self._load()
        voters = {v for v in self.storage.get("voters") or [] if isinstance(v, str) and _name_problem(v) is None}
        if voter:
            voters.add(name)
        else:
            voters.discard(name)
        self.storage["voters"] = sorted(voters)
        self._saved = dict(self.storage)
        self._write()
        self.elector = Elector(name, self.storage["voters"], config, rng or random.Random(), self.storage, clock.monotonic())
        self.leader_since: float | None = None  # wall-clock time this node last became leader
        self.candidacies = 0
        self.terms_led = 0
        self._ids = iter(range(1, 1 << 62))

    # -- the disk ----------------------------------------------------------------------

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"term": 0, "voted_for": None, "voters": []}
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"cannot read {self.path}: {exc} (remove it to start this node afresh)") from None
        if not isinstance(data, dict) or type(data.get("term")) is not int:
            raise RuntimeError(f"{self.path} is not an election record (remove it to start this node afresh)")
        return {"term": data["term"], "voted_for": data.get("voted_for"), "voters": list(data.get("voters") or [])}

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        data = json.dumps({"term": self.storage.get("term", 0), "voted_for": self.storage.get("voted_for"),
                           "voters": self.storage.get("voters", [])}).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def forget_peers(self) -> None:
        """On a graceful stop: the others drop this node from their voters; it drops them too,
        so that it can later start alone (term and vote are kept)."""
        self.storage["voters"] = [self.name] if self.voter else []
        self._write()

    # -- time and bytes in ---------------------------------------------------------------

    def receive(self, sender: str, body: object) -> None:
        if not self.gossiper.announced:
            return  # until the name is settled, this node takes no part
        self._apply(self.elector.step(sender, body, self.clock.monotonic()))

    def tick(self) -> None:
        if not self._learned:
            return
        if not self.joined:
            # Joined means: knows another voter of the mesh. Meeting a peer is not enough: a
            # node that stood before it learned the voters would lead a mesh of one.
            if not any(v != self.name for v in self.elector.voters):
                return
            self.joined = True
        self._apply(self.elector.tick(self.clock.monotonic()))

    def learn(self, records: dict[str, dict[str, object]], states: dict[str, str]) -> None:
        """Update the voter set from the gossiped node records and member states."""
        if self.gossiper.announced:
            self._learned = True
        voters = set(self.storage.get("voters") or [])
        observers = set()
        heard = self.gossiper.node.seen_by  # members that answered this node's own gossip
        for name, record in records.items():
            state = states.get(name)
            if state is None or _name_problem(name) is not None:
                continue  # a made-up member name from the network is never a voter
            claims = record.get("voter") is True
            if claims and not self._vouched(name):
                voters.discard(name)
                claims = False
            if claims and state != "left" and (name in voters or name in heard):
                voters.add(name)
            elif state in ("alive", "suspect"):
                observers.add(name)
        for name, state in states.items():
            if state == "left" and name != self.name:
                voters.discard(name)
                observers.discard(name)
        if self.voter and self._vouched(self.name):
            voters.add(self.name)
        else:
            voters.discard(self.name)
        wanted = sorted(voters)
        if wanted != self.elector.voters or sorted(observers) != self.elector.observers:
            if wanted != self.elector.voters:
                self.on_event(f"voters: {', '.join(wanted) or '(none)'}")
            self.storage["voters"] = wanted
            self.elector.set_voters(wanted, sorted(observers), self.clock.monotonic())
            self._apply([])

    def _vouched(self, name: str) -> bool:
        """Whether NAME's key lets it vote (always, without keys); a claim it does not back is logged once."""
        if self.may_vote is None or self.may_vote(name):
            self._unvouched.discard(name)
            return True
        if name not in self._unvouched:
            self._unvouched.add(name)
            log.warning("node %s: %s claims voter = true but its trusted key does not let it vote: not counted"
                        " (mesh keys add DIR %s --role node --voter)", self.name, name, name)
        return False

    def transfer(self) -> None:
        """Hand leadership over before a graceful stop."""
        self._apply(self.elector.transfer(self.clock.monotonic()))

    # -- what the node reads ---------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.elector.role == LEADER

    @property
    def term(self) -> int:
        return self.elector.term

    @property
    def leader(self) -> str | None:
        return self.elector.leader

    # -- bytes out -----------------------------------------------------------------------------

    def _apply(self, outputs: list[Send | Event]) -> None:
        keys = ("term", "voted_for", "voters")
        if any(self.storage.get(k) != self._saved.get(k) for k in keys):
            self._write()  # durable before anything that follows from it leaves this node
            self._saved = {k: self.storage.get(k) for k in keys}
        for out in outputs:
            if type(out) is Send:
                self.gossiper.send_to_member(out.to, out.message, ELECTION_RECIPIENT)
            elif type(out) is Event:
                self._event(out)

    def _event(self, ev: Event) -> None:
        if ev.name == "leader":
            self.leader_since = self.clock.time()
            self.terms_led += 1
            self.on_event(f"elected leader of term {ev.data['term']}")
        elif ev.name == "candidate":
            self.candidacies += 1
            log.info("standing for leader in term %s", ev.data["term"])
        elif ev.name == "stepped_down":
            self.on_event(f"stepped down as leader of term {ev.data['term']}: {ev.data['why']}")
        elif ev.name == "follower":
            self.on_event(f"following {ev.data['leader']} in term {ev.data['term']}")
