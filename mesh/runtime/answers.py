"""An actor's answers to a batch of asks, held and sent together.

An asyncio client sends the asks it made in one turn of its event loop as one batch frame
(:mod:`.asynclink`). The actor's loop (:mod:`.server`) answers them in batches too: what ZeroMQ
costs per frame, on both sides, is then paid once for many answers (100 asks in flight to one
echo agent: about 105k asks/s with an answer a frame, 200k with batches). Holding an answer must
not make an ask wait for a slow one, so:

* an answer is held only while the handlers stay fast: the held ones go once REPLY_HOLD_S
  seconds have passed since the first held one's handler began, and with the answer of a
  handler that took longer (so a held answer waits for at most one more handler);
* a handler that takes longer than SLOW_HANDLER_S (a wait, not a moment's preemption on a busy
  machine) also stops the actor holding answers for SLOW_HOLD_OFF_S seconds, from that batch on
  (so an actor whose handlers are sometimes slow answers one by one: a held answer is delayed
  by a slow handler at most once per SLOW_HOLD_OFF_S, and otherwise by at most SLOW_HANDLER_S;
  a handler that waits for something its asker does only once it has the answer held before
  it waits until that wait of its own gives up, once);
* an answer over REPLY_BATCH_BYTES goes alone; a batch holds at most BATCH_REPLIES answers and
  no more bytes than the frame of asks it answers (so it fits what the asker takes);
* anything but an ask in the batch (a tell that may end the actor, say) sends the held answers
  first, and so does a handler that raises past the loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .. import wire

BATCH_REPLIES = 64
REPLY_BATCH_BYTES = 1024
REPLY_HOLD_S = 0.001
SLOW_HANDLER_S = 0.02
SLOW_HOLD_OFF_S = 10.0

_perf = time.perf_counter


class HeldAnswers:
    """The answers held for one asker's batch frame (one at a time: the actor's loop is one thread)."""

    __slots__ = ("reply", "ident", "held", "size", "cap", "since", "hold_off_until")

    def __init__(self, reply: Callable[[Any, bytes], None]):
        self.reply = reply
        self.ident: Any = None
        self.held: list[bytes] = []
        self.size = 0
        self.cap = 0
        self.since = 0.0
        self.hold_off_until = 0.0

    def open(self, ident: Any, frame_bytes: int) -> bool:
        """A batch frame of ``frame_bytes`` bytes from ``ident`` begins; whether its answers may be held."""
        if self.hold_off_until and _perf() < self.hold_off_until:
            return False
        self.ident, self.cap, self.hold_off_until = ident, min(frame_bytes, wire.SMALL_FRAME), 0.0
        return True

    def add(self, out: bytes, began: float) -> None:
        """The answer ``out`` to an ask whose handler began at ``began`` (``time.perf_counter``)."""
        now = _perf()
        held = self.held
        if self.hold_off_until or now - began > REPLY_HOLD_S or len(out) > REPLY_BATCH_BYTES:
            if now - began > SLOW_HANDLER_S:
                self.hold_off_until = now + SLOW_HOLD_OFF_S
            if held:
                self.flush()
            self.reply(self.ident, out)
            return
        if held and self.size + len(out) > self.cap:
            self.flush()
        if not held:
            self.since, self.size = began, 3
        held.append(out)
        self.size += len(out)
        if len(held) == BATCH_REPLIES or now - self.since > REPLY_HOLD_S:
            self.flush()

    def flush(self) -> None:
        """Send what is held: one frame, a batch if there are several."""
        held = self.held
        if held:
            self.reply(self.ident, held[0] if len(held) == 1 else b"".join([wire.batch_header(len(held)), *held]))
            held.clear()


__all__ = ["HeldAnswers", "BATCH_REPLIES", "REPLY_BATCH_BYTES", "REPLY_HOLD_S", "SLOW_HANDLER_S", "SLOW_HOLD_OFF_S"]
