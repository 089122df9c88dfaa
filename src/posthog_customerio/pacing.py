"""Request pacing shared by every replica of one Customer.io workspace (PostgreSQL).

With ``OUTBOX_URL=postgresql://…`` several processes deliver to the same workspace;
``CUSTOMERIO_MAX_RPS`` and a ``Retry-After`` (or back-off) pause must hold for all of
them together. One row of ``delivery_pacing`` per workspace holds the next free
request slot and the end of the current pause, both on the database's clock (the
replicas' clocks never matter; the SQL is :class:`~.storage.postgres.PostgresPacing`):

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

from .delivery import finite_delay
from .storage import PacingStore

__all__ = ["PostgresPacer", "workspace_key"]

log = logging.getLogger(__name__)


def workspace_key(site_id: str, track_url: str) -> str:
    """The pacing row's key: a digest of the Site ID and Track URL (the ID itself is not stored)."""
    return hashlib.sha256(f"{site_id}\n{track_url.rstrip('/')}".encode()).hexdigest()[:32]


class PostgresPacer:
    """Rate limit and pauses in a PostgreSQL row, shared by every replica of a workspace."""

    def __init__(self, store: PacingStore, workspace: str, rate: float) -> None:
        self.store = store
        self.workspace = workspace
        self.interval = 1.0 / rate
        self._lock = threading.Lock()
        self._hold_end = 0.0  # monotonic end of the pause as last seen in the row
        self._ensure_row()

    def _ensure_row(self) -> None:
        self.store.ensure(self.workspace)

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
        row = self.store.take(self.workspace, self.interval)
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
        held = self.store.held(self.workspace)
        return held is None or self._seen_hold(held) <= 0

    def reserve_delay(self) -> float:
        """Seconds until the shared next slot (or the end of the pause), without reserving it."""
        delay = self.store.delay(self.workspace)
        return 0.0 if delay is None else finite_delay(delay)

    def hold_for(self, seconds: float) -> None:
        """Pause every replica for ``seconds`` (the pause seen locally even if the database fails)."""
        seconds = finite_delay(seconds)
        self._seen_hold(seconds)
        try:
            held = self.store.hold(self.workspace, seconds)
        except Exception as exc:
            log.warning("could not share the delivery pause: %s: %s", type(exc).__name__, exc)
            return
        if held is not None:
            self._seen_hold(held)
