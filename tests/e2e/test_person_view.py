""" "What did we send for this person?": ``posthog-customerio person ID`` and ``GET /api/people/{id}`` show a
person's distinct_ids and merges, the identifier Customer.io knows them by, the attributes last sent with
their times, queued operations, recent deliveries and dead letters; found by distinct_id or by email."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from posthog_customerio.sandbox import SandboxServer
from posthog_customerio.sources import parse_event

from ..conftest import API_KEY, Cli
from ..helpers import T0, drain, ev, make_runtime, wait_for
from ..service import running_service
from .test_status_page import browser, chromium_path  # noqa: F401 - the Chromium fixtures

OPS = "ops-person-31f0"
LONG_NAME = "n" * 120  # over Customer.io's event-name limit: dead-lettered


def _history() -> list[dict[str, Any]]:
    """A visitor who signs up (identify merges the anonymous id), is seen, and sends one rejected event."""
    return [
        ev("$pageview", "anon-77", 0, **{"$is_identified": False, "$device_id": "anon-77"}),
        ev(
            "$identify",
            "ann",
            10,
            **{"$anon_distinct_id": "anon-77"},
            top={"$set": {"email": "Ann@Example.com", "plan": "pro"}},
        ),
        ev("clicked", "ann", 20, top={"$set": {"plan": "team"}}),
        ev(LONG_NAME, "ann", 30),
    ]


def _deliver(runtime: Any, events: list[dict[str, Any]]) -> None:
    runtime.ingestor.ingest([parse_event(event) for event in events])
    drain(runtime)


@pytest.fixture
def data_dir(sandbox: SandboxServer, tmp_path: Path) -> Path:
    """A data dir where ann's history was delivered and one more operation waits."""
    where = tmp_path / "data"
    with make_runtime(sandbox, where, limits="dead-letter", anonymous_hold_s=0) as runtime:
        _deliver(runtime, _history())
        runtime.ingestor.ingest([parse_event(ev("paid", "ann", 40))])  # queued, not delivered
    return where


