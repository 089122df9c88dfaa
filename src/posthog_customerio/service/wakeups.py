"""Awaiting the group commit on the event loop, with one wake-up of the loop for a whole group.

``asyncio.wrap_future`` wakes the loop once per future (a write to its self-pipe from the
committing thread, each waiting for the GIL the loop holds): with a group of requests that cost
a fifth of the committer's time. :class:`Wakeups` collects the futures the committer finished
and wakes the loop once for all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["Wakeups", "wait_for"]

_T = TypeVar("_T")


class Wakeups:
    """Futures finished in other threads, handed to one event loop in batches."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._finished: list[tuple[asyncio.Future[Any], Future[Any]]] = []
        self._scheduled = False

    def wait(self, future: Future[_T]) -> asyncio.Future[_T]:
        """An asyncio future with ``future``'s outcome (cancelling it leaves ``future`` alone)."""
        waiter: asyncio.Future[_T] = self.loop.create_future()
        future.add_done_callback(lambda done: self._finish(waiter, done))
        return waiter

    def _finish(self, waiter: asyncio.Future[Any], done: Future[Any]) -> None:
        with self._lock:
            self._finished.append((waiter, done))
            if self._scheduled:
                return
            self._scheduled = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self.loop.call_soon_threadsafe(self._hand_over)

    def _hand_over(self) -> None:
        with self._lock:
            finished, self._finished = self._finished, []
            self._scheduled = False
        for waiter, done in finished:
            if waiter.cancelled():
                continue
            error = done.exception()
            if error is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(done.result())


_current: Wakeups | None = None


async def wait_for(future: Future[_T]) -> _T:
    """Await ``future`` (done in another thread) on the running loop, woken with the others done with it."""
    global _current
    loop = asyncio.get_running_loop()
    wakeups = _current
    if wakeups is None or wakeups.loop is not loop:
        wakeups = _current = Wakeups(loop)
    return await wakeups.wait(future)
