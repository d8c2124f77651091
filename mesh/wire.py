"""The envelope codec: the one place where bytes become messages.

Every frame on every mesh socket carries one msgpack *array* envelope::

    [version, kind, msg_id, corr_id, sender, recipient, body]

``version`` is :data:`VERSION`; ``kind`` one of :class:`Kind`; ``msg_id`` a
per-sender integer; ``corr_id`` the ``msg_id`` an envelope answers (0 when it
answers nothing); ``sender`` and ``recipient`` are names; ``body`` any msgpack
value. An array rather than a map keeps packing and checking cheap: the message
path is the hot path.

A *batch* frame is a msgpack array of envelopes. Senders that run ahead of the
socket put several tells in one frame, an asyncio client the asks it made in one
turn of its event loop, and an actor its answers to such a batch's asks; receivers
unpack it with one call.

Frames come from the network, so nothing is trusted: the size is capped before
decoding, msgpack's own limits are bounded by the frame size, extension types
(timestamps included) are refused, and the schema is checked field by field. Any
violation raises :class:`mesh.errors.WireError` naming what is wrong.

What a frame may cost (issue 10). Decoding builds one Python object per msgpack
object, and an array or a map is the dear kind: an empty array is one byte on the
wire and a tracked list in memory (64 bytes, and work for the garbage collector), so
one 4 MiB frame of empty arrays used to build 4 million lists (about 1.6 s, 256 MB).
The limits, all checked while msgpack reads the frame, before the objects they refuse
are built:

* frames up to SMALL_FRAME bytes decode as they are: they hold at most that many
  objects (a few milliseconds at worst), and they are the message path;
* a larger frame must be an array of 7 or 8 fields (an envelope) or of at most
  ``max_batch`` envelopes: its header is read before anything is decoded;
* a larger frame may hold at most one array or map per ``bytes_per_container``
  bytes (BYTES_PER_CONTAINER), with SMALL_FRAME bytes of slack: it is fed to msgpack
  one SMALL_FRAME chunk at a time, the arrays and maps built are counted, and the frame
  is refused after the first chunk that puts them over the budget of the bytes fed so
  far (so a hostile frame costs one chunk's worth of objects); the collector is paused
  meanwhile (it would otherwise scan the young lists again and again). The gossip
  layer builds its messages within the same rule (GossipConfig.bytes_per_container);
  a sender whose well-formed ask or request is refused is answered why (:func:`refusal`);
* nesting: msgpack's C unpacker stops at 1024 levels (the envelope is one of them);
  error messages never print a nested value, so a deep one cannot overflow the stack.
"""

from __future__ import annotations

import enum
import gc
from collections.abc import Callable
from typing import Any, TypeAlias

import msgpack

from .errors import WireError, to_wire

VERSION = 1

#: Where each field sits in an envelope, as in ``env[BODY]``. Plain ints rather than a named
#: tuple: indexing a list with one costs what indexing with a literal does, and this is the
#: message path.
VERSION_FIELD, KIND, MSG_ID, CORR_ID, SENDER, RECIPIENT, BODY, WAITING, TRACE = range(9)

#: The kinds whose envelope may carry a trace (``TRACE``: a W3C traceparent, with ``WAITING``, an
#: empty list but for an ask made in a handler, before it): asks, tells and events, by
#: :mod:`mesh.runtime.tracing` when a span is current.
_TRACED_KINDS = frozenset((1, 2, 6, 7))
#: The longest traceparent taken from outside, on an envelope or an intention (W3C: 55 characters
#: for version 00).
MAX_TRACE = 128

#: A checked envelope: a list with the fields above (``WAITING`` only on some asks). Fields are
#: of different types, so a list of Any: each reader knows which field it takes.
Envelope: TypeAlias = list[Any]

#: Default cap on one frame, in bytes. Sockets facing the network also get it as
#: ZMQ_MAXMSGSIZE, so larger frames are cut off by libzmq before they reach Python.
MAX_FRAME_BYTES = 4 * 1024 * 1024

#: Default cap on the number of envelopes in one batch frame.
MAX_BATCH = 1024

#: The longest chain of waiting actors an ask may carry.
MAX_CHAIN = 256

#: Frames up to this many bytes decode without counting (see the module note), in bytes.
SMALL_FRAME = 64 * 1024

#: A frame above SMALL_FRAME may hold at most one array or map per this many bytes on average.
#: 3 lets user data through (a list of small pairs, ``[1, 2]``, is 3 bytes an array) and refuses
#: frames made mostly of empty or one-item arrays: a 4 MiB frame is refused after 1.4 million.
BYTES_PER_CONTAINER = 3


