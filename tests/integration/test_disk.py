"""Disk: the space a drained outbox freed goes back to the filesystem (SQLite incremental vacuum, WAL truncated;
PostgreSQL's autovacuum settings), and a full disk is told plainly, loses nothing and is recovered from."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from posthog_customerio.config import Settings
from posthog_customerio.disk import SpaceKeeper
from posthog_customerio.runtime import Runtime
from posthog_customerio.sandbox import SandboxServer
from posthog_customerio.storage import NewOperation, PostgresStorage, SqliteStorage, Storage
from posthog_customerio.storage import sqlite as sqlite_module

from ..helpers import wait_for

_PAYLOAD = json.dumps({"type": "person", "action": "event", "name": "Viewed page", "attributes": {"path": "/x" * 200}})


def fill(db: Storage, count: int, batch: int = 10_000) -> list[int]:
    """Enqueue ``count`` operations through the storage API (bulk); their seqs."""
    now = time.time()
    for start in range(0, count, batch):
        rows = [
            NewOperation(f"person-{n}", _PAYLOAD, len(_PAYLOAD), now, None, "person")
            for n in range(start, min(count, start + batch))
        ]
        with db.transaction() as tx:
            tx.insert_operations(rows)
    with db.reading() as tx:
        return [int(seq) for (seq,) in tx.execute("SELECT seq FROM outbox ORDER BY seq").fetchall()]


def drain(db: Storage, seqs: list[int], batch: int = 1_000) -> None:
    """Acknowledge (delete) the operations a batch at a time, as delivery does."""
    for start in range(0, len(seqs), batch):
        with db.transaction() as tx:
            tx.delete_operations(seqs[start : start + batch])


def on_disk(path: Path) -> int:
    """The database file and its WAL, in bytes."""
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def live_bytes(db: SqliteStorage) -> int:
    """The pages in use (the file without its free pages)."""
    with db.reading() as tx:
        size, count, free = (
            tx.execute(f"PRAGMA {name}").fetchone()[0] for name in ("page_size", "page_count", "freelist_count")
        )
    return int((count - free) * size)


def old_database(path: Path) -> None:
    """A file as versions before incremental auto-vacuum made it: WAL first, so ``auto_vacuum`` stays off."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()


