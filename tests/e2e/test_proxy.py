"""serve as a PostHog reverse proxy (POSTHOG_HOST), CORS, standalone PostHog answers, rejection counting.

Real HTTP on loopback: the service, the in-process Customer.io sandbox, a fake PostHog recording requests.
"""

from __future__ import annotations

import gzip
import json
import logging
import uuid as uuidlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from posthog_customerio.config import load_settings
from posthog_customerio.runtime import Runtime

from ..fake_posthog import FLAG_KEY, running_fake_posthog
from ..helpers import free_port, make_settings, wait_for
from ..service import running_service

pytestmark = pytest.mark.e2e

ORIGIN = "http://127.0.0.1:1"  # a page on another origin


@contextmanager
def service(tmp_path: Path, **values: Any) -> Iterator[tuple[str, Runtime]]:
    settings = make_settings(tmp_path / "data", **{"shutdown_grace_s": 1, **values})
    runtime = Runtime(settings, sandbox=True)
    with running_service(runtime) as url:
        yield url, runtime


def event(name: str, distinct_id: str, **properties: Any) -> dict[str, Any]:
    return {
        "event": name,
        "distinct_id": distinct_id,
        "uuid": str(uuidlib.uuid4()),
        "properties": {"$lib": "web", **properties},
        "timestamp": "2024-01-01T00:00:00Z",
    }


