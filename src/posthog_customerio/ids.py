"""Deterministic dedupe ids: every PostHog event maps to one ULID, forever.

Customer.io ignores an event whose ``id`` it has already seen, so deriving the id
from the PostHog event (not from the send attempt) makes retries and replays safe.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid as uuidlib

from .events import PostHogEvent

__all__ = ["event_ulid", "ulid_text", "uuid_to_ulid"]


def uuid_to_ulid(value: str) -> str | None:
    """Map a UUID string to the ULID with the same 128 bits (lossless for UUIDv7).

    A UUIDv7 starts with a 48-bit Unix-millisecond timestamp exactly like a ULID,
    so the ULID keeps the event's time. Returns ``None`` if ``value`` is no UUID.
    """
    if isinstance(value, str) and _CANONICAL_UUID.fullmatch(value):
        return ulid_text(int(value.replace("-", ""), 16))  # the usual form, without building a UUID
    try:
        parsed = uuidlib.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return None
    return ulid_text(parsed.int)


#: a UUID as PostHog's SDKs write it (other forms ``uuid.UUID`` takes go through it)
_CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
#: Crockford's base32 (the ULID spec's alphabet), and every pair of its digits: ten bits at a time
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = tuple(high + low for high in _CROCKFORD for low in _CROCKFORD)


def ulid_text(value: int) -> str:
    """The 26-character ULID text of a 128-bit number (its two top digits hold the top eight bits)."""
    return "".join([_PAIRS[(value >> shift) & 0x3FF] for shift in range(120, -1, -10)])


def event_ulid(event: PostHogEvent) -> str:
    """The dedupe id of an event: from its ``uuid``, else from its content.

    Events without a usable ``uuid`` get a ULID whose time part is the event time
    and whose other 80 bits hash the event's identity (distinct_id, name, time,
    properties), so the same event read twice still gets the same id.
    """
    if event.uuid:
        mapped = uuid_to_ulid(event.uuid)
        if mapped is not None:
            return mapped
    content = json.dumps(
        [event.uuid, event.distinct_id, event.event, event.timestamp_ms, event.properties],
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    ).encode()
    digest = hashlib.blake2b(content, digest_size=10).digest()
    millis = max(0, min(event.timestamp_ms, 2**48 - 1))
    return ulid_text(int.from_bytes(millis.to_bytes(6, "big") + digest, "big"))
