"""Customer.io's message activity back into PostHog: the durable queue, placement on the right person, capture.

* :class:`ActivityInbox` stores a verified reporting webhook (``POST /webhooks/customerio``) in ``activity_queue``
  under Customer.io's ``event_id``: a retry of the same webhook is stored once, and the request is answered as
  soon as the row is committed (Customer.io waits 4 s: https://docs.customer.io/api/webhooks/, "Timeouts and
  failures").
* :class:`ActivityRelay` (a thread of a process that delivers) claims due rows (leased: one replica at a time
  per row on PostgreSQL), **places** each on the PostHog distinct_id of its profile (:func:`place`: by
  ``identifiers.id`` / ``customer_id``, then email, then an earlier activity's ``cio_id``; merges followed;
  never a guess), maps it (:func:`~.mapping.activity.capture_event`) and sends up to ``batch_size`` to
  PostHog's ``/batch/`` (:mod:`.output.posthog_capture`). A profile we cannot place is ``unplaced``: kept,
  counted and listed, placed again every ``placement_retry_s`` and on ``activity-retry``. PostHog's refusals
  are ``dead`` (replayable); 429, 5xx and no answer pause capture (``Retry-After`` wins, else :class:`Backoff`).
  Captured rows are kept ``keep_captured_s`` (longer than Customer.io's 7 days of retries) so a late retry
  is recognised, then forgotten.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .backoff import Backoff
from .mapping.activity import Activity, capture_event
from .mapping.identifiers import is_email
from .storage.activity_sql import ACTIVITY_KEY, ActivityRow, ActivitySettle

if TYPE_CHECKING:
    from .output.posthog_capture import PostHogCapture
    from .runtime import Runtime
    from .storage import Storage, Transaction

__all__ = [
    "COUNTER_KEY",
    "ActivityConfig",
    "ActivityInbox",
    "ActivityRelay",
    "ActivityStats",
    "activity_report",
    "activity_rows",
    "activity_section",
    "place",
    "requeue",
]

log = logging.getLogger(__name__)

#: the ``status_snapshot`` counters of the activity (all replicas, all time): ``customerio_activity:<name>``
COUNTER_KEY = ACTIVITY_KEY
#: how many merges :func:`place` follows at most
_MAX_HOPS = 20
_DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class ActivityConfig:
    """What the receiver and the relay read of the settings."""

    #: ``CUSTOMERIO_WEBHOOK_SIGNING_KEY`` ("": not set, the endpoint refuses every webhook)
    signing_key: str = ""
    #: ``CUSTOMERIO_WEBHOOK_TOLERANCE_S``
    tolerance_s: float = 300.0
    #: ``POSTHOG_HOST`` (capture destination)
    posthog_host: str | None = None
    #: ``POSTHOG_PROJECT_API_KEY`` ("": capture is off)
    project_api_key: str = ""
    max_body_bytes: int = 5_000_000
    #: a request to PostHog ends within this long (below the lease on PostgreSQL)
    timeout_s: float = 30.0
    lease_s: float = 10.0
    retry_after_max_s: float = 60.0

    @property
    def captures(self) -> bool:
        """Whether activity is sent to PostHog (``POSTHOG_HOST`` and ``POSTHOG_PROJECT_API_KEY`` set)."""
        return bool(self.posthog_host and self.project_api_key)


@dataclass
class ActivityStats:
    """This process's counts (the durable totals of all replicas are :data:`COUNTER_KEY` counters)."""

    received: int = 0
    verified: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    captured: int = 0
    unplaced: int = 0
    dead: int = 0
    posthog_errors: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, count: int = 1) -> None:
        """Add to a plain counter."""
        with self.lock:
            setattr(self, name, getattr(self, name) + count)

    def reject(self, reason: str) -> None:
        """Count a refused webhook."""
        with self.lock:
            self.rejected[reason] += 1

    def posthog_error(self, kind: str) -> None:
        """Count a failed request to PostHog (``kind``: its status, or ``network``)."""
        with self.lock:
            self.posthog_errors[kind] += 1

    def as_dict(self) -> dict[str, Any]:
        """The counts as JSON."""
        with self.lock:
            return {
                "received": self.received,
                "verified": self.verified,
                "stored": self.stored,
                "duplicates": self.duplicates,
                "rejected": dict(self.rejected),
                "captured": self.captured,
                "unplaced": self.unplaced,
                "dead": self.dead,
                "posthog_errors": dict(self.posthog_errors),
            }


class ActivityInbox:
    """Stores verified activity (the receiver's side)."""

    def __init__(self, db: Storage, stats: ActivityStats, clock: Callable[[], float] = time.time) -> None:
        self.db, self.stats, self.clock = db, stats, clock

    def store(self, activity: Activity) -> bool:
        """Store ``activity`` durably; False when its ``event_id`` was stored before (a retry: nothing new)."""
        now = self.clock()
        cio_id = activity.identifiers.get("cio_id")

        def work(tx: Transaction) -> bool:
            new = tx.insert_activity(activity.event_id, activity.to_json(), cio_id, now)
            tx.add_counters(COUNTER_KEY, {"stored" if new else "duplicates": 1}, now)
            return new

        new = self.db.transact(work)
        self.stats.add("stored" if new else "duplicates")
        return new


