"""The SQL both backends share, written once for a placeholder style (SQLite ``?``, psycopg ``%s``).

:class:`Statements` builds every statement for one placeholder at start; :class:`SqlTransaction`
runs them on a DB-API connection; :class:`SqlStorage` adds what a backend does through them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence, Set
from typing import Any

from ..operations import Lane
from .activity_sql import ACTIVITY_KEY, ACTIVITY_SHOWN, ActivitySql
from .base import EXPIRED_KEY, Storage, StorageSnapshot
from .rows import (
    CandidateRow,
    CohortMemberRow,
    CohortSyncRow,
    DeadLetterRow,
    DeliveryRow,
    ExpiredRow,
    LaneRow,
    NewDeadLetter,
    NewOperation,
    PayloadRow,
    PersonRow,
    QueuedRow,
    QueueEntryRow,
    ReplicaRow,
    RequeueRow,
    StoredStatus,
    StreamPosition,
)

__all__ = ["PERSON_COLUMNS", "SqlStorage", "SqlTransaction", "Statements"]

#: columns of a person row, in order (see :mod:`..state`)
PERSON_COLUMNS = ("distinct_id", "identified", "email", "created", "email_sent", "digests", "merged_into", "extra")
_OPERATION_COLUMNS = "person_key, payload, size, enqueued_at, after_keys, kind, order_ts"
_DEAD_LETTER_INSERT = (
    "seq, person_key, payload, reason, status, response, attempts, enqueued_at, failed_at, after_keys, kind"
)
_DEAD_LETTER_COLUMNS = "id, seq, person_key, payload, reason, status, response, attempts, enqueued_at, failed_at, kind"
_COHORT_SYNC_COLUMNS = "cohort_id, pass, phase, next_url, info, updated_at"
#: rows per ``IN (...)`` list
CHUNK = 500
#: anonymous rows read per page while choosing which to expire (the ``outbox_anonymous_lane`` index, in seq order)
_LANE_PAGE = 1_000
#: the condition of each lane (:data:`~..operations.Lane`; ``None``: the whole queue), after a ``WHERE``.
#: An anonymous event waits in its lane behind any earlier person work of its key (kept in order).
_LANES: dict[Lane | None, str] = {
    None: "",
    "person": " AND kind <> 'anonymous'",
    "anonymous": (
        " AND kind = 'anonymous' AND NOT EXISTS (SELECT 1 FROM outbox AS earlier"
        " WHERE earlier.person_key = outbox.person_key AND earlier.kind <> 'anonymous' AND earlier.seq < outbox.seq)"
    ),
}


class Statements:
    """Every shared statement, for one placeholder (``mark``)."""

    def __init__(self, mark: str) -> None:
        self.mark = mark
        columns = ", ".join(PERSON_COLUMNS)
        self.upsert_person = (
            f"INSERT INTO persons ({columns}) VALUES ({self.marks(len(PERSON_COLUMNS))})"
            " ON CONFLICT (distinct_id) DO UPDATE SET "
            + ", ".join(f"{column} = excluded.{column}" for column in PERSON_COLUMNS[1:])
        )
        self.person_columns = columns
        self.insert_operation = f"INSERT INTO outbox ({_OPERATION_COLUMNS}) VALUES ({self.marks(7)})"
        self.queued = (
            "SELECT seq, payload, enqueued_at, lease_until, after_keys, order_ts FROM outbox"
            f" WHERE person_key = {mark} AND kind = {mark} AND (lease_until IS NULL OR lease_until <= {mark})"
            " ORDER BY seq"
        )
        self.delete_operation = f"DELETE FROM outbox WHERE seq = {mark}"
        candidate = (
            "SELECT seq, person_key, size, attempts, enqueued_at, after_keys, lease_owner, lease_until, kind, order_ts"
        )
        #: queue rows after a seq, in order: of the whole queue (``None``) or of one lane
        self.candidates = {
            lane: f"{candidate} FROM outbox WHERE seq > {mark}{_LANES[lane]} ORDER BY seq LIMIT {mark}"
            for lane in _LANES
        }
        #: the same, less the rows leased (SQLite: those this process's workers hold, or forgot, :meth:`give_back`)
        self.unleased_candidates = {
            lane: f"{candidate} FROM outbox WHERE seq > {mark} AND lease_until IS NULL{_LANES[lane]} ORDER BY seq"
            f" LIMIT {mark}"
            for lane in _LANES
        }
        #: the queue (or a lane) in order, up to a limit (PostgreSQL reads it through one server-side cursor)
        self.snapshot_candidates = {
            lane: f"{candidate} FROM outbox WHERE TRUE{_LANES[lane]} ORDER BY seq LIMIT {mark}" for lane in _LANES
        }
        #: the keys of anonymous events leased now (by any replica): person work waiting on them waits
        self.leased_anonymous_keys = (
            "SELECT DISTINCT person_key FROM outbox"
            f" WHERE lease_until IS NOT NULL AND lease_until > {mark} AND kind = 'anonymous'"
        )
        self.release = (
            f"UPDATE outbox SET attempts = attempts + 1, last_error = {mark}, lease_owner = NULL,"
            f" lease_until = NULL WHERE seq = {mark} AND (lease_owner IS NULL OR lease_owner = {mark})"
        )
        self.insert_dead_letter = f"INSERT INTO dead_letters ({_DEAD_LETTER_INSERT}) VALUES ({self.marks(11)})"
        self.dead_letters = f"SELECT {_DEAD_LETTER_COLUMNS} FROM dead_letters ORDER BY id LIMIT {mark}"
        self.delete_dead_letter = f"DELETE FROM dead_letters WHERE id = {mark}"
        self.save_status = (
            f"INSERT INTO status_snapshot (key, value, updated_at) VALUES ({self.marks(3)})"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
        )
        self.load_status = f"SELECT value, updated_at FROM status_snapshot WHERE key = {mark}"
        #: how many anonymous events wait (SQLite names its index: its planner may scan the table instead)
        self.anonymous_count = "SELECT COUNT(*) FROM outbox WHERE kind = 'anonymous'"
        self.touch_status = (
            f"INSERT INTO status_snapshot (key, value, updated_at) VALUES ({mark}, '{{}}', {mark})"
            " ON CONFLICT (key) DO UPDATE SET updated_at = excluded.updated_at"
        )

        #: a person's queued operations that may change places (event-time order, :meth:`~.outbox.Outbox.reorder`):
        #: not anonymous, waiting on no other key, with an event time, not leased
        self.lane_rows = (
            "SELECT seq, payload, size, enqueued_at, attempts, last_error, kind, order_ts FROM outbox"
            f" WHERE person_key = {mark} AND kind <> 'anonymous' AND after_keys IS NULL AND order_ts IS NOT NULL"
            f" AND (lease_until IS NULL OR lease_until <= {mark}) ORDER BY seq"
        )
        self.rewrite_lane_row = (
            f"UPDATE outbox SET payload = {mark}, size = {mark}, enqueued_at = {mark}, attempts = {mark},"
            f" last_error = {mark}, kind = {mark}, order_ts = {mark} WHERE seq = {mark}"
        )
        greatest = "MAX" if mark == "?" else "GREATEST"
        self.save_stream_position = (
            "INSERT INTO stream_positions (stream, part, next_position, event_ts, end_at, updated_at)"
            f" VALUES ({self.marks(6)}) ON CONFLICT (stream, part) DO UPDATE SET"
            f" next_position = {greatest}(stream_positions.next_position, excluded.next_position),"
            f" event_ts = {greatest}(stream_positions.event_ts, excluded.event_ts), end_at = excluded.end_at,"
            " updated_at = excluded.updated_at"
        )
        self.stream_progress = f"SELECT event_ts, end_at FROM stream_positions WHERE updated_at > {mark}"

    def marks(self, count: int) -> str:
        """``count`` placeholders, comma-separated."""
        return ",".join([self.mark] * count)


class SqlTransaction(ActivitySql):
    """:class:`~.base.Transaction` over a DB-API connection (``execute`` returns a cursor)."""

    def __init__(self, conn: Any, sql: Statements) -> None:
        self.conn = conn
        self.sql = sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run backend-native SQL."""
        return self.conn.execute(sql, params)

    def _many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:
            self.conn.executemany(sql, rows)

    def _in(self, select: str, values: Sequence[Any]) -> list[Any]:
        """``select`` ending in ``IN`` run over ``values`` a chunk at a time (the rows as the driver gives them)."""
        found: list[Any] = []
        for start in range(0, len(values), CHUNK):
            chunk = list(values[start : start + CHUNK])
            found.extend(self.conn.execute(f"{select} ({self.sql.marks(len(chunk))})", chunk).fetchall())
        return found

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(sql, params).fetchone()

    # -- person state --
    def select_persons(self, distinct_ids: Sequence[str]) -> list[PersonRow]:
        select = f"SELECT {self.sql.person_columns} FROM persons WHERE distinct_id IN"
        return [PersonRow._make(row) for row in self._in(select, distinct_ids)]

    def upsert_persons(self, rows: Iterable[PersonRow]) -> None:
        self._many(self.sql.upsert_person, rows)

    def count_persons(self) -> int:
        return int(self._one("SELECT COUNT(*) FROM persons")[0])

    def lock_keys(self, keys: Iterable[str]) -> bool:
        return False

    # -- outbox --
    def insert_operations(self, rows: Iterable[NewOperation]) -> None:
        self._many(self.sql.insert_operation, rows)

    def queued_rows(self, person_key: str, kind: str, now: float) -> list[QueuedRow]:
        rows = self.conn.execute(self.sql.queued, (person_key, kind, now)).fetchall()
        return [QueuedRow._make(row) for row in rows]

    def delete_operations(self, seqs: Iterable[int]) -> None:
        self._many(self.sql.delete_operation, [(seq,) for seq in seqs])

    def lane_rows(self, person_key: str, now: float) -> list[LaneRow]:
        return [LaneRow._make(row) for row in self.conn.execute(self.sql.lane_rows, (person_key, now)).fetchall()]

    def rewrite_lane(self, rows: Sequence[tuple[int, LaneRow]]) -> None:
        self._many(
            self.sql.rewrite_lane_row,
            [
                (row.payload, row.size, row.enqueued_at, row.attempts, row.last_error, row.kind, row.order_ts, seq)
                for seq, row in rows
            ],
        )

    def stream_positions(self, stream: str, parts: Sequence[int]) -> dict[int, StreamPosition]:
        mark = self.sql.mark
        sql = (
            "SELECT stream, part, next_position, event_ts, end_at, updated_at FROM stream_positions"
            f" WHERE stream = {mark} AND part IN ({self.sql.marks(len(parts))})"
        )
        rows = self.conn.execute(sql, (stream, *parts)).fetchall() if parts else []
        return {int(row[1]): StreamPosition._make(row) for row in rows}

    def save_stream_positions(self, rows: Iterable[StreamPosition]) -> None:
        self._many(self.sql.save_stream_position, rows)

    def head_order_ts(self) -> tuple[bool, float | None]:
        row = self._one("SELECT order_ts FROM outbox WHERE kind <> 'anonymous' ORDER BY seq LIMIT 1")
        return (False, None) if row is None else (True, None if row[0] is None else float(row[0]))

    def stream_progress(self, fresh_after: float) -> list[tuple[float, float | None]]:
        rows = self.conn.execute(self.sql.stream_progress, (fresh_after,)).fetchall()
        return [(float(ts), None if end is None else float(end)) for ts, end in rows]

    def delete_unleased(self, seqs: Sequence[int], now: float) -> set[int]:
        deleted: set[int] = set()
        for start in range(0, len(seqs), CHUNK):
            chunk = list(seqs[start : start + CHUNK])
            rows = self.conn.execute(
                f"DELETE FROM outbox WHERE seq IN ({self.sql.marks(len(chunk))})"
                f" AND (lease_until IS NULL OR lease_until <= {self.sql.mark}) RETURNING seq",
                [*chunk, now],
            ).fetchall()
            deleted.update(int(seq) for (seq,) in rows)
        return deleted

    def candidates(
        self, after_seq: int, limit: int, lane: Lane | None = None, unleased: bool = False
    ) -> list[CandidateRow]:
        statements = self.sql.unleased_candidates if unleased else self.sql.candidates
        rows = self.conn.execute(statements[lane], (after_seq, limit))
        return [CandidateRow._make(row) for row in rows]

    def leased_anonymous_keys(self, now: float) -> set[str]:
        return {str(key) for (key,) in self.conn.execute(self.sql.leased_anonymous_keys, (now,)).fetchall()}

    def payloads(self, seqs: Sequence[int]) -> dict[int, PayloadRow]:
        rows = self._in("SELECT seq, payload, kind FROM outbox WHERE seq IN", seqs)
        return {seq: PayloadRow(payload, kind) for seq, payload, kind in rows}

    def release_operations(self, error: str, seqs: Iterable[int], owner: str | None = None) -> None:
        self._many(self.sql.release, [(error, seq, owner) for seq in seqs])

    def outbox_depth(self) -> int:
        return int(self._one("SELECT COUNT(*) FROM outbox")[0])

    def unleased_person_work(self, up_to: int) -> int:
        return int(
            self._one(
                "SELECT COUNT(*) FROM (SELECT 1 FROM outbox WHERE kind <> 'anonymous' AND lease_until IS NULL"
                f" LIMIT {self.sql.mark}) AS waiting",
                (up_to,),
            )[0]
        )

    def person_work_depth(self) -> int:
        # all rows (a covering index) less the anonymous lane (its partial index): both counts read no row, where
        # ``kind <> 'anonymous'`` would read every row of person work
        return max(0, self.outbox_depth() - int(self._one(self.sql.anonymous_count)[0]))

    def _unheld(self, held_after: float | None, gated: tuple[float, float, float] | None) -> tuple[str, list[Any]]:
        """The condition of rows neither the anonymous hold (anonymous rows enqueued after ``held_after``) nor
        the event-time gate (rows with an event time after ``gated``'s (person, anonymous) bounds, enqueued after
        its third) holds."""
        mark = self.sql.mark
        plain, params = "TRUE", []
        if held_after is not None:
            plain, params = f"(kind <> 'anonymous' OR enqueued_at <= {mark})", [held_after]
        if gated is None:
            return plain, params
        bound = f"CASE WHEN kind = 'anonymous' THEN {mark} ELSE {mark} END"
        released = f"(order_ts <= {bound} OR enqueued_at <= {mark})"
        condition = f"((order_ts IS NULL AND {plain}) OR (order_ts IS NOT NULL AND {released}))"
        return condition, [*params, gated[1], gated[0], gated[2]]

    def outbox_empty(self, held_after: float | None = None, gated: tuple[float, float, float] | None = None) -> bool:
        if held_after is None and gated is None:
            return self._one("SELECT seq FROM outbox LIMIT 1") is None
        # operations still held (anonymous ones enqueued after ``held_after``, gated ones) do not count
        condition, params = self._unheld(held_after, gated)
        return self._one(f"SELECT seq FROM outbox WHERE {condition} LIMIT 1", params) is None

    def oldest_enqueued_at(
        self, held_after: float | None = None, gated: tuple[float, float, float] | None = None
    ) -> float | None:
        if held_after is None and gated is None:
            row = self._one("SELECT enqueued_at FROM outbox ORDER BY seq LIMIT 1")
        else:
            condition, params = self._unheld(held_after, gated)
            row = self._one(f"SELECT enqueued_at FROM outbox WHERE {condition} ORDER BY seq LIMIT 1", params)
        return None if row is None else float(row[0])  # one column

    # -- dead letters --
    def insert_dead_letters(self, rows: Iterable[NewDeadLetter]) -> None:
        self._many(self.sql.insert_dead_letter, rows)

    def dead_letter_rows(self, limit: int | None) -> list[DeadLetterRow]:
        rows = self.conn.execute(self.sql.dead_letters, (1 << 62 if limit is None else limit,)).fetchall()
        return [DeadLetterRow._make(row) for row in rows]

    def dead_letter_count(self) -> int:
        return int(self._one("SELECT COUNT(*) FROM dead_letters")[0])

    def requeue_rows(self, ids: Sequence[int] | None) -> list[RequeueRow]:
        select = "SELECT id, person_key, payload, after_keys, kind FROM dead_letters"
        if ids is None:
            return [RequeueRow._make(row) for row in self.conn.execute(f"{select} ORDER BY id").fetchall()]
        return sorted((RequeueRow._make(row) for row in self._in(f"{select} WHERE id IN", ids)), key=lambda row: row.id)

    def delete_dead_letters(self, ids: Iterable[int]) -> None:
        self._many(self.sql.delete_dead_letter, [(id_,) for id_ in ids])

    # -- the operator's view --
    def dead_letter_ids(self, seqs: Sequence[int]) -> dict[int, int]:
        rows = self._in("SELECT seq, id FROM dead_letters WHERE seq IN", seqs)
        return {int(seq): int(letter_id) for seq, letter_id in rows}

    def dead_letter_row(self, letter_id: int) -> DeadLetterRow | None:
        sql = f"SELECT {_DEAD_LETTER_COLUMNS} FROM dead_letters WHERE id = {self.sql.mark}"
        row = self._one(sql, (letter_id,))
        return None if row is None else DeadLetterRow._make(row)

    def save_replica(self, replica: str, started_at: float, seen_at: float, stopped: bool, status: str) -> None:
        self.conn.execute(
            f"INSERT INTO replicas (replica, started_at, seen_at, stopped, status) VALUES ({self.sql.marks(5)})"
            " ON CONFLICT (replica) DO UPDATE SET seen_at = excluded.seen_at, stopped = excluded.stopped,"
            " status = excluded.status",
            (replica, started_at, seen_at, int(stopped), status),
        )

    def replica_rows(self) -> list[ReplicaRow]:
        sql = "SELECT replica, started_at, seen_at, stopped, status FROM replicas ORDER BY started_at, replica"
        return [ReplicaRow._make(row) for row in self.conn.execute(sql).fetchall()]

    def prune_replicas(self, seen_before: float) -> None:
        self.conn.execute(f"DELETE FROM replicas WHERE seen_at < {self.sql.mark}", (seen_before,))

    def record_deliveries(self, rows: Sequence[DeliveryRow], keep: int) -> None:
        if not rows:
            return
        self._many(
            f"INSERT INTO deliveries (person_key, seq, kind, action, name, outcome, at) VALUES ({self.sql.marks(7)})",
            rows,
        )
        # one statement per person, its newest ``keep`` found once (a subquery correlated with each row to delete
        # would be run for every row of those people)
        mark = self.sql.mark
        self._many(
            f"DELETE FROM deliveries WHERE person_key = {mark} AND id <= (SELECT older.id FROM deliveries AS older"
            f" WHERE older.person_key = {mark} ORDER BY older.id DESC LIMIT 1 OFFSET {mark})",
            [(key, key, keep) for key in dict.fromkeys(str(row.person_key) for row in rows)],
        )

    def deliveries_of(self, keys: Sequence[str], limit: int) -> list[DeliveryRow]:
        select = "SELECT person_key, seq, kind, action, name, outcome, at, id FROM deliveries WHERE person_key IN"
        return [DeliveryRow._make(row[:7]) for row in self._ordered(select, keys, limit, "id DESC", 7)]

    def persons_by_email(self, email: str, limit: int) -> list[PersonRow]:
        sql = (
            f"SELECT {self.sql.person_columns} FROM persons WHERE email IS NOT NULL"
            f" AND lower(email) = lower({self.sql.mark}) ORDER BY distinct_id LIMIT {self.sql.mark}"
        )
        return [PersonRow._make(row) for row in self.conn.execute(sql, (email, limit)).fetchall()]

    def persons_merged_into(self, keys: Sequence[str]) -> list[PersonRow]:
        select = f"SELECT {self.sql.person_columns} FROM persons WHERE merged_into IS NOT NULL AND merged_into IN"
        return [PersonRow._make(row) for row in self._in(select, keys)]

    def queued_of(self, keys: Sequence[str], limit: int) -> list[QueueEntryRow]:
        select = (
            "SELECT seq, person_key, kind, payload, enqueued_at, attempts, last_error, lease_until"
            " FROM outbox WHERE person_key IN"
        )
        return [QueueEntryRow._make(row) for row in self._ordered(select, keys, limit, "seq", 0)]

    def dead_letters_of(self, keys: Sequence[str], limit: int) -> list[DeadLetterRow]:
        select = f"SELECT {_DEAD_LETTER_COLUMNS} FROM dead_letters WHERE person_key IN"
        return [DeadLetterRow._make(row) for row in self._ordered(select, keys, limit, "id DESC", 0)]

    def _ordered(self, select: str, keys: Sequence[str], limit: int, order: str, id_at: int) -> list[tuple[Any, ...]]:
        """The first ``limit`` rows of ``select`` (ending in ``IN``) for these keys, by ``order`` (an id
        column at ``id_at``, ascending or ``DESC``), as the driver gives them."""
        found: list[tuple[Any, ...]] = []
        for start in range(0, len(keys), CHUNK):
            chunk = list(keys[start : start + CHUNK])
            sql = f"{select} ({self.sql.marks(len(chunk))}) ORDER BY {order} LIMIT {self.sql.mark}"
            found.extend(tuple(row) for row in self.conn.execute(sql, [*chunk, limit]).fetchall())
        found.sort(key=lambda row: int(row[id_at]), reverse=order.endswith("DESC"))
        return found[:limit]

    # -- the anonymous backlog (:mod:`...backlog`) --
    def anonymous_backlog(self) -> tuple[int, float | None]:
        # both read the partial index outbox_anonymous_lane (kind = 'anonymous', by seq)
        count = int(self._one(self.sql.anonymous_count)[0])
        first = self._one("SELECT enqueued_at FROM outbox WHERE kind = 'anonymous' ORDER BY seq LIMIT 1")
        return count, None if first is None else float(first[0])

    def lock_expiry(self) -> bool:
        """Whether this transaction may expire anonymous events (SQLite: its write transaction is exclusive)."""
        return True

    def expire_anonymous(
        self, before: float | None, keep: int | None, now: float, exclude: Set[int], limit: int
    ) -> dict[str, list[ExpiredRow]]:
        expired: dict[str, list[ExpiredRow]] = {"age": [], "count": []}
        if not self.lock_expiry():  # another replica is expiring now
            return expired

        def free(lease_until: float | None, seq: int) -> bool:
            return (lease_until is None or lease_until <= now) and seq not in exclude

        if before is not None and limit > 0:
            chosen: list[int] = []
            for page in self._lane_pages():
                old = [(seq, lease_until) for seq, enqueued_at, lease_until in page if enqueued_at < before]
                chosen += [seq for seq, lease_until in old if free(lease_until, seq)][: limit - len(chosen)]
                if not old or len(chosen) >= limit:  # past the old rows (queue order is enqueue order)
                    break
            expired["age"] = self._delete_anonymous(chosen, now)
        left = limit - len(expired["age"])
        if keep is not None and left > 0:
            excess = int(self._one(self.sql.anonymous_count)[0]) - keep
            if excess > 0:
                chosen = []
                for page in self._lane_pages():
                    chosen += [seq for seq, _, lease_until in page if free(lease_until, seq)][
                        : min(excess, left) - len(chosen)
                    ]
                    if len(chosen) >= min(excess, left):
                        break
                expired["count"] = self._delete_anonymous(chosen, now)
        return expired

    def _lane_pages(self) -> Iterable[list[tuple[int, float, float | None]]]:
        """The anonymous rows in queue order, a page at a time: (seq, enqueued_at, lease_until)."""
        sql = (
            "SELECT seq, enqueued_at, lease_until FROM outbox WHERE kind = 'anonymous'"
            f" AND seq > {self.sql.mark} ORDER BY seq LIMIT {self.sql.mark}"
        )
        last = 0
        while True:
            page = [
                (int(seq), float(at), None if until is None else float(until))
                for seq, at, until in self.conn.execute(sql, (last, _LANE_PAGE)).fetchall()
            ]
            if page:
                yield page
            if len(page) < _LANE_PAGE:
                return
            last = page[-1][0]

    def _delete_anonymous(self, seqs: Sequence[int], now: float) -> list[ExpiredRow]:
        """Delete these anonymous rows unless leased now; the rows this statement really deleted."""
        mark = self.sql.mark
        deleted: list[ExpiredRow] = []
        for start in range(0, len(seqs), CHUNK):
            chunk = list(seqs[start : start + CHUNK])
            rows = self.conn.execute(
                f"DELETE FROM outbox WHERE seq IN ({self.sql.marks(len(chunk))}) AND kind = 'anonymous'"
                f" AND (lease_until IS NULL OR lease_until <= {mark}) RETURNING seq, person_key, kind, payload",
                [*chunk, now],
            ).fetchall()
            deleted += sorted((ExpiredRow(int(seq), key, kind, payload) for seq, key, kind, payload in rows))
        return deleted

    def add_counters(self, key: str, counts: dict[str, int], at: float) -> None:
        mark = self.sql.mark
        self._many(
            f"INSERT INTO status_snapshot (key, value, updated_at) VALUES ({mark}, {mark}, {mark})"
            " ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(status_snapshot.value AS BIGINT)"
            " + CAST(excluded.value AS BIGINT) AS TEXT), updated_at = excluded.updated_at",
            [(f"{key}:{name}", str(int(count)), at) for name, count in sorted(counts.items()) if count],
        )

    def counters(self, key: str) -> dict[str, int]:
        # a prefix test, not a range: a collation may order ":" and ";" as it likes (and LIKE treats "_" as a wildcard)
        prefix = f"{key}:"
        sql = f"SELECT key, value FROM status_snapshot WHERE substr(key, 1, {len(prefix)}) = {self.sql.mark}"
        rows = self.conn.execute(sql, (prefix,)).fetchall()
        return {str(name)[len(prefix) :]: int(value) for name, value in rows}

    # -- PostHog cohorts --
    def cohort_sync(self, cohort_id: str) -> CohortSyncRow | None:
        mark = self.sql.mark
        row = self._one(f"SELECT {_COHORT_SYNC_COLUMNS} FROM cohort_syncs WHERE cohort_id = {mark}", (cohort_id,))
        return CohortSyncRow._make(row) if row is not None else None

    def cohort_syncs(self) -> list[CohortSyncRow]:
        rows = self.conn.execute(f"SELECT {_COHORT_SYNC_COLUMNS} FROM cohort_syncs ORDER BY cohort_id").fetchall()
        return [CohortSyncRow._make(row) for row in rows]

    def save_cohort_sync(self, row: CohortSyncRow) -> None:
        self.conn.execute(
            f"INSERT INTO cohort_syncs ({_COHORT_SYNC_COLUMNS}) VALUES ({self.sql.marks(6)})"
            " ON CONFLICT (cohort_id) DO UPDATE SET pass = excluded.pass, phase = excluded.phase,"
            " next_url = excluded.next_url, info = excluded.info, updated_at = excluded.updated_at",
            tuple(row),
        )

    def cohort_members(self, cohort_id: str, target: str, person_ids: Sequence[str]) -> dict[str, CohortMemberRow]:
        mark = self.sql.mark
        found: dict[str, CohortMemberRow] = {}
        select = (
            "SELECT person_id, distinct_id, pass FROM cohort_members"
            f" WHERE cohort_id = {mark} AND target = {mark} AND person_id IN"
        )
        for start in range(0, len(person_ids), CHUNK):
            chunk = list(person_ids[start : start + CHUNK])
            sql = f"{select} ({self.sql.marks(len(chunk))})"
            for row in self.conn.execute(sql, [cohort_id, target, *chunk]).fetchall():
                member = CohortMemberRow(str(row[0]), str(row[1]), int(row[2]))
                found[member.person_id] = member
        return found

    def upsert_cohort_members(self, cohort_id: str, target: str, rows: Iterable[CohortMemberRow]) -> None:
        self._many(
            "INSERT INTO cohort_members (cohort_id, target, person_id, distinct_id, pass)"
            f" VALUES ({self.sql.marks(5)}) ON CONFLICT (cohort_id, target, person_id)"
            " DO UPDATE SET pass = excluded.pass",
            [(cohort_id, target, *row) for row in rows],
        )

    def stale_cohort_members(self, cohort_id: str, target: str, before_pass: int, limit: int) -> list[CohortMemberRow]:
        mark = self.sql.mark
        rows = self.conn.execute(
            "SELECT person_id, distinct_id, pass FROM cohort_members"
            f" WHERE cohort_id = {mark} AND target = {mark} AND pass < {mark} ORDER BY person_id LIMIT {mark}",
            (cohort_id, target, before_pass, limit),
        ).fetchall()
        return [CohortMemberRow(str(a), str(b), int(c)) for a, b, c in rows]

    def cohort_members_seen(
        self, cohort_id: str, target: str, pass_no: int, distinct_ids: Sequence[str]
    ) -> list[CohortMemberRow]:
        mark = self.sql.mark
        found: list[CohortMemberRow] = []
        select = (
            "SELECT person_id, distinct_id, pass FROM cohort_members"
            f" WHERE cohort_id = {mark} AND target = {mark} AND pass = {mark} AND distinct_id IN"
        )
        for start in range(0, len(distinct_ids), CHUNK):
            chunk = list(distinct_ids[start : start + CHUNK])
            rows = self.conn.execute(f"{select} ({self.sql.marks(len(chunk))})", [cohort_id, target, pass_no, *chunk])
            found += [CohortMemberRow(str(a), str(b), int(c)) for a, b, c in rows.fetchall()]
        return found

    def delete_cohort_members(self, cohort_id: str, target: str, person_ids: Sequence[str]) -> None:
        mark = self.sql.mark
        self._many(
            f"DELETE FROM cohort_members WHERE cohort_id = {mark} AND target = {mark} AND person_id = {mark}",
            [(cohort_id, target, person_id) for person_id in person_ids],
        )

    def count_cohort_members(self, cohort_id: str, target: str, pass_no: int | None = None) -> int:
        mark = self.sql.mark
        sql = f"SELECT COUNT(*) FROM cohort_members WHERE cohort_id = {mark} AND target = {mark}"
        if pass_no is None:
            return int(self._one(sql, (cohort_id, target))[0])
        return int(self._one(f"{sql} AND pass = {mark}", (cohort_id, target, pass_no))[0])


