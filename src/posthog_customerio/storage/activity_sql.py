"""The SQL of the ``activity_queue`` table (Customer.io's message activity on its way to PostHog, :mod:`..activity`).

:class:`ActivitySql` is a part of :class:`~.sql.SqlTransaction` (both backends); on PostgreSQL a claim locks
its rows with ``FOR UPDATE SKIP LOCKED`` and leases them, so replicas never capture the same row at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

__all__ = ["ACTIVITY_KEY", "ACTIVITY_SHOWN", "ACTIVITY_STATES", "ActivityRow", "ActivitySettle", "ActivitySql"]

#: the ``status_snapshot`` counters of the activity (all replicas, all time): ``customerio_activity:<name>``
ACTIVITY_KEY = "customerio_activity"
#: unplaced and dead rows a storage snapshot lists
ACTIVITY_SHOWN = 10

#: queued (to capture), unplaced (its person is not known yet), dead (PostHog refused it), captured
ACTIVITY_STATES = ("queued", "unplaced", "dead", "captured")
_COLUMNS = "event_id, payload, state, distinct_id, attempts, last_error, received_at, next_attempt_at, settled_at"


class ActivityRow(NamedTuple):
    """One stored activity."""

    event_id: str
    payload: str
    state: str
    distinct_id: str | None
    attempts: int
    last_error: str | None
    received_at: float
    next_attempt_at: float
    settled_at: float | None


class ActivitySettle(NamedTuple):
    """What a delivery attempt made of a claimed row (its lease ends)."""

    event_id: str
    state: str
    distinct_id: str | None
    attempts: int
    last_error: str | None
    next_attempt_at: float
    settled_at: float | None


class ActivitySql:
    """``activity_queue`` statements over ``self.conn`` with the placeholder ``self.sql.mark``."""

    conn: Any
    sql: Any

    def _many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:  # the transaction's own
        raise NotImplementedError

    def _activity_lock(self) -> str:
        return " FOR UPDATE SKIP LOCKED" if self.sql.mark == "%s" else ""

    def insert_activity(self, event_id: str, payload: str, cio_id: str | None, now: float) -> bool:
        """Store a new activity (queued, due now); False when ``event_id`` is already stored (a retry)."""
        marks = self.sql.marks(5)
        cursor = self.conn.execute(
            f"INSERT INTO activity_queue (event_id, payload, cio_id, received_at, next_attempt_at) VALUES ({marks})"
            " ON CONFLICT (event_id) DO NOTHING",
            (event_id, payload, cio_id, now, now),
        )
        return bool(cursor.rowcount == 1)

    def claim_activities(
        self, states: Sequence[str], owner: str, now: float, lease_until: float, limit: int
    ) -> list[ActivityRow]:
        """Up to ``limit`` rows in ``states`` due at ``now`` and not leased, oldest first, leased to ``owner``."""
        mark = self.sql.mark
        rows = self.conn.execute(
            f"SELECT {_COLUMNS} FROM activity_queue WHERE state IN ({self.sql.marks(len(states))})"
            f" AND next_attempt_at <= {mark} AND (lease_until IS NULL OR lease_until <= {mark})"
            f" ORDER BY next_attempt_at, received_at, event_id LIMIT {mark}{self._activity_lock()}",
            (*states, now, now, limit),
        ).fetchall()
        claimed = [ActivityRow._make(row) for row in rows]
        if claimed:
            self._many(
                f"UPDATE activity_queue SET lease_owner = {mark}, lease_until = {mark} WHERE event_id = {mark}",
                [(owner, lease_until, row.event_id) for row in claimed],
            )
        return claimed

    def settle_activities(self, owner: str, rows: Sequence[ActivitySettle]) -> None:
        """Write each attempt's outcome and end its lease (a row leased by another owner since is left alone)."""
        mark = self.sql.mark
        if rows:
            self._many(
                f"UPDATE activity_queue SET state = {mark}, distinct_id = {mark}, attempts = {mark},"
                f" last_error = {mark}, next_attempt_at = {mark}, settled_at = {mark}, lease_owner = NULL,"
                f" lease_until = NULL WHERE event_id = {mark} AND (lease_owner IS NULL OR lease_owner = {mark})",
                [(*row[1:], row.event_id, owner) for row in rows],
            )

    def activity_counts(self) -> dict[str, int]:
        """How many rows are in each state."""
        rows = self.conn.execute("SELECT state, COUNT(*) FROM activity_queue GROUP BY state").fetchall()
        return {str(state): int(count) for state, count in rows}

    def activity_rows(self, states: Sequence[str], limit: int) -> list[ActivityRow]:
        """Rows in ``states``, oldest received first."""
        mark = self.sql.mark
        rows = self.conn.execute(
            f"SELECT {_COLUMNS} FROM activity_queue WHERE state IN ({self.sql.marks(len(states))})"
            f" ORDER BY received_at, event_id LIMIT {mark}",
            (*states, limit),
        ).fetchall()
        return [ActivityRow._make(row) for row in rows]

    def requeue_activities(self, states: Sequence[str], event_ids: Sequence[str] | None, now: float) -> int:
        """Queue again, due now, the rows in ``states`` (only ``event_ids`` when given); how many."""
        where = f"state IN ({self.sql.marks(len(states))})"
        params: list[Any] = [now, *states]
        if event_ids is not None:
            if not event_ids:
                return 0
            where += f" AND event_id IN ({self.sql.marks(len(event_ids))})"
            params += list(event_ids)
        cursor = self.conn.execute(
            f"UPDATE activity_queue SET state = 'queued', attempts = 0, next_attempt_at = {self.sql.mark},"
            f" lease_owner = NULL, lease_until = NULL WHERE {where}",
            params,
        )
        return int(cursor.rowcount)

    def prune_activities(self, settled_before: float) -> int:
        """Forget captured rows settled before ``settled_before``; how many."""
        cursor = self.conn.execute(
            f"DELETE FROM activity_queue WHERE state = 'captured' AND settled_at < {self.sql.mark}", (settled_before,)
        )
        return int(cursor.rowcount)

    def placed_by_cio_id(self, cio_id: str) -> str | None:
        """The distinct_id an earlier activity of this Customer.io ``cio_id`` was placed on (``None``: none)."""
        mark = self.sql.mark
        row = self.conn.execute(
            f"SELECT distinct_id FROM activity_queue WHERE cio_id = {mark} AND distinct_id IS NOT NULL"
            " ORDER BY received_at DESC LIMIT 1",
            (cio_id,),
        ).fetchone()
        return None if row is None else str(row[0])
