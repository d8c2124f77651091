"""Preforked agents: the node's zygote forks them; its death is survived; how each agent starts is
its spec's to say. (The supervision, budget, orphan and logging tests marked ``both_starts`` run
with forked and spawned agents alike.)"""

from __future__ import annotations

import os
import signal

import psutil
import pytest

from conftest import pid_gone, run_cli, wait_until

pytestmark = pytest.mark.timeout(90)


def echoes(*names: str, extra: str = "") -> str:
    return "".join(f'[[agents]]\nname = "{n}"\nclass = "actors:WhoAmI"\nplacement = "local"\n{extra}\n' for n in names)


def cmdline(pid: int) -> str:
    return " ".join(psutil.Process(pid).cmdline())


def zygotes_of(node) -> list[int]:
    return [p.pid for p in psutil.Process(node.proc.pid).children() if "mesh.runtime.zygote" in " ".join(p.cmdline())
            and p.pid not in {a["pid"] for a in node.status()["agents"]}]


def answers(node, name: str) -> int:
    return node.client_once().actor(name).ask({}, timeout=10)["pid"]


def test_agents_are_forked_by_the_zygote_as_children_of_the_node(start_node):
    node = start_node(echoes("a", "b"))
    for name in ("a", "b"):
        pid = node.agent(name)["pid"]
        assert answers(node, name) == pid
        process = psutil.Process(pid)
        assert process.ppid() == node.proc.pid  # re-parented to the node: it reaps and signals it
        assert os.getpgid(pid) == pid  # a process group of its own: the node signals the group
        assert os.getsid(pid) == os.getsid(node.proc.pid)  # in the node's session (the kernel's autogroup)
        assert "mesh.runtime.zygote" in cmdline(pid)
    assert len(zygotes_of(node)) == 1


def test_agents_and_the_zygote_run_nicer_than_their_node_by_agent_nice(start_node):
    """The node's control loop (leases, heartbeats) gets the CPU first: with 160 agents starting on
    32 nodes of one 2-core machine, agents as nice as their nodes (each in a session of its own,
    which the kernel's autogroup weighs as much as all the nodes together) starved the voters, and
    every node lost its lease again and again."""
    node = start_node(echoes("forked") + echoes("fresh", extra='start = "spawn"'))
    base = psutil.Process(node.proc.pid).nice()
    for name in ("forked", "fresh"):
        pid = node.agent(name)["pid"]
        assert psutil.Process(pid).nice() == min(19, base + 10), name  # agent_nice: 10 by default
        assert os.getpgid(pid) == pid and os.getsid(pid) == os.getsid(node.proc.pid), name
    [zygote] = zygotes_of(node)
    assert psutil.Process(zygote).nice() == min(19, base + 10)
    assert os.getsid(zygote) == os.getsid(node.proc.pid)

    same = start_node(echoes("forked2") + echoes("fresh2", extra='start = "spawn"'), name="same",
                      node_extra="agent_nice = 0")
    base = psutil.Process(same.proc.pid).nice()
    for name in ("forked2", "fresh2"):
        assert psutil.Process(same.agent(name)["pid"]).nice() == base, name


def test_the_zygote_starts_while_the_node_meets_the_mesh_if_its_agents_fork(start_node):
    """Its start (a fresh interpreter) overlaps the node's wait for the mesh, instead of delaying the
    first agents; a node whose agents all spawn starts none."""
    node = start_node(echoes("a"))
    log = node.log()
    assert log.index("zygote started") < log.index("listening on"), log
    spawning = start_node(echoes("fresh", extra='start = "spawn"'))
    assert spawning.agent("fresh")["state"] == "running"
    assert "zygote started" not in spawning.log() and zygotes_of(spawning) == []


def test_a_spec_can_ask_for_a_fresh_interpreter_per_agent(start_node):
    node = start_node(echoes("forked") + echoes("fresh", extra='start = "spawn"'))
    assert "mesh.runtime.zygote" in cmdline(node.agent("forked")["pid"])
    assert "mesh.runtime.agent" in cmdline(node.agent("fresh")["pid"])
    assert answers(node, "fresh") == node.agent("fresh")["pid"]


#: What differs between two agents by design: who each is, and the deadline of its first lease.
OWN = {"MESH_AGENT_NAME", "MESH_LEASE_UNTIL"}


