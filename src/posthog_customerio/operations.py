"""The unit of work between mapping and delivery: one Customer.io v2 entity operation."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Operation", "encode_payload", "MAX_OP_BYTES", "MAX_BATCH_BYTES"]

#: Customer.io's per-operation limit for v2 (bytes of the operation's JSON).
MAX_OP_BYTES = 32_000
#: Customer.io's per-request limit for ``/api/v2/batch`` (bytes of the whole body).
MAX_BATCH_BYTES = 500_000


@dataclass(frozen=True, slots=True)
class Operation:
    """One Customer.io operation, as the v2 ``batch`` item it becomes.

    ``person_key`` orders delivery: operations with the same key are delivered in
    the order they were enqueued. ``after`` names other keys whose earlier
    operations must be *accepted* first (a merge waits for both people; an identify
    attaching anonymous events waits for those events): such an operation is never
    sent in the same request as an earlier operation of any of its keys.
    ``payload`` is the v2 entity operation (``type: anonymous`` for anonymous
    events, which only v1 supports); the v1 client translates it.
    """

    person_key: str
    payload: dict[str, Any]
    after: tuple[str, ...] = ()
    #: the payload already encoded (:func:`encode_payload`), when the mapping had it
    text: str | None = field(default=None, compare=False, repr=False)

    @property
    def keys(self) -> tuple[str, ...]:
        """Every ordering key this operation waits on (its own first)."""
        return (self.person_key, *self.after)

    @property
    def action(self) -> str:
        """The v2 action (identify, event, page, screen, ...)."""
        return str(self.payload.get("action", ""))


def encode_payload(payload: dict[str, Any]) -> str:
    """Compact JSON text of a payload, the form stored in the outbox and sent."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str)
