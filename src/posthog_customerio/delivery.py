"""Delivery workers: outbox -> Customer.io, with batching, retries and rate limiting.

Each worker claims the oldest deliverable operations (per-person order is kept by
the outbox), packs them into one v2 ``/api/v2/batch`` request by bytes (or sends
them one by one through v1), and settles them from the answer:

* 200: acknowledged; 207: the listed items dead-lettered, the rest acknowledged;
* 400/404/413/422 on a batch: split in halves to isolate the bad operation, which
  is dead-lettered with the response;
* network errors, 408, 429, 5xx: kept queued, every worker waits (exponential
  backoff with jitter, or ``Retry-After`` when Customer.io sends it, clamped to
  ``[0, RETRY_AFTER_MAX_S]``); with PostgreSQL the pause and the rate limit are
  shared by every replica (:mod:`.pacing`);
* 401/403: delivery stops (``send``) or pauses and re-checks the credentials
  (``serve``); nothing is dropped.

A supervisor thread restarts a worker that dies for any reason (counted, reported
by ``/healthz`` and ``/metrics``).
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .customerio import AuthError, Outcome, SendResult, TrackClient
from .operations import MAX_BATCH_BYTES, MAX_OP_BYTES
from .outbox import Claimed, Outbox

__all__ = ["Deliverer", "DeliveryStats", "Pacer", "RateLimiter", "Backoff"]

log = logging.getLogger(__name__)

_BATCH_ENVELOPE = len('{"batch":[]}')
#: no pause is ever longer than this, whatever computed it (a wait of ``inf`` raises OverflowError)
MAX_HOLD_S = 3600.0


def finite_delay(seconds: float) -> float:
    """``seconds`` within ``[0, MAX_HOLD_S]`` (``nan`` -> 0)."""
    return 0.0 if math.isnan(seconds) else min(max(0.0, seconds), MAX_HOLD_S)


class Pacer(Protocol):
    """Request slots and pauses shared by the workers (:class:`RateLimiter`, or the PostgreSQL pacer)."""

    interval: float

    def take(self, stop: threading.Event) -> bool:
        """Wait for a request slot; False while a pause is in force or when ``stop`` is set."""
        ...

    def hold_for(self, seconds: float) -> None:
        """No request for ``seconds`` from now."""
        ...

    def hold_remaining(self) -> float:
        """Seconds left of the current pause, as last known (0 when none)."""
        ...


class RateLimiter:
    """Paces requests to at most ``rate`` per second across all workers.

    ``hold_until`` makes every caller wait until a moment (used for ``Retry-After``).
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 1.0 / rate
        self._clock = clock
        self._next = 0.0
        self._hold = 0.0
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Reserve a slot; returns how long the caller must sleep before using it."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
            return slot - now

    def reserve_delay(self) -> float:
        """How long a caller would wait now, without reserving."""
        with self._lock:
            return max(0.0, self._next - self._clock())

    def hold_until(self, moment: float) -> None:
        """No slot before ``moment`` (a clock value); slots already handed out are void."""
        with self._lock:
            moment = self._clock() + finite_delay(moment - self._clock())
            self._next = max(self._next, moment)
            self._hold = max(self._hold, moment)

    def hold_for(self, seconds: float) -> None:
        """No slot for ``seconds`` from now."""
        self.hold_until(self._clock() + finite_delay(seconds))

    def held(self) -> bool:
        """Whether a hold (``Retry-After``, back-off) is in force now."""
        return self.hold_remaining() > 0

    def hold_remaining(self) -> float:
        """Seconds until the current hold ends (0 when none)."""
        with self._lock:
            return max(0.0, self._hold - self._clock())

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
        if self.held():
            return False
        return self.acquire(stop) and not self.held()


