"""The asyncio link's send queue: bounded in bytes, not by the largest frame a peer could take.

A DEALER's queue is bounded in frames (libzmq's SNDHWM). The link sizes it for the largest frame
it has sent so far: ``client.hwm`` frames while every frame is small, fewer once a large one goes
out, so the queue never holds much more than ``send_bytes`` (it held 8 frames before, sized for
the 4 MiB a peer accepts, and 100 asks in flight stalled on it). Real sockets: the link connects
to a port nobody listens on, so what it sends stays in its queue until the queue is full.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

import mesh
from mesh.errors import MailboxFull
from mesh.runtime.asynclink import AsyncLink

pytestmark = pytest.mark.timeout(60)


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def _queued(client: mesh.Client, frames: list[bytes]) -> int:
    """How many of ``frames`` (then the last, again and again) the link queues before the queue is full."""

    async def fill() -> int:
        link = AsyncLink(_closed_port(), client)
        sent = 0
        try:
            for frame in frames + [frames[-1]] * 10_000:
                await link.send(frame)
                sent += 1
        except MailboxFull:
            return sent
        finally:
            link.close()
        raise AssertionError("the send queue never filled")

    return asyncio.run(fill())


@pytest.fixture
def client():
    # 64 KiB to queue, at most 100 frames; a full queue fails a send after 0.2 s.
    with mesh.Client(_closed_port(), check=False, hwm=100, send_bytes=64 * 1024, send_timeout=0.2) as c:
        yield c


def test_small_frames_fill_the_queue_up_to_the_clients_hwm(client):
    assert _queued(client, [b"x" * 100]) == 100


def test_a_large_frame_lowers_the_queues_bound_to_what_fits_in_send_bytes(client):
    # 16 KiB frames: 4 fit in 64 KiB.
    assert _queued(client, [b"x" * 16 * 1024]) == 4


def test_small_frames_queued_before_a_large_one_still_count(client):
    # 10 small ones queued, then 16 KiB frames: the bound falls to 4 frames, and 10 are queued
    # already, so the first large one waits (and fails after the send timeout).
    assert _queued(client, [b"x" * 100] * 10 + [b"x" * 16 * 1024]) == 10


def test_the_bound_only_falls(client):
    # Small frames after a large one do not raise the bound again.
    assert _queued(client, [b"x" * 16 * 1024, b"x" * 100]) == 4
