"""The envelope codec and the error wire form: pure functions, no sockets.

Everything here runs in milliseconds. The rule under test: ``decode`` turns any
byte string into either a list of well-formed envelopes or a WireError, and never
anything else; ``encode`` turns any msgpack value into a frame ``decode`` gives back.
"""

from __future__ import annotations

import math

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh import wire
from mesh.errors import (
    ActorDied,
    ActorNotFound,
    AskTimeout,
    MailboxFull,
    MeshError,
    NodeUnavailable,
    RemoteError,
    SpecError,
    WireError,
    from_wire,
    to_wire,
)
from mesh.wire import Kind, batch_header, decode, encode

INT_EDGES = [
    0,
    1,
    -1,
    127,
    128,
    255,
    256,
    -32,
    -33,
    -128,
    -129,
    65535,
    65536,
    -32768,
    -32769,
    2**31 - 1,
    2**31,
    -(2**31),
    -(2**31) - 1,
    2**32 - 1,
    2**32,
    2**63 - 1,
    2**63,
    -(2**63),
    2**64 - 1,
]

VALUES = {
    "none": None,
    "true": True,
    "false": False,
    "zero": 0,
    "float": 3.25,
    "negative float": -1e300,
    "tiny float": 5e-324,
    "infinity": math.inf,
    "empty str": "",
    "str": "héllo wörld ✓ 🚀",
    "long str": "x" * 70000,
    "empty bytes": b"",
    "bytes": bytes(range(256)),
    "long bytes": b"\x00" * 70000,
    "empty list": [],
    "nested lists": [1, [2, [3, [4, []]]], "a", [b"b", None]],
    "empty dict": {},
    "dict with str keys": {"a": 1, "b": [1, 2], "c": {"d": None}},
    "dict with int keys": {0: "zero", -1: "minus one", 2**64 - 1: "max"},
    "dict with mixed keys": {"a": 1, 2: "b", None: 0, b"raw": 1.5, 2.5: True},
    "dict with tuple keys": {(1, 2): "pair", ("a", (None, 3)): []},
    "long list": list(range(20000)),
    "big dict": {str(i): i for i in range(5000)},
    "ints": INT_EDGES,
}


def envelope(kind=Kind.TELL, msg_id=7, corr_id=0, sender="alice", recipient="bob", body="hi") -> bytes:
    return encode(kind, msg_id, corr_id, sender, recipient, body)


def raw(*fields) -> bytes:
    """A frame packed by plain msgpack, bypassing every check ``encode`` could make."""
    return msgpack.packb(list(fields), use_bin_type=True)


def refused(frame: bytes, **limits) -> WireError:
    with pytest.raises(WireError) as info:
        decode(frame, **limits)
    return info.value


GOOD = envelope(Kind.ASK, 12, 0, "client-1", "echo", {"n": 1, "body": [1, 2.5, "x", b"y", None, True]})


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.name)
def test_an_envelope_of_every_kind_comes_back_unchanged(kind):
    frame = encode(kind, 41, 40, "sender", "recipient", {"op": "ping"})
    assert decode(frame) == [[wire.VERSION, int(kind), 41, 40, "sender", "recipient", {"op": "ping"}]]


@pytest.mark.parametrize("name", list(VALUES))
def test_every_kind_of_msgpack_value_comes_back_unchanged_as_a_body(name):
    value = VALUES[name]
    [env] = decode(encode(Kind.TELL, 1, 0, "a", "b", value))
    assert env[6] == value
    assert type(env[6]) is type(value)


def test_a_tuple_body_comes_back_as_a_list_as_msgpack_has_only_arrays():
    [env] = decode(encode(Kind.TELL, 1, 0, "a", "b", (1, (2, 3))))
    assert env[6] == [1, [2, 3]]


def test_a_dict_with_tuple_keys_comes_back_with_tuple_keys():
    body = {(1, "a"): 1, ((2, 3), None): {"inner": {(4,): 5}}}
    [env] = decode(encode(Kind.ASK, 1, 0, "a", "b", body))
    assert env[6] == body


