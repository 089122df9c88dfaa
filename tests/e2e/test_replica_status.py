"""``status`` with several replicas on one database: counters summed across the replicas alive, each
replica listed with its last heartbeat (CLI ``status`` and ``/api/status``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from posthog_customerio.sandbox import SandboxServer
from posthog_customerio.sources import parse_event
from posthog_customerio.status import ThroughputSampler, build_status, offline_status

from ..conftest import Cli
from ..helpers import hog, make_runtime, wait_for
from ..service import running_service
from .test_status_page import browser, chromium_path  # noqa: F401 - the Chromium fixtures


def _received(runtime_count: int) -> list[dict[str, object]]:
    return [hog(f"rep-{runtime_count}-{n}", "clicked", n) for n in range(runtime_count * 10)]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_status_sums_the_counters_of_every_replica(
    sandbox: SandboxServer, tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else f"sqlite:///{tmp_path / 'shared.sqlite'}"
    runtimes = [make_runtime(sandbox, tmp_path / f"data-{n}", outbox_url=url) for n in range(3)]
    samplers = [ThroughputSampler(runtime) for runtime in runtimes]
    try:
        for count, (runtime, sampler) in enumerate(zip(runtimes, samplers, strict=True), start=1):
            runtime.ingestor.ingest([parse_event(event) for event in _received(count)])
            sampler.save()
        report = offline_status(runtimes[0])
        assert report["ingest"]["events_received"] == 10 + 20 + 30
        assert report["ingest"]["operations_enqueued"] == sum(r.ingestor.totals.operations for r in runtimes)
        assert sum(report["ingest"]["by_source"].values()) == 60  # maps of counters are summed too
        assert report["delivery"]["state"] == "stopped" and report["delivery"]["api"] == "v2"  # the rest as is
        replicas = report["replicas"]
        assert len(replicas) == 3 and all(r["live"] for r in replicas)
        assert sorted(r["events_received"] for r in replicas) == [10, 20, 30]
        # a live report (/api/status): this process's figures now, the others' from their heartbeat
        runtimes[1].ingestor.ingest([parse_event(hog("late", "clicked", 1))])
        live = build_status(runtimes[0], samplers[0], replicas=True)
        assert live["ingest"]["events_received"] == 60  # runtime 1's new event shows at its next heartbeat
        samplers[1].save()
        assert build_status(runtimes[0], samplers[0], replicas=True)["ingest"]["events_received"] == 61
        # a replica that stopped cleanly no longer counts while others run
        samplers[2].stop()
        after = build_status(runtimes[0], samplers[0], replicas=True)
        assert after["ingest"]["events_received"] == 31
        assert [r["live"] for r in after["replicas"]].count(False) == 1
    finally:
        for runtime in runtimes:
            runtime.close()


@pytest.mark.e2e
def test_api_status_and_cli_status_of_two_services(
    sandbox: SandboxServer, tmp_path: Path, pg_url: str, cli: Cli, env: dict[str, str]
) -> None:
    first = make_runtime(sandbox, tmp_path / "a", outbox_url=pg_url, anonymous_hold_s=0)
    second = make_runtime(sandbox, tmp_path / "b", outbox_url=pg_url, anonymous_hold_s=0)
    with running_service(first) as url_a, running_service(second) as url_b:
        for n in range(3):
            assert httpx.post(f"{url_a}/webhook", json=hog("a-person", "clicked", n), timeout=10).status_code == 200
        for n in range(5):
            assert httpx.post(f"{url_b}/webhook", json=hog("b-person", "clicked", n), timeout=10).status_code == 200

        def summed() -> dict[str, object] | None:
            status = httpx.get(f"{url_a}/api/status", timeout=10).json()
            return status if status["ingest"]["events_received"] == 8 else None

        status = wait_for(summed, "/api/status to sum both services", 30)
        assert len(status["replicas"]) == 2 and status["this_replica"] in {r["id"] for r in status["replicas"]}
        done = cli("status", "--json", env={**env, "OUTBOX_URL": pg_url})
        assert done.exit_code == 0, done.output
        report = json.loads(done.output)
        assert report["ingest"]["events_received"] == 8 and len(report["replicas"]) == 2
        text = cli("status", env={**env, "OUTBOX_URL": pg_url}).output
        assert "received           8 events" in text and "replicas           2 live" in text


@pytest.mark.e2e
def test_status_page_lists_the_replicas(browser: Any, sandbox: SandboxServer, tmp_path: Path, pg_url: str) -> None:
    from playwright.sync_api import expect

    first = make_runtime(sandbox, tmp_path / "a", outbox_url=pg_url, anonymous_hold_s=0)
    second = make_runtime(sandbox, tmp_path / "b", outbox_url=pg_url, anonymous_hold_s=0)
    with running_service(first) as url, running_service(second, deliver=False) as other:
        for n in range(4):
            assert httpx.post(f"{other}/webhook", json=hog("c-person", "clicked", n), timeout=10).status_code == 200
        wait_for(
            lambda: httpx.get(f"{url}/api/status", timeout=10).json()["ingest"]["events_received"] == 4,
            "the other replica's heartbeat",
        )
        page = browser.new_page()
        page.goto(f"{url}/status")
        expect(page.locator("#replicas-panel")).to_be_visible()
        expect(page.locator("#replicas tr")).to_have_count(2)
        expect(page.locator("#replicas tr").filter(has_text="stopped or silent")).to_have_count(0)
        expect(page.locator("#events-received")).to_have_text("4")
        page.close()
