"""Readiness and Customer.io's state: checks that run one at a time off the request path, cached."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from ..disk import disk_full_message, is_disk_full
from ..output.base import AuthError
from ..runtime import Runtime

__all__ = ["CustomerioProbe", "DeliveryWatch", "Readiness", "scrub"]

_READY_CACHE_S = 30.0


class _SingleFlight:
    """Runs one check at a time on its own thread (never the request thread pool) and caches the result."""

    def __init__(self, name: str, check: Callable[[], None]) -> None:
        self.check = check
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.started_at: float | None = None
        self.finished_at = 0.0
        self._future: asyncio.Future[None] | None = None

    def _run(self) -> None:
        try:
            self.check()
        finally:
            self.finished_at = time.monotonic()
            self.started_at = None

    def refresh(self, max_age_s: float) -> asyncio.Future[None] | None:
        """Start a check unless one is running or the last is younger than ``max_age_s`` (event loop only)."""
        if self._future is not None and not self._future.done():
            return self._future
        if time.monotonic() - self.finished_at < max_age_s:
            return None
        self.started_at = time.monotonic()
        self._future = asyncio.wrap_future(self.executor.submit(self._run))
        return self._future

    async def wait(self, max_age_s: float, timeout_s: float) -> None:
        """Refresh if stale and wait for the running check at most ``timeout_s``."""
        future = self.refresh(max_age_s)
        if future is not None:
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(future), timeout_s)

    def running_for(self) -> float:
        """Seconds the current check has been running (0 when none is)."""
        started = self.started_at
        return time.monotonic() - started if started is not None else 0.0

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


class Readiness:
    """``/readyz``: can this process accept events? The outbox takes a write and is below ``MAX_QUEUE`` and
    ``OUTBOX_MAX_QUEUED`` (the receivers answer 503 at either).

    Customer.io's state is not part of it (buffering while Customer.io is down is the job);
    :class:`CustomerioProbe` reports that in ``/healthz`` and ``/api/status``.
    """

    FRESH_S = 1.0
    WAIT_S = 2.0
    STUCK_S = 5.0

    def __init__(self, runtime: Runtime, max_queue: int) -> None:
        self.runtime = runtime
        self.max_queue = max_queue
        self.problems: list[str] = ["not checked yet"]
        #: age of the oldest queued operation at the last check (for :class:`DeliveryWatch`)
        self.oldest_age_s = 0.0
        self.flight = _SingleFlight("readyz", self._check)

    def _check(self) -> None:
        problems = []
        try:
            self.runtime.db.probe_write()
            depth = self.runtime.outbox.depth(max_age_s=1.0)
            self.oldest_age_s = self.runtime.outbox.oldest_age(claimable=True) if depth else 0.0
            limit = self.max_queue
            if depth >= limit:
                problems.append(f"outbox holds {depth} operations (MAX_QUEUE {limit})")
            # a small write may still fit where events do not (SQLite: the WAL's room): the room left is checked too
            full = self.runtime.db.disk_problem()
            if full:
                problems.append(f"outbox not writable: {full}")
            bound = self.runtime.bound
            if bound.full(max_age_s=1.0):
                problems.append(
                    f"outbox holds {bound.queued(max_age_s=1.0)} operations of person work"
                    f" (OUTBOX_MAX_QUEUED {bound.max_queued})"
                )
        except Exception as exc:  # sqlite3 or psycopg errors alike
            problem = disk_full_message(exc) if is_disk_full(exc) else f"{type(exc).__name__}: {str(exc)[:200]}"
            problems.append(f"outbox not writable: {problem}")
        self.problems = problems

    async def current(self) -> list[str]:
        """The problems (none = ready): at most one check runs, however many probes arrive."""
        await self.flight.wait(self.FRESH_S, self.WAIT_S)
        stuck = self.flight.running_for()
        if stuck > self.STUCK_S:
            return [f"outbox check has not answered for {stuck:.0f} s"]
        return list(self.problems)


class CustomerioProbe:
    """Customer.io's state for ``/healthz`` and ``/api/status``: credentials, reachability, last error.

    With delivery running in this process the state comes from delivery's own requests (a probe
    would only add traffic). Without it (``--role ingest``) Customer.io is asked at most every
    30 s, one check at a time, in the background: no request waits for it. No personal data.
    """

    MAX_AGE_S = _READY_CACHE_S

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.state: dict[str, Any] = {
            "credentials": "unknown",
            "reachable": None,
            "checked_at": None,
            "last_error": None,
            "last_error_at": None,
        }
        self.flight = _SingleFlight("customerio-probe", self._check)
        self._seen: dict[str, int] = {}
        #: wall time of the last operation Customer.io accepted (set by :meth:`note_delivered`)
        self.delivered_at: float | None = None

    def note_delivered(self, _items: object = None) -> None:
        """Delivery's callback: Customer.io just accepted operations (a later success clears an earlier error)."""
        self.delivered_at = time.time()

    def _check(self) -> None:
        state: dict[str, Any] = {"checked_at": time.time()}
        try:
            self.runtime.check_credentials()
            state.update(credentials="ok", reachable=True, last_error=None)
        except AuthError:
            state.update(credentials="rejected", reachable=True, last_error="Customer.io rejected the credentials")
        except httpx.HTTPStatusError as exc:
            state.update(reachable=True, last_error=f"HTTP {exc.response.status_code}")
        except Exception as exc:  # no answer, a bad answer, a failed region lookup
            state.update(reachable=False, last_error=f"unreachable: {type(exc).__name__}")
        if state["last_error"]:
            state["last_error_at"] = state["checked_at"]
        self.state = {**self.state, **state}

    def _from_delivery(self, auth_error: str | None, by_status: dict[str, int], error_seen_at: float | None) -> None:
        """What the delivery requests since the last look say."""
        new = {key: count for key, count in by_status.items() if count > self._seen.get(key, 0)}
        self._seen = by_status
        state: dict[str, Any] = {}
        if new:
            answered = sorted(int(key) for key in new if key.isdigit())
            state["checked_at"] = time.time()
            state["reachable"] = bool(answered)
            failed = [code for code in answered if code >= 400]
            if not answered:
                state["last_error"] = "unreachable: no answer to delivery requests"
            elif failed:
                state["last_error"] = f"HTTP {failed[-1]}"
            if any(200 <= code < 300 for code in answered):
                state["credentials"] = "ok"
        if auth_error:
            state.update(credentials="rejected", last_error="Customer.io rejected the credentials")
        if state.get("last_error"):
            state["last_error_at"] = error_seen_at or time.time()
        merged = {**self.state, **state}
        error_at = merged["last_error_at"] or 0.0
        if not auth_error and self.delivered_at is not None and self.delivered_at >= error_at:
            # recovered: a delivery succeeded after the error (its time is kept)
            merged["last_error"] = None
            if merged["credentials"] == "rejected":
                merged["credentials"] = "ok"
        self.state = merged

    def view(self) -> dict[str, Any]:
        """The last known state (event loop only: may start a background check)."""
        deliverer = self.runtime.current_deliverer
        if deliverer is None:
            self.flight.refresh(self.MAX_AGE_S)
        else:
            stats = deliverer.stats
            self._from_delivery(deliverer.auth_error, dict(stats.requests_by_status), stats.last_error_at)
        return dict(self.state)


