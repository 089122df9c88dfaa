"""Settlement policy: what a classified answer means for the operations it carried.

:class:`Settlement` turns one unit and its :class:`~.output.base.SendResult` into a
:class:`Verdict` (acknowledge / dead-letter / release with a back-off pause / pause
on credentials / halve and retry), without I/O: the delivery workers apply it.

* 200: acknowledged; 207 or per-item errors: the listed items dead-lettered, the rest acknowledged;
  a 207 that lists no item of the batch (a body that is not JSON, no ``errors``, positions outside the
  batch; any 207 of the Pipelines API, which documents none) says only that *something* was refused:
  nothing is acknowledged, the batch is halved and sent again until the refused operation is alone,
  which is dead-lettered (Track API: "At least one object in the batch was invalid");
* a refused request (400/404/413/422, ...): halved to isolate the bad operation, which
  is dead-lettered with the response;
* network errors, 408, 429, 5xx: released, every worker pauses (:class:`~.backoff.Backoff`:
  exponential with jitter, or ``Retry-After`` when Customer.io sends it);
* 401/403: released, delivery pauses until the credentials are accepted.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from .backoff import Backoff
from .operations import Claimed
from .output.base import Outcome, SendResult, Unit

__all__ = ["DeadLetterEntry", "Settlement", "Verdict"]

#: what the outbox records for a dead letter: (item, reason, status, response)
DeadLetterEntry = tuple[Claimed, str, int | None, str | None]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with a unit's operations after one answer."""

    ack: Sequence[Claimed] = ()
    dead: Sequence[DeadLetterEntry] = ()
    release: Sequence[Claimed] = ()
    #: why released (stored as the rows' last error)
    reason: str = ""
    #: every worker pauses this long (transient failure)
    pause_s: float | None = None
    #: the credentials were rejected: delivery pauses (or stops) with this message
    auth_error: str | None = None
    #: a refused batch: send these two halves, in order, the second only if the first went through
    halves: tuple[Sequence[Claimed], Sequence[Claimed]] | None = None
    #: messages for the last-error log (dead letters, failures)
    errors: tuple[str, ...] = ()

    @property
    def delivered(self) -> bool:
        """Whether the unit is settled for good (nothing released: later units may go)."""
        return not self.release


class Settlement:
    """The policy, with the shared backoff state (thread-safe, no I/O)."""

    def __init__(self, backoff: Backoff | None = None) -> None:
        self.backoff = backoff or Backoff()
        self._lock = threading.Lock()

    def settle(self, unit: Unit, result: SendResult) -> Verdict:
        """The verdict for ``unit`` answered by ``result``."""
        items = unit.items
        if result.outcome in (Outcome.OK, Outcome.PARTIAL):
            self._reset()
            if result.status == 207 and not any(0 <= index < len(items) for index in result.item_errors):
                described = f"HTTP 207 without a readable list of rejected items: {result.body[:300]}"
                return self._refused(items, described, result, halve=unit.batch)
            return self._accepted(items, result)
        if result.outcome is Outcome.PERMANENT:
            return self._refused(items, result.describe(), result, halve=unit.batch)
        message = result.error or result.describe()
        if result.outcome is Outcome.AUTH:
            return Verdict(release=items, reason=result.describe(), auth_error=message, errors=(message,))
        with self._lock:
            delay = self.backoff.next_delay(result.retry_after)
        return Verdict(release=items, reason=result.describe(), pause_s=delay, errors=(message,))

    @staticmethod
    def _refused(items: Sequence[Claimed], described: str, result: SendResult, halve: bool = True) -> Verdict:
        """Some operation of ``items`` was refused: halve a batch, dead-letter a single operation (and every
        operation of a request that is not a batch: a segment change refused is refused for all its ids)."""
        if len(items) > 1 and halve:
            middle = len(items) // 2
            return Verdict(halves=(items[:middle], items[middle:]))
        return Verdict(
            dead=[(item, described, result.status, result.body) for item in items],
            errors=(f"dead-lettered: {described}",),
        )

    @staticmethod
    def _accepted(items: Sequence[Claimed], result: SendResult) -> Verdict:
        failed: list[DeadLetterEntry] = []
        for index, error in result.item_errors.items():
            if 0 <= index < len(items):
                reason = str(error.get("message") or error.get("reason") or "rejected by Customer.io")
                failed.append((items[index], reason, result.status, json.dumps(error)))
        failed_seqs = {item.seq for item, *_ in failed}
        return Verdict(
            ack=[item for item in items if item.seq not in failed_seqs],
            dead=failed,
            errors=tuple(f"dead-lettered: {reason}" for _, reason, *_ in failed[:3]),
        )

    def _reset(self) -> None:
        with self._lock:
            self.backoff.reset()
