"""The live dashboard (issue 16): its event stream, and the page in a real headless Chromium
driven over the DevTools protocol, against a running node.

The browser tests need Debian's ``chromium`` (CI installs it, ``.ci/run``): without it they fail
and say so, rather than skip.
"""

from __future__ import annotations

import base64
import concurrent.futures
import http.client
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import websocket

from conftest import env_with, free_port, wait_until
from mesh.runtime.keys import init_keys
from mesh.runtime.node import dashboard
from mesh.runtime.node.web import Web

pytestmark = pytest.mark.timeout(120)


# -- the event stream, against a server of its own ---------------------------------------------


class Stream:
    """A client of ``/events`` that reads one event (or comment) at a time."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.conn.request("GET", "/events")
        self.res = self.conn.getresponse()

    def next(self) -> str:
        """The next event's data or comment; "" when the stream ended."""
        lines = []
        while True:
            line = self.res.fp.readline()
            if not line:
                return ""
            line = line.rstrip(b"\n").decode()
            if line:
                lines.append(line)
            elif lines and not lines[0].startswith("retry:"):
                return "\n".join(lines)
            else:
                lines = []

    def event(self) -> dict:
        found = self.next()
        while found.startswith(":"):
            found = self.next()
        assert found.startswith("data: "), found
        return json.loads(found[len("data: "):])

    def close(self) -> None:
        self.res.close()  # the response holds the socket open too
        self.conn.close()


@pytest.fixture
def web():
    served = Web("127.0.0.1:0", may_act=True)
    served.publish({"node": {"name": "x"}, "agents": []})
    yield served
    served.close()


def port_of(web: Web) -> int:
    return int(web.address.rsplit(":", 1)[1])


def test_a_stream_sends_the_snapshot_at_once_then_each_new_one_and_ends_when_the_server_closes(web):
    stream = Stream(port_of(web))
    try:
        assert stream.res.status == 200 and stream.res.getheader("Content-Type").startswith("text/event-stream")
        assert stream.res.getheader("Content-Length") is None
        first = stream.event()
        assert first["node"] == {"name": "x"} and first["may_act"] is True and first["why_read_only"] == ""
        web.publish({"node": {"name": "x"}, "agents": [{"name": "a<b>"}]})
        assert stream.event()["agents"] == [{"name": "a<b>"}]
        web.close()
        assert stream.event()["closing"] is True
        assert stream.next() == ""
    finally:
        stream.close()


def test_an_idle_stream_gets_keepalive_comments(web, monkeypatch):
    monkeypatch.setattr(dashboard, "KEEPALIVE_S", 0.2)
    stream = Stream(port_of(web))
    try:
        stream.event()
        assert stream.next() == ": keepalive"
    finally:
        stream.close()


def test_streams_are_bounded_and_a_closed_one_frees_its_place(web):
    streams = [Stream(port_of(web)) for _ in range(dashboard.MAX_STREAMS)]
    try:
        for s in streams:
            s.event()
        extra = http.client.HTTPConnection("127.0.0.1", port_of(web), timeout=10)
        extra.request("GET", "/events")
        res = extra.getresponse()
        assert res.status == 503 and "at most" in json.loads(res.read())["error"]
        extra.close()
        streams.pop().close()

        def a_place_is_free():
            web.publish({"again": True})  # the closed stream's thread learns on a write after the close
            s = Stream(port_of(web))
            if s.res.status == 200:
                streams.append(s)
                return True
            s.close()
            return False

        wait_until(a_place_is_free, 10, "a place freed")
    finally:
        for s in streams:
            s.close()


def test_a_browser_from_another_site_may_not_act(web):
    def post(headers):
        conn = http.client.HTTPConnection("127.0.0.1", port_of(web), timeout=10)
        conn.request("POST", "/api/kill", b"{}", headers)
        res = conn.getresponse()
        answer = res.status, json.loads(res.read())
        conn.close()
        return answer

    status, answer = post({"Sec-Fetch-Site": "cross-site"})
    assert status == 403 and "another site" in answer["error"]
    status, answer = post({"Origin": "http://evil.example"})
    assert status == 403 and "another origin" in answer["error"]
    status, answer = post({"Host": f"evil.example:{port_of(web)}"})
    assert status == 403 and "not on loopback" in answer["error"]


def test_the_page_is_one_document_that_fetches_nothing_from_elsewhere(web):
    conn = http.client.HTTPConnection("127.0.0.1", port_of(web), timeout=10)
    conn.request("GET", "/")
    res = conn.getresponse()
    page = res.read().decode()
    assert res.status == 200 and "default-src 'none'" in res.getheader("Content-Security-Policy")
    fetched = page.replace('"http://www.w3.org/2000/svg"', "")  # a namespace's name, not a fetch
    assert "http://" not in fetched and "https://" not in fetched and "innerHTML" not in page
    assert 'new EventSource("events")' in page


