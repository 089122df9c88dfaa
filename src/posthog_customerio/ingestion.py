"""Ingestion: parsed events -> mapping -> person state + outbox, in one transaction.

Used by every source (the file and Kafka jobs through :mod:`.sources.base`, the HTTP
receivers). A batch of events either lands completely (state changes and operations
committed together) or not at all.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from .mapping import (
    Mapped,
    MappingConfig,
    PersonSnapshot,
    adopted_events,
    involved_distinct_ids,
    map_event,
    map_person,
    prefit_event,
)
from .operations import Operation
from .ordering import watermark_of
from .outbox import Outbox
from .state import PersonState, load_states, save_states
from .storage import Storage, StreamPosition, Transaction

__all__ = ["GroupCommitter", "IngestReport", "Ingestor"]

_Item = TypeVar("_Item")

if TYPE_CHECKING:  # sources build on ingestion, not the other way round
    from .sources.events import PostHogEvent

    #: one waiting ingestion: its events, its source, and the future its caller waits on
    _Request = tuple[Sequence[PostHogEvent], int, str, Future["IngestReport"]]


def _event_seconds(event: PostHogEvent) -> float:
    """An event's time in epoch seconds (its place in event-time order)."""
    return event.timestamp.timestamp()


@dataclass(slots=True)
class IngestReport:
    """What one or more ingested batches produced."""

    events: int = 0
    operations: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)
    #: distinct_ids stored for the first time (keeps the status page's "people known" current)
    persons_added: int = 0

    def add(self, other: IngestReport) -> None:
        """Accumulate another report into this one."""
        self.events += other.events
        self.operations += other.operations
        self.skipped.update(other.skipped)
        self.actions.update(other.actions)
        self.notes.update(other.notes)
        self.persons_added += other.persons_added


