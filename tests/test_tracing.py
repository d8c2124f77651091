"""Traces (issue 16): with OpenTelemetry's SDK, asks and tells made under a span carry W3C trace
context across processes and nodes; a pipeline across two nodes is one trace, a span per stage."""

from __future__ import annotations

import contextlib
import threading

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import mesh
from conftest import wait_until
from mesh import wire
from mesh.errors import WireError
from mesh.patterns import Pipeline, Stage
from mesh.runtime.server import Server

pytestmark = pytest.mark.timeout(90)

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def provider():
    """The process's tracer provider (OpenTelemetry lets a process set it once)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        chosen = TracerProvider()
        chosen.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(chosen)
    yield


class Step(mesh.Actor):
    """A pipeline stage: notes its name in the context; ``then`` asks another actor first."""

    def __init__(self, then: str | None = None):
        self.then = then

    def on_message(self, message):
        if self.then:
            self.mesh.actor(self.then).ask({"from": self.mesh.name}, timeout=10)
        return {"by": self.mesh.name}


class Sink(mesh.Actor):
    def __init__(self):
        self.got = threading.Event()

    def on_message(self, message):
        self.got.set()


def serve(actor, name: str, node) -> Server:
    server = Server(actor, name, node.address)
    threading.Thread(target=server.run, daemon=True).start()
    wait_until(lambda: any(x["name"] == name and x["state"] == "running" for x in node.status()["agents"]), 15,
               f"{name} registered")
    return server


def test_a_pipeline_across_two_nodes_is_one_trace_with_a_span_per_stage(start_node):
    a = start_node("", name="a")
    b = start_node("", name="b", args=("--join", a.address))
    wait_until(lambda: len([m for m in a.status()["members"] if m["state"] == "alive"]) == 2, 20, "a and b to meet")
    servers = [serve(Step(), "st1", a), serve(Step(then="st3"), "st2", b), serve(Step(), "st3", a)]
    try:
        client = a.client()
        wait_until(lambda: client.actor("st2").ask({}, timeout=5), 15, "st2 reachable from a")  # not under a span
        EXPORTER.clear()
        tracer = trace.get_tracer("test")
        with tracer.start_as_current_span("pipeline run") as root:
            report = Pipeline([Stage("first", "st1", timeout=10), Stage("second", "st2", timeout=10)], client).run({})
        assert report["status"] == "ok"
        expected = {"pipeline run", "ask st1", "st1", "ask st2", "st2", "ask st3", "st3"}
        # A handler's span ends just after its reply is sent: the asker may be back first.
        spans = wait_until(lambda: (found := {s.name: s for s in EXPORTER.get_finished_spans()}).keys() >= expected
                           and found, 10, "every span ended")
        trace_id = root.get_span_context().trace_id
        assert {s.context.trace_id for s in spans.values()} == {trace_id}  # one trace
        # Each stage's handling is a child of the ask that reached it, across processes' wire.
        for asked in ("st1", "st2", "st3"):
            assert spans[asked].parent.span_id == spans[f"ask {asked}"].context.span_id
            assert spans[asked].kind == trace.SpanKind.SERVER
        assert spans["ask st3"].parent.span_id == spans["st2"].context.span_id  # asked inside st2's handler
        assert spans["ask st1"].parent.span_id == spans["pipeline run"].context.span_id
        # Outside any span nothing is traced: no span for an ask made then.
        EXPORTER.clear()
        assert client.actor("st1").ask({}, timeout=5) == {"by": "st1"}
        assert EXPORTER.get_finished_spans() == ()
    finally:
        for server in servers:
            server.request_stop()


def test_a_tell_under_a_span_is_handled_in_a_consumer_span_of_the_same_trace(start_node):
    a = start_node("", name="a")
    sink = Sink()
    server = serve(sink, "sink", a)
    try:
        EXPORTER.clear()
        with trace.get_tracer("test").start_as_current_span("send") as root:
            a.client().actor("sink").tell("hello")
        assert sink.got.wait(10)
        got = wait_until(lambda: {s.name: s for s in EXPORTER.get_finished_spans()}.get("sink"), 10, "the sink's span")
        assert got.kind == trace.SpanKind.CONSUMER and got.context.trace_id == root.get_span_context().trace_id
    finally:
        server.request_stop()


def test_a_traced_envelope_is_checked_like_any_other():
    frame = wire.encode_traced(2, 7, "c", "x", {"n": 1}, [], "00-" + "1" * 32 + "-" + "2" * 16 + "-01")
    (env,) = wire.decode(frame)
    assert len(env) == 9 and env[wire.TRACE].startswith("00-")
    import msgpack

    for bad in ([1, 2, 7, 0, "c", "x", None, [], 5], [1, 2, 7, 0, "c", "x", None, [], "t" * 200],
                [1, 3, 7, 0, "c", "x", None, [], "00-x"], [1, 2, 7, 0, "c", "x", None, "notalist", "00-x"]):
        with pytest.raises(WireError):
            wire.decode(msgpack.packb(bad))


def test_without_opentelemetry_nothing_is_traced_and_messages_keep_seven_fields():
    import subprocess
    import sys

    code = """
