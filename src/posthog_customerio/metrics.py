"""Prometheus metrics (prometheus-client), one registry per service instance.

Counters are read at scrape time from the objects that already count them (the
ingestor's totals, the delivery stats) and from one :class:`~.status.Snapshot` of the
storage (the same object the status report is built from), so the hot paths do no
extra work; only the delivery latency histogram is observed as operations are acked.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .operations import Claimed
from .status import take_snapshot

if TYPE_CHECKING:
    from .runtime import Runtime
    from .status import RequestLog

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_PREFIX = "posthog_customerio"


class _RuntimeCollector(Collector):
    """Exposes the runtime's counters and gauges at scrape time."""

    def __init__(self, runtime: Runtime, requests: RequestLog | None = None) -> None:
        self.runtime = runtime
        self.requests = requests

    def collect(self) -> Iterator[Metric]:
        ingestor = self.runtime.ingestor
        yield _labelled("events_received", "Events received, by source", "source", ingestor.received_by_source)
        yield _labelled(
            "events_invalid", "Events rejected as invalid input, by source", "source", ingestor.invalid_by_source
        )
        yield _labelled("events_filtered", "Events not forwarded, by reason", "reason", ingestor.totals.skipped)
        yield _labelled(
            "mapping_adjustments",
            "Limits truncations, unmapped group types, blocked merges…, by kind",
            "kind",
            ingestor.totals.notes,
        )
        yield _labelled(
            "operations_enqueued", "Operations written to the outbox, by action", "action", ingestor.totals.actions
        )
        if self.requests is not None:
            yield _labelled(
                "requests_rejected",
                "Requests answered 4xx by the receivers, by reason",
                "reason",
                self.requests.rejected,
            )
            yield _labelled(
                "proxy_requests",
                "Requests forwarded to POSTHOG_HOST, by PostHog's status (error = unreachable)",
                "status",
                self.requests.proxied,
            )
            yield _labelled(
                "proxy_events_not_stored",
                "Capture requests forwarded to PostHog but not stored for Customer.io, by reason",
                "reason",
                self.requests.not_stored,
            )
        snap = take_snapshot(self.runtime, dead_letters=0, persons=False)
        deliverer = self.runtime.current_deliverer
        stats = deliverer.stats if deliverer is not None else None
        yield _counter("operations_delivered", "Operations Customer.io accepted", stats.delivered if stats else 0)
        yield _counter(
            "operations_dead_lettered", "Operations moved to the dead-letter table", snap.dead_lettered_total
        )
        yield _labelled(
            "customerio_requests",
            "Requests to Customer.io, by HTTP status (error = no response)",
            "status",
            stats.requests_by_status if stats else {},
        )
        yield _counter(
            "delivery_retries",
            "Operations put back for a retry after a transient failure",
            stats.retries if stats else 0,
        )
        yield _gauge("outbox_depth", "Operations waiting in the outbox", snap.depth)
        yield _gauge("outbox_oldest_age_seconds", "Age of the oldest waiting operation", snap.oldest_age_s)
        yield _gauge("dead_letters", "Operations currently in the dead-letter table", snap.dead_letters)
        paused = 1.0 if deliverer is not None and deliverer.auth_error else 0.0
        yield _gauge("delivery_paused", "1 while Customer.io rejects the credentials", paused)
        yield from self._disk(deliverer)
        yield _counter(
            "delivery_worker_restarts",
            "Delivery workers that died and were restarted",
            stats.worker_restarts if stats else 0,
        )
        alive = deliverer.alive_workers() if deliverer is not None else 0
        yield _gauge("delivery_workers_alive", "Delivery worker threads running now", alive)
        # anonymous events apart from person work
        yield _gauge("anonymous_backlog", "Anonymous events waiting in the outbox", snap.anonymous_backlog)
        yield _gauge(
            "anonymous_backlog_oldest_age_seconds",
            "Age of the oldest anonymous event waiting (0 when none waits)",
            snap.anonymous_oldest_age_s,
        )
        yield _gauge("person_work_depth", "Operations waiting that are not anonymous events", snap.person_work_depth)
        yield from _bound(self.runtime.bound.status(queued=snap.person_work_depth))
        yield _counter(
            "anonymous_events_adopted",
            "Queued anonymous events an identify turned into the person's events",
            ingestor.totals.notes.get("anonymous_events_adopted", 0),
        )
        notes = ingestor.totals.notes
        yield _counter(
            "events_read_again",
            "Consumed events left out because their partition position was stored before (read again after a crash"
            " or a rebalance)",
            notes.get("stored_before", 0),
        )
        yield _counter(
            "events_reordered",
            "Queued operations that changed places to keep a person's consumed events in event-time order",
            notes.get("reordered", 0),
        )
        yield _counter(
            "events_late",
            "Consumed events that arrived later than REORDER_WINDOW_S behind the partitions (a later event of their"
            " person may have gone out first)",
            notes.get("reorder_late_events", 0),
        )
        yield _labelled(
            "anonymous_events_expired",
            "Queued anonymous events this process dropped (ANONYMOUS_MAX_AGE_S, ANONYMOUS_BACKLOG_MAX), by reason",
            "reason",
            self.runtime.backlog.expired,
        )
        latency = GaugeMetricFamily(
            f"{_PREFIX}_person_latency_seconds",
            "Enqueue-to-accepted latency of person work over the last 5 minutes (no sample before any)",
            labels=["quantile"],
        )
        if deliverer is not None:
            observed = deliverer.person_latency.percentiles()
            for quantile, key in (("0.5", "p50_s"), ("0.99", "p99_s")):
                value = observed.get(key)
                if value is not None:
                    latency.add_metric([quantile], float(value))
        yield latency
        if self.runtime.person_sync is not None:
            yield from _person_sync(self.runtime.person_sync.status())
        if self.runtime.cohort_sync is not None:
            yield from _cohort_sync(self.runtime.cohort_sync.status())
        yield from _activity(self.runtime, snap.activity_states)

    def _disk(self, deliverer: Any) -> Iterator[Metric]:
        """The database's size, the room left (SQLite) and whether the disk is full (:mod:`.disk`)."""
        try:
            space = self.runtime.db.space()
        except Exception:  # a courtesy: never fail a scrape for it
            return
        if space.database_bytes is not None:
            yield _gauge(
                "database_bytes",
                "The database on disk: SQLite's file and WAL, or this schema's PostgreSQL tables",
                space.database_bytes,
            )
        if space.free_bytes is not None:
            yield _gauge(
                "database_free_bytes",
                "Room left for the SQLite database: free space on its filesystem or max_page_count, plus free pages",
                space.free_bytes,
            )
        full = bool(space.problem or (deliverer is not None and deliverer.disk_full))
        yield _gauge("disk_full", "1 while the database's disk is full (or delivery waits for room in it)", float(full))


