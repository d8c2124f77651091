"""The node's HTTP server (``[node] metrics = "HOST:PORT"``, ``mesh up --metrics``): Prometheus
``/metrics``, the live dashboard a person keeps open (``/``, :mod:`.dashboard`), and
``/api/status`` (what ``mesh status --json`` prints).

Threads: the server answers on threads of its own and never touches the node's state. The
node's loop publishes a snapshot of its status every second (:meth:`Web.publish`, on the loop's
thread); requests read the latest one, so a slow or hostile HTTP client costs the node nothing
but a copy of a reference. What a page asks the node to *do* (the kill switch, approving an
escalation) is queued, and the loop carries it out (:meth:`Web.run_actions`), as if a control
request had come in; the request waits for its answer, bounded.

Who may act: anyone who can reach the port may read. Actions are taken only when the server
listens on loopback and the node has no keys (a local user is trusted then, as on the node's
own port); otherwise the page is read-only and says why (with keys, an operator acts with her
key: ``mesh kill``, ``mesh approve``).
"""

from __future__ import annotations

import json
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Protocol

from ...errors import MeshError
from ...spec import is_loopback_host, parse_http_address

if TYPE_CHECKING:  # pragma: no cover
    from .daemon import Node

log = logging.getLogger("mesh.web")

#: Seconds an action request waits for the node's loop to carry it out.
ACTION_TIMEOUT_S = 5.0
#: The largest request body the server reads, in bytes (actions are tiny JSON objects).
MAX_BODY = 4096
#: Actions queued at once; more are refused (503) rather than queued without bound.
MAX_QUEUED = 64
#: Seconds between two snapshots of the node's status.
PUBLISH_S = 1.0


def serve_web(node: "Node") -> "Web | None":
    """Start ``node``'s HTTP server if its spec asks for one (``[node] metrics``)."""
    if not node.spec.metrics:
        return None
    from .prometheus import render

    web = Web(node.spec.metrics, may_act=not node.spec.keys, render_metrics=render)
    node.on_event(f"metrics at {web.address}/metrics, the dashboard at {web.address}/"
                  + (f" ({web.why_read_only})" if web.why_read_only else ""))
    web.tick(node)
    return web


