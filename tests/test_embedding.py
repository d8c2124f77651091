"""Embedding: actors served from plain Python programs that mesh did not start.

Each test writes a small script to tmp_path, runs it as a subprocess against a
real node (`mesh up`), and talks to it by name like to any agent.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import mesh
from conftest import TESTS, env_with, free_port, mesh_command, run_cli, wait_until

REPO = TESTS.parent
EXAMPLES = REPO / "examples"

EMBEDDED = """
import os, sys
import mesh

node, journal, name = sys.argv[1], sys.argv[2], sys.argv[3]

def note(what):
    with open(journal, "a") as f:
        f.write(what + "\\n")

class Embedded(mesh.Actor):
    def on_start(self):
        note("start")

    def on_message(self, message):
        return {"embedded": message, "pid": os.getpid(), "sender": self.mesh.sender}

    def on_stop(self):
        note("stop")

mesh.serve(Embedded(), name=name, node=node)
note("serve returned")
"""

ASYNC_EMBEDDED = """
import asyncio, os, signal, sys
import mesh

node, journal = sys.argv[1], sys.argv[2]
MAIN = {"ticks": 0}

def note(what):
    with open(journal, "a") as f:
        f.write(what + "\\n")

def on_main_loop():
    return asyncio.get_running_loop() is MAIN["loop"]

class AsyncEmbedded(mesh.Actor):
    async def on_start(self):
        note(f"start on_main_loop={on_main_loop()}")

    async def on_message(self, message):
        ticks = MAIN["ticks"]
        await asyncio.sleep(message.get("sleep", 0))
        echoed = await self.mesh.actor("echo").ask_async(message.get("echo"))
        return {"on_main_loop": on_main_loop(), "ticks_meanwhile": MAIN["ticks"] - ticks, "echoed": echoed}

    async def on_stop(self):
        note(f"stop on_main_loop={on_main_loop()}")

async def ticker():
    while True:
        MAIN["ticks"] += 1
        await asyncio.sleep(0.01)

async def main():
    loop = MAIN["loop"] = asyncio.get_running_loop()
    ticks = asyncio.create_task(ticker())
    serving = asyncio.create_task(mesh.serve_async(AsyncEmbedded(), name="aemb", node=node))
    loop.add_signal_handler(signal.SIGTERM, serving.cancel)
    try:
        await serving
    except asyncio.CancelledError:
        note("cancelled")
    ticks.cancel()

