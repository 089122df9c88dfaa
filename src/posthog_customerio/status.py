"""The status report: one JSON document for ``/api/status``, the status page and
``posthog-customerio status``.

A running service samples its counters every second (throughput over the last
minute) and saves a snapshot to the database every few seconds, so the ``status``
command can show the same figures from the data directory alone. The stored figures
(queue, dead letters, people) come from one :class:`Snapshot`, read in one pass;
the Prometheus metrics are built from the same object.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any

from . import __version__
from .outbox import DeadLetter
from .runtime import Runtime

__all__ = [
    "RequestLog",
    "Snapshot",
    "ThroughputSampler",
    "build_status",
    "dead_letter_detail",
    "load_snapshot",
    "offline_status",
    "save_snapshot",
    "take_snapshot",
]

_SNAPSHOT_KEY = "service"
_DEAD_LETTERS_SHOWN = 50


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The outbox and people figures of the status report and the metrics, read in one pass."""

    depth: int
    in_flight: int
    oldest_age_s: float
    dead_letters: int
    #: the oldest dead letters (as many as asked for)
    dead_letter_rows: list[DeadLetter]
    #: operations this process moved to the dead-letter table
    dead_lettered_total: int
    #: distinct_ids known (``None`` when not asked for)
    persons: int | None


#: per runtime: (monotonic time of the last full count, the count, persons_added then)
_PERSONS_COUNTED: weakref.WeakKeyDictionary[Runtime, tuple[float, int, int]] = weakref.WeakKeyDictionary()


def take_snapshot(
    runtime: Runtime, dead_letters: int = _DEAD_LETTERS_SHOWN, persons: bool = True, persons_max_age_s: float = 60.0
) -> Snapshot:
    """The stored figures now: one read of the storage (plus this process's in-memory counts).

    People are fully counted at most once per ``persons_max_age_s`` (a big table takes a
    while), plus the people this process stored since, so the figure is always current
    (other replicas' new people show up at the next full count).
    """
    added = runtime.ingestor.totals.persons_added
    cached = _PERSONS_COUNTED.get(runtime)
    recount = persons and (cached is None or time.monotonic() - cached[0] >= persons_max_age_s)
    stored = runtime.db.snapshot(dead_letters, persons=recount)
    known: int | None = None
    if stored.persons is not None:  # an ingestion recorded while we counted is (almost surely) in the count
        _PERSONS_COUNTED[runtime] = (time.monotonic(), stored.persons, added)
        known = stored.persons
    elif persons and cached is not None:
        known = cached[1] + added - cached[2]
    oldest = stored.oldest_enqueued_at
    return Snapshot(
        depth=stored.depth,
        in_flight=runtime.outbox.in_flight(),
        oldest_age_s=0.0 if oldest is None else max(0.0, time.time() - oldest),
        dead_letters=stored.dead_letters,
        dead_letter_rows=[DeadLetter(*row) for row in stored.dead_letter_rows],
        dead_lettered_total=runtime.outbox.dead_lettered_total,
        persons=known,
    )


class RequestLog:
    """Rejected requests (by reason), events the proxy could not store, PostHog answers: counts + recent errors."""

    def __init__(self, keep: int = 20) -> None:
        self._lock = threading.Lock()
        self.rejected: dict[str, int] = {}
        self.not_stored: dict[str, int] = {}
        self.proxied: dict[str, int] = {}
        self.recent: deque[tuple[float, str]] = deque(maxlen=keep)

    def rejection(self, reason: str, message: str) -> None:
        """A request answered 4xx by our receivers."""
        with self._lock:
            self.rejected[reason] = self.rejected.get(reason, 0) + 1
            self.recent.append((time.time(), message))

    def not_stored_event(self, reason: str, message: str) -> None:
        """A proxied capture request forwarded to PostHog but not stored for Customer.io."""
        with self._lock:
            self.not_stored[reason] = self.not_stored.get(reason, 0) + 1
            self.recent.append((time.time(), message))

    def proxied_request(self, status: str, message: str | None = None) -> None:
        """A request forwarded to PostHog, by PostHog's status (``error`` = unreachable)."""
        with self._lock:
            self.proxied[status] = self.proxied.get(status, 0) + 1
            if message:
                self.recent.append((time.time(), message))


