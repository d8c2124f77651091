"""Page merging: the kernel may keep one copy of the memory pages a node's agents hold alike.

A forked agent shares the zygote's pages until it writes to one; CPython writes to every object
it touches (reference counts, the warm-up counters of code it runs), so each agent soon holds a
private copy of some thousand pages, most of them byte for byte the same in every agent
(README, "Memory per agent"). Linux's Kernel Samepage Merging (KSM) finds such pages in the
memory a process marked mergeable and keeps one copy of each, copied again only when written.

``[node] merge_pages = true`` marks the memory of the node's zygote (its forks inherit the mark)
and of every agent mergeable (:func:`mark_mergeable`). The kernel merges only while KSM runs,
a machine-wide setting left to the machine's owner (``/sys/kernel/mm/ksm/run``; off by default
on most distributions): :func:`kernel_merging` says which, and the node warns at start when its
agents asked for merging the kernel will not do. It is off by default: merged pages let one
process learn, by timing its writes, whether another holds a page of the same content, so
leave it off where agents must not learn about each other.
"""

from __future__ import annotations

import mmap
import os
import sys

from .containment import prctl

#: prctl(2) options (Linux 6.4): mark every present and future mapping of the process mergeable,
#: inherited by its forks; and read that mark.
PR_SET_MEMORY_MERGE = 67
PR_GET_MEMORY_MERGE = 68
#: madvise(2) advice (Linux 2.6.32), for older kernels: one mapping at a time.
MADV_MERGEABLE = getattr(mmap, "MADV_MERGEABLE", 12)

KSM_RUN = "/sys/kernel/mm/ksm/run"

_marked = False  # the whole process is (prctl): nothing more to do


def kernel_merging(path: str = KSM_RUN) -> str:
    """``"on"`` if the kernel merges pages now, ``"off"`` if it could but does not, ``"absent"``
    if it has no page merging (or this is not Linux)."""
    try:
        with open(path) as f:
            run = f.read().strip()
    except OSError:
        return "absent"
    return "on" if run == "1" else "off"


def kernel_warning(path: str = KSM_RUN) -> str | None:
    """What a node whose spec says ``merge_pages = true`` tells its user at start; None if the
    kernel merges pages now."""
    state = kernel_merging(path)
    if state == "on":
        return None
    if state == "off":
        return (f"merge_pages: the kernel does not merge pages now ({path} is 0): agents' memory is marked"
                f" mergeable, and merged once the machine's owner runs `echo 1 > {path}` (see README, Memory per agent)")
    return "merge_pages: this kernel has no page merging (KSM): agents keep their copies"


def mark_mergeable() -> str | None:
    """Mark this process's memory mergeable; None when done, else why not.

    Linux 6.4 and later: one ``prctl`` for every mapping, present and future, inherited by forks.
    Older kernels: ``madvise(MADV_MERGEABLE)`` on each private writable mapping present now (the
    interpreter's heap and arenas: what forks copy); call it again before forking to cover
    mappings made since."""
    global _marked
    if _marked:
        return None
    if prctl(PR_SET_MEMORY_MERGE, 1) == 0:
        _marked = True
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
    except (OSError, AttributeError):
        return "no C library to ask the kernel with"
    return _advise_each(libc)


def mark_if_asked() -> None:
    """Mark this process's memory mergeable if its node says ``merge_pages`` (``MESH_MERGE_PAGES``);
    a kernel that cannot is said on stderr (the zygote's or the agent's log), never fatal."""
    if os.environ.get("MESH_MERGE_PAGES") == "1":
        problem = mark_mergeable()
        if problem is not None:
            print(f"merge_pages: {problem}", file=sys.stderr, flush=True)


def _advise_each(libc: object) -> str | None:
    import ctypes

    madvise = libc.madvise  # type: ignore[attr-defined]
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    failed = None
    try:
        with open("/proc/self/maps") as f:
            lines = f.readlines()
    except OSError as exc:
        return f"cannot read /proc/self/maps: {exc}"
    for line in lines:
        fields = line.split()
        if len(fields) < 5 or fields[1][:2] != "rw" or fields[1][3] != "p" or fields[4] != "0":
            continue  # not private writable anonymous memory (the heap, the arenas, thread stacks)
        if len(fields) > 5 and fields[5] in ("[stack]", "[vvar]", "[vsyscall]"):
            continue
        start, _, end = fields[0].partition("-")
        begin = int(start, 16)
        if madvise(begin, int(end, 16) - begin, MADV_MERGEABLE) != 0:
            failed = os.strerror(ctypes.get_errno())
    if failed is not None:
        return f"the kernel does not merge pages ({failed})"
    return None


def is_marked(pid: int) -> bool:
    """Whether process ``pid``'s memory is marked mergeable (any of its mappings)."""
    try:
        with open(f"/proc/{pid}/smaps") as f:
            return any(line.startswith("VmFlags:") and " mg" in line for line in f)
    except OSError:
        return False


__all__ = ["kernel_merging", "kernel_warning", "mark_mergeable", "mark_if_asked", "is_marked", "KSM_RUN"]
