"""Turn every PostHog input shape into one typed :class:`PostHogEvent`.

Accepted shapes:

* Hog globals / HTTP webhook body: ``{"event": {...}, "person": {...}, "groups": {...}}``
* plugin-style events: ``distinct_id``, ``event``, ``properties``, ``timestamp``,
  ``$set``, ``$set_once``, ``uuid``, ``person``
* batch-export JSONL lines: ``person_properties``, ``set``, ``set_once``
* ClickHouse / Kafka rows: the same with ``properties``, ``person_properties``, ``$set``,
  ``$set_once`` (and ``person.properties``) as JSON-encoded strings
* capture-API events: ``{"event", "distinct_id", "properties", "timestamp"}``, single
  or inside ``{"api_key", "batch": [...]}``

Parsing is strict: a bad event raises :class:`EventParseError` with a message that
names the problem, and :func:`parse_payload` is all-or-nothing so an HTTP request is
never half-enqueued.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import IO, Any

from .sdk_time import SdkClock, sdk_event_time

__all__ = [
    "EventParseError",
    "ParsedItem",
    "PostHogEvent",
    "TooManyEvents",
    "loads_strict",
    "parse_event",
    "parse_payload",
    "parse_v1_batch",
    "read_events",
    "to_unix_seconds",
]


class EventParseError(ValueError):
    """An input could not be turned into a PostHog event."""


class TooManyEvents(ValueError):
    """A payload holds more events than one request may carry (``MAX_EVENTS_PER_REQUEST``)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} events in one request")
        self.limit = limit


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


@dataclass(frozen=True, slots=True)
class ParsedItem:
    """One input record of a file: an event or the error that rejected it."""

    location: str
    event: PostHogEvent | None = None
    error: str | None = None


