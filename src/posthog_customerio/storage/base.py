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
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

__all__ = [
    "Claims",
    "DeliveryLockError",
    "Picker",
    "Row",
    "Storage",
    "StorageSnapshot",
    "Transaction",
]

#: one database row, columns in the order the method documents
Row = tuple[Any, ...]
#: picks deliverable candidates given a "taken" test: ``(chosen, oversized)`` (see :mod:`..outbox`)
Picker = Callable[[Iterable[Row], Callable[[Row], bool]], tuple[list[Row], list[Row]]]


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
    #: the oldest dead letters (columns of :meth:`Transaction.dead_letter_rows`)
    dead_letter_rows: list[Row]
    #: distinct_ids remembered, when asked for (counting a big table takes a while)
    persons: int | None


class Transaction(Protocol):
    """A transaction (or a read) on one connection; every write commits with it."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run backend-native SQL (its own placeholders); for tests and tools, not the service."""

    # -- person state (columns: see ``PERSON_COLUMNS`` in :mod:`.sql`) --
    def select_persons(self, distinct_ids: Sequence[str]) -> list[Row]:
        """The stored rows of these distinct_ids (any order; unknown ones are absent)."""

    def upsert_persons(self, rows: Iterable[Row]) -> None:
        """Insert or replace person rows."""

    def count_persons(self) -> int:
        """How many distinct_ids are remembered."""

    def lock_keys(self, keys: Iterable[str]) -> bool:
        """Serialise writers of these person keys until the transaction ends.

        True when another process may have changed their state meanwhile (re-read it).
        """

    # -- outbox --
    def insert_operations(self, rows: Iterable[Row]) -> None:
        """Append ``(person_key, payload, size, enqueued_at, after_keys)`` rows at the back of the queue."""

    def queued_rows(self, person_key: str, kind: str) -> list[Row]:
        """``(seq, payload, enqueued_at, lease_until, after_keys)`` of a key's queued operations of
        ``kind``, in queue order."""

    def delete_operations(self, seqs: Iterable[int]) -> None:
        """Remove operations from the queue."""

    def candidates(self, after_seq: int, limit: int) -> list[Row]:
        """Queue rows after ``after_seq`` in order, without payloads:
        ``(seq, person_key, size, attempts, enqueued_at, after_keys, lease_owner, lease_until)``."""

    def payloads(self, seqs: Sequence[int]) -> dict[int, tuple[str, str]]:
        """``(payload, kind)`` of these queued operations (gone ones are absent)."""

    def release_operations(self, error: str, seqs: Iterable[int], owner: str | None = None) -> None:
        """Count a failed attempt with its error and drop the lease, on rows unleased or leased by ``owner``
        (a row another replica leased since is left alone)."""

    def outbox_depth(self) -> int:
        """How many operations wait."""

    def outbox_empty(self, held_before: float | None = None) -> bool:
        """Whether nothing waits (no count); with ``held_before``, anonymous operations enqueued after it
        (still held by ``ANONYMOUS_HOLD_S``) do not count."""

    def oldest_enqueued_at(self) -> float | None:
        """Enqueue time of the first operation in the queue."""

    # -- dead letters --
    def insert_dead_letters(self, rows: Iterable[Row]) -> None:
        """``(seq, person_key, payload, reason, status, response, attempts, enqueued_at, failed_at, after_keys)``."""

    def dead_letter_rows(self, limit: int | None) -> list[Row]:
        """Oldest first: ``(id, seq, person_key, payload, reason, status, response, attempts, enqueued_at,
        failed_at)``."""

    def dead_letter_count(self) -> int:
        """How many operations are dead-lettered."""

    def requeue_rows(self, ids: Sequence[int] | None) -> list[Row]:
        """``(id, person_key, payload, after_keys)`` of these dead letters (all when ``None``), by id."""

    def delete_dead_letters(self, ids: Iterable[int]) -> None:
        """Remove dead letters."""

    # -- the operator's view (people.py, status.py) --
    def dead_letter_ids(self, seqs: Sequence[int]) -> dict[int, int]:
        """seq -> dead-letter id of the dead letters of these operations."""

    def dead_letter_row(self, letter_id: int) -> Row | None:
        """One dead letter (columns of :meth:`dead_letter_rows`), ``None`` when there is none."""

    def save_replica(self, replica: str, started_at: float, seen_at: float, stopped: bool, status: str) -> None:
        """Insert or update one replica's heartbeat and counters (a JSON document)."""

    def replica_rows(self) -> list[Row]:
        """``(replica, started_at, seen_at, stopped, status)`` of every replica remembered."""

    def prune_replicas(self, seen_before: float) -> None:
        """Forget replicas not seen since ``seen_before``."""

    def record_deliveries(self, rows: Sequence[Row], keep: int) -> None:
        """Append ``(person_key, seq, kind, action, name, outcome, at)`` rows; keep each person's newest ``keep``."""

    def deliveries_of(self, keys: Sequence[str], limit: int) -> list[Row]:
        """Newest first: ``(person_key, seq, kind, action, name, outcome, at)`` of these person keys."""

    def persons_by_email(self, email: str, limit: int) -> list[Row]:
        """Person rows whose email is ``email`` (case-insensitive)."""

    def persons_merged_into(self, keys: Sequence[str]) -> list[Row]:
        """Person rows merged into one of these distinct_ids."""

    def queued_of(self, keys: Sequence[str], limit: int) -> list[Row]:
        """Queue order: ``(seq, person_key, kind, payload, enqueued_at, attempts, last_error, lease_until)``."""

    def dead_letters_of(self, keys: Sequence[str], limit: int) -> list[Row]:
        """Newest first, columns of :meth:`dead_letter_rows`, of these person keys."""


