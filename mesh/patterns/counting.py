"""The patterns count the tasks they complete for the playbook's throughput (``task_done``)."""

from __future__ import annotations


def count_done(mesh: object, n: int) -> None:
    """Tell ``mesh`` (a Client or an actor's ``self.mesh``) that ``n`` tasks completed; a handle
    without ``task_done`` (a test double, an older one) is left alone."""
    done = getattr(mesh, "task_done", None)
    if n > 0 and callable(done):
        done(n)