@pytest.mark.parametrize("value", INT_EDGES)
def test_ids_at_every_msgpack_int_boundary_come_back_unchanged(value):
    [env] = decode(encode(Kind.REPLY, value, value, "a", "b", value))
    assert env[2] == env[3] == env[6] == value


def test_names_may_be_empty_or_unicode_or_long():
    for sender, recipient in [("", ""), ("ünï", "名前"), ("s" * 10000, "r" * 10000)]:
        [env] = decode(encode(Kind.TELL, 1, 0, sender, recipient, None))
        assert (env[4], env[5]) == (sender, recipient)


def test_a_nan_body_comes_back_as_nan():
    [env] = decode(encode(Kind.TELL, 1, 0, "a", "b", math.nan))
    assert math.isnan(env[6])


def test_a_frame_exactly_at_the_size_limit_is_accepted():
    frame = GOOD
    assert decode(frame, max_bytes=len(frame)) == decode(frame)


# --------------------------------------------------------------------------- batches


@pytest.mark.parametrize("n", [1, 2, 15, 16, 17, 200, wire.MAX_BATCH])
def test_a_batch_of_n_envelopes_decodes_to_n_envelopes_in_order(n):
    frames = [encode(Kind.TELL, i, 0, "a", "b", {"i": i}) for i in range(n)]
    decoded = decode(batch_header(n) + b"".join(frames))
    assert len(decoded) == n
    assert [env[2] for env in decoded] == list(range(n))
    assert [env[6] for env in decoded] == [{"i": i} for i in range(n)]


@pytest.mark.parametrize("n", [0, 1, 15, 16, 200, 65535])
def test_a_batch_header_is_the_msgpack_array_header_for_n(n):
    assert batch_header(n) == msgpack.packb([None] * n)[: len(batch_header(n))]
    assert msgpack.unpackb(batch_header(n) + b"\xc0" * n) == [None] * n


def test_a_batch_may_mix_kinds():
    frames = [envelope(kind, i) for i, kind in enumerate(Kind)]
    decoded = decode(batch_header(len(frames)) + b"".join(frames))
    assert [env[1] for env in decoded] == [int(k) for k in Kind]


def test_a_batch_of_one_envelope_is_not_mistaken_for_a_single_envelope():
    assert decode(batch_header(1) + GOOD) == decode(GOOD)


# --------------------------------------------------------------------------- refused frames: size, truncation, garbage


def test_a_frame_one_byte_over_the_size_limit_is_refused_before_decoding():
    err = refused(GOOD, max_bytes=len(GOOD) - 1)
    assert "exceeds" in str(err)


def test_a_frame_over_the_default_limit_is_refused():
    frame = encode(Kind.TELL, 1, 0, "a", "b", b"x" * wire.MAX_FRAME_BYTES)
    assert len(frame) > wire.MAX_FRAME_BYTES
    refused(frame)


def test_every_truncation_of_a_valid_frame_is_refused():
    for cut in range(len(GOOD)):
        with pytest.raises(WireError):
            decode(GOOD[:cut])


def test_every_truncation_of_a_valid_batch_is_refused():
    frame = batch_header(3) + GOOD + envelope() + envelope(Kind.EVENT, body={"x": [1, 2, 3]})
    for cut in range(len(frame)):
        with pytest.raises(WireError):
            decode(frame[:cut])


def test_a_frame_fed_byte_by_byte_is_refused_until_the_last_byte_arrives():
    buf = b""
    for byte in GOOD[:-1]:
        buf += bytes((byte,))
        with pytest.raises(WireError):
            decode(buf)
    assert decode(buf + GOOD[-1:]) == decode(GOOD)


@pytest.mark.parametrize(
    "garbage", [b"\x00", b"\xc0", b"\xc1", b"garbage", GOOD], ids=["int", "nil", "never-used", "text", "envelope"]
)
def test_trailing_garbage_after_a_valid_frame_is_refused(garbage):
    refused(GOOD + garbage)


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\xc1",
        b"\xff" * 64,
        b"\xdd\xff\xff\xff\xff",  # an array that claims 4 billion items
        b"\xdb\xff\xff\xff\xff" + b"x" * 10,  # a str that claims 4 GB
        b"\xc6\x7f\xff\xff\xff",  # a bin that claims 2 GB
        b"\x91" * 5000,  # nesting deeper than the unpacker's stack
        b"\x97\x01\x01\x01\x00\xa2\xff\xfe\xa1b\xc0",  # a sender that is not UTF-8
        b"GET / HTTP/1.1\r\nHost: mesh\r\n\r\n",
    ],
    ids=["empty", "never-used", "ff", "huge-array", "huge-str", "huge-bin", "deep", "bad-utf8", "http"],
)
def test_bytes_that_are_not_msgpack_are_refused(frame):
    refused(frame)


