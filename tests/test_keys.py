"""Keys (issue 15): `mesh keys`, CURVE on every socket of two nodes on loopback, refusals counted,
revocation without a restart, and no open listening beyond loopback."""

from __future__ import annotations

import stat
import subprocess
import threading
import time

import pytest
import zmq.auth

import mesh
from conftest import TESTS, env_with, free_port, mesh_command, run_cli, wait_until
from mesh.runtime.keys import KeysError, add_key, init_keys, load_keys, revoke_key, role_of, trusted_names

pytestmark = pytest.mark.timeout(120)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keys_init_makes_a_trusted_keypair_per_name_whose_secrets_only_the_owner_reads(tmp_path):
    res = run_cli("keys", "init", str(tmp_path / "k"), "--node", "a", "--node", "b", "--operator", "alice")
    assert res.returncode == 0, res.stderr
    k = tmp_path / "k"
    assert mode(k / "mesh.key_secret") == 0o600 and (k / "mesh.key").exists()
    assert mode(k / "private") == 0o700
    for name, role in (("a", "node"), ("b", "node"), ("alice", "operator")):
        assert mode(k / "private" / f"{name}.key_secret") == 0o600
        trusted = k / "trusted" / f"{name}.key"
        assert zmq.auth.load_certificate(trusted) == zmq.auth.load_certificate(k / "private" / f"{name}.key")
        assert "secret-key" not in trusted.read_text() and role_of(trusted) == role
    # Each node's agents get a keypair of their own, role agent (never the node's powers).
    for node in ("a", "b"):
        assert mode(k / "private" / f"{node}+agents.key_secret") == 0o600
        assert role_of(k / "trusted" / f"{node}+agents.key") == "agent"
    assert trusted_names(k) == ["a", "a+agents", "alice", "b", "b+agents"]
    keys = load_keys(k, "alice")
    assert keys.name == "alice" and keys.server_secret is not None and keys.trusted == (k / "trusted").resolve()
    assert keys.secret.decode() not in repr(keys) and keys.server_secret.decode() not in repr(keys)  # not in logs


def test_keys_add_makes_or_trusts_a_key_and_revoke_untrusts_it(tmp_path):
    k, elsewhere = tmp_path / "k", tmp_path / "other"
    init_keys(k, ["a"])
    init_keys(elsewhere, ["carol"])
    res = run_cli("keys", "add", str(k), "bob")
    assert res.returncode == 0, res.stderr
    assert mode(k / "private" / "bob.key_secret") == 0o600 and "bob" in trusted_names(k)
    res = run_cli("keys", "add", str(k), "carol", "--public", str(elsewhere / "private" / "carol.key"))
    assert res.returncode == 0, res.stderr
    assert "carol" in trusted_names(k) and not (k / "private" / "carol.key_secret").exists()
    res = run_cli("keys", "revoke", str(k), "bob")
    assert res.returncode == 0, res.stderr
    assert trusted_names(k) == ["a", "a+agents", "carol"]
    # A node key added here brings its agents' key; revoking the node revokes its agents too.
    res = run_cli("keys", "add", str(k), "n2", "--role", "node")
    assert res.returncode == 0, res.stderr
    assert role_of(k / "trusted" / "n2+agents.key") == "agent"
    assert run_cli("keys", "revoke", str(k), "n2").returncode == 0
    assert trusted_names(k) == ["a", "a+agents", "carol"]
    with pytest.raises(KeysError):
        add_key(k, "x+y")  # only a node's agents' key may carry a +
    res = run_cli("keys", "revoke", str(k), "bob")
    assert res.returncode == 1 and "not trusted" in res.stderr and len(res.stderr.splitlines()) == 1
    with pytest.raises(KeysError):
        revoke_key(k, "../mesh")
    with pytest.raises(KeysError, match="no mesh keys"):
        add_key(tmp_path / "nothing", "x")
    # A client's certificate alone (no server secret beside it) may connect but not listen.
    client_only = tmp_path / "client"
    client_only.mkdir()
    (client_only / "mesh.key").write_text((k / "mesh.key").read_text())
    (client_only / "a.key_secret").write_text((k / "private" / "a.key_secret").read_text())
    keys = load_keys(client_only / "a.key_secret")
    assert keys.name == "a" and keys.server_secret is None and keys.trusted is None


@pytest.mark.timeout(60)
def test_a_node_asked_to_listen_beyond_loopback_without_keys_refuses_to_start(tmp_path, mesh_home):
    port = free_port()
    res = run_cli("up", "--listen", f"tcp://0.0.0.0:{port}", "--name", "open", timeout=30)
    assert res.returncode == 2, res.stdout + res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert "mesh keys init" in line and "--insecure" in line
    # --insecure runs it open, knowingly (and loopback without keys is unchanged: every other test).
    with open(tmp_path / "open.out", "wb") as out:
        proc = subprocess.Popen([*mesh_command(), "up", "--listen", f"tcp://0.0.0.0:{port}", "--name", "open",
                                 "--insecure"], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: proc.poll() is not None or _answers(f"tcp://127.0.0.1:{port}"), 20, "the open node")
        assert proc.poll() is None, (tmp_path / "open.out").read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _answers(address: str, **options) -> bool:
    try:
        with mesh.connect(address, connect_timeout=0.5, **options):
            return True
    except mesh.NodeUnavailable:
        return False


