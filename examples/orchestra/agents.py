"""The agents of the playbook's Test Orchestra, doing real, small work on ``sample_project/``.

Every agent gets the run's context (``context["results"]``: what every earlier agent answered) and
answers a dict. Files travel in the answers (``{"name.py": "text"}``), never as paths, so the
agents may run on different machines: each one that needs files writes them in a temporary
folder of its own.

* preparation (sequential): EnvironmentProvisioner copies the project to a temporary folder and
  imports it there; DataSeeder writes the test data (a conftest.py with a seeded fixture);
  ConfigValidator checks that pytest runs here, and reports a critical failure if it does not.
* discovery (parallel): FeatureScout lists the functions and their examples; RiskAnalyzer ranks
  the functions by their branches; TestGenerator turns each docstring example into a pytest test.
* execution (parallel, each inside a lease of the pool ``test-env``): UITester, APITester and
  IntegrationTester run the generated tests of their kind (``__test_kind__`` of a module) with
  real pytest, in a subprocess.
* analysis (sequential): ResultAnalyzer adds the results up; PatternDetector groups the
  failures; ReportGenerator writes the report (Markdown) and answers it, with a one-line
  ``summary`` that ``mesh run`` shows.
"""

from __future__ import annotations

import ast
import doctest
import importlib
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import mesh

SAMPLE_PROJECT = Path(__file__).resolve().parent / "sample_project"
PYTEST_TIMEOUT_S = 120


def workspace(files: dict[str, str], prefix: str) -> Path:
    """A fresh temporary folder holding ``files`` (name -> text)."""
    root = Path(tempfile.mkdtemp(prefix=f"mesh-orchestra-{prefix}-"))
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def answer(context: dict, section: str, agent: str) -> dict:
    return context["results"].get(section, {}).get(agent) or {}


# -- preparation ---------------------------------------------------------------------------------

class EnvironmentProvisioner(mesh.Actor):
    """Copies the project into a temporary folder, checks each module imports there, and answers
    the sources (``files``) for the agents after it."""

    def __init__(self, project: str = ""):
        self.project = Path(project) if project else SAMPLE_PROJECT

    def on_message(self, context):
        copy = Path(tempfile.mkdtemp(prefix="mesh-orchestra-env-"))
        try:
            shutil.copytree(self.project, copy, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
            files = {p.name: p.read_text() for p in sorted(copy.glob("*.py"))}
            sys.path.insert(0, str(copy))
            try:
                modules = [importlib.import_module(name[:-3]).__name__ for name in files]
            finally:
                sys.path.remove(str(copy))
                for name in files:
                    sys.modules.pop(name[:-3], None)
        finally:
            shutil.rmtree(copy, ignore_errors=True)
        return {"files": files, "modules": modules, "python": sys.version.split()[0]}


class DataSeeder(mesh.Actor):
    """Writes the test data every test run shares: a conftest.py with a seeded ``numbers`` fixture."""

    def __init__(self, seed: int = 14):
        self.seed = seed

    def on_message(self, context):
        conftest = ("import random\n\nimport pytest\n\n\n@pytest.fixture\ndef numbers():\n"
                    f"    return random.Random({self.seed}).sample(range(1000), 10)\n")
        return {"files": {"conftest.py": conftest}, "seed": self.seed}


class ConfigValidator(mesh.Actor):
    """Checks the environment: pytest runs, and the project has modules. Anything else is a
    critical failure (no test could run): the orchestra stops and alerts a person."""

    def on_message(self, context):
        env = answer(context, "preparation", "EnvironmentProvisioner")
        probe = subprocess.run([sys.executable, "-m", "pytest", "--version"], capture_output=True, text=True,
                               timeout=60)
        if probe.returncode != 0:
            return {"status": "critical_failure", "reason": f"pytest does not run here: {probe.stderr.strip()[:200]}"}
        if not env.get("modules"):
            return {"status": "critical_failure", "reason": "the project has no modules to test"}
        return {"status": "ok", "pytest": (probe.stdout or probe.stderr).strip(), "modules": len(env["modules"])}


# -- discovery ------------------------------------------------------------------------------------

def functions(files: dict[str, str]):
    """(module, kind, function node, its docstring examples) of every module of the project."""
    for name, text in sorted(files.items()):
        if name == "conftest.py":
            continue
        tree = ast.parse(text)
        kind = next((node.value.value for node in tree.body if isinstance(node, ast.Assign)
                     and any(getattr(t, "id", None) == "__test_kind__" for t in node.targets)), "api")
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                examples = doctest.DocTestParser().get_examples(ast.get_docstring(node) or "")
                yield name[:-3], kind, node, examples


class FeatureScout(mesh.Actor):
    """Lists the project's features: each public function, its module, kind and examples."""

    def on_message(self, context):
        files = answer(context, "preparation", "EnvironmentProvisioner")["files"]
        found = [{"module": module, "kind": kind, "function": node.name, "examples": len(examples)}
                 for module, kind, node, examples in functions(files)]
        return {"features": found, "untested": [f"{f['module']}.{f['function']}" for f in found if not f["examples"]]}


class RiskAnalyzer(mesh.Actor):
    """Ranks the functions by risk: branches and loops (each one a way to go wrong), riskiest first."""

    def on_message(self, context):
        files = answer(context, "preparation", "EnvironmentProvisioner")["files"]
        risky = (ast.If, ast.For, ast.While, ast.Try, ast.BoolOp, ast.IfExp, ast.Raise)
        ranked = sorted(({"function": f"{module}.{node.name}",
                          "risk": 1 + sum(isinstance(n, risky) for n in ast.walk(node))}
                         for module, _, node, _ in functions(files)), key=lambda r: (-r["risk"], r["function"]))
        return {"ranking": ranked}


class TestGenerator(mesh.Actor):
    """Turns every docstring example into a pytest test (``assert EXPR == EXPECTED``), one file per
    module, grouped by kind."""

    def on_message(self, context):
        files = answer(context, "preparation", "EnvironmentProvisioner")["files"]
        tests: dict[str, dict[str, str]] = {}
        count = 0
        for module, kind, node, examples in functions(files):
            lines = tests.setdefault(kind, {}).setdefault(f"test_{module}.py", f"from {module} import *  # noqa\n")
            for i, example in enumerate(examples, 1):
                count += 1
                lines += (f"\n\ndef test_{node.name}_{i}():\n"
                          f"    assert ({example.source.strip()}) == ({example.want.strip()})\n")
            tests[kind][f"test_{module}.py"] = lines
        return {"tests": tests, "count": count}


# -- execution ------------------------------------------------------------------------------------

class Tester(mesh.Actor):
    """Runs the generated tests of its ``kind`` with real pytest in a subprocess, in a folder holding
    the project, the seeded data and those tests; answers the counts and each failure."""

    def __init__(self, kind: str):
        self.kind = kind

    def on_message(self, context):
        files = dict(answer(context, "preparation", "EnvironmentProvisioner")["files"])
        files.update(answer(context, "preparation", "DataSeeder").get("files", {}))
        tests = answer(context, "discovery", "TestGenerator").get("tests", {}).get(self.kind, {})
        if not tests:
            return {"kind": self.kind, "tests": 0, "passed": 0, "failed": 0, "failures": []}
        folder = workspace({**files, **tests}, self.kind)
        try:
            run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml=out.xml",
                                  *sorted(tests)], cwd=folder, capture_output=True, text=True, timeout=PYTEST_TIMEOUT_S)
            return {"kind": self.kind, "exit": run.returncode, "by": self.mesh.name, **junit(folder / "out.xml")}
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def junit(path: Path) -> dict:
    """Counts and failures from pytest's JUnit XML."""
    cases = ET.parse(path).getroot().iter("testcase")
    failures = []
    total = 0
    for case in cases:
        total += 1
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        if problem is not None:
            failures.append({"test": f"{case.get('classname')}.{case.get('name')}",
                             "message": (problem.get("message") or "").splitlines()[0][:200]})
    return {"tests": total, "passed": total - len(failures), "failed": len(failures), "failures": failures}


