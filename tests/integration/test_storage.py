"""The storage backends: both migrated schemas end with the same tables and columns."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from posthog_customerio.storage import PostgresStorage, SqliteStorage, Storage

#: declared column types, by family (SQLite's affinity names; PostgreSQL's information_schema names)
_FAMILIES = {
    "integer": "integer",
    "bigint": "integer",
    "smallint": "integer",
    "text": "text",
    "real": "real",
    "double precision": "real",
}


def _families(storage: Storage) -> dict[str, dict[str, str]]:
    schema = storage.schema()
    return {
        table: {column: _FAMILIES.get(kind.lower(), kind.lower()) for column, kind in columns.items()}
        for table, columns in schema.items()
        if table not in storage.own_tables
    }


def test_both_migrated_schemas_have_the_same_tables_columns_and_types(tmp_path: Path, pg_url: str) -> None:
    sqlite, postgres = SqliteStorage(tmp_path / "db.sqlite"), PostgresStorage(pg_url)
    try:
        lite, pg = _families(sqlite), _families(postgres)
        assert {"persons", "outbox", "dead_letters", "status_snapshot"} <= set(lite)
        assert set(lite) == set(pg), "tables differ"
        for table in lite:
            assert lite[table] == pg[table], f"{table}: columns or their types differ"
        # a backend's own tables are declared, and really are its own
        assert postgres.own_tables <= set(postgres.schema()) and not postgres.own_tables & set(sqlite.schema())
        assert sqlite.own_tables == frozenset()
    finally:
        sqlite.close()
        postgres.close()


def test_schema_comparison_sees_a_missing_column(tmp_path: Path) -> None:
    """The comparison above is not vacuous: a column one backend lacks shows."""
    sqlite = SqliteStorage(tmp_path / "db.sqlite")
    try:
        before = _families(sqlite)
        with sqlite.transaction() as tx:
            tx.execute("ALTER TABLE outbox ADD COLUMN extra_column TEXT")
        after = _families(sqlite)
        assert after["outbox"] != before["outbox"] and after["outbox"]["extra_column"] == "text"
        assert after["outbox"]["seq"] == "integer" and after["outbox"]["enqueued_at"] == "real"
    finally:
        sqlite.close()


def _counting_reads(storage: Storage) -> list[int]:
    """Count the storage reads (and transactions) opened from now on."""
    count = [0]
    for name in ("reading", "transaction"):
        original = getattr(storage, name)

        def counted(original=original):  # type: ignore[no-untyped-def]
            count[0] += 1
            return original()

        setattr(storage, name, counted)
    return count


def test_status_and_metrics_come_from_one_snapshot_read(tmp_path: Path) -> None:
    from posthog_customerio.config import load_settings
    from posthog_customerio.metrics import Metrics
    from posthog_customerio.operations import Operation
    from posthog_customerio.runtime import Runtime
    from posthog_customerio.status import build_status, take_snapshot

    settings = load_settings({"posthog_customerio_data_dir": tmp_path / "data"})
    with Runtime(settings) as runtime:
        runtime.outbox.put(
            [
                Operation(key, {"type": "person", "identifiers": {"id": key}, "action": "event", "name": "e"})
                for key in ("a", "b", "c")
            ]
        )
        (first, *_) = runtime.outbox.claim(1, 100_000, 32_000)
        runtime.outbox.dead_letter([(first, "nope", 400, None)])
        reads = _counting_reads(runtime.db)
        snap = take_snapshot(runtime)
        assert reads[0] == 1, "the snapshot is one read"
        assert (snap.depth, snap.dead_letters, snap.persons, snap.in_flight) == (2, 1, 0, 0)
        assert [letter.reason for letter in snap.dead_letter_rows] == ["nope"]
        status = build_status(runtime, snapshot=snap)
        assert reads[0] == 1, "building the status from a snapshot reads nothing more"
        assert status["outbox"]["depth"] == 2 and status["outbox"]["dead_letters"] == 1
        assert [row["reason"] for row in status["dead_letters"]] == ["nope"]
        build_status(runtime)
        assert reads[0] == 2, "a status without a snapshot takes exactly one"
        text = Metrics(runtime).render().decode()
        assert reads[0] == 3, "a metrics scrape is one read"
        assert "posthog_customerio_outbox_depth 2.0" in text and "posthog_customerio_dead_letters 1.0" in text


def test_one_holder_of_the_person_sync_lock_at_a_time(open_db: Callable[[], Storage]) -> None:
    """Two openings of one database (two replicas, or two processes on one SQLite file): while one holds the
    person sync lock the other is refused at once; released at the end of the block, it can be taken again."""
    first, second = open_db(), open_db()
    with first.person_sync_lock() as held:
        assert held
        with second.person_sync_lock() as other:
            assert not other
    with second.person_sync_lock() as again:
        assert again
        with first.person_sync_lock() as other:
            assert not other
    with first.person_sync_lock() as held, first.transaction() as tx:  # the pool stays usable while it is held
        assert held and tx.outbox_depth() == 0


def test_deliveries_keep_each_persons_newest(open_db: Callable[[], Storage]) -> None:
    """``record_deliveries`` keeps the newest ``keep`` of each person it records for, and leaves others alone."""
    from posthog_customerio.storage.base import DeliveryRow

    db = open_db()

    def row(person: str, seq: int) -> DeliveryRow:
        return DeliveryRow(person, seq, "person", "event", f"e{seq}", "delivered", float(seq))

    with db.transaction() as tx:
        tx.record_deliveries([row("quiet", seq) for seq in range(8)], 10)
    for first in range(0, 30, 6):  # five settlements of six, for two people
        with db.transaction() as tx:
            tx.record_deliveries([row(person, seq) for seq in range(first, first + 6) for person in ("a", "b")], 4)
    with db.reading() as tx:
        for person in ("a", "b"):
            assert [r.seq for r in tx.deliveries_of([person], 100)] == [29, 28, 27, 26]
        assert len(tx.deliveries_of(["quiet"], 100)) == 8
