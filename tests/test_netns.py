"""The namespace hosts of the multi-host tests leave nothing behind: not on SIGTERM, and what a
SIGKILLed run left is removed by the next run (tests/netns.py)."""

from __future__ import annotations

import signal
import subprocess
import sys

import psutil
import pytest

from conftest import TESTS, wait_until
from netns import have_netns, sweep_stale

ok, why = have_netns()
pytestmark = [pytest.mark.skipif(not ok, reason=why), pytest.mark.timeout(120)]

HOLDER = f"""
import sys, time
sys.path.insert(0, {str(TESTS)!r})
from netns import Hosts
with Hosts(2) as hosts:
    sleeper = hosts[1].popen(["sleep", "300"])
    print(hosts.bridge, sleeper.pid, *[h.ns for h in hosts.hosts], *[h.veth for h in hosts.hosts], flush=True)
    time.sleep(300)
"""


def hold_hosts():
    """A process that made two namespace hosts (one running a process) and waits; and their names."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline().split()
    assert line, proc.stderr.read()
    bridge, sleeper, *names = line
    assert exists(bridge) and all(exists(n) for n in names)
    return proc, bridge, int(sleeper), names


def exists(name: str) -> bool:
    if name.startswith("mesh"):
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
        return name in listed
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_run_ended_by_sigterm_removes_its_namespaces_bridge_and_processes():
    proc, bridge, sleeper, names = hold_hosts()

    proc.send_signal(signal.SIGTERM)

    assert proc.wait(timeout=60) == -signal.SIGTERM  # it still ends as SIGTERM ends it
    assert not exists(bridge)
    assert [n for n in names if exists(n)] == []
    wait_until(lambda: gone(sleeper), 10, "the process in the namespace to be gone")


def test_what_a_sigkilled_run_left_is_removed_at_the_start_of_the_next_run():
    proc, bridge, sleeper, names = hold_hosts()
    proc.kill()
    proc.wait(timeout=30)
    assert exists(bridge) and not gone(sleeper)  # a SIGKILL leaves everything behind

    removed = sweep_stale()

    assert bridge in removed and set(n for n in names if n.startswith("mesh")) <= set(removed)
    assert not exists(bridge)
    assert [n for n in names if exists(n)] == []
    wait_until(lambda: gone(sleeper), 10, "the process in the namespace to be gone")
