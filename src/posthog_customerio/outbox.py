"""Durable queue of Customer.io operations with a dead-letter table (on either storage backend).

Operations are written before any send and deleted only after Customer.io accepted
them; each row keeps the operation's neutral text and its ``kind`` (the outbox never
looks inside a payload). Workers *claim* operations; a person whose operation is in flight has none of
its later operations handed out, so each person's operations reach Customer.io in
the order they were enqueued. The outbox's :class:`AnonymousHold` (``ANONYMOUS_HOLD_S``) keeps
an anonymous visitor's recent events unclaimable, so that an identify inside the window adopts
them as batched person events; a held row blocks only its own keys, and once the input is
finished (:meth:`Outbox.input_finished`) nothing is held. Permanent failures move to
``dead_letters`` with the response that rejected them. Which rows count as taken is the
backend's claims strategy (:meth:`~.storage.Storage.claims`); the SQL is the backend's too.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .operations import Claimed, Kind, Lane, Operation, encode_payload
from .ordering import EventTimeGate, event_time_order
from .storage import (
    CandidateRow,
    DeadLetterRow,
    DeliveryRow,
    NewDeadLetter,
    NewOperation,
    PayloadRow,
    Storage,
    Transaction,
)

__all__ = ["DELIVERIES_KEPT", "AnonymousHold", "DeadLetter", "LeaseHeartbeat", "LeaseLost", "Outbox", "Queued"]

log = logging.getLogger(__name__)
#: an email address in a reason Customer.io gave (it may quote one): never logged
_EMAIL = re.compile(r"[^\s@\"'<>]+@[^\s@\"'<>]+")

#: stop a claim's scan after this many rows in a row that could not be taken, once it holds something
_FRUITLESS_ROWS = 256
#: a claim holding something stops when less than this is left of its byte budget
_NEARLY_FULL = 4_096
#: a claim stops after this many rows in a row that the event-time gate holds
_GATED_RUN = 2_000
#: settled operations remembered per person (``posthog-customerio person``): the newest this many
DELIVERIES_KEPT = 20


def _select(
    rows: Iterable[CandidateRow],
    taken: Callable[[CandidateRow], bool],
    max_items: int,
    max_bytes: int,
    max_op_bytes: int,
) -> tuple[list[CandidateRow], list[CandidateRow]]:
    """Pick deliverable candidate rows in queue order: (chosen, oversized).

    A row already taken (in flight here or leased elsewhere) blocks its keys; a
    person blocked once gets nothing later in this pass; an operation waiting on
    other keys is never picked together with an earlier operation of those keys.
    Once something is chosen, the scan stops when the budget is nearly used or
    after a run of rows that could not be taken.
    """
    chosen: list[CandidateRow] = []
    oversized: list[CandidateRow] = []
    blocked: set[str] = set()
    chosen_keys: set[str] = set()
    budget = max_bytes
    fruitless = 0
    for row in rows:
        size, keys = row.size, row.keys
        if (
            taken(row)
            or any(key in blocked for key in keys)
            or (row.after_keys and any(key in chosen_keys for key in keys))
        ):
            blocked.update(keys)
            fruitless += 1
        elif size > max_op_bytes:
            oversized.append(row)
        elif size + 1 > budget:
            blocked.update(keys)
            fruitless += 1
        else:
            budget -= size + 1
            chosen.append(row)
            chosen_keys.update(keys)
            fruitless = 0
        nearly_full = budget < min(_NEARLY_FULL, max_bytes // 8)
        if len(chosen) >= max_items or (chosen and (nearly_full or fruitless >= _FRUITLESS_ROWS)):
            break
    return chosen, oversized


def _until_gated_run(rows: Iterable[CandidateRow], gated: Callable[[CandidateRow], bool]) -> Iterator[CandidateRow]:
    """``rows`` up to a run of :data:`_GATED_RUN` the event-time gate holds: a claim does not read a backlog the
    gate holds to its end each time (the rows behind go once those before them are released, which storing
    the slowest partitions' events does, not delivery)."""
    run = 0
    for row in rows:
        if row.order_ts is not None and gated(row):
            run += 1
            if run > _GATED_RUN:
                return
        else:
            run = 0
        yield row


def _hydrate(rows: list[CandidateRow], payloads: dict[int, PayloadRow]) -> list[Claimed]:
    """Claimed operations for candidate rows, with their payloads and kinds (in queue order)."""
    return [
        Claimed(
            row.seq,
            row.person_key,
            payloads[row.seq].payload,
            row.size,
            row.attempts,
            row.enqueued_at,
            row.after_keys,
            payloads[row.seq].kind,
        )
        for row in rows
        if row.seq in payloads
    ]


def _new_operation(operation: Operation, enqueued_at: float, order_ts: float | None = None) -> NewOperation:
    """The ``outbox`` row of an operation (its text encoded now unless the mapping had it)."""
    text = operation.text or encode_payload(operation.payload)
    after = json.dumps(list(operation.after)) if operation.after else None
    return NewOperation(operation.person_key, text, len(text.encode()), enqueued_at, after, operation.kind, order_ts)


class AnonymousHold:
    """The anonymous hold (``ANONYMOUS_HOLD_S``): an anonymous visitor's operations wait ``hold_s``
    after they were enqueued before they may be claimed, so that an identify arriving meanwhile can
    adopt them (they then go out as the person's events, in one batch) instead of being sent as
    anonymous events.

    A held row is not handed out and blocks only its own keys (:meth:`Outbox.claim`). Once the
    input is finished (:meth:`finish`, through :meth:`Outbox.input_finished`) no identify can come
    to adopt anything: nothing is held any more. ``hold_s`` 0 holds nothing.
    """

    def __init__(self, hold_s: float = 0.0) -> None:
        #: seconds an anonymous operation waits after it was enqueued
        self.hold_s = hold_s
        self._finished = False

    @property
    def active(self) -> bool:
        """Whether anything can be held: a hold is configured and the input is not finished."""
        return self.hold_s > 0 and not self._finished

    def finish(self) -> None:
        """Nothing more will be ingested: hold nothing from now on."""
        self._finished = True

    def held_after(self, now: float) -> float | None:
        """At ``now``, anonymous operations enqueued after this time are held (``None``: none is)."""
        return now - self.hold_s if self.active else None

    def rule(self, now: float) -> Callable[[CandidateRow], bool]:
        """Whether a candidate row is held at ``now`` (one test for every row of a claim)."""
        cutoff = self.held_after(now)
        if cutoff is None:
            return lambda row: False
        return lambda row: row.kind == "anonymous" and row.enqueued_at > cutoff

    def is_held(self, row: CandidateRow, now: float) -> bool:
        """Whether ``row`` is an anonymous operation still held at ``now``."""
        return self.rule(now)(row)


class LeaseLost(RuntimeError):
    """A claim's lease ran out and another replica may hold its operations now: do not send them."""


def _delivery_rows(items: Iterable[Claimed], outcome: str, now: float) -> list[DeliveryRow]:
    """``deliveries`` rows for settled operations: what was sent (action, event name), never attributes."""
    rows = []
    for item in items:
        try:
            payload = json.loads(item.payload)
        except ValueError:
            payload = {}
        action, name = payload.get("action"), payload.get("name")
        rows.append(DeliveryRow(item.person_key, item.seq, item.kind, _text(action), _text(name), outcome, now))
    return rows


def _text(value: Any) -> str | None:
    return None if value is None else str(value)[:200]


def _log_dead_letter(item: Claimed, reason: str, status: int | None, letter_id: int | None) -> None:
    """One WARNING per dead letter: kind, reason, status and ids; no attribute values."""
    log.warning(
        "dead-lettered #%s (seq %d, kind %s, person %s, HTTP %s, %d attempts): %s",
        letter_id,
        item.seq,
        item.kind,
        item.person_key,
        status if status is not None else "-",
        item.attempts + 1,
        _EMAIL.sub("<email>", reason)[:300],
    )


class DeadLetter(DeadLetterRow):
    """An operation Customer.io rejected for good, with why (a ``dead_letters`` row)."""

    __slots__ = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (for ``dead-letters --json`` and the HTTP API)."""
        return dict(self._asdict())


@dataclass(frozen=True, slots=True)
class Queued:
    """A queued operation read back inside a transaction (to be replaced by others)."""

    seq: int
    operation: Operation
    enqueued_at: float
    order_ts: float | None = None


class Outbox:
    """The outbox tables of a :class:`~.storage.Storage`, plus the in-process claim book."""

    def __init__(self, db: Storage, lease_s: float = 10.0, anonymous_hold_s: float = 0.0) -> None:
        self.db = db
        self.lease_s = lease_s
        #: anonymous operations younger than ``anonymous_hold_s`` are not claimable until :meth:`input_finished`
        self.anonymous_hold = AnonymousHold(anonymous_hold_s)
        #: the backend's way of keeping claims apart
        self.claims = db.claims(lease_s)
        #: event-time order of what ``consume`` stored (:mod:`.ordering`); ``None``: arrival order only
        self.gate: EventTimeGate | None = None
        self._claim_lock = threading.Lock()
        self._in_flight: set[int] = set()
        #: when each operation in flight was last leased (claimed or renewed), monotonic seconds
        self._leased_at: dict[int, float] = {}
        #: seqs of claims dropped from memory only (:meth:`forget_claims`), whose leases are to be given back
        self._forgotten: set[int] = set()
        self._busy_persons: dict[str, int] = {}
        self._depth_cache: tuple[float, int] | None = None
        #: operations this process took out of the queue (delivered or dead-lettered), with its condition:
        #: a source waiting for room (:mod:`.bound`) is woken by each settlement rather than polling
        self._settled = threading.Condition()
        self._settled_total = 0
        #: operations this process moved to the dead-letter table
        self.dead_lettered_total = 0

    # -- writing ---------------------------------------------------------------
    @staticmethod
    def enqueue(
        conn: Transaction,
        operations: Sequence[Operation],
        now: float | None = None,
        order_ts: Sequence[float | None] | None = None,
    ) -> int:
        """Append operations inside the caller's transaction (with their event times, for event-time order:
        :meth:`reorder`); returns how many."""
        stamp = now if now is not None else time.time()
        times = order_ts if order_ts is not None else [None] * len(operations)
        rows = [_new_operation(operation, stamp, ts) for operation, ts in zip(operations, times, strict=True)]
        conn.insert_operations(rows)
        return len(rows)

    def reorder(self, conn: Transaction, person_key: str) -> int:
        """Inside the caller's transaction (which holds the person's lock): put ``person_key``'s movable
        operations (:meth:`~.storage.Transaction.lane_rows`, less those in flight here) in event-time order,
        each taking the place of the one it should follow; returns how many changed places. A claim reads a
        row's operation once it holds the row (:meth:`~.storage.Claims.claim`), so what it sends is always the
        person's earliest."""
        rows = [row for row in conn.lane_rows(person_key, time.time()) if row.seq not in self._in_flight]
        moves = event_time_order(rows)
        if moves:
            conn.rewrite_lane(moves)
        return len(moves)

    def queued(self, conn: Transaction, person_key: str, kind: Kind) -> list[Queued]:
        """Inside the caller's transaction: ``person_key``'s queued operations of ``kind``
        that are neither in flight here nor leased by a replica, in queue order."""
        rows = conn.queued_rows(person_key, kind, time.time())
        found = []
        for row in rows:
            if row.seq in self._in_flight:
                continue
            after = tuple(json.loads(row.after_keys)) if row.after_keys else ()
            operation = Operation(person_key, json.loads(row.payload), after, row.payload, kind)
            found.append(Queued(row.seq, operation, row.enqueued_at, row.order_ts))
        return found

    def replace(self, conn: Transaction, old: Sequence[Queued], new: Sequence[Operation]) -> int:
        """Inside the caller's transaction: delete ``old`` and queue ``new`` (pairwise) at the back, each
        keeping the enqueue time of the row it replaces; returns how many were replaced.

        An old row a worker took meanwhile (in flight here, or leased) stays as it is and its new operation
        is dropped: it is sent as it was, never both sent and replaced. With SQLite a claim holds its rows
        under the database lock this transaction holds; with PostgreSQL the rows read by :meth:`queued` are
        locked (a claim cannot lease them) and the delete checks the lease again.
        """
        if len(old) != len(new):
            raise ValueError("replace: one new operation per old one")
        pairs = [
            (queued, operation) for queued, operation in zip(old, new, strict=True) if queued.seq not in self._in_flight
        ]
        if not pairs:
            return 0
        deleted = conn.delete_unleased([queued.seq for queued, _ in pairs], time.time())
        rows = [
            _new_operation(operation, queued.enqueued_at, queued.order_ts)
            for queued, operation in pairs
            if queued.seq in deleted
        ]
        conn.insert_operations(rows)
        return len(rows)

    def put(self, operations: Iterable[Operation]) -> int:
        """Enqueue operations in their own transaction."""
        with self.db.transaction() as conn:
            return self.enqueue(conn, list(operations))

    # -- claiming --------------------------------------------------------------
    def claim(self, max_items: int, max_bytes: int, max_op_bytes: int, lane: Lane | None = None) -> list[Claimed]:
        """Hand out the oldest deliverable operations of the queue (or of one ``lane``), in order, within the
        limits.

        Operations bigger than ``max_op_bytes`` are dead-lettered on the way (they
        can never be accepted). A person with an operation in flight (here, or
        leased by another replica), or whose earlier operation did not fit this
        claim, gets nothing more this time. Anonymous operations still held
        (:attr:`anonymous_hold`) are not handed out and block only their own keys;
        in the anonymous lane (in enqueue order) the first one held ends the scan:
        those after it were enqueued later.
        """
        with self._claim_lock:
            if self._forgotten:  # leases of claims dropped while the database could not be written
                with contextlib.suppress(Exception):  # still not writable: tried again at the next claim
                    self.claims.give_back(sorted(self._forgotten))
                    self._forgotten.clear()
            leased_at = time.monotonic()
            anonymous_held = self.anonymous_hold.rule(time.time())
            gated = self.gate.rule() if self.gate is not None else None

            def held(row: CandidateRow) -> bool:  # an event time is held by the gate, by enqueue time otherwise
                return gated(row) if gated is not None and row.order_ts is not None else anonymous_held(row)

            def ends_scan(row: CandidateRow) -> bool:  # the anonymous lane is in enqueue order, not event time
                return anonymous_held(row) and (gated is None or row.order_ts is None)

            busy = self._busy_persons

            def taken_here(row: CandidateRow) -> bool:  # a key in flight here (the other lane's work too)
                return any(key in busy for key in row.keys)

            def pick(
                rows: Iterable[CandidateRow], taken: Callable[[CandidateRow], bool]
            ) -> tuple[list[CandidateRow], list[CandidateRow]]:
                if lane == "anonymous":
                    rows = itertools.takewhile(lambda row: not ends_scan(row), rows)
                if gated is not None:
                    rows = _until_gated_run(rows, gated)
                return _select(
                    rows, lambda row: taken(row) or taken_here(row) or held(row), max_items, max_bytes, max_op_bytes
                )

            def hold(rows: Sequence[CandidateRow]) -> None:  # in flight from now on (adoption leaves them)
                for row in rows:
                    self._in_flight.add(row.seq)
                    self._leased_at[row.seq] = leased_at
                    for key in row.keys:
                        self._busy_persons[key] = self._busy_persons.get(key, 0) + 1

            chosen, too_big, payloads = self.claims.claim(pick, self._in_flight, hold, lane)
            claimed, oversized = _hydrate(chosen, payloads), _hydrate(too_big, payloads)
        if oversized:
            self.dead_letter(
                [
                    (item, f"operation is {item.size} bytes, over Customer.io's {max_op_bytes}-byte limit", None, None)
                    for item in oversized
                ],
                claimed=False,
            )
        return claimed

    def _unclaim(self, items: Iterable[Claimed]) -> None:
        with self._claim_lock:
            for item in items:
                if item.seq in self._in_flight:
                    self._in_flight.discard(item.seq)
                    self._leased_at.pop(item.seq, None)
                    for key in item.keys:
                        left = self._busy_persons.get(key, 0) - 1
                        if left > 0:
                            self._busy_persons[key] = left
                        else:
                            self._busy_persons.pop(key, None)

    # -- settling --------------------------------------------------------------
    def ack(self, items: Sequence[Claimed]) -> None:
        """Customer.io accepted these: delete them."""
        if items:
            rows = _delivery_rows(items, "delivered", time.time())

            def settle(conn: Transaction) -> None:
                conn.delete_operations(item.seq for item in items)
                conn.record_deliveries(rows, DELIVERIES_KEPT)

            self.db.transact(settle)
        self._unclaim(items)
        self._note_settled(len(items))

    def forget_claims(self, items: Sequence[Claimed]) -> None:
        """Drop claims from memory only (when the database cannot be written): the rows stay queued, and with
        PostgreSQL their leases expire; their leases are given back before the next claim (with SQLite a lease
        never expires, and a claim's scan leaves leased rows out)."""
        self._unclaim(items)
        with self._claim_lock:
            self._forgotten.update(item.seq for item in items)

    def renew(self, items: Sequence[Claimed]) -> None:
        """Before a request: extend the claim on ``items`` (PostgreSQL: their leases), unless every one
        was leased less than the backend's ``renewal_fresh_s`` ago (then nothing is written).

        When any of them is no longer held, none is sent: the claim on all of them is dropped (those
        still held return to the queue) and :class:`LeaseLost` is raised.
        """
        now = time.monotonic()
        fresh_s = self.claims.renewal_fresh_s
        if fresh_s == math.inf:  # claims that never expire (SQLite): nothing to renew
            return
        with self._claim_lock:
            if all(now - self._leased_at.get(item.seq, -math.inf) < fresh_s for item in items):
                return
        lost = self.claims.renew([item.seq for item in items])
        if lost:
            self.claims.give_back([item.seq for item in items if item.seq not in lost])
            self._unclaim(items)
            raise LeaseLost(f"the lease of {len(lost)} claimed operations ran out: another replica may send them")
        with self._claim_lock:
            for item in items:
                if item.seq in self._in_flight:
                    self._leased_at[item.seq] = now

    def renew_held(self) -> int:
        """The heartbeat of a live replica (PostgreSQL): extend the lease of every operation this process holds
        now, however long its worker has been waiting (a request slot, a ``Retry-After`` pause); returns how many
        were no longer held. Those are left to the worker: its renewal before the next request finds them lost
        (:class:`LeaseLost`) and drops the claim. Nothing to do where claims never expire."""
        if self.claims.heartbeat_s is None:
            return 0
        now = time.monotonic()
        with self._claim_lock:
            seqs = sorted(self._in_flight)
        if not seqs:
            return 0
        lost = self.claims.renew(seqs)  # one settled meanwhile is "lost" too: no longer in flight, not counted
        with self._claim_lock:
            for seq in seqs:
                if seq not in lost and seq in self._in_flight:
                    self._leased_at[seq] = now
            return len(lost & self._in_flight)

    def unclaim(self, items: Sequence[Claimed]) -> None:
        """Give claimed operations back untouched (not attempted)."""
        self.claims.give_back([item.seq for item in items])
        self._unclaim(items)

    def release(self, items: Sequence[Claimed], error: str) -> None:
        """Not delivered (transient failure): keep them queued, count the attempt."""
        if items:
            self.db.transact(
                lambda conn: conn.release_operations(error[:500], [item.seq for item in items], self.claims.owner)
            )
        self._unclaim(items)

    def dead_letter(
        self,
        failures: Sequence[tuple[Claimed, str, int | None, str | None]],
        claimed: bool = True,
    ) -> None:
        """Move operations to the dead-letter table: ``(item, reason, status, response)``."""
        if not failures:
            return
        now = time.time()

        def settle(conn: Transaction) -> dict[int, int]:
            conn.insert_dead_letters(
                [
                    NewDeadLetter(
                        item.seq,
                        item.person_key,
                        item.payload,
                        reason,
                        status,
                        response,
                        item.attempts + 1,
                        item.enqueued_at,
                        now,
                        item.after_keys,
                        item.kind,
                    )
                    for item, reason, status, response in failures
                ],
            )
            conn.delete_operations(item.seq for item, *_ in failures)
            ids = conn.dead_letter_ids([item.seq for item, *_ in failures])
            conn.record_deliveries(_delivery_rows((f[0] for f in failures), "dead-lettered", now), DELIVERIES_KEPT)
            return ids

        ids = self.db.transact(settle)
        self.dead_lettered_total += len(failures)
        for item, reason, status, _ in failures:
            _log_dead_letter(item, reason, status, ids.get(item.seq))
        if claimed:
            self._unclaim([item for item, *_ in failures])
        self._note_settled(len(failures))

    # -- reading ---------------------------------------------------------------
    def depth(self, max_age_s: float = 0.0) -> int:
        """Operations waiting (including those in flight).

        ``max_age_s`` > 0 allows a count up to that old (counting a big table costs
        milliseconds; the HTTP receiver checks it on every request).
        """
        now = time.monotonic()
        cached = self._depth_cache
        if max_age_s > 0 and cached is not None and now - cached[0] < max_age_s:
            return cached[1]
        with self.db.committed_reading() as conn:
            count = conn.outbox_depth()
        self._depth_cache = (now, count)
        return count

    def person_work_depth(self) -> int:
        """Operations waiting that are not anonymous events, in flight included (what ``OUTBOX_MAX_QUEUED``
        bounds: :mod:`.bound`)."""
        with self.db.committed_reading() as conn:
            return conn.person_work_depth()

    def unleased_person_work(self, up_to: int) -> int:
        """Person work waiting that nobody holds, counted up to ``up_to`` (a read, no lease written)."""
        with self.db.committed_reading() as conn:
            return conn.unleased_person_work(up_to)

    def settled_total(self) -> int:
        """Operations this process took out of the queue so far (delivered or dead-lettered)."""
        with self._settled:
            return self._settled_total

    def wait_settled(self, beyond: int, timeout: float) -> int:
        """Wait until this process settled more than ``beyond`` operations in all (:meth:`settled_total`), at most
        ``timeout`` seconds; the total then."""
        with self._settled:
            self._settled.wait_for(lambda: self._settled_total > beyond, timeout)
            return self._settled_total

    def _note_settled(self, count: int) -> None:
        if count:
            with self._settled:
                self._settled_total += count
                self._settled.notify_all()

    def input_finished(self) -> None:
        """Nothing more will be ingested (``send`` read its input, a bounded ``consume`` ended): no identify
        can come to adopt what the anonymous hold keeps, so it is released now rather than at its end."""
        self.anonymous_hold.finish()
        if self.gate is not None:
            self.gate.finish()

    def is_empty(self) -> bool:
        """Whether nothing waits at all, held anonymous operations included (cheap: no count)."""
        with self.db.committed_reading() as conn:
            return conn.outbox_empty()

    def is_drained(self) -> bool:
        """Whether nothing waits but anonymous operations the hold still keeps for an identify that may
        come (after :meth:`input_finished`: whether nothing waits). Those stay queued, durable, for the
        next start when delivery stops now."""
        gated = self.gate.bounds() if self.gate is not None else None
        with self.db.committed_reading() as conn:
            return conn.outbox_empty(self.anonymous_hold.held_after(time.time()), gated)

    def oldest_age(self, now: float | None = None, claimable: bool = False) -> float:
        """Seconds since the oldest waiting operation was enqueued (0 if empty); with ``claimable``, of the
        oldest one the anonymous hold does not keep (work delivery could take now)."""
        now = now or time.time()
        gated = self.gate.bounds() if claimable and self.gate is not None else None
        with self.db.committed_reading() as conn:
            oldest = conn.oldest_enqueued_at(self.anonymous_hold.held_after(now) if claimable else None, gated)
        return 0.0 if oldest is None else max(0.0, now - oldest)

    def in_flight(self) -> int:
        """Operations currently claimed by workers."""
        with self._claim_lock:
            return len(self._in_flight)

    def in_flight_seqs(self) -> frozenset[int]:
        """The seqs of the operations this process's workers hold now."""
        with self._claim_lock:
            return frozenset(self._in_flight)

    @contextlib.contextmanager
    def claims_held(self) -> Iterator[frozenset[int]]:
        """While open, this process hands out no claim; yields the seqs its workers hold now. A change of the
        queue made inside (the anonymous backlog's expiry, :mod:`.backlog`) cannot race a claim being made:
        with SQLite a claim has no lease, only this in-process book (lock order: this, then the database)."""
        with self._claim_lock:
            yield frozenset(self._in_flight)

    def dead_letter_count(self) -> int:
        """How many operations are dead-lettered."""
        with self.db.reading() as conn:
            return conn.dead_letter_count()

    def dead_letters(self, limit: int | None = None) -> list[DeadLetter]:
        """Dead-lettered operations, oldest first."""
        with self.db.reading() as conn:
            rows = conn.dead_letter_rows(limit)
        return [DeadLetter(*row) for row in rows]

    def retry_dead_letters(self, ids: Iterable[int] | None = None) -> int:
        """Re-queue dead-lettered operations (all, or the given ids); returns how many.

        They go to the back of the queue, behind operations enqueued since.
        """
        return len(self.requeue_dead_letters(ids))

    def requeue_dead_letters(self, ids: Iterable[int] | None = None) -> list[int]:
        """Like :meth:`retry_dead_letters`, returning the ids that were re-queued
        (an id that is not a dead letter is left out)."""
        wanted = None if ids is None else list(ids)
        with self.db.transaction() as conn:
            rows = conn.requeue_rows(wanted)
            now = time.time()
            conn.insert_operations(
                NewOperation(row.person_key, row.payload, len(row.payload.encode()), now, row.after_keys, row.kind)
                for row in rows
            )
            conn.delete_dead_letters(row.id for row in rows)
        return [row.id for row in rows]


