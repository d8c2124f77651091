"""What an idle node does not do: look at each of its agents for an exit while none exited (one
system call a tick says whether one did), and place its agents again while nothing placement reads
changed (a node's load moves all the time)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from conftest import wait_until
from mesh.runtime.clock import FakeClock
from mesh.runtime.containment import has_exited as real_has_exited
from mesh.runtime.memory import MemoryNetwork
from mesh.runtime.node import Node
from mesh.runtime.node import supervisor as supervisor_module
from mesh.runtime.node.constants import REAP_ALL_S
from mesh.runtime.node.follower import CONDUCT_EVERY_S
from mesh.runtime.node.instance import Instance
from mesh.spec import NodeSpec

pytestmark = pytest.mark.timeout(60)


# -- exits: one system call a tick while none exited ---------------------------------------------------


FORKED: list[int] = []


@pytest.fixture(autouse=True)
def no_child_left():
    """A test that failed half-way leaves no child behind for the next to see exit."""
    yield
    while FORKED:
        pid = FORKED.pop()
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def child(lives: bool) -> int:
    """A child of the test: one that lives until killed, or one that exits with 3 at once."""
    pid = os.fork()
    if pid == 0:
        if lives:
            signal.pause()
        os._exit(3)
    FORKED.append(pid)
    return pid


def reap(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


class Forked:
    """A child of the test as an agent's process (what the supervisor needs of one)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.returncode = pid, None

    def poll(self):
        return self.returncode

    def wait(self, timeout=None) -> int:
        self.returncode = reap(self.pid)
        FORKED.remove(self.pid)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)


@pytest.mark.fast
def test_the_supervisor_looks_at_each_agent_only_when_a_child_exited_or_at_its_backstop(tmp_path, monkeypatch):
    monkeypatch.setenv("MESH_HOME", str(tmp_path / "home"))
    node, clock = leader_of(tmp_path)
    try:
        supervisor = node.supervisor
        looked, exited = [], [False]
        monkeypatch.setattr(supervisor_module, "has_exited", lambda pid: looked.append(pid) or real_has_exited(pid))
        monkeypatch.setattr(supervisor_module, "a_child_exited", lambda: exited[0])
        pid = child(lives=True)
        supervisor.instances["x"] = inst = Instance(name="x", spec=None, group="x", state="running", held="a test")
        inst.proc = Forked(pid)
        supervisor.reap(clock.monotonic())  # the first look is at every agent
        assert looked == [pid]
        for _ in range(round((REAP_ALL_S - 0.5) / 0.1)):
            clock.advance(0.1)
            supervisor.reap(clock.monotonic())
        assert looked == [pid]  # no exit: no look at it, for nearly REAP_ALL_S
        clock.advance(1.0)
        supervisor.reap(clock.monotonic())
        assert looked == [pid, pid]  # the backstop
        exited[0] = True  # a child exited (not this one): every agent is looked at, this one lives on
        clock.advance(0.1)
        supervisor.reap(clock.monotonic())
        assert looked == [pid] * 3 and inst.proc is not None
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: real_has_exited(pid), 10, "the child to exit")
        clock.advance(0.1)
        supervisor.reap(clock.monotonic())  # seen at the first tick after
        assert inst.proc is None and inst.state == "stopped"
    finally:
        node.gossip.close()
        node.broadcasts.close()
        node.router.close(0)


@pytest.mark.fast
def test_has_exited_does_not_reap_and_knows_an_unknown_pid_is_not_running():
    pid = child(lives=False)
    wait_until(lambda: real_has_exited(pid), 10, "the child to exit")
    assert real_has_exited(pid)  # still a zombie: asking again does not reap it
    assert reap(pid) == 3
    assert real_has_exited(pid)  # no such child any more
    assert real_has_exited(None) is False  # a fork whose pid is not known yet: not exited


