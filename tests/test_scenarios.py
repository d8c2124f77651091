"""Scenario files: scripted steps against the real core machines, with the expected trace.

Each file under ``tests/scenarios/<protocol>/`` is a script in the style of etcd's
``testdata/*.txt``: a command, a line ``----``, the output it must print, a blank line;
``#`` lines are comments. The runner replays every command against the real machines
(:class:`~mesh.core.election.Elector`, the :mod:`~mesh.core.intentions` voters and
proposers, the :mod:`~mesh.core.fencing` rules, the placement simulation) and compares
what they print. ``MESH_REWRITE_SCENARIOS=1 pytest tests/test_scenarios.py`` writes the
actual output back into the files instead, so a change of behaviour is reviewed as a diff.

Commands of the message protocols, election and intentions (a small network that delivers
only when told):

* ``advance SECONDS``: move the clock on and tick every live node (name order);
* ``tick NODE...``: tick those nodes now;
* ``deliver [COUNT]``: deliver the messages queued (the first COUNT), printing each and
  what it caused; ``stabilize``: deliver until nothing is queued;
* ``drop [SRC->DST]``: drop queued messages (all, or those of one link); ``pending``;
* ``cut A B`` (both ways), ``cut A->B`` (one way), ``isolate A``, ``heal``;
* ``crash A`` (it loses all but its storage), ``restart A``.

Each protocol adds its own; fencing (the rules one call at a time) and placement (the whole
loop in the simulator, scripted) have their own commands: see the driver classes below.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mesh.core import fencing
from mesh.core.effects import Emit, Send
from mesh.core.election import ElectionConfig, Elector
from mesh.core.intentions import PROPOSER_KINDS, VOTER_KINDS, IntentionProposer, IntentionVoter

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
REWRITE = os.environ.get("MESH_REWRITE_SCENARIOS") == "1"


# -- the file format ----------------------------------------------------------------------------


class Case:
    def __init__(self, comments: list[str], command: str, expected: list[str], line: int):
        self.comments = comments
        self.command = command
        self.expected = expected
        self.line = line


def parse(text: str, path: Path) -> list[Case]:
    cases: list[Case] = []
    lines = text.splitlines()
    i, comments = 0, []
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if line.startswith("#"):
            comments.append(line)
            i += 1
            continue
        if i + 1 >= len(lines) or lines[i + 1] != "----":
            raise ValueError(f"{path}:{i + 1}: a command must be followed by a line '----'")
        start = i + 1
        i += 2
        expected = []
        while i < len(lines) and lines[i].strip():
            expected.append(lines[i])
            i += 1
        cases.append(Case(comments, line, expected, start))
        comments = []
    return cases


def render(cases: list[Case], outputs: list[list[str]]) -> str:
    blocks = []
    for case, output in zip(cases, outputs, strict=True):
        blocks.append("\n".join([*case.comments, case.command, "----", *(output or ["ok"])]))
    return "\n\n".join(blocks) + "\n"


# -- printing ------------------------------------------------------------------------------------


def show(x: object) -> str:
    if isinstance(x, dict):
        items = sorted(x.items(), key=lambda kv: (kv[0] != "t", str(kv[0])))
        if "t" in x:
            return " ".join([str(x["t"])] + [f"{k}={show(v)}" for k, v in items if k != "t"])
        return "{" + ",".join(f"{k}={show(v)}" for k, v in items) + "}"
    if isinstance(x, (list, tuple, set, frozenset)):
        seq = sorted(x, key=str) if isinstance(x, (set, frozenset)) else x
        return "[" + ",".join(show(v) for v in seq) + "]"
    if isinstance(x, float):
        return "inf" if x == float("inf") else "-inf" if x == float("-inf") else f"{x:g}"
    return str(x)


def args_of(words: list[str]) -> tuple[list[str], dict[str, str]]:
    plain, named = [], {}
    for w in words:
        if "=" in w:
            k, _, v = w.partition("=")
            named[k] = v
        else:
            plain.append(w)
    return plain, named


def names(value: str) -> list[str]:
    return [x for x in value.split(",") if x] if value not in ("", "-") else []


# -- a network that delivers only when told ---------------------------------------------------------


class Net:
    """Named machines, a FIFO queue of messages, cuts, crashes; time moves only when told."""

    def __init__(self) -> None:
        self.now = 0.0
        self.machines: dict[str, object] = {}
        self.storage: dict[str, dict] = {}
        self.queue: list[tuple[str, str, object]] = []
        self.cuts: set[frozenset[str]] = set()
        self.one_way: set[tuple[str, str]] = set()
        self.down: set[str] = set()

    def build(self, name: str) -> object:
        raise NotImplementedError

    def emit(self, node: str, effects: list, indent: str = "") -> list[str]:
        out = []
        for e in effects:
            if type(e) is Send:
                self.queue.append((node, e.to, e.message))
                out.append(f"{indent}{node} -> {e.to} {show(e.message)}")
            elif type(e) is Emit:
                data = " ".join(f"{k}={show(v)}" for k, v in sorted(e.data.items())) if isinstance(e.data, dict) \
                    else show(e.data)
                out.append(f"{indent}{node}: {e.name} {data}".rstrip())
        return out

    def _step(self, node: str, sender: str, message: object) -> list:
        return self.machines[node].step(sender, message, self.now)  # type: ignore[attr-defined]

    def _tick(self, node: str) -> list:
        return self.machines[node].tick(self.now)  # type: ignore[attr-defined]

    def run(self, command: str, words: list[str]) -> list[str]:
        handler = getattr(self, "do_" + command.replace("-", "_"), None)
        if handler is None:
            raise ValueError(f"unknown command {command!r}")
        return handler(*args_of(words))

    def live(self) -> list[str]:
        return sorted(n for n in self.machines if n not in self.down)

    def do_advance(self, plain: list[str], named: dict) -> list[str]:
        self.now = round(self.now + float(plain[0]), 9)
        out = [f"now {show(self.now)}"]
        for n in self.live():
            out += self.emit(n, self._tick(n))
        return out

    def do_tick(self, plain: list[str], named: dict) -> list[str]:
        out = []
        for n in plain or self.live():
            out += self.emit(n, self._tick(n))
        return out

    def _deliver_one(self) -> list[str]:
        src, dst, message = self.queue.pop(0)
        line = f"{src} -> {dst} {show(message)}"
        if dst in self.down or frozenset((src, dst)) in self.cuts or (src, dst) in self.one_way:
            return [f"dropped {line}"]
        return [line] + self.emit(dst, self._step(dst, src, message), "  ")

    def do_deliver(self, plain: list[str], named: dict) -> list[str]:
        count = int(plain[0]) if plain else len(self.queue)
        out = []
        for _ in range(min(count, len(self.queue))):
            out += self._deliver_one()
        return out

    def do_stabilize(self, plain: list[str], named: dict) -> list[str]:
        out: list[str] = []
        for _ in range(10_000):
            if not self.queue:
                return out
            out += self._deliver_one()
        raise AssertionError("stabilize: still delivering after 10,000 messages")

    def do_drop(self, plain: list[str], named: dict) -> list[str]:
        keep, out = [], []
        for src, dst, m in self.queue:
            if not plain or plain[0] == f"{src}->{dst}":
                out.append(f"dropped {src} -> {dst} {show(m)}")
            else:
                keep.append((src, dst, m))
        self.queue = keep
        return out

    def do_pending(self, plain: list[str], named: dict) -> list[str]:
        return [f"{s} -> {d} {show(m)}" for s, d, m in self.queue] or ["nothing queued"]

    def do_cut(self, plain: list[str], named: dict) -> list[str]:
        if len(plain) == 1 and "->" in plain[0]:
            src, dst = plain[0].split("->")
            self.one_way.add((src, dst))
        else:
            self.cuts.add(frozenset(plain))
        return []

    def do_isolate(self, plain: list[str], named: dict) -> list[str]:
        for other in self.machines:
            if other != plain[0]:
                self.cuts.add(frozenset((plain[0], other)))
        return []

    def do_heal(self, plain: list[str], named: dict) -> list[str]:
        self.cuts.clear()
        self.one_way.clear()
        return []

    def do_crash(self, plain: list[str], named: dict) -> list[str]:
        self.down.add(plain[0])
        return []

    def do_restart(self, plain: list[str], named: dict) -> list[str]:
        self.down.discard(plain[0])
        self.machines[plain[0]] = self.build(plain[0])
        return []


# -- election -----------------------------------------------------------------------------------------


class ScriptedRng:
    """Election timeouts from the script (``timeouts v1=1.2,1.5``: the next ones v1 draws, the last
    repeated); a node given none always draws the longest timeout, so it is never first to stand."""

    def __init__(self, values: list[float]):
        self.values = list(values)

    def uniform(self, a: float, b: float) -> float:
        if not self.values:
            return b
        value = self.values.pop(0) if len(self.values) > 1 else self.values[0]
        return min(max(value, a), b)

    def random(self) -> float:
        return 0.5

    def choice(self, seq):  # type: ignore[no-untyped-def]
        return seq[0]

    def shuffle(self, x) -> None:  # type: ignore[no-untyped-def]
        pass


class ElectionNet(Net):
    """``voters V...`` [election_min= election_max= heartbeat=]; ``timeouts V=T,T...``;
    ``status``; ``decide V`` (the leader makes a decision); ``transfer V``; ``accepts V TERM``."""

    def __init__(self) -> None:
        super().__init__()
        self.voters: list[str] = []
        self.config = ElectionConfig()
        self.timeouts: dict[str, list[float]] = {}

    def build(self, name: str) -> Elector:
        rng = ScriptedRng(self.timeouts.get(name, []))
        return Elector(name, self.voters, self.config, rng, self.storage.setdefault(name, {}), self.now)

    def do_voters(self, plain: list[str], named: dict) -> list[str]:
        self.voters = plain
        self.config = ElectionConfig(**{k: float(v) for k, v in named.items()})
        for v in plain:
            self.machines[v] = self.build(v)
        return []

    def do_timeouts(self, plain: list[str], named: dict) -> list[str]:
        for node, values in named.items():
            self.timeouts[node] = [float(x) for x in values.split(",")]
            if node in self.machines:
                self.machines[node].rng = ScriptedRng(self.timeouts[node])  # type: ignore[attr-defined]
        return []

    def do_status(self, plain: list[str], named: dict) -> list[str]:
        out = []
        for n in sorted(self.machines):
            e = self.machines[n]
            assert isinstance(e, Elector)
            state = "down" if n in self.down else e.role
            out.append(f"{n} {state} term={e.term} leader={e.leader} voted_for={e.voted_for}"
                       f" seq={e.seq} leader_seq={e.leader_seq}")
        return out

    def do_decide(self, plain: list[str], named: dict) -> list[str]:
        e = self.machines[plain[0]]
        assert isinstance(e, Elector)
        return [f"{plain[0]} decided seq {e.decided()} in term {e.term}"]

    def do_transfer(self, plain: list[str], named: dict) -> list[str]:
        e = self.machines[plain[0]]
        assert isinstance(e, Elector)
        return self.emit(plain[0], e.transfer(self.now))

    def do_accepts(self, plain: list[str], named: dict) -> list[str]:
        e = self.machines[plain[0]]
        assert isinstance(e, Elector)
        return [f"{plain[0]} {'accepts' if e.accepts(int(plain[1])) else 'refuses'} a decision of term {plain[1]}"]


# -- intentions -----------------------------------------------------------------------------------------


class IntentionsNet(Net):
    """``voters V...``; ``proposer P`` [settle= retry=]; ``propose P id= claims=A,B prio= ts= window= hold=``
    [wait=]; ``done P ID``; ``owners V``; ``waiting V``; ``holding P``. A node may be a voter and a proposer:
    messages go by kind."""

    def __init__(self) -> None:
        super().__init__()
        self.voters: list[str] = []
        self.proposer_options: dict[str, dict[str, float]] = {}
        self.voter_of: dict[str, IntentionVoter] = {}
        self.proposer_of: dict[str, IntentionProposer] = {}

    def build(self, name: str) -> object:
        if name in self.voters:
            self.voter_of[name] = IntentionVoter(name, self.storage.setdefault(name, {}), self.now)
        if name in self.proposer_options:
            self.proposer_of[name] = IntentionProposer(name, self.voters, self.now, **self.proposer_options[name])
        return name

    def _step(self, node: str, sender: str, message: object) -> list:
        kind = message.get("t") if isinstance(message, dict) else None
        if kind in VOTER_KINDS and node in self.voter_of:
            return self.voter_of[node].step(sender, message, self.now)
        if kind in PROPOSER_KINDS and node in self.proposer_of:
            return self.proposer_of[node].step(sender, message, self.now)
        return []

    def _tick(self, node: str) -> list:
        out = []
        for table in (self.voter_of, self.proposer_of):
            if node in table:
                out += table[node].tick(self.now)
        return out

    def do_voters(self, plain: list[str], named: dict) -> list[str]:
        self.voters = plain
        for v in plain:
            self.machines[v] = self.build(v)
        return []

    def do_proposer(self, plain: list[str], named: dict) -> list[str]:
        self.proposer_options[plain[0]] = {k: float(v) for k, v in named.items()}
        self.machines[plain[0]] = self.build(plain[0])
        return []

    def do_propose(self, plain: list[str], named: dict) -> list[str]:
        p = self.proposer_of[plain[0]]
        effects = p.propose(named["id"], names(named["claims"]), float(named.get("prio", 0)), float(named.get("ts", 0)),
                            float(named.get("window", 5)), float(named.get("hold", 10)), self.now,
                            float(named.get("wait", 0)))
        return self.emit(plain[0], effects)

    def do_done(self, plain: list[str], named: dict) -> list[str]:
        return self.emit(plain[0], self.proposer_of[plain[0]].done(plain[1], self.now))

    def do_owners(self, plain: list[str], named: dict) -> list[str]:
        owners = self.voter_of[plain[0]].owners()
        return [f"{claim}: {show(info)}" for claim, info in owners.items()] or ["nothing owned"]

    def do_waiting(self, plain: list[str], named: dict) -> list[str]:
        line = self.voter_of[plain[0]].waiting()
        return [f"{e['id']} of {e['proposer']}: {show({k: v for k, v in e.items() if k not in ('id', 'proposer')})}"
                for e in line] or ["nobody waiting"]

    def do_holding(self, plain: list[str], named: dict) -> list[str]:
        held = self.proposer_of[plain[0]].holding(self.now)
        return [f"{iid} until {show(until)}" for iid, until in sorted(held.items())] or ["nothing held"]


# -- fencing ----------------------------------------------------------------------------------------------


def _mark(text: str) -> tuple[str, int, int]:
    """``n1@2#3``: leader n1, term 2, seq 3."""
    leader, _, rest = text.partition("@")
    term, _, seq = rest.partition("#")
    return leader, int(term), int(seq)