class ThroughputSampler:
    """Samples received/delivered totals each second; rates over a sliding window."""

    def __init__(self, runtime: Runtime, window_s: int = 60, save_every_s: float = 5.0) -> None:
        self.runtime = runtime
        self.window_s = window_s
        self.save_every_s = save_every_s
        self.samples: deque[tuple[float, int, int]] = deque(maxlen=window_s + 1)
        self.started_at = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.requests: RequestLog | None = None  # set by the service: rejections join the recent errors

    def sample(self) -> None:
        """Record the current totals."""
        deliverer = self.runtime.current_deliverer
        delivered = deliverer.stats.delivered if deliverer else 0
        self.samples.append((time.monotonic(), self.runtime.ingestor.totals.events, delivered))

    def rates(self) -> dict[str, float]:
        """Events received and operations delivered per second over the window."""
        if len(self.samples) < 2:
            return {"events_per_s": 0.0, "operations_delivered_per_s": 0.0, "window_s": 0.0}
        (t0, received0, delivered0), (t1, received1, delivered1) = self.samples[0], self.samples[-1]
        span = max(t1 - t0, 1e-9)
        return {
            "events_per_s": round((received1 - received0) / span, 2),
            "operations_delivered_per_s": round((delivered1 - delivered0) / span, 2),
            "window_s": round(span, 1),
        }

    def start(self) -> None:
        """Sample every second and save a snapshot every ``save_every_s``, in a thread."""
        self.started_at = time.time()
        self.sample()
        self._save()  # `posthog-customerio status` sees the service from its first second
        self._thread = threading.Thread(target=self._run, name="status-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling and save a last snapshot."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._save()

    def _run(self) -> None:
        last_save = time.monotonic()
        while not self._stop.wait(1.0):
            self.sample()
            if time.monotonic() - last_save >= self.save_every_s:
                self._save()
                last_save = time.monotonic()

    def _save(self) -> None:
        with contextlib.suppress(Exception):  # a full disk must not kill the sampler; /readyz reports it
            save_snapshot(self.runtime, build_status(self.runtime, self))


def build_status(
    runtime: Runtime, sampler: ThroughputSampler | None = None, snapshot: Snapshot | None = None
) -> dict[str, Any]:
    """The live status of this process's runtime (from ``snapshot``, or one taken now)."""
    snap = snapshot if snapshot is not None else take_snapshot(runtime)
    deliverer = runtime.current_deliverer
    stats = deliverer.stats if deliverer is not None else None
    ingestor = runtime.ingestor
    return {
        "version": __version__,
        "generated_at": time.time(),
        "uptime_s": round(time.time() - sampler.started_at, 1) if sampler else None,
        "throughput": sampler.rates() if sampler else None,
        "ingest": {
            "events_received": ingestor.totals.events,
            "events_invalid": sum(ingestor.invalid_by_source.values()),
            "events_filtered": dict(ingestor.totals.skipped),
            "operations_enqueued": ingestor.totals.operations,
            "by_source": dict(ingestor.received_by_source),
        },
        "delivery": {
            "state": deliverer.state if deliverer else "stopped",
            "api": runtime.settings.customerio_api,
            "auth_error": deliverer.auth_error if deliverer else None,
            "delivered": stats.delivered if stats else 0,
            "dead_lettered": snap.dead_lettered_total,
            "retries": stats.retries if stats else 0,
            "requests": stats.requests if stats else 0,
            "requests_by_status": dict(stats.requests_by_status) if stats else {},
            "last_error": stats.last_error if stats else None,
            "last_error_at": stats.last_error_at if stats else None,
        },
        "recent_errors": _recent_errors(stats, sampler.requests if sampler else None),
        "requests_rejected": dict(sampler.requests.rejected) if sampler and sampler.requests else {},
        "outbox": {
            "depth": snap.depth,
            "in_flight": snap.in_flight,
            "oldest_age_s": round(snap.oldest_age_s, 3),
            "dead_letters": snap.dead_letters,
        },
        "persons": snap.persons,
        "dead_letters": _summarise(snap.dead_letter_rows),
    }


def _recent_errors(stats: Any, requests: RequestLog | None) -> list[dict[str, Any]]:
    """Delivery errors and rejected requests, oldest first."""
    errors = list(stats.recent_errors if stats else ())
    if requests is not None:
        errors.extend(requests.recent)
        errors.sort(key=lambda item: item[0])
    return [{"at": at, "message": message} for at, message in errors]


def dead_letter_rows(runtime: Runtime, limit: int = _DEAD_LETTERS_SHOWN) -> list[dict[str, Any]]:
    """The oldest dead letters, summarised for display."""
    return _summarise(runtime.outbox.dead_letters(limit))


def dead_letter_detail(runtime: Runtime, letter_id: int) -> dict[str, Any] | None:
    """One dead letter with its payload parsed (``None`` when there is none)."""
    with runtime.db.reading() as tx:
        row = tx.dead_letter_row(letter_id)
    if row is None:
        return None
    detail = DeadLetter(*row).as_dict()
    with contextlib.suppress(ValueError):
        detail["payload"] = json.loads(detail["payload"])
    return detail


def _summarise(letters: list[DeadLetter]) -> list[dict[str, Any]]:
    rows = []
    for letter in letters:
        payload = json.loads(letter.payload)
        rows.append(
            {
                "id": letter.id,
                "person_key": letter.person_key,
                "action": payload.get("action"),
                "name": payload.get("name"),
                "reason": letter.reason,
                "status": letter.status,
                "attempts": letter.attempts,
                "failed_at": letter.failed_at,
            }
        )
    return rows


def save_snapshot(runtime: Runtime, status: dict[str, Any]) -> None:
    """Store a status snapshot for ``posthog-customerio status``."""
    runtime.db.save_status(_SNAPSHOT_KEY, json.dumps(status), time.time())


def load_snapshot(runtime: Runtime) -> tuple[dict[str, Any], float] | None:
    """The last snapshot a service saved, and when; ``None`` if there is none."""
    row = runtime.db.load_status(_SNAPSHOT_KEY)
    return (json.loads(row[0]), row[1]) if row else None


def offline_status(runtime: Runtime) -> dict[str, Any]:
    """Status from the data directory alone: live queue figures + the last saved snapshot."""
    status = build_status(runtime)
    snapshot = load_snapshot(runtime)
    status["service"] = None
    if snapshot is not None:
        saved, updated_at = snapshot
        for key in ("uptime_s", "throughput", "ingest", "delivery", "recent_errors", "requests_rejected"):
            status[key] = saved.get(key)
        status["service"] = {"snapshot_at": updated_at, "snapshot_age_s": round(time.time() - updated_at, 1)}
    return status
