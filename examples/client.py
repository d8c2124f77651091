"""A plain script that acts as a client: it asks actors in the mesh by name.

    mesh up nodes/echo.toml &
    python examples/client.py echo '{"hello": "mesh"}'
"""

import argparse
import json
import sys

import mesh

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("actor")
    parser.add_argument("message", help="a JSON value")
    parser.add_argument("--node", default=None)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    try:
        with mesh.connect(args.node) as client:
            reply = client.actor(args.actor).ask(json.loads(args.message), timeout=args.timeout)
    except mesh.MeshError as exc:
        sys.exit(f"error: {exc}")
    print(json.dumps(reply))
