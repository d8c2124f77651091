"""An agent that runs README code written for the inside of an actor (code that uses ``self``).

tests/test_readme.py asks it with ``{"source": ..., "file": ...}``; it runs the code as one of
its own handlers, with ``self`` this actor, ``mesh`` imported and ``client`` its client, and
answers "ran" (an exception travels back to the test as mesh.RemoteError, with its traceback).
"""

import ast
import inspect

import mesh


class Runner(mesh.Actor):
    async def on_message(self, message):
        namespace = {"__name__": "readme", "mesh": mesh, "self": self, "client": self.mesh._client}
        code = compile(message["source"], message["file"], "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        result = eval(code, namespace)  # noqa: S307 - the README's own code, in a test
        if inspect.iscoroutine(result):
            await result
        return "ran"
