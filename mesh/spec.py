"""The node spec: a TOML file that says which agents a mesh node runs, and how.

A spec has two parts, both optional::

    [node]
    name = "lab"                      # node name (same charset as agent names); unique in
                                      # the mesh; default: HOST-PORT of listen
    listen = "tcp://127.0.0.1:7700"   # tcp://HOST:PORT; "HOST:PORT" gets tcp:// added
    path = ["agents", "../shared"]    # folders (relative to the spec file) put on
                                      # sys.path to import agent classes
    start = "fork"                    # how agents' processes start: "fork" (from the node's
                                      # zygote) or "spawn" (a fresh interpreter each); per agent too
    wave_size = 4                     # agents started at once (default: 100 forked, 4 spawned)
    agent_nice = 10                   # agents run this much nicer than the node (0-19): the
                                      # node's leases and heartbeats come first
    merge_pages = false               # agents' memory mergeable: the kernel (KSM, when it runs)
                                      # keeps one copy of the pages they hold alike
    wave_timeout = "10s"              # seconds to wait for a wave to register
    stop_timeout = "5s"               # seconds a graceful stop may take before SIGKILL
    max_message = "4MiB"              # bytes, the largest frame the node accepts
    voter = true                      # takes part in leader elections (default true)
    # keys = "keys"                   # the mesh's keys directory (relative to the spec file):
                                      # CURVE on every socket; `mesh keys init` makes it
    # metrics = "127.0.0.1:9464"      # HTTP: Prometheus /metrics and the live dashboard (/);
                                      # off unless set
    election_timeout_min = "1s"       # a follower waits a random time in [min, max]
    election_timeout_max = "2s"       #   without heartbeats before standing for leader
    heartbeat = "100ms"               # the leader's heartbeat interval
    capacity = { cpu = 2.0, memory = "4GB" }  # what agents' budgets may add up to here
                                      # (default: the machine's cores and memory)

    [pools.db]                        # a mesh-wide pool of 100 units (the leader counts)
    size = 100
    lease = "10s"                     # a grant not renewed for this long is lost

    [limits.api]                      # a mesh-wide rate limit: 1000 permits per 60 s
    rate = 1000
    per = "60s"

    [intents]                         # escalated intentions, when this node leads:
    escalate = "leader"               # decided by the leader, or "human": mesh approve/deny
    escalation_timeout = "60s"        # an undecided escalation is denied after this

    [[agents]]
    name = "planner"                  # unique in the node
    class = "planner:Planner"         # "module:Class", Class a subclass of mesh.Actor
    restart = "on-failure"            # "never", "on-failure" or "always"
    replicas = 1                      # instances; >1 names them planner.0, planner.1, ...
    max_restarts = 1                  # restarts allowed within restart_window
    restart_window = "60s"            # seconds
    backoff = "500ms"                 # seconds before the first restart in a window
    backoff_max = "10s"               # seconds, the cap of the doubling backoff
    mailbox = 1000                    # frames queued before senders block
    mailbox_bytes = "32MiB"           # bytes queued per sender before it blocks (see README)
    stop_timeout = "5s"               # seconds; defaults to the node's stop_timeout
    config = { model = "small" }      # keyword arguments for Planner(...)
    placement = "spread"              # "spread" (default), "pack" or "local": where the
                                      # leader places it (see mesh.core.placement)
    # node = "lab"                    # instead of placement: always run on this node (pinned)
    budget = { cpu = 0.5, memory = "256MB" }  # cores, bytes; enforced by the node
    # start = "spawn"                 # "fork" or "spawn"; default: the node's start
    # preload = true                  # import the class's module in the zygote, before forking

Units:

* Durations are seconds. TOML accepts a number (``1.5``) or a string with one
  unit: ``"250ms"``, ``"1.5s"``, ``"2m"``, ``"1h"`` (units are case-insensitive;
  ``d`` for days also works). See :func:`parse_duration`.
* Sizes are bytes. TOML accepts an integer (``1048576``) or a string with one
  unit: ``"100B"``, decimal ``"256KB"``/``"MB"``/``"GB"``/``"TB"`` (powers of
  1000) or binary ``"512KiB"``/``"MiB"``/``"GiB"``/``"TiB"`` (powers of 1024),
  case-insensitive, fractions allowed when they give whole bytes
  (``"1.5GB"``). See :func:`parse_size`.

Names (node and agents) are 1 to 128 characters of ``A-Z a-z 0-9 _ . -`` and
do not start with ``.`` (names starting with ``$`` are reserved for the
runtime). A replicated agent's instance names (``NAME.0`` ...) must be valid
names too, and no name or instance name may appear twice in a node.

Every problem is reported as :class:`mesh.SpecError` with the file, the key
(``node.listen``, ``agents[2].class``; indexes are zero-based) and the reason.
:func:`load_spec` and :func:`parse_spec` only check the spec's shape;
:func:`check_importable` also imports every agent class, and :func:`check_config` checks
each agent's ``config`` against its class's constructor (``mesh up`` runs all of them).
"""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import socket
import sys
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from difflib import get_close_matches
from typing import Any

from .errors import SpecError

__all__ = [
    "AgentSpec",
    "NodeSpec",
    "RESTART_POLICIES",
    "DEFAULT_MAX_RESTARTS",
    "load_spec",
    "parse_spec",
    "parse_duration",
    "parse_size",
    "check_importable",
    "check_config",
    "check_capacity",
]

RESTART_POLICIES = ("never", "on-failure", "always")
#: ``max_restarts`` when the spec does not give it, by restart policy.
DEFAULT_MAX_RESTARTS = {"never": 0, "on-failure": 1, "always": 10}