class Fencing:
    """The :mod:`mesh.core.fencing` rules, one command each, time given as ``at=``.

    ``lease N voters=A,B,C`` [lease= grace= replace_after=]; ``beat COUNTER at=T`` (N issues
    its heartbeat); ``confirm V COUNTER`` (voter V has seen it); ``check at=T movable=R,R``;
    ``may-start leader=L``; ``accept follow=L@TERM need=SEQ newest=TERM entry=L@TERM#SEQ|none``;
    ``carry-out N placed=R,R give=R:N,R:N!`` (``!``: held); ``release term= seq= give=R:N
    acted=N:TERM#SEQ listing=N:R+R usable=N,N``; ``replace heard=T at=T``;
    ``observe at=T term= following=yes|no decisions=L@TERM#SEQ,...``.
    """

    def __init__(self) -> None:
        self.config = fencing.DEFAULT
        self.lease: fencing.Lease | None = None
        self.ledger = fencing.HeartbeatLedger()
        self.voters: list[str] = []
        self.handoff = fencing.Handoff()
        self.stale = fencing.StaleDecisions()

    def run(self, command: str, words: list[str]) -> list[str]:
        plain, named = args_of(words)
        return getattr(self, "do_" + command.replace("-", "_"))(plain, named)

    def do_lease(self, plain: list[str], named: dict) -> list[str]:
        self.voters = names(named.pop("voters"))
        self.config = fencing.FenceConfig(**{k: float(v) for k, v in named.items()})
        self.lease = fencing.Lease(plain[0], self.config)
        self.ledger = fencing.HeartbeatLedger(2 * self.config.lease)
        self.stale = fencing.StaleDecisions(self.config)
        return []

    def do_beat(self, plain: list[str], named: dict) -> list[str]:
        self.ledger.issued(int(plain[0]), float(named["at"]))
        return []

    def do_confirm(self, plain: list[str], named: dict) -> list[str]:
        self.ledger.confirmed(plain[0], int(plain[1]))
        return [f"evidence {show(self.ledger.evidence)}"]

    def do_check(self, plain: list[str], named: dict) -> list[str]:
        assert self.lease is not None
        c = self.lease.check(self.voters, self.ledger.evidence, float(named["at"]), names(named.get("movable", "")))
        flags = [f for f in ("holds", "lapsed", "regained", "may_decide") if getattr(c, f)]
        return [f"{' '.join(flags) or 'lapsed-earlier'} until={show(c.until)} since={show(c.since)}"
                + (f" stop={show(list(c.stop))} grace={show(c.grace)}" if c.stop else "")]

    def do_may_start(self, plain: list[str], named: dict) -> list[str]:
        assert self.lease is not None
        leader = named.get("leader")
        return ["may start" if self.lease.may_start(leader, self.ledger.evidence) else "may not start"]

    def do_accept(self, plain: list[str], named: dict) -> list[str]:
        leader, term, _ = _mark(named["follow"] + "#0")
        entry = None
        if named.get("entry", "none") != "none":
            el, et, es = _mark(named["entry"])
            entry = {"term": et, "leader": el, "seq": es, "replicas": {}}
        newest = int(named["newest"]) if "newest" in named else None
        got = fencing.accept(entry, leader or None, term, int(named.get("need", 0)), newest)
        return ["accepted" if got is not None else "refused"]

    def _give(self, text: str) -> dict[str, dict]:
        out = {}
        for item in names(text):
            replica, _, node = item.partition(":")
            held = node.endswith("!")
            node = node.rstrip("!")
            out[replica] = {"node": None if node in ("", "none") else node, **({"hold": ["?"]} if held else {})}
        return out

    def do_carry_out(self, plain: list[str], named: dict) -> list[str]:
        stop, start = fencing.carry_out({"replicas": self._give(named.get("give", ""))}, plain[0],
                                        names(named.get("placed", "")))
        return [f"stop {show(stop)} start {show(start)}"]

    def do_release(self, plain: list[str], named: dict) -> list[str]:
        acted = {}
        for item in names(named.get("acted", "")):
            node, _, mark = item.partition(":")
            term, _, seq = mark.partition("#")
            acted[node] = (int(term), int(seq))
        listing = {}
        for item in names(named.get("listing", "")):
            node, _, replicas = item.partition(":")
            listing[node] = [r for r in replicas.split("+") if r]
        out = self.handoff.release(int(named["term"]), int(named["seq"]), self._give(named["give"]), acted, listing,
                                   names(named.get("usable", "")))
        return [f"{r} -> {e['node']}" + (f" held for {show(e['hold'])}" if e.get("hold") else "")
                for r, e in sorted(out.items())]

    def do_replace(self, plain: list[str], named: dict) -> list[str]:
        ok = fencing.may_replace(float(named["heard"]), float(named["at"]), self.config)
        return ["may place its replicas elsewhere" if ok else "must drain first"]

    def do_observe(self, plain: list[str], named: dict) -> list[str]:
        decisions = {}
        for item in names(named.get("decisions", "")):
            leader, term, seq = _mark(item)
            decisions[term] = {"term": term, "leader": leader, "seq": seq}
        refusals = self.stale.observe(decisions, int(named["term"]), named.get("following") == "yes",
                                      float(named["at"]))
        lines = [f"refused term {r.term} seq {r.seq} from {r.leader}: term {r.current} is current" for r in refusals]
        return lines + [f"refused so far {self.stale.refused}, settled={self.stale.settled(float(named['at']))}"]


