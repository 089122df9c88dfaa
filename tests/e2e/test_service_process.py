"""`posthog-customerio serve` as a real process: SIGTERM, restart, Customer.io outages."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import uuid as uuidlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from posthog_customerio.sandbox import SandboxServer

from ..conftest import API_KEY, SITE_ID
from ..helpers import free_port, wait_for, wait_serving

pytestmark = pytest.mark.e2e

SCRIPT = Path(sys.executable).with_name("posthog-customerio")


@contextmanager
def service(env: dict[str, str], *extra: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Run `serve` as a subprocess; yields (base URL, process); SIGTERMs it at the end."""
    port = free_port()
    process = subprocess.Popen(
        [str(SCRIPT), "serve", "--port", str(port), *extra],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_serving(url, process)
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def webhook_events(count: int, people: int = 10, start: int = 0) -> list[dict]:
    return [
        {
            "event": {
                "uuid": str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"ev-{n}")),
                "event": "clicked",
                "distinct_id": f"person-{n % people}",
                "timestamp": 1_704_067_200 + n,
                "properties": {"n": n, "$set": {"last_n": n}},
            },
            "person": {"properties": {"email": f"person{n % people}@example.com"}},
        }
        for n in range(start, start + count)
    ]


def post_all(url: str, events: list[dict], per_request: int = 50) -> None:
    with httpx.Client(timeout=10) as client:
        for i in range(0, len(events), per_request):
            response = client.post(f"{url}/webhook", json=events[i : i + per_request])
            assert response.status_code == 200, response.text


@pytest.fixture
def service_env(sandbox: SandboxServer, tmp_path: Path) -> dict[str, str]:
    return {
        "CUSTOMERIO_SITE_ID": SITE_ID,
        "CUSTOMERIO_API_KEY": API_KEY,
        "CUSTOMERIO_TRACK_URL": sandbox.url,
        "POSTHOG_CUSTOMERIO_DATA_DIR": str(tmp_path / "data"),
        "LOG_FORMAT": "json",
        "SHUTDOWN_GRACE_S": "2",
    }


def event_ids(sandbox: SandboxServer) -> list[str]:
    return [event["id"] for event in sandbox.state.events()]


def test_sigterm_with_a_full_queue_then_restart_delivers_everything_exactly_once(
    sandbox: SandboxServer, service_env: dict[str, str]
) -> None:
    sandbox.state.add_fault(status=503, duration_s=600)  # Customer.io down (until cleared below)
    with service(service_env) as (url, process):
        post_all(url, webhook_events(300))
        depth = httpx.get(f"{url}/api/status").json()["outbox"]["depth"]
        assert depth == 600  # an identify (last_n changes) + the event, for each of 300 events
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    log = process.stdout.read() if process.stdout else ""
    assert "operations kept for the next start" in log
    # `status` reads the same figures from the data dir, with no server running
    status = subprocess.run(
        [str(SCRIPT), "status", "--json"], env={**os.environ, **service_env}, capture_output=True, text=True, timeout=30
    )
    report = json.loads(status.stdout)
    assert report["outbox"]["depth"] == 600 and report["ingest"]["events_received"] == 300
    assert report["service"]["snapshot_age_s"] < 60 and any("503" in e["message"] for e in report["recent_errors"])
    text = subprocess.run(
        [str(SCRIPT), "status"], env={**os.environ, **service_env}, capture_output=True, text=True, timeout=30
    )
    assert "600 queued" in text.stdout
    sandbox.state.clear_faults()
    with service(service_env) as (url, _):
        # the CLI works beside the running service (SQLite WAL, one deliverer)
        listing = subprocess.run(
            [str(SCRIPT), "dead-letters"], env={**os.environ, **service_env}, capture_output=True, text=True, timeout=30
        )
        assert listing.returncode == 0 and "no dead letters" in listing.stdout
        wait_for(lambda: len(event_ids(sandbox)) >= 300, "300 events")
        wait_for(lambda: httpx.get(f"{url}/api/status").json()["outbox"]["depth"] == 0)
    ids = event_ids(sandbox)
    assert len(ids) == len(set(ids)) == 300
    assert sandbox.state.stats()["duplicates"] == 0
    person = sandbox.state.person("person-3")
    assert person["attributes"]["last_n"] == 293 and person["email"] == "person3@example.com"


