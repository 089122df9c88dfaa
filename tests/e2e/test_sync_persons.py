"""``sync-persons`` end to end: PostHog's persons (the API stand-in over HTTP, or export files) -> the command ->
the outbox -> Customer.io (the sandbox over HTTP). Judged by the end state: which profiles exist and what
they hold, and what a second run, a change, a kill -9 and live events do next."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from posthog_customerio.sandbox import SandboxServer

from ..conftest import Cli, write_jsonl
from ..helpers import ev, profiles, wait_for, write_export_jsonl, write_export_parquet
from ..posthog_api_standin import STANDIN_KEY, PersonsStandin, make_person, running_persons_standin

PERSONS = 300  # three pages of PostHog's default 100
IDENTIFIED = [i for i in range(PERSONS) if i % 3 != 0]


@pytest.fixture
def standin() -> Iterator[tuple[PersonsStandin, str]]:
    served = PersonsStandin(PERSONS)
    with running_persons_standin(served) as url:
        yield served, url


@pytest.fixture
def api_env(env: dict[str, str], standin: tuple[PersonsStandin, str]) -> dict[str, str]:
    """The sandbox as Customer.io and the stand-in as PostHog's API (unpaced: PostHog's pacing has unit tests)."""
    return {
        **env,
        "POSTHOG_API_HOST": standin[1],
        "POSTHOG_PROJECT_ID": "1",
        "POSTHOG_PERSONAL_API_KEY": STANDIN_KEY,
        "POSTHOG_API_MAX_PER_MINUTE": "100000",
    }


def sync(cli: Cli, env: dict[str, str], *args: str) -> dict[str, Any]:
    result = cli("sync-persons", "--json", *args, env=env)
    assert result.exit_code == 0, result.output
    assert STANDIN_KEY not in result.output
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


def by_id(sandbox: SandboxServer) -> dict[str, dict[str, Any]]:
    return {str(profile["id"]): profile for profile in profiles(sandbox)}


def requests(sandbox: SandboxServer) -> int:
    return int(sandbox.state.stats().get("requests", 0))


def identified_ids(sandbox: SandboxServer) -> Counter[str]:
    """How many identify operations the sandbox accepted, by the person's id (Track v2 requests)."""
    counted: Counter[str] = Counter()
    for request in sandbox.state.requests():
        body = request["body"] if request["status"] == 200 and isinstance(request["body"], dict) else {}
        for op in body.get("batch", [body]):
            if isinstance(op, dict) and op.get("action") == "identify":
                counted[op["identifiers"]["id"]] += 1
    return counted


def test_every_identified_person_becomes_one_profile_and_a_second_run_sends_nothing(
    cli: Cli, api_env: dict[str, str], sandbox: SandboxServer
) -> None:
    summary = sync(cli, api_env)

    assert summary["read"] == PERSONS and summary["skipped"] == {"anonymous_person": PERSONS - len(IDENTIFIED)}
    people = by_id(sandbox)
    assert sorted(people) == sorted(f"user-{i}" for i in IDENTIFIED)
    assert people["user-1"]["email"] == "user1@example.com"
    assert people["user-1"]["attributes"]["plan"] == "pro" and people["user-2"]["attributes"]["plan"] == "free"
    sent = requests(sandbox)
    assert sent <= len(IDENTIFIED) / 10  # Track v2 batches: far fewer requests than persons

    again = sync(cli, api_env)

    assert again["read"] == PERSONS and again["operations_enqueued"] == 0
    assert again["skipped"]["unchanged"] == len(IDENTIFIED)
    assert requests(sandbox) == sent


def test_a_few_thousand_persons_across_thirty_pages_with_a_429_and_a_5xx_on_the_way(
    cli: Cli, env: dict[str, str], sandbox: SandboxServer
) -> None:
    many = PersonsStandin(3000)
    many.rate_limit_next(1, retry_after="0")
    with running_persons_standin(many) as url:
        api = {"POSTHOG_API_HOST": url, "POSTHOG_PROJECT_ID": "1", "POSTHOG_PERSONAL_API_KEY": STANDIN_KEY}
        api["POSTHOG_API_MAX_PER_MINUTE"] = "100000"
        first = sync(cli, {**env, **api})
        many.fail_next(1)
        second = sync(cli, {**env, **api})

    identified = [i for i in range(3000) if i % 3 != 0]
    assert first["read"] == 3000 and first["actions"] == {"identify": len(identified)}
    assert sorted(by_id(sandbox)) == sorted(f"user-{i}" for i in identified)
    assert second["read"] == 3000 and second["operations_enqueued"] == 0
    assert sum(1 for seen in many.requests if seen.status == 200) == 60  # 30 pages, read once per run


