"""The ``mesh`` command: thin click commands over the public API.

Every error a user can cause prints one line and exits non-zero (2 for bad
arguments and spec errors, 1 for everything else); never a traceback.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from importlib import resources
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, Protocol, TypeVar

import click

from . import errors
from .cli_keys import KEYS_HINT, is_loopback, keys
from .runtime.client import Client, check_address, node_address

NODE_HELP = "Node address (default: $MESH_NODE or tcp://127.0.0.1:7700)."

T = TypeVar("T")


class SpecUsageError(click.ClickException):
    exit_code = 2


class BadArgument(click.ClickException):
    """A bad argument value: exit 2 like click's usage errors, but in one line."""

    exit_code = 2


def _check_node(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--node (or $MESH_NODE) must look like HOST:PORT: a bad one is a bad argument (exit 2)."""
    if value is None:
        return None
    try:
        check_address(node_address(value))
    except errors.NodeUnavailable:
        typed = any(arg == "--node" or arg.startswith("--node=") for arg in sys.argv[1:])
        where = "--node" if typed or value != os.environ.get("MESH_NODE") else "$MESH_NODE"
        raise BadArgument(f"{where} {value!r} is not a node address: expected HOST:PORT or tcp://HOST:PORT") from None
    return value


node_option = click.option("--node", envvar="MESH_NODE", help=NODE_HELP, callback=_check_node)


def _client(node: str | None) -> Client:
    try:
        client = Client(node, name=f"cli-{os.getpid()}")
    except errors.MeshError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        answer = client.ping()
    except errors.MeshError as exc:
        client.close()
        raise click.ClickException(str(exc)) from None
    if not isinstance(answer, dict) or "node" not in answer:
        client.close()
        who = f" of actor {answer['name']!r}" if isinstance(answer, dict) and isinstance(answer.get("name"), str) else ""
        raise BadArgument(f"{client.node} is the endpoint{who}, not a node: point --node at the address"
                          " its node listens on (mesh up --listen)")
    return client


def _with_client(node: str | None, call: Callable[[Client], T]) -> T:
    """Run ``call(client)`` against the node; a mesh error becomes one line and exit 1."""
    with _client(node) as client:
        try:
            return call(client)
        except errors.MeshError as exc:
            raise _fail(exc) from None


def _parse_json(text: str, what: str = "MESSAGE") -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        hint = f"; a string is quoted as JSON: '{json.dumps(text)}'" if text.strip() and text.strip()[0] not in '{["' else ""
        raise BadArgument(f"{what} {text[:200]!r} is not valid JSON ({exc}){hint}") from None


def _jsonable(value: object) -> object:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _fail(exc: errors.MeshError) -> click.ClickException:
    if isinstance(exc, errors.RemoteError):
        return click.ClickException(f"the actor raised {exc.type}: {exc.message}")
    return click.ClickException(f"{type(exc).__name__}: {exc}")


class _OneLineGroup(click.Group):
    """Usage errors in one line on stderr, exit 2 (click prints four: usage, hint, blank, error)."""

    def main(self, *args: Any, **kwargs: Any) -> NoReturn:
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except click.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx else "mesh"
            click.echo(f"Error: {exc.format_message()} (see: {command} --help)", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=_OneLineGroup, context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "MESH"})
@click.version_option(package_name="mesh")
def main() -> None:
    """mesh: actors in their own processes, on a ZeroMQ mesh."""


# -- up ------------------------------------------------------------------------


@main.command()
@click.argument("spec", required=False, type=click.Path(dir_okay=False))
@click.option("--listen", help="Address to listen on, tcp://HOST:PORT (overrides the spec).")
@click.option("--name", help="Node name (overrides the spec).")
@click.option("--join", "join", multiple=True, metavar="ADDR",
              help="Join the mesh through this member (tcp://HOST:PORT); repeatable.")
@click.option("--advertise", metavar="ADDR", help="The address other nodes use to reach this one (default: --listen).")
@click.option("--log-level", default="INFO", show_default=True, envvar="MESH_LOG_LEVEL",
              type=click.Choice(["DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL", "FATAL"], case_sensitive=False),
              help="The level of the node's log and its agents' ($MESH_LOG_LEVEL).")
@click.option("--keys", "keys_dir", metavar="DIR",
              help="The mesh's keys (mesh keys init): CURVE on every socket (default: [node] keys, else $MESH_KEYS).")
@click.option("--insecure", is_flag=True, help="Listen beyond loopback without keys, knowingly: anyone who can reach "
                                               "the port can do anything.")
@click.option("--metrics", metavar="HOST:PORT",
              help="Serve Prometheus /metrics and the live dashboard (/) over HTTP here (overrides [node] metrics).")
def up(spec: str | None, listen: str | None, name: str | None, join: tuple[str, ...], advertise: str | None,
       log_level: str, keys_dir: str | None, insecure: bool, metrics: str | None) -> None:
    """Run a node in the foreground with the agents of SPEC (default: the bundled demo)."""
    from .runtime.node import Node
    from .runtime.gossiper import NameTaken
    from .spec import check_capacity, check_config, check_importable, default_node_name, load_spec, parse_spec

    try:
        if spec is None:
            text = resources.files("mesh").joinpath("default.toml").read_text()
            import tomllib

            node_spec = parse_spec(tomllib.loads(text), file="<default spec>", base_dir=os.getcwd())
        else:
            node_spec = load_spec(spec)
        overrides = {}
        if listen:
            overrides["listen"] = node_address(listen)
        if name:
            overrides["name"] = name
        if metrics:
            overrides["metrics"] = metrics
        if listen and not name and node_spec.name == default_node_name(node_spec.listen):
            overrides["name"] = default_node_name(overrides["listen"])  # unnamed: HOST-PORT of where it listens
        if overrides:
            # Check the overridden fields as if the spec said them, then keep the rest as parsed.
            checked = parse_spec({"node": overrides}, file=node_spec.file, base_dir=node_spec.base_dir)
            node_spec = dataclasses.replace(node_spec, **{k: getattr(checked, k) for k in overrides})
        if join and spec is None:
            # `mesh up --join ADDR` adds a worker: its capacity joins the mesh, the demo does not.
            node_spec = dataclasses.replace(node_spec, agents=())
        keys_dir = keys_dir or (None if node_spec.keys else os.environ.get("MESH_KEYS"))
        if keys_dir:
            node_spec = dataclasses.replace(node_spec, keys=os.path.abspath(os.path.expanduser(keys_dir)))
        check_importable(node_spec)
        check_config(node_spec)  # config = the constructor's keyword arguments
        check_capacity(node_spec, alone=not join)
    except errors.SpecError as exc:
        raise SpecUsageError(str(exc)) from None
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ["MESH_LOG_LEVEL"] = log_level.upper()  # the agents' level (their zygote's, forked or spawned)
    live = sys.stdout.isatty() and os.environ.get("MESH_NO_LIVE") != "1"
    view = _LiveView() if live else None
    if advertise and not advertise.strip():
        raise BadArgument("--advertise must be an address like tcp://10.0.0.5:7700")
    if not node_spec.keys and not insecure and not is_loopback(node_spec.listen):
        raise BadArgument(f"{node_spec.listen} is not loopback and the node has no keys: {KEYS_HINT}")
    try:
        node = Node(
            node_spec,
            on_event=view.event if view else _print_event,
            on_tick=view.render if view else None,
            join=tuple(node_address(a) for a in join),
            advertise=node_address(advertise) if advertise else None,
            own_process=True,
        )
    except errors.MeshError as exc:  # keys missing or unreadable
        raise BadArgument(str(exc)) from None
    try:
        node.run()
    except NameTaken as exc:
        raise BadArgument(str(exc)) from None  # exit 2: nothing ran, nothing changed in the mesh
    except errors.MeshError as exc:
        if "Cannot assign requested address" in str(exc):  # EADDRNOTAVAIL: no interface has that address
            where = "--listen" if listen else f"{node_spec.file}: node.listen"
            raise BadArgument(f"{where}: cannot listen on {node_spec.listen}: no network interface of this machine has"
                              " that address (use one of its own addresses, or 0.0.0.0 for all)") from None
        raise click.ClickException(str(exc)) from None


def _print_event(line: str) -> None:
    click.echo(f"{time.strftime('%H:%M:%S')} {line}")


class _Reporting(Protocol):
    """What the live view needs of the node it runs: its status, as ``mesh status --json`` prints it."""

    def status(self) -> dict[str, Any]: ...


class _LiveView:
    """A status table redrawn every second in the terminal, with the latest events below."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def event(self, line: str) -> None:
        self.events.append(f"{time.strftime('%H:%M:%S')} {line}")
        del self.events[:-8]

    def render(self, node: _Reporting) -> None:
        out = ["\x1b[H\x1b[2J", render_status(node.status()), "", "recent events:"]
        out += [f"  {e}" for e in self.events]
        out.append("\nCtrl-C stops the node and its agents.")
        click.echo("\n".join(out))


def _dash(value: object) -> str:
    return "-" if value is None else str(value)


def _cores(x: float) -> str:
    return f"{x:.2f}"


def _megabytes(x: float) -> str:
    return f"{x / 1e6:.0f}MB"


def _against(used: float | None, budget: float | None, fmt: Callable[[float], str]) -> str:
    """``0.24/0.25``: use against budget; ``-`` when unknown (an agent on another node)."""
    if used is None:
        return "-" if budget is None else f"-/{fmt(budget)}"
    return fmt(used) if budget is None else f"{fmt(used)}/{fmt(budget)}"


def _render_playbook(m: object) -> str:
    """The playbook's metrics in one line (the last minute, and since the node started)."""
    if not isinstance(m, dict):
        return ""
    parts = []
    if m.get("utilization_avg") is not None:
        parts.append(f"utilization {100 * m['utilization_avg']:.0f} %")
    parts.append(f"{m.get('throughput_per_s') or 0:.1f} msg/s")
    failures = f"failures {m.get('failures') or 0}"
    if m.get("recovery_s_avg") is not None:
        failures += f" (recovered in {m['recovery_s_avg']:.1f} s on average)"
    parts.append(failures)
    parts.append(f"deadlocks {m.get('deadlocks') or 0}")
    intentions = m.get("intentions") or {}
    if intentions.get("conflicts_per_100") is not None:
        parts.append(f"conflicts {intentions['conflicts_per_100']:.0f} per 100 intentions")
    if m.get("pool_waits"):
        parts.append(f"pool waits {m['pool_waits']} ({m.get('pool_wait_s') or 0:.1f} s)")
    return f"metrics (last {m.get('window_s', 60):.0f} s): " + ", ".join(parts)


def render_status(status: dict[str, Any]) -> str:
    n = status["node"]
    lines = [f"node {n['name']}  {n['address']}  pid {n['pid']}  up {n['uptime_s']:.0f} s"]
    election = status.get("election") or {}
    if status.get("leader"):
        lead = f"leader {status['leader']} (term {status['term']})"
        if status["leader"] == n["name"]:
            lead += ", this node"
    else:
        lead = election.get("waiting") or "no leader"
    if election.get("fenced"):
        lead += "  [lease lost: this node cannot hear a majority of voters]"
    lines.append(lead)
    kill = status.get("kill_switch")
    if kill:
        at = time.strftime("%H:%M:%S", time.localtime(kill["at"])) if isinstance(kill.get("at"), (int, float)) else "?"
        lines.append(f"KILL SWITCH PULLED at {at} by {kill.get('by')}: no agent runs (mesh kill --release)")
    lines += _render_alerts(status.get("alerts") or {})
    refused = n.get("refused") or {}
    if refused:
        lines.append("refused (key not trusted): " + ", ".join(f"{a} x{c}" for a, c in sorted(refused.items())))
    for label, counts in (("forbidden (role may not)", n.get("forbidden")),
                          ("peer_refused (not a node key)", n.get("peer_refused"))):
        if counts:
            lines.append(f"{label}: " + ", ".join(f"{what} x{c}" for what, c in sorted(counts.items())))
    held = [i for i in status.get("intents") or [] if i.get("state") == "held"]
    pending = [i for i in status.get("intents") or [] if i.get("state") != "held"]
    escalations = status.get("escalations") or []
    if held or pending or escalations:
        lines.append(f"intentions: {len(pending)} pending, {len(held)} held, {len(escalations)} escalated"
                     " (mesh intents lists them)")
    rows = [("AGENT", "NODE", "STATE", "PID", "RESTARTS", "MESSAGES", "CPU", "MEMORY", "NOTE")]
    for a in status["agents"]:
        notes = [a.get("reason") or ("embedded" if a.get("embedded") else "")]
        if a.get("throttled"):
            notes.append("throttled now")
        if a.get("throttled_s"):
            notes.append(f"throttled {a['throttled_s']:.1f} s")
        if a.get("budget_kills"):
            notes.append(f"budget kills {a['budget_kills']}")
        budget = a.get("budget") or {}
        rows.append((a["name"], a.get("node") or "-", a["state"], str(a["pid"] or "-"), _dash(a["restarts"]),
                     _dash(a["messages"]), _against(a.get("cpu"), budget.get("cpu"), _cores),
                     _against(a.get("memory_bytes"), budget.get("memory"), _megabytes), "; ".join(n for n in notes if n)))
    widths = [max(len(r[i]) for r in rows) for i in range(8)]
    for r in rows:
        lines.append(("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[8]).rstrip())
    if len(rows) == 1:
        lines.append("(no agents)")
    playbook = _render_playbook(status.get("metrics")) if len(rows) > 1 else ""
    if playbook:
        lines.append(playbook)
    members = status.get("members") or []
    if len(members) > 1:
        lines.append("")
        mrows = [("MEMBER", "STATE", "ADDRESS", "LAST HEARD")]
        for m in members:
            mrows.append((m["name"], m["state"], m["address"] or "-", f"{m['last_heard_s']:.1f} s"))
        mw = [max(len(r[i]) for r in mrows) for i in range(4)]
        for mrow in mrows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(mrow, mw, strict=False)).rstrip())
    return "\n".join(lines)


# -- commands that talk to a node ----------------------------------------------------


@main.command()
@node_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--watch", is_flag=True, help="Redraw the table every --interval seconds until Ctrl-C.")
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(min=0.1), help="Seconds, with --watch.")
def status(node: str | None, as_json: bool, watch: bool, interval: float) -> None:
    """Show the node, the leader and every agent (with CPU and memory against budgets)."""
    if watch and as_json:
        raise BadArgument("--watch draws a table; it does not go with --json")
    if not watch:
        st = _with_client(node, lambda client: client.status())
        click.echo(json.dumps(st, indent=2) if as_json else render_status(st))
        return

    with _client(node) as client:
        try:
            while True:
                table = render_status(client.status())
                click.echo("\x1b[H\x1b[2J" + table + f"\n\n(every {interval:g} s; Ctrl-C to stop)", nl=True)
                sys.stdout.flush()  # a pipe (`| tee`) sees each table as it is drawn
                time.sleep(interval)
        except KeyboardInterrupt:
            pass
        except errors.MeshError as exc:
            _stopped_or_fail(client, exc)


