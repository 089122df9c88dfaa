"""The outbox's bound (``OUTBOX_MAX_QUEUED``) end to end: ``send`` killed -9 while its reading waits at the bound,
and ``serve`` answering 503 + ``Retry-After`` at the bound until delivery drains it.

What must hold: nothing a source stored or acknowledged is lost, nothing reaches Customer.io twice (checked by
dedupe id against the product's own mapping of the same events, as the other reliability tests do), and a source
at the bound reads nothing more until there is room.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from posthog_customerio.runtime import Runtime
from posthog_customerio.sandbox import SandboxServer

from ..conftest import API_KEY, SITE_ID, write_jsonl
from ..helpers import assert_exactly_once, ev, hog, make_settings, wait_for
from ..integration.test_backpressure import expected_event_ids
from .test_server import running, wait_delivered

pytestmark = [pytest.mark.e2e, pytest.mark.reliability]

SRC = Path(__file__).resolve().parents[2] / "src"
#: per person an identify and a click; ``send`` reads 2,000 events a chunk: persons 0-999 are the first chunk
PEOPLE = 3_000


def backfill(people: int) -> list[dict[str, Any]]:
    events = []
    for n in range(people):
        events += [ev("$identify", f"b{n}", n, top={"$set": {"email": f"b{n}@example.com"}}), ev("clicked", f"b{n}", n)]
    return events


def send_command(path: Path) -> list[str]:
    return [sys.executable, "-m", "posthog_customerio", "send", str(path), "--json"]


def test_send_killed_while_waiting_at_the_bound_loses_and_duplicates_nothing(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    """Customer.io answers 503: the first chunk is stored, delivery keeps failing, reading waits at the bound; a
    kill -9 there leaves only the first chunk read and queued; run again, everything arrives exactly once."""
    events = backfill(PEOPLE)
    path = write_jsonl(tmp_path / "events.jsonl", events)
    data = tmp_path / "data"
    env = {
        **os.environ,
        "PYTHONPATH": str(SRC),
        "CUSTOMERIO_SITE_ID": SITE_ID,
        "CUSTOMERIO_API_KEY": API_KEY,
        "CUSTOMERIO_TRACK_URL": sandbox.url,
        "POSTHOG_CUSTOMERIO_DATA_DIR": str(data),
        "SQLITE_SYNCHRONOUS": "NORMAL",
        "CUSTOMERIO_MAX_RPS": "1000",
        "OUTBOX_MAX_QUEUED": "100",
    }
    sandbox.state.add_fault(status=503, duration_s=600)  # cleared below
    try:
        process = subprocess.Popen(send_command(path), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            # two attempts of delivery (a back-off apart) while reading waits: the first chunk is stored, no more
            wait_for(
                lambda: len(sandbox.state.requests()) >= 2 or process.poll() is not None, "two delivery attempts", 30
            )
            assert process.poll() is None, process.communicate()
        finally:
            os.kill(process.pid, signal.SIGKILL)
            process.communicate(timeout=10)
    finally:
        sandbox.state.clear_faults()
    assert process.returncode == -signal.SIGKILL
    with sqlite3.connect(data / "posthog-customerio.sqlite") as conn:
        known = {row[0] for row in conn.execute("SELECT distinct_id FROM persons")}
        queued = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    assert known == {f"b{n}" for n in range(1_000)}, "reading went past the first chunk while at the bound"
    assert queued == 2_000 * 3 // 2  # an identify and an event for each of the first 1,000 people
    assert all(entry["status"] == 503 for entry in sandbox.state.requests())
    # the same command again: the queued operations go first, the file is read again, what was sent is deduplicated
    result = subprocess.run(send_command(path), env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["backlog_before"] == queued and summary["queued"] == 0 and summary["dead_lettered"] == 0
    assert summary["outbox_waits"]["times"] >= 2, summary  # the bound held on the second run too
    assert_exactly_once(sandbox, expected_event_ids(events))
    assert len(sandbox.state.people()) == PEOPLE


def test_serve_answers_503_at_the_bound_and_accepts_again_once_drained(sandbox: SandboxServer, tmp_path: Path) -> None:
    sandbox.state.add_fault(status=503, duration_s=600)  # nothing is delivered until Customer.io is back
    settings = make_settings(
        tmp_path / "data", sandbox, outbox_max_queued=3, shutdown_grace_s=1, customerio_max_rps=1000
    )
    accepted: list[dict[str, Any]] = []
    try:
        with running(Runtime(settings)) as url:

            def post(body: dict[str, Any]) -> httpx.Response:
                answer = httpx.post(f"{url}/webhook", json=body, timeout=10)
                if answer.status_code == 200:
                    accepted.append(body)
                return answer

            # visitors' events never fill it: anonymous events have their own bound (ANONYMOUS_BACKLOG_MAX)
            for n in range(10):
                visitor = hog(f"visitor-{n}", "$pageview", n, person=False, **{"$is_identified": False})
                assert post(visitor).status_code == 200
            # people's events do: at 3 operations of person work every request gets 503 + Retry-After
            people = iter(range(1_000))
            refusal = wait_for(
                lambda: (answer := post(hog(f"user-{next(people)}"))).status_code == 503 and answer,
                "a 503 at the bound",
                15,
            )
            assert refusal.headers["retry-after"] == "10" and "(OUTBOX_MAX_QUEUED 3)" in refusal.json()["error"]
            assert httpx.get(f"{url}/readyz").status_code == 503
            assert post(hog("visitor-x", "$pageview", person=False, **{"$is_identified": False})).status_code == 503
            status = httpx.get(f"{url}/api/status").json()
            assert status["outbox_bound"]["full"] and status["outbox_bound"]["refused"]["webhook"] >= 2
            assert status["person_work"]["depth"] >= 3 and status["anonymous"]["backlog"] == 10
            # Customer.io back: delivery drains the outbox, the receivers accept again
            sandbox.state.clear_faults()
            wait_for(lambda: post(hog("user-after")).status_code == 200, "a 200 once drained", 60)
            # /readyz counts on its own (a count up to a second old): ready again within moments, not at the same one
            wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, "/readyz ready once drained", 15)
            status = wait_delivered(url, 60)
            assert status["outbox_bound"]["full"] is False
            metrics = httpx.get(f"{url}/metrics").text
            assert "posthog_customerio_outbox_max_queued 3.0" in metrics
            assert 'posthog_customerio_requests_refused_full_total{source="webhook"}' in metrics
    finally:
        sandbox.state.clear_faults()
    # everything answered 200 reached Customer.io once; nothing refused was stored
    assert_exactly_once(sandbox, expected_event_ids(accepted))
