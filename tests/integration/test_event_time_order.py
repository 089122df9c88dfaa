"""Event-time order of consumed events (issue 24, items 2 and 5), on both backends.

PostHog keys ``clickhouse_events_json`` by event uuid: one person's events reach the outbox from different
partitions, out of order. :meth:`Ingestor.ingest_stream` stores each event with its partition and position;
the outbox keeps a person's movable operations in event-time order (a late event takes its place before the
later ones still queued), the gate (:class:`EventTimeGate`) hands nothing out until every partition was read
past it, and the anonymous hold counts in event time, so an identify read late from another partition still
adopts the visitor's page views. A batch read again is not stored twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from posthog_customerio import outbox as outbox_module
from posthog_customerio.ingestion import Ingestor
from posthog_customerio.mapping import MappingConfig
from posthog_customerio.operations import Claimed
from posthog_customerio.ordering import POSITION_SPAN, EventTimeGate
from posthog_customerio.outbox import Outbox
from posthog_customerio.sources import PostHogEvent
from posthog_customerio.storage import CandidateRow, Storage

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
STREAM = "kafka:group:topic"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def event(name: str, seconds: float, distinct_id: str = "user-1", **props: Any) -> PostHogEvent:
    return PostHogEvent(name, distinct_id, at(seconds), {"$is_identified": True, **props}, uuid=f"{name}-{seconds}")


class Stream:
    """A consumer's view: each event read from a partition at the next offset."""

    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor
        self.offsets: dict[int, int] = {}

    def read(self, *events: tuple[int, PostHogEvent]) -> Any:
        places = []
        for part, _ in events:
            offset = self.offsets.get(part, 0)
            self.offsets[part] = offset + 1
            places.append((part, offset * POSITION_SPAN))
        return self.ingestor.ingest_stream([e for _, e in events], "kafka", STREAM, places)

    def again(self, events: list[PostHogEvent], places: list[tuple[int, int]]) -> Any:
        return self.ingestor.ingest_stream(events, "kafka", STREAM, places)


def claim(outbox: Outbox, lane: str | None = None) -> list[Claimed]:
    return outbox.claim(100, 1_000_000, 32_000, lane=lane)  # type: ignore[arg-type]


def names(items: Iterable[Claimed]) -> list[str]:
    return [str(json.loads(item.payload).get("name")) for item in items if json.loads(item.payload).get("name")]


def drain(outbox: Outbox) -> list[str]:
    """Deliver everything, one claim at a time: the event names in the order they went out."""
    sent: list[str] = []
    while items := claim(outbox):
        sent += names(items)
        outbox.ack(items)
    return sent


@pytest.fixture
def parts(open_db: Callable[[], Storage]) -> tuple[Outbox, Ingestor, Stream]:
    db = open_db()
    outbox = Outbox(db)
    ingestor = Ingestor(db, outbox, MappingConfig())
    return outbox, ingestor, Stream(ingestor)


def test_a_late_event_goes_out_before_the_later_ones_still_queued(parts: tuple[Outbox, Ingestor, Stream]) -> None:
    outbox, _, stream = parts
    stream.read((0, event("third", 30)), (1, event("second", 20)))
    report = stream.read((2, event("first", 10)))
    assert report.notes["reordered"] >= 1
    assert drain(outbox) == ["first", "second", "third"]


def test_an_operation_in_flight_keeps_its_place(parts: tuple[Outbox, Ingestor, Stream]) -> None:
    """A claimed operation is being sent: a late earlier event goes after it (never into its place), and the
    queued ones after it are still put in order."""
    outbox, _, stream = parts
    stream.read((0, event("fourth", 40)))
    in_flight = claim(outbox)
    assert names(in_flight) == ["fourth"]
    stream.read((1, event("third", 30)), (1, event("fifth", 50)))
    stream.read((2, event("first", 10)))
    outbox.ack(in_flight)
    assert drain(outbox) == ["first", "third", "fifth"]


