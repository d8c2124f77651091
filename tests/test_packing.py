"""mesh.core.packing walks a value as msgpack would pack it: the figures must match msgpack's own."""

import math

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.core.packing import density, measure

STEP = 512


def density_by_msgpack(value: object, per: int, step: int = STEP) -> tuple[int, int, int]:
    """The oracle: pack, then count the arrays and maps a streaming unpacker completes per step."""
    packed = msgpack.packb(value, use_bin_type=True)
    built = 0

    def count(obj: object) -> object:
        nonlocal built
        built += 1
        return obj

    options = dict(raw=False, strict_map_key=False, list_hook=count, object_pairs_hook=count)
    n = len(packed)
    if n <= step:
        msgpack.unpackb(packed, **options)
        return n, built, per * built
    unpacker = msgpack.Unpacker(max_buffer_size=n, **options)
    view = memoryview(packed)
    peak = 0
    for start in range(0, n, step):
        unpacker.feed(view[start:start + step])
        try:
            unpacker.unpack()
        except msgpack.OutOfData:
            pass
        peak = max(peak, per * built - start)
    return n, built, peak


scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
           | st.floats(allow_nan=False) | st.text(max_size=300) | st.binary(max_size=300))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=20) | st.tuples(inner, inner)
                      | st.dictionaries(st.text(max_size=8) | st.integers(-5, 5), inner, max_size=20), max_leaves=200)


@pytest.mark.timeout(120)
@settings(max_examples=400, deadline=None)
@given(values, st.integers(min_value=1, max_value=64))
def test_the_figures_match_what_msgpack_packs_and_a_streaming_unpacker_completes(value, per):
    assert density(value, per, STEP) == density_by_msgpack(value, per)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("value", [0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1, -1, -32, -33, -128,
                                   -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**63), 1.5, math.inf, "", "a" * 31,
                                   "a" * 32, "a" * 255, "a" * 256, "é" * 40000, b"", b"x" * 255, b"x" * 256, b"x" * 70000,
                                   [0] * 15, [0] * 16, [0] * 70000, {i: i for i in range(16)}, [[[]]], {"": {}},
                                   bytearray(b"ab"), memoryview(b"abc"), True, None])
def test_every_length_boundary_packs_to_the_size_msgpack_writes(value):
    assert measure(value)[0] == len(msgpack.packb(value, use_bin_type=True))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("value, error", [(2**64, OverflowError), (-(2**63) - 1, OverflowError), (object(), TypeError),
                                          ({1, 2}, TypeError), ("\ud800", ValueError)])
def test_what_msgpack_refuses_is_refused_with_the_same_kind_of_error(value, error):
    with pytest.raises(error):
        msgpack.packb(value, use_bin_type=True)
    with pytest.raises(error):
        measure(value)


@pytest.mark.timeout(30)
def test_nesting_deeper_than_msgpack_allows_is_refused():
    deep: list = []
    for _ in range(1024):  # as deep as msgpack packs (deeper than Python's recursion limit)
        deep = [deep]
    assert measure(deep)[0] == len(msgpack.packb(deep, use_bin_type=True)) == 1025
    for too_deep in ([deep], _nest(1024, [0]), _nest(1025, 0)):
        with pytest.raises(ValueError):
            msgpack.packb(too_deep, use_bin_type=True)
        with pytest.raises(ValueError):
            measure(too_deep)
    assert measure(_nest(1024, 0))[0] == len(msgpack.packb(_nest(1024, 0), use_bin_type=True))


def _nest(n: int, inner: object) -> object:
    for _ in range(n):
        inner = [inner]
    return inner
