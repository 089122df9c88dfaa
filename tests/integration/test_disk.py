"""Disk: the space a drained outbox freed goes back to the filesystem (SQLite incremental vacuum, WAL truncated;
PostgreSQL's autovacuum settings), and a full disk is told plainly, loses nothing and is recovered from."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from posthog_customerio import delivery as delivery_module
from posthog_customerio.cli.lifecycle import DISK_FULL_ADVICE
from posthog_customerio.config import Settings
from posthog_customerio.disk import DiskFull, SpaceKeeper, disk_full_message, is_disk_full
from posthog_customerio.runtime import Runtime
from posthog_customerio.sandbox import SandboxServer
from posthog_customerio.sources import parse_event
from posthog_customerio.storage import NewOperation, PostgresStorage, SqliteStorage, Storage
from posthog_customerio.storage import sqlite as sqlite_module

from ..conftest import write_jsonl
from ..helpers import hog, wait_for

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
        assert passes >= 2  # the first pass gave back one slice only: more were needed (how many: the machine's speed)
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
        assert drained > 20_000_000  # the deleted rows still take their pages until a vacuum

        def vacuum() -> int | None:
            """The size after a vacuum, once it gave the space back: a vacuum keeps the rows deleted after the
            oldest snapshot of the database's other sessions (other tests'), so it is tried until none is that old."""
            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute("VACUUM outbox")
            size = outbox_bytes()
            return size if size < drained / 4 else None  # the heap truncated; the indexes keep reusable pages

        vacuumed = wait_for(vacuum, "a vacuum to give the outbox's space back", 60, interval=0.5)
        print(
            f"\nPostgreSQL outbox, 50,000 operations: empty {empty:,} B, drained {drained:,} B, vacuumed {vacuumed:,} B"
        )
        assert (db.space().database_bytes or 0) >= vacuumed
    finally:
        db.close()


# -- a full disk (SQLite's max_page_count stands for the filesystem: raising it again is space returning) -------
def cap(db: SqliteStorage) -> Callable[[], None]:
    """No page more than the file has now (no free page left in it either): every write that needs one fails with
    SQLITE_FULL, "database or disk is full". Returns what gives the room back."""
    with db.lock:
        assert db.conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
        pages = db.conn.execute("PRAGMA page_count").fetchone()[0]
        db.conn.execute(f"PRAGMA max_page_count={pages}")

    def lift() -> None:
        with db.lock:
            db.conn.execute("PRAGMA max_page_count=1073741823")

    return lift


def test_a_full_database_keeps_what_was_committed_says_disk_full_and_takes_writes_again(tmp_path: Path) -> None:
    db = SqliteStorage(tmp_path / "db.sqlite")
    try:
        kept = fill(db, 100)
        assert db.disk_problem() is None
        lift = cap(db)
        assert (db.disk_problem() or "").startswith("disk full: ")
        with pytest.raises(sqlite3.OperationalError) as failed:
            fill(db, 5_000)
        assert is_disk_full(failed.value)
        assert disk_full_message(failed.value) == "disk full: database or disk is full (OperationalError)"
        assert not db.conn.in_transaction  # not left inside the failed transaction
        with db.reading() as tx:
            assert [seq for (seq,) in tx.execute("SELECT seq FROM outbox ORDER BY seq")] == kept
        lift()  # space returns: the same connection takes writes again
        assert db.disk_problem() is None
        assert len(fill(db, 5_000)) == 5_100
    finally:
        db.close()


def test_a_group_commit_that_hits_a_full_disk_commits_none_of_its_requests(tmp_path: Path) -> None:
    """SQLite rolls the whole group back on SQLITE_FULL: every request of it fails (none was stored), and the
    next group commits."""
    db = SqliteStorage(tmp_path / "db.sqlite")
    try:
        fill(db, 10)
        lift = cap(db)
        errors: list[BaseException] = []
        with pytest.raises(sqlite3.OperationalError) as failed, db.group():
            for size in (1, 5_000, 1):  # the middle one does not fit
                try:
                    fill(db, size)
                except sqlite3.OperationalError as exc:
                    errors.append(exc)
        assert is_disk_full(failed.value)
        assert len(errors) == 2 and all(is_disk_full(error) for error in errors)  # the last joined nothing
        assert db.space().database_bytes and not db.conn.in_transaction
        with db.reading() as tx:
            assert tx.outbox_depth() == 10
        lift()
        with db.group():
            fill(db, 3)
        with db.reading() as tx:
            assert tx.outbox_depth() == 13
    finally:
        db.close()


def test_send_on_a_full_disk_stops_with_one_line_and_exit_1_then_finishes_when_there_is_room(
    cli: Any, env: dict[str, str], sandbox: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = [hog(f"user-{n}", "Signed up") for n in range(300)]
    source = write_jsonl(tmp_path / "events.jsonl", events)
    migrate = SqliteStorage._migrate

    def full_after_migrating(self: SqliteStorage) -> None:
        migrate(self)
        self.conn.execute(f"PRAGMA max_page_count={self.conn.execute('PRAGMA page_count').fetchone()[0] + 2}")

    monkeypatch.setattr(SqliteStorage, "_migrate", full_after_migrating)
    result = cli("send", str(source), env=env)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert lines == [f"error: disk full: database or disk is full (OperationalError); {DISK_FULL_ADVICE}"]
    assert "Traceback" not in result.output
    monkeypatch.setattr(SqliteStorage, "_migrate", migrate)  # room again
    result = cli("send", str(source), env=env)
    assert result.exit_code == 0, result.output
    assert len(sandbox.state.people()) == 300


def test_delivery_pauses_on_a_full_disk_sends_nothing_meanwhile_and_resumes_when_there_is_room(
    settings: Callable[..., Settings], sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An acknowledgement that cannot be written: every worker waits (sending again what could not be recorded
    would only repeat it) until the database has room; the operations stay queued; then all goes out."""
    monkeypatch.setattr(delivery_module, "DISK_FULL_RETRY_S", 0.05)
    with Runtime(settings(sandbox, customerio_max_rps=1000)) as runtime:
        runtime.ingestor.ingest([parse_event(hog(f"user-{n}", "Signed up")) for n in range(20)], "test")
        full = threading.Event()
        full.set()
        looked = []
        ack = runtime.outbox.ack

        def failing_ack(items: Any) -> None:
            if full.is_set():
                raise sqlite3.OperationalError("database or disk is full")
            ack(items)

        def problem() -> str | None:
            looked.append(time.monotonic())
            return "disk full: 0 B left for the database" if full.is_set() else None

        monkeypatch.setattr(runtime.outbox, "ack", failing_ack)
        monkeypatch.setattr(runtime.db, "disk_problem", problem)
        queued = runtime.outbox.depth()
        deliverer = runtime.deliverer()
        deliverer.start()
        wait_for(lambda: deliverer.state == "disk_full", "delivery to pause on the full disk")
        sent = len(sandbox.state.requests())
        assert sent >= 1
        wait_for(lambda: len(looked) >= 3, "the paused workers to look for room a few times")
        assert len(sandbox.state.requests()) == sent  # nothing sent while the disk is full
        assert runtime.outbox.depth() == queued  # nothing lost
        assert (deliverer.stats.last_error or "").startswith("disk full: database or disk is full")
        with pytest.raises(DiskFull):  # a batch job (send) stops on it
            deliverer.wait_until_empty(timeout=5)
        full.clear()  # room again
        wait_for(lambda: runtime.outbox.depth() == 0, "delivery to resume and drain")
        assert deliverer.state == "running"
        assert len(sandbox.state.people()) == 20


