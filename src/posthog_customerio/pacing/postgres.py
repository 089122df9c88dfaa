"""Request pacing shared by every replica of one Customer.io workspace (PostgreSQL).

With ``OUTBOX_URL=postgresql://…`` several processes deliver to the same workspace;
``CUSTOMERIO_MAX_RPS`` and a ``Retry-After`` (or back-off) pause must hold for all of
them together. One row of ``delivery_pacing`` per workspace (created by the storage
migrations) holds the next free request slot and the end of the current pause, both on
the database's clock (the replicas' clocks never matter):

* taking a slot is one ``UPDATE … RETURNING`` (the row lock serialises replicas for
  the length of that statement only); a worker whose slot lies in the future sleeps
  until it and then re-reads the pause once, so a pause set meanwhile by another
  replica still stops it;
* a pause is one ``UPDATE`` that also pushes the next slot past its end.

So a request costs one round trip below the rate limit and two at it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..storage import Storage
from ..storage.postgres import PostgresStorage
from .base import finite_delay

__all__ = ["PacingRows", "PostgresPacer", "shared_pacer", "workspace_key"]

log = logging.getLogger(__name__)

# the row's ``hold_until`` column is the end of the delivery pause (named before the pause was; a rename
# would be a migration)
_NOW = "WITH clock AS (SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8 AS now) "
_TAKE_SQL = _NOW + (
    "UPDATE delivery_pacing AS p SET next_slot = CASE WHEN p.hold_until > clock.now THEN p.next_slot"
    " ELSE GREATEST(p.next_slot, clock.now) + %s END FROM clock WHERE p.workspace = %s"
    " RETURNING p.next_slot - clock.now, p.hold_until - clock.now"
)
#: the slot of now, only if nobody reserved it and no pause is in force (one statement: replicas race fairly)
_SPARE_SQL = _NOW + (
    "UPDATE delivery_pacing AS p SET next_slot = clock.now + %s FROM clock WHERE p.workspace = %s"
    " AND p.next_slot <= clock.now AND p.hold_until <= clock.now RETURNING p.next_slot"
)
_PAUSE_SQL = _NOW + (
    "UPDATE delivery_pacing AS p SET hold_until = GREATEST(p.hold_until, clock.now + %s),"
    " next_slot = GREATEST(p.next_slot, clock.now + %s) FROM clock WHERE p.workspace = %s"
    " RETURNING p.hold_until - clock.now"
)
_DELAY_SQL = (
    "SELECT GREATEST(next_slot, hold_until) - EXTRACT(EPOCH FROM clock_timestamp())::float8"
    " FROM delivery_pacing WHERE workspace = %s"
)
_PAUSE_LEFT_SQL = (
    "SELECT hold_until - EXTRACT(EPOCH FROM clock_timestamp())::float8 FROM delivery_pacing WHERE workspace = %s"
)
_INSERT_SQL = "INSERT INTO delivery_pacing (workspace) VALUES (%s) ON CONFLICT (workspace) DO NOTHING"


def workspace_key(site_id: str, track_url: str) -> str:
    """The pacing row's key: a digest of the Site ID and Track URL (the ID itself is not stored)."""
    return hashlib.sha256(f"{site_id}\n{track_url.rstrip('/')}".encode()).hexdigest()[:32]


def shared_pacer(storage: Storage, workspace: Callable[[], str], rate: float) -> PostgresPacer | None:
    """With PostgreSQL, the pacer every replica of ``workspace()`` shares; ``None`` where each process
    paces itself (``workspace`` is only called when a shared pacer is made)."""
    if not isinstance(storage, PostgresStorage):
        return None
    return PostgresPacer(storage, workspace(), rate)


def _seconds(row: Any) -> float | None:
    """The one value of a pacing statement's row, in seconds (``None``: the workspace has no row)."""
    if row is None:
        return None
    (seconds,) = row
    return float(seconds)


