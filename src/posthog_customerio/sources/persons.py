"""The persons job (``sync-persons``): PostHog's people, from its private API or a persons export, through the
mapping (:func:`~posthog_customerio.mapping.map_person`), the outbox and delivery, like events.

* **From the API** (:func:`api_batches`): :func:`~.posthog_api.read_persons` reads the persons list page by
  page; each page is mapped and stored in one transaction, *then* the checkpoint is saved, so a run stopped
  anywhere (Ctrl-C, kill -9, PostHog down) resumes at the page it was on; a page read twice maps to nothing
  the second time (each person's fingerprint is remembered). A finished checkpoint starts the next run over.
* **From export files** (:func:`export_batches`): :func:`~.batch_exports.read_persons` collapses the rows (newest
  version wins, deleted persons deleted).

:func:`sync_persons` stores the batches and delivers with this process's workers (before each page, it waits
for delivery while half of ``OUTBOX_MAX_QUEUED`` is queued), waits until the outbox is empty (or ``timeout``) and
returns a :class:`SyncSummary`; with ``dry_run`` it maps against the remembered states without storing anything
and lists what would be sent. Rendering is the caller's job.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..ingestion import IngestReport
from ..mapping import PersonSnapshot, map_person
from ..operations import Operation
from ..state import PersonState, load_states
from .batch_exports import ExportedPerson
from .batch_exports import read_persons as read_exported_persons
from .jobs import JobSummary, delivering
from .posthog_api import PersonsCheckpoint, PersonsProgress, PostHogPerson, PostHogPersonsClient

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = [
    "CHECKPOINT_FILE",
    "CHUNK_PERSONS",
    "SyncProgress",
    "SyncSummary",
    "api_batches",
    "export_batches",
    "from_api",
    "from_export",
    "sync_persons",
]

#: persons mapped and stored per transaction (export files; the API stores a page at a time)
CHUNK_PERSONS = 500
#: the API read's checkpoint, in the data dir
CHECKPOINT_FILE = "posthog-persons.checkpoint"
#: operations shown by ``--dry-run``
EXAMPLES = 5


def from_api(person: PostHogPerson, read_at: datetime) -> PersonSnapshot:
    """A person of the API's list, as of when its page was read."""
    return PersonSnapshot(person.uuid, tuple(person.distinct_ids), person.properties, read_at, person.is_identified)


def from_export(person: ExportedPerson, default_as_of: datetime) -> PersonSnapshot:
    """A person of a persons export, as of its row's ``_inserted_at`` (else ``default_as_of``)."""
    return PersonSnapshot(
        person.person_id,
        person.distinct_ids,
        person.properties,
        person.inserted_at or default_as_of,
        person.is_identified,
        person.is_deleted,
    )


@dataclass(slots=True)
class SyncProgress:
    """Where a sync is (passed to ``on_progress``)."""

    #: persons read (and mapped) so far in this run
    read: int
    #: persons expected in all (an export's count; the API: the last finished run's, if any)
    total: int | None
    #: operations to deliver: the backlog found at the start plus those enqueued so far
    operations: int
    delivered: int
    done_reading: bool = False


@dataclass(slots=True)
class SyncSummary(JobSummary):
    """What one :func:`sync_persons` run did (the ``sync-persons --json`` output)."""

    source: str = ""
    read: int = 0
    #: persons read before this run by the interrupted run it resumed (the API's checkpoint)
    resumed_after: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    #: operations by action (identify, merge, delete ...)
    actions: dict[str, int] = field(default_factory=dict)
    operations_enqueued: int = 0
    dry_run: bool = False
    #: ``--dry-run``: a few of the operations that would be sent
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class Batches:
    """What :func:`sync_persons` reads: batches of persons, how many to expect, and where it resumed."""

    batches: Iterator[list[PersonSnapshot]]
    total: int | None = None
    resumed_after: int = 0
    source: str = ""


def export_batches(paths: str | Path | Iterable[str | Path], chunk: int = CHUNK_PERSONS) -> Batches:
    """The persons of export files, read and collapsed in full when the first batch is asked for (inside the
    run's time; no person is final before the last row is read); ``total`` is known from then on."""
    batches = Batches(iter(()), source=str(paths))

    def chunks() -> Iterator[list[PersonSnapshot]]:
        now = datetime.now(UTC)
        people = read_exported_persons(paths)
        batches.total = len(people)
        for start in range(0, len(people), chunk):
            yield [from_export(person, now) for person in people[start : start + chunk]]

    batches.batches = chunks()
    return batches


