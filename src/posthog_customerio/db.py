"""The database that holds person state and the outbox: embedded SQLite or PostgreSQL.

State and outbox share one database so that an event's state change and the
operations it produced commit in one transaction: after a crash either both are
there or neither is. Both backends speak the same SQL (``?`` placeholders, standard
``ON CONFLICT`` upserts); :class:`PostgresDatabase` adapts placeholders and adds
the locking that several replicas sharing one database need.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["Database", "SqliteDatabase", "PostgresDatabase", "open_database", "SCHEMA_VERSION"]

_MIGRATIONS: list[str] = [
    # 1: person state, outbox, dead letters
    """
    CREATE TABLE IF NOT EXISTS persons (
        distinct_id TEXT PRIMARY KEY,
        identified INTEGER NOT NULL DEFAULT 0,
        email TEXT,
        created INTEGER NOT NULL DEFAULT 0,
        email_sent TEXT,
        digests TEXT NOT NULL DEFAULT '{}'
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        person_key TEXT NOT NULL,
        payload TEXT NOT NULL,
        size INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        enqueued_at REAL NOT NULL,
        last_error TEXT
    );
    CREATE TABLE IF NOT EXISTS dead_letters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        seq INTEGER NOT NULL,
        person_key TEXT NOT NULL,
        payload TEXT NOT NULL,
        reason TEXT NOT NULL,
        status INTEGER,
        response TEXT,
        attempts INTEGER NOT NULL,
        enqueued_at REAL NOT NULL,
        failed_at REAL NOT NULL
    );
    """,
    # 2: the last status snapshot a running service wrote (read by `status`)
    """
    CREATE TABLE IF NOT EXISTS status_snapshot (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
    # 3: identity merges and anonymous events: person aliases, extra state, multi-person ordering
    """
    ALTER TABLE persons ADD COLUMN merged_into TEXT;
    ALTER TABLE persons ADD COLUMN extra TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE outbox ADD COLUMN after_keys TEXT;
    ALTER TABLE dead_letters ADD COLUMN after_keys TEXT;
    """,
    # 4: delivery leases (used by the PostgreSQL backend; kept for one schema)
    """
    ALTER TABLE outbox ADD COLUMN lease_owner TEXT;
    ALTER TABLE outbox ADD COLUMN lease_until REAL;
    """,
    # 5: find a visitor's queued anonymous events when they identify
    """
    CREATE INDEX IF NOT EXISTS outbox_person_key ON outbox (person_key);
    """,
    # 6: an operation's kind is data (person, anonymous, object); rows queued before it are
    # backfilled once from their payload, which then always began with its type
    """
    ALTER TABLE outbox ADD COLUMN kind TEXT NOT NULL DEFAULT 'person';
    ALTER TABLE dead_letters ADD COLUMN kind TEXT NOT NULL DEFAULT 'person';
    UPDATE outbox SET kind = 'anonymous' WHERE payload LIKE '{"type":"anonymous"%';
    UPDATE outbox SET kind = 'object' WHERE payload LIKE '{"type":"object"%';
    UPDATE dead_letters SET kind = 'anonymous' WHERE payload LIKE '{"type":"anonymous"%';
    UPDATE dead_letters SET kind = 'object' WHERE payload LIKE '{"type":"object"%';
    """,
    # 7: object and group keys start with U+001F instead of NUL (which PostgreSQL text cannot hold)
    """
    UPDATE persons SET distinct_id = char(31) || CAST(substr(CAST(distinct_id AS BLOB), 2) AS TEXT)
        WHERE substr(CAST(distinct_id AS BLOB), 1, 1) = x'00';
    UPDATE outbox SET person_key = char(31) || CAST(substr(CAST(person_key AS BLOB), 2) AS TEXT)
        WHERE substr(CAST(person_key AS BLOB), 1, 1) = x'00';
    UPDATE dead_letters SET person_key = char(31) || CAST(substr(CAST(person_key AS BLOB), 2) AS TEXT)
        WHERE substr(CAST(person_key AS BLOB), 1, 1) = x'00';
    UPDATE outbox SET after_keys = replace(after_keys, '\\u0000', '\\u001f') WHERE after_keys LIKE '%\\u0000%';
    UPDATE dead_letters SET after_keys = replace(after_keys, '\\u0000', '\\u001f') WHERE after_keys LIKE '%\\u0000%';
    """,
]

