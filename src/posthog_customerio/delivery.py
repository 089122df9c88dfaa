"""Delivery workers: outbox -> Customer.io, with batching, retries and rate limiting.

A :class:`Deliverer` is the worker pool: each worker claims the oldest deliverable
person work (per-person order is kept by the outbox), lets the configured output
(:mod:`.output`, ``CUSTOMERIO_API``) split them into requests, sends those in order
and applies what the settlement policy (:mod:`.settlement`) decides for each answer:
acknowledge, dead-letter, halve and retry, or release and pause every worker
(``Retry-After`` clamped to ``[0, RETRY_AFTER_MAX_S]``; with PostgreSQL the pause and
the rate limit are shared by every replica, :mod:`.pacing`). On 401/403 delivery
stops (``send``) or pauses and one worker re-checks the credentials (``serve``);
nothing is dropped.

People first: person work (identifies, events of known people, merges, deletes, objects...) is
claimed from its own lane of the outbox and never waits behind anonymous events. Only when a
worker finds no person work does it send anonymous events, and only in a request slot nobody
reserved (:meth:`~.pacing.Pacer.take_spare`): they use the request budget person work leaves,
and after a pause (``Retry-After``, back-off) they wait longer than person work does. While they
wait they stay adoptable: an identify turns a visitor's waiting events into batched person events.

A supervisor thread restarts a worker that dies for any reason (counted, reported
by ``/healthz`` and ``/metrics``).

A full disk (an acknowledgement that cannot be written, :func:`~.disk.is_disk_full`) pauses every worker:
the operations stay queued, and nothing is sent until the database has room again (each attempt would send
Customer.io again what could not be recorded); ``send`` stops on it instead (:class:`~.disk.DiskFull`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .backoff import Backoff
from .disk import DiskFull, disk_full_message, is_disk_full
from .latency import LatencyWindow
from .operations import Claimed
from .outbox import LeaseHeartbeat, LeaseLost, Outbox
from .output.base import AuthError, Output, SendResult, Unit
from .pacing import Pacer, RateLimiter, finite_delay
from .settlement import Settlement, Verdict

__all__ = ["Deliverer", "DeliveryStats"]

log = logging.getLogger(__name__)

#: at the rate limit a batch lingers at most this long (or ``DELIVERY_LINGER_S`` if longer), at most ten slots
RATE_LINGER_MAX_S = 2.0
#: a claim of anonymous events sent one request each (Track API) holds at most this many: a visitor who
#: identifies meanwhile waits for at most this many requests of one worker, and the rest stay adoptable
ANONYMOUS_BURST = 10
#: after a pause, anonymous events wait as long again as person work does, at least this much longer
ANONYMOUS_EXTRA_PAUSE_S = 1.0
#: after a write failed on a full disk, delivery waits this long, then as long again until the database has room
DISK_FULL_RETRY_S = 5.0
#: after ``n`` worker restarts within a minute the supervisor waits ``2**(n-1)`` s (1, 2, 4, 8, then 10 s)
#: before restarting dead workers again
_RESTART_BACKOFF = Backoff(base=1.0, cap=10.0, jitter=0.0)


@dataclass(slots=True)
class DeliveryStats:
    """Counters for one Deliverer (summary lines, status page, metrics)."""

    requests: int = 0
    requests_by_status: Counter[str] = field(default_factory=Counter)
    delivered: int = 0
    retries: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    recent_errors: deque[tuple[float, str]] = field(default_factory=lambda: deque(maxlen=20))
    worker_restarts: int = 0
    #: exception type of the last worker that died (no message: it may carry people's data)
    last_crash: str | None = None
    last_crash_at: float | None = None


class Deliverer:
    """A pool of worker threads draining an :class:`Outbox` into Customer.io through one output."""

    def __init__(
        self,
        outbox: Outbox,
        output: Output,
        *,
        concurrency: int = 4,
        max_rps: float = 100.0,
        max_batch_bytes: int | None = None,
        max_op_bytes: int | None = None,
        max_batch_items: int = 1000,
        backoff: Backoff | None = None,
        pause_on_auth_error: bool = False,
        auth_retry_s: float = 60.0,
        idle_poll_s: float = 0.2,
        on_delivered: Callable[[Sequence[Claimed]], None] | None = None,
        linger_s: float = 0.0,
        pacer: Pacer | None = None,
        supervise_s: float = 0.5,
        adapt_to_rate: bool = True,
    ) -> None:
        self.outbox = outbox
        self.output = output
        self.concurrency = concurrency
        self.limiter: Pacer = pacer if pacer is not None else RateLimiter(max_rps)
        self.max_batch_bytes = output.max_batch_bytes if max_batch_bytes is None else max_batch_bytes
        self.max_op_bytes = output.max_op_bytes if max_op_bytes is None else max_op_bytes
        self.max_batch_items = max_batch_items
        self.settlement = Settlement(backoff)
        self.pause_on_auth_error = pause_on_auth_error
        self.auth_retry_s = auth_retry_s
        self.idle_poll_s = idle_poll_s
        self.on_delivered = on_delivered
        self.linger_s = linger_s
        #: at the rate limit, batches wait longer and grow instead of queueing small ones (see ``_claim_at_slot``)
        self.adapt_to_rate = adapt_to_rate
        self._rate_linger = 0.0  # the current wait at the rate limit (0 = below it)
        #: whether the last claim of person work found any (the rate-limit linger is for person work only)
        self._person_work_seen = True
        #: anonymous events wait until this monotonic time (set by a pause: person work goes first after it)
        self._anonymous_resume_at = 0.0
        #: per worker: whether its last batched claim of anonymous events was given back to linger
        self._local = threading.local()
        #: held by the one worker that lingers for the next request slot
        self._slot_turn = threading.Lock()
        self.stats = DeliveryStats()
        #: enqueue -> accepted of person work (every kind but anonymous events), the last minutes
        self.person_latency = LatencyWindow()
        self.auth_error: str | None = None
        #: ``disk full: ...`` while delivery waits for room in the database (an acknowledgement could not be written)
        self.disk_full: str | None = None
        self._stats_lock = threading.Lock()
        #: held by the one worker that looks whether the database has room again
        self._space_check = threading.Lock()
        #: held by the one worker that re-checks rejected credentials
        self._recheck = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._threads_lock = threading.Lock()
        self._supervisor: threading.Thread | None = None
        self.supervise_s = supervise_s
        #: PostgreSQL: renews the leases of every claim the workers hold while delivery runs
        self.heartbeat = LeaseHeartbeat(outbox)

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
        self.heartbeat.start()

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
        # the workers' last requests are settled (or abandoned): their leases need no more renewing
        self.heartbeat.stop(max(0.0, deadline - time.monotonic()))
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
        thread = threading.Thread(target=self._run_worker, args=(number,), name=f"delivery-{number}", daemon=True)
        thread.start()
        return thread

    def _run_worker(self, number: int = 0) -> None:
        """A worker's whole life: whatever kills it is recorded (the supervisor restarts it). With more than
        one worker, worker 0 sends person work only: it is never busy with anonymous events when some comes."""
        try:
            self._work(anonymous=number > 0 or self.concurrency == 1)
        except BaseException as exc:
            log.error(
                "delivery worker %s died: %s: %s",
                threading.current_thread().name,
                type(exc).__name__,
                exc,
                exc_info=not isinstance(exc, MemoryError),
            )
            with self._stats_lock:
                self.stats.last_crash = type(exc).__name__
                self.stats.last_crash_at = time.time()

    def _supervise(self) -> None:
        """Restart dead workers; after repeated deaths, wait longer (:data:`_RESTART_BACKOFF`: 1 s
        after one restart within the last minute, doubling, at most 10 s)."""
        restarts: deque[float] = deque()
        while not self._stop.wait(self.supervise_s):
            try:
                with self._threads_lock:
                    dead = [number for number, thread in enumerate(self._threads) if not thread.is_alive()]
                now = time.monotonic()
                while restarts and restarts[0] < now - 60:
                    restarts.popleft()
                if not dead or (restarts and now - restarts[-1] < _RESTART_BACKOFF.delay(len(restarts))):
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
        """Deliver what can be delivered within ``grace_s``, then stop; True if emptied.

        Anonymous operations still held stay queued (durable) for the next start: an identify
        reaching it inside their window still adopts them.
        """
        try:
            emptied = self.wait_until_drained(grace_s)
        except AuthError:
            emptied = False
        self.stop(timeout=max(1.0, grace_s))
        return emptied

    @property
    def state(self) -> str:
        """``running``, ``paused`` (credentials rejected), ``disk_full`` (waiting for room in the database),
        ``retrying``, ``down`` (no worker alive) or ``stopped``."""
        if not self._threads or self._stop.is_set():
            return "stopped"
        if self.alive_workers() == 0:
            return "down"
        if self.disk_full:
            return "disk_full"
        if self.auth_error:
            return "paused"
        if self.limiter.pause_remaining() > 1.0:
            return "retrying"
        return "running"

    def notify(self) -> None:
        """Wake idle workers (new operations were enqueued)."""
        with self._wake:
            self._wake.notify_all()

    def wait_until_empty(self, timeout: float | None = None, tick: Callable[[], None] | None = None) -> bool:
        """Block until the outbox is empty, anonymous operations still held included (they go once
        their anonymous hold ends, or at once after :meth:`~.outbox.Outbox.input_finished`); False on timeout.

        Raises :class:`AuthError` when credentials are rejected and delivery is not
        set to pause, and :class:`~.disk.DiskFull` on a full disk then too (a batch job stops; ``serve`` waits).
        """
        return self._wait(self.outbox.is_empty, timeout, tick)

    def wait_until_drained(self, timeout: float | None = None, tick: Callable[[], None] | None = None) -> bool:
        """As :meth:`wait_until_empty`, but anonymous operations the anonymous hold still keeps for an identify
        that may come do not count (:meth:`~.outbox.Outbox.is_drained`): stopping leaves them queued."""
        return self._wait(self.outbox.is_drained, timeout, tick)

    def check_failed(self) -> None:
        """Raise :class:`AuthError` when the credentials were rejected (:class:`DiskFull` when the database has no
        room left) and delivery is not set to pause (``send``): nothing will be delivered, so nothing should wait
        for it."""
        if self.auth_error and not self.pause_on_auth_error:
            raise AuthError(self.auth_error)
        if self.disk_full and not self.pause_on_auth_error:
            raise DiskFull(self.disk_full)

    def _wait(self, emptied: Callable[[], bool], timeout: float | None, tick: Callable[[], None] | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if tick is not None:
                tick()
            self.check_failed()
            if self.outbox.in_flight() == 0 and emptied():
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    # -- the worker ------------------------------------------------------------
    def _claim_size(self) -> int:
        return self.output.claim_size(self.max_batch_items, self.limiter.interval)

    def _trickle_ahead(self, lingered: bool) -> bool:
        """Whether the person work waiting unheld is a trickle (some, under a quarter of a claim) that may
        linger first: read with a bounded count, so that a trickle is not claimed (leases written) only to be
        given back (written again) before the linger."""
        if not self.linger_s or lingered:
            return False
        threshold = self._claim_size() // 4
        if threshold <= 1:
            return False
        return 0 < self.outbox.unleased_person_work(threshold) < threshold

    def _work(self, anonymous: bool = True) -> None:
        lingered = False
        while not self._stop.is_set():
            if self.auth_error:
                self._wait_for_credentials()
                continue
            if self.disk_full:
                self._wait_for_space()
                continue
            # back off without holding a claim (with replicas, a claim is a lease: it is
            # held for the length of a request, never across a Retry-After)
            pause = self.limiter.pause_remaining()
            if pause > 0:
                self._stop.wait(finite_delay(pause))
                continue
            reserved = self.adapt_to_rate and (
                self._rate_linger > 0 or (self._person_work_seen and self.limiter.reserve_delay() > 0)
            )
            if not reserved and self._trickle_ahead(lingered):
                # a trickle: let a fuller batch build up before claiming (a claim writes its leases;
                # one given back writes again)
                lingered = True
                self._stop.wait(self.linger_s)
                continue
            items = self._claim_at_slot() if reserved else self._claim_person_work()
            if not items:
                wait = self._send_anonymous() if anonymous else self.idle_poll_s
                if wait is not None:
                    with self._wake:
                        self._wake.wait(wait)
                continue
            try:
                if reserved:
                    self._deliver(items, reserved=True)
                    continue
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
                self._recover(items, exc)

    def _recover(self, items: list[Claimed], exc: Exception) -> None:
        """After an unexpected error with a claim: keep its rows queued (counting the attempt), back off; on a
        full disk, pause every worker until the database has room again (:meth:`_wait_for_space`)."""
        full = is_disk_full(exc)
        if full:
            message = disk_full_message(exc)
            if self.disk_full is None:
                log.error(
                    "delivery paused: %s: what Customer.io accepted cannot be recorded; the operations stay queued"
                    " (sent again once the database has room)",
                    message,
                )
            self.disk_full = message
            self._note_error(message)
        else:
            log.error("delivery worker error: %s: %s", type(exc).__name__, exc)
            self._note_error(f"internal error: {type(exc).__name__}: {exc}")
        try:
            self.outbox.release(items, message if full else f"internal error: {type(exc).__name__}")
        except Exception:  # the database itself failed: forget the claim in memory only
            self.outbox.forget_claims(items)
        if not full:
            self._stop.wait(1.0)

    def _wait_for_space(self) -> None:
        """While paused on a full disk: one worker looks every :data:`DISK_FULL_RETRY_S` whether the database has
        room again (:meth:`~.storage.Storage.disk_problem`; where it cannot tell, the next attempt does)."""
        if not self._space_check.acquire(blocking=False):
            self._stop.wait(self.idle_poll_s)  # another worker looks; this one waits for it
            return
        try:
            if self._stop.wait(DISK_FULL_RETRY_S) or not self.disk_full:
                return
            try:
                problem = self.outbox.db.disk_problem()
            except Exception as exc:  # e.g. the database cannot be read either
                problem = f"{type(exc).__name__}: {exc}"
            if problem is None:
                log.warning("the database has room again: delivery resumes")
                self.disk_full = None
        finally:
            self._space_check.release()

    def _claim_person_work(self) -> list[Claimed]:
        """The oldest deliverable person work (every kind but anonymous events), a claim's worth."""
        items = self.outbox.claim(self._claim_size(), self.max_batch_bytes, self.max_op_bytes, lane="person")
        self._person_work_seen = bool(items)
        return items

    def _send_anonymous(self) -> float | None:
        """With no person work to send: anonymous events in a spare request slot. ``None`` when a request
        was made (look for person work again at once), else how long to wait before looking again.

        The slot must be free now (nobody reserved it, no pause): anonymous events use only the budget
        person work leaves. A claim is one request's worth when the output batches them (Pipelines), else
        at most :data:`ANONYMOUS_BURST` events, taken only when a slot looks free and sent in the spare
        slots that follow (:meth:`_send_spare`), so an identify never waits long for a visitor's events
        in flight, and the ones still waiting stay adoptable.
        """
        cooldown = self._anonymous_resume_at - time.monotonic()
        if cooldown > 0:
            return min(self.idle_poll_s, cooldown)
        delay = self.limiter.reserve_delay()
        if delay > 2 * self.limiter.interval:  # person work reserved the slots ahead (or a pause)
            return min(self.idle_poll_s, delay)
        if delay > 0 and self._stop.wait(delay):
            return None
        batched = self.output.batches_anonymous
        size = self._claim_size() if batched else ANONYMOUS_BURST
        items = self.outbox.claim(size, self.max_batch_bytes, self.max_op_bytes, lane="anonymous")
        if not items:
            return self.idle_poll_s
        if batched and self.linger_s and len(items) < size // 4 and not getattr(self._local, "lingered", False):
            # a trickle: as for person work, let a fuller batch build up first
            self.outbox.unclaim(items)
            self._local.lingered = True
            return self.linger_s
        self._local.lingered = False
        if not self._spare_slot_soon():  # person work (or another worker) took the slots meanwhile
            self.outbox.unclaim(items)
            return min(self.idle_poll_s, self.limiter.interval)
        try:
            self._send_spare(items)
        except Exception as exc:  # as for person work: keep the rows, back off
            self._recover(items, exc)
        return None

    def _send_spare(self, items: list[Claimed]) -> None:
        """Send a claim of anonymous events, the first request in the spare slot just taken, each next one
        only in a spare slot coming soon (:meth:`_spare_slot_soon`); once none comes, the rest is given back
        untouched."""
        units = self.output.units(items)
        try:
            for position, unit in enumerate(units):
                rest = [item for later in units[position + 1 :] for item in later.items]
                if position and not self._spare_slot_soon():
                    self.outbox.unclaim([*unit.items, *rest])
                    return
                if not self._send(unit, rest, reserved=True):
                    self.outbox.release(rest, "held back: the request before it was not delivered")
                    return
        except LeaseLost as exc:  # the claim is dropped: whoever holds these operations now sends them
            log.warning("delivery: %s", exc)
            self._note_error(str(exc))

    def _spare_slot_soon(self, tries: int = 3) -> bool:
        """Take a spare request slot: the next one, when it is at most two intervals away, waiting for it
        (another worker may take it first: then the one after it, ``tries`` times in all)."""
        for _ in range(tries):
            if self._anonymous_resume_at > time.monotonic():
                return False
            delay = self.limiter.reserve_delay()
            if delay > 2 * self.limiter.interval or (delay > 0 and self._stop.wait(delay)):
                return False
            if self.limiter.take_spare():
                return True
        return False

    def _claim_at_slot(self) -> list[Claimed]:
        """At the rate limit: linger without a claim until the next slot (longer while batches stay small),
        then claim and take that slot; empty when another worker is lingering, on ``stop`` or a pause.

        Requests would exceed ``max_rps``: rather than claiming small batches that then wait for a slot,
        one worker at a time waits for the slot and claims then, as full as it gets. While such claims stay
        small (under a quarter of a claim) the wait doubles, up to ``RATE_LINGER_MAX_S`` (or
        ``linger_s``) and ten slots, so batches grow and fewer requests than the limit are made; a big
        claim (a backlog) or an empty one ends it (full batches at the full rate again).
        """
        if not self._slot_turn.acquire(blocking=False):  # another worker waits for the slot: this one is free
            return []
        try:
            interval = self.limiter.interval
            cap = min(max(RATE_LINGER_MAX_S, self.linger_s), 10 * interval)
            self._rate_linger = min(cap, max(interval, self._rate_linger * 2))
            if self._stop.wait(finite_delay(max(self.limiter.reserve_delay(), self._rate_linger))):
                return []
            items = self._claim_person_work()
            if not items or len(items) >= self._claim_size() // 4:
                self._rate_linger = 0.0
            if items and not self.limiter.take(self._stop):
                self.outbox.unclaim(items)
                return []
            return items
        finally:
            self._slot_turn.release()

    def _deliver(self, items: list[Claimed], reserved: bool = False) -> None:
        """Send a claim's units in order (the first in a slot already taken when ``reserved``);
        once one is not delivered, the rest stay queued."""
        units = self.output.units(items)
        try:
            for position, unit in enumerate(units):
                rest = [item for later in units[position + 1 :] for item in later.items]
                if not self._send(unit, rest, reserved and position == 0):
                    self.outbox.release(rest, "held back: the request before it was not delivered")
                    return
        except LeaseLost as exc:  # the claim is dropped: whoever holds these operations now sends them
            log.warning("delivery: %s", exc)
            self._note_error(str(exc))

    def _send(self, unit: Unit, rest: Sequence[Claimed] = (), reserved: bool = False) -> bool:
        """Send one unit (in a slot already taken when ``reserved``) and apply the verdict;
        True when nothing of it stays queued. ``rest``: the claim's operations still to send after it.

        The claim on the unit and the rest is renewed before waiting for a request slot, and again after
        it when that wait was long (:meth:`Outbox.renew`; raises :class:`LeaseLost`): with PostgreSQL a
        lease then outlasts the request's deadline, and a request starts as soon as its slot allows.
        """
        pending = [*unit.items, *rest]
        if not reserved:
            self.outbox.renew(pending)
            if not self.limiter.take(self._stop):
                self.outbox.release(unit.items, "not sent: stopping or backing off")
                return False
        self.outbox.renew(pending)
        result = self.output.send(unit)
        self._count(result)
        verdict = self.settlement.settle(unit, result)
        self._apply(verdict, result)
        if verdict.halves is None:
            return verdict.delivered
        first, second = verdict.halves
        if not self._send(Unit(first, unit.batch), [*second, *rest]):
            self.outbox.release(second, "held back: an earlier part of the batch was not delivered")
            return False
        return self._send(Unit(second, unit.batch), rest)

    def _apply(self, verdict: Verdict, result: SendResult) -> None:
        """Carry out a verdict: pauses first (no other worker takes released rows before), then outbox writes."""
        if verdict.auth_error is not None:
            if self.auth_error is None:
                self._note_error(verdict.auth_error)
            self.auth_error = verdict.auth_error
        else:
            for message in verdict.errors:
                self._note_error(message)
        if verdict.pause_s is not None:
            with self._stats_lock:
                self.stats.retries += len(verdict.release)
            self.limiter.pause_for(verdict.pause_s)
            # anonymous events slow first: after the pause, person work has the slots to itself a while
            extra = max(ANONYMOUS_EXTRA_PAUSE_S, verdict.pause_s)
            self._anonymous_resume_at = max(self._anonymous_resume_at, time.monotonic() + verdict.pause_s + extra)
        if verdict.dead:
            self.outbox.dead_letter(verdict.dead)
        if verdict.ack:
            self.outbox.ack(verdict.ack)
            now = time.time()
            self.person_latency.observe(now - item.enqueued_at for item in verdict.ack if item.kind != "anonymous")
            if self.on_delivered is not None:
                self.on_delivered(verdict.ack)
            with self._stats_lock:
                self.stats.delivered += len(verdict.ack)
        if verdict.release:
            self.outbox.release(verdict.release, verdict.reason)
        if verdict.auth_error is not None:
            log.error("Customer.io rejected the credentials: delivery paused, %d operations kept", self.outbox.depth())
        elif verdict.pause_s is not None:
            log.warning("Customer.io unavailable (%s); retrying in %.1fs", result.describe()[:120], verdict.pause_s)

    def _count(self, result: SendResult) -> None:
        if not result.sent:  # refused by the output itself: no request was made
            return
        with self._stats_lock:
            self.stats.requests += 1
            self.stats.requests_by_status[str(result.status or "error")] += 1

    def _note_error(self, message: str) -> None:
        with self._stats_lock:
            self.stats.last_error = message[:500]
            self.stats.last_error_at = time.time()
            self.stats.recent_errors.append((self.stats.last_error_at, self.stats.last_error))

    def _wait_for_credentials(self) -> None:
        """While paused on 401/403: stop (``send``), or one worker re-checks every ``auth_retry_s``."""
        if not self.pause_on_auth_error or not self._recheck.acquire(blocking=False):
            self._stop.wait(self.idle_poll_s)  # another worker re-checks; this one waits for it
            return
        try:
            if self._stop.wait(self.auth_retry_s) or not self.auth_error:
                return
            try:
                self.output.check_credentials()
            except AuthError:
                log.error("credentials still rejected; next check in %.0fs", self.auth_retry_s)
                return
            except Exception as exc:  # network trouble: try again later
                log.warning("credential check failed: %s", exc)
                return
            log.info("credentials accepted again: delivery resumes")
            self.auth_error = None
        finally:
            self._recheck.release()
