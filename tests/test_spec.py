"""The node spec: parsing, defaults, units, every validation error, and class imports."""

from __future__ import annotations

import os
import socket
import sys
import textwrap
import tomllib

import pytest

from mesh.errors import SpecError
from mesh.spec import (
    AgentSpec,
    NodeSpec,
    check_importable,
    load_spec,
    parse_duration,
    parse_size,
    parse_spec,
)


def spec_of(text: str, base_dir: str | None = None) -> NodeSpec:
    return parse_spec(tomllib.loads(textwrap.dedent(text)), file="test.toml", base_dir=base_dir)


def error_of(text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        spec_of(text)
    assert info.value.file == "test.toml"
    return info.value


def agent_error(body: str, name: str = "a", cls: str = "m:C") -> SpecError:
    """The error of a spec with one agent whose table has ``body`` added."""
    return error_of(f'[[agents]]\nname = "{name}"\nclass = "{cls}"\n{body}\n')


# --------------------------------------------------------------------------- valid specs


def test_an_empty_spec_is_valid_and_uses_every_node_default(tmp_path):
    spec = parse_spec({}, base_dir=str(tmp_path))
    assert spec.file == "<spec>"
    assert spec.base_dir == str(tmp_path)
    assert spec.name == f"{socket.gethostname().split('.')[0]}-7700"  # HOST-PORT: unique in practice
    assert spec.listen == "tcp://127.0.0.1:7700"
    assert spec.path == ()
    assert spec.wave_size is None  # by how agents start: see the supervisor
    assert spec.agent_nice == 10  # agents run nicer than their node
    assert spec.merge_pages is False  # opt-in: merged pages let agents learn of each other's
    assert spec.start == "fork"
    assert spec.wave_timeout == 10.0
    assert spec.stop_timeout == 5.0
    assert spec.max_message == 4 * 1024 * 1024
    assert spec.agents == ()


def test_without_a_base_dir_the_base_dir_is_the_current_directory():
    assert parse_spec({}).base_dir == os.getcwd()


def test_a_relative_base_dir_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    assert parse_spec({}, base_dir="sub").base_dir == str(tmp_path / "sub")


def test_a_minimal_agent_gets_every_agent_default():
    spec = spec_of('[[agents]]\nname = "echo"\nclass = "echo:Echo"\n')
    (agent,) = spec.agents
    assert agent == AgentSpec(name="echo", cls="echo:Echo")
    assert agent.restart == "on-failure"
    assert agent.replicas == 1
    assert agent.max_restarts == 1
    assert agent.restart_window == 60.0
    assert agent.backoff == 0.5
    assert agent.backoff_max == 10.0
    assert agent.mailbox == 1000
    assert agent.stop_timeout is None
    assert agent.config == {}
    assert agent.instance_names() == ["echo"]


def test_a_full_spec_keeps_every_value():
    spec = spec_of(
        """
        [node]
        name = "lab-1"
        listen = "tcp://0.0.0.0:9000"
        path = ["agents", "../shared"]
        wave_size = 2
        agent_nice = 0
        merge_pages = true
        wave_timeout = "30s"
        stop_timeout = 1.5
        max_message = "16MiB"

        [[agents]]
        name = "planner"
        class = "pkg.planner:Planner"
        restart = "always"
        replicas = 3
        max_restarts = 5
        restart_window = "2m"
        backoff = "100ms"
        backoff_max = 4
        mailbox = 50
        stop_timeout = "2s"
        config = { model = "small", layers = [1, 2], nested = { deep = true } }

        [[agents]]
        name = "critic"
        class = "critic:Outer.Critic"
        restart = "never"
        """,
        base_dir="/srv/lab",
    )
    assert spec.file == "test.toml"
    assert spec.name == "lab-1"
    assert spec.listen == "tcp://0.0.0.0:9000"
    assert spec.path == (os.path.normpath("/srv/lab/agents"), os.path.normpath("/srv/shared"))
    assert spec.wave_size == 2
    assert spec.agent_nice == 0
    assert spec.merge_pages is True
    assert spec.wave_timeout == 30.0
    assert spec.stop_timeout == 1.5
    assert spec.max_message == 16 * 1024 * 1024
    planner, critic = spec.agents
    assert planner == AgentSpec(
        name="planner",
        cls="pkg.planner:Planner",
        restart="always",
        replicas=3,
        max_restarts=5,
        restart_window=120.0,
        backoff=0.1,
        backoff_max=4.0,
        mailbox=50,
        stop_timeout=2.0,
        config={"model": "small", "layers": [1, 2], "nested": {"deep": True}},
    )
    assert planner.instance_names() == ["planner.0", "planner.1", "planner.2"]
    assert planner.module == "pkg.planner" and planner.qualname == "Planner"
    assert critic.cls == "critic:Outer.Critic"
    assert critic.max_restarts == 0
    assert spec.agent("critic") is critic
    with pytest.raises(KeyError):
        spec.agent("nobody")


@pytest.mark.parametrize(("policy", "expected"), [("never", 0), ("on-failure", 1), ("always", 10)])
def test_max_restarts_defaults_by_restart_policy(policy, expected):
    (agent,) = spec_of(f'[[agents]]\nname = "a"\nclass = "m:C"\nrestart = "{policy}"\n').agents
    assert agent.max_restarts == expected
    assert AgentSpec(name="a", cls="m:C", restart=policy).max_restarts == expected


def test_an_explicit_max_restarts_of_zero_is_kept():
    (agent,) = spec_of('[[agents]]\nname = "a"\nclass = "m:C"\nrestart = "always"\nmax_restarts = 0\n').agents
    assert agent.max_restarts == 0


def test_an_empty_agent_list_is_valid():
    assert parse_spec({"agents": []}).agents == ()


def test_specs_are_frozen():
    spec = parse_spec({})
    with pytest.raises(AttributeError):
        spec.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("tcp://127.0.0.1:7700", "tcp://127.0.0.1:7700"),
        ("127.0.0.1:7701", "tcp://127.0.0.1:7701"),
        ("localhost:1", "tcp://localhost:1"),
        ("*:65535", "tcp://*:65535"),
        ("tcp://[::1]:7700", "tcp://[::1]:7700"),
        ("TCP://host:80", "tcp://host:80"),
    ],
)
def test_listen_addresses_are_normalized_to_tcp(given, expected):
    assert spec_of(f'[node]\nlisten = "{given}"\n').listen == expected


