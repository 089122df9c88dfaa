"""Events: the Customer.io event (or page, screen) operation of a PostHog event, renamed
(``EVENT_NAME_MAP``), filtered (``PROPERTIES_TO_INCLUDE`` / ``_EXCLUDE``) and fitted to Customer.io's limits;
anonymous events, and the person events that adopt a visitor's queued anonymous events.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from .. import limits
from ..events import PostHogEvent
from ..ids import event_ulid
from ..operations import Kind, Operation, encode_payload
from ..state import PersonState
from .attributes import convert_dates
from .book import Mapped
from .config import MappingConfig
from .identifiers import person_identifiers

__all__ = [
    "MAX_EVENT_NAME_BYTES",
    "PERSON_UPDATE_KEYS",
    "PREFIT_MIN_PROPERTIES",
    "adopted_events",
    "anonymous_event_operation",
    "event_operation",
    "page_name",
    "prefit_event",
]


#: Properties that are instructions to PostHog, not event data.
PERSON_UPDATE_KEYS = frozenset({"$set", "$set_once", "$unset"})
#: Customer.io's limit on event names, in UTF-8 bytes.
MAX_EVENT_NAME_BYTES = limits.MAX_EVENT_NAME_BYTES


def _event_fields(event: PostHogEvent, config: MappingConfig, result: Mapped) -> tuple[str, str, dict[str, Any]]:
    """(action, name, data) of the event, with renames, filters and limits applied."""
    action, name = _event_action_and_name(event)
    if action == "event":
        name = config.event_name_map.get(name, name)
    if config.truncate and limits.utf8_len(name) > MAX_EVENT_NAME_BYTES:
        name = limits.truncate_utf8(name, MAX_EVENT_NAME_BYTES)
        result.notes["limits_truncated"] += 1
    properties = event.properties
    if config.properties_to_include or config.properties_to_exclude:
        properties = {k: v for k, v in properties.items() if config.keeps(k)}
    if config.convert_dates:
        data = {k: convert_dates(v) for k, v in properties.items() if k not in PERSON_UPDATE_KEYS}
    else:
        data = {k: v for k, v in properties.items() if k not in PERSON_UPDATE_KEYS}
    return action, name, data


def _event_op(
    person_key: str,
    payload: dict[str, Any],
    data: dict[str, Any],
    config: MappingConfig,
    result: Mapped,
    kind: Kind = "person",
) -> Operation:
    """The operation for an event payload, its data fitted to Customer.io's limits.

    The payload is encoded once; that text goes to the outbox as is. Only an event
    over the limits takes the slow path (drop the largest properties, encode again).
    """
    payload["attributes"] = data
    text = encode_payload(payload)
    if not config.truncate or len(text) <= _FAST_OP_CHARS:  # chars ≤ bytes ≤ 4 × chars: surely within
        return Operation(person_key, payload, text=text, kind=kind)
    size = len(text.encode())
    if size <= limits.MAX_OP_BYTES:
        return Operation(person_key, payload, text=text, kind=kind)
    del payload["attributes"]
    overhead = limits.json_len(payload) + 20
    fitted, dropped = limits.fit_event_data(data, min(limits.MAX_EVENT_DATA_BYTES, limits.MAX_OP_BYTES - overhead))
    result.notes["limits_truncated"] += len(data) - len(fitted)
    fitted["_truncated_properties"] = dropped
    payload["attributes"] = fitted
    return Operation(person_key, payload, kind=kind)


#: events with more properties than this have their data fitted before ingestion takes the writer
PREFIT_MIN_PROPERTIES = 1_000
#: room left for an event operation's fields other than its data when fitting ahead
_PREFIT_OVERHEAD = 2_000


def prefit_event(event: PostHogEvent, config: MappingConfig) -> tuple[PostHogEvent, int]:
    """An event with very many properties, its data already fitted to Customer.io's limits.

    Fitting is linear but not free (200,000 properties: about a second): ingestion calls this
    before its write transaction, so one wide event never holds the writer while every other
    request waits. Returns the event (unchanged when it fits or is small) and how many
    properties were dropped; :func:`_event_op` still checks the exact size.
    """
    if not config.truncate or len(event.properties) <= PREFIT_MIN_PROPERTIES:
        return event, 0
    data = {k: v for k, v in event.properties.items() if k not in PERSON_UPDATE_KEYS}
    fitted, dropped = limits.fit_event_data(data, limits.MAX_OP_BYTES - _PREFIT_OVERHEAD)
    if not dropped:
        return event, 0
    updates = {k: v for k, v in event.properties.items() if k in PERSON_UPDATE_KEYS}
    properties = {**fitted, "_truncated_properties": dropped, **updates}
    return dataclasses.replace(event, properties=properties), len(data) - len(fitted)


#: an operation this many characters long is under 32,000 UTF-8 bytes whatever its characters
_FAST_OP_CHARS = limits.MAX_OP_BYTES // 4


def event_operation(
    event: PostHogEvent, state: PersonState, config: MappingConfig, identifies: list[Operation], result: Mapped
) -> Operation:
    action, name, data = _event_fields(event, config, result)
    # as this event's identify (the same batch: the identifiers it surely has), else the person's own
    identifiers = identifies[-1].payload["identifiers"] if identifies else person_identifiers(state, config)
    payload: dict[str, Any] = {
        "type": "person",
        "identifiers": identifiers,
        "action": action,
        "name": name,
        "id": event_ulid(event),
        "timestamp": event.timestamp_s,
    }
    return _event_op(state.distinct_id, payload, data, config, result)


def anonymous_event_operation(
    event: PostHogEvent, state: PersonState, config: MappingConfig, result: Mapped
) -> Operation:
    action, name, data = _event_fields(event, config, result)
    payload: dict[str, Any] = {
        "type": "anonymous",
        "action": action,
        "anonymous_id": state.distinct_id,
        "name": name,
        "id": event_ulid(event),
        "timestamp": event.timestamp_s,
    }
    return _event_op(state.distinct_id, payload, data, config, result, kind="anonymous")


def adopted_events(anonymous: Sequence[Operation], identifiers: dict[str, str], person_key: str) -> list[Operation]:
    """A visitor's still-queued anonymous events, as events of the person who identified.

    :func:`map_event` decides what is adopted (``Mapped.adopt``); this builds the
    person events that replace the queued ones (same action, name, dedupe ``id``,
    timestamp and data), ordered under ``person_key``. Other kinds are left out.
    """
    adopted = []
    for operation in anonymous:
        if operation.kind != "anonymous":
            continue
        old = operation.payload
        payload: dict[str, Any] = {
            "type": "person",
            "identifiers": identifiers,
            "action": old["action"],
            "name": old["name"],
        }
        for key in ("id", "timestamp", "attributes"):
            if key in old:
                payload[key] = old[key]
        adopted.append(Operation(person_key, payload, kind="person"))
    return adopted


def _event_action_and_name(event: PostHogEvent) -> tuple[str, str]:
    if event.event == "$pageview":
        return "page", page_name(_text_or(event.properties.get("$current_url"), event.event))
    if event.event == "$screen":
        return "screen", _text_or(event.properties.get("$screen_name"), event.event)
    return "event", event.event


def page_name(url: str) -> str:
    """A page event's name: the URL, without query and fragment if it is over 100 bytes.

    Customer.io limits event names to 100 bytes; marketing URLs with UTM parameters
    often exceed it. The full URL stays in the event data (``$current_url``).
    """
    if limits.utf8_len(url) <= MAX_EVENT_NAME_BYTES:
        return url
    short = url.split("#", 1)[0].split("?", 1)[0]
    return limits.truncate_utf8(short, MAX_EVENT_NAME_BYTES)


def _text_or(value: Any, fallback: str) -> str:
    return value if isinstance(value, str) and value.strip() else fallback
