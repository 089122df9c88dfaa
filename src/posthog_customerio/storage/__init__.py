"""Where person state and the outbox live: the :class:`Storage` interface and its two backends.

State and outbox share one database so that an event's state change and the operations it
produced commit in one transaction: after a crash either both are there or neither is.
:mod:`.sqlite` is the embedded default (one process delivers); :mod:`.postgres` is shared by
replicas. :mod:`.migrations` holds both schemas as data; all SQL lives in this package except
the pacing row's statements (:mod:`..pacing.postgres`).
"""

from __future__ import annotations

from pathlib import Path

from .base import (
    EXPIRED_KEY,
    Claims,
    DeliveryLockError,
    Storage,
    StorageSnapshot,
    StorageSpace,
    Transaction,
    size_text,
)
from .migrations import POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS
from .postgres import DatabaseUnreachable, PostgresStorage, check_reachable
from .rows import (
    CandidateRow,
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
from .sqlite import SqliteStorage

__all__ = [
    "EXPIRED_KEY",
    "POSTGRES_MIGRATIONS",
    "SQLITE_MIGRATIONS",
    "CandidateRow",
    "Claims",
    "DatabaseUnreachable",
    "DeadLetterRow",
    "DeliveryLockError",
    "DeliveryRow",
    "ExpiredRow",
    "LaneRow",
    "NewDeadLetter",
    "NewOperation",
    "PayloadRow",
    "PersonRow",
    "PostgresStorage",
    "QueueEntryRow",
    "QueuedRow",
    "ReplicaRow",
    "RequeueRow",
    "SqliteStorage",
    "Storage",
    "StorageSnapshot",
    "StorageSpace",
    "StoredStatus",
    "StreamPosition",
    "Transaction",
    "open_storage",
    "size_text",
]


def open_storage(url: str | None, sqlite_path: Path, synchronous: str = "FULL") -> Storage:
    """The storage for ``OUTBOX_URL`` (``sqlite:///path``, ``postgresql://…``) or the default SQLite file."""
    if not url:
        return SqliteStorage(sqlite_path, synchronous)
    if url.startswith("sqlite:///"):
        return SqliteStorage(Path(url.removeprefix("sqlite:///")), synchronous)
    if url.startswith(("postgresql://", "postgres://")):
        check_reachable(url)  # seconds, not the pool's 15 s of retries (:class:`DatabaseUnreachable`)
        return PostgresStorage(url)
    raise ValueError(f"unsupported OUTBOX_URL scheme: {url.split(':', 1)[0]}")
