"""Scale out: three `serve` replicas on one PostgreSQL outbox, one killed, one restarted."""

from __future__ import annotations

import random
import signal
import time
import uuid as uuidlib
from collections import defaultdict
from pathlib import Path

import httpx
import pytest

from posthog_customerio.sandbox import SandboxServer

from ..conftest import API_KEY, SITE_ID
from ..helpers import wait_for
from .test_service_process import service

pytestmark = pytest.mark.e2e

PEOPLE = 200
EVENTS = 20_000
PER_REQUEST = 100


def make_events() -> list[dict]:
    """EVENTS events for PEOPLE people; every 5th event of a person changes `plan`."""
    events = []
    for n in range(EVENTS):
        person = n % PEOPLE
        properties: dict = {"n": n}
        if n // PEOPLE % 5 == 0:
            properties["$set"] = {"plan": f"plan-{n}"}
        events.append(
            {
                "event": "clicked",
                "distinct_id": f"person-{person}",
                "timestamp": 1_767_600_000 + n,
                "uuid": str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"replica-{n}")),
                "properties": properties,
            }
        )
    return events


def post(urls: list[str], body: list[dict], start: int) -> None:
    """Post to the replicas round-robin; a dead one is skipped like a load balancer would."""
    for attempt in range(len(urls) * 20):
        url = urls[(start + attempt) % len(urls)]
        try:
            response = httpx.post(f"{url}/webhook", json=body, timeout=10)
        except httpx.HTTPError:
            time.sleep(0.05)
            continue
        if response.status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError("no replica accepted the batch")


def test_three_replicas_deliver_everything_once_in_order(sandbox: SandboxServer, pg_url: str, tmp_path: Path) -> None:
    env = {
        "CUSTOMERIO_SITE_ID": SITE_ID,
        "CUSTOMERIO_API_KEY": API_KEY,
        "CUSTOMERIO_TRACK_URL": sandbox.url,
        "OUTBOX_URL": pg_url,
        "LOG_FORMAT": "json",
        "SHUTDOWN_GRACE_S": "2",
        "LEASE_S": "5",
        "CUSTOMERIO_MAX_RPS": "1000",
    }
    events = make_events()
    batches = [events[i : i + PER_REQUEST] for i in range(0, len(events), PER_REQUEST)]
    rng = random.Random(7)
    kill_at, restart_at = rng.randrange(40, 80), rng.randrange(100, 160)
    with (
        service({**env, "POSTHOG_CUSTOMERIO_DATA_DIR": str(tmp_path / "a")}) as (url_a, proc_a),
        service({**env, "POSTHOG_CUSTOMERIO_DATA_DIR": str(tmp_path / "b")}) as (url_b, proc_b),
        service({**env, "POSTHOG_CUSTOMERIO_DATA_DIR": str(tmp_path / "c")}) as (url_c, _proc_c),
    ):
        urls = [url_a, url_b, url_c]
        restarted = None
        for index, batch in enumerate(batches):
            if index == kill_at:
                proc_a.send_signal(signal.SIGKILL)  # replica A dies mid-run, leases and all
                proc_a.wait(10)
            if index == restart_at:
                proc_b.send_signal(signal.SIGTERM)  # replica B is restarted (rolling deploy)
                proc_b.wait(20)
                restarted = service({**env, "POSTHOG_CUSTOMERIO_DATA_DIR": str(tmp_path / "b2")})
                url_b2, _ = restarted.__enter__()
                urls[1] = url_b2
            post(urls, batch, index)
        wait_for(
            lambda: len(sandbox.state.events()) >= EVENTS,
            f"all {EVENTS} events delivered",
            120,
            interval=0.25,
            describe=lambda: f"only {len(sandbox.state.events())} of {EVENTS} delivered",
        )
        if restarted is not None:
            restarted.__exit__(None, None, None)
    delivered = sandbox.state.events()
    ids = [event["id"] for event in delivered]
    assert len(ids) == len(set(ids)) == EVENTS  # every event exactly once
    by_person: dict[str, list[int]] = defaultdict(list)
    for event in delivered:  # in the order the sandbox received them
        by_person[event["person"]].append(event["timestamp"])
    assert len(by_person) == PEOPLE
    for timestamps in by_person.values():
        assert timestamps == sorted(timestamps)  # each person's events in timestamp order
    for person in range(PEOPLE):
        last_set = max(n for n in range(person, EVENTS, PEOPLE) if n // PEOPLE % 5 == 0)
        assert sandbox.state.person(f"person-{person}")["attributes"]["plan"] == f"plan-{last_set}"
