"""The orchestra spec: the playbook's "Test Orchestra" YAML, in TOML beside the node specs.

Key for key with the playbook where TOML allows it (nodes/orchestra-run.toml is the whole example):

    name = "E2E Test Orchestra"
    pattern = "Hierarchical with Event-Driven elements"   # the only shape the engine runs

    [conductor]
    role = "Test Orchestration Manager"
    decisions = ["Test prioritization", "Resource allocation", "Failure handling"]

    [sections.preparation]                  # sections run in the order they are written
    agents = ["EnvironmentProvisioner", "DataSeeder", "ConfigValidator"]
    pattern = "Sequential"                  # or "Parallel", "Parallel with resource management"
    timeout = "30s"                         # seconds each agent may take (default 60 s)
    timeouts = { DataSeeder = "5s" }        # per agent, overriding timeout
    limit = 3                               # parallel: agents in flight at most (default: all)
    pool = "test-env"                       # with resource management: the mesh-wide pool
    units = 1                               #   (default: coordination.resources.pool), units each

    [coordination]
    communication = "Event bus with message queue"
    conflicts = "Conductor has final say"
    monitoring = "Live progress"

    [coordination.resources]                # the playbook's "Pooled with priority queuing"
    pool = "test-env"                       # a pool declared in a node spec ([pools.NAME])
    priority = { APITester = 2 }            # higher asks first; default 0, then section order
    max_wait = "10m"                        # seconds a part may wait in line (default 1 h)

    [failure_handling]
    agent_failure = "Restart once, then skip"
    resource_exhaustion = "Queue and wait"
    timeout = "Kill and report"
    critical_failure = "Stop orchestra, alert humans"

    [input]                                 # optional: the task every agent sees
    project = "examples/orchestra/sample_project"

Texts (patterns, rules, coordination) are matched without regard to case, spaces or a final
period; an unknown text is refused, naming the key and the texts that are known. Every problem
is a :class:`mesh.SpecError` with the file and the key (``sections.execution.pool``).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path
from typing import Any, Mapping

from ..errors import SpecError
from ..spec import parse_duration

SEQUENTIAL = "sequential"
PARALLEL = "parallel"
PARALLEL_WITH_RESOURCES = "parallel with resource management"
SECTION_PATTERNS = (SEQUENTIAL, PARALLEL, PARALLEL_WITH_RESOURCES)

ORCHESTRA_PATTERN = "hierarchical with event-driven elements"

#: What the conductor decides (it always makes all three; the list is the playbook's declaration).
DECISIONS = ("test prioritization", "resource allocation", "failure handling")

#: Each failure rule's text: the playbook's, the one the engine carries out (see mesh.orchestra.parts).
RULES: dict[str, tuple[str, ...]] = {
    "agent_failure": ("restart once, then skip",),
    "resource_exhaustion": ("queue and wait",),
    "timeout": ("kill and report",),
    "critical_failure": ("stop orchestra, alert humans",),
}

COMMUNICATION = ("event bus with message queue", "event bus")
CONFLICTS = ("conductor has final say", "conductor")
MONITORING = ("live progress",)

DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_WAIT = 3600.0

_TOP_KEYS = ("name", "pattern", "conductor", "sections", "coordination", "failure_handling", "input")
_CONDUCTOR_KEYS = ("role", "decisions")
_SECTION_KEYS = ("agents", "pattern", "timeout", "timeouts", "limit", "pool", "units")
_COORDINATION_KEYS = ("communication", "resources", "conflicts", "monitoring")
_RESOURCES_KEYS = ("pool", "priority", "max_wait")
_NAME_RE = re.compile(r"[A-Za-z0-9_.\-]{1,128}")


@dataclass(frozen=True)
class Section:
    """One section of the orchestra: its agents and how they run."""

    name: str
    agents: tuple[str, ...]
    pattern: str  #: one of SECTION_PATTERNS
    timeout: float = DEFAULT_TIMEOUT  #: seconds each agent may take
    timeouts: Mapping[str, float] = field(default_factory=dict)  #: seconds, per agent
    limit: int = 0  #: agents in flight at most in a parallel section (0: all of them)
    pool: str | None = None  #: the pool each agent's part holds units of (resource management)
    units: int = 1  #: units of ``pool`` each part holds

    def timeout_of(self, agent: str) -> float:
        return self.timeouts.get(agent, self.timeout)


@dataclass(frozen=True)
class Orchestra:
    """A parsed, valid orchestra spec (see the module note for each key)."""

    name: str
    sections: tuple[Section, ...]
    role: str = "Test Orchestration Manager"
    decisions: tuple[str, ...] = DECISIONS
    communication: str = COMMUNICATION[0]
    conflicts: str = CONFLICTS[0]
    monitoring: str = MONITORING[0]
    pool: str | None = None  #: coordination.resources.pool
    priority: Mapping[str, int] = field(default_factory=dict)  #: agent -> priority (higher first)
    max_wait: float = DEFAULT_MAX_WAIT  #: seconds a part may wait in line for its pool
    rules: Mapping[str, str] = field(default_factory=lambda: {k: v[0] for k, v in RULES.items()})
    input: Mapping[str, Any] = field(default_factory=dict)
    file: str = "<orchestra>"

    def rule(self, name: str) -> str:
        return self.rules[name]

    def priority_of(self, agent: str) -> int:
        return self.priority.get(agent, 0)


def normalize(text: str) -> str:
    """``"Restart once,  then Skip."`` -> ``"restart once, then skip"``: how texts are compared."""
    return " ".join(text.split()).strip().rstrip(".").lower()


class _Reader:
    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, key: str, reason: str) -> SpecError:
        return SpecError(self.file, key, reason)

    def table(self, value: object, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a table, got {type(value).__name__}")
        return value

    def known(self, table: Mapping[str, object], keys: tuple[str, ...], prefix: str) -> None:
        for k in table:
            if k not in keys:
                close = get_close_matches(k, keys, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise self.fail(f"{prefix}{k}", f"unknown key (known: {', '.join(keys)}){hint}")

    def string(self, value: object, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"expected a non-empty string, got {value!r:.60}")
        return value

    def text(self, value: object, key: str, known: tuple[str, ...]) -> str:
        said = normalize(self.string(value, key))
        if said not in known:
            raise self.fail(key, f"unknown text {value!r} (known: {', '.join(repr(k) for k in known)})")
        return said

    def agent(self, value: object, key: str) -> str:
        if not isinstance(value, str) or not _NAME_RE.fullmatch(value) or value.startswith("."):
            raise self.fail(key, f"not an agent name: {value!r:.60} (1-128 of A-Z a-z 0-9 _ . -)")
        return value

    def integer(self, value: object, key: str, low: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"expected an integer, got {value!r:.60}")
        if value < low:
            raise self.fail(key, f"must be at least {low}, got {value}")
        return value

    def seconds(self, value: object, key: str) -> float:
        seconds = parse_duration(value, key, self.file)
        if seconds <= 0:
            raise self.fail(key, f"must be greater than 0 seconds, got {value!r}")
        return seconds


def parse_orchestra(data: Mapping[str, Any], file: str = "<orchestra>") -> Orchestra:
    """Validate a parsed TOML document and build the :class:`Orchestra` (SpecError naming the key)."""
    read = _Reader(str(file))
    read.table(data, "-")
    read.known(data, _TOP_KEYS, "")
    if "name" not in data:
        raise read.fail("name", "missing: the orchestra's name")
    name = read.string(data["name"], "name")
    if "pattern" in data:
        read.text(data["pattern"], "pattern", (ORCHESTRA_PATTERN,))
    kwargs: dict[str, Any] = {"name": name, "file": read.file}

    conductor = read.table(data.get("conductor", {}), "conductor")
    read.known(conductor, _CONDUCTOR_KEYS, "conductor.")
    if "role" in conductor:
        kwargs["role"] = read.string(conductor["role"], "conductor.role")
    if "decisions" in conductor:
        decisions = conductor["decisions"]
        if not isinstance(decisions, list):
            raise read.fail("conductor.decisions", "expected a list of texts")
        kwargs["decisions"] = tuple(read.text(d, f"conductor.decisions[{i}]", DECISIONS)
                                    for i, d in enumerate(decisions))

    coordination = read.table(data.get("coordination", {}), "coordination")
    read.known(coordination, _COORDINATION_KEYS, "coordination.")
    for key, known in (("communication", COMMUNICATION), ("conflicts", CONFLICTS), ("monitoring", MONITORING)):
        if key in coordination:
            kwargs[key] = read.text(coordination[key], f"coordination.{key}", known)
    resources = read.table(coordination.get("resources", {}), "coordination.resources")
    read.known(resources, _RESOURCES_KEYS, "coordination.resources.")
    if "pool" in resources:
        kwargs["pool"] = read.agent(resources["pool"], "coordination.resources.pool")
    if "max_wait" in resources:
        kwargs["max_wait"] = read.seconds(resources["max_wait"], "coordination.resources.max_wait")
    priority = read.table(resources.get("priority", {}), "coordination.resources.priority")
    kwargs["priority"] = {read.agent(agent, "coordination.resources.priority"):
                          _priority(value, f"coordination.resources.priority.{agent}", read)
                          for agent, value in priority.items()}

    handling = read.table(data.get("failure_handling", {}), "failure_handling")
    read.known(handling, tuple(RULES), "failure_handling.")
    kwargs["rules"] = {rule: read.text(handling[rule], f"failure_handling.{rule}", texts) if rule in handling
                       else texts[0] for rule, texts in RULES.items()}

    kwargs["input"] = dict(read.table(data.get("input", {}), "input"))

    sections = read.table(data.get("sections", {}), "sections")
    if not sections:
        raise read.fail("sections", "missing: at least one section ([sections.NAME] with its agents)")
    kwargs["sections"] = tuple(_section(str(key), value, read, kwargs.get("pool")) for key, value in sections.items())
    seen: dict[str, str] = {}
    for section in kwargs["sections"]:
        for agent in section.agents:
            if agent in seen:
                raise read.fail(f"sections.{section.name}.agents",
                                f"{agent!r} is in section {seen[agent]!r} already (one part per agent)")
            seen[agent] = section.name
    unknown = sorted(set(kwargs["priority"]) - set(seen))
    if unknown:
        raise read.fail("coordination.resources.priority", f"not an agent of any section: {', '.join(unknown)}")
    return Orchestra(**kwargs)


def _priority(value: object, key: str, read: _Reader) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise read.fail(key, f"expected an integer (higher asks first), got {value!r:.60}")
    return value


def _section(name: str, value: object, read: _Reader, default_pool: str | None) -> Section:
    where = f"sections.{name}"
    table = read.table(value, where)
    read.known(table, _SECTION_KEYS, f"{where}.")
    if "agents" not in table:
        raise read.fail(f"{where}.agents", "missing: the section's agents")
    agents = table["agents"]
    if not isinstance(agents, list) or not agents:
        raise read.fail(f"{where}.agents", "expected a non-empty list of agent names")
    names = tuple(read.agent(a, f"{where}.agents[{i}]") for i, a in enumerate(agents))
    if len(set(names)) != len(names):
        raise read.fail(f"{where}.agents", "an agent is listed twice")
    if "pattern" not in table:
        raise read.fail(f"{where}.pattern", f"missing (one of {', '.join(repr(p) for p in SECTION_PATTERNS)})")
    pattern = read.text(table["pattern"], f"{where}.pattern", SECTION_PATTERNS)
    kwargs: dict[str, Any] = {"name": name, "agents": names, "pattern": pattern}
    if "timeout" in table:
        kwargs["timeout"] = read.seconds(table["timeout"], f"{where}.timeout")
    timeouts = read.table(table.get("timeouts", {}), f"{where}.timeouts")
    for agent in timeouts:
        if agent not in names:
            raise read.fail(f"{where}.timeouts.{agent}", "not an agent of this section")
    kwargs["timeouts"] = {agent: read.seconds(v, f"{where}.timeouts.{agent}") for agent, v in timeouts.items()}
    if "limit" in table and pattern == SEQUENTIAL:
        raise read.fail(f"{where}.limit", "only for a parallel section (a sequential one runs one agent at a time)")
    for key in ("pool", "units"):
        if key in table and pattern != PARALLEL_WITH_RESOURCES:
            raise read.fail(f"{where}.{key}", f"only with pattern {PARALLEL_WITH_RESOURCES!r}")
    if "limit" in table:
        kwargs["limit"] = read.integer(table["limit"], f"{where}.limit", 1)
    if "units" in table:
        kwargs["units"] = read.integer(table["units"], f"{where}.units", 1)
    if pattern == PARALLEL_WITH_RESOURCES:
        pool = read.agent(table["pool"], f"{where}.pool") if "pool" in table else default_pool
        if pool is None:
            raise read.fail(f"{where}.pool", "missing: resource management needs a pool (here, or"
                                             " coordination.resources.pool)")
        kwargs["pool"] = pool
    return Section(**kwargs)


def load_orchestra(path: str | Path) -> Orchestra:
    """Read and validate the orchestra spec at ``path`` (SpecError with the file and key)."""
    file = str(path)
    try:
        text = Path(file).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(file, "-", "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(file, "-", f"cannot read: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(file, "toml", str(exc)) from None
    return parse_orchestra(data, file)