def test_person_shows_what_was_sent(cli: Cli, env: dict[str, str], data_dir: Path) -> None:
    env = {**env, "POSTHOG_CUSTOMERIO_DATA_DIR": str(data_dir)}
    done = cli("person", "ann", "--json", env=env)
    assert done.exit_code == 0, done.output
    person = json.loads(done.output)
    assert person["distinct_id"] == "ann" and person["email"] == "Ann@Example.com"
    assert set(person["distinct_ids"]) == {"ann", "anon-77"}
    assert {"distinct_id": "anon-77", "merged_into": "ann", "by": "identify"} in person["merges"]
    assert person["customerio_identifier"] == {"id": "ann"} and person["created"] is True
    attributes = {a["name"]: a for a in person["attributes"]}
    assert attributes["plan"]["at"] == T0 + 20 and attributes["email"]["at"] == T0 + 10
    assert [(q["action"], q["name"]) for q in person["queued"]] == [("event", "paid")]
    assert person["queued"][0]["attempts"] == 0 and person["queued"][0]["enqueued_at"] > 0
    delivered = [(d["action"], d["name"], d["outcome"]) for d in person["deliveries"]]
    assert ("event", "clicked", "delivered") in delivered and ("event", LONG_NAME, "dead-lettered") in delivered
    assert person["deliveries"][0]["at"] >= person["deliveries"][-1]["at"]  # newest first
    [letter] = person["dead_letters"]
    assert letter["name"] == LONG_NAME and letter["reason"]
    assert API_KEY not in done.output

    by_email = cli("person", "ann@example.COM", "--json", env=env)
    assert by_email.exit_code == 0, by_email.output
    assert json.loads(by_email.output)["distinct_id"] == "ann"
    assert json.loads(cli("person", "anon-77", "--json", env=env).output)["distinct_id"] == "ann"

    text = cli("person", "ann", env=env)
    assert text.exit_code == 0 and "anon-77" in text.output and "paid" in text.output
    assert "Customer.io knows them as  id ann" in text.output

    by_email_mode = cli("person", "ann", "--json", "--identify-by-email", env=env)
    assert json.loads(by_email_mode.output)["customerio_identifier"] == {"email": "Ann@Example.com"}

    unknown = cli("person", "nobody", env=env)
    assert unknown.exit_code == 1 and "no person" in unknown.output


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_deliveries_kept_per_person_are_bounded(
    sandbox: SandboxServer, tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    from posthog_customerio.outbox import DELIVERIES_KEPT
    from posthog_customerio.people import lookup_person

    url = request.getfixturevalue("pg_url") if backend == "postgresql" else None
    with make_runtime(sandbox, tmp_path / "data", anonymous_hold_s=0, outbox_url=url) as runtime:
        events = [ev("clicked", "bo", n) for n in range(DELIVERIES_KEPT + 15)] + [
            ev("seen", "cy", 1, top={"$set": {"email": "Cy@Example.io"}})
        ]
        _deliver(runtime, events)
        person = lookup_person(runtime, "bo")
        assert person is not None and len(person["deliveries"]) == DELIVERIES_KEPT
        # the newest kept: the last event sent is there, the first ones are gone
        assert person["deliveries"][0]["seq"] == max(d["seq"] for d in person["deliveries"])
        with runtime.db.reading() as tx:
            kept = tx.execute("SELECT person_key, COUNT(*) FROM deliveries GROUP BY person_key").fetchall()
        assert dict(kept) == {"bo": DELIVERIES_KEPT, "cy": 2}  # cy: identify, then the event
        assert lookup_person(runtime, "c\x00y") is None  # no stored id holds a NUL (PostgreSQL text cannot)
        other = lookup_person(runtime, "cy@example.IO")  # by email, case-insensitive
        assert other is not None and [d["name"] for d in other["deliveries"]] == ["seen", None]


@pytest.mark.e2e
def test_api_people_needs_the_token_and_answers_404(sandbox: SandboxServer, data_dir: Path) -> None:
    runtime = make_runtime(sandbox, data_dir, ops_token=OPS, anonymous_hold_s=0)
    auth = {"Authorization": f"Bearer {OPS}"}
    with running_service(runtime) as url:
        assert httpx.get(f"{url}/api/people/ann").status_code == 401
        answer = httpx.get(f"{url}/api/people/ann@example.com", headers=auth)
        assert answer.status_code == 200, answer.text
        assert set(answer.json()["distinct_ids"]) == {"ann", "anon-77"}
        missing = httpx.get(f"{url}/api/people/nobody", headers=auth)
        assert missing.status_code == 404 and "nobody" in missing.json()["error"]
        wait_for(lambda: not httpx.get(f"{url}/api/people/ann", headers=auth).json()["queued"], "paid delivered")


def test_person_flags(cli: Cli, env: dict[str, str], data_dir: Path) -> None:
    """Each flag of ``person`` as typed: where the data is, JSON, the identifier mode against the environment."""
    bare = {key: value for key, value in env.items() if key != "POSTHOG_CUSTOMERIO_DATA_DIR"}
    done = cli("person", "ann", "--data-dir", str(data_dir), "--json", env=bare)
    assert done.exit_code == 0 and json.loads(done.output)["distinct_id"] == "ann", done.output
    database = f"sqlite:///{data_dir / 'posthog-customerio.sqlite'}"
    done = cli("person", "ann", "--outbox-url", database, "--lease-s", "5", "--sqlite-synchronous", "NORMAL", env=bare)
    assert done.exit_code == 0 and "anon-77" in done.output, done.output
    by_email = cli("person", "ann", "--data-dir", str(data_dir), "--identify-by-email", env=bare)
    assert "Customer.io knows them as  email Ann@Example.com" in by_email.output, by_email.output
    by_id = cli(
        "person",
        "ann",
        "--data-dir",
        str(data_dir),
        "--no-identify-by-email",
        env={**bare, "IDENTIFY_BY_EMAIL": "true"},
    )
    assert "Customer.io knows them as  id ann" in by_id.output, by_id.output
    for flag, value, variable in (
        ("--lease-s", "-1", "LEASE_S"),
        ("--sqlite-synchronous", "BAD", "SQLITE_SYNCHRONOUS"),
    ):
        bad = cli("person", "ann", "--data-dir", str(data_dir), flag, value, env=bare)
        assert bad.exit_code == 2 and variable in bad.output, bad.output
    missing = cli("person", "ann", "--data-dir", str(data_dir / "nothing-here"), env=bare)
    assert missing.exit_code == 1 and "no data" in missing.output


@pytest.mark.e2e
def test_status_page_looks_a_person_up(browser: Any, sandbox: SandboxServer, data_dir: Path) -> None:
    from playwright.sync_api import expect

    runtime = make_runtime(sandbox, data_dir, anonymous_hold_s=0)
    with running_service(runtime, deliver=False) as url:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{url}/status")
        page.fill("#person-query", "ANN@example.com")
        page.click("#person-lookup")
        expect(page.locator("#person-distinct-ids")).to_have_text("ann, anon-77")
        expect(page.locator("#person-identifier")).to_have_text("id ann")
        expect(page.locator("#person-merges")).to_contain_text("anon-77 → ann (identify)")
        expect(page.locator("#person-attributes")).to_contain_text("plan (")
        expect(page.locator("#person-queued tr")).to_have_count(1)
        expect(page.locator("#person-queued tr").first).to_contain_text("paid")
        expect(page.locator("#person-deliveries tr").filter(has_text="clicked")).to_have_count(1)
        expect(page.locator("#person-dead-letters tr")).to_have_count(1)
        page.fill("#person-query", "nobody-<b>")
        page.click("#person-lookup")
        expect(page.locator("#person-result")).to_contain_text("no person 'nobody-<b>'")
        expect(page.locator("#person-view")).to_be_hidden()
        page.close()
    assert not errors, errors


def test_api_people_is_never_forwarded_to_posthog() -> None:
    """As a PostHog proxy, ``/api/*`` goes to PostHog except this service's own paths: people are ours."""
    from posthog_customerio.service.paths import is_ops_path, is_posthog_path

    for path in ("/api/people/ann", "/api/people/ann%40example.com", "/api/dead-letters/3/retry"):
        assert is_ops_path(path, proxying=True) and not is_posthog_path(path), path
    assert is_posthog_path("/api/projects/1") and not is_ops_path("/api/projects/1", proxying=True)


def test_unsuppress_and_delete_person_go_by_the_merged_person(sandbox: SandboxServer, data_dir: Path) -> None:
    """The operator's actions on one person (the CLI's delete-person and unsuppress) follow merges:
    asked for a merged distinct_id, they go by the person it belongs to, with every identifier known."""
    from posthog_customerio import people
    from posthog_customerio.state import load_states

    with make_runtime(sandbox, data_dir, anonymous_hold_s=0) as runtime:
        sent = people.unsuppress(runtime, "anon-77")
        assert sent == [{"id": "ann"}, {"id": "anon-77"}, {"email": "Ann@Example.com"}]
        with runtime.db.reading() as tx:
            ann = load_states(tx, ["ann"])["ann"]
        assert (ann.created, ann.email_sent, ann.digests) == (False, None, {})  # its next event creates it again
        with runtime.db.reading() as tx:
            queued = [json.loads(row.payload) for row in tx.queued_of(["ann"], 50)]
        assert [q["identifiers"] for q in queued if q.get("action") == "unsuppress"] == sent
        deletion = people.delete_person(runtime, "anon-77")
        assert deletion.identifiers == sent and deletion.unknown  # not created since the unsuppress
        drain(runtime)
    assert sandbox.state.person("ann") is None
