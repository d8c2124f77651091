"""What the node knows of one actor it supervises or hosts the registration of."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...core.restart import RestartTracker
from ...spec import AgentSpec
from .agent_metrics import AgentMetrics
from .zygote import AgentProcess


#: What the node publishes of an instance (``$agents/NAME``), and where a leader placed it: a
#: change to one of these moves :data:`VERSION`, so the node redoes what depends on them (its
#: directory entries, the replicas the fence checks) only when something changed.
PUBLISHED = frozenset(("state", "pid", "endpoint", "incarnation", "reason", "max_frame", "hears_intentions", "spec",
                       "placed_by", "movable"))
#: How many times a published field of any instance changed, or an instance came or went.
VERSION = [0]
_UNSET = object()


def changed() -> None:
    """An instance came or went (a published field that changed moves VERSION itself)."""
    VERSION[0] += 1


@dataclass
class Instance:
    """One running (or supervised) actor known to this node."""

    name: str
    spec: AgentSpec | None  # None for an embedded actor (it lives in someone else's process)
    group: str
    state: str = "starting"
    pid: int | None = None
    endpoint: str | None = None
    restarts: int = 0
    messages: int = 0
    bad_frames: int = 0
    incarnation: int = -1
    reason: str = ""
    proc: AgentProcess | None = None  #: its process, spawned or forked (None: not running)
    tracker: RestartTracker | None = None
    restart_at: float = 0.0
    started_at: float = 0.0
    last_heard: float = 0.0
    log_path: Path | None = None
    term_sent_at: float | None = None
    max_frame: int | None = None  # the largest frame the actor accepts, in bytes
    placed_by: str | None = None  # "leader@term" that assigned it here (None: embedded)
    movable: bool = True  # the leader could place it elsewhere (not pinned or local to this node)
    retiring: str = ""  # why it is being stopped for good (taken off this node)
    import_path: list[str] = field(default_factory=list)
    cwd: str | None = None
    stop_grace: float | None = None  # seconds before SIGKILL when retiring, if not the stop timeout
    budget_kills: int = 0
    hears_intentions: bool = False
    #: Why a person stopped it (`mesh stop`): it stays stopped, whatever its restart policy, until
    #: `mesh restart`. Empty: not held.
    held: str = ""
    respawn: str = ""  #: why a person restarted it (`mesh restart`): when it has exited, it starts at once
    metrics: AgentMetrics = field(default_factory=AgentMetrics)  #: the playbook's figures

    def __setattr__(self, name: str, value: object) -> None:
        if name in PUBLISHED and getattr(self, name, _UNSET) != value:
            VERSION[0] += 1
        object.__setattr__(self, name, value)

    @property
    def embedded(self) -> bool:
        return self.spec is None

    def as_status(self, node_name: str) -> dict:
        return {
            "name": self.name,
            "node": node_name,
            "pid": self.pid,
            "state": self.state,
            "restarts": self.restarts,
            "messages": self.messages,
            "incarnation": max(self.incarnation, 0),
            "endpoint": self.endpoint,
            "embedded": self.embedded,
            "group": self.group,
            "reason": self.reason,
            "bad_frames": self.bad_frames,
            "budget": budget_of(self.spec),
            "budget_kills": self.budget_kills,
        }


def budget_of(spec: AgentSpec | None) -> dict | None:
    """An agent's declared budget as status and the directory show it, or None."""
    if spec is None or (spec.budget_cpu is None and spec.budget_memory is None):
        return None
    return {"cpu": spec.budget_cpu, "memory": spec.budget_memory}
