"""Keeping cohorts in sync from ``serve`` (``COHORT_SEGMENTS`` / ``COHORT_ATTRIBUTES``): a pass over the configured
PostHog cohorts every ``COHORT_SYNC_INTERVAL_S``, in a background thread, delivered by the service's own workers.

* **A pass** is what ``sync-cohorts`` runs once (:class:`~.sources.cohorts.CohortSyncer`): each cohort's members,
  page by page, members that joined added and those that left removed, each step one transaction; the operations
  wake the delivery workers of this process (no other deliverer is started: with ``--role ingest`` the
  ``deliver`` replicas send them). Where each cohort's pass stands lives in the database (``cohort_syncs``), so a
  pass stopped or failed anywhere is resumed by the next one, on any replica, without sending anything twice.
* **The schedule**: ``interval_s`` from the end of one pass to the start of the next, whichever replica ran
  them. The last pass's start, end and outcome are kept in the database (``status_snapshot`` row
  ``cohort_sync``), so a restart waits for the rest of the interval, and a pass that never ended (a stop, a
  crash) starts again at once.
* **One pass at a time**: each turn takes :meth:`~.storage.Storage.cohort_sync_lock` without waiting and holds
  it for the whole pass (PostgreSQL: a session advisory lock, so one replica at a time, and never alongside a
  ``sync-cohorts``; SQLite: a ``flock``). A replica that finds it taken skips that turn (counted as ``skipped``).
* **Failures**: a cohort PostHog cannot serve (down, 404, deleted) changes nothing in Customer.io and is reported
  in its row (:func:`~.sources.cohorts.cohort_status`); a pass in which a cohort failed to read, PostHog refused
  the key, or the database failed is ``failed``: logged at WARNING (the messages never hold the key), counted,
  and tried again an interval later; the service keeps serving.
* **Stopping** (:meth:`CohortSync.stop`): the pass stops before asking for the next page, and the client's waits
  (pacing, back-off) end at once.

:meth:`CohortSync.status` is the counters of the ``cohort_sync`` section of ``/api/status`` (the cohorts
themselves come from the database, :func:`~.sources.cohorts.cohort_status`); :mod:`.metrics` exports them.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .schedule import OUTCOMES, Schedule, ScheduledPasses
from .sources.cohorts import CohortReport, CohortSyncer, Stopped, configured_cohorts
from .sources.posthog_api import PostHogPersonsClient

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = ["COHORT_FAILURES", "OUTCOMES", "SCHEDULE_KEY", "CohortPassRecord", "CohortSync"]

log = logging.getLogger(__name__)

#: how one cohort's pass can end other than ``ok`` (``stopped`` aside: the next pass resumes it)
COHORT_FAILURES = ("suspicious_empty", "deleted", "not_found", "failed")
#: the ``status_snapshot`` row holding the last pass (shared by replicas)
SCHEDULE_KEY = "cohort_sync"


@dataclass(slots=True)
class CohortPassRecord:
    """One pass over the cohorts: when, what it changed, how it ended (``running``, ``ok``, ``failed``,
    ``stopped``), and each cohort's outcome."""

    started_at: float
    ended_at: float | None = None
    outcome: str = "running"
    #: cohort id -> how its pass ended
    cohorts: dict[str, str] = field(default_factory=dict)
    added: int = 0
    removed: int = 0
    operations_enqueued: int = 0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        shown = asdict(self)
        shown["duration_s"] = None if self.ended_at is None else round(self.ended_at - self.started_at, 3)
        return shown


