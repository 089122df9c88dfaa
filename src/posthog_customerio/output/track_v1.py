"""Track API v1 encoder: a neutral operation -> one v1 request ``(method, path, body)``.

v1 has an endpoint per action (``PUT /api/v1/customers/{id}``, ``.../events``, ...)
and the only anonymous events Customer.io's Track API accepts (``/api/v1/events``).
Objects and relationships have no v1 equivalent: :func:`v1_request` raises
``ValueError`` and the Track outputs send those through v2.

Manual segment membership (``segment`` operations, one person each) goes out many people at a time:
:func:`segment_request` turns consecutive operations of one segment, action and identifier type into one
``POST /api/v1/segments/{segment_id}/add_customers`` (or ``remove_customers``) ``?id_type=`` with at most
1,000 ``ids`` (the Track API's limit; everyone in a request "must use the same kind of identifier", values
that do not match ``id_type`` are ignored by Customer.io).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from ..operations import Kind

__all__ = ["MAX_SEGMENT_IDS", "has_v1_equivalent", "segment_key", "segment_request", "v1_body_text", "v1_request"]

#: ids per ``add_customers``/``remove_customers`` request (the Track API's ``maxItems``)
MAX_SEGMENT_IDS = 1000
#: the identifier types a segment request takes, most specific first
_SEGMENT_ID_TYPES = ("cio_id", "email", "id")


def has_v1_equivalent(kind: Kind) -> bool:
    """Whether operations of this kind can go through v1 at all (objects cannot)."""
    return kind != "object"


def segment_key(payload: dict[str, Any]) -> tuple[str, str, str]:
    """What a segment operation's request is: ``(segment_id, action, id_type)`` (operations with equal keys
    share a request). The person is addressed as the mapping addresses it: ``cio_id``, else ``email``, else ``id``."""
    identifiers = payload["identifiers"]
    id_type = next(kind for kind in _SEGMENT_ID_TYPES if kind in identifiers)
    action = payload["action"]
    if action not in ("add", "remove"):
        raise ValueError(f"no segment request for action {action!r}")
    return str(payload["segment_id"]), action, id_type


def segment_request(payloads: list[dict[str, Any]]) -> tuple[str, str, dict[str, Any]]:
    """One ``(method, path, body)`` for segment operations of one :func:`segment_key` (at most 1,000)."""
    if not 1 <= len(payloads) <= MAX_SEGMENT_IDS:
        raise ValueError(f"a segment request takes 1 to {MAX_SEGMENT_IDS} people, not {len(payloads)}")
    keys = {segment_key(payload) for payload in payloads}
    if len(keys) != 1:
        raise ValueError("a segment request is for one segment, action and identifier type")
    ((segment_id, action, id_type),) = keys
    ids = [str(payload["identifiers"][id_type]) for payload in payloads]
    verb = "add_customers" if action == "add" else "remove_customers"
    return "POST", f"/api/v1/segments/{_encode(segment_id)}/{verb}?id_type={id_type}", {"ids": ids}


def _v1_attribute(value: Any) -> Any:
    """v1 identify takes string, integer or boolean values: anything else becomes JSON text."""
    if isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, float):
        return repr(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _encode(identifier: str) -> str:
    return quote(identifier, safe="")


def _person_path(identifiers: dict[str, str]) -> str:
    if "cio_id" in identifiers:
        return "cio_" + _encode(identifiers["cio_id"])
    if "email" in identifiers:
        return _encode(identifiers["email"])
    return _encode(identifiers["id"])


def v1_request(payload: dict[str, Any], kind: Kind = "person") -> tuple[str, str, dict[str, Any] | None]:
    """Translate a neutral operation of ``kind`` into the v1 ``(method, path, body)``."""
    action = payload["action"]
    if kind == "anonymous":
        body = {
            "anonymous_id": payload["anonymous_id"],
            "name": payload["name"],
            "type": action,
            "data": payload.get("attributes") or {},
        }
        for key in ("id", "timestamp"):
            if key in payload:
                body[key] = payload[key]
        return "POST", "/api/v1/events", body
    if kind == "segment":
        return segment_request([payload])
    if kind != "person":
        raise ValueError(f"no v1 equivalent for {kind} operations")
    if action == "merge":
        return (
            "POST",
            "/api/v1/merge_customers",
            {
                "primary": payload["primary"],
                "secondary": payload["secondary"],
            },
        )
    identifiers = payload["identifiers"]
    base = f"/api/v1/customers/{_person_path(identifiers)}"
    if action == "identify":
        body = {key: _v1_attribute(value) for key, value in (payload.get("attributes") or {}).items()}
        if "id" in identifiers:
            body["id"] = identifiers["id"]
        elif "email" in identifiers:
            body.setdefault("email", identifiers["email"])
        if "timestamp" in payload:
            body["_timestamp"] = payload["timestamp"]
        return "PUT", base, body
    if action in ("event", "page", "screen"):
        body = {"name": payload["name"], "type": action, "data": payload.get("attributes") or {}}
        for key in ("id", "timestamp"):
            if key in payload:
                body[key] = payload[key]
        return "POST", f"{base}/events", body
    if action == "delete":
        return "DELETE", base, None
    if action in ("suppress", "unsuppress"):
        return "POST", f"{base}/{action}", None
    if action == "add_device":
        device = dict(payload["device"])
        device["id"] = device.pop("token")
        return "PUT", f"{base}/devices", {"device": device}
    if action == "delete_device":
        return "DELETE", f"{base}/devices/{_encode(payload['device']['token'])}", None
    raise ValueError(f"no v1 equivalent for action {action!r}")


def v1_body_text(body: dict[str, Any] | None) -> str | None:
    """The JSON text of a v1 request body (None: no body)."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False) if body is not None else None
