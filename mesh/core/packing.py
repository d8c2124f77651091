"""What a value costs once packed as msgpack, computed without packing it.

The gossip machine bounds its messages by the bytes and the nesting density the receiver
will see (``mesh.wire`` refuses a frame where some prefix holds more than one array or
map per ``per`` bytes). Core imports no codec, so this module walks the value the way
``msgpack.packb(value, use_bin_type=True)`` would write it and returns the same figures;
``tests/test_packing.py`` checks it against msgpack itself.

What it accepts is what msgpack packs by default: None, bool, int (-2**63 .. 2**64-1),
float (packed as a double), str, bytes/bytearray/memoryview, list/tuple and dict
(subclasses too), nested at most 1024 deep. Anything else raises as ``packb`` does:
TypeError for an unknown type, OverflowError for an int out of range, ValueError for
text that is not UTF-8 encodable or nesting that is too deep.
"""

from __future__ import annotations

MAX_DEPTH = 1024  #: arrays and maps around any value, at most (msgpack's own limit)


def _int_size(v: int) -> int:
    if v >= 0:
        if v < 128:
            return 1
        if v < 1 << 8:
            return 2
        if v < 1 << 16:
            return 3
        if v < 1 << 32:
            return 5
        if v < 1 << 64:
            return 9
        raise OverflowError("Integer value out of range")
    if v >= -32:
        return 1
    if v >= -(1 << 7):
        return 2
    if v >= -(1 << 15):
        return 3
    if v >= -(1 << 31):
        return 5
    if v >= -(1 << 63):
        return 9
    raise OverflowError("Integer value out of range")


def _len_header(n: int, fix: int) -> int:
    """Header bytes of a str (fix=32), array or map (fix=16) of n items."""
    if n < fix:
        return 1
    if fix == 32 and n < 1 << 8:
        return 2
    if n < 1 << 16:
        return 3
    if n < 1 << 32:
        return 5
    raise ValueError("too large to pack")


def _bin_header(n: int) -> int:
    if n < 1 << 8:
        return 2
    if n < 1 << 16:
        return 3
    if n < 1 << 32:
        return 5
    raise ValueError("too large to pack")


def measure(value: object) -> tuple[int, list[int]]:
    """The packed size of ``value``, and the offset just past each array or map in it, in the
    order a streaming unpacker completes them (inner ones first)."""
    ends: list[int] = []
    at = 0
    # An explicit stack, not recursion: as deep as msgpack allows is deeper than Python's limit.
    # ``todo`` holds the items still to pack of the innermost open array or map (reversed), and
    # ``stack`` the same for each enclosing one; an item's depth is len(stack).
    stack: list[list[object]] = []
    todo: list[object] = [value]
    while True:
        while todo:
            v = todo.pop()
            t = type(v)
            if t is str:  # the common cases first, by exact type: this runs for every gossip write
                text: str = v  # type: ignore[assignment]
                n = len(text) if text.isascii() else len(text.encode("utf-8"))
                at += (1 if n < 32 else 2 if n < 256 else _len_header(n, 32)) + n
            elif t is int and -32 <= v < 128:  # type: ignore[operator]
                at += 1
            elif t is dict or t is list or t is tuple or isinstance(v, (list, tuple, dict)):
                box: list[object] | tuple[object, ...] | dict[object, object] = v  # type: ignore[assignment]
                n = len(box)
                at += 1 if n < 16 else _len_header(n, 16)
                if not n:
                    ends.append(at)
                    continue
                if len(stack) >= MAX_DEPTH:  # its items would sit inside more than MAX_DEPTH
                    raise ValueError("recursion limit exceeded")
                items = [x for pair in box.items() for x in pair] if isinstance(box, dict) else list(box)
                items.reverse()  # popped from the end: first item first
                stack.append(todo)
                todo = items
            else:
                at += _scalar_size(v)
        if not stack:
            return at, ends
        ends.append(at)  # the innermost open container has no items left
        todo = stack.pop()


def _scalar_size(v: object) -> int:
    if v is None or v is True or v is False:
        return 1
    if isinstance(v, int):
        return _int_size(int(v))
    if isinstance(v, float):
        return 9
    if isinstance(v, str):
        n = len(v.encode("utf-8"))  # UnicodeEncodeError (a ValueError) for lone surrogates, as packb
        return _len_header(n, 32) + n
    if isinstance(v, (bytes, bytearray, memoryview)):
        n = memoryview(v).nbytes
        return _bin_header(n) + n
    raise TypeError(f"can not serialize {type(v).__name__!r} object")


def density(value: object, per: int, step: int) -> tuple[int, int, int]:
    """``(size, containers, peak)`` of ``value`` packed: its bytes, its arrays and maps, and the most
    that ``per * (arrays and maps completed) - bytes`` reaches over its leading parts, looked at
    every ``step`` bytes (the whole value when it fits in one step)."""
    size, ends = measure(value)
    built = len(ends)
    if size <= step:
        return size, built, per * built
    peak = 0
    done = 0
    for start in range(0, size, step):
        limit = start + step
        while done < built and ends[done] <= limit:
            done += 1
        peak = max(peak, per * done - start)
    return size, built, peak
