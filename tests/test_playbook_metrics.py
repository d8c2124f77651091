"""The playbook's metrics (issue 16), as a node computes them from what its agents report:
efficiency (utilization, throughput, wait), reliability (failures, recovery, deadlocks) and
coordination (sampled ask round trips), with real agents doing known work."""

from __future__ import annotations

import pytest

import mesh
from conftest import wait_until
from mesh.runtime.nodelink import IDLE_BEAT_S

pytestmark = pytest.mark.timeout(120)

AGENTS = """
[[agents]]
name = "sleeper"
class = "actors:Sleeper"

[[agents]]
name = "echo"
class = "actors:Echo"

[[agents]]
name = "relay"
class = "actors:Relay"

[[agents]]
name = "runner"
class = "actors:PipelineRunner"

[[agents]]
name = "crasher"
class = "actors:Crasher"
restart = "on-failure"
backoff = "100ms"
max_restarts = 10
"""


def metrics_of(node, name: str) -> dict:
    return node.agent(name).get("metrics") or {}


@pytest.fixture
def node(start_node):
    return start_node(AGENTS, name="m")


def test_time_in_handlers_throughput_and_sampled_asks_are_what_the_agents_did(node):
    client = node.client()
    for _ in range(20):
        assert client.actor("sleeper").ask(0.05, timeout=10) == "woke"
    # 20 handlers of 50 ms each: at least a second busy, reported with the next heartbeats.
    # (Utilization needs two readings of the window: it comes a heartbeat or two later.)
    found = wait_until(lambda: (m := metrics_of(node, "sleeper")).get("busy_s") and m["busy_s"] >= 1.0
                       and m.get("utilization") is not None and m, 15, "the sleeper's busy seconds and utilization")
    assert found["busy_s"] < 3.0  # not the wall time of the whole test
    assert 0.0 < found["utilization"] <= 1.0 and found["throughput_per_s"] > 0
    assert found["wait_s_avg"] is not None and found["wait_s_avg"] < 0.05
    # The relay's own asks are sampled (one in 16): 32 of them give percentiles.
    for i in range(32):
        assert client.actor("relay").ask({"to": "echo", "message": i}, timeout=10) == i
    relay = wait_until(lambda: (m := metrics_of(node, "relay")).get("ask_rtt_p50_s") is not None and m, 10,
                       "the relay's sampled round trips")
    assert 0 < relay["ask_rtt_p50_s"] <= relay["ask_rtt_p99_s"] < 5.0
    assert metrics_of(node, "echo")["ask_rtt_p50_s"] is None  # echo asks nobody
    # A deadlock: the relay asked to ask itself; counted where it was detected.
    with pytest.raises(mesh.MeshError, match="cycle"):
        client.actor("relay").ask({"to": "relay", "message": "x"}, timeout=10)
    wait_until(lambda: metrics_of(node, "relay")["deadlocks"] == 1, 10, "the deadlock counted")
    st = node.status()["metrics"]
    assert st["deadlocks"] == 1 and st["throughput_per_s"] > 0 and st["window_s"] == 60.0


def test_failures_and_recovery_time_count_each_crash(node):
    client = node.client()
    for n in range(1, 4):
        with pytest.raises(mesh.MeshError):
            client.actor("crasher").ask({"crash": "exit"}, timeout=10)
        wait_until(lambda n=n: node.agent("crasher")["state"] == "running" and metrics_of(node, "crasher")["failures"] == n,
                   20, f"crash {n} counted and the crasher running again")
    found = metrics_of(node, "crasher")
    assert found["failures"] == 3 and 0.1 <= found["recovery_s"] < 15  # the 100 ms backoff, then a start
    st = node.status()["metrics"]
    assert st["failures"] == 3 and st["recovery_s_avg"] == found["recovery_s"]
    assert all(metrics_of(node, a)["failures"] == 0 for a in ("sleeper", "echo", "relay"))


def test_the_conflict_rate_counts_objected_intentions_per_100(node):
    from mesh.runtime.intents import propose

    client = node.client()
    wait_until(lambda: node.status()["leader"] == "m", 20, "m to lead")
    outcomes = []
    first = wait_until(lambda: outcomes.append(d := propose(client, "p1", "print", claims=["printer"], hold=30.0))
                       or (d.approved and d), 20, "a first intention approved (the voters settle after the election)")
    outcomes.append(propose(client, "p2", "print", claims=["printer"], hold=30.0))
    assert first.approved and outcomes[-1].outcome == "objected"  # the printer is held
    objected = sum(1 for d in outcomes if d.outcome == "objected")
    found = wait_until(lambda: (i := node.status()["metrics"]["intentions"])["proposed"] == len(outcomes) and i, 10,
                       "every intention counted")
    assert found["approved"] == 1 and found["objected"] == objected >= 1
    assert found["conflicts_per_100"] == pytest.approx(100.0 * objected / len(outcomes), abs=0.01)


def test_the_patterns_count_the_tasks_they_complete(node):
    client = node.client()
    for i in range(3):
        assert client.actor("runner").ask({"n": i}, timeout=20) == "ok"  # a pipeline run: one task
    assert client.actor("runner").ask({"burst": 4}, timeout=20) == "ok"  # a burst: four tasks
    wait_until(lambda: metrics_of(node, "runner")["tasks_completed"] == 7, 10, "7 tasks counted")
    assert node.status()["metrics"]["tasks_completed"] == 7
    assert metrics_of(node, "echo")["tasks_completed"] == 0


