"""The live dashboard: a page a person keeps open (``/``), fed by server-sent events (``/events``),
and the actions it may take (``POST /api/...``), all on the node's HTTP server (:mod:`.web`).

The stream: on connect, the latest snapshot of the node's status; then one event each time the
loop publishes a new one (once a second), and a comment every KEEPALIVE_S so that proxies and
the browser keep an idle stream open. Each event is the status plus whether the page may act
(``may_act``, ``why_read_only``): the page disables its buttons and says why. A stream holds a
thread of the server while open, so at most MAX_STREAMS are served at once; more get 503 (the
page's EventSource tries again later). Streams end when the server closes (the snapshot says
``closing``) or when the browser goes away (the next write fails).

The actions are reached from a browser, so a page of another site must not reach them: a POST
that a browser marks as coming from elsewhere (``Origin``, ``Sec-Fetch-Site``), or whose ``Host``
is not loopback (DNS rebinding), is refused. Clients without a browser send neither.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import weakref
from base64 import b64encode
from io import BufferedIOBase
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from .dashboard_page import SCRIPT, STYLE, page

if TYPE_CHECKING:  # pragma: no cover
    from email.message import Message

    from .web import Web

#: What a page may ask the node to do: path -> (control op, the body's fields it passes on).
ACTIONS = {
    "/api/kill": ("kill", ("reason",)),
    "/api/release": ("kill", ()),
    "/api/approve": ("intent_decide", ("id",)),
    "/api/deny": ("intent_decide", ("id",)),
}

#: Event streams served at once; each holds one of the server's threads while open.
MAX_STREAMS = 16
#: Seconds between two keep-alive comments on a stream that has nothing new.
KEEPALIVE_S = 15.0
#: Milliseconds the browser waits before it reconnects a stream that ended.
RETRY_MS = 2000

PAGE = page().encode()


def _csp_hash(text: str) -> str:
    return "'sha256-" + b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# Only the page's own script and style run: an injected tag, were one ever to get through, would not.
PAGE_HEADERS = {
    "Content-Security-Policy": (f"default-src 'none'; script-src {_csp_hash(SCRIPT)}; style-src {_csp_hash(STYLE)};"
                                " connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none';"
                                " frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


class StreamResponder(Protocol):
    """A request's handler (:class:`http.server.BaseHTTPRequestHandler`), as the dashboard uses it."""

    command: str
    headers: "Message"
    wfile: BufferedIOBase
    close_connection: bool

    def send_body(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None: ...

    def send_json(self, status: int, value: object) -> None: ...

    def send_response(self, code: int, message: str | None = None) -> None: ...

    def send_header(self, keyword: str, value: str) -> None: ...

    def end_headers(self) -> None: ...


class _Streams:
    """One server's open streams, and its latest event encoded once for all of them."""

    def __init__(self) -> None:
        self.slots = threading.BoundedSemaphore(MAX_STREAMS)
        self.lock = threading.Lock()
        self.encoded: tuple[int, bytes] = (-1, b"")

    def event(self, web: "Web", version: int) -> tuple[bytes, bool]:
        """The event for snapshot ``version`` (or newer) and whether the server is closing."""
        snapshot = web.snapshot
        with self.lock:
            if self.encoded[0] != version:
                shown = {**snapshot, "may_act": web.may_act, "why_read_only": web.why_read_only}
                self.encoded = (version, b"data: " + json.dumps(shown, default=str).encode() + b"\n\n")
            return self.encoded[1], bool(snapshot.get("closing"))


_streams: "weakref.WeakKeyDictionary[Web, _Streams]" = weakref.WeakKeyDictionary()
_streams_lock = threading.Lock()


def _streams_of(web: "Web") -> _Streams:
    with _streams_lock:
        found = _streams.get(web)
        if found is None:
            found = _streams[web] = _Streams()
        return found


def handle_get(handler: StreamResponder, path: str, web: "Web") -> bool:
    """Answer a GET of ``path`` if it is the dashboard's; False if not."""
    if path in ("/", "/index.html"):
        handler.send_body(200, PAGE, "text/html; charset=utf-8", PAGE_HEADERS)
        return True
    if path == "/events":
        stream_events(handler, web)
        return True
    return False


def stream_events(handler: StreamResponder, web: "Web") -> None:
    """Serve ``/events`` until the server closes or the browser goes away."""
    streams = _streams_of(web)
    if not streams.slots.acquire(blocking=False):
        handler.send_json(503, {"error": f"at most {MAX_STREAMS} pages may follow this node at once"})
        return
    try:
        # No Content-Length: the stream lasts until one side closes the connection.
        handler.close_connection = True
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream; charset=utf-8")
        handler.send_header("Cache-Control", "no-store")
        handler.send_header("Connection", "close")
        handler.send_header("X-Accel-Buffering", "no")  # a proxy in front must not hold events back
        handler.end_headers()
        if handler.command == "HEAD":
            return
        _follow(handler.wfile, web, streams)
    except (BrokenPipeError, ConnectionResetError, TimeoutError):
        pass  # the browser went away
    finally:
        streams.slots.release()


def _follow(out: BufferedIOBase, web: "Web", streams: _Streams) -> None:
    out.write(f"retry: {RETRY_MS}\n\n".encode())
    seen = web.version
    keepalive_at = time.monotonic() + KEEPALIVE_S
    event, closing = streams.event(web, seen)
    while True:
        if event:
            out.write(event)
            event = b""
        out.flush()
        if closing:
            return
        version = web.wait_for_change(seen, max(0.0, keepalive_at - time.monotonic()))
        if version != seen:
            seen = version
            event, closing = streams.event(web, version)
        if time.monotonic() >= keepalive_at:
            out.write(b": keepalive\n\n")
            keepalive_at = time.monotonic() + KEEPALIVE_S


def refused_origin(headers: "Message") -> str | None:
    """Why a browser's request from another site (or a rebound name) may not act; None if it may."""
    site = headers.get("Sec-Fetch-Site")
    if site and site not in ("same-origin", "none"):
        return f"refused: a request from another site ({site})"
    host = headers.get("Host") or ""
    origin = headers.get("Origin")
    if origin and origin != "null" and urlsplit(origin).netloc != host:
        return "refused: a request from another origin"
    if host:
        from ...spec import is_loopback_host

        name = urlsplit(f"//{host}").hostname or ""
        if not is_loopback_host(name):
            return f"refused: the page was reached as {host!r}, not on loopback"
    return None


def handle_post(handler: StreamResponder, path: str, body: dict[str, Any], web: "Web") -> bool:
    """Carry out a POST of ``path`` if it is one of the dashboard's actions; False if not."""
    if path not in ACTIONS:
        return False
    why = refused_origin(handler.headers) if web.may_act else None
    if why:
        handler.send_json(403, {"error": why})
        return True
    op, fields = ACTIONS[path]
    if "id" in fields and not (isinstance(body.get("id"), str) and 0 < len(body["id"]) <= 200):
        handler.send_json(400, {"error": "the body must name the escalation: {\"id\": \"...\"}"})
        return True
    passed: dict[str, Any] = {k: body[k] for k in fields if k in body}
    if path == "/api/release":
        passed["release"] = True
    elif path in ("/api/approve", "/api/deny"):
        passed["approve"] = path == "/api/approve"
    status, answer = web.act(op, passed)
    handler.send_json(status, answer)
    return True
