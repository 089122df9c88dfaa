"""Person attributes: what an event tells of the person (person properties, ``$set``, new ``$set_once``,
``$unset``), ISO 8601 date-times as Unix seconds (``CONVERT_DATES``), and the digests that detect changes.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as _encode_string
from typing import Any

from ..events import PostHogEvent, to_unix_seconds
from ..state import PersonState
from .config import MappingConfig
from .devices import DEVICE_TOKEN_PROPERTIES

__all__ = ["PUSH_SUBSCRIPTION_PREFIX", "convert_dates", "iso_datetime_seconds", "profile_attributes", "value_digest"]


#: PostHog's own push subscriptions (``$device_push_subscription_<app id>``): its ciphertext, useless elsewhere.
PUSH_SUBSCRIPTION_PREFIX = "$device_push_subscription_"
#: a full ISO 8601 date-time: date, time (at least hh:mm), optional fraction and zone
#: the shortest text :data:`_ISO_DATETIME` matches (``2024-01-01T10:00``)
_SHORTEST_DATETIME = 16
_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}([.,]\d{1,9})?)?(Z|[+-]\d{2}(:?\d{2})?)?$")


def value_digest(value: Any) -> str:
    """A short stable digest of an attribute value (to detect changes).

    The digest is of the value's canonical JSON; scalars take a fast path that
    produces exactly the text ``json.dumps`` would.
    """
    kind = type(value)
    if kind is str:
        text = _encode_string(value)
    elif kind is bool:
        text = "true" if value else "false"
    elif kind is int:
        text = int.__repr__(value)
    elif value is None:
        text = "null"
    else:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def profile_attributes(event: PostHogEvent, state: PersonState, config: MappingConfig) -> dict[str, Any]:
    """What we know of the person: person properties, ``$set``, new ``$set_once``, pending."""
    attributes = {**state.pending, **event.person_properties, **event.set}
    for key, value in event.set_once.items():
        if key not in attributes and key not in state.digests:
            attributes[key] = value
    for key in event.unset:
        attributes.pop(key, None)
    for key in DEVICE_TOKEN_PROPERTIES:
        attributes.pop(key, None)
    attributes = {
        key: value
        for key, value in attributes.items()
        if key == "email" or (config.keeps(key) and not key.startswith(PUSH_SUBSCRIPTION_PREFIX))
    }
    if state.email is not None:
        attributes["email"] = state.email
    for key, value in attributes.items():
        if value is None:  # PostHog null = no value; Customer.io clears an attribute set to ""
            attributes[key] = ""
        elif config.convert_dates and key != "created_at":
            attributes[key] = convert_dates(value)
    if "created_at" in attributes:
        created_at = to_unix_seconds(attributes["created_at"])
        if created_at is None:
            del attributes["created_at"]
        else:
            attributes["created_at"] = created_at
    return attributes


def convert_dates(value: Any) -> Any:
    """``value`` with every full ISO 8601 date-time string as Unix seconds, inside objects too.

    As Segment's Customer.io destination does (``convertAttributeTimestamps``): strings, and the
    values of nested objects, recursively; lists are left as they are.
    """
    if isinstance(value, str):
        if len(value) < _SHORTEST_DATETIME or value[4:5] != "-":  # most strings: surely no date-time
            return value
        seconds = iso_datetime_seconds(value)
        return value if seconds is None else seconds
    if isinstance(value, dict):
        return {key: convert_dates(item) for key, item in value.items()}
    return value


def iso_datetime_seconds(value: str) -> int | None:
    """Unix seconds of a full ISO 8601 date-time string (date and time), else ``None``.

    Bare dates, numbers and other strings are not date-times and stay as they are;
    a date-time without a zone is UTC.
    """
    if len(value) > 40 or not _ISO_DATETIME.match(value):
        return None
    text = value.replace(",", ".")
    text = text[:-1] + "+00:00" if text.endswith("Z") else text
    try:
        moment = datetime.fromisoformat(text.replace(" ", "T", 1))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())
