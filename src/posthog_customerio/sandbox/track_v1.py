"""The sandbox's Track API v1: ``/api/v1/...`` requests parsed into :class:`~.operations.Op` and applied.

Routes (Track API reference, https://docs.customer.io/integrations/api/track/, the OpenAPI operation in
brackets): ``PUT``/``DELETE /customers/{identifier}`` [identify, delete], ``POST .../suppress`` and
``.../unsuppress``, ``POST .../events`` [track], ``PUT .../devices`` and ``DELETE .../devices/{id}``,
``POST /events`` [trackAnonymous], ``POST /merge_customers`` [merge_customers], ``POST /push/events``
[pushMetrics] and ``/metrics`` [metrics] (no authentication), ``POST /forms/{form_id}/submit`` [submitForm],
``POST /segments/{id}/add_customers`` and ``remove_customers``, ``GET /accounts/region``. Errors answer
``400 {"meta": {"error": ...}}``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from .operations import (
    EMAIL_RE,
    EVENT_TYPES,
    PERSON_KEYS,
    PUSH_METRICS,
    Op,
    OpError,
    check_person_id,
    device,
    event_name,
    fill_identify,
    json_bytes,
    opt_dict,
    opt_int,
    opt_str,
    person_identifiers,
    relationships,
    ulid,
)
from .wire import BAD_JSON, NO_BODY, Answer, Call
from .workspace import Workspace

MAX_EVENT_DATA_BYTES = 100_000
MAX_SEGMENT_IDS = 1000

#: Delivery metrics of ``/api/v1/metrics``: any channel's (spec ``metrics``).
_CHANNEL_METRICS = frozenset(
    {"bounced", "clicked", "converted", "deferred", "delivered", "dropped", "opened", "spammed"}
)
#: Form keys Customer.io reserves and ignores (spec: ``submitForm``).
_FORM_RESERVED = frozenset({"form_id", "form_name", "form_type", "form_url", "form_url_param"})


def _metric_record(body: Any, field_name: str, allowed: frozenset[str]) -> dict[str, Any]:
    """Validate a v1 ``/push/events`` or ``/metrics`` body into a delivery-metric record."""
    if not isinstance(body, dict):
        raise OpError("invalid", "body", "request body must be a JSON object")
    delivery_id = body.get("delivery_id")
    if not isinstance(delivery_id, str) or not delivery_id:
        raise OpError("required", "delivery_id", "delivery_id is required")
    metric = body.get(field_name)
    if metric not in allowed:
        raise OpError("invalid", field_name, f"{field_name} must be one of {sorted(allowed)}, got {metric!r}")
    timestamp = opt_int(body, "timestamp")
    extra = {key: value for key, value in body.items() if key not in ("delivery_id", field_name, "timestamp")}
    return {"delivery_id": delivery_id, "metric": metric, "timestamp": timestamp, **extra}


def _path_identifier(identifier: str) -> tuple[str, str]:
    """The identifier type of a v1 path value, from its shape."""
    if identifier.startswith("cio_"):
        if len(identifier) == 4:
            raise OpError("invalid", "identifier", "empty cio_id")
        return "cio_id", identifier[4:]
    if not identifier:
        raise OpError("required", "identifier", "identifier is required")
    if EMAIL_RE.fullmatch(identifier):
        return "email", identifier
    check_person_id(identifier, "identifier")
    return "id", identifier


def _body(parsed: Any, required: bool = True) -> dict[str, Any]:
    if parsed is NO_BODY and not required:
        return {}
    if not isinstance(parsed, dict):
        raise OpError("invalid", "body", "request body must be a JSON object")
    return parsed


def _relationships(op: Op, value: Any) -> None:
    """v1 ``cio_relationships``: ``{"action": add|delete_relationships, "relationships": [...]}``."""
    if isinstance(value, dict):
        action = value.get("action", "add_relationships")
        if action not in ("add_relationships", "delete_relationships"):
            raise OpError("invalid", "cio_relationships.action", f"unsupported action {action!r}")
        op.relationships_add = action == "add_relationships"
        value = value.get("relationships")
    op.relationships = relationships(value, to_people=False)


def _event(op: Op, body: dict[str, Any]) -> Op:
    """Fill the event fields shared by both v1 event endpoints."""
    kind = body.get("type", "event")
    if kind not in EVENT_TYPES:
        raise OpError("invalid", "type", f"type must be event, page or screen, got {kind!r}")
    op.action = kind
    op.name = event_name(body.get("name"))
    op.event_id = ulid(body.get("id"))
    op.timestamp = opt_int(body, "timestamp")
    op.attributes = opt_dict(body, "data")
    if op.attributes and json_bytes(op.attributes) > MAX_EVENT_DATA_BYTES:
        raise OpError("limit_exceeded", "data", f"event data exceeds {MAX_EVENT_DATA_BYTES} bytes")
    return op


def _form(data: dict[str, Any]) -> tuple[Op, dict[str, Any]]:
    """A form submission as the respondent's identify, and the stored fields (reserved keys dropped)."""
    kinds = [kind for kind in ("id", "email") if data.get(kind)]
    if len(kinds) != 1:
        raise OpError("invalid", "data", "data must hold exactly one of id or email")
    fields = {key: value for key, value in data.items() if key not in _FORM_RESERVED}
    op = Op("person", "identify", who=(kinds[0], str(fields[kinds[0]])))
    fill_identify(op, fields)
    return op, fields