class UITester(Tester):
    def __init__(self):
        super().__init__("ui")


class APITester(Tester):
    def __init__(self):
        super().__init__("api")


class IntegrationTester(Tester):
    def __init__(self):
        super().__init__("integration")


# -- analysis -------------------------------------------------------------------------------------

TESTERS = ("UITester", "APITester", "IntegrationTester")


def test_runs(context: dict) -> list[dict]:
    return [answer(context, "execution", name) for name in TESTERS if answer(context, "execution", name)]


class ResultAnalyzer(mesh.Actor):
    """Adds the test runs up; notes which kinds did not run (a tester skipped or killed)."""

    def on_message(self, context):
        runs = test_runs(context)
        ran = {r["kind"] for r in runs}
        return {"tests": sum(r["tests"] for r in runs), "passed": sum(r["passed"] for r in runs),
                "failed": sum(r["failed"] for r in runs), "kinds_run": sorted(ran),
                "kinds_missing": sorted({"ui", "api", "integration"} - ran)}


class PatternDetector(mesh.Actor):
    """Groups the failures by function, each with the risk RiskAnalyzer gave the function."""

    def on_message(self, context):
        by_function: dict[str, int] = {}
        for run in test_runs(context):
            for failure in run["failures"]:
                name = failure["test"].rsplit(".", 1)[-1].removeprefix("test_").rsplit("_", 1)[0]
                module = failure["test"].split(".")[0].removeprefix("test_")
                by_function[f"{module}.{name}"] = by_function.get(f"{module}.{name}", 0) + 1
        risk = {r["function"]: r["risk"] for r in answer(context, "discovery", "RiskAnalyzer").get("ranking", [])}
        return {"patterns": [{"function": f, "failures": n, "risk": risk.get(f)} for f, n in sorted(by_function.items())]}


class ReportGenerator(mesh.Actor):
    """Writes the report, in Markdown: the totals, the failures and their patterns, what was not
    tested; into ``folder`` (default: the temporary folder's mesh-orchestra/), one file per run."""

    def __init__(self, folder: str = ""):
        self.folder = Path(folder) if folder else Path(tempfile.gettempdir()) / "mesh-orchestra"

    def on_message(self, context):
        totals = answer(context, "analysis", "ResultAnalyzer")
        patterns = answer(context, "analysis", "PatternDetector").get("patterns", [])
        untested = answer(context, "discovery", "FeatureScout").get("untested", [])
        lines = ["# Test report", "",
                 f"{totals.get('tests', 0)} tests: {totals.get('passed', 0)} passed, {totals.get('failed', 0)} failed."]
        if totals.get("kinds_missing"):
            lines.append(f"Not run: {', '.join(totals['kinds_missing'])} tests.")
        for run in test_runs(context):
            lines += [f"- {f['test']}: {f['message']}" for f in run["failures"]]
        lines += [f"- pattern: {p['function']} failed {p['failures']} example(s) (risk {p['risk']})" for p in patterns]
        if untested:
            lines.append(f"Functions without examples: {', '.join(untested)}.")
        text = "\n".join(lines) + "\n"
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"report-{''.join(c if c.isalnum() else '-' for c in str(context['run']))}.md"
        path.write_text(text)
        return {"report": text, "path": str(path), "failed": totals.get("failed", 0),
                "summary": f"{lines[2]} Report: {path}"}
