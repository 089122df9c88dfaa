"""The command line end to end: real files in, real HTTP to the sandbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid as uuidlib
from pathlib import Path

import pytest

from posthog_customerio.sandbox import SandboxServer

from ..conftest import API_KEY, SAMPLE_FILE, SITE_ID, Cli, write_jsonl

pytestmark = pytest.mark.e2e


def event(name: str, distinct_id: str, n: int = 0, **props: object) -> dict:
    return {
        "event": name,
        "distinct_id": distinct_id,
        "timestamp": 1_704_067_200 + n,
        "uuid": str(uuidlib.uuid5(uuidlib.NAMESPACE_DNS, f"{distinct_id}{name}{n}")),
        "properties": props,
    }


def test_send_delivers_a_file_and_prints_a_summary(cli: Cli, env: dict, sandbox: SandboxServer, tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "events.jsonl",
        [
            event("signed_up", "u1", 0, **{"$set": {"email": "u1@example.com", "plan": "pro"}}),
            event("$pageview", "u1", 1, **{"$current_url": "https://x.io/docs"}),
            event("clicked", "u2", 2, button="buy"),
        ],
    )
    result = cli("send", str(path), env=env)
    assert result.exit_code == 0, result.output
    assert "events read        3 (0 invalid)" in result.output
    assert "operations sent    5 in 1 requests" in result.output
    person = sandbox.state.person("u1@example.com")
    assert person["id"] == "u1" and person["attributes"]["plan"] == "pro"
    assert [e["type"] for e in person["events"]] == ["event", "page"]
    assert person["events"][1]["name"] == "https://x.io/docs"


def test_invalid_lines_are_reported_with_line_numbers_and_skipped(
    cli: Cli, env: dict, sandbox: SandboxServer, tmp_path: Path
) -> None:
    path = write_jsonl(
        tmp_path / "events.jsonl",
        [
            event("a", "u1", 0),
            "{not json",
            {"event": "b", "properties": {}},
            event("c", "u1", 3),
        ],
    )
    result = cli("send", "--json", str(path), env=env)
    assert result.exit_code == 0
    assert "skipped line 2: invalid JSON" in result.stderr
    assert "skipped line 3: missing distinct_id" in result.stderr
    summary = json.loads(result.stdout)
    assert (summary["read"], summary["invalid"], summary["operations_delivered"]) == (4, 2, 3)
    assert sandbox.state.stats()["events"] == 2


def test_json_array_files_and_stdin_are_accepted(cli: Cli, env: dict, sandbox: SandboxServer) -> None:
    text = json.dumps([event("a", "u1", 0), event("b", "u1", 1)], indent=2)
    result = cli("send", "-", env=env, input=text)
    assert result.exit_code == 0, result.output
    assert sandbox.state.stats()["events"] == 2


def test_allowlist_and_anonymous_filter_flags(cli: Cli, env: dict, sandbox: SandboxServer, tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "events.jsonl",
        [
            event("clicked", "anon", 0, **{"$is_identified": False}),
            event("clicked", "known", 1, **{"$is_identified": True}),
            event("ignored", "known", 2),
        ],
    )
    result = cli(
        "send",
        "--json",
        "--events-to-send",
        "clicked, other",
        "--send-events-from-anonymous-users",
        "identified",
        str(path),
        env=env,
    )
    summary = json.loads(result.stdout)
    assert summary["skipped"] == {"anonymous_user": 1, "not_in_allowlist": 1}
    assert [p["id"] for p in sandbox.state.people()] == ["known"]


def test_plugin_config_file_is_accepted_as_is(cli: Cli, env: dict, sandbox: SandboxServer, tmp_path: Path) -> None:
    config = tmp_path / "plugin.json"
    config.write_text(
        json.dumps(
            {
                "customerioSiteId": SITE_ID,
                "customerioToken": API_KEY,
                "host": "track.customer.io",
                "identifyByEmail": "Yes",
                "sendEventsFromAnonymousUsers": "Only send events from users with emails",
                "eventsToSend": "",
            }
        )
    )
    path = write_jsonl(
        tmp_path / "events.jsonl",
        [
            event("clicked", "anon", 0),
            event("signed_up", "u1", 1, **{"$set": {"email": "Ann@Example.com"}}),
            event("clicked", "u1", 2),
        ],
    )
    env = {k: v for k, v in env.items() if not k.startswith("CUSTOMERIO_") or k == "CUSTOMERIO_TRACK_URL"}
    result = cli("send", "--json", "--plugin-config", str(config), str(path), env=env)
    assert result.exit_code == 0, result.output
    (person,) = sandbox.state.people()
    assert person["email"].lower() == "ann@example.com" and person["event_count"] == 2
    ops = [op for r in sandbox.state.requests() for op in r["body"]["batch"]]
    assert all(op["identifiers"] == {"email": "Ann@Example.com"} for op in ops)


def test_an_email_typed_with_a_trailing_space_is_sent_trimmed_and_addresses_the_person(
    cli: Cli, env: dict, sandbox: SandboxServer, tmp_path: Path
) -> None:
    typed = "Rosa.Diaz@Example.COM "  # a mobile keyboard's trailing space
    path = write_jsonl(
        tmp_path / "events.jsonl",
        [
            event("signed_up", "anon-rosa", 0, **{"$set": {"email": typed, "name": "Rosa"}}),
            event("clicked", "anon-rosa", 1, button="buy"),
        ],
    )
    env = {**env, "SEND_EVENTS_FROM_ANONYMOUS_USERS": "with_email", "IDENTIFY_BY_EMAIL": "true"}
    result = cli("send", "--json", str(path), env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["skipped"] == {}  # with_email keeps the person: it has an email
    (person,) = sandbox.state.people()
    # the case the user typed is kept: Customer.io compares email identifiers case-insensitively
    assert person["email"] == "Rosa.Diaz@Example.COM"
    assert person["id"] is None and person["event_count"] == 2  # addressed by the email, not by the id
    ops = [op for r in sandbox.state.requests() for op in r["body"]["batch"]]
    assert [op["action"] for op in ops] == ["identify", "event", "event"]
    assert all(op["identifiers"] == {"email": "Rosa.Diaz@Example.COM"} for op in ops)
    assert ops[0]["attributes"] == {"email": "Rosa.Diaz@Example.COM", "name": "Rosa"}  # no trailing space


def test_restart_with_a_non_empty_outbox_delivers_the_backlog(
    cli: Cli, env: dict, sandbox: SandboxServer, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "events.jsonl", [event("a", "u1", 0), event("b", "u2", 1)])
    result = cli("send", str(path), env={**env, "CUSTOMERIO_API_KEY": "wrong-key"})
    assert result.exit_code == 1
    assert "Site ID or API key invalid" in result.stderr and "stays queued" in result.stderr
    assert "wrong-key" not in result.output
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    result = cli("send", "--json", str(empty), env=env)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["backlog_before"] == 4 and summary["operations_delivered"] == 4
    assert sandbox.state.stats()["events"] == 2


def test_dead_letters_are_listed_and_can_be_retried(
    cli: Cli, env: dict, sandbox: SandboxServer, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "events.jsonl", [event("a" * 101, "u1", 0)])  # event name over 100 bytes
    env = {**env, "LIMITS": "dead-letter"}  # let Customer.io reject it instead of cutting the name
    result = cli("send", str(path), env=env)
    assert result.exit_code == 1
    assert "dead-lettered      1" in result.output
    listing = cli("dead-letters", env=env)
    assert "u1 event " + "a" * 101 in listing.output and "1 dead letters" in listing.output
    rows = [json.loads(line) for line in cli("dead-letters", "--json", env=env).stdout.splitlines()]
    assert rows[0]["status"] == 207 and rows[0]["reason"]
    assert "re-queued 1 operations" in cli("retry-dead-letters", env=env).output
    assert "no dead letters" in cli("dead-letters", env=env).output


def test_check_reports_region_and_exit_codes(cli: Cli, env: dict) -> None:
    ok = cli("check", env=env)
    assert ok.exit_code == 0 and "credentials OK" in ok.output and "region     us" in ok.output
    bad = cli("check", env={**env, "CUSTOMERIO_API_KEY": "nope-secret"})
    assert bad.exit_code == 1 and "nope-secret" not in bad.output
    config = cli("check", env={**env, "CUSTOMERIO_REGION": "mars"})
    assert config.exit_code == 2 and "CUSTOMERIO_REGION" in config.stderr
    missing = cli("check", env={k: v for k, v in env.items() if k != "CUSTOMERIO_SITE_ID"})
    assert missing.exit_code == 2 and "CUSTOMERIO_SITE_ID" in missing.stderr


def test_bad_config_is_one_line_naming_the_variable(cli: Cli, env: dict, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "e.jsonl", [])
    result = cli("send", str(path), env={**env, "SEND_EVENTS_FROM_ANONYMOUS_USERS": "some"})
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "SEND_EVENTS_FROM_ANONYMOUS_USERS" in result.stderr


def test_secrets_are_never_printed(cli: Cli, env: dict, sandbox: SandboxServer, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "events.jsonl", [event("a", "u1", 0), "{bad"])
    outputs = [
        cli("send", str(path), env=env).output,
        cli("check", env=env).output,
        cli("send", str(path), env={**env, "CUSTOMERIO_REGION": "x"}).output,
    ]
    for output in outputs:
        assert SITE_ID not in output and API_KEY not in output


def test_send_sandbox_runs_the_bundled_sample(cli: Cli) -> None:
    """The README's first command: no account, no configuration; it shows what the README promises."""
    result = cli("send", "--sandbox", str(SAMPLE_FILE))
    assert result.exit_code == 0, result.output
    assert "(2 invalid)" in result.stdout
    lines = result.stdout.splitlines()
    assert "sandbox            18 people identified, 7 visitors never identified (44 anonymous events)" in lines
    people = [line for line in lines if line.startswith("  user")]
    assert len(people) == 18 and all("@example.com" in line.lower() for line in people)
    assert sum(line.startswith("    attributes  name=") for line in lines) == 18
    events = [line for line in lines if line.startswith("    events      ")]
    assert len(events) == 18 and all("$identify" in line and "*" in line for line in events)  # browsing attached
    assert "… and" not in result.stdout  # nobody left out
    # the README shows this output: every line it prints (but the time) is the real one, in order
    readme = (SAMPLE_FILE.parents[3] / "README.md").read_text()
    block = readme.split("prints (on stderr first")[1].split("```text\n")[1].split("```")[0].splitlines()
    position = 0
    for line in block:
        if line.startswith(("time ", "  …")):
            continue
        assert line in lines[position:], f"README line not in the output: {line!r}"
        position = lines.index(line, position) + 1
    assert "skipped line 57: invalid JSON" in result.stderr and "skipped line 127: missing distinct_id" in result.stderr


