"""The person sync schedule (``PERSON_SYNC_INTERVAL_S``) in-process: passes against the stand-in of PostHog's
persons API (an in-process transport), delivered to the sandbox; the clock is injected, so nothing waits for an
interval. ``serve`` running it as a real process: tests/e2e/test_person_sync_serve.py."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from posthog_customerio.metrics import Metrics
from posthog_customerio.person_sync import SCHEDULE_KEY, PersonSync, parse_schedule
from posthog_customerio.runtime import Runtime
from posthog_customerio.sandbox import SandboxServer
from posthog_customerio.sources.persons import CHECKPOINT_FILE
from posthog_customerio.sources.posthog_api import PersonsCheckpoint, PostHogPersonsClient
from posthog_customerio.status import build_status
from posthog_customerio.storage import SqliteStorage

from ..helpers import make_runtime, profiles, wait_for
from ..posthog_api_standin import STANDIN_KEY, PersonsStandin

BASE = "http://posthog.test"
INTERVAL = 60.0
#: persons 0..29, ten a page: a third of them never identified (no profile)
PERSONS, PAGE = 30, 10
IDENTIFIED = sum(1 for index in range(PERSONS) if index % 3)


class Clock:
    """Wall time the test moves (from now: checkpoints are stamped with the real time): ``clock.now += INTERVAL``
    is an interval later."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def runtime(sandbox: SandboxServer, tmp_path: Path) -> Iterator[Runtime]:
    with make_runtime(sandbox, tmp_path / "data") as opened:
        yield opened


@pytest.fixture
def standin() -> PersonsStandin:
    return PersonsStandin(PERSONS, default_limit=PAGE)


def syncer(
    runtime: Runtime,
    transport: httpx.BaseTransport,
    clock: Clock,
) -> PersonSync:
    """A schedule on ``runtime`` reading through ``transport``, one try per request, no waiting."""
    client = PostHogPersonsClient(BASE, "1", STANDIN_KEY, transport=transport, max_attempts=1, sleep=lambda _: None)
    sync = PersonSync(runtime, INTERVAL, client=client, clock=clock)
    runtime.person_sync = sync  # what Runtime.start_person_sync does, without the thread
    return sync


def failing_once(standin: PersonsStandin, marker: str) -> httpx.MockTransport:
    """The stand-in, except that the first request whose URL holds ``marker`` is answered 503."""
    inner, failed = standin.transport(), []

    def handle(request: httpx.Request) -> httpx.Response:
        if marker in str(request.url) and not failed:
            failed.append(request)
            return httpx.Response(503, json={"detail": "down"})
        return inner.handle_request(request)

    return httpx.MockTransport(handle)


def offsets(standin: PersonsStandin) -> list[str]:
    """The ``offset`` of each request the stand-in answered 200 (``0`` for the first page)."""
    found = []
    for seen in standin.requests:
        if seen.status == 200:
            query = dict(part.split("=", 1) for part in seen.query.split("&") if "=" in part)
            found.append(query.get("offset", "0"))
    return found


def metric(text: str, name: str) -> float:
    """The value of the unlabelled sample ``name`` in a Prometheus exposition."""
    values = [line.split()[-1] for line in text.splitlines() if line.startswith(f"{name} ")]
    assert len(values) == 1, f"{name}: {values}"
    return float(values[0])


def by_id(sandbox: SandboxServer) -> dict[str, dict[str, Any]]:
    return {profile["id"]: profile for profile in profiles(sandbox)}


