"""Read a file's events: JSONL (one event per line) or one JSON array, error by error.

Each input record becomes a :class:`ParsedItem`: its event(s), or the error that rejected it
(naming its line or item), so a run goes on past a bad record.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO

from ..events import PostHogEvent
from .json_strict import loads_strict
from .parsing import EventParseError, parse_payload

__all__ = ["ParsedItem", "read_events"]


@dataclass(frozen=True, slots=True)
class ParsedItem:
    """One input record of a file: an event or the error that rejected it."""

    location: str
    event: PostHogEvent | None = None
    error: str | None = None


def read_events(stream: IO[str] | Iterable[str], now: datetime | None = None) -> Iterator[ParsedItem]:
    """Read JSONL (one event per line) or one JSON array from a text stream.

    Yields one :class:`ParsedItem` per event; a bad line yields an error naming its
    line number and the run goes on with the next line.
    """
    now = now or datetime.now(UTC)
    lines = iter(stream)
    first: str | None = None
    first_number = 0
    for number, line in enumerate(lines, start=1):
        if line.strip():
            first, first_number = line, number
            break
    if first is None:
        return
    if first.lstrip().startswith("["):
        yield from _read_json_array(first + "".join(lines), now)
        return
    yield from _read_jsonl_line(first, first_number, now)
    for number, line in enumerate(lines, start=first_number + 1):
        if line.strip():
            yield from _read_jsonl_line(line, number, now)


def _read_jsonl_line(line: str, number: int, now: datetime) -> Iterator[ParsedItem]:
    location = f"line {number}"
    try:
        obj = loads_strict(line)
    except json.JSONDecodeError as exc:
        yield ParsedItem(location, error=f"invalid JSON: {exc.msg} (column {exc.colno})")
        return
    except (ValueError, RecursionError) as exc:
        yield ParsedItem(location, error=f"invalid JSON: {exc}")
        return
    try:
        events = parse_payload(obj, now)
    except EventParseError as exc:
        yield ParsedItem(location, error=str(exc))
        return
    for event in events:
        yield ParsedItem(location, event=event)


def _read_json_array(text: str, now: datetime) -> Iterator[ParsedItem]:
    try:
        items = loads_strict(text)
    except json.JSONDecodeError as exc:
        yield ParsedItem(f"line {exc.lineno}", error=f"invalid JSON array: {exc.msg} (column {exc.colno})")
        return
    except (ValueError, RecursionError) as exc:
        yield ParsedItem("line 1", error=f"invalid JSON array: {exc}")
        return
    for index, item in enumerate(items):
        location = f"item {index}"
        try:
            events = parse_payload(item, now)
        except EventParseError as exc:
            yield ParsedItem(location, error=str(exc))
            continue
        for event in events:
            yield ParsedItem(location, event=event)