@dataclass(slots=True)
class Backoff:
    """Exponential backoff with jitter: ``base * 2**n`` capped, randomised in [½, 1]."""

    base: float = 0.5
    cap: float = 60.0
    failures: int = 0

    def next_delay(self, retry_after: float | None = None) -> float:
        """Delay after one more failure; ``Retry-After`` wins when given."""
        self.failures += 1
        if retry_after is not None and math.isfinite(retry_after):
            return max(0.0, retry_after)
        ceiling = min(self.cap, self.base * 2 ** (self.failures - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def reset(self) -> None:
        """A success: start over."""
        self.failures = 0


@dataclass(slots=True)
class DeliveryStats:
    """Counters for one Deliverer (summary lines, status page, metrics)."""

    requests: int = 0
    requests_by_status: Counter[str] = field(default_factory=Counter)
    delivered: int = 0
    dead_lettered: int = 0
    retries: int = 0
    bytes_sent: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    recent_errors: deque[tuple[float, str]] = field(default_factory=lambda: deque(maxlen=20))
    worker_restarts: int = 0
    #: exception type of the last worker that died (no message: it may carry people's data)
    last_crash: str | None = None
    last_crash_at: float | None = None


class Deliverer:
    """A pool of worker threads draining an :class:`Outbox` into Customer.io."""

    def __init__(
        self,
        outbox: Outbox,
        client: TrackClient,
        *,
        api: str = "v2",
        concurrency: int = 4,
        max_rps: float = 100.0,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        max_op_bytes: int = MAX_OP_BYTES,
        max_batch_items: int = 1000,
        backoff: Backoff | None = None,
        pause_on_auth_error: bool = False,
        auth_retry_s: float = 60.0,
        idle_poll_s: float = 0.2,
        on_delivered: Callable[[Sequence[Claimed]], None] | None = None,
        linger_s: float = 0.0,
        pacer: Pacer | None = None,
        supervise_s: float = 0.5,
    ) -> None:
        self.outbox = outbox
        self.client = client
        self.api = api
        self.concurrency = concurrency
        self.limiter: Pacer = pacer if pacer is not None else RateLimiter(max_rps)
        self.max_batch_bytes = max_batch_bytes - _BATCH_ENVELOPE
        self.max_op_bytes = max_op_bytes
        self.max_batch_items = max_batch_items
        self.backoff = backoff or Backoff()
        self.pause_on_auth_error = pause_on_auth_error
        self.auth_retry_s = auth_retry_s
        self.idle_poll_s = idle_poll_s
        self.on_delivered = on_delivered
        self.linger_s = linger_s
        self.stats = DeliveryStats()
        self.auth_error: str | None = None
        self._stats_lock = threading.Lock()
        self._backoff_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._threads_lock = threading.Lock()
        self._supervisor: threading.Thread | None = None
        self.supervise_s = supervise_s

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        """Start the worker threads and their supervisor (idempotent)."""
        if self._threads:
            return
        self._stop.clear()
        with self._threads_lock:
            self._threads = [self._spawn(number) for number in range(self.concurrency)]
        self._supervisor = threading.Thread(target=self._supervise, name="delivery-supervisor", daemon=True)
        self._supervisor.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the workers; in-flight requests finish, unsent work stays queued."""
        self._stop.set()
        self.notify()
        deadline = time.monotonic() + timeout
        if self._supervisor is not None:
            self._supervisor.join(max(0.0, deadline - time.monotonic()))
        with self._threads_lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._threads_lock:
            self._threads = [thread for thread in self._threads if thread.is_alive()]

    def health(self) -> dict[str, object]:
        """Worker liveness for ``/healthz`` (no personal data: the crash is its exception type)."""
        with self._stats_lock:
            crash = {"error": self.stats.last_crash, "at": self.stats.last_crash_at} if self.stats.last_crash else None
            restarts = self.stats.worker_restarts
        return {
            "delivery_workers_alive": self.alive_workers(),
            "delivery_worker_restarts": restarts,
            "delivery_last_crash": crash,
        }

    def alive_workers(self) -> int:
        """How many worker threads are running now."""
        with self._threads_lock:
            return sum(thread.is_alive() for thread in self._threads)

    def _spawn(self, number: int) -> threading.Thread:
        thread = threading.Thread(target=self._run_worker, name=f"delivery-{number}", daemon=True)
        thread.start()
        return thread

    def _run_worker(self) -> None:
        """A worker's whole life: whatever kills it is recorded (the supervisor restarts it)."""
        try:
            self._work()
        except BaseException as exc:  # noqa: BLE001 - any death, reported and restarted
            log.error("delivery worker %s died: %s: %s", threading.current_thread().name, type(exc).__name__, exc,
                      exc_info=not isinstance(exc, MemoryError))
            with self._stats_lock:
                self.stats.last_crash = type(exc).__name__
                self.stats.last_crash_at = time.time()

    def _supervise(self) -> None:
        """Restart dead workers; after repeated deaths, wait longer (0.5 s doubling, at most 10 s)."""
        restarts: deque[float] = deque()
        while not self._stop.wait(self.supervise_s):
            try:
                with self._threads_lock:
                    dead = [number for number, thread in enumerate(self._threads) if not thread.is_alive()]
                now = time.monotonic()
                while restarts and restarts[0] < now - 60:
                    restarts.popleft()
                if not dead or (restarts and now - restarts[-1] < min(10.0, 0.5 * 2 ** len(restarts))):
                    continue
                with self._threads_lock:
                    if self._stop.is_set():
                        return
                    for number in dead:
                        self._threads[number] = self._spawn(number)
                restarts.append(now)
                with self._stats_lock:
                    self.stats.worker_restarts += len(dead)
                log.warning("restarted %d delivery worker(s)", len(dead))
            except Exception as exc:  # e.g. no thread can be started now: try again next tick
                log.error("delivery supervisor: %s: %s", type(exc).__name__, exc)

    def drain(self, grace_s: float) -> bool:
        """Deliver what can be delivered within ``grace_s``, then stop; True if emptied."""
        try:
            emptied = self.wait_until_empty(grace_s)
        except AuthError:
            emptied = False
        self.stop(timeout=max(1.0, grace_s))
        return emptied

    @property
    def state(self) -> str:
        """``running``, ``paused`` (credentials rejected), ``retrying``, ``down`` (no worker alive) or ``stopped``."""
        if not self._threads or self._stop.is_set():
            return "stopped"
        if self.alive_workers() == 0:
            return "down"
        if self.auth_error:
            return "paused"
        if self.limiter.hold_remaining() > 1.0:
            return "retrying"
        return "running"

    def notify(self) -> None:
        """Wake idle workers (new operations were enqueued)."""
        with self._wake:
            self._wake.notify_all()

    def wait_until_empty(self, timeout: float | None = None, tick: Callable[[], None] | None = None) -> bool:
        """Block until the outbox is empty; False on timeout.

        Raises :class:`AuthError` when credentials are rejected and delivery is not
        set to pause.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if tick is not None:
                tick()
            if self.auth_error and not self.pause_on_auth_error:
                raise AuthError(self.auth_error)
            if self.outbox.in_flight() == 0 and self.outbox.is_empty():
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    # -- the worker ------------------------------------------------------------
    def _work(self) -> None:
        lingered = False
        while not self._stop.is_set():
            if self.auth_error:
                self._wait_for_credentials()
                continue
            # back off without holding a claim (with replicas, a claim is a lease: it is
            # held for the length of a request, never across a Retry-After)
            hold = self.limiter.hold_remaining()
            if hold > 0:
                self._stop.wait(finite_delay(hold))
                continue
            items = self.outbox.claim(self._claim_size(), self.max_batch_bytes, self.max_op_bytes)
            if not items:
                with self._wake:
                    self._wake.wait(self.idle_poll_s)
                continue
            try:
                if self.linger_s and len(items) < self._claim_size() // 4 and not lingered:
                    # a trickle: let a fuller batch build up (fewer requests per event) — but
                    # never hold a claim while waiting
                    self.outbox.unclaim(items)
                    lingered = True
                    self._stop.wait(self.linger_s)
                    continue
                lingered = False
                self._deliver(items)
            except Exception as exc:  # a bug or a full disk: keep the claim's rows, back off, go on
                log.error("delivery worker error: %s: %s", type(exc).__name__, exc)
                self._note_error(f"internal error: {type(exc).__name__}: {exc}")
                try:
                    self.outbox.release(items, f"internal error: {type(exc).__name__}")
                except Exception:  # the database itself failed: forget the claim in memory only
                    self.outbox.forget_claims(items)
                self._stop.wait(1.0)

    def _deliver(self, items: list[Claimed]) -> None:
        if self.api == "v1":
            self._send_v1(items)
            return
        # anonymous events exist only in v1; everything else goes in one v2 batch.
        # Operations that depend on anonymous events are never in the same claim.
        v1_only = [item for item in items if item.payload.startswith('{"type":"anonymous"')]
        batch = [item for item in items if not item.payload.startswith('{"type":"anonymous"')]
        if batch and self._send_v2(batch) in (Outcome.TRANSIENT, Outcome.AUTH):
            self.outbox.release(v1_only, "held back: the batch before it was not delivered")
            return
        if v1_only:
            self._send_v1(v1_only)

    def _claim_size(self) -> int:
        """v2: up to ``max_batch_items``; v1: what a few seconds of requests can send."""
        if self.api == "v1":
            return max(1, min(self.max_batch_items, int(5 / self.limiter.interval)))
        return self.max_batch_items

    def _pace(self) -> bool:
        """Take a request slot; False (release the claim) while a back-off is in force."""
        return self.limiter.take(self._stop)

    def _send_v2(self, items: Sequence[Claimed]) -> Outcome:
        if not self._pace():
            self.outbox.release(items, "not sent: stopping or backing off")
            return Outcome.TRANSIENT
        body_bytes = sum(item.size for item in items) + len(items) - 1 + _BATCH_ENVELOPE
        result = self.client.send_batch([item.payload for item in items])
        self._count(result, body_bytes)
        if result.outcome is Outcome.OK:
            self._accepted(items)
        elif result.outcome is Outcome.PARTIAL:
            self._partially_accepted(items, result)
        elif result.outcome is Outcome.PERMANENT:
            self._rejected(items, result)
        else:
            self._not_delivered(items, result)
        return result.outcome

    def _partially_accepted(self, items: Sequence[Claimed], result: SendResult) -> None:
        failed = []
        for index, error in result.item_errors.items():
            if 0 <= index < len(items):
                reason = str(error.get("message") or error.get("reason") or "rejected by Customer.io")
                failed.append((items[index], reason, result.status, json.dumps(error)))
        failed_seqs = {item.seq for item, *_ in failed}
        self.outbox.dead_letter(failed)
        for _, reason, *_ in failed[:3]:
            self._note_error(f"dead-lettered: {reason}")
        self._accepted([item for item in items if item.seq not in failed_seqs], dead=len(failed))

    def _rejected(self, items: Sequence[Claimed], result: SendResult) -> None:
        """A whole request was refused: isolate the bad operation by halving."""
        if len(items) == 1:
            self.outbox.dead_letter([(items[0], result.describe(), result.status, result.body)])
            self._note_error(f"dead-lettered: {result.describe()}")
            with self._stats_lock:
                self.stats.dead_lettered += 1
            return
        middle = len(items) // 2
        first, second = items[:middle], items[middle:]
        if self._send_v2(first) in (Outcome.TRANSIENT, Outcome.AUTH):
            self.outbox.release(second, "held back: an earlier part of the batch was not delivered")
            return
        self._send_v2(second)

    def _send_v1(self, items: Sequence[Claimed]) -> None:
        for position, item in enumerate(items):
            if not self._pace():
                self.outbox.release(items[position:], "not sent: stopping or backing off")
                return
            payload = json.loads(item.payload)
            try:
                result = self.client.send_v1(payload)
            except ValueError:  # no v1 equivalent (objects, ...): use v2 for this one
                if self._send_v2([item]) in (Outcome.TRANSIENT, Outcome.AUTH):
                    self.outbox.release(items[position + 1 :], "held back")
                    return
                continue
            self._count(result, item.size)
            if result.outcome in (Outcome.OK, Outcome.PARTIAL):
                self._accepted([item])
            elif result.outcome is Outcome.PERMANENT:
                self._rejected([item], result)
            else:
                self._not_delivered(items[position:], result)
                return

    # -- settling helpers --------------------------------------------------------
    def _accepted(self, items: Sequence[Claimed], dead: int = 0) -> None:
        self.outbox.ack(items)
        if self.on_delivered is not None and items:
            self.on_delivered(items)
        with self._stats_lock:
            self.stats.delivered += len(items)
            self.stats.dead_lettered += dead
        with self._backoff_lock:
            self.backoff.reset()

    def _not_delivered(self, items: Sequence[Claimed], result: SendResult) -> None:
        self.outbox.release(items, result.describe())
        if result.outcome is Outcome.AUTH:
            if self.auth_error is None:
                self._note_error(result.error or result.describe())
            self.auth_error = result.error or result.describe()
            log.error("Customer.io rejected the credentials: delivery paused, %d operations kept", self.outbox.depth())
            return
        self._note_error(result.error or result.describe())
        with self._backoff_lock:
            delay = self.backoff.next_delay(result.retry_after)
        with self._stats_lock:
            self.stats.retries += len(items)
        self.limiter.hold_for(delay)
        log.warning("Customer.io unavailable (%s); retrying in %.1fs", result.describe()[:120], delay)

    def _count(self, result: SendResult, sent_bytes: int) -> None:
        with self._stats_lock:
            self.stats.requests += 1
            self.stats.bytes_sent += sent_bytes
            self.stats.requests_by_status[str(result.status or "error")] += 1

    def _note_error(self, message: str) -> None:
        with self._stats_lock:
            self.stats.last_error = message[:500]
            self.stats.last_error_at = time.time()
            self.stats.recent_errors.append((self.stats.last_error_at, self.stats.last_error))

    def _wait_for_credentials(self) -> None:
        """While paused on 401/403: stop (``send``) or re-check every ``auth_retry_s``."""
        if not self.pause_on_auth_error or threading.current_thread().name != "delivery-0":
            self._stop.wait(self.idle_poll_s)  # one worker re-checks; the others wait for it
            return
        if self._stop.wait(self.auth_retry_s):
            return
        try:
            self.client.account_region()
        except AuthError:
            log.error("credentials still rejected; next check in %.0fs", self.auth_retry_s)
            return
        except Exception as exc:  # network trouble: try again later
            log.warning("credential check failed: %s", exc)
            return
        log.info("credentials accepted again: delivery resumes")
        self.auth_error = None