def test_a_pass_sends_everyone_then_the_next_ones_only_what_changed(
    runtime: Runtime, standin: PersonsStandin, sandbox: SandboxServer
) -> None:
    runtime.deliverer().start()  # the service's workers: the sync stores and wakes them
    clock = Clock()
    sync = syncer(runtime, standin.transport(), clock)
    assert sync.turn() == INTERVAL
    wait_for(lambda: len(profiles(sandbox)) == IDENTIFIED, "every identified person as a profile")
    assert by_id(sandbox)["user-1"]["email"] == "user1@example.com"
    first = sync.status()
    assert first["passes"] == {"ok": 1, "failed": 0, "skipped": 0} and first["persons_read"] == PERSONS
    assert first["last_pass"]["outcome"] == "ok" and first["last_pass"]["persons_read"] == PERSONS
    assert first["operations_enqueued"] >= IDENTIFIED and first["last_ok_at"] == clock.now
    assert not first["running"] and first["current_pass"] is None

    clock.now += INTERVAL / 2  # not due yet: no request
    asked = len(standin.requests)
    assert sync.turn() == pytest.approx(INTERVAL / 2)
    assert len(standin.requests) == asked

    clock.now += INTERVAL / 2  # due, nothing changed: read again, nothing sent
    sync.turn()
    assert sync.status()["last_pass"]["operations_enqueued"] == 0 and sync.status()["passes"]["ok"] == 2

    standin.persons[1]["properties"]["plan"] = "enterprise"
    clock.now += INTERVAL
    sync.turn()
    assert sync.status()["last_pass"]["operations_enqueued"] == 1
    wait_for(lambda: by_id(sandbox)["user-1"]["attributes"].get("plan") == "enterprise", "the change in Customer.io")
    assert offsets(standin) == ["0", "10", "20"] * 3  # three whole passes, each from the first page

    status = build_status(runtime)["person_sync"]
    assert status["passes"]["ok"] == 3 and status["persons_read"] == 3 * PERSONS
    metrics = Metrics(runtime).render().decode()
    assert 'posthog_customerio_person_sync_passes_total{outcome="ok"} 3.0' in metrics
    assert f"posthog_customerio_person_sync_persons_read_total {3 * PERSONS}.0" in metrics
    last_success = metric(metrics, "posthog_customerio_person_sync_last_success_timestamp_seconds")
    assert last_success == pytest.approx(clock.now)
    assert metric(metrics, "posthog_customerio_person_sync_running") == 0


