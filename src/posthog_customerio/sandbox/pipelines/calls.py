"""Pipelines calls: the limits, and the validation of one call as strict mode does it (:func:`validate_call`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..operations import EMAIL_RE

__all__ = [
    "CALL_TYPES",
    "MAX_CALL_BYTES",
    "MAX_REQUEST_BYTES",
    "OBJECT_RESERVED",
    "SEMANTIC",
    "Call",
    "PipelinesError",
    "device_of",
    "merge_traits",
    "object_field",
    "object_id_of",
    "object_type",
    "segment_id",
    "validate_call",
    "who_of",
]


#: Customer.io's limits: 32 KB per call (read as 32,768 bytes, like its clients), 500 KB per request
MAX_CALL_BYTES = 32 * 1024
MAX_REQUEST_BYTES = 500_000
CALL_TYPES = ("identify", "track", "page", "screen", "group", "alias")
#: track events that are actions, not events
SEMANTIC = frozenset(
    {
        "Delete Person",
        "User Suppressed",
        "User Unsuppressed",
        "Device Created or Updated",
        "Device Deleted",
        "Relationship Deleted",
        "Object Deleted",
        "Report Delivery Event",
    }
)
#: a group's traits that are no object attributes
OBJECT_RESERVED = ("objectTypeId", "object_type_id", "relationshipAttributes")


class PipelinesError(Exception):
    """An invalid request: ``code`` and ``message`` (400 in strict mode)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def who_of(user_id: str) -> tuple[str, str]:
    """The identifier a ``userId`` is: an email-shaped one is the person's email, any other the person's id."""
    return ("email", user_id) if EMAIL_RE.fullmatch(user_id) else ("id", user_id)


def _compact_len(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8"))


def segment_id(value: Any) -> str | None:
    """A Segment id: strings (numbers are stringified, as Customer.io's clients do); empty/None = absent."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        value = str(value)
    if not isinstance(value, str):
        raise PipelinesError("invalid_id", "userId/anonymousId/groupId/previousId must be strings")
    return value or None


def object_field(call: dict[str, Any], key: str) -> dict[str, Any]:
    """A field that must be an object when present (``{}`` when absent); raises :class:`PipelinesError`."""
    value = call.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PipelinesError("invalid_field", f"{key} must be an object")
    return value


def merge_traits(target: dict[str, Any], updates: dict[str, Any]) -> None:
    """Set traits as attributes; ``null`` or ``""`` removes one (the Journeys destination writes them to Track)."""
    for key, value in updates.items():
        if value is None or value == "":
            target.pop(key, None)
        else:
            target[key] = value


def object_type(call: dict[str, Any], *containers: dict[str, Any]) -> str:
    """The object type id: ``objectTypeId`` / ``object_type_id`` of the first container that has one, else ``"1"``."""
    for container in (*containers, call):
        for key in ("objectTypeId", "object_type_id"):
            value = container.get(key)
            if value not in (None, ""):
                return str(value)
    return "1"


@dataclass(slots=True)
class Call:
    """One validated call."""

    type: str
    raw: dict[str, Any]
    user_id: str | None
    anonymous_id: str | None
    message_id: str | None


def validate_call(raw: Any, where: str = "call") -> Call:
    """Check one call as strict mode does; raises :class:`PipelinesError`."""
    if not isinstance(raw, dict):
        raise PipelinesError("invalid_call", f"{where} must be a JSON object")
    kind = raw.get("type")
    if kind not in CALL_TYPES:
        raise PipelinesError("invalid_type", f"{where}: type must be one of {', '.join(CALL_TYPES)}")
    if _compact_len(raw) > MAX_CALL_BYTES:
        raise PipelinesError("call_too_large", f"{where} exceeds {MAX_CALL_BYTES} bytes")
    user_id, anonymous_id = segment_id(raw.get("userId")), segment_id(raw.get("anonymousId"))
    message_id = raw.get("messageId")
    if message_id is not None and not isinstance(message_id, str):
        raise PipelinesError("invalid_field", f"{where}: messageId must be a string")
    for key in ("traits", "properties", "context", "integrations"):
        object_field(raw, key)
    if kind == "alias":
        if not user_id or not segment_id(raw.get("previousId")):
            raise PipelinesError("missing_id", f"{where}: alias needs userId and previousId")
    elif kind == "group":
        if not segment_id(raw.get("groupId")):
            raise PipelinesError("missing_id", f"{where}: group needs a groupId")
    elif not user_id and not anonymous_id:
        raise PipelinesError("missing_id", f"{where}: {kind} needs a userId or an anonymousId")
    if kind == "track":
        event = raw.get("event")
        if not isinstance(event, str) or not event.strip():
            raise PipelinesError("missing_event", f"{where}: track needs an event name")
        _validate_semantic(raw, event, user_id, where)
    if kind == "identify" and not user_id and not anonymous_id:
        raise PipelinesError("missing_id", f"{where}: identify needs a userId or an anonymousId")
    return Call(kind, raw, user_id, anonymous_id, message_id or None)


def device_of(raw: dict[str, Any]) -> dict[str, Any]:
    """The device of a device event: ``context.device``, else ``properties.device``."""
    device = object_field(object_field(raw, "context"), "device") or object_field(
        object_field(raw, "properties"), "device"
    )
    return device


def object_id_of(raw: dict[str, Any]) -> str | None:
    """The object id of an object event: ``properties.objectId`` / ``groupId``, else ``groupId``."""
    properties = object_field(raw, "properties")
    return (
        segment_id(properties.get("objectId"))
        or segment_id(properties.get("groupId"))
        or segment_id(raw.get("groupId"))
    )


def _validate_semantic(raw: dict[str, Any], event: str, user_id: str | None, where: str) -> None:
    if event not in SEMANTIC:
        return
    if (
        event
        in (
            "Delete Person",
            "User Suppressed",
            "User Unsuppressed",
            "Device Created or Updated",
            "Device Deleted",
            "Relationship Deleted",
        )
        and not user_id
    ):
        raise PipelinesError("missing_id", f"{where}: {event} needs a userId")
    if event in ("Device Created or Updated", "Device Deleted"):
        token = device_of(raw).get("token")
        if not isinstance(token, str) or not token:
            raise PipelinesError("missing_device", f"{where}: {event} needs context.device.token")
    if event in ("Relationship Deleted", "Object Deleted") and not object_id_of(raw):
        raise PipelinesError("missing_id", f"{where}: {event} needs the object id (properties.objectId or groupId)")
