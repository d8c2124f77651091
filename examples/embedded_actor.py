"""A plain script that embeds an actor: mesh did not start this process.

    mesh up nodes/echo.toml &              # a node to register with
    python examples/embedded_actor.py      # serves "greeter" until Ctrl-C
    mesh ask greeter '"Ada"'               # -> "hello, Ada (greeting #1)"

Other actors reach it by name, exactly like the agents the node started.
"""

import argparse

import mesh


class Greeter(mesh.Actor):
    def on_start(self):
        self.count = 0

    def on_message(self, message):
        self.count += 1
        return f"hello, {message} (greeting #{self.count})"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node", default=None, help="node address (default $MESH_NODE or tcp://127.0.0.1:7700)")
    parser.add_argument("--name", default="greeter")
    args = parser.parse_args()
    mesh.serve(Greeter(), name=args.name, node=args.node)