class Responder(Protocol):
    """What a request's handler offers the dashboard to answer with."""

    def send_body(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None: ...

    def send_json(self, status: int, value: object) -> None: ...


class _Action:
    __slots__ = ("op", "body", "done", "answer")

    def __init__(self, op: str, body: dict[str, Any]):
        self.op = op
        self.body = body
        self.done = threading.Event()
        self.answer: dict[str, Any] = {}


class Web:
    """One node's HTTP server. ``render_metrics(snapshot) -> (bytes, content type)``."""

    def __init__(self, address: str, *, may_act: bool,
                 render_metrics: Callable[[dict[str, Any]], tuple[bytes, str]] | None = None):
        host, port = parse_http_address(address)
        self.may_act = may_act and is_loopback_host(host)
        self.why_read_only = ("" if self.may_act else
                              "read-only: the node has keys (act with an operator key: mesh kill, mesh approve)"
                              if may_act is False else
                              "read-only: the page is served beyond loopback (act with mesh kill, mesh approve)")
        self.snapshot: dict[str, Any] = {}
        self.version = 0  #: raised with every snapshot (the dashboard's event stream waits on it)
        self.changed = threading.Condition()
        self._actions: queue.Queue[_Action] = queue.Queue(MAX_QUEUED)
        self._render_metrics = render_metrics
        self._next_publish = 0.0
        try:
            self.server = _Server((host, port), _handler_for(self))
        except OSError as exc:
            raise MeshError(f"cannot serve metrics and the dashboard on {host}:{port}: {exc.strerror or exc}") from None
        self.server.daemon_threads = True
        self.address = f"http://{host}:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.25},
                                        name="mesh-web", daemon=True)
        self._thread.start()

    # -- the node's loop ----------------------------------------------------------------------

    def tick(self, node: "Node") -> None:
        """On the loop's thread, every pass: carry out what pages asked, and publish the status
        once a PUBLISH_S."""
        if not self._actions.empty():
            self.run_actions(lambda op, body: _as_answer(node.control.ops[op].handler({**body, "by": "the dashboard"})))
        now = time.monotonic()
        if now >= self._next_publish:
            self._next_publish = now + PUBLISH_S
            self.publish(node.status())

    def publish(self, snapshot: dict[str, Any]) -> None:
        """The node's latest status (on the loop's thread); wakes the event streams."""
        with self.changed:
            self.snapshot = snapshot
            self.version += 1
            self.changed.notify_all()

    def run_actions(self, carry_out: Callable[[str, dict[str, Any]], dict[str, Any]]) -> None:
        """Carry out the queued actions (on the loop's thread): ``carry_out(op, body) -> answer``."""
        while True:
            try:
                action = self._actions.get_nowait()
            except queue.Empty:
                return
            try:
                action.answer = carry_out(action.op, action.body)
            except MeshError as exc:
                action.answer = {"error": str(exc)}
            except Exception as exc:  # the loop must go on; the page shows what went wrong
                log.exception("web action %s failed", action.op)
                action.answer = {"error": f"{type(exc).__name__}: {exc}"}
            action.done.set()

    # -- request threads ----------------------------------------------------------------------

    def act(self, op: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Queue an action for the loop and wait for its answer: (HTTP status, JSON answer)."""
        if not self.may_act:
            return 403, {"error": self.why_read_only}
        action = _Action(op, body)
        try:
            self._actions.put_nowait(action)
        except queue.Full:
            return 503, {"error": "too many actions waiting; try again"}
        if not action.done.wait(ACTION_TIMEOUT_S):
            return 504, {"error": f"the node did not carry it out within {ACTION_TIMEOUT_S:g} s"}
        return (400 if "error" in action.answer else 200), action.answer

    def metrics(self) -> tuple[bytes, str]:
        if self._render_metrics is None:
            return b"", "text/plain; version=0.0.4; charset=utf-8"
        return self._render_metrics(self.snapshot)

    def wait_for_change(self, seen: int, timeout: float) -> int:
        """Block until a snapshot newer than ``seen`` is published (or ``timeout``); the version now."""
        with self.changed:
            self.changed.wait_for(lambda: self.version != seen, timeout)
            return self.version

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        with self.changed:
            self.version += 1
            self.snapshot = {**self.snapshot, "closing": True}
            self.changed.notify_all()


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A browser that left mid-answer is no error worth a traceback; anything else is logged once."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, TimeoutError)):
            log.warning("the dashboard's server: %s from %s", exc, client_address[0] if client_address else "?")


def _as_answer(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {"answer": value}


def _handler_for(web: Web) -> type[BaseHTTPRequestHandler]:
    from . import dashboard

    class Handler(BaseHTTPRequestHandler):
        server_version = "mesh"
        sys_version = ""
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass  # no log line per request

        def send_body(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def send_json(self, status: int, value: object) -> None:
            self.send_body(status, json.dumps(value, default=str).encode(), "application/json")

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            try:
                if path == "/metrics":
                    body, content_type = web.metrics()
                    self.send_body(200, body, content_type)
                elif path == "/api/status":
                    self.send_json(200, web.snapshot)
                elif not dashboard.handle_get(self, path, web):
                    self.send_json(404, {"error": f"nothing at {path}"})
            except (BrokenPipeError, ConnectionResetError):
                pass

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0]
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_BODY:
                self.send_json(413, {"error": f"a request body is at most {MAX_BODY} bytes"})
                return
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                self.send_json(400, {"error": "the body is not JSON"})
                return
            if not isinstance(body, dict):
                self.send_json(400, {"error": "the body must be a JSON object"})
                return
            try:
                if not dashboard.handle_post(self, path, body, web):
                    self.send_json(404, {"error": f"nothing at {path}"})
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler
