"""The `mesh` command, run as a user runs it: a real subprocess of the installed script."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest

import mesh
from conftest import TESTS, RunningNode, env_with, free_port, mesh_command, pid_gone, run_cli, stop_node, wait_until
from mesh.runtime.node import STATES

ROOT = TESTS.parent


@pytest.fixture
def cli_env(mesh_home):
    """The environment every command runs in: MESH_HOME in tmp, no MESH_NODE."""
    env = env_with(MESH_HOME=str(mesh_home), MESH_NO_LIVE="1")
    env.pop("MESH_NODE", None)
    return env


@pytest.fixture
def cli(cli_env):
    def run(*args: str, env: dict | None = None, timeout: float = 30):
        return run_cli(*args, env=env or cli_env, timeout=timeout)

    return run


def fails_in_one_line(result, code: int = 1) -> str:
    """The command failed with ``code`` and said why in one line on stderr, without a traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def ok(result) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def agents_spec(*entries: tuple[str, str], extra: str = "") -> str:
    return "".join(f'[[agents]]\nname = "{n}"\nclass = "{c}"\n{extra}\n' for n, c in entries)


@pytest.fixture
def mesh_up(tmp_path, cli_env):
    """Start `mesh up ARGS...` as a user would; every such node is stopped at teardown."""
    nodes: list[RunningNode] = []

    def start(*args: str, address: str, cwd: Path | None = None) -> RunningNode:
        output = tmp_path / f"up-{len(nodes)}.out"
        with open(output, "wb") as out:
            proc = subprocess.Popen(
                [*mesh_command(), "up", *args], stdout=out, stderr=subprocess.STDOUT, env=cli_env, cwd=cwd or tmp_path
            )
        node = RunningNode(proc, address, Path(args[0]) if args and not args[0].startswith("-") else None, output)
        nodes.append(node)
        wait_until(lambda: proc.poll() is not None or answers(address), 20, f"a node at {address}")
        assert proc.poll() is None, f"mesh up exited with {proc.returncode}:\n{node.log()}"
        return node

    yield start

    for node in nodes:
        stop_node(node)


def answers(address: str) -> bool:
    try:
        with mesh.connect(address, connect_timeout=0.5):
            return True
    except mesh.NodeUnavailable:
        return False


def processes_using(home: Path) -> list[int]:
    """Pids of live processes whose environment names this test's MESH_HOME."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.environ().get("MESH_HOME") == str(home) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Output:
    """Reads a running command's stdout without blocking past a deadline."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.text = ""

    def wait_for(self, marker: str, timeout: float = 10.0) -> str:
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while marker not in self.text:
                left = deadline - time.monotonic()
                assert left > 0, f"no {marker!r} within {timeout} s; got {self.text!r}"
                if sel.select(left):
                    chunk = os.read(fd, 65536)
                    assert chunk, f"the command ended before printing {marker!r}; got {self.text!r}"
                    self.text += chunk.decode("utf-8", "replace")
        return self.text


# --------------------------------------------------------------------------- status


def test_status_prints_the_node_and_a_row_per_agent(start_node, cli):
    node = start_node(agents_spec(("counter", "actors:Counter"), ("echo", "actors:Echo")))
    pids = {a["name"]: a["pid"] for a in node.status()["agents"]}

    lines = ok(cli("status", "--node", node.address)).splitlines()

    assert lines[0].startswith(f"node t  {node.address}  pid {node.proc.pid}  up ")
    assert lines[1].startswith("leader t (term ") and lines[1].endswith("this node")
    assert lines[2].split() == ["AGENT", "NODE", "STATE", "PID", "RESTARTS", "MESSAGES", "CPU", "MEMORY", "NOTE"]
    rows = {line.split()[0]: line.split() for line in lines[3:5]}
    assert set(rows) == {"counter", "echo"}
    # Below the table, the playbook's metrics of the last minute.
    assert lines[5].startswith("metrics (last 60 s): ") and "failures 0" in lines[5] and "deadlocks 0" in lines[5]
    for name, row in rows.items():
        assert row[1:5] == ["t", "running", str(pids[name]), "0"]
        assert row[7].endswith("MB")  # the node samples every agent's memory


