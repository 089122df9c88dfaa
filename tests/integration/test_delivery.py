"""Delivery end to end: our workers -> real HTTP -> the sandbox, with injected faults."""

from __future__ import annotations

import json
import time
import uuid as uuidlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from posthog_customerio.backoff import Backoff
from posthog_customerio.output.base import AuthError
from posthog_customerio.output.track import TrackClient
from posthog_customerio.runtime import Runtime
from posthog_customerio.sandbox import SandboxServer
from posthog_customerio.sources import parse_event

from ..conftest import API_KEY, SITE_ID
from ..helpers import make_runtime

pytestmark = pytest.mark.e2e


def events_for(people: int, per_person: int, *, props: int = 3) -> list[Any]:
    raw = []
    for n in range(per_person):
        for p in range(people):
            raw.append(
                parse_event(
                    {
                        "event": "clicked" if n else "signed_up",
                        "distinct_id": f"user-{p}",
                        "uuid": str(uuidlib.uuid5(uuidlib.NAMESPACE_OID, f"{p}-{n}")),
                        "timestamp": 1_704_067_200 + n * 60 + p,
                        "properties": {
                            "n": n,
                            **{f"prop_{i}": f"value {i}" for i in range(props)},
                            **({"$set": {"email": f"user{p}@example.com", "plan": "free"}} if n == 0 else {}),
                        },
                    }
                )
            )
    return raw


def deliver(runtime: Runtime, events: list[Any], timeout: float = 30.0, **kwargs: Any) -> Any:
    runtime.ingestor.ingest(events)
    deliverer = runtime.deliverer(**kwargs)
    deliverer.start()
    try:
        assert deliverer.wait_until_empty(timeout)
    finally:
        deliverer.stop()
    return deliverer


def test_v2_batches_are_packed_by_bytes_and_everything_arrives_once(sandbox: SandboxServer, tmp_path: Path) -> None:
    runtime = make_runtime(sandbox, tmp_path / "data", delivery_concurrency=2)
    with runtime:
        deliverer = deliver(runtime, events_for(people=50, per_person=40, props=20))
    stats = sandbox.state.stats()
    assert stats["events"] == 2000 and stats["duplicates"] == 0
    assert stats["people"] == 50
    requests = sandbox.state.requests()
    assert all(r["path"] == "/api/v2/batch" and r["status"] == 200 for r in requests)
    assert all(r["bytes"] < 500_000 for r in requests)
    # 2,050 operations of ~700 bytes: a handful of requests, not one per event
    assert len(requests) <= 6
    assert deliverer.stats.delivered == 2050


def test_each_persons_events_arrive_in_order(sandbox: SandboxServer, tmp_path: Path) -> None:
    with make_runtime(sandbox, tmp_path / "data", delivery_concurrency=4) as runtime:
        runtime.deliverer().max_batch_items = 7  # many small concurrent batches
        deliver(runtime, events_for(people=5, per_person=30))
    by_person: dict[str, list[int]] = defaultdict(list)
    for event in sandbox.state.events():
        by_person[event["person"]].append(event["data"]["n"])
    assert len(by_person) == 5
    for sequence in by_person.values():
        assert sequence == list(range(30))


def test_500s_are_retried_and_nothing_is_lost_or_duplicated(sandbox: SandboxServer, tmp_path: Path) -> None:
    sandbox.state.add_fault(status=500, count=3)
    with make_runtime(sandbox, tmp_path / "data") as runtime:
        runtime.deliverer().settlement.backoff = Backoff(base=0.05, cap=0.2)
        deliverer = deliver(runtime, events_for(people=3, per_person=4))
    statuses = [r["status"] for r in sandbox.state.requests()]
    assert statuses[:3] == [500, 500, 500] and statuses[-1] == 200
    assert sandbox.state.stats()["events"] == 12
    assert deliverer.stats.retries > 0


def test_429_retry_after_is_honoured(sandbox: SandboxServer, tmp_path: Path) -> None:
    sandbox.state.add_fault(status=429, count=1, retry_after=1)
    with make_runtime(sandbox, tmp_path / "data") as runtime:
        deliver(runtime, events_for(people=2, per_person=2))
    first, second, *_ = sandbox.state.requests()
    assert first["status"] == 429
    assert second["time"] - first["time"] >= 0.95  # no request before Retry-After elapsed
    assert sandbox.state.stats()["events"] == 4


