"""The event model and the strict parsers of every PostHog input shape, in one place.

This module gathers what is defined along its concerns:

* :mod:`posthog_customerio.events` — the event model (:class:`PostHogEvent`, :func:`to_unix_seconds`);
* :mod:`.parsing` — every input shape to one event (:func:`parse_event`, :func:`parse_payload`,
  :func:`parse_v1_batch`, :class:`EventParseError`);
* :mod:`.json_strict` — ``json.loads`` for untrusted input (:func:`loads_strict`), bounded by
  :mod:`.json_bounded` (:class:`TooManyEvents`);
* :mod:`.records` — a file's JSONL / JSON array, record by record (:func:`read_events`).
"""

from __future__ import annotations

from ..events import PostHogEvent, to_unix_seconds
from .json_bounded import TooManyEvents
from .json_strict import NUL_REPLACEMENT, loads_strict, replace_nul
from .parsing import EventParseError, parse_event, parse_payload, parse_v1_batch
from .records import ParsedItem, read_events

__all__ = [
    "NUL_REPLACEMENT",
    "EventParseError",
    "ParsedItem",
    "PostHogEvent",
    "TooManyEvents",
    "loads_strict",
    "parse_event",
    "parse_payload",
    "parse_v1_batch",
    "read_events",
    "replace_nul",
    "to_unix_seconds",
]