SCHEMA_VERSION = len(_MIGRATIONS)


class SqliteDatabase:
    """One SQLite connection in WAL mode, shared by threads under a lock.

    SQLite allows one writer at a time anyway; a single connection guarded by an
    ``RLock`` keeps the code simple. Network I/O never happens under the lock.
    """

    dialect = "sqlite"
    #: one process delivers from a SQLite file (the runtime takes a lock file)
    shared = False

    def __init__(self, path: str | Path, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self._local = threading.local()
        self.conn = sqlite3.connect(
            str(self.path), isolation_level=None, check_same_thread=False, timeout=30.0
        )
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={synchronous}")
        self.conn.execute("PRAGMA busy_timeout=30000")
        self._migrate()

    def _migrate(self) -> None:
        with self.transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";")):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={number}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``), committed on success.

        Inside :meth:`group` (same thread) it is a savepoint of the group's
        transaction instead: it rolls back alone, and commits with the group.
        """
        with self.lock:
            if getattr(self._local, "grouped", False):
                self.conn.execute("SAVEPOINT part")
                try:
                    yield self.conn
                except BaseException:
                    self.conn.execute("ROLLBACK TO part")
                    self.conn.execute("RELEASE part")
                    raise
                self.conn.execute("RELEASE part")
                return
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    @contextmanager
    def group(self) -> Iterator[None]:
        """One transaction (one commit, one fsync) for several :meth:`transaction` blocks."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            self._local.grouped = True
            try:
                yield
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            finally:
                self._local.grouped = False
            self.conn.execute("COMMIT")

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection, for reads, under the lock."""
        with self.lock:
            yield self.conn

    def lock_keys(self, conn: Any, keys: Iterable[str]) -> None:
        """Serialise writers of these keys (SQLite already has one writer at a time)."""

    def close(self) -> None:
        """Close the connection."""
        with self.lock:
            self.conn.close()

    def describe(self) -> str:
        """Where the data lives (no secrets)."""
        return f"sqlite:///{self.path}"


#: The default backend (kept under its historical name).
Database = SqliteDatabase

_PG_MIGRATIONS: list[str] = [
    # 1: everything SQLite has after its migration 4
    """
    CREATE TABLE IF NOT EXISTS persons (
        distinct_id TEXT PRIMARY KEY,
        identified INTEGER NOT NULL DEFAULT 0,
        email TEXT,
        created INTEGER NOT NULL DEFAULT 0,
        email_sent TEXT,
        digests TEXT NOT NULL DEFAULT '{}',
        merged_into TEXT,
        extra TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE IF NOT EXISTS outbox (
        seq BIGSERIAL PRIMARY KEY,
        person_key TEXT NOT NULL,
        payload TEXT NOT NULL,
        size INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        enqueued_at DOUBLE PRECISION NOT NULL,
        last_error TEXT,
        after_keys TEXT,
        lease_owner TEXT,
        lease_until DOUBLE PRECISION
    );
    CREATE TABLE IF NOT EXISTS dead_letters (
        id BIGSERIAL PRIMARY KEY,
        seq BIGINT NOT NULL,
        person_key TEXT NOT NULL,
        payload TEXT NOT NULL,
        reason TEXT NOT NULL,
        status INTEGER,
        response TEXT,
        attempts INTEGER NOT NULL,
        enqueued_at DOUBLE PRECISION NOT NULL,
        failed_at DOUBLE PRECISION NOT NULL,
        after_keys TEXT
    );
    CREATE TABLE IF NOT EXISTS status_snapshot (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    )
    """,
    # 2: find a visitor's queued anonymous events when they identify
    """
    CREATE INDEX IF NOT EXISTS outbox_person_key ON outbox (person_key)
    """,
    # 3: request pacing shared by replicas: per workspace, the next request slot and the end of a pause
    # (epoch seconds on the database's clock; see pacing.py)
    """
    CREATE TABLE IF NOT EXISTS delivery_pacing (
        workspace TEXT PRIMARY KEY,
        next_slot DOUBLE PRECISION NOT NULL DEFAULT 0,
        hold_until DOUBLE PRECISION NOT NULL DEFAULT 0
    )
    """,
    # 4: an operation's kind is data (person, anonymous, object); rows queued before it are
    # backfilled once from their payload, which then always began with its type
    """
    ALTER TABLE outbox ADD COLUMN IF NOT EXISTS kind TEXT NOT NULL DEFAULT 'person';
    ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS kind TEXT NOT NULL DEFAULT 'person';
    UPDATE outbox SET kind = 'anonymous' WHERE payload LIKE '{"type":"anonymous"%';
    UPDATE outbox SET kind = 'object' WHERE payload LIKE '{"type":"object"%';
    UPDATE dead_letters SET kind = 'anonymous' WHERE payload LIKE '{"type":"anonymous"%';
    UPDATE dead_letters SET kind = 'object' WHERE payload LIKE '{"type":"object"%'
    """,
]
_MIGRATION_LOCK = 7_274_135_001  # pg_advisory_lock key: one replica migrates at a time


def key_lock_id(key: str) -> int:
    """A signed 64-bit advisory-lock id for a key (stable across processes)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


class _PgConnection:
    """A psycopg connection speaking the SQLite flavour (``?`` placeholders)."""

    def __init__(self, conn: Any) -> None:
        self.raw = conn

    def execute(self, sql: str, params: Any = ()) -> Any:
        return self.raw.execute(sql.replace("?", "%s"), params)

    def executemany(self, sql: str, rows: Any) -> None:
        rows = list(rows)
        if rows:
            with self.raw.cursor() as cursor:
                cursor.executemany(sql.replace("?", "%s"), rows)


class PostgresDatabase:
    """A psycopg 3 connection pool on a PostgreSQL database shared by replicas.

    Migrations are versioned (``schema_migrations``), idempotent, and run by one
    replica at a time under an advisory lock.
    """

    dialect = "postgresql"
    #: several processes may deliver from it (claims use leases)
    shared = True

    def __init__(self, url: str, *, schema: str | None = None, pool_size: int = 8) -> None:
        from psycopg_pool import ConnectionPool

        self.url = url
        self.schema = schema
        self.lock = threading.RLock()  # API parity with SQLite; PostgreSQL does its own locking
        options = {"options": f"-c search_path={schema}"} if schema else {}
        self.pool = ConnectionPool(url, min_size=1, max_size=pool_size, kwargs=options, open=False)
        self.pool.open(wait=True, timeout=15)
        self._migrate()

    def _migrate(self) -> None:
        with self.pool.connection() as conn:
            if self.schema:
                conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
            try:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations"
                    " (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                )
                done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
                for number, script in enumerate(_PG_MIGRATIONS, start=1):
                    if number in done:
                        continue
                    with conn.transaction():
                        for statement in filter(str.strip, script.split(";")):
                            conn.execute(statement)
                        conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (number,))
                conn.commit()
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
                conn.commit()

    @contextmanager
    def transaction(self) -> Iterator[_PgConnection]:
        """A transaction on a pooled connection, committed on success."""
        with self.pool.connection() as conn:
            with conn.transaction():
                yield _PgConnection(conn)

    @contextmanager
    def reading(self) -> Iterator[_PgConnection]:
        """A pooled connection for reads."""
        with self.pool.connection() as conn:
            yield _PgConnection(conn)

    def lock_keys(self, conn: _PgConnection, keys: Iterable[str]) -> None:
        """Transaction-scoped advisory locks on these keys, in a global order (no deadlocks)."""
        for lock_id in sorted({key_lock_id(key) for key in keys}):
            conn.execute("SELECT pg_advisory_xact_lock(?)", (lock_id,))

    def close(self) -> None:
        """Close the pool."""
        self.pool.close()

    def describe(self) -> str:
        """Where the data lives (without the password)."""
        from psycopg.conninfo import conninfo_to_dict

        info = conninfo_to_dict(self.url)
        return f"postgresql://{info.get('user', '')}@{info.get('host', '')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


def open_database(url: str | None, sqlite_path: Path, synchronous: str = "FULL") -> SqliteDatabase | PostgresDatabase:
    """The database for ``OUTBOX_URL`` (``sqlite:///path``, ``postgresql://…``) or the default SQLite file."""
    if not url:
        return SqliteDatabase(sqlite_path, synchronous)
    if url.startswith("sqlite:///"):
        return SqliteDatabase(Path(url.removeprefix("sqlite:///")), synchronous)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresDatabase(url)
    raise ValueError(f"unsupported OUTBOX_URL scheme: {url.split(':', 1)[0]}")
