"""The parallel burst with real processes: tasks spread over ten agents within a limit, results as
they complete, a task that hangs or crashes reported as such while the others' results are kept,
a mesh-wide pool never exceeded, and a burst run from inside an actor."""

from __future__ import annotations

import time

import pytest

from mesh.patterns import Burst, BurstReport, TaskResult

pytestmark = pytest.mark.timeout(180)

WORKERS = 10


def workers_spec(journal, pool_size: int | None = None) -> str:
    pool = f'[pools.db]\nsize = {pool_size}\nlease = "10s"\n\n' if pool_size else ""
    return (f'{pool}[[agents]]\nname = "worker"\nclass = "actors:BurstWorker"\nreplicas = {WORKERS}\n'
            f'config = {{ journal = "{journal}" }}\n')


def names() -> list[str]:
    return [f"worker.{i}" for i in range(WORKERS)]


def peak_overlap(journal) -> int:
    """The most tasks that ran at once, by the workers' own notes."""
    events = sorted((float(t), what == "start") for t, what, _ in (line.split() for line in journal.read_text().splitlines()))
    running = peak = 0
    for _, starts in events:
        running += 1 if starts else -1
        peak = max(peak, running)
    return peak


@pytest.fixture
def workers(start_node, tmp_path):
    journal = tmp_path / "tasks.journal"
    node = start_node(workers_spec(journal), timeout=90)
    return node, journal


def test_a_burst_spreads_tasks_over_ten_agents_within_its_limit_and_merges_the_results(workers):
    node, journal = workers
    seen: list[TaskResult] = []
    burst = Burst(node.client(), names(), limit=4, timeout=20,
                  merge=lambda results: sum(r.value["square"] for r in results if r.ok))
    report = burst.run([{"n": n, "sleep": 0.1} for n in range(30)], on_result=seen.append)
    assert isinstance(report, BurstReport) and report.status == "ok"
    assert [r.key for r in report.results] == list(range(30))
    assert [v["square"] for v in report.values] == [n * n for n in range(30)]
    assert report.merged == sum(n * n for n in range(30))
    assert len(seen) == 30 and {r.agent for r in report.results} == set(names())
    assert 2 <= peak_overlap(journal) <= 4


def test_a_burst_over_a_replica_groups_name_spreads_its_tasks_over_the_running_replicas(workers):
    node, _ = workers
    burst = Burst(node.client(), "worker", limit=WORKERS, timeout=20)
    assert sorted(burst.members()) == sorted(names())
    report = burst.run([{"n": n, "sleep": 0.2} for n in range(WORKERS)])
    assert report.status == "ok" and {v["by"] for v in report.values} == set(names())


def test_results_come_as_they_complete_and_a_dict_names_each_tasks_agent(workers):
    node, _ = workers
    burst = Burst(node.client(), timeout=20)
    order = [r.key for r in burst.results({"worker.0": {"n": 0, "sleep": 1.5}, "worker.1": {"n": 1},
                                           "worker.2": {"n": 2, "sleep": 0.5}})]
    assert order == ["worker.1", "worker.2", "worker.0"]
    report = burst.run({"worker.3": {"n": 3}, "worker.4": {"n": 4}})
    assert [(r.key, r.agent, r.value["by"]) for r in report.results] == [("worker.3", "worker.3", "worker.3"),
                                                                        ("worker.4", "worker.4", "worker.4")]


def test_a_hanging_task_times_out_and_crashing_ones_are_errors_while_the_others_are_kept(workers):
    node, _ = workers
    tasks = [{"n": n} for n in range(WORKERS)]
    tasks[3] = {"n": 3, "sleep": 8}
    tasks[5] = {"n": 5, "raise": True}
    tasks[7] = {"n": 7, "exit": True}
    started = time.monotonic()
    report = Burst(node.client(), names(), limit=WORKERS, timeout=2).run(tasks)
    assert time.monotonic() - started < 7  # the hanging task did not hold the burst up for its 8 s
    statuses = {r.key: r.status for r in report.results}
    assert statuses == {**{n: "ok" for n in range(WORKERS)}, 3: "timeout", 5: "error", 7: "error"}
    assert report.status == "partial" and len(report.values) == WORKERS - 3
    by_key = {r.key: r for r in report.results}
    assert by_key[3].error.startswith("AskTimeout")
    assert by_key[5].error.startswith("RemoteError") and "failed on purpose" in by_key[5].error
    assert by_key[7].error.startswith("ActorDied")


def test_leaving_the_results_early_cancels_the_tasks_not_yet_sent(workers):
    node, journal = workers
    burst = Burst(node.client(), names()[:2], limit=1, timeout=20)
    for result in burst.results([{"n": n, "sleep": 0.2} for n in range(20)]):
        assert result.ok
        break
    time.sleep(1.0)  # long enough for several more tasks, had they been sent
    starts = [line for line in journal.read_text().splitlines() if " start " in line]
    assert len(starts) <= 2


def test_a_burst_with_a_pool_of_two_never_runs_more_than_two_tasks_at_once(start_node, tmp_path):
    journal = tmp_path / "pool.journal"
    node = start_node(workers_spec(journal, pool_size=2), timeout=90)
    client = node.client()
    report = Burst(client, names(), limit=WORKERS, timeout=20, pool="db", pool_timeout=60).run(
        [{"n": n, "sleep": 0.05} for n in range(24)])
    assert report.status == "ok", report.failures
    assert peak_overlap(journal) == 2  # the pool's size, not the limit of 10
    assert any(r.waited > 0.01 for r in report.results)
    assert node.status()["resources"]["pools"]["db"]["held"] == 0  # every lease released


@pytest.mark.parametrize("async_form", [False, True], ids=["sync", "async"])
def test_an_actor_runs_a_burst_through_its_own_mesh_handle(start_node, tmp_path, async_form):
    journal = tmp_path / "tasks.journal"
    node = start_node(workers_spec(journal).replace("replicas = 10", "replicas = 3")
                      + f'\n[[agents]]\nname = "driver"\nclass = "actors:BurstDriver"\n'
                        f'config = {{ async_form = {str(async_form).lower()} }}\n', timeout=90)
    answer = node.client().actor("driver").ask(
        {"agents": [f"worker.{i}" for i in range(3)], "tasks": [{"n": n} for n in range(9)] + [{"raise": True}]},
        timeout=60)
    assert answer["statuses"] == ["ok"] * 9 + ["error"]
    assert [v["square"] for v in answer["values"]] == [n * n for n in range(9)]


def test_a_burst_refuses_a_limit_or_timeout_that_makes_no_sense():
    with pytest.raises(ValueError, match="limit"):
        Burst(None, ["a"], limit=0)
    with pytest.raises(ValueError, match="seconds"):
        Burst(None, ["a"], timeout=0)
