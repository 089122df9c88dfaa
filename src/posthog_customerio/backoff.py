"""The one backoff of every retry loop: exponential, capped, optionally jittered.

After the ``n``-th failure in a row a :class:`Backoff` waits ``base * 2**(n-1)`` seconds, at
most ``cap``; with ``jitter`` > 0 a share of that is randomised away (``jitter=0.5``: a delay in
``[½, 1]`` of it). A server's ``Retry-After``, when given, wins over the computed delay (bounded
by ``retry_after_max``). The random source is injectable, so tests see fixed delays; nothing
here sleeps.

Used by the delivery pause after a transient failure (:mod:`.settlement`), the restarts of
dead delivery workers (:mod:`.delivery`) and the Kafka source's store and commit retries.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass(slots=True)
class Backoff:
    """Exponential backoff: ``base * 2**(n-1)`` after ``n`` failures, capped at ``cap``, then jittered.

    ``jitter`` is the share of the delay that is random: the delay is ``d * (1 - jitter)
    + d * jitter * random()`` (0: exactly ``d``; the default ½: uniform in ``[d/2, d]``).
    """

    base: float = 0.5
    cap: float = 60.0
    jitter: float = 0.5
    #: the longest pause a ``Retry-After`` may impose (the outputs already clamp it to ``RETRY_AFTER_MAX_S``)
    retry_after_max: float = math.inf
    #: a float in ``[0, 1)`` per call (``random.random``; tests pass a fixed one)
    random: Callable[[], float] = field(default=random.random, repr=False, compare=False)
    #: failures in a row since the last :meth:`reset`
    failures: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"jitter must be within [0, 1], not {self.jitter}")

    def delay(self, failures: int) -> float:
        """The delay after ``failures`` failures in a row (no state change; ``failures`` < 1 gives 0)."""
        if failures < 1:
            return 0.0
        # 2.0 ** 1024 overflows: past that the cap has long been reached
        ceiling = min(self.cap, self.base * 2.0 ** min(failures - 1, 1023))
        if not self.jitter:
            return ceiling
        return ceiling * (1 - self.jitter) + ceiling * self.jitter * self.random()

    def next_delay(self, retry_after: float | None = None) -> float:
        """Count one more failure and return the delay before the next try; a finite
        ``retry_after`` (the server's ``Retry-After``) wins, within ``[0, retry_after_max]``."""
        self.failures += 1
        if retry_after is not None and math.isfinite(retry_after):
            return min(max(0.0, retry_after), self.retry_after_max)
        return self.delay(self.failures)

    def reset(self) -> None:
        """A success: the next failure starts over at ``base``."""
        self.failures = 0
