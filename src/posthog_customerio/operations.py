"""The neutral unit of work between mapping and delivery: one Customer.io operation.

An :class:`Operation` says *what* should happen in Customer.io's data model (a person,
an anonymous visitor or an object; identify, event, merge, delete, ...), not how an
output API spells it: each output (:mod:`.output`) has an encoder for it. Its ``kind``
is data, carried from mapping through the outbox (its own column) to delivery.

The neutral ``payload`` uses Customer.io's entity vocabulary (``identifiers``,
``action``, ``attributes``, ``name``, ``id`` (dedupe), ``timestamp``, ``anonymous_id``,
``device``, ``primary``/``secondary``, ``cio_relationships``) and names its kind as
``type``: for a person or an object that is exactly a Track v2 ``batch`` item, so the
text encoded once at mapping time is what the v2 output sends (no work at send time),
while the v1 and Pipelines encoders translate it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final, Literal

__all__ = [
    "KINDS",
    "MAX_BATCH_BYTES",
    "MAX_OP_BYTES",
    "Claimed",
    "Kind",
    "Lane",
    "Operation",
    "encode_payload",
    "ordering_keys",
]

#: Customer.io's per-operation limit for v2 (bytes of the operation's JSON).
MAX_OP_BYTES = 32_000
#: Customer.io's per-request limit for ``/api/v2/batch`` (bytes of the whole body).
MAX_BATCH_BYTES = 500_000

#: what an operation is about: an identified person, an anonymous visitor, an object (group), or a person's
#: membership of a manual segment (``sync-cohorts``: ``{"type": "segment", "action": "add"|"remove",
#: "segment_id": ..., "identifiers": {...}}``, sent by the Track outputs as ``add_customers``/``remove_customers``)
Kind = Literal["person", "anonymous", "object", "segment"]
KINDS: Final[tuple[Kind, ...]] = ("person", "anonymous", "object", "segment")
#: the part of the queue a claim reads: person work (every kind but anonymous events, claimed first)
#: or anonymous events (sent with the request budget person work leaves); ``None`` is the whole queue
Lane = Literal["person", "anonymous"]


@dataclass(frozen=True, slots=True)
class Operation:
    """One neutral Customer.io operation.

    ``person_key`` orders delivery: operations with the same key are delivered in
    the order they were enqueued. ``after`` names other keys whose earlier
    operations must be *accepted* first (a merge waits for both people; an identify
    attaching anonymous events waits for those events): such an operation is never
    sent in the same request as an earlier operation of any of its keys.
    ``kind`` is set by mapping and stored with the operation; ``payload["type"]``
    mirrors it.
    """

    person_key: str
    payload: dict[str, Any]
    after: tuple[str, ...] = ()
    #: the payload already encoded (:func:`encode_payload`), when the mapping had it
    text: str | None = field(default=None, compare=False, repr=False)
    kind: Kind = "person"

    @property
    def keys(self) -> tuple[str, ...]:
        """Every ordering key this operation waits on (its own first)."""
        return (self.person_key, *self.after)

    @property
    def action(self) -> str:
        """The action (identify, event, page, screen, merge, delete, ...)."""
        return str(self.payload.get("action", ""))


@dataclass(frozen=True, slots=True)
class Claimed:
    """A queued operation handed to a delivery worker (by :meth:`~.outbox.Outbox.claim`); it stays
    queued until settled. Outputs encode it; they need nothing else of the outbox."""

    seq: int
    person_key: str
    #: the operation's neutral text (:func:`encode_payload`)
    payload: str
    size: int
    attempts: int
    enqueued_at: float
    #: JSON list of the other keys this operation waits on, or ``None``
    after_keys: str | None = None
    kind: Kind = "person"

    @property
    def keys(self) -> tuple[str, ...]:
        """All ordering keys: the person's, then those it must wait for."""
        return ordering_keys(self.person_key, self.after_keys)


def ordering_keys(person_key: str, after_keys: str | None) -> tuple[str, ...]:
    """An operation's ordering keys from its stored columns: ``person_key``, then the keys of the
    JSON list ``after_keys`` (see :attr:`Operation.after`)."""
    return (person_key, *json.loads(after_keys)) if after_keys else (person_key,)


def encode_payload(payload: dict[str, Any]) -> str:
    """Compact JSON text of a payload, the form stored in the outbox."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str)
