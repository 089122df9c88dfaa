"""The anonymous backlog's bounds (ANONYMOUS_MAX_AGE_S, ANONYMOUS_BACKLOG_MAX) on both storage backends."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

import pytest

from posthog_customerio.backlog import AnonymousBacklog
from posthog_customerio.operations import Kind, Operation
from posthog_customerio.outbox import Outbox
from posthog_customerio.storage import PostgresStorage, Storage

DAY = 86_400.0
NOW = 1_800_000_000.0


def anonymous(visitor: str, n: int) -> Operation:
    payload = {"type": "anonymous", "anonymous_id": visitor, "action": "event", "name": f"viewed {n}"}
    return Operation(visitor, payload, kind="anonymous")


def person(key: str, n: int, kind: Kind = "person") -> Operation:
    payload = {"type": kind, "identifiers": {"id": key}, "action": "event", "name": f"bought {n}"}
    return Operation(key, payload, kind=kind)


def enqueue(db: Storage, operations: list[Operation], at: float) -> None:
    with db.transaction() as tx:
        Outbox.enqueue(tx, operations, now=at)


def queued(db: Storage) -> list[tuple[str, str]]:
    """(kind, person_key) of every queued row, in queue order."""
    with db.reading() as tx:
        rows = tx.execute("SELECT kind, person_key FROM outbox ORDER BY seq").fetchall()
    return [(str(kind), str(key)) for kind, key in rows]


def history(db: Storage, key: str) -> list[tuple[str | None, str]]:
    with db.reading() as tx:
        return [(row.name, row.outcome) for row in tx.deliveries_of([key], 50)]


def test_expiry_by_age_drops_only_old_anonymous_events_and_counts_them(
    open_db: Callable[[], Storage], caplog: pytest.LogCaptureFixture
) -> None:
    db = open_db()
    enqueue(db, [anonymous("v1", 1), person("p1", 1), anonymous("v2", 1)], NOW - 40 * DAY)
    enqueue(db, [anonymous("v1", 2), person("p2", 1, "object")], NOW - 10 * DAY)
    backlog = AnonymousBacklog(db, 30 * DAY, 1_000, clock=lambda: NOW)
    with caplog.at_level(logging.WARNING, logger="posthog_customerio.backlog"):
        assert backlog.enforce() == {"age": 2, "count": 0}
    # the person's and the object's operations stay, however old; the young anonymous one too
    assert queued(db) == [("person", "p1"), ("anonymous", "v1"), ("object", "p2")]
    assert backlog.expired == {"age": 2, "count": 0} and backlog.totals() == {"age": 2, "count": 0}
    # recorded in each visitor's history (what `posthog-customerio person` shows)
    assert history(db, "v1") == [("viewed 1", "expired")] and history(db, "v2") == [("viewed 1", "expired")]
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "dropped 2 queued anonymous events: 2 older than ANONYMOUS_MAX_AGE_S" in warning.getMessage()
    assert "v1" not in warning.getMessage() and "viewed" not in warning.getMessage()  # no ids, no payloads
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="posthog_customerio.backlog"):
        assert backlog.enforce() == {"age": 0, "count": 0}  # nothing left to drop: no warning
    assert not caplog.records
    with db.reading() as tx:
        assert tx.anonymous_backlog() == (1, NOW - 10 * DAY)


def test_expiry_by_count_keeps_the_newest_and_never_touches_person_work(open_db: Callable[[], Storage]) -> None:
    db = open_db()
    for n in range(10):
        enqueue(db, [anonymous(f"v{n}", n), person(f"p{n}", n)], NOW - 100 + n)
    backlog = AnonymousBacklog(db, 30 * DAY, 4, clock=lambda: NOW, batch=3)  # several batches
    assert backlog.enforce() == {"age": 0, "count": 6}
    left = queued(db)
    assert [key for kind, key in left if kind == "anonymous"] == ["v6", "v7", "v8", "v9"]  # the newest 4
    assert [key for kind, key in left if kind == "person"] == [f"p{n}" for n in range(10)]
    assert backlog.totals() == {"age": 0, "count": 6}
    assert history(db, "v0") == [("viewed 0", "expired")] and history(db, "v9") == []
    # both bounds in one pass: the old one by age first, then the excess by count
    enqueue(db, [anonymous("old", 1)], NOW - 31 * DAY)
    enqueue(db, [anonymous("w1", 1), anonymous("w2", 1)], NOW)
    assert backlog.enforce() == {"age": 1, "count": 2}
    assert [key for kind, key in queued(db) if kind == "anonymous"] == ["v8", "v9", "w1", "w2"]
    assert backlog.totals() == {"age": 1, "count": 8}
    # ANONYMOUS_BACKLOG_MAX=0 keeps none
    assert AnonymousBacklog(db, 30 * DAY, 0, clock=lambda: NOW).enforce() == {"age": 0, "count": 4}
    assert {kind for kind, _ in queued(db)} == {"person"}


def test_leased_and_in_flight_rows_are_never_expired(open_db: Callable[[], Storage]) -> None:
    db = open_db()
    enqueue(db, [anonymous(f"v{n}", n) for n in range(6)], NOW - 40 * DAY)
    with db.reading() as tx:
        seqs = [int(seq) for (seq,) in tx.execute("SELECT seq FROM outbox ORDER BY seq").fetchall()]
    with db.transaction() as tx:  # v0 leased by a replica until after now; v1's lease ran out
        tx.execute(f"UPDATE outbox SET lease_owner = 'other', lease_until = {NOW + 10} WHERE seq = {seqs[0]}")
        tx.execute(f"UPDATE outbox SET lease_owner = 'gone', lease_until = {NOW - 10} WHERE seq = {seqs[1]}")
    in_flight = frozenset({seqs[2]})  # held by this process's workers
    backlog = AnonymousBacklog(db, 30 * DAY, 0, exclude=lambda: contextlib.nullcontext(in_flight), clock=lambda: NOW)
    assert backlog.enforce() == {"age": 4, "count": 0}
    assert [key for _, key in queued(db)] == ["v0", "v2"]
    # once settled elsewhere or released, they expire like the others (the count bound: keep 1 of 2)
    keep_one = AnonymousBacklog(db, 30 * DAY, 1, clock=lambda: NOW + 20)
    with db.transaction() as tx:
        tx.execute(f"UPDATE outbox SET lease_until = NULL WHERE seq = {seqs[0]}")
    assert keep_one.enforce() == {"age": 2, "count": 0}  # both older than 30 days now that neither is held
    assert queued(db) == []


def test_expired_totals_survive_a_restart(open_db: Callable[[], Storage]) -> None:
    db = open_db()
    enqueue(db, [anonymous(f"v{n}", n) for n in range(5)], NOW - 40 * DAY)
    enqueue(db, [anonymous(f"w{n}", n) for n in range(5)], NOW)
    AnonymousBacklog(db, 30 * DAY, 2, clock=lambda: NOW).enforce()
    db.close()
    reopened = open_db()
    backlog = AnonymousBacklog(reopened, 30 * DAY, 2, clock=lambda: NOW)
    assert backlog.totals() == {"age": 5, "count": 3} and backlog.expired == {"age": 0, "count": 0}
    snapshot = reopened.snapshot(0, persons=False)
    assert snapshot.anonymous_expired == {"age": 5, "count": 3}
    assert snapshot.anonymous_backlog == 2 and snapshot.anonymous_oldest_enqueued_at == NOW
    enqueue(reopened, [anonymous("x", 1)], NOW)
    assert backlog.enforce() == {"age": 0, "count": 1}
    assert backlog.totals() == {"age": 5, "count": 4}


def test_concurrent_expiries_on_postgresql_count_each_row_once(pg_url: str) -> None:
    """Four replicas expire the same backlog at once: each row is dropped, recorded and counted once."""
    dbs = [PostgresStorage(pg_url) for _ in range(4)]
    try:
        enqueue(dbs[0], [anonymous(f"old{n}", n) for n in range(300)], NOW - 40 * DAY)
        enqueue(dbs[0], [anonymous(f"new{n}", n) for n in range(700)], NOW)
        enqueue(dbs[0], [person(f"p{n}", n) for n in range(50)], NOW - 40 * DAY)
        backlogs = [AnonymousBacklog(db, 30 * DAY, 100, clock=lambda: NOW, batch=50) for db in dbs]
        start = threading.Barrier(len(backlogs))
        results: list[dict[str, int]] = []

        def run(backlog: AnonymousBacklog) -> None:
            start.wait()
            results.append(backlog.enforce())

        threads = [threading.Thread(target=run, args=(backlog,)) for backlog in backlogs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(results) == 4
        assert sum(r["age"] for r in results) == 300 and sum(r["count"] for r in results) == 600
        assert backlogs[0].totals() == {"age": 300, "count": 600}
        kinds = queued(dbs[0])
        assert kinds.count(("anonymous", "new0")) == 0 and len([k for k, _ in kinds if k == "anonymous"]) == 100
        assert len([k for k, _ in kinds if k == "person"]) == 50
        with dbs[0].reading() as tx:
            recorded = tx.execute("SELECT COUNT(*), COUNT(DISTINCT seq) FROM deliveries WHERE outcome = 'expired'")
            assert tuple(recorded.fetchone()) == (900, 900)
    finally:
        for db in dbs:
            db.close()


def test_what_the_outbox_has_claimed_is_never_expired(open_db: Callable[[], Storage]) -> None:
    """Wired as the runtime wires it: the outbox's claim book (SQLite: the only protection; PostgreSQL: a lease too)."""
    db = open_db()
    enqueue(db, [anonymous(f"v{n}", n) for n in range(5)], time.time() - 40 * DAY)
    outbox = Outbox(db, lease_s=3600)
    claimed = outbox.claim(2, 100_000, 32_000)
    assert [item.person_key for item in claimed] == ["v0", "v1"]
    backlog = AnonymousBacklog(db, 30 * DAY, 0, exclude=outbox.claims_held)
    assert backlog.enforce() == {"age": 3, "count": 0}
    assert [key for _, key in queued(db)] == ["v0", "v1"]
    outbox.ack(claimed)  # sent after all: delivered, never expired
    assert history(db, "v0") == [("viewed 0", "delivered")]
