"""The sandbox's operation model: one validated Track API operation, and the field rules v1 and v2 share.

:mod:`.track_v1` and :mod:`.track_v2` parse requests into :class:`Op`; :mod:`.workspace` applies them. A request
that breaks a rule raises :class:`OpError` (answered 400, or a 207 entry inside a v2 batch). Limits are
Customer.io's documented ones (Track API reference, https://docs.customer.io/integrations/api/track/).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

MAX_ID_BYTES = 150
MAX_ATTRIBUTE_NAME_BYTES = 150
MAX_ATTRIBUTE_VALUE_BYTES = 1000
MAX_ATTRIBUTES = 300
MAX_EVENT_NAME_BYTES = 100

EVENT_TYPES = frozenset({"event", "page", "screen"})
#: Push delivery metrics (spec ``pushMetrics`` and v2 ``delivery_operations``): opened|converted|delivered.
PUSH_METRICS = frozenset({"opened", "converted", "delivered"})
PERSON_KEYS = ("id", "email", "cio_id")
#: Keys of an identify body that are not stored as attributes.
_RESERVED = frozenset({"id", "email", "cio_id", "anonymous_id", "_update", "_timestamp", "cio_relationships"})
_ULID_RE = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}", re.IGNORECASE)
EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+")

#: A relationship: the other side's identifiers and the relationship attributes.
Relation = tuple[tuple[str, str], dict[str, Any]]


class OpError(Exception):
    """A rejected operation: ``reason``, offending ``field`` and a ``message``."""

    def __init__(self, reason: str, field: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field
        self.message = message

    def as_dict(self, index: int | None = None) -> dict[str, Any]:
        """The v2 error entry (with ``batch_index`` when given)."""
        entry: dict[str, Any] = {"reason": self.reason, "field": self.field, "message": self.message}
        if index is not None:
            entry = {"batch_index": index, **entry}
        return entry


@dataclass(slots=True)
class Op:
    """One validated operation (v1 requests are translated into these too)."""

    type: str  # person | object | anonymous | delivery
    action: str
    who: tuple[str, str] | None = None  # person (kind, value) or object (type_id, object_id)
    attributes: dict[str, Any] = field(default_factory=dict)  # profile attributes or event data
    ids: dict[str, str] = field(default_factory=dict)  # id/email to set on identify
    name: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    anonymous_id: str | None = None
    update_only: bool = False
    device: dict[str, Any] | None = None
    relationships: list[Relation] = field(default_factory=list)
    relationships_add: bool = True  # v1 identify may delete relationships instead
    primary: tuple[str, str] | None = None
    secondary: tuple[str, str] | None = None


def utf8_len(text: str) -> int:
    """Length of ``text`` in UTF-8 bytes."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def json_bytes(value: Any) -> int:
    """Size of ``value``: a string's UTF-8 bytes, anything else's compact JSON bytes."""
    if isinstance(value, str):
        return utf8_len(value)
    return utf8_len(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


def opt_int(container: dict[str, Any], key: str) -> int | None:
    """An optional integer field (Unix seconds)."""
    value = container.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise OpError("invalid", key, f"{key} must be an integer (Unix seconds), got {value!r}")
    return value


def opt_str(container: dict[str, Any], key: str) -> str | None:
    """An optional string field."""
    value = container.get(key)
    if value is not None and not isinstance(value, str):
        raise OpError("invalid", key, f"{key} must be a string")
    return value


def opt_dict(container: dict[str, Any], key: str) -> dict[str, Any]:
    """An optional object field (``{}`` when absent)."""
    value = container.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise OpError("invalid", key, f"{key} must be an object")
    return value


def ulid(value: Any) -> str | None:
    """An optional event ``id``: a ULID."""
    if value is None:
        return None
    if not isinstance(value, str) or not _ULID_RE.fullmatch(value):
        raise OpError("invalid", "id", f"id must be a valid ULID, got {value!r}")
    return value


def event_name(value: Any) -> str:
    """A required event name within the name limit."""
    if not isinstance(value, str) or not value.strip():
        raise OpError("required", "name", "name is required and must be a non-empty string")
    if utf8_len(value) > MAX_EVENT_NAME_BYTES:
        raise OpError("limit_exceeded", "name", f"event name exceeds {MAX_EVENT_NAME_BYTES} bytes")
    return value


def check_person_id(value: str, where: str) -> None:
    """A person ``id`` within the id limit."""
    if utf8_len(value) > MAX_ID_BYTES:
        raise OpError("limit_exceeded", where, f"person id exceeds {MAX_ID_BYTES} bytes")


def person_identifiers(value: Any, where: str) -> tuple[str, str]:
    """Exactly one of ``id``, ``email``, ``cio_id`` as a non-empty string."""
    if not isinstance(value, dict) or len(value) != 1:
        raise OpError("invalid", where, f"{where} must be an object with exactly one of id, email, cio_id")
    ((kind, ident),) = value.items()
    if kind not in PERSON_KEYS:
        raise OpError("invalid", where, f"unsupported identifier {kind!r} (use id, email or cio_id)")
    if not isinstance(ident, str) or not ident:
        raise OpError("invalid", f"{where}.{kind}", f"{where}.{kind} must be a non-empty string")
    if kind == "id":
        check_person_id(ident, f"{where}.id")
    return kind, ident


def object_identifiers(value: Any, where: str) -> tuple[str, str]:
    """``object_type_id`` + ``object_id``, both non-empty strings."""
    if not isinstance(value, dict):
        raise OpError("invalid", where, f"{where} must be an object with object_type_id and object_id")
    type_id, object_id = value.get("object_type_id"), value.get("object_id")
    if not isinstance(type_id, str) or not type_id or not isinstance(object_id, str) or not object_id:
        raise OpError("invalid", where, f"{where} needs object_type_id and object_id as non-empty strings")
    return type_id, object_id


def relationships(value: Any, to_people: bool) -> list[Relation]:
    """``cio_relationships``: people (for objects) or objects (for people)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise OpError("invalid", "cio_relationships", "cio_relationships must be a list")
    parsed = []
    for item in value:
        if not isinstance(item, dict):
            raise OpError("invalid", "cio_relationships", "each relationship must be an object")
        where = "cio_relationships.identifiers"
        if to_people:
            who = person_identifiers(item.get("identifiers"), where)
        else:
            who = object_identifiers(item.get("identifiers"), where)
        parsed.append((who, opt_dict(item, "relationship_attributes")))
    return parsed


def device(value: Any, adding: bool) -> dict[str, Any]:
    """A device: ``id`` (v1) or ``token`` (v2), ``platform`` (required to add)."""
    if not isinstance(value, dict):
        raise OpError("required", "device", "device must be an object")
    token = value.get("token", value.get("id"))
    if not isinstance(token, str) or not token:
        raise OpError("required", "device.id", "device id/token must be a non-empty string")
    platform = value.get("platform")
    if adding and (not isinstance(platform, str) or not platform):
        raise OpError("required", "device.platform", "device.platform must be a non-empty string")
    return {
        "id": token,
        "platform": platform,
        "last_used": opt_int(value, "last_used"),
        "attributes": opt_dict(value, "attributes"),
    }


def _check_attributes(attributes: dict[str, Any]) -> None:
    """Count, name and value limits of profile attributes."""
    if len(attributes) > MAX_ATTRIBUTES:
        raise OpError("limit_exceeded", "attributes", f"more than {MAX_ATTRIBUTES} attributes")
    for key, value in attributes.items():
        if utf8_len(key) > MAX_ATTRIBUTE_NAME_BYTES:
            message = f"attribute name exceeds {MAX_ATTRIBUTE_NAME_BYTES} bytes"
            raise OpError("limit_exceeded", f"attributes.{key[:40]}", message)
        if isinstance(value, str) and len(value) <= MAX_ATTRIBUTE_VALUE_BYTES // 4:
            continue
        if json_bytes(value) > MAX_ATTRIBUTE_VALUE_BYTES:
            message = f"attribute value exceeds {MAX_ATTRIBUTE_VALUE_BYTES} bytes"
            raise OpError("limit_exceeded", f"attributes.{key}", message)


def fill_identify(op: Op, body: dict[str, Any]) -> None:
    """Split an identify body into attributes, identifiers and control fields."""
    update = body.get("_update")
    if update is not None and not isinstance(update, bool):
        raise OpError("invalid", "_update", "_update must be a boolean")
    op.update_only = update is True
    op.anonymous_id = opt_str(body, "anonymous_id") or None
    for key in ("id", "email"):
        value = opt_str(body, key)
        if value:
            op.ids[key] = value
    if "id" in op.ids:
        check_person_id(op.ids["id"], "id")
    attributes = {key: value for key, value in body.items() if key not in _RESERVED}
    _check_attributes(attributes)
    op.attributes = attributes