def test_import_path_is_base_dir_then_path_then_cwd_without_duplicates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = spec_of('[node]\npath = ["lib", ".", "lib"]\n', base_dir=str(tmp_path / "conf"))
    conf, lib = str(tmp_path / "conf"), str(tmp_path / "conf" / "lib")
    assert spec.path == (lib, conf, lib)
    assert spec.import_path() == [conf, lib, str(tmp_path)]


def test_absolute_path_entries_stay_as_they_are(tmp_path):
    spec = spec_of(f'[node]\npath = ["{tmp_path.as_posix()}"]\n', base_dir="/elsewhere")
    assert spec.path == (str(tmp_path),)


def test_instance_names_are_the_name_for_one_replica_and_numbered_for_more():
    assert AgentSpec(name="w", cls="m:C").instance_names() == ["w"]
    assert AgentSpec(name="w", cls="m:C", replicas=2).instance_names() == ["w.0", "w.1"]


@pytest.mark.parametrize("name", ["a", "A-b_c.d", "0", "x" * 128, "a.", "-lead"])
def test_valid_agent_names_are_accepted(name):
    assert spec_of(f'[[agents]]\nname = "{name}"\nclass = "m:C"\n').agents[0].name == name


# --------------------------------------------------------------------------- durations and sizes


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (2, 2.0),
        (1.5, 1.5),
        ("250ms", 0.25),
        ("1.5s", 1.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        (" 3 s ", 3.0),
        ("10MS", 0.01),
        (".5s", 0.5),
        ("0s", 0.0),
    ],
)
def test_durations_are_parsed_to_seconds(value, seconds):
    result = parse_duration(value, "k", "f")
    assert isinstance(result, float)
    assert result == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "reason_part"),
    [
        (-1, "negative"),
        (-0.5, "negative"),
        ("-1s", "negative"),
        (True, "got bool"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        ("5", "no unit"),
        ("5 fortnights", "unknown duration unit 'fortnights'"),
        ("5y", "unknown duration unit 'y'"),
        ("soon", "not a duration"),
        ("1s2", "not a duration"),
        ("", "not a duration"),
        ([1], "got list"),
        (None, "got NoneType"),
    ],
)
def test_bad_durations_raise_a_spec_error_saying_why(value, reason_part):
    with pytest.raises(SpecError) as info:
        parse_duration(value, "node.wave_timeout", "f.toml")
    assert info.value.key == "node.wave_timeout"
    assert info.value.file == "f.toml"
    assert reason_part in info.value.reason
    assert str(info.value).startswith("f.toml: node.wave_timeout: ")


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (0, 0),
        (1024, 1024),
        (1e6, 1_000_000),
        ("100B", 100),
        ("100 b", 100),
        ("1KB", 1000),
        ("256MB", 256_000_000),
        ("4GB", 4_000_000_000),
        ("2TB", 2 * 1000**4),
        ("512KiB", 512 * 1024),
        ("4MiB", 4 * 1024**2),
        ("1GiB", 1024**3),
        ("1TiB", 1024**4),
        ("1.5GB", 1_500_000_000),
        ("1.1KB", 1100),
        ("0.5KiB", 512),
        ("4mib", 4 * 1024**2),
        ("4Mb", 4_000_000),
        ("4gIb", 4 * 1024**3),
    ],
)
def test_sizes_are_parsed_to_bytes(value, size):
    result = parse_size(value, "k", "f")
    assert type(result) is int
    assert result == size


