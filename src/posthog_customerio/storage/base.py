"""The storage interface: what the pipeline, outbox, runtime, status page and server need from a database.

A :class:`Storage` opens :class:`Transaction` objects; a transaction offers the reads and writes
of person state, the outbox, dead letters and the status table as methods (the SQL lives in the
backend). Claiming operations for delivery is a per-backend :class:`Claims` strategy.
"""

from __future__ import annotations

import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence, Set
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

from ..operations import Lane
from .activity_sql import ActivityRow, ActivitySettle
from .rows import (
    CandidateRow,
    CohortMemberRow,
    CohortSyncRow,
    DeadLetterRow,
    DeliveryRow,
    ExpiredRow,
    LaneRow,
    NewDeadLetter,
    NewOperation,
    PayloadRow,
    PersonRow,
    QueuedRow,
    QueueEntryRow,
    ReplicaRow,
    RequeueRow,
    StoredStatus,
    StreamPosition,
)

__all__ = [
    "EXPIRED_KEY",
    "Claims",
    "DeliveryLockError",
    "Hold",
    "Picker",
    "Storage",
    "StorageSnapshot",
    "StorageSpace",
    "Transaction",
    "size_text",
]

#: picks deliverable candidates given a "taken" test: ``(chosen, oversized)`` (see :mod:`..outbox`)
Picker = Callable[
    [Iterable[CandidateRow], Callable[[CandidateRow], bool]], tuple[list[CandidateRow], list[CandidateRow]]
]
_T = TypeVar("_T")

#: marks claimed rows as in flight in this process (:meth:`~..outbox.Outbox.claim`); see :meth:`Claims.claim`
Hold = Callable[[Sequence[CandidateRow]], None]


#: the ``status_snapshot`` counters of the anonymous events expired (``anonymous_expired:age``, ``...:count``)
EXPIRED_KEY = "anonymous_expired"


class DeliveryLockError(RuntimeError):
    """Another process already delivers from this data directory."""


@dataclass(frozen=True, slots=True)
class StorageSnapshot:
    """The stored figures of the status page and the metrics, read in one pass."""

    #: operations waiting (including those in flight)
    depth: int
    #: enqueue time of the oldest waiting operation (``None`` when empty)
    oldest_enqueued_at: float | None
    #: operations in the dead-letter table
    dead_letters: int
    #: the oldest dead letters (:meth:`Transaction.dead_letter_rows`)
    dead_letter_rows: list[DeadLetterRow]
    #: distinct_ids remembered, when asked for (counting a big table takes a while)
    persons: int | None
    #: anonymous events waiting (part of ``depth``)
    anonymous_backlog: int = 0
    #: enqueue time of the first anonymous event in the queue (``None`` when there is none)
    anonymous_oldest_enqueued_at: float | None = None
    #: anonymous events dropped by the backlog bounds, all replicas, all time: reason -> count
    anonymous_expired: dict[str, int] = field(default_factory=dict)
    #: Customer.io's message activity (:mod:`..activity`): stored rows by state, the replicas' totals, the
    #: oldest unplaced and dead rows
    activity_states: dict[str, int] = field(default_factory=dict)
    activity_totals: dict[str, int] = field(default_factory=dict)
    activity_waiting: list[ActivityRow] = field(default_factory=list)


def size_text(size: float | None) -> str:
    """``1.2 MB``, ``340.0 kB``, ``12 B`` (decimal units, as ``df -H``); ``?`` for ``None``."""
    if size is None:
        return "?"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(size) >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{int(size)} B"


@dataclass(frozen=True, slots=True)
class StorageSpace:
    """What the database takes on disk (``status``, ``/api/status``, ``/metrics``); ``None``: not known here."""

    #: the database's files (SQLite: the file and its WAL; PostgreSQL: this schema's tables with their indexes)
    database_bytes: int | None
    #: SQLite's write-ahead log (part of ``database_bytes``)
    wal_bytes: int | None = None
    #: free pages inside the SQLite file: given back to the filesystem by incremental vacuum
    reclaimable_bytes: int | None = None
    #: the outbox table with its indexes (PostgreSQL)
    outbox_bytes: int | None = None
    #: free space left to the database: SQLite's filesystem (or ``max_page_count``)
    free_bytes: int | None = None
    #: SQLite's ``auto_vacuum`` mode: ``incremental`` (given back as it frees), ``none`` (an older file), ``full``
    auto_vacuum: str | None = None
    #: ``disk full: ...`` when the database has (nearly) no room left
    problem: str | None = None


