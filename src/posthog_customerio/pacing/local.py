"""In-process pacing: one process delivers (SQLite, or no shared pacing)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .base import finite_delay

__all__ = ["RateLimiter"]


class RateLimiter:
    """Paces requests to at most ``rate`` per second across all workers.

    ``pause_until`` makes every caller wait until a moment (used for ``Retry-After``).
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 1.0 / rate
        self._clock = clock
        self._next = 0.0
        self._pause_end = 0.0
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Reserve a slot; returns how long the caller must sleep before using it."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
            return slot - now

    def reserve_delay(self) -> float:
        """How long a caller would wait now, without reserving (the next slot is that far)."""
        with self._lock:
            return max(0.0, self._next - self._clock())

    def take_spare(self) -> bool:
        """Take the slot of now if it is free and no pause is in force; never waits."""
        with self._lock:
            now = self._clock()
            if self._next > now or self._pause_end > now:
                return False
            self._next = now + self.interval
            return True

    def pause_until(self, moment: float) -> None:
        """No slot before ``moment`` (a clock value); slots already handed out are void."""
        with self._lock:
            moment = self._clock() + finite_delay(moment - self._clock())
            self._next = max(self._next, moment)
            self._pause_end = max(self._pause_end, moment)

    def pause_for(self, seconds: float) -> None:
        """No slot for ``seconds`` from now."""
        self.pause_until(self._clock() + finite_delay(seconds))

    def paused(self) -> bool:
        """Whether a pause (``Retry-After``, back-off) is in force now."""
        return self.pause_remaining() > 0

    def pause_remaining(self) -> float:
        """Seconds until the current pause ends (0 when none)."""
        with self._lock:
            return max(0.0, self._pause_end - self._clock())

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Wait for a slot; False if ``stop`` was set while waiting."""
        delay = self.reserve()
        if delay <= 0:
            return True
        if stop is None:
            time.sleep(delay)
            return True
        return not stop.wait(delay)

    def take(self, stop: threading.Event) -> bool:
        """A slot, unless a pause is (or comes) in force or ``stop`` is set."""
        if self.paused():
            return False
        return self.acquire(stop) and not self.paused()