def test_a_forked_agent_has_the_environment_a_spawned_one_has(start_node):
    """The zygote's environment (its node's, with a few of its own) becomes the agent's by changing
    only what differs; the agent, and the programs it starts, see exactly what a spawned one sees."""
    probe = '[[agents]]\nname = "{}"\nclass = "actors:EnvProbe"\nplacement = "local"\n{}\n'
    node = start_node(probe.format("forked", "") + probe.format("fresh", 'start = "spawn"'))
    client = node.client_once()
    forked, fresh = (client.actor(name).ask({}, timeout=30) for name in ("forked", "fresh"))
    assert "mesh.runtime.zygote" in cmdline(node.agent("forked")["pid"])
    for seen in (forked, fresh):
        assert seen["own"] == seen["child"]
    assert forked["own"]["MESH_AGENT_NAME"] == "forked"
    assert {k: v for k, v in forked["own"].items() if k not in OWN} == \
        {k: v for k, v in fresh["own"].items() if k not in OWN}


TAKE_ENVIRONMENT = """
import json, os, subprocess, sys
from mesh.runtime.zygote import _take_environment
kept = os.environ._data[b"KEEP"]
_take_environment({"KEEP": "same", "CHANGE": "new", "ADD": "added", "PATH": os.environ["PATH"]})
child = subprocess.run([sys.executable, "-c", "import os, json; print(json.dumps(dict(os.environ)))"],
                       capture_output=True, text=True, env=None).stdout
print(json.dumps([dict(os.environ), json.loads(child), os.environ._data[b"KEEP"] is kept]))
"""


def test_taking_an_environment_drops_changes_and_adds_what_differs():
    """Issue 17: a clear and update of the environment in each forked agent wrote to some 330 kB
    of pages it shared with the zygote."""
    import json
    import subprocess
    import sys

    env = {"KEEP": "same", "CHANGE": "old", "DROP": "gone", "PATH": os.environ["PATH"],
           "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", TAKE_ENVIRONMENT], capture_output=True, text=True, timeout=60,
                          env=env, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr
    own, child, untouched = json.loads(done.stdout)
    want = {"KEEP": "same", "CHANGE": "new", "ADD": "added", "PATH": os.environ["PATH"]}
    assert own == want
    assert {k: v for k, v in child.items() if k != "LC_CTYPE"} == want  # what a program it starts gets
    assert untouched  # an entry that is the same is not made again (its pages stay the zygote's to share)


def test_the_zygotes_death_is_survived_and_new_agents_fork_from_a_new_one(start_node):
    node = start_node(echoes("steady") + '[[agents]]\nname = "crasher"\nclass = "actors:Crasher"\nrestart = "always"\n'
                      'placement = "local"\nbackoff = "100ms"\n')
    steady = node.agent("steady")["pid"]
    [zygote] = zygotes_of(node)

    os.kill(zygote, signal.SIGKILL)
    wait_until(lambda: pid_gone(zygote), 10, "the zygote to be gone")

    assert answers(node, "steady") == steady  # running agents are not its children: they run on
    crashed = node.agent("crasher")["pid"]
    client = node.client_once()
    client.actor("crasher").tell({"crash": "exit"})
    client.flush()
    again = node.wait_agent("crasher", lambda a: a["state"] == "running" and a["pid"] != crashed, timeout=30,
                            what="the crasher forked again")
    assert "mesh.runtime.zygote" in cmdline(again["pid"])
    assert psutil.Process(again["pid"]).ppid() == node.proc.pid
    [new_zygote] = zygotes_of(node)
    assert new_zygote != zygote
    assert node.agent("steady")["pid"] == steady and node.agent("steady")["restarts"] == 0
    assert "zygote exited" in node.log()


