"""Ingestion: atomic per request; concurrent requests share one commit on SQLite."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from posthog_customerio.ingestion import GroupCommitter, Ingestor
from posthog_customerio.mapping import MappingConfig
from posthog_customerio.outbox import Outbox
from posthog_customerio.sources import PostHogEvent
from posthog_customerio.storage import SqliteStorage

from ..helpers import wait_for

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def event(distinct_id: str, **set_props: object) -> PostHogEvent:
    return PostHogEvent("clicked", distinct_id, NOW, {}, set=dict(set_props))


def test_concurrent_requests_share_commits_and_fail_alone(tmp_path: Path) -> None:
    db = SqliteStorage(tmp_path / "db.sqlite", synchronous="NORMAL")
    ingestor = Ingestor(db, Outbox(db), MappingConfig(anonymous_events="person"))
    committer = GroupCommitter(ingestor)
    commits = []
    original_group = db.group

    def counting_group():  # count the transactions the committer opens
        commits.append(1)
        return original_group()

    db.group = counting_group  # type: ignore[method-assign]
    results: dict[int, object] = {}

    def request(n: int) -> None:
        bad = n == 7
        try:
            results[n] = committer.ingest([event(f"p{n}", plan="\ud800" if bad else "pro")], "webhook")
        except Exception as exc:
            results[n] = exc

    threads = [threading.Thread(target=request, args=(n,)) for n in range(40)]
    # hold the database while the requests arrive, so they are concurrent whatever the machine's load:
    # the committer's first transaction waits for the lock and the other requests queue behind it
    submitted = []
    put = committer._queue.put
    committer._queue.put = lambda item: (submitted.append(1), put(item))[1]  # type: ignore[method-assign]
    with db.lock:
        for thread in threads:
            thread.start()
        wait_for(lambda: len(submitted) == 40, "every request to reach the committer")
    for thread in threads:
        thread.join(30)
    assert isinstance(results[7], UnicodeEncodeError)  # the bad request alone failed...
    assert all(not isinstance(r, Exception) for n, r in results.items() if n != 7)
    assert Outbox(db).depth() == 39 * 2  # ...and the 39 others landed: identify + event each
    with db.reading() as conn:
        stored = {row[0] for row in conn.execute("SELECT distinct_id FROM persons")}
    assert "p7" not in stored and len(stored) == 39
    assert len(commits) < 40  # requests were grouped
    assert ingestor.totals.events == 39


def test_a_failed_ingest_leaves_nothing_behind(tmp_path: Path) -> None:
    db = SqliteStorage(tmp_path / "db.sqlite")
    ingestor = Ingestor(db, Outbox(db), MappingConfig(anonymous_events="person"))
    with pytest.raises(UnicodeEncodeError):
        ingestor.ingest([event("a", plan="ok"), event("b", plan="\udc00")])
    assert Outbox(db).depth() == 0 and ingestor.totals.events == 0


def test_queued_anonymous_events_become_the_identified_persons_events(tmp_path: Path) -> None:
    import json

    db = SqliteStorage(tmp_path / "db.sqlite")
    outbox = Outbox(db)
    ingestor = Ingestor(db, outbox, MappingConfig())  # ANONYMOUS_EVENTS=anonymous
    browse = [
        PostHogEvent("$pageview", "anon-1", NOW, {"$is_identified": False, "$current_url": f"https://x.io/{n}"})
        for n in range(3)
    ]
    ingestor.ingest(browse[:2])
    in_flight = outbox.claim(1, 100_000, 32_000)  # the first one is being sent as an anonymous event
    identify = PostHogEvent("$identify", "user-1", NOW, {"$anon_distinct_id": "anon-1"})
    report = ingestor.ingest([browse[2], identify])
    assert report.notes["anonymous_events_adopted"] == 2
    with db.reading() as conn:
        rows = [
            (key, json.loads(payload))
            for key, payload in conn.execute("SELECT person_key, payload FROM outbox ORDER BY seq")
        ]
    assert rows[0] == ("anon-1", json.loads(in_flight[0].payload))  # in flight: left alone
    key, first = rows[1]
    assert key == "user-1" and first["action"] == "identify" and first["attributes"]["anonymous_id"] == "anon-1"
    assert rows[2][1]["name"] == "$identify"  # the identify event, then the adopted ones
    adopted = rows[3:]
    assert [(k, p["type"], p["identifiers"], p["name"]) for k, p in adopted] == [
        ("user-1", "person", {"id": "user-1"}, "https://x.io/1"),
        ("user-1", "person", {"id": "user-1"}, "https://x.io/2"),
    ]
    assert "anonymous_id" not in adopted[0][1]


@pytest.mark.parametrize("anonymous_events", ["anonymous", "person"])
def test_grouped_requests_store_and_report_what_each_alone_would(tmp_path: Path, anonymous_events: str) -> None:
    """The group commit maps its requests together (:meth:`Ingestor.ingest_requests`): the queue, the people
    and every request's report are what ingesting the requests one after the other gives."""
    import itertools
    import json

    from posthog_customerio.samples import iter_stream
    from posthog_customerio.sources import parse_event

    events = [parse_event(raw) for raw in iter_stream(30, seed=3, events_per_person=6)]
    sizes = itertools.cycle([1, 3, 1, 2, 5])
    requests, at = [], 0
    while at < len(events):
        size = next(sizes)
        requests.append(events[at : at + size])
        at += size
    config = MappingConfig(anonymous_events=anonymous_events)  # type: ignore[arg-type]

    def stored(db: SqliteStorage) -> tuple[list[tuple[str, str]], dict[str, str]]:
        with db.reading() as conn:
            queue = [
                (str(key), str(payload))
                for key, payload in conn.execute("SELECT person_key, payload FROM outbox ORDER BY seq")
            ]
            people = {str(row[0]): json.dumps(row[1:]) for row in conn.execute("SELECT * FROM persons")}
        return queue, people

    alone_db = SqliteStorage(tmp_path / "alone.sqlite", synchronous="OFF")
    alone = Ingestor(alone_db, Outbox(alone_db), config)
    expected = [alone.ingest(request, "webhook") for request in requests]

    grouped_db = SqliteStorage(tmp_path / "grouped.sqlite", synchronous="OFF")
    grouped = Ingestor(grouped_db, Outbox(grouped_db), config)
    with grouped_db.group():
        reports = grouped.ingest_requests([(request, 0) for request in requests])
    assert reports == expected
    assert stored(grouped_db) == stored(alone_db)
    assert sum(report.notes["anonymous_events_adopted"] for report in reports) > 0 or anonymous_events == "person"
