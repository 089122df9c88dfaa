"""The anonymous backlog and person work, apart, in /api/status, /metrics and ``posthog-customerio status``;
and the runtime enforcing the backlog's bounds wherever it delivers (``send`` included)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from posthog_customerio.metrics import Metrics
from posthog_customerio.operations import Operation
from posthog_customerio.outbox import Outbox
from posthog_customerio.runtime import Runtime
from posthog_customerio.sandbox import SandboxServer
from posthog_customerio.sources import PostHogEvent
from posthog_customerio.status import ThroughputSampler, build_status, offline_status

from ..conftest import Cli, write_jsonl
from ..helpers import make_runtime

DAY = 86_400.0


def browsing(visitor: str, count: int) -> list[PostHogEvent]:
    at = datetime.now(UTC)
    return [
        PostHogEvent("$pageview", visitor, at, {"$is_identified": False}, uuid=str(uuid.uuid4())) for _ in range(count)
    ]


def identify(user: str, visitor: str) -> PostHogEvent:
    return PostHogEvent("$identify", user, datetime.now(UTC), {"$anon_distinct_id": visitor}, uuid=str(uuid.uuid4()))


def anonymous(visitor: str, n: int) -> Operation:
    payload = {"type": "anonymous", "anonymous_id": visitor, "action": "event", "name": f"viewed {n}"}
    return Operation(visitor, payload, kind="anonymous")


def person(key: str, n: int) -> Operation:
    return Operation(key, {"type": "person", "identifiers": {"id": key}, "action": "event", "name": f"e{n}"})


def fill(runtime: Runtime, now: float) -> None:
    """Three anonymous events 40 days old, four fresh ones, two person operations."""
    with runtime.db.transaction() as tx:
        Outbox.enqueue(tx, [anonymous(f"old{n}", n) for n in range(3)], now=now - 40 * DAY)
        Outbox.enqueue(tx, [person("p1", 1), person("p2", 1)], now=now - 40 * DAY)
        Outbox.enqueue(tx, [anonymous(f"new{n}", n) for n in range(4)], now=now - 60)


def test_status_metrics_and_cli_show_the_backlog_apart_from_person_work(
    sandbox: SandboxServer, tmp_path: Path, cli: Cli, env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    now = time.time()
    data = tmp_path / "data"
    with make_runtime(sandbox, data, anonymous_backlog_max=3) as runtime:
        fill(runtime, now)
        before = build_status(runtime)
        assert before["anonymous"] == {
            "backlog": 7,
            "oldest_age_s": pytest.approx(40 * DAY, abs=60),
            "adopted": 0,
            "expired": {"age": 0, "count": 0},
        }
        assert before["person_work"] == {"depth": 2, "latency_p50_s": None, "latency_p99_s": None, "window_s": 300.0}
        text = Metrics(runtime).render().decode()
        assert "posthog_customerio_person_latency_seconds{" not in text  # no sample before any delivery
        # an identify adopts a visitor's queued anonymous event (counted by the ingestor): it is person work now
        runtime.ingestor.ingest(browsing("visitor-z", 1))
        runtime.ingestor.ingest([identify("user-z", "visitor-z")])
        assert runtime.ingestor.totals.notes["anonymous_events_adopted"] == 1
        with caplog.at_level(logging.WARNING, logger="posthog_customerio.backlog"):
            deliverer = runtime.deliverer()  # not started: the bounds are enforced before delivery starts
        assert "dropped 4 queued anonymous events: 3 older than ANONYMOUS_MAX_AGE_S=2592000, 1 beyond" in caplog.text
        deliverer.person_latency.observe([0.25, 0.5, 2.0])
        status = build_status(runtime)
        adopted = runtime.ingestor.totals.notes["anonymous_events_adopted"]
        anonymous_left = status["anonymous"]["backlog"]
        assert status["anonymous"]["expired"] == {"age": 3, "count": 1}
        assert status["anonymous"]["adopted"] == adopted == status["ingest"]["anonymous_events_adopted"]
        assert status["anonymous"]["oldest_age_s"] == pytest.approx(60, abs=30)
        assert status["person_work"]["depth"] == status["outbox"]["depth"] - anonymous_left
        assert (status["person_work"]["latency_p50_s"], status["person_work"]["latency_p99_s"]) == (0.5, 2.0)
        text = Metrics(runtime).render().decode()
        assert f"posthog_customerio_anonymous_backlog {float(anonymous_left)}" in text
        assert f"posthog_customerio_person_work_depth {float(status['person_work']['depth'])}" in text
        assert "posthog_customerio_anonymous_backlog_oldest_age_seconds 6" in text  # ~60 s
        assert f"posthog_customerio_anonymous_events_adopted_total {float(adopted)}" in text
        assert 'posthog_customerio_anonymous_events_expired_total{reason="age"} 3.0' in text
        assert 'posthog_customerio_anonymous_events_expired_total{reason="count"} 1.0' in text
        assert 'posthog_customerio_person_latency_seconds{quantile="0.5"} 0.5' in text
        assert 'posthog_customerio_person_latency_seconds{quantile="0.99"} 2.0' in text
        ThroughputSampler(runtime).save()  # the heartbeat `status` reads adopted and latency from
    # the CLI, from the data directory alone (the expired totals are the database's)
    report = json.loads(cli("status", "--json", env=env).stdout)
    assert report["anonymous"]["expired"] == {"age": 3, "count": 1}
    assert report["anonymous"]["backlog"] == anonymous_left and report["anonymous"]["adopted"] == adopted
    assert report["person_work"]["latency_p99_s"] == 2.0
    text = cli("status", env=env).stdout
    assert f"anonymous events   {anonymous_left} queued, oldest 6" in text
    assert f"{adopted} adopted; expired 3 by age, 1 by count" in text
    assert "person work        " in text and "latency p50 0.500s, p99 2.000s (last 300s)" in text


def test_replicas_sum_adoptions_and_show_the_slowest_person_latency(sandbox: SandboxServer, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    runtimes = [make_runtime(sandbox, tmp_path / f"data-{n}", outbox_url=url) for n in range(2)]
    try:
        for n, (runtime, latencies) in enumerate(zip(runtimes, ([0.1, 0.2], [0.3, 4.0]), strict=True)):
            visitor = f"anon-{n}"
            runtime.ingestor.ingest(browsing(visitor, 2))
            runtime.ingestor.ingest([identify(f"user-{n}", visitor)])
            assert runtime.ingestor.totals.notes["anonymous_events_adopted"] == 2
            runtime.deliverer().person_latency.observe(latencies)  # not started: what its workers would record
            ThroughputSampler(runtime).save()
        report = offline_status(runtimes[0])
        assert report["anonymous"]["adopted"] == 4 and report["ingest"]["anonymous_events_adopted"] == 4
        # the slowest replica's percentiles (p50 of [0.3, 4.0] is 0.3; its p99 4.0)
        assert (report["person_work"]["latency_p50_s"], report["person_work"]["latency_p99_s"]) == (0.3, 4.0)
    finally:
        for runtime in runtimes:
            runtime.close()


def test_send_enforces_the_bounds_before_it_delivers(
    cli: Cli, env: dict[str, str], sandbox: SandboxServer, tmp_path: Path
) -> None:
    data = Path(env["POSTHOG_CUSTOMERIO_DATA_DIR"])
    with make_runtime(sandbox, data) as runtime:
        fill(runtime, time.time())
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    result = cli("send", str(empty), "--anonymous-backlog-max", "1", env=env)
    assert result.exit_code == 0, result.output
    with make_runtime(sandbox, data) as runtime:
        assert runtime.backlog.totals() == {"age": 3, "count": 3}
        with runtime.db.reading() as tx:
            outcomes = tx.execute("SELECT person_key, outcome FROM deliveries ORDER BY seq").fetchall()
            assert tx.outbox_depth() == 0
    # each operation settled once: the old and the excess anonymous events expired, never sent
    assert [tuple(row) for row in outcomes] == [
        *((f"old{n}", "expired") for n in range(3)),
        ("p1", "delivered"),
        ("p2", "delivered"),
        *((f"new{n}", "expired") for n in range(3)),
        ("new3", "delivered"),
    ]


def test_the_person_view_shows_an_expired_event(sandbox: SandboxServer, tmp_path: Path) -> None:
    from posthog_customerio.people import lookup_person

    with make_runtime(sandbox, tmp_path / "data", anonymous_backlog_max=0) as runtime:
        runtime.ingestor.ingest(browsing("visitor-q", 2))
        runtime.deliverer()  # the first pass: ANONYMOUS_BACKLOG_MAX=0 keeps none
        found = lookup_person(runtime, "visitor-q")
        assert found is not None
        assert [(d["kind"], d["outcome"]) for d in found["deliveries"]] == [("anonymous", "expired")] * 2
        assert found["queued"] == []