class Transaction(Protocol):
    """A transaction (or a read) on one connection; every write commits with it."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run backend-native SQL (its own placeholders); for tests and tools, not the service."""

    # -- person state (columns: see ``PERSON_COLUMNS`` in :mod:`.sql`) --
    def select_persons(self, distinct_ids: Sequence[str]) -> list[PersonRow]:
        """The stored rows of these distinct_ids (any order; unknown ones are absent)."""

    def upsert_persons(self, rows: Iterable[PersonRow]) -> None:
        """Insert or replace person rows."""

    def count_persons(self) -> int:
        """How many distinct_ids are remembered."""

    def lock_keys(self, keys: Iterable[str]) -> bool:
        """Serialise writers of these person keys until the transaction ends.

        True when another process may have changed their state meanwhile (re-read it).
        """

    # -- outbox --
    def insert_operations(self, rows: Iterable[NewOperation]) -> None:
        """Append operations at the back of the queue."""

    def queued_rows(self, person_key: str, kind: str, now: float) -> list[QueuedRow]:
        """A key's queued operations of ``kind`` not leased at ``now``, in queue order, to be replaced in this
        transaction (PostgreSQL: locked until it ends; a row another transaction has locked is left out)."""

    def delete_operations(self, seqs: Iterable[int]) -> None:
        """Remove operations from the queue."""

    def delete_unleased(self, seqs: Sequence[int], now: float) -> set[int]:
        """Remove these operations unless leased at ``now``; returns the seqs this statement really removed."""

    def lane_rows(self, person_key: str, now: float) -> list[LaneRow]:
        """A person's queued operations that may change places in this transaction (not anonymous, waiting on no
        other key, with an event time, not leased at ``now``), in queue order (PostgreSQL: locked until it
        ends; a row another transaction has locked is left out)."""

    def rewrite_lane(self, rows: Sequence[tuple[int, LaneRow]]) -> None:
        """Put each row's operation at the given seq (its place), keeping everything else of it."""

    def stream_positions(self, stream: str, parts: Sequence[int]) -> dict[int, StreamPosition]:
        """How far these partitions of ``stream`` were stored and read (PostgreSQL: locked until the transaction
        ends, so two consumers of a partition during a rebalance never both store the same messages)."""

    def save_stream_positions(self, rows: Iterable[StreamPosition]) -> None:
        """Advance partitions' positions and event times (never back)."""

    def head_order_ts(self) -> tuple[bool, float | None]:
        """Whether person work is queued, and the event time of the first (``None``: it has none)."""

    def stream_progress(self, fresh_after: float) -> list[tuple[float, float | None]]:
        """Each partition updated after ``fresh_after``: the newest event time read from it, and since when it is
        read to its end (``None``: it is not)."""

    def candidates(
        self, after_seq: int, limit: int, lane: Lane | None = None, unleased: bool = False
    ) -> list[CandidateRow]:
        """Queue rows after ``after_seq`` in order, without payloads: of the whole queue, or of one lane
        (an anonymous event is left out of its lane while person work of its key is queued before it);
        ``unleased``: less the rows leased now."""

    def leased_anonymous_keys(self, now: float) -> set[str]:
        """The person keys of anonymous events leased at ``now`` (PostgreSQL replicas; none on SQLite)."""

    def payloads(self, seqs: Sequence[int]) -> dict[int, PayloadRow]:
        """The payload and kind of these queued operations (gone ones are absent)."""

    def release_operations(self, error: str, seqs: Iterable[int], owner: str | None = None) -> None:
        """Count a failed attempt with its error and drop the lease, on rows unleased or leased by ``owner``
        (a row another replica leased since is left alone)."""

    def outbox_depth(self) -> int:
        """How many operations wait."""

    def person_work_depth(self) -> int:
        """How many operations wait that are not anonymous events (what ``OUTBOX_MAX_QUEUED`` bounds)."""

    def unleased_person_work(self, up_to: int) -> int:
        """How many operations that are not anonymous events wait unleased, counted up to ``up_to`` (a cheap
        read: whether a claim now would be a trickle)."""

    def outbox_empty(self, held_after: float | None = None, gated: tuple[float, float, float] | None = None) -> bool:
        """Whether nothing waits (no count); with ``held_after``, anonymous operations enqueued after it
        (still held by ``ANONYMOUS_HOLD_S``) do not count; with ``gated`` (person and anonymous event-time bounds,
        an enqueue time), nor do operations whose event time is after their bound and that were enqueued after
        that time (held by the event-time gate, :mod:`..ordering`)."""

    def oldest_enqueued_at(
        self, held_after: float | None = None, gated: tuple[float, float, float] | None = None
    ) -> float | None:
        """Enqueue time of the first operation in the queue; with ``held_after`` / ``gated``, of the first one
        not held (as :meth:`outbox_empty`)."""

    # -- dead letters --
    def insert_dead_letters(self, rows: Iterable[NewDeadLetter]) -> None:
        """Add dead letters."""

    def dead_letter_rows(self, limit: int | None) -> list[DeadLetterRow]:
        """Dead letters, oldest first."""

    def dead_letter_count(self) -> int:
        """How many operations are dead-lettered."""

    def requeue_rows(self, ids: Sequence[int] | None) -> list[RequeueRow]:
        """What re-queueing these dead letters (all when ``None``) needs, by id."""

    def delete_dead_letters(self, ids: Iterable[int]) -> None:
        """Remove dead letters."""

    # -- the operator's view (people.py, status.py) --
    def dead_letter_ids(self, seqs: Sequence[int]) -> dict[int, int]:
        """seq -> dead-letter id of the dead letters of these operations."""

    def dead_letter_row(self, letter_id: int) -> DeadLetterRow | None:
        """One dead letter, ``None`` when there is none."""

    def save_replica(self, replica: str, started_at: float, seen_at: float, stopped: bool, status: str) -> None:
        """Insert or update one replica's heartbeat and counters (a JSON document)."""

    def replica_rows(self) -> list[ReplicaRow]:
        """Every replica remembered."""

    def prune_replicas(self, seen_before: float) -> None:
        """Forget replicas not seen since ``seen_before``."""

    def record_deliveries(self, rows: Sequence[DeliveryRow], keep: int) -> None:
        """Append settled operations; keep each person's newest ``keep``."""

    def deliveries_of(self, keys: Sequence[str], limit: int) -> list[DeliveryRow]:
        """The settled operations of these person keys, newest first."""

    def persons_by_email(self, email: str, limit: int) -> list[PersonRow]:
        """Person rows whose email is ``email`` (case-insensitive)."""

    def persons_merged_into(self, keys: Sequence[str]) -> list[PersonRow]:
        """Person rows merged into one of these distinct_ids."""

    def queued_of(self, keys: Sequence[str], limit: int) -> list[QueueEntryRow]:
        """The queued operations of these person keys, in queue order."""

    def dead_letters_of(self, keys: Sequence[str], limit: int) -> list[DeadLetterRow]:
        """The dead letters of these person keys, newest first."""

    # -- the anonymous backlog (:mod:`..backlog`) --
    def anonymous_backlog(self) -> tuple[int, float | None]:
        """How many anonymous events wait, and the enqueue time of the first in the queue (``None``: none)."""

    def expire_anonymous(
        self, before: float | None, keep: int | None, now: float, exclude: Set[int], limit: int
    ) -> dict[str, list[ExpiredRow]]:
        """Delete up to ``limit`` queued anonymous events, oldest first: those enqueued before ``before``
        (reason ``"age"``), then all but the newest ``keep`` (reason ``"count"``); ``None`` skips a bound.

        Never a row leased at ``now`` nor one whose seq is in ``exclude``, never another kind. Returns the
        rows really deleted by this transaction, by reason: a row another transaction deleted first is not
        returned, and with PostgreSQL one replica expires at a time (while another does, nothing is deleted
        here: that one enforces the bounds).
        """

    def add_counters(self, key: str, counts: dict[str, int], at: float) -> None:
        """Add ``counts`` (name -> n) to the counters stored in ``status_snapshot`` as ``key:name``: one
        atomic increment each, committed with this transaction (concurrent adds are never lost)."""

    def counters(self, key: str) -> dict[str, int]:
        """The counters :meth:`add_counters` stored under ``key``: name -> n (empty when none)."""

    # -- PostHog cohorts (sync-cohorts) --
    def cohort_sync(self, cohort_id: str) -> CohortSyncRow | None:
        """A synced cohort's row (None: never synced)."""

    def cohort_syncs(self) -> list[CohortSyncRow]:
        """Every synced cohort's row, by cohort id."""

    def save_cohort_sync(self, row: CohortSyncRow) -> None:
        """Insert or replace a cohort's row."""

    def cohort_members(self, cohort_id: str, target: str, person_ids: Sequence[str]) -> dict[str, CohortMemberRow]:
        """The stored members of a cohort's target among ``person_ids``, by person id."""

    def upsert_cohort_members(self, cohort_id: str, target: str, rows: Iterable[CohortMemberRow]) -> None:
        """Insert members, or mark known ones as seen by the row's pass."""

    def stale_cohort_members(self, cohort_id: str, target: str, before_pass: int, limit: int) -> list[CohortMemberRow]:
        """Up to ``limit`` members the pass ``before_pass`` did not see (left the cohort), oldest person id first."""

    def cohort_members_seen(
        self, cohort_id: str, target: str, pass_no: int, distinct_ids: Sequence[str]
    ) -> list[CohortMemberRow]:
        """The members ``pass_no`` saw whose profile distinct_id is one of ``distinct_ids``."""

    def delete_cohort_members(self, cohort_id: str, target: str, person_ids: Sequence[str]) -> None:
        """Forget members of a cohort's target."""

    def count_cohort_members(self, cohort_id: str, target: str, pass_no: int | None = None) -> int:
        """A target's stored members (those seen by ``pass_no`` when given)."""

    # -- Customer.io's message activity on its way to PostHog (:mod:`..activity`; SQL in :mod:`.activity_sql`) --
    def insert_activity(self, event_id: str, payload: str, cio_id: str | None, now: float) -> bool:
        """Store a new activity, queued and due now; False when ``event_id`` is stored already (a retry)."""

    def claim_activities(
        self, states: Sequence[str], owner: str, now: float, lease_until: float, limit: int
    ) -> list[ActivityRow]:
        """Up to ``limit`` rows in ``states``, due and not leased at ``now``, oldest first, leased to ``owner``
        until ``lease_until`` (PostgreSQL: rows another transaction is claiming are skipped)."""

    def settle_activities(self, owner: str, rows: Sequence[ActivitySettle]) -> None:
        """Write each attempt's outcome and end its lease (unless another owner leased the row since)."""

    def activity_counts(self) -> dict[str, int]:
        """Stored activities by state."""

    def activity_rows(self, states: Sequence[str], limit: int) -> list[ActivityRow]:
        """Stored activities in ``states``, oldest first."""

    def requeue_activities(self, states: Sequence[str], event_ids: Sequence[str] | None, now: float) -> int:
        """Queue again (due now) the activities in ``states``, only ``event_ids`` when given; how many."""

    def prune_activities(self, settled_before: float) -> int:
        """Forget activities captured before ``settled_before``; how many."""

    def placed_by_cio_id(self, cio_id: str) -> str | None:
        """The distinct_id an earlier activity of this Customer.io ``cio_id`` was placed on."""