# -- the page in a real browser ----------------------------------------------------------------


class Browser:
    """Headless Chromium in a process group of its own, and one page driven over CDP."""

    def __init__(self, profile: Path):
        exe = shutil.which("chromium") or shutil.which("chromium-browser")
        if exe is None:
            pytest.fail("chromium is not installed: the dashboard is tested in a real browser "
                        "(apt-get install chromium; CI installs it in .ci/run)")
        profile.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [exe, "--headless=new", "--remote-debugging-port=0", f"--user-data-dir={profile}", "--no-sandbox",
             "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--disable-background-networking", "--window-size=1400,1000", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        active = profile / "DevToolsActivePort"
        wait_until(lambda: self.proc.poll() is not None or (active.exists() and active.read_text().count("\n") >= 1),
                   30, "chromium's DevTools port")
        assert self.proc.poll() is None, f"chromium exited with {self.proc.returncode}"
        port = int(active.read_text().splitlines()[0])
        page = wait_until(lambda: next((t for t in self._targets(port) if t.get("type") == "page"), None),
                          15, "chromium's first page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=15, suppress_origin=True)
        self.ids = itertools.count(1)
        self.send("Page.enable")
        self.send("Runtime.enable")

    @staticmethod
    def _targets(port: int) -> list[dict]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/json/list")
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def send(self, method: str, **params) -> dict:
        sent = next(self.ids)
        self.ws.send(json.dumps({"id": sent, "method": method, "params": params}))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv())
            if message.get("id") == sent:
                assert "error" not in message, f"{method}: {message['error']}"
                return message["result"]
        raise AssertionError(f"{method}: no answer within 15 s")

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        wait_until(lambda: self.evaluate("document.readyState") == "complete", 15, f"{url} loaded")

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))
        return path

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:  # the browser may be gone already; it is killed next anyway
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)


@pytest.fixture
def browser(tmp_path):
    opened = Browser(tmp_path / "chromium-profile")
    yield opened
    opened.close()


ROW = """(() => {
  const row = [...document.querySelectorAll("#agents tbody tr")].find((r) => r.dataset.agent === %s);
  return row ? {state: row.querySelector(".state").textContent, pid: row.querySelector(".pid").textContent,
                plots: row.querySelectorAll("svg.spark").length} : null;
})()"""


def row(browser: Browser, agent: str) -> dict | None:
    return browser.evaluate(ROW % json.dumps(agent))


LATE = """
import sys
import mesh

class Late(mesh.Actor):
    def on_message(self, message):
        return message

mesh.serve(Late(), name=sys.argv[2], node=sys.argv[1])
"""