_MS_THRESHOLD = 100_000_000_000  # numbers above this are milliseconds (year 5138 in seconds)
_ISO_Z = re.compile(r"Z$")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def to_unix_seconds(value: Any) -> int | None:
    """Convert an ISO string, Unix seconds or Unix milliseconds to integer seconds.

    Returns ``None`` for anything that is not a recognisable time (never NaN).
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, datetime):
        return int(_aware(value).timestamp())
    if isinstance(value, (int, float)):
        if value != value or value in (float("inf"), float("-inf")):
            return None
        return int(value / 1000) if abs(value) >= _MS_THRESHOLD else int(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            return to_unix_seconds(float(text))
        except ValueError:
            pass
        try:
            return int(_parse_iso(text).timestamp())
        except ValueError:
            return None
    return None


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _parse_iso(text: str) -> datetime:
    text = _ISO_Z.sub("+00:00", text)
    if " " in text and "T" not in text:
        text = text.replace(" ", "T", 1)
    return _aware(datetime.fromisoformat(text))


def _parse_timestamp(value: Any, now: datetime) -> datetime:
    if value is None or value == "":
        return now
    if isinstance(value, bool):
        raise EventParseError("timestamp must be an ISO 8601 string or a Unix time number")
    if isinstance(value, (int, float)):
        seconds = to_unix_seconds(value)
        if seconds is None:
            raise EventParseError("timestamp is not a valid time (NaN or infinite)")
        scaled = value / 1000 if abs(value) >= _MS_THRESHOLD else value
        try:
            return datetime.fromtimestamp(scaled, tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise EventParseError("timestamp is out of range") from exc
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER.match(text):
            return _parse_timestamp(float(text), now)
        try:
            return _parse_iso(text)
        except ValueError as exc:
            raise EventParseError("timestamp is not ISO 8601 nor a Unix time number") from exc
    raise EventParseError("timestamp must be an ISO 8601 string or a Unix time number")


def _object(value: Any, name: str) -> dict[str, Any]:
    """A JSON object field; also given as a JSON *string* (ClickHouse exports and PostHog's
    Kafka topics encode ``properties``, ``person_properties``, ``$set``… that way; ``""`` = absent)."""
    if value is None:
        return {}
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            value = loads_strict(value)
        except (ValueError, RecursionError) as exc:
            raise EventParseError(f"{name} is a string but not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise EventParseError(f"{name} must be a JSON object, got {type(value).__name__}")
    return value


def _unset_keys(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, dict):
        return tuple(str(key) for key in value)
    if isinstance(value, list):
        return tuple(str(key) for key in value if isinstance(key, str))
    raise EventParseError("$unset must be a list of property names or an object")


def _distinct_id(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        raise EventParseError("missing distinct_id")
    if isinstance(value, (int, float)):
        value = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    if not isinstance(value, str):
        raise EventParseError(f"distinct_id must be a string, got {type(value).__name__}")
    if not value.strip():
        raise EventParseError("distinct_id is empty")
    if "\x00" in value or value.startswith("\x1f"):  # NUL cannot be stored; U+001F starts internal keys
        raise EventParseError("distinct_id contains a NUL or starts with a control character")
    return value


def _event_name(value: Any) -> str:
    if value is None:
        raise EventParseError("missing event name")
    if not isinstance(value, str):
        raise EventParseError(f"event name must be a string, got {type(value).__name__}")
    if not value.strip():
        raise EventParseError("event name is empty")
    return value


def _uuid(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise EventParseError(f"uuid must be a string, got {type(value).__name__}")
    return value


def parse_event(obj: Any, now: datetime | None = None) -> PostHogEvent:
    """Parse one event of any accepted shape, or raise :class:`EventParseError`."""
    if not isinstance(obj, dict):
        raise EventParseError(f"an event must be a JSON object, got {type(obj).__name__}")
    now = now or datetime.now(UTC)
    if isinstance(obj.get("event"), dict):
        return _parse_hog_globals(obj, now)
    return _parse_flat(obj, now)


_IDENTIFIER = re.compile(r"[A-Za-z0-9_$-]{1,40}")


def _field(name: str) -> str:
    """A key of the input, for a message: as is when it is a plain identifier, else ``<key>`` (never a value)."""
    return name if _IDENTIFIER.fullmatch(name) else "<key>"


def _hog_groups(value: Any) -> dict[str, tuple[Any, dict[str, Any]]]:
    """Hog globals ``groups`` (``{type: {id|key, type, index, url, properties}}``) -> type -> (key, properties).

    A group without a key is left out (nothing to address); a wrong shape is an error.
    """
    groups: dict[str, tuple[Any, dict[str, Any]]] = {}
    for name, group in _object(value, "groups").items():
        label = f"groups.{_field(name)}"
        group = _object(group, label)
        key = group.get("id", group.get("key"))
        if key is None or isinstance(key, (bool, dict, list)):
            continue
        groups[name] = (key, _object(group.get("properties"), f"{label}.properties"))
    return groups


def _parse_hog_globals(obj: dict[str, Any], now: datetime) -> PostHogEvent:
    inner = obj["event"]
    person = _object(obj.get("person"), "person")
    event = _build(
        name=inner.get("event", inner.get("name")),
        distinct_id=inner.get("distinct_id"),
        properties=_object(inner.get("properties"), "event.properties"),
        timestamp=inner.get("timestamp"),
        uuid=inner.get("uuid"),
        top_set=None,
        top_set_once=None,
        person_properties=_object(person.get("properties"), "person.properties"),
        now=now,
    )
    groups = _hog_groups(obj.get("groups"))
    return replace(event, groups=groups) if groups else event


def _parse_flat(obj: dict[str, Any], now: datetime) -> PostHogEvent:
    properties = _object(obj.get("properties"), "properties")
    person = _object(obj.get("person"), "person")
    person_properties = {
        **_object(person.get("properties"), "person.properties"),
        **_object(obj.get("person_properties"), "person_properties"),
    }
    distinct_id = obj.get("distinct_id")
    if distinct_id is None:
        distinct_id = properties.get("distinct_id")
    top_set = obj.get("$set", obj.get("set"))
    top_set_once = obj.get("$set_once", obj.get("set_once"))
    return _build(
        name=obj.get("event"),
        distinct_id=distinct_id,
        properties=properties,
        timestamp=obj.get("timestamp"),
        uuid=obj.get("uuid"),
        top_set=top_set,
        top_set_once=top_set_once,
        person_properties=person_properties,
        now=now,
    )


def _build(
    *,
    name: Any,
    distinct_id: Any,
    properties: dict[str, Any],
    timestamp: Any,
    uuid: Any,
    top_set: Any,
    top_set_once: Any,
    person_properties: dict[str, Any],
    now: datetime,
) -> PostHogEvent:
    set_props = {
        **_object(properties.get("$set"), "properties.$set"),
        **_object(top_set, "$set"),
    }
    set_once_props = {
        **_object(properties.get("$set_once"), "properties.$set_once"),
        **_object(top_set_once, "$set_once"),
    }
    return PostHogEvent(
        event=_event_name(name),
        distinct_id=_distinct_id(distinct_id),
        timestamp=_parse_timestamp(timestamp, now),
        properties=properties,
        uuid=_uuid(uuid),
        set=_trim_email(set_props),
        set_once=_trim_email(set_once_props),
        unset=_unset_keys(properties.get("$unset")),
        person_properties=_trim_email(person_properties),
    )


def _trim_email(props: dict[str, Any]) -> dict[str, Any]:
    """``props`` with its ``email`` stripped of surrounding whitespace (a copy when it changes).

    A mobile keyboard leaves ``"Rosa.Diaz@Example.COM "``: untrimmed it is no email address,
    so the ``with_email`` filter and ``IDENTIFY_BY_EMAIL`` would pass the person over and the
    attribute would carry the space. Normalised here, once, everything downstream (mapping,
    state, the attribute sent) sees the same value. Only whitespace goes: the case stays as
    typed, because Customer.io compares email identifiers case-insensitively ("for workspaces
    using email as an identifier, email is case-insensitive"). A value that is nothing but
    whitespace is left as it is (trimming would make it an empty value, which clears the attribute).
    """
    email = props.get("email")
    if not isinstance(email, str):
        return props
    trimmed = email.strip()
    if trimmed == email or not trimmed:
        return props
    return {**props, "email": trimmed}


def _sdk_timed(event: PostHogEvent, item: Any, clock: SdkClock | None) -> PostHogEvent:
    """``event`` at the time PostHog's capture would give it (:mod:`.sdk_time`); as is without ``clock``."""
    if clock is None or not isinstance(item, dict):
        return event
    raw = item["event"] if isinstance(item.get("event"), dict) else item
    when = sdk_event_time(event.timestamp, raw, event.properties, clock)
    return event if when is event.timestamp else replace(event, timestamp=when)


def parse_payload(obj: Any, now: datetime | None = None, *, clock: SdkClock | None = None) -> list[PostHogEvent]:
    """Parse an HTTP body or file record holding one or more events, all or nothing.

    Accepts a single event, a JSON array of events, or a capture batch
    ``{"batch": [...]}``. The first bad event raises :class:`EventParseError` naming
    its position, so callers never enqueue part of a rejected payload.

    ``clock``: the payload is an SDK's capture request; event times are corrected for the
    SDK's clock as PostHog's capture does (:mod:`.sdk_time`). Without it (webhooks, files,
    Kafka: times PostHog set already) they are taken as they are.
    """
    now = clock.received_at if clock is not None else now or datetime.now(UTC)
    items = _payload_items(obj)
    events = []
    for index, item in enumerate(items):
        try:
            events.append(_sdk_timed(parse_event(item, now), item, clock))
        except EventParseError as exc:
            if len(items) == 1 and items[0] is obj:
                raise
            raise EventParseError(f"event {index}: {exc}") from exc
    return events


#: capture v1 ``options`` fields and the event properties they stand for
_V1_OPTIONS = {
    "process_person_profile": "$process_person_profile",
    "cookieless_mode": "$cookieless_mode",
    "disable_skew_correction": "$ignore_sent_at",
    "product_tour_id": "$product_tour_id",
}
_V1_TOP_LEVEL = {"session_id": "$session_id", "window_id": "$window_id"}


def parse_v1_batch(
    obj: Any, sdk_info: str | None = None, now: datetime | None = None, *, clock: SdkClock | None = None
) -> list[PostHogEvent]:
    """Parse a capture v1 body (``POST /i/v1/analytics/events``), all or nothing.

    The body is ``{"created_at", "batch": [event, ...], "historical_migration"?}``; each
    event is ``{"event", "uuid", "distinct_id", "timestamp", "options", "properties"}`` with
    optional ``session_id`` / ``window_id``. Those and ``options`` go back into the
    properties PostHog stores them as (``$session_id``, ``$process_person_profile`` ...),
    and ``$lib`` / ``$lib_version`` come from the ``PostHog-Sdk-Info`` header
    (``posthog-python/7.1.0``), as PostHog's capture service does. ``clock`` (its ``sent_at``
    from the ``PostHog-Request-Timestamp`` header) corrects the SDK's clock (:mod:`.sdk_time`).
    """
    if not isinstance(obj, dict) or not isinstance(obj.get("batch"), list):
        raise EventParseError('a capture v1 body is {"batch": [...]} (a JSON object with an array of events)')
    lib, _, lib_version = (sdk_info or "").strip().partition("/")
    now = clock.received_at if clock is not None else now or datetime.now(UTC)
    events = []
    for index, item in enumerate(obj["batch"]):
        try:
            if not isinstance(item, dict):
                raise EventParseError(f"an event must be a JSON object, got {type(item).__name__}")
            properties = dict(_object(item.get("properties"), "properties"))
            for name, prop in _V1_TOP_LEVEL.items():
                if isinstance(item.get(name), str):
                    properties.setdefault(prop, item[name])
            for name, value in _object(item.get("options"), "options").items():
                if name in _V1_OPTIONS:
                    properties.setdefault(_V1_OPTIONS[name], value)
            if lib:
                properties.setdefault("$lib", lib)
                if lib_version:
                    properties.setdefault("$lib_version", lib_version)
            events.append(_sdk_timed(_parse_flat({**item, "properties": properties}, now), item, clock))
        except EventParseError as exc:
            raise EventParseError(f"event {index}: {exc}") from exc
    return events


def _payload_items(obj: Any) -> list[Any]:
    if isinstance(obj, list):
        return obj
    if isinstance(obj, dict) and "batch" in obj and "event" not in obj:
        batch = obj["batch"]
        if not isinstance(batch, list):
            raise EventParseError("batch must be a JSON array of events")
        return batch
    if isinstance(obj, dict):
        return [obj]
    raise EventParseError(f"expected a JSON object or array, got {type(obj).__name__}")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("a number is out of range (it overflows to infinity)")
    return value


#: a JSON escape of a UTF-16 surrogate; only pairs of them are text
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_BYTES = re.compile(_SURROGATE_ESCAPE.pattern.encode())
_MAX_DEPTH = 100


def _check_depth(obj: Any) -> None:
    """Refuse structures nested deeper than ``_MAX_DEPTH`` (iteratively: no recursion)."""
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > _MAX_DEPTH:
            raise ValueError(f"nested more than {_MAX_DEPTH} levels deep")
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values() if isinstance(child, (dict, list)))
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node if isinstance(child, (dict, list)))