def metric(url: str, name: str, labels: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(f"posthog_customerio_{name}{{{labels}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# -- CORS --------------------------------------------------------------------------------
def preflight(url: str, path: str, origin: str = ORIGIN) -> httpx.Response:
    return httpx.options(
        f"{url}{path}",
        timeout=10,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-custom-header",
        },
    )


def test_capture_paths_answer_the_cors_preflight_and_carry_cors_headers(tmp_path: Path) -> None:
    with service(tmp_path) as (url, _):
        for path in ("/e/", "/i/v0/e/", "/batch/", "/capture", "/flags/?v=2", "/decide/", "/array/phc_x/config", "/s/"):
            answer = preflight(url, path)
            assert answer.status_code == 200, (path, answer.status_code, answer.text)
            assert answer.headers["access-control-allow-origin"] == "*"
            assert "POST" in answer.headers["access-control-allow-methods"]
            assert "x-custom-header" in answer.headers["access-control-allow-headers"].lower()
        posted = httpx.post(f"{url}/e/", json=event("clicked", "cors-1"), headers={"Origin": ORIGIN}, timeout=10)
        assert posted.status_code == 200 and posted.headers["access-control-allow-origin"] == "*"
        rejected = httpx.post(f"{url}/e/", content=b"nope", headers={"Origin": ORIGIN}, timeout=10)
        assert rejected.status_code == 400 and rejected.headers["access-control-allow-origin"] == "*"
        # the operations API stays same-origin: no preflight, no CORS header
        ops = preflight(url, "/api/dead-letters/retry")
        assert ops.status_code == 405 and "access-control-allow-origin" not in ops.headers
        assert "access-control-allow-origin" not in httpx.get(f"{url}/api/status", headers={"Origin": ORIGIN}).headers


def test_cors_origins_restricts_the_allowed_origins(tmp_path: Path) -> None:
    with service(tmp_path, cors_origins="https://shop.example, https://www.shop.example") as (url, _):
        allowed = preflight(url, "/e/", "https://www.shop.example")
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://www.shop.example"
        denied = preflight(url, "/e/", "https://evil.example")
        assert denied.status_code == 400 and "access-control-allow-origin" not in denied.headers
        posted = httpx.post(
            f"{url}/e/", json=event("x", "cors-2"), headers={"Origin": "https://evil.example"}, timeout=10
        )
        assert "access-control-allow-origin" not in posted.headers


# -- standalone PostHog answers -------------------------------------------------------------------
def test_standalone_answers_flags_decide_config_and_recordings_so_posthog_js_keeps_capturing(tmp_path: Path) -> None:
    with service(tmp_path) as (url, _):
        flags = httpx.post(f"{url}/flags/?v=2&config=true", json={"token": "phc_x", "distinct_id": "d"}, timeout=10)
        assert flags.status_code == 200 and flags.json()["featureFlags"] == {} and flags.json()["flags"] == {}
        decide = httpx.post(f"{url}/decide/?v=3", json={"token": "phc_x"}, timeout=10)
        assert decide.status_code == 200 and decide.json()["sessionRecording"] is False
        config = httpx.get(f"{url}/array/phc_x/config", timeout=10)
        assert config.status_code == 200 and config.json()["token"] == "phc_x"
        assert config.json()["sessionRecording"] is False and "gzip-js" in config.json()["supportedCompression"]
        hostile = '<!--<script>"x'
        script = httpx.get(f"{url}/array/{hostile}/config.js", timeout=10)
        assert script.status_code == 200 and script.headers["content-type"].startswith("application/javascript")
        assert (
            "_POSTHOG_REMOTE_CONFIG" in script.text
            and "<" not in script.text
            and '\\u003c!--\\u003cscript\\u003e\\"x' in script.text
        )
        recording = httpx.post(f"{url}/s/?compression=gzip-js", content=gzip.compress(b"[]"), timeout=10)
        assert recording.status_code == 200


# -- rejected requests -------------------------------------------------------------------------
def test_rejected_requests_are_counted_logged_without_the_body_and_shown_in_status(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret_body = b'{"event": "x", "distinct_id": "person-with-a-secret-VALUE-42" oops'
    with service(tmp_path, max_body_bytes=1000) as (url, _), caplog.at_level(logging.WARNING):
        assert httpx.post(f"{url}/e/", content=secret_body, timeout=10).status_code == 400
        assert httpx.post(f"{url}/e/", content=gzip.compress(b"{}") + b"trailing", timeout=10).status_code == 400
        assert httpx.post(f"{url}/batch/", content=b"x" * 2000, timeout=10).status_code == 413
        assert httpx.post(f"{url}/e/", json={"event": "no id"}, timeout=10).status_code == 400
        assert metric(url, "requests_rejected_total", 'reason="malformed_json"') == 1
        assert metric(url, "requests_rejected_total", 'reason="bad_gzip"') == 1
        assert metric(url, "requests_rejected_total", 'reason="body_too_large"') == 1
        assert metric(url, "requests_rejected_total", 'reason="invalid_event"') == 1
        status = httpx.get(f"{url}/api/status", timeout=10).json()
        messages = [e["message"] for e in status["recent_errors"]]
        assert any("POST /e/: 400 malformed JSON" in m for m in messages), messages
        assert any("trailing garbage" in m for m in messages), messages
        assert status["requests_rejected"]["body_too_large"] == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "rejected" in r.getMessage()]
    assert len(warnings) >= 4
    assert not any("secret-VALUE" in text for text in caplog.messages)


# -- the reverse proxy -------------------------------------------------------------------------
def test_proxy_forwards_capture_byte_for_byte_and_stores_what_posthog_accepted(tmp_path: Path) -> None:
    with running_fake_posthog() as (fake, posthog_url), service(tmp_path, posthog_host=posthog_url) as (url, runtime):
        batch = [event("signed_up", "proxy-ann", **{"$set": {"email": "ann@example.com"}}), event("paid", "proxy-ann")]
        body = gzip.compress(json.dumps({"api_key": "phc_abc", "batch": batch}).encode()) + gzip.compress(b"")
        answer = httpx.post(
            f"{url}/e/?ver=1.2&_=17&compression=gzip-js",
            content=body,
            timeout=10,
            headers={
                "Content-Type": "text/plain",
                "Origin": ORIGIN,
                "X-Custom": "kept",
                "X-Forwarded-For": "203.0.113.9, 10.0.0.1",
                "Connection": "keep-alive, X-Hop",
                "X-Hop": "dropped",
            },
        )
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"status": "Ok"}  # PostHog's answer, not ours
        assert answer.headers["x-fake-posthog"] == "1"
        assert answer.headers["access-control-allow-origin"] == "*"  # our CORS policy, not PostHog's
        [got] = fake.recorded("/e")
        assert (got.method, got.path, got.query) == ("POST", "/e/", "ver=1.2&_=17&compression=gzip-js")
        assert got.body == body
        assert got.headers["x-custom"] == "kept" and got.headers["content-type"] == "text/plain"
        # uvicorn trusts X-Forwarded-For from loopback (its client = the last hop); never listed twice
        assert got.headers["x-forwarded-for"] == "203.0.113.9, 10.0.0.1"
        assert got.headers["host"] == posthog_url.removeprefix("http://")
        assert "x-hop" not in got.headers
        assert runtime.sandbox is not None
        person = wait_for(lambda: runtime.sandbox.state.person("proxy-ann"), "the person in Customer.io")
        assert person["email"] == "ann@example.com"
        names = wait_for(
            lambda: (
                {e["name"] for e in runtime.sandbox.state.events("proxy-ann")} >= {"signed_up", "paid"}
                and {e["name"] for e in runtime.sandbox.state.events("proxy-ann")}
            ),
            "the events",
        )
        assert {"signed_up", "paid"} <= names
        assert metric(url, "proxy_requests_total", 'status="200"') == 1