class DeliveryWatch:
    """Whether delivery makes progress, beyond the workers' own state.

    ``retrying``: queued work has waited longer than ``stall_s`` and nothing settled (delivered or
    dead-lettered) for as long, while Customer.io keeps answering (e.g. 429 with ``Retry-After: 0``);
    ``stalled``: the same with no request ending at all (a hung Customer.io). Settling is seen by
    comparing counters at each look, so a rarely polled watch only ever under-reports progress.
    """

    def __init__(self, stall_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_s = stall_s
        self.clock = clock
        self._settled: tuple[int, int] | None = None
        self._settled_at = clock()
        self._requests_at_settle = 0

    def state(self, deliverer: Any, dead_lettered: int, oldest_age_s: float) -> tuple[str, float]:
        """The delivery state and the seconds since an operation last settled (as far as seen)."""
        now = self.clock()
        stats = deliverer.stats
        settled = (stats.delivered, dead_lettered)
        if settled != self._settled:
            self._settled, self._settled_at, self._requests_at_settle = settled, now, stats.requests
        since = round(now - self._settled_at, 1)
        base = str(deliverer.state)
        if base != "running" or oldest_age_s < self.stall_s or since < self.stall_s:
            return base, since
        return ("retrying" if stats.requests > self._requests_at_settle else "stalled"), since


def stall_after_s(customerio_timeout_s: float) -> float:
    """How long work delivery could take (anonymous events the hold keeps do not count) may wait with
    nothing settled before ``/healthz`` calls delivery degraded: one request's timeout (a healthy outbox
    settles something within that)."""
    return customerio_timeout_s


_EMAIL = re.compile(r"[^\s@\"'<>(),;:]+@[^\s@\"'<>(),;:]+")


def scrub(text: str | None) -> str | None:
    """A text for the open endpoints: email addresses replaced (an upstream error may quote one)."""
    return _EMAIL.sub("<email>", text) if text else text
