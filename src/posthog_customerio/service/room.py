"""Room in the outbox for a request (``MAX_QUEUE``, ``OUTBOX_MAX_QUEUED``), checked on the event loop.

The receivers check it before reading a request. The answers come from counts up to
:data:`MAX_AGE_S` old (and, for the bound, the operations this process wrote since: see
:mod:`posthog_customerio.bound`); only when a count is due does a request wait for one, in a
worker thread (it may wait for the database lock), one count for all the requests that need it.
"""

from __future__ import annotations

import asyncio
import time

from starlette.concurrency import run_in_threadpool

from ..bound import RETRY_AFTER_S, OutboxBound
from ..outbox import Outbox
from .bodies import HttpError

__all__ = ["MAX_AGE_S", "RoomGauge"]

#: how old a count may be
MAX_AGE_S = 1.0


class RoomGauge:
    """``check(source)``: a 503 with ``Retry-After`` while the outbox is full, else nothing."""

    def __init__(self, outbox: Outbox, bound: OutboxBound, max_queue: int) -> None:
        self.outbox = outbox
        self.bound = bound
        self.max_queue = max_queue
        #: the last depth count: (monotonic time, operations)
        self._depth: tuple[float, int] | None = None
        #: the count under way, and its event loop
        self._counting: tuple[asyncio.AbstractEventLoop, asyncio.Future[tuple[int, bool]]] | None = None

    def _count(self) -> tuple[int, bool]:
        depth = self.outbox.depth(MAX_AGE_S)
        full = self.bound.full(max_age_s=MAX_AGE_S)
        self._depth = (time.monotonic(), depth)
        return depth, full

    async def _counted(self) -> tuple[int, bool]:
        """A count, shared by the requests waiting for one at the same time."""
        loop = asyncio.get_running_loop()
        counting = self._counting
        if counting is None or counting[0] is not loop:
            future = asyncio.ensure_future(run_in_threadpool(self._count))
            counting = self._counting = (loop, future)
            future.add_done_callback(lambda _: setattr(self, "_counting", None))
        return await asyncio.shield(counting[1])

    def _known(self) -> tuple[int, bool] | None:
        """The depth and whether the bound is reached, when both are known without a count."""
        depth = self._depth
        if depth is None or time.monotonic() - depth[0] >= MAX_AGE_S:
            return None
        full = self.bound.full_if_known(MAX_AGE_S)
        return None if full is None else (depth[1], full)

    async def check(self, source: str) -> None:
        """Refuse (503) while ``MAX_QUEUE`` operations are queued in all, or ``OUTBOX_MAX_QUEUED`` of person work
        (anonymous events have their own bound and never make a request refused)."""
        known = self._known()
        depth, full = known if known is not None else await self._counted()
        if depth >= self.max_queue:
            message = f"outbox holds {depth} operations (MAX_QUEUE {self.max_queue}); retry later"
            raise HttpError(503, message, {"Retry-After": "30"})
        if full:
            bound = self.bound
            bound.refused(source)
            queued = await run_in_threadpool(bound.queued, MAX_AGE_S)
            raise HttpError(
                503,
                f"outbox holds {queued} operations of person work (OUTBOX_MAX_QUEUED {bound.max_queued}); retry later",
                {"Retry-After": str(RETRY_AFTER_S)},
            )