def test_status_json_describes_the_node_and_every_agent(start_node, cli):
    node = start_node(agents_spec(("counter", "actors:Counter"), ("echo", "actors:Echo")))

    st = json.loads(ok(cli("status", "--json", "--node", node.address)))

    assert st["node"]["name"] == "t"
    assert st["node"]["address"] == node.address
    assert st["node"]["pid"] == node.proc.pid
    assert [a["name"] for a in st["agents"]] == ["counter", "echo"]
    for agent in st["agents"]:
        assert agent["node"] == "t"
        assert isinstance(agent["pid"], int) and agent["pid"] > 0
        assert agent["state"] in STATES
        assert agent["state"] == "running"
        assert agent["restarts"] == 0
        assert isinstance(agent["messages"], int) and agent["messages"] >= 0


def test_status_without_agents_says_so(start_node, cli):
    node = start_node()
    assert ok(cli("status", "--node", node.address)).splitlines()[-1] == "(no agents)"


# --------------------------------------------------------------------------- tell and ask


def test_a_tell_from_the_cli_reaches_the_actor_and_an_ask_sees_it(start_node, cli):
    node = start_node(agents_spec(("counter", "actors:Counter")))

    told = cli("tell", "counter", '{"n": 1, "text": "hello"}', "--node", node.address)
    assert told.returncode == 0, told.stderr
    assert told.stdout == ""

    def seen():
        reply = json.loads(ok(cli("ask", "counter", '{"get": true}', "--node", node.address)))
        return reply if reply["seen"] else None

    reply = wait_until(seen, 10, "the counter to record the tell")
    assert reply["seen"] == [{"n": 1, "text": "hello"}]
    assert reply["sender"].startswith("cli-")


def test_ask_prints_the_reply_as_one_json_document(start_node, cli):
    node = start_node(agents_spec(("echo", "actors:Echo")))
    message = {"list": [1, 2.5, None, True], "nested": {"é": "ünïcode"}, "n": -3}

    out = ok(cli("ask", "echo", json.dumps(message), "--node", node.address))

    assert json.loads(out) == message
    assert out.count("\n") == 1


def test_ask_waits_at_most_its_timeout(start_node, cli):
    node = start_node(agents_spec(("sleeper", "actors:Sleeper")))

    assert json.loads(ok(cli("ask", "sleeper", "0.1", "--timeout", "5", "--node", node.address))) == "woke"

    line = fails_in_one_line(cli("ask", "sleeper", "3", "--timeout", "0.3", "--node", node.address))

    # It gave up after 0.3 s: the reply, 3 s later, would have been "woke". (No wall-clock bound on
    # the command: starting an interpreter on a loaded machine can take seconds.)
    assert "AskTimeout" in line and "0.3 s" in line


def test_the_node_is_found_by_node_option_or_by_MESH_NODE(start_node, cli, cli_env):
    node = start_node(agents_spec(("echo", "actors:Echo")))
    host_port = node.address.removeprefix("tcp://")

    by_option = json.loads(ok(cli("status", "--json", "--node", host_port)))
    by_env = json.loads(ok(cli("status", "--json", env={**cli_env, "MESH_NODE": node.address})))
    by_env_ask = ok(cli("ask", "echo", '"hi"', env={**cli_env, "MESH_NODE": host_port}))
    option_wins = ok(cli("ask", "echo", "1", "--node", node.address, env={**cli_env, "MESH_NODE": "127.0.0.1:1"}))

    assert by_option["node"]["pid"] == by_env["node"]["pid"] == node.proc.pid
    assert json.loads(by_env_ask) == "hi"
    assert json.loads(option_wins) == 1


# --------------------------------------------------------------------------- logs


def announcer(marker: str) -> str:
    return f'[[agents]]\nname = "announcer"\nclass = "actors:Announcer"\nconfig = {{ marker = "{marker}" }}\n'


@pytest.mark.both_starts
def test_logs_show_what_the_agent_printed(start_node, cli):
    node = start_node(announcer("hello-from-on-start"))
    pid = node.agent("announcer")["pid"]

    out = wait_until(
        lambda: (lambda o: o if "hello-from-on-start" in o else None)(ok(cli("logs", "announcer", "--node", node.address))),
        10,
        "the marker in the logs",
    )

    assert f"hello-from-on-start pid={pid}" in out
    assert "starting announcer" in out


