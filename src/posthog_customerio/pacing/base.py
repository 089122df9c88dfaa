"""The pacing interface: request slots and pauses the delivery workers share.

A :class:`Pacer` hands out request slots at most ``1 / interval`` per second and holds
every slot back during a pause (``Retry-After``, back-off). Implementations:
:class:`~.local.RateLimiter` (one process) and :class:`~.postgres.PostgresPacer` (every
replica of a workspace, on a PostgreSQL row).
"""

from __future__ import annotations

import math
import threading
from typing import Protocol

__all__ = ["MAX_PAUSE_S", "Pacer", "finite_delay"]

#: no pause is ever longer than this, whatever computed it (a wait of ``inf`` raises OverflowError)
MAX_PAUSE_S = 3600.0


def finite_delay(seconds: float) -> float:
    """``seconds`` within ``[0, MAX_PAUSE_S]`` (``nan`` -> 0)."""
    return 0.0 if math.isnan(seconds) else min(max(0.0, seconds), MAX_PAUSE_S)


class Pacer(Protocol):
    """Request slots and pauses shared by the workers.

    ``interval`` is the time between two slots (seconds, ``1 / rate``).
    """

    interval: float

    def take(self, stop: threading.Event) -> bool:
        """Wait for a request slot; False while a pause is in force or when ``stop`` is set."""
        ...

    def pause_for(self, seconds: float) -> None:
        """No request for ``seconds`` from now (clamped by :func:`finite_delay`)."""
        ...

    def pause_remaining(self) -> float:
        """Seconds left of the current pause, as last known (0 when none)."""
        ...

    def reserve_delay(self) -> float:
        """Seconds until the next request slot is free, without reserving it (0 = free now)."""
        ...

    def take_spare(self) -> bool:
        """The request slot of now if nobody reserved it and no pause is in force (never waits): what
        anonymous events send with, so they only use the budget person work leaves."""
        ...
