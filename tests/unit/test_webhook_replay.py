"""A signed webhook is stored once per ``webhook-id`` (Standard Webhooks: the id is an idempotency key).

Before the fix the same signed request, replayed within the 5-minute timestamp tolerance, was
accepted and stored every time.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from standardwebhooks.webhooks import Webhook

from posthog_customerio.config import Settings
from posthog_customerio.runtime import Runtime
from posthog_customerio.service.replay import Claim, ReplayGuard

from ..helpers import hog, wait_for
from ..service import in_process_service

NO_CUSTOMERIO = "http://127.0.0.1:9"  # delivery is off: nothing is sent
SECRET = "whsec_" + base64.b64encode(b"replay-test-signing-secret-0123").decode()


def _signed(body: dict[str, Any] | list[Any], webhook_id: str) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    now = datetime.now(UTC)
    signature = Webhook(SECRET).sign(webhook_id, now, raw)
    headers = {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    return raw, headers


@contextmanager
def _service(settings: Callable[..., Settings]) -> Iterator[tuple[TestClient, Runtime]]:
    runtime = Runtime(settings(customerio_track_url=NO_CUSTOMERIO, webhook_signing_secret=SECRET))
    with in_process_service(runtime) as client:
        yield client, runtime


def test_a_replayed_signed_webhook_is_stored_once(settings: Callable[..., Settings]) -> None:
    raw, headers = _signed([hog("ann", n=1), hog("bob", n=2)], "msg_replay_1")
    with _service(settings) as (client, runtime):
        answers = [client.post("/webhook", content=raw, headers=headers) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
        assert answers[0].json()["accepted"] == 2 and "replayed" not in answers[0].json()
        for again in answers[1:]:
            assert again.json() == {"status": 1, "accepted": 0, "operations": 0, "replayed": True}
        assert runtime.ingestor.received_by_source["webhook"] == 2
        depth = runtime.outbox.depth()
        other_raw, other_headers = _signed([hog("ann", n=3)], "msg_replay_2")  # a new id is a new webhook
        other = client.post("/webhook", content=other_raw, headers=other_headers)
        assert other.status_code == 200 and other.json()["accepted"] == 1
        assert runtime.ingestor.received_by_source["webhook"] == 3 and runtime.outbox.depth() > depth


def test_a_refused_webhook_is_processed_when_its_id_comes_again(settings: Callable[..., Settings]) -> None:
    """Only a stored webhook is remembered: the sender's retry of a refused one (same id) is processed."""
    bad_raw, bad_headers = _signed({"event": {"event": "x"}}, "msg_retry_1")  # no distinct_id: 400
    good_raw, good_headers = _signed([hog("ann", n=1)], "msg_retry_1")
    with _service(settings) as (client, runtime):
        refused = client.post("/webhook", content=bad_raw, headers=bad_headers)
        assert refused.status_code == 400, refused.text
        retried = client.post("/webhook", content=good_raw, headers=good_headers)
        assert retried.status_code == 200 and retried.json()["accepted"] == 1, retried.text
        assert runtime.ingestor.received_by_source["webhook"] == 1


def test_a_replay_while_the_first_is_being_stored_is_answered_409(
    settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    raw, headers = _signed([hog("ann", n=1)], "msg_in_flight")
    entered, release = threading.Event(), threading.Event()
    with _service(settings) as (client, runtime):
        real = runtime.ingestor.ingest_requests  # how the group commit stores its requests

        def held(*args: Any, **kwargs: Any) -> Any:
            entered.set()
            assert release.wait(30)
            return real(*args, **kwargs)

        monkeypatch.setattr(runtime.ingestor, "ingest_requests", held)
        first: list[httpx.Response] = []
        thread = threading.Thread(target=lambda: first.append(client.post("/webhook", content=raw, headers=headers)))
        thread.start()
        try:
            assert entered.wait(30), "the first request never reached the outbox"
            replay = client.post("/webhook", content=raw, headers=headers)
            assert replay.status_code == 409 and replay.headers["retry-after"] == "1", replay.text
            assert "webhook-id" in replay.json()["error"]
        finally:
            release.set()
            thread.join(60)
        assert first[0].status_code == 200 and first[0].json()["accepted"] == 1
        later = client.post("/webhook", content=raw, headers=headers)
        assert later.json().get("replayed") is True
        wait_for(lambda: runtime.ingestor.received_by_source["webhook"] == 1, "one stored event")


class _Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_ids_are_remembered_for_the_tolerance_window_then_forgotten() -> None:
    clock = _Clock()
    guard = ReplayGuard(tolerance_s=300, clock=clock)
    assert guard.claim("a") is Claim.NEW
    assert guard.claim("a") is Claim.IN_FLIGHT
    guard.commit("a", timestamp=clock.now + 120)  # signed 2 minutes "ahead": replayable until +420 s
    clock.now += 419
    assert guard.claim("a") is Claim.DONE
    clock.now += 2
    assert guard.claim("b") is Claim.NEW  # any claim forgets what expired
    assert len(guard) == 1
    assert guard.claim("a") is Claim.NEW


def test_memory_is_bounded_and_a_failed_request_is_forgotten() -> None:
    clock = _Clock()
    guard = ReplayGuard(tolerance_s=300, max_ids=3, clock=clock)
    for name in "abcd":
        assert guard.claim(name) is Claim.NEW
        guard.commit(name, clock.now)
    assert len(guard) == 3
    assert guard.claim("a") is Claim.NEW  # the oldest went first
    guard.release("a")
    assert guard.claim("d") is Claim.DONE and guard.claim("a") is Claim.NEW