def place(tx: Transaction, activity: Activity) -> tuple[str | None, str]:
    """The PostHog distinct_id of ``activity``'s profile, and why not when ``None`` (never a guess).

    A Customer.io ``id`` is the distinct_id we made the profile with (with ``IDENTIFY_BY_EMAIL``, the profile may
    be known by email only); merged people resolve to the person they were merged into.
    """
    ids = list(dict.fromkeys(i for i in (activity.identifiers.get("id"), activity.customer_id) if i))
    for candidate in ids:
        if tx.select_persons([candidate]):
            return _survivor(tx, candidate), ""
    emails = [e for e in (activity.identifiers.get("email"), *ids) if e and is_email(e)]
    for email in dict.fromkeys(e.lower() for e in emails):
        people = {_survivor(tx, row.distinct_id) for row in tx.persons_by_email(email, 50)}
        if len(people) == 1:
            return people.pop(), ""
        if len(people) > 1:
            return None, f"{len(people)} people have the email of this profile"
    cio_id = activity.identifiers.get("cio_id")
    if cio_id:
        earlier = tx.placed_by_cio_id(cio_id)
        if earlier is not None:
            return _survivor(tx, earlier), ""
    shown = ", ".join(f"{k}={v}" for k, v in sorted(activity.identifiers.items())) or f"customer_id={ids}"
    return None, f"no person known for {shown}"


def _survivor(tx: Transaction, distinct_id: str) -> str:
    """Follow ``merged_into`` to the person ``distinct_id`` is part of now."""
    seen = {distinct_id}
    for _ in range(_MAX_HOPS):
        rows = tx.select_persons([distinct_id])
        target = rows[0].merged_into if rows else None
        if not target or target in seen:
            return distinct_id
        seen.add(target)
        distinct_id = target
    return distinct_id


@dataclass(slots=True)
class _Placed:
    row: ActivityRow
    activity: Activity
    distinct_id: str


