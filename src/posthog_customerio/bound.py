"""The outbox's bound, ``OUTBOX_MAX_QUEUED``: backpressure from the outbox to every source.

**What is bounded**: the operations of person work waiting in the outbox (every kind but anonymous events, those
in flight included: :meth:`~.outbox.Outbox.person_work_depth`), in operations, the unit of ``MAX_QUEUE`` and
``ANONYMOUS_BACKLOG_MAX``. Anonymous events have their own bound, ``ANONYMOUS_BACKLOG_MAX``, which drops the oldest
rather than holding anything back (:mod:`.backlog`): a flood of visitors' events never makes a source wait nor
``serve`` refuse a person's events (People first).

**Two levels.** Sources that can wait (``send``, ``consume``, ``sync-persons``, ``sync-cohorts``, ``serve``'s own
syncs) wait once half the bound is queued (:attr:`OutboxBound.wait_at`): they read no further ahead of delivery
than that, so delivery keeps pace with their reading, and the other half stays for ``serve``'s clients, which
cannot wait (a backfill beside a live service never makes it refuse its traffic). At the bound itself ``serve``
answers ``503`` with ``Retry-After`` before reading a request (what it acknowledged is stored: a request is refused
whole or stored whole). The outbox then holds at most ``OUTBOX_MAX_QUEUED`` operations of person work, plus one
batch per source, and ``ANONYMOUS_BACKLOG_MAX`` anonymous events.

**How sources wait** (:meth:`OutboxBound.wait_for_room`): before their next batch; ``send`` and ``sync-persons``
between chunks and pages, ``sync-cohorts`` between pages, ``consume`` with its partitions paused
(:mod:`.sources.kafka`: it keeps polling, so it stays in its group, and commits only what it stored). The wait is
woken by each delivery of this process (:meth:`~.outbox.Outbox.wait_settled`), and re-counts at least every
second, as other processes may deliver (PostgreSQL).

**Counting** costs a count of the outbox (milliseconds at the bound): between counts, the operations this process
wrote since are added to the last count (an upper bound, as deliveries only take out), and a count is made once
that estimate reaches the level asked about, or after :data:`RECOUNT_NEAR_S` (:data:`RECOUNT_FAR_S` while the
estimate is under a quarter of the bound): what other processes enqueue shows up then.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .outbox import Outbox

__all__ = ["RETRY_AFTER_S", "OutboxBound", "SourceRoom", "Waited"]

log = logging.getLogger(__name__)

#: ``Retry-After`` of ``serve``'s 503 at the bound, in seconds
RETRY_AFTER_S = 10
#: a count at least this often once the estimate is past half the bound
RECOUNT_NEAR_S = 1.0
#: and at least this often below it
RECOUNT_FAR_S = 10.0


@dataclass(slots=True)
class Waited:
    """How one :meth:`OutboxBound.wait_for_room` ended."""

    #: there is room now (else the wait was stopped or ran out of time)
    room: bool
    #: the outbox was at its bound: the source waited
    waited: bool = False
    seconds: float = 0.0


@dataclass(slots=True)
class _Waits:
    """One source's waits in this process."""

    times: int = 0
    seconds: float = 0.0
    #: monotonic start of the wait under way (``None``: not waiting)
    since: float | None = None


