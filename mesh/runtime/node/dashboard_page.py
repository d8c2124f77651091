"""The dashboard's page (``/``): one self-contained document (no CDN, no fonts to fetch: it works
offline), kept here as Python strings so that packaging ships it with the code.

The page follows ``/events`` (:mod:`.dashboard`) with an EventSource, which reconnects by itself,
and redraws each section from every snapshot; a section whose data did not change is left alone
(so a button is not replaced under the pointer). It keeps the last five minutes of each agent's
messages and cpu in the browser for the small plots. Every string from the node goes into the
page as text (``textContent``, never HTML): agent names, actions and alerts are not trusted.
"""

from __future__ import annotations

STYLE = """
:root { --fg: #1d2125; --dim: #68717a; --line: #dde1e5; --bad: #b3261e; --warn: #a15c00; --ok: #1b7f3b;
        --bg: #f7f8fa; --card: #fff; --accent: #2657a7; }
* { box-sizing: border-box; }
body { margin: 0; font: 13px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg);
       background: var(--bg); }
header { display: flex; flex-wrap: wrap; gap: 18px; align-items: center; padding: 10px 16px;
         background: var(--card); border-bottom: 1px solid var(--line); }
header h1 { font-size: 16px; margin: 0; }
header .field b { font-weight: 600; }
#conn { color: var(--dim); }
#conn.live { color: var(--ok); }
#killswitch.pulled { color: #fff; background: var(--bad); padding: 2px 8px; border-radius: 3px; font-weight: 600; }
.actions { margin-left: auto; display: flex; gap: 8px; align-items: center; }
button { font: inherit; padding: 3px 10px; border: 1px solid var(--line); border-radius: 3px; background: #fff;
         cursor: pointer; }
button:disabled { cursor: not-allowed; opacity: .5; }
button.danger { border-color: var(--bad); color: var(--bad); }
#readonly { color: var(--warn); padding: 4px 16px; }
#message { padding: 4px 16px; }
#message.error { color: var(--bad); }
main { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 12px; padding: 12px 16px; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 4px; padding: 8px 10px;
          overflow-x: auto; }
section.wide { grid-column: 1 / -1; }
section h2 { font-size: 13px; margin: 0 0 6px; text-transform: uppercase; letter-spacing: .04em; color: var(--dim); }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 3px 8px 3px 0; border-bottom: 1px solid var(--line); white-space: nowrap;
         vertical-align: middle; }
th { font-weight: 600; color: var(--dim); }
td.num { font-variant-numeric: tabular-nums; }
.empty { color: var(--dim); }
.state-running, .state-alive { color: var(--ok); }
.state-failed, .state-dead, .state-crashed, .state-stopped, .state-killed { color: var(--bad); }
.state-restarting, .state-starting, .state-suspect, .state-waiting, .state-held { color: var(--warn); }
.over { color: var(--bad); font-weight: 600; }
svg.spark { vertical-align: middle; }
svg.spark polyline { fill: none; stroke: var(--accent); stroke-width: 1.2; }
"""

BODY = """
<header>
  <h1>mesh</h1>
  <span class="field">node <b id="node">?</b></span>
  <span class="field">leader <b id="leader">?</b></span>
  <span class="field">term <b id="term">?</b></span>
  <span class="field">kill switch <b id="killswitch">?</b></span>
  <span id="conn">connecting</span>
  <span class="actions">
    <button id="kill" class="danger" disabled>Pull the kill switch</button>
    <button id="release" disabled>Release</button>
  </span>
</header>
<div id="readonly" hidden></div>
<div id="message" role="status"></div>
<main>
  <section class="wide"><h2>Agents</h2><div id="agents"></div></section>
  <section><h2>Members</h2><div id="members"></div></section>
  <section><h2>The playbook's metrics</h2><div id="metrics"></div></section>
  <section><h2>Escalations waiting for a person</h2><div id="escalations"></div></section>
  <section><h2>Intentions pending and held</h2><div id="intents"></div></section>
  <section><h2>Pools and limits</h2><div id="pools"></div></section>
  <section><h2>Alerts</h2><div id="alerts"></div></section>
  <section id="orchestra-section" hidden><h2>Orchestra</h2><div id="orchestra"></div></section>
</main>
"""

