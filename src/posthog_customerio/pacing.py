"""Request pacing shared by every replica of one Customer.io workspace (PostgreSQL).

With ``OUTBOX_URL=postgresql://…`` several processes deliver to the same workspace;
``CUSTOMERIO_MAX_RPS`` and a ``Retry-After`` (or back-off) pause must hold for all of
them together. One row of ``delivery_pacing`` per workspace holds the next free
request slot and the end of the current pause, both on the database's clock (the
replicas' clocks never matter):

* taking a slot is one ``UPDATE … RETURNING`` (the row lock serialises replicas for
  the length of that statement only); a worker whose slot lies in the future sleeps
  until it and then re-reads the pause once, so a pause set meanwhile by another
  replica still stops it;
* a pause is one ``UPDATE`` that also pushes the next slot past its end.

So a request costs one round trip below the rate limit and two at it. SQLite keeps
the in-process :class:`~posthog_customerio.delivery.RateLimiter` (one deliverer per
data directory).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time

from .db import PostgresDatabase
from .delivery import finite_delay

__all__ = ["PostgresPacer", "workspace_key"]

log = logging.getLogger(__name__)

_NOW = "WITH clock AS (SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8 AS now) "
_TAKE_SQL = _NOW + (
    "UPDATE delivery_pacing AS p SET next_slot = CASE WHEN p.hold_until > clock.now THEN p.next_slot"
    " ELSE GREATEST(p.next_slot, clock.now) + ? END FROM clock WHERE p.workspace = ?"
    " RETURNING p.next_slot - clock.now, p.hold_until - clock.now"
)
_HOLD_SQL = _NOW + (
    "UPDATE delivery_pacing AS p SET hold_until = GREATEST(p.hold_until, clock.now + ?),"
    " next_slot = GREATEST(p.next_slot, clock.now + ?) FROM clock WHERE p.workspace = ?"
    " RETURNING p.hold_until - clock.now"
)
_DELAY_SQL = (
    "SELECT GREATEST(next_slot, hold_until) - EXTRACT(EPOCH FROM clock_timestamp())::float8"
    " FROM delivery_pacing WHERE workspace = ?"
)
_HELD_SQL = "SELECT hold_until - EXTRACT(EPOCH FROM clock_timestamp())::float8 FROM delivery_pacing WHERE workspace = ?"
_INSERT_SQL = "INSERT INTO delivery_pacing (workspace) VALUES (?) ON CONFLICT (workspace) DO NOTHING"


def workspace_key(site_id: str, track_url: str) -> str:
    """The pacing row's key: a digest of the Site ID and Track URL (the ID itself is not stored)."""
    return hashlib.sha256(f"{site_id}\n{track_url.rstrip('/')}".encode()).hexdigest()[:32]


class PostgresPacer:
    """Rate limit and pauses in a PostgreSQL row, shared by every replica of a workspace."""

    def __init__(self, db: PostgresDatabase, workspace: str, rate: float) -> None:
        self.db = db
        self.workspace = workspace
        self.interval = 1.0 / rate
        self._lock = threading.Lock()
        self._hold_end = 0.0  # monotonic end of the pause as last seen in the row
        self._ensure_row()

    def _ensure_row(self) -> None:
        with self.db.transaction() as conn:
            conn.execute(_INSERT_SQL, (self.workspace,))

    def _seen_hold(self, remaining: float) -> float:
        remaining = finite_delay(remaining)
        with self._lock:
            self._hold_end = max(self._hold_end, time.monotonic() + remaining) if remaining > 0 else self._hold_end
        return remaining

    def hold_remaining(self) -> float:
        """Seconds left of the pause as last seen (no round trip; :meth:`take` always asks the row)."""
        with self._lock:
            return max(0.0, self._hold_end - time.monotonic())

    def take(self, stop: threading.Event) -> bool:
        """Reserve the next shared slot and wait for it; False while a pause is in force or on ``stop``."""
        if self.hold_remaining() > 0:
            return False
        with self.db.transaction() as conn:
            row = conn.execute(_TAKE_SQL, (self.interval, self.workspace)).fetchone()
        if row is None:  # the row went missing (schema recreated): make it again
            self._ensure_row()
            return False
        after_slot, hold = row
        if self._seen_hold(hold) > 0:
            return False
        wait = finite_delay(after_slot - self.interval)
        if wait <= 0:
            return True
        if stop.wait(wait):
            return False
        with self.db.reading() as conn:
            row = conn.execute(_HELD_SQL, (self.workspace,)).fetchone()
        return row is None or self._seen_hold(row[0]) <= 0

    def reserve_delay(self) -> float:
        """Seconds until the shared next slot (or the end of the pause), without reserving it."""
        with self.db.reading() as conn:
            row = conn.execute(_DELAY_SQL, (self.workspace,)).fetchone()
        return 0.0 if row is None else finite_delay(row[0])

    def hold_for(self, seconds: float) -> None:
        """Pause every replica for ``seconds`` (the pause seen locally even if the database fails)."""
        seconds = finite_delay(seconds)
        self._seen_hold(seconds)
        try:
            with self.db.transaction() as conn:
                row = conn.execute(_HOLD_SQL, (seconds, seconds, self.workspace)).fetchone()
        except Exception as exc:  # noqa: BLE001 - the local pause still holds
            log.warning("could not share the delivery pause: %s: %s", type(exc).__name__, exc)
            return
        if row is not None:
            self._seen_hold(row[0])
