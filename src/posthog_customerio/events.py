"""The event model: one PostHog event, whatever shape it arrived in, and PostHog's times.

The bottom of the package: it imports nothing of the project. Sources build
:class:`PostHogEvent` values (:mod:`.sources`); mapping, ids and the pipeline read them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["MS_THRESHOLD", "PostHogEvent", "as_aware", "parse_iso", "to_unix_seconds"]


@dataclass(frozen=True, slots=True)
class PostHogEvent:
    """One PostHog event, whatever shape it arrived in."""

    event: str
    distinct_id: str
    timestamp: datetime
    properties: dict[str, Any] = field(default_factory=dict)
    uuid: str | None = None
    set: dict[str, Any] = field(default_factory=dict)
    set_once: dict[str, Any] = field(default_factory=dict)
    unset: tuple[str, ...] = ()
    person_properties: dict[str, Any] = field(default_factory=dict)
    #: Hog globals ``groups``: group type -> (group key, group properties)
    groups: dict[str, tuple[Any, dict[str, Any]]] = field(default_factory=dict)

    @property
    def timestamp_s(self) -> int:
        """Event time as integer Unix seconds."""
        return int(self.timestamp.timestamp())

    @property
    def timestamp_ms(self) -> int:
        """Event time as integer Unix milliseconds."""
        return int(self.timestamp.timestamp() * 1000)


#: numbers above this are milliseconds (year 5138 in seconds)
MS_THRESHOLD = 100_000_000_000
_ISO_Z = re.compile(r"Z$")


def to_unix_seconds(value: Any) -> int | None:
    """Convert an ISO string, Unix seconds or Unix milliseconds to integer seconds.

    Returns ``None`` for anything that is not a recognisable time (never NaN).
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, datetime):
        return int(as_aware(value).timestamp())
    if isinstance(value, (int, float)):
        if value != value or value in (float("inf"), float("-inf")):
            return None
        return int(value / 1000) if abs(value) >= MS_THRESHOLD else int(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            return to_unix_seconds(float(text))
        except ValueError:
            pass
        try:
            return int(parse_iso(text).timestamp())
        except ValueError:
            return None
    return None


def as_aware(moment: datetime) -> datetime:
    """``moment``, in UTC when it has no zone."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_iso(text: str) -> datetime:
    """An ISO 8601 time (``Z``, a space for ``T``; UTC without a zone); ValueError otherwise."""
    text = _ISO_Z.sub("+00:00", text)
    if " " in text and "T" not in text:
        text = text.replace(" ", "T", 1)
    return as_aware(datetime.fromisoformat(text))
