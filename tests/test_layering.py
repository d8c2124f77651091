"""The layers of DESIGN.md, checked on the source: mesh/core is pure, and nothing reaches down."""

import ast
from pathlib import Path

import pytest

MESH = Path(__file__).resolve().parent.parent / "mesh"
#: What a protocol machine must never touch: I/O, clocks, randomness, codecs.
FORBIDDEN_IN_CORE = {"zmq", "psutil", "time", "random", "json", "msgpack", "socket", "threading", "asyncio", "os",
                     "subprocess", "select"}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) for each import in a file; relative imports resolved against the package."""
    return imports_in(path.read_text(), path.relative_to(MESH.parent).with_suffix("").parts[:-1])


def imports_in(source: str, package: tuple[str, ...]) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[:len(package) - node.level + 1])
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
    return found


CORE_FILES = sorted((MESH / "core").glob("*.py"))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_core_imports_no_io_clock_randomness_or_codec_and_nothing_of_mesh_outside_core(path):
    bad = core_violations(imported_modules(path))
    assert not bad, f"{path.relative_to(MESH.parent)} imports {bad}"


def core_violations(imports: list[tuple[int, str]]) -> list[tuple[int, str]]:
    return [(line, mod) for line, mod in imports
            if mod.split(".")[0] in FORBIDDEN_IN_CORE or (mod.startswith("mesh") and not mod.startswith("mesh.core"))]


@pytest.mark.timeout(30)
def test_the_layering_check_finds_what_it_must():
    """The checker itself, on source a careless change could bring into mesh/core."""
    source = ("import time\nfrom random import Random\nfrom ..runtime.node import Node\nfrom .. import wire\n"
              "from .effects import Send\nimport math\n\ndef f():\n    import msgpack\n")
    assert core_violations(imports_in(source, ("mesh", "core"))) == [
        (1, "time"), (2, "random"), (3, "mesh.runtime.node"), (4, "mesh"), (9, "msgpack")]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("path", sorted((MESH / "wire.py",)) + sorted((MESH / "sim").glob("*.py")), ids=lambda p: p.name)
def test_wire_and_sim_never_import_the_runtime_or_the_cli(path):
    bad = [(line, mod) for line, mod in imported_modules(path) if mod.startswith(("mesh.runtime", "mesh.cli"))]
    assert not bad, f"{path.relative_to(MESH.parent)} imports {bad}"


PLAYBOOK_FILES = sorted((MESH / "patterns").glob("*.py")) + sorted((MESH / "orchestra").glob("*.py"))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("path", PLAYBOOK_FILES, ids=lambda p: str(p.relative_to(MESH)))
def test_the_patterns_and_the_orchestra_use_the_public_api_only(path):
    """Issue 14: the playbook's patterns and the Test Orchestra are built on what users have,
    never on the runtime's internals (nor on the CLI)."""
    bad = [(line, mod) for line, mod in imported_modules(path) if mod.startswith(("mesh.runtime", "mesh.cli"))]
    assert not bad, f"{path.relative_to(MESH.parent)} imports {bad}"


RUNTIME_FILES = sorted((MESH / "runtime").rglob("*.py"))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("path", RUNTIME_FILES, ids=lambda p: str(p.relative_to(MESH / "runtime")))
def test_no_runtime_module_holds_more_than_500_lines(path):
    """One concept per module (issue 12): a module past 500 lines is a room with several."""
    lines = len(path.read_text().splitlines())
    assert lines <= 500, f"{path.relative_to(MESH.parent)} has {lines} lines"
