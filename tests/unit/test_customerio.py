"""Unit tests of the Track API client (HTTP mocked with ``httpx.MockTransport``)."""

from __future__ import annotations

import base64
import email.utils
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from posthog_customerio.output import track
from posthog_customerio.output.base import AuthError, Outcome, SendResult, classify, parse_retry_after
from posthog_customerio.output.track import REGION_URLS, TrackClient, resolve_track_url
from posthog_customerio.output.track_v1 import v1_request

SITE = "site-abc-1234"
KEY = "key-SECRET-5678"
BASE = "https://track.customer.io"
Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport handler that records requests and answers with a fixed response."""

    def __init__(self, response: httpx.Response | Handler | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.response = response if response is not None else httpx.Response(200, json={})

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.response(request) if callable(self.response) else self.response

    def client(self, base_url: str = BASE) -> TrackClient:
        return TrackClient(SITE, KEY, base_url, transport=httpx.MockTransport(self))


def _response(status: int, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
    if body is None:
        return httpx.Response(status, headers=headers)
    content = body if isinstance(body, str) else json.dumps(body)
    return httpx.Response(status, content=content.encode(), headers=headers)


# --------------------------------------------------------------------------- classify


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (200, {}, Outcome.OK),
        (200, None, Outcome.OK),
        (204, None, Outcome.OK),
        (200, {"errors": []}, Outcome.OK),
        (200, "not json", Outcome.OK),
        (400, {"errors": [{"reason": "bad"}]}, Outcome.PERMANENT),
        (404, "", Outcome.PERMANENT),
        (413, "", Outcome.PERMANENT),
        (422, "", Outcome.PERMANENT),
        (408, "", Outcome.TRANSIENT),
        (425, "", Outcome.TRANSIENT),
        (429, "", Outcome.TRANSIENT),
        (500, "", Outcome.TRANSIENT),
        (502, "", Outcome.TRANSIENT),
        (503, "", Outcome.TRANSIENT),
        (401, "", Outcome.AUTH),
        (403, "", Outcome.AUTH),
    ],
)
def test_classify_outcomes(status: int, body: Any, outcome: Outcome) -> None:
    result = classify(_response(status, body))
    assert (result.outcome, result.status, result.item_errors) == (outcome, status, {})


@pytest.mark.parametrize("status", [200, 207])
def test_classify_partial(status: int) -> None:
    error = {"batch_index": 1, "reason": "invalid", "field": "identifiers", "message": "bad id"}
    body = {"errors": [error, {"reason": "no index"}, {"batch_index": "2"}]}
    result = classify(_response(status, body))
    assert result.outcome is Outcome.PARTIAL
    assert result.item_errors == {1: error}
    assert result.status == status


def test_classify_keeps_body_for_dead_letters() -> None:
    result = classify(_response(400, {"errors": [{"reason": "x"}]}))
    assert json.loads(result.body) == {"errors": [{"reason": "x"}]}
    assert result.describe().startswith("HTTP 400: ")
    assert len(classify(_response(400, "x" * 10_000)).body) == 2000


@pytest.mark.parametrize(("status", "header", "expected"), [(429, "7", 7.0), (503, "1.5", 1.5), (500, "0", 0.0)])
def test_classify_retry_after_seconds(status: int, header: str, expected: float) -> None:
    result = classify(_response(status, "", {"Retry-After": header}))
    assert (result.outcome, result.retry_after) == (Outcome.TRANSIENT, expected)


def test_classify_retry_after_http_date() -> None:
    header = email.utils.formatdate(time.time() + 45, usegmt=True)
    result = classify(_response(429, "", {"Retry-After": header}))
    assert result.outcome is Outcome.TRANSIENT
    assert result.retry_after is not None and 40 <= result.retry_after <= 46
    far = email.utils.formatdate(time.time() + 120, usegmt=True)  # beyond RETRY_AFTER_MAX_S: clamped
    assert classify(_response(429, "", {"Retry-After": far})).retry_after == 60.0
    assert classify(_response(429, "", {"Retry-After": far}), retry_after_max_s=5).retry_after == 5.0


def test_classify_transient_without_retry_after() -> None:
    assert classify(_response(503, "")).retry_after is None


@pytest.mark.parametrize(
    ("value", "now", "expected"),
    [
        (None, None, None),
        ("", None, None),
        ("30", None, 30.0),
        (" 2 ", None, 2.0),
        ("-5", None, 0.0),
        ("soon", None, None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 1445412440.0, 40.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 1445412400.0, 60.0),  # 80 s: clamped to RETRY_AFTER_MAX_S
        ("Wed, 21 Oct 2015 07:28:00 GMT", 1445412600.0, 0.0),  # in the past
    ],
)
def test_parse_retry_after(value: str | None, now: float | None, expected: float | None) -> None:
    assert parse_retry_after(value, now) == expected


@pytest.mark.parametrize("status", [301, 302, 307])
def test_classify_redirect_is_auth(status: int) -> None:
    response = _response(status, "", {"Location": "https://track-eu.customer.io/api/v2/batch"})
    result = classify(response)
    assert result.outcome is Outcome.AUTH
    assert result.error is not None
    assert "CUSTOMERIO_REGION" in result.error and "track-eu.customer.io" in result.error


def test_redirect_not_followed_by_client() -> None:
    recorder = Recorder(_response(301, "", {"Location": "https://track-eu.customer.io/api/v2/batch"}))
    with recorder.client() as client:
        result = client.send_batch(["{}"])
    assert result.outcome is Outcome.AUTH and len(recorder.requests) == 1


# --------------------------------------------------------------------------- network errors


@pytest.mark.parametrize("error", [httpx.ConnectError, httpx.ReadTimeout, httpx.RemoteProtocolError])
def test_network_errors_are_transient(error: type[httpx.TransportError]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error("boom", request=request)

    with TrackClient(SITE, KEY, BASE, transport=httpx.MockTransport(handler)) as client:
        result = client.send_batch(["{}"])
    assert result.outcome is Outcome.TRANSIENT
    assert result.status is None
    assert result.error == f"{error.__name__}: boom"
    assert result.describe() == f"network error: {error.__name__}: boom"
    assert KEY not in repr(result)


# --------------------------------------------------------------------------- requests


def test_request_headers_and_batch_body() -> None:
    recorder = Recorder()
    items = ['{"type":"person","action":"identify","identifiers":{"id":"a"}}', '{"type":"person","action":"event"}']
    with recorder.client(BASE + "/") as client:
        result = client.send_batch(items)
    assert result.outcome is Outcome.OK
    (request,) = recorder.requests
    assert request.method == "POST"
    assert str(request.url) == "https://track.customer.io/api/v2/batch"
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(f"{SITE}:{KEY}".encode()).decode()
    assert request.headers["User-Agent"].startswith("posthog-customerio/")
    assert request.headers["Content-Type"] == "application/json"
    assert request.content == b'{"batch":[' + ",".join(items).encode() + b"]}"
    assert json.loads(request.content) == {"batch": [json.loads(item) for item in items]}


def test_send_v1_body_is_json() -> None:
    recorder = Recorder()
    payload = {
        "type": "person",
        "action": "identify",
        "identifiers": {"id": "u1"},
        "attributes": {"name": "Zoë"},
        "timestamp": 1704067200,
    }
    with recorder.client() as client:
        assert client.send_v1(payload).outcome is Outcome.OK
    (request,) = recorder.requests
    assert (request.method, request.url.raw_path) == ("PUT", b"/api/v1/customers/u1")
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == {"name": "Zoë", "id": "u1", "_timestamp": 1704067200}


def test_send_v1_delete_has_no_body() -> None:
    recorder = Recorder()
    with recorder.client() as client:
        client.send_v1({"action": "delete", "identifiers": {"id": "u1"}})
    (request,) = recorder.requests
    assert (request.method, request.url.raw_path, request.content) == ("DELETE", b"/api/v1/customers/u1", b"")


# --------------------------------------------------------------------------- v1_request


def test_v1_identify() -> None:
    payload = {
        "type": "person",
        "action": "identify",
        "identifiers": {"id": "u1"},
        "attributes": {"email": "a@b.com", "plan": "pro"},
        "timestamp": 1704067200,
    }
    assert v1_request(payload) == (
        "PUT",
        "/api/v1/customers/u1",
        {"email": "a@b.com", "plan": "pro", "id": "u1", "_timestamp": 1704067200},
    )
    assert payload["attributes"] == {"email": "a@b.com", "plan": "pro"}  # not mutated


def test_v1_identify_by_email() -> None:
    method, path, body = v1_request({"action": "identify", "identifiers": {"email": "a+b@c.com"}, "attributes": {}})
    assert (method, path, body) == ("PUT", "/api/v1/customers/a%2Bb%40c.com", {"email": "a+b@c.com"})


def test_v1_identify_by_cio_id() -> None:
    assert v1_request({"action": "identify", "identifiers": {"cio_id": "abc"}})[1] == "/api/v1/customers/cio_abc"


@pytest.mark.parametrize("action", ["event", "page", "screen"])
def test_v1_events(action: str) -> None:
    payload = {
        "type": "person",
        "action": action,
        "identifiers": {"id": "u1"},
        "name": "signed_up",
        "id": "01HQ0000000000000000000000",
        "timestamp": 1704067200,
        "attributes": {"plan": "pro"},
    }
    assert v1_request(payload) == (
        "POST",
        "/api/v1/customers/u1/events",
        {
            "name": "signed_up",
            "type": action,
            "id": "01HQ0000000000000000000000",
            "timestamp": 1704067200,
            "data": {"plan": "pro"},
        },
    )


def test_v1_event_without_optional_fields() -> None:
    _, _, body = v1_request({"action": "event", "identifiers": {"email": "a@b.com"}, "name": "x"})
    assert body == {"name": "x", "type": "event", "data": {}}


@pytest.mark.parametrize(
    ("identifier", "encoded"),
    [
        ("a/b", "a%2Fb"),
        ("a?b=1", "a%3Fb%3D1"),
        ("a#b", "a%23b"),
        ("a b", "a%20b"),
        ("100%", "100%25"),
        ("Zoë", "Zo%C3%AB"),
        ("日本", "%E6%97%A5%E6%9C%AC"),
        ("../admin", "..%2Fadmin"),
        ("plain-id_1.2~x", "plain-id_1.2~x"),
    ],
)
def test_v1_ids_are_one_encoded_path_segment(identifier: str, encoded: str) -> None:
    payload = {"action": "event", "identifiers": {"id": identifier}, "name": "e"}
    assert v1_request(payload)[1] == f"/api/v1/customers/{encoded}/events"
    recorder = Recorder()
    with recorder.client() as client:
        client.send_v1(payload)
    (request,) = recorder.requests
    assert request.url.raw_path == f"/api/v1/customers/{encoded}/events".encode()
    assert request.url.query == b"" and request.url.fragment == ""


def test_v1_merge() -> None:
    payload = {"type": "person", "action": "merge", "primary": {"id": "u1"}, "secondary": {"id": "anon-1"}}
    assert v1_request(payload) == (
        "POST",
        "/api/v1/merge_customers",
        {"primary": {"id": "u1"}, "secondary": {"id": "anon-1"}},
    )


@pytest.mark.parametrize(
    ("action", "method", "suffix"),
    [("delete", "DELETE", ""), ("suppress", "POST", "/suppress"), ("unsuppress", "POST", "/unsuppress")],
)
def test_v1_body_less_actions(action: str, method: str, suffix: str) -> None:
    assert v1_request({"action": action, "identifiers": {"id": "a/b"}}) == (
        method,
        f"/api/v1/customers/a%2Fb{suffix}",
        None,
    )


def test_v1_unknown_action() -> None:
    with pytest.raises(ValueError, match="add_relationships"):
        v1_request({"action": "add_relationships", "identifiers": {"id": "u1"}})


# --------------------------------------------------------------------------- account region


def test_account_region() -> None:
    answer = {"url": "https://track-eu.customer.io", "region": "eu", "environment_id": 7}
    recorder = Recorder(_response(200, answer))
    with recorder.client() as client:
        assert client.account_region() == answer
    (request,) = recorder.requests
    assert (request.method, request.url.path) == ("GET", "/api/v1/accounts/region")
    assert request.headers["Authorization"].startswith("Basic ")


@pytest.mark.parametrize("status", [401, 403])
def test_account_region_auth_error(status: int) -> None:
    recorder = Recorder(_response(status, {"meta": {"error": "Unauthorized request"}}))
    with recorder.client() as client, pytest.raises(AuthError) as info:
        client.account_region()
    assert KEY not in str(info.value) and KEY not in repr(info.value)


@pytest.mark.parametrize(
    "response", [_response(500, ""), _response(200, {"region": "us"}), _response(200, "[]"), _response(301, "")]
)
def test_account_region_unexpected(response: httpx.Response) -> None:
    with Recorder(response).client() as client, pytest.raises(httpx.HTTPError):
        client.account_region()


# --------------------------------------------------------------------------- resolve_track_url


def _forbid_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> TrackClient:
        raise AssertionError("resolve_track_url must not call Customer.io here")

    monkeypatch.setattr(track, "TrackClient", boom)


@pytest.mark.parametrize(
    ("region", "override", "expected"),
    [
        ("us", None, REGION_URLS["us"]),
        ("eu", None, REGION_URLS["eu"]),
        ("eu", "http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ("auto", "https://proxy.example/cio", "https://proxy.example/cio"),
    ],
)
def test_resolve_track_url_without_network(
    monkeypatch: pytest.MonkeyPatch, region: str, override: str | None, expected: str
) -> None:
    _forbid_network(monkeypatch)
    assert resolve_track_url(SITE, KEY, region, override) == expected


def _patch_transport(monkeypatch: pytest.MonkeyPatch, recorder: Recorder) -> None:
    real = TrackClient

    def make(site_id: str, api_key: str, base_url: str, **kwargs: Any) -> TrackClient:
        return real(site_id, api_key, base_url, **{**kwargs, "transport": httpx.MockTransport(recorder)})

    monkeypatch.setattr(track, "TrackClient", make)


def test_resolve_track_url_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder(_response(200, {"url": "https://track-eu.customer.io/", "region": "eu"}))
    _patch_transport(monkeypatch, recorder)
    assert resolve_track_url(SITE, KEY, "auto", None, timeout=2) == "https://track-eu.customer.io"
    (request,) = recorder.requests
    assert str(request.url) == "https://track.customer.io/api/v1/accounts/region"


def test_resolve_track_url_auto_bad_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    _patch_transport(monkeypatch, Recorder(_response(401, "")))
    with pytest.raises(AuthError) as info:
        resolve_track_url(SITE, KEY, "auto", None)
    assert KEY not in str(info.value)


# --------------------------------------------------------------------------- secrets


def test_auth_result_never_shows_api_key() -> None:
    recorder = Recorder(_response(401, {"meta": {"error": "Unauthorized request"}}))
    with recorder.client() as client:
        result = client.send_batch(["{}"])
    assert result.outcome is Outcome.AUTH and result.status == 401
    assert result.error is not None and "invalid" in result.error
    basic = base64.b64encode(f"{SITE}:{KEY}".encode()).decode()
    for text in (repr(result), str(result), result.describe(), result.error):
        assert KEY not in text and basic not in text


def test_send_result_defaults() -> None:
    result = SendResult(Outcome.OK, 200)
    assert (result.body, result.error, result.retry_after, result.item_errors) == ("", None, None, {})
    assert result.describe() == "HTTP 200"
