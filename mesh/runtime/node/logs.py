"""Agents' log files: what the node reads from them (a chunk for `mesh logs`, and the last
traceback, so the status says why an agent exited, not only how)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ...core.restart import describe_exit
from ...errors import ActorNotFound, WireError
from .constants import LOG_CHUNK


def read_log(supervisor: Any, body: dict) -> dict:
    """The ``logs`` op: a chunk of the log of one of ``supervisor``'s agents (its field ``name`` is
    checked by the op table)."""
    name = body["name"]
    inst = supervisor.instances.get(name)
    if inst is None:
        raise ActorNotFound(f"no actor named {name!r} on node {supervisor.name}")
    if inst.log_path is None:
        raise WireError(f"{name!r} is embedded in pid {inst.pid}: its output stays in that process")
    return read_chunk(inst.log_path, max(0, int(body.get("offset") or 0)), body.get("tail"))


def read_chunk(log_path: Path, offset: int, tail: Any) -> dict:
    """At most LOG_CHUNK bytes of a log from ``offset`` (or its last ``tail`` bytes when offset is 0),
    with the offset to ask for next and the size of the file."""
    try:
        with open(log_path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if tail is not None and offset == 0:
                offset = max(0, size - int(tail))
            f.seek(min(offset, size))
            data = f.read(LOG_CHUNK)
    except FileNotFoundError:
        return {"data": "", "offset": 0, "size": 0}
    return {"data": data.decode("utf-8", "replace"), "offset": offset + len(data), "size": size}


def with_last_error(reason: str, code: int, why: str | None, log_path: Path | None) -> str:
    """``exited with code 1`` becomes ``exited with code 1 (TypeError: ...)`` when the agent's log
    ends its last run with the traceback of what ended it (the status says why, not only how)."""
    head = describe_exit(code)
    if code != 1 or why or log_path is None or not reason.startswith(head):
        return reason
    last = last_exception_line(log_path)
    return f"{head} ({last}){reason[len(head):]}" if last else reason


def last_exception_line(log_path: Path, window: int = 64 * 1024) -> str | None:
    """The last line (``Type: message``) of the traceback that ended an agent's latest run, from
    the end of its log; None if that run did not end with one. A traceback a hook logged and
    survived (a log record that does not say the actor stops) does not count."""
    try:
        with open(log_path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - window))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    start = max((i for i, line in enumerate(lines) if line.startswith("--- ") and " starting " in line), default=-1)
    lines = lines[start + 1:]
    header = max((i for i, line in enumerate(lines) if line == "Traceback (most recent call last):"), default=None)
    if header is None:
        return None
    before = lines[header - 1] if header > 0 else ""
    if " ERROR " in before and not before.endswith("the actor stops"):
        return None  # logged by a hook that went on (on_intention, on_stop): not what ended the run
    for line in lines[header + 1:]:
        if line and not line[0].isspace():
            return line[:300]
    return None
