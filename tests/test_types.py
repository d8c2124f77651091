"""The package type-checks: mypy, with the configuration in pyproject.toml, finds no error.

Not in the fast subset (tests/conftest.py picks that by module, and this one is not listed):
mypy takes a few seconds cold. The whole package is checked (pyproject.toml's ``files``), so a new
module is checked from its first commit; pyproject.toml says how strictly each part is held.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import mesh

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(300)
def test_the_package_has_no_type_errors(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(tmp_path / "mypy-cache")],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert run.returncode == 0, f"mypy found errors:\n{run.stdout}{run.stderr}"
    assert "source files" in run.stdout  # it checked something: pyproject.toml names the package


@pytest.mark.timeout(10)
def test_the_package_says_it_is_typed():
    assert (Path(mesh.__file__).parent / "py.typed").is_file()