def test_207_dead_letters_only_the_rejected_operation(sandbox: SandboxServer, tmp_path: Path) -> None:
    events = events_for(people=3, per_person=1)
    bad = parse_event(
        {
            "event": "x",
            "distinct_id": "user-bad",
            "timestamp": 1_704_067_200,
            "properties": {"$set": {"bio": "é" * 600}},
        }
    )  # 1,200 bytes: over the 1,000-byte value limit
    with make_runtime(sandbox, tmp_path / "data", limits="dead-letter") as runtime:
        deliver(runtime, [*events, bad])
        letters = runtime.outbox.dead_letters()
    assert [json.loads(letter.payload)["action"] for letter in letters] == ["identify"]
    assert letters[0].status == 207 and letters[0].person_key == "user-bad"
    assert "1000" in letters[0].reason or "bytes" in letters[0].reason
    # the good people arrived, and the bad person's event too (it was valid)
    assert sandbox.state.stats()["events"] == 4


def test_a_207_with_a_non_json_body_is_not_counted_as_delivered(sandbox: SandboxServer, tmp_path: Path) -> None:
    """The injected 207 applied nothing and says nothing readable: every operation is sent again (in halves)."""
    sandbox.state.add_fault(status=207, count=1, body="<html>upstream hiccup</html>")
    with make_runtime(sandbox, tmp_path / "data", delivery_concurrency=1) as runtime:
        deliverer = deliver(runtime, events_for(people=2, per_person=2))
        letters = runtime.outbox.dead_letters()
    statuses = [r["status"] for r in sandbox.state.requests() if r["path"].endswith("/batch")]
    assert statuses[0] == 207 and len(statuses) >= 3
    assert letters == [] and sandbox.state.stats()["events"] == 4
    assert deliverer.stats.delivered == 6  # 2 identifies and 4 events, each acknowledged once


def test_whole_batch_400_is_split_to_isolate_the_bad_operation(sandbox: SandboxServer, tmp_path: Path) -> None:
    # 4 operations for 4 people: 400 on [0..3], then on [0,1], then on [0] -> only op 0 dead-lettered
    sandbox.state.add_fault(status=400, count=3, body={"errors": [{"reason": "invalid"}]})
    events = [
        parse_event({"event": "e", "distinct_id": f"p{i}", "timestamp": 1_704_067_200, "uuid": str(uuidlib.uuid4())})
        for i in range(2)
    ]
    with make_runtime(sandbox, tmp_path / "data", delivery_concurrency=1) as runtime:
        deliver(runtime, events)
        letters = runtime.outbox.dead_letters()
    sizes = [len(r["body"]["batch"]) for r in sandbox.state.requests() if isinstance(r["body"], dict)]
    assert sizes == [4, 2, 1, 1, 2]
    assert len(letters) == 1 and letters[0].status == 400
    assert sandbox.state.stats()["events"] == 2 - (json.loads(letters[0].payload)["action"] != "identify")


def test_401_stops_delivery_and_keeps_everything_queued(sandbox: SandboxServer, tmp_path: Path) -> None:
    sandbox.state.set_credentials(SITE_ID, "rotated-key")
    with make_runtime(sandbox, tmp_path / "data") as runtime:
        runtime.ingestor.ingest(events_for(people=2, per_person=2))
        deliverer = runtime.deliverer()
        deliverer.start()
        with pytest.raises(AuthError):
            deliverer.wait_until_empty(10)
        deliverer.stop()
        assert runtime.outbox.depth() == 6 and runtime.outbox.dead_letter_count() == 0
    # every request refused, and no worker sent again after its 401 (requests already in flight on other
    # workers when the first 401 came back may be refused too: at most one per worker)
    statuses = [r["status"] for r in sandbox.state.requests()]
    assert statuses and set(statuses) == {401} and len(statuses) <= runtime.settings.delivery_concurrency
    # credentials fixed: a new run delivers everything
    sandbox.state.set_credentials(SITE_ID, API_KEY)
    with make_runtime(sandbox, tmp_path / "data") as runtime:
        deliver(runtime, [])
    assert sandbox.state.stats()["events"] == 4


def test_paused_delivery_resumes_when_credentials_work_again(sandbox: SandboxServer, tmp_path: Path) -> None:
    sandbox.state.set_credentials(SITE_ID, "rotated-key")
    with make_runtime(sandbox, tmp_path / "data") as runtime:
        runtime.ingestor.ingest(events_for(people=1, per_person=2))
        deliverer = runtime.deliverer(pause_on_auth_error=True)
        deliverer.auth_retry_s = 0.2
        deliverer.start()
        deadline = time.monotonic() + 30
        while not deliverer.auth_error:  # the first request was rejected (however slowly it went out)
            assert time.monotonic() < deadline, "delivery never paused"
            time.sleep(0.05)
        assert runtime.outbox.depth() == 3
        sandbox.state.set_credentials(SITE_ID, API_KEY)
        assert deliverer.wait_until_empty(10)
        deliverer.stop()
    assert sandbox.state.stats()["events"] == 2


