"""The file job: PostHog events from a file through the outbox to Customer.io.

:func:`send_file` reads a JSONL or JSON-array stream (:class:`FileSource`: a bad line is reported and
passed over), :func:`send_export` the data files of a PostHog batch export (:class:`ExportSource`, through
:func:`.batch_exports.read_events`: each uuid once; a malformed row stops the reading, the events before it
go on). Both read in chunks, which the shared run loop (:func:`.base.run`) stores under the shared policy
(:mod:`.store`: an event that cannot be stored is reported and counted, the rest delivered); then they deliver
with this process's workers, wait until the outbox is empty (or ``timeout``) and return a :class:`Summary`.
Rendering progress and the summary is the caller's job (``posthog-customerio send`` draws progress bars from
:class:`FileProgress`).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..ingestion import IngestReport
from .base import Batch, Source, run
from .batch_exports import BatchExportError
from .batch_exports import read_events as read_export_events
from .events import ParsedItem, PostHogEvent, read_events
from .jobs import JobSummary, delivering
from .store import Stored

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = [
    "CHUNK_EVENTS",
    "ChunkedSource",
    "ExportSource",
    "FileProgress",
    "FileSource",
    "Summary",
    "send_export",
    "send_file",
    "send_source",
]

#: events stored per transaction
CHUNK_EVENTS = 2000


@dataclass(slots=True)
class FileProgress:
    """Where a :func:`send_file` or :func:`send_export` run is (passed to ``on_progress``)."""

    #: how much of the input is read: characters of a stream, data files of an export (read to their end)
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
class Summary(JobSummary):
    """What one :func:`send_file` or :func:`send_export` run did."""

    #: events read: stored, invalid, and duplicates passed over
    read: int = 0
    #: lines or rows that are no event, and events that could not be stored (a malformed export row included)
    invalid: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    operations_enqueued: int = 0
    #: events of an export passed over because their uuid came earlier in the same export
    duplicates: int = 0
    #: what stopped the reading (a malformed export row: ``"<file>: row N: <problem>"``); ``None``: all was read
    stopped: str | None = None


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


class ChunkedSource(Source[Chunk]):
    """Events of one input in chunks of ``chunk_events``; what cannot be read or stored is passed to ``left_out``
    (:func:`send_file` and :func:`send_export` set it and ``on_chunk``), the running totals kept in :attr:`report`."""

    name = "file"

    def __init__(
        self,
        chunk_events: int = CHUNK_EVENTS,
        left_out: Callable[[ParsedItem], None] = lambda item: None,
        on_chunk: Callable[[], None] = lambda: None,
    ) -> None:
        self.chunk_events = chunk_events
        self.left_out = left_out
        self.on_chunk = on_chunk
        self.report = IngestReport()
        #: events passed over as duplicates of one read before
        self.duplicates = 0
        #: what stopped the reading before the input's end (``None``: it was read to its end)
        self.stopped: str | None = None

    @property
    @abstractmethod
    def position(self) -> int:
        """How much of the input is read (:attr:`FileProgress.read`)."""

    @abstractmethod
    def events(self) -> Iterator[PostHogEvent]:
        """The input's events in order; what is no event goes to ``left_out`` as it is read."""

    def batches(self) -> Iterator[Chunk]:
        """Full chunks as they fill, then the rest."""
        chunk: list[PostHogEvent] = []
        for event in self.events():
            chunk.append(event)
            if len(chunk) >= self.chunk_events:
                yield Chunk(chunk, full=True)
                chunk = []
        yield Chunk(chunk)

    def last(self, batch: Chunk) -> bool:
        """A short chunk is the input's last: nothing more is read after it."""
        return not batch.full

    def stored(self, batch: Chunk, stored: Stored) -> None:
        """Add to the totals, pass on the events that could not be stored, report progress after a full chunk."""
        self.report.add(stored.report)
        for rejected in stored.rejected:
            self.left_out(ParsedItem(rejected.label, error=rejected.error))
        if batch.full:
            self.on_chunk()


