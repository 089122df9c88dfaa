"""An identify adopting a visitor's queued events races a delivery claim (issue 24, item 1).

Adoption reads the visitor's queued anonymous operations, then replaces them (delete, re-queue behind the
identify as the person's events, same dedupe id). A claim handing the same rows to a worker in between
must not be possible: each anonymous operation is either adopted or sent as an anonymous event, never
both. Each test below puts the claim at one point of the adoption (or the adoption at one point of the
claim) through a hook, on both backends, and checks that invariant, the queue, and the adoption count.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from posthog_customerio import outbox as outbox_module
from posthog_customerio.ingestion import Ingestor
from posthog_customerio.mapping import MappingConfig
from posthog_customerio.operations import Claimed
from posthog_customerio.outbox import Outbox
from posthog_customerio.sources import PostHogEvent
from posthog_customerio.storage import CandidateRow, Storage

NOW = datetime(2026, 1, 1, tzinfo=UTC)
VISITS = 3


def visit(n: int) -> PostHogEvent:
    return PostHogEvent("$pageview", "anon-1", NOW, {"$is_identified": False, "$current_url": f"https://x.io/{n}"})


IDENTIFY = PostHogEvent("$identify", "user-1", NOW, {"$anon_distinct_id": "anon-1"})


def claim(outbox: Outbox, lane: str | None = "anonymous") -> list[Claimed]:
    return outbox.claim(100, 1_000_000, 32_000, lane=lane)  # type: ignore[arg-type]


def visits_in(payloads: Iterable[str]) -> list[tuple[str, str]]:
    """(form, url) of each visit among these payloads: ``anonymous`` or the person form's ``person``."""
    found = []
    for text in payloads:
        payload = json.loads(text)
        url = str(payload.get("name", ""))
        if url.startswith("https://x.io/"):
            found.append((str(payload["type"]), url))
    return found


def settle(outbox: Outbox, claimed: list[Claimed], adopted: int) -> None:
    """Deliver everything (what the race claimed, then the rest): every visit goes out once, in one form,
    and the adoption count is the number that went out in the person's form."""
    sent = visits_in(item.payload for item in claimed)
    outbox.ack(claimed)
    while rest := claim(outbox, None):
        sent += visits_in(item.payload for item in rest)
        outbox.ack(rest)
    urls = [url for _, url in sent]
    assert sorted(urls) == [f"https://x.io/{n}" for n in range(VISITS)], f"each visit sent once: {sent}"
    assert adopted == sum(form == "person" for form, _ in sent), sent


@pytest.fixture
def setup(open_db: Callable[[], Storage]) -> tuple[Outbox, Ingestor]:
    db = open_db()
    outbox = Outbox(db)
    ingestor = Ingestor(db, outbox, MappingConfig())  # ANONYMOUS_EVENTS=anonymous: the visits queue as anonymous
    ingestor.ingest([visit(n) for n in range(VISITS)])
    return outbox, ingestor


def test_a_claim_between_adoptions_read_and_its_delete(
    setup: tuple[Outbox, Ingestor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The adoption has read the visitor's queued events; a worker claims them before the adoption deletes
    them (PostgreSQL: from another connection; SQLite: the process's one connection)."""
    outbox, ingestor = setup
    claimed: list[Claimed] = []
    read = outbox.queued

    def read_then_claim(conn: Any, person_key: str, kind: Any) -> Any:
        rows = read(conn, person_key, kind)
        claimed.extend(claim(outbox))
        return rows

    monkeypatch.setattr(outbox, "queued", read_then_claim)
    report = ingestor.ingest([IDENTIFY])
    settle(outbox, claimed, report.notes["anonymous_events_adopted"])


def test_an_adoption_right_after_a_claim_has_picked_its_rows(
    setup: tuple[Outbox, Ingestor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim has picked and read the visitor's events (the backend's claim returned); the identify is
    ingested before the claim hands them to its worker."""
    outbox, ingestor = setup
    reports = []
    backend_claim = outbox.claims.claim

    def claim_then_adopt(*args: Any, **kwargs: Any) -> Any:
        found = backend_claim(*args, **kwargs)
        if not reports:
            reports.append(ingestor.ingest([IDENTIFY]))
        return found

    monkeypatch.setattr(outbox.claims, "claim", claim_then_adopt)
    claimed = claim(outbox)
    assert reports
    settle(outbox, claimed, reports[0].notes["anonymous_events_adopted"])


def test_an_adoption_while_a_claim_reads_the_queue(
    setup: tuple[Outbox, Ingestor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The identify is ingested while the claim is choosing among the rows it read (before it leases them)."""
    outbox, ingestor = setup
    reports = []
    select = outbox_module._select

    def rows_then_adopt(rows: Iterable[CandidateRow]) -> Iterator[CandidateRow]:
        yield from rows
        if not reports:
            reports.append(ingestor.ingest([IDENTIFY]))

    monkeypatch.setattr(outbox_module, "_select", lambda rows, *args: select(rows_then_adopt(rows), *args))
    claimed = claim(outbox)
    assert reports
    settle(outbox, claimed, reports[0].notes["anonymous_events_adopted"])


def test_another_process_adopting_leaves_the_rows_a_sqlite_deliverer_is_sending(tmp_path: Any) -> None:
    """SQLite shared by processes (``serve --role ingest`` or ``--workers`` beside the deliverer): the identify is
    ingested by a process that does not deliver, while the deliverer has the visitor's events in flight. The
    deliverer's claim leased them in the file: the other process adopts none of them (each is sent once)."""
    from posthog_customerio.storage import SqliteStorage

    deliverer_db, receiver_db = SqliteStorage(tmp_path / "db.sqlite"), SqliteStorage(tmp_path / "db.sqlite")
    try:
        deliverer = Outbox(deliverer_db)
        receiver = Ingestor(receiver_db, Outbox(receiver_db), MappingConfig())
        receiver.ingest([visit(n) for n in range(VISITS)])
        claimed = claim(deliverer)
        assert len(claimed) == VISITS
        report = receiver.ingest([IDENTIFY])
        assert report.notes["anonymous_events_adopted"] == 0
        settle(deliverer, claimed, 0)
        # a deliverer that died with rows leased: the next one to take the delivery lock frees them
        receiver.ingest([PostHogEvent("$pageview", "anon-2", NOW, {"$is_identified": False})])
        assert len(claim(deliverer)) == 1
        lock = SqliteStorage(tmp_path / "db.sqlite")
        handle = lock.take_delivery_lock(tmp_path)
        with lock.reading() as tx:
            assert tx.execute("SELECT COUNT(*) FROM outbox WHERE lease_until IS NOT NULL").fetchone()[0] == 0
        assert handle is not None
        handle.close()
        lock.close()
    finally:
        deliverer_db.close()
        receiver_db.close()
