"""PostgreSQL (psycopg 3 pool): one database shared by any number of replicas.

Everything PostgreSQL-only lives here: versioned migrations run by one replica at a time
(advisory lock), per-person advisory locks while ingesting, and claims by one claimer at a time with
expiring leases. The request pacing replicas share runs on this pool (:mod:`..pacing.postgres`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence, Set
from pathlib import Path
from typing import IO, Any, TypeVar

from ..operations import Lane
from .base import SCAN_LIMIT, Claims, Hold, Picker, StorageSpace, Transaction, in_order
from .migrations import POSTGRES_MIGRATIONS, POSTGRES_ONLY_TABLES
from .rows import (
    CandidateRow,
    DeliveryRow,
    ExpiredRow,
    LaneRow,
    NewOperation,
    PayloadRow,
    QueuedRow,
    StreamPosition,
)
from .sql import SqlStorage, SqlTransaction, Statements

__all__ = [
    "DatabaseUnreachable",
    "LeaseClaims",
    "PostgresStorage",
    "check_reachable",
    "key_lock_id",
    "lease_margin",
    "retry_deadlocks",
    "safe_url",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

_STATEMENTS = Statements("%s")
_MIGRATION_LOCK = 7_274_135_001  # pg_advisory_lock key: one replica migrates at a time
_CLAIM_LOCK = 7_274_135_002  # pg_advisory_xact_lock key: one claimer at a time across replicas
_EXPIRY_LOCK = 7_274_135_003  # pg_advisory_xact_lock key: one expiry of anonymous events at a time
_PERSON_SYNC_LOCK = 7_274_135_004  # pg_try_advisory_lock key (session): one person sync pass at a time
_COHORT_SYNC_LOCK = 7_274_135_005  # the same for a cohort sync pass


#: a transaction PostgreSQL aborted to break a deadlock runs at most this many times in all
DEADLOCK_TRIES = 5


def retry_deadlocks(
    attempt: Callable[[], _T], tries: int = DEADLOCK_TRIES, pause: Callable[[float], object] = time.sleep
) -> _T:
    """``attempt()`` (one whole transaction), run again when PostgreSQL aborted it to break a deadlock
    (``DeadlockDetected``): the other transaction went on, this one starts over after a short random pause,
    up to ``tries`` times in all (then the error is raised). Nothing of an aborted transaction was written."""
    from psycopg.errors import DeadlockDetected

    for number in range(1, tries + 1):
        try:
            return attempt()
        except DeadlockDetected:
            if number >= tries:
                raise
            log.warning(
                "PostgreSQL aborted a transaction to break a deadlock: running it again (%d of %d)", number + 1, tries
            )
            pause(random.uniform(0.005, 0.05) * number)
    raise AssertionError("unreachable")  # pragma: no cover


def lease_margin(lease_s: float) -> float:
    """What a lease keeps beyond its request's deadline (a quarter of it, at least 1 s): time to renew the
    lease, start the request, and record the answer before another replica may claim the operations."""
    return max(1.0, lease_s / 4)


#: PostgreSQL's SQLSTATE for a full disk
_DISK_FULL = "53100"
#: how long a write refused for lack of room keeps ``/readyz`` unready (unless a write succeeds meanwhile)
DISK_FULL_MEMORY_S = 30.0


def key_lock_id(key: str) -> int:
    """A signed 64-bit advisory-lock id for a key (stable across processes)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


def _seqs(seqs: Iterable[int]) -> list[int]:
    """Distinct seqs, ascending (the order their rows are locked in)."""
    return sorted(set(seqs))


def _rows_in_order(where: str = "", skip_locked: bool = False) -> str:
    """A WHERE condition on ``outbox`` selecting the rows whose seq is in the array parameter (and meet
    ``where``, its parameters after the array's), locked in seq order: one consistent order for every
    statement that locks several rows, so two of them never wait for each other in a cycle (a deadlock).
    With ``skip_locked``, rows another transaction has locked are left out instead of waited for."""
    narrowing = f" AND {where}" if where else ""
    skip = " SKIP LOCKED" if skip_locked else ""
    return f"seq IN (SELECT seq FROM outbox WHERE seq = ANY(%s){narrowing} ORDER BY seq FOR UPDATE{skip})"