@pytest.mark.both_starts
@pytest.mark.parametrize("level, given", [("warning", "env"), ("DEBUG", "env"), ("debug", "flag")])
def test_an_agent_logs_at_the_level_asked_each_line_naming_it(start_node, cli, monkeypatch, level, given):
    # MESH_LOG_LEVEL or mesh up --log-level (any case) sets the agents' level as the node's; a forked
    # agent takes the handler its zygote made and names itself in it, as a spawned one does with its own.
    monkeypatch.delenv("MESH_LOG_LEVEL", raising=False)
    if given == "env":
        monkeypatch.setenv("MESH_LOG_LEVEL", level)
    node = start_node(announcer("ready"), args=("--log-level", level) if given == "flag" else ())
    announcer_ref = node.client_once().actor("announcer")
    for marker in ("DEBUG", "INFO", "WARNING"):  # in this order: the last one in the log says all are
        assert announcer_ref.ask({"log": f"{marker.lower()}-marker", "level": marker}) == "logged"

    def logged() -> str | None:
        out = ok(cli("logs", "announcer", "--node", node.address))
        return out if "warning-marker" in out else None

    out = wait_until(logged, 10, "the logged line in the logs")
    line = next(line for line in out.splitlines() if "warning-marker" in line)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING announcer probe: warning-marker", line), line
    assert ("debug-marker" in out) is (level.upper() == "DEBUG"), out
    assert ("info-marker" in out) is (level.upper() != "WARNING"), out


@pytest.mark.both_starts
def test_a_level_an_agents_module_sets_as_it_is_imported_stays(start_node, cli, monkeypatch):
    monkeypatch.setenv("MESH_LOG_LEVEL", "WARNING")
    node = start_node('[[agents]]\nname = "chatty"\nclass = "chatty_actors:Chatty"\npreload = true\n')
    chatty = node.client_once().actor("chatty")
    assert chatty.ask({"log": "debug-marker", "level": "DEBUG"}) == "logged"

    out = wait_until(lambda: (lambda o: o if "debug-marker" in o else None)(ok(cli("logs", "chatty", "--node", node.address))),
                     10, "the module's level to let the debug line through")
    assert re.search(r" DEBUG chatty chatty: debug-marker$", out, re.M), out


def test_up_refuses_an_unknown_log_level(cli):
    result = cli("up", "--log-level", "chatty", "--listen", f"tcp://127.0.0.1:{free_port()}")
    assert result.returncode == 2
    assert "--log-level" in result.stderr and "chatty" in result.stderr
    assert "Traceback" not in result.stderr


def test_logs_follow_streams_new_lines_until_interrupted(start_node, cli_env):
    node = start_node(announcer("first-marker"))
    proc = subprocess.Popen(
        [*mesh_command(), "logs", "announcer", "-f", "--node", node.address],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env,
    )
    try:
        out = Output(proc)
        out.wait_for("first-marker")

        assert node.client_once().actor("announcer").ask({"say": "second-marker"}) == "said"

        assert "second-marker" in out.wait_for("second-marker")
        proc.send_signal(signal.SIGINT)  # Ctrl-C ends the follow cleanly
        assert proc.wait(timeout=10) == 0
        assert b"Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


# --------------------------------------------------------------------------- down


def test_down_stops_the_node_and_its_agents(start_node, cli):
    node = start_node(agents_spec(("echo", "actors:Echo")))
    pid = node.agent("echo")["pid"]
    node.close_clients()

    out = ok(cli("down", "--node", node.address))

    assert out.strip() == f"node at {node.address} stopped"
    assert node.proc.wait(timeout=10) == 0
    assert pid_gone(pid)
    fails_in_one_line(cli("status", "--node", node.address))


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "args",
    [
        ("status",),
        ("status", "--json"),
        ("tell", "echo", "{}"),
        ("ask", "echo", "{}"),
        ("logs", "echo"),
        ("down",),
    ],
    ids=lambda a: " ".join(a),
)
def test_every_command_says_in_one_line_that_no_node_is_running(cli, args):
    port = free_port()
    line = fails_in_one_line(cli(*args, "--node", f"127.0.0.1:{port}"))
    assert f"no mesh node answers at tcp://127.0.0.1:{port}" in line