# -- the whole placement loop --------------------------------------------------------------------------


class Placement:
    """The placement simulation, scripted: ``world seed= nodes=N`` [without=RULE,... evidence=heard];
    ``run UNTIL``; ``partition A,B C``; ``cut A->B``; ``heal``; ``pause A``; ``resume A``;
    ``crash A``; ``restart A``; ``leaders``; ``runs`` (every run of every replica so far,
    with the overlaps if any)."""

    def __init__(self) -> None:
        from mesh.sim import placement

        self.sim = placement
        self.world: placement.PlacementWorld | None = None

    #: Commands that are the world's own fault methods, given the nodes they name.
    FAULTS = ("heal", "pause", "resume", "crash", "restart")

    def run(self, command: str, words: list[str]) -> list[str]:
        plain, named = args_of(words)
        if command in self.FAULTS:
            assert self.world is not None
            getattr(self.world, command)(*plain)
            return []
        return getattr(self, "do_" + command.replace("-", "_"))(plain, named)

    def do_world(self, plain: list[str], named: dict) -> list[str]:
        p = self.sim
        n = int(named.get("nodes", 3))
        node_names = [f"n{i}" for i in range(n)]
        rules = p.Rules.without(names(named.get("without", "")), evidence=named.get("evidence", "confirmed"))
        specs = {k: v for k, v in p.SPECS.items() if k in node_names}
        self.world = p.PlacementWorld(int(named.get("seed", 0)), node_names, specs, p.Network(delay=(0.001, 0.01)),
                                      rules)
        return []

    def do_run(self, plain: list[str], named: dict) -> list[str]:
        assert self.world is not None
        self.world.run(float(plain[0]))
        return []

    def do_partition(self, plain: list[str], named: dict) -> list[str]:
        assert self.world is not None
        self.world.partition(*[names(g) for g in plain])
        return []

    def do_cut(self, plain: list[str], named: dict) -> list[str]:
        assert self.world is not None
        src, dst = plain[0].split("->")
        self.world.cut_one_way(src, dst)
        return []

    def do_leaders(self, plain: list[str], named: dict) -> list[str]:
        assert self.world is not None
        out = []
        for n in sorted(self.world.nodes):
            m = self.world.node(n)
            e = m.elector
            state = "paused " if n in self.world.paused else ""
            out.append(f"{n} {state}{e.role} term={e.term} leader={e.leader} fenced={m.follower.lease.fenced}")
        return out

    def do_runs(self, plain: list[str], named: dict) -> list[str]:
        assert self.world is not None
        procs = sorted(self.world.procs.all, key=lambda p: (p.replica, p.start))
        out = [f"{p.replica} on {p.node} from {p.start:.2f} " + ("running" if p.end is None or p.end > self.world.now
                                                                 else f"to {p.end:.2f}") for p in procs]
        out += [f"OVERLAP {r} on {a} and {b} from {t0:.2f} to {t1:.2f}" for r, a, b, t0, t1 in self.world.procs.overlaps()]
        return out


