"""Pure mapping: a PostHog event plus remembered person state -> Customer.io operations.

No I/O happens here. Every option of the original PostHog Customer.io destination
and every Customer.io rule lives in this module:

* ``EVENTS_TO_SEND`` allowlist: other events send nothing, but what they tell us
  (an email, that the person is identified) is remembered;
* ``SEND_EVENTS_FROM_ANONYMOUS_USERS``: ``all``, ``identified`` or ``with_email``;
* ``IDENTIFY_BY_EMAIL``: once an email is known, the person is addressed by it;
* the first operation for a person creates it; later identifies carry only the
  attributes whose values changed since they were last sent, and are skipped when
  nothing changed;
* events carry a deterministic ULID ``id`` (dedupe), integer ``timestamp`` seconds,
  ``page``/``screen`` types, and data = properties without ``$set``/``$set_once``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .ids import event_ulid
from .operations import Operation
from .sources import PostHogEvent, to_unix_seconds
from .state import PersonState

__all__ = [
    "AnonymousMode",
    "MappingConfig",
    "Mapped",
    "map_event",
    "involved_distinct_ids",
    "is_email",
    "value_digest",
]

AnonymousMode = Literal["all", "identified", "with_email"]

#: Events that make their distinct_id an identified person.
IDENTIFYING_EVENTS = frozenset({"$identify", "$create_alias", "$merge_dangerously"})
#: Alias events are not forwarded (a later version turns them into merges).
ALIAS_EVENTS = frozenset({"$create_alias"})
#: Properties that are instructions to PostHog, not event data.
PERSON_UPDATE_KEYS = frozenset({"$set", "$set_once", "$unset"})

#: Customer.io's limit on event names, in UTF-8 bytes.
MAX_EVENT_NAME_BYTES = 100

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True, slots=True)
class MappingConfig:
    """The mapping's options (the seed destination's, with the same meaning)."""

    identify_by_email: bool = False
    anonymous_mode: AnonymousMode = "all"
    events_to_send: frozenset[str] = frozenset()


@dataclass(slots=True)
class Mapped:
    """What one event produced: operations, changed person states, skip reason."""

    operations: list[Operation] = field(default_factory=list)
    states: dict[str, PersonState] = field(default_factory=dict)
    skipped: str | None = None


def is_email(value: Any) -> bool:
    """True when ``value`` is a string shaped like an email address."""
    return isinstance(value, str) and len(value) <= 254 and _EMAIL.match(value) is not None


def value_digest(value: Any) -> str:
    """A short stable digest of an attribute value (to detect changes)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def involved_distinct_ids(event: PostHogEvent) -> list[str]:
    """The distinct_ids whose state :func:`map_event` may read or change."""
    ids = [event.distinct_id]
    alias = event.properties.get("alias")
    if event.event in IDENTIFYING_EVENTS and isinstance(alias, str) and alias:
        ids.append(alias)
    return ids


def map_event(
    event: PostHogEvent, states: Mapping[str, PersonState], config: MappingConfig
) -> Mapped:
    """Map one event to Customer.io operations, given the remembered states.

    ``states`` holds the known states of :func:`involved_distinct_ids` (absent =
    never seen). It is not modified; changed states are returned in ``Mapped.states``.
    """
    state = _current(states, event.distinct_id)
    result = Mapped(states={state.distinct_id: state})
    _remember(event, state)
    if event.event in IDENTIFYING_EVENTS:
        _mark_alias_identified(event, states, result)
    if event.event in ALIAS_EVENTS:
        result.skipped = "alias"
        return result
    if config.events_to_send and event.event not in config.events_to_send:
        result.skipped = "not_in_allowlist"
        return result
    if not _passes_anonymous_filter(state, config.anonymous_mode):
        result.skipped = "anonymous_user"
        return result
    identify = _identify_operation(event, state, config)
    if identify is not None:
        result.operations.append(identify)
    result.operations.append(_event_operation(event, state, config, identify))
    return result


