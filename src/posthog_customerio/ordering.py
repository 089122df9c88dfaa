"""Event-time order for a source whose partitions are read side by side (``consume``).

PostHog keys ``clickhouse_events_json`` by event uuid, so one person's events are spread over every
partition and read by different consumers at different speeds: they reach the outbox out of order.
Two rules put them back in the order they happened, whatever the partitioning:

* **Reorder on arrival** (:func:`event_time_order`): an operation that arrives after a later one of
  the same person still queued takes its place; the person's movable operations (not anonymous,
  waiting on no other key, not yet taken by a worker) always sit in the queue in event-time order.
* **The gate** (:class:`EventTimeGate`): an operation is not handed to a worker until every partition
  of the stream has been read past its event time plus ``REORDER_WINDOW_S`` (the *watermark*: the
  oldest progress of the partitions, :data:`stream_positions` in the database, shared by every
  consumer and replica); an older event of the same person can then no longer come. An anonymous
  event waits for ``ANONYMOUS_HOLD_S`` of event time the same way, so an identify read later by
  another consumer still adopts it. A partition nobody has read from for ``REORDER_STALE_S`` (its
  consumer died and the group has not given it to another yet) stops holding anything back, and nothing
  is held longer than ``REORDER_STALE_S`` after it was stored, however far behind a partition is (the
  window is bounded: what comes later than that is sent late and counted).

Each partition's progress is the newest event time read from it; a partition read to its end holds nothing
back, and once every partition is, the stream is idle and its last events go after the window in wall-clock
time (:func:`watermark_of`). Positions (offset and event index) are stored with the events, so a batch read
again after a crash is never stored twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .storage import CandidateRow, LaneRow, Storage

__all__ = ["POSITION_SPAN", "EventTimeGate", "event_time_order", "position", "watermark_of"]

#: positions per Kafka offset: an event's position is ``offset * POSITION_SPAN + its index in the message``
POSITION_SPAN = 1 << 20
#: how long a read watermark is reused (each claim asks)
_WATERMARK_CACHE_S = 0.25


def position(offset: int, index: int) -> int:
    """The stored position of the ``index``-th event of the message at ``offset``."""
    return offset * POSITION_SPAN + min(index, POSITION_SPAN - 1)


def event_time_order(rows: Sequence[LaneRow]) -> list[tuple[int, LaneRow]]:
    """``(seq, row)`` for each place whose operation changes when a person's movable rows (in queue order)
    are put in event-time order (ties keep queue order); empty when they already are."""
    ordered = sorted(rows, key=lambda row: (row.order_ts, row.seq))
    return [(place.seq, row) for place, row in zip(rows, ordered, strict=True) if place.seq != row.seq]


def watermark_of(progress: Sequence[tuple[float, float | None]], now: float) -> float | None:
    """The watermark of partitions' ``(newest event time read, read to its end since)``: the oldest progress of the
    partitions still being read; a partition read to its end holds nothing back (what it receives next was
    produced after everything read so far). When every partition is read to its end, the newest event time read
    plus the wall-clock seconds since the last of them got there (the stream is idle: its last events go once the
    window has passed). ``None`` when there is no partition."""
    if not progress:
        return None
    reading = [ts for ts, end_at in progress if end_at is None]
    if reading:
        return min(reading)
    newest = max(ts for ts, _ in progress)
    idle_since = max(end_at for _, end_at in progress if end_at is not None)
    return newest + max(0.0, now - idle_since)


@dataclass(frozen=True, slots=True)
class Watermark:
    """The oldest event time all fresh partitions were read past (``None``: no partition is fresh)."""

    at: float | None
    partitions: int


class EventTimeGate:
    """Whether an operation with an event time may be handed out yet (see the module docstring).

    ``window_s`` is ``REORDER_WINDOW_S``, ``anonymous_hold_s`` the anonymous hold in event time,
    ``stale_s`` ``REORDER_STALE_S``. Once the input is finished (a bounded ``consume`` ended) or when
    no partition is fresh, nothing is held.
    """

    def __init__(
        self,
        db: Storage,
        window_s: float,
        anonymous_hold_s: float,
        stale_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.window_s = window_s
        self.anonymous_hold_s = anonymous_hold_s
        self.stale_s = stale_s
        self.clock = clock
        self._finished = False
        self._lock = threading.Lock()
        self._cached: tuple[float, Watermark] | None = None

    def finish(self) -> None:
        """Nothing more will be read: hold nothing from now on."""
        self._finished = True

    def watermark(self, max_age_s: float = _WATERMARK_CACHE_S) -> Watermark:
        """The stream's watermark now (read again at most every ``max_age_s``)."""
        now = time.monotonic()
        with self._lock:
            if self._cached is not None and now - self._cached[0] < max_age_s:
                return self._cached[1]
        wall = self.clock()
        with self.db.reading() as tx:
            progress = tx.stream_progress(wall - self.stale_s)
        mark = Watermark(watermark_of(progress, wall), len(progress))
        with self._lock:
            self._cached = (now, mark)
        return mark

    def bounds(self) -> tuple[float, float, float] | None:
        """The newest event time a person operation and an anonymous one may have to be handed out now, and the
        enqueue time before which nothing is held any more (``REORDER_STALE_S``: however far behind a partition
        is, nothing waits longer); ``None``: nothing is held."""
        if self._finished:
            return None
        mark = self.watermark().at
        if mark is None:
            return None
        return mark - self.window_s, mark - self.anonymous_hold_s, self.clock() - self.stale_s

    def rule(self) -> Callable[[CandidateRow], bool] | None:
        """Whether a candidate row is held now (``None``: nothing is)."""
        bounds = self.bounds()
        if bounds is None:
            return None
        person_before, anonymous_before, enqueued_before = bounds

        def held(row: CandidateRow) -> bool:
            if row.order_ts is None or row.enqueued_at <= enqueued_before:
                return False
            return row.order_ts > (anonymous_before if row.kind == "anonymous" else person_before)

        return held

    def holds_head(self) -> bool:
        """Whether the first queued person work is held by the gate (a consumer at the outbox's bound then keeps
        reading its partitions that hold the watermark back, or nothing would ever be released)."""
        mark = self.watermark().at
        if self._finished or mark is None:
            return False
        with self.db.reading() as tx:
            queued, order_ts = tx.head_order_ts()
        return queued and order_ts is not None and order_ts + self.window_s > mark

    def late(self, order_ts: float, mark: float | None) -> bool:
        """Whether an event of this time arrives later than the window at watermark ``mark``: the gate may have
        let a later event of its person go already (counted as ``reorder_late_events``)."""
        return mark is not None and order_ts + self.window_s < mark