class Ingestor:
    """Maps events and stores the result durably; keeps running totals per source."""

    def __init__(self, db: Storage, outbox: Outbox, config: MappingConfig) -> None:
        self.db = db
        self.outbox = outbox
        self.config = config
        self.totals = IngestReport()
        self.received_by_source: Counter[str] = Counter()
        self.invalid_by_source: Counter[str] = Counter()
        self._totals_lock = threading.Lock()
        #: operations written to the outbox by this process, rolled-back transactions included (an upper bound of
        #: what it added: the outbox's bound, :mod:`.bound`, adds it to its last count)
        self.operations_written = 0

    def count_invalid(self, source: str, count: int = 1) -> None:
        """Record input that was rejected before ingestion."""
        with self._totals_lock:
            self.invalid_by_source[source] += count

    def ingest(self, events: Sequence[PostHogEvent], source: str = "file") -> IngestReport:
        """Map and enqueue ``events`` atomically; returns what they produced."""
        report = self._ingest(*self.prepare(events))
        self.record(report, source)
        return report

    def record(self, report: IngestReport, source: str) -> None:
        """Add a committed ingestion to the running totals."""
        with self._totals_lock:
            self.totals.add(report)
            self.received_by_source[source] += report.events

    def prepare(self, events: Sequence[PostHogEvent]) -> tuple[list[PostHogEvent], int]:
        """The slow part of mapping that needs no state, done before the write transaction.

        Very wide events get their data fitted to Customer.io's limits here (see
        :func:`~.mapping.prefit_event`); returns the events and how many properties were dropped.
        """
        fitted = [prefit_event(event, self.config) for event in events]
        return [event for event, _ in fitted], sum(cuts for _, cuts in fitted)

    def _ingest(self, events: Sequence[PostHogEvent], cuts: int = 0) -> IngestReport:
        report = self._apply(events, involved_distinct_ids, map_event)
        report.notes["limits_truncated"] += cuts
        return report

    def ingest_stream(
        self, events: Sequence[PostHogEvent], source: str, stream: str, places: Sequence[tuple[int, int]]
    ) -> IngestReport:
        """Map and enqueue events read from a partitioned stream (``consume``) atomically, in event-time order
        (:mod:`.ordering`): ``places`` gives each event's ``(partition, position)``. An event at a position
        already stored (a batch read again after a crash or a rebalance) is left out; the partitions' positions
        and progress are stored in the same transaction."""
        prepared, cuts = self.prepare(events)
        report = self.db.transact(lambda conn: self._stream_in(conn, prepared, places, stream))
        report.notes["limits_truncated"] += cuts
        self.record(report, source)
        return report

    def _stream_in(
        self, conn: Transaction, events: Sequence[PostHogEvent], places: Sequence[tuple[int, int]], stream: str
    ) -> IngestReport:
        stored = conn.stream_positions(stream, sorted({part for part, _ in places}))
        fresh = [
            event
            for event, (part, at) in zip(events, places, strict=True)
            if part not in stored or at >= stored[part].next_position
        ]
        report = self.apply_in(conn, fresh, involved_distinct_ids, map_event, order_ts=_event_seconds)
        report.notes["stored_before"] += len(events) - len(fresh)
        progress: dict[int, tuple[int, float]] = {}
        for event, (part, at) in zip(events, places, strict=True):
            next_at, newest = progress.get(part, (0, 0.0))
            progress[part] = (max(next_at, at + 1), max(newest, _event_seconds(event)))
        now = time.time()
        gate = self.outbox.gate
        if gate is not None and fresh:
            mark = watermark_of(conn.stream_progress(now - gate.stale_s), now)
            report.notes["reorder_late_events"] += sum(gate.late(_event_seconds(event), mark) for event in fresh)
        conn.save_stream_positions(
            StreamPosition(stream, part, next_at, newest, None, now)
            for part, (next_at, newest) in sorted(progress.items())
        )
        return report

    def ingest_persons(self, persons: Sequence[PersonSnapshot], source: str = "persons") -> IngestReport:
        """Map and enqueue PostHog persons (``sync-persons``) atomically, as :meth:`ingest` does events;
        ``events`` in the report counts persons, ``skipped`` why a person sent nothing."""
        report = self._apply(persons, lambda person: list(person.distinct_ids), map_person)
        self.record(report, source)
        return report

    def _apply(
        self,
        items: Sequence[_Item],
        involved: Callable[[_Item], list[str]],
        mapper: Callable[[_Item, Mapping[str, PersonState], MappingConfig], Mapped],
    ) -> IngestReport:
        """Map ``items`` (events or persons) against the stored states and store the result in one transaction."""
        if not items:
            return IngestReport()
        return self.db.transact(lambda conn: self.apply_in(conn, items, involved, mapper))

    def apply_in(
        self,
        conn: Transaction,
        items: Sequence[_Item],
        involved: Callable[[_Item], list[str]],
        mapper: Callable[[_Item, Mapping[str, PersonState], MappingConfig], Mapped],
        order_ts: Callable[[_Item], float] | None = None,
    ) -> IngestReport:
        """:meth:`_apply` inside the caller's transaction ``conn`` (``sync-cohorts`` stores its membership rows
        and progress in the same one); nothing is added to the running totals. With ``order_ts`` (an item's
        event time) each person's operations are kept in event-time order (:meth:`.Outbox.reorder`)."""
        report = IngestReport(events=len(items))
        if items:
            self._apply_credited(conn, items, [report] * len(items), involved, mapper, order_ts)
        return report

    def ingest_requests(self, requests: Sequence[tuple[Sequence[PostHogEvent], int]]) -> list[IngestReport]:
        """Several requests' prepared events ``(events, cuts)`` mapped and stored together in one transaction
        (one read of their people, one write of each table), all or nothing; a report for each request."""
        reports = [IngestReport(events=len(events)) for events, _ in requests]
        items = [event for events, _ in requests for event in events]
        credit = [report for report, (events, _) in zip(reports, requests, strict=True) for _ in events]
        if items:
            self.db.transact(lambda conn: self._apply_credited(conn, items, credit, involved_distinct_ids, map_event))
        for report, (_, cuts) in zip(reports, requests, strict=True):
            report.notes["limits_truncated"] += cuts
        return reports

    def _apply_credited(
        self,
        conn: Transaction,
        items: Sequence[_Item],
        credit: Sequence[IngestReport],
        involved: Callable[[_Item], list[str]],
        mapper: Callable[[_Item, Mapping[str, PersonState], MappingConfig], Mapped],
        order_ts: Callable[[_Item], float] | None = None,
    ) -> None:
        """Map ``items`` in order against their people's states and store the operations and states in ``conn``;
        what each item produced is added to its report (``credit``, one per item; the same one for all of them
        where a single report is wanted)."""
        wanted = [distinct_id for item in items for distinct_id in involved(item)]
        states: dict[str, PersonState] = load_states(conn, wanted)
        if conn.lock_keys({*wanted, *states}):  # replicas: these people (and whom they merged into) locked
            states = load_states(conn, wanted)  # re-read what another replica may have written
        known = set(states)
        changed: dict[str, PersonState] = {}
        added: dict[str, IngestReport] = {}  # each person stored for the first time, by whose item added them
        operations: list[Operation] = []
        times: list[float | None] = []
        written = adopted = 0
        movable: set[str] = set()  # people whose operations may change places (event-time order)
        for item, report in zip(items, credit, strict=True):
            mapped = mapper(item, states, self.config)
            for key in mapped.states:
                if key not in known:
                    added.setdefault(key, report)
            states.update(mapped.states)
            changed.update(mapped.states)
            operations.extend(mapped.operations)
            times.extend([order_ts(item) if order_ts is not None else None] * len(mapped.operations))
            report.operations += len(mapped.operations)
            report.actions.update(operation.action for operation in mapped.operations)
            if mapped.skipped:
                report.skipped[mapped.skipped] += 1
            report.notes.update(mapped.notes)
            if mapped.adopt:  # queue what came before, then move the visitor's events behind it
                written += self.outbox.enqueue(conn, operations, order_ts=times)
                if order_ts is not None:
                    movable.update(_movable_keys(operations))
                operations, times = [], []
                for anonymous_id, identifiers, person_key in mapped.adopt:
                    queued = self.outbox.queued(conn, anonymous_id, "anonymous")
                    replaced = self.outbox.replace(
                        conn, queued, adopted_events([row.operation for row in queued], identifiers, person_key)
                    )
                    report.notes["anonymous_events_adopted"] += replaced
                    adopted += replaced
        for report in added.values():
            report.persons_added += 1
        save_states(conn, changed.values())
        written += self.outbox.enqueue(conn, operations, order_ts=times)
        if order_ts is not None:
            movable.update(_movable_keys(operations))
            credit[-1].notes["reordered"] += sum(self.outbox.reorder(conn, key) for key in sorted(movable))
        with self._totals_lock:  # adopted events became person work too
            self.operations_written += written + adopted


