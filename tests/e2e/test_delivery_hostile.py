"""Delivery survives anything Customer.io answers: hostile Retry-After values, workers that die."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from posthog_customerio.config import ConfigError, load_settings
from posthog_customerio.output.base import parse_retry_after
from posthog_customerio.pacing import RateLimiter
from posthog_customerio.sandbox import SandboxServer

from ..helpers import make_runtime
from ..integration.test_delivery import events_for
from ..service import running_service
from .test_service_process import post_all, service, service_env, webhook_events  # noqa: F401 - fixture

pytestmark = pytest.mark.e2e

FAR_DATE = "Fri, 31 Dec 9999 23:59:59 GMT"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("inf", 60.0),
        ("Infinity", 60.0),
        ("-inf", 0.0),
        ("1e9", 60.0),
        ("86400", 60.0),
        ("1e400", 60.0),
        ("-5", 0.0),
        ("nan", None),
        ("garbage", None),
        ("12abc", None),
        (FAR_DATE, 60.0),
        ("Mon, 01 Jan 1990 00:00:00 GMT", 0.0),
        ("Fri, 31 Dec 99999 23:59:59 GMT", None),
        ("7", 7.0),
    ],
)
def test_retry_after_is_clamped_to_the_maximum(value: str, expected: float | None) -> None:
    assert parse_retry_after(value, 1_700_000_000.0) == expected


def test_retry_after_limit_is_configurable() -> None:
    assert parse_retry_after("inf", limit=5) == 5.0
    assert parse_retry_after("3", limit=5) == 3.0


@pytest.mark.parametrize("value", ["-1", "inf", "nan", "abc", "100000"])
def test_retry_after_max_s_is_validated(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRY_AFTER_MAX_S", value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value).startswith("RETRY_AFTER_MAX_S:")


def test_retry_after_max_s_defaults_to_the_backoff_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().retry_after_max_s == 60.0
    monkeypatch.setenv("RETRY_AFTER_MAX_S", "2.5")
    assert load_settings().retry_after_max_s == 2.5


def test_a_non_finite_pause_never_overflows_a_wait() -> None:
    limiter = RateLimiter(10)
    limiter.pause_for(float("inf"))
    assert 0 < limiter.pause_remaining() <= 3600
    threading.Event().wait(min(limiter.pause_remaining(), 0.001))  # would raise OverflowError with inf
    limiter.pause_for(float("nan"))
    assert limiter.pause_remaining() <= 3600


@pytest.mark.parametrize("header", ["inf", "1e9", "86400", "nan", "-5", FAR_DATE, "garbage"])
def test_hostile_retry_after_neither_kills_nor_stalls_delivery(
    sandbox: SandboxServer, tmp_path: Path, header: str
) -> None:
    """A 429 with any Retry-After: the workers live and delivery resumes within RETRY_AFTER_MAX_S."""
    response = httpx.post(f"{sandbox.url}/_sandbox/faults", json={"status": 429, "count": 2, "retry_after": header})
    assert response.status_code == 200 and response.json()["retry_after"] == header
    with make_runtime(sandbox, tmp_path / "data", retry_after_max_s=1, delivery_concurrency=4) as runtime:
        runtime.ingestor.ingest(events_for(people=3, per_person=2))
        deliverer = runtime.deliverer()
        deliverer.start()
        try:
            assert deliverer.wait_until_empty(30), "delivery stalled after a hostile Retry-After"
            assert deliverer.alive_workers() == 4
            assert deliverer.stats.worker_restarts == 0
        finally:
            deliverer.stop()
    statuses = [entry["status"] for entry in sandbox.state.requests()]
    assert statuses[:2] == [429, 429] and statuses[-1] == 200
    assert sandbox.state.stats()["events"] == 6


def test_retry_after_inf_through_the_service_process(sandbox: SandboxServer, service_env: dict[str, str]) -> None:
    """The reported case, on a `serve` process: Retry-After: inf, then delivery goes on and /healthz stays ok."""
    httpx.post(f"{sandbox.url}/_sandbox/faults", json={"status": 429, "count": 3, "retry_after": "inf"})
    with service({**service_env, "RETRY_AFTER_MAX_S": "1"}) as (url, _):
        post_all(url, webhook_events(30))
        deadline = time.monotonic() + 30
        while len(sandbox.state.events()) < 30:
            assert time.monotonic() < deadline, "nothing delivered after Retry-After: inf"
            time.sleep(0.1)
        health = httpx.get(f"{url}/healthz").json()
        assert health["status"] == "ok" and health["delivery_workers_alive"] >= 1
        assert health["delivery_worker_restarts"] == 0
    assert [entry["status"] for entry in sandbox.state.requests()][:3] == [429, 429, 429]


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_a_worker_that_dies_is_restarted_counted_and_reported(sandbox: SandboxServer, tmp_path: Path) -> None:
    runtime = make_runtime(sandbox, tmp_path / "data", delivery_concurrency=2)
    outbox = runtime.outbox
    real_claim = outbox.claim
    failures = {"left": 3}
    lock = threading.Lock()

    def claim(*args: Any, **kwargs: Any) -> Any:
        with lock:
            if failures["left"] > 0:
                failures["left"] -= 1
                raise RuntimeError("injected claim failure")
        return real_claim(*args, **kwargs)

    outbox.claim = claim  # type: ignore[method-assign]
    with running_service(runtime) as url:
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/healthz").json()["delivery_worker_restarts"] < 3:
            assert time.monotonic() < deadline, "dead workers were not restarted"
            time.sleep(0.1)
        runtime.ingestor.ingest(events_for(people=4, per_person=3))
        runtime.current_deliverer.notify()  # type: ignore[union-attr]
        while len(sandbox.state.events()) < 12:
            assert time.monotonic() < deadline + 30, "delivery did not continue after the restarts"
            time.sleep(0.1)
        health = httpx.get(f"{url}/healthz").json()
        metrics = httpx.get(f"{url}/metrics").text
    assert health["status"] == "ok" and health["delivery_workers_alive"] == 2
    assert health["delivery_worker_restarts"] == 3
    assert health["delivery_last_crash"]["error"] == "RuntimeError"
    assert "injected" not in str(health)  # the message may carry data: only the type is shown
    assert _metric(metrics, "posthog_customerio_delivery_worker_restarts_total") == 3
    assert _metric(metrics, "posthog_customerio_delivery_workers_alive") == 2


def test_healthz_is_not_ok_while_no_worker_is_alive(sandbox: SandboxServer, tmp_path: Path) -> None:
    runtime = make_runtime(sandbox, tmp_path / "data", delivery_concurrency=2)
    broken = {"on": True}
    real_claim = runtime.outbox.claim

    def claim(*args: Any, **kwargs: Any) -> Any:
        if broken["on"]:
            raise MemoryError("injected")
        return real_claim(*args, **kwargs)

    runtime.outbox.claim = claim  # type: ignore[method-assign]
    with running_service(runtime) as url:
        deadline = time.monotonic() + 30
        while True:
            response = httpx.get(f"{url}/healthz")
            if response.json()["status"] != "ok":
                break
            assert time.monotonic() < deadline, "/healthz said ok while every worker was dead"
            time.sleep(0.05)
        assert response.status_code == 503
        assert response.json()["delivery_workers_alive"] == 0
        assert response.json()["delivery_last_crash"]["error"] == "MemoryError"
        broken["on"] = False
        runtime.ingestor.ingest(events_for(people=2, per_person=2))
        deadline = time.monotonic() + 40
        while len(sandbox.state.events()) < 4 or httpx.get(f"{url}/healthz").json()["status"] != "ok":
            assert time.monotonic() < deadline, "delivery did not come back once the fault was gone"
            time.sleep(0.1)


def test_sandbox_fault_sends_any_retry_after_text(sandbox: SandboxServer) -> None:
    cases = [('"inf"', "inf"), ("1e400", "inf"), ("2", "2"), ("1.5", "1.5"), (f'"{FAR_DATE}"', FAR_DATE)]
    for given, sent in cases:  # given: the raw JSON value (1e400 parses as infinity)
        added = httpx.post(f"{sandbox.url}/_sandbox/faults", content=f'{{"status": 429, "retry_after": {given}}}')
        assert added.status_code == 200, added.text
        answer = httpx.post(f"{sandbox.url}/api/v2/batch", json={"batch": []})
        assert answer.status_code == 429 and answer.headers["retry-after"] == sent
