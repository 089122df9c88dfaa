"""`serve` keeping people in sync (``PERSON_SYNC_INTERVAL_S``) as a real process, against the stand-in of PostHog's
persons API (uvicorn on loopback) and the Customer.io sandbox: every identified person becomes a profile, a
change made in PostHog (and only it) follows, a failing PostHog is counted while the service keeps answering;
two replicas on one PostgreSQL outbox never run passes at the same time."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from posthog_customerio.sandbox import SandboxServer

from ..conftest import API_KEY, SITE_ID
from ..helpers import profiles, wait_for
from ..posthog_api_standin import STANDIN_KEY, PersonsStandin, Seen, running_persons_standin
from ..service import metric, serve_process
from .test_service_process import SCRIPT

pytestmark = pytest.mark.e2e

#: persons 0..29, ten a page (three pages a pass); a third never identified
PERSONS, PAGE = 30, 10
IDENTIFIED = sum(1 for index in range(PERSONS) if index % 3)
LAST_OFFSET = str(PERSONS - PAGE)


@pytest.fixture
def standin() -> Iterator[tuple[PersonsStandin, str]]:
    served = PersonsStandin(PERSONS, default_limit=PAGE)
    with running_persons_standin(served) as url:
        yield served, url


def sync_env(sandbox: SandboxServer, posthog_url: str, data_dir: Path) -> dict[str, str]:
    return {
        "CUSTOMERIO_SITE_ID": SITE_ID,
        "CUSTOMERIO_API_KEY": API_KEY,
        "CUSTOMERIO_TRACK_URL": sandbox.url,
        "POSTHOG_CUSTOMERIO_DATA_DIR": str(data_dir),
        "LOG_FORMAT": "json",
        "SHUTDOWN_GRACE_S": "2",
        "PERSON_SYNC_INTERVAL_S": "1",
        "POSTHOG_API_HOST": posthog_url,
        "POSTHOG_PROJECT_ID": "1",
        "POSTHOG_PERSONAL_API_KEY": STANDIN_KEY,
    }


def serving(env: dict[str, str], log: Path) -> AbstractContextManager[str]:
    """``serve`` with ``env`` over this process's environment (:func:`~tests.service.serve_process`)."""
    return serve_process({**os.environ, **env}, log)


def person_sync(url: str) -> dict[str, Any]:
    section: dict[str, Any] = httpx.get(f"{url}/api/status", timeout=10).json()["person_sync"]
    return section


def plan_of(sandbox: SandboxServer, person: str) -> Any:
    return next((p["attributes"].get("plan") for p in profiles(sandbox) if p["id"] == person), None)


def change(standin: PersonsStandin, index: int, **properties: Any) -> None:
    """Change a person in PostHog (the stand-in), as an edit in PostHog would."""
    with standin.lock:
        person = standin.persons[index]
        standin.persons[index] = {**person, "properties": {**person["properties"], **properties}}


def test_serve_syncs_people_on_its_schedule_only_what_changed_and_survives_posthog_failing(
    sandbox: SandboxServer, standin: tuple[PersonsStandin, str], tmp_path: Path
) -> None:
    served, posthog_url = standin
    log = tmp_path / "serve.log"
    with serving(sync_env(sandbox, posthog_url, tmp_path / "data"), log) as url:
        wait_for(lambda: len(profiles(sandbox)) == IDENTIFIED, "every identified person as a profile", 60)
        assert plan_of(sandbox, "user-1") == "pro"
        first = wait_for(lambda: (s := person_sync(url))["passes"]["ok"] >= 2 and s, "a second pass (nothing new)")
        assert first["interval_s"] == 1.0 and first["passes"]["failed"] == 0
        assert first["last_pass"]["outcome"] == "ok" and first["last_pass"]["duration_s"] >= 0
        enqueued = first["operations_enqueued"]

        change(served, 1, plan="enterprise")
        wait_for(lambda: plan_of(sandbox, "user-1") == "enterprise", "the change in Customer.io", 30)
        after = wait_for(lambda: (s := person_sync(url))["passes"]["ok"] >= first["passes"]["ok"] + 2 and s, "passes")
        assert after["operations_enqueued"] == enqueued + 1  # that change, nothing else
        assert metric(url, 'posthog_customerio_person_sync_passes_total{outcome="ok"}') >= after["passes"]["ok"]
        assert metric(url, "posthog_customerio_person_sync_persons_read_total") >= PERSONS * after["passes"]["ok"]
        assert metric(url, "posthog_customerio_person_sync_last_success_timestamp_seconds") > 0

        served.fail_next(100)  # PostHog down: every try of the pass's first page fails
        failed = wait_for(lambda: (s := person_sync(url))["passes"]["failed"] >= 1 and s, "a failed pass", 30)
        assert "HTTP 503" in failed["last_error"] and failed["last_pass"]["outcome"] == "failed"
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        accepted = httpx.post(f"{url}/webhook", json=[webhook_event()], timeout=10)
        assert accepted.status_code == 200  # the service keeps receiving
        assert metric(url, 'posthog_customerio_person_sync_passes_total{outcome="failed"}') >= 1
        served.fail_next(0)
        ok = failed["passes"]["ok"]
        wait_for(lambda: person_sync(url)["passes"]["ok"] > ok, "a pass succeeding again", 30)
    text = log.read_text()
    assert "the pass failed" in text and STANDIN_KEY not in text
    # `status` shows the same from the data dir, the service stopped (its last heartbeat)
    env = sync_env(sandbox, posthog_url, tmp_path / "data")
    offline = subprocess.run(
        [str(SCRIPT), "status", "--json"], env={**os.environ, **env}, capture_output=True, text=True, timeout=30
    )
    shown = json.loads(offline.stdout)["person_sync"]
    assert shown["passes"]["ok"] > ok and shown["passes"]["failed"] >= 1 and shown["interval_s"] == 1.0
    words = subprocess.run(
        [str(SCRIPT), "status"], env={**os.environ, **env}, capture_output=True, text=True, timeout=30
    ).stdout
    assert "person sync        every 1s;" in words and "  last pass        " in words, words


