"""The node's HTTP server (issue 16): ``[node] metrics`` serves Prometheus /metrics, the status as
JSON and the dashboard's actions; bad requests get clear errors and the node serves on."""

from __future__ import annotations

import http.client
import json
import socket

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port, run_cli, wait_until
from mesh.runtime.keys import init_keys

pytestmark = pytest.mark.timeout(90)


def get(port: int, path: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        res = conn.getresponse()
        return res.status, res.getheader("Content-Type") or "", res.read()
    finally:
        conn.close()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture
def web_node(start_node):
    port = free_port()
    node = start_node('[[agents]]\nname = "echo"\nclass = "actors:Echo"\n', name="w",
                      node_extra=f'metrics = "127.0.0.1:{port}"')
    wait_until(lambda: "mesh_agent_up" in get(port, "/metrics")[2].decode(), 15, "the first snapshot")
    return node, port


def test_metrics_parse_and_follow_what_the_agents_did(web_node):
    node, port = web_node
    with node.client() as client:
        for i in range(7):
            assert client.actor("echo").ask(i, timeout=5) == i
    status, content_type, body = get(port, "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    wait_until(lambda: samples(get(port, "/metrics")[2].decode()).get(
        ("mesh_agent_messages_total", (("agent", "echo"), ("node", "w")))) == 7.0, 15, "7 messages counted")
    found = samples(get(port, "/metrics")[2].decode())
    assert found[("mesh_agent_up", (("agent", "echo"), ("node", "w")))] == 1.0
    assert found[("mesh_is_leader", (("node", "w"),))] == 1.0


def test_status_json_and_the_kill_switch_from_the_page(web_node):
    node, port = web_node
    status, content_type, body = get(port, "/api/status")
    assert status == 200 and content_type == "application/json"
    assert json.loads(body)["node"]["name"] == "w"
    status, _, body = get(port, "/api/kill", "POST", b"{}", {"Content-Type": "application/json"})
    assert status == 200 and json.loads(body)["pulled"] is True
    wait_until(lambda: node.agent("echo")["state"] != "running", 15, "echo stopped by the kill switch")
    assert "KILL SWITCH pulled by the dashboard" in node.log()
    status, _, body = get(port, "/api/release", "POST", b"{}")
    assert status == 200 and json.loads(body)["pulled"] is False
    node.wait_running("echo")


def test_bad_requests_get_clear_errors_and_the_node_serves_on(web_node):
    node, port = web_node
    assert get(port, "/nothing")[0] == 404
    status, _, body = get(port, "/api/kill", "POST", b"not json")
    assert status == 400 and "not JSON" in json.loads(body)["error"]
    assert get(port, "/api/kill", "POST", b"[1]")[0] == 400
    assert get(port, "/api/kill", "POST", b"x" * 5000)[0] == 413
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:  # garbage instead of HTTP
        raw.sendall(b"\x00\xff garbage\r\n\r\n")
        raw.recv(1024)
    assert get(port, "/metrics")[0] == 200
    assert node.client_once().actor("echo").ask("still", timeout=5) == "still"


def test_with_keys_the_page_is_read_only(tmp_path, start_node):
    k = tmp_path / "keys"
    init_keys(k, ["w"], operators=["alice"])
    port = free_port()
    node = start_node("", name="w", node_extra=f'keys = "{k}"\nmetrics = "127.0.0.1:{port}"', wait=False)
    wait_until(lambda: _answers(port), 20, "the HTTP server")
    status, _, body = get(port, "/api/kill", "POST", b"{}")
    assert status == 403 and "operator key" in json.loads(body)["error"]
    assert "read-only" in node.log()


def _answers(port: int) -> bool:
    try:
        return get(port, "/api/status")[0] == 200
    except OSError:
        return False


def test_a_bad_metrics_address_is_a_spec_error_and_a_taken_port_a_clear_one(tmp_path, mesh_home):
    spec = tmp_path / "bad.toml"
    spec.write_text('[node]\nmetrics = "nowhere"\n')
    res = run_cli("up", str(spec), timeout=30)
    assert res.returncode == 2 and "node.metrics" in res.stderr and "HOST:PORT" in res.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = run_cli("up", "--listen", f"tcp://127.0.0.1:{free_port()}", "--metrics", f"127.0.0.1:{port}",
                      timeout=30)
    assert res.returncode != 0 and f"cannot serve metrics and the dashboard on 127.0.0.1:{port}" in res.stderr


def test_an_approval_without_an_id_is_refused_clearly(web_node):
    node, port = web_node
    status, _, body = get(port, "/api/approve", "POST", b'{"id": 5}')
    assert status == 400 and "name the escalation" in json.loads(body)["error"]
    assert node.proc.poll() is None