@pytest.mark.parametrize("command", ["tell", "ask"])
def test_a_message_that_is_not_json_is_a_usage_error(cli, command):
    line = fails_in_one_line(cli(command, "echo", "{not json", "--node", f"127.0.0.1:{free_port()}"), code=2)
    assert "not valid JSON" in line


@pytest.mark.parametrize("command", ["tell", "ask", "logs"])
def test_an_unknown_actor_is_reported_in_one_line(start_node, cli, command):
    node = start_node(agents_spec(("echo", "actors:Echo")))
    args = (command, "nobody") + (("{}",) if command != "logs" else ())

    line = fails_in_one_line(cli(*args, "--node", node.address))

    assert "ActorNotFound" in line and "'nobody'" in line


def test_status_shows_the_last_line_of_the_exception_that_ended_an_agent(start_node, cli):
    node = start_node(agents_spec(("crasher", "actors:Crasher"), extra='restart = "never"'))
    client = node.client_once()
    client.actor("crasher").tell({"crash": "exception"})
    client.flush()

    failed = node.wait_agent("crasher", lambda a: a["state"] == "failed", what="the crasher to fail")

    assert failed["reason"] == "exited with code 1 (RuntimeError: boom on purpose)"
    row = next(line for line in ok(cli("status", "--node", node.address)).splitlines() if line.startswith("crasher "))
    assert row.endswith("exited with code 1 (RuntimeError: boom on purpose)")


def test_an_exception_raised_by_the_actor_is_reported_in_one_line(start_node, cli):
    node = start_node(agents_spec(("crasher", "actors:Crasher")))

    line = fails_in_one_line(cli("ask", "crasher", '{"crash": "exception"}', "--node", node.address))

    assert line == "Error: the actor raised RuntimeError: boom on purpose"
    # An ask's exception does not stop the actor.
    assert node.agent("crasher")["restarts"] == 0
    assert "pid" in json.loads(ok(cli("ask", "crasher", "{}", "--node", node.address)))


# --------------------------------------------------------------------------- spec errors


def spec_text(port: int, agents: str = "", node_extra: str = "") -> str:
    return f'[node]\nname = "bad"\nlisten = "tcp://127.0.0.1:{port}"\npath = ["{TESTS}"]\n{node_extra}\n{agents}'


SPEC_ERRORS = {
    "unknown key": ('colour = "red"', "", "node.colour", "unknown key"),
    "wrong type": ("", '[[agents]]\nname = "a"\nclass = "actors:Echo"\nreplicas = "two"\n', "agents[0].replicas", "integer"),
    "missing class key": ("", '[[agents]]\nname = "a"\n', "agents[0].class", "missing"),
    "class not in module": ("", '[[agents]]\nname = "a"\nclass = "actors:NoSuchActor"\n', "agents[0].class", "no attribute"),
    "module import failure": (
        "",
        '[[agents]]\nname = "a"\nclass = "actors:Echo"\n[[agents]]\nname = "b"\nclass = "broken_agents:Agent"\n',
        "agents[1].class",
        "cannot import module 'broken_agents': ZeroDivisionError",
    ),
    "duplicate name": (
        "",
        '[[agents]]\nname = "a"\nclass = "actors:Echo"\n[[agents]]\nname = "a"\nclass = "actors:Echo"\n',
        "agents[1].name",
        "duplicate agent name 'a'",
    ),
    "toml syntax": ("", '[[agents]]\nname = "a\n', "toml", ""),
    "a table name misspelt": ("", '[[agent]]\nname = "a"\nclass = "actors:Echo"\n', "agent", "did you mean 'agents'?"),
    "config key the constructor does not take": (
        "",
        '[[agents]]\nname = "a"\nclass = "actors:Echo"\nconfig = { interval = 5.0 }\n',
        "agents[0].config.interval",
        "actors:Echo takes no argument 'interval' (its constructor takes no arguments)",
    ),
    "config without a required argument": (
        "",
        '[[agents]]\nname = "a"\nclass = "actors:Echo"\n[[agents]]\nname = "b"\nclass = "actors:Lifecycle"\n',
        "agents[1].config",
        "actors:Lifecycle needs the argument 'journal': add it to config",
    ),
    "config key misspelt": (
        "",
        '[[agents]]\nname = "a"\nclass = "actors:Announcer"\nconfig = { markr = "x" }\n',
        "agents[0].config.markr",
        "did you mean 'marker'?",
    ),
}


