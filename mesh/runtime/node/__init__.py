"""The node: what ``mesh up`` runs, one module per concern.

==================  =====================================================================
``daemon``          :class:`Node`: binds, runs the loop, routes what arrives, stops
``ops``             the control operations: the op table, argument checks, one answer each
``replies``         every answer the node sends, and the requests that wait for one
``supervisor``      starts, reaps, restarts and stops the agents this node runs
``follower``        follows the leader's assignments (fencing, the lease); conducts when leading
``assignments``     reads the leaders' assignments from the shared state
``registry``        register, heartbeat, resolve; the directory of running agents
``pools``           pools and rate limits, served by the leader
``intentions``      intentions proposed through this node
``escalations``     intentions escalated to the leader, or to a person through it
``killswitch``      the kill switch
``shared``          the shared state and topic subscriptions, as clients reach them
``status``          what `mesh status` shows
``logs``            agents' log files
``instance``        what the node knows of one actor
``constants``       timings, limits, reserved keys, states
==================  =====================================================================
"""

from ...core.restart import describe_exit
from .constants import (AGENTS_PREFIX, ASSIGN_PREFIX, BUDGET_PREFIX, EMBEDDED_TTL_S, FENCE_GRACE_S, GOSSIP_DIGEST_BYTES,
                        HOUSEKEEPING_S, INTAKE_BURST, INTAKE_BURST_S, INTAKE_CONNECTION_BYTES, INTAKE_FRAMES_MAX, KILL_KEY,
                        LEASE_S, LOG_CHUNK, LOOP_S, PLACEMENT_STATES, REPLACE_AFTER_S, STATES, mesh_home)
from .daemon import Node
from .instance import Instance
from .logs import last_exception_line
from .ops import check_topic_field

__all__ = [
    "AGENTS_PREFIX", "ASSIGN_PREFIX", "BUDGET_PREFIX", "EMBEDDED_TTL_S", "FENCE_GRACE_S", "GOSSIP_DIGEST_BYTES",
    "HOUSEKEEPING_S", "INTAKE_BURST", "INTAKE_BURST_S", "INTAKE_CONNECTION_BYTES", "INTAKE_FRAMES_MAX", "KILL_KEY",
    "LEASE_S", "LOG_CHUNK", "LOOP_S", "PLACEMENT_STATES", "REPLACE_AFTER_S", "STATES", "Instance", "Node",
    "check_topic_field", "describe_exit", "last_exception_line", "mesh_home",
]