def test_a_node_sees_each_agent_killed_at_once_not_at_its_backstop_scan(start_node):
    # Its look at every agent without a child's exit comes every REAP_ALL_S (10 s); each of three
    # kills must be seen well before.
    node = start_node('[[agents]]\nname = "echo"\nclass = "actors:WhoAmI"\nplacement = "local"\nrestart = "always"\n')
    for kills in range(1, 4):
        pid = node.agent("echo")["pid"]
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_until(lambda k=kills: node.agent("echo")["restarts"] >= k, 15, f"kill {kills} to be seen")
        assert time.monotonic() - killed < 4.0, f"kill {kills} seen only after {time.monotonic() - killed:.1f} s"
        wait_until(lambda p=pid: node.agent("echo")["state"] == "running" and node.agent("echo")["pid"] != p, 20,
                   "the agent to run again")


# -- placing: again only when what it reads changed ---------------------------------------------------


def leader_of(tmp_path) -> tuple[Node, FakeClock]:
    """A node on the in-memory transport, leader of a mesh of one."""
    clock = FakeClock()
    spec = NodeSpec(file="<spec>", base_dir=str(tmp_path), name="solo", listen="mem://solo:1",
                    capacity_cpu=64.0, capacity_memory=64 << 30)
    node = Node(spec, on_event=lambda line: None, transport=MemoryNetwork().transport("solo"), clock=clock)
    node.bind()
    node.gossip._join_until = 0.0  # no peers to wait for
    node.gossip.tick()
    node._follow_the_leader(clock.monotonic())
    for _ in range(2):
        node.leadership.tick()
        clock.advance(0.2)
    assert node.leadership.is_leader
    return node, clock


@pytest.fixture
def leader(tmp_path, monkeypatch):
    monkeypatch.setenv("MESH_HOME", str(tmp_path / "home"))
    node, clock = leader_of(tmp_path)
    yield node, clock
    node.gossip.close()
    node.broadcasts.close()
    node.router.close(0)


def passes(node: Node, clock: FakeClock, seconds: float, between=None) -> int:
    """Housekeeping passes over ``seconds`` of the node's clock; how many decisions they computed."""
    before = node.follower.conducted
    for _ in range(round(seconds / 0.1)):
        if between is not None:
            between()
        clock.advance(0.1)
        node._follow_the_leader(clock.monotonic())
        node.follower.publish_acted()
    return node.follower.conducted - before


def just_decided(node: Node, clock: FakeClock) -> None:
    """Passes until one computes a decision: the next periodic one is CONDUCT_EVERY_S away."""
    before = node.follower.conducted
    for _ in range(round(CONDUCT_EVERY_S / 0.1) + 10):
        passes(node, clock, 0.1)
        if node.follower.conducted > before:
            return
    raise AssertionError("no decision within CONDUCT_EVERY_S")


def rewrite_record(node: Node, **changes: object) -> None:
    record = dict(node.directory.items("$node/")["$node/solo"])
    record.update(changes)
    node.gossip.write("$node/solo", record, system=True)


@pytest.mark.fast
def test_a_leader_does_not_place_again_while_only_the_nodes_load_changes(leader):
    node, clock = leader
    passes(node, clock, 2 * CONDUCT_EVERY_S)  # settled
    just_decided(node, clock)
    assert passes(node, clock, 0.5) == 0
    loads = iter(range(10_000))
    moved = passes(node, clock, CONDUCT_EVERY_S - 1.0,
                   between=lambda: rewrite_record(node, load={"cpu": next(loads) / 10, "memory": 10_000_000}))
    assert moved == 0  # a rewrite a pass, each of the load only: no decision
    assert next(loads) > 30  # the record was rewritten all along
    assert passes(node, clock, 1.5) == 1  # CONDUCT_EVERY_S since the last decision: decided again once


@pytest.mark.fast
def test_a_leader_places_again_at_once_when_a_nodes_record_changes_other_than_its_load(leader):
    node, clock = leader
    passes(node, clock, 2 * CONDUCT_EVERY_S)
    just_decided(node, clock)
    assert passes(node, clock, 0.5) == 0
    rewrite_record(node, capacity={"cpu": 32.0, "memory": 32 << 30}, load={"cpu": 3.0, "memory": 0})
    assert passes(node, clock, 0.1) == 1
    assert passes(node, clock, 0.5) == 0