def test_a_failed_pass_is_counted_without_the_key_and_the_next_one_resumes_it(
    runtime: Runtime, standin: PersonsStandin, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    sync = syncer(runtime, failing_once(standin, "offset=20"), clock)
    with caplog.at_level(logging.WARNING, logger="posthog_customerio.person_sync"):
        assert sync.turn() == INTERVAL
    failed = sync.status()
    assert failed["passes"] == {"ok": 0, "failed": 1, "skipped": 0} and failed["last_ok_at"] is None
    assert failed["last_pass"]["outcome"] == "failed" and failed["last_pass"]["persons_read"] == 2 * PAGE
    assert "HTTP 503" in failed["last_error"] and failed["last_error_at"] == clock.now
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and "the pass failed" in warnings[0] and "HTTP 503" in warnings[0]
    assert STANDIN_KEY not in json.dumps(failed) + caplog.text

    asked = len(standin.requests)
    sync.turn()  # retried at the next interval, not before
    assert len(standin.requests) == asked
    clock.now += INTERVAL
    sync.turn()
    resumed = sync.status()["last_pass"]
    assert resumed["outcome"] == "ok" and resumed["resumed_after"] == 2 * PAGE and resumed["persons_read"] == PAGE
    assert offsets(standin) == ["0", "10", "20"]  # the failed page, read once the next pass resumed


def test_a_stopped_pass_keeps_a_consistent_checkpoint_and_the_next_start_resumes_it_at_once(
    runtime: Runtime, standin: PersonsStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    sync = syncer(runtime, standin.transport(), clock)
    stored: list[int] = []
    ingest = runtime.ingestor.ingest_persons

    def ingest_then_stop(batch: Any, source: str = "persons") -> Any:
        report = ingest(batch, source)
        stored.append(len(batch))
        if len(stored) == 2:
            sync.stop(timeout=0)  # a shutdown while the second page is being stored
        return report

    monkeypatch.setattr(runtime.ingestor, "ingest_persons", ingest_then_stop)
    sync.turn()
    assert stored == [PAGE, PAGE] and sync.status()["last_pass"]["outcome"] == "stopped"
    progress = PersonsCheckpoint(
        runtime.settings.posthog_customerio_data_dir / CHECKPOINT_FILE, scope=f"{BASE} project 1"
    )
    saved = progress.load()
    assert saved is not None and saved.persons == PAGE and not saved.done  # never ahead of what was stored
    stored_row = runtime.db.load_status(SCHEDULE_KEY)
    assert stored_row is not None
    schedule = parse_schedule(stored_row.value)
    assert schedule is not None and schedule.ended_at is None  # the pass did not end

    restarted = syncer(runtime, standin.transport(), clock)  # the next start: due at once, resumed
    assert restarted.turn() == INTERVAL
    last = restarted.status()["last_pass"]
    assert last["outcome"] == "ok" and last["resumed_after"] == PAGE and last["persons_read"] == 2 * PAGE
    assert offsets(standin) == ["0", "10", "10", "20"]  # the page stored but not checkpointed, read again


def test_a_turn_is_skipped_while_another_process_runs_a_pass(runtime: Runtime, standin: PersonsStandin) -> None:
    sync = syncer(runtime, standin.transport(), Clock())
    other = SqliteStorage(runtime.settings.database_path)  # another process on the same database
    try:
        with other.person_sync_lock() as held:
            assert held
            assert sync.turn() == INTERVAL
        assert standin.requests == [] and sync.status()["passes"]["skipped"] == 1
    finally:
        other.close()
    sync.turn()
    assert sync.status()["passes"] == {"ok": 1, "failed": 0, "skipped": 1}


def test_a_checkpoint_older_than_the_last_finished_pass_is_not_resumed(
    runtime: Runtime, standin: PersonsStandin
) -> None:
    """PostgreSQL: a replica's data dir may keep the checkpoint of a pass another replica finished since."""
    path = runtime.settings.posthog_customerio_data_dir / CHECKPOINT_FILE
    PersonsCheckpoint(path, scope=f"{BASE} project 1").save(f"{BASE}/api/projects/1/persons/?limit=10&offset=20", 20)
    clock = Clock()
    clock.now = 4_000_000_000.0  # the other replica's pass began after that checkpoint was saved, and finished
    finished = {"started_at": clock.now, "ended_at": clock.now + 1, "finished": True, "last_ok_at": clock.now + 1}
    runtime.db.save_status(SCHEDULE_KEY, json.dumps(finished), clock.now + 1)
    clock.now += 1 + INTERVAL
    sync = syncer(runtime, standin.transport(), clock)
    sync.turn()
    assert offsets(standin) == ["0", "10", "20"] and sync.status()["last_pass"]["resumed_after"] == 0


def test_the_replicas_person_sync_sections_are_shown_as_one() -> None:
    from posthog_customerio.status import _merge_person_sync

    def section(started: float, ok: int, failed: int, error_at: float | None, running: bool) -> dict[str, Any]:
        last = {"started_at": started, "outcome": "ok"}
        return {
            "interval_s": INTERVAL,
            "running": running,
            "passes": {"ok": ok, "failed": failed, "skipped": 2},
            "persons_read": 10 * ok,
            "operations_enqueued": ok,
            "current_pass": {"started_at": started + 5} if running else None,
            "last_pass": last,
            "last_ok_at": started + 1,
            "last_error": f"error at {error_at}" if error_at else None,
            "last_error_at": error_at,
        }

    merged = _merge_person_sync([section(100.0, 2, 1, 50.0, False), None, section(200.0, 1, 1, 40.0, True)])
    assert merged is not None
    assert merged["passes"] == {"ok": 3, "failed": 2, "skipped": 4} and merged["persons_read"] == 30
    assert merged["running"] and merged["current_pass"] == {"started_at": 205.0}
    assert merged["last_pass"]["started_at"] == 200.0 and merged["last_ok_at"] == 201.0
    assert merged["last_error"] == "error at 50.0" and merged["last_error_at"] == 50.0
    assert _merge_person_sync([None, None]) is None
