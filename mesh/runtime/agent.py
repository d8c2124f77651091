"""Entry point of an agent process started by a node: ``python -m mesh.runtime.agent``.

The node passes everything in environment variables (MESH_NODE, MESH_AGENT_*).
The process then runs the public ``mesh.serve``, like any embedding script.

Before any user code runs, the process makes itself the subreaper of its descendants
(:mod:`mesh.runtime.containment`): whatever it starts stays in its process tree, even in a
session of its own, and dies with it. It also gives up the terminal of its node's session and
survives the SIGHUP its orphaned group gets when its node dies (see ``leave_terminal`` and
``survive_hangup`` there).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from .containment import become_subreaper, end_own_tree, kill_descendants, leave_terminal, survive_hangup
from .pagemerge import mark_if_asked


def load_class(target: str, path: list[str]) -> Callable[..., Any]:
    """The class ``target`` names (``module:Class``, or any callable that makes the actor)."""
    for folder in reversed(path):
        if folder and folder not in sys.path:
            sys.path.insert(0, folder)
    module_name, _, attr = target.partition(":")
    obj: object = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{target} names no class: {type(obj).__name__!r} object is not callable")
    return obj


#: The name of the root logger's handler a zygote made for the agents it forks (prepare_logging).
HANDLER_NAME = "mesh-agent"
#: The root logger's level as the zygote set it (None: not set, or not a zygote).
_prepared_level: int | None = None


def prepare_logging() -> None:
    """In a zygote, before it forks agents: the root logger's handler (stderr; the zygote's own lines
    say "zygote") and level (``MESH_LOG_LEVEL``), which each agent then only names after itself.
    Done in each agent, setting the level alone touches every logger the zygote made, and an agent
    copies the pages it touches (see the README, "Memory per agent")."""
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s zygote %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    global _prepared_level
    try:
        root.setLevel(_log_level())
    except ValueError:  # each agent says so as it starts (configure_logging), as a spawned one does
        return
    _prepared_level = root.level


def configure_logging(name: str) -> None:
    """An agent's log: stderr (its node writes it to the agent's log file), at ``MESH_LOG_LEVEL``
    (default INFO; a name, in any case), each line naming the agent. A forked agent takes what its
    zygote prepared and names itself; a spawned one calls ``logging.basicConfig``, before any
    module of its own is imported. Either way a module that sets up logging as it is imported
    finds the root logger set up (``basicConfig`` there does nothing), and a level it sets stays.
    An unknown level is an error (ValueError) before any of the agent's code runs."""
    level = _log_level()
    fmt = f"%(asctime)s %(levelname)s {name} %(name)s: %(message)s"
    root = logging.getLogger()
    handler = next((h for h in root.handlers if h.get_name() == HANDLER_NAME), None)
    if handler is None:
        logging.basicConfig(level=level, stream=sys.stderr, format=fmt)
        return
    handler.setFormatter(logging.Formatter(fmt))
    # A level a preloaded module set as it was imported stays, as it does in a spawned agent (which
    # imports the module after this).
    if _prepared_level is None or (root.level == _prepared_level and logging.getLevelName(root.level) != level):
        root.setLevel(level)


def _log_level() -> str:
    return os.environ.get("MESH_LOG_LEVEL", "INFO").upper()


def main() -> None:
    name = os.environ["MESH_AGENT_NAME"]
    become_subreaper()
    leave_terminal()
    survive_hangup()
    mark_if_asked()  # merge_pages (a forked agent has the zygote's mark already)
    configure_logging(name)
    from .nodelink import confirm_first_lease

    confirm_first_lease(name, os.environ["MESH_NODE"])  # a slow start past its deadline runs nothing
    cls = load_class(os.environ["MESH_AGENT_CLASS"], os.environ.get("MESH_AGENT_PATH", "").split(os.pathsep))
    config = json.loads(os.environ.get("MESH_AGENT_CONFIG") or "{}")
    actor = cls(**config)

    from mesh import serve

    parent = os.getppid()
    try:
        serve(
            actor,
            name=name,
            node=os.environ["MESH_NODE"],
            mailbox=int(os.environ.get("MESH_AGENT_MAILBOX", "1000")),
            mailbox_bytes=int(os.environ.get("MESH_AGENT_MAILBOX_BYTES", str(32 * 1024 * 1024))),
            max_frame_bytes=int(os.environ.get("MESH_MAX_FRAME", str(4 * 1024 * 1024))),
            supervised=True,
        )
    finally:
        if os.getppid() != parent:
            # The node is gone, so nobody else will end what this agent started: do what the
            # node does when an agent exits, and kill its whole tree (sessions of their own
            # included), then its process group.
            logging.getLogger("mesh.agent").warning("%s: the node is gone; ending everything this agent started", name)
            sys.stdout.flush()
            sys.stderr.flush()
            if os.getpgrp() == os.getpid():
                end_own_tree()
            kill_descendants(os.getpid())


if __name__ == "__main__":
    main()