NAME_MAX = 128
MAX_REPLICAS = 1000
MAX_MAILBOX = 2**31 - 1  # ZeroMQ high-water marks are C ints
MIN_MESSAGE = 1024
MAX_MESSAGE = 1024**3

_NAME_RE = re.compile(r"[A-Za-z0-9_.\-]+")
_NUMBER_WITH_UNIT_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*", re.ASCII)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}

_NODE_KEYS = ("name", "listen", "path", "start", "wave_size", "agent_nice", "merge_pages", "wave_timeout", "stop_timeout",
              "max_message", "voter", "election_timeout_min", "election_timeout_max", "heartbeat", "capacity", "keys",
              "metrics")
PLACEMENTS = ("spread", "pack", "local")
#: How an agent's process starts: forked from its node's zygote, or a fresh interpreter.
STARTS = ("fork", "spawn")
_AGENT_KEYS = (
    "name",
    "class",
    "restart",
    "replicas",
    "max_restarts",
    "restart_window",
    "backoff",
    "backoff_max",
    "mailbox",
    "mailbox_bytes",
    "stop_timeout",
    "config",
    "placement",
    "node",
    "budget",
    "start",
    "preload",
)
_TOP_KEYS = ("node", "agents", "pools", "limits", "intents")
ESCALATE = ("leader", "human")
MAX_CPU = 4096.0  # cores: more than any machine has, less than nonsense


@dataclass(frozen=True)
class AgentSpec:
    """One ``[[agents]]`` entry. Durations are seconds; see the module docstring."""

    name: str  #: unique in the node; see the module docstring for the charset
    cls: str  #: TOML key ``class``: ``"module:Class"`` (dotted on both sides)
    restart: str = "on-failure"  #: one of RESTART_POLICIES
    replicas: int = 1  #: instances, 1 to 1000
    max_restarts: int | None = None  #: restarts within restart_window; None = policy default
    restart_window: float = 60.0  #: seconds
    backoff: float = 0.5  #: seconds before the first restart; doubles per restart in the window
    backoff_max: float = 10.0  #: seconds, the cap of the backoff
    mailbox: int = 1000  #: frames queued in the actor's ROUTER before senders block
    mailbox_bytes: int = 32 * 1024 * 1024  #: bytes queued per sending connection before it blocks
    stop_timeout: float | None = None  #: seconds for a graceful stop; None = the node's
    config: dict[str, Any] = field(default_factory=dict)  #: keyword arguments for the class constructor
    placement: str = "spread"  #: one of PLACEMENTS: where the leader places the replicas
    node: str | None = None  #: pinned to this node (placement does not apply)
    budget_cpu: float | None = None  #: cores this agent's process tree may use on average
    budget_memory: int | None = None  #: bytes (PSS) this agent's process tree may occupy
    start: str | None = None  #: one of STARTS, or None: the node's ``start``
    preload: bool = False  #: the zygote imports the class's module before it forks this agent

    def __post_init__(self) -> None:
        if self.max_restarts is None:
            object.__setattr__(self, "max_restarts", DEFAULT_MAX_RESTARTS.get(self.restart, 0))

    def instance_names(self) -> list[str]:
        """The names the instances register under: ``[name]``, or ``name.0``, ``name.1`` ..."""
        if self.replicas == 1:
            return [self.name]
        return [f"{self.name}.{i}" for i in range(self.replicas)]

    @property
    def module(self) -> str:
        """The module part of ``cls``."""
        return self.cls.partition(":")[0]

    @property
    def qualname(self) -> str:
        """The class part of ``cls`` (may be dotted for a nested class)."""
        return self.cls.partition(":")[2]


