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

from .conftest import API_KEY, SAMPLE_FILE, SITE_ID, Cli, write_jsonl

pytestmark = pytest.mark.e2e


def event(name: str, distinct_id: str, n: int = 0, **props: object) -> dict:
    return {"event": name, "distinct_id": distinct_id, "timestamp": 1_704_067_200 + n,
            "uuid": str(uuidlib.uuid5(uuidlib.NAMESPACE_DNS, f"{distinct_id}{name}{n}")), "properties": props}


def test_send_delivers_a_file_and_prints_a_summary(cli: Cli, env: dict, sandbox: SandboxServer, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "events.jsonl", [
        event("signed_up", "u1", 0, **{"$set": {"email": "u1@example.com", "plan": "pro"}}),
        event("$pageview", "u1", 1, **{"$current_url": "https://x.io/docs"}),
        event("clicked", "u2", 2, button="buy"),
    ])
    result = cli("send", str(path), env=env)
    assert result.exit_code == 0, result.output
    assert "events read        3 (0 invalid)" in result.output
    assert "operations sent    5 in 1 requests" in result.output
    person = sandbox.state.person("u1@example.com")
    assert person["id"] == "u1" and person["attributes"]["plan"] == "pro"
    assert [e["type"] for e in person["events"]] == ["event", "page"]
    assert person["events"][1]["name"] == "https://x.io/docs"


def test_invalid_lines_are_reported_with_line_numbers_and_skipped(cli: Cli, env: dict, sandbox: SandboxServer, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "events.jsonl", [
        event("a", "u1", 0), "{not json", {"event": "b", "properties": {}}, event("c", "u1", 3),
    ])
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
    path = write_jsonl(tmp_path / "events.jsonl", [
        event("clicked", "anon", 0, **{"$is_identified": False}),
        event("clicked", "known", 1, **{"$is_identified": True}),
        event("ignored", "known", 2),
    ])
    result = cli("send", "--json", "--events-to-send", "clicked, other", "--send-events-from-anonymous-users",
                 "identified", str(path), env=env)
    summary = json.loads(result.stdout)
    assert summary["skipped"] == {"anonymous_user": 1, "not_in_allowlist": 1}
    assert [p["id"] for p in sandbox.state.people()] == ["known"]


def test_plugin_config_file_is_accepted_as_is(cli: Cli, env: dict, sandbox: SandboxServer, tmp_path: Path) -> None:
    config = tmp_path / "plugin.json"
    config.write_text(json.dumps({
        "customerioSiteId": SITE_ID, "customerioToken": API_KEY, "host": "track.customer.io",
        "identifyByEmail": "Yes", "sendEventsFromAnonymousUsers": "Only send events from users with emails",
        "eventsToSend": "",
    }))
    path = write_jsonl(tmp_path / "events.jsonl", [
        event("clicked", "anon", 0),
        event("signed_up", "u1", 1, **{"$set": {"email": "Ann@Example.com"}}),
        event("clicked", "u1", 2),
    ])
    env = {k: v for k, v in env.items() if not k.startswith("CUSTOMERIO_") or k == "CUSTOMERIO_TRACK_URL"}
    result = cli("send", "--json", "--plugin-config", str(config), str(path), env=env)
    assert result.exit_code == 0, result.output
    (person,) = sandbox.state.people()
    assert person["email"].lower() == "ann@example.com" and person["event_count"] == 2
    ops = [op for r in sandbox.state.requests() for op in r["body"]["batch"]]
    assert all(op["identifiers"] == {"email": "Ann@Example.com"} for op in ops)


def test_restart_with_a_non_empty_outbox_delivers_the_backlog(cli: Cli, env: dict, sandbox: SandboxServer, tmp_path: Path) -> None:
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


def test_dead_letters_are_listed_and_can_be_retried(cli: Cli, env: dict, sandbox: SandboxServer, tmp_path: Path) -> None:
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
    outputs = [cli("send", str(path), env=env).output, cli("check", env=env).output,
               cli("send", str(path), env={**env, "CUSTOMERIO_REGION": "x"}).output]
    for output in outputs:
        assert SITE_ID not in output and API_KEY not in output


def test_send_sandbox_runs_the_bundled_sample(cli: Cli) -> None:
    """The README's first command: no account, no configuration."""
    result = cli("send", "--sandbox", str(SAMPLE_FILE))
    assert result.exit_code == 0, result.output
    assert "(2 invalid)" in result.output
    people_line = next(line for line in result.output.splitlines() if line.startswith("sandbox"))
    people = int(people_line.split()[1])
    assert people >= 15  # the identified users; anonymous visitors stay anonymous events
    assert "anonymous" in people_line


def test_console_script_runs_as_a_process(sandbox: SandboxServer, env: dict, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "events.jsonl", [event("a", "u1", 0)])
    script = Path(sys.executable).with_name("posthog-customerio")
    result = subprocess.run([str(script), "send", str(path)], env={**os.environ, **env},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert sandbox.state.stats()["events"] == 1
