"""The node's control operations: an explicit table of ops and their argument checks, and one
path from a request to its answer (mesh/runtime/node/ops.py). No socket: the answers are read
where every answer of the node leaves, Replies.send."""

from __future__ import annotations

import math

import pytest

from mesh import wire
from mesh.errors import NotLeader, ReservedKey, WireError, from_wire
from mesh.runtime.node.ops import (Control, Integer, Op, Prefix, Present, Seconds, Text, check_topic_field,
                                   writable_key)
from mesh.runtime.node.replies import DEFER, Replies

pytestmark = [pytest.mark.fast_check, pytest.mark.timeout(10)]


class SentReplies(Replies):
    """Replies that keep what they would send to the ROUTER."""

    def __init__(self) -> None:
        super().__init__(router=None)  # nothing reaches a socket: send() is replaced
        self.sent: list[tuple[bytes, list]] = []

    def send(self, ident: bytes, frame: bytes) -> None:
        (env,) = wire.decode(frame)
        self.sent.append((ident, env))


def request(control: Control, body: dict, msg_id: int = 7) -> None:
    control.handle(b"peer", [wire.VERSION, int(wire.Kind.CONTROL), msg_id, 0, "asker", "$node", body])


def control_with(ops: dict[str, Op]) -> tuple[Control, SentReplies]:
    replies = SentReplies()
    return Control("n1", ops, replies), replies


def test_an_op_answers_its_result_to_the_asker_with_the_request_id():
    control, replies = control_with({"ping": Op(lambda body: {"pong": True})})
    request(control, {"op": "ping"}, msg_id=42)
    ((ident, env),) = replies.sent
    assert ident == b"peer"
    assert (env[1], env[3], env[4], env[5], env[6]) == (wire.Kind.REPLY, 42, "$node", "asker", {"pong": True})


@pytest.mark.parametrize("op", ["no_such_op", "", "_op_ping", "__init__", "control_ops", "x" * 10_000])
def test_only_ops_in_the_table_run_anything_else_is_an_unknown_op(op):
    control, replies = control_with({"ping": Op(lambda body: {})})
    request(control, {"op": op})
    ((_, env),) = replies.sent
    assert env[1] == wire.Kind.FAIL and env[6]["code"] == "bad_request"
    assert "unknown op" in env[6]["message"]


def test_checks_run_in_order_before_the_handler_and_the_first_failure_is_the_answer():
    called = []

    def not_leader(body):
        raise NotLeader("node n1 is not the leader")

    control, replies = control_with({
        "fields": Op(called.append, (Text("name"), Integer("pid"))),
        "leading": Op(called.append, (not_leader, Text("name"))),
    })
    request(control, {"op": "fields", "name": "a", "pid": "1"})
    request(control, {"op": "leading"})
    assert called == []
    (_, pid), (_, lead) = replies.sent
    assert type(from_wire(pid[6])) is WireError and "field 'pid' must be an integer" in pid[6]["message"]
    assert type(from_wire(lead[6])) is NotLeader


def test_a_deferred_op_gets_the_waiter_and_answers_later_through_it():
    waiting = []

    def acquire(body, waiter):
        waiting.append(waiter)
        return DEFER

    control, replies = control_with({"acquire": Op(acquire, deferred=True)})
    request(control, {"op": "acquire"}, msg_id=9)
    assert replies.sent == []
    replies.reply(waiting[0], {"granted": 1})
    ((ident, env),) = replies.sent
    assert (ident, env[1], env[3], env[5], env[6]) == (b"peer", wire.Kind.REPLY, 9, "asker", {"granted": 1})


def test_a_handler_that_trips_on_a_field_is_a_bad_request_and_any_other_failure_is_answered_too():
    def overflow(body):
        return int(body["offset"])

    def broken(body):
        raise RuntimeError("oops")

    control, replies = control_with({"logs": Op(overflow), "broken": Op(broken)})
    request(control, {"op": "logs", "offset": math.inf})
    request(control, {"op": "broken"})
    (_, bad), (_, failed) = replies.sent
    assert bad[6]["code"] == "bad_request" and "bad logs request: OverflowError" in bad[6]["message"]
    assert failed[1] == wire.Kind.FAIL and "broken failed on node n1: RuntimeError: oops" in failed[6]["message"]


def test_a_result_that_cannot_travel_is_answered_as_a_failure():
    control, replies = control_with({"odd": Op(lambda body: {"value": object()})})
    request(control, {"op": "odd"})
    ((_, env),) = replies.sent
    assert env[1] == wire.Kind.FAIL


@pytest.mark.parametrize("check, body, error", [
    (Text("name"), {}, "field 'name' must be a non-empty string"),
    (Text("name"), {"name": ""}, "field 'name' must be a non-empty string"),
    (Text("name"), {"name": 5}, "field 'name' must be a non-empty string"),
    (Integer("pid"), {"pid": True}, "field 'pid' must be an integer"),
    (Integer("pid"), {"pid": 1.0}, "field 'pid' must be an integer"),
    (Seconds("timeout"), {"timeout": -1}, "field 'timeout' must be a number of seconds"),
    (Seconds("timeout"), {"timeout": math.nan}, "field 'timeout' must be a number of seconds"),
    (Seconds("timeout"), {"timeout": None}, "field 'timeout' must be a number of seconds"),
    (Present("value"), {}, "field 'value' is missing"),
    (Prefix("prefix"), {"prefix": 5}, "field 'prefix' must be a string"),
    (check_topic_field, {"topic": "a/b"}, "a topic is"),
    (writable_key, {"key": "$agents/x"}, "is reserved"),
])
def test_each_check_refuses_a_bad_field_with_a_wire_error_naming_it(check, body, error):
    with pytest.raises(WireError, match=error.replace("$", r"\$")):
        check(body)


@pytest.mark.parametrize("check, body", [
    (Text("name"), {"name": "a"}), (Integer("pid"), {"pid": 0}), (Seconds("timeout"), {}),
    (Seconds("timeout"), {"timeout": 0}), (Present("value"), {"value": None}), (Prefix("prefix"), {}),
    (Prefix("prefix"), {"prefix": None}), (check_topic_field, {"topic": "news"}), (writable_key, {"key": "k"}),
])
def test_each_check_lets_a_good_field_through(check, body):
    check(body)


def test_a_reserved_key_is_refused_as_reserved():
    with pytest.raises(ReservedKey):
        writable_key({"key": "$kill"})