@pytest.mark.parametrize("case", SPEC_ERRORS, ids=str)
def test_a_bad_spec_is_one_line_naming_file_and_key_and_starts_nothing(cli, tmp_path, mesh_home, case):
    node_extra, agents, key, reason = SPEC_ERRORS[case]
    (tmp_path / "broken_agents.py").write_text("import mesh\n\nclass Agent(mesh.Actor):\n    pass\n\n1 / 0\n")
    port = free_port()
    spec = tmp_path / "bad.toml"
    spec.write_text(spec_text(port, agents, node_extra))

    line = fails_in_one_line(cli("up", str(spec)), code=2)

    assert line.startswith(f"Error: {spec}: {key}: "), line
    assert reason in line
    assert_nothing_started(mesh_home, port)


def test_a_spec_file_that_does_not_exist_is_one_line(cli, tmp_path, mesh_home):
    missing = tmp_path / "nowhere.toml"
    line = fails_in_one_line(cli("up", str(missing)), code=2)
    assert line == f"Error: {missing}: no such file"
    assert_nothing_started(mesh_home, None)


def assert_nothing_started(home: Path, port: int | None) -> None:
    assert not (home / "nodes").exists(), "a node made its run folder"
    assert processes_using(home) == []
    if port is not None:
        assert port_is_free(port)


def test_up_on_a_port_in_use_fails_in_one_clear_line(cli, tmp_path, mesh_home):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        spec = tmp_path / "busy.toml"
        spec.write_text(spec_text(port, agents_spec(("echo", "actors:Echo"))))

        line = fails_in_one_line(cli("up", str(spec)), code=1)

    assert line.startswith(f"Error: cannot listen on tcp://127.0.0.1:{port}: Address already in use")
    assert processes_using(mesh_home) == []


# --------------------------------------------------------------------------- up


def test_up_listen_and_name_override_the_spec(mesh_up, cli, tmp_path):
    spec_port, port = free_port(), free_port()
    spec = tmp_path / "node.toml"
    spec.write_text(spec_text(spec_port, agents_spec(("echo", "actors:Echo"))).replace('"bad"', '"fromspec"'))

    node = mesh_up(str(spec), "--listen", f"127.0.0.1:{port}", "--name", "over", address=f"tcp://127.0.0.1:{port}")
    node.wait_running("echo")

    st = json.loads(ok(cli("status", "--json", "--node", node.address)))
    assert st["node"]["name"] == "over"
    assert st["node"]["address"] == f"tcp://127.0.0.1:{port}"
    assert st["agents"][0]["node"] == "over"
    assert port_is_free(spec_port)
    ok(cli("down", "--node", node.address))
    assert node.proc.wait(timeout=15) == 0


def test_up_without_a_spec_runs_the_bundled_demo(mesh_up, cli, tmp_path):
    port = free_port()
    node = mesh_up("--listen", f"127.0.0.1:{port}", address=f"tcp://127.0.0.1:{port}")

    def report():
        result = cli("ask", "conductor", '{"report": true}', "--node", node.address, "--timeout", "10")
        if result.returncode != 0:
            return None
        answer = json.loads(result.stdout)
        return answer if answer["runs"] >= 1 else None

    answer = wait_until(report, 45, "a report from the demo's conductor", interval=0.3)

    assert answer["runs"] >= 1
    names = {a["name"] for a in json.loads(ok(cli("status", "--json", "--node", node.address)))["agents"]}
    assert names == {"scout", "validator", "executor", "synthesizer", "reporter", "conductor"}
    ok(cli("down", "--node", node.address))
    assert node.proc.wait(timeout=15) == 0


def test_the_default_node_file_is_a_copy_of_the_bundled_spec():
    assert (ROOT / "nodes" / "default.toml").read_bytes() == (ROOT / "mesh" / "default.toml").read_bytes()


