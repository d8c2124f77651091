"""Containment: nothing an agent starts outlives it, not even what leaves its process group.

An agent runs in a process group of its own, so one ``killpg`` ends what it forks. A
descendant that calls ``setsid()`` (or ``setpgid``) leaves that group, and one that
also double-forks (the classic daemon) used to be re-parented to init as soon as its
parent exited: out of reach of the node and of the agent. Three pieces close that:

* Every agent process is a *child subreaper* (``PR_SET_CHILD_SUBREAPER``): a
  descendant whose parent exits is re-parented to the agent, not to init. So while an
  agent lives, its process tree (read from ``/proc/PID/task/TID/children``) holds
  everything it started, whatever session or group they moved to (see the price of
  that at the end).
* The node is a child subreaper too: when an agent dies, what it started is
  re-parented to the node. A node run by ``mesh up`` starts no process but its
  agents, so every other child of the node is such an orphan, and :func:`sweep_orphans` kills and
  reaps it (whenever a child of the node exited, and at least every ``SWEEP_S``).
* When the node is gone (SIGKILLed: nobody runs its clean-up), each agent notices
  (PDEATHSIG and its parent watch), stops, and ends its whole tree before it exits
  (:func:`end_own_tree`).

What this does not cover: a descendant that makes itself a subreaper keeps what
*its* descendants orphan, and if it is killed while its agent and the node are both
gone, those go to init; a process started through another service (``ssh
localhost``, ``systemd-run``, ``at``, a container daemon) is not a descendant at
all; if the agent and the node die at the same instant (``kill -9`` of both), the
agent's descendants go to init. Each tree walk reads a moment of a changing tree,
so the killers repeat until a walk finds nothing alive (a bounded number of times).
cgroups are not used (containment works unprivileged, on every Linux machine).
Outside Linux, agents fall back to their process group.

The price of being a subreaper: an adopted process that ends while its agent runs stays a
zombie (a pid, no memory to speak of) until the agent exits, when the kernel reaps it. The
agent does not reap it itself: it cannot tell an adopted pid from a child its own code
(``subprocess``, ``multiprocessing``) will wait for, and stealing that one's exit status
would be worse.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
MAX_TREE = 100_000  #: processes a tree walk visits at most
KILL_ROUNDS = 20  #: walks a killer makes at most, each killing what the previous one missed


_subreaper_of: int | None = None  # the pid that made itself a subreaper (a fork must do it again)


def _find_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


#: libc's prctl, found once at import: a forked agent calls the zygote's (making its own would
#: build a ctypes library and function class, writing to some 30 pages it shares with the zygote).
_PRCTL = _find_prctl()


def prctl(option: int, arg: int) -> int:
    """``prctl(option, arg, 0, 0, 0)``: 0 when done; -1 when refused or where there is no prctl."""
    if _PRCTL is None:
        return -1
    try:
        return int(_PRCTL(option, arg, 0, 0, 0))
    except Exception:  # noqa: BLE001 - a ctypes call that cannot be made is a refusal
        return -1


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (once). False where impossible."""
    global _subreaper_of
    if _subreaper_of == os.getpid():
        return True
    if prctl(PR_SET_CHILD_SUBREAPER, 1) != 0:  # no libc prctl: the process group is all there is
        return False
    _subreaper_of = os.getpid()
    return True


