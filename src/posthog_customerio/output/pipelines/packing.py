"""Pipelines API request packing: encoded calls grouped, in order, into ``/v1/batch`` requests under the byte limits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "BATCH_CLOSE",
    "BATCH_OPEN",
    "DOCUMENTED_CALL_BYTES",
    "DOCUMENTED_REQUEST_BYTES",
    "MAX_CALL_BYTES",
    "MAX_REQUEST_BYTES",
    "Packing",
    "encoded_size",
    "pack",
]

#: Documented limits are "32KB" per call and "500KB" per batch request. Customer.io's clients read them as
#: 32 KiB and stop at 480 KiB (node) / 475,000 bytes (python); we stay below every reading of both.
DOCUMENTED_CALL_BYTES = 32 * 1024
DOCUMENTED_REQUEST_BYTES = 500_000
MAX_CALL_BYTES = 32_000
MAX_REQUEST_BYTES = 475_000

BATCH_OPEN = b'{"batch":['
BATCH_CLOSE = b"]"


@dataclass(slots=True)
class Packing:
    """The result of :func:`pack`: request groups (indexes, in order) and calls too large to send."""

    batches: list[list[int]] = field(default_factory=list)
    too_large: list[int] = field(default_factory=list)


def encoded_size(text: str | bytes) -> int:
    """Bytes of an encoded call (UTF-8 for text)."""
    return len(text) if isinstance(text, bytes) else len(text.encode("utf-8"))


def pack(
    calls: Sequence[str | bytes],
    *,
    max_request_bytes: int = MAX_REQUEST_BYTES,
    max_call_bytes: int = MAX_CALL_BYTES,
    max_calls: int | None = None,
    overhead: int = 0,
) -> Packing:
    """Group encoded calls, in order, into ``/v1/batch`` requests under the byte limits.

    A request's size counts the ``{"batch":[``...``]}`` envelope, the commas and ``overhead`` (extra batch
    fields such as ``context``). A call over ``max_call_bytes`` goes to ``too_large`` (not sent: the caller
    dead-letters it) and does not break the order of the others.
    """
    result = Packing()
    envelope = len(BATCH_OPEN) + len(BATCH_CLOSE) + 1 + overhead
    current: list[int] = []
    used = envelope
    for index, text in enumerate(calls):
        size = encoded_size(text)
        if size > max_call_bytes or envelope + size > max_request_bytes:
            result.too_large.append(index)
            continue
        extra = size + (1 if current else 0)
        if current and (used + extra > max_request_bytes or (max_calls is not None and len(current) >= max_calls)):
            result.batches.append(current)
            current, used, extra = [], envelope, size
        current.append(index)
        used += extra
    if current:
        result.batches.append(current)
    return result