@pytest.mark.parametrize(
    ("value", "reason_part"),
    [
        (-1, "negative"),
        ("-1MB", "negative"),
        (True, "got bool"),
        (False, "got bool"),
        (1.5, "whole number"),
        (float("nan"), "whole number"),
        ("1.5B", "whole number"),
        ("1024", "no unit"),
        ("4 MiBs", "unknown size unit 'MiBs'"),
        ("4M", "unknown size unit 'M'"),
        ("lots", "not a size"),
        ({}, "got dict"),
    ],
)
def test_bad_sizes_raise_a_spec_error_saying_why(value, reason_part):
    with pytest.raises(SpecError) as info:
        parse_size(value, "node.max_message", "f.toml")
    assert info.value.key == "node.max_message"
    assert reason_part in info.value.reason


# --------------------------------------------------------------------------- node errors


def test_an_unknown_top_level_key_is_named():
    error = error_of('nodes = 1\n')
    assert error.key == "nodes"
    assert error.reason.startswith("unknown key")


def test_a_node_that_is_not_a_table_is_rejected():
    error = error_of('node = "x"\n')
    assert error.key == "node"
    assert "expected a table" in error.reason and "got str" in error.reason


def test_an_unknown_node_key_is_named_with_the_known_keys_and_a_suggestion():
    error = error_of('[node]\nlisen = "127.0.0.1:1"\n')
    assert error.key == "node.lisen"
    assert error.reason.startswith("unknown key (known: name, listen, path,")
    assert "did you mean 'listen'?" in error.reason