def test_a_reorder_while_a_claim_chooses_sends_what_the_row_holds_once_taken(
    parts: tuple[Outbox, Ingestor, Stream], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The late event is stored (and the person's operations put in order) after the claim read the queue and
    before it took its rows: the claim sends what each row holds once it holds it, so nothing goes twice,
    nothing is lost, and the person's events still go out in order."""
    outbox, _, stream = parts
    stream.read((0, event("second", 20)), (0, event("third", 30)))
    reports = []
    select = outbox_module._select

    def rows_then_reorder(rows: Iterable[CandidateRow]) -> Iterator[CandidateRow]:
        yield from rows
        if not reports:
            reports.append(stream.read((1, event("first", 10))))

    monkeypatch.setattr(outbox_module, "_select", lambda rows, *args: select(rows_then_reorder(rows), *args))
    first = claim(outbox)
    monkeypatch.undo()
    assert reports and reports[0].notes["reordered"] >= 1
    sent = names(first)
    outbox.ack(first)
    sent += drain(outbox)
    assert sent == ["first", "second", "third"]


def test_a_batch_read_again_is_not_stored_twice(parts: tuple[Outbox, Ingestor, Stream]) -> None:
    outbox, _, stream = parts
    events = [event("a", 1), event("b", 2), event("c", 3)]
    places = [(0, 0), (0, POSITION_SPAN), (1, 0)]
    assert stream.again(events, places).operations > 0
    again = stream.again([*events, event("d", 4)], [*places, (1, POSITION_SPAN)])
    assert again.notes["stored_before"] == 3 and again.events == 1
    assert sorted(drain(outbox)) == ["a", "b", "c", "d"]


def test_the_gate_waits_for_the_slowest_partition(parts: tuple[Outbox, Ingestor, Stream]) -> None:
    """Nothing is handed out until every partition was read past it plus the window: a partition behind holds
    back what the others read ahead of it; its progress releases them."""
    outbox, ingestor, stream = parts
    outbox.gate = EventTimeGate(ingestor.db, window_s=5.0, anonymous_hold_s=5.0, stale_s=3600.0)
    stream.read((0, event("early", 10, "user-2")), (0, event("later", 100)))
    stream.read((1, event("behind", 12, "user-3")))  # partition 1 has been read to t=12
    released = drain(outbox)
    assert released == []  # 10 + 5 > 12: even user-2's event waits (partition 1 may still hold an older one)
    stream.read((1, event("behind-more", 30, "user-3")))
    outbox.gate.watermark(max_age_s=0)
    assert drain(outbox) == ["early", "behind"]  # watermark 30: up to t=25; "later" (t=100) still waits
    stream.read((1, event("earlier", 90)))  # user-1's event from the slow partition, before "later"
    stream.read((1, event("caught-up", 200, "user-3")))
    outbox.gate.watermark(max_age_s=0)
    assert sorted(drain(outbox)) == ["behind-more", "earlier"]  # watermark 100 (partition 0): "later" waits
    stream.read((0, event("tick", 300, "user-4")))
    outbox.gate.watermark(max_age_s=0)
    assert drain(outbox) == ["later"]  # watermark 200: up to t=195 ("caught-up", t=200, waits)


def test_an_idle_stream_releases_its_last_events_after_the_window(parts: tuple[Outbox, Ingestor, Stream]) -> None:
    """Every partition read to its end: the watermark is the newest event time read plus the wall-clock time since
    the stream went idle, so the last events go once the window has passed."""
    outbox, ingestor, stream = parts
    clock = [1_000_000.0]
    gate = EventTimeGate(ingestor.db, window_s=5.0, anonymous_hold_s=5.0, stale_s=1e12, clock=lambda: clock[0])
    outbox.gate = gate
    stream.read((0, event("last", 10)))
    with ingestor.db.transaction() as tx:  # the consumer's beat: partition 0 read to its end at the clock's now
        tx.execute(f"UPDATE stream_positions SET end_at = {clock[0]}")
    gate.watermark(max_age_s=0)
    assert drain(outbox) == []
    clock[0] += 6
    gate.watermark(max_age_s=0)
    assert drain(outbox) == ["last"]


def test_the_anonymous_hold_counts_in_event_time(parts: tuple[Outbox, Ingestor, Stream]) -> None:
    """Issue 24 item 5: the visitor's page view is read from one partition long (in wall-clock time) before their
    identify is read from another; it waits by event time, so the identify adopts it (one person event)."""
    outbox, ingestor, stream = parts
    outbox.anonymous_hold.hold_s = 0.001  # the wall-clock hold alone would have let it go
    outbox.gate = EventTimeGate(ingestor.db, window_s=5.0, anonymous_hold_s=5.0, stale_s=3600.0)
    visit = PostHogEvent("$pageview", "anon-9", at(100), {"$is_identified": False}, uuid="visit")
    stream.read((0, visit))
    stream.read((1, event("other", 50, "user-3")))  # partition 1 is behind, at t=50
    assert claim(outbox, "anonymous") == []
    identify = PostHogEvent("$identify", "user-9", at(102), {"$anon_distinct_id": "anon-9"}, uuid="identify")
    report = stream.read((1, identify))
    assert report.notes["anonymous_events_adopted"] == 1
    stream.read((0, event("tick", 300, "user-3")), (1, event("tick2", 300, "user-3")))
    outbox.gate.watermark(max_age_s=0)
    sent: list[Claimed] = []
    while items := claim(outbox):
        sent += items
        outbox.ack(items)
    kinds = [(json.loads(item.payload).get("name"), item.kind) for item in sent]
    assert ("$pageview", "anonymous") not in kinds and ("$pageview", "person") in kinds, kinds


def test_a_claim_stops_after_a_run_of_held_rows(
    parts: tuple[Outbox, Ingestor, Stream], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backlog the gate holds is not read to its end by every claim: a row behind a long held run waits until
    those before it are released (storing the slowest partition's events does that, not delivery)."""
    outbox, ingestor, stream = parts
    outbox.gate = EventTimeGate(ingestor.db, window_s=5.0, anonymous_hold_s=5.0, stale_s=3600.0)
    stream.read(*[(0, event(f"ahead-{n}", 100, f"user-{n}")) for n in range(5)])
    stream.read((1, event("behind", 10, "user-9")), (1, event("partition-1", 50, "user-8")))  # watermark 50
    monkeypatch.setattr(outbox_module, "_GATED_RUN", 3)
    assert drain(outbox) == []  # "behind" (t=10) could go, but it is past a run of 5 held rows
    monkeypatch.setattr(outbox_module, "_GATED_RUN", 2_000)
    assert drain(outbox) == ["behind"]  # the same queue, read to its end
    stream.read((1, event("caught-up", 500, "user-8")), (0, event("tick", 500, "user-8")))
    outbox.gate.watermark(max_age_s=0)
    assert sorted(drain(outbox)) == sorted([*(f"ahead-{n}" for n in range(5)), "partition-1"])


def test_nothing_is_held_longer_than_reorder_stale_s_after_it_was_stored(
    parts: tuple[Outbox, Ingestor, Stream],
) -> None:
    """The window is bounded: a partition far behind (or at the outbox bound, paused) holds an operation at most
    ``REORDER_STALE_S`` after it was stored; then it goes, in its person's order."""
    outbox, ingestor, stream = parts
    outbox.gate = EventTimeGate(ingestor.db, window_s=5.0, anonymous_hold_s=5.0, stale_s=60.0)
    stream.read((0, event("first", 100)), (0, event("second", 110)))
    stream.read((1, event("slow", 1, "user-3")))  # partition 1 holds the watermark at t=1
    assert drain(outbox) == []
    with ingestor.db.transaction() as tx:  # stored more than REORDER_STALE_S ago
        tx.execute("UPDATE outbox SET enqueued_at = enqueued_at - 61")
    sent = drain(outbox)
    assert sorted(sent) == ["first", "second", "slow"] and sent.index("first") < sent.index("second")
