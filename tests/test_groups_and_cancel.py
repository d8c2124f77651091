"""Replica groups spread asks over their replicas, and asks that time out are cancelled at their
target (issue 14): real `mesh up` nodes, their agents (tests/actors.py), and clients."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

import mesh
from conftest import pid_gone, wait_until
from mesh.runtime.cancels import CANCEL_BOUND_S
from test_two_nodes import two_nodes

pytestmark = pytest.mark.timeout(120)

WORKERS = 10


def group_spec(name: str = "worker", replicas: int = WORKERS, cls: str = "Crasher") -> str:
    return f'[[agents]]\nname = "{name}"\nclass = "actors:{cls}"\nreplicas = {replicas}\n'


def test_a_burst_of_asks_to_a_group_lands_on_every_replica(start_node):
    node = start_node(group_spec(), timeout=60)
    client = node.client()
    assert client.group("worker") == [f"worker.{i}" for i in range(WORKERS)]
    worker = client.actor("worker")
    pids = {worker.ask({})["pid"] for _ in range(WORKERS)}
    assert len(pids) == WORKERS

    async def burst():
        return await asyncio.gather(*(worker.ask_async({}) for _ in range(WORKERS)))

    assert len({answer["pid"] for answer in asyncio.run(burst())}) == WORKERS


def test_a_group_keeps_answering_when_one_replica_is_killed(start_node):
    node = start_node(group_spec(), timeout=60)
    client = node.client()
    worker = client.actor("worker")
    assert len({worker.ask({})["pid"] for _ in range(WORKERS)}) == WORKERS
    victim = node.agent("worker.3")["pid"]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: pid_gone(victim), 10, "the killed replica to be gone")
    # Once its node has seen it go: an ask already sent into its connection raises ActorDied (it
    # may have run), as for any actor; the asks here are made after.
    node.wait_agent("worker.3", lambda a: a["pid"] != victim, what="the node to notice the kill")
    answers = [worker.ask({}, timeout=5) for _ in range(3 * WORKERS)]
    assert victim not in {a["pid"] for a in answers}
    assert len({a["pid"] for a in answers}) >= WORKERS - 1


def test_a_plain_name_is_no_group(start_node):
    node = start_node('[[agents]]\nname = "solo"\nclass = "actors:Crasher"\n')
    client = node.client()
    assert client.group("solo") == []
    assert client.group("nobody") == []
    assert client.actor("solo").ask({})["incarnation"] == 0


def cancelled_work(patient) -> dict:
    """Ask ``patient`` for a minute of work with a 0.5 s timeout, then for its report: the report
    must come at once (the work stopped within CANCEL_BOUND_S of the timeout) and say cancelled."""
    with pytest.raises(mesh.AskTimeout):
        patient.ask({"work": 60}, timeout=0.5)
    gave_up = time.monotonic()
    report = patient.ask({"report": True}, timeout=10)
    served_after = time.monotonic() - gave_up
    assert report["last"]["cancelled"] is True
    assert report["last"]["after"] < 0.5 + CANCEL_BOUND_S
    assert served_after < CANCEL_BOUND_S + 0.5, served_after
    return report


def test_a_timed_out_ask_is_cancelled_and_the_next_is_served_at_once(start_node):
    node = start_node('[[agents]]\nname = "patient"\nclass = "actors:Patient"\n')
    patient = node.client().actor("patient")
    report = cancelled_work(patient)
    assert report["cancelled_now"] is False  # the cancel named one ask, not the next
    assert patient.ask({"work": 0.2}, timeout=10) == "done"  # and later work runs to its end
    assert patient.ask({"report": True})["last"]["cancelled"] is False


def test_an_async_handler_of_a_timed_out_ask_is_cancelled(start_node):
    node = start_node('[[agents]]\nname = "patient"\nclass = "actors:AsyncPatient"\n')
    patient = node.client().actor("patient")
    cancelled_work(patient)

    async def timed_out():
        with pytest.raises(mesh.AskTimeout):
            await patient.ask_async({"work": 60}, timeout=0.5)
        return await patient.ask_async({"report": True}, timeout=10)

    assert asyncio.run(timed_out())["last"]["cancelled"] is True


def test_a_timed_out_ask_to_a_group_is_cancelled_at_the_replica_it_reached(start_node):
    node = start_node(group_spec("patients", 2, "Patient"), timeout=60)
    patients = node.client().actor("patients")
    with pytest.raises(mesh.AskTimeout):
        patients.ask({"work": 60}, timeout=0.5)
    reports = [node.client().actor(f"patients.{i}").ask({"report": True}, timeout=5) for i in range(2)]
    assert sorted(bool(r["last"] and r["last"]["cancelled"]) for r in reports) == [False, True]


def test_an_ask_cancelled_while_it_waits_in_the_mailbox_starts_cancelled(start_node):
    node = start_node('[[agents]]\nname = "patient"\nclass = "actors:Patient"\n')
    patient = node.client().actor("patient")
    started = time.monotonic()
    patient.tell({"work": 1.5})  # keeps the actor busy while the ask behind it waits (one sender: in order)
    with pytest.raises(mesh.AskTimeout):
        patient.ask({"work": 60}, timeout=0.5)
    report = patient.ask({"report": True}, timeout=10)
    assert report["last"]["cancelled"] is True and report["last"]["after"] < 0.1
    assert time.monotonic() - started < 1.5 + CANCEL_BOUND_S + 1.0


SERVE_ASYNC = """
import asyncio, sys
sys.path.insert(0, {tests!r})
import mesh
from actors import AsyncPatient

asyncio.run(mesh.serve_async(AsyncPatient(), name="aserved", node={node!r}))
"""


def test_an_async_handler_that_serve_async_runs_on_a_programs_loop_is_cancelled(start_node):
    node = start_node()
    tests = os.path.dirname(os.path.abspath(__file__))
    program = subprocess.Popen([sys.executable, "-c", SERVE_ASYNC.format(tests=tests, node=node.address)])
    try:
        wait_until(lambda: any(a["name"] == "aserved" for a in node.status()["agents"]), 20, "aserved to register")
        patient = node.client().actor("aserved")
        assert patient.ask({"report": True}, timeout=20)["pid"] == program.pid
        cancelled_work(patient)
    finally:
        program.terminate()  # (this program leaves SIGTERM to its default: it ends at once)
        program.wait(timeout=20)


def test_a_group_placed_over_two_nodes_spreads_asks_over_both(start_node):
    a, b = two_nodes(start_node, group_spec("worker", 4))
    client = a.client()
    wait_until(lambda: len(client.group("worker")) == 4, 40, "four replicas running")
    hosts = {x["name"]: x["node"] for n in (a, b) for x in n.status()["agents"] if x["state"] == "running"}
    assert {hosts[f"worker.{i}"] for i in range(4)} == {"a", "b"}
    worker = client.actor("worker")
    assert len({worker.ask({}, timeout=5)["pid"] for _ in range(4)}) == 4


def test_tells_to_a_group_spread_over_its_replicas_too(start_node):
    node = start_node(group_spec("counters", 3, "Counter"))
    client = node.client()
    counters = client.actor("counters")
    for i in range(6):
        counters.tell(i)
    replicas = [client.actor(name) for name in client.group("counters")]
    seen = wait_until(lambda: (lambda s: s if sum(map(len, s)) == 6 else None)(
        [r.ask({"get": True})["seen"] for r in replicas]), 10, "the six tells")
    assert sorted(map(len, seen)) == [2, 2, 2] and sorted(sum(seen, [])) == list(range(6))
