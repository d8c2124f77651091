"""mesh: an actor-model mesh runtime for multi-agent systems.

Every agent is an actor in its own OS process; processes talk over ZeroMQ with
msgpack frames. The public surface is small::

    import mesh

    class Echo(mesh.Actor):
        def on_message(self, message):
            return message

    if __name__ == "__main__":
        mesh.serve(Echo(), name="echo")             # run an actor in this process (until Ctrl-C)

    with mesh.connect() as client:                  # or talk to actors from any process
        print(client.actor("echo").ask({"hi": 1}))
"""

from typing import Any

from .actor import Actor
from .errors import (
    AcquireTimeout,
    ActorDied,
    ActorNotFound,
    AskTimeout,
    DeadlockDetected,
    Forbidden,
    MailboxFull,
    MeshError,
    NameConflict,
    NodeUnavailable,
    NotLeader,
    RemoteError,
    ReservedKey,
    ResourceError,
    SpecError,
    UnknownAlert,
    UnknownEscalation,
    WireError,
)
from .intentions import Decision, Intention, Objection
from .runtime.client import Client
from .runtime.context import ActorContext
from .runtime.ref import ActorRef
from .runtime.server import serve
from .runtime.serving_async import serve_async
from .topics import ALERT, COMPLETE, DISCOVERY, HELP, REQUEST, Event

__version__ = "0.1.0"


def connect(address: str | None = None, **options: Any) -> Client:
    """A client of the node at ``address`` (default ``$MESH_NODE`` or tcp://127.0.0.1:7700).

    ``options`` are :class:`Client`'s keyword arguments (it checks them).

    Raises NodeUnavailable when no node answers. Use it as a context manager, or
    call ``close()`` when done.
    """
    return Client(address, **options)


__all__ = [
    "ALERT",
    "COMPLETE",
    "DISCOVERY",
    "Event",
    "HELP",
    "REQUEST",
    "AcquireTimeout",
    "Actor",
    "ActorContext",
    "ActorDied",
    "ActorNotFound",
    "ActorRef",
    "AskTimeout",
    "Client",
    "DeadlockDetected",
    "Decision",
    "Forbidden",
    "Intention",
    "Objection",
    "MailboxFull",
    "MeshError",
    "NameConflict",
    "NodeUnavailable",
    "NotLeader",
    "RemoteError",
    "ReservedKey",
    "ResourceError",
    "SpecError",
    "UnknownAlert",
    "UnknownEscalation",
    "WireError",
    "connect",
    "serve",
    "serve_async",
]
