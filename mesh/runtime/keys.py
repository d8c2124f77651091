"""A mesh's key material (CurveZMQ): where it lives, how it is made, what a process loads.

The layout of a keys directory, as ``mesh keys init DIR`` makes it (pyzmq's certificate
format; every secret file 0600, ``private/`` 0700):

- ``DIR/mesh.key``: the mesh's server public key; every member and client needs it;
- ``DIR/mesh.key_secret``: the mesh's server keypair; nodes and their agents only;
- ``DIR/private/NAME.key_secret``, ``NAME.key``: NAME's keypair (a node, an operator, a client);
- ``DIR/trusted/NAME.key``: the public keys the mesh admits; a key not here is refused.

Why one server identity for the whole mesh, not one per node: a CURVE client must know the
public key of the server it connects to before it connects. With one per mesh, no address
ever needs a key carried beside it (node records, the directory, resolve answers), so nothing
a peer writes into the directory can point a client at a key it chose. Who may connect is
decided by each process's own key, checked against ``trusted/`` (the ZAP handler of
:mod:`.zap`), so admitting and revoking stay per member. The cost: every node and agent holds
the server secret, so a member, even a revoked one, could pose as a server to a client whose
traffic it can intercept; it still cannot connect in. A client (``mesh.connect``) needs only
``mesh.key`` and its own keypair: it connects and never listens.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import zmq.auth

from ..errors import MeshError

MESH_KEY = "mesh"
PRIVATE = "private"
TRUSTED = "trusted"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class KeysError(MeshError, ValueError):
    """Key material that is missing, unreadable or ambiguous (the message says which file)."""


@dataclass(frozen=True)
class Keys:
    """What one process uses to speak CURVE: its own keypair, the mesh's server keys, and where
    the trusted public keys are (keys are z85 text, as pyzmq's certificates hold them)."""

    name: str  #: whose keypair (the certificate's file name)
    source: Path  #: the secret certificate it came from (what a node hands its agents, by path)
    public: bytes = field(repr=False)
    secret: bytes = field(repr=False)
    server_public: bytes = field(repr=False)
    #: The mesh's server secret; None for a client that may connect but not listen.
    server_secret: bytes | None = field(repr=False, default=None)
    #: The directory of trusted public keys a listener admits; None for a client.
    trusted: Path | None = None


def _check_name(name: str) -> str:
    if not _NAME.match(name) or name == MESH_KEY:
        raise KeysError(f"{name!r} is not a key name (letters, digits, _ . -; not {MESH_KEY!r})")
    return name


def _make_keypair(folder: Path, name: str) -> tuple[Path, Path]:
    """NAME.key and NAME.key_secret in ``folder``, the secret never readable by others, even briefly."""
    old = os.umask(0o077)
    try:
        public, secret = zmq.auth.create_certificates(folder, name)
    finally:
        os.umask(old)
    os.chmod(secret, 0o600)
    os.chmod(public, 0o644)
    return Path(public), Path(secret)


def _trust(root: Path, name: str, public_cert: Path) -> Path:
    zmq.auth.load_certificate(public_cert)  # a certificate, or ValueError
    target = root / TRUSTED / f"{name}.key"
    shutil.copyfile(public_cert, target)
    os.chmod(target, 0o644)
    return target


def _prepare(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / PRIVATE).mkdir(mode=0o700, exist_ok=True)
    os.chmod(root / PRIVATE, 0o700)
    (root / TRUSTED).mkdir(exist_ok=True)


def init_keys(root: str | os.PathLike[str], names: list[str]) -> list[Path]:
    """Make a mesh's key material in ``root``: the server keypair (unless there is one) and a
    trusted keypair per name (a name that has one already keeps it). Returns the files written."""
    root = Path(root)
    for name in names:
        _check_name(name)
    _prepare(root)
    written: list[Path] = []
    if not (root / f"{MESH_KEY}.key_secret").exists():
        written += _make_keypair(root, MESH_KEY)
    for name in names:
        if (root / PRIVATE / f"{name}.key_secret").exists():
            continue
        public, secret = _make_keypair(root / PRIVATE, name)
        written += [public, secret, _trust(root, name, public)]
    return written


def add_key(root: str | os.PathLike[str], name: str, public_cert: str | os.PathLike[str] | None = None) -> list[Path]:
    """Trust ``name``: a new keypair made here, or the public certificate ``public_cert`` made
    elsewhere (whose secret never comes here). Running nodes admit it within WATCH_S."""
    root = Path(root)
    _check_name(name)
    if not (root / f"{MESH_KEY}.key").exists():
        raise KeysError(f"{root} holds no mesh keys (make them with `mesh keys init {root}`)")
    _prepare(root)
    if public_cert is not None:
        try:
            return [_trust(root, name, Path(public_cert))]
        except (OSError, ValueError) as exc:
            raise KeysError(f"{public_cert}: not a public certificate ({exc})") from None
    if (root / PRIVATE / f"{name}.key_secret").exists():
        return [_trust(root, name, root / PRIVATE / f"{name}.key")]
    public, secret = _make_keypair(root / PRIVATE, name)
    return [public, secret, _trust(root, name, public)]


def revoke_key(root: str | os.PathLike[str], name: str) -> Path:
    """Stop trusting ``name``: its public key leaves ``trusted/`` (its keypair stays, unused).
    Running nodes refuse new connections with it within WATCH_S."""
    target = Path(root) / TRUSTED / f"{_check_name(name)}.key"
    if not target.exists():
        raise KeysError(f"{name} is not trusted in {root} (nothing in {target.parent} by that name)")
    target.unlink()
    return target


def trusted_names(root: str | os.PathLike[str]) -> list[str]:
    return sorted(p.stem for p in (Path(root) / TRUSTED).glob("*.key"))


def _load(path: Path, what: str) -> tuple[bytes, bytes | None]:
    try:
        return zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeysError(f"cannot read {what} {path}: {exc}") from None


def load_keys(where: str | os.PathLike[str] | Keys, name: str | None = None) -> Keys:
    """The keys a process uses: ``where`` is a keys directory (then ``name``, else
    ``$MESH_KEY_NAME``, else its only keypair, picks whose) or one secret certificate
    (``DIR/private/NAME.key_secret``, with ``mesh.key`` in DIR). Raises KeysError."""
    if isinstance(where, Keys):
        return where
    path = Path(where).expanduser()
    if path.is_dir():
        root = path
        name = name or os.environ.get("MESH_KEY_NAME")
        if name is None:
            owned = sorted(p.name[:-len(".key_secret")] for p in (root / PRIVATE).glob("*.key_secret"))
            if len(owned) != 1:
                raise KeysError(f"{root} holds {len(owned)} keypairs ({', '.join(owned) or 'none'}): say whose "
                                f"(keys={root / PRIVATE}/NAME.key_secret, or $MESH_KEY_NAME)")
            name = owned[0]
        cert = root / PRIVATE / f"{name}.key_secret"
    else:
        cert = path
        root = path.parent.parent if path.parent.name == PRIVATE else path.parent
        name = path.name.split(".", 1)[0]
    public, secret = _load(cert, "the keypair")
    if secret is None:
        raise KeysError(f"{cert} holds no secret key: give a .key_secret file")
    server_public, server_secret = _load(root / f"{MESH_KEY}.key", "the mesh's server key")
    secret_file = root / f"{MESH_KEY}.key_secret"
    if secret_file.exists() and os.access(secret_file, os.R_OK):
        server_secret = _load(secret_file, "the mesh's server keypair")[1]
    trusted = root / TRUSTED
    return Keys(name=name, source=cert.resolve(), public=public, secret=secret, server_public=server_public,
                server_secret=server_secret, trusted=trusted.resolve() if trusted.is_dir() else None)
