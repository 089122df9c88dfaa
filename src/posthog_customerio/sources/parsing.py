"""Parse every PostHog input shape into one typed :class:`~posthog_customerio.events.PostHogEvent`.

Accepted shapes:

* Hog globals / HTTP webhook body: ``{"event": {...}, "person": {...}, "groups": {...}}``
* plugin-style events: ``distinct_id``, ``event``, ``properties``, ``timestamp``,
  ``$set``, ``$set_once``, ``uuid``, ``person``
* batch-export JSONL lines: ``person_properties``, ``set``, ``set_once``
* ClickHouse / Kafka rows: the same with ``properties``, ``person_properties``, ``$set``,
  ``$set_once`` (and ``person.properties``) as JSON-encoded strings
* capture-API events: ``{"event", "distinct_id", "properties", "timestamp"}``, single
  or inside ``{"api_key", "batch": [...]}``; capture v1 bodies (:func:`parse_v1_batch`)

Parsing is strict: a bad event raises :class:`EventParseError` with a message that
names the problem, and :func:`parse_payload` is all-or-nothing so an HTTP request is
never half-enqueued.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from ..events import MS_THRESHOLD, PostHogEvent, parse_iso, to_unix_seconds
from .json_strict import loads_strict
from .sdk_time import SdkClock, sdk_event_time

__all__ = ["EventParseError", "parse_event", "parse_payload", "parse_v1_batch"]


class EventParseError(ValueError):
    """An input could not be turned into a PostHog event."""


_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def _parse_timestamp(value: Any, now: datetime) -> datetime:
    if value is None or value == "":
        return now
    if isinstance(value, bool):
        raise EventParseError("timestamp must be an ISO 8601 string or a Unix time number")
    if isinstance(value, (int, float)):
        seconds = to_unix_seconds(value)
        if seconds is None:
            raise EventParseError("timestamp is not a valid time (NaN or infinite)")
        scaled = value / 1000 if abs(value) >= MS_THRESHOLD else value
        try:
            return datetime.fromtimestamp(scaled, tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise EventParseError("timestamp is out of range") from exc
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER.match(text):
            return _parse_timestamp(float(text), now)
        try:
            return parse_iso(text)
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
