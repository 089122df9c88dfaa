"""Track API v1 encoder: a neutral operation -> one v1 request ``(method, path, body)``.

v1 has an endpoint per action (``PUT /api/v1/customers/{id}``, ``.../events``, ...)
and the only anonymous events Customer.io's Track API accepts (``/api/v1/events``).
Objects and relationships have no v1 equivalent: :func:`v1_request` raises
``ValueError`` and the Track outputs send those through v2.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from ..operations import Kind

__all__ = ["has_v1_equivalent", "v1_body_text", "v1_request"]


def has_v1_equivalent(kind: Kind) -> bool:
    """Whether operations of this kind can go through v1 at all (objects cannot)."""
    return kind != "object"


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