# -- compact: an older or bloated file, at once ------------------------------------------------------------------
def test_compact_converts_and_shrinks_an_older_file(cli: Any, env: dict[str, str], tmp_path: Path) -> None:
    data = tmp_path / "data"
    path = data / "posthog-customerio.sqlite"
    old_database(path)
    db = SqliteStorage(path)
    drain(db, fill(db, 20_000))
    db.close()
    before = on_disk(path)
    store = ("--lease-s", "7", "--sqlite-synchronous", "normal")
    held = SqliteStorage(path)  # a process delivering from that data dir: compact would hold its writes
    lock = held.take_delivery_lock(data)
    refused = cli("compact", "--data-dir", str(data), *store, env=env)
    assert refused.exit_code == 1 and refused.stderr.startswith(
        "error: another posthog-customerio process is delivering"
    )
    assert lock is not None
    lock.close()
    held.close()
    done = cli("compact", "--data-dir", str(data), *store, env=env)
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith(f"compacted {path}: ") and "(auto-vacuum none -> incremental:" in done.stdout
    assert on_disk(path) < before / 5
    reopened = SqliteStorage(path)
    assert reopened.space().auto_vacuum == "incremental"
    reopened.close()
    # an OUTBOX_URL file, compacted again (nothing left to give back: it stays as small)
    again = cli("compact", "--outbox-url", f"sqlite:///{path}", env=env)
    assert again.exit_code == 0 and again.stdout.endswith("(auto-vacuum incremental)\n"), again.output
    assert cli("compact", "--data-dir", str(tmp_path / "nothing"), env=env).exit_code == 1  # no data there


