"""Processes for tests/test_backpressure.py, each run as ``python backpressure_peers.py MODE ...``.

router PORTFILE
    A bare pyzmq ROUTER with the options mesh's transport sets (``tune_socket``, a mailbox
    of 10 frames), bound on loopback; writes its port to PORTFILE. It does not read
    until a line arrives on stdin (its peer has filled it and gone away), waits a few
    seconds more (where libzmq 4.3.5 used to abort: ZMTP heartbeats on a socket whose
    input is stopped), then drains what it holds and exits 0.

flood NODE ACTOR SECONDS SIZE SEND_TIMEOUT
    A client that tells ACTOR messages of SIZE bytes for SECONDS, counting MailboxFull,
    then exits normally (atexit flushes what is held). Prints one JSON line: tells
    accepted, MailboxFull raised, the longest a MailboxFull took, its peak RSS in bytes.
"""

from __future__ import annotations

import json
import sys
import time

import zmq


def router(portfile: str) -> int:
    from mesh.runtime.transport import tune_socket

    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    tune_socket(sock, hwm=10, max_bytes=4 * 1024 * 1024)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    with open(portfile + ".tmp", "w") as f:
        f.write(str(port))
    import os

    os.replace(portfile + ".tmp", portfile)
    sys.stdin.readline()
    # The scenario itself: a mailbox that stays full for a while after its peer left
    # (a slow actor). Several ZMTP heartbeat intervals used to pass here.
    time.sleep(3.0)
    sock.setsockopt(zmq.RCVTIMEO, 1000)
    drained = 0
    while True:
        try:
            sock.recv_multipart()
        except zmq.Again:
            break
        drained += 1
    print(json.dumps({"drained": drained}), flush=True)
    sock.close(0)
    ctx.term()
    return 0


def flood(node: str, actor: str, seconds: float, size: int, send_timeout: float) -> int:
    import mesh

    client = mesh.connect(node, send_timeout=send_timeout)
    ref = client.actor(actor)
    body = b"x" * size
    told = full = 0
    longest_full = 0.0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.monotonic()
        try:
            ref.tell(body)
            told += 1
        except mesh.MailboxFull:
            full += 1
            longest_full = max(longest_full, time.monotonic() - t0)
    # VmHWM, not ru_maxrss: that one keeps the peak of the process this one was forked from.
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    print(json.dumps({"told": told, "full": full, "longest_full_s": longest_full, "peak_rss": peak}), flush=True)
    return 0  # exit without close(): atexit sends what is still held, as in a user's script


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "router":
        sys.exit(router(args[0]))
    if mode == "flood":
        sys.exit(flood(args[0], args[1], float(args[2]), int(args[3]), float(args[4])))
    sys.exit(f"unknown mode {mode!r}")