@main.command()
@node_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def intents(node: str | None, as_json: bool) -> None:
    """List pending and held intentions, and escalations waiting for a person (mesh-wide)."""
    answer = _with_client(node, lambda client: client.intents())
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    rows = [("ID", "STATE", "PROPOSER", "NODE", "PRIORITY", "CLAIMS", "ACTION")]
    for i in answer["intents"]:
        rows.append((i["id"], i["state"], i["proposer"], i["node"], str(i.get("priority")), ",".join(i.get("claims") or []),
                     str(i.get("action"))))
    for e in answer["escalations"]:
        why = "; ".join(f"{o.get('by') or '?'}: {o.get('reason')}" for o in e.get("objections", []))
        rows.append((e["id"], "ESCALATED", e["proposer"], e["leader"], "-", ",".join(e.get("claims") or []),
                     f"{e.get('action')}  [{why}]"))
    if len(rows) == 1:
        click.echo("(no pending or held intentions, no escalations)")
        return
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for r in rows:
        click.echo(("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[6]).rstrip())


def _decide(node: str | None, intention: str, approve: bool) -> None:
    who = os.environ.get("USER") or os.environ.get("LOGNAME") or "someone"
    by = f"{who} with mesh {'approve' if approve else 'deny'}"
    answer = _with_client(node, lambda client: (client.approve if approve else client.deny)(intention, by=by))
    click.echo(f"{answer['id']}: {'approved' if answer['approved'] else 'denied'}")


@main.command()
@click.argument("intention")
@node_option
def approve(intention: str, node: str | None) -> None:
    """Approve the escalated INTENTION (its id, from `mesh intents`)."""
    _decide(node, intention, True)


@main.command()
@click.argument("intention")
@node_option
def deny(intention: str, node: str | None) -> None:
    """Deny the escalated INTENTION (its id, from `mesh intents`)."""
    _decide(node, intention, False)


@main.command()
@node_option
@click.option("--release", is_flag=True, help="Let go of the switch: agents may run again.")
def kill(node: str | None, release: bool) -> None:
    """The kill switch: stop every agent on every node of the mesh, now (SIGKILL)."""
    who = os.environ.get("USER") or os.environ.get("LOGNAME") or "someone"
    answer = _with_client(node, lambda client: client.kill(release=release, by=f"mesh kill ({who})"))
    if answer.get("pulled"):
        click.echo(f"kill switch pulled ({answer['by']}): every node stops every agent now; `mesh kill --release` undoes it")
    else:
        click.echo("kill switch released: the leader's assignment runs again")


def _person() -> str:
    return os.environ.get("USER") or os.environ.get("LOGNAME") or "someone"


def _clock(at: object) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at)) if isinstance(at, (int, float)) else "?"