def artifact(tmp_path: Path, name: str) -> Path:
    where = os.environ.get("MESH_ARTIFACTS")
    folder = Path(where) if where else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def test_the_page_follows_the_mesh_live_and_pulls_the_kill_switch(start_node, browser, tmp_path):
    port = free_port()
    node = start_node('[[agents]]\nname = "echo"\nclass = "actors:Echo"\n\n'
                      '[[agents]]\nname = "doomed"\nclass = "actors:Echo"\nrestart = "never"\n',
                      name="d", node_extra=f'metrics = "127.0.0.1:{port}"')
    browser.open(f"http://127.0.0.1:{port}/")
    wait_until(lambda: (row(browser, "echo") or {}).get("state") == "running", 20, "echo on the page")
    assert browser.evaluate('document.getElementById("node").textContent') == "d"
    assert browser.evaluate('document.getElementById("leader").textContent') == "d"
    assert row(browser, "echo")["plots"] == 2

    # What the node reports is shown as text, never as markup.
    node.client_once().alert('<img id="injected" src="x">', by="<b>a test</b>")
    wait_until(lambda: '<img id="injected" src="x">' in browser.evaluate('document.getElementById("alerts").textContent'),
               20, "the alert on the page, as text")
    assert browser.evaluate('document.getElementById("injected") === null') is True

    # An agent that starts after the page loaded appears without a reload.
    browser.evaluate("window.loadedOnce = true")
    script = tmp_path / "late.py"
    script.write_text(textwrap.dedent(LATE))
    late = subprocess.Popen([sys.executable, str(script), node.address, "late"], env=env_with(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: (row(browser, "late") or {}).get("state") == "running", 30, "late on the page")
        assert browser.evaluate("window.loadedOnce") is True

        # An agent killed behind the node's back: its row's state changes.
        doomed = node.agent("doomed")
        assert row(browser, "doomed")["pid"] == str(doomed["pid"])
        os.kill(doomed["pid"], signal.SIGKILL)
        wait_until(lambda: (row(browser, "doomed") or {}).get("state") not in (None, "running"), 20,
                   "doomed's state to change on the page")

        # What the node refuses, the page shows.
        browser.evaluate('act("api/approve", {id: "nothing-waits"})')
        wait_until(lambda: "refused" in browser.evaluate('document.getElementById("message").textContent'), 10,
                   "the refusal on the page")
        assert "nothing-waits" in browser.evaluate('document.getElementById("message").textContent')

        # The kill switch, through the page, confirmed.
        browser.evaluate("window.confirm = () => true")
        assert browser.evaluate('document.getElementById("kill").disabled') is False
        browser.evaluate('document.getElementById("kill").click()')
        wait_until(lambda: "PULLED" in browser.evaluate('document.getElementById("killswitch").textContent'), 20,
                   "the page to show the kill switch pulled")
        wait_until(lambda: "KILL SWITCH pulled by the dashboard" in node.log(), 10, "the node's log")
        wait_until(lambda: (row(browser, "echo") or {}).get("state") != "running", 20, "echo stopped on the page")
        assert browser.evaluate('document.getElementById("release").disabled') is False
        shot = browser.screenshot(artifact(tmp_path, "dashboard.png"))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        print(f"dashboard screenshot: {shot}")
    finally:
        late.terminate()
        try:
            late.wait(timeout=15)
        except subprocess.TimeoutExpired:
            late.kill()
            late.wait()


def test_with_keys_the_page_disables_its_buttons_and_says_why(tmp_path, start_node, browser):
    keys = tmp_path / "keys"
    init_keys(keys, ["w"], operators=["alice"])
    port = free_port()
    start_node("", name="w", node_extra=f'keys = "{keys}"\nmetrics = "127.0.0.1:{port}"', wait=False)

    def answers():
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/api/status")
            return conn.getresponse().status == 200
        except OSError:
            return False

    wait_until(answers, 30, "the node's HTTP server")
    browser.open(f"http://127.0.0.1:{port}/")
    wait_until(lambda: browser.evaluate('document.getElementById("node").textContent') == "w", 20,
               "the node's first snapshot on the page")
    wait_until(lambda: "read-only" in browser.evaluate('document.getElementById("readonly").textContent'), 10,
               "the page to say it is read-only")
    assert "operator key" in browser.evaluate('document.getElementById("readonly").textContent')
    assert browser.evaluate('document.getElementById("readonly").hidden') is False
    assert browser.evaluate('document.getElementById("kill").disabled') is True
    assert browser.evaluate('document.getElementById("release").disabled') is True


CLICK = """(() => {
  const row = [...document.querySelectorAll("#escalations tbody tr")].find((r) => r.dataset.escalation === %s);
  if (!row) return false;
  row.querySelector("button.%s").click();
  return true;
})()"""


def test_an_escalation_is_approved_from_the_leaders_page_and_a_followers_page_shows_its_refusal(
        start_node, browser, tmp_path):
    from test_intents import OBJECTOR, WINDOW, contenders, running

    ports = {"a": free_port(), "b": free_port()}
    a = start_node(OBJECTOR + '\n[intents]\nescalate = "human"\nescalation_timeout = "60s"\n', name="a", wait=False,
                   node_extra=f'metrics = "127.0.0.1:{ports["a"]}"')
    wait_until(lambda: a.status(), 15, "a")
    b = start_node(contenders(tmp_path / "j", 1), name="b", wait=False, args=("--join", a.address),
                   node_extra=f'metrics = "127.0.0.1:{ports["b"]}"')
    wait_until(lambda: all(n.status()["leader"] == "a" for n in (a, b)), 20, "a to lead")
    client = b.client()
    wait_until(lambda: client.control("intent_listeners")["actors"] == ["critic"], 20, "the critic listening")
    running(b, "c")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(client.actor("c").ask, {"propose": "rewrite", "claims": ["repo:app"], "window": WINDOW}, 90)
        (esc,) = wait_until(lambda: a.status()["escalations"], 40, "the escalation")
        for name in ("b", "a"):  # the follower refuses, the leader decides
            browser.open(f"http://127.0.0.1:{ports[name]}/")
            wait_until(lambda: browser.evaluate(CLICK % (json.dumps(esc["id"]), "approve")), 20,
                       f"the escalation on {name}'s page")
            wait_until(lambda: browser.evaluate('document.getElementById("message").textContent').startswith(
                ("the node refused", "done")), 15, f"{name}'s answer on the page")
            shown = browser.evaluate('document.getElementById("message").textContent')
            if name == "b":
                assert "not the leader" in shown, shown
            else:
                assert shown == f"done: {esc['id']} approved", shown
        decided = pending.result(timeout=40)
    assert decided["outcome"] == "approved" and decided["decided_by"].startswith("human (the dashboard")
