"""Every code block of README.md, and every usage example in a module docstring, runs here.

How each block runs (README "Testing" says the same, for writers):

* ``python``: in README order, in one namespace (a reader's session: later blocks use the
  ``client`` and ``ref`` of earlier ones), with ``$MESH_NODE`` pointing at a real node that
  runs the README's own ``Counter`` as ``counter``, an ``echo``, and the pools and limits the
  README uses. Top-level ``await`` works (an asyncio session). A block that uses ``self`` is
  handler code: it runs inside a real actor of that node (``tests/readme_runner.py``), with
  ``client`` that actor's client. Code under ``if __name__ == "__main__":`` (a script's
  entry point) does not run there, but every ``mesh.NAME(...)`` call, anywhere in a block, is
  checked against the real signature.
* ``sh``: line by line in bash, from the repository root. A line ending in ``&`` runs in
  the background until the block ends (a ``mesh up`` there is waited for until it answers);
  any other line must exit 0, and is retried for up to a minute while it does not (a node
  still starting, an agent not registered yet), as a person would. A block that runs
  ``mesh up`` gets a free port (``$MESH_UP_LISTEN``) and ``$MESH_NODE`` pointing at it;
  other blocks talk to the node of the python blocks.
* ``toml``: parsed and checked as a node spec (a fragment, from ``nodes/``); when its agents'
  modules exist, their classes are imported and ``config`` is checked against them.
* ``json``: the ``mesh status --json`` example: every key it shows is in a real status.

An HTML comment right before a block changes that, and must say why:
``<!-- readme-test: skip: REASON -->`` (not run: used for at most MAX_SKIPS blocks), or
``<!-- readme-test: first: COMMAND -->`` (an sh command run before the block, in the same
session: what an earlier block started in another terminal).
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

import mesh
from conftest import TESTS, env_with, free_port, wait_until
from mesh.spec import check_config, check_importable, parse_spec

ROOT = TESTS.parent
README = Path(os.environ.get("MESH_TEST_README") or ROOT / "README.md")  # another file: check the test itself
MAX_SKIPS = 4
LANGUAGES = ("python", "sh", "toml", "json")
DIRECTIVE = re.compile(r"<!--\s*readme-test:\s*(skip|first):\s*(.+?)\s*-->")

# Module docstrings with a ``::`` block, and how that block runs. A new one must be listed here.
DOCSTRINGS = {
    "mesh/__init__.py": "python",
    "mesh/sim/__init__.py": "python",
    "mesh/runtime/intents.py": "python",  # handler code (self): runs in the runner actor
    "mesh/runtime/memory.py": "python",
    "mesh/spec.py": "toml",
    "mesh/demo.py": "sh",
    "mesh/wire.py": None,  # not usage: the layout of an envelope
}
DOCSTRING_FIRST = {"mesh/demo.py": "mesh up &"}  # the demo's conductor runs in the node `mesh up` starts


@dataclass
class Block:
    lang: str
    source: str
    line: int  # the line of the first line of code, in its file
    file: str
    skip: str | None = None
    first: str | None = None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def readme_blocks() -> list[Block]:
    lines = README.read_text().splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        fence = re.fullmatch(r"```(\w*)\s*", lines[i])
        if not fence:
            i += 1
            continue
        start = i + 1
        end = start
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        block = Block(fence.group(1), "\n".join(lines[start:end]) + "\n", start + 1, "README.md")
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        directive = DIRECTIVE.fullmatch(before.strip())
        if directive:
            setattr(block, directive.group(1), directive.group(2))
        blocks.append(block)
        i = end + 1
    return blocks


def docstring_blocks() -> list[Block]:
    found = []
    for path in sorted([*ROOT.glob("mesh/**/*.py"), *ROOT.glob("examples/*.py")]):
        rel = str(path.relative_to(ROOT))
        text = path.read_text()
        tree = ast.parse(text)
        doc = ast.get_docstring(tree, clean=False)
        if not doc or "::\n" not in doc:
            continue
        doc_line = tree.body[0].lineno
        lines = doc.splitlines()
        for k, line in enumerate(lines):
            if not line.rstrip().endswith("::"):
                continue
            body = []
            j = k + 1
            while j < len(lines) and (not lines[j].strip() or lines[j].startswith("    ")):
                body.append(lines[j])
                j += 1
            first = next(n for n in range(k + 1, j) if lines[n].strip())
            found.append(Block(DOCSTRINGS.get(rel, "?"), textwrap.dedent("\n".join(body)).strip() + "\n",
                               doc_line + first, rel, first=DOCSTRING_FIRST.get(rel)))
    return found


BLOCKS = readme_blocks()


# --------------------------------------------------------------------------- the rules themselves


@pytest.mark.fast_check
def test_every_block_has_a_language_that_runs_and_skips_are_rare_and_explained():
    assert len(BLOCKS) > 20
    for block in BLOCKS:
        assert block.lang in LANGUAGES, f"{block.where}: fence the block as one of {LANGUAGES}, not {block.lang!r}"
    skipped = [b for b in BLOCKS if b.skip]
    assert all(len(b.skip) > 10 for b in skipped), "a skipped block says why"
    assert len(skipped) <= MAX_SKIPS, f"{len(skipped)} blocks are skipped: {[b.where for b in skipped]}"
    text = README.read_text()
    comments = [line for line in text.splitlines() if re.match(r"\s*<!--\s*readme-test:", line)]
    assert len(comments) == sum(1 for b in BLOCKS if b.skip or b.first), \
        "a readme-test comment that is not right before a block does nothing"
    assert all(DIRECTIVE.fullmatch(line.strip()) for line in comments), "readme-test: skip: REASON or first: COMMAND"


@pytest.mark.fast_check
def test_every_module_docstring_example_is_known():
    found = {b.file for b in docstring_blocks()}
    assert found == set(DOCSTRINGS), "list each module whose docstring has a :: block in DOCSTRINGS"


@pytest.mark.fast_check
def test_every_file_a_block_names_exists():
    named = re.compile(r"(?<![\w/.])((?:nodes|examples|benchmarks|tests|mesh)/[\w/.-]+\.(?:toml|py))")
    for block in BLOCKS + docstring_blocks():
        for path in named.findall(block.source):
            assert (ROOT / path).exists(), f"{block.where}: {path} does not exist"


@pytest.mark.fast_check
def test_every_node_file_is_a_valid_spec_whose_classes_take_their_config():
    from mesh.spec import load_spec

    from mesh.orchestra import load_orchestra

    files = sorted((ROOT / "nodes").glob("*.toml"))
    assert {"a.toml", "b.toml", "echo.toml", "default.toml"} <= {f.name for f in files}
    for file in files:
        if file.name.endswith("-run.toml"):  # an orchestra spec (mesh run), beside its node spec
            load_orchestra(file)
            continue
        spec = load_spec(file)
        check_importable(spec)
        check_config(spec)


@pytest.mark.fast_check
@pytest.mark.parametrize("block", [b for b in BLOCKS + docstring_blocks() if b.lang == "toml"], ids=lambda b: b.where)
def test_a_toml_block_is_a_valid_spec(block):
    spec = parse_spec(tomllib.loads(block.source), file=block.where, base_dir=ROOT / "nodes")
    saved = list(sys.path)
    sys.path[:0] = spec.import_path()
    try:
        importable = all(_module_exists(a.cls.partition(":")[0]) for a in spec.agents)
    finally:
        sys.path[:] = saved
    if importable:
        check_importable(spec)
        check_config(spec)


def _module_exists(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.fast_check
@pytest.mark.parametrize("block", [b for b in BLOCKS + docstring_blocks() if b.lang == "python"], ids=lambda b: b.where)
def test_every_mesh_call_in_a_python_block_matches_the_api(block):
    """Also the calls that do not run here (a script's entry point, handler code)."""
    tree = ast.parse(block.source)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        target = _mesh_attribute(node.func)
        if target is None:
            continue
        obj = mesh
        for part in target:
            assert hasattr(obj, part), f"{block.where}: mesh.{'.'.join(target)} does not exist"
            obj = getattr(obj, part)
        fake = [None] * len(node.args)
        names = {k.arg: None for k in node.keywords if k.arg}
        try:
            inspect.signature(obj).bind(*fake, **names)
        except TypeError as exc:
            raise AssertionError(f"{block.where}: mesh.{'.'.join(target)}(...) does not fit its signature: {exc}") from None


def _mesh_attribute(func: ast.expr) -> list[str] | None:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name) and func.id == "mesh" and parts:
        return parts[::-1]
    return None


