"""The one policy for events that cannot be stored (sources/store.py) and the file job (sources/files.py).

End to end against the sandbox: an event with a lone surrogate cannot be encoded for storage.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from posthog_customerio.ingestion import IngestReport
from posthog_customerio.runtime import Runtime
from posthog_customerio.sandbox import SandboxServer
from posthog_customerio.sources import ParsedItem, PostHogEvent, parse_event
from posthog_customerio.sources.files import FileProgress, send_file
from posthog_customerio.sources.store import UnstorableBatch, store_events

from ..helpers import make_settings


def _runtime(sandbox: SandboxServer, data_dir: Path) -> Runtime:
    return Runtime(make_settings(data_dir, sandbox, sqlite_synchronous=None, customerio_max_rps=1000))


def _raw(distinct_id: str, **properties: Any) -> dict[str, Any]:
    return {
        "event": "signed_up",
        "distinct_id": distinct_id,
        "timestamp": "2024-01-01T00:00:00Z",
        "properties": {"$set": {"email": f"{distinct_id}@example.com"}, **properties},
    }


def _events() -> list[PostHogEvent]:
    return [parse_event(_raw("good-1")), parse_event(_raw("bad-1", s="\ud800")), parse_event(_raw("good-2"))]


def _queued_people(runtime: Runtime) -> set[str]:
    with runtime.db.reading() as conn:
        return {row[0] for row in conn.execute("SELECT person_key FROM outbox").fetchall()}


def test_all_or_nothing_refuses_the_whole_batch_and_stores_nothing(sandbox: SandboxServer, tmp_path: Path) -> None:
    with _runtime(sandbox, tmp_path) as runtime:
        with pytest.raises(UnstorableBatch, match="event cannot be stored: UnicodeEncodeError"):
            store_events(
                runtime.ingestor.ingest,
                _events(),
                "webhook",
                all_or_nothing=True,
                count_invalid=runtime.ingestor.count_invalid,
            )
        assert runtime.outbox.depth() == 0
        assert runtime.ingestor.invalid_by_source["webhook"] == 1


def test_one_by_one_stores_the_rest_and_reports_the_bad_event(sandbox: SandboxServer, tmp_path: Path) -> None:
    with _runtime(sandbox, tmp_path) as runtime:
        stored = store_events(runtime.ingestor.ingest, _events(), "kafka", count_invalid=runtime.ingestor.count_invalid)
        assert [rejected.event.distinct_id for rejected in stored.rejected] == ["bad-1"]
        assert stored.rejected[0].label == "event bad-1" and "surrogate" in stored.rejected[0].error
        assert stored.report.events == 2
        assert _queued_people(runtime) == {"good-1", "good-2"}
        assert runtime.ingestor.invalid_by_source["kafka"] == 1


def test_database_errors_propagate_unchanged(sandbox: SandboxServer, tmp_path: Path) -> None:
    calls: list[int] = []

    def locked(events: Sequence[PostHogEvent], source: str) -> IngestReport:
        calls.append(len(events))
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(sqlite3.OperationalError, match="locked"):
        store_events(locked, _events(), "kafka")
    assert calls == [3]  # no one-by-one retry: the caller decides when to try again


def test_send_file_delivers_the_good_events_and_reports_the_bad_ones(
    sandbox: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the file reader already refuses lone surrogate escapes: "bad-1" gets one only on its way into storage
    lines = [json.dumps(_raw("good-1")), "not json", json.dumps(_raw("bad-1")), json.dumps(_raw("good-2"))]
    invalid: list[tuple[str, int]] = []
    progress: list[FileProgress] = []

    def on_invalid(item: ParsedItem, count: int) -> None:
        invalid.append((item.location, count))

    with _runtime(sandbox, tmp_path) as runtime:
        real_ingest = runtime.ingestor.ingest

        def poisoned(events: Sequence[PostHogEvent], source: str = "file") -> IngestReport:
            spoiled = [
                replace(e, properties={**e.properties, "s": "\ud800"}) if e.distinct_id == "bad-1" else e
                for e in events
            ]
            return real_ingest(spoiled, source)

        monkeypatch.setattr(runtime.ingestor, "ingest", poisoned)
        summary = send_file(
            runtime,
            [line + "\n" for line in lines],
            timeout=30,
            chunk_events=2,
            on_invalid=on_invalid,
            on_progress=progress.append,
        )
    assert invalid == [("line 2", 1), ("event bad-1", 2)]
    assert summary.read == 4 and summary.invalid == 2 and summary.queued == 0 and summary.dead_lettered == 0
    assert summary.operations_delivered == summary.operations_enqueued > 0
    assert {person["id"] for person in sandbox.state.people()} >= {"good-1", "good-2"}
    assert "bad-1" not in {person["id"] for person in sandbox.state.people()}
    done = [p for p in progress if p.done_reading]
    assert done and done[0].events == 2 and done[0].read == sum(len(line) + 1 for line in lines)
    assert set(summary.as_dict()) >= {"read", "invalid", "operations_enqueued", "queued", "dead_lettered", "seconds"}
