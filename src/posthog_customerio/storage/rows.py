"""Typed rows: what a :class:`~.base.Transaction` reads and writes, one ``NamedTuple`` per shape.

Each is a tuple in its table's column order (the SQL passes them as parameters as they are and
builds them from fetched rows with ``_make``), read by name everywhere else.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..operations import Kind, ordering_keys

__all__ = [
    "CandidateRow",
    "CohortMemberRow",
    "CohortSyncRow",
    "DeadLetterRow",
    "DeliveryRow",
    "ExpiredRow",
    "LaneRow",
    "NewDeadLetter",
    "NewOperation",
    "PayloadRow",
    "PersonRow",
    "QueueEntryRow",
    "QueuedRow",
    "ReplicaRow",
    "RequeueRow",
    "StoredStatus",
    "StreamPosition",
]


class PersonRow(NamedTuple):
    """One ``persons`` row (see :mod:`..state` for ``digests`` and ``extra``)."""

    distinct_id: str
    identified: int
    email: str | None
    created: int
    email_sent: Any
    digests: str
    merged_into: str | None
    extra: str | None


class NewOperation(NamedTuple):
    """An operation to append to the ``outbox`` (its ``seq`` is assigned by the database)."""

    person_key: str
    payload: str
    size: int
    enqueued_at: float
    after_keys: str | None
    kind: Kind
    #: the event time (epoch seconds) of an operation from a source read in event-time order (``consume``):
    #: its person's operations go out in that order (:mod:`..ordering`); ``None`` elsewhere (arrival order)
    order_ts: float | None = None


class CandidateRow(NamedTuple):
    """A queued operation as a claim sees it: no payload."""

    seq: int
    person_key: str
    size: int
    attempts: int
    enqueued_at: float
    after_keys: str | None
    lease_owner: str | None
    lease_until: float | None
    kind: Kind
    order_ts: float | None = None

    @property
    def keys(self) -> tuple[str, ...]:
        """Every ordering key: the person's, then those it waits on."""
        return ordering_keys(self.person_key, self.after_keys)


class PayloadRow(NamedTuple):
    """The stored text and kind of a queued operation."""

    payload: str
    kind: Kind


class QueuedRow(NamedTuple):
    """A queued operation of one person key and kind, read to be replaced (:meth:`~..outbox.Outbox.queued`)."""

    seq: int
    payload: str
    enqueued_at: float
    lease_until: float | None
    after_keys: str | None
    order_ts: float | None = None


class LaneRow(NamedTuple):
    """A movable queued operation of one person, read to put the person's operations in event-time order
    (:meth:`~..outbox.Outbox.reorder`): everything its row holds but its place."""

    seq: int
    payload: str
    size: int
    enqueued_at: float
    attempts: int
    last_error: str | None
    kind: Kind
    order_ts: float


class StreamPosition(NamedTuple):
    """How far a stream's partition was stored and read (``stream_positions``): the next position to store (a Kafka
    offset times :data:`~..ordering.POSITION_SPAN` plus the event's index in its message), the newest event time
    read from it (its progress, for the event-time gate), and since when it is read to its end (``None``: not)."""

    stream: str
    part: int
    next_position: int
    event_ts: float
    end_at: float | None
    updated_at: float


class QueueEntryRow(NamedTuple):
    """A queued operation as the operator's person view shows it."""

    seq: int
    person_key: str
    kind: Kind
    payload: str
    enqueued_at: float
    attempts: int
    last_error: str | None
    lease_until: float | None


class NewDeadLetter(NamedTuple):
    """An operation to move to ``dead_letters`` (its ``id`` is assigned by the database)."""

    seq: int
    person_key: str
    payload: str
    reason: str
    status: int | None
    response: str | None
    attempts: int
    enqueued_at: float
    failed_at: float
    after_keys: str | None
    kind: Kind


class DeadLetterRow(NamedTuple):
    """One ``dead_letters`` row (the columns of :class:`~..outbox.DeadLetter`)."""

    id: int
    seq: int
    person_key: str
    payload: str
    reason: str
    status: int | None
    response: str | None
    attempts: int
    enqueued_at: float
    failed_at: float
    kind: Kind


class RequeueRow(NamedTuple):
    """What re-queueing a dead letter needs."""

    id: int
    person_key: str
    payload: str
    after_keys: str | None
    kind: Kind


class DeliveryRow(NamedTuple):
    """One settled operation in a person's recent history (``deliveries``; never attributes)."""

    person_key: str
    seq: int
    kind: Kind
    action: str | None
    name: str | None
    outcome: str
    at: float


class ReplicaRow(NamedTuple):
    """One replica's heartbeat (``status`` is a JSON document)."""

    replica: str
    started_at: float
    seen_at: float
    stopped: int
    status: str


class StoredStatus(NamedTuple):
    """A status document and when it was stored."""

    value: str
    updated_at: float


class ExpiredRow(NamedTuple):
    """A queued anonymous event dropped by the backlog bounds (``ANONYMOUS_MAX_AGE_S``, ``ANONYMOUS_BACKLOG_MAX``)."""

    seq: int
    person_key: str
    kind: Kind
    payload: str


class CohortSyncRow(NamedTuple):
    """A synced PostHog cohort (``cohort_syncs``): its pass number, where the pass is (``idle``, ``reading``
    from ``next_url``, ``removing``), and what the last passes did (``info``, JSON)."""

    cohort_id: str
    pass_no: int
    phase: str
    next_url: str | None
    info: str
    updated_at: float


class CohortMemberRow(NamedTuple):
    """A member a cohort's target last had (``cohort_members``): the PostHog person, the distinct_id of the
    profile it was added as, and the last pass that saw it in the cohort."""

    person_id: str
    distinct_id: str
    pass_no: int
