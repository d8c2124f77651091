"""Fixtures: real nodes started with the real `mesh up`, real processes, real sockets.

Every node a test starts is stopped at teardown, and teardown fails the test if
any process the node started (or anything those forked) is still alive.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

import mesh

TESTS = Path(__file__).resolve().parent


def _ports() -> tuple[int, int]:
    """This test process's ports for free_port(): below the kernel's ephemeral range (which the
    source ports of outgoing connections come from: a port bound to 0 and freed, then bound by a
    node, could be taken meanwhile by any connection a test makes), a share of its own per xdist
    worker (two workers never hand out the same port)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    low = 10_000
    if ephemeral - low < 1_000:
        return 0, 0  # no room below it: the kernel's choice
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:]
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker) if worker.isdigit() else 0
    share = (ephemeral - low) // max(count, 1)
    return low + index * share, low + (index + 1) * share


_PORTS = _ports()
_next_port = [_PORTS[0] + os.getpid() % max(1, _PORTS[1] - _PORTS[0])]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, handed out once per test process in turn (see _ports)."""
    low, high = _PORTS
    for _ in range(high - low):
        port = _next_port[0]
        _next_port[0] = low + (port + 1 - low) % (high - low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(params=["asyncio", "uvloop"])
def run_async(request):
    """``run_async(coroutine, timeout)``: the coroutine to its end on a fresh event loop of each kind,
    asyncio's own and uvloop's (what the asyncio forms need of a loop, both have: a reader on
    ZeroMQ's descriptor, call_soon, timers)."""
    factory = None
    if request.param == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop

    def run(coroutine, timeout: float = 30.0):
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(asyncio.wait_for(coroutine, timeout))

    return run


def mesh_command() -> list[str]:
    """The installed `mesh` script of this interpreter's environment (what a user runs)."""
    script = Path(sys.executable).parent / "mesh"
    if script.exists():
        return [str(script)]
    found = shutil.which("mesh")
    return [found] if found else [sys.executable, "-m", "mesh.cli"]


def wait_until(predicate, timeout: float = 10.0, what: str = "condition", interval: float = 0.02):
    """Poll ``predicate`` until it returns a truthy value; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except mesh.MeshError as exc:  # a node still starting, an actor restarting
            last_exc = exc
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}" + (f" (last error: {last_exc})" if last_exc else ""))


def run_cli(*args: str, env: dict | None = None, timeout: float = 30, input: str | None = None):
    return subprocess.run(
        [*mesh_command(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        input=input,
    )


class RunningNode:
    def __init__(self, proc: subprocess.Popen, address: str, spec_path: Path, output: Path):
        self.proc = proc
        self.address = address
        self.spec_path = spec_path
        self.output = output
        self._clients: list[mesh.Client] = []
        self.seen_pids: set[int] = set()

    def client(self, **options) -> mesh.Client:
        c = mesh.connect(self.address, **options)
        self._clients.append(c)
        return c

    def status(self) -> dict:
        st = self.client_once().status()
        for a in st["agents"]:
            if a["pid"] and not a["embedded"]:
                self.seen_pids.add(a["pid"])
        return st

    def client_once(self) -> mesh.Client:
        if not self._clients:
            self.client()
        return self._clients[0]

    def agent(self, name: str) -> dict:
        for a in self.status()["agents"]:
            if a["name"] == name:
                return a
        raise KeyError(name)

    def wait_agent(self, name: str, predicate, timeout: float = 15.0, what: str = "") -> dict:
        return wait_until(lambda: (lambda a: a if predicate(a) else None)(self.agent(name)), timeout, what or f"agent {name}")

    def wait_running(self, *names: str, timeout: float = 20.0) -> dict:
        def ready():
            st = self.status()
            states = {a["name"]: a["state"] for a in st["agents"]}
            wanted = names or tuple(states)
            return st if all(states.get(n) == "running" for n in wanted) else None

        return wait_until(ready, timeout, f"agents {names or 'all'} running")

    def log(self) -> str:
        return self.output.read_text(errors="replace")

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def close_clients(self) -> None:
        for c in self._clients:
            c.close()
        self._clients.clear()


@pytest.fixture
def mesh_home(tmp_path, monkeypatch):
    home = tmp_path / "mesh-home"
    monkeypatch.setenv("MESH_HOME", str(home))
    monkeypatch.delenv("MESH_NODE", raising=False)
    monkeypatch.setenv("MESH_NO_LIVE", "1")
    return home


#: How agents start (the node's ``start``): a test marked ``both_starts`` runs once with each.
START_MODES = ("fork", "spawn")


def pytest_generate_tests(metafunc):
    if metafunc.definition.get_closest_marker("both_starts") is not None and "start_mode" in metafunc.fixturenames:
        metafunc.parametrize("start_mode", START_MODES)


@pytest.fixture
def start_mode() -> str | None:
    """The node's ``start`` for ``start_node`` (None: the spec's default); see ``both_starts``."""
    return None


@pytest.fixture
def start_node(tmp_path, mesh_home, start_mode):
    """Start `mesh up` on a spec made of ``agents`` (TOML text of [[agents]] tables)."""
    nodes: list[RunningNode] = []

    def start(agents: str = "", *, name: str = "t", node_extra: str = "", wait: bool = True, timeout: float = 20.0,
              args: tuple[str, ...] = (), port: int | None = None):
        port = port or free_port()
        address = f"tcp://127.0.0.1:{port}"
        spec = tmp_path / f"{name}-{port}.toml"
        if start_mode is not None and "start =" not in node_extra:
            node_extra = f'start = "{start_mode}"\n{node_extra}'
        spec.write_text(
            f'[node]\nname = "{name}"\nlisten = "{address}"\npath = ["{TESTS}"]\n{node_extra}\n\n{agents}\n'
        )
        output = tmp_path / f"{name}-{port}.out"
        with open(output, "wb") as out:
            proc = subprocess.Popen([*mesh_command(), "up", str(spec), *args], stdout=out, stderr=subprocess.STDOUT)
        node = RunningNode(proc, address, spec, output)
        nodes.append(node)
        if wait:
            wait_until(lambda: proc.poll() is not None or _pings(address), timeout, f"node at {address} to answer")
            if proc.poll() is not None:
                raise AssertionError(f"mesh up exited with {proc.returncode}:\n{node.log()}")
            declared = _declared(agents)
            if declared:
                node.wait_running(*declared, timeout=timeout)
        return node

    yield start

    leftovers = []
    for node in nodes:
        leftovers += stop_node(node)
    assert not leftovers, f"processes outlived their node: {leftovers}"


def _declared(agents: str) -> tuple[str, ...]:
    """The agent names ``agents`` (TOML text of [[agents]] tables) declares, replicas included: a
    first node places spread agents only once its join wait is over, and until then its status may
    list none of them (all of none would be running)."""
    import tomllib

    try:
        tables = tomllib.loads(agents).get("agents", [])
    except tomllib.TOMLDecodeError:  # the test gives a spec mesh up must refuse: nothing to wait for
        return ()
    names: list[str] = []
    for t in tables if isinstance(tables, list) else []:
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            continue
        replicas = t.get("replicas", 1)
        names += [t["name"]] if replicas == 1 else [f"{t['name']}.{i}" for i in range(replicas)]
    return tuple(names)


def stop_node(node: RunningNode) -> list[int]:
    """SIGTERM the node (SIGKILL if it hangs); return the pids of processes that outlived it (killed now)."""
    leftovers = []
    try:
        node.close_clients()
    except Exception:  # a broken client must not leave the node running
        pass
    procs = node.descendants()
    if node.proc.poll() is None:
        node.proc.send_signal(signal.SIGTERM)
        try:
            node.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            node.proc.kill()
            node.proc.wait()
    # Besides the tree seen before the stop, anything the node's agents started that left the tree
    # (re-parented elsewhere): it carries the node's pid in its environment.
    procs += [p for p in started_by(node.proc.pid) if p.pid not in {q.pid for q in procs}]
    for p in procs:
        try:
            p.wait(timeout=8)
        except psutil.TimeoutExpired:
            leftovers.append(p.pid)
            p.kill()
        except psutil.NoSuchProcess:
            pass
    return leftovers


def started_by(node_pid: int) -> list[psutil.Process]:
    """Live processes whose environment names ``node_pid`` as their node (agents and what they started)."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("MESH_NODE_PID") == str(node_pid) and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.Error:
            continue
    return found


def _pings(address: str) -> bool:
    try:
        with mesh.connect(address, connect_timeout=0.5):
            return True
    except mesh.NodeUnavailable:
        return False


@pytest.fixture
def echo_node(start_node):
    return start_node('[[agents]]\nname = "echo"\nclass = "actors:Echo"\n')


def pid_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def env_with(**extra: str) -> dict:
    env = dict(os.environ)
    env.update(extra)
    return env


# The fast subset (README, "Testing"): `pytest -m fast` runs the modules that start no process (the
# pure state machines, the codec, specs, the simulator) without their many-seed simulations.
FAST_MODULES = {"test_budget_core", "test_conductor", "test_election", "test_failure_detector", "test_gossip",
                "test_intentions_core", "test_placement", "test_pools_core", "test_restart_policy", "test_sim",
                "test_spec", "test_wire", "test_layering", "test_packing", "test_metrics_core"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rpartition(".")[2] if getattr(item, "module", None) else ""
        if (module in FAST_MODULES and "many_seeds" not in item.name) or item.get_closest_marker("fast_check"):
            item.add_marker(pytest.mark.fast)
