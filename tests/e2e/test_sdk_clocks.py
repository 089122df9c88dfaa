"""SDK clocks are corrected on the capture paths, as PostHog's capture corrects them; nothing else is.

PostHog's capture service (``rust/capture/src/events/analytics.rs`` ``process_single_event`` ->
``rust/common/types/src/timestamp.rs`` ``parse_event_timestamp``; capture v1:
``rust/capture/src/v1/analytics/process.rs`` ``normalize_timestamp``) moves an SDK's event time by
the SDK's clock error (its ``sent_at`` minus the receive time), takes ``offset`` as milliseconds
before the receive time, and clamps a time more than 23 h ahead to the receive time. Webhook bodies,
batch-export files and Kafka carry times PostHog already corrected: they are left alone.

Real HTTP on loopback: ``serve`` in-process with a fixed receive clock, the sandbox as Customer.io.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from posthog_customerio.runtime import Runtime
from posthog_customerio.sandbox import SandboxServer

from ..conftest import Cli, write_jsonl
from ..fake_posthog import running_fake_posthog
from ..helpers import (
    fixed_clock,
    hog,
    iso_ms,
    make_runtime,
    posthog_js_capture_body,
    posthog_js_event,
    server_sdk_batch,
    server_sdk_event,
    wait_for,
)
from ..service import running_service

pytestmark = pytest.mark.e2e

#: the service's receive time in these tests (the wall clock plays no part)
NOW = datetime(2025, 3, 14, 15, 9, 26, 535_000, tzinfo=UTC)
NOW_S = int(NOW.timestamp())
BROWSER_NOW = NOW - timedelta(days=4)  # a browser whose clock is 4 days behind


@contextmanager
def service(sandbox: SandboxServer, tmp_path: Path, **overrides: Any) -> Iterator[tuple[str, Runtime]]:
    runtime = make_runtime(sandbox, tmp_path / "data", shutdown_grace_s=1, **overrides)
    with running_service(runtime, clock=fixed_clock(NOW)) as url:
        yield url, runtime


def delivered_times(sandbox: SandboxServer, runtime: Runtime, count: int) -> dict[str, int]:
    """Event name -> Customer.io event timestamp, once ``count`` events arrived."""

    def arrived() -> list[dict[str, Any]]:
        return sandbox.state.events() + sandbox.state.anonymous_events()

    wait_for(lambda: runtime.outbox.depth() == 0 and len(arrived()) >= count, f"{count} events", describe=arrived)
    return {event["name"]: event["timestamp"] for event in arrived()}


def test_a_browser_four_days_behind_lands_at_the_receive_time(sandbox: SandboxServer, tmp_path: Path) -> None:
    # posthog-js today: gzip, {api_key, batch, sent_at}; the page was open 3 s and 10 min before sending
    body = posthog_js_capture_body(
        [
            posthog_js_event("viewed_pricing", "browser-1", BROWSER_NOW - timedelta(minutes=10)),
            posthog_js_event("clicked_buy", "browser-1", BROWSER_NOW - timedelta(seconds=3)),
        ],
        sent_at=BROWSER_NOW,
    )
    with service(sandbox, tmp_path) as (url, runtime):
        answer = httpx.post(f"{url}/e/?ver=1.449.2", content=gzip.compress(json.dumps(body).encode()), timeout=10)
        assert answer.status_code == 200, answer.text
        times = delivered_times(sandbox, runtime, 2)
    # within Customer.io's 72 h window again, and in the order and spacing the browser saw
    assert times == {"viewed_pricing": NOW_S - 600, "clicked_buy": NOW_S - 3}


@pytest.mark.parametrize("param", ["sent_at", "_"])
def test_older_posthog_js_sends_its_clock_in_the_query(sandbox: SandboxServer, tmp_path: Path, param: str) -> None:
    # before posthog-js sent {api_key, batch, sent_at} it posted the bare array with ?sent_at=<ms> (older: ?_=<ms>)
    events = [posthog_js_event("clicked_buy", "browser-2", BROWSER_NOW - timedelta(seconds=3))]
    sent_ms = int(BROWSER_NOW.timestamp() * 1000)
    with service(sandbox, tmp_path) as (url, runtime):
        answer = httpx.post(
            f"{url}/e/?ver=1.200.0&compression=gzip-js&{param}={sent_ms}",
            content=gzip.compress(json.dumps(events).encode()),
            headers={"Content-Type": "text/plain"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        assert delivered_times(sandbox, runtime, 1) == {"clicked_buy": NOW_S - 3}


def test_server_sdk_batches_are_corrected_by_their_sent_at_unless_the_event_opts_out(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    server_now = NOW + timedelta(hours=2)  # a server whose clock runs 2 h fast
    body = server_sdk_batch(
        [
            server_sdk_event("invoice_paid", "server-1", server_now - timedelta(seconds=30)),
            # posthog-python capture(..., disable_skew_correction) / $ignore_sent_at: the time is the event's own
            server_sdk_event("imported", "server-1", NOW - timedelta(days=1), **{"$ignore_sent_at": True}),
        ],
        sent_at=server_now,
    )
    with service(sandbox, tmp_path) as (url, runtime):
        assert httpx.post(f"{url}/batch/", json=body, timeout=10).status_code == 200
        times = delivered_times(sandbox, runtime, 2)
    assert times == {"invoice_paid": NOW_S - 30, "imported": NOW_S - 86_400}


def test_a_server_event_three_days_ahead_without_sent_at_is_clamped_to_the_receive_time(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    body = server_sdk_batch(
        [
            server_sdk_event("renewed", "server-2", NOW + timedelta(days=3)),
            server_sdk_event("scheduled", "server-2", NOW + timedelta(hours=22)),  # under 23 h: kept
        ],
        sent_at=None,
    )
    with service(sandbox, tmp_path) as (url, runtime):
        assert httpx.post(f"{url}/batch/", json=body, timeout=10).status_code == 200
        single = {"api_key": "phc_test", **server_sdk_event("renewed_again", "server-2", NOW + timedelta(days=3))}
        assert httpx.post(f"{url}/capture/", json=single, timeout=10).status_code == 200
        times = delivered_times(sandbox, runtime, 3)
    assert times == {"renewed": NOW_S, "scheduled": NOW_S + 22 * 3600, "renewed_again": NOW_S}


def test_offset_without_a_timestamp_is_milliseconds_before_the_receive_time(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    queued = server_sdk_event("synced", "device-1", None)
    queued["offset"] = 90_000  # queued 90 s before the request left
    now_event = server_sdk_event("opened", "device-1", None)  # neither: the receive time
    with service(sandbox, tmp_path) as (url, runtime):
        body = server_sdk_batch([queued, now_event], sent_at=BROWSER_NOW)
        assert httpx.post(f"{url}/batch/", json=body, timeout=10).status_code == 200
        times = delivered_times(sandbox, runtime, 2)
    assert times == {"synced": NOW_S - 90, "opened": NOW_S}


def test_capture_v1_is_corrected_by_the_request_timestamp_header(sandbox: SandboxServer, tmp_path: Path) -> None:
    # posthog-python capture_mode="v1": PostHog-Request-Timestamp header, batch created_at, per-event options
    device_now = NOW - timedelta(days=4)

    def v1_event(name: str, when: datetime, **options: Any) -> dict[str, Any]:
        return {
            "event": name,
            "uuid": f"0195{len(name):04x}-0000-7000-8000-{abs(hash(name)) % 10**12:012d}",
            "distinct_id": "v1-user",
            "timestamp": when.isoformat(),
            "options": options,
            "properties": {"$lib": "posthog-python"},
        }

    body = {
        "created_at": device_now.isoformat(),
        "batch": [
            v1_event("exported", device_now - timedelta(seconds=5)),
            v1_event("backfilled", NOW - timedelta(days=2), disable_skew_correction=True),
        ],
    }
    headers = {
        "PostHog-Sdk-Info": "posthog-python/7.91.1",
        "PostHog-Attempt": "1",
        "PostHog-Request-Id": "4b1c2a9e-9a52-4d41-9b0c-3d6c0f2e1a77",
        "PostHog-Request-Timestamp": device_now.isoformat(),
    }
    with service(sandbox, tmp_path) as (url, runtime):
        answer = httpx.post(f"{url}/i/v1/analytics/events", json=body, headers=headers, timeout=10)
        assert answer.status_code == 200, answer.text
        times = delivered_times(sandbox, runtime, 2)
    assert times == {"exported": NOW_S - 5, "backfilled": NOW_S - 2 * 86_400}


@pytest.mark.parametrize("capture_mode", ["v0", "v1"])
def test_the_real_posthog_python_sdk_four_days_behind_the_service(
    sandbox: SandboxServer, tmp_path: Path, capture_mode: str
) -> None:
    # the SDK stamps events and sent_at (v1: PostHog-Request-Timestamp) with the wall clock; the service's
    # clock says 4 days later: the SDK's clock is the one that is off, so its events land at the service's now
    posthog = pytest.importorskip("posthog")
    skew = timedelta(days=4)
    runtime = make_runtime(sandbox, tmp_path / "data", shutdown_grace_s=1, webhook_token="phc_clock_test_1234")
    with running_service(runtime, clock=lambda: datetime.now(UTC) + skew) as url:
        client = posthog.Posthog(
            "phc_clock_test_1234", host=url, sync_mode=True, disable_geoip=True, capture_mode=capture_mode
        )
        client.capture("from_python", distinct_id="python-user")
        client.shutdown()
        received = datetime.now(UTC) + skew
        (when,) = delivered_times(sandbox, runtime, 1).values()
    assert abs(when - received.timestamp()) < 5


def test_what_posthog_accepted_through_the_proxy_is_stored_corrected(sandbox: SandboxServer, tmp_path: Path) -> None:
    body = posthog_js_capture_body(
        [posthog_js_event("clicked_buy", "proxied-1", BROWSER_NOW - timedelta(seconds=3))], sent_at=BROWSER_NOW
    )
    with (
        running_fake_posthog() as (fake, posthog_url),
        service(sandbox, tmp_path, posthog_host=posthog_url) as (
            url,
            runtime,
        ),
    ):
        answer = httpx.post(f"{url}/e/", content=gzip.compress(json.dumps(body).encode()), timeout=10)
        assert answer.status_code == 200, answer.text
        assert delivered_times(sandbox, runtime, 1) == {"clicked_buy": NOW_S - 3}
    (forwarded,) = fake.recorded("/e")
    assert json.loads(gzip.decompress(forwarded.body)) == body  # PostHog gets the body as the browser sent it


def test_webhook_bodies_keep_the_times_posthog_gave_them(sandbox: SandboxServer, tmp_path: Path) -> None:
    ahead = hog("hooked", "scheduled")
    ahead["event"]["timestamp"] = iso_ms(NOW + timedelta(days=3))  # not clamped: PostHog decided it
    behind = hog("hooked", "old")
    behind["event"]["timestamp"] = iso_ms(NOW - timedelta(days=4))
    behind["event"]["sent_at"] = iso_ms(NOW - timedelta(days=8))  # not an SDK request: no correction
    with service(sandbox, tmp_path) as (url, runtime):
        assert httpx.post(f"{url}/webhook", json=[ahead, behind], timeout=10).status_code == 200
        times = delivered_times(sandbox, runtime, 2)
    assert times == {"scheduled": NOW_S + 3 * 86_400, "old": NOW_S - 4 * 86_400}


def test_batch_export_files_keep_their_times(
    cli: Cli, env: dict[str, str], sandbox: SandboxServer, tmp_path: Path
) -> None:
    lines = [
        {
            "uuid": "01958f2a-0000-7000-8000-000000000001",
            "event": "exported_old",
            "distinct_id": "file-1",
            "timestamp": (NOW - timedelta(days=4)).isoformat(),
            "sent_at": (NOW - timedelta(days=8)).isoformat(),
            "properties": {},
            "person_properties": {"email": "file-1@example.com"},
        },
        {
            "uuid": "01958f2a-0000-7000-8000-000000000002",
            "event": "exported_ahead",
            "distinct_id": "file-1",
            "timestamp": (NOW + timedelta(days=3)).isoformat(),
            "offset": 90_000,
            "properties": {},
        },
    ]
    result = cli("send", str(write_jsonl(tmp_path / "export.jsonl", lines)), env=env)
    assert result.exit_code == 0, result.output
    times = {event["name"]: event["timestamp"] for event in sandbox.state.events() + sandbox.state.anonymous_events()}
    assert times == {"exported_old": NOW_S - 4 * 86_400, "exported_ahead": NOW_S + 3 * 86_400}