def test_v1_api_sends_one_request_per_operation_with_encoded_ids(sandbox: SandboxServer, tmp_path: Path) -> None:
    weird = "user/1?x=#frag 100%"
    event = parse_event(
        {
            "event": "$pageview",
            "distinct_id": weird,
            "timestamp": 1_704_067_200,
            "uuid": str(uuidlib.uuid4()),
            "properties": {"$current_url": "https://x.io/", "$set": {"plan": "pro"}},
        }
    )
    with make_runtime(sandbox, tmp_path / "data", customerio_api="v1") as runtime:
        deliver(runtime, [event])
    paths = [r["path"] for r in sandbox.state.requests()]
    assert paths == [
        "/api/v1/customers/user%2F1%3Fx%3D%23frag%20100%25",
        "/api/v1/customers/user%2F1%3Fx%3D%23frag%20100%25/events",
    ]
    person = sandbox.state.person(weird)
    assert person is not None and person["attributes"]["plan"] == "pro" and len(person["events"]) == 1
    assert person["events"][0]["type"] == "page"


def test_replaying_the_same_events_creates_no_duplicates(sandbox: SandboxServer, tmp_path: Path) -> None:
    events = events_for(people=2, per_person=3)
    with make_runtime(sandbox, tmp_path / "data") as runtime:
        deliver(runtime, events)
    # a fresh data dir (state lost) replays everything: Customer.io dedupes by event id
    with make_runtime(sandbox, tmp_path / "other") as runtime:
        deliver(runtime, events)
    stats = sandbox.state.stats()
    assert stats["events"] == 6 and stats["duplicates"] == 6


def test_client_side_rate_limit_is_shared_by_all_workers(sandbox: SandboxServer, tmp_path: Path) -> None:
    events = [
        parse_event(
            {
                "event": "e",
                "distinct_id": f"p{i}",
                "timestamp": 1_704_067_200,
                "uuid": str(uuidlib.uuid4()),
                "properties": {"$is_identified": False},
            }
        )
        for i in range(12)
    ]
    # anonymous events: one request each; 12 requests at 5 per second need at least ~2.2 s
    made: list[float] = []  # when each request left the client (the sandbox's clock adds its own scheduling)
    request = TrackClient.request

    def timed(self: TrackClient, method: str, path: str, body: str | None) -> Any:
        made.append(time.monotonic())
        return request(self, method, path, body)

    with (
        pytest.MonkeyPatch.context() as patch,
        make_runtime(sandbox, tmp_path / "data", customerio_max_rps=5, delivery_concurrency=4) as runtime,
    ):
        patch.setattr(TrackClient, "request", timed)
        started = time.monotonic()
        deliver(runtime, events)
        elapsed = time.monotonic() - started
    times = sorted(made)
    assert len(sandbox.state.requests()) == 12 and len(times) == 12 and elapsed >= 2.0
    # shared pacing: any 6 consecutive requests span at least 5 slots of 0.2 s (less a little: a worker
    # may be scheduled late after its slot, the next one on time); four workers pacing on their own would
    # put 6 requests within about 0.4 s
    spans = [times[i + 5] - times[i] for i in range(len(times) - 5)]
    assert min(spans) >= 0.8, spans


def test_a_trickle_lingers_before_it_is_claimed_not_after(sandbox: SandboxServer, tmp_path: Path) -> None:
    """A few operations waiting (under a quarter of a claim) wait out the linger unclaimed: no claim is taken
    and given back (each writes the rows' leases), and the batch goes once the linger is over."""
    with make_runtime(sandbox, tmp_path / "data", delivery_linger_s=0.3) as runtime:
        given_back: list[int] = []
        claims = runtime.outbox.claims
        give_back = claims.give_back
        claims.give_back = lambda seqs: (given_back.extend(seqs), give_back(seqs))[1]  # type: ignore[method-assign]
        started = time.monotonic()
        deliverer = deliver(runtime, events_for(people=2, per_person=2))
        elapsed = time.monotonic() - started
    assert deliverer.stats.delivered == 6 and sandbox.state.stats()["events"] == 4
    assert given_back == []
    assert elapsed >= 0.3  # it lingered once
    assert len(sandbox.state.requests()) == 1  # ... and sent one batch
