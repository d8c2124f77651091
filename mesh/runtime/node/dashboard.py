"""The live dashboard: a page a person keeps open (``/``), fed by server-sent events (``/events``),
and the actions it may take (``POST /api/...``), all on the node's HTTP server (:mod:`.web`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .web import Responder, Web

#: What a page may ask the node to do: path -> (control op, the body's fields it passes on).
ACTIONS = {
    "/api/kill": ("kill", ("reason",)),
    "/api/release": ("kill", ()),
    "/api/approve": ("intent_decide", ("id",)),
    "/api/deny": ("intent_decide", ("id",)),
}

PAGE = b"""<!doctype html><meta charset="utf-8"><title>mesh</title><h1>mesh</h1><pre id="status"></pre>"""


def handle_get(handler: "Responder", path: str, web: "Web") -> bool:
    """Answer a GET of ``path`` if it is the dashboard's; False if not."""
    if path in ("/", "/index.html"):
        handler.send_body(200, PAGE, "text/html; charset=utf-8")
        return True
    return False


def handle_post(handler: "Responder", path: str, body: dict[str, Any], web: "Web") -> bool:
    """Carry out a POST of ``path`` if it is one of the dashboard's actions; False if not."""
    if path not in ACTIONS:
        return False
    op, fields = ACTIONS[path]
    passed: dict[str, Any] = {k: body[k] for k in fields if k in body}
    if path == "/api/release":
        passed["release"] = True
    elif path in ("/api/approve", "/api/deny"):
        passed["approve"] = path == "/api/approve"
    status, answer = web.act(op, passed)
    handler.send_json(status, answer)
    return True
