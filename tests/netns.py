"""Hosts for multi-host tests: Linux network namespaces on a bridge, one IP each.

    with Hosts(3) as hosts:            # needs root; creates and always removes them
        proc = hosts[0].popen(["mesh", "up", ...])
        hosts.cut(2)                   # ip link set DEV down: host 2 is off the network
        hosts.restore(2)

Addresses are 10.231.X.(i+1)/24 with X chosen per process, so parallel runs do not
collide. Traffic only ever goes to these namespaces, which the test made itself.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field


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
        self.bridge = f"mbr{tag}"
        self.subnet = f"10.231.{tag}"
        self.hosts = [Host(i, f"mesh{tag}h{i}", f"mv{tag}h{i}", f"{self.subnet}.{i + 1}") for i in range(count)]

    def __enter__(self) -> "Hosts":
        try:
            self._teardown()  # leftovers of a crashed earlier run with the same tag
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

    def __getitem__(self, i: int) -> Host:
        return self.hosts[i]

    def __len__(self) -> int:
        return len(self.hosts)

    def cut(self, i: int) -> None:
        _ip("link", "set", self.hosts[i].veth, "down")

    def restore(self, i: int) -> None:
        _ip("link", "set", self.hosts[i].veth, "up")

    def _teardown(self) -> None:
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