@dataclass(frozen=True)
class NodeSpec:
    """A whole spec: the ``[node]`` table and its agents. See the module docstring."""

    file: str  #: the spec path as given, or "<default>" / "<spec>"
    base_dir: str  #: absolute folder of the spec file (the cwd if there is no file)
    name: str = "mesh"  #: node name (parse_spec gives a spec without one HOST-PORT: default_node_name)
    listen: str = "tcp://127.0.0.1:7700"  #: always tcp://HOST:PORT
    path: tuple[str, ...] = ()  #: absolute folders added to sys.path for agent imports
    start: str = "fork"  #: how agents' processes start by default: one of STARTS
    wave_size: int | None = None  #: agents started at once; None: by how they start (see the supervisor)
    #: How much nicer (lower CPU priority) than the node its agents run: the node's control loop
    #: (leases, heartbeats, gossip) gets the CPU first, the agents all it does not use.
    agent_nice: int = 10
    #: The zygote's and agents' memory marked mergeable (:mod:`mesh.runtime.pagemerge`): where the
    #: kernel's page merging (KSM) runs, it keeps one copy of the pages the agents hold alike.
    merge_pages: bool = False
    wave_timeout: float = 10.0  #: seconds to wait for a wave to register
    stop_timeout: float = 5.0  #: seconds a graceful stop may take before SIGKILL
    max_message: int = 4 * 1024 * 1024  #: bytes
    voter: bool = True  #: takes part in leader elections
    #: The mesh's keys directory (absolute; ``mesh keys init``): CURVE on every socket. None: no keys.
    keys: str | None = None
    #: HOST:PORT of the node's HTTP server (Prometheus /metrics, the dashboard); None: none.
    metrics: str | None = None
    #: Election timings, in seconds. The defaults (etcd's: 100 ms heartbeat, 1 s election
    #: timeout) survive the stalls of a loaded machine; see the README on fast failover.
    election_timeout_min: float = 1.0  #: seconds
    election_timeout_max: float = 2.0  #: seconds
    heartbeat: float = 0.100  #: seconds
    capacity_cpu: float | None = None  #: cores for budgets here; None = the machine's
    capacity_memory: int | None = None  #: bytes for budgets here; None = the machine's
    pools: tuple[tuple[str, int, float], ...] = ()  #: (name, size, lease seconds)
    limits: tuple[tuple[str, int, float], ...] = ()  #: (name, rate, per seconds)
    escalate: str = "leader"  #: who decides escalated intentions when this node leads: leader | human
    escalation_timeout: float = 60.0  #: seconds an escalation waits for a person before it is denied
    agents: tuple[AgentSpec, ...] = ()

    def capacity(self) -> tuple[float, int]:
        """(cores, bytes) the budgets of agents placed here may add up to."""
        cpu = self.capacity_cpu
        if cpu is None:
            try:
                cpu = float(len(os.sched_getaffinity(0)))
            except AttributeError:  # pragma: no cover - not Linux
                cpu = float(os.cpu_count() or 1)
        memory = self.capacity_memory
        if memory is None:
            import psutil

            memory = int(psutil.virtual_memory().total)
        return cpu, memory

    def import_path(self) -> list[str]:
        """Folders to put first on sys.path: base_dir, then path, then the cwd; no duplicates."""
        seen: set[str] = set()
        out: list[str] = []
        for folder in (self.base_dir, *self.path, os.getcwd()):
            if folder not in seen:
                seen.add(folder)
                out.append(folder)
        return out

    def agent(self, name: str) -> AgentSpec:
        """The agent spec called ``name`` (KeyError if none)."""
        for agent in self.agents:
            if agent.name == name:
                return agent
        raise KeyError(name)


# --------------------------------------------------------------------------- values


def _type_name(value: object) -> str:
    return type(value).__name__


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_duration(value: Any, key: str, file: str) -> float:
    """Seconds from a number (``1.5``, ``2``) or a string with a unit.

    Units: ``ms``, ``s``, ``m`` (minutes), ``h``, ``d``; case-insensitive,
    spaces allowed between number and unit. Negative, non-finite, bool, other
    types, a unitless string and unknown units raise :class:`SpecError`.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise SpecError(file, key, f"expected a duration (seconds, or a string like '1.5s'), got {_type_name(value)}")
    if isinstance(value, str):
        match = _NUMBER_WITH_UNIT_RE.fullmatch(value)
        if match is None:
            if value.strip().startswith("-"):
                raise SpecError(file, key, f"duration must not be negative, got {value!r}")
            raise SpecError(file, key, f"not a duration: {value!r} (use e.g. '250ms', '1.5s', '2m', '1h')")
        number, unit = match.groups()
        if not unit:
            raise SpecError(file, key, f"duration {value!r} has no unit (use ms, s, m, h or d, or a bare number)")
        factor = _DURATION_UNITS.get(unit.lower())
        if factor is None:
            raise SpecError(file, key, f"unknown duration unit {unit!r} in {value!r} (known: ms, s, m, h, d)")
        seconds = float(number) * factor
    else:
        seconds = float(value)
    if math.isnan(seconds) or math.isinf(seconds):
        raise SpecError(file, key, f"duration must be a finite number, got {value!r}")
    if seconds < 0:
        raise SpecError(file, key, f"duration must not be negative, got {value!r}")
    return seconds


def parse_size(value: Any, key: str, file: str) -> int:
    """Bytes from an integer or a string with a unit.

    Units (case-insensitive): ``B``; ``KB``, ``MB``, ``GB``, ``TB`` (powers of
    1000); ``KiB``, ``MiB``, ``GiB``, ``TiB`` (powers of 1024). Fractions are
    fine when the result is a whole number of bytes (``"1.5GB"``, ``"0.5KiB"``).
    A float equal to a whole number (TOML ``1e6``) is taken as bytes. Negative,
    bool, a unitless string and unknown units raise :class:`SpecError`.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise SpecError(file, key, f"expected a size (bytes, or a string like '4MiB'), got {_type_name(value)}")
    if isinstance(value, int):
        size = value
    elif isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise SpecError(file, key, f"size must be a whole number of bytes, got {value!r}")
        size = int(value)
    else:
        match = _NUMBER_WITH_UNIT_RE.fullmatch(value)
        if match is None:
            if value.strip().startswith("-"):
                raise SpecError(file, key, f"size must not be negative, got {value!r}")
            raise SpecError(file, key, f"not a size: {value!r} (use e.g. '512KiB', '4MB', '1.5GB')")
        number, unit = match.groups()
        if not unit:
            raise SpecError(file, key, f"size {value!r} has no unit (use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)")
        factor = _SIZE_UNITS.get(unit.lower())
        if factor is None:
            raise SpecError(
                file, key, f"unknown size unit {unit!r} in {value!r} (known: B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
            )
        try:
            exact = Decimal(number) * factor
        except InvalidOperation:  # pragma: no cover - the regex admits only decimals
            raise SpecError(file, key, f"not a size: {value!r}") from None
        if exact != exact.to_integral_value():
            raise SpecError(file, key, f"size {value!r} is not a whole number of bytes ({exact} B)")
        size = int(exact)
    if size < 0:
        raise SpecError(file, key, f"size must not be negative, got {value!r}")
    return size


# --------------------------------------------------------------------------- helpers