def test_status_watch_redraws_the_table_until_interrupted(echo_node):
    import signal as _signal
    import subprocess as _subprocess

    from conftest import mesh_command

    proc = _subprocess.Popen([*mesh_command(), "status", "--watch", "--interval", "0.2", "--node", echo_node.address],
                             stdout=_subprocess.PIPE, stderr=_subprocess.PIPE, text=True)
    seen = ""
    try:
        deadline = time.monotonic() + 20
        while seen.count("AGENT") < 3 and time.monotonic() < deadline:  # three redraws, as they come
            line = proc.stdout.readline()
            if not line:
                break
            seen += line
        proc.send_signal(_signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert seen.count("AGENT") >= 3 and "echo" in seen and "Ctrl-C to stop" in seen
    res = run_cli("status", "--watch", "--json", "--node", echo_node.address)
    assert res.returncode == 2 and "--watch" in res.stderr


# --------------------------------------------------------------------------- error classes (issue 11)


def test_serving_a_name_an_agent_holds_raises_NameConflict_saying_what_to_do(echo_node):
    import actors

    with pytest.raises(mesh.NameConflict) as info:
        mesh.serve(actors.Echo(), name="echo", node=echo_node.address)

    assert isinstance(info.value, mesh.WireError)  # what it was before: old except clauses still catch it
    assert "name 'echo' is taken by an agent of node t: serve under another name" in str(info.value)


def test_writing_a_reserved_key_raises_ReservedKey_and_the_cli_says_so_in_one_line(echo_node, cli):
    state = echo_node.client().state

    for write in (lambda: state.set("$agents/echo", {"forged": True}), lambda: state.delete("$agents/echo")):
        with pytest.raises(mesh.ReservedKey) as info:
            write()
        assert isinstance(info.value, mesh.WireError)
        assert "keys starting with '$' belong to the runtime (readable, not writable)" in str(info.value)
    assert state.get("$agents/echo")["node"] == "t"

    line = fails_in_one_line(cli("state", "set", "$jobs/1", "1", "--node", echo_node.address))
    assert line.startswith("Error: ReservedKey: key '$jobs/1' is reserved: keys starting with '$' belong to the runtime")


def test_approving_an_unknown_escalation_raises_UnknownEscalation(start_node, cli):
    node = start_node()
    wait_until(lambda: node.status()["leader"] == "t", 30, "the node to lead")

    with pytest.raises(mesh.UnknownEscalation) as info:
        node.client().approve("nope", by="test")
    assert isinstance(info.value, mesh.ActorNotFound)

    for command in ("approve", "deny"):
        line = fails_in_one_line(cli(command, "nope", "--node", node.address))
        assert line == ("Error: UnknownEscalation: no escalation 'nope' is waiting (decided already, timed out, or never"
                        " escalated); `mesh intents` lists those that wait")


# --------------------------------------------------------------------------- CLI edges (issue 11)


def test_a_bare_word_where_json_is_expected_says_to_quote_it(cli):
    line = fails_in_one_line(cli("ask", "echo", "hello", "--node", f"127.0.0.1:{free_port()}"), code=2)
    assert line.startswith("Error: MESSAGE 'hello' is not valid JSON (")
    assert line.endswith("""a string is quoted as JSON: '"hello"'""")

    line = fails_in_one_line(cli("state", "set", "k", "queued", "--node", f"127.0.0.1:{free_port()}"), code=2)
    assert line.startswith("Error: VALUE 'queued' is not valid JSON (") and "MESSAGE" not in line


def test_a_node_address_that_is_not_one_is_a_bad_argument_quoting_it(cli, cli_env):
    line = fails_in_one_line(cli("status", "--node", "garbage"), code=2)
    assert line == "Error: --node 'garbage' is not a node address: expected HOST:PORT or tcp://HOST:PORT"

    line = fails_in_one_line(cli("status", env={**cli_env, "MESH_NODE": "garbage:x"}), code=2)
    assert line == "Error: $MESH_NODE 'garbage:x' is not a node address: expected HOST:PORT or tcp://HOST:PORT"


def test_node_pointed_at_an_agent_says_it_is_an_agent_not_a_node(echo_node, cli):
    endpoint = echo_node.agent("echo")["endpoint"]

    line = fails_in_one_line(cli("status", "--node", endpoint), code=2)

    assert line == (f"Error: {endpoint} is the endpoint of actor 'echo', not a node: point --node at the address its"
                    " node listens on (mesh up --listen)")


def test_up_on_an_address_this_machine_does_not_have_is_a_bad_argument(cli, tmp_path, mesh_home):
    spec = tmp_path / "node.toml"
    spec.write_text(spec_text(free_port()))
    port = free_port()

    line = fails_in_one_line(cli("up", str(spec), "--listen", f"192.0.2.1:{port}", "--insecure"), code=2)

    assert line == (f"Error: --listen: cannot listen on tcp://192.0.2.1:{port}: no network interface of this machine"
                    " has that address (use one of its own addresses, or 0.0.0.0 for all)")
    assert processes_using(mesh_home) == []


@pytest.mark.parametrize("args, error", [
    (("ask",), "Error: Missing argument 'NAME'. (see: mesh ask --help)"),
    (("ask", "echo"), "Error: Missing argument 'MESSAGE'. (see: mesh ask --help)"),
    (("nosuch",), "Error: No such command 'nosuch'. (see: mesh --help)"),
    (("state", "get"), "Error: Missing argument 'KEY'. (see: mesh state get --help)"),
    (("status", "--interval", "0"), "Error: Invalid value for '--interval': 0.0 is not in the range x>=0.1."
                                    " (see: mesh status --help)"),
], ids=lambda a: " ".join(a) if isinstance(a, tuple) else "")
def test_a_usage_error_is_one_line_and_exit_2(cli, args, error):
    assert fails_in_one_line(cli(*args), code=2) == error


def test_logs_n_counts_lines_like_tail(start_node, cli):
    node = start_node(announcer("marker"))
    ref = node.client_once().actor("announcer")
    for i in range(40):
        assert ref.ask({"say": f"line {i:02d} " + "x" * i}) == "said"

    out = wait_until(lambda: (lambda o: o if o.endswith("x" * 39 + "\n") else None)(
        ok(cli("logs", "announcer", "-n", "5", "--node", node.address))), 10, "the last line in the log")

    assert out.splitlines() == [f"line {i:02d} " + "x" * i for i in range(35, 40)]
    assert ok(cli("logs", "announcer", "-n", "0", "--node", node.address)) == ""


def test_logs_reads_the_log_from_disk_when_the_node_is_not_running(start_node, cli):
    node = start_node(announcer("written-before-the-node-stopped"))
    wait_until(lambda: "written-before" in ok(cli("logs", "announcer", "--node", node.address)), 10, "the marker")
    node.close_clients()
    ok(cli("down", "--node", node.address))
    assert node.proc.wait(timeout=15) == 0

    result = cli("logs", "announcer", "-n", "3", "--node", node.address)

    assert result.returncode == 0, result.stderr
    assert "written-before-the-node-stopped" in result.stdout
    assert len(result.stdout.splitlines()) <= 3
    assert result.stderr.strip().startswith(f"(no node answers at {node.address}: announcer's log from ")
    line = fails_in_one_line(cli("logs", "nobody", "--node", node.address))
    assert f"no mesh node answers at {node.address}" in line and "no log of 'nobody'" in line


@pytest.mark.parametrize("command", [("status", "--watch", "--interval", "0.2"), ("logs", "announcer", "-f")],
                         ids=lambda c: " ".join(c[:2]))
def test_a_follow_command_says_the_node_stopped_and_exits_0_after_mesh_down(start_node, cli, cli_env, command):
    node = start_node(announcer("follow-me"))
    proc = subprocess.Popen([*mesh_command(), *command, "--node", node.address], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=cli_env)
    try:
        Output(proc).wait_for("announcer" if command[0] == "status" else "follow-me", timeout=20)
        node.close_clients()
        ok(cli("down", "--node", node.address))

        assert proc.wait(timeout=30) == 0
        err = proc.stderr.read().decode()
        assert err.strip() == f"the node at {node.address} stopped", err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
