"""The anonymous backlog's bounds: ``ANONYMOUS_MAX_AGE_S`` and ``ANONYMOUS_BACKLOG_MAX``.

Anonymous events (a visitor not identified yet) are sent one request each in Track mode and wait
behind person work, so under load they can pile up. :class:`AnonymousBacklog` drops, oldest first,
those queued longer than Customer.io would keep them (age) and those beyond the newest
``ANONYMOUS_BACKLOG_MAX`` (count); never a person's or an object's operation, never one being sent.
Each dropped event is recorded in its person's recent history (outcome ``expired``, shown by
``posthog-customerio person``).

The totals expired, by reason, live in the database (``status_snapshot`` rows
``anonymous_expired:age`` and ``anonymous_expired:count``), so they survive restarts and are shared by
replicas. They are correct under concurrency because each batch's delete, its history rows and the
increment of the totals commit in one transaction, and the totals grow by the rows that transaction's
``DELETE ... RETURNING`` really removed: a row another replica deleted first is neither returned nor
counted, and the increment is an atomic ``INSERT ... ON CONFLICT DO UPDATE SET value = value + n`` (a
concurrent increment waits for the row lock and adds to the committed value; none is lost). With
PostgreSQL, one replica expires at a time (an advisory lock taken without waiting by each batch's
transaction: a replica that finds it taken leaves the pass to the one holding it), so two replicas never
drop the same excess twice.

:class:`BacklogKeeper` runs a pass at start and about every second, in every process that delivers
(:meth:`~.runtime.Runtime.deliverer`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Set
from contextlib import AbstractContextManager
from typing import Any

from .disk import disk_full_message, is_disk_full
from .storage import EXPIRED_KEY, DeliveryRow, ExpiredRow, Storage, Transaction

__all__ = ["REASONS", "AnonymousBacklog", "BacklogKeeper"]

log = logging.getLogger(__name__)

#: why an anonymous event was dropped: too old, or beyond the newest ``ANONYMOUS_BACKLOG_MAX``
REASONS = ("age", "count")
#: settled operations remembered per person (as the outbox's ``DELIVERIES_KEPT``)
_DELIVERIES_KEPT = 20


def _history(rows: Iterable[ExpiredRow], now: float) -> list[DeliveryRow]:
    """``deliveries`` rows (outcome ``expired``) for dropped events: action and event name, never attributes."""
    found = []
    for row in rows:
        try:
            payload: Any = json.loads(row.payload)
        except ValueError:
            payload = {}
        if not isinstance(payload, dict):
            payload = {}
        action, name = payload.get("action"), payload.get("name")
        found.append(
            DeliveryRow(
                row.person_key,
                row.seq,
                row.kind,
                None if action is None else str(action)[:200],
                None if name is None else str(name)[:200],
                "expired",
                now,
            )
        )
    return found


class AnonymousBacklog:
    """Enforces both bounds of the anonymous backlog in one :meth:`enforce` pass; counts what it dropped.

    ``exclude`` opens a block in which this process makes no claim and gives the seqs its workers hold
    (never dropped, even past their lease): :meth:`~.outbox.Outbox.claims_held`; each batch runs inside
    it, so a row cannot be claimed between that read and its delete (SQLite claims have no lease; with
    PostgreSQL a claim made elsewhere leases the row, and a leased row is never deleted). ``clock`` is
    epoch seconds. Deletes go ``batch`` rows per transaction, so a big first pass never
    holds the database for long and each person's history is pruned a batch at a time.
    """

    def __init__(
        self,
        db: Storage,
        max_age_s: float,
        max_rows: int,
        *,
        exclude: Callable[[], AbstractContextManager[Set[int]]] = lambda: contextlib.nullcontext(frozenset()),
        clock: Callable[[], float] = time.time,
        batch: int = 2_000,
    ) -> None:
        self.db = db
        self.max_age_s = max_age_s
        self.max_rows = max_rows
        self.exclude = exclude
        self.clock = clock
        self.batch = batch
        #: events this process dropped, by reason
        self.expired: dict[str, int] = dict.fromkeys(REASONS, 0)
        self._lock = threading.Lock()

    def enforce(self) -> dict[str, int]:
        """One pass: drop, oldest first, the anonymous events older than ``max_age_s``, then all but the
        newest ``max_rows``; returns how many this pass dropped, by reason (one WARNING when any)."""
        with self._lock:  # one pass at a time in this process
            dropped = dict.fromkeys(REASONS, 0)
            before = self.clock() - self.max_age_s
            while True:
                now = self.clock()
                # lock order as a claim's: the claim book, then the database (no deadlock)
                with self.exclude() as in_flight:
                    gone, rows = self.db.transact(
                        functools.partial(self._expire, before=before, now=now, in_flight=in_flight)
                    )
                for reason in REASONS:
                    dropped[reason] += len(gone.get(reason, []))
                if len(rows) < self.batch:
                    break
            for reason in REASONS:
                self.expired[reason] += dropped[reason]
        if any(dropped.values()):
            log.warning(
                "dropped %d queued anonymous events: %d older than ANONYMOUS_MAX_AGE_S=%.0f,"
                " %d beyond ANONYMOUS_BACKLOG_MAX=%d (oldest first)",
                sum(dropped.values()),
                dropped["age"],
                self.max_age_s,
                dropped["count"],
                self.max_rows,
            )
        return dropped

    def _expire(
        self, tx: Transaction, before: float, now: float, in_flight: Set[int]
    ) -> tuple[dict[str, list[ExpiredRow]], list[ExpiredRow]]:
        """One batch of :meth:`enforce` in transaction ``tx``: the rows dropped by reason, and all of them."""
        gone = tx.expire_anonymous(before, self.max_rows, now, in_flight, self.batch)
        rows = [row for reason in REASONS for row in gone.get(reason, [])]
        if rows:
            tx.record_deliveries(_history(rows, now), _DELIVERIES_KEPT)
            tx.add_counters(EXPIRED_KEY, {reason: len(gone.get(reason, [])) for reason in REASONS}, now)
        return gone, rows

    def totals(self) -> dict[str, int]:
        """Events dropped by every replica since the database was created, by reason (stored)."""
        with self.db.reading() as tx:
            stored = tx.counters(EXPIRED_KEY)
        return {reason: stored.get(reason, 0) for reason in REASONS}


class BacklogKeeper:
    """Runs :meth:`AnonymousBacklog.enforce` now and every ``interval_s`` in a daemon thread."""

    def __init__(self, backlog: AnonymousBacklog, interval_s: float = 1.0) -> None:
        self.backlog = backlog
        self.interval_s = interval_s
        self._disk_full = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """One pass now (before delivery starts: nothing it drops is sent), then one every ``interval_s``."""
        self._pass()
        self._thread = threading.Thread(target=self._run, name="anonymous-backlog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._pass()

    def _pass(self) -> None:
        try:
            self.backlog.enforce()
        except Exception as exc:  # a database hiccup must not stop the keeper; the next pass tries again
            if not is_disk_full(exc):
                log.exception("could not enforce the anonymous backlog bounds (will retry)")
            elif not self._disk_full:  # one line, once, not a traceback every second
                log.warning("could not enforce the anonymous backlog bounds: %s (will retry)", disk_full_message(exc))
            self._disk_full = is_disk_full(exc)
        else:
            self._disk_full = False

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (a pass under way finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