asyncio.run(main())
note("exited")
"""


class Script:
    """A Python subprocess with its output in a file."""

    def __init__(self, proc: subprocess.Popen, output: Path):
        self.proc = proc
        self.output = output

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait(self, timeout: float = 15) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"pid {self.pid} still runs after {timeout} s:\n{self.text()}") from None


@pytest.fixture
def python(tmp_path):
    """Run ``python ARGS`` (a script file and its arguments); every process is killed at teardown."""
    scripts: list[Script] = []

    def run(*args: object, env: dict | None = None) -> Script:
        output = tmp_path / f"script-{len(scripts)}.out"
        with open(output, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, *map(str, args)], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path
            )
        script = Script(proc, output)
        scripts.append(script)
        return script

    yield run

    for script in scripts:
        if script.proc.poll() is None:
            script.proc.kill()
            script.proc.wait(timeout=10)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def entry(node, name: str) -> dict | None:
    return next((a for a in node.status()["agents"] if a["name"] == name), None)


def wait_registered(node, name: str, script: Script, timeout: float = 15) -> dict:
    def registered():
        assert script.proc.poll() is None, f"{name} exited early:\n{script.text()}"
        found = entry(node, name)
        return found if found and found["state"] == "running" else None

    return wait_until(registered, timeout, f"{name} to register")


def journal_of(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


RELAY = '[[agents]]\nname = "relay"\nclass = "actors:Relay"\n'
ECHO = '[[agents]]\nname = "echo"\nclass = "actors:Echo"\n'


# ----------------------------------------------------------------------------- mesh.serve


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_script_serving_an_actor_is_reached_by_name_and_stops_gracefully(start_node, python, tmp_path, stop_signal):
    node = start_node(RELAY)
    journal = tmp_path / "journal.txt"
    script = python(write(tmp_path, "embedded.py", EMBEDDED), node.address, journal, "emb")

    listed = wait_registered(node, "emb", script)
    assert listed["embedded"] is True
    assert listed["pid"] == script.pid
    assert listed["incarnation"] == 0

    client = node.client(name="tester")
    assert client.actor("emb").ask("hi") == {"embedded": "hi", "pid": script.pid, "sender": "tester"}
    # An agent the node started reaches it by name too.
    via_relay = client.actor("relay").ask({"to": "emb", "message": [1, 2]})
    assert via_relay == {"embedded": [1, 2], "pid": script.pid, "sender": "relay"}

    script.proc.send_signal(stop_signal)
    assert script.wait() == 0, script.text()
    assert journal_of(journal) == ["start", "stop", "serve returned"]
    assert entry(node, "emb") is None, "an embedded actor leaves the status when it stops"
    # The first ask may still race the connection's close (ActorDied); after that it is simply gone.
    with pytest.raises((mesh.ActorNotFound, mesh.ActorDied)):
        client.actor("emb").ask("anyone?")
    with pytest.raises(mesh.ActorNotFound):
        client.actor("emb").ask("anyone?")
    # The relay's own ask failed inside its handler: the asker gets a RemoteError saying so.
    with pytest.raises(mesh.RemoteError) as failed:
        client.actor("relay").ask({"to": "emb", "message": "anyone?"})
    assert failed.value.type in ("ActorNotFound", "ActorDied")


def test_serve_async_runs_async_hooks_on_the_programs_event_loop(start_node, python, tmp_path):
    node = start_node(ECHO)
    journal = tmp_path / "journal.txt"
    script = python(write(tmp_path, "async_embedded.py", ASYNC_EMBEDDED), node.address, journal)

    listed = wait_registered(node, "aemb", script)
    assert listed["embedded"] is True and listed["pid"] == script.pid
    aemb = node.client().actor("aemb")

    answer = aemb.ask({"sleep": 0.3, "echo": {"x": 1}})
    assert answer["on_main_loop"] is True
    assert answer["echoed"] == {"x": 1}, "an async hook can await another actor"
    assert answer["ticks_meanwhile"] >= 5, "the program's loop keeps running while the hook awaits"
    assert aemb.ask({"echo": "again"})["echoed"] == "again"

    script.proc.send_signal(signal.SIGTERM)  # the program cancels the serve_async task
    assert script.wait() == 0, script.text()
    assert journal_of(journal) == ["start on_main_loop=True", "stop on_main_loop=True", "cancelled", "exited"]
    assert entry(node, "aemb") is None


# ----------------------------------------------------------------------------- mesh.connect


def test_connect_without_a_node_raises_node_unavailable_quickly_and_says_why(mesh_home):
    address = f"tcp://127.0.0.1:{free_port()}"

    t0 = time.monotonic()
    with pytest.raises(mesh.NodeUnavailable) as info:
        mesh.connect(address)
    assert time.monotonic() - t0 < 5.0
    assert address in str(info.value)
    assert "mesh up" in str(info.value), "the message says how to start a node"
    assert isinstance(info.value, ConnectionError)


def test_connect_honours_mesh_node(echo_node, monkeypatch):
    monkeypatch.setenv("MESH_NODE", echo_node.address)
    with mesh.connect() as client:
        assert client.node == echo_node.address
        assert client.actor("echo").ask("via env") == "via env"

    # HOST:PORT without the scheme works as well.
    monkeypatch.setenv("MESH_NODE", echo_node.address.removeprefix("tcp://"))
    with mesh.connect() as client:
        assert client.actor("echo").ask("no scheme") == "no scheme"

    # An explicit address wins over the environment.
    nowhere = f"tcp://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MESH_NODE", nowhere)
    with mesh.connect(echo_node.address) as client:
        assert client.actor("echo").ask("explicit") == "explicit"
    t0 = time.monotonic()
    with pytest.raises(mesh.NodeUnavailable, match=nowhere):
        mesh.connect()
    assert time.monotonic() - t0 < 5.0


# ----------------------------------------------------------------------------- the shipped examples


@pytest.fixture
def example_node(tmp_path, mesh_home):
    """`mesh up nodes/echo.toml` as the examples' docstrings say, on a free port."""
    address = f"tcp://127.0.0.1:{free_port()}"
    output = tmp_path / "echo-node.out"
    with open(output, "wb") as out:
        proc = subprocess.Popen(
            [*mesh_command(), "up", str(REPO / "nodes" / "echo.toml"), "--listen", address],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def echo_running():
            assert proc.poll() is None, output.read_text()
            with mesh.connect(address, connect_timeout=0.5) as c:
                return any(a["name"] == "echo" and a["state"] == "running" for a in c.status()["agents"])

        wait_until(echo_running, 20, "the example node")
        yield address
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_the_shipped_embedded_actor_and_client_examples_work_as_documented(example_node, python):
    env = env_with(MESH_NODE=example_node)
    greeter = python(EXAMPLES / "embedded_actor.py", env=env)
    with mesh.connect(example_node) as client:
        wait_until(
            lambda: greeter.proc.poll() is None and any(a["name"] == "greeter" for a in client.status()["agents"]),
            15,
            "the greeter to register",
        )
        assert greeter.proc.poll() is None, greeter.text()

        asked = run_cli("ask", "greeter", '"Ada"', env=env)
        assert asked.returncode == 0, asked.stderr
        assert json.loads(asked.stdout) == "hello, Ada (greeting #1)"

        out = subprocess.run(
            [sys.executable, str(EXAMPLES / "client.py"), "greeter", '"Bob"', "--node", example_node],
            capture_output=True, text=True, timeout=30,
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == "hello, Bob (greeting #2)"

        out = subprocess.run(
            [sys.executable, str(EXAMPLES / "client.py"), "echo", '{"hello": "mesh"}'],
            capture_output=True, text=True, timeout=30, env=env,
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == {"hello": "mesh"}

        out = subprocess.run(
            [sys.executable, str(EXAMPLES / "client.py"), "nobody", "1"],
            capture_output=True, text=True, timeout=30, env=env,
        )
        assert out.returncode == 1
        assert out.stderr.startswith("error: ") and "nobody" in out.stderr

        greeter.proc.send_signal(signal.SIGINT)  # "serves until Ctrl-C"
        assert greeter.wait() == 0, greeter.text()
        assert not any(a["name"] == "greeter" for a in client.status()["agents"])


# ----------------------------------------------------------------------------- name clashes


def test_an_embedded_actor_cannot_take_an_agents_name(start_node, python, tmp_path):
    node = start_node(ECHO)
    before = node.agent("echo")
    journal = tmp_path / "journal.txt"

    script = python(write(tmp_path, "embedded.py", EMBEDDED), node.address, journal, "echo")

    assert script.wait() != 0
    output = script.text()
    assert "name 'echo' is taken by an agent of node t" in output
    assert "serve returned" not in journal_of(journal)
    # The agent is untouched and still answers.
    after = node.agent("echo")
    assert (after["pid"], after["embedded"], after["incarnation"]) == (before["pid"], False, 0)
    assert node.client().actor("echo").ask("still mine") == "still mine"


def test_an_embedded_actor_cannot_take_the_name_of_a_live_embedded_actor(start_node, python, tmp_path):
    node = start_node()
    path = write(tmp_path, "embedded.py", EMBEDDED)
    first = python(path, node.address, tmp_path / "first.txt", "solo")
    wait_registered(node, "solo", first)

    second = python(path, node.address, tmp_path / "second.txt", "solo")

    assert second.wait() != 0
    assert f"name 'solo' is taken by a live actor in pid {first.pid}" in second.text()
    assert first.proc.poll() is None
    assert node.client().actor("solo").ask("who?")["pid"] == first.pid


ASYNC_RELAY = """
import asyncio, sys
import mesh

node = sys.argv[1]

class AsyncRelay(mesh.Actor):
    async def on_message(self, message):
        hops = message["hops"]
        if not hops:
            return message["message"]
        return await self.mesh.actor(hops[0]).ask_async({"hops": hops[1:], "message": message["message"]}, timeout=10)

async def main():
    await mesh.serve_async(AsyncRelay(), name="aa", node=node)

asyncio.run(main())
"""


def test_an_ask_cycle_through_an_async_handler_on_the_programs_loop_is_detected(start_node, python, tmp_path):
    import time as _time

    cycles = tmp_path / "cycles"
    node = start_node('[[agents]]\nname = "rb"\nclass = "actors:CycleRelay"\n'
                      f'config = {{ journal = "{cycles}" }}\n')
    script = python(write(tmp_path, "async_relay.py", ASYNC_RELAY), node.address)
    wait_registered(node, "aa", script)
    aa = node.client().actor("aa")
    assert aa.ask({"hops": ["rb"], "message": "through"}, timeout=10) == "through"
    started = _time.monotonic()
    with pytest.raises(mesh.DeadlockDetected) as info:
        aa.ask({"hops": ["rb", "aa"], "message": "x"}, timeout=10)
    assert info.value.cycle == ["aa", "rb", "aa"] and _time.monotonic() - started < 2.0