class Kind(enum.IntEnum):
    TELL = 1  #: fire and forget
    ASK = 2  #: expects REPLY or FAIL with corr_id = this msg_id
    REPLY = 3  #: successful answer
    FAIL = 4  #: error answer; body is an errors.to_wire() dict
    CONTROL = 5  #: request to a node (body is a dict with "op"); answered like ASK
    EVENT = 6  #: notification from a node; no answer
    TELL_ACK = 7  #: a tell the receiver acknowledges (REPLY, corr_id = msg_id) after handling it


_KINDS = frozenset(int(k) for k in Kind)

_packb = msgpack.Packer(use_bin_type=True, autoreset=True).pack
_unpackb = msgpack.unpackb


def _refuse_ext(code: int, data: bytes) -> object:
    raise WireError(f"extension type {code} is not allowed")


def encode(kind: int, msg_id: int, corr_id: int, sender: str, recipient: str, body: object) -> bytes:
    """Pack one envelope. Raises WireError if ``body`` is not a msgpack value."""
    try:
        return _packb([VERSION, kind, msg_id, corr_id, sender, recipient, body])
    except (TypeError, ValueError, OverflowError) as exc:
        raise WireError(f"message is not serializable: {exc}") from None


def encode_traced(kind: int, msg_id: int, sender: str, recipient: str, body: object, waiting: list[str],
                  traceparent: str) -> bytes:
    """An ASK, TELL, TELL_ACK or EVENT that carries a trace: 9 fields, ``waiting`` (possibly empty)
    then the W3C ``traceparent``."""
    try:
        return _packb([VERSION, kind, msg_id, 0, sender, recipient, body, waiting, traceparent])
    except (TypeError, ValueError, OverflowError) as exc:
        raise WireError(f"message is not serializable: {exc}") from None


def encode_ask(msg_id: int, sender: str, recipient: str, body: object, waiting: list[str]) -> bytes:
    """An ASK made while ``waiting`` (a list of actor names) wait on the sender: the 8th field
    is that chain, for deadlock detection. Asks made outside a handler have 7 fields."""
    try:
        return _packb([VERSION, 2, msg_id, 0, sender, recipient, body, waiting])
    except (TypeError, ValueError, OverflowError) as exc:
        raise WireError(f"message is not serializable: {exc}") from None


def batch_header(count: int) -> bytes:
    """The msgpack array header that turns ``count`` packed envelopes into a batch frame."""
    if count < 16:
        return bytes((0x90 | count,))
    return b"\xdc" + count.to_bytes(2, "big")


def _brief(value: object) -> str:
    """A short description of a field for an error message; never the repr of a container (a value
    nested 1000 deep would overflow the stack while printing)."""
    if value is None or type(value) in (int, float, bool, str, bytes):
        return f"{value!r:.40}"
    return f"a {type(value).__name__}"


def _chain_ok(chain: object) -> bool:
    """An ask's waiting chain: a list of at most MAX_CHAIN names."""
    if type(chain) is not list or len(chain) > MAX_CHAIN:
        return False
    for c in chain:
        if type(c) is not str:
            return False
    return True


def check_envelope(env: object) -> Envelope:
    """Return ``env`` if it is a well-formed envelope, else raise WireError."""
    if type(env) is not list or len(env) != 7:
        if type(env) is list and len(env) == 8 and env[KIND] == 2:
            if not _chain_ok(env[WAITING]):
                raise WireError(f"an ask's waiting chain must be a list of at most {MAX_CHAIN} names")
        elif type(env) is list and len(env) == 9 and env[KIND] in _TRACED_KINDS:
            if not _chain_ok(env[WAITING]):
                raise WireError(f"an ask's waiting chain must be a list of at most {MAX_CHAIN} names")
            if type(env[TRACE]) is not str or len(env[TRACE]) > MAX_TRACE:
                raise WireError("a trace must be a W3C traceparent string of at most 128 characters")
        else:
            raise WireError("envelope is not an array of 7 fields (8 for an ask with a waiting chain, 9 with a"
                            " trace)")
    version, kind, msg_id, corr_id, sender, recipient, _body = env[:7]
    if version != VERSION or type(version) is not int:
        raise WireError(f"unsupported version {_brief(version)}")
    if type(kind) is not int or kind not in _KINDS:
        raise WireError(f"unknown kind {_brief(kind)}")
    if type(msg_id) is not int or type(corr_id) is not int:
        raise WireError("msg_id and corr_id must be integers")
    if type(sender) is not str or type(recipient) is not str:
        raise WireError("sender and recipient must be strings")
    return env