def _render_alerts(alerts: dict[str, Any]) -> list[str]:
    """`mesh status`'s lines on alerts that wait for a person (none when none waits)."""
    waiting = alerts.get("unacknowledged") or 0
    if not waiting:
        return []
    lines = [f"ALERTS: {waiting} waiting for a person (mesh alerts lists them; mesh ack ID acknowledges one)"]
    for a in alerts.get("newest") or []:
        lines.append(f"  {a.get('id')}  {_clock(a.get('at'))}  {a.get('by')}: {a.get('reason')}")
    return lines


def _agent_line(info: dict[str, Any]) -> str:
    why = f" ({info['reason']})" if info.get("reason") else ""
    return (f"{info['name']} on node {info['node']}: {info['state']}, pid {_dash(info.get('pid'))},"
            f" incarnation {info['incarnation']}{why}")


def _control_agent(node: str | None, name: str, stop: bool, grace: float | None, wait: bool, timeout: float,
                   as_json: bool) -> None:
    by = f"{_person()} with mesh {'stop' if stop else 'restart'}"

    def act(client: Client) -> dict[str, Any]:
        call = client.stop_agent if stop else client.restart_agent
        return dict(call(name, grace=grace, wait=wait, timeout=timeout, by=by))

    info = _with_client(node, act)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(_agent_line(info))
    if not stop and info["state"] == "failed":
        raise click.ClickException(f"{name} failed right after its restart: {info.get('reason')}")


