"""The outbox's bound (``OUTBOX_MAX_QUEUED``, :mod:`posthog_customerio.bound`): sources wait at it, delivery wakes them.

In process, against SQLite and the sandbox: the bound counts person work only (anonymous events have their own
bound), its wait ends when delivery takes enough out (woken by the delivery, not a poll), when stopped, when its
time runs out, or with delivery's own failure; ``send`` reads no further than the bound allows, delivers while it
reads, and every event arrives once. ``consume``'s pause is in test_kafka_source.py, ``serve``'s 503 in
tests/e2e/test_backpressure.py with the ``send`` kill -9.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from posthog_customerio.bound import OutboxBound
from posthog_customerio.config import Settings
from posthog_customerio.mapping import map_event
from posthog_customerio.operations import Operation
from posthog_customerio.output.base import AuthError
from posthog_customerio.sandbox import SandboxServer
from posthog_customerio.sources import parse_payload
from posthog_customerio.sources.files import FileProgress, send_file
from posthog_customerio.state import PersonState

from ..helpers import assert_exactly_once, ev, make_runtime, wait_for

EVENT_ACTIONS = ("event", "page", "screen")


def person(key: str, n: int) -> Operation:
    return Operation(key, {"action": "event", "name": f"e{n}", "id": f"{key}-{n}"})


def anonymous(key: str, n: int) -> Operation:
    return Operation(key, {"action": "event", "name": f"a{n}", "anonymous_id": key}, kind="anonymous")


def backfill(people: int) -> list[dict[str, Any]]:
    """Per person: an identify with an email, then two events."""
    events = []
    for number in range(people):
        user, t = f"user-{number:04d}", number * 10
        events.append(ev("$identify", user, t, top={"$set": {"email": f"{user}@example.com", "n": number}}))
        events += [ev("clicked", user, t + 1, n=number), ev("bought", user, t + 2, n=number)]
    return events


def expected_event_ids(events: list[dict[str, Any]]) -> set[str]:
    """Oracle: the dedupe ids one clean pass of the product's mapping sends."""
    config, states, ids = Settings().mapping_config(), dict[str, PersonState](), set()
    for raw in events:
        for event in parse_payload(raw):
            mapped = map_event(event, states, config)
            states.update(mapped.states)
            ids.update(
                op.payload["id"].upper()
                for op in mapped.operations
                if op.payload.get("action") in EVENT_ACTIONS and "id" in op.payload
            )
    return ids


def lines(events: list[dict[str, Any]]) -> list[str]:
    import json

    return [json.dumps(event) + "\n" for event in events]


# -- the bound ---------------------------------------------------------------------------------------
def test_the_bound_counts_person_work_only(sandbox: SandboxServer, tmp_path: Path) -> None:
    """Anonymous events never fill it (their own bound drops the oldest); person work does, in flight included."""
    with make_runtime(sandbox, tmp_path / "data", outbox_max_queued=3) as runtime:
        bound = runtime.bound
        # (put straight into the outbox: not through the ingestor, so each look counts: ``queued`` first)
        runtime.outbox.put([anonymous(f"visitor-{n}", n) for n in range(20)])
        assert bound.queued() == 0 and not bound.full()
        runtime.outbox.put([person("alice", 1), person("bob", 1)])
        assert bound.queued() == 2 and not bound.full()
        claimed = runtime.outbox.claim(10, 1_000_000, 1_000_000, lane="person")
        assert len(claimed) == 2  # in flight still counts: it is not delivered yet
        runtime.outbox.put([person("carol", 1)])
        assert bound.queued() == 3 and bound.full()
        status = bound.status()
        assert status["max_queued"] == 3 and status["queued"] == 3 and status["full"] is True
        assert status["wait_at"] == 1  # sources that can wait wait at half of it: room kept for serve's clients


def test_sources_wait_at_half_the_bound_serve_refuses_at_all_of_it(sandbox: SandboxServer, tmp_path: Path) -> None:
    with make_runtime(sandbox, tmp_path / "data", outbox_max_queued=10) as runtime:
        bound = runtime.bound
        runtime.outbox.put([person(f"p{n}", 1) for n in range(4)])
        assert bound.queued() == 4 and not bound.must_wait() and not bound.full()
        runtime.outbox.put([person("p5", 1)])
        assert bound.queued() == 5 and bound.must_wait() and not bound.full()
        runtime.outbox.put([person(f"q{n}", 1) for n in range(5)])
        assert bound.queued() == 10 and bound.must_wait() and bound.full()


