"""Embedded SQLite (WAL): one connection shared by threads, one deliverer per file.

SQLite allows one writer at a time anyway; a single connection guarded by an ``RLock`` keeps the
code simple (network I/O never happens under the lock). Claims are an in-process book: a row in
flight here is taken; the runtime's delivery lock file makes this process the only deliverer.

Disk: a new file is created with ``auto_vacuum=INCREMENTAL`` (it must be set before the first table);
:meth:`SqliteStorage.compact` then gives the pages the outbox freed back to the filesystem a short
step at a time, and truncates the WAL (``journal_size_limit`` bounds what a checkpoint leaves of it). A
file made before that is converted once by a ``VACUUM`` (:meth:`SqliteStorage.enable_compaction`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence, Set
from pathlib import Path
from typing import IO, NamedTuple

from ..operations import Lane
from .base import Claims, DeliveryLockError, Hold, Picker, StorageSpace, Transaction, in_order, pages, size_text
from .migrations import SQLITE_MIGRATIONS
from .rows import CandidateRow, PayloadRow
from .sql import SqlStorage, SqlTransaction, Statements

__all__ = ["SqliteClaims", "SqliteStorage"]

log = logging.getLogger(__name__)

_MB = 2**20
#: after a checkpoint the WAL file is cut back to this (``journal_size_limit``): a burst of writes, or a long
#: read that held checkpoints back, does not leave a big ``-wal`` file behind
WAL_LIMIT_BYTES = 8 * _MB
#: free pages kept in the file for the next writes: this much, or a tenth of the file when that is more; beyond
#: it incremental vacuum gives them back, down to half of it
KEEP_FREE_BYTES = 8 * _MB
KEEP_FREE_SHARE = 0.1
#: pages given back per step (one short write transaction: about 10 ms for 256 pages of 4 kB)
VACUUM_STEP_PAGES = 256
#: a file made before incremental auto-vacuum is converted when the process that delivers starts, by one
#: ``VACUUM``, when its live data is at most this: a few seconds (it copies the live pages and holds writers)
CONVERT_MAX_LIVE_BYTES = 256 * _MB
#: with less room than this left (free space on the filesystem, or ``max_page_count``) the disk is full
DISK_FULL_BELOW_BYTES = 2 * _MB
_BUSY_TIMEOUT_MS = 30_000
_AUTO_VACUUM = {0: "none", 1: "full", 2: "incremental"}


class _Pages(NamedTuple):
    """A SQLite file's page figures (``PRAGMA``)."""

    size: int
    total: int
    free: int
    #: ``max_page_count``
    most: int
    #: ``auto_vacuum``: ``none``, ``full`` or ``incremental``
    mode: str


_STATEMENTS = Statements("?")
# the partial index answers the count without reading a row; with ANALYZE statistics saying most rows are
# anonymous, SQLite's planner would read the whole table instead (x20 at 200,000 rows: bench/RESULTS.md)
_STATEMENTS.anonymous_count = "SELECT COUNT(*) FROM outbox INDEXED BY outbox_anonymous_lane WHERE kind = 'anonymous'"


