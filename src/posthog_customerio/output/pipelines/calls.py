"""Customer.io Pipelines API (Data Pipelines / "CDP" API): the Segment-spec call builders.

Documentation this module follows (Customer.io):

* Pipelines API reference, https://docs.customer.io/integrations/api/cdp/ : hosts
  ``https://cdp.customer.io`` / ``https://cdp-eu.customer.io``, Basic auth with the key as username and a
  blank password, "A request is limited to 32KB. A batch request is limited to 500KB total and 32KB per call
  in the request", and the ``X-Strict-Mode`` header: "When set to 1, enables strict validation that returns
  proper HTTP error codes (400/401) for validation failures. When not set [...] the API operates in
  permissive mode, logging errors but returning HTTP 200".
* Common fields, https://docs.customer.io/integrations/data-in/source-spec/common-fields/ (``messageId``:
  "a unique identifier for a Data Pipelines call", the anchor ``#messageid-deduplicate-calls``).
* Customer.io semantic events, https://docs.customer.io/integrations/data-in/semantic-events/cio-journeys/
  and https://docs.customer.io/files/semantic-cio.json (``Device Created or Updated`` with
  ``context.device.token``/``type``, ``Delete Person``, ``User Suppressed`` ...).

Where those pages are silent the shapes follow what Customer.io's own clients send (PyPI
``customerio-cdp-analytics``, npm ``@customerio/cdp-analytics-node``) and the fields the Customer.io
(Journeys) destination reads from each call: object type in ``traits.objectTypeId`` for ``group``,
relationship attributes in ``traits.relationshipAttributes``, ``properties.objectId`` /
``properties.objectTypeId`` for ``Relationship Deleted``, ``groupId`` + ``properties.objectTypeId`` for
``Object Deleted``; ``alias`` merges ``previousId`` into ``userId``.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

__all__ = [
    "SEMANTIC_EVENTS",
    "alias",
    "delete_person",
    "device_created_or_updated",
    "device_deleted",
    "encode_call",
    "group",
    "identify",
    "iso_timestamp",
    "object_deleted",
    "page",
    "relationship_deleted",
    "screen",
    "semantic",
    "suppress_person",
    "track",
    "unsuppress_person",
]

#: Track calls with these names are actions in Customer.io, not events (semantic-cio.json).
SEMANTIC_EVENTS = frozenset(
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


def iso_timestamp(value: int | float | str | dt.datetime) -> str:
    """ISO 8601 in UTC with milliseconds (``2024-05-01T12:00:00.000Z``) from unix seconds, a datetime or text."""
    if isinstance(value, str):
        text = value.strip()
        moment = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    elif isinstance(value, dt.datetime):
        moment = value
    else:
        moment = dt.datetime.fromtimestamp(float(value), tz=dt.UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _common(
    call: dict[str, Any],
    user_id: str | None,
    anonymous_id: str | None,
    message_id: str | None,
    timestamp: int | float | str | dt.datetime | None,
) -> dict[str, Any]:
    if user_id is not None:
        call["userId"] = str(user_id)
    if anonymous_id is not None:
        call["anonymousId"] = str(anonymous_id)
    if message_id is not None:
        call["messageId"] = str(message_id)
    if timestamp is not None:
        call["timestamp"] = iso_timestamp(timestamp)
    return call


def _need_identity(user_id: str | None, anonymous_id: str | None) -> None:
    if not user_id and not anonymous_id:
        raise ValueError("a call needs a userId or an anonymousId")


def identify(
    user_id: str | None = None,
    traits: dict[str, Any] | None = None,
    *,
    anonymous_id: str | None = None,
    message_id: str | None = None,
    timestamp: int | float | str | dt.datetime | None = None,
) -> dict[str, Any]:
    """``identify``: traits are the person's attributes; with both ids the visitor's activity attaches.

    "If you provide both an anonymousId and userId, we'll associate anonymous activity to the userId."
    (https://docs.customer.io/integrations/api/cdp/ , identify).
    """
    _need_identity(user_id, anonymous_id)
    return _common({"type": "identify", "traits": dict(traits or {})}, user_id, anonymous_id, message_id, timestamp)


def track(
    event: str,
    properties: dict[str, Any] | None = None,
    *,
    user_id: str | None = None,
    anonymous_id: str | None = None,
    message_id: str | None = None,
    timestamp: int | float | str | dt.datetime | None = None,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``track``: an event of a person (``userId``) or a visitor (``anonymousId``).

    With both ids "we attribute the activity to the userId and ignore the anonymousId" (Pipelines API, track).
    """
    if not event:
        raise ValueError("a track call needs an event name")
    _need_identity(user_id, anonymous_id)
    call: dict[str, Any] = {"type": "track", "event": event, "properties": dict(properties or {})}
    if context:
        call["context"] = context
    return _common(call, user_id, anonymous_id, message_id, timestamp)


def _view(
    kind: str,
    name: str | None,
    properties: dict[str, Any] | None,
    user_id: str | None,
    anonymous_id: str | None,
    message_id: str | None,
    timestamp: int | float | str | dt.datetime | None,
) -> dict[str, Any]:
    _need_identity(user_id, anonymous_id)
    call: dict[str, Any] = {"type": kind, "properties": dict(properties or {})}
    if name is not None:
        call["name"] = name
    return _common(call, user_id, anonymous_id, message_id, timestamp)


def page(
    name: str | None = None,
    properties: dict[str, Any] | None = None,
    *,
    user_id: str | None = None,
    anonymous_id: str | None = None,
    message_id: str | None = None,
    timestamp: int | float | str | dt.datetime | None = None,
) -> dict[str, Any]:
    """``page``: a page view; ``properties`` carry url, path, referrer, title ... (Pipelines API, page)."""
    return _view("page", name, properties, user_id, anonymous_id, message_id, timestamp)


def screen(
    name: str | None = None,
    properties: dict[str, Any] | None = None,
    *,
    user_id: str | None = None,
    anonymous_id: str | None = None,
    message_id: str | None = None,
    timestamp: int | float | str | dt.datetime | None = None,
) -> dict[str, Any]:
    """``screen``: a mobile screen view (Pipelines API, screen)."""
    return _view("screen", name, properties, user_id, anonymous_id, message_id, timestamp)


def group(
    group_id: str,
    traits: dict[str, Any] | None = None,
    *,
    object_type_id: str | int = "1",
    user_id: str | None = None,
    anonymous_id: str | None = None,
    relationship_attributes: dict[str, Any] | None = None,
    message_id: str | None = None,
    timestamp: int | float | str | dt.datetime | None = None,
) -> dict[str, Any]:
    """``group``: create/update the object (``objectTypeId``, ``groupId``); with a ``userId``, relate the person.

    https://docs.customer.io/integrations/api/cdp/tag/default/group/ : "Customer.io's destination calls groups
    objects". The object type goes in ``traits.objectTypeId`` (default "1"), which is where Customer.io's
    destination reads it and where its official clients can put it; relationship attributes go in
    ``traits.relationshipAttributes``.
    """
    if not group_id:
        raise ValueError("a group call needs a groupId")
    body = dict(traits or {})
    body["objectTypeId"] = str(object_type_id)
    if relationship_attributes:
        body["relationshipAttributes"] = dict(relationship_attributes)
    call: dict[str, Any] = {"type": "group", "groupId": str(group_id), "traits": body}
    return _common(call, user_id, anonymous_id, message_id, timestamp)


def alias(
    user_id: str,
    previous_id: str,
    *,
    message_id: str | None = None,
    timestamp: int | float | str | dt.datetime | None = None,
) -> dict[str, Any]:
    """``alias``: the Customer.io destination merges the profile ``previousId`` into ``userId``."""
    if not user_id or not previous_id:
        raise ValueError("an alias call needs userId and previousId")
    return _common({"type": "alias", "previousId": str(previous_id)}, user_id, None, message_id, timestamp)


def semantic(
    event: str,
    user_id: str | None,
    properties: dict[str, Any] | None = None,
    *,
    message_id: str | None = None,
    timestamp: int | float | str | dt.datetime | None = None,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    call: dict[str, Any] = {"type": "track", "event": event, "properties": dict(properties or {})}
    if context:
        call["context"] = context
    return _common(call, user_id, None, message_id, timestamp)


def delete_person(user_id: str, **common: Any) -> dict[str, Any]:
    """``Delete Person``: removes the person (semantic-cio.json, "Delete Person": ``userId`` required)."""
    return semantic("Delete Person", user_id, **common)


def suppress_person(user_id: str, **common: Any) -> dict[str, Any]:
    """``User Suppressed``: deletes and suppresses the person (semantic-cio.json)."""
    return semantic("User Suppressed", user_id, **common)


def unsuppress_person(user_id: str, **common: Any) -> dict[str, Any]:
    """``User Unsuppressed``: lets the identifier be used again (semantic-cio.json)."""
    return semantic("User Unsuppressed", user_id, **common)


def device_created_or_updated(
    user_id: str, token: str, device_type: str | None = None, attributes: dict[str, Any] | None = None, **common: Any
) -> dict[str, Any]:
    """``Device Created or Updated``: ``context.device`` with ``token`` (required) and ``type`` (ios|android).

    https://docs.customer.io/integrations/data-in/semantic-events/cio-journeys/#create-or-update-device ;
    other device attributes go in ``properties``.
    """
    if not token:
        raise ValueError("a device needs a token")
    device: dict[str, Any] = {"token": token}
    if device_type:
        device["type"] = device_type
    return semantic("Device Created or Updated", user_id, attributes, context={"device": device}, **common)


def device_deleted(user_id: str, token: str, **common: Any) -> dict[str, Any]:
    """``Device Deleted``: ``context.device.token`` names the device to remove (cio-journeys, Delete Device)."""
    if not token:
        raise ValueError("a device needs a token")
    return semantic("Device Deleted", user_id, context={"device": {"token": token}}, **common)


def relationship_deleted(user_id: str, group_id: str, object_type_id: str | int = "1", **common: Any) -> dict[str, Any]:
    """``Relationship Deleted``: ``properties.objectId`` + ``properties.objectTypeId`` of the object."""
    properties = {"objectId": str(group_id), "objectTypeId": str(object_type_id)}
    return semantic("Relationship Deleted", user_id, properties, **common)


def object_deleted(
    group_id: str,
    object_type_id: str | int = "1",
    *,
    user_id: str | None = None,
    anonymous_id: str | None = None,
    **common: Any,
) -> dict[str, Any]:
    """``Object Deleted``: ``groupId`` and ``properties.objectTypeId`` (``objectId`` repeated in properties).

    A track call needs a userId or anonymousId; without one the caller's operation id is a fine anonymousId.
    """
    _need_identity(user_id, anonymous_id)
    call = semantic(
        "Object Deleted", user_id, {"objectId": str(group_id), "objectTypeId": str(object_type_id)}, **common
    )
    call["groupId"] = str(group_id)
    if anonymous_id is not None:
        call["anonymousId"] = str(anonymous_id)
    return call


def encode_call(call: dict[str, Any]) -> str:
    """Compact JSON text of a call (the bytes :func:`~.packing.pack` measures and the client sends)."""
    return json.dumps(call, separators=(",", ":"), ensure_ascii=False, default=str)