class _Checker:
    """Field readers that raise SpecError with the right file and key."""

    def __init__(self, file: str):
        self.file = file

    def fail(self, key: str, reason: str) -> SpecError:
        return SpecError(self.file, key, reason)

    def unknown_keys(self, table: dict[Any, Any], known: tuple[str, ...], prefix: str) -> None:
        for k in table:
            if k not in known:
                reason = f"unknown key (known: {', '.join(known)})"
                close = get_close_matches(str(k), known, n=1)
                if close:
                    reason += f"; did you mean {close[0]!r}?"
                raise self.fail(f"{prefix}{k}", reason)

    def integer(self, value: object, key: str, low: int | None = None, high: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"expected an integer, got {_type_name(value)}")
        self._bounds(value, key, low, high)
        return value

    def boolean(self, value: object, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {_type_name(value)}")
        return value

    def string(self, value: object, key: str) -> str:
        if not isinstance(value, str):
            raise self.fail(key, f"expected a string, got {_type_name(value)}")
        return value

    def duration(self, value: object, key: str, positive: bool = False) -> float:
        seconds = parse_duration(value, key, self.file)
        if positive and seconds <= 0:
            raise self.fail(key, f"must be greater than 0 seconds, got {value!r}")
        return seconds

    def name(self, value: object, key: str, what: str) -> str:
        text = self.string(value, key)
        reason = _name_problem(text)
        if reason is not None:
            raise self.fail(key, f"invalid {what} {text!r}: {reason}")
        return text

    def _bounds(self, value: int, key: str, low: int | None, high: int | None) -> None:
        if low is not None and value < low:
            raise self.fail(key, f"must be at least {low}, got {value}")
        if high is not None and value > high:
            raise self.fail(key, f"must be at most {high}, got {value}")


def default_node_name(listen: str) -> str:
    """The name of a node whose spec and command line give none: ``HOST-PORT``, unique in
    practice (two nodes on one host cannot share a port). HOST is the listen address's host,
    or this machine's host name when that is a loopback or wildcard address."""
    host, _, port = listen.removeprefix("tcp://").rpartition(":")
    host = host.strip("[]")
    if host in ("", "*", "0.0.0.0", "::", "::1", "localhost") or host.startswith("127."):
        host = socket.gethostname().split(".")[0] or "node"
    host = re.sub(r"[^A-Za-z0-9_.\-]", "-", host).lstrip(".")[:100] or "node"
    return f"{host}-{port}"


def _name_problem(text: str) -> str | None:
    """Why ``text`` is not a valid node/agent name, or None if it is."""
    if not text:
        return "must not be empty"
    if len(text) > NAME_MAX:
        return f"longer than {NAME_MAX} characters ({len(text)})"
    if text[0] == "$":
        return "names starting with '$' are reserved for the runtime"
    if text[0] == ".":
        return "must not start with '.'"
    if not _NAME_RE.fullmatch(text):
        bad = sorted({c for c in text if not _NAME_RE.fullmatch(c)})
        return f"only A-Z a-z 0-9 _ . - are allowed (found {''.join(bad)!r})"
    return None


def _class_problem(text: str) -> str | None:
    """Why ``text`` is not a "module:Class" reference, or None if it is."""
    if text.count(":") != 1:
        return "expected 'module:Class' with exactly one ':'"
    module, qualname = text.split(":")
    for part, what in ((module, "module"), (qualname, "class")):
        if not part:
            return f"expected 'module:Class', the {what} part is empty"
        if not all(piece.isidentifier() for piece in part.split(".")):
            return f"the {what} part {part!r} is not a dotted Python identifier"
    return None


def _normalize_listen(value: str, key: str, check: _Checker) -> str:
    address = value.strip()
    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "tcp", address
    if scheme.lower() != "tcp":
        raise check.fail(key, f"only tcp:// addresses are supported, got {value!r}")
    host, colon, port = rest.rpartition(":")
    if not colon or not host:
        raise check.fail(key, f"expected tcp://HOST:PORT, got {value!r}")
    if host.startswith("["):
        if not host.endswith("]") or len(host) < 3:
            raise check.fail(key, f"bad IPv6 host in {value!r} (use [ADDRESS])")
    elif ":" in host:
        raise check.fail(key, f"IPv6 hosts need brackets, e.g. tcp://[::1]:7700, got {value!r}")
    if any(c.isspace() or c in "/?#@" for c in host):
        raise check.fail(key, f"bad host {host!r} in {value!r}")
    if not port.isdigit() or not port.isascii():
        raise check.fail(key, f"port must be a number, got {port!r} in {value!r}")
    number = int(port)
    if not 1 <= number <= 65535:
        raise check.fail(key, f"port must be 1-65535, got {number}")
    return f"tcp://{host}:{number}"


# --------------------------------------------------------------------------- parsing


def parse_spec(data: dict[str, Any], file: str = "<spec>", base_dir: str | None = None) -> NodeSpec:
    """Validate a parsed TOML document (a dict) and build the :class:`NodeSpec`.

    ``base_dir`` is the folder ``node.path`` entries are relative to (default:
    the current directory); it is made absolute.
    """
    file = str(file)
    check = _Checker(file)
    base = os.path.abspath(os.fspath(base_dir) if base_dir is not None else os.getcwd())
    if not isinstance(data, dict):
        raise check.fail("-", f"expected a TOML table at the top level, got {_type_name(data)}")
    check.unknown_keys(data, _TOP_KEYS, "")  # [[agent]]: "did you mean 'agents'?"

    node = data.get("node", {})
    if not isinstance(node, dict):
        raise check.fail("node", f"expected a table ([node]), got {_type_name(node)}")
    check.unknown_keys(node, _NODE_KEYS, "node.")
    kwargs: dict[str, Any] = {}
    if "name" in node:
        kwargs["name"] = check.name(node["name"], "node.name", "node name")
    if "listen" in node:
        kwargs["listen"] = _normalize_listen(check.string(node["listen"], "node.listen"), "node.listen", check)
    if "name" not in node:
        kwargs["name"] = default_node_name(kwargs.get("listen", NodeSpec.listen))
    if "path" in node:
        kwargs["path"] = _parse_path(node["path"], base, check)
    if "start" in node:
        kwargs["start"] = _parse_start(node["start"], "node.start", check)
    if "wave_size" in node:
        kwargs["wave_size"] = check.integer(node["wave_size"], "node.wave_size", low=1)
    if "agent_nice" in node:
        kwargs["agent_nice"] = check.integer(node["agent_nice"], "node.agent_nice", low=0, high=19)
    if "merge_pages" in node:
        kwargs["merge_pages"] = check.boolean(node["merge_pages"], "node.merge_pages")
    if "wave_timeout" in node:
        kwargs["wave_timeout"] = check.duration(node["wave_timeout"], "node.wave_timeout", positive=True)
    if "stop_timeout" in node:
        kwargs["stop_timeout"] = check.duration(node["stop_timeout"], "node.stop_timeout")
    if "max_message" in node:
        size = parse_size(node["max_message"], "node.max_message", file)
        if size < MIN_MESSAGE:
            raise check.fail("node.max_message", f"must be at least {MIN_MESSAGE} bytes, got {size}")
        if size > MAX_MESSAGE:
            raise check.fail("node.max_message", f"must be at most 1 GiB ({MAX_MESSAGE} bytes), got {size}")
        kwargs["max_message"] = size
    if "voter" in node:
        if not isinstance(node["voter"], bool):
            raise check.fail("node.voter", f"expected true or false, got {_type_name(node['voter'])}")
        kwargs["voter"] = node["voter"]
    for key in ("election_timeout_min", "election_timeout_max", "heartbeat"):
        if key in node:
            kwargs[key] = check.duration(node[key], f"node.{key}", positive=True)
    lo = kwargs.get("election_timeout_min", NodeSpec.election_timeout_min)
    hi = kwargs.get("election_timeout_max", NodeSpec.election_timeout_max)
    beat = kwargs.get("heartbeat", NodeSpec.heartbeat)
    if "keys" in node:
        kwargs["keys"] = os.path.join(base, os.path.expanduser(check.string(node["keys"], "node.keys")))
    if "metrics" in node:
        kwargs["metrics"] = check_metrics_address(check.string(node["metrics"], "node.metrics"), check)
    if "capacity" in node:
        kwargs["capacity_cpu"], kwargs["capacity_memory"] = _parse_resources(node["capacity"], "node.capacity", check)
    if hi < lo:
        raise check.fail("node.election_timeout_max", f"must not be less than election_timeout_min ({hi:g}s < {lo:g}s)")
    if beat >= lo:
        raise check.fail("node.heartbeat", f"must be shorter than election_timeout_min ({beat:g}s >= {lo:g}s)")

    raw_agents = data.get("agents", [])
    if not isinstance(raw_agents, list):
        raise check.fail("agents", f"expected an array of tables ([[agents]]), got {_type_name(raw_agents)}")
    agents = tuple(_parse_agent(entry, i, check) for i, entry in enumerate(raw_agents))
    _check_unique(agents, check)
    kwargs["pools"] = _parse_named(data.get("pools", {}), "pools", ("size", "lease"), check)
    kwargs["limits"] = _parse_named(data.get("limits", {}), "limits", ("rate", "per"), check)
    intents = data.get("intents", {})
    if not isinstance(intents, dict):
        raise check.fail("intents", f"expected a table ([intents]), got {_type_name(intents)}")
    check.unknown_keys(intents, ("escalate", "escalation_timeout"), "intents.")
    if "escalate" in intents:
        kwargs["escalate"] = check.string(intents["escalate"], "intents.escalate")
        if kwargs["escalate"] not in ESCALATE:
            raise check.fail("intents.escalate", f"must be one of {', '.join(ESCALATE)}, got {kwargs['escalate']!r}")
    if "escalation_timeout" in intents:
        kwargs["escalation_timeout"] = check.duration(intents["escalation_timeout"], "intents.escalation_timeout",
                                                      positive=True)
    return NodeSpec(file=file, base_dir=base, agents=agents, **kwargs)


def _parse_start(value: object, key: str, check: _Checker) -> str:
    start = check.string(value, key)
    if start not in STARTS:
        raise check.fail(key, f"must be one of {', '.join(STARTS)}, got {start!r}")
    return start


def _parse_resources(value: object, key: str, check: _Checker) -> tuple[float | None, int | None]:
    """``{ cpu = 0.5, memory = "256MB" }``: cores (a positive number) and bytes (a positive size)."""
    if not isinstance(value, dict):
        raise check.fail(key, f"expected a table like {{ cpu = 0.5, memory = \"256MB\" }}, got {_type_name(value)}")
    check.unknown_keys(value, ("cpu", "memory"), f"{key}.")
    cpu = memory = None
    if "cpu" in value:
        cpu = value["cpu"]
        if not _is_number(cpu) or not math.isfinite(cpu):
            raise check.fail(f"{key}.cpu", f"expected a number of cores, got {_type_name(cpu)}")
        if not 0 < cpu <= MAX_CPU:
            raise check.fail(f"{key}.cpu", f"must be more than 0 and at most {MAX_CPU:g} cores, got {cpu!r}")
        cpu = float(cpu)
    if "memory" in value:
        memory = parse_size(value["memory"], f"{key}.memory", check.file)
        if memory <= 0:
            raise check.fail(f"{key}.memory", "must be more than 0 bytes")
    if cpu is None and memory is None:
        raise check.fail(key, "give cpu, memory or both")
    return cpu, memory


def _parse_named(value: object, key: str, fields: tuple[str, str], check: _Checker) -> tuple[tuple[str, int, float], ...]:
    """``[pools.NAME] size = N, lease = "10s"`` or ``[limits.NAME] rate = N, per = "60s"``."""
    if not isinstance(value, dict):
        raise check.fail(key, f"expected tables like [{key}.NAME], got {_type_name(value)}")
    count, duration = fields
    out: list[tuple[str, int, float]] = []
    for name, table in value.items():
        where = f"{key}.{name}"
        reason = _name_problem(str(name))
        if reason is not None:
            raise check.fail(where, f"invalid name {name!r}: {reason}")
        if not isinstance(table, dict):
            raise check.fail(where, f"expected a table, got {_type_name(table)}")
        check.unknown_keys(table, fields, f"{where}.")
        if count not in table:
            raise check.fail(f"{where}.{count}", "missing")
        n = check.integer(table[count], f"{where}.{count}", low=1, high=2**31 - 1)
        if key == "pools":
            seconds = check.duration(table.get(duration, 10.0), f"{where}.{duration}", positive=True)
        else:
            if duration not in table:
                raise check.fail(f"{where}.{duration}", "missing (the period the rate is counted over)")
            seconds = check.duration(table[duration], f"{where}.{duration}", positive=True)
        out.append((str(name), n, seconds))
    return tuple(out)


def check_capacity(spec: NodeSpec, alone: bool) -> None:
    """Refuse a spec whose budgets cannot fit: the agents that must run on this node (all of
    them when it runs ``alone``, else the pinned and local ones) must fit its capacity."""
    cpu_cap, mem_cap = spec.capacity()
    here = [a for a in spec.agents if alone or a.node == spec.name or (a.node is None and a.placement == "local")]
    for what, cap, get, unit in (("cpu", cpu_cap, lambda a: a.budget_cpu or 0.0, "cores"),
                                 ("memory", mem_cap, lambda a: a.budget_memory or 0, "bytes")):
        parts = [(a, get(a)) for a in here if get(a)]
        total = sum(a.replicas * v for a, v in parts)
        if total > cap + 1e-9:
            detail = ", ".join(f"{a.name} {a.replicas} x {v:g}" if a.replicas > 1 else f"{a.name} {v:g}" for a, v in parts)
            given = "node.capacity" if (spec.capacity_cpu if what == "cpu" else spec.capacity_memory) is not None \
                else "the machine's"
            raise SpecError(spec.file, f"node.capacity.{what}",
                            f"the budgets of the agents that must run here add up to {total:g} {unit} of {what},"
                            f" more than the capacity of {cap:g} {unit} ({given}): {detail}")


def _parse_path(value: object, base: str, check: _Checker) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise check.fail("node.path", f"expected an array of strings, got {_type_name(value)}")
    out = []
    for i, item in enumerate(value):
        key = f"node.path[{i}]"
        folder = check.string(item, key)
        if not folder.strip():
            raise check.fail(key, "must not be empty")
        folder = os.path.expanduser(folder)
        out.append(os.path.normpath(os.path.join(base, folder)))
    return tuple(out)


def _parse_agent(entry: object, index: int, check: _Checker) -> AgentSpec:
    where = f"agents[{index}]"
    if not isinstance(entry, dict):
        raise check.fail(where, f"expected a table ([[agents]]), got {_type_name(entry)}")
    check.unknown_keys(entry, _AGENT_KEYS, f"{where}.")
    for required in ("name", "class"):
        if required not in entry:
            raise check.fail(f"{where}.{required}", "missing (every agent needs a name and a class)")
    name = check.name(entry["name"], f"{where}.name", "agent name")
    cls = check.string(entry["class"], f"{where}.class")
    problem = _class_problem(cls)
    if problem is not None:
        raise check.fail(f"{where}.class", f"{problem}, got {cls!r}")

    restart = check.string(entry.get("restart", "on-failure"), f"{where}.restart")
    if restart not in RESTART_POLICIES:
        raise check.fail(f"{where}.restart", f"must be one of {', '.join(RESTART_POLICIES)}, got {restart!r}")
    replicas = check.integer(entry.get("replicas", 1), f"{where}.replicas", low=1, high=MAX_REPLICAS)
    if "max_restarts" in entry:
        max_restarts = check.integer(entry["max_restarts"], f"{where}.max_restarts", low=0)
    else:
        max_restarts = DEFAULT_MAX_RESTARTS[restart]
    restart_window = check.duration(entry.get("restart_window", 60.0), f"{where}.restart_window", positive=True)
    backoff = check.duration(entry.get("backoff", 0.5), f"{where}.backoff")
    backoff_max = check.duration(entry.get("backoff_max", 10.0), f"{where}.backoff_max")
    if backoff_max < backoff:
        raise check.fail(
            f"{where}.backoff_max", f"must not be less than backoff ({backoff_max:g}s < {backoff:g}s)"
        )
    mailbox = check.integer(entry.get("mailbox", 1000), f"{where}.mailbox", low=1, high=MAX_MAILBOX)
    mailbox_bytes = AgentSpec.mailbox_bytes
    if "mailbox_bytes" in entry:
        mailbox_bytes = parse_size(entry["mailbox_bytes"], f"{where}.mailbox_bytes", check.file)
        if not 1024 <= mailbox_bytes <= MAX_MESSAGE:
            raise check.fail(f"{where}.mailbox_bytes", f"must be between 1 KiB and 1 GiB, got {mailbox_bytes} bytes")
    stop_timeout = None
    if "stop_timeout" in entry:
        stop_timeout = check.duration(entry["stop_timeout"], f"{where}.stop_timeout")
    config = entry.get("config", {})
    if not isinstance(config, dict):
        raise check.fail(f"{where}.config", f"expected a table (keyword arguments), got {_type_name(config)}")
    placement = check.string(entry.get("placement", "spread"), f"{where}.placement")
    if placement not in PLACEMENTS:
        raise check.fail(f"{where}.placement", f"must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
    pinned = None
    if "node" in entry:
        pinned = check.name(entry["node"], f"{where}.node", "node name")
        if "placement" in entry:
            raise check.fail(f"{where}.node", "give either node (pinned) or placement, not both")
    budget_cpu = budget_memory = None
    if "budget" in entry:
        budget_cpu, budget_memory = _parse_resources(entry["budget"], f"{where}.budget", check)
    start = _parse_start(entry["start"], f"{where}.start", check) if "start" in entry else None
    preload = entry.get("preload", False)
    if not isinstance(preload, bool):
        raise check.fail(f"{where}.preload", f"expected true or false, got {_type_name(preload)}")

    spec = AgentSpec(
        name=name,
        cls=cls,
        restart=restart,
        replicas=replicas,
        max_restarts=max_restarts,
        restart_window=restart_window,
        backoff=backoff,
        backoff_max=backoff_max,
        mailbox=mailbox,
        mailbox_bytes=mailbox_bytes,
        stop_timeout=stop_timeout,
        config=dict(config),
        placement=placement,
        node=pinned,
        budget_cpu=budget_cpu,
        budget_memory=budget_memory,
        start=start,
        preload=preload,
    )
    if replicas > 1:
        for instance in spec.instance_names():
            reason = _name_problem(instance)
            if reason is not None:
                raise check.fail(f"{where}.name", f"instance name {instance!r} is invalid: {reason}")
    return spec


def _check_unique(agents: tuple[AgentSpec, ...], check: _Checker) -> None:
    """No agent name or instance name may be taken twice (``a`` x2 gives ``a.0``, ``a.1``)."""
    taken: dict[str, tuple[int, str]] = {}
    for i, agent in enumerate(agents):
        wanted = [agent.name, *(n for n in agent.instance_names() if n != agent.name)]
        for candidate in wanted:
            if candidate in taken:
                j, owner = taken[candidate]
                if candidate == agent.name and owner == agent.name:
                    reason = f"duplicate agent name {agent.name!r} (also agents[{j}])"
                elif candidate == agent.name:
                    reason = f"duplicate name {candidate!r}: it is an instance of agents[{j}] {owner!r}"
                else:
                    reason = (
                        f"duplicate name {candidate!r}: instance of {agent.name!r} (replicas={agent.replicas})"
                        f" clashes with agents[{j}] {owner!r}"
                    )
                raise check.fail(f"agents[{i}].name", reason)
        for candidate in wanted:
            taken[candidate] = (i, agent.name)


# --------------------------------------------------------------------------- files


def load_spec(path: str | os.PathLike[str]) -> NodeSpec:
    """Read, parse and validate the spec file at ``path``.

    A missing, unreadable or non-file path raises ``SpecError(file, "-", ...)``;
    bad UTF-8 or bad TOML raises ``SpecError(file, "toml", ...)`` with the line.
    """
    file = os.fspath(path)
    if isinstance(file, bytes):
        file = os.fsdecode(file)
    try:
        with open(file, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise SpecError(file, "-", "no such file") from None
    except IsADirectoryError:
        raise SpecError(file, "-", "is a directory, not a spec file") from None
    except PermissionError:
        raise SpecError(file, "-", "permission denied") from None
    except OSError as exc:
        raise SpecError(file, "-", f"cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise SpecError(file, "toml", f"not valid UTF-8 (at line {line}, byte {exc.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(file, "toml", str(exc)) from None
    return parse_spec(data, file=file, base_dir=os.path.dirname(os.path.abspath(file)))


def check_importable(spec: NodeSpec) -> None:
    """Import every agent's class, with ``spec.import_path()`` first on sys.path.

    Raises ``SpecError(file, "agents[i].class", ...)`` when the module does not
    import (the reason names the exception type and message), the attribute is
    missing, or it is not a class derived from :class:`mesh.Actor`. ``sys.path``
    is restored afterwards; imported modules stay in ``sys.modules``.
    """
    from .actor import Actor

    saved = list(sys.path)
    sys.path[:0] = [p for p in spec.import_path()]
    try:
        importlib.invalidate_caches()
        for i, agent in enumerate(spec.agents):
            key = f"agents[{i}].class"
            module_name, _, qualname = agent.cls.partition(":")
            try:
                module = importlib.import_module(module_name)
            except BaseException as exc:  # noqa: BLE001 - user code may raise anything, even SystemExit
                if isinstance(exc, KeyboardInterrupt):
                    raise
                detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                raise SpecError(spec.file, key, f"cannot import module {module_name!r}: {detail}") from exc
            target: object = module
            for part in qualname.split("."):
                try:
                    target = getattr(target, part)
                except AttributeError:
                    raise SpecError(
                        spec.file, key, f"module {module_name!r} has no attribute {qualname!r}"
                    ) from None
            if not isinstance(target, type):
                raise SpecError(
                    spec.file, key, f"{agent.cls!r} is not a class (it is a {_type_name(target)})"
                )
            if not issubclass(target, Actor):
                raise SpecError(spec.file, key, f"{agent.cls!r} is not a subclass of mesh.Actor")
    finally:
        sys.path[:] = saved


def check_config(spec: NodeSpec) -> None:
    """Check every agent's ``config`` against its class's constructor, before anything starts.

    ``config`` becomes the keyword arguments of ``Class(**config)`` in the agent's process; a key
    the constructor does not take, or a required argument that ``config`` does not give, raises
    ``SpecError(file, "agents[i].config.KEY", ...)`` (``agents[i].config`` for a missing one)
    naming the class and what its constructor takes. Call it after :func:`check_importable`.
    """
    import inspect

    saved = list(sys.path)
    sys.path[:0] = [p for p in spec.import_path()]
    try:
        for i, agent in enumerate(spec.agents):
            module_name, _, qualname = agent.cls.partition(":")
            target: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                target = getattr(target, part)
            try:
                signature = inspect.signature(target)
            except (TypeError, ValueError):  # a constructor without a signature (C code): cannot check
                continue
            params = signature.parameters
            takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
            named = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
            takes = ", ".join(named) if named else "no arguments"
            for key in agent.config:
                if key not in named and not takes_any:
                    reason = f"{agent.cls} takes no argument {key!r} (its constructor takes {takes})"
                    close = get_close_matches(str(key), named, n=1)
                    if close:
                        reason += f"; did you mean {close[0]!r}?"
                    raise SpecError(spec.file, f"agents[{i}].config.{key}", reason)
            for name, p in params.items():
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is p.empty and name not in agent.config:
                    raise SpecError(spec.file, f"agents[{i}].config",
                                    f"{agent.cls} needs the argument {name!r}: add it to config (its constructor takes {takes})")
                if p.kind is p.POSITIONAL_ONLY and p.default is p.empty:
                    raise SpecError(spec.file, f"agents[{i}].class",
                                    f"{agent.cls} needs a positional-only argument {name!r}, which config cannot give")
    finally:
        sys.path[:] = saved


# --------------------------------------------------------------------------- on the wire


def agent_to_wire(agent: AgentSpec, node: NodeSpec) -> dict[str, Any]:
    """An agent spec as gossiped to the leader, with what another node needs to run it:
    the import path and working folder of the node that declares it."""
    out: dict[str, Any] = {
        "name": agent.name,
        "class": agent.cls,
        "restart": agent.restart,
        "replicas": agent.replicas,
        "max_restarts": agent.max_restarts,
        "restart_window": agent.restart_window,
        "backoff": agent.backoff,
        "backoff_max": agent.backoff_max,
        "mailbox": agent.mailbox,
        "mailbox_bytes": agent.mailbox_bytes,
        # TOML values msgpack cannot carry (dates) travel as text, as they reach the agent anyway.
        "config": json.loads(json.dumps(agent.config, default=str)),
        "path": node.import_path(),
        "cwd": node.base_dir,
        "cpu": agent.budget_cpu or 0.0,
        "memory": agent.budget_memory or 0,
    }
    if agent.budget_cpu is not None or agent.budget_memory is not None:
        out["budget"] = {k: v for k, v in (("cpu", agent.budget_cpu), ("memory", agent.budget_memory)) if v is not None}
    if agent.node is not None:
        out["node"] = agent.node
    else:
        out["placement"] = agent.placement
    if agent.stop_timeout is not None:
        out["stop_timeout"] = agent.stop_timeout
    if agent.start is not None:
        out["start"] = agent.start
    if agent.preload:
        out["preload"] = True
    return out


def agent_from_wire(data: object, source: str) -> tuple[AgentSpec, list[str], str]:
    """The inverse of :func:`agent_to_wire`, for data from the network: checked like a spec file
    (``source`` names where it came from). Returns the spec, the import path and the folder."""
    check = _Checker(source)
    if not isinstance(data, dict):
        raise check.fail("agent", f"expected a table, got {_type_name(data)}")
    rest = {k: v for k, v in data.items() if k not in ("path", "cwd", "cpu", "memory")}
    spec = _parse_agent(rest, 0, check)
    path = data.get("path", [])
    if not isinstance(path, list) or not all(isinstance(p, str) for p in path):
        raise check.fail("agents[0].path", "expected a list of folders")
    cwd = data.get("cwd")
    if not isinstance(cwd, str) or not os.path.isabs(cwd):
        raise check.fail("agents[0].cwd", "expected an absolute folder")
    return spec, list(path), cwd


def parse_http_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``http://HOST:PORT``) -> (host, port); ValueError naming what is wrong."""
    raw = text.strip()
    if raw.startswith("http://"):
        raw = raw[len("http://"):]
    host, sep, port = raw.rstrip("/").rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:9464, got {text!r}")
    return host, int(port)


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` is loopback only (127.0.0.0/8, ::1, localhost); a name or a wildcard may be any
    interface, so it is not."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_metrics_address(text: str, check: "_Checker") -> str:
    """``[node] metrics``: HOST:PORT where the node serves /metrics and the dashboard."""
    try:
        host, port = parse_http_address(text)
    except ValueError as exc:
        raise check.fail("node.metrics", str(exc)) from None
    return f"{host}:{port}"
