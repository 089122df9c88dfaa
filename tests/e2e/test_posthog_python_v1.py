"""posthog-python with ``capture_mode="v1"`` (``POST /i/v1/analytics/events``) against serve + sandbox."""

from __future__ import annotations

import logging
import uuid as uuidlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from posthog_customerio.config import Settings
from posthog_customerio.runtime import Runtime
from posthog_customerio.sandbox import SandboxServer
from posthog_customerio.sources import EventParseError, parse_v1_batch

from ..conftest import API_KEY, SITE_ID
from ..helpers import wait_for
from ..service import running_service

pytestmark = pytest.mark.e2e
posthog = pytest.importorskip("posthog")
PROJECT_KEY = "phc_v1_project_key_1234"


@contextmanager
def service(sandbox: SandboxServer, tmp_path: Path, **extra: Any) -> Iterator[tuple[str, Runtime]]:
    settings = Settings(
        customerio_site_id=SITE_ID,
        customerio_api_key=API_KEY,
        customerio_track_url=sandbox.url,
        posthog_customerio_data_dir=tmp_path / "data",
        sqlite_synchronous="NORMAL",
        shutdown_grace_s=1,
        **extra,
    )
    runtime = Runtime(settings)
    with running_service(runtime) as url:
        yield url, runtime


def wait_delivered(runtime: Runtime, timeout_s: float = 30) -> None:
    wait_for(lambda: runtime.outbox.depth() == 0, "delivery (not delivered in time)", timeout_s)


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_posthog_python_capture_mode_v1_reaches_customerio(sandbox: SandboxServer, tmp_path: Path, gzip: bool) -> None:
    errors: list[Any] = []
    with service(sandbox, tmp_path, webhook_token=PROJECT_KEY) as (url, runtime):
        client = posthog.Posthog(
            PROJECT_KEY,
            host=url,
            sync_mode=True,
            disable_geoip=True,
            capture_mode="v1",
            gzip=gzip,
            on_error=lambda error, batch: errors.append(error),
        )
        client.capture(
            "purchase", distinct_id="v1-user", properties={"amount": 42, "$set": {"email": "v1@example.com"}}
        )
        client.set(distinct_id="v1-user", properties={"plan": "team"})
        client.capture("$pageview", distinct_id="v1-user", properties={"$current_url": "https://x.io/v1"})
        client.shutdown()
        wait_delivered(runtime)
        assert runtime.ingestor.totals.events == 3
    assert errors == []
    person = sandbox.state.person("v1-user")
    assert person["email"] == "v1@example.com" and person["attributes"]["plan"] == "team"
    assert {(e["type"], e["name"]) for e in person["events"]} >= {("event", "purchase"), ("page", "https://x.io/v1")}


def test_posthog_python_v1_with_a_wrong_key_is_refused_and_told(
    sandbox: SandboxServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with service(sandbox, tmp_path, webhook_token=PROJECT_KEY) as (url, runtime):
        client = posthog.Posthog("phc_someone_else", host=url, sync_mode=True, disable_geoip=True, capture_mode="v1")
        with caplog.at_level(logging.ERROR, logger="posthog"):
            client.capture("purchase", distinct_id="v1-intruder")
        client.shutdown()
        assert runtime.outbox.depth() == 0 and runtime.ingestor.totals.events == 0
    # the SDK got a terminal 401 (it logs it and does not retry)
    assert any("(401)" in record.getMessage() for record in caplog.records if record.name == "posthog")
    assert sandbox.state.people() == []


@pytest.mark.parametrize("path", ["/i/v1/analytics/events", "/i/v1/analytics/events/"])
def test_v1_body_answers_per_event_results(sandbox: SandboxServer, tmp_path: Path, path: str) -> None:
    event_id = str(uuidlib.uuid4())
    body = {
        "created_at": "2024-05-01T10:00:00+00:00",
        "batch": [
            {
                "event": "signed_up",
                "uuid": event_id,
                "distinct_id": "raw-v1",
                "timestamp": "2024-05-01T09:59:58+00:00",
                "options": {"process_person_profile": True},
                "properties": {"$set": {"email": "raw@example.com"}},
                "session_id": "sess-1",
            }
        ],
    }
    with service(sandbox, tmp_path, webhook_token=PROJECT_KEY) as (url, runtime):
        refused = httpx.post(f"{url}{path}", json=body)
        assert refused.status_code == 401
        answer = httpx.post(f"{url}{path}", json=body, headers={"Authorization": f"Bearer {PROJECT_KEY}"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["results"] == {event_id: {"result": "ok"}}
        bad = httpx.post(f"{url}{path}", json={"event": "x"}, headers={"Authorization": f"Bearer {PROJECT_KEY}"})
        assert bad.status_code == 400 and "batch" in bad.json()["error"]
        wait_delivered(runtime)
    assert sandbox.state.person("raw-v1")["email"] == "raw@example.com"


def test_parse_v1_batch_restores_the_properties_posthog_stores() -> None:
    (event,) = parse_v1_batch(
        {
            "batch": [
                {
                    "event": "e",
                    "uuid": "u-1",
                    "distinct_id": "d",
                    "timestamp": "2024-05-01T09:59:58Z",
                    "options": {"process_person_profile": False, "cookieless_mode": True, "unknown": 1},
                    "properties": {"$set_once": {"first": "x"}, "k": 1},
                    "session_id": "s",
                    "window_id": "w",
                }
            ]
        },
        sdk_info="posthog-python/7.22.0",
    )
    assert event.uuid == "u-1" and event.distinct_id == "d" and event.set_once == {"first": "x"}
    assert event.properties == {
        "$set_once": {"first": "x"},
        "k": 1,
        "$session_id": "s",
        "$window_id": "w",
        "$process_person_profile": False,
        "$cookieless_mode": True,
        "$lib": "posthog-python",
        "$lib_version": "7.22.0",
    }
    with pytest.raises(EventParseError, match="event 1: missing distinct_id"):
        parse_v1_batch({"batch": [{"event": "e", "distinct_id": "d"}, {"event": "e"}]})
    with pytest.raises(EventParseError, match="options must be a JSON object"):
        parse_v1_batch({"batch": [{"event": "e", "distinct_id": "d", "options": []}]})
    with pytest.raises(EventParseError, match="batch"):
        parse_v1_batch([{"event": "e", "distinct_id": "d"}])
