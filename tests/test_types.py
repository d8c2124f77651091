"""The package type-checks: mypy, with the configuration in pyproject.toml, finds no error.

Not in the fast subset (tests/conftest.py picks that by module, and this one is not listed):
mypy takes a few seconds cold. Until the lanes of issue 12 that restructure the runtime have
landed, the check covers the modules listed in CHECKED (their imports are analysed, but only
their own errors count); the last step of that work checks the whole package, ``mypy`` with no
arguments, and this list goes away.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import mesh

ROOT = Path(__file__).resolve().parent.parent

CHECKED = [
    "mesh",
    "mesh.actor",
    "mesh.cli",
    "mesh.core.budget",
    "mesh.core.conductor",
    "mesh.core.effects",
    "mesh.core.election",
    "mesh.core.failure",
    "mesh.core.gossip",
    "mesh.core.hlc",
    "mesh.core.intentions",
    "mesh.core.packing",
    "mesh.core.placement",
    "mesh.core.pools",
    "mesh.core.quorum",
    "mesh.core.restart",
    "mesh.core.rng",
    "mesh.demo",
    "mesh.errors",
    "mesh.intentions",
    "mesh.patterns.pipeline",
    "mesh.runtime.agent",
    "mesh.runtime.aio",
    "mesh.runtime.asynclink",
    "mesh.runtime.budgets",
    "mesh.runtime.channel",
    "mesh.runtime.client",
    "mesh.runtime.clock",
    "mesh.runtime.containment",
    "mesh.runtime.context",
    "mesh.runtime.delivery",
    "mesh.runtime.flusher",
    "mesh.runtime.gossiper",
    "mesh.runtime.intake",
    "mesh.runtime.intents",
    "mesh.runtime.leadership",
    "mesh.runtime.memory",
    "mesh.runtime.memory_endpoints",
    "mesh.runtime.nodelink",
    "mesh.runtime.ref",
    "mesh.runtime.resources",
    "mesh.runtime.rpc",
    "mesh.runtime.server",
    "mesh.runtime.sockets",
    "mesh.runtime.state",
    "mesh.runtime.transport",
    "mesh.runtime.zeromq",
    "mesh.sim",
    "mesh.sim.placement",
    "mesh.spec",
    "mesh.topics",
    "mesh.wire",
]


@pytest.mark.timeout(300)
def test_the_checked_modules_have_no_type_errors(tmp_path):
    targets = [arg for module in CHECKED for arg in ("-m", module)]
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "--follow-imports=silent",
         "--cache-dir", str(tmp_path / "mypy-cache"), *targets],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert run.returncode == 0, f"mypy found errors:\n{run.stdout}{run.stderr}"


@pytest.mark.timeout(10)
def test_the_package_says_it_is_typed():
    assert (Path(mesh.__file__).parent / "py.typed").is_file()