@pytest.mark.parametrize(
    ("line", "key", "reason_part"),
    [
        ("name = 5", "node.name", "expected a string, got int"),
        ('name = ""', "node.name", "must not be empty"),
        ('name = "has space"', "node.name", "only A-Z a-z 0-9 _ . - are allowed (found ' ')"),
        ('name = ".hidden"', "node.name", "must not start with '.'"),
        ('name = "$sys"', "node.name", "reserved"),
        (f'name = "{"n" * 129}"', "node.name", "longer than 128"),
        ("listen = 7700", "node.listen", "expected a string, got int"),
        ('listen = "ipc:///tmp/x"', "node.listen", "only tcp://"),
        ('listen = "tcp://host"', "node.listen", "expected tcp://HOST:PORT"),
        ('listen = ":7700"', "node.listen", "expected tcp://HOST:PORT"),
        ('listen = "tcp://h:0"', "node.listen", "port must be 1-65535, got 0"),
        ('listen = "tcp://h:65536"', "node.listen", "port must be 1-65535, got 65536"),
        ('listen = "tcp://h:http"', "node.listen", "port must be a number"),
        ('listen = "tcp://::1:7700"', "node.listen", "need brackets"),
        ('listen = "tcp://[::1:7700"', "node.listen", "bad IPv6 host"),
        ('listen = "tcp://a/b:7700"', "node.listen", "bad host"),
        ('path = "lib"', "node.path", "expected an array of strings, got str"),
        ("path = [1]", "node.path[0]", "expected a string, got int"),
        ('path = ["a", ""]', "node.path[1]", "must not be empty"),
        ('start = "exec"', "node.start", "must be one of fork, spawn, got 'exec'"),
        ("start = 1", "node.start", "expected a string, got int"),
        ("wave_size = 0", "node.wave_size", "at least 1, got 0"),
        ("wave_size = true", "node.wave_size", "expected an integer, got bool"),
        ('wave_size = "4"', "node.wave_size", "expected an integer, got str"),
        ("wave_size = 2.0", "node.wave_size", "expected an integer, got float"),
        ("agent_nice = -1", "node.agent_nice", "at least 0, got -1"),
        ("agent_nice = 20", "node.agent_nice", "at most 19, got 20"),
        ("agent_nice = true", "node.agent_nice", "expected an integer, got bool"),
        ("merge_pages = 1", "node.merge_pages", "expected true or false, got int"),
        ('merge_pages = "yes"', "node.merge_pages", "expected true or false, got str"),
        ("wave_timeout = 0", "node.wave_timeout", "greater than 0"),
        ('wave_timeout = "-1s"', "node.wave_timeout", "negative"),
        ("stop_timeout = -1", "node.stop_timeout", "negative"),
        ('stop_timeout = "5 sec"', "node.stop_timeout", "unknown duration unit 'sec'"),
        ("max_message = 1023", "node.max_message", "at least 1024 bytes, got 1023"),
        ('max_message = "2GiB"', "node.max_message", "at most 1 GiB"),
        ("max_message = true", "node.max_message", "got bool"),
        ('max_message = "4Q"', "node.max_message", "unknown size unit 'Q'"),
        ('voter = "yes"', "node.voter", "expected true or false, got str"),
        ("election_timeout_min = 0", "node.election_timeout_min", "greater than 0"),
        ('election_timeout_max = "900ms"', "node.election_timeout_max", "must not be less than election_timeout_min"),
        ('heartbeat = "1500ms"', "node.heartbeat", "shorter than election_timeout_min"),
        ('heartbeat = "5 sec"', "node.heartbeat", "unknown duration unit 'sec'"),
    ],
)
def test_bad_node_values_name_the_key_and_the_reason(line, key, reason_part):
    error = error_of(f"[node]\n{line}\n")
    assert error.key == key
    assert reason_part in error.reason


def test_the_node_limits_themselves_are_accepted():
    spec = spec_of('[node]\nmax_message = 1024\nwave_size = 1\nstop_timeout = 0\n')
    assert (spec.max_message, spec.wave_size, spec.stop_timeout) == (1024, 1, 0.0)
    assert spec_of('[node]\nmax_message = "1GiB"\n').max_message == 1024**3


# --------------------------------------------------------------------------- agent errors


def test_agents_must_be_an_array_of_tables():
    error = error_of("[agents]\nname = 'a'\n")
    assert error.key == "agents"
    assert "array of tables" in error.reason and "got dict" in error.reason


