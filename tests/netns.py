"""Hosts for multi-host tests: Linux network namespaces on a bridge, one IP each.

    with Hosts(3) as hosts:            # needs root; creates and always removes them
        proc = hosts[0].popen(["mesh", "up", ...])
        hosts.cut(2)                   # ip link set DEV down: host 2 is off the network
        hosts.restore(2)

Addresses are 10.231.X.(i+1)/24 with X chosen per process, so parallel runs do not
collide. Traffic only ever goes to these namespaces, which the test made itself.

Nothing is left behind: the namespaces and the bridge go when the ``with`` block ends,
when the process gets SIGTERM (a handler removes them, then the process ends as
SIGTERM would have ended it), and, for a run that was SIGKILLed, at the start of the
next run: :func:`sweep_stale` removes the leftovers of every run whose process is gone
(each run notes its pid and start time in ``$TMPDIR/mesh-netns/TAG``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import psutil

OWNERS = Path(tempfile.gettempdir()) / "mesh-netns"  # TAG -> "PID START_TIME" of the run that made it
_live: set["Hosts"] = set()
_swept = False
_previous_sigterm = None


def have_netns() -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, "multi-host tests need root (Linux network namespaces)"
    if subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0:
        return False, "`ip netns` is not available"
    return True, ""


def _ip(*args: str, ns: str | None = None) -> None:
    cmd = (["ip", "netns", "exec", ns, "ip"] if ns else ["ip"]) + list(args)
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {res.stderr.strip()}")


@dataclass
class Host:
    index: int
    ns: str
    veth: str  # the bridge side of the host's link
    ip: str
    procs: list = field(default_factory=list)

    def popen(self, cmd: list[str], **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns, *cmd], **kwargs)
        self.procs.append(proc)
        return proc

    def run(self, cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.ns, *cmd], **kwargs)


class Hosts:
    def __init__(self, count: int):
        tag = os.getpid() % 250 + 1
        for step in range(250):  # a tag another live run holds is not ours to tear down
            if not _owner_alive(str((os.getpid() + step) % 250 + 1)):
                tag = (os.getpid() + step) % 250 + 1
                break
        self.tag = str(tag)
        self.bridge = f"mbr{tag}"
        self.subnet = f"10.231.{tag}"
        self.hosts = [Host(i, f"mesh{tag}h{i}", f"mv{tag}h{i}", f"{self.subnet}.{i + 1}") for i in range(count)]

    def __enter__(self) -> "Hosts":
        global _swept
        if not _swept:
            _swept = True
            sweep_stale()
        _catch_sigterm()
        try:
            self._teardown()  # leftovers of a crashed earlier run with the same tag
            self._note_owner()
            _live.add(self)
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("link", "set", self.bridge, "up")
            for h in self.hosts:
                subprocess.run(["ip", "netns", "add", h.ns], check=True, capture_output=True)
                _ip("link", "add", h.veth, "type", "veth", "peer", "name", "eth0", "netns", h.ns)
                _ip("link", "set", h.veth, "master", self.bridge)
                _ip("link", "set", h.veth, "up")
                _ip("addr", "add", f"{h.ip}/24", "dev", "eth0", ns=h.ns)
                _ip("link", "set", "eth0", "up", ns=h.ns)
                _ip("link", "set", "lo", "up", ns=h.ns)
        except BaseException:
            self._teardown()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._teardown()

    def _note_owner(self) -> None:
        OWNERS.mkdir(parents=True, exist_ok=True)
        me = psutil.Process()
        (OWNERS / self.tag).write_text(f"{me.pid} {me.create_time()}\n")

    def __getitem__(self, i: int) -> Host:
        return self.hosts[i]

    def __len__(self) -> int:
        return len(self.hosts)

    def cut(self, i: int) -> None:
        _ip("link", "set", self.hosts[i].veth, "down")

    def restore(self, i: int) -> None:
        _ip("link", "set", self.hosts[i].veth, "up")

    def _teardown(self) -> None:
        _live.discard(self)
        for h in self.hosts:
            for p in h.procs:
                if p.poll() is None:
                    p.kill()
                    try:
                        p.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        pass
            # Anything still running inside the namespace goes too.
            pids = subprocess.run(["ip", "netns", "pids", h.ns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", h.ns], capture_output=True)
            subprocess.run(["ip", "link", "del", h.veth], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        try:
            (OWNERS / self.tag).unlink()
        except FileNotFoundError:
            pass


def _catch_sigterm() -> None:
    """On SIGTERM, remove every live Hosts first, then end as SIGTERM would have (once per process)."""
    global _previous_sigterm
    if _previous_sigterm is not None or threading.current_thread() is not threading.main_thread():
        return
    _previous_sigterm = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        for hosts in list(_live):
            hosts._teardown()
        previous = _previous_sigterm
        if callable(previous):
            previous(signum, frame)
            return
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous in (None, signal.SIG_DFL) else previous)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)


def _owner_alive(tag: str) -> bool | None:
    """Whether the run that made TAG's namespaces still runs; None if no run noted it."""
    try:
        pid, started = (OWNERS / tag).read_text().split()
        return psutil.Process(int(pid)).create_time() == float(started)
    except FileNotFoundError:
        return None
    except (ValueError, psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def sweep_stale() -> list[str]:
    """Remove the namespaces, links and bridges that runs which are gone left behind (SIGKILL).

    A tag whose run is noted and alive is left alone; one noted by no run (made before runs
    noted themselves) goes only when no process runs in any of its namespaces. Returns what
    was removed."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split("\n")
    namespaces = [line.split()[0] for line in listed if line.strip()]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout.split("\n")
    link_names = [m.group(1) for m in (re.match(r"\d+: ([^:@]+)", line) for line in links) if m]
    by_tag: dict[str, list[tuple[str, str]]] = {}
    for ns in namespaces:
        m = re.fullmatch(r"mesh(\d+)h\d+", ns)
        if m:
            by_tag.setdefault(m.group(1), []).append(("netns", ns))
    for link in link_names:
        m = re.fullmatch(r"mbr(\d+)|mv(\d+)h\d+", link)
        if m:
            by_tag.setdefault(m.group(1) or m.group(2), []).append(("link", link))
    removed = []
    for tag, things in sorted(by_tag.items()):
        alive = _owner_alive(tag)
        if alive:
            continue
        if alive is None:
            busy = any(subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.strip()
                       for kind, name in things if kind == "netns")
            if busy:
                continue
        for kind, name in sorted(things, key=lambda t: t[0] != "netns"):  # namespaces first: their veths go with them
            if kind == "netns":
                for pid in subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except (ProcessLookupError, ValueError):
                        pass
                subprocess.run(["ip", "netns", "del", name], capture_output=True)
            else:
                subprocess.run(["ip", "link", "del", name], capture_output=True)
            removed.append(name)
        try:
            (OWNERS / tag).unlink()
        except FileNotFoundError:
            pass
    return removed
