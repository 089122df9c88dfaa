"""Person work and the anonymous backlog in the replicas' sum and the ``status`` text (no storage)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from posthog_customerio.cli.render import work_lines
from posthog_customerio.config import load_settings
from posthog_customerio.status import Replica, aggregate


def replica(name: str, adopted: int, p50: float | None, p99: float | None) -> Replica:
    figures: dict[str, Any] = {
        "ingest": {"events_received": 1, "anonymous_events_adopted": adopted},
        "delivery": {"state": "running"},
        "person_work": {"depth": 9, "latency_p50_s": p50, "latency_p99_s": p99, "window_s": 300.0},
    }
    return Replica(f"host:{name}:x", time.time() - 10, time.time(), False, figures)


def test_replicas_sum_adoptions_and_keep_the_slowest_latency() -> None:
    summed = aggregate([replica("1", 2, 0.1, 0.4), replica("2", 3, 0.3, 0.2), replica("3", 4, None, None)])
    assert summed["ingest"]["anonymous_events_adopted"] == 9
    assert summed["person_work_latency"] == {"latency_p50_s": 0.3, "latency_p99_s": 0.4, "window_s": 300.0}
    nobody = aggregate([replica("3", 0, None, None)])["person_work_latency"]
    assert nobody["latency_p50_s"] is None and nobody["latency_p99_s"] is None


def test_status_text_shows_both_lines_and_reads_an_older_report() -> None:
    report = {
        "person_work": {"depth": 12, "latency_p50_s": 0.25, "latency_p99_s": None, "window_s": 300.0},
        "anonymous": {"backlog": 40, "oldest_age_s": 61.4, "adopted": 3, "expired": {"age": 1, "count": 2}},
    }
    assert work_lines(report) == [
        "person work        12 queued; latency no delivery seen (last 300s)",
        "anonymous events   40 queued, oldest 61s; 3 adopted; expired 1 by age, 2 by count",
    ]
    assert work_lines({}) == []  # a snapshot saved before these figures existed


def test_the_bounds_parse_from_the_environment_with_their_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = load_settings({})
    assert (defaults.anonymous_max_age_s, defaults.anonymous_backlog_max) == (2_592_000.0, 100_000)
    monkeypatch.setenv("ANONYMOUS_MAX_AGE_S", "3600")
    monkeypatch.setenv("ANONYMOUS_BACKLOG_MAX", "5")
    settings = load_settings({})
    assert (settings.anonymous_max_age_s, settings.anonymous_backlog_max) == (3600.0, 5)


def bounded(name: str, waits: dict[str, int], seconds: dict[str, float], **more: Any) -> Replica:
    figures: dict[str, Any] = {
        "delivery": {"state": "running"},
        "outbox_bound": {"max_queued": 50_000, "wait_at": 25_000, "waits": waits, "waited_s": seconds, **more},
    }
    return Replica(f"host:{name}:x", time.time() - 10, time.time(), False, figures)


def test_replicas_sum_their_waits_at_the_outbox_bound_and_the_status_text_shows_them() -> None:
    from posthog_customerio.cli.render import bound_lines

    summed = aggregate(
        [
            bounded("1", {"kafka": 2}, {"kafka": 1.5}, waiting=["kafka"], refused={"webhook": 3}),
            bounded("2", {"kafka": 1, "persons": 4}, {"kafka": 0.25, "persons": 2.0}, refused={"capture": 1}),
            Replica("host:3:x", time.time() - 10, time.time(), False, {"delivery": {"state": "running"}}),  # older
        ]
    )["outbox_bound"]
    assert summed == {
        "max_queued": 50_000,
        "wait_at": 25_000,
        "waits": {"kafka": 3, "persons": 4},
        "waited_s": {"kafka": 1.75, "persons": 2.0},
        "waiting": ["kafka"],
        "refused": {"webhook": 3, "capture": 1},
    }
    report = {**summed, "queued": 26_000, "full": False}
    assert bound_lines(report) == [
        "outbox bound       26000 of 50000 operations of person work (OUTBOX_MAX_QUEUED; sources wait at 25000):"
        " sources wait",
        "  sources waited   kafka 3 times, 1.8s (waiting now); persons 4 times, 2.0s",
        "  refused (503)    capture 1, webhook 3",
    ]
    assert bound_lines({"max_queued": 4, "wait_at": 2, "queued": 4, "full": True}) == [
        "outbox bound       4 of 4 operations of person work (OUTBOX_MAX_QUEUED; sources wait at 2): FULL: the"
        " receivers answer 503"
    ]
    assert bound_lines(None) == [] and aggregate([])["outbox_bound"] is None