def test_each_agent_entry_must_be_a_table():
    with pytest.raises(SpecError) as info:
        parse_spec({"agents": [{"name": "a", "class": "m:C"}, 5]})
    assert info.value.key == "agents[1]"
    assert "expected a table" in info.value.reason and "got int" in info.value.reason


def test_an_unknown_agent_key_is_named_with_its_index():
    error = error_of('[[agents]]\nname = "a"\nclass = "m:C"\n[[agents]]\nname = "b"\nclas = "m:C"\n')
    assert error.key == "agents[1].clas"
    assert error.reason.startswith("unknown key (known: name, class, restart,")
    assert "did you mean 'class'?" in error.reason


@pytest.mark.parametrize("missing", ["name", "class"])
def test_an_agent_without_a_name_or_class_is_rejected(missing):
    entry = {"name": "a", "class": "m:C"}
    del entry[missing]
    with pytest.raises(SpecError) as info:
        parse_spec({"agents": [entry]})
    assert info.value.key == f"agents[0].{missing}"
    assert "missing" in info.value.reason


@pytest.mark.parametrize(
    ("body", "key", "reason_part"),
    [
        ("restart = 'sometimes'", "restart", "must be one of never, on-failure, always, got 'sometimes'"),
        ("restart = 1", "restart", "expected a string, got int"),
        ("replicas = 0", "replicas", "at least 1, got 0"),
        ("replicas = 1001", "replicas", "at most 1000, got 1001"),
        ("replicas = true", "replicas", "expected an integer, got bool"),
        ("replicas = '2'", "replicas", "expected an integer, got str"),
        ("max_restarts = -1", "max_restarts", "at least 0, got -1"),
        ("max_restarts = 1.0", "max_restarts", "expected an integer, got float"),
        ("restart_window = 0", "restart_window", "greater than 0"),
        ("restart_window = '1 week'", "restart_window", "unknown duration unit 'week'"),
        ("backoff = -0.1", "backoff", "negative"),
        ("backoff = false", "backoff", "got bool"),
        ("backoff_max = 'x'", "backoff_max", "not a duration"),
        ("backoff = 5\nbackoff_max = 1", "backoff_max", "must not be less than backoff"),
        ("mailbox = 0", "mailbox", "at least 1, got 0"),
        ("mailbox = 2147483648", "mailbox", "at most 2147483647"),
        ("mailbox = 1.5", "mailbox", "expected an integer, got float"),
        ("stop_timeout = -2", "stop_timeout", "negative"),
        ("stop_timeout = 'now'", "stop_timeout", "not a duration"),
        ("config = 'x=1'", "config", "expected a table (keyword arguments), got str"),
        ("config = [1, 2]", "config", "got list"),
    ],
)
def test_bad_agent_values_name_the_key_and_the_reason(body, key, reason_part):
    error = agent_error(body)
    assert error.key == f"agents[0].{key}"
    assert reason_part in error.reason


@pytest.mark.parametrize(
    ("name", "reason_part"),
    [
        ("", "must not be empty"),
        ("a b", "only A-Z a-z 0-9 _ . - are allowed"),
        ("a/b", "(found '/')"),
        ("ümlaut", "only A-Z a-z 0-9"),
        (".a", "must not start with '.'"),
        ("$node", "reserved"),
        ("x" * 129, "longer than 128"),
    ],
)
def test_bad_agent_names_are_rejected(name, reason_part):
    error = agent_error("", name=name)
    assert error.key == "agents[0].name"
    assert reason_part in error.reason


def test_an_agent_name_that_is_not_a_string_is_rejected():
    with pytest.raises(SpecError) as info:
        parse_spec({"agents": [{"name": 7, "class": "m:C"}]})
    assert info.value.key == "agents[0].name"
    assert info.value.reason == "expected a string, got int"


def test_replicated_instance_names_must_fit_the_name_length():
    error = agent_error("replicas = 2", name="x" * 127)
    assert error.key == "agents[0].name"
    assert "instance name" in error.reason and "longer than 128" in error.reason