def test_a_run_after_changes_sends_only_the_changed_attributes_of_the_changed_people(
    cli: Cli, api_env: dict[str, str], sandbox: SandboxServer, standin: tuple[PersonsStandin, str]
) -> None:
    sync(cli, api_env)
    served, _ = standin
    with served.lock:
        served.persons[1]["properties"]["plan"] = "enterprise"
        served.persons[2]["properties"]["company"] = "Acme"
    sandbox.state.reset()  # from here on, the sandbox shows only what the second run sent

    summary = sync(cli, api_env)

    assert summary["actions"] == {"identify": 2}
    people = by_id(sandbox)  # reset: an identify of only the changed attribute re-creates a bare profile
    assert people["user-1"]["attributes"] == {"plan": "enterprise"}
    assert people["user-2"]["attributes"] == {"company": "Acme"}
    assert len(people) == 2


def test_live_events_from_any_of_a_synced_persons_distinct_ids_land_on_its_one_profile(
    cli: Cli, api_env: dict[str, str], sandbox: SandboxServer, tmp_path: Path
) -> None:
    sync(cli, api_env)
    events = write_jsonl(
        tmp_path / "live.jsonl",
        [ev("Signed In", "anon-4", properties={"$device_id": "anon-4"}), ev("Upgraded", "user-4", t=5)],
    )

    result = cli("send", str(events), env=api_env)

    assert result.exit_code == 0, result.output
    people = by_id(sandbox)
    assert people["user-4"]["events"] == ["Signed In", "Upgraded"]
    assert "anon-4" not in people
    assert not sandbox.state.anonymous_events()


def test_a_live_write_newer_than_the_sync_survives_it_and_the_syncs_other_values_still_land(
    cli: Cli, api_env: dict[str, str], sandbox: SandboxServer, tmp_path: Path, standin: tuple[PersonsStandin, str]
) -> None:
    later = datetime.now(UTC) + timedelta(minutes=10)  # written after the sync's snapshot
    live = ev("$set", "user-5", top={"$set": {"plan": "live-value"}, "timestamp": later.isoformat()})
    assert cli("send", str(write_jsonl(tmp_path / "live.jsonl", [live])), env=api_env).exit_code == 0
    served, _ = standin
    with served.lock:
        served.persons[5]["properties"]["company"] = "Acme"  # PostHog's plan is older: "pro"

    sync(cli, api_env)

    profile = by_id(sandbox)["user-5"]
    assert profile["attributes"]["plan"] == "live-value"
    assert profile["attributes"]["company"] == "Acme" and profile["email"] == "user5@example.com"


def test_a_run_killed_mid_way_resumes_where_it_stopped_and_sends_no_person_twice(
    api_env: dict[str, str], sandbox: SandboxServer, standin: tuple[PersonsStandin, str], tmp_path: Path
) -> None:
    served, _ = standin
    served.slow_next(PERSONS, delay_s=0.3)  # every page takes a while: the kill lands mid-run
    checkpoint = Path(api_env["POSTHOG_CUSTOMERIO_DATA_DIR"]) / "posthog-persons.checkpoint"
    command = [sys.executable, "-m", "posthog_customerio", "sync-persons", "--json"]
    first = subprocess.Popen(command, env={**os.environ, **api_env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: checkpoint.exists() and json.loads(checkpoint.read_text())["pages"] >= 1, timeout=60)
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
    read_before = json.loads(checkpoint.read_text())["persons"]
    assert 0 < read_before < PERSONS
    served.slow_next(0)

    second = subprocess.run(command, env={**os.environ, **api_env}, capture_output=True, text=True, timeout=120)

    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)
    assert summary["resumed_after"] == read_before
    assert summary["read"] + read_before >= PERSONS  # the page in flight at the kill may be read again
    assert sorted(by_id(sandbox)) == sorted(f"user-{i}" for i in IDENTIFIED)
    identifies = identified_ids(sandbox)
    assert set(identifies) == {f"user-{i}" for i in IDENTIFIED}
    assert max(identifies.values()) <= 2  # a second send only for a request in flight at the kill (idempotent)