import sys
sys.modules["opentelemetry"] = None  # as if it were not installed
from mesh.runtime import tracing
from mesh.runtime import ref
assert not tracing.ENABLED and not ref.TRACED and not tracing.active()
with tracing.sending("x", ask=True) as traceparent:
    assert traceparent is None
with tracing.handling("x", "00-" + "1" * 32 + "-" + "2" * 16 + "-01", ask=True):
    pass
with tracing.proposing("p", "p-1") as traceparent:
    assert traceparent is None
print("ok")
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


@contextlib.contextmanager
def alone(start_node, actor, name: str):
    """Node ``a`` serving ``actor`` as ``name`` in this process: a client of it, no spans yet."""
    a = start_node("", name="a")
    server = serve(actor, name, a)
    try:
        client = a.client()
        EXPORTER.clear()
        yield client
    finally:
        server.request_stop()


def test_an_ask_async_under_a_span_carries_the_trace(start_node):
    import asyncio

    with alone(start_node, Step(), "st1") as client:
        async def traced():
            with trace.get_tracer("test").start_as_current_span("async root") as root:
                assert await client.actor("st1").ask_async({}, timeout=10) == {"by": "st1"}
                return root

        root = asyncio.run(traced())
        spans = wait_until(lambda: (found := {s.name: s for s in EXPORTER.get_finished_spans()}).keys()
                           >= {"ask st1", "st1"} and found, 10, "the spans ended")
        assert spans["st1"].context.trace_id == root.get_span_context().trace_id
        assert spans["st1"].parent.span_id == spans["ask st1"].context.span_id


class Listener(mesh.Actor):
    def on_start(self):
        self.mesh.subscribe("traced-topic")

    def on_event(self, event):
        pass


def test_an_event_published_under_a_span_is_handled_in_the_same_trace(start_node):
    with alone(start_node, Listener(), "listener") as client:
        def published():
            with trace.get_tracer("test").start_as_current_span("announce") as root:
                client.publish("traced-topic", {"n": 1})
            return root

        # The subscription reaches the node's forwarder in a moment: publish until one is heard.
        def heard():
            root = published()
            spans = [s for s in EXPORTER.get_finished_spans() if s.name == "listener"]
            return spans and (root, spans[0])

        root, handled = wait_until(heard, 15, "the listener's span", interval=0.2)
        assert handled.kind == trace.SpanKind.CONSUMER
        publish_spans = {s.context.span_id: s for s in EXPORTER.get_finished_spans() if s.name == "publish traced-topic"}
        assert handled.parent.span_id in publish_spans  # a child of a publish span ...
        assert handled.context.trace_id == publish_spans[handled.parent.span_id].context.trace_id  # ... of its trace