@pytest.mark.parametrize(
    ("cls", "reason_part"),
    [
        ("module.Class", "exactly one ':'"),
        ("a:b:C", "exactly one ':'"),
        (":C", "module part is empty"),
        ("m:", "class part is empty"),
        ("my-mod:C", "module part 'my-mod' is not a dotted Python identifier"),
        ("m..n:C", "not a dotted Python identifier"),
        ("m:1C", "class part '1C' is not a dotted Python identifier"),
        ("m: C", "class part ' C'"),
    ],
)
def test_bad_class_references_are_rejected(cls, reason_part):
    error = agent_error("", cls=cls)
    assert error.key == "agents[0].class"
    assert reason_part in error.reason


def test_a_class_that_is_not_a_string_is_rejected():
    with pytest.raises(SpecError) as info:
        parse_spec({"agents": [{"name": "a", "class": ["m", "C"]}]})
    assert info.value.key == "agents[0].class"
    assert info.value.reason == "expected a string, got list"


def test_duplicate_agent_names_are_rejected_at_the_second_one():
    error = error_of(
        '[[agents]]\nname = "a"\nclass = "m:C"\n'
        '[[agents]]\nname = "b"\nclass = "m:C"\n'
        '[[agents]]\nname = "a"\nclass = "m:D"\n'
    )
    assert error.key == "agents[2].name"
    assert "duplicate agent name 'a' (also agents[0])" in error.reason


def test_an_agent_named_like_an_earlier_replica_is_a_duplicate():
    error = error_of(
        '[[agents]]\nname = "a"\nclass = "m:C"\nreplicas = 2\n'
        '[[agents]]\nname = "a.1"\nclass = "m:C"\n'
    )
    assert error.key == "agents[1].name"
    assert "'a.1'" in error.reason and "agents[0]" in error.reason


def test_replicas_clashing_with_an_earlier_agent_are_duplicates():
    error = error_of(
        '[[agents]]\nname = "a.0"\nclass = "m:C"\n'
        '[[agents]]\nname = "a"\nclass = "m:C"\nreplicas = 2\n'
    )
    assert error.key == "agents[1].name"
    assert "'a.0'" in error.reason and "replicas=2" in error.reason and "agents[0]" in error.reason


def test_distinct_replicated_agents_do_not_clash():
    spec = spec_of(
        '[[agents]]\nname = "a"\nclass = "m:C"\nreplicas = 2\n'
        '[[agents]]\nname = "a.2"\nclass = "m:C"\n'
        '[[agents]]\nname = "b"\nclass = "m:C"\nreplicas = 2\n'
    )
    assert [n for agent in spec.agents for n in agent.instance_names()] == ["a.0", "a.1", "a.2", "b.0", "b.1"]


def test_a_non_table_document_is_rejected():
    with pytest.raises(SpecError) as info:
        parse_spec([1, 2])  # type: ignore[arg-type]
    assert info.value.key == "-"
    assert "got list" in info.value.reason


# --------------------------------------------------------------------------- load_spec


def test_load_spec_reads_a_file_and_sets_file_and_base_dir(tmp_path):
    (tmp_path / "lib").mkdir()
    path = tmp_path / "node.toml"
    path.write_text('[node]\nname = "n"\npath = ["lib"]\n[[agents]]\nname = "a"\nclass = "m:C"\n')
    spec = load_spec(path)
    assert spec.file == str(path)
    assert spec.base_dir == str(tmp_path)
    assert spec.path == (str(tmp_path / "lib"),)
    assert [a.name for a in spec.agents] == ["a"]


def test_load_spec_with_a_relative_path_keeps_it_as_given_and_makes_base_dir_absolute(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "node.toml").write_text("")
    monkeypatch.chdir(tmp_path)
    spec = load_spec(os.path.join("conf", "node.toml"))
    assert spec.file == os.path.join("conf", "node.toml")
    assert spec.base_dir == str(tmp_path / "conf")


def test_load_spec_on_a_missing_file_says_so(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.file == str(path)
    assert info.value.key == "-"
    assert info.value.reason == "no such file"


def test_load_spec_on_a_directory_says_so(tmp_path):
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path)
    assert info.value.key == "-"
    assert "directory" in info.value.reason


