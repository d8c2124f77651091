"""Actors the benchmarks run inside a real node."""

from __future__ import annotations

import time

import mesh


class Echo(mesh.Actor):
    def on_message(self, message):
        return message


class Sink(mesh.Actor):
    """Counts tells; an ask {"count": true} answers with the count (after every earlier tell)."""

    def on_start(self):
        self.count = 0

    def on_message(self, message):
        if type(message) is dict and "count" in message:
            n, self.count = self.count, 0
            return n
        self.count += 1
        return None


class Pinger(mesh.Actor):
    """Asks `target` from inside this actor and returns the round-trip times in ns."""

    def on_message(self, message):
        target = self.mesh.actor(message["target"])
        body = {"n": 0, "body": "x" * 64}
        for i in range(message.get("warmup", 0)):
            body["n"] = i
            target.ask(body)
        times = []
        perf = time.perf_counter_ns
        ask = target.ask
        for i in range(message["n"]):
            body["n"] = i
            t0 = perf()
            ask(body)
            times.append(perf() - t0)
        return times


class Streamer(mesh.Actor):
    """Tells `n` small messages to `target`, then asks it for the count: returns the elapsed ns."""

    def on_message(self, message):
        target = self.mesh.actor(message["target"])
        n = message["n"]
        tell = target.tell
        t0 = time.perf_counter_ns()
        for i in range(n):
            tell({"n": i})
        got = target.ask({"count": True}, timeout=120)
        return {"ns": time.perf_counter_ns() - t0, "handled": got}