# --------------------------------------------------------------------------- refused frames: schema


@pytest.mark.parametrize(
    "obj",
    [None, 1, -1, 1.5, True, "envelope", b"envelope", {"version": 1}, {}, []],
    ids=["nil", "int", "negative", "float", "bool", "str", "bin", "map", "empty-map", "empty-array"],
)
def test_a_top_level_value_that_is_not_an_array_of_fields_is_refused(obj):
    refused(msgpack.packb(obj, use_bin_type=True))


@pytest.mark.parametrize("count", [1, 2, 6, 8, 20])
def test_an_envelope_with_the_wrong_number_of_fields_is_refused(count):
    fields = [1, 1, 1, 0, "a", "b", None, None, None, None] + [0] * 20
    refused(raw(*fields[:count]))


@pytest.mark.parametrize("version", [0, 2, -1, 255, 1.0, True, "1", None, [1]])
def test_an_envelope_with_the_wrong_version_is_refused(version):
    refused(raw(version, 1, 1, 0, "a", "b", None))


@pytest.mark.parametrize("kind", [0, 8, -1, 99, 2**64 - 1, 1.0, True, "TELL", None, b"\x01"])
def test_an_envelope_of_an_unknown_kind_is_refused(kind):
    refused(raw(1, kind, 1, 0, "a", "b", None))


@pytest.mark.parametrize("bad", [1.0, True, "1", None, b"1", [1], {"id": 1}])
def test_an_envelope_whose_ids_are_not_integers_is_refused(bad):
    refused(raw(1, 1, bad, 0, "a", "b", None))
    refused(raw(1, 1, 1, bad, "a", "b", None))


@pytest.mark.parametrize("bad", [1, None, b"alice", ["alice"], {"name": "alice"}, True, 1.5])
def test_an_envelope_whose_names_are_not_strings_is_refused(bad):
    refused(raw(1, 1, 1, 0, bad, "b", None))
    refused(raw(1, 1, 1, 0, "a", bad, None))


@pytest.mark.parametrize("code", [0, 1, 5, 42, 127])
@pytest.mark.parametrize("data", [b"", b"x", b"\x00" * 4, b"y" * 300], ids=["empty", "1", "4", "300"])
def test_an_extension_type_anywhere_in_a_frame_is_refused(code, data):
    ext = msgpack.ExtType(code, data)
    refused(raw(1, 1, 1, 0, "a", "b", ext))
    refused(raw(1, 1, 1, 0, "a", "b", {"deep": [1, {"er": ext}]}))
    refused(raw(1, 1, 1, 0, "a", "b", {ext: 1}))
    refused(raw(1, ext, 1, 0, "a", "b", None))


@pytest.mark.parametrize(
    "ts", [msgpack.Timestamp(0, 0), msgpack.Timestamp(1, 5), msgpack.Timestamp(2**34, 999_999_999)], ids=["32", "64", "96"]
)
def test_a_timestamp_is_refused(ts):
    refused(raw(1, 1, 1, 0, "a", "b", ts))
    refused(raw(1, 1, 1, 0, "a", "b", [ts]))


@pytest.mark.parametrize(
    "ext",
    [b"\xd4\xff\x00", b"\xc7\x00\xff", b"\xd4\x80\x00", b"\xc7\x00\x05"],
    ids=["ts-fixext1", "ts-empty", "code-128", "code5-empty"],
)
def test_a_hand_made_extension_with_a_negative_or_empty_payload_is_refused(ext):
    head = raw(1, 1, 1, 0, "a", "b")[1:]
    refused(b"\x97" + head + ext)


