"""Deadlock detection: asks carry the chain of actors waiting on them, so an ask that would close
a cycle fails at once with DeadlockDetected, in every member of the cycle, across nodes."""

from __future__ import annotations

import time

import pytest

import mesh
from conftest import wait_until

pytestmark = pytest.mark.timeout(90)


def relay(name: str, node: str, journal) -> str:
    return (f'[[agents]]\nname = "{name}"\nclass = "actors:CycleRelay"\nnode = "{node}"\n'
            f'config = {{ journal = "{journal}" }}\n')


@pytest.fixture
def two_nodes(start_node, tmp_path):
    journal = tmp_path / "cycles"
    a = start_node(relay("ra", "a", journal) + relay("rc", "a", journal), name="a")
    start_node(relay("rb", "b", journal), name="b", wait=False, args=("--join", a.address))
    client = a.client()
    for name in ("ra", "rb", "rc"):
        wait_until(lambda name=name: client.actor(name).ask({"hops": [], "message": 1}, timeout=2) == 1, 30,
                   f"{name} answering")
    return client, journal


@pytest.mark.parametrize("hops", [["rb", "ra"], ["rb", "rc", "ra"]], ids=["two", "three"])
def test_an_ask_cycle_across_two_nodes_raises_deadlock_detected_in_every_member(two_nodes, hops):
    client, journal = two_nodes
    journal.write_text("")
    start = time.monotonic()
    with pytest.raises(mesh.DeadlockDetected) as info:
        client.actor("ra").ask({"hops": hops, "message": "x"}, timeout=10)
    took = time.monotonic() - start
    members = ["ra", *hops[:-1]]
    cycle = [*members, "ra"]
    assert info.value.cycle == cycle and " -> ".join(cycle) in str(info.value)
    assert took < 2.0, took  # at once, not at the 10 s timeout
    seen = dict(line.split() for line in journal.read_text().splitlines())
    assert set(seen) == set(members)  # every waiter in the cycle got DeadlockDetected
    assert all(c == ">".join(cycle) for c in seen.values())


def test_a_chain_without_a_cycle_is_answered(two_nodes):
    client, journal = two_nodes
    assert client.actor("ra").ask({"hops": ["rb", "rc"], "message": "deep"}, timeout=10) == "deep"
    assert not journal.exists()  # nobody saw a deadlock


def test_the_waiting_chain_on_the_wire_is_checked():
    from mesh import wire

    frame = wire.encode_ask(7, "b", "a", {"x": 1}, ["a", "b"])
    (env,) = wire.decode(frame)
    assert env[7] == ["a", "b"] and env[6] == {"x": 1}
    import msgpack

    for bad in ([1, 2, 7, 0, "b", "a", {}, "notalist"], [1, 2, 7, 0, "b", "a", {}, [1, 2]],
                [1, 1, 7, 0, "b", "a", {}, ["a"]], [1, 2, 7, 0, "b", "a", {}, ["a"] * 300]):
        with pytest.raises(mesh.WireError):
            wire.decode(msgpack.packb(bad))
