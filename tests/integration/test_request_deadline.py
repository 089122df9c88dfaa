"""Every Customer.io request ends within a total deadline below the lease (issue 16, defect 4).

A stand-in that trickles its answer a byte at a time never trips a per-read timeout; the request must
still be abandoned at its deadline, and with PostgreSQL a replica must never send a person's operations
while another replica's request for them may still be open.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from posthog_customerio.operations import Operation
from posthog_customerio.outbox import LeaseLost, Outbox
from posthog_customerio.output.base import Outcome, SendResult
from posthog_customerio.output.pipelines import PipelinesClient
from posthog_customerio.output.track import TrackClient
from posthog_customerio.runtime import Runtime
from posthog_customerio.storage import PostgresStorage
from posthog_customerio.storage.postgres import lease_margin

from ..conftest import API_KEY, SITE_ID
from ..helpers import SlowCustomerio, make_settings, wait_for

DEADLINE_S = 1.0


def send_one(kind: str, url: str) -> SendResult:
    """One batch request through the Track or the Pipelines client, with a 1 s deadline."""
    if kind == "track":
        with TrackClient(SITE_ID, API_KEY, url, timeout=DEADLINE_S) as track:
            return track.send_batch(['{"type":"person","identifiers":{"id":"p"},"action":"identify"}'])
    with PipelinesClient("key", url, timeout=DEADLINE_S) as pipelines:
        return pipelines.send_batch(['{"type":"identify","userId":"p"}'])


@pytest.mark.parametrize("trickle", ["headers", "body"])
@pytest.mark.parametrize("kind", ["track", "pipelines"])
def test_a_trickled_answer_is_abandoned_at_the_deadline(kind: str, trickle: str) -> None:
    """One byte every 0.1 s (each read well inside the timeout): the request still ends after 1 s."""
    with SlowCustomerio(slow=1, interval_s=0.1, trickle=trickle, body_bytes=60) as server:
        started = time.monotonic()
        result = send_one(kind, server.url)
        elapsed = time.monotonic() - started
        request = wait_for(lambda: server.requests and server.requests[0]["end"] and server.requests[0], "hang-up")
    assert result.outcome is Outcome.TRANSIENT and "deadline" in str(result.error), result.describe()
    assert elapsed < DEADLINE_S + 2.0, f"the request took {elapsed:.1f} s"
    assert not request["answered"] and request["end"] - request["start"] < DEADLINE_S + 1.5


def test_a_prompt_answer_is_read_as_usual() -> None:
    with SlowCustomerio(slow=0) as server:
        assert send_one("track", server.url).outcome is Outcome.OK
        assert send_one("pipelines", server.url).outcome is Outcome.OK


@pytest.mark.parametrize("lease_s", [2.0, 4.0, 30.0, 600.0])
def test_the_deadline_leaves_a_margin_below_the_lease(pg_url: str, lease_s: float) -> None:
    outbox = Outbox(PostgresStorage(pg_url), lease_s=lease_s)
    try:
        bound = outbox.claims.bound_timeout(10_000.0)
        assert bound > 0 and bound + lease_margin(lease_s) <= lease_s and lease_margin(lease_s) >= 1.0
        assert outbox.claims.bound_timeout(0.5) == 0.5
    finally:
        outbox.db.close()


def _replica(stack: ExitStack, url: str, pg_url: str, data_dir: Path, **overrides: Any) -> Runtime:
    settings = {
        "customerio_track_url": url,
        "sqlite_synchronous": None,
        "outbox_url": pg_url,
        "lease_s": 4,
        "customerio_timeout_s": 30,
        "customerio_max_rps": 1000,
        **overrides,
    }
    return stack.enter_context(Runtime(make_settings(data_dir, **settings)))


def _operations(people: int, per_person: int) -> list[Operation]:
    return [
        Operation(
            f"p{person}",
            {
                "type": "person",
                "identifiers": {"id": f"p{person}"},
                "action": "event",
                "name": "e",
                "id": f"p{person}-{n}",
                "attributes": {"n": n},
            },
        )
        for n in range(per_person)
        for person in range(people)
    ]


def _items(request: dict[str, Any]) -> Iterator[dict[str, Any]]:
    body = request["body"] or {}
    yield from body.get("batch", [body])


def assert_no_overlap_and_once(requests: list[dict[str, Any]], expected: int) -> None:
    """No two requests carrying one person were open at once; every operation answered exactly once, in order."""
    spans: dict[str, list[tuple[float, float]]] = {}
    for request in requests:
        for person in {item["identifiers"]["id"] for item in _items(request)}:
            spans.setdefault(person, []).append((request["start"], request["end"] or time.monotonic()))
    for person, person_spans in spans.items():
        person_spans.sort()
        for (_, end), (start, _) in itertools.pairwise(person_spans):
            assert start >= end, f"two requests for {person} were open at once"
    answered = [item["id"] for request in requests if request["answered"] for item in _items(request)]
    twice = [key for key, count in Counter(answered).items() if count > 1]
    assert not twice and len(answered) == expected, f"{len(twice)} delivered twice, {len(answered)} of {expected}"
    order: dict[str, list[int]] = {}
    for request in sorted((r for r in requests if r["answered"]), key=lambda r: r["start"]):
        for item in _items(request):
            order.setdefault(item["identifiers"]["id"], []).append(item["attributes"]["n"])
    assert all(numbers == sorted(numbers) for numbers in order.values()), "a person's operations out of order"


def _drain(replicas: list[Runtime], timeout: float) -> None:
    deliverers = [replica.deliverer() for replica in replicas]
    for deliverer in deliverers:
        deliverer.start()
    try:
        wait_for(lambda: replicas[0].outbox.is_empty(), "the shared outbox to empty", timeout=timeout)
    finally:
        for deliverer in deliverers:
            deliverer.stop()


def test_two_replicas_never_overlap_while_an_answer_trickles(pg_url: str, tmp_path: Path) -> None:
    """LEASE_S=4 and a first answer trickled over 10 s: that request is abandoned at its 3 s deadline,
    before its lease ends; the other replica sends those people only after it was abandoned."""
    with SlowCustomerio(slow=1, interval_s=0.2, trickle="body", body_bytes=50) as server, ExitStack() as stack:
        a = _replica(stack, server.url, pg_url, tmp_path / "a")
        b = _replica(stack, server.url, pg_url, tmp_path / "b")
        a.outbox.put(_operations(people=30, per_person=10))
        _drain([a, b], timeout=60)
        requests = list(server.requests)
    assert_no_overlap_and_once(requests, 300)
    assert requests[0]["answered"] is False, "the first answer was read to its end"


def test_a_claims_lease_is_renewed_before_each_of_its_requests(pg_url: str, tmp_path: Path) -> None:
    """Track v1 at 2 requests a second: a claim of 10 single-operation requests (5 s) outlasts LEASE_S=2;
    its rows stay leased to it, so the other replica never sends them too."""
    with SlowCustomerio(slow=0) as server, ExitStack() as stack:
        overrides = {"customerio_api": "v1", "customerio_max_rps": 2, "lease_s": 2}
        a = _replica(stack, server.url, pg_url, tmp_path / "a", **overrides)
        b = _replica(stack, server.url, pg_url, tmp_path / "b", **overrides)
        a.outbox.put(_operations(people=1, per_person=12))
        _drain([a, b], timeout=60)
        requests = list(server.requests)
    for request in requests:  # v1 bodies: one operation each, its data as the event's
        request["body"] = _v1_as_item(request["body"])
    assert_no_overlap_and_once(requests, 12)


def _v1_as_item(body: dict[str, Any]) -> dict[str, Any]:
    data = body.get("data", {})
    return {"identifiers": {"id": "p0"}, "id": body.get("id"), "attributes": {"n": data.get("n")}}


def test_stand_in_records_json(tmp_path: Path) -> None:
    """The stand-in itself: a prompt request is recorded with its body, answered."""
    with SlowCustomerio(slow=0) as server, TrackClient(SITE_ID, API_KEY, server.url) as track:
        track.send_batch([json.dumps({"type": "person", "identifiers": {"id": "x"}, "action": "identify"})])
        # the client may read the answer before the stand-in's thread notes it answered: wait for that, bounded
        wait_for(lambda: server.requests[0]["answered"], "the stand-in to note its answer", 10)
        assert server.requests[0]["body"]["batch"][0]["identifiers"] == {"id": "x"}


def test_a_late_release_never_frees_another_replicas_lease(pg_url: str) -> None:
    """A replica whose lease ran out (a stalled process) settles late: the operation another replica has
    leased since stays leased to that one, so a third claim cannot take it while it is in flight."""
    late, other, third = (Outbox(PostgresStorage(pg_url), lease_s=2) for _ in range(3))
    try:
        late.put(_operations(people=1, per_person=1))
        taken = late.claim(10, 100_000, 32_000)
        assert len(taken) == 1
        again = wait_for(lambda: other.claim(10, 100_000, 32_000), "the lease to run out", timeout=30)
        assert [item.seq for item in again] == [taken[0].seq]
        late.release(taken, "HTTP 503")
        assert third.claim(10, 100_000, 32_000) == [], "claimed while another replica holds it"
        with late.db.reading() as tx:
            attempts = tx.execute("SELECT attempts FROM outbox").fetchone()[0]
        assert attempts == 0, "the late release counted an attempt on a row it no longer held"
    finally:
        for box in (late, other, third):
            box.db.close()


def test_a_claim_whose_lease_passed_to_another_replica_is_dropped_unsent(pg_url: str) -> None:
    """Renewing before a request fails once another replica holds one of the operations: the claim is
    dropped (nothing of it is sent), the other replica's lease stays, and ours on the rest is given back."""
    stalled, other = (Outbox(PostgresStorage(pg_url), lease_s=2) for _ in range(2))
    try:
        stalled.put(_operations(people=2, per_person=1))
        taken = stalled.claim(10, 100_000, 32_000)
        assert [item.person_key for item in taken] == ["p0", "p1"]
        until = _lease_until(stalled)
        wait_for(lambda: time.time() > until, "the leases to run out")
        stolen = other.claim(1, 100_000, 32_000)  # the other replica takes p0 only
        assert [item.person_key for item in stolen] == ["p0"]
        with pytest.raises(LeaseLost):
            stalled.renew(taken)
        assert stalled.in_flight() == 0
        assert [item.person_key for item in other.claim(10, 100_000, 32_000)] == ["p1"]  # given back, p0 still held
    finally:
        stalled.db.close()
        other.db.close()


def _lease_until(outbox: Outbox) -> float:
    with outbox.db.reading() as tx:
        return float(tx.execute("SELECT MAX(lease_until) FROM outbox").fetchone()[0])
