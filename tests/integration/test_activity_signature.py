"""Customer.io's reporting-webhook signature: HMAC-SHA256 of ``v0:<timestamp>:<raw body>``, checked over the raw
bytes in constant time, stale timestamps refused (an injected clock); through the endpoint a refusal stores nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable

import pytest

from posthog_customerio.config import Settings
from posthog_customerio.runtime import Runtime
from posthog_customerio.sources.customerio_activity import SignatureError, sign, verify_signature

from ..activity_helpers import SIGNING_KEY, activity_body, signed_headers
from ..service import in_process_service

NOW = 1_800_000_000
BODY = json.dumps(activity_body("01HSIGNED"), indent=1).encode()


def check(headers: dict[str, str], body: bytes = BODY, now: float = NOW, tolerance: float = 300) -> None:
    verify_signature(SIGNING_KEY, headers, body, tolerance, now=lambda: now)


def test_the_signature_is_hmac_sha256_of_v0_timestamp_and_the_raw_body() -> None:
    expected = hmac.new(SIGNING_KEY.encode(), b"v0:1800000000:" + BODY, hashlib.sha256).hexdigest()
    assert sign(SIGNING_KEY, "1800000000", BODY) == expected
    check(signed_headers(BODY, timestamp=NOW))
    check({**signed_headers(BODY, timestamp=NOW), "x-cio-signature": expected.upper()})  # hex in any case


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        ({}, BODY, "missing_signature"),
        ({"x-cio-timestamp": str(NOW)}, BODY, "missing_signature"),
        (signed_headers(BODY, key="another-key", timestamp=NOW), BODY, "bad_signature"),
        # the same JSON re-serialised: the signature covers the raw bytes
        (signed_headers(BODY, timestamp=NOW), json.dumps(json.loads(BODY)).encode(), "bad_signature"),
        (signed_headers(BODY, timestamp=NOW), BODY + b" ", "bad_signature"),
        ({**signed_headers(BODY, timestamp=NOW), "x-cio-timestamp": str(NOW + 1)}, BODY, "bad_signature"),
        ({**signed_headers(BODY, timestamp=NOW), "x-cio-timestamp": "yesterday"}, BODY, "bad_timestamp"),
        ({**signed_headers(BODY, timestamp=NOW), "x-cio-signature": "zz\u00e9"}, BODY, "bad_signature"),
    ],
)
def test_bad_or_missing_signatures_are_refused(headers: dict[str, str], body: bytes, reason: str) -> None:
    with pytest.raises(SignatureError) as refused:
        check(headers, body)
    assert refused.value.reason == reason


def test_stale_timestamps_are_refused_both_ways() -> None:
    for offset in (-301, 301):
        with pytest.raises(SignatureError) as refused:
            check(signed_headers(BODY, timestamp=NOW + offset))
        assert refused.value.reason == "stale_timestamp"
    check(signed_headers(BODY, timestamp=NOW - 300))
    check(signed_headers(BODY, timestamp=NOW - 3000), tolerance=3600)


def test_the_endpoint_refuses_without_storing_and_stores_a_good_one_once(settings: Callable[..., Settings]) -> None:
    runtime = Runtime(settings(customerio_webhook_signing_key=SIGNING_KEY))
    with in_process_service(runtime, close_runtime=False) as client:
        bad = client.post("/webhooks/customerio", content=BODY, headers=signed_headers(BODY, key="nope"))
        stale = client.post("/webhooks/customerio", content=BODY, headers=signed_headers(BODY, timestamp=1))
        missing = client.post("/webhooks/customerio", content=BODY)
        assert [r.status_code for r in (bad, stale, missing)] == [401, 401, 401]
        assert all("error" in r.json() for r in (bad, stale, missing))
        not_one = json.dumps({"hello": "world"}).encode()
        assert client.post("/webhooks/customerio", content=not_one, headers=signed_headers(not_one)).status_code == 400
        with runtime.db.reading() as tx:
            assert tx.activity_counts() == {}
        good = client.post("/webhooks/customerio", content=BODY, headers=signed_headers(BODY))
        again = client.post("/webhooks/customerio", content=BODY, headers=signed_headers(BODY))
        assert good.status_code == again.status_code == 200
        assert (good.json()["stored"], again.json()["stored"]) == (True, False)
        with runtime.db.reading() as tx:
            assert tx.activity_counts() == {"queued": 1}  # delivery is off here: it waits
        rejected = client.get("/api/status").json()["requests_rejected"]
    runtime.close()
    assert rejected.get("customerio_bad_signature") == 1 and rejected.get("customerio_stale_timestamp") == 1


def test_without_a_signing_key_the_endpoint_refuses_everything(settings: Callable[..., Settings]) -> None:
    runtime = Runtime(settings())
    with in_process_service(runtime) as client:
        answer = client.post("/webhooks/customerio", content=BODY, headers=signed_headers(BODY))
        assert answer.status_code == 401 and "CUSTOMERIO_WEBHOOK_SIGNING_KEY" in answer.json()["error"]
        with runtime.db.reading() as tx:
            assert tx.activity_counts() == {}
