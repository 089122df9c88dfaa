"""Durable queue of Customer.io operations (SQLite, WAL) with a dead-letter table.

Operations are written before any send and deleted only after Customer.io accepted
them; each row keeps the operation's neutral text and its ``kind`` (the outbox never
looks inside a payload). Workers *claim* operations; a person whose operation is in flight has none of
its later operations handed out, so each person's operations reach Customer.io in
the order they were enqueued. With ``anonymous_hold_s`` > 0, an anonymous visitor's
events younger than that are not claimable (``ANONYMOUS_HOLD_S``: an identify inside
the window adopts them as batched person events); a held row blocks only its own
keys. Permanent failures move to ``dead_letters`` with the response that rejected them.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import os
import socket
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .db import Database, PostgresDatabase
from .operations import Kind, Operation, encode_payload

__all__ = ["Claimed", "DeadLetter", "Outbox", "Queued"]

_INSERT_SQL = "INSERT INTO outbox (person_key, payload, size, enqueued_at, after_keys, kind) VALUES (?,?,?,?,?,?)"

# candidates are read without their payloads (the claim reads many rows; it sends few)
_CANDIDATES_SQL = (
    "SELECT seq, person_key, size, attempts, enqueued_at, after_keys, lease_owner, lease_until, kind"
    " FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?"
)
_CLAIM_LOCK = 7_274_135_002  # pg_advisory_xact_lock key: one claimer at a time across replicas
#: stop a claim's scan after this many rows in a row that could not be taken, once it holds something
_FRUITLESS_ROWS = 256
#: a claim holding something stops when less than this is left of its byte budget
_NEARLY_FULL = 4_096


def _keys(person_key: str, after_keys: str | None) -> tuple[str, ...]:
    return (person_key, *json.loads(after_keys)) if after_keys else (person_key,)


def _select(
    rows: Iterable[tuple[Any, ...]],
    taken: Callable[[tuple[Any, ...]], bool],
    max_items: int,
    max_bytes: int,
    max_op_bytes: int,
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Pick deliverable candidate rows in queue order: (chosen, oversized).

    A row already taken (in flight here or leased elsewhere) blocks its keys; a
    person blocked once gets nothing later in this pass; an operation waiting on
    other keys is never picked together with an earlier operation of those keys.
    Once something is chosen, the scan stops when the budget is nearly used or
    after a run of rows that could not be taken.
    """
    chosen: list[tuple[Any, ...]] = []
    oversized: list[tuple[Any, ...]] = []
    blocked: set[str] = set()
    chosen_keys: set[str] = set()
    budget = max_bytes
    fruitless = 0
    for row in rows:
        seq, person_key, size, _, _, after_keys = row[:6]
        keys = _keys(person_key, after_keys)
        if taken(row) or any(key in blocked for key in keys) or (
            after_keys and any(key in chosen_keys for key in keys)
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


@dataclass(frozen=True, slots=True)
class Claimed:
    """An operation handed to a worker; it stays in the table until acked."""

    seq: int
    person_key: str
    payload: str
    size: int
    attempts: int
    enqueued_at: float
    after_keys: str | None = None
    kind: Kind = "person"

    @property
    def keys(self) -> tuple[str, ...]:
        """All ordering keys: the person's, then those it must wait for."""
        return (self.person_key, *json.loads(self.after_keys)) if self.after_keys else (self.person_key,)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An operation Customer.io rejected for good, with why."""

    id: int
    seq: int
    person_key: str
    payload: str
    reason: str
    status: int | None
    response: str | None
    attempts: int
    enqueued_at: float
    failed_at: float
    kind: Kind = "person"

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (for ``dead-letters --json`` and the HTTP API)."""
        return {
            "id": self.id,
            "seq": self.seq,
            "person_key": self.person_key,
            "payload": self.payload,
            "reason": self.reason,
            "status": self.status,
            "response": self.response,
            "attempts": self.attempts,
            "enqueued_at": self.enqueued_at,
            "failed_at": self.failed_at,
            "kind": self.kind,
        }


@dataclass(frozen=True, slots=True)
class Queued:
    """A queued operation read back inside a transaction (to be replaced by others)."""

    seq: int
    operation: Operation
    enqueued_at: float


class Outbox:
    """The outbox tables of a :class:`Database`, plus the in-process claim book."""

    def __init__(self, db: Database | PostgresDatabase, lease_s: float = 30.0, anonymous_hold_s: float = 0.0) -> None:
        self.db = db
        self.lease_s = lease_s
        #: anonymous operations younger than this are not claimable (0 = off; ``send`` sets 0 once read)
        self.anonymous_hold_s = anonymous_hold_s
        #: who holds a lease (PostgreSQL): host, pid and a random part
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._claim_lock = threading.Lock()
        self._in_flight: set[int] = set()
        self._busy_persons: dict[str, int] = {}
        self._depth_cache: tuple[float, int] | None = None
        #: operations this process moved to the dead-letter table
        self.dead_lettered_total = 0

    # -- writing ---------------------------------------------------------------
    @staticmethod
    def enqueue(conn: Any, operations: Iterable[Operation], now: float | None = None) -> int:
        """Append operations inside the caller's transaction; returns how many."""
        stamp = now if now is not None else time.time()
        rows = []
        for operation in operations:
            text = operation.text or encode_payload(operation.payload)
            after = json.dumps(list(operation.after)) if operation.after else None
            rows.append((operation.person_key, text, len(text.encode()), stamp, after, operation.kind))
        conn.executemany(_INSERT_SQL, rows)
        return len(rows)

    def queued(self, conn: Any, person_key: str, kind: Kind) -> list[Queued]:
        """Inside the caller's transaction: ``person_key``'s queued operations of ``kind``
        that are neither in flight here nor leased by a replica, in queue order."""
        now = time.time()
        rows = conn.execute(
            "SELECT seq, payload, enqueued_at, lease_until, after_keys FROM outbox"
            " WHERE person_key = ? AND kind = ? ORDER BY seq",
            (person_key, kind),
        ).fetchall()
        found = []
        for seq, payload, enqueued_at, lease_until, after_keys in rows:
            if seq in self._in_flight or (lease_until is not None and lease_until > now):
                continue
            after = tuple(json.loads(after_keys)) if after_keys else ()
            found.append(Queued(seq, Operation(person_key, json.loads(payload), after, payload, kind), enqueued_at))
        return found

    @staticmethod
    def replace(conn: Any, old: Sequence[Queued], new: Sequence[Operation]) -> int:
        """Inside the caller's transaction: delete ``old`` and queue ``new`` (pairwise) at
        the back, each keeping the enqueue time of the row it replaces; returns how many."""
        if len(old) != len(new):
            raise ValueError("replace: one new operation per old one")
        if not old:
            return 0
        rows = []
        for queued, operation in zip(old, new, strict=True):
            text = operation.text or encode_payload(operation.payload)
            after = json.dumps(list(operation.after)) if operation.after else None
            rows.append((operation.person_key, text, len(text.encode()), queued.enqueued_at, after, operation.kind))
        conn.executemany("DELETE FROM outbox WHERE seq = ?", [(queued.seq,) for queued in old])
        conn.executemany(_INSERT_SQL, rows)
        return len(rows)

    def put(self, operations: Iterable[Operation]) -> int:
        """Enqueue operations in their own transaction."""
        with self.db.transaction() as conn:
            return self.enqueue(conn, operations)

    # -- claiming --------------------------------------------------------------
    def claim(self, max_items: int, max_bytes: int, max_op_bytes: int) -> list[Claimed]:
        """Hand out the oldest deliverable operations, in order, within the limits.

        Operations bigger than ``max_op_bytes`` are dead-lettered on the way (they
        can never be accepted). A person with an operation in flight (here, or
        leased by another replica), or whose earlier operation did not fit this
        claim, gets nothing more this time. Anonymous operations still held
        (:attr:`anonymous_hold_s`) are not handed out and block only their own keys.
        """
        with self._claim_lock:
            if self.db.shared:
                claimed, oversized = self._claim_leased(max_items, max_bytes, max_op_bytes)
            else:
                held = self._held(time.time())
                taken = lambda row: row[0] in self._in_flight or held(row)  # noqa: E731
                chosen, too_big = _select(self._candidates(self.db), taken, max_items, max_bytes, max_op_bytes)
                with self.db.reading() as conn:
                    claimed, oversized = self._hydrate(conn, chosen), self._hydrate(conn, too_big)
            for item in claimed:
                self._in_flight.add(item.seq)
                for key in item.keys:
                    self._busy_persons[key] = self._busy_persons.get(key, 0) + 1
        if oversized:
            self.dead_letter(
                [
                    (item, f"operation is {item.size} bytes, over Customer.io's {max_op_bytes}-byte limit", None, None)
                    for item in oversized
                ],
                claimed=False,
            )
        return claimed

    def _claim_leased(self, max_items: int, max_bytes: int, max_op_bytes: int) -> tuple[list[Claimed], list[Claimed]]:
        """Claim across replicas: one claimer at a time (advisory lock), leases with expiry.

        A row leased by anyone (lease not expired) blocks its people, exactly like an
        in-flight row in one process; a dead replica's leases expire after
        ``lease_s`` and its rows are claimed again.
        """
        with self.db.transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(?)", (_CLAIM_LOCK,))
            now = time.time()
            held = self._held(now)
            taken = lambda row: (row[7] is not None and row[7] > now) or held(row)  # noqa: E731
            chosen, too_big = _select(self._candidates(conn), taken, max_items, max_bytes, max_op_bytes)
            claimed, oversized = self._hydrate(conn, chosen), self._hydrate(conn, too_big)
            conn.executemany(
                "UPDATE outbox SET lease_owner = ?, lease_until = ? WHERE seq = ?",
                [(self.owner, now + self.lease_s, item.seq) for item in claimed],
            )
        return claimed, oversized

    def _held(self, now: float) -> Callable[[tuple[Any, ...]], bool]:
        """Whether a candidate row is an anonymous operation enqueued less than ``anonymous_hold_s`` ago."""
        if self.anonymous_hold_s <= 0:
            return lambda row: False
        cutoff = now - self.anonymous_hold_s
        return lambda row: row[8] == "anonymous" and row[4] > cutoff

    @staticmethod
    def _hydrate(conn: Any, rows: list[tuple[Any, ...]]) -> list[Claimed]:
        """Claimed operations for candidate rows, with their payloads (in queue order)."""
        if not rows:
            return []
        payloads: dict[int, tuple[str, Kind]] = {}
        seqs = [row[0] for row in rows]
        for start in range(0, len(seqs), 500):
            chunk = seqs[start : start + 500]
            marks = ",".join("?" * len(chunk))
            found = conn.execute(f"SELECT seq, payload, kind FROM outbox WHERE seq IN ({marks})", chunk).fetchall()
            payloads.update((seq, (payload, kind)) for seq, payload, kind in found)
        return [
            Claimed(seq, person_key, payloads[seq][0], size, attempts, enqueued_at, after_keys, payloads[seq][1])
            for seq, person_key, size, attempts, enqueued_at, after_keys, *_ in rows
            if seq in payloads
        ]

    def _candidates(self, db_or_conn: Any, page: int = 1000, scan_limit: int = 50_000) -> Iterator[tuple[Any, ...]]:
        """Rows in queue order, a page at a time, up to ``scan_limit`` rows."""
        last = 0
        for _ in range(0, scan_limit, page):
            if isinstance(db_or_conn, (Database, PostgresDatabase)):
                with db_or_conn.reading() as conn:
                    rows = conn.execute(_CANDIDATES_SQL, (last, page)).fetchall()
            else:
                rows = db_or_conn.execute(_CANDIDATES_SQL, (last, page)).fetchall()
            yield from rows
            if len(rows) < page:
                return
            last = rows[-1][0]

    def _unclaim(self, items: Iterable[Claimed]) -> None:
        with self._claim_lock:
            for item in items:
                if item.seq in self._in_flight:
                    self._in_flight.discard(item.seq)
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
            with self.db.transaction() as conn:
                conn.executemany("DELETE FROM outbox WHERE seq = ?", [(item.seq,) for item in items])
        self._unclaim(items)

    def forget_claims(self, items: Sequence[Claimed]) -> None:
        """Drop claims from memory only (when the database cannot be written): the rows
        stay queued, and with PostgreSQL their leases expire."""
        self._unclaim(items)

    def unclaim(self, items: Sequence[Claimed]) -> None:
        """Give claimed operations back untouched (not attempted)."""
        if items and self.db.shared:
            with self.db.transaction() as conn:
                conn.executemany(
                    "UPDATE outbox SET lease_owner = NULL, lease_until = NULL WHERE seq = ?",
                    [(item.seq,) for item in items],
                )
        self._unclaim(items)

    def release(self, items: Sequence[Claimed], error: str) -> None:
        """Not delivered (transient failure): keep them queued, count the attempt."""
        if items:
            with self.db.transaction() as conn:
                conn.executemany(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = ?, lease_owner = NULL,"
                    " lease_until = NULL WHERE seq = ?",
                    [(error[:500], item.seq) for item in items],
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
        with self.db.transaction() as conn:
            conn.executemany(
                "INSERT INTO dead_letters (seq, person_key, payload, reason, status, response,"
                " attempts, enqueued_at, failed_at, after_keys, kind) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (item.seq, item.person_key, item.payload, reason, status, response,
                     item.attempts + 1, item.enqueued_at, now, item.after_keys, item.kind)
                    for item, reason, status, response in failures
                ],
            )
            conn.executemany("DELETE FROM outbox WHERE seq = ?", [(item.seq,) for item, *_ in failures])
        self.dead_lettered_total += len(failures)
        if claimed:
            self._unclaim([item for item, *_ in failures])

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
        with self.db.reading() as conn:
            count = int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        self._depth_cache = (now, count)
        return count

    def is_empty(self, held_ok: bool = False) -> bool:
        """Whether nothing waits (cheap: no count); with ``held_ok``, anonymous operations still held do not count."""
        with self.db.reading() as conn:
            if held_ok and self.anonymous_hold_s > 0:
                cutoff = time.time() - self.anonymous_hold_s
                sql = "SELECT seq FROM outbox WHERE kind <> 'anonymous' OR enqueued_at <= ? LIMIT 1"
                return conn.execute(sql, (cutoff,)).fetchone() is None
            return conn.execute("SELECT seq FROM outbox LIMIT 1").fetchone() is None

    def oldest_age(self, now: float | None = None) -> float:
        """Seconds since the oldest waiting operation was enqueued (0 if empty)."""
        with self.db.reading() as conn:
            row = conn.execute("SELECT enqueued_at FROM outbox ORDER BY seq LIMIT 1").fetchone()
        return 0.0 if row is None else max(0.0, (now or time.time()) - row[0])

    def in_flight(self) -> int:
        """Operations currently claimed by workers."""
        with self._claim_lock:
            return len(self._in_flight)

    def dead_letter_count(self) -> int:
        """How many operations are dead-lettered."""
        with self.db.reading() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0])

    def dead_letters(self, limit: int | None = None) -> list[DeadLetter]:
        """Dead-lettered operations, oldest first."""
        with self.db.reading() as conn:
            rows = conn.execute(
                "SELECT id, seq, person_key, payload, reason, status, response, attempts,"
                " enqueued_at, failed_at, kind FROM dead_letters ORDER BY id LIMIT ?",
                (1 << 62 if limit is None else limit,),
            ).fetchall()
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
            columns = "id, person_key, payload, after_keys, kind"
            if wanted is None:
                rows = conn.execute(f"SELECT {columns} FROM dead_letters ORDER BY id").fetchall()
            else:
                marks = ",".join("?" * len(wanted)) or "NULL"
                rows = conn.execute(
                    f"SELECT {columns} FROM dead_letters WHERE id IN ({marks}) ORDER BY id", wanted
                ).fetchall()
            now = time.time()
            conn.executemany(
                _INSERT_SQL,
                [(key, payload, len(payload.encode()), now, after, kind) for _, key, payload, after, kind in rows],
            )
            conn.executemany("DELETE FROM dead_letters WHERE id = ?", [(row[0],) for row in rows])
        return [row[0] for row in rows]