class PacingRows:
    """The ``delivery_pacing`` rows: per workspace the next slot and the end of a pause, in seconds
    from now on the database's clock (``None``: the workspace has no row)."""

    def __init__(self, db: PostgresStorage) -> None:
        self.db = db

    def ensure(self, workspace: str) -> None:
        """Create the workspace's row if missing."""
        with self.db.transaction() as tx:
            tx.execute(_INSERT_SQL, (workspace,))

    def take(self, workspace: str, interval: float) -> tuple[float, float] | None:
        """Reserve a slot: ``(seconds to after the slot, seconds of pause left)``."""
        with self.db.transaction() as tx:
            row = tx.execute(_TAKE_SQL, (interval, workspace)).fetchone()
        if row is None:
            return None
        after_slot, pause_left = row
        return float(after_slot), float(pause_left)

    def take_spare(self, workspace: str, interval: float) -> bool:
        """Take the slot of now if it is free and no pause is in force (never waits)."""
        with self.db.transaction() as tx:
            return tx.execute(_SPARE_SQL, (interval, workspace)).fetchone() is not None

    def delay(self, workspace: str) -> float | None:
        """Seconds until the next slot or the end of the pause, whichever is later."""
        with self.db.transaction() as tx:
            row = tx.execute(_DELAY_SQL, (workspace,)).fetchone()
        return _seconds(row)

    def pause_left(self, workspace: str) -> float | None:
        """Seconds of pause left."""
        with self.db.reading() as tx:
            row = tx.execute(_PAUSE_LEFT_SQL, (workspace,)).fetchone()
        return _seconds(row)

    def pause(self, workspace: str, seconds: float) -> float | None:
        """Extend the pause to at least ``seconds``; returns the pause left."""
        with self.db.transaction() as tx:
            row = tx.execute(_PAUSE_SQL, (seconds, seconds, workspace)).fetchone()
        return _seconds(row)


class PostgresPacer:
    """Rate limit and pauses in a PostgreSQL row, shared by every replica of a workspace."""

    def __init__(self, db: PostgresStorage, workspace: str, rate: float) -> None:
        self.store = PacingRows(db)
        self.workspace = workspace
        self.interval = 1.0 / rate
        self._lock = threading.Lock()
        self._pause_end = 0.0  # monotonic end of the pause as last seen in the row
        self._ensure_row()

    def _ensure_row(self) -> None:
        self.store.ensure(self.workspace)

    def _seen_pause(self, remaining: float) -> float:
        remaining = finite_delay(remaining)
        with self._lock:
            self._pause_end = max(self._pause_end, time.monotonic() + remaining) if remaining > 0 else self._pause_end
        return remaining

    def pause_remaining(self) -> float:
        """Seconds left of the pause as last seen (no round trip; :meth:`take` always asks the row)."""
        with self._lock:
            return max(0.0, self._pause_end - time.monotonic())

    def take(self, stop: threading.Event) -> bool:
        """Reserve the next shared slot and wait for it; False while a pause is in force or on ``stop``."""
        if self.pause_remaining() > 0:
            return False
        row = self.store.take(self.workspace, self.interval)
        if row is None:  # the row went missing (schema recreated): make it again
            self._ensure_row()
            return False
        after_slot, pause = row
        if self._seen_pause(pause) > 0:
            return False
        wait = finite_delay(after_slot - self.interval)
        if wait <= 0:
            return True
        if stop.wait(wait):
            return False
        left = self.store.pause_left(self.workspace)
        return left is None or self._seen_pause(left) <= 0

    def take_spare(self) -> bool:
        """The shared slot of now, if no replica reserved it and no pause is in force (never waits)."""
        if self.pause_remaining() > 0:
            return False
        return self.store.take_spare(self.workspace, self.interval)

    def reserve_delay(self) -> float:
        """Seconds until the shared next slot (or the end of the pause), without reserving it."""
        delay = self.store.delay(self.workspace)
        return 0.0 if delay is None else finite_delay(delay)

    def pause_for(self, seconds: float) -> None:
        """Pause every replica for ``seconds`` (the pause seen locally even if the database fails)."""
        seconds = finite_delay(seconds)
        self._seen_pause(seconds)
        try:
            left = self.store.pause(self.workspace, seconds)
        except Exception as exc:
            log.warning("could not share the delivery pause: %s: %s", type(exc).__name__, exc)
            return
        if left is not None:
            self._seen_pause(left)
