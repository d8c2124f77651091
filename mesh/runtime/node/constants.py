"""The node's timings, limits, reserved keys and agent states, in one place."""

from __future__ import annotations

import os
from pathlib import Path

# The lease (seconds), a fenced agent's grace before SIGKILL, and the silence after which the
# leader re-places a node's agents: the fencing rules' timings, defined with them in the core.
from ...core.fencing import FENCE_GRACE_S as FENCE_GRACE_S, LEASE_S as LEASE_S, REPLACE_AFTER_S as REPLACE_AFTER_S

AGENTS_PREFIX = "$agents/"  #: $agents/NAME: where an agent runs and how to reach it (the directory)
ASSIGN_PREFIX = "$assign/"  #: $assign/TERM: the leader's assignment of replicas to nodes in that term
#: $acted/NODE: the assignment NODE last acted on and the replicas it runs: {"term", "seq", "runs"}
ACTED_PREFIX = "$acted/"
KILL_KEY = "$kill"  #: the kill switch: {"pulled", "at", "by", "id"}
BUDGET_PREFIX = "$budget/"  #: $budget/AGENT: the last time the node ended AGENT for its budget, and why

STATES = ("starting", "running", "restarting", "failed", "stopped")
#: States an agent the node does not run may show in `mesh status`: declared but no leader
#: yet, assigned by the leader to a node that has not started it, or placed nowhere.
PLACEMENT_STATES = ("waiting", "assigned", "unplaced", "draining")
#: How often the node reaps children and starts due restarts, in seconds.
HOUSEKEEPING_S = 0.1
#: Seconds between looks at every agent for an exit, and for the orphans of dead agents, while no
#: child of the node has exited (one system call a tick says whether one did): backstops.
REAP_ALL_S, SWEEP_S = 10.0, 5.0
#: How long the node's loop waits for a request before it ticks the election, in seconds.
LOOP_S = 0.01
#: An embedded actor that has not sent a heartbeat for this long is dropped, in seconds.
EMBEDDED_TTL_S = 3.0
#: The largest chunk of a log file one `logs` request returns, in bytes.
LOG_CHUNK = 256 * 1024
#: What the node's ROUTER takes in (issue 10). The node receives control requests, election and
#: intention messages (small) and gossip: at most max_delta_bytes of entries (the first may be a
#: whole value, max_value_bytes) and a digest of up to 4096 origins (GOSSIP_DIGEST_BYTES). So its
#: frame limit is min(max_message, max_delta_bytes + max_value_bytes + GOSSIP_DIGEST_BYTES),
#: 2.25 MiB by default, not an actor's 4 MiB of user data.
GOSSIP_DIGEST_BYTES = 1 << 20
#: Bytes libzmq may queue for the node per connection: RCVHWM is this many frames of the node's
#: frame limit (14 by default), at least 2, at most INTAKE_FRAMES_MAX. In all, libzmq holds at most
#: connections x (RCVHWM + 1) x frame limit (one frame in the making per connection), about
#: 34 MB per connection by default; the loop keeps the queues near empty (INTAKE_BURST) and drops
#: a shed peer's frames unread (transport.BadFrames).
INTAKE_CONNECTION_BYTES = 32 << 20
INTAKE_FRAMES_MAX = 1000
#: Messages the loop takes in one go before it ticks its timers, and for at most how long (s).
INTAKE_BURST = 256
INTAKE_BURST_S = 0.02


def mesh_home() -> Path:
    """Where nodes keep their logs: ``$MESH_HOME``, else ``~/.mesh``."""
    return Path(os.environ.get("MESH_HOME") or Path.home() / ".mesh")
