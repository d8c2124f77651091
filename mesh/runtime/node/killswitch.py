"""The kill switch: a person stops every agent of the mesh at once (`mesh kill`), and lets them
run again (`mesh kill --release`).

Pulling or releasing writes KILL_KEY in the shared state, so it spreads with gossip; every node
obeys each new entry once (by its id). Pulled: the node SIGKILLs its agents' process groups
at once, without grace, and starts nothing while it stays pulled. Released: the agents the
leader placed here start again from its assignment.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

from ..clock import REAL_CLOCK, Clock
from ..gossiper import Directory
from .constants import KILL_KEY

if TYPE_CHECKING:
    from .supervisor import Supervisor


def pulled_kill_switch(directory: Directory) -> dict | None:
    """The kill switch entry if it is pulled now, else None."""
    entry = directory.get(KILL_KEY)
    return entry if isinstance(entry, dict) and entry.get("pulled") is True else None


def clock(at: object) -> str:
    """A wall-clock time from the network as HH:MM:SS, or ``?``."""
    try:
        return time.strftime("%H:%M:%S", time.localtime(at)) if isinstance(at, (int, float)) else "?"
    except (OverflowError, ValueError, OSError):  # a time from the network: 1e300, nan
        return "?"


class KillSwitch:
    def __init__(self, name: str, directory: Directory, supervisor: Supervisor, on_event: Callable[[str], None], *,
                 clock: Clock = REAL_CLOCK):
        self._name = name
        self._clock = clock
        self._directory = directory
        self._supervisor = supervisor
        self._on_event = on_event
        self._seen: str | None = None  # the id of the last kill switch entry this node obeyed

    def pulled(self) -> dict | None:
        return pulled_kill_switch(self._directory)

    def op_kill(self, body: dict) -> dict:
        """Pull (or, with release, let go of) the kill switch: every node stops every agent now."""
        release = bool(body.get("release"))
        by = str(body.get("by") or "mesh kill")[:200]
        # The id is the system's nanoseconds, not the clock's: a pull and its release in the same
        # instant of a clock held still are still two entries to obey.
        entry = {"pulled": not release, "at": self._clock.time(), "by": f"{by} via node {self._name}",
                 "id": f"{self._name}-{time.time_ns()}"}
        self._directory.write(KILL_KEY, entry, system=True)
        self.obey()
        return {"pulled": entry["pulled"], "at": entry["at"], "by": entry["by"]}

    def obey(self) -> None:
        """Act on a kill switch entry not obeyed yet."""
        entry = self._directory.get(KILL_KEY)
        if not isinstance(entry, dict) or entry.get("id") == self._seen:
            return
        self._seen = entry.get("id")
        if entry.get("pulled") is True:
            self._on_event(f"KILL SWITCH pulled by {entry.get('by')}: stopping every agent now")
            self._supervisor.kill_all(f"kill switch pulled by {entry.get('by')}")
        else:
            self._on_event(f"kill switch released by {entry.get('by')}: agents may run again")
            self._supervisor.forget_stopped_placements()  # the leader's assignment places them again