def test_a_batch_larger_than_the_batch_limit_is_refused():
    n = wire.MAX_BATCH + 1
    refused(batch_header(n) + envelope() * n)
    refused(batch_header(3) + envelope() * 3, max_batch=2)
    assert len(decode(batch_header(2) + envelope() * 2, max_batch=2)) == 2


@pytest.mark.parametrize("position", [0, 1, 7, 15])
@pytest.mark.parametrize(
    "bad",
    [raw(2, 1, 1, 0, "a", "b", None), raw(1, 9, 1, 0, "a", "b", None), raw(1, 1, 1, 0, "a", "b"), raw("x"), msgpack.packb(5)],
    ids=["version", "kind", "short", "str-array", "int"],
)
def test_a_batch_with_one_bad_envelope_is_refused_whole(position, bad):
    parts = [envelope(msg_id=i) for i in range(16)]
    parts[position] = bad
    refused(batch_header(16) + b"".join(parts))


def test_a_batch_header_with_fewer_envelopes_than_it_claims_is_refused():
    refused(batch_header(5) + envelope() * 4)
    refused(batch_header(0))


# --------------------------------------------------------------------------- encode


@pytest.mark.parametrize(
    "body",
    [object(), {1, 2}, frozenset(), {"nested": [1, object()]}, 2**64, -(2**63) - 1, "\ud800", {"k": {b"x": 1j}}],
    ids=["object", "set", "frozenset", "nested-object", "int-too-big", "int-too-small", "surrogate", "complex"],
)
def test_encoding_a_body_that_is_not_a_msgpack_value_raises_wire_error(body):
    with pytest.raises(WireError, match="not serializable"):
        encode(Kind.TELL, 1, 0, "a", "b", body)


def test_encoding_a_body_nested_deeper_than_the_packer_allows_raises_wire_error():
    body: list = []
    for _ in range(2000):
        body = [body]
    with pytest.raises(WireError):
        encode(Kind.TELL, 1, 0, "a", "b", body)


def test_a_failed_encode_leaves_nothing_behind_for_the_next_one():
    with pytest.raises(WireError):
        encode(Kind.TELL, 1, 0, "a", "b", ["a" * 100, object()])
    assert encode(Kind.TELL, 1, 0, "a", "b", "ok") == raw(1, 1, 1, 0, "a", "b", "ok")
    assert decode(encode(Kind.TELL, 1, 0, "a", "b", "ok"))[0][6] == "ok"


# --------------------------------------------------------------------------- fuzzing

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(
        st.text(max_size=8) | st.integers(-(2**63), 2**64 - 1) | st.tuples(st.integers(-5, 5), st.text(max_size=3)),
        children,
        max_size=5,
    ),
    max_leaves=20,
)

kinds = st.sampled_from(list(Kind))
ids = st.integers(min_value=-(2**63), max_value=2**64 - 1)


@settings(max_examples=300, deadline=None)
@given(kinds, ids, ids, st.text(max_size=20), st.text(max_size=20), msgpack_values)
def test_any_envelope_of_msgpack_values_survives_a_round_trip(kind, msg_id, corr_id, sender, recipient, body):
    assert decode(encode(kind, msg_id, corr_id, sender, recipient, body)) == [
        [wire.VERSION, int(kind), msg_id, corr_id, sender, recipient, body]
    ]


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_random_bytes_never_raise_anything_but_wire_error(data):
    try:
        result = decode(data)
    except WireError:
        return
    for env in result:
        wire.check_envelope(env)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=512))
def test_random_bytes_after_a_batch_header_never_raise_anything_but_wire_error(data):
    for n in (1, 3, 16):
        try:
            decode(batch_header(n) + data)
        except WireError:
            pass


