"""Embedded SQLite (WAL): one connection shared by threads, one deliverer per file.

SQLite allows one writer at a time anyway; a single connection guarded by an ``RLock`` keeps the
code simple (network I/O never happens under the lock). Claims are an in-process book: a row in
flight here is taken; the runtime's delivery lock file makes this process the only deliverer.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator, Set
from pathlib import Path
from typing import IO

from ..operations import Lane
from .base import Claims, DeliveryLockError, Hold, Picker, Transaction, in_order, pages
from .migrations import SQLITE_MIGRATIONS
from .rows import CandidateRow, PayloadRow
from .sql import SqlStorage, SqlTransaction, Statements

__all__ = ["SqliteClaims", "SqliteStorage"]

_STATEMENTS = Statements("?")
# the partial index answers the count without reading a row; with ANALYZE statistics saying most rows are
# anonymous, SQLite's planner would read the whole table instead (x20 at 200,000 rows: bench/RESULTS.md)
_STATEMENTS.anonymous_count = "SELECT COUNT(*) FROM outbox INDEXED BY outbox_anonymous_lane WHERE kind = 'anonymous'"


class SqliteClaims(Claims):
    """Claims of the only deliverer: a row is taken while this process has it in flight."""

    def __init__(self, db: SqliteStorage) -> None:
        self.db = db

    def claim(
        self, pick: Picker, in_flight: Set[int], hold: Hold, lane: Lane | None = None
    ) -> tuple[list[CandidateRow], list[CandidateRow], dict[int, PayloadRow]]:
        """Pick from the queue read a page at a time, then, under the database lock, read the chosen rows'
        payloads and hold them as in flight: an ingestion (its whole transaction under that lock) either
        replaced a row before (it is gone: left out, with the later chosen rows of its keys) or sees it
        in flight after (and leaves it alone)."""

        def fetch(after: int, limit: int) -> list[CandidateRow]:
            with self.db.reading() as tx:
                return tx.candidates(after, limit, lane)

        chosen, oversized = pick(pages(fetch), lambda row: row.seq in in_flight)
        if not chosen and not oversized:
            return [], [], {}
        with self.db.reading() as tx:
            payloads = tx.payloads([row.seq for row in (*chosen, *oversized)])
            kept = in_order(chosen, payloads.keys())
            hold(kept)
        kept_seqs = {row.seq for row in (*kept, *oversized)}
        return kept, oversized, {seq: value for seq, value in payloads.items() if seq in kept_seqs}


class SqliteStorage(SqlStorage):
    """One SQLite connection in WAL mode, migrated with ``PRAGMA user_version``."""

    dialect = "sqlite"
    group_commit = True
    sql = _STATEMENTS

    def __init__(self, path: str | Path, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self._local = threading.local()
        self.conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30.0)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={synchronous}")
        self.conn.execute("PRAGMA busy_timeout=30000")
        self._migrate()

    def _migrate(self) -> None:
        with self.transaction():
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(SQLITE_MIGRATIONS[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";")):
                    self.conn.execute(statement)
                self.conn.execute(f"PRAGMA user_version={number}")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A write transaction (``BEGIN IMMEDIATE``), committed on success.

        Inside :meth:`group` (same thread) it is a savepoint of the group's transaction instead:
        it rolls back alone, and commits with the group.
        """
        with self.lock:
            if getattr(self._local, "grouped", False):
                self.conn.execute("SAVEPOINT part")
                try:
                    yield SqlTransaction(self.conn, self.sql)
                except BaseException:
                    self.conn.execute("ROLLBACK TO part")
                    self.conn.execute("RELEASE part")
                    raise
                self.conn.execute("RELEASE part")
                return
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield SqlTransaction(self.conn, self.sql)
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    @contextlib.contextmanager
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

    @contextlib.contextmanager
    def reading(self) -> Iterator[Transaction]:
        """The connection, for reads, under the lock."""
        with self.lock:
            yield SqlTransaction(self.conn, self.sql)

    def claims(self, lease_s: float) -> Claims:
        return SqliteClaims(self)

    def take_delivery_lock(self, data_dir: Path) -> IO[str] | None:
        """Take ``delivery.lock`` in the data directory (``flock``; it holds the pid)."""
        path = Path(data_dir) / "delivery.lock"
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        handle = open(descriptor, "a+")  # noqa: SIM115 - held for the process lifetime
        with contextlib.suppress(OSError):
            os.chmod(path, 0o600)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise DeliveryLockError(
                f"another posthog-customerio process is delivering from {path.parent};"
                " stop it or use another POSTHOG_CUSTOMERIO_DATA_DIR"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        return handle

    def person_sync_lock(self) -> contextlib.AbstractContextManager[bool]:
        """``flock`` on ``<database>.person-sync.lock`` without waiting: processes sharing the file (``serve
        --role ingest`` beside ``--role deliver``) take turns; released when the block ends (or the process dies)."""
        return self._file_lock(".person-sync.lock")

    def cohort_sync_lock(self) -> contextlib.AbstractContextManager[bool]:
        """As :meth:`person_sync_lock`, on ``<database>.cohort-sync.lock``."""
        return self._file_lock(".cohort-sync.lock")

    @contextlib.contextmanager
    def _file_lock(self, suffix: str) -> Iterator[bool]:
        path = self.path.with_name(self.path.name + suffix)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(descriptor)  # closing the last descriptor releases the lock

    def schema(self) -> dict[str, dict[str, str]]:
        with self.reading() as tx:
            tables = [
                name
                for (name,) in tx.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
                ).fetchall()
            ]
            # PRAGMA table_info: (cid, name, type, notnull, dflt_value, pk)
            return {
                table: {
                    name: str(declared)
                    for _, name, declared, *_ in tx.execute(f'PRAGMA table_info("{table}")').fetchall()
                }
                for table in tables
            }

    def close(self) -> None:
        """Close the connection."""
        with self.lock:
            self.conn.close()

    def describe(self) -> str:
        """Where the data lives."""
        return f"sqlite:///{self.path}"