class SqliteClaims(Claims):
    """Claims of the only deliverer: a row is taken while this process has it in flight.

    The rows taken are also marked leased in the file (until settled or given back), so that another process
    writing to it (``serve --role ingest`` or ``--workers`` beside the deliverer) sees them taken: an identify it
    ingests adopts a visitor's queued events only where no worker is sending them. Leases left by a deliverer
    that died are cleared when the next one takes the delivery lock (:meth:`SqliteStorage.take_delivery_lock`).
    """

    def __init__(self, db: SqliteStorage) -> None:
        self.db = db
        self.owner = f"sqlite:{socket.gethostname()}:{os.getpid()}"

    def claim(
        self, pick: Picker, in_flight: Set[int], hold: Hold, lane: Lane | None = None
    ) -> tuple[list[CandidateRow], list[CandidateRow], dict[int, PayloadRow]]:
        """Pick from the queue read a page at a time, then, under the database's write lock, read the chosen
        rows' payloads, lease them and hold them as in flight: an ingestion (its whole transaction under that
        lock, in this process or another) either replaced a row before (it is gone: left out, with the later
        chosen rows of its keys) or sees it taken after (and leaves it alone)."""

        def fetch(after: int, limit: int) -> list[CandidateRow]:
            # the rows leased are this process's (one deliverer): in flight, their keys are busy here (what
            # follows them waits just the same), so the scan does not read them again at every claim
            with self.db.committed_reading() as tx:
                return tx.candidates(after, limit, lane, unleased=True)

        chosen, oversized = pick(pages(fetch), lambda row: row.seq in in_flight)
        if not chosen and not oversized:
            return [], [], {}
        seqs = [row.seq for row in (*chosen, *oversized)]
        with self.db.lock:  # no ingestion of this process between reading the payloads and holding the rows
            try:
                with self._writing() as tx:
                    payloads = tx.payloads(seqs)
                    kept = in_order(chosen, payloads.keys())
                    if kept:
                        tx.execute(
                            "UPDATE outbox SET lease_owner = ?, lease_until = ?"
                            f" WHERE seq IN ({','.join('?' * len(kept))})",
                            [self.owner, _HELD_UNTIL, *(row.seq for row in kept)],
                        )
            except sqlite3.OperationalError:  # no room to write the leases (a full disk): nobody else can write either
                with self.db.reading() as tx:
                    payloads = tx.payloads(seqs)
                kept = in_order(chosen, payloads.keys())
            hold(kept)
        kept_seqs = {row.seq for row in (*kept, *oversized)}
        return kept, oversized, {seq: value for seq, value in payloads.items() if seq in kept_seqs}

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Transaction]:
        """A write transaction, or this thread's own one when it is already inside it (the lock is re-entrant:
        while this thread holds it, an open transaction on the connection is this thread's)."""
        with self.db.lock:
            if self.db.conn.in_transaction:
                yield SqlTransaction(self.db.conn, self.db.sql)
            else:
                with self.db.unsynced(), self.db.transaction() as tx:
                    yield tx

    def give_back(self, seqs: Sequence[int]) -> None:
        """Operations handed out but not attempted: their leases dropped."""
        if seqs:
            with self.db.unsynced(), self.db.transaction() as tx:
                tx.execute(
                    f"UPDATE outbox SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?"
                    f" AND seq IN ({','.join('?' * len(seqs))})",
                    [self.owner, *seqs],
                )