_grace_option = click.option("--grace", type=click.FloatRange(min=0), default=None,
                             help="Seconds between SIGTERM and SIGKILL (default: the agent's stop timeout).")
_wait_option = click.option("--wait/--no-wait", default=True, show_default=True,
                            help="Wait until it has stopped (restart: until the fresh process runs).")
_timeout_option = click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(min=0.1),
                               help="Seconds to wait, with --wait.")
_json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")


def _agent_options(command: Callable[..., None]) -> Callable[..., None]:
    """What `mesh stop` and `mesh restart` take."""
    for option in reversed((click.argument("agent"), node_option, _grace_option, _wait_option, _timeout_option,
                            _json_option)):
        command = option(command)
    return command


@main.command()
@_agent_options
def stop(agent: str, node: str | None, grace: float | None, wait: bool, timeout: float, as_json: bool) -> None:
    """Stop AGENT (a replica's name) on whichever node runs it; it stays stopped until `mesh restart`."""
    _control_agent(node, agent, True, grace, wait, timeout, as_json)


@main.command()
@_agent_options
def restart(agent: str, node: str | None, grace: float | None, wait: bool, timeout: float, as_json: bool) -> None:
    """Start a fresh process of AGENT now (the running one is stopped first), wherever it runs."""
    _control_agent(node, agent, False, grace, wait, timeout, as_json)