def test_proxy_forwards_every_posthog_path_and_keeps_its_own(tmp_path: Path) -> None:
    with running_fake_posthog() as (fake, posthog_url), service(tmp_path, posthog_host=posthog_url) as (url, _):
        flags = httpx.post(f"{url}/flags/?v=2&config=true", json={"token": "phc_abc"}, timeout=10)
        assert flags.status_code == 200 and flags.json()["featureFlags"] == {FLAG_KEY: True}
        assert fake.recorded("/flags")[0].headers["x-forwarded-for"] == "127.0.0.1"
        for method, path in (
            ("GET", "/array/phc_abc/config"),
            ("GET", "/static/recorder.js?v=1"),
            ("POST", "/i/v1/analytics/events"),
            ("GET", "/api/surveys/?token=phc_abc"),
            ("POST", "/s/?compression=gzip-js"),
            ("POST", "/decide/?v=3"),
            ("GET", "/i/v0/e/?x=1"),
        ):
            answer = httpx.request(method, f"{url}{path}", content=b"" if method == "GET" else b"{}", timeout=10)
            assert answer.status_code == 200, (path, answer.text)
        paths = [r.path for r in fake.recorded()]
        for expected in (
            "/flags/",
            "/array/phc_abc/config",
            "/static/recorder.js",
            "/i/v1/analytics/events",
            "/api/surveys/",
            "/s/",
            "/decide/",
        ):
            assert expected in paths, (expected, paths)
        # this service's own endpoints are never forwarded
        assert httpx.get(f"{url}/api/status", timeout=10).json()["version"]
        assert httpx.post(f"{url}/api/status", timeout=10).status_code == 404
        assert not [p for p in (r.path for r in fake.recorded()) if p.startswith(("/api/status", "/api/dead"))]


def test_proxy_forwards_unparseable_bodies_and_counts_them_not_stored(tmp_path: Path) -> None:
    with running_fake_posthog() as (fake, posthog_url), service(tmp_path, posthog_host=posthog_url) as (url, runtime):
        garbage = b"\x1f\x8b definitely not gzip"
        answer = httpx.post(f"{url}/e/", content=garbage, timeout=10)
        assert answer.status_code == 200 and answer.json() == {"status": "Ok"}  # PostHog decides
        assert fake.recorded("/e")[0].body == garbage
        assert metric(url, "proxy_events_not_stored_total", 'reason="bad_gzip"') == 1
        messages = [e["message"] for e in httpx.get(f"{url}/api/status", timeout=10).json()["recent_errors"]]
        assert any("not stored for Customer.io" in m for m in messages), messages
        # PostHog refuses: the SDK gets PostHog's refusal and nothing is stored
        fake.capture_status = 400
        refused = httpx.post(f"{url}/e/", json=event("x", "refused-1"), timeout=10)
        assert refused.status_code == 400
        assert runtime.ingestor.totals.events == 0


