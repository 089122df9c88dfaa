"""A rolling window of latencies: p50/p99 of person work over the last minutes (status, metrics)."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

__all__ = ["LatencyWindow"]


class LatencyWindow:
    """Latencies observed over the last ``window_s`` seconds (at most ``keep`` of them, the newest)."""

    def __init__(
        self, window_s: float = 300.0, keep: int = 50_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window_s = window_s
        self._clock = clock
        self._seen: deque[tuple[float, float]] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def observe(self, latencies: Iterable[float]) -> None:
        """Record latencies (seconds) observed now."""
        now = self._clock()
        with self._lock:
            self._seen.extend((now, max(0.0, latency)) for latency in latencies)

    def percentiles(self) -> dict[str, float | int | None]:
        """``{"count", "p50_s", "p99_s", "window_s"}`` over the window (``None`` when nothing was observed)."""
        cutoff = self._clock() - self.window_s
        with self._lock:
            while self._seen and self._seen[0][0] < cutoff:
                self._seen.popleft()
            values = sorted(latency for _, latency in self._seen)
        return {
            "count": len(values),
            "p50_s": _rank(values, 0.50),
            "p99_s": _rank(values, 0.99),
            "window_s": self.window_s,
        }


def _rank(values: list[float], quantile: float) -> float | None:
    """The nearest-rank ``quantile`` of sorted ``values`` (``None`` when empty), rounded to milliseconds."""
    if not values:
        return None
    index = min(len(values) - 1, max(0, math.ceil(quantile * len(values)) - 1))
    return round(values[index], 3)