def test_dry_run_lists_what_would_be_sent_and_sends_nothing(
    cli: Cli, api_env: dict[str, str], sandbox: SandboxServer
) -> None:
    result = cli("sync-persons", "--dry-run", env=api_env)

    assert result.exit_code == 0, result.output
    assert f"operations         {len(IDENTIFIED)} would be sent: identify {len(IDENTIFIED)}" in result.stdout
    assert "'identifiers': {'id': 'user-1'}" in result.stdout
    assert requests(sandbox) == 0
    assert sync(cli, api_env)["actions"] == {"identify": len(IDENTIFIED)}  # nothing was remembered either


def test_missing_api_settings_and_a_refused_key_are_one_line_errors_without_the_key(
    cli: Cli, api_env: dict[str, str]
) -> None:
    missing = {k: v for k, v in api_env.items() if k not in ("POSTHOG_PROJECT_ID", "POSTHOG_PERSONAL_API_KEY")}
    result = cli("sync-persons", env=missing)
    assert result.exit_code == 2
    assert "set POSTHOG_PROJECT_ID, POSTHOG_PERSONAL_API_KEY" in result.output

    wrong = "phx_wrong_key_0123456789abcdef"
    result = cli("sync-persons", env={**api_env, "POSTHOG_PERSONAL_API_KEY": wrong})
    assert result.exit_code == 1
    assert "PostHog refused the key" in result.output and wrong not in result.output


# -- export files -------------------------------------------------------------------------------------------


def export_row(distinct_id: str, person: str, version: int, deleted: bool = False, **properties: Any) -> dict[str, Any]:
    return {
        "team_id": 1,
        "distinct_id": distinct_id,
        "person_id": person,
        "properties": properties,
        "person_distinct_id_version": 0,
        "person_version": version,
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
        "_inserted_at": datetime(2026, 11, version, tzinfo=UTC),
        "is_deleted": deleted,
    }


ADA, BOB, CAT = (f"0000000{n}-0000-4000-8000-00000000000{n}" for n in (1, 2, 3))
#: Ada's browser before she signed in: posthog-js' anonymous id (a UUIDv7)
ADA_DEVICE = "0192f0c4-1c2d-7e3f-8a4b-5c6d7e8f9a0b"


def write_export(directory: Path, rows: list[dict[str, Any]], name: str, compression: str) -> str:
    """An export data file in ``directory`` (``gzip``/``zstd`` JSON Lines, else zstd Parquet); its name."""
    if compression in ("gzip", "zstd"):
        ending = {"gzip": ".jsonl.gz", "zstd": ".jsonl.zst"}[compression]
        return write_export_jsonl(directory / f"{name}{ending}", rows, compression).name
    return write_export_parquet(directory / f"{name}.parquet", rows, "persons", compression="zstd").name


