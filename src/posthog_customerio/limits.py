"""Customer.io's size limits, byte-exact (UTF-8), as pure functions.

With ``LIMITS=truncate`` (default) values are cut to fit and every cut is counted;
with ``LIMITS=dead-letter`` nothing is cut and Customer.io's rejection puts the
operation in the dead-letter table. Identifiers are never cut (that could merge two
people): an over-long id is sent as is and dead-lettered with Customer.io's reason.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "MAX_ATTRIBUTES_PER_IDENTIFY",
    "MAX_ATTRIBUTE_NAME_BYTES",
    "MAX_ATTRIBUTE_VALUE_BYTES",
    "MAX_DROPPED_NAMES_BYTES",
    "MAX_EVENT_DATA_BYTES",
    "MAX_EVENT_NAME_BYTES",
    "MAX_ID_BYTES",
    "MAX_OP_BYTES",
    "chunk_attributes",
    "fit_attributes",
    "fit_event_data",
    "json_len",
    "truncate_utf8",
    "utf8_len",
]

MAX_ID_BYTES = 150
MAX_ATTRIBUTE_NAME_BYTES = 150
MAX_ATTRIBUTE_VALUE_BYTES = 1000
MAX_ATTRIBUTES_PER_IDENTIFY = 300
MAX_EVENT_NAME_BYTES = 100
MAX_EVENT_DATA_BYTES = 100_000
MAX_OP_BYTES = 32_000
#: room left in an operation for everything but its attributes / data
_OP_OVERHEAD = 1_500


def utf8_len(text: str) -> int:
    """Length of ``text`` in UTF-8 bytes."""
    return len(text.encode())


def truncate_utf8(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, never inside a character."""
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", errors="ignore")


def json_len(value: Any) -> int:
    """Bytes of a value as compact JSON (how Customer.io measures non-strings)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode())


def _value_len(value: Any) -> int:
    return utf8_len(value) if isinstance(value, str) else json_len(value)


def fit_attributes(attributes: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Cut attribute names to 150 B and values to 1000 B; returns (attributes, cuts).

    A non-string value over the limit (a big object or list) becomes its JSON text,
    cut to 1000 B.
    """
    fitted: dict[str, Any] = {}
    cuts = 0
    for name, value in attributes.items():
        if utf8_len(name) > MAX_ATTRIBUTE_NAME_BYTES:
            name = truncate_utf8(name, MAX_ATTRIBUTE_NAME_BYTES)
            cuts += 1
        if _value_len(value) > MAX_ATTRIBUTE_VALUE_BYTES:
            text = (
                value
                if isinstance(value, str)
                else json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
            )
            value = truncate_utf8(text, MAX_ATTRIBUTE_VALUE_BYTES)
            cuts += 1
        fitted[name] = value
    return fitted, cuts


def chunk_attributes(
    attributes: dict[str, Any],
    max_count: int = MAX_ATTRIBUTES_PER_IDENTIFY,
    max_bytes: int = MAX_OP_BYTES - _OP_OVERHEAD,
) -> list[dict[str, Any]]:
    """Split attributes into chunks of at most ``max_count`` keys and ``max_bytes``.

    Each chunk becomes one identify, so no attribute is dropped. ``email`` stays in
    the first chunk.
    """
    chunks: list[dict[str, Any]] = [{}]
    size = 2
    for name, value in sorted(attributes.items(), key=lambda item: item[0] != "email"):
        entry = json_len(name) + _value_len(value) + 4
        if chunks[-1] and (len(chunks[-1]) >= max_count or size + entry > max_bytes):
            chunks.append({})
            size = 2
        chunks[-1][name] = value
        size += entry
    return chunks


#: ``_truncated_properties`` names at most this many bytes of dropped names (the rest are counted)
MAX_DROPPED_NAMES_BYTES = 2_000


def fit_event_data(data: dict[str, Any], limit: int) -> tuple[dict[str, Any], list[str]]:
    """Drop the largest properties until ``data`` is at most ``limit`` bytes of JSON.

    Returns the data and the names dropped (the mapping records them in
    ``_truncated_properties`` so the loss is visible in Customer.io). Linear after one
    sort: every property is measured once, then the largest go until the rest fits.
    The names listed are bounded (:data:`MAX_DROPPED_NAMES_BYTES`); when more were
    dropped the last entry says how many more (``"… and 7000 more"``).
    """
    sizes = {name: json_len(name) + json_len(value) + 2 for name, value in data.items()}  # "name":value,
    total = sum(sizes.values()) + 1
    if total <= limit:
        return data, []
    dropped: list[str] = []
    names = 2  # the JSON list of dropped names, and below the key it goes under
    for name in sorted(sizes, key=sizes.__getitem__, reverse=True):
        if total + min(names, MAX_DROPPED_NAMES_BYTES) + 30 <= limit:
            break
        dropped.append(name)
        total -= sizes[name]
        names += json_len(name) + 1
    removed = set(dropped)
    kept = {name: value for name, value in data.items() if name not in removed}
    return kept, _listed(dropped)


def _listed(names: list[str]) -> list[str]:
    """``names`` cut to :data:`MAX_DROPPED_NAMES_BYTES` of JSON, the rest counted in a last entry."""
    listed: list[str] = []
    size = 2
    for index, name in enumerate(names):
        entry = json_len(name) + 1
        if size + entry > MAX_DROPPED_NAMES_BYTES - 30:
            listed.append(f"… and {len(names) - index} more")
            break
        listed.append(name)
        size += entry
    return listed
