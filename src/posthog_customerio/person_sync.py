"""Keeping people in sync from ``serve`` (``PERSON_SYNC_INTERVAL_S``): a pass of PostHog's persons list on a
schedule, in a background thread, delivered by the service's own workers.

* **A pass** reads the persons list (:func:`~.sources.persons.api_batches`: a page per batch, from the
  checkpoint in the data dir) and stores each page with :meth:`~.ingestion.Ingestor.ingest_persons`, then
  wakes the delivery workers of this process (no other deliverer is started: with ``--role ingest`` the
  ``deliver`` replicas send it). A person unchanged since the last pass maps to nothing (its fingerprint),
  so a pass sends only what changed. The page's checkpoint is saved when the next page is asked for, i.e.
  after the page was stored: a pass stopped anywhere never has a checkpoint ahead of what was stored.
* **The schedule**: ``interval_s`` from the end of one pass to the start of the next, whichever replica ran
  them. The last pass's start, end and outcome are kept in the database (``status_snapshot`` row
  ``person_sync``), so a restart waits for the rest of the interval, and a pass that never ended (a stop, a
  crash) starts again at once. A pass that did not finish (failed, stopped) is resumed from the checkpoint
  when this data dir holds that pass's checkpoint; otherwise (PostgreSQL: another replica ran it, its
  checkpoint is in that replica's data dir) it starts over from the first page: idempotence makes the re-read
  cheap, though it costs PostHog API requests again.
* **One pass at a time**: each turn takes :meth:`~.storage.Storage.person_sync_lock` without waiting and holds
  it for the whole pass (PostgreSQL: a session advisory lock, so one replica at a time; SQLite: a ``flock``).
  A replica that finds it taken skips that turn (counted as ``skipped``).
* **Failures** (PostHog down or refusing the key, a database error) end the pass: logged at WARNING (the
  messages never hold the key), counted, and tried again an interval later; the service keeps serving.
* **Stopping** (:meth:`PersonSync.stop`): the pass stops before asking for the next page, and the client's
  waits (pacing, back-off) end at once.

:meth:`PersonSync.status` is the ``person_sync`` section of ``/api/status``; :mod:`.metrics` exports the counters.
"""

from __future__ import annotations

import calendar
import contextlib
import logging
import math
import time
from collections.abc import Callable, Generator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .config import ConfigError, Settings
from .ingestion import IngestReport
from .schedule import OUTCOMES, Schedule, ScheduledPasses, parse_schedule
from .sources.persons import CHECKPOINT_FILE, Batches, api_batches
from .sources.posthog_api import CheckpointError, PersonsCheckpoint, PersonsProgress, PostHogPersonsClient

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = [
    "API_SETTINGS",
    "OUTCOMES",
    "PassRecord",
    "PersonSync",
    "Schedule",
    "missing_api_settings",
    "parse_schedule",
    "persons_client",
]

log = logging.getLogger(__name__)

#: what PostHog's private API needs, by variable
API_SETTINGS = ("POSTHOG_API_HOST", "POSTHOG_PROJECT_ID", "POSTHOG_PERSONAL_API_KEY")
#: the ``status_snapshot`` row holding the last pass (shared by replicas)
SCHEDULE_KEY = "person_sync"
#: tries of one request within a pass (a few seconds of back-off): past them the pass fails, and the next
#: one, an interval later, resumes from the checkpoint
PASS_ATTEMPTS = 3


# -- settings ----------------------------------------------------------------------------------------
def _api_values(settings: Settings) -> dict[str, str]:
    key = settings.posthog_personal_api_key
    return {
        "POSTHOG_API_HOST": (settings.posthog_api_host or "").strip(),
        "POSTHOG_PROJECT_ID": (settings.posthog_project_id or "").strip(),
        "POSTHOG_PERSONAL_API_KEY": key.get_secret_value().strip() if key is not None else "",
    }


def missing_api_settings(settings: Settings) -> list[str]:
    """The variables of PostHog's private API that are not set (empty: all are)."""
    return [name for name, value in _api_values(settings).items() if not value]


