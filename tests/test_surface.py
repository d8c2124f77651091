"""The public surface stays small and has one road to the node (issue 12).

No process starts here: these read signatures and source. That the calls work is shown by
the tests that use them against real nodes (test_cli, test_intents, test_pools, test_state).
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from types import SimpleNamespace

import pytest

import mesh
from mesh.runtime import rpc
from mesh.runtime.context import ActorContext

ROOT = Path(mesh.__file__).resolve().parent

pytestmark = [pytest.mark.fast_check, pytest.mark.timeout(30)]


def _source(path: str) -> ast.Module:
    return ast.parse((ROOT / path).read_text())


def test_the_cli_reaches_the_node_only_through_public_calls():
    private = sorted({f"{node.value.id}.{node.attr}" for node in ast.walk(_source("cli.py"))
                      if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                      and node.value.id == "client" and node.attr.startswith("_")})
    assert private == []


def test_only_rpc_names_node_operations():
    """Everything else asks the node through rpc's typed functions, never ``control(OP)``."""
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        # (rpc's transport is the client's; the node answers operations, it does not ask them)
        skipped = rel in ("runtime/rpc.py", "runtime/client.py", "runtime/node.py")
        if skipped or rel.startswith(("core/", "sim/", "runtime/node/")):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                    "control", "control_async", "_control_at"):
                pytest.fail(f"mesh/{rel}:{node.lineno} calls {node.func.attr}: use a function of mesh.runtime.rpc")


def test_the_actor_module_holds_the_actor_alone_and_imports_no_runtime():
    tree = _source("actor.py")
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    assert classes == ["Actor"]
    runtime_imports = [n for n in tree.body if isinstance(n, ast.ImportFrom) and "runtime" in (n.module or "")]
    assert runtime_imports == []  # (type-checking imports sit under an `if`)


@pytest.mark.parametrize("owner, name", [(mesh.Client, "acquire"), (ActorContext, "acquire"), (ActorContext, "propose")])
def test_an_async_form_takes_the_arguments_of_its_blocking_form(owner, name):
    blocking, twin = getattr(owner, name), getattr(owner, f"{name}_async")
    assert inspect.iscoroutinefunction(twin)
    assert inspect.signature(twin) == inspect.signature(blocking)


@pytest.mark.parametrize("call", [mesh.Client.acquire, ActorContext.acquire, ActorContext.propose])
def test_propose_and_acquire_take_keywords_after_the_first_argument(call):
    params = list(inspect.signature(call).parameters.values())[1:]  # after self
    assert params[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[1:])


@pytest.mark.parametrize("name", ["channel", "control_at", "forget"])
def test_the_clients_plumbing_is_not_public(name):
    assert not hasattr(mesh.Client, name) and hasattr(mesh.Client, f"_{name}")


def test_the_actor_context_does_not_hand_out_its_client():
    context = ActorContext(SimpleNamespace(name="a"), SimpleNamespace(node="tcp://127.0.0.1:1"))
    assert not hasattr(context, "client")


@pytest.mark.parametrize("command, call", [("approve", "approve"), ("deny", "deny"), ("kill", "kill"), ("logs", "logs"),
                                           ("down", "down"), ("intents", "intents"), ("status", "status")])
def test_each_command_of_the_cli_has_a_public_client_call(command, call):
    from mesh.cli import main

    assert command in main.commands
    assert callable(getattr(mesh.Client, call)) and not call.startswith("_")


def test_every_rpc_function_is_annotated_with_what_it_answers():
    functions = [f for name, f in vars(rpc).items() if inspect.isfunction(f) and not name.startswith("_")
                 and f.__module__ == rpc.__name__]
    assert len(functions) >= 26  # one per node operation, and the actor's own "intention"
    for f in functions:
        assert "return" in f.__annotations__, f.__name__


def test_the_public_types_have_one_name_each():
    from mesh.core import effects, intentions, pools, restart
    from mesh.runtime import resources

    assert mesh.Event.__module__ == "mesh.topics" and effects.Emit.__name__ == "Emit"
    assert mesh.Decision.__module__ == "mesh.intentions" and restart.RestartDecision.__name__ == "RestartDecision"
    assert mesh.Intention.__module__ == "mesh.intentions" and mesh.Objection.__module__ == "mesh.intentions"
    assert intentions.IntentionRecord.__name__ == "IntentionRecord"
    assert resources.Lease.__name__ == "Lease" and pools.PoolLease.__name__ == "PoolLease"
