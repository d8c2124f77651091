"""Actors whose children try to escape their agent's process group (the spec's `path` points here)."""

from __future__ import annotations

import os
import time

import mesh


def _sleep(seconds: float | None) -> None:
    try:
        deadline = time.monotonic() + seconds if seconds else None
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        os._exit(0)


class Escaper(mesh.Actor):
    """Starts a process that leaves the agent's process group and answers its pid:

    {"how": "setsid"}: a child in a session of its own;
    {"how": "daemon"}: a classic daemon: a child that starts its own session and forks a
    grandchild, then exits, so the grandchild is orphaned (re-parented) at once.
    With "seconds": N the process exits after N seconds, else it sleeps forever.
    ``hang_on_stop``: on_stop sleeps far longer than any stop timeout or grace.
    """

    def __init__(self, hang_on_stop: bool = False):
        self.hang_on_stop = hang_on_stop

    def on_message(self, message):
        how = message.get("how")
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child touches nothing of the parent's (no ZeroMQ): it only forks, writes, sleeps
            try:
                os.close(r)
                os.setsid()
                if how == "daemon":
                    grandchild = os.fork()
                    if grandchild:
                        os.write(w, str(grandchild).encode())
                        os._exit(0)
                    os.setsid()
                else:
                    os.write(w, str(os.getpid()).encode())
                os.close(w)
                _sleep(message.get("seconds"))
            finally:
                os._exit(1)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            answer = int(f.read())
        if how == "daemon":
            os.waitpid(pid, 0)  # the middle process exits at once; its child is orphaned
        return answer

    def on_stop(self):
        if self.hang_on_stop:
            time.sleep(60)