def persons_client(
    settings: Settings, *, sleep: Callable[[float], None] = time.sleep, max_attempts: int = 8
) -> PostHogPersonsClient:
    """The persons list reader the settings describe (:class:`ConfigError` when one is missing or malformed;
    the message never holds the key). ``max_attempts``: tries of a request before the read fails."""
    missing = missing_api_settings(settings)
    if missing:
        raise ConfigError(f"set {', '.join(missing)}")
    values = _api_values(settings)
    try:
        return PostHogPersonsClient(
            values["POSTHOG_API_HOST"],
            values["POSTHOG_PROJECT_ID"],
            values["POSTHOG_PERSONAL_API_KEY"],
            max_per_minute=settings.posthog_api_max_per_minute,
            max_attempts=max_attempts,
            sleep=sleep,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


# -- what a pass did -----------------------------------------------------------------------------------
@dataclass(slots=True)
class PassRecord:
    """One pass: when, what it read and enqueued, how it ended (``running``, ``ok``, ``failed``, ``stopped``)."""

    started_at: float
    ended_at: float | None = None
    outcome: str = "running"
    persons_read: int = 0
    operations_enqueued: int = 0
    #: persons an interrupted pass had read before this one resumed it
    resumed_after: int = 0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        shown = asdict(self)
        shown["duration_s"] = None if self.ended_at is None else round(self.ended_at - self.started_at, 3)
        return shown


class _Stopped(Exception):
    """Raised in the reader's waits once :meth:`PersonSync.stop` was called: the pass ends there."""


# -- the schedule ------------------------------------------------------------------------------------------
class PersonSync(ScheduledPasses):
    """Runs a pass of the persons list every ``interval_s`` in a daemon thread (see the module's docs).

    ``client``: the reader (default: from the runtime's settings, its waits cut short by :meth:`stop`).
    """

    name = "person sync"
    schedule_key = SCHEDULE_KEY
    stopped_error = _Stopped

    def __init__(
        self,
        runtime: Runtime,
        interval_s: float,
        *,
        client: PostHogPersonsClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(runtime, interval_s, clock, client)
        path = runtime.settings.posthog_customerio_data_dir / CHECKPOINT_FILE
        self.checkpoint = PersonsCheckpoint(path, scope=self.client.scope)
        self.persons_read = 0
        self.operations_enqueued = 0
        self.current: PassRecord | None = None
        self.last: PassRecord | None = None

    def lock(self) -> AbstractContextManager[bool]:
        """:meth:`~.storage.Storage.person_sync_lock`."""
        return self.runtime.db.person_sync_lock()

    # -- one pass --
    def _run_pass(self, previous: Schedule | None) -> None:
        record = PassRecord(started_at=self.clock())
        last_ok = previous.last_ok_at if previous is not None else None
        with self._lock:
            self.current = record
        try:
            self._record(record.started_at, None, False, last_ok)
            finished = self._read_pages(record, previous)
        except _Stopped:
            finished = False
        except Exception as exc:
            self._failed(record, exc, last_ok)
            return
        self._ended(record, finished)

    def _read_pages(self, record: PassRecord, previous: Schedule | None) -> bool:
        """Store page after page; False when stopped before the last one."""
        batches = self._batches(previous)
        record.resumed_after = batches.resumed_after
        pages = batches.batches
        room = self.runtime.room("persons", stop=self._stop.is_set)
        try:
            if not room.wait():  # half of OUTBOX_MAX_QUEUED queued: no page is asked for meanwhile
                return False
            for batch in pages:
                self._stored(record, self.runtime.ingestor.ingest_persons(batch))
                # before asking for the next page: a page not asked for has no checkpoint saved
                if self._stop.is_set() or not room.wait():
                    return False
            return True
        finally:
            if isinstance(pages, Generator):
                pages.close()

    def _batches(self, previous: Schedule | None) -> Batches:
        """The persons list from this data dir's checkpoint when it is the unfinished pass's, else from the start."""
        try:
            progress = self.checkpoint.load()
        except CheckpointError as exc:
            log.warning("person sync: %s; starting from the first page", exc)
            progress = None
            self.checkpoint.clear()
        if progress is not None and not progress.done and not _resumable(progress, previous):
            self.checkpoint.clear()  # left by an older pass that another replica has finished since
        return api_batches(self.client, self.checkpoint)

    def _stored(self, record: PassRecord, report: IngestReport) -> None:
        with self._lock:
            record.persons_read += report.events
            record.operations_enqueued += report.operations
            self.persons_read += report.events
            self.operations_enqueued += report.operations
        deliverer = self.runtime.current_deliverer
        if report.operations and deliverer is not None:
            deliverer.notify()

    def _ended(self, record: PassRecord, finished: bool) -> None:
        record.ended_at = self.clock()
        record.outcome = "ok" if finished else "stopped"
        if finished:
            self._record(record.started_at, record.ended_at, True, record.ended_at)
        with self._lock:
            self.current, self.last = None, record
            if finished:
                self.last_ok_at = record.ended_at
                self.turns["ok"] += 1
        if finished:
            log.info(
                "person sync: %d persons read, %d operations enqueued in %.1fs",
                record.persons_read,
                record.operations_enqueued,
                record.ended_at - record.started_at,
            )
        else:  # the recorded start without an end makes the next start resume it
            log.info("person sync: stopped after %d persons; the next start resumes", record.persons_read)

    def _failed(self, record: PassRecord, exc: Exception, last_ok: float | None) -> None:
        record.ended_at, record.outcome = self.clock(), "failed"
        record.error = str(exc) or type(exc).__name__
        with contextlib.suppress(Exception):  # the database may be what failed
            self._record(record.started_at, record.ended_at, False, last_ok)
        with self._lock:
            self.current, self.last = None, record
            self.last_error, self.last_error_at = record.error, record.ended_at
            self.turns["failed"] += 1
        log.warning(
            "person sync: the pass failed after %d persons: %s (retrying in %gs)",
            record.persons_read,
            record.error,
            self.interval_s,
        )

    # -- what it shows --
    def status(self) -> dict[str, Any]:
        """The ``person_sync`` section of the status report."""
        with self._lock:
            return {
                "interval_s": self.interval_s,
                "running": self.current is not None,
                "passes": dict(self.turns),
                "persons_read": self.persons_read,
                "operations_enqueued": self.operations_enqueued,
                "current_pass": self.current.as_dict() if self.current is not None else None,
                "last_pass": self.last.as_dict() if self.last is not None else None,
                "last_ok_at": self.last_ok_at,
                "last_error": self.last_error,
                "last_error_at": self.last_error_at,
            }


def _resumable(progress: PersonsProgress, previous: Schedule | None) -> bool:
    """Whether an unfinished checkpoint is the one of the last pass, which did not finish (saved since it began)."""
    if previous is None:  # no pass recorded yet (e.g. a sync-persons run was interrupted here)
        return True
    return not previous.finished and _saved_at(progress) >= math.floor(previous.started_at)


def _saved_at(progress: PersonsProgress) -> float:
    try:
        return float(calendar.timegm(time.strptime(progress.updated_at, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return 0.0