def _bound(status: dict[str, Any]) -> Iterator[Metric]:
    """``OUTBOX_MAX_QUEUED``: the bound and where sources wait, whether it is reached, and this process's sources'
    waits and refusals."""
    yield _gauge(
        "outbox_max_queued",
        "OUTBOX_MAX_QUEUED: at this person_work_depth the receivers answer 503",
        status["max_queued"],
    )
    yield _gauge(
        "outbox_wait_at",
        "At this person_work_depth (half of OUTBOX_MAX_QUEUED) the sources that can wait wait for delivery",
        status["wait_at"],
    )
    yield _gauge("outbox_full", "1 while person_work_depth is at OUTBOX_MAX_QUEUED", 1.0 if status["full"] else 0.0)
    yield _labelled(
        "source_waits",
        "Times a source waited for delivery at half of OUTBOX_MAX_QUEUED, by source",
        "source",
        status["waits"],
    )
    yield _labelled(
        "source_wait_seconds",
        "Seconds sources spent waiting for delivery at half of OUTBOX_MAX_QUEUED, by source",
        "source",
        status["waited_s"],
    )
    waiting = GaugeMetricFamily(
        f"{_PREFIX}_source_waiting", "1 while the source waits for room in the outbox", labels=["source"]
    )
    for source in sorted(status["waits"]):
        waiting.add_metric([source], 1.0 if source in status["waiting"] else 0.0)
    yield waiting
    yield _labelled(
        "requests_refused_full",
        "Requests the receivers answered 503 at OUTBOX_MAX_QUEUED, by source",
        "source",
        status["refused"],
    )


