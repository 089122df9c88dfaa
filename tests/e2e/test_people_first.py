"""People first: in Track mode a person's events never wait behind a backlog of anonymous events.

Real HTTP to the sandbox, at a low ``CUSTOMERIO_MAX_RPS``: a backlog of visitors' anonymous events
(more than one claim) is queued before a person's event; the person's event goes out among the first
requests, a waiting visitor who identifies has its events adopted (batched person events, no
anonymous request), a 429 slows anonymous events first, replicas share the budget, and a restart with
a backlog loses nothing and keeps each person's order. Request counts, not durations, are asserted
(a loaded machine makes everything slower, the rate limit keeps the anonymous lane slow).
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from posthog_customerio.delivery import Deliverer
from posthog_customerio.runtime import Runtime
from posthog_customerio.sandbox import SandboxServer
from posthog_customerio.sources import PostHogEvent

from ..helpers import make_settings, wait_for

pytestmark = pytest.mark.e2e

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
V1_EVENTS = "/api/v1/events"
#: operations per claim in these tests
CLAIM = 100
#: the Retry-After of the injected 429, seconds
RETRY_AFTER = 3


def visit(visitor: str, n: int) -> PostHogEvent:
    """A posthog-js page view of a not-yet-identified visitor."""
    properties = {"$device_id": visitor, "$is_identified": False, "ref": f"{visitor}-{n}"}
    return PostHogEvent("$pageview", visitor, T0 + timedelta(seconds=n), properties)


def identify(user: str, visitor: str, n: int) -> PostHogEvent:
    """posthog-js's ``$identify`` of ``visitor`` as ``user``."""
    properties = {"$anon_distinct_id": visitor, "$device_id": visitor, "$set": {"email": f"{user}@example.com"}}
    return PostHogEvent("$identify", user, T0 + timedelta(seconds=n), properties)


def purchase(user: str, n: int) -> PostHogEvent:
    """A server-side event of a known customer."""
    return PostHogEvent("purchase", user, T0 + timedelta(seconds=n), {"ref": f"{user}-purchase-{n}"})


def runtime(sandbox: SandboxServer, data_dir: Path, **overrides: Any) -> Runtime:
    values = {"customerio_max_rps": 20, "anonymous_hold_s": 0, "customerio_api": "v2", **overrides}
    return Runtime(make_settings(data_dir, sandbox, **values))


def carries(entry: dict[str, Any], ref: str) -> bool:
    """Whether a logged request carries the event whose ``ref`` property is ``ref``."""
    return f"'ref': '{ref}'" in str(entry["body"])


def anonymous_requests_before(sandbox: SandboxServer, ref: str, since: float = 0.0) -> int:
    """How many anonymous-event requests the sandbox received after ``since`` (epoch seconds) and before the
    one carrying event ``ref``."""
    count = 0
    for entry in sorted(sandbox.state.requests(), key=lambda entry: entry["time"]):
        if carries(entry, ref):
            return count
        if entry["path"] == V1_EVENTS and entry["status"] == 200 and entry["time"] >= since:
            count += 1
    raise AssertionError(f"{ref} never reached the sandbox")


def start_small_claims(rt: Runtime) -> Deliverer:
    """Start delivery with claims of 100 operations: a backlog of 1,200 is more than its four workers hold."""
    deliverer = rt.deliverer()
    deliverer.max_batch_items = CLAIM
    deliverer.start()
    return deliverer


def delivered(sandbox: SandboxServer, ref: str) -> bool:
    return any(carries(entry, ref) and entry["status"] == 200 for entry in sandbox.state.requests())


def refs(events: list[dict[str, Any]]) -> list[str]:
    return [str(event["data"]["ref"]) for event in events if "ref" in (event.get("data") or {})]


