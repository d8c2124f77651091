"""Actors the tests run in real node processes (the spec's `path` points here)."""

from __future__ import annotations

import asyncio
import json
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


class ChannelProbe(mesh.Actor):
    """{"ask": NAME} asks NAME for its state and keeps the channel the ask used; {"probe": True}
    answers whether that channel is closed, and the names of this process's threads."""

    channel = None

    def on_message(self, message):
        if "ask" in message:
            ref = self.mesh.actor(message["ask"])
            answer = ref.ask({"get": True}, timeout=10)
            self.channel = ref._channel()
            return answer
        import threading

        return {"closed": self.channel is not None and self.channel.closed,
                "threads": sorted(t.name for t in threading.enumerate())}


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


class Announcer(mesh.Actor):
    """Prints a marker line when it starts, prints every {"say": TEXT} it is told, and logs every
    {"log": TEXT, "level": NAME}."""

    def __init__(self, marker: str = "announcer-started"):
        self.marker = marker

    def on_start(self):
        print(f"{self.marker} pid={os.getpid()}", flush=True)

    def on_message(self, message):
        if isinstance(message, dict) and "say" in message:
            print(message["say"], flush=True)
            return "said"
        if isinstance(message, dict) and "log" in message:  # {"log": TEXT, "level": "DEBUG"}: on logger "probe"
            import logging

            logging.getLogger("probe").log(logging.getLevelName(message.get("level", "INFO")), message["log"])
            return "logged"
        return None


class SleepEcho(mesh.Actor):
    """Answers an ask with its "reply" after sleeping "sleep" seconds.

    {"sleep": s, "reply": x, "mark": PATH}: writes PATH (its pid) first when "mark" is
    given, so a test knows the message is being handled.
    """

    def on_message(self, message):
        if message.get("mark"):
            with open(message["mark"], "w") as f:
                f.write(str(os.getpid()))
        time.sleep(float(message.get("sleep", 0)))
        return message.get("reply")


class Gate(mesh.Actor):
    """Counts the tells it gets (ints 0, 1, 2, ...) and checks they arrive in that order.

    Asks:
      {"block": PATH, "gate": PATH, "max": s}: writes the block file, then waits until the
      gate file exists (at most ``max`` seconds); answers "released" or "gave up".
      {"get": True}: {"count": n, "in_order": bool, "last": the last value or None}.
    """

    def on_start(self):
        self.count = 0
        self.in_order = True
        self.last = None

    def on_message(self, message):
        if isinstance(message, dict) and "block" in message:
            with open(message["block"], "w") as f:
                f.write(str(os.getpid()))
            deadline = time.monotonic() + float(message.get("max", 30))
            while time.monotonic() < deadline:
                if os.path.exists(message["gate"]):
                    return "released"
                time.sleep(0.01)
            return "gave up"
        if isinstance(message, dict) and "get" in message:
            return {"count": self.count, "in_order": self.in_order, "last": self.last}
        if message != self.count:
            self.in_order = False
        self.count += 1
        self.last = message
        return None


class Ticker(mesh.Actor):
    """Uses timers: ``every(interval, "tick")`` and ``after(delay, "once")`` from on_start.

    Asks: {"after": s, "message": m} schedules ``m`` from inside a handler; {"get": True}
    returns {"ticks", "once", "later": [...], "senders": [...]}.
    """

    def __init__(self, interval: float = 0.05, delay: float = 0.2):
        self.interval = interval
        self.delay = delay

    def on_start(self):
        self.ticks = 0
        self.once = 0
        self.later = []
        self.senders = set()
        self.mesh.every(self.interval, "tick")
        self.mesh.after(self.delay, "once")

    def on_message(self, message):
        if message == "tick":
            self.ticks += 1
            self.senders.add(self.mesh.sender)
        elif message == "once":
            self.once += 1
            self.senders.add(self.mesh.sender)
        elif isinstance(message, dict) and "after" in message:
            self.mesh.after(message["after"], message["message"])
            return "scheduled"
        elif isinstance(message, dict) and "get" in message:
            return {"ticks": self.ticks, "once": self.once, "later": self.later, "senders": sorted(self.senders)}
        else:
            self.later.append(message)
        return None


