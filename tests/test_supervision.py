"""Supervision with real processes: restart policies, intensity, waves, stopping, orphans."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from conftest import pid_gone, run_cli, wait_until

ROOT = Path(__file__).resolve().parent.parent

CRASH_REASONS = {
    "exception": "exited with code 1 (RuntimeError: boom on purpose)",  # a tell handler raised: exit code 1, and why
    "exit": "exited with code 3",  # os._exit(3)
    "sigkill": "killed by SIGKILL",  # the test kills the agent's pid
    "clean": "exited cleanly",  # self.mesh.stop(): on_stop runs, the process exits 0
}


def crasher(restart: str, *, name: str = "crasher", extra: str = 'backoff = "500ms"') -> str:
    return f'[[agents]]\nname = "{name}"\nclass = "actors:Crasher"\nrestart = "{restart}"\n{extra}\n'


def crash(node, name: str, kind: str) -> None:
    """Make agent ``name`` end its process the way ``kind`` says."""
    if kind == "sigkill":
        os.kill(node.agent(name)["pid"], signal.SIGKILL)
        return
    client = node.client_once()
    client.actor(name).tell({"crash": kind})
    client.flush()


def answers_with_pid(node, name: str) -> int:
    """Ask the agent for its pid (it answers from its own process)."""
    return node.client_once().actor(name).ask({}, timeout=5.0)["pid"]


def alive(pid: int) -> bool:
    return not pid_gone(pid)


# --------------------------------------------------------------------------- restart policies


@pytest.mark.parametrize("kind", ["exception", "exit", "sigkill"])
@pytest.mark.parametrize("policy", ["on-failure", "always"])
def test_a_crashed_agent_is_restarted_in_a_new_process(start_node, policy, kind):
    node = start_node(crasher(policy))
    before = node.agent("crasher")
    assert before["state"] == "running" and before["restarts"] == 0
    assert answers_with_pid(node, "crasher") == before["pid"]

    crash(node, "crasher", kind)

    restarting = node.wait_agent("crasher", lambda a: a["state"] == "restarting", what="crasher restarting")
    assert restarting["restarts"] == 1
    assert restarting["reason"] == CRASH_REASONS[kind]
    after = node.wait_agent("crasher", lambda a: a["state"] == "running", what="crasher running again")
    assert after["restarts"] == 1
    assert after["pid"] != before["pid"]
    assert after["incarnation"] == 1
    assert pid_gone(before["pid"])
    assert answers_with_pid(node, "crasher") == after["pid"]


@pytest.mark.parametrize("kind", ["exception", "exit", "sigkill"])
@pytest.mark.both_starts
def test_under_never_a_crashed_agent_fails_and_stays_down(start_node, kind):
    node = start_node(crasher("never"))
    pid = node.agent("crasher")["pid"]

    crash(node, "crasher", kind)

    failed = node.wait_agent("crasher", lambda a: a["state"] in ("failed", "stopped"), what="crasher failed")
    assert failed["state"] == "failed"
    assert failed["reason"] == CRASH_REASONS[kind]
    assert failed["restarts"] == 0
    wait_until(lambda: pid_gone(pid), 5, "the crashed process to be gone")
    # It stays down: the node starts nothing for it.
    assert node.agent("crasher")["state"] == "failed"


@pytest.mark.parametrize("policy", ["never", "on-failure"])
@pytest.mark.both_starts
def test_a_clean_exit_is_stopped_not_restarted(start_node, policy):
    node = start_node(crasher(policy))
    pid = node.agent("crasher")["pid"]

    assert node.client_once().actor("crasher").ask({"crash": "clean"}) == "stopping"

    stopped = node.wait_agent("crasher", lambda a: a["state"] not in ("running",), what="crasher to end")
    assert stopped["state"] == "stopped"
    assert stopped["reason"] == "exited cleanly"
    assert stopped["restarts"] == 0
    wait_until(lambda: pid_gone(pid), 5, "the stopped process to be gone")


def test_always_restarts_even_a_clean_exit(start_node):
    node = start_node(crasher("always"))
    pid = node.agent("crasher")["pid"]

    node.client_once().actor("crasher").ask({"crash": "clean"})

    restarting = node.wait_agent("crasher", lambda a: a["state"] == "restarting", what="crasher restarting")
    assert restarting["reason"] == "exited cleanly"
    after = node.wait_agent("crasher", lambda a: a["state"] == "running" and a["pid"] != pid)
    assert after["restarts"] == 1


@pytest.mark.both_starts
def test_a_tell_sent_after_a_restart_reaches_the_new_process(start_node):
    node = start_node('[[agents]]\nname = "counter"\nclass = "actors:Counter"\nbackoff = "50ms"\n')
    client = node.client()
    client.actor("counter").tell("before")
    assert client.actor("counter").ask({"get": True})["seen"] == ["before"]
    old_channel = client.actor("counter")._channel()
    old_pid = node.agent("counter")["pid"]

    os.kill(old_pid, signal.SIGKILL)
    node.wait_agent("counter", lambda a: a["state"] == "running" and a["pid"] != old_pid, what="counter restarted")
    wait_until(lambda: old_channel.closed, 5, "the janitor to close the channel to the dead process")
    client.actor("counter").tell("after")

    seen = wait_until(lambda: client.actor("counter").ask({"get": True})["seen"], 5, "the tell to arrive")
    assert seen == ["after"]


@pytest.mark.both_starts
def test_an_agent_closes_its_channel_to_a_dead_peer_from_its_node_link(start_node):
    # An agent's channels are swept by the thread that watches its node (it wakes every two
    # seconds anyway): the channel to a peer that died is closed, and no janitor thread runs.
    node = start_node('[[agents]]\nname = "counter"\nclass = "actors:Counter"\nbackoff = "50ms"\n\n'
                      '[[agents]]\nname = "probe"\nclass = "actors:ChannelProbe"\n')
    probe = node.client().actor("probe")
    assert probe.ask({"ask": "counter"}, timeout=15)["seen"] == []
    assert probe.ask({"probe": True})["closed"] is False
    old_pid = node.agent("counter")["pid"]

    os.kill(old_pid, signal.SIGKILL)
    node.wait_agent("counter", lambda a: a["state"] == "running" and a["pid"] != old_pid, what="counter restarted")
    seen = wait_until(lambda: (answer := probe.ask({"probe": True}))["closed"] and answer, 15,
                      "the probe's node link to close its channel to the dead process")
    assert "mesh-node-link" in seen["threads"]
    assert "mesh-janitor" not in seen["threads"]


# --------------------------------------------------------------------------- intensity


def test_the_default_on_failure_gives_up_after_the_second_crash_in_the_window(start_node):
    node = start_node('[[agents]]\nname = "crasher"\nclass = "actors:Crasher"\nbackoff = "50ms"\n')

    crash(node, "crasher", "exception")
    node.wait_agent("crasher", lambda a: a["state"] == "running" and a["restarts"] == 1, what="first restart")
    crash(node, "crasher", "exception")

    failed = node.wait_agent("crasher", lambda a: a["state"] == "failed", what="crasher failed")
    assert failed["restarts"] == 1
    assert "gave up after 1 restart(s) within 60 s" in failed["reason"]
    assert failed["reason"].startswith("exited with code 1")
    table = run_cli("status", "--node", node.address).stdout
    assert "gave up after 1 restart(s)" in table


def test_a_configured_intensity_allows_exactly_that_many_restarts(start_node):
    node = start_node(
        crasher("on-failure", extra='max_restarts = 3\nrestart_window = "30s"\nbackoff = "50ms"')
    )
    pids = {node.agent("crasher")["pid"]}
    for restarts in (1, 2, 3):
        crash(node, "crasher", "exit")
        up = node.wait_agent(
            "crasher", lambda a, n=restarts: a["state"] == "running" and a["restarts"] == n, what=f"restart {restarts}"
        )
        pids.add(up["pid"])
    assert len(pids) == 4, "every restart runs in a new process"

    crash(node, "crasher", "exit")

    failed = node.wait_agent("crasher", lambda a: a["state"] == "failed", what="crasher failed")
    assert failed["restarts"] == 3
    assert "gave up after 3 restart(s) within 30 s" in failed["reason"]


# --------------------------------------------------------------------------- waves


def test_agents_start_in_waves_and_all_of_them_run(start_node):
    agents = "".join(f'[[agents]]\nname = "e{i}"\nclass = "actors:Echo"\n' for i in range(6))
    node = start_node(agents, node_extra="wave_size = 2")

    st = node.wait_running(*(f"e{i}" for i in range(6)))

    pids = {a["pid"] for a in st["agents"]}
    assert len(pids) == 6
    # The wave slides: at most two start at once, and each that registers lets the next start, so
    # e<j> starts only once j - 1 others have registered: the r-th to register is at most e<r+1>
    # (the node's events show the registrations in order; all six at once would break it).
    order = [line.split()[1] for line in node.log().splitlines() if " running (pid " in line]
    assert sorted(order) == [f"e{i}" for i in range(6)], order
    assert all(int(name[1:]) <= r + 1 for r, name in enumerate(order)), order
    client = node.client_once()
    for i in range(6):
        assert client.actor(f"e{i}").ask({"i": i}) == {"i": i}


# --------------------------------------------------------------------------- stopping


def lifecycle(name: str, journal) -> str:
    return f'[[agents]]\nname = "{name}"\nclass = "actors:Lifecycle"\nconfig = {{ journal = "{journal}" }}\n'


@pytest.mark.both_starts
def test_mesh_down_runs_every_on_stop_and_the_node_exits_0(start_node, tmp_path):
    journals = {f"life{i}": tmp_path / f"life{i}.journal" for i in range(3)}
    node = start_node("".join(lifecycle(n, j) for n, j in journals.items()))
    pids = {a["name"]: a["pid"] for a in node.status()["agents"]}
    node.close_clients()

    down = run_cli("down", "--node", node.address)

    assert down.returncode == 0, down.stderr
    assert node.proc.wait(timeout=15) == 0
    for name, journal in journals.items():
        assert journal.read_text().splitlines() == [f"start {pids[name]}", f"stop {pids[name]}"]
        assert pid_gone(pids[name])


@pytest.mark.both_starts
def test_an_agent_whose_on_stop_hangs_is_killed_after_the_stop_timeout(start_node, tmp_path):
    journal = tmp_path / "life.journal"
    node = start_node(
        '[[agents]]\nname = "slow"\nclass = "actors:SlowStop"\n' + lifecycle("life", journal),
        node_extra='stop_timeout = "1s"',
    )
    slow_pid = node.agent("slow")["pid"]
    node.close_clients()

    started = time.monotonic()
    down = run_cli("down", "--node", node.address)
    code = node.proc.wait(timeout=15)
    elapsed = time.monotonic() - started

    assert down.returncode == 0, down.stderr
    assert code == 0
    assert 0.9 <= elapsed < 6.0, f"the node took {elapsed:.2f} s to stop"
    assert pid_gone(slow_pid)
    assert "slow did not stop in time: SIGKILL" in node.log()
    assert journal.read_text().splitlines()[-1].startswith("stop "), "the other agent still stopped gracefully"


def forker_node(start_node, *more: str):
    node = start_node('[[agents]]\nname = "forker"\nclass = "actors:Forker"\n' + "".join(more))
    child = node.client_once().actor("forker").ask({})
    assert isinstance(child, int) and alive(child)
    pids = {a["name"]: a["pid"] for a in node.status()["agents"]}
    pids["child forked by forker"] = child
    assert set(pids.values()) <= {p.pid for p in node.descendants()}
    return node, pids


@pytest.mark.both_starts
def test_mesh_down_leaves_no_agent_and_no_forked_child_behind(start_node):
    node, pids = forker_node(start_node, '[[agents]]\nname = "echo"\nclass = "actors:Echo"\n')
    node.close_clients()

    assert run_cli("down", "--node", node.address).returncode == 0
    assert node.proc.wait(timeout=15) == 0

    wait_until(lambda: all(pid_gone(p) for p in pids.values()), 5, f"processes {pids} to be gone")


def sigkill_node_and_wait_for(node, pids: dict[str, int], within: float = 5.0) -> None:
    """SIGKILL the node; every pid must be gone ``within`` seconds of the kill (plus a small margin)."""
    procs = {name: psutil.Process(pid) for name, pid in pids.items()}
    try:
        node.proc.kill()
        killed_at = time.monotonic()
        node.proc.wait(timeout=5)
        try:
            wait_until(lambda: all(pid_gone(p) for p in pids.values()), killed_at + within + 0.5 - time.monotonic())
        except AssertionError:
            left = {name: pid for name, pid in pids.items() if not pid_gone(pid)}
            raise AssertionError(f"{len(left)} process(es) outlived their SIGKILLed node by {within} s: {left}") from None
    finally:  # the node is gone, so its fixture cannot find these any more
        for proc in procs.values():
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass


@pytest.mark.both_starts
def test_after_the_node_is_sigkilled_its_agents_and_their_children_exit_by_themselves(start_node):
    node, pids = forker_node(start_node, '[[agents]]\nname = "echo"\nclass = "actors:Echo"\n')
    node.close_clients()

    sigkill_node_and_wait_for(node, pids)


@pytest.mark.both_starts
def test_an_orphaned_agent_whose_on_stop_hangs_is_killed_within_the_grace(start_node):
    node = start_node('[[agents]]\nname = "slow"\nclass = "actors:SlowStop"\n')
    pid = node.agent("slow")["pid"]
    node.close_clients()

    sigkill_node_and_wait_for(node, {"slow": pid})


@pytest.mark.both_starts
def test_an_agent_stuck_in_on_start_does_not_outlive_a_sigkilled_node(start_node, tmp_path):
    marker = tmp_path / "in-on-start"
    node = start_node(f'[[agents]]\nname = "stuck"\nclass = "actors:HangingStart"\nconfig = {{ marker = "{marker}" }}\n',
                      wait=False)
    wait_until(marker.exists, 15, "the agent to be inside on_start")
    wait_until(lambda: marker.read_text(), 5, "the marker to be written")
    pid = int(marker.read_text())
    node.proc.kill()
    node.proc.wait()
    killed = time.monotonic()
    wait_until(lambda: pid_gone(pid), 8, "the orphaned agent to exit")
    assert time.monotonic() - killed < 5.5


def _link_thread_wakes(pid: int) -> int:
    """How often the agent's node-link thread has gone to sleep so far (its voluntary context
    switches): the thread that is neither the main one nor one of ZeroMQ's."""
    counts = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            if int(tid) == pid or f.read().startswith("ZMQbg"):
                continue
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            counts += [int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches")]
    assert len(counts) == 1, f"expected one thread beside the main one and ZeroMQ's, found {len(counts)}"
    return counts[0]


def _pidfd_works() -> bool:
    try:
        fd = os.pidfd_open(os.getpid())
    except (AttributeError, OSError):
        return False
    os.close(fd)
    return True


def _holds_a_pidfd(pid: int) -> bool:
    """Whether process ``pid`` holds a process descriptor (its node link's, of its node)."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[pidfd]":
                return True
        except OSError:  # closed meanwhile
            pass
    return False


@pytest.mark.both_starts
def test_an_idle_agents_node_link_wakes_every_two_seconds_not_every_second(start_node):
    # It waits on a descriptor of its node's process (it sees the node end at once) instead of
    # looking at its parent every second; it sweeps no channel to its node.
    node = start_node('[[agents]]\nname = "echo"\nclass = "actors:Echo"\n')
    pid = node.agent("echo")["pid"]
    node.close_clients()
    if not _pidfd_works():
        pytest.skip("no pidfd_open here (an old kernel, or refused): the link looks at its parent every second")
    wait_until(lambda: _holds_a_pidfd(pid), 10, "the agent's node link to hold its node's descriptor")
    before, t0 = _link_thread_wakes(pid), time.monotonic()
    time.sleep(8.0)  # the span the wake-ups are counted over (nothing to wait for: the agent idles)
    woke, spent = _link_thread_wakes(pid) - before, time.monotonic() - t0
    # Every 2 s: 4 or 5 in 8 s (once a second it was 8 or 9).
    assert woke < 0.75 * spent, f"the idle node link went to sleep {woke} times in {spent:.1f} s"


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="no pidfd_open here: the link looks every second")
def test_the_node_link_sees_its_node_end_through_a_descriptor_of_the_nodes_process(tmp_path):
    # The mechanism beneath the test above, with real processes: a "node" forks an "agent", which
    # opens the descriptor (pidfd) and waits on it; the node exits; the agent's wait ends at once.
    script = tmp_path / "watch.py"
    script.write_text(f"""
import os, select, sys, time
sys.path.insert(0, {str(ROOT)!r})
from mesh.runtime.nodelink import _watch_node

node = os.getpid()
if os.fork() == 0:
    fd = _watch_node(node)
    print("watching" if fd is not None else "no descriptor", _watch_node(os.getpid()), flush=True)
    waited = time.monotonic()
    readable, _, _ = select.select([fd], [], [], 10)
    print("ended" if readable else "timed out", round(time.monotonic() - waited, 2), os.getppid() != node, flush=True)
    os._exit(0)
sys.stdin.readline()  # the test says when the node ends
""")
    node = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert node.stdout.readline().split() == ["watching", "None"]  # (not a parent: no descriptor)
        node.stdin.write("end\n")
        node.stdin.flush()
        assert node.wait(10) == 0
        ended, waited, reparented = node.stdout.readline().split()
        assert ended == "ended" and reparented == "True"
    finally:
        try:
            os.killpg(node.pid, signal.SIGKILL)  # the "agent" too, if it still waits
        except ProcessLookupError:
            pass
        node.wait()


def test_a_wait_for_input_ends_when_the_descriptor_it_watches_is_readable():
    # How the node link waits on its cancels and on its node's descriptor at once (a pipe here).
    from types import SimpleNamespace

    from mesh.runtime.nodelink import NodeLink
    from mesh.runtime.zeromq import ZMQ

    listener = ZMQ.listen("tcp://127.0.0.1", mailbox=10, replies=1, max_bytes=4096, linger_ms=0, wait_ms=50,
                          any_port=True)
    r, w = os.pipe()
    try:
        assert listener.wait_for_input(50, r) == (False, False)
        os.write(w, b"x")
        started = time.monotonic()
        assert listener.wait_for_input(20_000, r) == (False, True)
        assert time.monotonic() - started < 10  # at once, not at the end of the wait

        server = SimpleNamespace(supervised=False, name="probe", stopped=threading.Event())
        link = NodeLink(server)  # type: ignore[arg-type]
        link.cancels, link.node_fd = listener, r
        started = time.monotonic()
        assert link._wait(20.0) is False  # ended early: the node is gone, the caller looks at once
        assert time.monotonic() - started < 10
        assert link.node_fd is None  # closed: it stays readable, the parent check takes over
        with pytest.raises(OSError):
            os.fstat(r)
    finally:
        listener.close(0)
        os.close(w)


# --------------------------------------------------------------------------- escapes from the process group


def escaper_node(start_node, hang_on_stop: bool = False, node_extra: str = ""):
    """A node whose agent started a child in its own session and a double-forked daemon (setsid too)."""
    node = start_node('[[agents]]\nname = "escaper"\nclass = "escapers:Escaper"\n'
                      f'config = {{ hang_on_stop = {str(hang_on_stop).lower()} }}\n', node_extra=node_extra)
    ref = node.client_once().actor("escaper")
    pids = {"agent": node.agent("escaper")["pid"], "setsid child": ref.ask({"how": "setsid"}, timeout=10),
            "setsid daemon": ref.ask({"how": "daemon"}, timeout=10)}
    assert all(alive(p) for p in pids.values()), pids
    # The agent is their subreaper: both stay in its tree (where budgets and the teardown check look).
    wait_until(lambda: set(pids.values()) <= {p.pid for p in node.descendants()}, 5,
               f"{pids} in the node's process tree")
    return node, pids


@pytest.mark.timeout(60)
@pytest.mark.parametrize("hang_on_stop", [False, True], ids=["on_stop returns", "on_stop hangs past stop_timeout"])
@pytest.mark.both_starts
def test_mesh_down_leaves_no_setsid_child_nor_daemon_behind(start_node, hang_on_stop):
    node, pids = escaper_node(start_node, hang_on_stop=hang_on_stop, node_extra='stop_timeout = "1s"' if hang_on_stop else "")
    node.close_clients()

    assert run_cli("down", "--node", node.address).returncode == 0
    assert node.proc.wait(timeout=15) == 0

    try:
        wait_until(lambda: all(pid_gone(p) for p in pids.values()), 5, f"processes {pids} to be gone")
    finally:
        for pid in pids.values():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("hang_on_stop", [False, True], ids=["on_stop returns", "on_stop hangs"])
@pytest.mark.both_starts
def test_after_the_node_is_sigkilled_no_setsid_child_nor_daemon_survives(start_node, hang_on_stop):
    node, pids = escaper_node(start_node, hang_on_stop=hang_on_stop)
    node.close_clients()

    sigkill_node_and_wait_for(node, pids)


@pytest.mark.timeout(60)
@pytest.mark.both_starts
def test_a_crashed_agents_setsid_child_and_daemon_die_with_it_and_it_restarts(start_node):
    node, pids = escaper_node(start_node)

    os.kill(pids["agent"], signal.SIGKILL)

    try:
        wait_until(lambda: all(pid_gone(p) for p in pids.values()), 10, f"processes {pids} to be gone")
    finally:
        for pid in pids.values():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    node.wait_agent("escaper", lambda a: a["state"] == "running" and a["pid"] != pids["agent"], what="escaper restarted")
    assert node.proc.poll() is None


@pytest.mark.timeout(60)
def test_a_running_agents_daemon_is_adopted_by_the_agent_and_left_running(start_node):
    node, pids = escaper_node(start_node)

    # Re-parented to its agent (not to init, not to the node), and nobody kills what a running
    # agent started: wait past a few of the node's sweeps (once a second) and look again.
    assert psutil.Process(pids["setsid daemon"]).ppid() == pids["agent"]
    time.sleep(2.5)
    assert all(alive(p) for p in pids.values())
    assert psutil.Process(pids["setsid daemon"]).ppid() == pids["agent"]


# --------------------------------------------------------------------------- a slow node at start-up


@pytest.mark.both_starts
def test_an_agent_whose_node_answers_its_start_up_late_waits_and_runs_without_a_restart(start_node, tmp_path):
    # The node is paused (SIGSTOP) while the agent connects, longer than one try of the start-up
    # request (its registration): the agent keeps waiting for a node that lives, and counts no failure.
    marker = tmp_path / "constructed"
    node = start_node(f'[[agents]]\nname = "late"\nclass = "actors:SlowToConnect"\nplacement = "local"\n'
                      f'restart = "never"\nconfig = {{ marker = "{marker}", delay = 0.5 }}\n', wait=False)
    wait_until(lambda: marker.exists() and marker.read_text(), 20, "the agent to be constructed")
    pid = int(marker.read_text())
    os.kill(node.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(4.5)  # the pause itself is what is tested: one try of a start-up request waits 3 s
    finally:
        os.kill(node.proc.pid, signal.SIGCONT)
    running = node.wait_agent("late", lambda a: a["state"] != "starting", timeout=30, what="late to start")
    assert running["state"] == "running" and running["restarts"] == 0 and running["pid"] == pid, running
    assert node.client_once().actor("late").ask({}, timeout=10) == pid


def test_a_slow_agent_holds_one_place_of_its_wave_not_the_whole_wave(start_node, tmp_path):
    """Issue 17: a wave waited for its slowest agent before the next began, so a thousand agents
    started at the pace of the slowest of each hundred. At most ``wave_size`` start at once, and
    each that registers makes room for the next. (The slow agent comes first, in the first wave.)"""
    marker = tmp_path / "slow"
    node = start_node(f'[[agents]]\nname = "a-slow"\nclass = "actors:SlowToConnect"\nplacement = "local"\n'
                      f'config = {{ marker = "{marker}", delay = 6.0 }}\n'
                      + "".join(f'[[agents]]\nname = "fast{i}"\nclass = "actors:WhoAmI"\nplacement = "local"\n'
                                for i in range(4)),
                      node_extra='wave_size = 2\nwave_timeout = "60s"', wait=False)
    wait_until(lambda: marker.exists(), 20, "the slow agent to be starting")
    fast = wait_until(lambda: (lambda st: st if all(a["state"] == "running" for a in st["agents"]
                                                    if a["name"].startswith("fast")) else None)(node.status()),
                      30, "every fast agent running")
    assert next(a for a in fast["agents"] if a["name"] == "a-slow")["state"] == "starting"  # still in its 6 s
    node.wait_running("a-slow", timeout=30)


def test_an_agent_its_node_gave_the_frame_limit_sends_no_start_up_ping(monkeypatch):
    """The node gives the agents it starts the largest frame it takes (MESH_NODE_MAX_FRAME): the
    agent learns it without a request (its registration then waits for the node as the ping did),
    and still runs none of its code once the node that started it is gone; without the limit, the
    agent asks."""
    from mesh.errors import NodeUnavailable
    from mesh.runtime.client import Client
    from mesh.runtime.nodelink import NODE_MAX_FRAME_ENV, wait_for_node

    address = "tcp://127.0.0.1:9"  # nothing listens there: any request would wait, then fail
    monkeypatch.setenv("MESH_NODE_PID", str(os.getppid()))  # "the node": this process's parent
    monkeypatch.setenv(NODE_MAX_FRAME_ENV, "65536")
    client = Client(address, check=False)
    try:
        started = time.monotonic()
        wait_for_node(client, "a")
        assert time.monotonic() - started < 0.5
        assert client.limits[address] == 65536
    finally:
        client.close()
    monkeypatch.setenv("MESH_NODE_PID", "1")  # not this process's parent: the node is gone
    started = time.monotonic()
    with pytest.raises(NodeUnavailable, match="the node that started it is gone"):
        wait_for_node(Client(address, check=False), "a")
    assert time.monotonic() - started < 0.5
    monkeypatch.delenv(NODE_MAX_FRAME_ENV)
    client = Client(address, check=False)
    with pytest.raises(NodeUnavailable):
        wait_for_node(client, "a")  # it asked; no answer, and the node is not its parent