class Claims(ABC):
    """How one backend hands operations to delivery workers without two taking the same person."""

    #: who holds this process's leases (``None`` where claims are not leases)
    owner: str | None = None
    #: a claim renewed (or made) less than this long ago needs no renewal before a request
    renewal_fresh_s: float = math.inf

    @abstractmethod
    def claim(self, pick: Picker, in_flight: Set[int]) -> tuple[list[Row], list[Row], dict[int, tuple[str, str]]]:
        """Run ``pick`` over the queue's candidates; returns ``(chosen, oversized, payloads)``.

        ``in_flight`` are the seqs this process has handed out and not settled.
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

    @abstractmethod
    def reading(self) -> AbstractContextManager[Transaction]:
        """A connection for reads."""

    @abstractmethod
    def group(self) -> AbstractContextManager[None]:
        """One commit for the :meth:`transaction` blocks this thread opens inside it (each rolls back alone)."""

    @abstractmethod
    def claims(self, lease_s: float) -> Claims:
        """This backend's claim strategy (``lease_s``: how long a claim lasts where claims expire)."""

    @abstractmethod
    def hold_delivery(self, data_dir: Path) -> IO[str] | None:
        """Become the one deliverer where only one may run (raises :class:`DeliveryLockError`); the
        handle is held until closed. ``None`` where any number may deliver."""

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
    def load_status(self, key: str) -> tuple[str, float] | None:
        """A stored status document and when it was stored."""

    @abstractmethod
    def probe_write(self) -> None:
        """A small write that proves the database takes writes now (readiness)."""


#: a claim looks at most this many queued rows
SCAN_LIMIT = 50_000


def pages(fetch: Callable[[int, int], list[Row]], page: int = 1000, scan_limit: int = SCAN_LIMIT) -> Iterator[Row]:
    """Candidate rows in queue order, ``page`` at a time, up to ``scan_limit`` rows (``fetch(after, limit)``)."""
    last = 0
    for _ in range(0, scan_limit, page):
        rows = fetch(last, page)
        yield from rows
        if len(rows) < page:
            return
        last = rows[-1][0]