def test_proxy_with_a_token_forwards_foreign_tokens_but_does_not_store_them(tmp_path: Path) -> None:
    with (
        running_fake_posthog() as (fake, posthog_url),
        service(tmp_path, posthog_host=posthog_url, webhook_token="phc_ours") as (url, runtime),
    ):
        foreign = httpx.post(f"{url}/e/", json={"api_key": "phc_theirs", "batch": [event("x", "intruder")]}, timeout=10)
        assert foreign.status_code == 200 and len(fake.recorded("/e")) == 1
        assert metric(url, "proxy_events_not_stored_total", 'reason="auth"') == 1
        ours = httpx.post(f"{url}/e/", json={"api_key": "phc_ours", "batch": [event("x", "member")]}, timeout=10)
        assert ours.status_code == 200
        assert runtime.sandbox is not None
        wait_for(lambda: runtime.sandbox.state.person("member"), "the member in Customer.io")
        assert runtime.sandbox.state.person("intruder") is None


def test_posthog_unreachable_answers_502_and_stores_nothing(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with service(tmp_path, posthog_host=dead, posthog_timeout_s=5) as (url, runtime):
        answer = httpx.post(f"{url}/e/", json=event("x", "lost-1"), headers={"Origin": ORIGIN}, timeout=20)
        assert answer.status_code == 502 and "unreachable" in answer.json()["error"]
        assert answer.headers["access-control-allow-origin"] == "*"  # the SDK can read it and retry
        assert httpx.post(f"{url}/flags/?v=2", json={}, timeout=20).status_code == 502
        assert httpx.get(f"{url}/array/phc_x/config", timeout=20).status_code == 502
        assert runtime.ingestor.totals.events == 0
        assert metric(url, "proxy_requests_total", 'status="error"') == 3
        messages = [e["message"] for e in httpx.get(f"{url}/api/status", timeout=10).json()["recent_errors"]]
        assert any("unreachable" in m for m in messages)


def test_bad_posthog_host_and_cors_origins_are_one_line_config_errors() -> None:
    from posthog_customerio.config import ConfigError

    with pytest.raises(ConfigError, match="^POSTHOG_HOST: must be a base URL"):
        load_settings({"posthog_host": "us.i.posthog.com"})
    with pytest.raises(ConfigError, match="^CORS_ORIGINS: each entry must be an origin"):
        load_settings({"cors_origins": "https://shop.example/path"})
    assert load_settings({"cors_origins": " https://a.example/ ,https://b.example:8443"}).cors_origin_list == [
        "https://a.example",
        "https://b.example:8443",
    ]
    assert load_settings({"posthog_host": "https://eu.i.posthog.com/"}).posthog_host == "https://eu.i.posthog.com"


# -- dot segments ---------------------------------------------------------------------------------
def _raw_request(url: str, target: str) -> bytes:
    """One HTTP/1.1 request with ``target`` sent as is (httpx would remove its dot segments)."""
    import socket

    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode("latin-1"))
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize(
    "target",
    [
        "/static/../../admin/",
        "/static/../admin/",
        "/static/./../admin/",
        "/static/%2e%2e/%2E%2E/admin/",
        "/static/..%2f..%2fadmin/",
        "/i/v0/../../admin/?x=1",
        "/array/../admin",
        "/s/..",
        "/api/../admin/",
        "/static/..\\..\\admin/",
        "/static/%252e%252e/%252e%252e/admin/",
    ],
)
def test_the_proxy_never_forwards_a_path_with_dot_segments(tmp_path: Path, target: str) -> None:
    with running_fake_posthog() as (fake, posthog_url), service(tmp_path, posthog_host=posthog_url) as (url, _):
        answer = _raw_request(url, target)
        status = int(answer.split(b" ", 2)[1])
        assert status in (400, 404), answer[:300]
        assert fake.recorded() == [], [r.path for r in fake.recorded()]
        # the ordinary paths are still forwarded
        assert httpx.get(f"{url}/static/recorder.js", timeout=10).status_code == 200
        assert [r.path for r in fake.recorded()] == ["/static/recorder.js"]