# -- SQLite: the file comes back to its live size ------------------------------------------------------------
def test_a_drained_outbox_gives_its_pages_back_and_the_wal_is_truncated(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    db = SqliteStorage(path)
    try:
        assert db.space().auto_vacuum == "incremental"  # a new file is made with it
        empty = on_disk(path)
        seqs = fill(db, 50_000)
        filled = on_disk(path)
        drain(db, seqs)
        drained = on_disk(path)
        assert db.space().reclaimable_bytes >= 20_000_000  # the outbox's pages are free, the file as big
        steps = 0
        while db.compact(budget_s=0.05):
            steps += 1
        assert steps >= 1
        space = db.space()
        print(
            f"\nSQLite, 50,000 operations: empty {empty:,} B, filled {filled:,} B, drained {drained:,} B,"
            f" compacted {on_disk(path):,} B (live {live_bytes(db):,} B)"
        )
        # back to the live pages plus the few free ones kept for the next writes; the WAL truncated
        assert on_disk(path) <= live_bytes(db) + sqlite_module.KEEP_FREE_BYTES
        assert on_disk(path) < drained / 5
        assert space.wal_bytes == 0
        assert space.reclaimable_bytes <= sqlite_module.KEEP_FREE_BYTES
        assert db.compact(budget_s=1.0) == 0  # nothing more to do: the next pass only looks
    finally:
        db.close()


def test_each_pass_is_bounded_and_writers_go_on_meanwhile(tmp_path: Path) -> None:
    """Passes of a small budget give back a slice each (the lock is let go between steps): a writer that
    enqueues and acknowledges all along never waits long."""
    db = SqliteStorage(tmp_path / "db.sqlite")
    try:
        drain(db, fill(db, 50_000))
        total = db.space().reclaimable_bytes
        waits: list[float] = []
        stop = threading.Event()

        def writer() -> None:
            while not stop.is_set():
                started = time.monotonic()
                drain(db, fill(db, 10))
                waits.append(time.monotonic() - started)

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            first = db.compact(budget_s=0.0)  # one step at least, never all at once
            assert 0 < first <= sqlite_module.VACUUM_STEP_PAGES * 4096 < total
            passes = 1
            while db.compact(budget_s=0.02):
                passes += 1
        finally:
            stop.set()
            thread.join()
        assert passes > 2
        assert waits and max(waits) < 2.0, f"a writer waited {max(waits):.2f} s behind the compaction"
        assert db.space().reclaimable_bytes <= sqlite_module.KEEP_FREE_BYTES
    finally:
        db.close()


def test_the_process_that_delivers_keeps_the_file_small_while_it_runs(
    settings: Callable[..., Settings], sandbox: SandboxServer
) -> None:
    """Wherever delivery runs, a keeper gives the freed pages back about every second (no call needed)."""
    with Runtime(settings(sandbox)) as runtime:
        runtime.deliverer()  # starts the keepers (the workers are not needed here)
        drain(runtime.db, fill(runtime.db, 30_000))
        path = runtime.settings.database_path
        assert on_disk(path) > 15_000_000
        wait_for(lambda: on_disk(path) < 8_000_000 + sqlite_module.KEEP_FREE_BYTES, "the file to shrink", 60)


def test_an_older_file_is_converted_once_when_delivery_starts(
    settings: Callable[..., Settings], sandbox: SandboxServer, caplog: pytest.LogCaptureFixture
) -> None:
    config = settings(sandbox)
    old_database(config.database_path)
    with Runtime(config) as runtime:
        db = runtime.db
        assert db.space().auto_vacuum == "none"  # opening it cannot change that (tables exist already)
        drain(db, fill(db, 20_000))
        before = on_disk(config.database_path)
        assert db.compact(budget_s=1.0) == 0  # without auto-vacuum there is nothing to give back step by step
        with caplog.at_level("INFO"):
            runtime.deliverer()
        assert db.space().auto_vacuum == "incremental"
        assert on_disk(config.database_path) < before / 5
        assert "turned on incremental auto-vacuum" in caplog.text
    with Runtime(config) as runtime:  # once: the next start finds it converted
        assert runtime.db.space().auto_vacuum == "incremental"


def test_an_older_file_too_big_to_convert_at_start_says_how(
    settings: Callable[..., Settings],
    sandbox: SandboxServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = settings(sandbox)
    old_database(config.database_path)
    monkeypatch.setattr(sqlite_module, "CONVERT_MAX_LIVE_BYTES", 1)
    with Runtime(config) as runtime:
        fill(runtime.db, 100)
        with caplog.at_level("WARNING"):
            runtime.deliverer()
        assert runtime.db.space().auto_vacuum == "none"
    assert "made before incremental auto-vacuum" in caplog.text
    assert "posthog-customerio compact" in caplog.text


def test_the_last_pass_when_delivery_stops_gives_the_rest_back(tmp_path: Path) -> None:
    """``send`` exits as soon as the outbox is empty: the keeper's last pass gives the space back first."""
    db = SqliteStorage(tmp_path / "db.sqlite")
    try:
        keeper = SpaceKeeper(db, interval_s=3600)  # no pass of its own before stop()
        keeper.start()
        drain(db, fill(db, 30_000))
        keeper.stop(final_budget_s=10.0)
        assert keeper.given_back > 10_000_000
        assert db.space().reclaimable_bytes <= sqlite_module.KEEP_FREE_BYTES
    finally:
        db.close()


# -- PostgreSQL: the outbox's deletes leave no lasting bloat ----------------------------------------------------
def test_postgresql_outbox_is_vacuumed_as_a_queue_and_comes_back_to_its_empty_size(pg_url: str) -> None:
    """The migration sets queue-like autovacuum thresholds on the outbox (and the delivery history); a vacuum
    after a large enqueue and drain (what autovacuum runs, here at once) gives the table's space back."""
    import psycopg

    db = PostgresStorage(pg_url)
    try:
        with db.reading() as tx:
            options = {
                table: set(found or [])
                for table, found in tx.execute(
                    "SELECT relname, reloptions FROM pg_class"
                    " WHERE relnamespace = current_schema()::regnamespace AND relname IN ('outbox', 'deliveries')"
                ).fetchall()
            }
        for table in ("outbox", "deliveries"):
            assert {"autovacuum_vacuum_scale_factor=0.01", "autovacuum_vacuum_threshold=1000"} <= options[table]

        def outbox_bytes() -> int:
            size = db.space().outbox_bytes
            assert size is not None
            return size

        empty = outbox_bytes()
        drain(db, fill(db, 50_000))
        drained = outbox_bytes()
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("VACUUM outbox")
        vacuumed = outbox_bytes()
        print(
            f"\nPostgreSQL outbox, 50,000 operations: empty {empty:,} B, drained {drained:,} B, vacuumed {vacuumed:,} B"
        )
        assert drained > 20_000_000  # the deleted rows still take their pages until a vacuum
        assert vacuumed < drained / 4  # the heap is truncated; the indexes keep their (reusable) pages
        assert (db.space().database_bytes or 0) >= vacuumed
    finally:
        db.close()
