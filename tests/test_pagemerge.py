"""Page merging (``[node] merge_pages = true``): the zygote's and agents' memory is marked mergeable,
and where the kernel's page merging (KSM) runs, the pages forked agents hold alike are kept once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import wait_until
from mesh.runtime.pagemerge import KSM_RUN, is_marked, kernel_merging, kernel_warning
from test_zygote import echoes, zygotes_of

pytestmark = pytest.mark.timeout(120)

KSM = Path(KSM_RUN).parent
needs_ksm = pytest.mark.skipif(not KSM.exists(), reason="this kernel has no page merging (KSM)")


def test_the_kernels_state_is_read_from_its_run_file(tmp_path):
    run = tmp_path / "run"
    run.write_text("1\n")
    assert kernel_merging(str(run)) == "on" and kernel_warning(str(run)) is None
    run.write_text("0\n")
    assert kernel_merging(str(run)) == "off"
    assert f"{run} is 0" in str(kernel_warning(str(run))) and f"echo 1 > {run}" in str(kernel_warning(str(run)))
    run.write_text("2\n")  # 2: the kernel unmerges everything and stops
    assert kernel_merging(str(run)) == "off"
    assert kernel_merging(str(tmp_path / "none")) == "absent"
    assert "no page merging" in str(kernel_warning(str(tmp_path / "none")))


MARK = """
import sys
from mesh.runtime import pagemerge
{how}
print(pagemerge.is_marked(__import__("os").getpid()), flush=True)
"""


@needs_ksm
@pytest.mark.parametrize("how", ["assert pagemerge.mark_mergeable() is None",  # prctl: Linux 6.4+
                                 "import ctypes; assert pagemerge._advise_each(ctypes.CDLL(None, use_errno=True)) is None"],
                         ids=["prctl", "madvise"])
def test_a_process_marks_its_memory_mergeable(how):
    """Both ways: one prctl for the whole process (inherited by forks), or madvise on each private
    writable mapping (older kernels)."""
    out = subprocess.run([sys.executable, "-c", MARK.format(how=how)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"
    plain = subprocess.run([sys.executable, "-c", MARK.format(how="")], capture_output=True, text=True, timeout=60)
    assert plain.stdout.strip() == "False", plain.stderr  # nothing is marked unless asked


@needs_ksm
def test_merge_pages_marks_the_zygote_and_every_agent_forked_or_spawned(start_node):
    node = start_node(echoes("forked") + echoes("fresh", extra='start = "spawn"'), node_extra="merge_pages = true")
    for name in ("forked", "fresh"):
        assert is_marked(node.agent(name)["pid"]), name
    [zygote] = zygotes_of(node)
    assert is_marked(zygote)
    state = kernel_merging()
    if state != "on":  # the node says that its agents asked for merging the kernel does not do now
        wait_until(lambda: "merge_pages: the kernel does not merge pages now" in node.log(), 10, "the warning")

    plain = start_node(echoes("forked2") + echoes("fresh2", extra='start = "spawn"'), name="plain")
    for name in ("forked2", "fresh2"):
        assert not is_marked(plain.agent(name)["pid"]), name
    assert not is_marked(zygotes_of(plain)[0])
    assert "merge_pages:" not in plain.log()


def _ksm_stat(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/ksm_stat") as f:
        return dict(line.replace(":", " ").split(None, 1) for line in f if line.strip())


@pytest.fixture
def ksm_running():
    """The kernel's page merging on, fast, for the test; what it merged unmerged and the machine's
    settings put back after."""
    keys = ("run", "pages_to_scan", "sleep_millisecs")
    try:
        saved = {k: (KSM / k).read_text().strip() for k in keys}
        (KSM / "pages_to_scan").write_text("1000")  # a full scan of a few agents in a moment; little CPU
        (KSM / "sleep_millisecs").write_text("20")
        (KSM / "run").write_text("1")
    except OSError as exc:
        pytest.skip(f"cannot run the kernel's page merging here: {exc}")
    try:
        yield
    finally:
        if saved["run"] != "1":  # it did not merge: unmerge what the test merged (2), then stop it (0)
            (KSM / "run").write_text("2")
        for k in keys:
            (KSM / k).write_text(saved[k])


@needs_ksm
@pytest.mark.skipif(not os.path.exists("/proc/self/ksm_stat"), reason="no /proc/PID/ksm_stat (Linux < 6.1)")
def test_forked_agents_pages_merge_where_the_kernel_merges(start_node, ksm_running):
    """What it is for: pages the agents copied from the zygote alike (reference counts, code they
    ran) are kept once. A node without merge_pages keeps its agents' copies."""
    agents = "".join(f'[[agents]]\nname = "m{i}"\nclass = "actors:WhoAmI"\nplacement = "local"\npreload = true\n'
                     for i in range(3))
    node = start_node(agents, node_extra='merge_pages = true\nstart = "fork"')
    plain = start_node(agents.replace('"m', '"p'), name="plain", node_extra='start = "fork"')
    pids = [node.agent(f"m{i}")["pid"] for i in range(3)]
    wait_until(lambda: all(int(_ksm_stat(pid)["ksm_merging_pages"]) > 100 for pid in pids), 90,
               "the agents' pages to merge")
    for i in range(3):  # not marked: never scanned, so none of their pages is merged
        stat = _ksm_stat(plain.agent(f"p{i}")["pid"])
        assert stat["ksm_merging_pages"].strip() == "0" and stat["ksm_merge_any"].strip() == "no", stat