def _hashable_key(key: object) -> object:
    return tuple(_hashable_key(k) for k in key) if type(key) is list else key


def _tuple_key_map(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    return {_hashable_key(k): v for k, v in pairs}


def _undecodable(exc: Exception) -> WireError:
    if isinstance(exc, msgpack.StackError):
        return WireError("undecodable frame: nested deeper than msgpack decodes (1024 levels)")
    return WireError(f"undecodable frame: {exc or type(exc).__name__}")


def _unpack_tuple_keys(frame: bytes) -> object:
    try:
        return _unpackb(frame, raw=False, strict_map_key=False, max_ext_len=0, ext_hook=_refuse_ext,
                        object_pairs_hook=_tuple_key_map)
    except WireError:
        raise
    except Exception as exc:  # a map key that is a map, a nesting too deep for the key rebuild, ...
        raise _undecodable(exc) from None


def _unpack(frame: bytes, max_bytes: int, max_top: int = MAX_BATCH, per: int = BYTES_PER_CONTAINER) -> object:
    """Size check and msgpack decoding with every limit: the one step both decoders share."""
    n = len(frame)
    if n > max_bytes:
        raise WireError(f"frame of {n} bytes exceeds the {max_bytes}-byte limit")
    if n > SMALL_FRAME:
        return _unpack_large(frame, n, max_top, per)
    try:
        return _unpackb(frame, raw=False, strict_map_key=False, max_ext_len=0, ext_hook=_refuse_ext)
    except WireError:
        raise
    except TypeError:
        # A map with array keys ("unhashable type: 'list'"): encode() packs tuple keys as
        # arrays, so decode them back as tuples. Off the hot path: only such frames pay.
        return _unpack_tuple_keys(frame)
    except Exception as exc:  # msgpack raises ValueError subclasses, and others on odd input
        raise _undecodable(exc) from None


def _top_count(frame: bytes) -> int:
    """The item count in the array header that opens ``frame``; -1 if it opens something else."""
    head = memoryview(frame)[:5]
    first = head[0]
    if 0x90 <= first <= 0x9F:
        return first & 0x0F
    if first == 0xDC and len(head) >= 3:
        return int.from_bytes(head[1:3], "big")
    if first == 0xDD and len(head) >= 5:
        return int.from_bytes(head[1:5], "big")
    return -1


def _unpack_large(frame: bytes, n: int, max_top: int, per: int) -> object:
    """Decode a frame above SMALL_FRAME: header first, then at most one array or map per ``per`` bytes.

    The frame is fed to msgpack's (resumable) unpacker one SMALL_FRAME chunk at a time, and
    the arrays and maps built so far are checked after each chunk against the bytes fed so
    far (plus one chunk of slack, as dense as a small frame may be). So a hostile frame is
    refused after building about one chunk's worth of objects, not the whole frame's: a
    4 MiB frame of empty arrays costs milliseconds, not a quarter of a second.
    """
    top = _top_count(frame)
    if top < 0:
        raise WireError("frame is not an envelope array")
    if top > max(max_top, 8):
        raise WireError(f"an array of {top} items opens the frame: neither an envelope nor a batch of at most {max_top}")
    per = max(1, per)
    built = 0

    def count(obj: object) -> object:
        nonlocal built
        built += 1
        return obj

    def too_dense(fed: int) -> WireError:
        return WireError(f"a frame of {n} bytes holds more arrays and maps than one per {per} bytes "
                         f"({built} in its first {fed} bytes; frames over {SMALL_FRAME} bytes may not be that dense)")

    collecting = gc.isenabled()
    gc.disable()  # millions of fresh containers would each run the collector's generation counts
    try:
        try:
            return _unpack_in_chunks(frame, n, per, count, None, too_dense, lambda: built)
        except TypeError:  # a map with array keys: decode them back as tuples (see _unpack)
            built = 0
            return _unpack_in_chunks(frame, n, per, count, lambda pairs: count(_tuple_key_map(pairs)), too_dense,
                                     lambda: built)
    except WireError:
        raise
    except Exception as exc:
        raise _undecodable(exc) from None
    finally:
        if collecting:
            gc.enable()


def _unpack_in_chunks(frame: bytes, n: int, per: int, count: Callable[[Any], Any],
                      pairs_hook: Callable[[list[tuple[Any, Any]]], Any] | None, too_dense: Callable[[int], WireError],
                      built: Callable[[], int]) -> object:
    # Maps are counted by object_hook, or by the pairs hook when keys need rebuilding (msgpack
    # takes one of the two, never both).
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_ext_len=0, ext_hook=_refuse_ext, list_hook=count,
                                max_buffer_size=n, object_hook=count if pairs_hook is None else None,
                                object_pairs_hook=pairs_hook)
    view = memoryview(frame)
    fed = 0
    while True:
        unpacker.feed(view[fed:fed + SMALL_FRAME])
        fed = min(n, fed + SMALL_FRAME)
        try:
            obj = unpacker.unpack()
        except msgpack.OutOfData:
            if fed >= n:
                raise WireError("undecodable frame: the frame ends inside a value") from None
            if built() > (fed + SMALL_FRAME) // per:
                raise too_dense(fed) from None
            continue
        if built() > (n + SMALL_FRAME) // per:
            raise too_dense(n)
        if unpacker.tell() != n:
            raise WireError(f"undecodable frame: {n - unpacker.tell()} bytes follow the value")
        return obj


