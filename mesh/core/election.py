"""Raft-lite: Raft's leader election without the replicated log.

Each voter is a follower, a pre-candidate, a candidate or the leader of a term.

* A follower that hears nothing from a leader for its election timeout (random in
  ``[election_min, election_max]`` seconds, new each time) starts a *pre-vote*: it
  asks the others whether they would vote for it in ``term + 1`` without changing
  any term. A peer says yes only if it has not heard from a leader within its own
  minimum election timeout. So a node coming back from a partition cannot depose a
  healthy leader by bumping the term (Ongaro's thesis, 9.6).
* With a majority of pre-votes it becomes a candidate: term + 1, votes for itself,
  and sends RequestVote. A voter grants at most one vote per term (Raft's rule;
  with no log, any candidate of a newer term is up to date), and its term and vote
  go to ``storage`` before it answers: the runtime makes that storage durable
  (fsync), so a node restarted after SIGKILL never votes twice in a term.
* A candidate with a majority of votes leads the term and sends heartbeats every
  ``heartbeat`` seconds. Anyone who sees a newer term steps down to follower.
* Check-quorum: a leader that has not heard from a majority within
  ``election_max`` seconds steps down, so an isolated leader stops deciding.
* Leadership transfer: ``transfer(now)`` (on graceful shutdown) sends TimeoutNow to
  the most recently heard follower, which starts an election at once, skipping
  pre-vote.
* Observers are nodes that do not vote (``voter = false``): they never stand, never
  count for a quorum, and follow the leader's heartbeats like anyone else.
* Heartbeats carry ``seq``, the number of the leader's latest decision in its term,
  so a follower knows how recent a decision it must have seen before acting
  (the runtime's fencing uses it; :meth:`Elector.decided` sets it).
* The voter set can grow (:meth:`Elector.set_voters`); it is the runtime's job to
  keep it stable (it only learns voters and forgets those that left).
* Two meshes that meet (each elected its leaders among its own voters, then their
  voter sets merged) end with one leader in a term newer than both, so every decision
  of either side is fenced: a leader that hears a heartbeat of another leader of its
  own term, or a newer term from a voter that was not among those it was elected by,
  knows it led one side of a split. Of two leaders of one term the lower name stands
  at once for the next term and the other moves to that term without a leader (so it
  votes); a leader of an older term stands at once for the term after the newer one;
  a follower that hears a second leader in its term moves to the next term, which
  ends both, and so does a follower whose leader is replaced by one elected without
  it (heartbeats name the voters their leader was elected by; a fresh joiner has
  followed nobody, so joining is not mistaken for this). The first election after
  that settles it.

Safety: at most one leader per term (a majority of distinct votes, one vote per
voter per term, persisted). Every leader decision carries its term; ``accepts``
says whether a decision of a given term may be accepted (fencing).

Pure: time comes in as ``now`` in seconds, randomness from the injected RNG.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .effects import Effect, Event, Send
from .quorum import majority
from .rng import Rng

FOLLOWER, PRECANDIDATE, CANDIDATE, LEADER = "follower", "pre-candidate", "candidate", "leader"
#: Terms at or above this are refused (far beyond any real mesh: one election a millisecond for 10^8 years).
MAX_TERM = 1 << 62


@dataclass(frozen=True)
class ElectionConfig:
    election_min: float = 1.0  #: seconds, the shortest election timeout
    election_max: float = 2.0  #: seconds, the longest election timeout
    heartbeat: float = 0.100  #: seconds between a leader's heartbeats

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat < self.election_min <= self.election_max:
            raise ValueError("need 0 < heartbeat < election_min <= election_max (seconds)")


class Elector:
    """One voter's view of the election."""

    def __init__(self, name: str, voters: list[str], config: ElectionConfig, rng: Rng,
                 storage: dict[str, Any], now: float) -> None:
        self.name = name
        self.voters = sorted(set(voters))
        self.peers = [v for v in self.voters if v != name]
        self.observers: list[str] = []
        self.seq = 0  #: leader: the number of its latest decision in this term
        self.leader_seq = 0  #: follower: the seq the leader last announced
        self.config = config
        self.rng = rng
        self.storage = storage  # survives restarts: {"term": int, "voted_for": str | None}
        self.role = FOLLOWER
        self.leader: str | None = None
        self.votes: set[str] = set()
        self.last_leader_contact = -1e18
        self.heard: dict[str, float] = {}  # leader: when each follower last answered
        self.electorate: frozenset[str] = frozenset()  # leader: the voters when it was elected
        # A sole voter stands at once: nobody else could lead, so waiting out a timeout gains nothing.
        self._deadline = now if self.voters == [name] else now + self._timeout()
        self._next_heartbeat = 0.0
        self._became_leader_at = now

    # -- persistent state -------------------------------------------------------------

    @property
    def term(self) -> int:
        return int(self.storage.get("term", 0))

    @property
    def voted_for(self) -> str | None:
        return self.storage.get("voted_for")

    def _persist(self, term: int, voted_for: str | None) -> None:
        # The runtime writes this to disk (fsync) before anything that follows is sent.
        self.storage["term"] = term
        self.storage["voted_for"] = voted_for

    @property
    def voter(self) -> bool:
        return self.name in self.voters

    def set_voters(self, voters: list[str], observers: Iterable[str] = (), now: float = 0.0) -> None:
        """Change who votes (and who only follows). A new voter gets one ``election_min`` of grace
        before a leader's check-quorum counts it as unheard."""
        voters = sorted(set(voters))
        for v in voters:
            if v not in self.voters and v != self.name:
                self.heard[v] = now
        was_voter = self.voter
        self.voters = voters
        self.peers = [v for v in voters if v != self.name]
        self.observers = sorted(set(observers) - set(voters) - {self.name})
        if was_voter and not self.voter and self.role != FOLLOWER:
            self.role = FOLLOWER
            self.votes = set()

    def wake_at(self) -> float:
        """The next time :meth:`tick` has something to do (a heartbeat, a timeout)."""
        if not self.voter:
            return float("inf")
        return self._next_heartbeat if self.role == LEADER else self._deadline

    def decided(self) -> int:
        """The leader made a decision: the next heartbeats announce it. Returns its seq."""
        self.seq += 1
        return self.seq

    @property
    def quorum(self) -> int:
        return majority(len(self.voters))

    def accepts(self, term: int) -> bool:
        """Fencing: a decision made in ``term`` may be accepted only if no newer term is known."""
        return term >= self.term

    # -- inputs -------------------------------------------------------------------------

    def tick(self, now: float) -> list[Effect]:
        out: list[Effect] = []
        if not self.voter:
            return out
        if self.role == LEADER:
            if now >= self._next_heartbeat:
                self._next_heartbeat = now + self.config.heartbeat
                out += self._heartbeats()
            # Check-quorum over the longest election timeout: a leader stepping down sooner gains
            # nothing (followers wait at least election_min anyway) and a busy machine's stall of
            # one process would end healthy terms.
            recent = 1 + sum(1 for p in self.peers if now - self.heard.get(p, -1e18) < self.config.election_max)
            if recent < self.quorum and now - self._became_leader_at > self.config.election_max:
                out += self._become_follower(self.term, None, now, "lost quorum")
            return out
        if now >= self._deadline:
            if len(self.voters) == 1:
                return self._start_election(now)
            return self._start_prevote(now)
        return out

    def step(self, sender: str, message: object, now: float) -> list[Effect]:
        if sender not in self.voters or sender == self.name or not isinstance(message, dict):
            return []
        kind = message.get("t")
        term = message.get("term")
        if type(term) is not int or not 0 <= term < MAX_TERM:
            return []  # a forged huge term would be persisted and overflow the wire at term + 1
        if not self.voter:
            return self._observe(sender, kind, term, message, now)
        # Pre-votes carry the term proposed, not the sender's: they never change terms.
        if kind == "prevote":
            heard_leader = now - self.last_leader_contact < self.config.election_min
            grant = term > self.term and self.role != LEADER and not heard_leader
            return [Send(sender, {"t": "prevote_reply", "term": term, "granted": grant})]
        if kind == "prevote_reply":
            if self.role == PRECANDIDATE and term == self.term + 1 and message.get("granted") is True:
                self.votes.add(sender)
                if len(self.votes) >= self.quorum:
                    return self._start_election(now)
            return []
        out: list[Effect] = []
        previous = self.leader
        electorate = message.get("electorate") if kind == "heartbeat" else None
        stranger = isinstance(electorate, list) and self.name not in electorate  # elected without this voter
        if term > self.term:
            # A newer term from a voter this leader was not elected among: two meshes met.
            split = self.role == LEADER and kind in ("heartbeat", "heartbeat_reply") and (
                sender not in self.electorate or stranger)
            out += self._become_follower(term, None, now, "newer term")
            if split:
                return out + self._start_election(now)
        if kind == "vote":
            grant = term == self.term and self.voted_for in (None, sender)
            if grant:
                self._persist(self.term, sender)
                self._deadline = now + self._timeout()
            return out + [Send(sender, {"t": "vote_reply", "term": self.term, "granted": grant})]
        if kind == "vote_reply":
            if self.role == CANDIDATE and term == self.term and message.get("granted") is True:
                self.votes.add(sender)
                if len(self.votes) >= self.quorum:
                    out += self._become_leader(now)
            return out
        if kind == "heartbeat":
            if term < self.term:
                return out + [Send(sender, {"t": "heartbeat_reply", "term": self.term})]
            if self.role == LEADER:
                # Two leaders of one term can only meet when two meshes that each elected a
                # leader with different voter sets merge. Neither may go on deciding in this
                # term: the lower name stands for the next one, the other waits to vote.
                if self.name < sender:
                    return out + self._become_follower(term, None, now, "another leader of this term") + \
                        self._start_election(now)
                return out + self._become_follower(term + 1, None, now, "another leader of this term")
            if self.leader is not None and self.leader != sender:
                # A second leader in this follower's term: end the term for both of them.
                return out + self._become_follower(term + 1, None, now, "two leaders in one term")
            if stranger and previous not in (None, sender):
                # The leader this voter followed is replaced by one elected by voters that did not
                # include it (a fresh joiner has followed nobody): two meshes met. End that term too.
                return out + self._become_follower(term + 1, None, now, "a leader of another mesh")
            if self.role != FOLLOWER or self.leader != sender:
                out += self._become_follower(term, sender, now, "heartbeat")
            seq = message.get("seq")
            self.leader_seq = seq if type(seq) is int and seq >= 0 else 0
            self.last_leader_contact = now
            self._deadline = now + self._timeout()
            return out + [Send(sender, {"t": "heartbeat_reply", "term": self.term})]
        if kind == "heartbeat_reply":
            if self.role == LEADER and term == self.term:
                self.heard[sender] = now
            return out
        if kind == "timeout_now" and term == self.term and self.role == FOLLOWER:
            return out + self._start_election(now)
        return out

    def transfer(self, now: float) -> list[Effect]:
        """Hand leadership to the follower heard from most recently (graceful shutdown)."""
        if self.role != LEADER or not self.heard:
            return []
        target = max(self.heard, key=lambda p: (self.heard[p], p))
        return [Send(target, {"t": "timeout_now", "term": self.term})]

    def _observe(self, sender: str, kind: object, term: int, message: dict[str, Any], now: float) -> list[Effect]:
        """A non-voter only follows heartbeats (and learns newer terms from anything)."""
        out: list[Effect] = []
        if term > self.term:
            self._persist(term, None)
            self.leader = None
        if kind == "heartbeat" and term == self.term:
            if self.leader is not None and self.leader != sender:
                return out  # two leaders of one term (meshes merging): the voters end the term
            if self.leader != sender:
                self.leader = sender
                out.append(Event("follower", {"term": term, "leader": sender}))
            seq = message.get("seq")
            self.leader_seq = seq if type(seq) is int and seq >= 0 else 0
            self.last_leader_contact = now
        return out

    def _heartbeats(self) -> list[Send]:
        beat = {"t": "heartbeat", "term": self.term, "seq": self.seq, "electorate": sorted(self.electorate)}
        return [Send(p, beat) for p in self.peers] + [Send(o, beat) for o in self.observers]

    # -- transitions ---------------------------------------------------------------------------

    def _timeout(self) -> float:
        return self.rng.uniform(self.config.election_min, self.config.election_max)

    def _start_prevote(self, now: float) -> list[Effect]:
        self.role = PRECANDIDATE
        self.leader = None
        self.votes = {self.name}
        self._deadline = now + self._timeout()
        return [Send(p, {"t": "prevote", "term": self.term + 1}) for p in self.peers]

    def _start_election(self, now: float) -> list[Effect]:
        term = self.term + 1
        self._persist(term, self.name)
        self.role = CANDIDATE
        self.leader = None
        self.votes = {self.name}
        self._deadline = now + self._timeout()
        out: list[Effect] = [Event("candidate", {"term": term})]
        if len(self.votes) >= self.quorum:
            return out + self._become_leader(now)
        return out + [Send(p, {"t": "vote", "term": term}) for p in self.peers]

    def _become_leader(self, now: float) -> list[Effect]:
        self.role = LEADER
        self.leader = self.name
        self.electorate = frozenset(self.voters)
        self.heard = {}
        self.seq = 0
        self._became_leader_at = now
        self._next_heartbeat = now + self.config.heartbeat
        return [Event("leader", {"term": self.term, "leader": self.name})] + self._heartbeats()

    def _become_follower(self, term: int, leader: str | None, now: float, why: str) -> list[Effect]:
        was_leader, led = self.role == LEADER, self.term
        if term > self.term:
            self._persist(term, None)
        self.role = FOLLOWER
        self.leader = leader
        self.votes = set()
        self._deadline = now + self._timeout()
        out: list[Effect] = []
        if was_leader:
            out.append(Event("stepped_down", {"term": led, "why": why}))
        if leader is not None:
            out.append(Event("follower", {"term": term, "leader": leader}))
        return out
