"""Two replicas on one PostgreSQL outbox share Retry-After pauses and CUSTOMERIO_MAX_RPS.

Measured on the sandbox's own receive times. Only lower bounds on gaps are asserted:
a loaded machine can delay a request, never make it early.
"""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from posthog_customerio.pacing import PostgresPacer
from posthog_customerio.runtime import Runtime
from posthog_customerio.sandbox import SandboxServer
from posthog_customerio.storage import PostgresStorage

from ..helpers import make_settings
from ..integration.test_delivery import events_for

pytestmark = pytest.mark.e2e


def replica(sandbox: SandboxServer, pg_url: str, data_dir: Path, **overrides: Any) -> Runtime:
    return Runtime(
        make_settings(
            data_dir, sandbox, **{"sqlite_synchronous": None, "outbox_url": pg_url, "lease_s": 10, **overrides}
        )
    )


def run_replicas(runtimes: list[Runtime], events: list[Any], timeout: float = 60.0, batch_items: int = 1000) -> None:
    """Start every replica's workers, enqueue through the first, wait until all is delivered."""
    deliverers = [runtime.deliverer() for runtime in runtimes]
    for deliverer in deliverers:
        assert isinstance(deliverer.limiter, PostgresPacer)
        deliverer.max_batch_items = batch_items
        deliverer.start()
    runtimes[0].ingestor.ingest(events)
    for deliverer in deliverers:
        deliverer.notify()
    try:
        assert deliverers[0].wait_until_empty(timeout), "the replicas did not deliver everything"
    finally:
        for deliverer in deliverers:
            deliverer.stop()


def test_a_429_storm_pauses_every_replica_for_retry_after(sandbox: SandboxServer, pg_url: str, tmp_path: Path) -> None:
    retry_after = 2.0
    sandbox.state.add_fault(status=429, count=4, retry_after="2")
    with ExitStack() as stack:
        runtimes = [
            stack.enter_context(replica(sandbox, pg_url, tmp_path / name, customerio_max_rps=1, delivery_concurrency=2))
            for name in ("a", "b")
        ]
        run_replicas(runtimes, events_for(people=20, per_person=2), batch_items=10)
        sent = [runtime.current_deliverer.stats.requests for runtime in runtimes]  # type: ignore[union-attr]
    log = sorted(sandbox.state.requests(), key=lambda entry: entry["time"])
    storms = [entry for entry in log if entry["status"] == 429]
    assert len(storms) == 4 and sandbox.state.stats()["events"] == 40
    assert all(count > 0 for count in sent), f"one replica sent nothing ({sent}): the test proves nothing"
    for storm in storms:
        # a request already on the wire when the 429 was answered could not know about it
        later = [entry for entry in log if entry["time"] > storm["answered"]]
        early = [
            round(entry["time"] - storm["time"], 3)
            for entry in later
            if entry["time"] < storm["time"] + retry_after - 0.02
        ]
        assert not early, f"requests {early} s after a 429 with Retry-After: 2"


def test_replicas_share_customerio_max_rps(sandbox: SandboxServer, pg_url: str, tmp_path: Path) -> None:
    rps = 5.0
    with ExitStack() as stack:
        runtimes = [
            stack.enter_context(
                replica(
                    sandbox,
                    pg_url,
                    tmp_path / name,
                    customerio_max_rps=rps,
                    delivery_concurrency=2,
                    customerio_api="v1",
                )
            )
            for name in ("a", "b")
        ]
        started = time.monotonic()
        run_replicas(runtimes, events_for(people=12, per_person=2), batch_items=4)
        sent = [runtime.current_deliverer.stats.requests for runtime in runtimes]  # type: ignore[union-attr]
    times = sorted(entry["time"] for entry in sandbox.state.requests())
    assert len(times) == 36 and sandbox.state.stats()["events"] == 24
    assert all(count > 0 for count in sent), f"one replica sent nothing ({sent}): the test proves nothing"
    span = times[-1] - times[0]
    # slots are 1/rps apart on the database's clock; a request can be late (load), never early,
    # so only the first request's lateness can shrink the span: allow three slots for it
    assert len(times) - 1 <= rps * span + 3, f"{len(times)} requests in {span:.2f} s: above {rps}/s"
    assert time.monotonic() - started >= (len(times) - 4) / rps


def test_pacing_row_is_per_workspace_and_a_pause_reaches_every_replica(pg_url: str) -> None:
    db = PostgresStorage(pg_url)
    try:
        first = PostgresPacer(db, "workspace-1", rate=1000)
        other = PostgresPacer(db, "workspace-2", rate=1000)
        twin = PostgresPacer(db, "workspace-1", rate=1000)  # another replica of workspace 1
        first.pause_for(float("inf"))  # clamped, never an OverflowError
        stop = threading.Event()
        assert not twin.take(stop) and 0 < twin.pause_remaining() <= 3600
        assert other.take(stop) and other.pause_remaining() == 0
        with db.reading() as conn:
            rows = conn.execute("SELECT workspace FROM delivery_pacing ORDER BY workspace").fetchall()
        assert [row[0] for row in rows] == ["workspace-1", "workspace-2"]
    finally:
        db.close()
