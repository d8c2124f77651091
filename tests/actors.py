"""Actors the tests run in real node processes (the spec's `path` points here)."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import mesh


class Echo(mesh.Actor):
    def on_message(self, message):
        return message


class AsyncEcho(mesh.Actor):
    async def on_message(self, message):
        await asyncio.sleep(0)
        return {"async": message}


class Counter(mesh.Actor):
    """Records every tell; asks return what was recorded."""

    def on_start(self):
        self.seen = []

    def on_message(self, message):
        if isinstance(message, dict) and "get" in message:
            return {"seen": self.seen, "sender": self.mesh.sender}
        self.seen.append(message)
        return None


class Lifecycle(mesh.Actor):
    """Writes each hook call to the file named by its config, so a test can read the order."""

    def __init__(self, journal: str):
        self.journal = journal

    def _note(self, what: str) -> None:
        with open(self.journal, "a") as f:
            f.write(f"{what} {os.getpid()}\n")

    def on_start(self):
        self._note("start")

    def on_message(self, message):
        self._note(f"message {message}")
        return "ok"

    def on_stop(self):
        self._note("stop")


class Crasher(mesh.Actor):
    """Crashes on request: {"crash": "exception" | "exit" | "sigkill"}; otherwise echoes its pid."""

    def on_message(self, message):
        how = message.get("crash") if isinstance(message, dict) else None
        if how == "exception":
            raise RuntimeError("boom on purpose")
        if how == "exit":
            os._exit(3)
        if how == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        if how == "clean":
            self.mesh.stop()
            return "stopping"
        return {"pid": os.getpid(), "incarnation": self.mesh.incarnation}


class Sleeper(mesh.Actor):
    """Sleeps for the given seconds before answering."""

    def on_message(self, message):
        time.sleep(float(message))
        return "woke"


class Relay(mesh.Actor):
    """Asks another actor on behalf of its caller: {"to": NAME, "message": ...}."""

    def on_message(self, message):
        return self.mesh.actor(message["to"]).ask(message["message"], timeout=message.get("timeout", 5.0))


class Forker(mesh.Actor):
    """Forks a child that sleeps forever; returns its pid."""

    def on_message(self, message):
        pid = os.fork()
        if pid == 0:
            while True:
                time.sleep(1)
        return pid


class SlowStop(mesh.Actor):
    """Ignores SIGTERM's graceful path by sleeping in on_stop far longer than any stop timeout."""

    def on_stop(self):
        time.sleep(60)


class Pinger(mesh.Actor):
    """Benchmark helper: asks `target` n times from inside this actor and returns the timings."""

    def on_message(self, message):
        target = self.mesh.actor(message["target"])
        body = {"n": 0, "body": "x" * 64}
        for i in range(message.get("warmup", 0)):
            body["n"] = i
            target.ask(body)
        times = []
        perf = time.perf_counter_ns
        for i in range(message["n"]):
            body["n"] = i
            t0 = perf()
            target.ask(body)
            times.append(perf() - t0)
        return times