def test_compact_with_postgresql_only_shows_the_sizes(cli: Any, env: dict[str, str], pg_url: str) -> None:
    PostgresStorage(pg_url).close()
    shown = cli("compact", "--outbox-url", pg_url, env=env)
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.startswith("PostgreSQL: the tables take ") and "autovacuum" in shown.stdout


def test_postgresql_refusing_a_write_for_lack_of_room_keeps_readyz_unready_until_events_fit_again(
    pg_url: str,
) -> None:
    """PostgreSQL says a disk is full with SQLSTATE 53100 on the write that does not fit (reproduced by hand on a
    tablespace on a 40 MB tmpfs: ``could not extend file … No space left on device``; here a trigger raises the same
    state). Its free space is not visible from a client, and a small probe write may still fit in a page: the
    refused write itself keeps ``disk_problem`` (``/readyz``) saying ``disk full`` until events are queued again."""
    db = PostgresStorage(pg_url)
    try:
        with db.transaction() as tx:
            tx.execute("CREATE TABLE disk_is_full (no_room boolean)")
            tx.execute("INSERT INTO disk_is_full VALUES (true)")
            tx.execute(
                "CREATE FUNCTION no_room() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                " IF (SELECT no_room FROM disk_is_full) THEN"
                " RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = '53100'; END IF;"
                " RETURN NEW; END $$"
            )
            tx.execute("CREATE TRIGGER no_room BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION no_room()")
        assert db.disk_problem() is None
        row = NewOperation("person-1", _PAYLOAD, len(_PAYLOAD), time.time(), None, "person")
        with pytest.raises(Exception) as refused, db.transaction() as tx:
            tx.insert_operations([row])
        assert getattr(refused.value, "sqlstate", None) == "53100" and is_disk_full(refused.value)
        problem = db.disk_problem()
        assert problem is not None and problem.startswith("disk full: could not extend file")
        db.probe_write()  # a small write fits: not enough to say there is room for events
        assert (db.disk_problem() or "").startswith("disk full: could not extend file")
        with db.transaction() as tx:
            tx.execute("UPDATE disk_is_full SET no_room = false")
        with db.transaction() as tx:
            tx.insert_operations([row])
        assert db.disk_problem() is None
        with db.reading() as tx:
            assert tx.outbox_depth() == 1  # nothing of the refused write, the one that fitted
    finally:
        db.close()