def test_load_spec_on_bad_toml_gives_the_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[node]\nname = "ok"\nlisten = \n')
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.key == "toml"
    assert "line 3" in info.value.reason


def test_load_spec_on_bad_utf8_gives_the_line(tmp_path):
    path = tmp_path / "bin.toml"
    path.write_bytes(b'[node]\nname = "\xff"\n')
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.key == "toml"
    assert "UTF-8" in info.value.reason and "line 2" in info.value.reason


def test_load_spec_reports_validation_errors_with_the_file_name(tmp_path):
    path = tmp_path / "node.toml"
    path.write_text("[node]\nwave_size = 0\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value) == f"{path}: node.wave_size: must be at least 1, got 0"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read anything")
def test_load_spec_on_an_unreadable_file_says_so(tmp_path):
    path = tmp_path / "secret.toml"
    path.write_text("")
    path.chmod(0)
    try:
        with pytest.raises(SpecError) as info:
            load_spec(path)
    finally:
        path.chmod(0o600)
    assert info.value.key == "-"
    assert "permission denied" in info.value.reason


# --------------------------------------------------------------------------- check_importable


@pytest.fixture
def module_dir(tmp_path):
    """A folder for agent modules with a unique module name; sys.modules is cleaned after."""
    name = "specmod_" + "".join(c if c.isalnum() else "_" for c in tmp_path.name)
    before = set(sys.modules)
    path_before = list(sys.path)
    yield tmp_path, name
    for mod in set(sys.modules) - before:
        if mod.startswith("specmod_"):
            del sys.modules[mod]
    assert sys.path == path_before


def write_module(folder, name: str, source: str) -> None:
    (folder / f"{name}.py").write_text(textwrap.dedent(source))


def importable_spec(folder, cls: str, path: list[str] | None = None) -> NodeSpec:
    data = {"agents": [{"name": "ok", "class": "mesh.actor:Actor"}, {"name": "a", "class": cls}]}
    if path is not None:
        data["node"] = {"path": path}
    return parse_spec(data, file="spec.toml", base_dir=str(folder))