# --------------------------------------------------------------------------- running the blocks


RUNNER_SPEC = """
[pools.db]
size = 100
lease = "10s"

[limits.api]
rate = 1000
per = "60s"

[[agents]]
name = "echo"
class = "actors:Echo"

[[agents]]
name = "counter"
class = "readme_counter:Counter"

[[agents]]
name = "runner"
class = "readme_runner:Runner"
"""


@pytest.fixture
def readme_node(start_node, tmp_path, monkeypatch):
    """A node for the python blocks: the README's Counter (from its "Actors" block) as counter."""
    counter = next(b for b in BLOCKS if b.lang == "python" and "class Counter(" in b.source)
    (tmp_path / "readme_counter.py").write_text(counter.source)
    node = start_node(RUNNER_SPEC, name="readme", timeout=60)
    monkeypatch.setenv("MESH_NODE", node.address)
    return node


class Session:
    """What a reader has open while following the README: a Python session and a shell."""

    def __init__(self, node, home: Path, tmp: Path):
        self.node = node
        self.home = home
        self.tmp = tmp
        self.namespace: dict = {"__name__": "readme"}
        self.loop = asyncio.new_event_loop()
        self.status = None

    def close(self) -> None:
        client = self.namespace.get("client")
        if isinstance(client, mesh.Client):
            client.close()
        self.loop.close()

    def run(self, block: Block) -> None:
        if block.skip:
            return
        getattr(self, "run_" + block.lang)(block)

    # python

    def run_python(self, block: Block) -> None:
        source = "\n" * (block.line - 1) + block.source  # tracebacks name the README's lines
        if _uses_self(block.source):
            self._in_actor(source, block)
            return
        code = compile(source, block.file, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        result = eval(code, self.namespace)  # noqa: S307 - the README's own code
        if inspect.iscoroutine(result):
            self.loop.run_until_complete(asyncio.wait_for(result, 60))

    def _in_actor(self, source: str, block: Block) -> None:
        client = self.node.client_once()
        # The runner may be restarting (a kill switch block pulls and releases it): wait for it.
        wait_until(self._runner_ready, 60, "the runner actor to run")
        try:
            assert client.actor("runner").ask({"source": source, "file": block.file}, timeout=60) == "ran"
        except mesh.RemoteError as exc:
            raise AssertionError(f"{block.where} failed inside an actor:\n{exc.traceback}") from None

    def _runner_ready(self) -> bool:
        return self.node.agent("runner")["state"] == "running"

    # toml and json

    def run_toml(self, block: Block) -> None:
        test_a_toml_block_is_a_valid_spec(block)

    def run_json(self, block: Block) -> None:
        example = json.loads(block.source)
        status = self.node.client_once().status()
        _keys_within(example, status, "status")

    # sh

    def run_sh(self, block: Block) -> None:
        commands = [c for c in block.source.splitlines() if c.strip() and not c.strip().startswith("#")]
        if block.first:
            commands.insert(0, block.first)
        env = env_with(MESH_HOME=str(self.home), MESH_NO_LIVE="1", MESH_NODE=self.node.address,
                       PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        starts_node = any(re.search(r"\bmesh up\b", c) for c in commands)
        if starts_node:
            address = f"tcp://127.0.0.1:{free_port()}"
            env.update(MESH_UP_LISTEN=address, MESH_NODE=address)
        background: list[subprocess.Popen] = []
        try:
            for n, command in enumerate(commands):
                line = command.split(" #")[0].strip()
                if line.endswith("&"):
                    background.append(self._background(line[:-1].strip(), env, f"{block.where}-{n}"))
                    if re.search(r"\bmesh up\b", line):
                        self._wait_for_node(background[-1], env["MESH_NODE"], block)
                else:
                    self._foreground(line, env, block)
        finally:
            for proc in background:
                _end(proc)

    def _background(self, line: str, env: dict, tag: str) -> subprocess.Popen:
        safe = re.sub(r"[^\w-]", "_", tag)
        out = open(self.tmp / f"bg-{safe}.out", "wb")
        proc = subprocess.Popen(["bash", "-c", line], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        proc.output_path = out.name
        out.close()
        return proc

    def _wait_for_node(self, proc: subprocess.Popen, address: str, block: Block) -> None:
        def up() -> bool:
            assert proc.poll() is None, f"{block.where}: mesh up exited: {Path(proc.output_path).read_text()}"
            try:
                with mesh.connect(address, connect_timeout=0.5):
                    return True
            except mesh.NodeUnavailable:
                return False

        wait_until(up, 60, f"{block.where}: the node `mesh up` starts", interval=0.2)

    def _foreground(self, line: str, env: dict, block: Block) -> None:
        last = []

        def succeeds() -> bool:
            result = subprocess.run(["bash", "-c", line], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
            last[:] = [result]
            return result.returncode == 0

        try:
            wait_until(succeeds, 60, f"{block.where}: {line}", interval=0.5)
        except AssertionError:
            r = last[-1]
            raise AssertionError(f"{block.where}: `{line}` exits {r.returncode}:\n{r.stdout}{r.stderr}") from None


def _uses_self(source: str) -> bool:
    """Does the code use ``self`` outside any def or class (handler code, not a module)?"""
    tree = ast.parse(source)
    nested = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            nested.update(id(n) for n in ast.walk(node) if n is not node)
    return any(isinstance(n, ast.Name) and n.id == "self" and id(n) not in nested for n in ast.walk(tree))


def _keys_within(example: object, real: object, where: str) -> None:
    if isinstance(example, dict):
        assert isinstance(real, dict), f"{where}: the README shows an object, status has {real!r:.80}"
        for key, value in example.items():
            if key == "...":
                continue
            assert key in real, f"README's status example shows {where}.{key}, which mesh status --json does not have"
            _keys_within(value, real[key], f"{where}.{key}")
    elif isinstance(example, list) and example and isinstance(real, list) and real:
        _keys_within(example[0], real[0], f"{where}[0]")


def _end(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever the command left in its group
    except ProcessLookupError:
        pass


@pytest.mark.timeout(600)
def test_the_readme_runs_from_top_to_bottom(readme_node, mesh_home, tmp_path):
    session = Session(readme_node, mesh_home, tmp_path)
    try:
        for block in BLOCKS:
            session.run(block)
    finally:
        session.close()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("block", [b for b in docstring_blocks() if b.lang], ids=lambda b: b.where)
def test_a_docstring_example_runs(block, readme_node, mesh_home, tmp_path):
    session = Session(readme_node, mesh_home, tmp_path)
    try:
        session.run(block)
    finally:
        session.close()