def _fetched(cursor: Any, page: int) -> Iterator[CandidateRow]:
    """Candidate rows of an open server-side cursor, ``page`` at a time."""
    while rows := cursor.fetchmany(page):
        yield from map(CandidateRow._make, rows)


class PostgresTransaction(SqlTransaction):
    """A transaction on a pooled connection; person keys locked with advisory locks."""

    #: whether operations were queued in it (a committed one shows the database has room for events again)
    queued_operations = False

    def insert_operations(self, rows: Iterable[NewOperation]) -> None:
        rows = list(rows)
        if rows:
            self.queued_operations = True
            super().insert_operations(rows)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run PostgreSQL SQL (``%s`` placeholders; none at all when there are no parameters)."""
        return self.conn.execute(sql, params or None)

    def _many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:
            with self.conn.cursor() as cursor:
                cursor.executemany(sql, rows)

    def lock_keys(self, keys: Iterable[str]) -> bool:
        """Transaction-scoped advisory locks on these keys, in a global order (no deadlocks)."""
        for lock_id in sorted({key_lock_id(key) for key in keys}):
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_id,))
        return True

    @contextlib.contextmanager
    def snapshot_candidates(
        self, lane: Lane | None = None, page: int = 1000, scan_limit: int = SCAN_LIMIT
    ) -> Iterator[Iterator[CandidateRow]]:
        """Candidate rows of the queue (or a lane) in order from one snapshot: a server-side cursor, read ``page``
        rows at a time.

        Separate reads would each see the commits made since the last one: a person's earlier operation,
        committed after the first read, would be hidden while a later one shows up in the next read.
        """
        with self.conn.cursor(name=f"claim_{uuid.uuid4().hex[:12]}") as cursor:
            cursor.execute(self.sql.snapshot_candidates[lane], (scan_limit,))
            yield _fetched(cursor, page)

    def queued_rows(self, person_key: str, kind: str, now: float) -> list[QueuedRow]:
        """As :meth:`SqlTransaction.queued_rows`, the rows locked until the transaction ends (a claim does
        not lease them while they are being replaced); a row another transaction has locked (a claim leasing
        it, a worker settling it) is left out, never waited for."""
        rows = self.conn.execute(self.sql.queued + " FOR UPDATE SKIP LOCKED", (person_key, kind, now)).fetchall()
        return [QueuedRow._make(row) for row in rows]

    def lane_rows(self, person_key: str, now: float) -> list[LaneRow]:
        rows = self.conn.execute(self.sql.lane_rows + " FOR UPDATE SKIP LOCKED", (person_key, now)).fetchall()
        return [LaneRow._make(row) for row in rows]

    def stream_positions(self, stream: str, parts: Sequence[int]) -> dict[int, StreamPosition]:
        rows = self.conn.execute(
            "SELECT stream, part, next_position, event_ts, end_at, updated_at FROM stream_positions"
            " WHERE stream = %s AND part = ANY(%s) ORDER BY part FOR UPDATE",
            (stream, sorted(set(parts))),
        ).fetchall()
        return {int(row[1]): StreamPosition._make(row) for row in rows}

    # Every statement that locks several outbox rows is one statement taking their locks in seq order
    # (:func:`_rows_in_order`): transactions locking rows of one batch (a lease, a renewal, an acknowledgement
    # deleting them, a release, an expiry, an adoption) wait for one another, never in a cycle.
    def lease(self, owner: str, until: float, seqs: Sequence[int]) -> set[int]:
        """Mark operations as claimed by ``owner`` until ``until`` (epoch seconds); returns the seqs
        leased: one deleted meanwhile, or locked by an ingestion replacing it, is not (never waited for)."""
        rows = self.conn.execute(
            f"UPDATE outbox SET lease_owner = %s, lease_until = %s WHERE {_rows_in_order(skip_locked=True)}"
            " RETURNING seq",
            (owner, until, _seqs(seqs)),
        ).fetchall()
        return {int(seq) for (seq,) in rows}

    def unlease(self, owner: str, seqs: Sequence[int]) -> None:
        """Drop ``owner``'s leases of these operations (a lease another replica holds now is left alone)."""
        self.conn.execute(
            f"UPDATE outbox SET lease_owner = NULL, lease_until = NULL WHERE {_rows_in_order('lease_owner = %s')}",
            (_seqs(seqs), owner),
        )

    def renew_leases(self, owner: str, until: float, seqs: Sequence[int]) -> set[int]:
        """Extend ``owner``'s leases of these operations to ``until``; returns the seqs it still held."""
        rows = self.conn.execute(
            f"UPDATE outbox SET lease_until = %s WHERE {_rows_in_order('lease_owner = %s')} RETURNING seq",
            (until, _seqs(seqs), owner),
        ).fetchall()
        return {int(seq) for (seq,) in rows}

    def delete_operations(self, seqs: Iterable[int]) -> None:
        """Remove operations from the queue: one statement, rows locked in seq order."""
        wanted = _seqs(seqs)
        if wanted:
            self.conn.execute(f"DELETE FROM outbox WHERE {_rows_in_order()}", (wanted,))

    def delete_unleased(self, seqs: Sequence[int], now: float) -> set[int]:
        wanted = _seqs(seqs)
        if not wanted:
            return set()
        rows = self.conn.execute(
            f"DELETE FROM outbox WHERE {_rows_in_order('(lease_until IS NULL OR lease_until <= %s)')} RETURNING seq",
            (wanted, now),
        ).fetchall()
        return {int(seq) for (seq,) in rows}

    def release_operations(self, error: str, seqs: Iterable[int], owner: str | None = None) -> None:
        """As :meth:`SqlTransaction.release_operations`, in one statement, rows locked in seq order."""
        wanted = _seqs(seqs)
        if wanted:
            self.conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = %s, lease_owner = NULL, lease_until = NULL"
                f" WHERE {_rows_in_order('(lease_owner IS NULL OR lease_owner = %s::text)')}",
                (error, wanted, owner),
            )

    def _delete_anonymous(self, seqs: Sequence[int], now: float) -> list[ExpiredRow]:
        """As :meth:`SqlTransaction._delete_anonymous`, in one statement, rows locked in seq order."""
        wanted = _seqs(seqs)
        if not wanted:
            return []
        where = _rows_in_order("kind = 'anonymous' AND (lease_until IS NULL OR lease_until <= %s)")
        rows = self.conn.execute(
            f"DELETE FROM outbox WHERE {where} RETURNING seq, person_key, kind, payload", (wanted, now)
        ).fetchall()
        return sorted(ExpiredRow(int(seq), key, kind, payload) for seq, key, kind, payload in rows)

    def record_deliveries(self, rows: Sequence[DeliveryRow], keep: int) -> None:
        """As SQLite's, the pruning in one statement: each key's cut-off found once by index (not per row)."""
        if not rows:
            return
        self._many(
            "INSERT INTO deliveries (person_key, seq, kind, action, name, outcome, at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            rows,
        )
        self.conn.execute(
            "DELETE FROM deliveries AS d USING (SELECT k, (SELECT id FROM deliveries WHERE person_key = k"
            " ORDER BY id DESC OFFSET %s LIMIT 1) AS cutoff FROM unnest(%s::text[]) AS k) AS c"
            " WHERE d.person_key = c.k AND d.id <= c.cutoff",
            (keep, list(dict.fromkeys(str(row.person_key) for row in rows))),
        )

    def lock_expiry(self) -> bool:
        """One replica expires anonymous events at a time (the lock lasts until this transaction ends), so
        two never drop the same excess twice. Never waited for: the expiry runs with the replica's claims
        held, and the replica expiring now enforces the same bounds."""
        return bool(self.conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (_EXPIRY_LOCK,)).fetchone()[0])


