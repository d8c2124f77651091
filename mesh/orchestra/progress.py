"""The live view of a run (``mesh run``): one plain line per step (sections, parts asked and on
which node, restarts, kills, outcomes); on a terminal, also a progress bar redrawn under them
with the parts running now."""

from __future__ import annotations

import threading
from typing import TextIO

from .conductor import Progress

BAR_WIDTH = 24


class LiveView:
    """``on_progress`` for a :class:`~mesh.orchestra.Conductor`, writing to ``stream``."""

    def __init__(self, stream: TextIO, bar: bool | None = None) -> None:
        self.stream = stream
        self.bar = stream.isatty() if bar is None else bar
        self._running: dict[str, str] = {}  # agent -> where, while its part runs
        self._lock = threading.Lock()  # parts of a parallel section report from their own threads
        self._drawn = False

    def __call__(self, progress: Progress) -> None:
        with self._lock:
            line = self._line(progress)
            if self.bar and self._drawn:
                self.stream.write("\r\033[K")
                self._drawn = False
            if line:
                self.stream.write(line + "\n")
            if self.bar and progress.kind != "done":
                self.stream.write(self._bar(progress))
                self._drawn = True
            self.stream.flush()

    def _line(self, p: Progress) -> str | None:
        o = p.outcome
        if p.kind == "run":
            return f"orchestra: {p.total} parts"
        if p.kind == "section":
            return f"[{p.section}] begins"
        if p.kind == "done":
            return None
        if p.kind == "conflict":
            assert p.conflict is not None
            return f"[{p.section or '-'}] conflict: {p.conflict.line()}, by the {p.conflict.by}"
        assert o is not None
        where = f" on {o.node}" if o.node else ""
        if p.kind == "start":
            self._running[o.agent] = o.node or "?"
            again = f" (attempt {o.attempts})" if o.attempts > 1 else ""
            return f"[{o.section}] {o.agent}{where}: asked{again}"
        if p.kind in ("restart", "kill"):
            return f"[{o.section}] {o.agent}: {o.notes[-1] if o.notes else p.kind}"
        if p.kind == "stopped":
            return f"[{o.section}] STOPPING the orchestra: {o.agent}: {o.error}"
        self._running.pop(o.agent, None)
        why = f": {o.error}" if o.error and o.status != "ok" else ""
        return f"[{o.section}] {o.agent}{where}: {o.status} in {o.elapsed:.1f} s{why}  ({p.done}/{p.total})"

    def _bar(self, p: Progress) -> str:
        filled = BAR_WIDTH * p.done // p.total if p.total else BAR_WIDTH
        running = ", ".join(f"{agent}@{node}" for agent, node in sorted(self._running.items()))
        return f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {p.done}/{p.total}" + (f"  running: {running}" if running else "")
