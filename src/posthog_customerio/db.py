"""The embedded SQLite database that holds person state and the outbox.

State and outbox share one database file so that an event's state change and the
operations it produced commit in one transaction: after a crash either both are
there or neither is.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["Database", "SCHEMA_VERSION"]

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
]

SCHEMA_VERSION = len(_MIGRATIONS)


class Database:
    """One SQLite connection in WAL mode, shared by threads under a lock.

    SQLite allows one writer at a time anyway; a single connection guarded by an
    ``RLock`` keeps the code simple. Network I/O never happens under the lock.
    """

    def __init__(self, path: str | Path, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
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
        """A write transaction (``BEGIN IMMEDIATE``), committed on success."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection, for reads, under the lock."""
        with self.lock:
            yield self.conn

    def close(self) -> None:
        """Close the connection."""
        with self.lock:
            self.conn.close()