#: a JSON escape of NUL: the only way a NUL gets into a string of strict JSON (raw control characters are refused)
_NUL_ESCAPE = "\\u0000"
_NUL_ESCAPE_BYTES = _NUL_ESCAPE.encode()
#: what a NUL becomes: PostgreSQL text cannot hold NUL, so both backends store this instead
NUL_REPLACEMENT = "\ufffd"


def _may_hold_nul(text: str | bytes) -> bool:
    """Whether decoded ``text`` can hold a NUL: it has the escape, or is UTF-16/32 bytes (NUL in its first bytes)."""
    if isinstance(text, str):
        return _NUL_ESCAPE in text
    return _NUL_ESCAPE_BYTES in text or b"\x00" in text[:4]


def _clean(value: str) -> str:
    return value.replace("\x00", NUL_REPLACEMENT) if "\x00" in value else value


def replace_nul(obj: Any) -> Any:
    """``obj`` (decoded JSON) with every NUL in its strings and keys replaced by U+FFFD, in place where it can.

    One iterative pass over the structure (linear, no recursion); returns the (new) top-level value.
    """
    if isinstance(obj, str):
        return _clean(obj)
    stack: list[Any] = [obj]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if any("\x00" in key for key in node):
                items = [(_clean(key), value) for key, value in node.items()]
                node.clear()
                node.update(items)
            for key, value in node.items():
                if isinstance(value, str):
                    node[key] = _clean(value)
                elif isinstance(value, (dict, list)):
                    stack.append(value)
        elif isinstance(node, list):
            for index, value in enumerate(node):
                if isinstance(value, str):
                    node[index] = _clean(value)
                elif isinstance(value, (dict, list)):
                    stack.append(value)
    return obj