def test_a_module_that_does_not_import_is_a_spec_error_when_agents_fork(tmp_path, mesh_home):
    (tmp_path / "broken_agent.py").write_text("raise RuntimeError('no import for you')\n")
    spec = tmp_path / "node.toml"
    spec.write_text(f'[node]\nlisten = "tcp://127.0.0.1:1"\nstart = "fork"\npath = ["{tmp_path}"]\n\n'
                    '[[agents]]\nname = "x"\nclass = "broken_agent:X"\npreload = true\n')
    result = run_cli("up", str(spec), timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "agents[0].class" in result.stderr and "no import for you" in result.stderr


def test_a_preloaded_module_is_shared_with_the_forked_agents(start_node, capsys):
    node = start_node(echoes("p0", "p1", "p2", extra="preload = true"))
    memory = {}
    for name in ("p0", "p1", "p2"):
        info = psutil.Process(node.agent(name)["pid"]).memory_full_info()
        memory[name] = info
        assert info.pss < info.rss  # pages shared with the zygote and its other agents
    with capsys.disabled():
        print("\nforked agent memory (MB): " + ", ".join(
            f"{n} pss {m.pss / 1e6:.2f} uss {m.uss / 1e6:.2f} rss {m.rss / 1e6:.2f}" for n, m in memory.items()))


RUN_TO_EXIT = """
import atexit, sys, threading, time
from mesh.runtime.zygote import run_to_exit

out = sys.argv[1]
how = sys.argv[2]

def note(what):
    with open(out, "a") as f:
        f.write(what + "\\n")

def body():
    atexit.register(note, "atexit")
    def late():
        time.sleep(0.3)
        note("thread")
    threading.Thread(target=late).start()  # not a daemon: joined before the process ends
    if how == "code":
        sys.exit(3)
    if how == "message":
        sys.exit("bad spec, said the agent")
    if how == "raise":
        raise ValueError("an agent's bug")
    note("returned")

run_to_exit(body)
"""


@pytest.mark.parametrize(("how", "code", "said"), [("return", 0, ""), ("code", 3, ""),
                                                   ("message", 1, "bad spec, said the agent"),
                                                   ("raise", 1, "ValueError: an agent's bug")])
def test_a_forked_agent_ends_as_the_interpreter_would_end_it(tmp_path, how, code, said):
    """Issue 17: a forked agent skips the interpreter's finalization (it touched every object shared
    with the zygote: a thousand agents stopping together copied some 30 MB each and stalled the
    machine), but ends as the interpreter would: exit status, message or traceback, non-daemon
    threads joined, atexit run."""
    import subprocess
    import sys

    out = tmp_path / "notes"
    done = subprocess.run([sys.executable, "-c", RUN_TO_EXIT, str(out), how], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == code
    assert said in done.stderr
    notes = out.read_text().splitlines()
    assert notes[-2:] == ["thread", "atexit"]  # the thread first, as the interpreter does
    assert ("returned" in notes) == (how == "return")


FILL_CHECK = """
import importlib, sys
from mesh.runtime import zygote
for module in zygote.PRELOAD:
    importlib.import_module(module)
before = zygote._pool_stats()
if not before:  # no pymalloc report (PYTHONMALLOC=malloc, another interpreter): nothing to fill
    print("none")
    sys.exit(0)
zygote._fill_free_blocks()
after = zygote._pool_stats()
assert len(before) == 32 and min(before) == 16 and max(before) == 512, before
assert sum(avail for _, avail in before.values()) > 0, before
# Each free block was taken (a few more of a size are freed while the report itself is made).
taken = 0
for size, (used, avail) in before.items():
    assert after[size][0] - used >= avail - 4, (size, before[size], after[size])
    taken += min(avail, after[size][0] - used)
assert taken >= 0.95 * sum(avail for _, avail in before.values()), (before, after)
print("ok")
"""


def test_the_zygote_takes_every_free_block_of_its_partly_used_pools_before_it_forks():
    """So an agent's new objects go to pools of their own, not into pages it shares with the zygote
    (each such write copies a page: 0.3 MB of private memory per agent, median, at 50 agents)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", FILL_CHECK], capture_output=True, text=True, timeout=60)
    if done.stdout.strip() == "none":
        pytest.skip("this interpreter has no pymalloc report")
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_an_agent_of_a_node_started_in_a_terminal_has_no_terminal(tmp_path, mesh_home, start):
    """Agents run in the node's session: `mesh up` in a terminal would give them its terminal,
    and an agent reading /dev/tty (a password prompt) would be stopped for good (SIGTTIN). They
    give it up first thing: opening /dev/tty fails (ENXIO), as in a session of their own."""
    import fcntl
    import pty
    import subprocess
    import termios

    from conftest import TESTS, _pings, free_port, mesh_command, stop_node, RunningNode

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    spec = tmp_path / "tty.toml"
    spec.write_text(f'[node]\nname = "tty"\nlisten = "{address}"\npath = ["{TESTS}"]\nstart = "{start}"\n\n'
                    '[[agents]]\nname = "probe"\nclass = "actors:TtyProbe"\n')
    master, slave = pty.openpty()
    output = tmp_path / "tty.out"
    try:
        with open(output, "wb") as out:
            # The node leads a session whose controlling terminal is the pty, as in a terminal.
            proc = subprocess.Popen([*mesh_command(), "up", str(spec)], stdin=slave, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        node = RunningNode(proc, address, spec, output)
        try:
            wait_until(lambda: proc.poll() is not None or _pings(address), 20, "the node to answer")
            node.wait_running(timeout=20)
            assert node.client_once().actor("probe").ask({}, timeout=10) == "ENXIO"
        finally:
            assert stop_node(node) == []
    finally:
        os.close(master)
        os.close(slave)