class HangingStart(mesh.Actor):
    """An on_start that never finishes (within any test's patience); it touches ``marker`` first."""

    def __init__(self, marker: str):
        self.marker = marker

    def on_start(self):
        with open(self.marker, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(120)


class SlowToConnect(mesh.Actor):
    """Touches ``marker`` (its pid) in its constructor, then waits ``delay`` seconds before its
    process connects to its node: time for a test to pause the node first."""

    def __init__(self, marker: str, delay: float = 1.0):
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(delay)

    def on_message(self, message):
        return os.getpid()


class WhoAmI(mesh.Actor):
    """Answers with where it runs: its instance name, pid and node address."""

    def on_message(self, message):
        return {"name": os.environ.get("MESH_AGENT_NAME"), "pid": os.getpid(), "node": os.environ.get("MESH_NODE")}


class EnvProbe(mesh.Actor):
    """Answers with its environment, as it sees it and as a program it starts sees it."""

    def on_message(self, message):
        import subprocess
        import sys

        seen = subprocess.run([sys.executable, "-c", "import os, json; print(json.dumps(dict(os.environ)))"],
                              capture_output=True, text=True, timeout=30).stdout
        return {"own": dict(os.environ), "child": json.loads(seen)}


class KeyProbe(mesh.Actor):
    """Answers with whose keypair its node handed it, and what a request to stop the node got."""

    def on_message(self, message):
        from mesh.runtime.keys import load_keys

        found = {"key": load_keys(os.environ["MESH_KEYS"]).name}
        with mesh.connect(os.environ["MESH_NODE"]) as client:  # with the same keypair ($MESH_KEYS)
            client.state.set("user/by-agent", message)
            try:
                client.down()
                found["down"] = "done"
            except mesh.Forbidden as exc:
                found["down"] = str(exc)
        return found


class PipelineRunner(mesh.Actor):
    """Runs a one-stage pipeline through echo per message; a burst of ``n`` tasks with {"burst": n}."""

    def on_message(self, message):
        from mesh.patterns import Burst, Pipeline, Stage

        if isinstance(message, dict) and "burst" in message:
            return Burst(self.mesh, ["echo"]).run(list(range(message["burst"]))).status
        return Pipeline([Stage("only", "echo", timeout=10)], self.mesh).run(message)["status"]


class MemoryHog(mesh.Actor):
    """Allocates ``step_mb`` every ``every`` seconds (100 MB/s by default), writing its own PSS and
    the time to ``journal`` before each step."""

    def __init__(self, journal: str, step_mb: int = 5, every: float = 0.05):
        self.journal, self.step, self.every = journal, step_mb * 1_000_000, every
        self.blocks = []

    def on_start(self):
        import psutil

        self.me = psutil.Process()
        self.mesh.every(self.every, {"grow": True})

    def _grow(self):
        pss = self.me.memory_full_info().pss
        with open(self.journal, "a") as f:
            f.write(f"{time.time()} {pss} {os.getpid()}\n")
        block = bytearray(self.step)
        for i in range(0, len(block), 4096):  # touch every page: resident, not just reserved
            block[i] = 1
        self.blocks.append(block)

    def on_message(self, message):
        if isinstance(message, dict) and message.get("grow"):
            return self._grow()
        return {"pid": os.getpid(), "held_mb": len(self.blocks) * self.step // 1_000_000}


class BusyLoop(mesh.Actor):
    """Burns CPU in a thread (and, with ``child``, in a forked child process too) while answering asks."""

    def __init__(self, child: bool = False, own: bool = True, session: bool = False):
        self.child, self.own, self.session = child, own, session  # session: the child calls setsid()
        self.proc = None

    def on_start(self):
        import subprocess
        import sys
        import threading

        if self.own:
            threading.Thread(target=self._burn, daemon=True).start()
        if self.child:
            self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=self.session)

    @staticmethod
    def _burn():
        x = 0
        while True:
            x += 1

    def on_message(self, message):
        return {"pid": os.getpid(), "child": self.proc.pid if self.proc else None}


class PoolUser(mesh.Actor):
    """On {"rounds": N}: N times acquire one unit of ``pool``, note the grant in ``journal``,
    hold it a random 20-80 ms, note the release, release. Answers how many it got."""

    def __init__(self, journal: str, pool: str = "db"):
        self.journal, self.pool = journal, pool

    def _note(self, what: str) -> None:
        with open(self.journal, "a") as f:
            f.write(f"{time.time():.6f} {what} {self.mesh.name}\n")

    def on_message(self, message):
        import random

        if "hold" in message:  # take n units and keep them (renewed in the background)
            self.kept = self.mesh.acquire(self.pool, n=message["hold"], timeout=message.get("timeout", 10))
            return {"pid": os.getpid(), "lease": self.kept.lease_id}
        got = 0
        for _ in range(message["rounds"]):
            with self.mesh.acquire(self.pool, timeout=30):
                self._note("grant")
                time.sleep(random.uniform(0.02, 0.08))
                self._note("release")
            got += 1
        return got


class CycleRelay(mesh.Actor):
    """Like Relay, with a hop list: {"hops": ["b", "a"], "message": ...} asks hops[0] to pass the
    rest on. Notes in ``journal`` when an ask of its own raises DeadlockDetected, then re-raises."""

    def __init__(self, journal: str):
        self.journal = journal

    def on_message(self, message):
        hops = message["hops"]
        if not hops:
            return message["message"]
        try:
            return self.mesh.actor(hops[0]).ask({"hops": hops[1:], "message": message["message"]}, timeout=10)
        except mesh.DeadlockDetected as exc:
            with open(self.journal, "a") as f:
                f.write(f"{self.mesh.name} {'>'.join(exc.cycle)}\n")
            raise


class Journal(mesh.Actor):
    """Appends "incarnation seq" to ``journal`` for each {"seq": N} it handles; answers its pid."""

    def __init__(self, journal: str):
        self.journal = journal
        self.out = None

    def on_start(self):
        self.out = open(self.journal, "a", buffering=1)

    def on_message(self, message):
        if isinstance(message, dict) and "seq" in message:
            self.out.write(f"{self.mesh.incarnation} {message['seq']}\n")
            return None
        return {"pid": os.getpid(), "incarnation": self.mesh.incarnation}


class Listener(mesh.Actor):
    """Subscribes to ``topics``; notes each event in ``journal`` as JSON. On {"publish": T, ...}
    publishes data (with corr) on topic T and answers the event id."""

    def __init__(self, journal: str, topics: list):
        self.journal, self.topics = journal, topics

    def on_start(self):
        for t in self.topics:
            self.mesh.subscribe(t)

    def on_event(self, event):
        import json

        with open(self.journal, "a") as f:
            f.write(json.dumps({"me": self.mesh.name, "topic": event.topic, "data": event.data, "id": event.id,
                                "corr": event.corr, "sender": event.sender}) + "\n")

    def on_message(self, message):
        if "subscribed_nodes" in message:
            return self.mesh.subscribed_nodes()
        if "subscribe" in message:
            self.mesh.subscribe(message["subscribe"])
            return True
        return self.mesh.publish(message["publish"], message.get("data"), message.get("corr"))



import random  # noqa: E402


class Contender(mesh.Actor):
    """On {"rounds": N, "claim": C}: N times propose work on claim C; when approved, note "approve"
    and then "done" in ``journal`` around a short hold, then release. Answers how many were approved.
    On {"propose": ACTION, ...}: one proposal, answered as a dict."""

    def __init__(self, journal: str = ""):
        self.journal = journal

    def _note(self, what: str, iid: str) -> None:
        with open(self.journal, "a") as f:
            f.write(f"{time.time():.6f} {what} {iid}\n")

    def on_message(self, message):
        if "propose" in message:
            d = self.mesh.propose(message["propose"], claims=message.get("claims", []), priority=message.get("priority", 0),
                                  window=message.get("window", 0.3), evidence=message.get("evidence", 1.0),
                                  escalation_timeout=message.get("escalation_timeout", 60))
            d.done()
            return {"outcome": d.outcome, "reasons": d.reasons, "escalated": d.escalated, "decided_by": d.decided_by,
                    "objections": [[o.by, o.reason, o.weight, o.kind] for o in d.objections]}
        approved = 0
        backoff = message.get("backoff", 0.03)
        options = {"wait": message["wait"]} if message.get("wait") else {}
        for _ in range(message["rounds"]):
            d = self.mesh.propose("work", claims=[message["claim"]], priority=message.get("priority", 0),
                                  window=message.get("window", 0.5), **options)
            if d.approved:
                self._note("approve", d.id)
                time.sleep(message.get("hold", 0.002))
                self._note("done", d.id)
                d.done()
                approved += 1
            else:
                if self.journal:
                    with open(self.journal + ".why", "a") as f:
                        f.write(f"{time.time():.6f} {d.id} {d.outcome} {' | '.join(d.reasons)}\n")
                if backoff:  # contention lost: back off a little and try again
                    time.sleep(random.uniform(0.0, backoff))
        return approved


class Objector(mesh.Actor):
    """Objects to intentions whose action is a key of ``rules``: {"reason", "weight", "kind"}."""

    def __init__(self, rules: dict):
        self.rules = rules

    def on_intention(self, intention):
        rule = self.rules.get(str(intention.action))
        if rule:
            return mesh.Objection(rule["reason"], rule.get("weight", 1.0), rule.get("kind", "finding"))
        return None


class SlowSink(mesh.Actor):
    """A slow consumer: takes ``delay`` seconds per tell (tests/test_backpressure.py)."""

    def __init__(self, delay: float = 0.5):
        self.delay = delay

    def on_message(self, message):
        time.sleep(self.delay)


class Proposer(mesh.Actor):
    """On {"propose": ACTION, "claims", "window", "require"}: one proposal, answered as a dict with
    how long it took to decide (``took``, seconds)."""

    def on_message(self, message):
        started = time.monotonic()
        d = self.mesh.propose(message["propose"], claims=message.get("claims", []), window=message.get("window", 0.2),
                              require=message.get("require", ()))
        took = time.monotonic() - started
        d.done()
        return {"outcome": d.outcome, "reasons": d.reasons, "decided_by": d.decided_by, "took": took,
                "objections": [[o.by, o.reason, o.weight, o.kind] for o in d.objections]}


class BusyObjector(Objector):
    """An Objector whose handler is busy: a tell {"busy": SECONDS} notes "busy" in ``journal`` and
    sleeps that long; its on_intention still answers meanwhile."""

    def __init__(self, rules: dict, journal: str):
        super().__init__(rules)
        self.journal = journal

    def on_message(self, message):
        with open(self.journal, "a") as f:
            f.write("busy\n")
        time.sleep(message["busy"])
        with open(self.journal, "a") as f:
            f.write("idle\n")


class SilentListener(mesh.Actor):
    """Hears intentions but takes ``delay`` seconds to think about each (longer than a window)."""

    def __init__(self, delay: float = 2.0):
        self.delay = delay

    def on_intention(self, intention):
        time.sleep(self.delay)
        return None


class BurstWorker(mesh.Actor):
    """A task of a parallel burst: {"n": N} answers {"square": N*N, "by": NAME} after "sleep"
    seconds (default 0); {"raise": True} raises, {"exit": True} ends its process mid-task.
    Each task's start and end are noted in ``journal`` ("TIME start|end NAME"), when given."""

    def __init__(self, journal: str = ""):
        self.journal = journal

    def _note(self, what: str) -> None:
        if self.journal:
            with open(self.journal, "a") as f:
                f.write(f"{time.time():.6f} {what} {self.mesh.name}\n")

    def on_message(self, message):
        self._note("start")
        try:
            if message.get("raise"):
                raise ValueError(f"task {message.get('n')} failed on purpose")
            if message.get("exit"):
                os._exit(3)
            time.sleep(float(message.get("sleep", 0)))
            return {"square": message["n"] ** 2, "by": self.mesh.name}
        finally:
            self._note("end")


class BurstDriver(mesh.Actor):
    """Runs a parallel burst from inside an actor: {"agents": [...], "tasks": [...], "limit": N,
    "timeout": S} answers the statuses and values in task order (``async_form``: from an async handler)."""

    def __init__(self, async_form: bool = False):
        self.async_form = async_form

    def on_message(self, message):
        from mesh.patterns import Burst

        burst = Burst(self.mesh, message["agents"], limit=message.get("limit", 10), timeout=message.get("timeout", 10))
        if self.async_form:
            report = asyncio.run(burst.run_async(message["tasks"]))
        else:
            report = burst.run(message["tasks"])
        return {"statuses": [r.status for r in report.results], "values": report.values}


class Patient(mesh.Actor):
    """Cancellable work: {"work": S} polls ``self.mesh.cancelled`` for up to S seconds and stops
    early when its ask is cancelled; {"report": True} answers what the last work saw (``cancelled``,
    after how many seconds), and the pid."""

    def on_start(self):
        self.last = None

    def on_message(self, message):
        if "work" in message:
            started = time.monotonic()
            while time.monotonic() - started < float(message["work"]):
                if self.mesh.cancelled:
                    self.last = {"cancelled": True, "after": time.monotonic() - started}
                    return "stopped early"
                time.sleep(0.005)
            self.last = {"cancelled": False, "after": time.monotonic() - started}
            return "done"
        return {"last": self.last, "pid": os.getpid(), "cancelled_now": self.mesh.cancelled}


class AsyncPatient(mesh.Actor):
    """The async form: {"work": S} awaits S seconds; a cancel of its ask cancels the handler's task
    (asyncio.CancelledError inside it), which it notes; {"report": True} answers the note."""

    def on_start(self):
        self.last = None

    async def on_message(self, message):
        if "work" in message:
            started = time.monotonic()
            try:
                await asyncio.sleep(float(message["work"]))
            except asyncio.CancelledError:
                self.last = {"cancelled": True, "after": time.monotonic() - started}
                raise
            self.last = {"cancelled": False, "after": time.monotonic() - started}
            return "done"
        return {"last": self.last, "pid": os.getpid()}


class TwoChildren(BusyLoop):
    """Busy itself, with a busy child in its process group and one in a session of its own."""

    def __init__(self):
        super().__init__(child=True, own=True, session=False)

    def on_start(self):
        import subprocess
        import sys

        super().on_start()
        self.apart = subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)

    def on_message(self, message):
        return {"pid": os.getpid(), "grouped": self.proc.pid, "apart": self.apart.pid}


class TtyProbe(mesh.Actor):
    """Says what opening /dev/tty does here: "opened", or the error's name."""

    def on_message(self, message):
        import errno

        try:
            fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
        except OSError as exc:
            return errno.errorcode.get(exc.errno, str(exc.errno))
        os.close(fd)
        return "opened"