def _current(states: Mapping[str, PersonState], distinct_id: str) -> PersonState:
    known = states.get(distinct_id)
    return known.copy() if known is not None else PersonState(distinct_id)


def _remember(event: PostHogEvent, state: PersonState) -> None:
    email = _email_of(event)
    if email is not None:
        state.email = email
    if event.event in IDENTIFYING_EVENTS or event.properties.get("$is_identified") is True:
        state.identified = True


def _mark_alias_identified(
    event: PostHogEvent, states: Mapping[str, PersonState], result: Mapped
) -> None:
    for other in involved_distinct_ids(event)[1:]:
        alias_state = _current(states, other)
        alias_state.identified = True
        result.states[other] = alias_state


def _email_of(event: PostHogEvent) -> str | None:
    """The email this event tells us: ``$set.email``, person properties, distinct_id."""
    for candidate in (
        event.set.get("email"),
        event.person_properties.get("email"),
        event.distinct_id,
    ):
        if is_email(candidate):
            return candidate.strip()
    return None


def _passes_anonymous_filter(state: PersonState, mode: AnonymousMode) -> bool:
    if mode == "identified":
        return state.identified
    if mode == "with_email":
        return state.email is not None
    return True


def _profile_attributes(event: PostHogEvent, state: PersonState) -> dict[str, Any]:
    """Everything we know of the person: person properties, ``$set``, new ``$set_once``."""
    attributes = {**event.person_properties, **event.set}
    for key, value in event.set_once.items():
        if key not in attributes and key not in state.digests:
            attributes[key] = value
    if state.email is not None:
        attributes["email"] = state.email
    if "created_at" in attributes:
        created_at = to_unix_seconds(attributes["created_at"])
        if created_at is None:
            del attributes["created_at"]
        else:
            attributes["created_at"] = created_at
    return attributes


def _identifiers(state: PersonState, config: MappingConfig) -> dict[str, str]:
    if config.identify_by_email and state.email_sent:
        return {"email": state.email_sent}
    return {"id": state.distinct_id}


def _identify_operation(
    event: PostHogEvent, state: PersonState, config: MappingConfig
) -> Operation | None:
    attributes = _profile_attributes(event, state)
    digests = {key: value_digest(value) for key, value in attributes.items()}
    changed = {key: value for key, value in attributes.items() if state.digests.get(key) != digests[key]}
    if state.created and not changed:
        return None
    if not state.created and config.identify_by_email and state.email:
        identifiers = {"email": state.email}
        state.email_sent = state.email
    else:
        identifiers = _identifiers(state, config)
    if "email" in changed:
        state.email_sent = state.email
    state.created = True
    for key in changed:
        state.digests[key] = digests[key]
    payload: dict[str, Any] = {
        "type": "person",
        "identifiers": identifiers,
        "action": "identify",
        "timestamp": event.timestamp_s,
    }
    if changed:
        payload["attributes"] = changed
    return Operation(state.distinct_id, payload)


def _event_operation(
    event: PostHogEvent, state: PersonState, config: MappingConfig, identify: Operation | None
) -> Operation:
    action, name = _event_action_and_name(event)
    identifiers = identify.payload["identifiers"] if identify else _identifiers(state, config)
    data = {key: value for key, value in event.properties.items() if key not in PERSON_UPDATE_KEYS}
    payload: dict[str, Any] = {
        "type": "person",
        "identifiers": identifiers,
        "action": action,
        "name": name,
        "id": event_ulid(event),
        "timestamp": event.timestamp_s,
        "attributes": data,
    }
    return Operation(state.distinct_id, payload)


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
    if len(url.encode()) <= MAX_EVENT_NAME_BYTES:
        return url
    short = url.split("#", 1)[0].split("?", 1)[0]
    return truncate_utf8(short, MAX_EVENT_NAME_BYTES)


def truncate_utf8(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, never inside a character."""
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", errors="ignore")


def _text_or(value: Any, fallback: str) -> str:
    return value if isinstance(value, str) and value.strip() else fallback