class OutboxBound:
    """``OUTBOX_MAX_QUEUED`` over one outbox, and how often and how long each source waited (see the module's docs).

    ``written``: operations this process wrote to the outbox so far (the ingestor's count; with rolled-back
    writes it over-counts, which only makes a count come sooner).
    """

    def __init__(
        self,
        outbox: Outbox,
        max_queued: int,
        written: Callable[[], int] = lambda: 0,
        *,
        recheck_s: float = RECOUNT_NEAR_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.outbox = outbox
        #: ``serve`` answers 503 at this many operations of person work
        self.max_queued = max_queued
        #: sources that can wait wait at this many (half the bound; at least 1)
        self.wait_at = max(1, max_queued // 2)
        self.written = written
        self.recheck_s = recheck_s
        self.clock = clock
        self._lock = threading.Lock()
        self._waits: dict[str, _Waits] = {}
        self._refused: dict[str, int] = {}
        #: the last count: (monotonic time, operations of person work, ``written`` then)
        self._counted: tuple[float, int, int] | None = None

    # -- the count --
    def queued(self, max_age_s: float = 0.0) -> int:
        """Operations of person work waiting (counted; a count up to ``max_age_s`` old will do)."""
        counted = self._counted
        if max_age_s > 0 and counted is not None and self.clock() - counted[0] < max_age_s:
            return counted[1]
        written = self.written()  # before the count: what is written meanwhile is added to the estimate
        count = self.outbox.person_work_depth()
        self._counted = (self.clock(), count, written)
        return count

    def _estimate(self) -> int | None:
        """The last count plus what this process wrote since, while that count is recent enough; else ``None``."""
        counted = self._counted
        if counted is None:
            return None
        at, count, written = counted
        estimate = count + max(0, self.written() - written)
        fresh_s = RECOUNT_FAR_S if estimate < self.max_queued // 4 else RECOUNT_NEAR_S
        return estimate if self.clock() - at < fresh_s else None

    def _reached(self, level: int, max_age_s: float) -> bool:
        estimate = self._estimate()
        if estimate is not None and estimate < level:
            return False
        return self.queued(max_age_s) >= level

    def full(self, max_age_s: float = 0.0) -> bool:
        """Whether the outbox is at its bound: ``serve`` refuses (``max_age_s``: a count up to that old will do)."""
        return self._reached(self.max_queued, max_age_s)

    def full_if_known(self, max_age_s: float) -> bool | None:
        """:meth:`full` when it needs no count (from the estimate, or a count up to ``max_age_s`` old); ``None``
        when it does (``serve`` answers on its event loop and counts in a worker thread)."""
        estimate = self._estimate()
        if estimate is not None and estimate < self.max_queued:
            return False
        counted = self._counted
        if counted is not None and self.clock() - counted[0] < max_age_s:
            return counted[1] >= self.max_queued
        return None

    def must_wait(self) -> bool:
        """Whether a source that can wait should wait now (at :attr:`wait_at`)."""
        return self._reached(self.wait_at, 0.0)

    # -- waiting --
    def wait_for_room(
        self,
        source: str,
        *,
        timeout: float | None = None,
        stop: Callable[[], bool] | None = None,
        check: Callable[[], None] | None = None,
        tick: Callable[[], None] | None = None,
    ) -> Waited:
        """Return at once while less than :attr:`wait_at` is queued; else wait until it is (woken by each delivery
        of this process, re-counting at least every :attr:`recheck_s`), until ``stop()`` says so, or ``timeout``
        seconds passed. ``check`` is called before each wait (it raises to end the wait: delivery failed for good);
        ``tick`` after each (a Kafka consumer polls there). Each wait is counted for ``source``."""
        if not self.must_wait():
            return Waited(room=True)
        settled = self.outbox.settled_total()
        queued, level = self.queued(), self.wait_at
        if queued < level:
            return Waited(room=True)
        started = self.clock()
        deadline = None if timeout is None else started + timeout
        with self._lock:
            waits = self._waits.setdefault(source, _Waits())
            waits.times += 1
            waits.since = started
        log.info(
            "%s: the outbox holds %d operations of person work (half of OUTBOX_MAX_QUEUED=%d): waiting for delivery",
            source,
            queued,
            self.max_queued,
        )
        room = False
        try:
            while True:
                if stop is not None and stop():
                    break
                if check is not None:
                    check()
                wait_s = self.recheck_s
                if deadline is not None:
                    wait_s = min(wait_s, deadline - self.clock())
                    if wait_s <= 0:
                        break
                # until delivery here took out what is over the bound, or a recount (other processes deliver too)
                settled = self.outbox.wait_settled(settled + queued - level, wait_s)
                if tick is not None:
                    tick()
                queued = self.queued()
                if queued < level:
                    room = True
                    break
        finally:
            seconds = self.clock() - started
            with self._lock:
                waits.seconds += seconds
                waits.since = None
        log.info("%s: %s after %.1fs", source, "room in the outbox: going on" if room else "stopped waiting", seconds)
        return Waited(room=room, waited=True, seconds=seconds)

    def refused(self, source: str) -> None:
        """Count a request ``serve`` answered 503 at the bound."""
        with self._lock:
            self._refused[source] = self._refused.get(source, 0) + 1

    # -- what it shows --
    def status(self, queued: int | None = None) -> dict[str, Any]:
        """The ``outbox_bound`` section of the status report: the bound and where sources wait, what it counts now
        (``queued``: given by the caller's snapshot, else counted), each source's waits (times, seconds, the one
        under way counted so far) and ``serve``'s refusals."""
        if queued is None:
            queued = self.queued(max_age_s=1.0)
        now = self.clock()
        with self._lock:
            waits = {name: w.times for name, w in self._waits.items()}
            seconds = {
                name: round(w.seconds + (now - w.since if w.since is not None else 0.0), 3)
                for name, w in self._waits.items()
            }
            waiting = sorted(name for name, w in self._waits.items() if w.since is not None)
            refused = dict(self._refused)
        return {
            "max_queued": self.max_queued,
            "wait_at": self.wait_at,
            "queued": queued,
            "full": queued >= self.max_queued,
            "waits": waits,
            "waited_s": seconds,
            "waiting": waiting,
            "refused": refused,
        }


class SourceRoom:
    """Room in the outbox for one source's next batch (:class:`~.sources.base.Room`): the bound's wait, with the
    source's own way to stop (``stop``), to fail (``check``) and a budget of waiting (``timeout_s``: ``send
    --timeout``, shared with the wait for delivery at the end), and the source's figures."""

    def __init__(
        self,
        bound: OutboxBound,
        source: str,
        *,
        stop: Callable[[], bool] | None = None,
        check: Callable[[], None] | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self.bound = bound
        self.source = source
        self.stop = stop
        self.check = check
        self.timeout_s = timeout_s
        #: called about every second while waiting, when the wait is given no ``tick`` of its own (progress bars)
        self.on_wait: Callable[[], None] | None = None
        #: times this source waited, seconds it waited, whether it gave up (its waiting budget ran out)
        self.waits = 0
        self.waited_s = 0.0
        self.timed_out = False

    def full(self) -> bool:
        """Whether this source should wait now (half the bound is queued)."""
        return self.bound.must_wait()

    def left_s(self) -> float | None:
        """What is left of the waiting budget (``None``: no limit)."""
        return None if self.timeout_s is None else max(0.0, self.timeout_s - self.waited_s)

    def wait(self, tick: Callable[[], None] | None = None, stop: Callable[[], bool] | None = None) -> bool:
        """Wait for room (:meth:`OutboxBound.wait_for_room`); False when stopped (``stop()``, or this room's own
        ``stop``) or out of time."""

        def stopped() -> bool:
            return (self.stop is not None and self.stop()) or (stop is not None and stop())

        waited = self.bound.wait_for_room(
            self.source, timeout=self.left_s(), stop=stopped, check=self.check, tick=tick or self.on_wait
        )
        if waited.waited:
            self.waits += 1
            self.waited_s += waited.seconds
        if not waited.room and not stopped():
            self.timed_out = True
        return waited.room

    def figures(self) -> dict[str, Any]:
        """A job summary's ``outbox_waits``: times, seconds, and whether waiting ran out of time."""
        return {"times": self.waits, "seconds": round(self.waited_s, 3), "timed_out": self.timed_out}