class SqlStorage(Storage):
    """The parts of a :class:`~.base.Storage` made of shared statements."""

    sql: Statements

    def snapshot(self, dead_letters: int, persons: bool) -> StorageSnapshot:
        with self.reading() as tx:
            anonymous, anonymous_oldest = tx.anonymous_backlog()
            return StorageSnapshot(
                depth=tx.outbox_depth(),
                oldest_enqueued_at=tx.oldest_enqueued_at(),
                dead_letters=tx.dead_letter_count(),
                dead_letter_rows=tx.dead_letter_rows(dead_letters) if dead_letters > 0 else [],
                persons=tx.count_persons() if persons else None,
                anonymous_backlog=anonymous,
                anonymous_oldest_enqueued_at=anonymous_oldest,
                anonymous_expired=tx.counters(EXPIRED_KEY),
                activity_states=tx.activity_counts(),
                activity_totals=tx.counters(ACTIVITY_KEY),
                activity_waiting=tx.activity_rows(("unplaced", "dead"), ACTIVITY_SHOWN),
            )

    def save_status(self, key: str, value: str, at: float) -> None:
        with self.transaction() as tx:
            tx.execute(self.sql.save_status, (key, value, at))

    def load_status(self, key: str) -> StoredStatus | None:
        with self.reading() as tx:
            row = tx.execute(self.sql.load_status, (key,)).fetchone()
        if row is None:
            return None
        value, updated_at = row
        return StoredStatus(str(value), float(updated_at))

    def probe_write(self) -> None:
        with self.transaction() as tx:
            tx.execute(self.sql.touch_status, ("readyz", time.time()))
