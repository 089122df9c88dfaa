"""What ``serve``'s scheduled jobs (:mod:`.person_sync`, :mod:`.cohort_sync`) share: a pass every ``interval_s`` in
a daemon thread, one process at a time, the schedule kept in the database.

* **The schedule**: ``interval_s`` from the end of one pass to the start of the next, whichever replica ran them.
  The last pass's start, end and outcome are kept in the database (a ``status_snapshot`` row, :attr:`schedule_key`),
  so a restart waits for the rest of the interval, and a pass that never ended (a stop, a crash) starts again at
  once.
* **One pass at a time**: each turn takes the job's lock (:meth:`ScheduledPasses.lock`) without waiting and holds it
  for the whole pass; a process that finds it taken skips that turn (counted as ``skipped``).
* **Stopping**: :meth:`~ScheduledPasses.stop` ends the waits of the job's PostHog client (its ``sleep`` is
  :meth:`~ScheduledPasses._pause`, which raises :attr:`~ScheduledPasses.stopped_error`).

A subclass names itself, its lock and its stop error, builds ``client`` and runs one pass in :meth:`_run_pass`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from .sources.posthog_api import PostHogPersonsClient

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = ["OUTCOMES", "Schedule", "ScheduledPasses", "parse_schedule"]

log = logging.getLogger(__name__)

#: how a turn of the schedule ended: a pass done, a pass failed, or the lock held by another process
OUTCOMES = ("ok", "failed", "skipped")


@dataclass(frozen=True, slots=True)
class Schedule:
    """The last pass of any replica, as the database keeps it."""

    started_at: float
    #: None: the pass never ended (stopped, or its process died)
    ended_at: float | None
    #: it ran to its end (else it failed or was stopped: the next pass resumes it)
    finished: bool
    #: when the newest pass that succeeded ended (None: none yet)
    last_ok_at: float | None

    def due_in(self, interval_s: float, now: float) -> float:
        """Seconds until the next pass (0: now, also when the last one never ended)."""
        return 0.0 if self.ended_at is None else max(0.0, self.ended_at + interval_s - now)


def _as_float(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def parse_schedule(text: str) -> Schedule | None:
    """The stored row (None when unreadable: the next pass starts at once)."""
    with contextlib.suppress(ValueError):
        data = json.loads(text)
        if isinstance(data, dict) and (started := _as_float(data.get("started_at"))) is not None:
            ended, finished = _as_float(data.get("ended_at")), data.get("finished") is True
            return Schedule(started, ended, finished, _as_float(data.get("last_ok_at")))
    return None


class ScheduledPasses(ABC):
    """A pass every ``interval_s`` in a daemon thread (see the module's docs); counters behind ``_lock``."""

    #: the job's name in logs and its thread's name
    name: ClassVar[str]
    #: the ``status_snapshot`` row holding the last pass (shared by replicas)
    schedule_key: ClassVar[str]
    #: raised in the client's waits once :meth:`stop` was called
    stopped_error: ClassVar[type[Exception]]
    #: the PostHog reader (built by the subclass, with :meth:`_pause` as its ``sleep``)
    client: PostHogPersonsClient

    def __init__(
        self,
        runtime: Runtime,
        interval_s: float,
        clock: Callable[[], float] = time.time,
        client: PostHogPersonsClient | None = None,
    ) -> None:
        """``client``: the PostHog reader (default: from the runtime's settings, its waits cut short by :meth:`stop`,
        a request tried a few times before the pass fails: the next one resumes)."""
        self.runtime = runtime
        self.interval_s = interval_s
        self.clock = clock
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.turns: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self.last_ok_at: float | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self._thread: threading.Thread | None = None
        if client is None:
            from .person_sync import PASS_ATTEMPTS, persons_client  # the settings' reader lives with the persons job

            client = persons_client(runtime.settings, sleep=self._pause, max_attempts=PASS_ATTEMPTS)
        self.client = client

    @abstractmethod
    def lock(self) -> AbstractContextManager[bool]:
        """The storage lock one pass holds (True: this process has it)."""

    @abstractmethod
    def _run_pass(self, previous: Schedule | None) -> None:
        """Run one pass (it records its start and end with :meth:`_record`); never raises."""

    # -- lifecycle --
    def start(self) -> None:
        """The first turn now (in the thread: the service answers meanwhile), then one every interval."""
        self._thread = threading.Thread(target=self._run, name=self.name.replace(" ", "-"), daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the page being stored (saved progress stays consistent); wait up to ``timeout`` seconds."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.client.close()

    def _run(self) -> None:
        wait = 0.0
        while not self._stop.wait(wait):
            wait = self._turn_safely()

    def _pause(self, seconds: float) -> None:
        """The reader's sleep (pacing, back-off): cut short by :meth:`stop`, which ends the pass."""
        if self._stop.wait(seconds):
            raise self.stopped_error

    def _turn_safely(self) -> float:
        try:
            return self.turn()
        except Exception as exc:  # the database is down: try again later, keep serving
            log.warning("%s: could not check the schedule: %s (retrying in %gs)", self.name, exc, self.interval_s)
            return self.interval_s

    # -- one turn --
    def turn(self) -> float:
        """A pass if one is due and no other process runs one; the seconds until the next turn."""
        with self.lock() as held:
            if not held:
                self._count("skipped")
                log.debug("%s: another process is running a pass; skipped", self.name)
                return self.interval_s
            schedule = self._schedule()
            wait = schedule.due_in(self.interval_s, self.clock()) if schedule is not None else 0.0
            if wait > 0:
                return wait
            self._run_pass(schedule)
        return self.interval_s

    def _schedule(self) -> Schedule | None:
        stored = self.runtime.db.load_status(self.schedule_key)
        schedule = parse_schedule(stored.value) if stored is not None else None
        if schedule is not None and schedule.last_ok_at is not None:
            with self._lock:
                self.last_ok_at = max(self.last_ok_at or 0.0, schedule.last_ok_at)
        return schedule

    def _record(self, started_at: float, ended_at: float | None, finished: bool, last_ok_at: float | None) -> None:
        """Keep the pass in the database (the schedule every replica reads)."""
        value = {"started_at": started_at, "ended_at": ended_at, "finished": finished, "last_ok_at": last_ok_at}
        self.runtime.db.save_status(self.schedule_key, json.dumps(value), self.clock())

    def _count(self, outcome: str) -> None:
        with self._lock:
            self.turns[outcome] += 1