def kill_group(pgid: int) -> None:
    """SIGKILL process group ``pgid`` (nothing if it is gone)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def a_child_exited() -> bool:
    """Whether any child of this process has exited and waits to be reaped (none is reaped here)."""
    try:
        return os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # no child at all
        return False


def has_exited(pid: int | None) -> bool:
    """Whether child ``pid`` has exited (or is not a child: reaped already); it is not reaped here.
    False for None (a fork whose pid is not known yet)."""
    if pid is None:
        return False
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def children(pid: int) -> list[int]:
    """The children of ``pid`` now (of all its threads); [] if it is gone."""
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            continue
    return out


def descendants(pid: int) -> list[int]:
    """Every descendant of ``pid`` now, parents before their children (bounded by MAX_TREE)."""
    found: list[int] = []
    seen = {pid}
    frontier = [pid]
    while frontier and len(found) < MAX_TREE:
        for child in children(frontier.pop()):
            if child not in seen:
                seen.add(child)
                found.append(child)
                frontier.append(child)
    return found


def stat(pid: int) -> tuple[str, int] | None:
    """``(state, ppid)`` of ``pid`` from /proc (state "Z" is a zombie), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rfind(b")") + 2:].split()  # the command name may hold spaces and parentheses
    try:
        return fields[0].decode(), int(fields[1])
    except (IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    s = stat(pid)
    return s is not None and s[0] not in ("Z", "X")


def kill_descendants(pid: int) -> int:
    """SIGKILL every descendant of ``pid``, again until a walk finds none alive; returns how many
    were signalled. (Whatever a dying process forked is re-parented to the nearest subreaper,
    ``pid`` itself if it is one, and the next walk finds it.)"""
    killed: set[int] = set()
    for _ in range(KILL_ROUNDS):
        alive = [p for p in descendants(pid) if _alive(p)]
        if not alive:
            break
        for p in alive:
            try:
                os.kill(p, signal.SIGKILL)
                killed.add(p)
            except (ProcessLookupError, PermissionError):
                pass
    return len(killed)


def end_own_tree() -> None:
    """Kill every descendant of this process, then its process group (this process with it)."""
    try:
        kill_descendants(os.getpid())
    finally:
        try:
            os.killpg(os.getpgrp(), signal.SIGKILL)
        except OSError:
            os._exit(1)


def sweep_orphans(keep: set[int]) -> list[int]:
    """The node's side: SIGKILL every child of this process not in ``keep`` (its agents), with
    its descendants, and reap the ones that ended. Returns the pids signalled.

    The node is a subreaper, so what an agent leaves behind when it dies becomes a child of
    the node; the node starts no other process."""
    me = os.getpid()
    signalled: list[int] = []
    for _ in range(KILL_ROUNDS):
        strays = [c for c in children(me) if c not in keep]
        if not strays:
            break
        progress = False
        for pid in strays:
            s = stat(pid)
            if s is None:
                continue
            if s[0] not in ("Z", "X"):
                kill_descendants(pid)  # it may be a subreaper of its own: its tree first
                try:
                    os.kill(pid, signal.SIGKILL)
                    signalled.append(pid)
                except (ProcessLookupError, PermissionError):
                    continue
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    progress = True
            except ChildProcessError:
                progress = True
        if not progress:
            break  # the rest are still dying: the next sweep reaps them
    return signalled


# -- in the node's session ----------------------------------------------------------------------
# An agent runs in its node's session, in a process group of its own (so that the kernel's
# autogroup weighs it with its node: README, "Agents' priority"). Two things a session of its own
# gave it for free are made here, first thing in the agent.


def leave_terminal() -> None:
    """Give up the controlling terminal of the node's session, if it has one (``mesh up`` in a
    terminal): reading ``/dev/tty`` (a password prompt, say) then fails at once, as it did in a
    session of its own, instead of stopping the agent (SIGTTIN) for good. Its forks inherit it."""
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:  # no controlling terminal: nothing to leave
        return
    try:
        import fcntl
        import termios

        fcntl.ioctl(fd, termios.TIOCNOTTY)  # not a session leader: only this process lets go
    except (OSError, ImportError, AttributeError):
        pass
    finally:
        os.close(fd)


def _hung_up(signum: int, frame: object) -> None:
    """SIGHUP: nothing to do now; the parent watch sees the node gone and stops the agent."""


def survive_hangup() -> None:
    """When the node dies, its agents' process groups are orphaned, and the kernel sends SIGHUP
    then SIGCONT to a group that has a stopped process in it (the budget's throttle stops them).
    SIGHUP would end the agent at once, before its graceful stop and before it ends its own tree
    (a child in a session of its own would stay stopped); a handler (not SIG_IGN, which programs
    it runs would inherit) lets the parent watch stop it as for any death of its node."""
    signal.signal(signal.SIGHUP, _hung_up)


__all__ = ["PR_SET_PDEATHSIG", "prctl", "become_subreaper", "children", "descendants", "kill_descendants",
           "end_own_tree", "sweep_orphans", "leave_terminal", "survive_hangup"]