def _person_sync(status: dict[str, Any]) -> Iterator[Metric]:
    """``PERSON_SYNC_INTERVAL_S``: this process's passes of PostHog's persons list."""
    yield _labelled(
        "person_sync_passes",
        "Person sync turns, by outcome (skipped: another replica was running a pass)",
        "outcome",
        status["passes"],
    )
    yield _counter(
        "person_sync_persons_read", "Persons read from PostHog's API by the person sync", status["persons_read"]
    )
    yield _counter(
        "person_sync_operations_enqueued",
        "Operations the person sync enqueued (people that changed)",
        status["operations_enqueued"],
    )
    yield _gauge(
        "person_sync_running", "1 while this process runs a person sync pass", 1.0 if status["running"] else 0.0
    )
    yield _gauge(
        "person_sync_last_success_timestamp_seconds",
        "When the last person sync pass that read the whole list ended, any replica (Unix time; 0 before one)",
        status["last_ok_at"] or 0.0,
    )


def _cohort_sync(status: dict[str, Any]) -> Iterator[Metric]:
    """``COHORT_SEGMENTS`` / ``COHORT_ATTRIBUTES``: this process's passes of PostHog's cohorts."""
    yield _labelled(
        "cohort_sync_passes",
        "Cohort sync turns, by outcome (failed: a cohort could not be read, or the pass failed; skipped: another"
        " process was running a pass)",
        "outcome",
        status["passes"],
    )
    yield _counter("cohort_sync_members_added", "Cohort members added to their segments or attributes", status["adds"])
    yield _counter(
        "cohort_sync_members_removed", "Cohort members removed from their segments or attributes", status["removes"]
    )
    yield _counter(
        "cohort_sync_operations_enqueued",
        "Operations the cohort sync enqueued (profiles created, members added and removed)",
        status["operations_enqueued"],
    )
    yield _labelled(
        "cohort_sync_cohort_failures",
        "Cohorts whose pass changed nothing, by outcome (failed: PostHog could not serve it; not_found, deleted;"
        " suspicious_empty: read as empty while it had members)",
        "outcome",
        status["cohort_failures"],
    )
    yield _gauge(
        "cohort_sync_running", "1 while this process runs a cohort sync pass", 1.0 if status["running"] else 0.0
    )
    yield _gauge(
        "cohort_sync_last_success_timestamp_seconds",
        "When the last cohort sync pass that read every cohort ended, any replica (Unix time; 0 before one)",
        status["last_ok_at"] or 0.0,
    )


def _activity(runtime: Runtime, states: dict[str, int]) -> Iterator[Metric]:
    """Customer.io's message activity into PostHog (:mod:`.activity`): this process's counts, the stored rows."""
    counts = runtime.activity[0].as_dict()
    name = "customerio_activity"
    yield _counter(f"{name}_received", "Reporting webhooks received (POST /webhooks/customerio)", counts["received"])
    yield _counter(f"{name}_verified", "Reporting webhooks with a good, fresh signature", counts["verified"])
    yield _labelled(f"{name}_rejected", "Reporting webhooks refused, by reason", "reason", counts["rejected"])
    yield _counter(
        f"{name}_duplicates", "Reporting webhooks stored before (Customer.io's retries)", counts["duplicates"]
    )
    yield _counter(f"{name}_captured", "Activities captured into PostHog", counts["captured"])
    yield _counter(f"{name}_unplaced", "Activities whose profile no known person had", counts["unplaced"])
    yield _counter(f"{name}_dead", "Activities PostHog refused for good", counts["dead"])
    yield _labelled(
        f"{name}_posthog_errors",
        "Failed capture requests, by PostHog's status (network: no answer)",
        "status",
        counts["posthog_errors"],
    )
    for state in ("queued", "unplaced", "dead"):
        yield _gauge(f"{name}_{state}_rows", f"Activities stored as {state} now", states.get(state, 0))


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{_PREFIX}_{name}", doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{_PREFIX}_{name}", doc, value=value)


def _labelled(name: str, doc: str, label: str, values: dict[str, int] | dict[str, float]) -> CounterMetricFamily:
    family = CounterMetricFamily(f"{_PREFIX}_{name}", doc, labels=[label])
    for key, value in sorted(dict(values).items()):
        family.add_metric([str(key)], value)
    return family


class Metrics:
    """The registry behind ``GET /metrics``."""

    def __init__(self, runtime: Runtime, requests: RequestLog | None = None) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_RuntimeCollector(runtime, requests))
        self.delivery_latency = Histogram(
            f"{_PREFIX}_delivery_latency_seconds",
            "Time from enqueue to Customer.io accepting the operation",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
            registry=self.registry,
        )

    def observe_delivered(self, items: Sequence[Claimed]) -> None:
        """Record the enqueue-to-ack latency of delivered operations."""
        now = time.time()
        for item in items:
            self.delivery_latency.observe(max(0.0, now - item.enqueued_at))

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