class LeaseClaims(Claims):
    """Claims across replicas: one claimer at a time (advisory lock), leases with expiry.

    A row leased by anyone (lease not expired) blocks its people, exactly like an in-flight row in
    one process. A live replica renews its leases every :attr:`heartbeat_s` (and before each request);
    a dead replica's leases expire at most ``lease_s`` after its last renewal and its rows are claimed again.
    """

    def __init__(self, db: PostgresStorage, lease_s: float) -> None:
        self.db = db
        self.lease_s = lease_s
        #: who holds a lease: host, pid and a random part
        self.owner: str = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        #: a request starts at most this long after its lease was renewed: it keeps half the margin
        self.renewal_fresh_s = lease_margin(lease_s) / 2
        #: a live replica renews every lease it holds this often (:class:`~...delivery.Deliverer`'s heartbeat):
        #: a claim outlives any wait while its replica lives; a dead replica's leases run out after ``lease_s``
        self.heartbeat_s = lease_s / 3

    def claim(
        self, pick: Picker, in_flight: Set[int], hold: Hold, lane: Lane | None = None
    ) -> tuple[list[CandidateRow], list[CandidateRow], dict[int, PayloadRow]]:
        """Pick from one snapshot of the queue (taken after the claim lock), then lease what was chosen.

        A row counts as taken while leased (here or by a replica) or in flight in this process, even
        past its lease: a later operation of its person is never claimed before it settles. A chosen
        row that could not be leased (deleted since the snapshot, or locked by an ingestion adopting
        anonymous events) is left out, and so is every later chosen row sharing one of its keys.
        """

        def attempt() -> tuple[list[CandidateRow], list[CandidateRow], dict[int, PayloadRow]]:
            with self.db._transaction() as tx:
                tx.execute("SELECT pg_advisory_xact_lock(%s)", (_CLAIM_LOCK,))
                now = time.time()
                # person work waiting on an anonymous event another replica sends now waits for it
                waiting_on = tx.leased_anonymous_keys(now) if lane == "person" else set()

                def taken(row: CandidateRow) -> bool:
                    leased = row.lease_until is not None and row.lease_until > now
                    return row.seq in in_flight or leased or (bool(waiting_on) and not waiting_on.isdisjoint(row.keys))

                with tx.snapshot_candidates(lane) as rows:
                    chosen, oversized = pick(rows, taken)
                leased = tx.lease(self.owner, now + self.lease_s, [row.seq for row in chosen]) if chosen else set()
                # read once leased (no ingestion changes a leased row): an operation put in event-time order since
                # the snapshot (:meth:`~..outbox.Outbox.reorder`) is sent as it is now
                payloads = tx.payloads([*leased, *(row.seq for row in oversized)]) if leased or oversized else {}
                kept = in_order(chosen, leased & payloads.keys())
                if len(kept) < len(leased):
                    tx.unlease(self.owner, sorted(leased - {row.seq for row in kept}))
            return kept, oversized, payloads

        kept, oversized, payloads = retry_deadlocks(attempt)
        hold(kept)  # leased (committed): an adoption leaves them alone from now on
        kept_seqs = {row.seq for row in (*kept, *oversized)}
        return kept, oversized, {seq: value for seq, value in payloads.items() if seq in kept_seqs}

    def give_back(self, seqs: Sequence[int]) -> None:
        def attempt() -> None:
            with self.db._transaction() as tx:
                tx.unlease(self.owner, seqs)

        if seqs:
            retry_deadlocks(attempt)

    def renew(self, seqs: Sequence[int]) -> set[int]:
        """Lease these operations for another ``lease_s`` if this replica still holds them.

        Under the claim lock: a claim that saw one of them expired cannot lease it between this check
        and this renewal. A lease that expired unseen is taken back (nobody else has sent it).
        """
        if not seqs:
            return set()

        def attempt() -> set[int]:
            with self.db._transaction() as tx:
                tx.execute("SELECT pg_advisory_xact_lock(%s)", (_CLAIM_LOCK,))
                return tx.renew_leases(self.owner, time.time() + self.lease_s, seqs)

        return set(seqs) - retry_deadlocks(attempt)

    def bound_timeout(self, timeout_s: float) -> float:
        """The request deadline: at most the lease minus :func:`lease_margin` (leases are renewed right
        before each request), so a lease never expires while its request can still be answered."""
        margin = lease_margin(self.lease_s)
        bound = self.lease_s - margin
        if timeout_s > bound:
            log.info(
                "each request to Customer.io ends within %g s: CUSTOMERIO_TIMEOUT_S=%g is bounded by"
                " LEASE_S=%g minus a %g s margin (raise LEASE_S for a longer deadline)",
                bound,
                timeout_s,
                self.lease_s,
                margin,
            )
        return min(timeout_s, bound)