@main.command()
@node_option
@click.option("--unacknowledged", "-u", is_flag=True, help="Only the alerts that still wait for a person.")
@_json_option
def alerts(node: str | None, unacknowledged: bool, as_json: bool) -> None:
    """List the alerts kept (oldest first) and whether a person acknowledged each (`mesh ack ID`)."""
    found = _with_client(node, lambda client: client.alerts(unacknowledged=unacknowledged))
    if as_json:
        click.echo(json.dumps(found, indent=2, default=_jsonable))
        return
    if not found:
        click.echo("(no alerts waiting)" if unacknowledged else "(no alerts)")
        return
    rows = [("ID", "RAISED", "BY", "NODE", "ACKNOWLEDGED", "REASON")]
    for a in found:
        acked = f"{a['acknowledged_by']} at {_clock(a['acknowledged_at'])}" if a.get("acknowledged") else "WAITING"
        rows.append((a["id"], _clock(a.get("at")), str(a.get("by")), str(a.get("node")), acked, str(a.get("reason"))))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        click.echo(("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[5]).rstrip())


@main.command()
@click.argument("alert_id", metavar="ID")
@node_option
@_json_option
def ack(alert_id: str, node: str | None, as_json: bool) -> None:
    """Acknowledge alert ID (from `mesh alerts`): it no longer waits for a person."""
    found = _with_client(node, lambda client: client.ack_alert(alert_id, by=f"{_person()} with mesh ack"))
    if as_json:
        click.echo(json.dumps(found, indent=2, default=_jsonable))
        return
    click.echo(f"{found['id']}: acknowledged by {found['acknowledged_by']} ({found['reason']})")


@main.command()
@click.argument("name")
@click.argument("message")
@node_option
def tell(name: str, message: str, node: str | None) -> None:
    """Send MESSAGE (JSON) to actor NAME without waiting for a reply."""
    body = _parse_json(message)

    def send(client: Client) -> None:
        client.actor(name).tell(body)
        client.flush()

    _with_client(node, send)


@main.command()
@click.argument("name")
@click.argument("message")
@node_option
@click.option("--timeout", default=5.0, show_default=True, type=click.FloatRange(min=0.001), help="Seconds.")
def ask(name: str, message: str, node: str | None, timeout: float) -> None:
    """Send MESSAGE (JSON) to actor NAME and print its reply as JSON."""
    body = _parse_json(message)
    reply = _with_client(node, lambda client: client.actor(name).ask(body, timeout=timeout))
    click.echo(json.dumps(reply, default=_jsonable))


@main.command()
@click.argument("orchestra", type=click.Path(dir_okay=False))
@node_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object (the live lines go to stderr).")
def run(orchestra: str, node: str | None, as_json: bool) -> None:
    """Run the orchestra spec ORCHESTRA (TOML) against a running mesh: sections and parts live, then
    the report. Exit 0 if every part was ok, 1 if not (skipped, killed, stopped), 2 for a bad spec."""
    from .orchestra import Conductor, LiveView, load_orchestra

    try:
        spec = load_orchestra(orchestra)
    except errors.SpecError as exc:
        raise SpecUsageError(str(exc)) from None
    view = LiveView(sys.stderr if as_json else sys.stdout)
    report = _with_client(node, lambda client: Conductor(spec, client, view).run())
    click.echo(json.dumps(report.as_json(), default=_jsonable) if as_json else report.summary())
    sys.exit(0 if report.status == "ok" else 1)


@main.command()
@click.argument("name")
@node_option
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output until Ctrl-C (or the node stops).")
@click.option("-n", "--lines", type=click.IntRange(min=0), default=None, help="Start with the last N lines (as tail -n).")
def logs(name: str, node: str | None, follow: bool, lines: int | None) -> None:
    """Print the output (stdout, stderr, log records) of agent NAME.

    When no node answers at the address, NAME's log is read from disk ($MESH_HOME) instead.
    """
    try:
        client = _client(node)
    except click.ClickException as exc:
        path = _log_on_disk(node, name)
        if path is None:
            raise click.ClickException(f"{exc.message}; no log of {name!r} for that port under {_home()} either") from None
        click.echo(f"(no node answers at {node_address(node)}: {name}'s log from {path})", err=True)
        text = path.read_bytes()[-_LOG_READ_MAX:].decode("utf-8", "replace")
        click.echo(_last_lines(text, lines), nl=False)
        return
    with client:
        try:
            offset = _print_tail(client, name, lines)
            while follow:
                time.sleep(0.3)
                offset = _print_from(client, name, offset)
        except KeyboardInterrupt:
            return
        except errors.MeshError as exc:
            _stopped_or_fail(client, exc)


_LOG_READ_MAX = 64 * 1024 * 1024  # bytes of a log read to find its last lines, at most


def _home() -> Path:
    return Path(os.environ.get("MESH_HOME") or Path.home() / ".mesh")


def _log_on_disk(node: str | None, name: str) -> Path | None:
    """The log of agent ``name`` of the node that listened on the port of ``node``, newest first."""
    if not name or "/" in name or name.startswith("."):
        return None
    port = node_address(node).rpartition(":")[2]
    found = [p for p in (_home() / "nodes").glob(f"*-{port}/logs/{name}.log") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _last_lines(text: str, lines: int | None) -> str:
    if lines is None:
        return text
    if lines == 0:
        return ""
    return "".join(text.splitlines(keepends=True)[-lines:])


def _print_tail(client: Client, name: str, lines: int | None) -> int:
    """Print the log (its last ``lines`` lines) as it is now; return the byte offset reached."""
    want = None if lines is None else 64 * 1024
    while True:
        tail = want
        text, offset, size = "", 0, 0
        while True:
            chunk = client.logs(name, offset=offset, tail=tail)
            if want is None:
                click.echo(chunk["data"], nl=False)  # the whole log: streamed, not held
            else:
                text += chunk["data"]
            offset, size = chunk["offset"], chunk["size"]
            if offset >= size or not chunk["data"]:
                break
            tail = None
        if want is None or lines is None:  # the whole log, streamed above (lines is None when want is)
            return offset
        if want >= size or text.count("\n") > lines or want >= _LOG_READ_MAX:
            click.echo(_last_lines(text, lines), nl=False)
            return offset
        want *= 8


def _print_from(client: Client, name: str, offset: int) -> int:
    while True:
        chunk = client.logs(name, offset=offset)
        if chunk["data"]:
            click.echo(chunk["data"], nl=False)
        if chunk["offset"] < offset:  # the log was truncated or replaced: start over
            return 0
        offset = chunk["offset"]
        if offset >= chunk["size"] or not chunk["data"]:
            return offset


def _stopped_or_fail(client: Client, exc: errors.MeshError) -> None:
    """A loop that talks to a node until Ctrl-C met ``exc``: if the node is gone, say so and exit 0."""
    try:
        client.ping(timeout=1.0)
    except errors.MeshError:
        sys.stdout.flush()
        click.echo(f"the node at {client.node} stopped", err=True)
        sys.exit(0)
    raise _fail(exc) from None


@main.command()
@node_option
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(min=0.1), help="Seconds to wait.")
def down(node: str | None, timeout: float) -> None:
    """Stop the node gracefully: every agent's on_stop runs, then the node exits."""
    with _client(node) as client:
        try:
            info = client.down()
        except errors.MeshError as exc:
            raise _fail(exc) from None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                client.ping(timeout=0.5)
            except errors.NodeUnavailable:
                click.echo(f"node at {client.node} stopped")
                return
            time.sleep(0.1)
    raise click.ClickException(f"the node (pid {info.get('pid')}) is still stopping after {timeout:g} s")


@main.group()
def state() -> None:
    """Read and write the mesh's shared key/value state."""


@state.command("get")
@click.argument("key")
@node_option
def state_get(key: str, node: str | None) -> None:
    """Print the value of KEY as JSON (exit 1 if it is not set)."""
    missing = object()
    value = _with_client(node, lambda client: client.state.get(key, missing))
    if value is missing:
        raise click.ClickException(f"no key {key!r} in the shared state")
    click.echo(json.dumps(value, default=_jsonable))


@state.command("set")
@click.argument("key")
@click.argument("value")
@node_option
def state_set(key: str, value: str, node: str | None) -> None:
    """Set KEY to VALUE (JSON); it spreads to every node."""
    body = _parse_json(value, "VALUE")
    _with_client(node, lambda client: client.state.set(key, body))


@state.command("delete")
@click.argument("key")
@node_option
def state_delete(key: str, node: str | None) -> None:
    """Delete KEY everywhere."""
    _with_client(node, lambda client: client.state.delete(key))


@state.command("ls")
@click.argument("prefix", required=False, default="")
@node_option
def state_ls(prefix: str, node: str | None) -> None:
    """List keys (and values, as JSON) that start with PREFIX."""
    items = _with_client(node, lambda client: client.state.items(prefix))
    for key in sorted(items):
        click.echo(f"{key}\t{json.dumps(items[key], default=_jsonable)}")


@state.command("watch")
@click.argument("prefix", required=False, default="")
@node_option
@click.option("--interval", default=0.2, show_default=True, type=click.FloatRange(min=0.01), help="Seconds.")
def state_watch(prefix: str, node: str | None, interval: float) -> None:
    """Print every change under PREFIX as a JSON line, until Ctrl-C."""
    with _client(node) as client:
        seen: dict[str, object] = {}
        try:
            while True:
                items = client.state.items(prefix)
                for key in sorted(items):
                    if key not in seen or seen[key] != items[key]:
                        click.echo(json.dumps({"key": key, "value": items[key]}, default=_jsonable))
                for key in sorted(set(seen) - set(items)):
                    click.echo(json.dumps({"key": key, "deleted": True}))
                seen = items
                time.sleep(interval)
        except KeyboardInterrupt:
            return
        except errors.MeshError as exc:
            raise _fail(exc) from None


main.add_command(keys)

if __name__ == "__main__":  # pragma: no cover
    main()