def test_a_count_is_made_once_what_this_process_wrote_may_reach_the_bound(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    """Between counts the operations this process wrote are added to the last count: the estimate reaches the
    bound as soon as the outbox may, with no count made while it is far under it."""
    with make_runtime(sandbox, tmp_path / "data", outbox_max_queued=10) as runtime:
        bound, counts = runtime.bound, []
        real = runtime.outbox.person_work_depth

        def counting() -> int:
            counts.append(1)
            return real()

        runtime.outbox.person_work_depth = counting  # type: ignore[method-assign]
        assert not bound.full() and len(counts) == 1  # the first look counts
        runtime.ingestor.ingest([event for raw in backfill(1) for event in parse_payload(raw)])
        assert not bound.full() and len(counts) == 1  # 3 operations written: 0 + 3 < 10, no count needed
        runtime.ingestor.ingest([event for raw in backfill(4)[3:] for event in parse_payload(raw)])
        assert runtime.ingestor.operations_written >= 10
        assert bound.full() and len(counts) == 2  # the estimate reached the bound: counted, and it is full


def test_the_wait_is_woken_by_a_delivery_and_ends_on_stop_time_or_failure(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    with make_runtime(sandbox, tmp_path / "data", outbox_max_queued=2) as runtime:
        outbox = runtime.outbox
        outbox.put([person("alice", 1), person("bob", 1)])
        # no recount while waiting (an hour): only this process's delivery can end the wait in time; sources wait
        # at half the bound: 2 of 4
        bound = OutboxBound(outbox, 4, lambda: runtime.ingestor.operations_written, recheck_s=3600)
        started = time.monotonic()
        waited = bound.wait_for_room("file", timeout=0.2)
        assert not waited.room and waited.waited and 0.2 <= time.monotonic() - started < 5
        waited = bound.wait_for_room("file", stop=lambda: True)
        assert not waited.room and waited.waited

        def failed() -> None:
            raise AuthError("401 from Customer.io")

        with pytest.raises(AuthError):
            bound.wait_for_room("file", check=failed)
        ended: list[Any] = []
        waiter = threading.Thread(target=lambda: ended.append(bound.wait_for_room("kafka")), daemon=True)
        waiter.start()
        wait_for(lambda: bound.status()["waiting"] == ["kafka"], "the wait to start", 10)
        outbox.put([person("carol", 1)])  # 3 queued
        outbox.ack(outbox.claim(1, 1_000_000, 1_000_000, lane="person"))  # 2 left: still waiting
        wait_for(lambda: bound.status()["waited_s"]["kafka"] > 0, "the wait to go on", 10)
        assert not ended
        outbox.ack(outbox.claim(1, 1_000_000, 1_000_000, lane="person"))  # 1 left: room
        waiter.join(10)
        assert ended and ended[0].room and ended[0].waited
        status = bound.status()
        assert status["waits"] == {"file": 3, "kafka": 1} and status["waiting"] == []
        assert status["waited_s"]["kafka"] > 0 and not status["full"]


# -- send --------------------------------------------------------------------------------------------
def test_send_reads_no_further_than_the_bound_delivers_while_reading_and_everything_arrives_once(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    events = backfill(60)  # 180 events, 240 operations (an identify and two events per person)
    chunk, bound = 12, 20
    seen: list[tuple[int, int, int]] = []  # while reading, after each chunk: (person work queued, delivered, read)
    with make_runtime(sandbox, tmp_path / "data", outbox_max_queued=bound) as runtime:

        def progress(where: FileProgress) -> None:
            if not where.done_reading:
                seen.append((runtime.outbox.person_work_depth(), where.delivered, where.events))

        summary = send_file(runtime, lines(events), chunk_events=chunk, on_progress=progress)
    assert summary.queued == 0 and summary.dead_lettered == 0 and summary.read == len(events)
    # each chunk was read only once there was room: at most half the bound and one chunk's operations queued
    assert seen and max(queued for queued, _, _ in seen) < bound // 2 + 2 * chunk, seen
    waits = summary.outbox_waits
    assert waits["times"] >= 3 and waits["seconds"] > 0 and waits["timed_out"] is False, waits
    # delivery kept pace: most of the operations went out while the file was still being read
    assert max(delivered for _, delivered, read in seen if read < len(events)) >= 120, seen
    assert_exactly_once(sandbox, expected_event_ids(events))
    assert len(sandbox.state.people()) == 60


def test_send_gives_up_waiting_when_its_timeout_runs_out(sandbox: SandboxServer, tmp_path: Path) -> None:
    """Customer.io failing for longer than ``--timeout``: the wait for room ends with the timeout and the rest of
    the input is not read (what was read stays queued)."""
    sandbox.state.add_fault(status=503, duration_s=600)
    try:
        with make_runtime(sandbox, tmp_path / "data", outbox_max_queued=5) as runtime:
            started = time.monotonic()
            summary = send_file(runtime, lines(backfill(20)), chunk_events=6, timeout=1.0)
            assert time.monotonic() - started < 15
    finally:
        sandbox.state.clear_faults()
    assert summary.outbox_waits["timed_out"] is True and summary.outbox_waits["times"] == 1
    assert summary.read < 60 and summary.queued > 0 and summary.operations_delivered == 0
