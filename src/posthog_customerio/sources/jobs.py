"""What the one-shot jobs (``send``, ``sync-persons``, ``sync-cohorts``) share: deliver with this process's workers
while the input is read and stored, waiting for delivery before each batch while half the outbox's bound is queued
(``OUTBOX_MAX_QUEUED``, :attr:`Delivery.room`), then wait until the outbox is empty (or a timeout), and report the
delivery."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..bound import SourceRoom
    from ..delivery import Deliverer
    from ..runtime import Runtime

__all__ = ["Delivery", "JobSummary", "delivering"]


@dataclass(slots=True)
class Delivery:
    """A job's delivery: live while it runs (:attr:`deliverer`), its figures once :func:`delivering` ended."""

    deliverer: Deliverer
    #: operations already queued when the job started
    backlog_before: int
    #: the job's room in the outbox: it waits there before each batch (its waiting counts against the timeout)
    room: SourceRoom
    started: float = field(default_factory=time.monotonic)
    finished: bool = False
    dead_lettered: int = 0
    #: operations still queued when waiting stopped (0: everything delivered or dead-lettered)
    queued: int = 0

    @property
    def delivered(self) -> int:
        """Operations delivered so far."""
        return self.deliverer.stats.delivered

    def figures(self) -> dict[str, Any]:
        """The summary fields every job reports about delivery."""
        stats = self.deliverer.stats
        return {
            "backlog_before": self.backlog_before,
            "operations_delivered": stats.delivered,
            "requests": stats.requests,
            "requests_by_status": dict(stats.requests_by_status),
            "retries": stats.retries,
            "dead_lettered": self.dead_lettered,
            "queued": self.queued,
            "seconds": round(time.monotonic() - self.started, 3),
            "outbox_waits": self.room.figures(),
        }


@dataclass(slots=True)
class JobSummary:
    """The delivery half of a job's summary (:meth:`Delivery.figures`); each job adds what it read."""

    backlog_before: int = 0
    operations_delivered: int = 0
    requests: int = 0
    requests_by_status: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    dead_lettered: int = 0
    #: operations still in the outbox when waiting stopped (0 = everything delivered or dead-lettered)
    queued: int = 0
    seconds: float = 0.0
    #: reading waited for room in the outbox (``OUTBOX_MAX_QUEUED``): times, seconds, and whether the timeout ran
    #: out while waiting (then the rest of the input was not read)
    outbox_waits: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary (the command's ``--json`` output)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@contextmanager
def delivering(
    runtime: Runtime, timeout: float | None, tick: Callable[[], None], source: str = "file"
) -> Iterator[Delivery]:
    """Start delivering; the block reads and stores the input, waiting for room in the outbox before each batch
    (:attr:`Delivery.room`, counted for ``source``). When it ends, the input is declared finished (nothing held for
    an identify to adopt any more), and this waits until the outbox is empty; ``timeout`` bounds all this waiting,
    for room and for delivery (``tick`` is called while waiting for delivery); the workers stop (within 1 s on
    Ctrl-C: a request still open is abandoned and its operations stay queued)."""
    deliverer = runtime.deliverer()
    dead_before = runtime.outbox.dead_letter_count()
    delivery = Delivery(deliverer, runtime.outbox.depth(), runtime.room(source, timeout_s=timeout))
    deliverer.start()
    stop_within = 10.0  # in-flight requests finish
    try:
        yield delivery
        runtime.outbox.input_finished()
        deliverer.notify()
        tick()
        delivery.finished = deliverer.wait_until_empty(delivery.room.left_s(), tick=tick)
        tick()  # the waiting's last tick may precede the last delivery: show where it ended
    except KeyboardInterrupt:
        stop_within = 1.0
        raise
    finally:
        deliverer.stop(stop_within)
    delivery.dead_lettered = runtime.outbox.dead_letter_count() - dead_before
    delivery.queued = 0 if delivery.finished else runtime.outbox.depth()