def agents_of(module: str, **classes: str) -> str:
    return "\n".join(f'[[agents]]\nname = "{name}"\nclass = "{module}:{cls}"\n' for name, cls in classes.items())


def tasks_of(node, *names: str) -> dict[str, int]:
    return {name: metrics_of(node, name).get("tasks_completed") for name in names}


def test_a_choreography_counts_each_step_where_it_ran(start_node):
    from mesh.patterns import Choreography

    reactors = {"scout": "Scout", "validator": "Validator", "healer": "Healer", "reporter": "Reporter"}
    node = start_node(agents_of("choreography_actors", **reactors), name="m", timeout=90)
    choreography = Choreography(node.client(), start="START_TESTING", terminal=["VALIDATION_COMPLETE"])
    for i in range(3):  # the playbook's chain: five steps a run, the validator's two of them
        assert choreography.run({"target": f"shop{i}"}, timeout=60).status == "complete"
    # A run whose healer raises: the scout's and the validator's steps completed, the healer's did not.
    assert choreography.run({"target": "shop", "fail": "healer"}, timeout=60).status == "failed"
    expected = {"scout": 4, "validator": 7, "healer": 3, "reporter": 3}
    wait_until(lambda: tasks_of(node, *reactors) == expected, 10, f"the steps counted: {expected}")
    assert node.status()["metrics"]["tasks_completed"] == 17


def test_a_hierarchy_counts_each_subtask_a_worker_finished(start_node):
    from mesh.patterns.hierarchy import Commander

    node = start_node(agents_of("hierarchy_actors", lead="Leader", w1="Tester", w2="Tester") + "\n"
                      + '[[agents]]\nname = "w3"\nclass = "hierarchy_actors:Tester"\nconfig = { fail = true }\n'
                      + '[[agents]]\nname = "skipper"\nclass = "hierarchy_actors:Leader"\n'
                        'config = { decision = "skip" }\n', name="m", timeout=90)
    declared = {"commander": {"name": "HQ"},
                "squad_leaders": {"lead": {"workers": ["w1", "w2"], "worker_timeout": 10},
                                  "skipper": {"workers": ["w3"], "worker_timeout": 10}}}
    client = node.client()
    for i in range(3):  # each mission: one objective per squad; lead's two workers finish theirs, w3 fails (skipped)
        summary = Commander(declared, client).run({"n": i})
        assert [e["status"] for e in summary["objectives"]] == ["done", "partial"], summary
    wait_until(lambda: tasks_of(node, "lead", "skipper") == {"lead": 6, "skipper": 0}, 10, "6 subtasks counted")
    assert node.status()["metrics"]["tasks_completed"] == 6
    assert tasks_of(node, "w1", "w2", "w3") == {"w1": 0, "w2": 0, "w3": 0}  # counted by who coordinates them


def test_an_adaptive_mesh_counts_each_task_an_agent_completed(start_node):
    from mesh.patterns.adaptive import AdaptiveMesh

    node = start_node(agents_of("adaptive_actors", a1="ItemWorker", a2="ItemWorker"), name="m", timeout=90)
    client = node.client()
    for i in range(5):
        client.state.set(f"work/item-{i}", "todo")
    wait_until(lambda: len(client.state.items("work/")) == 5, 10, "the items in the shared state")
    result = AdaptiveMesh(["a1", "a2"], client).run(deadline=60)
    assert result["status"] == "objective_met" and result["acted"] == 5, result
    acted = {name: record["acted"] for name, record in result["agents"].items()}
    wait_until(lambda: tasks_of(node, "a1", "a2") == acted, 10, f"each agent's tasks counted: {acted}")
    assert node.status()["metrics"]["tasks_completed"] == 5


def test_an_idle_agent_reports_only_when_its_counters_changed_and_its_node_reads_silence_as_idle(node):
    """Issue 17: a thousand idle agents each reported every 2 s, and their node spent its CPU
    hearing that nothing changed. An agent its node started now reports when its counters changed
    (within IDLE_BEAT_S); its node reads the silence in between as "unchanged"."""
    quiet = wait_until(lambda: (a := node.agent("echo"))["last_report_s"] is not None
                       and a["last_report_s"] >= 2.5 * IDLE_BEAT_S and a, 30, "a silent idle echo")
    assert quiet["messages"] == 0 and quiet["metrics"]["utilization"] == 0.0  # idle since it registered
    assert quiet["metrics"]["throughput_per_s"] == 0.0
    client = node.client()
    for i in range(5):
        assert client.actor("echo").ask(i, timeout=10) == i
    heard = wait_until(lambda: (a := node.agent("echo"))["messages"] == 5 and a, 3 * IDLE_BEAT_S + 5,
                       "the echo's report of its five messages")
    assert heard["last_report_s"] < 2 * IDLE_BEAT_S + 5 and heard["metrics"]["throughput_per_s"] > 0
    again = wait_until(lambda: (a := node.agent("echo"))["last_report_s"] >= 2.5 * IDLE_BEAT_S and a, 30,
                       "the echo silent again")
    assert again["messages"] == 5  # nothing was lost to the silence
    assert 0 < again["metrics"]["throughput_per_s"] < heard["metrics"]["throughput_per_s"]  # the rate decays
