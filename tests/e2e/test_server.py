"""The HTTP receivers through real HTTP: shapes, encodings, auth, bad input, back-pressure."""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from posthog_customerio.runtime import Runtime
from posthog_customerio.sandbox import SandboxServer
from posthog_customerio.service import create_app

from ..conftest import API_KEY, SITE_ID
from ..helpers import hog, make_settings, wait_for

pytestmark = pytest.mark.e2e

TOKEN = "tok-3f9a-webhook"
SIGNING_SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


@contextmanager
def running(runtime: Runtime) -> Iterator[str]:
    """Serve the app on a free loopback port in a thread; yields the base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(runtime), log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        runtime.close()


@pytest.fixture
def make_service(sandbox: SandboxServer, tmp_path: Path):
    @contextmanager
    def make(**overrides: Any) -> Iterator[tuple[str, Runtime]]:
        settings = make_settings(tmp_path / "data", sandbox, **{"shutdown_grace_s": 1, **overrides})
        runtime = Runtime(settings)
        with running(runtime) as url:
            yield url, runtime

    return make


def wait_delivered(url: str, timeout: float = 30) -> dict[str, Any]:
    def status() -> dict[str, Any]:
        # the token is ignored when none is configured, and opens /api/status when one is
        return httpx.get(f"{url}/api/status", headers={"Authorization": f"Bearer {TOKEN}"}).json()  # type: ignore[no-any-return]

    return wait_for(  # type: ignore[no-any-return]
        lambda: (now := status())["outbox"]["depth"] == 0 and now, "an empty outbox", timeout, describe=status
    )


def test_webhook_body_single_and_list(make_service, sandbox: SandboxServer) -> None:
    with make_service() as (url, _):
        one = httpx.post(f"{url}/webhook", json=hog("ann", "$pageview", **{"$current_url": "https://x.io/"}))
        assert one.status_code == 200 and one.json() == {"status": 1, "accepted": 1, "operations": 2}
        many = httpx.post(f"{url}/webhook", json=[hog("bob", n=1), hog("bob", n=2)])
        assert many.json()["accepted"] == 2
        wait_delivered(url)
    ann = sandbox.state.person("ann")
    assert ann["email"] == "ann@example.com" and ann["events"][0]["type"] == "page"
    assert len(sandbox.state.person("bob")["events"]) == 2


def test_plugin_and_export_shapes_on_the_webhook(make_service, sandbox: SandboxServer) -> None:
    plugin = {
        "event": "signed_up",
        "distinct_id": "p1",
        "timestamp": "2024-01-01T00:00:00Z",
        "$set": {"plan": "pro"},
        "properties": {"a": 1},
    }
    export = {
        "event": "paid",
        "distinct_id": "p2",
        "timestamp": "2024-01-01T00:00:00+00:00",
        "person_properties": {"tier": "gold"},
        "properties": {},
        "set": {"x": 1},
    }
    with make_service() as (url, _):
        assert httpx.post(f"{url}/webhook", json=[plugin, export]).status_code == 200
        wait_delivered(url)
    assert sandbox.state.person("p1")["attributes"]["plan"] == "pro"
    assert sandbox.state.person("p2")["attributes"] == {"tier": "gold", "x": 1}


def test_capture_batch_gzip_and_base64_form(make_service, sandbox: SandboxServer) -> None:
    batch = {
        "api_key": "phc_x",
        "batch": [
            {"event": "a", "distinct_id": "c1", "properties": {"$set": {"k": 1}}},
            {"event": "b", "distinct_id": "c1", "properties": {}},
        ],
    }
    body = json.dumps(batch).encode()
    with make_service() as (url, _):
        for path in ("/batch", "/batch/", "/capture", "/e/", "/i/v0/e"):
            assert httpx.post(url + path, json={"api_key": "k", "event": "x", "distinct_id": "c0"}).status_code == 200
        gz = httpx.post(f"{url}/batch/", content=gzip.compress(body), headers={"Content-Encoding": "gzip"})
        assert gz.json()["accepted"] == 2
        js = httpx.post(f"{url}/e/?compression=gzip-js", content=gzip.compress(body))
        assert js.json()["accepted"] == 2
        form = httpx.post(f"{url}/e/", data={"data": base64.b64encode(body).decode()})
        assert form.json()["accepted"] == 2
        wait_delivered(url)
    assert sandbox.state.person("c1")["attributes"]["k"] == 1


def test_the_official_posthog_python_sdk_can_point_at_the_service(make_service, sandbox: SandboxServer) -> None:
    posthog = pytest.importorskip("posthog")
    with make_service() as (url, _):
        client = posthog.Posthog("phc_test", host=url, sync_mode=True, disable_geoip=True)
        client.capture(
            "purchase", distinct_id="sdk-user", properties={"amount": 42, "$set": {"email": "sdk@example.com"}}
        )
        client.set(distinct_id="sdk-user", properties={"plan": "team"})
        client.capture("$pageview", distinct_id="sdk-user", properties={"$current_url": "https://x.io/sdk"})
        client.shutdown()
        wait_delivered(url)
    person = sandbox.state.person("sdk-user")
    assert person["email"] == "sdk@example.com" and person["attributes"]["plan"] == "team"
    assert {(e["type"], e["name"]) for e in person["events"]} >= {("event", "purchase"), ("page", "https://x.io/sdk")}


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "malformed JSON"),
        (b"", 400, "empty body"),
        (b"\xff\xfe\x00", 400, "UTF-8"),
        (b'"just a string"', 400, "expected a JSON object or array"),
        (b'{"event": "x", "properties": {}}', 400, "missing distinct_id"),
        (b'[{"event": "x", "distinct_id": "a"}, {"event": "y"}]', 400, "event 1: missing distinct_id"),
        (b'{"event": {"event": "x", "distinct_id": "a", "properties": []}}', 400, "properties must be a JSON object"),
        (b'{"event": "x", "distinct_id": "a", "timestamp": "soon"}', 400, "not ISO 8601"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "malformed JSON"),
    ],
)
def test_bad_input_gets_a_clear_4xx_and_leaves_the_outbox_unchanged(
    make_service, body: bytes, status: int, message: str
) -> None:
    with make_service() as (url, runtime):
        response = httpx.post(f"{url}/webhook", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == status
        assert message in response.json()["error"]
        assert runtime.outbox.depth() == 0


def test_body_over_the_limit_is_413(make_service) -> None:
    with make_service(max_body_bytes=10_000) as (url, runtime):
        big = json.dumps([{"event": "x", "distinct_id": "a", "properties": {"p": "x" * 20_000}}]).encode()
        assert httpx.post(f"{url}/webhook", content=big).status_code == 413
        bomb = gzip.compress(b"[" + b" " * 5_000_000 + b"]")
        response = httpx.post(f"{url}/webhook", content=bomb, headers={"Content-Encoding": "gzip"})
        assert response.status_code == 413 and "decompressed" in response.json()["error"]
        assert runtime.outbox.depth() == 0


def test_full_outbox_answers_503_with_retry_after(make_service, sandbox: SandboxServer) -> None:
    sandbox.state.add_fault(status=503, duration_s=600)  # cleared below; no window to outlast
    with make_service(max_queue=4) as (url, _):
        assert httpx.post(f"{url}/webhook", json=[hog("a"), hog("b")]).status_code == 200
        full = wait_for(  # the depth check may use a count up to 1 s old
            lambda: (answer := httpx.post(f"{url}/webhook", json=hog("c"))).status_code == 503 and answer,
            "the outbox to count as full",
            10,
        )
        assert full.status_code == 503 and full.headers["retry-after"]
        assert "MAX_QUEUE" in full.json()["error"]
    sandbox.state.clear_faults()


def test_bearer_token_accepted_and_rejected(make_service) -> None:
    with make_service(webhook_token=TOKEN) as (url, runtime):
        assert httpx.post(f"{url}/webhook", json=hog("a")).status_code == 401
        assert httpx.post(f"{url}/webhook", json=hog("a"), headers={"Authorization": "Bearer nope"}).status_code == 401
        ok = httpx.post(f"{url}/webhook", json=hog("a"), headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
        # capture endpoints: Bearer, or the token as api_key (what an SDK can send)
        assert (
            httpx.post(
                f"{url}/batch/", json={"api_key": "phc_other", "batch": [{"event": "e", "distinct_id": "d"}]}
            ).status_code
            == 401
        )
        assert (
            httpx.post(
                f"{url}/batch/", json={"api_key": TOKEN, "batch": [{"event": "e", "distinct_id": "d"}]}
            ).status_code
            == 200
        )
        assert runtime.ingestor.totals.events == 2


def _sign(body: bytes, msg_id: str = "msg_1", at: int | None = None, secret: str = SIGNING_SECRET) -> dict[str, str]:
    at = int(time.time()) if at is None else at
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{at}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(at),
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
        "Content-Type": "application/json",
    }


def test_standard_webhooks_signatures(make_service) -> None:
    body = json.dumps(hog("signed")).encode()
    with make_service(webhook_signing_secret=SIGNING_SECRET) as (url, runtime):
        assert httpx.post(f"{url}/webhook", content=body, headers=_sign(body)).status_code == 200
        assert httpx.post(f"{url}/webhook", content=body).status_code == 401  # unsigned
        tampered = body.replace(b"signed", b"signer")
        assert httpx.post(f"{url}/webhook", content=tampered, headers=_sign(body)).status_code == 401
        stale = _sign(body, at=int(time.time()) - 3600)
        assert httpx.post(f"{url}/webhook", content=body, headers=stale).status_code == 401
        other_key = "whsec_" + base64.b64encode(b"x" * 32).decode()
        assert httpx.post(f"{url}/webhook", content=body, headers=_sign(body, secret=other_key)).status_code == 401
        garbage = {**_sign(body), "webhook-signature": "garbage"}
        assert httpx.post(f"{url}/webhook", content=body, headers=garbage).status_code == 401
        assert runtime.ingestor.totals.events == 1


def test_operational_endpoints(make_service) -> None:
    with make_service() as (url, _):
        httpx.post(f"{url}/webhook", json=[hog("m1"), {"bad": 1}])
        httpx.post(f"{url}/webhook", json=hog("m1", n=2))
        wait_delivered(url)
        assert httpx.get(f"{url}/healthz").json()["status"] == "ok"
        assert httpx.get(f"{url}/readyz").json() == {"ready": True, "problems": []}
        metrics = httpx.get(f"{url}/metrics").text
        for line in (
            'posthog_customerio_events_received_total{source="webhook"} 1.0',
            'posthog_customerio_events_invalid_total{source="webhook"} 1.0',
            'posthog_customerio_customerio_requests_total{status="200"}',
            "posthog_customerio_outbox_depth 0.0",
            "posthog_customerio_delivery_latency_seconds_count",
        ):
            assert line in metrics
        spec = httpx.get(f"{url}/openapi.json").json()
        assert {"/webhook", "/batch", "/healthz", "/readyz", "/metrics", "/api/status"} <= set(spec["paths"])
        status = httpx.get(f"{url}/api/status").json()
        assert status["ingest"]["events_received"] == 1 and status["delivery"]["delivered"] == 2
        assert "<html" in httpx.get(f"{url}/status").text.lower()


def test_secrets_appear_in_no_response(make_service) -> None:
    with make_service(webhook_token=TOKEN) as (url, _):
        auth = {"Authorization": f"Bearer {TOKEN}"}
        httpx.post(f"{url}/webhook", json=hog("s1"), headers=auth)
        wait_delivered(url)
        paths = ("/healthz", "/readyz", "/metrics", "/api/status", "/status", "/openapi.json")
        texts = [httpx.get(f"{url}{path}", headers=headers).text for path in paths for headers in ({}, auth)]
        texts.append(httpx.post(f"{url}/webhook", json=hog("s1")).text)
    for text in texts:
        assert API_KEY not in text and SITE_ID not in text and TOKEN not in text


def test_dead_letter_api_lists_and_requeues_json_only(make_service, sandbox: SandboxServer) -> None:
    with make_service(limits="dead-letter") as (url, runtime):
        httpx.post(f"{url}/webhook", json=hog("dl", "n" * 120))  # name over 100 bytes: rejected
        wait_for(lambda: runtime.outbox.dead_letter_count() > 0, "a dead letter")
        (letter,) = httpx.get(f"{url}/api/dead-letters").json()
        assert letter["name"] == "n" * 120 and "100 bytes" in letter["reason"]
        form = httpx.post(f"{url}/api/dead-letters/retry", data={"x": "1"})  # what a cross-site form could send
        assert form.status_code == 415 and runtime.outbox.dead_letter_count() == 1
        assert httpx.post(f"{url}/api/dead-letters/retry", json={"ids": [True]}).status_code == 400  # not an integer
        # found by schemathesis: an id past 64 bits was a 500 (SQLite cannot bind it); it names no dead letter
        assert httpx.post(f"{url}/api/dead-letters/retry", json={"ids": [1 << 64, -3]}).json() == {"requeued": 0}
        assert httpx.post(f"{url}/api/dead-letters/retry", json={"ids": [letter["id"]]}).json() == {"requeued": 1}


def test_a_full_disk_is_told_by_every_probe_and_the_service_takes_events_again_when_there_is_room(
    make_service, sandbox: SandboxServer
) -> None:
    """SQLite's max_page_count stands for a full filesystem (raising it is space returning): the receivers answer
    503 saying "disk full", /readyz and /api/status and /metrics say it, nothing answered 200 is lost."""
    sandbox.state.add_fault(status=503, duration_s=300)  # Customer.io down: nothing is delivered meanwhile
    with make_service() as (url, runtime):
        db = runtime.db
        assert httpx.post(f"{url}/webhook", json=[hog("ann", n=n) for n in range(5)]).status_code == 200
        with db.lock:
            db.conn.execute(f"PRAGMA max_page_count={db.conn.execute('PRAGMA page_count').fetchone()[0]}")
        refused = httpx.post(f"{url}/webhook", json=[hog(f"user-{n}", n=n) for n in range(200)])
        assert refused.status_code == 503 and refused.headers["retry-after"]
        assert refused.json()["error"] == "outbox unavailable: disk full: database or disk is full (OperationalError)"

        def ready() -> dict[str, Any]:
            return httpx.get(f"{url}/readyz").json()  # type: ignore[no-any-return]

        problems = wait_for(
            lambda: (now := ready())["problems"] and now["problems"], "/readyz to say it", describe=ready
        )
        assert [problem.split(" left ")[0] for problem in problems] == ["outbox not writable: disk full: 0 B"]
        assert httpx.get(f"{url}/healthz").json()["status"] == "ok"  # alive: restarting would not free space
        status = httpx.get(f"{url}/api/status").json()
        assert status["disk"]["problem"].startswith("disk full: ") and status["disk"]["free_bytes"] < 2**21
        assert "posthog_customerio_disk_full 1.0" in httpx.get(f"{url}/metrics").text
        with db.lock:  # room again
            db.conn.execute("PRAGMA max_page_count=1073741823")
        wait_for(lambda: ready()["ready"], "/readyz to be ready again", describe=ready)
        assert httpx.post(f"{url}/webhook", json=[hog(f"user-{n}", n=n) for n in range(200)]).status_code == 200
        assert "posthog_customerio_disk_full 0.0" in httpx.get(f"{url}/metrics").text
        sandbox.state.clear_faults()
        wait_delivered(url)
    assert len(sandbox.state.person("ann")["events"]) == 5
    assert all(sandbox.state.person(f"user-{n}") for n in range(200))
