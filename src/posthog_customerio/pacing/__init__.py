"""Request pacing: the rate limit and the pauses (``Retry-After``, back-off) delivery obeys.

:mod:`.base` declares the :class:`Pacer` interface; :mod:`.local` paces one process
(:class:`RateLimiter`, SQLite's one deliverer); :mod:`.postgres` shares the pace across
every replica of a workspace on a PostgreSQL row (:class:`PostgresPacer`, chosen by
:func:`shared_pacer` when the storage is PostgreSQL).
"""

from __future__ import annotations

from .base import MAX_PAUSE_S, Pacer, finite_delay
from .local import RateLimiter
from .postgres import PostgresPacer, shared_pacer, workspace_key

__all__ = [
    "MAX_PAUSE_S",
    "Pacer",
    "PostgresPacer",
    "RateLimiter",
    "finite_delay",
    "shared_pacer",
    "workspace_key",
]