def webhook_event() -> dict[str, Any]:
    return {
        "event": {
            "uuid": "7b2c4b8e-6d0c-4c36-9f43-2a1d9c1e0a01",
            "event": "clicked",
            "distinct_id": "user-2",
            "timestamp": "2024-01-01T00:00:00Z",
            "properties": {},
        },
        "person": {"properties": {"email": "user2@example.com"}},
    }


def passes_in(log: list[Seen]) -> int:
    """Whole passes in the stand-in's request log (first page, then the next ones, to the last); fails if a
    pass's first page comes while another pass is under way (two passes at the same time)."""
    passes, open_pass = 0, False
    for seen in log:
        assert seen.status == 200, seen
        offset = dict(parse_qsl(seen.query)).get("offset", "0")
        if offset == "0":
            assert not open_pass, "a pass began while another one was under way"
            open_pass = True
        if offset == LAST_OFFSET:
            assert open_pass, "a page read outside any pass"
            open_pass, passes = False, passes + 1
    return passes


def test_two_replicas_on_postgresql_take_turns_never_two_passes_at_once(
    sandbox: SandboxServer, standin: tuple[PersonsStandin, str], tmp_path: Path, pg_url: str
) -> None:
    served, posthog_url = standin
    served.slow_next(100_000, 0.15)  # each page takes a while: passes that could overlap would
    replica = {"OUTBOX_URL": pg_url, "LEASE_S": "5"}
    env_a = {**sync_env(sandbox, posthog_url, tmp_path / "a"), **replica}
    env_b = {**sync_env(sandbox, posthog_url, tmp_path / "b"), **replica}
    with serving(env_a, tmp_path / "a.log") as url_a, serving(env_b, tmp_path / "b.log") as url_b:
        wait_for(lambda: len(profiles(sandbox)) == IDENTIFIED, "every identified person as a profile", 60)

        def turns(url: str) -> dict[str, float]:  # this replica's own (/metrics is per process)
            name = "posthog_customerio_person_sync_passes_total"
            return {outcome: metric(url, f'{name}{{outcome="{outcome}"}}') for outcome in ("ok", "failed", "skipped")}

        def both_ran_passes() -> list[dict[str, float]] | None:
            counted = [turns(url_a), turns(url_b)]
            return counted if all(c["ok"] >= 1 for c in counted) and sum(c["ok"] for c in counted) >= 4 else None

        counted = wait_for(both_ran_passes, "each replica running passes", 60)
        with served.lock:
            log = list(served.requests)
        assert passes_in(log) >= sum(c["ok"] for c in counted) and not any(c["failed"] for c in counted)
        assert sum(c["skipped"] for c in counted) >= 1  # a replica found the other one's pass under way
        total = sum(c["ok"] for c in counted)  # /api/status sums the replicas' (from their heartbeats, every 5 s)
        wait_for(lambda: person_sync(url_a)["passes"]["ok"] >= total, "both replicas' passes in /api/status", 30)