def test_a_customers_event_overtakes_a_backlog_of_anonymous_events(sandbox: SandboxServer, tmp_path: Path) -> None:
    with runtime(sandbox, tmp_path / "data") as rt:
        rt.ingestor.ingest([purchase("alice", 0)])  # alice is a known customer
        rt.ingestor.ingest([visit(f"visitor-{n}", n) for n in range(1_200)])
        deliverer = start_small_claims(rt)
        try:
            wait_for(lambda: sandbox.state.stats()["requests"] >= 5, "delivery under way")
            ingested_at = time.time()
            rt.ingestor.ingest([purchase("alice", 1)])  # behind 1,200 anonymous events in the queue
            deliverer.notify()
            wait_for(lambda: delivered(sandbox, "alice-purchase-1"), "alice's purchase in Customer.io", timeout=90)
        finally:
            deliverer.stop()
    # in queue order it would wait for ~1,100 anonymous requests (55 s at 20/s)
    assert anonymous_requests_before(sandbox, "alice-purchase-1", since=ingested_at) <= 30
    assert len(sandbox.state.anonymous_events()) < 600
    assert [event["name"] for event in sandbox.state.events("alice")] == ["purchase", "purchase"]


def test_a_waiting_visitor_who_identifies_is_adopted_not_sent_anonymously(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    def pageviews(person: str) -> list[dict[str, Any]]:
        return [event for event in sandbox.state.events(person) if event["name"] == "$pageview"]

    with runtime(sandbox, tmp_path / "data") as rt:
        rt.ingestor.ingest([visit(f"visitor-{n}", n) for n in range(300)])
        rt.ingestor.ingest([visit("carol-device", 1_000 + n) for n in range(3)])  # behind the backlog
        deliverer = start_small_claims(rt)
        try:
            wait_for(lambda: sandbox.state.stats()["requests"] >= 5, "delivery under way")
            report = rt.ingestor.ingest([identify("carol", "carol-device", 2_000)])
            deliverer.notify()
            wait_for(lambda: len(pageviews("carol")) == 3, "carol's three page views on her profile")
        finally:
            deliverer.stop()
    assert report.notes["anonymous_events_adopted"] == 3
    requests = sandbox.state.requests()
    assert not [entry for entry in requests if entry["path"] == V1_EVENTS and "'carol-device" in str(entry["body"])]
    assert len(sandbox.state.anonymous_events()) < 300  # the backlog was still waiting


def test_a_429_slows_anonymous_events_first(sandbox: SandboxServer, tmp_path: Path) -> None:
    with runtime(sandbox, tmp_path / "data", customerio_max_rps=50) as rt:
        rt.ingestor.ingest([purchase("alice", 0)])
        rt.ingestor.ingest([visit(f"visitor-{n}", n) for n in range(1_200)])
        deliverer = start_small_claims(rt)
        try:
            wait_for(lambda: len(sandbox.state.events("alice")) == 1, "alice known in Customer.io")
            sandbox.state.add_fault(status=429, count=1, retry_after=str(RETRY_AFTER))
            wait_for(lambda: sandbox.state.stats()["requests_by_status"].get("429"), "a 429")
            rt.ingestor.ingest([purchase("alice", 1)])  # during the pause (or just after it)
            deliverer.notify()
            wait_for(lambda: delivered(sandbox, "alice-purchase-1"), "alice's purchase after the pause")
        finally:
            deliverer.stop()
    log = sorted(sandbox.state.requests(), key=lambda entry: entry["time"])
    storm = next(entry for entry in log if entry["status"] == 429)
    # person work resumes when Retry-After ends, anonymous events only as long again after it (a request
    # already on the wire when the 429 was answered could not know of it: the window starts at the pause's end)
    resumed = [entry for entry in log if entry["time"] >= storm["answered"] + RETRY_AFTER]
    first_person = next(n for n, entry in enumerate(resumed) if carries(entry, "alice-purchase-1"))
    assert not [entry for entry in resumed[:first_person] if entry["path"] == V1_EVENTS], [
        (round(entry["time"] - storm["time"], 2), entry["path"]) for entry in resumed[: first_person + 1]
    ]


def test_replicas_share_the_budget_and_both_put_people_first(
    sandbox: SandboxServer, pg_url: str, tmp_path: Path
) -> None:
    rps = 10.0
    with ExitStack() as stack:
        replicas = [
            stack.enter_context(
                runtime(
                    sandbox,
                    tmp_path / name,
                    customerio_max_rps=rps,
                    delivery_concurrency=2,
                    outbox_url=pg_url,
                    sqlite_synchronous=None,
                    lease_s=10,
                )
            )
            for name in ("a", "b")
        ]
        replicas[0].ingestor.ingest([purchase("alice", 0)])
        replicas[0].ingestor.ingest([visit(f"visitor-{n}", n) for n in range(1_100)])
        deliverers = [start_small_claims(replica) for replica in replicas]
        try:
            wait_for(lambda: sandbox.state.stats()["requests"] >= 5, "delivery under way")
            ingested_at = time.time()
            replicas[1].ingestor.ingest([purchase("alice", 1)])
            for deliverer in deliverers:
                deliverer.notify()
            wait_for(lambda: delivered(sandbox, "alice-purchase-1"), "alice's purchase", timeout=90)
            wait_for(lambda: sandbox.state.stats()["requests"] >= 40, "anonymous events under way", timeout=60)
        finally:
            for deliverer in deliverers:
                deliverer.stop()
        sent = [deliverer.stats.requests for deliverer in deliverers]
    assert anonymous_requests_before(sandbox, "alice-purchase-1", since=ingested_at) <= 15
    times = sorted(entry["time"] for entry in sandbox.state.requests())
    span = times[-1] - times[0]
    # slots are 1/rps apart on the database's clock; a request can be late (load), never early
    assert len(times) - 1 <= rps * span + 3, f"{len(times)} requests in {span:.2f} s: above {rps}/s"
    assert all(count > 0 for count in sent), f"one replica sent nothing ({sent}): the test proves nothing"


def test_a_restart_with_a_backlog_loses_nothing_and_keeps_each_persons_order(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    events: list[PostHogEvent] = []
    for n in range(200):
        events.append(visit(f"visitor-{n % 50}", n))
        if n % 4 == 0:
            events.append(purchase(f"customer-{n % 3}", n))
    for n in range(0, 50, 5):  # a tenth of the visitors identify, late in the stream
        events.append(identify(f"user-{n}", f"visitor-{n}", 500 + n))
    data = tmp_path / "data"
    with runtime(sandbox, data) as rt:
        rt.ingestor.ingest(events)
        deliverer = rt.deliverer()
        deliverer.start()
        wait_for(lambda: sandbox.state.stats()["requests"] >= 20, "some requests before the stop")
        deliverer.stop()
    with runtime(sandbox, data, customerio_max_rps=1000) as rt:
        rt.outbox.input_finished()
        deliverer = rt.deliverer()
        deliverer.start()
        try:
            assert deliverer.wait_until_empty(60)
        finally:
            deliverer.stop()
    ids = refs(sandbox.state.events() + sandbox.state.anonymous_events())
    pageviews = sorted(i for i in ids if i.startswith("visitor-"))
    assert len(ids) == len(set(ids)), "an event reached Customer.io twice"
    assert pageviews == sorted(f"visitor-{n % 50}-{n}" for n in range(200))
    for number in range(3):
        sent = refs(sandbox.state.events(f"customer-{number}"))
        wanted = [f"customer-{number}-purchase-{n}" for n in range(200) if n % 4 == 0 and n % 3 == number]
        assert sent == wanted, f"customer-{number}'s purchases out of order or missing"
    for n in range(0, 50, 5):
        mine = [ref for ref in refs(sandbox.state.events(f"user-{n}")) if ref.startswith("visitor-")]
        assert mine == sorted(mine, key=lambda i: int(i.rsplit("-", 1)[1])), f"user-{n}'s page views out of order"
