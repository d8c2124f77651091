"""A person stops or restarts one agent: ``Client.stop_agent`` and ``Client.restart_agent``
(``mesh stop``, ``mesh restart``).

The request goes to the client's node, which acts if it runs the agent and otherwise says
which node does; the request then goes there (:func:`mesh.runtime.rpc.agent_stop`). With
``wait`` the call returns once the node that runs the agent shows it stopped, or running in a
fresh process, asking that node every 50 ms. How a stop holds against restart policies and the
leader's placement: :mod:`mesh.runtime.node.agent_ops`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from ..errors import AskTimeout
from . import rpc

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client

#: Seconds between looks at an agent that is stopping or restarting.
POLL_S = 0.05


def stop_agent(client: "Client", name: str, *, grace: float | None = None, wait: bool = True, timeout: float = 30.0,
               by: str | None = None) -> rpc.AgentInfo:
    """Stop agent ``name`` on whichever node runs it (``mesh stop NAME``): SIGTERM (its ``on_stop``
    runs), then SIGKILL after ``grace`` seconds (default: its stop timeout). It stays stopped,
    whatever its restart policy, and the leader does not place it again, until
    :meth:`restart_agent` (or its node restarts). ``wait``: return once it has stopped (AskTimeout
    after ``timeout`` s), else at once. Returns the agent (``name``, ``node``, ``state``, ``pid``,
    ``incarnation``, ``reason``). A replica group's name is refused (WireError naming the
    replicas: stop them one by one); an unknown name raises ActorNotFound."""
    address, info = rpc.agent_stop(client, name, by or client.name, grace)
    if not wait:
        return info
    return _wait(client, address, name, timeout, lambda now: now["state"] in ("stopped", "failed"), "stop")


def restart_agent(client: "Client", name: str, *, grace: float | None = None, wait: bool = True,
                  timeout: float = 30.0, by: str | None = None) -> rpc.AgentInfo:
    """Start a fresh process of agent ``name`` now, on whichever node runs it (``mesh restart
    NAME``): a running one is stopped first (as :meth:`stop_agent`), a stopped or failed one
    starts at once, its restart policy's count cleared; the new process is the next incarnation.
    ``wait``: return once the new process runs (registered), else at once. Refused while the
    kill switch is pulled. Names as for :meth:`stop_agent`."""
    address, before = rpc.agent_restart(client, name, by or client.name, grace)
    if not wait:
        return before

    def fresh(now: rpc.AgentInfo) -> bool:
        return now["state"] == "running" and (now["pid"] != before["pid"] or before["state"] != "running")

    return _wait(client, address, name, timeout, fresh, "restart")


def _wait(client: "Client", address: str, name: str, timeout: float, done: Callable[[rpc.AgentInfo], bool],
          what: str) -> rpc.AgentInfo:
    deadline = client.clock.monotonic() + timeout
    while True:
        info = rpc.agent_info(client, address, name)
        if done(info):
            return info
        if info["state"] == "failed" and what == "restart":
            return info  # it started and failed already: the answer says why
        if client.clock.monotonic() >= deadline:
            raise AskTimeout(f"agent {name!r} did not {what} within {timeout:g} s: it is {info['state']}"
                             f"{' (' + info['reason'] + ')' if info['reason'] else ''}")
        client.clock.sleep(POLL_S)