class LeaseHeartbeat:
    """The heartbeat of a live replica (PostgreSQL): a thread renewing, every ``interval_s`` (by default the
    claims' :attr:`~.storage.Claims.heartbeat_s`, a third of ``LEASE_S``), the lease of every operation the
    process holds (:meth:`Outbox.renew_held`).

    A claim then lasts as long as its replica lives, whatever its worker waits for (a request slot, a
    ``Retry-After`` pause, an answer within its deadline), while a replica that dies stops renewing and its
    leases run out at most ``LEASE_S`` after the last beat. A failed renewal (the database unreachable a
    moment) is tried again at the next beat; the workers' renewal before each request still decides
    whether a claim is sent. Nothing runs where claims never expire (SQLite).
    """

    def __init__(self, outbox: Outbox, interval_s: float | None = None) -> None:
        self.outbox = outbox
        self.interval_s = interval_s if interval_s is not None else outbox.claims.heartbeat_s
        #: renewals done (successful or not), for tests and diagnostics
        self.beats = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start beating (idempotent; nothing where claims never expire)."""
        if self.interval_s is None or (self._thread is not None and self._thread.is_alive()):
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(self.interval_s,), name="lease-heartbeat", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop beating: from now on this process's leases run out ``LEASE_S`` after the last beat."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                lost = self.outbox.renew_held()
            except Exception as exc:
                log.warning("lease heartbeat: %s: %s", type(exc).__name__, exc)
                lost = 0
            self.beats += 1
            if lost:  # settled meanwhile, or taken over: the worker's renewal before its next request says which
                log.debug("lease heartbeat: %d claimed operations no longer held", lost)