def loads_strict(text: str | bytes, max_items: int | None = None) -> Any:
    """``json.loads`` for untrusted input.

    Rejects ``NaN``/``Infinity`` and numbers that overflow to infinity, strings
    holding an unpaired UTF-16 surrogate (they cannot be encoded as UTF-8), and
    structures nested more than 100 levels deep; raises ValueError naming it.
    Every NUL (``\\u0000``) in a string or key becomes U+FFFD (:func:`replace_nul`):
    PostgreSQL cannot store it, and both backends must store the same thing.
    With ``max_items``, a top-level array (or the ``batch`` array of a top-level
    object) is decoded one element at a time and :class:`TooManyEvents` is raised
    at element ``max_items + 1``, before the rest is ever materialised.
    """
    if max_items is None:
        obj = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    else:
        obj = _loads_bounded(text, max_items)
    if _may_hold_nul(text):
        obj = replace_nul(obj)
    escape = _SURROGATE_ESCAPE if isinstance(text, str) else _SURROGATE_ESCAPE_BYTES
    if escape.search(text):  # type: ignore[arg-type]
        try:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("a string holds an unpaired UTF-16 surrogate (\\uD800-\\uDFFF)") from None
    brackets = text.count("[") + text.count("{") if isinstance(text, str) else text.count(b"[") + text.count(b"{")
    if brackets > _MAX_DEPTH:
        _check_depth(obj)
    return obj


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
_WHITESPACE = json.decoder.WHITESPACE  # type: ignore[attr-defined]