def test_an_export_in_every_format_with_superseded_versions_and_deletes(
    cli: Cli, env: dict[str, str], sandbox: SandboxServer, tmp_path: Path
) -> None:
    export = tmp_path / "export"
    export.mkdir()
    files = [
        write_export(export, [export_row(ADA_DEVICE, ADA, 1, plan="free")], "a", "parquet"),
        write_export(
            export,
            [
                export_row(ADA_DEVICE, ADA, 2, plan="pro", email="ada@example.com"),
                export_row("ada", ADA, 2, plan="pro", email="ada@example.com"),
            ],
            "b",
            "zstd",
        ),
        write_export(
            export, [export_row("bob", BOB, 1, plan="team"), export_row("cat", CAT, 1, plan="x")], "c", "gzip"
        ),
    ]
    manifest = export / "2026-11-01T00:00:00-2026-11-02T00:00:00_manifest.json"
    manifest.write_text(json.dumps({"files": files}))
    before = sorted(p.name for p in export.iterdir())

    summary = sync(cli, env, "--from", str(manifest))

    assert summary["read"] == 3 and summary["actions"] == {"identify": 3}
    people = by_id(sandbox)
    assert sorted(people) == ["ada", "bob", "cat"]
    assert people["ada"]["attributes"]["plan"] == "pro" and people["ada"]["email"] == "ada@example.com"

    later = tmp_path / "later"
    later.mkdir()
    write_export(later, [export_row("bob", BOB, 3, deleted=True), export_row("cat", CAT, 3, plan="y")], "d", "gzip")

    summary = sync(cli, env, "--from", str(later))

    assert summary["actions"] == {"delete": 1, "identify": 1}
    people = by_id(sandbox)
    assert sorted(people) == ["ada", "cat"] and people["cat"]["attributes"]["plan"] == "y"
    assert sorted(p.name for p in export.iterdir()) == before  # the user's files are untouched


@pytest.mark.parametrize("api", ["v1", "pipelines"])
def test_track_v1_and_pipelines_get_the_same_people(
    cli: Cli, api_env: dict[str, str], sandbox: SandboxServer, api: str
) -> None:
    extra = {"CUSTOMERIO_API": api}
    if api == "pipelines":
        extra |= {"CUSTOMERIO_PIPELINES_API_KEY": "sandbox", "CUSTOMERIO_PIPELINES_URL": sandbox.url}

    sync(cli, {**api_env, **extra})

    people = {p["id"]: p for p in profiles(sandbox, pipelines=api == "pipelines")}
    assert sorted(people) == sorted(f"user-{i}" for i in IDENTIFIED)
    assert people["user-1"]["email"] == "user1@example.com" and people["user-1"]["attributes"]["plan"] == "pro"


def test_seed_options_identify_by_email_and_anonymous_filters_apply_to_persons(
    cli: Cli, api_env: dict[str, str], sandbox: SandboxServer
) -> None:
    sync(cli, {**api_env, "IDENTIFY_BY_EMAIL": "true", "ANONYMOUS_EVENTS": "person"})

    people = profiles(sandbox)
    assert len(people) == PERSONS  # ANONYMOUS_EVENTS=person: the anonymous persons are profiles too
    by_email = {p["email"]: p for p in people if p["email"]}
    assert sorted(by_email) == sorted(f"user{i}@example.com" for i in IDENTIFIED)
    assert by_email["user1@example.com"]["id"] is None  # addressed by email: no id given
    assert make_person(0)["distinct_ids"] == ["anon-0"] and "anon-0" in by_id(sandbox)


def test_restart_with_an_export_is_refused_as_meaningless(cli: Cli, env: dict[str, str], tmp_path: Path) -> None:
    export = tmp_path / "persons.jsonl"
    write_export_jsonl(export, [export_row("ann", ADA, 1, plan="pro")])

    result = cli("sync-persons", "--from", str(export), "--restart", env=env)

    assert result.exit_code == 2 and "--from reads the whole export every time" in result.output


def test_a_malformed_row_or_a_missing_extra_stops_before_anything_is_sent(
    cli: Cli, env: dict[str, str], sandbox: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    export = tmp_path / "persons.jsonl"
    write_export_jsonl(export, [export_row("ann", ADA, 1), {"distinct_id": "bob"}])

    result = cli("sync-persons", "--from", str(export), env=env)

    assert result.exit_code == 1
    assert f"{export}: line 2: a persons row needs person_id" in result.output
    assert requests(sandbox) == 0

    from posthog_customerio.sources import batch_exports

    def no_pyarrow() -> None:
        raise batch_exports.MissingExtra(f"reading Parquet files needs the pyarrow package: {batch_exports.EXTRA_HINT}")

    monkeypatch.setattr(batch_exports, "_parquet", no_pyarrow)
    parquet = tmp_path / "parquet"
    parquet.mkdir()
    write_export(parquet, [export_row("ann", ADA, 1)], "a", "parquet")

    result = cli("sync-persons", "--from", str(parquet), env=env)

    assert result.exit_code == 2 and "pip install 'posthog-customerio[exports]'" in result.output