def _movable_keys(operations: Sequence[Operation]) -> set[str]:
    """The people of ``operations`` that may change places in the queue (not anonymous, waiting on no other key)."""
    return {operation.person_key for operation in operations if operation.kind != "anonymous" and not operation.after}


class GroupCommitter:
    """Concurrent ingestions share one transaction: one commit (one fsync) for many.

    The group's requests are mapped and stored together (one read of their people, one write of each
    table: :meth:`Ingestor.ingest_requests`); when that fails, because one of them cannot be stored, each
    is stored again on its own savepoint, so every request still lands all or nothing and a bad one fails
    alone. A caller is answered only after the group committed. Used where the storage says commits are
    worth sharing (:attr:`~.storage.Storage.group_commit`: SQLite); with PostgreSQL,
    requests commit side by side on their own pooled connections.

    A group holds at most ``max_group`` requests and ``max_group_events`` events; a
    request bigger than that commits alone, after the small requests that were
    waiting with it, so one big request never holds a crowd of small ones in its
    transaction. Everything taken from the queue commits before the next look at
    the queue: nothing waits more than one round.
    """

    def __init__(self, ingestor: Ingestor, max_group: int = 256, max_group_events: int = 2_000) -> None:
        self.ingestor = ingestor
        self.max_group = max_group
        self.max_group_events = max_group_events
        self._queue: queue.Queue[_Request] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._thread.start()

    def ingest(self, events: Sequence[PostHogEvent], source: str) -> IngestReport:
        """Ingest as part of the next group; raises what ingesting these events raised."""
        return self.submit(events, source).result()

    def submit(self, events: Sequence[PostHogEvent], source: str) -> Future[IngestReport]:
        """Queue ``events`` for the next group; the future is done once the group committed (or failed).

        An event loop may await it (``asyncio.wrap_future``): it is running already, so cancelling
        a waiter never cancels it.
        """
        future: Future[IngestReport] = Future()
        future.set_running_or_notify_cancel()
        prepared, cuts = self.ingestor.prepare(events)  # in the caller's thread, outside the group
        self._queue.put((prepared, cuts, source, future))
        return future

    def _run(self) -> None:
        while True:
            waiting = [self._queue.get()]
            while True:
                try:
                    waiting.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            for group in self._groups(waiting):
                self._commit(group)

    def _groups(self, waiting: list[_Request]) -> list[list[_Request]]:
        """Small requests packed into groups (in arrival order), then each big one alone."""
        groups: list[list[_Request]] = []
        big: list[list[_Request]] = []
        group: list[_Request] = []
        events = 0
        for request in waiting:
            size = len(request[0])
            if size > self.max_group_events:
                big.append([request])
                continue
            if group and (len(group) >= self.max_group or events + size > self.max_group_events):
                groups.append(group)
                group, events = [], 0
            group.append(request)
            events += size
        if group:
            groups.append(group)
        return groups + big

    def _commit(self, group: list[_Request]) -> None:
        outcomes: list[tuple[Future[IngestReport], str, IngestReport | None, BaseException | None]] = []
        try:
            with self.ingestor.db.group():
                try:  # the requests together: one read of their people, one write of each table
                    reports = self.ingestor.ingest_requests([(events, cuts) for events, cuts, _, _ in group])
                    outcomes.extend(
                        (future, source, report, None)
                        for (_, _, source, future), report in zip(group, reports, strict=True)
                    )
                except Exception:  # one of them cannot be stored (rolled back): each on its own, as alone
                    for events, cuts, source, future in group:
                        try:
                            outcomes.append((future, source, self.ingestor._ingest(events, cuts), None))
                        except Exception as exc:  # this request's savepoint was rolled back
                            outcomes.append((future, source, None, exc))
        except BaseException as exc:  # the commit failed: every request of the group fails
            for _, _, _, future in group:
                future.set_exception(exc)
            return
        for future, source, report, error in outcomes:
            if report is not None:
                self.ingestor.record(report, source)
                future.set_result(report)
            else:
                future.set_exception(error or RuntimeError("ingestion failed"))
