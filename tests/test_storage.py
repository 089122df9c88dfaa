"""The storage backends: both migrated schemas end with the same tables and columns."""

from __future__ import annotations

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