#: a SQLite lease lasts until its operation is settled or given back (never by time: one deliverer at a time)
_HELD_UNTIL = 1e12


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
        self.synchronous = synchronous.upper()
        #: a second connection for :meth:`committed_reading` (opened when first used), and its lock
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()
        #: :meth:`compact` is giving pages back (until down to its target) / owes a checkpoint (one was busy)
        self._shrinking = False
        self._checkpoint_owed = False
        with self._full_disk_said():
            self.conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30.0)
            # before anything else: only a database without tables (a new file) takes it (after WAL, not even that)
            self.conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
            self.conn.execute(f"PRAGMA synchronous={synchronous}")
            self.conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            self._migrate()

    @contextlib.contextmanager
    def _full_disk_said(self) -> Iterator[None]:
        """A SQLite I/O error while the filesystem has no room left is a full disk, and is raised as one
        (``database or disk is full``): SQLite says "disk I/O error" when it cannot grow the WAL index
        (``SQLITE_IOERR_SHMSIZE``, e.g. when opening the file) or a write fails at some moments."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF != sqlite3.SQLITE_IOERR:
                raise
            with contextlib.suppress(OSError):
                stat = os.statvfs(self.path.parent)
                if stat.f_bavail * stat.f_frsize < DISK_FULL_BELOW_BYTES:
                    name = getattr(exc, "sqlite_errorname", "SQLITE_IOERR")
                    raise sqlite3.OperationalError(f"database or disk is full ({name}, no space left)") from exc
            raise

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
        with self.lock, self._full_disk_said():
            if getattr(self._local, "grouped", False):
                if self._local.lost is not None:  # the group's transaction is gone: nothing more joins it
                    raise self._local.lost
                self.conn.execute("SAVEPOINT part")
                try:
                    yield SqlTransaction(self.conn, self.sql)
                except BaseException as exc:
                    if self.conn.in_transaction:
                        self.conn.execute("ROLLBACK TO part")
                        self.conn.execute("RELEASE part")
                    else:  # SQLite rolled the whole group back (it does on SQLITE_FULL): the group fails with it
                        self._local.lost = exc
                    raise
                self.conn.execute("RELEASE part")
                return
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield SqlTransaction(self.conn, self.sql)
            except BaseException:
                self._rollback()
                raise
            self._commit()

    @contextlib.contextmanager
    def unsynced(self) -> Iterator[None]:
        """The transactions opened inside commit without waiting for the disk (``synchronous=NORMAL``: in WAL
        mode the commit is not flushed; the next flushed commit, or a checkpoint, flushes it with it).

        For writes that only matter while this process runs: a claim's leases (a power cut loses them with
        the process that held them; the next deliverer clears leases anyway). Never for what was accepted.
        """
        with self.lock:
            switch = self.synchronous in ("FULL", "EXTRA") and not self.conn.in_transaction
            if switch:
                self.conn.execute("PRAGMA synchronous=NORMAL")
            try:
                yield
            finally:
                if switch:
                    self.conn.execute(f"PRAGMA synchronous={self.synchronous}")

    def _commit(self) -> None:
        """``COMMIT``; when it fails (a full disk: SQLite writes the WAL then) the transaction is rolled back, so
        the connection never stays inside it (every later ``BEGIN`` would fail)."""
        try:
            self.conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        """``ROLLBACK`` unless SQLite already rolled the transaction back itself (it does on ``SQLITE_FULL``, and
        a failing ``ROLLBACK`` would hide that error behind "no transaction is active")."""
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    @contextlib.contextmanager
    def group(self) -> Iterator[None]:
        """One transaction (one commit, one fsync) for several :meth:`transaction` blocks."""
        with self.lock, self._full_disk_said():
            self.conn.execute("BEGIN IMMEDIATE")
            self._local.grouped = True
            self._local.lost = None
            try:
                yield
            except BaseException:
                self._rollback()
                raise
            finally:
                self._local.grouped = False
            if self._local.lost is not None:  # rolled back by SQLite: none of its parts was committed
                lost, self._local.lost = self._local.lost, None
                raise lost
            self._commit()

    @contextlib.contextmanager
    def reading(self) -> Iterator[Transaction]:
        """The connection, for reads, under the lock."""
        with self.lock:
            yield SqlTransaction(self.conn, self.sql)

    @contextlib.contextmanager
    def committed_reading(self) -> Iterator[Transaction]:
        """Reads on a connection of their own: in WAL mode they see what was committed and never wait for this
        process's writer (a group commit holds :attr:`lock` while it maps and stores a batch). A thread inside its
        own transaction reads that one instead (on the writer's connection)."""
        if self.lock._is_owned():  # type: ignore[attr-defined]  # this thread's transaction may be open
            with self.reading() as tx:
                yield tx
            return
        with self._reader_lock, self._full_disk_said():
            if self._reader is None:
                self._reader = sqlite3.connect(
                    str(self.path), isolation_level=None, check_same_thread=False, timeout=_BUSY_TIMEOUT_MS / 1000
                )
            yield SqlTransaction(self._reader, self.sql)

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
        with self.transaction() as tx:  # leases of a deliverer that is gone (this lock was free)
            tx.execute("UPDATE outbox SET lease_owner = NULL, lease_until = NULL WHERE lease_until IS NOT NULL")
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

    # -- disk ----------------------------------------------------------------------------------
    def _pages(self) -> _Pages:
        """The file's page figures: a few header reads."""
        with self.lock:
            size, count, free, most, mode = (
                int(self.conn.execute(f"PRAGMA {name}").fetchone()[0])
                for name in ("page_size", "page_count", "freelist_count", "max_page_count", "auto_vacuum")
            )
        return _Pages(size, count, free, most, _AUTO_VACUUM.get(mode, str(mode)))

    def _file_size(self, suffix: str = "") -> int:
        try:
            return self.path.with_name(self.path.name + suffix).stat().st_size
        except FileNotFoundError:
            return 0

    def _room(self, pages: _Pages) -> int:
        """Bytes the database can still grow by: the filesystem's free space (for this user), or what
        ``max_page_count`` leaves, whichever is less."""
        stat = os.statvfs(self.path.parent)
        return min(stat.f_bavail * stat.f_frsize, (pages.most - pages.total) * pages.size)

    def space(self) -> StorageSpace:
        pages = self._pages()
        wal = self._file_size("-wal")
        room = self._room(pages) + pages.free * pages.size  # free pages inside the file take writes too
        problem = None
        if room < DISK_FULL_BELOW_BYTES:
            problem = f"disk full: {size_text(room)} left for the database in {self.path.parent}"
        return StorageSpace(
            database_bytes=self._file_size() + wal,
            wal_bytes=wal,
            reclaimable_bytes=pages.free * pages.size,
            free_bytes=room,
            auto_vacuum=pages.mode,
            problem=problem,
        )

    def disk_problem(self) -> str | None:
        return self.space().problem

    def enable_compaction(self) -> str | None:
        pages = self._pages()
        if pages.mode == "incremental":
            return None
        live = (pages.total - pages.free) * pages.size
        needed = 2 * live + 16 * _MB  # the copy VACUUM builds (temp), and the WAL that carries it back
        room = self._room(pages)
        advice = (
            f"{self.path} was made before incremental auto-vacuum: the space freed in it is reused but never given"
            f" back to the filesystem ({size_text(pages.total * pages.size)}, {size_text(live)} of it live)."
        )
        if live > CONVERT_MAX_LIVE_BYTES:
            return (
                f"{advice} Converting it copies the live data and holds writers meanwhile: run"
                " `posthog-customerio compact` once while nothing else runs on this data dir"
                f" (it needs about {size_text(needed)} free)"
            )
        if room < needed:
            return (
                f"{advice} Converting it needs about {size_text(needed)} free, {size_text(room)} is: free some space"
                " and restart, or run `posthog-customerio compact`"
            )
        started = time.monotonic()
        before = self._file_size()
        self.vacuum()
        log.info(
            "%s: turned on incremental auto-vacuum (one VACUUM, %.1f s): %s -> %s",
            self.path,
            time.monotonic() - started,
            size_text(before),
            size_text(self._file_size()),
        )
        return None

    def vacuum(self) -> None:
        """Rewrite the whole file with incremental auto-vacuum (``VACUUM``: it copies the live pages and holds
        writers meanwhile), then truncate the WAL."""
        with self.lock:
            self.conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self.conn.execute("VACUUM")
            self.checkpoint(wait_ms=_BUSY_TIMEOUT_MS)

    def compact(self, budget_s: float) -> int:
        """Give free pages back (``PRAGMA incremental_vacuum``), :data:`VACUUM_STEP_PAGES` per write transaction,
        the lock released between steps, for about ``budget_s`` (one step at least): once more than
        :data:`KEEP_FREE_BYTES` (or :data:`KEEP_FREE_SHARE` of the file) are free, down to half of that, over as
        many passes as it takes. Then, when done or when the WAL outgrew :data:`WAL_LIMIT_BYTES`, a ``TRUNCATE``
        checkpoint (it does not wait for other processes' reads: a busy one is tried again next pass). The file
        shrinks by the bytes returned once checkpointed."""
        deadline = time.monotonic() + budget_s
        pages = self._pages()
        free, freed = pages.free, 0
        keep = max(KEEP_FREE_BYTES // pages.size, int(pages.total * KEEP_FREE_SHARE))
        target = keep // 2
        if pages.mode == "incremental" and (free > keep or (self._shrinking and free > target)):
            self._shrinking = True  # until down to the target, over as many passes as it takes
            while free > target:  # one step at least, then as many as the budget allows
                with self.lock:
                    # a script runs the pragma to its end (execute() would give back one page)
                    self.conn.executescript(f"PRAGMA incremental_vacuum({min(VACUUM_STEP_PAGES, free - target)});")
                    left = int(self.conn.execute("PRAGMA freelist_count").fetchone()[0])
                if left >= free:
                    break
                freed += (free - left) * pages.size
                free = left
                if time.monotonic() >= deadline:
                    break
            if free <= target:
                self._shrinking = False
                self._checkpoint_owed = True  # the file shrinks when the WAL is checkpointed
        if self._checkpoint_owed or self._file_size("-wal") > WAL_LIMIT_BYTES:
            self._checkpoint_owed = not self.checkpoint()
        return freed

    def checkpoint(self, wait_ms: int = 100) -> bool:
        """``PRAGMA wal_checkpoint(TRUNCATE)``, waiting at most ``wait_ms`` for other connections; True when the
        WAL was emptied and truncated."""
        with self.lock:
            self.conn.execute(f"PRAGMA busy_timeout={wait_ms}")
            try:
                busy, _, _ = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                self.conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        return not busy

    def close(self) -> None:
        """Close the connection."""
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        with self.lock:
            self.conn.close()

    def describe(self) -> str:
        """Where the data lives."""
        return f"sqlite:///{self.path}"