_ANSWERED = frozenset((2, 5, 7))  # ASK, CONTROL, TELL_ACK: someone waits for an answer
_HEAD_BYTES = 1024


def refusal(frame: bytes, exc: WireError, msg_id: int, sender: str) -> bytes | None:
    """The FAIL answer to a refused frame that opens like one envelope someone waits on (an ask, a
    control request, an acknowledged tell), read from its first bytes without decoding its body: the
    sender learns at once why (say, a body too dense), instead of waiting out its timeout. None when
    the frame does not open like such an envelope (garbage is not answered)."""
    unpacker = msgpack.Unpacker(max_buffer_size=_HEAD_BYTES, raw=False, max_ext_len=0, max_array_len=16,
                                max_map_len=0, max_str_len=256, max_bin_len=0)
    try:
        unpacker.feed(memoryview(frame)[:_HEAD_BYTES])
        if unpacker.read_array_header() not in (7, 8, 9):
            return None
        version, kind, asked_id, _corr_id, asker, _recipient = (unpacker.unpack() for _ in range(6))
    except Exception:  # anything odd in the head: not worth an answer
        return None
    if (version != VERSION or type(kind) is not int or kind not in _ANSWERED or type(asked_id) is not int
            or type(asker) is not str):
        return None
    return encode(Kind.FAIL, msg_id, asked_id, sender, asker, to_wire(exc))


def decode(frame: bytes, max_bytes: int = MAX_FRAME_BYTES, max_batch: int = MAX_BATCH,
           bytes_per_container: int = BYTES_PER_CONTAINER) -> list[Envelope]:
    """Decode a frame into a list of checked envelopes (one, or a whole batch).

    Raises WireError for anything that is not a valid frame. ``bytes_per_container``: see
    BYTES_PER_CONTAINER (a node, whose input is no user's bulk data, passes more).
    """
    obj = _unpack(frame, max_bytes, max_batch, bytes_per_container)
    if type(obj) is not list or not obj:
        raise WireError("frame is not an envelope array")
    head = obj[VERSION_FIELD]
    if type(head) is int:
        # One envelope: the common case, checked inline (this is the message path).
        n = len(obj)
        if (
            (n == 7 or (n == 8 and obj[KIND] == 2 and _chain_ok(obj[WAITING])))
            and head == VERSION
            and type(obj[KIND]) is int
            and obj[KIND] in _KINDS
            and type(obj[MSG_ID]) is int
            and type(obj[CORR_ID]) is int
            and type(obj[SENDER]) is str
            and type(obj[RECIPIENT]) is str
        ):
            return [obj]
        return [check_envelope(obj)]
    if type(head) is list:
        if len(obj) > max_batch:
            raise WireError(f"batch of {len(obj)} envelopes exceeds the limit of {max_batch}")
        for env in obj:
            check_envelope(env)
        return obj
    return [check_envelope(obj)]


def decode_one(frame: bytes, max_bytes: int = MAX_FRAME_BYTES, bytes_per_container: int = BYTES_PER_CONTAINER) -> Envelope:
    """Decode a frame that must hold exactly one envelope (the answer to an ask sent alone)."""
    env = _unpack(frame, max_bytes, 8, bytes_per_container)
    if type(env) is list and len(env) == 7 and env[VERSION_FIELD] == VERSION and type(env[VERSION_FIELD]) is int:
        kind, msg_id, corr_id, sender, recipient = env[KIND], env[MSG_ID], env[CORR_ID], env[SENDER], env[RECIPIENT]
        if (
            type(kind) is int
            and kind in _KINDS
            and type(msg_id) is int
            and type(corr_id) is int
            and type(sender) is str
            and type(recipient) is str
        ):
            return env
    return check_envelope(env)  # raises with the precise reason