class ActivityRelay:
    """Captures stored activity into PostHog in a background thread (a process that delivers)."""

    def __init__(
        self,
        db: Storage,
        capture: PostHogCapture,
        stats: ActivityStats,
        *,
        lease_s: float = 10.0,
        batch_size: int = 100,
        placement_retry_s: float = 60.0,
        keep_captured_s: float = 8 * _DAY,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db, self.capture, self.stats, self.clock = db, capture, stats, clock
        self.lease_s, self.batch_size = lease_s, batch_size
        self.placement_retry_s, self.keep_captured_s = placement_retry_s, keep_captured_s
        self.backoff = backoff or Backoff(base=1.0, cap=300.0)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        #: no request to PostHog before this (``Retry-After``, backoff)
        self.paused_until = 0.0
        self.last_error: str | None = None
        self._pruned_at = 0.0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the thread --
    def start(self) -> None:
        """Start capturing in the background."""
        self._thread = threading.Thread(target=self._run, name="activity-relay", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """Something was stored: look now."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the current request (rows not captured stay queued)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.capture.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                handled = self.run_once()
            except Exception as exc:  # a database hiccup: try again shortly
                log.warning("activity relay: %s: %s", type(exc).__name__, exc)
                handled = 0
            if handled < self.batch_size:
                pause = max(0.0, self.paused_until - self.clock())
                self._wake.wait(min(1.0, pause) if pause else 1.0)
                self._wake.clear()

    # -- one pass --
    def run_once(self) -> int:
        """Claim, place and capture one batch of due rows; how many rows were handled."""
        now = self.clock()
        if now < self.paused_until:
            return 0
        self._prune(now)
        rows = self.db.transact(
            lambda tx: tx.claim_activities(("queued", "unplaced"), self.owner, now, now + self.lease_s, self.batch_size)
        )
        if not rows:
            return 0
        placed, settles = self._place(rows, now)
        newly_unplaced = len({s.event_id for s in settles} & {r.event_id for r in rows if r.state == "queued"})
        failures: list[str] = []
        if placed:
            settles += self._send(placed, failures)
        self._settle(settles, newly_unplaced, failures)
        return len(rows)

    def _place(self, rows: Sequence[ActivityRow], now: float) -> tuple[list[_Placed], list[ActivitySettle]]:
        placed: list[_Placed] = []
        settles: list[ActivitySettle] = []
        with self.db.reading() as tx:
            for row in rows:
                activity = Activity.from_json(row.payload)
                distinct_id, why = place(tx, activity)
                if distinct_id is not None:
                    placed.append(_Placed(row, activity, distinct_id))
                    continue
                retry_at = now + self.placement_retry_s
                settles.append(ActivitySettle(row.event_id, "unplaced", None, row.attempts, why, retry_at, None))
        return placed, settles

    def _send(self, placed: list[_Placed], failures: list[str]) -> list[ActivitySettle]:
        """Send the placed rows (one request; after a refusal, one at a time to find the refused ones); each failed
        request's status (``network``: no answer) is added to ``failures``."""
        result = self.capture.send([capture_event(p.activity, p.distinct_id) for p in placed])
        if result.outcome != "ok":
            failures.append(str(result.status) if result.status is not None else "network")
        if result.outcome == "refused" and len(placed) > 1:
            return [settle for one in placed for settle in self._send([one], failures)]
        now = self.clock()
        if result.outcome == "ok":
            self.backoff.reset()
            return [
                ActivitySettle(p.row.event_id, "captured", p.distinct_id, p.row.attempts + 1, None, now, now)
                for p in placed
            ]
        self.last_error = result.error
        if result.outcome == "refused":
            log.warning("activity relay: PostHog refused an event for good (%s)", result.status)
            p = placed[0]
            return [ActivitySettle(p.row.event_id, "dead", p.distinct_id, p.row.attempts + 1, result.error, now, now)]
        delay = self.backoff.next_delay(result.retry_after)
        self.paused_until = now + delay
        log.info("activity relay: PostHog %s; capture paused %.1fs", result.status or "unreachable", delay)
        return [
            ActivitySettle(p.row.event_id, "queued", p.distinct_id, p.row.attempts + 1, result.error, now + delay, None)
            for p in placed
        ]

    def _settle(self, settles: list[ActivitySettle], unplaced: int, failures: list[str]) -> None:
        """Write the outcomes; count captured, dead, newly unplaced and PostHog errors (here and durably)."""
        counts = Counter(s.state for s in settles)
        named = {"captured": counts["captured"], "unplaced": unplaced, "dead": counts["dead"]}
        now = self.clock()

        def work(tx: Transaction) -> None:
            tx.settle_activities(self.owner, settles)
            tx.add_counters(COUNTER_KEY, {**named, "posthog_errors": len(failures)}, now)

        self.db.transact(work)
        for name, count in named.items():
            if count:
                self.stats.add(name, count)
        for failure in failures:
            self.stats.posthog_error(failure)

    def _prune(self, now: float) -> None:
        if now - self._pruned_at >= 60.0:
            self._pruned_at = now
            self.db.transact(lambda tx: tx.prune_activities(now - self.keep_captured_s))


def requeue(db: Storage, states: Sequence[str], event_ids: Sequence[str] | None = None) -> int:
    """Queue again (due now) the activities in ``states`` (``unplaced``, ``dead``), only ``event_ids`` when given;
    the relay places and captures them on its next pass. How many."""
    now = time.time()
    return db.transact(lambda tx: tx.requeue_activities(states, event_ids, now))


def activity_rows(db: Storage, states: Sequence[str], limit: int = 100) -> list[dict[str, Any]]:
    """Stored activities in ``states``, oldest first, as JSON (what ``activity`` lists; no message content)."""
    with db.reading() as tx:
        return [_row(row) for row in tx.activity_rows(states, limit)]


def _row(row: ActivityRow) -> dict[str, Any]:
    activity = Activity.from_json(row.payload)
    return {
        "event_id": row.event_id,
        "state": row.state,
        "object_type": activity.object_type,
        "metric": activity.metric,
        "identifiers": activity.identifiers,
        "distinct_id": row.distinct_id,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "received_at": row.received_at,
    }


def activity_section(
    runtime: Runtime, states: dict[str, int], totals: dict[str, int], waiting: Sequence[ActivityRow]
) -> dict[str, Any]:
    """The ``customerio_activity`` section of the status (from one storage snapshot): stored rows by state, the
    totals of every replica (``status_snapshot`` counters), this process's counts, the oldest unplaced and dead."""
    relay = runtime.activity_relay
    return {
        "receiving": bool(runtime.activity_config().signing_key),
        "capturing": relay is not None,
        "queued": states.get("queued", 0),
        "unplaced": states.get("unplaced", 0),
        "dead": states.get("dead", 0),
        "captured_kept": states.get("captured", 0),
        "totals": {name: totals.get(name, 0) for name in _TOTALS},
        "this_process": runtime.activity[0].as_dict(),
        "paused_until": relay.paused_until if relay is not None and relay.paused_until > time.time() else None,
        "last_error": relay.last_error if relay is not None else None,
        "waiting": [_row(row) for row in waiting],
    }


def activity_report(runtime: Runtime, listed: int = 100) -> dict[str, Any]:
    """:func:`activity_section` from one read, listing up to ``listed`` unplaced and dead rows (``activity``)."""
    with runtime.db.reading() as tx:
        states, totals = tx.activity_counts(), tx.counters(COUNTER_KEY)
        waiting = tx.activity_rows(("unplaced", "dead"), listed)
    return activity_section(runtime, states, totals, waiting)


#: the durable totals shown (``status_snapshot`` counters under :data:`COUNTER_KEY`)
_TOTALS = ("stored", "duplicates", "captured", "unplaced", "dead", "posthog_errors")
