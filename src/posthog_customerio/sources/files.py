"""The file job: PostHog events from a JSONL or JSON-array stream through the outbox to Customer.io.

:func:`send_file` reads the events in chunks (:class:`FileSource`), which the shared run loop
(:func:`.base.run`) stores under the shared policy (:mod:`.store`: an event that cannot be stored
is reported and counted, the rest delivered); it delivers with this process's workers, waits until
the outbox is empty (or ``timeout``) and returns a :class:`Summary`. Rendering progress and the
summary is the caller's job (``posthog-customerio send`` draws progress bars from :class:`FileProgress`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..ingestion import IngestReport
from .base import Batch, Source, run
from .events import ParsedItem, PostHogEvent, read_events
from .store import Stored

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = ["CHUNK_EVENTS", "FileProgress", "FileSource", "Summary", "send_file"]

#: events stored per transaction
CHUNK_EVENTS = 2000


@dataclass(slots=True)
class FileProgress:
    """Where a :func:`send_file` run is (passed to ``on_progress``)."""

    #: characters of the input read so far
    read: int
    #: events stored so far
    events: int
    #: operations to deliver: the backlog found at the start plus those enqueued so far
    operations: int
    #: operations delivered so far
    delivered: int
    #: the whole input has been read and stored
    done_reading: bool = False


@dataclass(slots=True)
class Summary:
    """What one :func:`send_file` run did."""

    read: int = 0
    invalid: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    operations_enqueued: int = 0
    backlog_before: int = 0
    operations_delivered: int = 0
    requests: int = 0
    requests_by_status: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    dead_lettered: int = 0
    #: operations still in the outbox when waiting stopped (0 = everything delivered or dead-lettered)
    queued: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary (the ``send --json`` output)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


class _CountingLines:
    """Iterate lines while counting the characters read (for progress)."""

    def __init__(self, lines: Iterable[str]) -> None:
        self.lines = lines
        self.read = 0

    def __iter__(self) -> Iterator[str]:
        for line in self.lines:
            self.read += len(line)
            yield line


@dataclass(slots=True)
class Chunk(Batch):
    """Events read from the file; ``full``: a whole chunk (the last one may be short, or empty)."""

    full: bool = False


class FileSource(Source[Chunk]):
    """JSONL or JSON-array lines, in chunks of ``chunk_events``; what cannot be parsed or stored is
    passed to ``left_out``, the running totals are kept in :attr:`report`."""

    name = "file"

    def __init__(
        self,
        lines: Iterable[str],
        chunk_events: int = CHUNK_EVENTS,
        left_out: Callable[[ParsedItem], None] = lambda item: None,
        on_chunk: Callable[[], None] = lambda: None,
    ) -> None:
        self.lines = _CountingLines(lines)
        self.chunk_events = chunk_events
        self.left_out = left_out
        self.on_chunk = on_chunk
        self.report = IngestReport()

    def batches(self) -> Iterator[Chunk]:
        """Full chunks as they fill, then the rest; an unparsable item goes to ``left_out`` as it is read."""
        chunk: list[PostHogEvent] = []
        for item in read_events(self.lines):
            if item.event is None:
                self.left_out(item)
                continue
            chunk.append(item.event)
            if len(chunk) >= self.chunk_events:
                yield Chunk(chunk, full=True)
                chunk = []
        yield Chunk(chunk)

    def stored(self, batch: Chunk, stored: Stored) -> None:
        """Add to the totals, pass on the events that could not be stored, report progress after a full chunk."""
        self.report.add(stored.report)
        for rejected in stored.rejected:
            self.left_out(ParsedItem(rejected.label, error=rejected.error))
        if batch.full:
            self.on_chunk()


def send_file(
    runtime: Runtime,
    lines: Iterable[str],
    *,
    timeout: float | None = None,
    chunk_events: int = CHUNK_EVENTS,
    on_invalid: Callable[[ParsedItem, int], None] | None = None,
    on_progress: Callable[[FileProgress], None] | None = None,
) -> Summary:
    """Read, map, store and deliver the events of ``lines``; wait until the outbox is empty.

    ``on_invalid(item, count)`` is called for every line or event left out (unparsable, or
    not storable), with the running count; ``on_progress`` after every stored chunk and while
    waiting for delivery. Waiting stops after ``timeout`` seconds (``None``: no limit); what is
    not delivered stays queued. Database errors propagate.
    """
    started = time.monotonic()
    deliverer = runtime.deliverer()
    backlog = runtime.outbox.depth()
    dead_before = runtime.outbox.dead_letter_count()
    deliverer.start()
    invalid = 0
    stop_within = 10.0  # in-flight requests finish

    def progress(done_reading: bool = False) -> None:
        if on_progress is not None:
            report, delivered = source.report, deliverer.stats.delivered
            on_progress(
                FileProgress(source.lines.read, report.events, backlog + report.operations, delivered, done_reading)
            )

    def left_out(item: ParsedItem) -> None:
        nonlocal invalid
        invalid += 1
        if on_invalid is not None:
            on_invalid(item, invalid)

    source = FileSource(lines, chunk_events, left_out, progress)
    try:
        run(source, runtime.intake(source.name))
        # all read: no identify can come to adopt what ANONYMOUS_HOLD_S holds; holding on would only delay the end
        runtime.outbox.input_finished()
        deliverer.notify()
        progress(done_reading=True)
        finished = deliverer.wait_until_empty(timeout, tick=lambda: progress(done_reading=True))
    except KeyboardInterrupt:  # Ctrl-C: stop now; a request still open is abandoned (its operations stay queued)
        stop_within = 1.0
        raise
    finally:
        deliverer.stop(stop_within)
    stats, report = deliverer.stats, source.report
    return Summary(
        read=report.events + invalid,
        invalid=invalid,
        skipped=dict(report.skipped),
        operations_enqueued=report.operations,
        backlog_before=backlog,
        operations_delivered=stats.delivered,
        requests=stats.requests,
        requests_by_status=dict(stats.requests_by_status),
        retries=stats.retries,
        dead_lettered=runtime.outbox.dead_letter_count() - dead_before,
        queued=0 if finished else runtime.outbox.depth(),
        seconds=round(time.monotonic() - started, 3),
    )