class CohortSync(ScheduledPasses):
    """Runs a pass over the configured cohorts every ``interval_s`` in a daemon thread (see the module's docs).

    ``client``: the reader (default: from the runtime's settings, its waits cut short by :meth:`stop`).
    """

    name = "cohort sync"
    schedule_key = SCHEDULE_KEY
    stopped_error = Stopped

    def __init__(
        self,
        runtime: Runtime,
        interval_s: float,
        *,
        client: PostHogPersonsClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(runtime, interval_s, clock, client)
        self.cohorts = sorted(configured_cohorts(runtime.settings), key=int)
        #: cohorts' passes that did not end ``ok``, by outcome (this process)
        self.cohort_failures: dict[str, int] = dict.fromkeys(COHORT_FAILURES, 0)
        self.added = 0
        self.removed = 0
        self.operations_enqueued = 0
        self.current: CohortPassRecord | None = None
        self.last: CohortPassRecord | None = None

    def lock(self) -> AbstractContextManager[bool]:
        """:meth:`~.storage.Storage.cohort_sync_lock`."""
        return self.runtime.db.cohort_sync_lock()

    # -- one pass --
    def _run_pass(self, previous: Schedule | None) -> None:
        record = CohortPassRecord(started_at=self.clock())
        last_ok = previous.last_ok_at if previous is not None else None
        with self._lock:
            self.current = record
        try:
            self._record(record.started_at, None, False, last_ok)
            room = self.runtime.room("cohorts", stop=self._stop.is_set)
            syncer = CohortSyncer(self.runtime, self.client, clock=self.clock, stop=self._stop.is_set, room=room)
            for cohort_id in self.cohorts:
                if self._stop.is_set():
                    record.outcome = "stopped"
                    break
                report = syncer.sync_cohort(cohort_id)
                self._tally(record, report)
                if report.outcome == "stopped":
                    record.outcome = "stopped"
                    break
        except Exception as exc:  # PostHog refused the key, the database failed
            self._failed(record, str(exc) or type(exc).__name__, last_ok)
            return
        unread = [cohort_id for cohort_id, outcome in record.cohorts.items() if outcome == "failed"]
        if record.outcome == "stopped":
            self._stopped(record)
        elif unread:
            self._failed(record, record.error or f"cohort {unread[0]} could not be read", last_ok)
        else:
            self._ended(record)

    def _tally(self, record: CohortPassRecord, report: CohortReport) -> None:
        added, removed = sum(report.added.values()), sum(report.removed.values())
        with self._lock:
            record.cohorts[report.cohort_id] = report.outcome
            record.added += added
            record.removed += removed
            record.operations_enqueued += report.operations_enqueued
            if report.outcome == "failed" and record.error is None:
                record.error = f"cohort {report.cohort_id}: {report.error}"
            self.added += added
            self.removed += removed
            self.operations_enqueued += report.operations_enqueued
            if report.outcome in self.cohort_failures:
                self.cohort_failures[report.outcome] += 1

    def _ended(self, record: CohortPassRecord) -> None:
        record.ended_at, record.outcome = self.clock(), "ok"
        self._record(record.started_at, record.ended_at, True, record.ended_at)
        with self._lock:
            self.current, self.last = None, record
            self.last_ok_at = record.ended_at
            self.turns["ok"] += 1
        log.info(
            "cohort sync: %d cohorts, %d members added, %d removed, %d operations enqueued in %.1fs",
            len(record.cohorts),
            record.added,
            record.removed,
            record.operations_enqueued,
            record.ended_at - record.started_at,
        )

    def _stopped(self, record: CohortPassRecord) -> None:
        """Stopped (the service shutting down): no end recorded, so the next start resumes at once."""
        record.ended_at = self.clock()
        with self._lock:
            self.current, self.last = None, record
        log.info("cohort sync: stopped; the next start resumes the pass")

    def _failed(self, record: CohortPassRecord, error: str, last_ok: float | None) -> None:
        record.ended_at, record.outcome, record.error = self.clock(), "failed", error
        with contextlib.suppress(Exception):  # the database may be what failed
            self._record(record.started_at, record.ended_at, False, last_ok)
        with self._lock:
            self.current, self.last = None, record
            self.last_error, self.last_error_at = error, record.ended_at
            self.turns["failed"] += 1
        log.warning("cohort sync: the pass failed: %s (retrying in %gs)", error, self.interval_s)

    # -- what it shows --
    def status(self) -> dict[str, Any]:
        """This process's counters of the ``cohort_sync`` section of the status report."""
        with self._lock:
            return {
                "interval_s": self.interval_s,
                "running": self.current is not None,
                "passes": dict(self.turns),
                "adds": self.added,
                "removes": self.removed,
                "operations_enqueued": self.operations_enqueued,
                "cohort_failures": dict(self.cohort_failures),
                "current_pass": self.current.as_dict() if self.current is not None else None,
                "last_pass": self.last.as_dict() if self.last is not None else None,
                "last_ok_at": self.last_ok_at,
                "last_error": self.last_error,
                "last_error_at": self.last_error_at,
            }
