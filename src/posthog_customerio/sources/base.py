"""The source plug-in point: what a source is given (:class:`Intake`) and the one run loop (:func:`run`).

A source brings PostHog events from somewhere into the outbox. A pulling source (the file job, the
Kafka consumer; the PostHog API and export readers to come) is a :class:`Source`: it reads its input
in batches, and :func:`run` does the rest the same way for all of them: it counts what the source
refused, stores the batch under the shared policy (:mod:`.store`), wakes the delivery workers when
operations were enqueued, and hands the result back (the source then commits its offsets, reports
progress ...).

Backpressure: the intake's :class:`Room` says whether the source should wait for delivery (half of
``OUTBOX_MAX_QUEUED`` queued, :mod:`posthog_customerio.bound`); :func:`run` waits for room before each batch is
read (a source that must keep talking to its input while it waits, as Kafka does, overrides
:meth:`Source.wait_for_room`).

A source never sees the runtime: it gets an :class:`Intake`, made by
:meth:`posthog_customerio.runtime.Runtime.intake`. The HTTP receivers (:mod:`posthog_customerio.service`)
store each request all or nothing through the group committer, answering the request, so they call
:func:`.store.store_events` themselves.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from .events import PostHogEvent
from .store import Ingest, Stored, store_events

if TYPE_CHECKING:
    from ..ingestion import Ingestor

__all__ = ["UNBOUNDED", "Batch", "Intake", "IntakeProvider", "Room", "Source", "run"]


def _nobody() -> None:
    """No delivery workers to wake."""


class Room(Protocol):
    """Room in the outbox for a source's next batch (:class:`posthog_customerio.bound.SourceRoom`)."""

    def full(self) -> bool:
        """Whether the source should wait now (the outbox is at the level where sources wait)."""
        ...

    def wait(self, tick: Callable[[], None] | None = None, stop: Callable[[], bool] | None = None) -> bool:
        """Block while the outbox is at its bound (``tick`` called about every second meanwhile); True when there
        is room, False when the source should stop reading (it was stopped, by ``stop()`` or its own way, or its
        time to wait ran out)."""
        ...


class _Unbounded:
    """Always room (an intake without a bound: tests, tools)."""

    def full(self) -> bool:
        return False

    def wait(self, tick: Callable[[], None] | None = None, stop: Callable[[], bool] | None = None) -> bool:
        return True


#: the room of an intake that has no bound
UNBOUNDED: Room = _Unbounded()


@dataclass(slots=True)
class Intake:
    """Where a source puts its events: the ingestor (mapping + outbox) and the delivery workers to wake."""

    ingestor: Ingestor
    #: the source's name in counters and logs (``file``, ``kafka`` ...)
    source: str
    #: wakes the delivery workers (does nothing when this process runs none)
    wake: Callable[[], None] = _nobody
    #: the outbox's bound as this source waits on it
    room: Room = UNBOUNDED

    def count_invalid(self, count: int) -> None:
        """Record input the source refused before storing (unparsable messages ...)."""
        if count:
            self.ingestor.count_invalid(self.source, count)

    def store(self, events: Sequence[PostHogEvent], ingest: Ingest | None = None) -> Stored:
        """Map and store ``events`` under the shared policy (:func:`.store.store_events`): an event that
        cannot be stored is left out and counted; database errors propagate. ``ingest`` replaces the
        ingestor's plain ``ingest`` (``consume`` stores positions with its events)."""
        return store_events(
            ingest or self.ingestor.ingest, events, self.source, count_invalid=self.ingestor.count_invalid
        )


class IntakeProvider(Protocol):
    """What a source job needs of the process (the runtime is one): an :class:`Intake` per source."""

    def intake(self, source: str) -> Intake:
        """Where ``source`` puts its events."""
        ...


@dataclass(slots=True)
class Batch:
    """What a source read in one go: the parsed events, and how much input it refused (to be counted)."""

    events: list[PostHogEvent] = field(default_factory=list)
    invalid: int = 0


B = TypeVar("B", bound=Batch)


class Source(ABC, Generic[B]):
    """A source that pulls its events in batches; :func:`run` drives it."""

    #: the source's name in counters and logs
    name: str

    @abstractmethod
    def batches(self) -> Iterator[B]:
        """Read the input, one batch at a time, until it ends or the source is stopped."""

    def store(self, intake: Intake, batch: B) -> Stored:
        """Store one batch (a source that retries database errors overrides this)."""
        return intake.store(batch.events)

    def stored(self, batch: B, stored: Stored) -> None:
        """Called once a batch is stored and the delivery workers woken (commit offsets, report progress)."""

    def wait_for_room(self, intake: Intake) -> bool:
        """Before reading the next batch: wait while the outbox is at its bound; False to stop reading."""
        return intake.room.wait()

    def last(self, batch: B) -> bool:
        """Whether ``batch`` is known to be the input's last (no wait for room after it)."""
        return False


def run(source: Source[B], intake: Intake) -> None:
    """The one loop of every pulling source: for each batch, count what the source refused, store the
    events, wake the delivery workers if operations were enqueued, and hand the result back; before
    reading each batch (the first included), wait for room in the outbox (the reading stops when the
    source's wait says so)."""
    if not source.wait_for_room(intake):
        return
    batches = source.batches()
    try:
        for batch in batches:
            intake.count_invalid(batch.invalid)
            stored = source.store(intake, batch)
            if stored.report.operations:
                intake.wake()
            source.stored(batch, stored)
            if not source.last(batch) and not source.wait_for_room(intake):
                return
    finally:
        close = getattr(batches, "close", None)
        if close is not None:  # a generator: its reading ends here (files closed, a consumer let go)
            close()