@pytest.fixture
def keyed_pair(tmp_path, start_node):
    """Two nodes with keys on loopback, joined; ``alice`` is a trusted operator."""
    k = tmp_path / "keys"
    init_keys(k, ["a", "b"], operators=["alice"])
    extra = f'keys = "{k}"'
    a = start_node('[[agents]]\nname = "relay"\nclass = "actors:Relay"\n', name="a", node_extra=extra, wait=False)
    alice = k / "private" / "alice.key_secret"
    wait_until(lambda: _answers(a.address, keys=alice), 20, "node a to answer alice")
    b = start_node('[[agents]]\nname = "echo"\nclass = "actors:Echo"\n', name="b", node_extra=extra, wait=False,
                   args=("--join", a.address))
    wait_until(lambda: _answers(b.address, keys=alice), 20, "node b to answer alice")
    for node in (a, b):
        node.client(keys=alice)  # what node.status() uses
    wait_until(lambda: all(len([m for m in n.status()["members"] if m["state"] == "alive"]) == 2 for n in (a, b)),
               20, "the two nodes to meet over CURVE")
    return k, a, b


def test_two_nodes_with_keys_ask_gossip_elect_and_decide_intentions_over_curve(keyed_pair):
    k, a, b = keyed_pair
    client = a.client_once()
    # An ask across nodes: alice -> node a -> relay (an agent of a) -> echo (an agent of b).
    answer = wait_until(lambda: client.actor("relay").ask({"to": "echo", "message": {"x": 1}}), 20, "relay -> echo")
    assert answer == {"x": 1}
    # Gossip: the shared state written at a is read at b.
    client.state.set("greeting", "hello")
    wait_until(lambda: b.client_once().state.get("greeting") == "hello", 10, "the state to reach b")
    # One leader both agree on, and an intention it decides.
    leader = wait_until(lambda: a.status()["leader"] if a.status()["leader"] == b.status()["leader"] else None,
                        20, "one leader")
    assert leader in ("a", "b")
    decided = client.control("intent_propose", 10, id="i1", claims=["db"], priority=0, window=0.3, hold=5.0,
                             proposer="p", action="x")
    assert decided["outcome"] == "approved", decided
    client.control("intent_done", id="i1")
    assert a.status()["node"]["refused"] == {}  # the members and alice were all admitted


def test_a_client_with_a_wrong_key_or_no_key_gets_nothing_and_the_wrong_key_is_counted_within_a_second(
        keyed_pair, tmp_path):
    k, a, b = keyed_pair
    init_keys(tmp_path / "stranger", ["mallory"])  # a mesh of its own: its keys are trusted nowhere here
    mallory = tmp_path / "stranger" / "private" / "mallory.key_secret"
    # The stranger's server key differs too: give mallory our server key, so only her own key is wrong.
    (tmp_path / "stranger" / "mesh.key").write_text((k / "mesh.key").read_text())
    outcome: list[BaseException] = []
    def try_in():
        try:
            mesh.connect(a.address, keys=mallory, connect_timeout=3.0)
        except BaseException as exc:  # what the stranger gets: recorded, checked below
            outcome.append(exc)
    attempt = threading.Thread(target=try_in)
    start = time.monotonic()
    attempt.start()
    # Counted while her connect still waits for an answer that never comes: within a second.
    refused = wait_until(lambda: a.status()["node"]["refused"].get("127.0.0.1"), 1.0, "the refusal counted")
    assert refused >= 1 and time.monotonic() - start < 1.0
    attempt.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], mesh.NodeUnavailable), outcome
    with pytest.raises(mesh.NodeUnavailable):
        mesh.connect(a.address, connect_timeout=1.0)  # no keys at all: the handshake fails
    assert "refused (key not trusted): 127.0.0.1" in run_cli(
        "status", "--node", a.address, env=env_with(MESH_KEYS=str(k / "private" / "alice.key_secret"))).stdout


def test_a_revoked_key_is_refused_without_a_restart(keyed_pair):
    k, a, b = keyed_pair
    add_key(k, "bob")
    bob = k / "private" / "bob.key_secret"
    wait_until(lambda: _answers(a.address, keys=bob), 10, "bob admitted once trusted")
    before = a.status()["node"]["refused"].get("127.0.0.1", 0)
    revoke_key(k, "bob")
    start = time.monotonic()
    wait_until(lambda: not _answers(a.address, keys=bob), 10, "bob refused once revoked")
    assert time.monotonic() - start < 5.0
    assert a.status()["node"]["refused"].get("127.0.0.1", 0) > before
    # The others are untouched.
    assert _answers(a.address, keys=k / "private" / "alice.key_secret")


def test_a_spec_without_readable_keys_is_refused_in_one_line(tmp_path, mesh_home):
    spec = tmp_path / "n.toml"
    spec.write_text(f'[node]\nname = "n"\nlisten = "tcp://127.0.0.1:{free_port()}"\npath = ["{TESTS}"]\n'
                    f'keys = "{tmp_path / "missing"}"\n')
    res = run_cli("up", str(spec), timeout=30)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "missing" in res.stderr


EMBEDDED = """
import sys
import mesh

class Emb(mesh.Actor):
    def on_message(self, message):
        return {"embedded": message}

mesh.serve(Emb(), "emb", sys.argv[1], keys=sys.argv[2])
"""


def test_an_embedded_actor_served_with_keys_is_reached_by_a_client_and_by_an_agent(keyed_pair, tmp_path):
    import sys

    k, a, b = keyed_pair
    script = tmp_path / "emb.py"
    script.write_text(EMBEDDED)
    proc = subprocess.Popen([sys.executable, str(script), a.address, str(k / "private" / "alice.key_secret")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=TESTS)
    try:
        client = a.client_once()
        assert wait_until(lambda: proc.poll() is None and client.actor("emb").ask("hi", timeout=2), 20,
                          "the embedded actor") == {"embedded": "hi"}
        assert client.actor("relay").ask({"to": "emb", "message": [1]}) == {"embedded": [1]}
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out.decode(errors="replace")