SCRIPT = """
"use strict";
const HISTORY_S = 300;
const history = new Map();  // agent -> [{t, messages, cpu}] over the last HISTORY_S
const drawn = new Map();    // section -> the JSON it was last drawn from
let mayAct = false;
let pulled = false;

const $ = (id) => document.getElementById(id);

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "class") node.className = v;
    else if (k === "data") for (const [dk, dv] of Object.entries(v)) node.dataset[dk] = String(dv);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node[k] = v;
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return node;
}

function fmt(v, digits) {
  if (v == null) return "-";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(digits == null ? 2 : digits);
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

function bytes(n) {
  if (n == null) return "-";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return (i ? n.toFixed(1) : String(n)) + " " + units[i];
}

function clock(t) {
  return typeof t === "number" ? new Date(t * 1000).toLocaleTimeString() : "-";
}

function table(headers, rows, empty) {
  if (!rows.length) return el("div", {class: "empty"}, empty);
  return el("table", {}, el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", {}, h)))),
            el("tbody", {}, ...rows));
}

function section(id, data, draw) {
  const json = JSON.stringify(data);
  if (drawn.get(id) === json) return;
  drawn.set(id, json);
  $(id).replaceChildren(draw(data));
}

function stateCell(state) {
  return el("td", {class: "state state-" + String(state).replace(/[^a-z-]/g, "")}, state);
}

function againstBudget(value, budget, show) {
  const over = budget && value != null && value > budget * 0.9;
  return el("td", {class: "num" + (over ? " over" : "")}, show(value) + (budget ? " / " + show(budget) : ""));
}

function spark(points, what) {
  const w = 90, h = 18;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", w);
  svg.setAttribute("height", h);
  const max = Math.max(...points.map((p) => p.v), 1e-9);
  const t0 = Date.now() / 1000 - HISTORY_S;
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", points.map((p) => ((p.t - t0) / HISTORY_S * w).toFixed(1) + "," +
                                              (h - 1 - p.v / max * (h - 2)).toFixed(1)).join(" "));
  const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
  const last = points.length ? points[points.length - 1].v : 0;
  title.textContent = what + ": " + last.toFixed(2) + " now, " + (points.length ? max.toFixed(2) : "0") +
                      " at most over 5 min";
  svg.append(title, line);
  return svg;
}

function remember(agents) {
  const now = Date.now() / 1000;
  const seen = new Set();
  for (const a of agents) {
    const key = a.node + "/" + a.name;
    seen.add(key);
    const past = history.get(key) || [];
    past.push({t: now, messages: a.messages, cpu: a.cpu});
    while (past.length && past[0].t < now - HISTORY_S) past.shift();
    history.set(key, past);
  }
  for (const key of history.keys()) if (!seen.has(key)) history.delete(key);
}

function rates(key) {
  const past = history.get(key) || [];
  const out = [];
  for (let i = 1; i < past.length; i++) {
    const a = past[i - 1], b = past[i];
    if (a.messages == null || b.messages == null) continue;
    out.push({t: b.t, v: Math.max(0, b.messages - a.messages) / Math.max(b.t - a.t, 1e-3)});
  }
  return out;
}

function drawAgents(agents) {
  const withMetrics = agents.some((a) => a.metrics && typeof a.metrics === "object");
  const headers = ["agent", "node", "state", "pid", "cpu (cores)", "memory", "messages", "restarts"];
  if (withMetrics) headers.push("utilization", "throughput /s");
  headers.push("messages/s, 5 min", "cpu, 5 min");
  const rows = agents.map((a) => {
    const key = a.node + "/" + a.name;
    const budget = a.budget || {};
    const m = a.metrics || {};
    const cells = [el("td", {title: a.reason || ""}, a.name), el("td", {}, a.node == null ? "-" : a.node),
      stateCell(a.state), el("td", {class: "num pid"}, fmt(a.pid)),
      againstBudget(a.cpu, budget.cpu, (v) => fmt(v)), againstBudget(a.memory_bytes, budget.memory, bytes),
      el("td", {class: "num messages"}, fmt(a.messages)), el("td", {class: "num restarts"}, fmt(a.restarts))];
    if (withMetrics) {
      cells.push(el("td", {class: "num"}, m.utilization == null ? "-" : (m.utilization * 100).toFixed(0) + " %"),
                 el("td", {class: "num"}, fmt(m.throughput_per_s)));
    }
    const cpu = (history.get(key) || []).filter((p) => p.cpu != null).map((p) => ({t: p.t, v: p.cpu}));
    cells.push(el("td", {}, a.remote ? "-" : spark(rates(key), "messages/s")),
               el("td", {}, a.remote ? "-" : spark(cpu, "cpu (cores)")));
    return el("tr", {data: {agent: a.name, node: a.node == null ? "" : a.node}}, ...cells);
  });
  $("agents").replaceChildren(table(headers, rows, "no agents"));
}

function drawMembers(members) {
  return table(["member", "address", "state", "last heard"], members.map((m) =>
    el("tr", {data: {member: m.name}}, el("td", {}, m.name), el("td", {}, m.address), stateCell(m.state),
       el("td", {class: "num"}, fmt(m.last_heard_s, 1) + " s ago"))), "no members");
}

function keyValues(obj, prefix, rows) {
  for (const [k, v] of Object.entries(obj || {})) {
    if (v && typeof v === "object" && !Array.isArray(v)) keyValues(v, prefix + k + ".", rows);
    else rows.push(el("tr", {}, el("td", {}, prefix + k), el("td", {class: "num"}, fmt(v))));
  }
  return rows;
}

function drawMetrics(metrics) {
  return table(["metric", "value"], keyValues(metrics, "", []), "not measured by this node");
}

async function act(path, body) {
  const message = $("message");
  message.className = "";
  message.textContent = "asking the node...";
  try {
    const res = await fetch(path, {method: "POST", headers: {"Content-Type": "application/json"},
                                   body: JSON.stringify(body || {})});
    let answer = {};
    try { answer = await res.json(); } catch (e) { answer = {error: res.status + " " + res.statusText}; }
    if (!res.ok || answer.error) {
      message.className = "error";
      message.textContent = "the node refused: " + (answer.error || res.status);
    } else {
      message.textContent = "done" + (answer.pulled === true ? ": the kill switch is pulled" :
                                      answer.pulled === false ? ": the kill switch is released" :
                                      answer.id ? ": " + answer.id + (answer.approved ? " approved" : " denied") : "");
    }
  } catch (e) {
    message.className = "error";
    message.textContent = "the node did not answer: " + e;
  }
}

function decisionButtons(id) {
  return el("td", {}, el("button", {class: "approve", disabled: !mayAct, onclick: () => act("api/approve", {id})},
                         "Approve"), " ",
            el("button", {class: "deny danger", disabled: !mayAct, onclick: () => act("api/deny", {id})}, "Deny"));
}

function drawEscalations(listed) {
  return table(["id", "action", "claims", "proposer", "objections", "since", ""], listed.escalations.map((e) =>
    el("tr", {data: {escalation: e.id}}, el("td", {}, e.id), el("td", {}, fmt(e.action)),
       el("td", {}, fmt(e.claims)), el("td", {}, e.proposer), el("td", {}, fmt(e.objections)),
       el("td", {}, clock(e.since)), decisionButtons(e.id))), "none waits");
}

function drawIntents(intents) {
  return table(["id", "action", "claims", "proposer", "node", "state", "since"], intents.map((i) =>
    el("tr", {data: {intent: i.id}}, el("td", {}, i.id), el("td", {}, fmt(i.action)), el("td", {}, fmt(i.claims)),
       el("td", {}, i.proposer), el("td", {}, i.node), stateCell(i.state), el("td", {}, clock(i.since)))),
    "none pending");
}

function drawPools(resources) {
  const rows = [];
  for (const [kind, found] of [["pool", resources.pools], ["limit", resources.limits]]) {
    for (const [name, p] of Object.entries(found || {})) {
      const rest = Object.entries(p).filter(([k]) => !["size", "held", "queued"].includes(k))
        .map(([k, v]) => k + " " + fmt(v)).join(", ");
      rows.push(el("tr", {data: {pool: name}}, el("td", {}, kind), el("td", {}, name), el("td", {class: "num"}, fmt(p.size)),
                   el("td", {class: "num"}, fmt(p.held)), el("td", {class: "num queued"}, fmt(p.queued)), el("td", {}, rest)));
    }
  }
  return table(["", "name", "size", "held", "queued", ""], rows, "none kept by this node");
}

function drawAlerts(alerts) {
  const rows = (alerts.newest || []).map((a) => el("tr", {}, el("td", {}, clock(a.at)), el("td", {}, a.node),
                                                  el("td", {}, a.by), el("td", {}, a.reason)));
  return el("div", {}, el("div", {}, fmt(alerts.unacknowledged || 0) + " unacknowledged"),
            table(["at", "node", "by", "reason"], rows, ""));
}

function drawHeader(s) {
  $("node").textContent = (s.node && s.node.name) || "?";
  $("leader").textContent = s.leader || ((s.election && s.election.waiting) || "none");
  $("term").textContent = fmt(s.term);
  const ks = s.kill_switch;
  pulled = !!ks;
  $("killswitch").textContent = ks ? "PULLED by " + ks.by + " at " + clock(ks.at) : "not pulled";
  $("killswitch").className = ks ? "pulled" : "";
  mayAct = !!s.may_act;
  $("kill").disabled = !mayAct || pulled;
  $("release").disabled = !mayAct || !pulled;
  const ro = $("readonly");
  ro.hidden = mayAct;
  ro.textContent = mayAct ? "" : (s.why_read_only || "read-only");
}

function render(s) {
  drawHeader(s);
  const agents = Array.isArray(s.agents) ? s.agents : [];
  remember(agents);
  drawAgents(agents);
  section("members", s.members || [], drawMembers);
  section("metrics", s.metrics || {}, drawMetrics);
  section("escalations", {escalations: s.escalations || [], mayAct}, drawEscalations);
  section("intents", s.intents || [], drawIntents);
  section("pools", s.resources || {}, drawPools);
  section("alerts", s.alerts || {}, drawAlerts);
  const orchestra = s.orchestra && Object.keys(s.orchestra).length ? s.orchestra : null;
  $("orchestra-section").hidden = !orchestra;
  if (orchestra) section("orchestra", orchestra, (o) => table(["", ""], keyValues(o, "", []), ""));
}

function setConnection(text, live) {
  $("conn").textContent = text;
  $("conn").className = live ? "live" : "";
}

function follow() {
  const source = new EventSource("events");
  source.onopen = () => setConnection("live", true);
  source.onmessage = (e) => {
    let s;
    try { s = JSON.parse(e.data); } catch (err) { return; }
    setConnection(s.closing ? "the node is stopping" : "live", !s.closing);
    render(s);
  };
  source.onerror = () => {
    setConnection("reconnecting...", false);
    if (source.readyState === EventSource.CLOSED) {  // refused (503): the browser gives up, not we
      setTimeout(follow, 5000);
    }
  };
}

$("kill").addEventListener("click", () => {
  if (confirm("Pull the kill switch? Every agent of the mesh stops at once.")) act("api/kill", {});
});
$("release").addEventListener("click", () => {
  if (confirm("Release the kill switch? Agents may run again.")) act("api/release", {});
});
follow();
"""


def page() -> str:
    """The whole document."""
    return ('<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>mesh dashboard</title><style>{STYLE}</style></head>"
            f"<body>{BODY}<script>{SCRIPT}</script></body></html>\n")