def test_an_outage_of_500s_then_429s_loses_nothing(sandbox: SandboxServer, service_env: dict[str, str]) -> None:
    """Faults by count, not by time window: the outage is exactly the first 3 requests (500)
    then the next 2 (429 + Retry-After: 1), however slowly the service starts or sends."""
    sandbox.state.add_fault(status=500, count=3)
    sandbox.state.add_fault(status=429, count=2, retry_after=1)  # rules apply in order
    with service(service_env) as (url, _):
        post_all(url, webhook_events(100))
        wait_for(lambda: sandbox.state.stats()["requests_by_status"].get("500", 0) >= 1, "a 500 answer", timeout=60)
        post_all(url, webhook_events(100, start=100))  # more events arrive during the outage
        wait_for(lambda: len(event_ids(sandbox)) >= 200, "200 events", timeout=90)
        wait_for(
            lambda: httpx.get(f"{url}/api/status").json()["outbox"]["depth"] == 0, "the outbox to drain", timeout=60
        )
        status = httpx.get(f"{url}/api/status").json()
    assert sorted(event_ids(sandbox)) == sorted(set(event_ids(sandbox)))
    assert len(event_ids(sandbox)) == 200
    requests = sandbox.state.requests()
    assert [r["status"] for r in requests[:5]] == [500, 500, 500, 429, 429]
    assert {r["status"] for r in requests[5:]} == {200}
    by_status = status["delivery"]["requests_by_status"]
    assert by_status.get("500") == 3 and by_status.get("429") == 2 and status["delivery"]["retries"] >= 5
    # after each 429 the next request waited for Retry-After (1 s); a loaded machine only waits longer
    for earlier, later in itertools.pairwise(requests):
        if earlier["status"] == 429:
            assert later["time"] - earlier["time"] >= 0.95


def test_credentials_revoked_pauses_reports_and_resumes(sandbox: SandboxServer, service_env: dict[str, str]) -> None:
    sandbox.state.set_credentials(SITE_ID, "revoked")
    with service({**service_env, "AUTH_RETRY_S": "0.5"}) as (url, process):
        post_all(url, webhook_events(20))
        wait_for(lambda: httpx.get(f"{url}/healthz").json()["delivery"] == "paused")
        health = httpx.get(f"{url}/healthz").json()
        assert "invalid" in health["auth_error"]
        assert httpx.get(f"{url}/readyz").status_code == 200  # still accepting events: buffering is the job
        wait_for(lambda: httpx.get(f"{url}/healthz").json()["customerio"]["credentials"] == "rejected")
        assert httpx.get(f"{url}/api/status").json()["outbox"]["depth"] == 40
        metrics = httpx.get(f"{url}/metrics").text
        assert "posthog_customerio_delivery_paused 1.0" in metrics
        sandbox.state.set_credentials(SITE_ID, API_KEY)  # the key works again
        wait_for(lambda: httpx.get(f"{url}/api/status").json()["outbox"]["depth"] == 0)
        assert httpx.get(f"{url}/healthz").json()["delivery"] == "running"
    assert len(event_ids(sandbox)) == 20
    log_lines = [
        json.loads(line)
        for line in (process.stdout.read() if process.stdout else "").splitlines()
        if line.startswith("{")
    ]
    assert any("credentials" in line["message"] for line in log_lines)
    for line in log_lines:
        assert API_KEY not in json.dumps(line) and SITE_ID not in json.dumps(line)