def importable_error(folder, cls: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        check_importable(importable_spec(folder, cls))
    assert info.value.key == "agents[1].class"
    assert info.value.file == "spec.toml"
    return info.value


def test_check_importable_accepts_actor_subclasses_next_to_the_spec(module_dir):
    folder, name = module_dir
    write_module(
        folder,
        name,
        """
        import mesh

        class Echo(mesh.Actor):
            def on_message(self, message):
                return message

        class Outer:
            class Inner(Echo):
                pass
        """,
    )
    before = list(sys.path)
    check_importable(importable_spec(folder, f"{name}:Echo"))
    check_importable(importable_spec(folder, f"{name}:Outer.Inner"))
    assert sys.path == before
    assert name in sys.modules


def test_check_importable_uses_the_node_path_folders(module_dir):
    folder, name = module_dir
    (folder / "lib").mkdir()
    write_module(folder / "lib", name, "from mesh import Actor\nclass A(Actor):\n    pass\n")
    check_importable(importable_spec(folder, f"{name}:A", path=["lib"]))


def test_check_importable_restores_sys_path_after_a_failure(module_dir):
    folder, name = module_dir
    before = list(sys.path)
    with pytest.raises(SpecError):
        check_importable(importable_spec(folder, f"{name}:A"))
    assert sys.path == before


def test_check_importable_reports_a_missing_module(module_dir):
    folder, name = module_dir
    error = importable_error(folder, f"{name}:A")
    assert f"cannot import module {name!r}" in error.reason
    assert "ModuleNotFoundError" in error.reason


def test_check_importable_reports_a_module_raising_at_import(module_dir):
    folder, name = module_dir
    write_module(folder, name, "raise RuntimeError('boom at import')\n")
    error = importable_error(folder, f"{name}:A")
    assert "RuntimeError: boom at import" in error.reason
    assert isinstance(error.__cause__, RuntimeError)


def test_check_importable_reports_a_module_calling_sys_exit(module_dir):
    folder, name = module_dir
    write_module(folder, name, "import sys\nsys.exit(3)\n")
    error = importable_error(folder, f"{name}:A")
    assert "SystemExit: 3" in error.reason


def test_check_importable_reports_a_missing_class(module_dir):
    folder, name = module_dir
    write_module(folder, name, "X = 1\n")
    error = importable_error(folder, f"{name}:Missing")
    assert error.reason == f"module {name!r} has no attribute 'Missing'"


def test_check_importable_reports_something_that_is_not_a_class(module_dir):
    folder, name = module_dir
    write_module(folder, name, "def Agent():\n    pass\n")
    error = importable_error(folder, f"{name}:Agent")
    assert "is not a class (it is a function)" in error.reason


def test_check_importable_reports_a_class_that_is_not_an_actor(module_dir):
    folder, name = module_dir
    write_module(folder, name, "class Plain:\n    pass\n")
    error = importable_error(folder, f"{name}:Plain")
    assert "is not a subclass of mesh.Actor" in error.reason


def test_check_importable_with_no_agents_does_nothing():
    check_importable(parse_spec({}))


def test_election_and_placement_keys_and_their_defaults():
    spec = spec_of('[node]\nvoter = false\nelection_timeout_min = "1s"\nelection_timeout_max = "2s"\nheartbeat = "200ms"\n'
                   '[[agents]]\nname = "a"\nclass = "m:C"\nplacement = "pack"\n'
                   '[[agents]]\nname = "b"\nclass = "m:C"\nnode = "gpu"\n'
                   '[[agents]]\nname = "c"\nclass = "m:C"\n')
    assert (spec.voter, spec.election_timeout_min, spec.election_timeout_max, spec.heartbeat) == (False, 1.0, 2.0, 0.2)
    a, b, c = spec.agents
    assert (a.placement, a.node, b.node, c.placement, c.node) == ("pack", None, "gpu", "spread", None)
    default = spec_of("")
    assert (default.voter, default.election_timeout_min, default.election_timeout_max, default.heartbeat) == (
        True, 1.0, 2.0, 0.1)


@pytest.mark.parametrize(
    ("body", "key", "reason_part"),
    [
        ('placement = "random"', "agents[0].placement", "must be one of spread, pack, local, got 'random'"),
        ('start = "clone"', "agents[0].start", "must be one of fork, spawn, got 'clone'"),
        ('preload = "yes"', "agents[0].preload", "expected true or false, got str"),
        ("placement = 1", "agents[0].placement", "expected a string, got int"),
        ('node = "bad name"', "agents[0].node", "invalid node name"),
        ('node = "x"\nplacement = "pack"', "agents[0].node", "either node (pinned) or placement"),
    ],
)
def test_bad_placement_names_the_key_and_the_reason(body, key, reason_part):
    error = agent_error(body)
    assert error.key == key and reason_part in error.reason


def test_an_agent_spec_from_the_wire_is_checked_like_a_file():
    from mesh.spec import agent_from_wire, agent_to_wire

    spec = spec_of('[[agents]]\nname = "a"\nclass = "m:C"\nreplicas = 2\nconfig = { when = 1979-05-27 }\n')
    wire = agent_to_wire(spec.agents[0], spec)
    back, path, cwd = agent_from_wire(wire, "<gossip>")
    assert back.instance_names() == ["a.0", "a.1"] and back.config == {"when": "1979-05-27"} and cwd == spec.base_dir
    with pytest.raises(SpecError) as info:
        agent_from_wire({**wire, "class": "no colon"}, "<gossip from x>")
    assert info.value.file == "<gossip from x>" and info.value.key == "agents[0].class"
    with pytest.raises(SpecError):
        agent_from_wire({**wire, "cwd": "relative"}, "<gossip>")
    with pytest.raises(SpecError):
        agent_from_wire("not a table", "<gossip>")