def test_a_tell_async_under_a_span_is_handled_in_a_consumer_span_of_the_same_trace(start_node):
    import asyncio

    sink = Sink()
    with alone(start_node, sink, "sink") as client:
        async def traced():
            with trace.get_tracer("test").start_as_current_span("async send") as root:
                await client.actor("sink").tell_async("hello")
                return root

        root = asyncio.run(traced())
        assert sink.got.wait(10)
        spans = wait_until(lambda: (found := {s.name: s for s in EXPORTER.get_finished_spans()}).keys()
                           >= {"tell sink", "sink"} and found, 10, "the spans ended")
        assert spans["tell sink"].kind == trace.SpanKind.PRODUCER
        assert spans["sink"].kind == trace.SpanKind.CONSUMER
        assert spans["sink"].context.trace_id == root.get_span_context().trace_id
        assert spans["sink"].parent.span_id == spans["tell sink"].context.span_id


class Hearer(mesh.Actor):
    """Hears intentions; notes the trace each was heard in."""

    def __init__(self):
        self.heard: list[int] = []

    def on_intention(self, intention):
        self.heard.append(trace.get_current_span().get_span_context().trace_id)


def test_an_intention_proposed_under_a_span_is_heard_in_the_same_trace_across_two_nodes(start_node):
    from mesh.runtime.intents import propose

    a = start_node("", name="a")
    b = start_node("", name="b", args=("--join", a.address))
    wait_until(lambda: all(n.status()["leader"] == "a" and len([m for m in n.status()["members"]
                                                                if m["state"] == "alive"]) == 2 for n in (a, b)),
               20, "a and b to meet, a leading")
    hearer = Hearer()
    server = serve(hearer, "hearer", b)  # on b; the proposal goes through a
    try:
        client = a.client()
        wait_until(lambda: "hearer" in client.control("intent_listeners")["actors"], 20, "the hearer listening")
        tracer = trace.get_tracer("test")

        def proposed():
            EXPORTER.clear()
            with tracer.start_as_current_span("plan") as root:
                decision = propose(client, "planner", "deploy", claims=["env:staging"], window=10.0,
                                   require=["hearer"], hold=5.0)
            decision.done()
            return decision.approved and root

        # The voters settle after the election: propose until one is approved (the hearer answered it).
        root = wait_until(proposed, 20, "an intention approved", interval=0.2)
        trace_id = root.get_span_context().trace_id
        spans = wait_until(lambda: (found := {s.name: s for s in EXPORTER.get_finished_spans()}).keys()
                           >= {"plan", "propose", "hearer"} and found, 10, "the spans ended")
        assert spans["propose"].kind == trace.SpanKind.CLIENT
        assert spans["propose"].parent.span_id == root.get_span_context().span_id
        assert spans["propose"].attributes["mesh.proposer"] == "planner"
        heard = spans["hearer"]  # on_intention, in a CONSUMER span: a child of the proposal, across a and b
        assert heard.kind == trace.SpanKind.CONSUMER and heard.context.trace_id == trace_id
        assert heard.parent.span_id == spans["propose"].context.span_id
        assert hearer.heard[-1] == trace_id  # current while on_intention ran
        # Outside any span: nothing traced, the intention heard all the same.
        EXPORTER.clear()
        before = len(hearer.heard)
        propose(client, "planner", "deploy", window=10.0, require=["hearer"]).done()
        assert len(hearer.heard) == before + 1 and hearer.heard[-1] == 0  # no span was current
        assert EXPORTER.get_finished_spans() == ()
    finally:
        server.request_stop()


def test_a_malformed_traceparent_from_outside_starts_no_span_of_its_trace():
    from mesh.runtime import tracing

    EXPORTER.clear()
    for bad in (5, None, b"00-x", "t" * 200):  # not a string, or too long: no span at all
        with tracing.handling("x", bad, ask=False):
            assert not tracing.active()
    assert EXPORTER.get_finished_spans() == ()
    with tracing.handling("x", "00-not-a-traceparent", ask=False):  # a string W3C refuses: a trace of its own
        assert tracing.active()
    (span,) = EXPORTER.get_finished_spans()
    assert span.parent is None and span.kind == trace.SpanKind.CONSUMER