class FileSource(ChunkedSource):
    """JSONL or JSON-array lines; a line that is no event goes to ``left_out`` and the reading goes on."""

    def __init__(
        self,
        lines: Iterable[str],
        chunk_events: int = CHUNK_EVENTS,
        left_out: Callable[[ParsedItem], None] = lambda item: None,
        on_chunk: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(chunk_events, left_out, on_chunk)
        self.lines = _CountingLines(lines)

    @property
    def position(self) -> int:
        """Characters read."""
        return self.lines.read

    def events(self) -> Iterator[PostHogEvent]:
        for item in read_events(self.lines):
            if item.event is None:
                self.left_out(item)
            else:
                yield item.event


class ExportSource(ChunkedSource):
    """The data files of a batch export (:func:`.batch_exports.export_files`), in order, each uuid once.

    A row that cannot be read stops the reading (:attr:`stopped` says where and why): the events read before it
    are still stored, nothing after it is read.
    """

    def __init__(
        self,
        files: Sequence[Path],
        chunk_events: int = CHUNK_EVENTS,
        left_out: Callable[[ParsedItem], None] = lambda item: None,
        on_chunk: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(chunk_events, left_out, on_chunk)
        self.files = list(files)
        self.files_read = 0

    @property
    def position(self) -> int:
        """Data files read to their end."""
        return self.files_read

    def events(self) -> Iterator[PostHogEvent]:
        try:
            yield from read_export_events(self._counted_files(), on_duplicate=self._duplicate)
        except BatchExportError as exc:
            self.stopped = str(exc)
        except OSError as exc:  # a file that went away or cannot be opened while reading
            self.stopped = f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)

    def _counted_files(self) -> Iterator[Path]:
        """The files, counting each one read to its end (the reader asks for the next one then)."""
        for number, path in enumerate(self.files):
            self.files_read = number
            yield path
        self.files_read = len(self.files)

    def _duplicate(self, where: str) -> None:
        self.duplicates += 1


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
    return send_source(runtime, FileSource(lines, chunk_events), timeout, on_invalid, on_progress)


def send_export(
    runtime: Runtime,
    files: Sequence[Path],
    *,
    timeout: float | None = None,
    chunk_events: int = CHUNK_EVENTS,
    on_invalid: Callable[[ParsedItem, int], None] | None = None,
    on_progress: Callable[[FileProgress], None] | None = None,
) -> Summary:
    """:func:`send_file` for the data files of a batch export (:func:`.batch_exports.export_files`).

    Each uuid is sent once (:attr:`Summary.duplicates` counts the others). A row that cannot be read stops the
    reading: it is counted invalid and named in :attr:`Summary.stopped`; the events read before it are stored,
    delivered and waited for all the same. ``on_invalid`` is called for events that cannot be stored.
    """
    return send_source(runtime, ExportSource(files, chunk_events), timeout, on_invalid, on_progress)


def send_source(
    runtime: Runtime,
    source: ChunkedSource,
    timeout: float | None = None,
    on_invalid: Callable[[ParsedItem, int], None] | None = None,
    on_progress: Callable[[FileProgress], None] | None = None,
) -> Summary:
    """Store what ``source`` reads, deliver it and wait (see :func:`send_file`); ``source``'s ``left_out`` and
    ``on_chunk`` are set here."""
    invalid = 0

    def progress(done_reading: bool = False) -> None:
        if on_progress is not None:  # ``delivery``: the job's, bound by the ``with`` below before any call
            report = source.report
            operations = delivery.backlog_before + report.operations
            on_progress(FileProgress(source.position, report.events, operations, delivery.delivered, done_reading))

    def left_out(item: ParsedItem) -> None:
        nonlocal invalid
        invalid += 1
        if on_invalid is not None:
            on_invalid(item, invalid)

    source.left_out, source.on_chunk = left_out, progress
    with delivering(runtime, timeout, tick=lambda: progress(done_reading=True), source=source.name) as delivery:
        delivery.room.on_wait = progress  # the bars move while reading waits for room
        run(source, runtime.intake(source.name, room=delivery.room))
    report = source.report
    if source.stopped is not None:  # the row that stopped the reading
        invalid += 1
    return Summary(
        read=report.events + invalid + source.duplicates,
        invalid=invalid,
        skipped=dict(report.skipped),
        operations_enqueued=report.operations,
        duplicates=source.duplicates,
        stopped=source.stopped,
        **delivery.figures(),
    )