def _loads_bounded(text: str | bytes, max_items: int) -> Any:
    """``json.loads`` that counts the elements of the top-level list while it decodes them."""
    if isinstance(text, bytes):
        text = text.decode(json.detect_encoding(text), "surrogatepass")  # what json.loads does with bytes
    index = _WHITESPACE.match(text, 0).end()
    obj: Any
    if text.startswith("[", index):
        obj, index = _decode_array(text, index, max_items)
    elif text.startswith("{", index):
        obj, index = _decode_object(text, index, max_items)
    else:
        obj, index = _DECODER.raw_decode(text, index)
    index = _WHITESPACE.match(text, index).end()
    if index != len(text):
        raise json.JSONDecodeError("Extra data", text, index)
    return obj


def _decode_array(text: str, index: int, max_items: int) -> tuple[list[Any], int]:
    items: list[Any] = []
    index = _WHITESPACE.match(text, index + 1).end()
    if text.startswith("]", index):
        return items, index + 1
    while True:
        if len(items) >= max_items:
            raise TooManyEvents(max_items)
        value, index = _DECODER.raw_decode(text, index)
        items.append(value)
        index = _WHITESPACE.match(text, index).end()
        if text.startswith(",", index):
            index = _WHITESPACE.match(text, index + 1).end()
        elif text.startswith("]", index):
            return items, index + 1
        else:
            raise json.JSONDecodeError("Expecting ',' delimiter", text, index)


def _decode_object(text: str, index: int, max_items: int) -> tuple[dict[str, Any], int]:
    """A top-level object; its ``batch`` array is decoded with :func:`_decode_array`."""
    obj: dict[str, Any] = {}
    index = _WHITESPACE.match(text, index + 1).end()
    if text.startswith("}", index):
        return obj, index + 1
    while True:
        if not text.startswith('"', index):
            raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, index)
        key, index = json.decoder.scanstring(text, index + 1)  # type: ignore[attr-defined]
        index = _WHITESPACE.match(text, index).end()
        if not text.startswith(":", index):
            raise json.JSONDecodeError("Expecting ':' delimiter", text, index)
        index = _WHITESPACE.match(text, index + 1).end()
        if key == "batch" and text.startswith("[", index):
            obj[key], index = _decode_array(text, index, max_items)
        else:
            obj[key], index = _DECODER.raw_decode(text, index)
        index = _WHITESPACE.match(text, index).end()
        if text.startswith(",", index):
            index = _WHITESPACE.match(text, index + 1).end()
        elif text.startswith("}", index):
            return obj, index + 1
        else:
            raise json.JSONDecodeError("Expecting ',' delimiter", text, index)


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
