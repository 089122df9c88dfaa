"""One policy for events that cannot be stored, shared by the HTTP receivers, the file job and the Kafka job.

Storing a batch maps its events and writes them in one transaction. It fails in one of two ways:

* some event cannot be encoded or validated (:data:`UNSTORABLE_ERRORS`, e.g. a lone surrogate
  in a string), or the database refuses one of its values (:data:`DATA_ERRORS`, e.g. PostgreSQL and
  a NUL): the transaction is rolled back. :func:`store_events` either refuses the whole
  batch (:class:`UnstorableBatch`, for a request: all or nothing) or stores the events one by one
  and reports the bad ones (:attr:`Stored.rejected`: the file and Kafka jobs);
* the database cannot take the write (:data:`DATABASE_ERRORS`, or anything else): the error
  propagates unchanged and the caller retries later (HTTP 503, Kafka retries then stops).

Messages name the problem and the error class, never a value of the event (:func:`describe`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..ingestion import IngestReport
from .events import PostHogEvent

__all__ = [
    "DATABASE_ERRORS",
    "DATA_ERRORS",
    "UNSTORABLE_ERRORS",
    "Ingest",
    "Rejected",
    "Stored",
    "UnstorableBatch",
    "database_problem",
    "describe",
    "store_events",
]

#: what mapping or encoding raises for an event that can never be stored (retrying cannot help)
UNSTORABLE_ERRORS: tuple[type[BaseException], ...] = (ValueError, RecursionError, UnicodeError)


def _database_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [sqlite3.Error, OSError]
    try:
        import psycopg

        errors.append(psycopg.Error)
    except ImportError:  # PostgreSQL support not installed
        pass
    try:
        import psycopg_pool

        errors.append(psycopg_pool.PoolTimeout)
    except ImportError:
        pass
    return tuple(errors)


#: errors that mean "the outbox could not store this now": retry later, never report success
DATABASE_ERRORS = _database_errors()


def _data_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [sqlite3.DataError]
    try:
        import psycopg

        errors.append(psycopg.DataError)
    except ImportError:  # PostgreSQL support not installed
        pass
    return tuple(errors)


#: database errors about a value (SQLSTATE class 22): the same events would fail forever, so not a retry
DATA_ERRORS = _data_errors()


def describe(error: BaseException) -> str:
    """``<error class>: <problem>`` for an event that cannot be stored: never a value of the event."""
    name = type(error).__name__
    if isinstance(error, DATA_ERRORS):
        state = getattr(error, "sqlstate", None)
        problem = "the database refused one of its values" + (f" (SQLSTATE {state})" if state else "")
    elif isinstance(error, UnicodeError):
        reason = getattr(error, "reason", "")  # e.g. "surrogates not allowed": the rule, not the text
        problem = "a string cannot be encoded as UTF-8" + (f" ({reason})" if isinstance(reason, str) else "")
    elif isinstance(error, RecursionError):
        problem = "a value is nested too deeply"
    else:
        problem = "a value cannot be encoded or validated"
    return f"{name}: {problem}"


def database_problem(error: BaseException) -> str:
    """``<error class>: <message>`` for a database error: PostgreSQL's primary message only (its detail
    lines may quote a stored value), at most 200 characters."""
    diag = getattr(error, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    return f"{type(error).__name__}: {primary or str(error)}"[:200]


#: ``ingest(events, source)``: map and store in one transaction (an ``Ingestor.ingest`` or a group commit)
Ingest = Callable[[Sequence[PostHogEvent], str], IngestReport]


@dataclass(slots=True)
class Rejected:
    """An event that cannot be stored, and why (one line)."""

    event: PostHogEvent
    error: str

    @property
    def label(self) -> str:
        """``event <uuid or distinct_id>``, for messages."""
        return f"event {self.event.uuid or self.event.distinct_id}"


@dataclass(slots=True)
class Stored:
    """What storing a batch produced: the ingest totals and the events that were left out."""

    report: IngestReport = field(default_factory=IngestReport)
    rejected: list[Rejected] = field(default_factory=list)


class UnstorableBatch(ValueError):
    """All or nothing: the batch holds an event that cannot be stored; nothing of it was stored."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        super().__init__(f"event cannot be stored: {describe(error)}; nothing of the request was stored")


def _is_unstorable(exc: BaseException) -> bool:
    if isinstance(exc, DATA_ERRORS):
        return True
    return isinstance(exc, UNSTORABLE_ERRORS) and not isinstance(exc, DATABASE_ERRORS)


def store_events(
    ingest: Ingest,
    events: Sequence[PostHogEvent],
    source: str,
    *,
    all_or_nothing: bool = False,
    count_invalid: Callable[[str, int], None] | None = None,
) -> Stored:
    """Store ``events`` under the shared policy (see the module docstring).

    ``all_or_nothing``: raise :class:`UnstorableBatch` instead of storing the rest one by one.
    ``count_invalid(source, n)`` is told how many events (or, all or nothing, batches) were refused.
    Database errors propagate unchanged.
    """
    stored = Stored()
    if not events:
        return stored
    try:
        stored.report.add(ingest(events, source))
        return stored
    except Exception as exc:
        if not _is_unstorable(exc):
            raise
        if all_or_nothing:
            if count_invalid is not None:
                count_invalid(source, 1)
            raise UnstorableBatch(exc) from None
    for event in events:  # isolate the events that cannot be stored
        try:
            stored.report.add(ingest([event], source))
        except Exception as exc:
            if not _is_unstorable(exc):
                raise
            stored.rejected.append(Rejected(event, describe(exc)))
    if stored.rejected and count_invalid is not None:
        count_invalid(source, len(stored.rejected))
    return stored
