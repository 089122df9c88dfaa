"""Event-time order's pure parts: putting a person's queued rows in order, and the watermark of partitions."""

from __future__ import annotations

from posthog_customerio.ordering import POSITION_SPAN, event_time_order, position, watermark_of
from posthog_customerio.storage import LaneRow


def row(seq: int, ts: float) -> LaneRow:
    return LaneRow(seq, f"op@{ts}", 10, 0.0, 0, None, "person", ts)


def test_rows_in_order_move_nothing() -> None:
    assert event_time_order([row(1, 1.0), row(4, 2.0), row(9, 2.0)]) == []


def test_a_late_row_takes_the_first_later_place_and_the_rest_shift_back() -> None:
    moves = event_time_order([row(1, 10.0), row(2, 30.0), row(3, 40.0), row(7, 20.0)])
    assert [(seq, moved.payload) for seq, moved in moves] == [(2, "op@20.0"), (3, "op@30.0"), (7, "op@40.0")]


def test_equal_times_keep_queue_order() -> None:
    moves = event_time_order([row(1, 5.0), row(2, 9.0), row(3, 5.0)])
    assert [(seq, moved.seq) for seq, moved in moves] == [(2, 3), (3, 2)]


def test_positions_order_offsets_then_events_of_a_message() -> None:
    assert position(3, 0) < position(3, 1) < position(4, 0) == 4 * POSITION_SPAN


def test_the_watermark_is_the_slowest_partition_still_being_read() -> None:
    assert watermark_of([(100.0, None), (40.0, None), (500.0, 1.0)], now=1e9) == 40.0


def test_no_partition_no_watermark() -> None:
    assert watermark_of([], now=5.0) is None


def test_an_idle_stream_moves_with_the_wall_clock_from_the_newest_event_read() -> None:
    progress = [(100.0, 1_000.0), (90.0, 1_004.0)]
    assert watermark_of(progress, now=1_004.0) == 100.0
    assert watermark_of(progress, now=1_010.0) == 106.0
