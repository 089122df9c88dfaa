"""What the workspace records beside its data: attribute update failures, delivery metrics, form submissions.

An attribute update failure is a request answered 200 but not applied (spec ``identify``: "your request may
return 200 OK but produce an Attribute Update Failure"). Push metrics [pushMetrics], metrics [metrics] and v2
``delivery`` operations [delivery_operations] are recorded; the sandbox sends no messages, so delivery metrics
and ``/unsubscribe`` change no profile.
"""

from __future__ import annotations

import collections
from typing import Any

from ..operations import Op

__all__ = ["MAX_LOGGED_FAILURES", "MAX_LOGGED_RECORDS", "Records"]

MAX_LOGGED_FAILURES = 100_000
MAX_LOGGED_RECORDS = 200_000


class Records:
    """Bounded logs of failures, delivery metrics and form submissions, and the failure count."""

    def __init__(self) -> None:
        self._failures: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_LOGGED_FAILURES)
        self._metrics: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_LOGGED_RECORDS)
        self._forms: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_LOGGED_RECORDS)
        self.failure_count = 0

    def failures(self) -> list[dict[str, Any]]:
        """Identifies (and other ops) accepted with 200 but not applied."""
        return [dict(entry) for entry in self._failures]

    def last_failures(self, count: int) -> list[dict[str, Any]]:
        """The latest ``count`` failures (as stored)."""
        return list(self._failures)[-count:]

    def metrics(self) -> list[dict[str, Any]]:
        """Reported delivery metrics."""
        return [dict(entry) for entry in self._metrics]

    def metric_count(self) -> int:
        """How many delivery metrics are kept."""
        return len(self._metrics)

    def forms(self) -> list[dict[str, Any]]:
        """Form submissions."""
        return [dict(entry) for entry in self._forms]

    def fail(self, op: Op, who: tuple[str, str] | None, message: str, now: float) -> None:
        """Record an attribute update failure (the request still answers 200)."""
        self.failure_count += 1
        identifiers = {who[0]: who[1]} if who else None
        self._failures.append({"time": now, "action": op.action, "identifiers": identifiers, "message": message})

    def metric(self, record: dict[str, Any]) -> None:
        """Record a delivery metric."""
        self._metrics.append(record)

    def form(self, record: dict[str, Any]) -> None:
        """Record a form submission."""
        self._forms.append(record)