class Claims(ABC):
    """How one backend hands operations to delivery workers without two taking the same person."""

    #: who holds this process's leases (``None`` where claims are not leases)
    owner: str | None = None
    #: a claim renewed (or made) less than this long ago needs no renewal before a request
    renewal_fresh_s: float = math.inf
    #: while delivery runs, renew every claim this process holds this often (``None``: claims never expire)
    heartbeat_s: float | None = None

    @abstractmethod
    def claim(
        self, pick: Picker, in_flight: Set[int], hold: Hold, lane: Lane | None = None
    ) -> tuple[list[CandidateRow], list[CandidateRow], dict[int, PayloadRow]]:
        """Run ``pick`` over the candidates of the queue or of one ``lane``; returns ``(chosen, oversized,
        payloads)``, ``chosen`` only the rows really taken (each with its payload).

        ``in_flight`` are the seqs this process has handed out and not settled. In the person lane, work
        waiting on an anonymous event leased by another process counts as taken. ``hold`` is called with
        the rows taken once no ingestion can adopt them any more without seeing them taken (an identify
        adopting a visitor's queued events leaves the taken ones alone: each is either adopted or sent).
        """

    def give_back(self, seqs: Sequence[int]) -> None:
        """Operations handed out but not attempted return to the queue (nothing to do by default)."""
        return None

    def renew(self, seqs: Sequence[int]) -> set[int]:
        """Extend the claim on these operations right before a request; returns those no longer held
        (another process may have them now). Claims that never expire lose nothing (the default)."""
        return set()

    def bound_timeout(self, timeout_s: float) -> float:
        """An HTTP timeout that ends before a claim could pass to someone else."""
        return timeout_s