def _segment_ids(ids: Any, id_type: str) -> list[Any]:
    """The ``ids`` of a segment membership change, checked against ``id_type`` and the list limit."""
    if id_type not in PERSON_KEYS:
        raise OpError("invalid", "id_type", "id_type must be id, email or cio_id")
    if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_SEGMENT_IDS:
        raise OpError("invalid", "ids", f"ids must be a list of 1 to {MAX_SEGMENT_IDS} identifiers")
    return ids


def _customer(workspace: Workspace, call: Call, identifier: str, tail: list[str]) -> Answer | None:
    """``/api/v1/customers/{identifier}[/...]`` routes; ``None`` if none matches."""
    method = call.method
    who = _path_identifier(identifier)
    op = Op("person", "", who=who)
    if method == "PUT" and not tail:
        body = _body(call.parsed, required=False)
        op.action = "identify"
        op.timestamp = opt_int(body, "_timestamp")
        _relationships(op, body.get("cio_relationships"))
        fill_identify(op, body)
    elif method == "DELETE" and not tail:
        op.action = "delete"
    elif method == "POST" and tail in (["suppress"], ["unsuppress"]):
        op.action = tail[0]
    elif method == "POST" and tail == ["events"]:
        _event(op, _body(call.parsed))
    elif method == "PUT" and tail == ["devices"]:
        op.action = "add_device"
        op.device = device(_body(call.parsed).get("device"), adding=True)
    elif method == "DELETE" and len(tail) == 2 and tail[0] == "devices":
        op.action = "delete_device"
        op.device = device({"id": unquote(tail[1])}, adding=False)
    else:
        return None
    workspace.apply(op)
    return 200, {}


def _route(workspace: Workspace, call: Call, rest: list[str]) -> Answer | None:
    """The v1 routes (``rest`` is the path after ``/api/v1``); raises :class:`~.operations.OpError`."""
    method = call.method
    if rest == ["accounts", "region"] and method == "GET":
        return 200, {"url": call.base_url, "region": call.region, "environment_id": 1}
    if rest == ["events"] and method == "POST":
        body = _body(call.parsed)
        op = Op("anonymous", "event", anonymous_id=opt_str(body, "anonymous_id") or None)
        workspace.apply(_event(op, body))
        return 200, {}
    if rest == ["push", "events"] and method == "POST":
        # spec pushMetrics (deprecated, still works): delivery_id, event opened|converted|delivered, device_id
        workspace.record_metric("push/events", _metric_record(call.parsed, "event", PUSH_METRICS))
        return 200, {}
    if rest == ["metrics"] and method == "POST":
        # spec metrics: delivery_id (required), metric per channel, recipient/reason/href
        workspace.record_metric("metrics", _metric_record(call.parsed, "metric", _CHANNEL_METRICS))
        return 200, {}
    if len(rest) == 3 and rest[0] == "forms" and rest[2] == "submit" and method == "POST":
        data = _body(call.parsed).get("data")
        if not isinstance(data, dict):
            raise OpError("required", "data", "data must be an object of form fields")
        op, fields = _form(data)
        workspace.submit_form(unquote(rest[1]), op, fields)
        return 200, {}
    if len(rest) == 3 and rest[0] == "segments" and rest[2] in ("add_customers", "remove_customers"):
        if method != "POST":
            return None
        body = _body(call.parsed)
        add = rest[2] == "add_customers"
        id_type = call.query.get("id_type", "id")
        workspace.segment_members(unquote(rest[1]), _segment_ids(body.get("ids"), id_type), id_type, add)
        return 200, {}
    if rest == ["merge_customers"] and method == "POST":
        body = _body(call.parsed)
        op = Op("person", "merge")
        op.primary = person_identifiers(body.get("primary"), "primary")
        op.secondary = person_identifiers(body.get("secondary"), "secondary")
        workspace.apply(op)
        return 200, {}
    if len(rest) >= 2 and rest[0] == "customers":
        return _customer(workspace, call, unquote(rest[1]), rest[2:])
    return None


def handle(workspace: Workspace, call: Call, rest: list[str]) -> Answer | None:
    """Answer a v1 request (``rest`` is the path after ``/api/v1``); ``None`` if no route matches."""
    if call.parsed is BAD_JSON:
        return 400, {"meta": {"error": "request body is not valid JSON"}}
    try:
        return _route(workspace, call, rest)
    except OpError as exc:
        return 400, {"meta": {"error": exc.message}}
