"""Traces across processes and nodes, when OpenTelemetry is installed (``pip install 'mesh[otel]'``).

An ask or a tell made while a span is current carries its W3C ``traceparent`` in the envelope
(the wire's optional ninth field, :data:`mesh.wire.TRACE`); the receiving actor handles it in a
span of its own, child of the sender's, and current while the handler runs, so the asks it
makes go on in the same trace. A pipeline or a choreography run under one span is one trace,
with a span per ask (kind CLIENT, ``ask NAME``) and per handling (kind SERVER or CONSUMER, the
actor's name). Spans are recorded by whatever SDK and exporter the process configured (an
agent a node starts configures its own, for example in its module or ``on_start``); without an
SDK, context still flows and nothing is recorded.

An intention proposed under a span (``propose``) is a span of its own (CLIENT, ``propose``, from
the proposal to its decision); its node passes the traceparent on with the intention (the
proposal's optional ``trace`` field, then the broadcast's), and each listener's
``on_intention`` runs in a CONSUMER span of that trace. The nodes' vote is not a span: its work
is a few state-machine steps, timed within the proposer's span.

Without OpenTelemetry (``ENABLED`` False), or with no span current, nothing is added to a
message and the path costs one test; with a span current, one span per ask or tell sent and per
message handled.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..wire import MAX_TRACE

try:  # an optional extra: everything here is a no-op without it
    from opentelemetry import context as _context
    from opentelemetry import trace as _trace
    from opentelemetry.trace.propagation import _SPAN_KEY
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    ENABLED = True
except ImportError:  # pragma: no cover - the default install
    ENABLED = False

#: The longest traceparent taken from the wire (W3C: 55 characters for version 00).
MAX_TRACEPARENT = MAX_TRACE

if ENABLED:
    _PROPAGATOR = TraceContextTextMapPropagator()
    _CLIENT = _trace.SpanKind.CLIENT
    _PRODUCER = _trace.SpanKind.PRODUCER
    _SERVER = _trace.SpanKind.SERVER
    _CONSUMER = _trace.SpanKind.CONSUMER
    _current = _context.get_current
    # The context's own ContextVar, when the runtime context is the default one: reading it costs a
    # third of get_current() (this runs on every ask and tell once OpenTelemetry is installed).
    _var = getattr(getattr(_context, "_RUNTIME_CONTEXT", None), "_current_context", None)
    if _var is not None and callable(getattr(_var, "get", None)):
        _current = _var.get


def _tracer() -> Any:
    return _trace.get_tracer("mesh")


def active() -> bool:
    """Whether a span is current on this thread (only then do messages carry a trace). The context's
    span read directly: under 0.1 us, on every ask and tell once OpenTelemetry is installed."""
    if not ENABLED:
        return False
    span: Any = _current().get(_SPAN_KEY)
    return span is not None and bool(span.get_span_context().is_valid)


@contextmanager
def sending(target: str, ask: bool, verb: str | None = None) -> Iterator[str | None]:
    """A span for one ask (CLIENT) or tell (PRODUCER) to ``target`` (``verb``: the span's first
    word, "ask" or "tell" by default; "publish" for an event on a topic), yielding the traceparent
    the envelope carries; yields None when no span is current (nothing is recorded then)."""
    if not active():
        yield None
        return
    kind = _CLIENT if ask else _PRODUCER
    with _tracer().start_as_current_span(f"{verb or ('ask' if ask else 'tell')} {target}", kind=kind,
                                         attributes={"mesh.target": target}):
        yield _traceparent()


@contextmanager
def proposing(proposer: str, intention: str) -> Iterator[str | None]:
    """A span (CLIENT, ``propose``) for an intention ``proposer`` proposes, from the proposal to its
    decision, yielding the traceparent the proposal carries to its listeners (each hears it in a
    CONSUMER span of this trace, see :func:`handling`); None when no span is current."""
    if not active():
        yield None
        return
    with _tracer().start_as_current_span("propose", kind=_CLIENT,
                                         attributes={"mesh.proposer": proposer, "mesh.intention": intention}):
        yield _traceparent()


def _traceparent() -> str | None:
    """The current span's W3C traceparent."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


@contextmanager
def handling(actor: str, traceparent: object, ask: bool) -> Iterator[None]:
    """The span in which ``actor`` handles a message that carried ``traceparent`` (untrusted: a
    malformed one starts a trace of its own, as W3C says)."""
    if not ENABLED or type(traceparent) is not str or len(traceparent) > MAX_TRACEPARENT:
        yield
        return
    parent = _PROPAGATOR.extract({"traceparent": traceparent})
    token = _context.attach(parent)
    try:
        with _tracer().start_as_current_span(actor, kind=_SERVER if ask else _CONSUMER,
                                             attributes={"mesh.actor": actor}):
            yield
    finally:
        _context.detach(token)