class PostgresStorage(SqlStorage):
    """A psycopg 3 connection pool on a PostgreSQL database shared by replicas.

    Migrations are versioned (``schema_migrations``), idempotent, and run by one replica at a time
    under an advisory lock. Ingestions commit side by side on pooled connections (no group commit).
    """

    dialect = "postgresql"
    group_commit = False
    own_tables = POSTGRES_ONLY_TABLES
    sql = _STATEMENTS

    def __init__(self, url: str, *, schema: str | None = None, pool_size: int = 8) -> None:
        from psycopg_pool import ConnectionPool

        self.url = url
        self.schema_name = schema
        self.lock = threading.RLock()  # API parity with SQLite; PostgreSQL does its own locking
        #: when this process's last write failed for lack of room, and PostgreSQL's message (:meth:`disk_problem`)
        self._disk_full: tuple[float, str] | None = None
        options = {"options": f"-c search_path={schema}"} if schema else {}
        self.pool: Any = ConnectionPool(url, min_size=1, max_size=pool_size, kwargs=options, open=False)
        self.pool.open(wait=True, timeout=15)
        self._migrate()

    def _migrate(self) -> None:
        with self.pool.connection() as conn:
            if self.schema_name:
                conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema_name}"')
            conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
            try:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations"
                    " (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                )
                done = {version for (version,) in conn.execute("SELECT version FROM schema_migrations")}
                for number, script in enumerate(POSTGRES_MIGRATIONS, start=1):
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

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[PostgresTransaction]:
        tx: PostgresTransaction | None = None
        try:
            with self.pool.connection() as conn, conn.transaction():
                tx = PostgresTransaction(conn, self.sql)
                yield tx
        except Exception as exc:
            if getattr(exc, "sqlstate", None) == _DISK_FULL:  # remembered for /readyz (:meth:`disk_problem`)
                diag = getattr(exc, "diag", None)
                self._disk_full = (time.monotonic(), str(getattr(diag, "message_primary", None) or exc)[:200])
            raise
        if self._disk_full is not None and tx is not None and tx.queued_operations:  # room for events again
            self._disk_full = None

    def transaction(self) -> contextlib.AbstractContextManager[Transaction]:
        """A transaction on a pooled connection, committed on success."""
        return self._transaction()

    def transact(self, work: Callable[[Transaction], _T]) -> _T:
        """As :meth:`Storage.transact`: a transaction aborted by a deadlock runs again (:func:`retry_deadlocks`)."""

        def attempt() -> _T:
            with self._transaction() as tx:
                return work(tx)

        return retry_deadlocks(attempt)

    @contextlib.contextmanager
    def reading(self) -> Iterator[Transaction]:
        """A pooled connection for reads."""
        with self.pool.connection() as conn:
            yield PostgresTransaction(conn, self.sql)

    @contextlib.contextmanager
    def group(self) -> Iterator[None]:
        """Nothing to share: each transaction commits on its own pooled connection."""
        yield

    def claims(self, lease_s: float) -> Claims:
        return LeaseClaims(self, lease_s)

    def disk_problem(self) -> str | None:
        """``disk full: ...`` while this process's last write failed for lack of room (SQLSTATE 53100) less than
        :data:`DISK_FULL_MEMORY_S` ago and none succeeded since: the server's free space is not visible from
        here, and a small probe write can still fit in a page where a batch of events does not."""
        failed = self._disk_full
        if failed is None or time.monotonic() - failed[0] > DISK_FULL_MEMORY_S:
            return None
        return f"disk full: {failed[1]} (the last write, {time.monotonic() - failed[0]:.0f} s ago)"

    def take_delivery_lock(self, data_dir: Path) -> IO[str] | None:
        """Any number of replicas deliver (leases keep them apart)."""
        return None

    def person_sync_lock(self) -> contextlib.AbstractContextManager[bool]:
        """A session-level advisory lock, tried without waiting, held on one pooled connection for the whole
        block (a pass spans many transactions). Committed at once, so the connection is never left idle in a
        transaction; released at the end, or by PostgreSQL when the replica's connection goes."""
        return self._advisory_lock(_PERSON_SYNC_LOCK)

    def cohort_sync_lock(self) -> contextlib.AbstractContextManager[bool]:
        """As :meth:`person_sync_lock`, with the cohort sync's own key."""
        return self._advisory_lock(_COHORT_SYNC_LOCK)

    @contextlib.contextmanager
    def _advisory_lock(self, key: int) -> Iterator[bool]:
        with self.pool.connection() as conn:
            held = bool(conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0])
            conn.commit()
            try:
                yield held
            finally:
                if held:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
                    conn.commit()

    def schema(self) -> dict[str, dict[str, str]]:
        with self.reading() as tx:
            rows = tx.execute(
                "SELECT table_name, column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name <> 'schema_migrations'"
                " ORDER BY table_name, ordinal_position"
            ).fetchall()
        found: dict[str, dict[str, str]] = {}
        for table, column, kind in rows:
            found.setdefault(str(table), {})[str(column)] = str(kind)
        return found

    def space(self) -> StorageSpace:
        """The outbox's size and this schema's tables' (indexes and TOAST included); the server's free space is
        not visible from here (a full disk shows as SQLSTATE 53100 on a write)."""
        with self.reading() as tx:
            outbox, total = tx.execute(
                "SELECT pg_total_relation_size(to_regclass('outbox')),"
                " (SELECT COALESCE(SUM(pg_total_relation_size(oid)), 0) FROM pg_class"
                "  WHERE relnamespace = current_schema()::regnamespace AND relkind = 'r')"
            ).fetchone()
        return StorageSpace(database_bytes=int(total), outbox_bytes=None if outbox is None else int(outbox))

    def close(self) -> None:
        """Close the pool."""
        self.pool.close()

    def describe(self) -> str:
        """Where the data lives (without the password)."""
        from psycopg.conninfo import conninfo_to_dict

        info = conninfo_to_dict(self.url)
        host, port, name = info.get("host", ""), info.get("port", 5432), info.get("dbname", "")
        return f"postgresql://{info.get('user', '')}@{host}:{port}/{name}"


#: seconds one connection attempt may take before ``serve`` gives up on the database (libpq's minimum is 2)
CONNECT_TIMEOUT_S = 3


class DatabaseUnreachable(RuntimeError):
    """PostgreSQL refused or did not answer a connection: one line naming the URL without its password."""


def safe_url(url: str) -> str:
    """``postgresql://user@host:port/db``: the URL without password or options."""
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(url)
    user, host, port, name = info.get("user", ""), info.get("host", ""), info.get("port", 5432), info.get("dbname", "")
    return f"postgresql://{user}@{host}:{port}/{name}"


def check_reachable(url: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """One connection attempt, bounded by ``timeout_s`` per address (the pool would retry for 15 s)."""
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=max(2, int(timeout_s))).close()
    except psycopg.Error as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = lines[0] if lines else type(exc).__name__
        password = psycopg.conninfo.conninfo_to_dict(url).get("password")
        if password:
            reason = reason.replace(str(password), "***")
        raise DatabaseUnreachable(f"cannot connect to PostgreSQL at {safe_url(url)}: {reason}") from None
