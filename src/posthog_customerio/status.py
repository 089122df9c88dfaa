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
import dataclasses
import json
import os
import socket
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from . import __version__
from .activity import activity_section
from .backlog import REASONS
from .outbox import DeadLetter
from .runtime import Runtime

__all__ = [
    "RequestLog",
    "Snapshot",
    "ThroughputSampler",
    "build_status",
    "dead_letter_detail",
    "disk_status",
    "load_snapshot",
    "offline_status",
    "save_snapshot",
    "take_snapshot",
]

_SNAPSHOT_KEY = "service"
#: the window of person work's latency percentiles (:attr:`~.delivery.Deliverer.person_latency`)
PERSON_LATENCY_WINDOW_S = 300.0
_DEAD_LETTERS_SHOWN = 50
#: a replica whose last heartbeat is older than this is not counted (it saves every 5 s)
REPLICA_STALE_S = 30.0
#: replicas not seen for this long are forgotten
_REPLICA_FORGOTTEN_S = 7 * 86_400.0
#: per-replica figures in its heartbeat (the rest of a status report is read from the database)
_REPLICA_FIGURES = (
    "version",
    "uptime_s",
    "throughput",
    "ingest",
    "delivery",
    "recent_errors",
    "requests_rejected",
    "person_work",
    "person_sync",
    "cohort_sync",
    "outbox_bound",
)


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
    #: anonymous events waiting (part of ``depth``)
    anonymous_backlog: int = 0
    #: age of the first anonymous event in the queue (0 when none waits)
    anonymous_oldest_age_s: float = 0.0
    #: anonymous events dropped by the backlog bounds, every replica, all time: reason -> count
    anonymous_expired: dict[str, int] = field(default_factory=dict)
    #: Customer.io's message activity: stored rows by state, the replicas' totals, the oldest unplaced and dead
    activity_states: dict[str, int] = field(default_factory=dict)
    activity_totals: dict[str, int] = field(default_factory=dict)
    activity_waiting: list[Any] = field(default_factory=list)

    @property
    def person_work_depth(self) -> int:
        """Operations waiting that are not anonymous events (people's and objects')."""
        return max(0, self.depth - self.anonymous_backlog)


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
    oldest, anonymous_oldest, now = stored.oldest_enqueued_at, stored.anonymous_oldest_enqueued_at, time.time()
    return Snapshot(
        depth=stored.depth,
        in_flight=runtime.outbox.in_flight(),
        oldest_age_s=0.0 if oldest is None else max(0.0, now - oldest),
        dead_letters=stored.dead_letters,
        dead_letter_rows=[DeadLetter(*row) for row in stored.dead_letter_rows],
        dead_lettered_total=runtime.outbox.dead_lettered_total,
        persons=known,
        anonymous_backlog=stored.anonymous_backlog,
        anonymous_oldest_age_s=0.0 if anonymous_oldest is None else max(0.0, now - anonymous_oldest),
        anonymous_expired={reason: stored.anonymous_expired.get(reason, 0) for reason in REASONS},
        activity_states=stored.activity_states,
        activity_totals=stored.activity_totals,
        activity_waiting=stored.activity_waiting,
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
        #: this process in the ``replicas`` table: host, pid and a random part
        self.replica = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

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
        self._save(stopped=True)

    def _run(self) -> None:
        last_save = time.monotonic()
        while not self._stop.wait(1.0):
            self.sample()
            if time.monotonic() - last_save >= self.save_every_s:
                self._save()
                last_save = time.monotonic()

    def save(self, stopped: bool = False) -> None:
        """Store this replica's heartbeat and counters (``status`` sums the replicas')."""
        now = time.time()
        snapshot = take_snapshot(self.runtime, dead_letters=0, persons=False)
        status = build_status(self.runtime, self, snapshot, cohorts=False)
        figures = json.dumps({key: status[key] for key in _REPLICA_FIGURES})
        with self.runtime.db.transaction() as tx:
            tx.save_replica(self.replica, self.started_at, now, stopped, figures)
            tx.prune_replicas(now - _REPLICA_FORGOTTEN_S)

    def _save(self, stopped: bool = False) -> None:
        with contextlib.suppress(Exception):  # a full disk must not kill the sampler; /readyz reports it
            self.save(stopped)


def build_status(
    runtime: Runtime,
    sampler: ThroughputSampler | None = None,
    snapshot: Snapshot | None = None,
    *,
    replicas: bool = False,
    cohorts: bool = True,
) -> dict[str, Any]:
    """The live status of this process's runtime (from ``snapshot``, or one taken now); with
    ``replicas`` (and a sampler) the counters are summed with the other live replicas'. With ``cohorts`` and
    cohorts configured, ``cohort_sync`` lists the synced cohorts as the database keeps them (else it holds the
    counters only; without cohorts configured, a status from a snapshot reads nothing more)."""
    from .sources.cohorts import configured_cohorts

    status = _own_status(runtime, sampler, snapshot)
    if replicas and sampler is not None:
        own = Replica(sampler.replica, sampler.started_at, time.time(), False, _figures(status))
        _apply(status, aggregate(read_replicas(runtime), own))
    if cohorts and configured_cohorts(runtime.settings):
        _add_cohorts(runtime, status)
    return status


def _add_cohorts(runtime: Runtime, status: dict[str, Any]) -> None:
    """``cohort_sync``: the counters (this process's, or the replicas' summed) and each synced cohort from the
    database (any replica's or ``sync-cohorts``' passes); ``None`` when nothing syncs cohorts and none was."""
    counters, synced = status.get("cohort_sync"), synced_cohorts(runtime)
    if counters is None and not synced:
        return
    status["cohort_sync"] = {**(counters or _NO_COHORT_SYNC), "cohorts": synced}


def synced_cohorts(runtime: Runtime) -> list[dict[str, Any]]:
    """Each synced cohort (:func:`~.sources.cohorts.cohort_status`) with ``members``: target -> the members it has
    now, as the database keeps them (what Customer.io was told)."""
    from .mapping import CohortTarget
    from .sources.cohorts import cohort_status

    synced = cohort_status(runtime)
    with runtime.db.reading() as conn:
        for cohort in synced:
            members = {}
            for described in cohort["targets"]:
                kind, _, value = described.partition(" ")
                target = CohortTarget(
                    cohort["cohort_id"], **{"segment_id" if kind == "segment" else "attribute": value}
                )
                members[described] = conn.count_cohort_members(cohort["cohort_id"], target.key)
            cohort["members"] = members
    return synced


def _apply(status: dict[str, Any], summed: dict[str, Any]) -> None:
    """Put the replicas' summed figures in a status report: adopted events summed; person work's latency the
    slowest replica's (the queue figures are the database's, the same for all)."""
    latency = summed.pop("person_work_latency", None)
    bound = summed.pop("outbox_bound", None)
    status.update(summed)
    if bound is not None:  # the replicas' bound and waits; what it counts is this read's, the same for all
        queued = status["outbox_bound"]["queued"]
        status["outbox_bound"] = {**bound, "queued": queued, "full": queued >= bound["max_queued"]}
    status["anonymous"]["adopted"] = int((status.get("ingest") or {}).get("anonymous_events_adopted") or 0)
    if latency is not None:
        status["person_work"].update(latency)


def _own_status(runtime: Runtime, sampler: ThroughputSampler | None, snapshot: Snapshot | None) -> dict[str, Any]:
    snap = snapshot if snapshot is not None else take_snapshot(runtime)
    deliverer = runtime.current_deliverer
    stats = deliverer.stats if deliverer is not None else None
    ingestor = runtime.ingestor
    adopted = int(ingestor.totals.notes.get("anonymous_events_adopted", 0))
    latency = deliverer.person_latency.percentiles() if deliverer is not None else {}
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
            "anonymous_events_adopted": adopted,
            "event_time_order": {
                "read_again": int(ingestor.totals.notes.get("stored_before", 0)),
                "reordered": int(ingestor.totals.notes.get("reordered", 0)),
                "late": int(ingestor.totals.notes.get("reorder_late_events", 0)),
            },
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
        # anonymous events apart from person work: they wait in their own lane and may be dropped
        "anonymous": {
            "backlog": snap.anonymous_backlog,
            "oldest_age_s": round(snap.anonymous_oldest_age_s, 3),
            "adopted": adopted,
            "expired": dict(snap.anonymous_expired),
        },
        # OUTBOX_MAX_QUEUED: what it bounds now, and how often and how long this process's sources waited at it
        "outbox_bound": runtime.bound.status(queued=snap.person_work_depth),
        "person_work": {
            "depth": snap.person_work_depth,
            "latency_p50_s": latency.get("p50_s"),
            "latency_p99_s": latency.get("p99_s"),
            "window_s": latency.get("window_s", PERSON_LATENCY_WINDOW_S),
        },
        # PERSON_SYNC_INTERVAL_S: this process's passes of PostHog's persons (None: not syncing)
        "person_sync": runtime.person_sync.status() if runtime.person_sync is not None else None,
        # COHORT_SEGMENTS / COHORT_ATTRIBUTES: this process's passes of PostHog's cohorts (None: not syncing)
        "cohort_sync": runtime.cohort_sync.status() if runtime.cohort_sync is not None else None,
        "disk": disk_status(runtime),
        # Customer.io's message activity into PostHog (activity.py)
        "customerio_activity": activity_section(
            runtime, snap.activity_states, snap.activity_totals, snap.activity_waiting
        ),
    }


