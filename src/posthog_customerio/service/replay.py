"""Signed webhooks are processed once per ``webhook-id`` (Standard Webhooks replay protection).

The Standard Webhooks specification ("Verifying signatures") asks receivers to use the
``webhook-id`` header as an idempotency key so that one webhook is not processed more than
once, for as long as its signed timestamp is accepted. A signed request can be replayed
verbatim only while its ``webhook-timestamp`` is within the tolerance (5 minutes, the
``standardwebhooks`` library's), so an id is remembered until its timestamp leaves that window.

:class:`ReplayGuard` keeps the ids in process memory (SHA-256 digests, at most ``max_ids``,
the oldest forgotten first): a restart, or another replica behind the same load balancer,
does not know them. A replay is answered ``200`` (with ``"replayed": true``) and stores
nothing: the specification counts any 2xx as delivered, so the sender stops retrying. A
request whose id is still being stored by another request is answered ``409``: the sender
retries, and gets ``200`` once the first request committed (or is processed, if it failed).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from enum import Enum

__all__ = ["DEFAULT_MAX_IDS", "WEBHOOK_TOLERANCE_S", "Claim", "ReplayGuard"]

#: how far ``webhook-timestamp`` may be from now (what ``standardwebhooks`` accepts, either way)
WEBHOOK_TOLERANCE_S = 5 * 60
#: ids remembered at most (about 100 bytes each): beyond this the oldest are forgotten first
DEFAULT_MAX_IDS = 100_000
#: in flight: not yet committed, so no expiry yet
_IN_FLIGHT = float("inf")


class Claim(Enum):
    """What :meth:`ReplayGuard.claim` found for a webhook id."""

    NEW = "new"  #: process it; then :meth:`ReplayGuard.commit` or :meth:`ReplayGuard.release`
    DONE = "done"  #: stored already: answer 200, store nothing
    IN_FLIGHT = "in_flight"  #: another request with this id is being stored: answer 409


class ReplayGuard:
    """Webhook ids seen within the timestamp tolerance, bounded in number; thread-safe."""

    def __init__(
        self,
        tolerance_s: float = WEBHOOK_TOLERANCE_S,
        max_ids: int = DEFAULT_MAX_IDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tolerance_s = tolerance_s
        self.max_ids = max_ids
        self.clock = clock
        #: digest of the id -> wall time it may be forgotten (``inf`` while in flight); oldest first
        self._ids: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._ids)

    @staticmethod
    def _key(webhook_id: str) -> bytes:
        return hashlib.sha256(webhook_id.encode("utf-8", "surrogatepass")).digest()

    def claim(self, webhook_id: str) -> Claim:
        """Mark ``webhook_id`` in flight when it is new; say what was known of it otherwise."""
        key = self._key(webhook_id)
        with self._lock:
            self._forget_expired()
            expires = self._ids.get(key)
            if expires is not None:
                return Claim.IN_FLIGHT if expires == _IN_FLIGHT else Claim.DONE
            while len(self._ids) >= self.max_ids:
                self._ids.popitem(last=False)
            self._ids[key] = _IN_FLIGHT
            return Claim.NEW

    def commit(self, webhook_id: str, timestamp: float) -> None:
        """The request with this id was stored: remember it until ``timestamp`` leaves the tolerance."""
        key = self._key(webhook_id)
        with self._lock:
            self._ids[key] = max(timestamp, self.clock()) + self.tolerance_s + 1
            self._ids.move_to_end(key)

    def release(self, webhook_id: str) -> None:
        """The request with this id failed: forget it, so the sender's retry is processed."""
        with self._lock:
            self._ids.pop(self._key(webhook_id), None)

    def _forget_expired(self) -> None:
        now = self.clock()
        while self._ids:
            key, expires = next(iter(self._ids.items()))
            if expires == _IN_FLIGHT or expires > now:
                return
            del self._ids[key]
