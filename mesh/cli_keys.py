"""``mesh keys``: make, trust and revoke a mesh's CURVE keys (the layout: :mod:`mesh.runtime.keys`)."""

from __future__ import annotations

from pathlib import Path

import click

from .spec import is_loopback_host
from .runtime.keys import CLIENT, NODE, ROLES, KeysError, add_key, init_keys, revoke_key, trusted_names

#: What `mesh up` says when asked to listen beyond loopback without keys.
KEYS_HINT = ("make keys with `mesh keys init DIR --node NAME` and pass --keys DIR (or [node] keys, $MESH_KEYS), "
             "or pass --insecure to run it open knowingly")


def is_loopback(address: str) -> bool:
    """Whether a tcp://HOST:PORT address listens on loopback only (127.0.0.0/8, ::1, localhost)."""
    return is_loopback_host(address.partition("://")[2].rpartition(":")[0].strip("[]"))


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


@click.group()
def keys() -> None:
    """Make, trust and revoke the keys of a mesh (CURVE on every socket)."""


@keys.command("init")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--node", "nodes", multiple=True, metavar="NAME",
              help="A node's keypair, which may vote for the leader; repeatable.")
@click.option("--non-voter", "non_voters", multiple=True, metavar="NAME",
              help="A node's keypair that may not vote (its spec's voter = true is not counted); repeatable.")
@click.option("--operator", "operators", multiple=True, metavar="NAME",
              help="An operator's keypair (may do everything: down, kill, approve); repeatable.")
@click.option("--client", "clients", multiple=True, metavar="NAME",
              help="A client's keypair (asks, state, intentions; not down, kill or approve); repeatable.")
def init(directory: str, nodes: tuple[str, ...], non_voters: tuple[str, ...], operators: tuple[str, ...],
         clients: tuple[str, ...]) -> None:
    """Make DIRECTORY: the mesh's server keypair and a trusted keypair per --node, --non-voter, --operator
    and --client."""
    try:
        written = init_keys(directory, nodes, operators, clients, non_voters)
    except (KeysError, OSError) as exc:
        raise _fail(exc) from None
    root = Path(directory)
    click.echo(f"{root}: {len(written)} files written; trusted: {', '.join(trusted_names(root)) or 'nobody'}")


@keys.command("add")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@click.argument("name")
@click.option("--public", type=click.Path(dir_okay=False, exists=True),
              help="Trust this public certificate (NAME.key made elsewhere) instead of making a keypair.")
@click.option("--role", type=click.Choice(ROLES), default=CLIENT, show_default=True,
              help="What NAME may do: operator (everything), node (what nodes do; also makes NAME+agents, the key "
                   "its agents get), agent (what a node's agents do), client (the rest).")
@click.option("--voter/--no-voter", default=False, show_default=True,
              help="With --role node: whether NAME may vote for the leader.")
def add(directory: str, name: str, public: str | None, role: str, voter: bool) -> None:
    """Trust NAME as --role: make its keypair in DIRECTORY/private, or trust the --public certificate given."""
    if voter and role != NODE:
        raise click.UsageError("--voter is for --role node: only nodes vote")
    try:
        written = add_key(directory, name, public, role, voter)
    except (KeysError, OSError) as exc:
        raise _fail(exc) from None
    as_what = f"{role}, voter" if role == NODE and voter else role
    click.echo(f"{name} trusted as {as_what} ({', '.join(str(p) for p in written)}); running nodes admit it within seconds")


@keys.command("revoke")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@click.argument("name")
def revoke(directory: str, name: str) -> None:
    """Stop trusting NAME: running nodes refuse its new connections within seconds."""
    try:
        revoke_key(directory, name)
    except (KeysError, OSError) as exc:
        raise _fail(exc) from None
    click.echo(f"{name} revoked; running nodes refuse it within seconds")