def disk_status(runtime: Runtime) -> dict[str, Any]:
    """What the database takes on disk and the room left (:class:`~.storage.StorageSpace`); ``problem`` says
    ``disk full: ...`` when there is (nearly) none, or while delivery waits for room."""
    try:
        space = dataclasses.asdict(runtime.db.space())
    except Exception as exc:  # the figures are a courtesy: never fail the status for them
        space = {"database_bytes": None, "problem": None, "error": f"{type(exc).__name__}: {exc}"[:200]}
    deliverer = runtime.current_deliverer
    if not space.get("problem") and deliverer is not None and deliverer.disk_full:
        space["problem"] = deliverer.disk_full
    return space


#: ``cohort_sync``'s counters when no live process syncs cohorts (the cohorts are listed all the same)
_NO_COHORT_SYNC: dict[str, Any] = {
    "interval_s": None,
    "running": False,
    "passes": {"ok": 0, "failed": 0, "skipped": 0},
    "adds": 0,
    "removes": 0,
    "operations_enqueued": 0,
    "cohort_failures": {},
    "current_pass": None,
    "last_pass": None,
    "last_ok_at": None,
    "last_error": None,
    "last_error_at": None,
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
    return (json.loads(row.value), row.updated_at) if row else None


def offline_status(runtime: Runtime) -> dict[str, Any]:
    """Status from the data directory alone: live queue figures + the replicas' last heartbeats, summed; the
    synced cohorts from the database."""
    status = build_status(runtime, cohorts=False)
    status["service"] = None
    known = read_replicas(runtime)
    if known:
        _apply(status, aggregate(known))
        newest = max(replica.seen_at for replica in known)
        status["service"] = {"snapshot_at": newest, "snapshot_age_s": round(time.time() - newest, 1)}
        _add_cohorts(runtime, status)
        return status
    snapshot = load_snapshot(runtime)  # written by versions before the replicas table
    if snapshot is not None:
        saved, updated_at = snapshot
        for key in ("uptime_s", "throughput", "ingest", "delivery", "recent_errors", "requests_rejected"):
            status[key] = saved.get(key)
        status["service"] = {"snapshot_at": updated_at, "snapshot_age_s": round(time.time() - updated_at, 1)}
    _add_cohorts(runtime, status)
    return status


@dataclass(frozen=True, slots=True)
class Replica:
    """One process's last heartbeat: its counters (the keys of ``_REPLICA_FIGURES``)."""

    id: str
    started_at: float
    seen_at: float
    stopped: bool
    figures: dict[str, Any]


def _figures(status: dict[str, Any]) -> dict[str, Any]:
    return {key: status.get(key) for key in _REPLICA_FIGURES}


def read_replicas(runtime: Runtime) -> list[Replica]:
    """Every replica remembered, oldest start first."""
    with runtime.db.reading() as tx:
        rows = tx.replica_rows()
    return [
        Replica(str(r.replica), float(r.started_at), float(r.seen_at), bool(r.stopped), json.loads(r.status))
        for r in rows
    ]


def _counted(replicas: list[Replica], now: float) -> list[Replica]:
    """The replicas running now (heartbeat within :data:`REPLICA_STALE_S`, not stopped); when none is,
    the last ones that ran (stopped or silent within that much of the newest heartbeat)."""
    live = [r for r in replicas if not r.stopped and now - r.seen_at <= REPLICA_STALE_S]
    if live or not replicas:
        return live
    newest = max(r.seen_at for r in replicas)
    return [r for r in replicas if newest - r.seen_at <= REPLICA_STALE_S]


def aggregate(replicas: Iterable[Replica], own: Replica | None = None) -> dict[str, Any]:
    """The counters of the replicas counted, summed (``own``: this process, its figures live), and the list."""
    now = time.time()
    known = [r for r in replicas if own is None or r.id != own.id] + ([own] if own is not None else [])
    counted = _counted(known, now)
    base = _base(counted, own)
    summed: dict[str, Any] = {"throughput": _sum_throughput(r.figures.get("throughput") for r in counted)}
    for section in ("ingest", "delivery"):
        summed[section] = _sum_section([r.figures.get(section) or {} for r in counted], base, section)
    summed["requests_rejected"] = _sum_maps(r.figures.get("requests_rejected") for r in counted)
    errors = [error for r in counted for error in r.figures.get("recent_errors") or ()]
    summed["recent_errors"] = sorted(errors, key=lambda error: float(error.get("at") or 0))[-20:]
    summed["person_work_latency"] = _slowest_latency([r.figures.get("person_work") for r in counted])
    summed["person_sync"] = _merge_person_sync([r.figures.get("person_sync") for r in counted])
    summed["cohort_sync"] = _merge_cohort_sync([r.figures.get("cohort_sync") for r in counted])
    summed["outbox_bound"] = _merge_bound([r.figures.get("outbox_bound") for r in counted])
    ids = {r.id for r in counted}
    summed["replicas"] = [_listed(r, now, r.id in ids) for r in sorted(known, key=lambda r: (r.started_at, r.id))]
    if own is not None:
        summed["this_replica"] = own.id
    return summed


def _base(counted: list[Replica], own: Replica | None) -> Replica | None:
    """Whose delivery state is shown: this process if it delivers, else the newest replica that does."""

    def delivering(replica: Replica) -> bool:
        return bool((replica.figures.get("delivery") or {}).get("state", "stopped") != "stopped")

    if own is not None and delivering(own):
        return own
    candidates = sorted(counted, key=lambda r: r.seen_at, reverse=True)
    return next((r for r in candidates if delivering(r)), own or (candidates[0] if candidates else None))


def _sum_section(parts: list[dict[str, Any]], base: Replica | None, section: str) -> dict[str, Any]:
    """Integer counters and maps of counters summed; anything else (a state, an error) as ``base`` has it."""
    merged = dict(base.figures.get(section) or {}) if base else {}
    for key in dict.fromkeys(key for part in parts for key in part):
        values = [part[key] for part in parts if part.get(key) is not None]
        if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            merged[key] = sum(values)
        elif values and all(isinstance(v, dict) and all(isinstance(n, int) for n in v.values()) for v in values):
            merged[key] = _sum_maps(values)
    return merged


def _slowest_latency(parts: Iterable[dict[str, Any] | None]) -> dict[str, Any]:
    """Person work's p50 and p99 of the slowest replica that delivered any (``None`` when none did)."""
    given = [part for part in parts if part and part.get("latency_p99_s") is not None]
    return {
        "latency_p50_s": max((float(part["latency_p50_s"]) for part in given), default=None),
        "latency_p99_s": max((float(part["latency_p99_s"]) for part in given), default=None),
        "window_s": max((float(part.get("window_s") or 0) for part in given), default=PERSON_LATENCY_WINDOW_S),
    }


def _merge_person_sync(parts: Iterable[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The replicas' person sync sections as one: counts summed, the newest pass, error and success, running if
    any replica is (None when no replica syncs)."""
    return _merge_sync(parts, ("persons_read", "operations_enqueued"), ("passes",))


def _merge_cohort_sync(parts: Iterable[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The replicas' cohort sync counters as one, as :func:`_merge_person_sync` (the cohorts are the database's)."""
    return _merge_sync(parts, ("adds", "removes", "operations_enqueued"), ("passes", "cohort_failures"))


def _merge_sync(
    parts: Iterable[dict[str, Any] | None], counts: tuple[str, ...], maps: tuple[str, ...]
) -> dict[str, Any] | None:
    """Sync sections as one: ``counts`` and ``maps`` of counts summed, the newest pass, error and success, running
    if any replica is (None when no replica syncs)."""
    given = [part for part in parts if part]
    if not given:
        return None

    def newest(key: str, at: str) -> Any:
        dated = [part for part in given if part.get(key) and part[key].get(at) is not None]
        return max(dated, key=lambda part: float(part[key][at]))[key] if dated else None

    erred = [part for part in given if part.get("last_error_at") is not None]
    last_error = max(erred, key=lambda part: float(part["last_error_at"])) if erred else {}
    return {
        "interval_s": max(float(part.get("interval_s") or 0) for part in given),
        "running": any(part.get("running") for part in given),
        **{key: _sum_maps(part.get(key) for part in given) for key in maps},
        **{key: sum(int(part.get(key) or 0) for part in given) for key in counts},
        "current_pass": newest("current_pass", "started_at"),
        "last_pass": newest("last_pass", "started_at"),
        "last_ok_at": max((float(p["last_ok_at"]) for p in given if p.get("last_ok_at") is not None), default=None),
        "last_error": last_error.get("last_error"),
        "last_error_at": last_error.get("last_error_at"),
    }


def _merge_bound(parts: Iterable[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The replicas' ``outbox_bound`` sections as one: the largest bound (the replicas' settings may differ while
    a change rolls out), waits and refusals summed, every source waiting now (None when no replica reported one:
    older versions)."""
    given = [part for part in parts if part]
    if not given:
        return None
    seconds: dict[str, float] = {}
    for part in given:
        for source, value in (part.get("waited_s") or {}).items():
            seconds[source] = round(seconds.get(source, 0.0) + float(value or 0), 3)
    widest = max(given, key=lambda part: int(part.get("max_queued") or 0))
    return {
        "max_queued": int(widest.get("max_queued") or 0),
        "wait_at": int(widest.get("wait_at") or 0),
        "waits": _sum_maps(part.get("waits") for part in given),
        "waited_s": seconds,
        "waiting": sorted({source for part in given for source in part.get("waiting") or ()}),
        "refused": _sum_maps(part.get("refused") for part in given),
    }


def _sum_maps(maps: Iterable[dict[str, Any] | None]) -> dict[str, int]:
    total: dict[str, int] = {}
    for one in maps:
        for key, value in (one or {}).items():
            total[key] = total.get(key, 0) + int(value or 0)
    return total


def _sum_throughput(rates: Iterable[dict[str, Any] | None]) -> dict[str, float]:
    given = [rate for rate in rates if rate]
    return {
        "events_per_s": round(sum(float(r.get("events_per_s") or 0) for r in given), 2),
        "operations_delivered_per_s": round(sum(float(r.get("operations_delivered_per_s") or 0) for r in given), 2),
        "window_s": max((float(r.get("window_s") or 0) for r in given), default=0.0),
    }


def _listed(replica: Replica, now: float, counted: bool) -> dict[str, Any]:
    host, pid, _ = [*replica.id.rsplit(":", 2), "", ""][:3]
    ingest, delivery = replica.figures.get("ingest") or {}, replica.figures.get("delivery") or {}
    return {
        "id": replica.id,
        "host": host,
        "pid": int(pid) if pid.isdigit() else None,
        "started_at": replica.started_at,
        "seen_at": replica.seen_at,
        "age_s": round(max(0.0, now - replica.seen_at), 1),
        "live": not replica.stopped and now - replica.seen_at <= REPLICA_STALE_S,
        "stopped": replica.stopped,
        "counted": counted,
        "delivery": delivery.get("state", "stopped"),
        "events_received": int(ingest.get("events_received") or 0),
        "operations_delivered": int(delivery.get("delivered") or 0),
    }