DRIVERS = {"election": ElectionNet, "intentions": IntentionsNet, "fencing": Fencing, "placement": Placement}


def replay(path: Path) -> tuple[list[Case], list[list[str]]]:
    driver = DRIVERS[path.parent.name]()
    cases = parse(path.read_text(), path)
    outputs = []
    for case in cases:
        command, *words = case.command.split()
        outputs.append(driver.run(command, words) or ["ok"])
    return cases, outputs


FILES = sorted(SCENARIOS.glob("*/*.txt"))
pytestmark = pytest.mark.fast_check  # the whole module takes about 2 s


@pytest.mark.timeout(60)
@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.stem}" for p in FILES])
def test_scenario_replays_as_written(path: Path) -> None:
    cases, outputs = replay(path)
    if REWRITE:
        path.write_text(render(cases, outputs))
        return
    for case, output in zip(cases, outputs, strict=True):
        assert output == case.expected, (
            f"{path.relative_to(SCENARIOS.parent)}:{case.line}: {case.command!r} printed\n" + "\n".join(output)
            + "\n\nexpected\n" + "\n".join(case.expected)
            + "\n(MESH_REWRITE_SCENARIOS=1 rewrites the files; review the diff)")


@pytest.mark.timeout(10)
def test_every_protocol_has_scenarios() -> None:
    for protocol in ("election", "fencing", "intentions"):
        assert len(list((SCENARIOS / protocol).glob("*.txt"))) >= 2, protocol


@pytest.mark.timeout(10)
def test_a_file_that_is_not_a_script_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("advance 1\nno separator here\n")
    with pytest.raises(ValueError, match="followed by a line '----'"):
        parse(bad.read_text(), bad)


@pytest.mark.timeout(10)
def test_rendering_a_parsed_file_gives_it_back() -> None:
    for path in FILES:
        cases = parse(path.read_text(), path)
        assert render(cases, [c.expected for c in cases]) == path.read_text(), path