def test_console_script_runs_as_a_process(sandbox: SandboxServer, env: dict, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "events.jsonl", [event("a", "u1", 0)])
    script = Path(sys.executable).with_name("posthog-customerio")
    result = subprocess.run(
        [str(script), "send", str(path)], env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert sandbox.state.stats()["events"] == 1


def test_version_prints_the_version(cli: Cli) -> None:
    from posthog_customerio import __version__

    result = cli("--version")
    assert result.exit_code == 0 and result.stdout == f"posthog-customerio {__version__}\n"


@pytest.mark.parametrize("command", ["serve", "sandbox"])
@pytest.mark.parametrize("port", ["0", "65536", "99999", "-1"])
def test_a_port_outside_1_to_65535_is_one_line_and_exit_2(cli: Cli, env: dict, command: str, port: str) -> None:
    args = [command, "--sandbox"] if command == "serve" else [command]
    script = Path(sys.executable).with_name("posthog-customerio")
    # a process with a deadline: an accepted port would start a server that never returns
    result = subprocess.run(
        [str(script), *args, f"--port={port}"], env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr == f"error: --port must be between 1 and 65535 (got {int(port)})\n"


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["status", "--json"],
        ["dead-letters"],
        ["dead-letters", "--json"],
        ["retry-dead-letters"],
        ["retry-dead-letters", "1"],
    ],
)
def test_read_only_commands_without_data_say_so_and_create_nothing(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    result = cli(*args, env={})
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no data in ") and str(tmp_path / ".posthog-customerio") in result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""
    assert list(tmp_path.iterdir()) == []  # no ./.posthog-customerio created
    elsewhere = cli(*args, env={"POSTHOG_CUSTOMERIO_DATA_DIR": str(tmp_path / "nothing")})
    assert elsewhere.exit_code == 1 and "nothing" in elsewhere.stderr and not (tmp_path / "nothing").exists()


def test_retry_dead_letters_names_unknown_ids_and_still_requeues_the_known(
    cli: Cli, env: dict, sandbox: SandboxServer, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "events.jsonl", [event("a" * 101, "u1", 0), event("b" * 101, "u2", 1)])
    env = {**env, "LIMITS": "dead-letter"}
    assert cli("send", str(path), env=env).exit_code == 1
    first, second = (json.loads(line)["id"] for line in cli("dead-letters", "--json", env=env).stdout.splitlines())
    result = cli("retry-dead-letters", str(first), "999", "1000", env=env)
    assert result.exit_code == 1
    assert result.stdout == "re-queued 1 operations\n"
    assert result.stderr == "error: no dead letter #999, #1000 (see posthog-customerio dead-letters)\n"
    remaining = [json.loads(line)["id"] for line in cli("dead-letters", "--json", env=env).stdout.splitlines()]
    assert remaining == [second]
    again = cli("retry-dead-letters", str(first), env=env)  # already re-queued: no longer a dead letter
    assert again.exit_code == 1 and f"#{first}" in again.stderr
    assert cli("retry-dead-letters", str(second), env=env).exit_code == 0


def test_status_right_after_serve_starts_shows_the_service(cli: Cli, env: dict, tmp_path: Path) -> None:
    """The service saves its first snapshot as it starts, not 5 s later."""
    from posthog_customerio.config import load_settings
    from posthog_customerio.runtime import Runtime

    from ..service import running_service

    settings = load_settings(
        {
            "posthog_customerio_data_dir": tmp_path / "data",
            "customerio_site_id": SITE_ID,
            "customerio_api_key": API_KEY,
            "customerio_track_url": env["CUSTOMERIO_TRACK_URL"],
        }
    )
    with running_service(Runtime(settings)):
        result = cli("status", "--json", env=env)
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["service"] is not None and report["delivery"]["state"] == "running"
        text = cli("status", env=env).stdout
        assert "service snapshot" in text and "has not run" not in text


def test_settings_variables_are_flags_too(cli: Cli, env: dict, sandbox: SandboxServer, tmp_path: Path) -> None:
    """A flag wins over its environment variable (here: EVENT_NAME_MAP, MERGE_PEOPLE, LIMITS...)."""
    path = write_jsonl(tmp_path / "events.jsonl", [event("signed_up", "u1", 0, secret="s", kept="k")])
    result = cli(
        "send",
        "--json",
        "--event-name-map",
        "signed_up=Signed Up",
        "--properties-to-exclude",
        "secret",
        "--no-merge-people",
        "--limits",
        "dead-letter",
        "--delivery-linger-s",
        "0",
        "--customerio-timeout-s",
        "20",
        "--sqlite-synchronous",
        "normal",
        str(path),
        env={**env, "EVENT_NAME_MAP": "signed_up=Other"},
    )
    assert result.exit_code == 0, result.output
    (person,) = sandbox.state.people()
    (sent,) = sandbox.state.person(person["id"])["events"]
    assert sent["name"] == "Signed Up" and sent["data"] == {"kept": "k"}
    bad = cli("send", "--limits", "cut", str(path), env=env)
    assert bad.exit_code == 2 and bad.stderr.startswith("error: LIMITS:") and bad.stderr.count("\n") == 1


def test_people_known_on_the_status_api_is_current(env: dict, sandbox: SandboxServer, tmp_path: Path) -> None:
    """Not a count up to a minute old: people stored a moment ago are counted."""
    import httpx

    from posthog_customerio.config import load_settings
    from posthog_customerio.runtime import Runtime

    from ..service import running_service

    settings = load_settings(
        {
            "posthog_customerio_data_dir": tmp_path / "data",
            "customerio_site_id": SITE_ID,
            "customerio_api_key": API_KEY,
            "customerio_track_url": env["CUSTOMERIO_TRACK_URL"],
        }
    )
    with running_service(Runtime(settings)) as url:
        assert httpx.get(f"{url}/api/status", timeout=30).json()["persons"] == 0
        for people, total in ((["a", "b", "c"], 3), (["c", "d", "e"], 5), (["a"], 5)):
            body = [{"event": "clicked", "distinct_id": person, "uuid": str(uuidlib.uuid4())} for person in people]
            assert httpx.post(f"{url}/webhook", json=body, timeout=30).status_code == 200
            assert httpx.get(f"{url}/api/status", timeout=30).json()["persons"] == total


def test_send_accepts_clickhouse_lines_with_json_string_properties(
    cli: Cli, env: dict, sandbox: SandboxServer, tmp_path: Path
) -> None:
    line = {
        "uuid": str(uuidlib.uuid4()),
        "event": "purchase",
        "distinct_id": "u1",
        "timestamp": "2024-01-01 00:00:00",
        "properties": json.dumps({"amount": 30, "$set": {"email": "u1@example.com"}}),
        "person_properties": json.dumps({"plan": "pro"}),
    }
    path = write_jsonl(tmp_path / "export.jsonl", [line])
    result = cli("send", str(path), env=env)
    assert result.exit_code == 0, result.output
    assert "(0 invalid)" in result.output
    person = sandbox.state.person("u1")
    assert person["attributes"]["plan"] == "pro"
    assert person["email"] == "u1@example.com" and person["events"][0]["data"] == {"amount": 30}


def test_every_configuration_variable_is_a_flag_as_the_readme_table_says() -> None:
    """The configuration reference (docs/configuration.md, its table generated from Settings by the docs hook):
    every Settings variable has a row, and its flag exists."""
    import re

    import typer.main

    from posthog_customerio.cli import app
    from posthog_customerio.config import Settings

    group = typer.main.get_command(app)
    flags = {opt for command in group.commands.values() for param in command.params for opt in param.opts}
    flags |= {opt for command in group.commands.values() for param in command.params for opt in param.secondary_opts}
    from .test_docs import config_reference_module

    table = config_reference_module().render_table()
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `([A-Z_]+)` \| ([^|]*) \|", table, re.MULTILINE)}
    assert set(rows) >= {name.upper() for name in Settings.model_fields}
    for variable, cell in rows.items():
        named = re.findall(r"--[a-z][a-z-]*", cell)
        assert named, f"{variable} has no flag in the configuration reference"
        for flag in named:
            assert flag in flags, f"{variable}: {flag} is not a flag of any command"


# -- optional dependencies: [postgres], [kafka] ---------------------------------------------------
@pytest.mark.parametrize("module", ["psycopg", "psycopg_pool"])
def test_postgres_outbox_without_the_postgres_extra_says_what_to_install(
    cli: Cli, env: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    path = write_jsonl(tmp_path / "events.jsonl", [event("clicked", "u1", 0)])
    result = cli("send", str(path), env={**env, "OUTBOX_URL": "postgresql://user:pw-1234@127.0.0.1:9/db"})
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"error: OUTBOX_URL: a postgresql:// URL needs {module}: install posthog-customerio[postgres]\n"
    )
    assert "pw-1234" not in result.output


def test_consume_without_the_kafka_extra_says_what_to_install(
    cli: Cli, env: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "confluent_kafka", None)  # as if not installed
    result = cli("consume", "--kafka-bootstrap", "127.0.0.1:9", "--topic", "events", env=env)
    assert result.exit_code == 2, result.output
    assert result.stderr == "error: consume needs confluent_kafka: install posthog-customerio[kafka]\n"


def test_consume_names_the_missing_kafka_settings(cli: Cli, env: dict) -> None:
    result = cli("consume", "--topic", "events", env=env)
    assert (result.exit_code, result.stderr) == (2, "error: KAFKA_BOOTSTRAP_SERVERS is required (--kafka-bootstrap)\n")
    result = cli("consume", env={**env, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"})
    assert (result.exit_code, result.stderr) == (2, "error: KAFKA_TOPIC is required (--topic)\n")


def test_setting_options_are_generated_from_the_settings() -> None:
    """One declaration per setting: its flag, help, variable and default come from its Settings field."""
    import typer.main

    from posthog_customerio.cli import app
    from posthog_customerio.cli.options import setting_options
    from posthog_customerio.config import STORE

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    keep_alive = next(p for p in commands["serve"].params if "--timeout-keep-alive" in p.opts)
    assert keep_alive.help == (
        "Close idle keep-alive connections after this many seconds [env HTTP_KEEP_ALIVE_S; default 5]"
    )
    suppress = next(p for p in commands["delete-person"].params if "--suppress" in p.opts)
    assert suppress.secondary_opts == ["--no-suppress"] and "[env SUPPRESS_ON_DELETE; default false]" in suppress.help
    assert not [p for p in commands["status"].params if "--plugin-config" in p.opts]

    def clashing(flags, lease_s=1.0):  # type: ignore[no-untyped-def]  # a setting's name as its own parameter
        return None

    with pytest.raises(TypeError, match="lease_s"):
        setting_options(STORE)(clashing)


def test_every_setting_is_a_flag_of_some_command() -> None:
    from posthog_customerio.cli import setting_commands

    used = setting_commands()
    assert not [name for name, commands in used.items() if not commands]
    assert used["suppress_on_delete"] == [
        "send",
        "sync-persons",
        "sync-cohorts",
        "delete-person",
        "serve",
        "consume",
    ]  # --suppress on delete-person
    assert used["kafka_topic"] == ["consume"] and "check" not in used["delivery_linger_s"]