def api_batches(client: PostHogPersonsClient, checkpoint: PersonsCheckpoint | None) -> Batches:
    """The persons list, a page per batch, from where ``checkpoint`` stopped (``None``: from the start, nothing
    saved: ``--dry-run``). The checkpoint of a page is saved when the next batch is asked for, i.e. after
    the page was stored. A finished checkpoint starts a new pass (its count is the new total)."""
    progress = checkpoint.load() if checkpoint is not None else None
    total = None
    if progress is not None and progress.done:
        total = progress.persons
        assert checkpoint is not None
        checkpoint.clear()
        progress = None
    resumed = progress.persons if progress is not None else 0

    def pages() -> Iterator[list[PersonSnapshot]]:
        if checkpoint is None:
            for page in client.pages():
                now = datetime.now(UTC)
                yield [from_api(person, now) for person in page.results]
            return
        current = progress or PersonsProgress(None, scope=checkpoint.scope)
        for page in client.pages(progress.next_url if progress is not None else None):
            now = datetime.now(UTC)
            yield [from_api(person, now) for person in page.results]
            # the consumer asks for the next page once this one is stored: only now is it checkpointed
            current = checkpoint.save(page.next_url, len(page.results), current)

    return Batches(pages(), total=total, resumed_after=resumed, source=client.host)


def sync_persons(
    runtime: Runtime,
    source: Batches,
    *,
    timeout: float | None = None,
    dry_run: bool = False,
    on_progress: Callable[[SyncProgress], None] | None = None,
) -> SyncSummary:
    """Map, store and deliver the persons of ``source``; wait until the outbox is empty (or ``timeout``).

    ``dry_run``: map against the remembered states, store and send nothing. Database and API errors propagate
    (what was stored stays queued and checkpointed).
    """
    started = time.monotonic()
    if dry_run:
        return _preview(runtime, source, started, on_progress)
    report = IngestReport()

    def progress(done_reading: bool = False) -> None:
        if on_progress is not None:  # ``delivery``: the job's, bound by the ``with`` below before any call
            operations = delivery.backlog_before + report.operations
            on_progress(SyncProgress(report.events, source.total, operations, delivery.delivered, done_reading))

    with delivering(runtime, timeout, tick=lambda: progress(done_reading=True), source="persons") as delivery:
        room = delivery.room
        room.on_wait = progress
        if room.wait():  # before each page is asked for: a page not asked for has no checkpoint saved
            for batch in source.batches:
                stored = runtime.ingestor.ingest_persons(batch)
                report.add(stored)
                if stored.operations:
                    delivery.deliverer.notify()
                progress()
                if not room.wait():  # out of time: the pages not read are read by the next run
                    break
    return SyncSummary(
        source=source.source,
        read=report.events,
        resumed_after=source.resumed_after,
        skipped=dict(report.skipped),
        actions=dict(report.actions),
        operations_enqueued=report.operations,
        **delivery.figures(),
    )


def _preview(
    runtime: Runtime, source: Batches, started: float, on_progress: Callable[[SyncProgress], None] | None
) -> SyncSummary:
    """``--dry-run``: what the persons would produce, mapped against the remembered states; nothing stored."""
    overlay: dict[str, PersonState] = {}
    summary = SyncSummary(source=source.source, resumed_after=source.resumed_after, dry_run=True)
    skipped: Counter[str] = Counter()
    actions: Counter[str] = Counter()
    config = runtime.ingestor.config
    for batch in source.batches:
        wanted = [distinct_id for person in batch for distinct_id in person.distinct_ids]
        with runtime.db.transaction() as conn:  # read only: nothing is written
            states = load_states(conn, [d for d in wanted if d not in overlay])
        states.update(overlay)
        for person in batch:
            mapped = map_person(person, states, config)
            states.update(mapped.states)
            overlay.update(mapped.states)
            if mapped.skipped:
                skipped[mapped.skipped] += 1
            for operation in mapped.operations:
                actions[operation.action] += 1
                if len(summary.examples) < EXAMPLES:
                    summary.examples.append(_example(operation))
        summary.read += len(batch)
        if on_progress is not None:
            on_progress(SyncProgress(summary.read, source.total, sum(actions.values()), 0))
    summary.skipped, summary.actions = dict(skipped), dict(actions)
    summary.operations_enqueued = sum(actions.values())
    summary.seconds = round(time.monotonic() - started, 3)
    return summary


def _example(operation: Operation) -> dict[str, Any]:
    return {"person": operation.person_key, **operation.payload}