class Storage(ABC):
    """A database holding person state, the outbox, dead letters and status, migrated at open."""

    #: ``"sqlite"`` or ``"postgresql"``
    dialect: str
    #: concurrent ingestions gain from sharing one commit (:class:`~..ingestion.GroupCommitter`)
    group_commit: bool
    #: tables this backend has that the other does not
    own_tables: frozenset[str] = frozenset()
    lock: threading.RLock

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Transaction]:
        """A write transaction, committed when the block ends without an exception."""

    def transact(self, work: Callable[[Transaction], _T]) -> _T:
        """``work`` in a :meth:`transaction`, committed; returns what it returned. Where the database may abort
        a transaction to break a deadlock (PostgreSQL), ``work`` runs again in a new one (a few times): it
        must have no effect outside the transaction before it returns."""
        with self.transaction() as tx:
            return work(tx)

    @abstractmethod
    def reading(self) -> AbstractContextManager[Transaction]:
        """A connection for reads."""

    def committed_reading(self) -> AbstractContextManager[Transaction]:
        """A connection for reads of what is committed that need not wait for a writer of this process (a claim's
        scan of the queue); by default :meth:`reading`."""
        return self.reading()

    @abstractmethod
    def group(self) -> AbstractContextManager[None]:
        """One commit for the :meth:`transaction` blocks this thread opens inside it (each rolls back alone)."""

    @abstractmethod
    def claims(self, lease_s: float) -> Claims:
        """This backend's claim strategy (``lease_s``: how long a claim lasts where claims expire)."""

    @abstractmethod
    def take_delivery_lock(self, data_dir: Path) -> IO[str] | None:
        """Become the one deliverer where only one may run (raises :class:`DeliveryLockError`); the
        handle is held until closed. ``None`` where any number may deliver."""

    @abstractmethod
    def person_sync_lock(self) -> AbstractContextManager[bool]:
        """Try to become, for the block, the one process running a person sync pass on this database (never
        waits): the block gets True when this process holds the lock, False when another one does."""

    @abstractmethod
    def cohort_sync_lock(self) -> AbstractContextManager[bool]:
        """As :meth:`person_sync_lock`, for a cohort sync pass (``sync-cohorts``): one process at a time."""

    @abstractmethod
    def schema(self) -> dict[str, dict[str, str]]:
        """Table -> column -> declared type, as migrated (backend bookkeeping tables left out)."""

    @abstractmethod
    def close(self) -> None:
        """Close the connections."""

    @abstractmethod
    def describe(self) -> str:
        """Where the data lives (no secrets)."""

    @abstractmethod
    def snapshot(self, dead_letters: int, persons: bool) -> StorageSnapshot:
        """Queue depth, oldest age, dead letters (count and the oldest ``dead_letters``) and, with
        ``persons``, the people count: one read."""

    @abstractmethod
    def save_status(self, key: str, value: str, at: float) -> None:
        """Store a status document under ``key``."""

    @abstractmethod
    def load_status(self, key: str) -> StoredStatus | None:
        """A stored status document and when it was stored."""

    @abstractmethod
    def probe_write(self) -> None:
        """A small write that proves the database takes writes now (readiness)."""

    # -- disk (:mod:`..disk`); PostgreSQL's autovacuum gives space back itself: nothing to do by default --
    def enable_compaction(self) -> str | None:
        """Make sure freed space can be given back (SQLite: incremental auto-vacuum, converting an older file once
        when that is quick); a warning to log when it cannot be done now, else ``None``."""
        return None

    def compact(self, budget_s: float) -> int:
        """Give free space inside the database back to the filesystem, for at most about ``budget_s`` in short
        steps (delivery goes on between them); the bytes given back."""
        return 0

    def space(self) -> StorageSpace:
        """What the database takes on disk and, where known, the room left."""
        return StorageSpace(database_bytes=None)

    def disk_problem(self) -> str | None:
        """``disk full: ...`` when the database has (nearly) no room left, as far as this process can see."""
        return None


#: a claim looks at most this many queued rows
SCAN_LIMIT = 50_000


def in_order(chosen: Sequence[CandidateRow], taken: Set[int]) -> list[CandidateRow]:
    """The rows of ``chosen`` in ``taken`` (leased, or still queued) that no row before them left out
    shares a key with (queue order): a person's later operation never goes without an earlier one."""
    kept: list[CandidateRow] = []
    blocked: set[str] = set()
    for row in chosen:
        keys = set(row.keys)
        if row.seq not in taken or keys & blocked:
            blocked |= keys
        else:
            kept.append(row)
    return kept


def pages(
    fetch: Callable[[int, int], list[CandidateRow]], page: int = 1000, scan_limit: int = SCAN_LIMIT
) -> Iterator[CandidateRow]:
    """Candidate rows in queue order, ``page`` at a time, up to ``scan_limit`` rows (``fetch(after, limit)``)."""
    last = 0
    for _ in range(0, scan_limit, page):
        rows = fetch(last, page)
        yield from rows
        if len(rows) < page:
            return
        last = rows[-1].seq