@settings(max_examples=1000, deadline=None)
@given(st.data())
def test_a_valid_frame_with_random_byte_flips_decodes_to_valid_envelopes_or_raises_wire_error(data):
    frame = bytearray(data.draw(st.sampled_from([GOOD, batch_header(2) + GOOD + envelope(Kind.EVENT, body=[1, {"a": b"b"}])])))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        pos = data.draw(st.integers(min_value=0, max_value=len(frame) - 1))
        frame[pos] ^= data.draw(st.integers(min_value=1, max_value=255))
    try:
        result = decode(bytes(frame))
    except WireError:
        return
    assert result
    for env in result:
        assert wire.check_envelope(env) is env


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_valid_frame_with_random_bytes_inserted_or_deleted_never_raises_anything_but_wire_error(data):
    frame = bytearray(GOOD)
    pos = data.draw(st.integers(min_value=0, max_value=len(frame) - 1))
    if data.draw(st.booleans()):
        frame[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    else:
        del frame[pos : pos + data.draw(st.integers(min_value=1, max_value=8))]
    try:
        for env in decode(bytes(frame)):
            wire.check_envelope(env)
    except WireError:
        pass


# --------------------------------------------------------------------------- errors on the wire


@pytest.mark.parametrize(
    "cls,code",
    [
        (ActorNotFound, "not_found"),
        (ActorDied, "died"),
        (MailboxFull, "mailbox_full"),
        (AskTimeout, "timeout"),
        (WireError, "bad_request"),
    ],
)
def test_each_typed_error_crosses_the_wire_as_its_own_type_with_its_message(cls, code):
    original = cls(f"something about {code} – ünïcode")
    body = to_wire(original)
    assert body == {"code": code, "message": str(original)}
    [env] = decode(encode(Kind.FAIL, 2, 1, "x", "y", body))
    rebuilt = from_wire(env[6])
    assert type(rebuilt) is cls
    assert str(rebuilt) == str(original)
    assert isinstance(rebuilt, MeshError)


def test_a_remote_error_crosses_the_wire_with_its_type_message_and_traceback():
    original = RemoteError("KeyError", "'missing'", "Traceback (most recent call last):\n  File ...\nKeyError: 'missing'\n")
    [env] = decode(encode(Kind.FAIL, 2, 1, "x", "y", to_wire(original)))
    rebuilt = from_wire(env[6])
    assert type(rebuilt) is RemoteError
    assert (rebuilt.type, rebuilt.message, rebuilt.traceback) == (original.type, original.message, original.traceback)
    assert str(rebuilt) == "KeyError: 'missing'"


def test_a_user_exception_crosses_the_wire_as_a_remote_error_naming_its_class():
    class Boom(Exception):
        pass

    body = to_wire(Boom("it broke"), "the traceback text")
    assert body["code"] == "remote" and body["type"].endswith(".Boom")
    assert (body["message"], body["traceback"]) == ("it broke", "the traceback text")
    rebuilt = from_wire(decode(encode(Kind.FAIL, 2, 1, "x", "y", body))[0][6])
    assert type(rebuilt) is RemoteError
    assert rebuilt.type.endswith("Boom") and rebuilt.message == "it broke" and rebuilt.traceback == "the traceback text"


@pytest.mark.parametrize(
    "exc",
    [NodeUnavailable("gone"), SpecError("f.toml", "node.name", "bad"), MeshError("plain")],
    ids=lambda e: type(e).__name__,
)
def test_an_untyped_mesh_error_crosses_the_wire_as_a_remote_error(exc):
    rebuilt = from_wire(to_wire(exc))
    assert type(rebuilt) is RemoteError
    assert rebuilt.type == type(exc).__qualname__
    assert rebuilt.message == str(exc)


@pytest.mark.parametrize(
    "body",
    [
        None,
        5,
        "boom",
        b"boom",
        [1, 2],
        {},
        {"code": "no_such_code", "message": "m"},
        {"code": ["unhashable"]},
        {"code": 3, "message": 4},
        {"message": None, "type": None, "traceback": None},
    ],
    ids=["nil", "int", "str", "bytes", "list", "empty", "unknown-code", "list-code", "int-code", "nones"],
)
def test_a_malformed_fail_body_becomes_a_remote_error_instead_of_raising(body):
    rebuilt = from_wire(body)
    assert isinstance(rebuilt, RemoteError)
    assert isinstance(rebuilt.type, str) and isinstance(rebuilt.message, str) and isinstance(rebuilt.traceback, str)


@settings(max_examples=300, deadline=None)
@given(msgpack_values)
def test_from_wire_turns_any_msgpack_value_into_a_mesh_error(body):
    assert isinstance(from_wire(body), MeshError)


# --------------------------------------------------------------------------- what a frame may cost (issue 10)

_HEAD6 = msgpack.packb([1, int(Kind.ASK), 7, 0, "a", "b"])[1:]  # six fields without their array header


def _envelope_with_body(body: bytes) -> bytes:
    return b"\x97" + _HEAD6 + body


def _array32(n: int, item: bytes) -> bytes:
    return b"\xdd" + n.to_bytes(4, "big") + item * n


def test_a_large_frame_that_opens_with_an_array_of_millions_is_refused_from_its_header():
    frame = _array32(wire.MAX_FRAME_BYTES - 5, b"\x90")
    with pytest.raises(WireError, match="neither an envelope nor a batch"):
        decode(frame)


@pytest.mark.parametrize("item", [b"\x90", b"\x80", b"\x91\x00"], ids=["empty arrays", "empty maps", "one-item arrays"])
def test_a_large_body_made_of_tiny_containers_is_refused_before_they_are_all_built(item):
    n = (2 * 1024 * 1024) // len(item)
    with pytest.raises(WireError, match="arrays and maps"):
        decode(_envelope_with_body(_array32(n, item)))


def test_tiny_containers_nested_two_deep_count_the_same():
    inner = b"\xdc\x07\xfe" + b"\x90" * 2046
    frame = _envelope_with_body(b"\xdc\x03\xe8" + inner * 1000)
    with pytest.raises(WireError, match="arrays and maps"):
        decode(frame)


def test_large_legitimate_bodies_still_decode():
    pairs = [[i % 100, 2] for i in range(100_000)]  # 3 bytes an array: the densest data allowed
    records = [{"id": i, "ok": True} for i in range(20_000)]
    blob = b"x" * (3 * 1024 * 1024)
    for body in (pairs, records, blob, {(1, 2): [[]] * 10, "k": records}):
        frame = encode(Kind.TELL, 1, 0, "a", "b", body)
        assert len(frame) > wire.SMALL_FRAME
        assert decode(frame)[0][6] == body


def test_a_batch_over_the_limit_is_refused_from_the_header_of_a_large_frame():
    env = encode(Kind.TELL, 1, 0, "a", "b", "x" * 100)
    frame = batch_header(wire.MAX_BATCH + 1) + env * (wire.MAX_BATCH + 1)
    assert len(frame) > wire.SMALL_FRAME
    with pytest.raises(WireError, match="batch of at most"):
        decode(frame)
    assert len(decode(batch_header(wire.MAX_BATCH) + env * wire.MAX_BATCH)) == wire.MAX_BATCH


def test_a_stricter_budget_can_be_asked_for():
    frame = encode(Kind.TELL, 1, 0, "a", "b", [[i % 100, 2] for i in range(100_000)])
    with pytest.raises(WireError, match="one per 16 bytes"):
        decode(frame, bytes_per_container=16)
    with pytest.raises(WireError, match="one per 16 bytes"):
        wire.decode_one(frame, bytes_per_container=16)


def test_the_collector_is_running_again_after_a_refused_large_frame():
    import gc

    with pytest.raises(WireError):
        decode(_envelope_with_body(_array32(1 << 20, b"\x90")))
    assert gc.isenabled()


@pytest.mark.parametrize("field", [0, 1, 2, 4])
def test_a_field_nested_1000_deep_is_a_wire_error_not_a_recursion_error(field):
    fields = [msgpack.packb(x) for x in [1, int(Kind.TELL), 1, 0, "a", "b", None]]
    fields[field] = b"\x91" * 1000 + b"\x01"
    with pytest.raises(WireError):
        decode(b"\x97" + b"".join(fields))


def test_nesting_deeper_than_msgpack_decodes_says_so():
    with pytest.raises(WireError, match="1024 levels"):
        decode(_envelope_with_body(b"\x91" * 5000 + b"\xc0"))
    with pytest.raises(WireError, match="1024 levels"):
        decode(_envelope_with_body(b"\x91" * 5000 + b"\xc0") + b"\x00" * wire.SMALL_FRAME)
