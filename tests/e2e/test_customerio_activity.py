"""Customer.io's message activity into PostHog, end to end: signed reporting webhooks into ``serve`` (in-process
uvicorn on loopback), PostHog's capture API as a local stand-in that records ``/batch/`` and fails on demand.

Nothing lost, nothing duplicated by uuid; people placed by id, by email (IDENTIFY_BY_EMAIL) or left unplaced
until they are known; replicas on PostgreSQL; the loop guard (the captured events sent back as PostHog events
reach Customer.io never).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from posthog_customerio.activity import requeue
from posthog_customerio.backoff import Backoff
from posthog_customerio.mapping.activity import activity_uuid
from posthog_customerio.runtime import Runtime
from posthog_customerio.sandbox import SandboxServer

from ..activity_helpers import SIGNING_KEY, activity_body, post_activity
from ..helpers import hog, make_settings, profiles, wait_for
from ..posthog_capture_standin import CaptureStandin, running_capture_standin
from ..service import running_service

PROJECT_KEY = "phc_project_key_for_tests"

#: every object type with the metrics Customer.io reports for it (https://docs.customer.io/api/webhooks/)
COMBINATIONS = {
    "email": [
        "drafted", "attempted", "sent", "delivered", "opened", "clicked", "converted", "bounced", "dropped",
        "spammed", "failed", "unsubscribed", "deferred", "undeliverable",
    ],
    "push": [
        "drafted", "attempted", "sent", "delivered", "opened", "clicked", "converted", "bounced", "dropped", "failed",
        "undeliverable",
    ],
    "sms": ["drafted", "attempted", "sent", "delivered", "clicked", "converted", "bounced", "failed", "undeliverable"],
    "in_app": ["drafted", "attempted", "sent", "opened", "clicked", "converted", "failed"],
    "slack": ["drafted", "attempted", "sent", "clicked", "converted", "failed"],
    "webhook": ["drafted", "attempted", "sent", "clicked", "converted", "failed", "undeliverable"],
    "customer": ["subscribed", "unsubscribed", "cio_subscription_preferences_changed"],
}  # fmt: skip


@contextmanager
def serving(
    tmp_path: Path, sandbox: SandboxServer, standin: CaptureStandin, **overrides: Any
) -> Iterator[tuple[str, Runtime]]:
    """``serve`` (receivers and delivery) with capture into ``standin``; fast backoff and placement retries."""
    values: dict[str, Any] = {
        "customerio_max_rps": 1000,
        "posthog_host": standin.url,
        "posthog_project_api_key": PROJECT_KEY,
        "customerio_webhook_signing_key": SIGNING_KEY,
        **overrides,
    }
    runtime = Runtime(make_settings(tmp_path / "data", sandbox, **values))
    with running_service(runtime) as url:
        relay = runtime.activity_relay
        assert relay is not None
        relay.backoff = Backoff(base=0.05, cap=0.2, jitter=0)
        relay.placement_retry_s = 0.2
        yield url, runtime


def known_person(url: str, distinct_id: str, email: str | None = None) -> None:
    """A PostHog event of ``distinct_id`` through the webhook receiver: the person is known from then on."""
    answer = httpx.post(f"{url}/webhook", json=hog(distinct_id, "$identify", email=email, **{"$set": {"plan": "pro"}}))
    assert answer.status_code == 200, answer.text


def status(url: str) -> dict[str, Any]:
    section: dict[str, Any] = httpx.get(f"{url}/api/status").json()["customerio_activity"]
    return section


@pytest.fixture
def standin() -> Iterator[CaptureStandin]:
    with running_capture_standin() as capture:
        yield capture


def test_every_object_and_metric_lands_once_on_its_person(
    tmp_path: Path, sandbox: SandboxServer, standin: CaptureStandin
) -> None:
    with serving(tmp_path, sandbox, standin) as (url, _):
        known_person(url, "u1")
        bodies = []
        for n, (kind, metric) in enumerate(
            (kind, metric) for kind, metrics in COMBINATIONS.items() for metric in metrics
        ):
            data: dict[str, Any] = {"delivery_id": f"d{n}", "campaign_id": 7, "action_id": 3, "subject": "Hi"}
            if metric == "clicked":
                data.update(href="https://example.com/pricing", link_id=12)
            if metric in ("bounced", "failed", "dropped", "undeliverable"):
                data["failure_message"] = "mailbox full"
            if kind == "push":
                data["device_platform"] = "ios"
            if metric == "cio_subscription_preferences_changed":
                data["content"] = json.dumps({"topics": {"topic_1": True, "topic_2": False}})
            # out of order: later events first
            bodies.append(activity_body(f"01HEVENT{n:04d}", kind, metric, timestamp=1_704_067_200 + 1000 - n, **data))
        for body in reversed(bodies):
            answer = post_activity(url, body)
            assert answer.status_code == 200 and answer.json()["stored"] is True, answer.text
        for body in bodies[::3]:  # Customer.io retries some (its answer timed out, say): stored once
            answer = post_activity(url, body)
            assert answer.status_code == 200 and answer.json()["stored"] is False
        wait_for(lambda: len(standin.accepted()) == len(bodies), "every activity captured", describe=standin.statuses)
        assert wait_for(lambda: status(url)["queued"] == 0, "nothing left queued")
        section = status(url)
    assert not standin.duplicates and standin.api_keys == {PROJECT_KEY}
    captured = {event["properties"]["$customerio_event_id"]: event for event in standin.accepted()}
    for body in bodies:
        event = captured[body["event_id"]]
        assert event["distinct_id"] == "u1" and event["uuid"] == activity_uuid(body["event_id"])
        props = event["properties"]
        assert props["$lib"] == "posthog-customerio" and props["customerio_metric"] == body["metric"]
        assert "content" not in json.dumps(props) or body["metric"] == "cio_subscription_preferences_changed"
    names = {(b["object_type"], b["metric"]): captured[b["event_id"]]["event"] for b in bodies}
    assert names[("email", "opened")] == "Email Opened" and names[("email", "clicked")] == "Email Link Clicked"
    assert names[("push", "delivered")] == "Push Delivered" and names[("sms", "bounced")] == "SMS Bounced"
    clicked = captured[next(b["event_id"] for b in bodies if b["metric"] == "clicked")]["properties"]
    assert clicked["link_url"] == "https://example.com/pricing" and clicked["campaign_id"] == 7
    subscription = {
        b["metric"]: captured[b["event_id"]]["properties"].get("$set") for b in bodies if b["object_type"] == "customer"
    }
    assert subscription == {
        "subscribed": {"customerio_unsubscribed": False},
        "unsubscribed": {"customerio_unsubscribed": True},
        "cio_subscription_preferences_changed": {
            "customerio_subscription_preferences": {"topics": {"topic_1": True, "topic_2": False}}
        },
    }
    assert section["totals"]["captured"] == len(bodies) and section["totals"]["duplicates"] == len(bodies[::3])
    assert section["this_process"]["verified"] == len(bodies) + len(bodies[::3])


def test_posthog_failing_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, sandbox: SandboxServer, standin: CaptureStandin
) -> None:
    with serving(tmp_path, sandbox, standin) as (url, _):
        known_person(url, "u1")
        standin.fail(503, times=2)
        standin.fail(429, times=1, retry_after=0.3)
        first = [activity_body(f"01HFAIL{n:03d}", "email", "delivered", delivery_id=f"d{n}") for n in range(30)]
        for body in first:
            assert post_activity(url, body).status_code == 200
        wait_for(
            lambda: len(standin.accepted()) == len(first), "captured after 503, 503, 429", describe=standin.statuses
        )
        standin.down()  # PostHog unreachable: stored all the same, captured once it is back
        second = [activity_body(f"01HDOWN{n:03d}", "sms", "sent") for n in range(20)]
        for body in second:
            assert post_activity(url, body).status_code == 200
        wait_for(lambda: status(url)["this_process"]["posthog_errors"].get("network", 0) >= 1, "a network error seen")
        standin.up()
        wait_for(lambda: len(standin.accepted()) == len(first) + len(second), "captured after PostHog came back")
        errors = status(url)["totals"]["posthog_errors"]
        metrics = httpx.get(f"{url}/metrics").text
    assert not standin.duplicates
    assert standin.statuses()[:3] == [503, 503, 429]
    assert errors >= 4
    assert 'posthog_customerio_customerio_activity_posthog_errors_total{status="429"} 1.0' in metrics
    assert "posthog_customerio_customerio_activity_captured_total 50.0" in metrics


def test_identify_by_email_profiles_are_placed_by_email(
    tmp_path: Path, sandbox: SandboxServer, standin: CaptureStandin
) -> None:
    with serving(tmp_path, sandbox, standin, identify_by_email=True) as (url, _):
        known_person(url, "user-42", email="Ada@Example.com")
        # Customer.io knows this profile by email only: no id
        body = activity_body("01HEMAIL1", "email", "opened", customer_id=None, email="ada@example.com", cio_id="c42")
        assert post_activity(url, body).status_code == 200
        wait_for(lambda: len(standin.accepted()) == 1, "the activity captured")
        # a later one naming only the cio_id is placed where the earlier one of that cio_id was
        later = activity_body("01HEMAIL2", "email", "clicked", customer_id=None, cio_id="c42")
        assert post_activity(url, later).status_code == 200
        wait_for(lambda: len(standin.accepted()) == 2, "the second activity captured")
    assert {event["distinct_id"] for event in standin.accepted()} == {"user-42"}


def test_an_unknown_profile_is_kept_unplaced_until_the_person_is_known(
    tmp_path: Path, sandbox: SandboxServer, standin: CaptureStandin
) -> None:
    with serving(tmp_path, sandbox, standin) as (url, runtime):
        relay = runtime.activity_relay
        assert relay is not None
        relay.placement_retry_s = 3600.0  # placed again only on replay here
        body = activity_body("01HLATE1", "email", "opened", customer_id="late-1")
        assert post_activity(url, body).status_code == 200
        wait_for(lambda: status(url)["unplaced"] == 1, "the activity unplaced")
        section = status(url)
        assert section["waiting"][0]["event_id"] == "01HLATE1" and "late-1" in section["waiting"][0]["last_error"]
        assert section["totals"]["unplaced"] == 1 and standin.accepted() == []
        known_person(url, "late-1")  # the person arrives through a normal PostHog event
        assert requeue(runtime.db, ["unplaced"]) == 1
        relay.notify()
        wait_for(lambda: len(standin.accepted()) == 1, "the activity captured once the person is known")
        # and periodically, without a replay
        relay.placement_retry_s = 0.2
        other = activity_body("01HLATE2", "push", "opened", customer_id="late-2")
        assert post_activity(url, other).status_code == 200
        wait_for(lambda: status(url)["unplaced"] == 1, "the second activity unplaced")
        known_person(url, "late-2")
        wait_for(lambda: len(standin.accepted()) == 2, "the second activity placed on its own")
    assert [e["distinct_id"] for e in sorted(standin.accepted(), key=lambda e: e["event"])] == ["late-1", "late-2"]


def test_merged_people_resolve_to_the_surviving_person(
    tmp_path: Path, sandbox: SandboxServer, standin: CaptureStandin
) -> None:
    with serving(tmp_path, sandbox, standin) as (url, runtime):
        known_person(url, "old-id")
        known_person(url, "new-id")
        merge = hog("new-id", "$merge_dangerously", alias="old-id")
        assert httpx.post(f"{url}/webhook", json=merge).status_code == 200
        with runtime.db.reading() as tx:
            merged_into = {row.distinct_id: row.merged_into for row in tx.select_persons(["old-id", "new-id"])}
        assert post_activity(url, activity_body("01HMERGE", "email", "opened", customer_id="old-id")).status_code == 200
        wait_for(lambda: len(standin.accepted()) == 1, "captured")
    assert merged_into == {"old-id": "new-id", "new-id": None}
    assert standin.accepted()[0]["distinct_id"] == "new-id"


def test_refused_events_are_dead_and_replayable(
    tmp_path: Path, sandbox: SandboxServer, standin: CaptureStandin
) -> None:
    with serving(tmp_path, sandbox, standin) as (url, runtime):
        known_person(url, "u1")
        standin.fail(400, times=2)  # a batch refused, then each of its events alone: the first refused again
        bodies = [activity_body(f"01HDEAD{n}", "email", "sent") for n in range(3)]
        for body in bodies:
            assert post_activity(url, body).status_code == 200
        wait_for(lambda: status(url)["dead"] >= 1 and status(url)["queued"] == 0, "a dead activity")
        dead = status(url)["dead"]
        assert len(standin.accepted()) == 3 - dead
        assert requeue(runtime.db, ["dead"]) == dead
        wait_for(lambda: len(standin.accepted()) == 3, "replayed")
    assert not standin.duplicates


def test_signatures_are_checked_and_refusals_store_nothing(
    tmp_path: Path, sandbox: SandboxServer, standin: CaptureStandin
) -> None:
    import time

    with serving(tmp_path, sandbox, standin) as (url, _):
        body = activity_body("01HSIG1")
        assert post_activity(url, body, key="another-key").status_code == 401
        stale = post_activity(url, body, timestamp=int(time.time()) - 3600)
        assert stale.status_code == 401 and "X-CIO-Timestamp" in stale.json()["error"]
        raw = json.dumps(body).encode()
        unsigned = httpx.post(f"{url}/webhooks/customerio", content=raw)
        assert unsigned.status_code == 401
        not_one = post_activity(url, {"event": "clicked", "distinct_id": "u1"})
        assert not_one.status_code == 400 and "reporting webhook" in not_one.json()["error"]
        section = status(url)
        metrics = httpx.get(f"{url}/metrics").text
    assert section["totals"]["stored"] == 0 and section["queued"] == section["unplaced"] == 0
    assert section["this_process"]["rejected"] == {
        "bad_signature": 1,
        "stale_timestamp": 1,
        "missing_signature": 1,
        "not_a_reporting_webhook": 1,
    }
    assert 'posthog_customerio_customerio_activity_rejected_total{reason="stale_timestamp"} 1.0' in metrics


def test_the_loop_guard_sends_none_of_the_captured_events_to_customerio(
    tmp_path: Path, sandbox: SandboxServer, standin: CaptureStandin
) -> None:
    """PostHog sends every event to our webhook destination (and SDK traffic through the capture proxy): the
    message activity we captured comes back that way, and never reaches Customer.io."""
    with serving(tmp_path, sandbox, standin) as (url, runtime):
        known_person(url, "u1")
        bodies = [activity_body(f"01HLOOP{n}", "email", metric) for n, metric in enumerate(["opened", "clicked"])]
        bodies.append(activity_body("01HLOOP9", "customer", "unsubscribed"))
        for body in bodies:
            assert post_activity(url, body).status_code == 200
        wait_for(lambda: len(standin.accepted()) == len(bodies), "captured")
        captured = standin.accepted()
        # back through the webhook destination (PostHog's Hog webhook shape) and the capture paths
        for event in captured:
            back = hog(event["distinct_id"], event["event"], **event["properties"])
            back["event"]["uuid"] = event["uuid"]
            assert httpx.post(f"{url}/webhook", json=back).status_code == 200
        assert httpx.post(f"{url}/batch/", json={"api_key": PROJECT_KEY, "batch": captured}).status_code == 200
        # a normal event after them, to know delivery went past them
        assert httpx.post(f"{url}/webhook", json=hog("u1", "after_the_loop")).status_code == 200
        wait_for(
            lambda: any(e["name"] == "after_the_loop" for e in sandbox.state.events()), "the later event delivered"
        )
        filtered = runtime.ingestor.totals.skipped["customerio_activity"]
    names = {e["name"] for e in sandbox.state.events() + sandbox.state.anonymous_events()}
    assert not names & {"Email Opened", "Email Link Clicked", "Customer Unsubscribed"}, names
    assert filtered == 2 * len(bodies)
    (person,) = [p for p in profiles(sandbox) if p["id"] == "u1"]
    assert person["attributes"].get("plan") == "pro" and "customerio_unsubscribed" not in person["attributes"]
    assert "after_the_loop" in person["events"]


def test_replicas_on_postgresql_capture_each_activity_once(
    tmp_path: Path, sandbox: SandboxServer, standin: CaptureStandin, pg_url: str
) -> None:
    with (
        serving(tmp_path / "a", sandbox, standin, outbox_url=pg_url) as (first, _),
        serving(tmp_path / "b", sandbox, standin, outbox_url=pg_url) as (second, _),
    ):
        known_person(first, "u1")
        bodies = [activity_body(f"01HREP{n:03d}", "email", "opened", delivery_id=f"d{n}") for n in range(120)]
        for body, target in zip(bodies, itertools.cycle([first, second]), strict=False):
            assert post_activity(target, body).status_code == 200
        for body in bodies[:40]:  # Customer.io's retries reach the other replica
            assert post_activity(second, body).status_code == 200
        wait_for(lambda: len(standin.accepted()) == len(bodies), "every activity captured", timeout=60)
        section = status(first)
    assert not standin.duplicates
    assert section["totals"]["captured"] == len(bodies) and section["totals"]["duplicates"] == 40


def test_an_ingest_role_stores_and_a_deliver_role_captures(
    tmp_path: Path, sandbox: SandboxServer, standin: CaptureStandin
) -> None:
    """``serve --role ingest`` answers the webhooks and only stores; ``--role deliver`` (same data dir) captures."""
    values: dict[str, Any] = {
        "posthog_host": standin.url,
        "posthog_project_api_key": PROJECT_KEY,
        "customerio_webhook_signing_key": SIGNING_KEY,
    }
    ingest = Runtime(make_settings(tmp_path / "data", sandbox, **values))
    deliver = Runtime(make_settings(tmp_path / "data", sandbox, **values))
    with running_service(ingest, deliver=False) as url:
        known_person(url, "u1")
        assert post_activity(url, activity_body("01HROLE1", "email", "opened")).status_code == 200
        assert ingest.activity_relay is None and status(url)["queued"] == 1
        with running_service(deliver, ingest=False) as worker:
            assert httpx.post(f"{worker}/webhooks/customerio", content=b"{}").status_code == 404  # no receivers
            wait_for(lambda: len(standin.accepted()) == 1, "captured by the deliver role")
    assert standin.accepted()[0]["distinct_id"] == "u1"
