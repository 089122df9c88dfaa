"""The sandbox's Track API v2: ``POST /api/v2/entity`` (one operation) and ``POST /api/v2/batch`` (207 per-item).

Person operations (identify, delete, event/page/screen, devices, merge, suppress, unsuppress, relationships),
object operations and ``delivery`` operations are validated into :class:`~.operations.Op` and applied to the
:class:`~.workspace.Workspace` (Track API reference, https://docs.customer.io/integrations/api/track/, tag
``track_v2``). A batch applies its valid operations and reports the others by ``batch_index``.
"""

from __future__ import annotations

from typing import Any

from .operations import (
    EVENT_TYPES,
    PUSH_METRICS,
    Op,
    OpError,
    device,
    event_name,
    fill_identify,
    json_bytes,
    object_identifiers,
    opt_dict,
    opt_int,
    person_identifiers,
    relationships,
    ulid,
)
from .wire import BAD_JSON, NO_BODY, Answer, Call
from .workspace import Workspace

MAX_BATCH_BYTES = 500_000
MAX_OP_BYTES = 32_000

_PERSON_ACTIONS = frozenset(
    {
        "identify",
        "delete",
        "event",
        "page",
        "screen",
        "add_device",
        "delete_device",
        "merge",
        "suppress",
        "unsuppress",
        "add_relationships",
        "delete_relationships",
    }
)
_OBJECT_ACTIONS = frozenset({"identify", "delete", "add_relationships", "delete_relationships"})


def parse_op(raw: Any) -> Op:
    """Validate one v2 entity operation (raises :class:`~.operations.OpError`)."""
    if not isinstance(raw, dict):
        raise OpError("invalid", "", "operation must be a JSON object")
    kind, action = raw.get("type"), raw.get("action")
    if kind == "delivery":
        return _delivery_op(raw)
    allowed = _PERSON_ACTIONS if kind == "person" else _OBJECT_ACTIONS if kind == "object" else None
    if allowed is None:
        raise OpError("invalid", "type", f"type must be 'person', 'object' or 'delivery', got {kind!r}")
    if action not in allowed:
        raise OpError("invalid", "action", f"unsupported action {action!r} for type {kind!r}")
    kind, action = str(kind), str(action)  # both are checked strings by now
    op = Op(kind, action, timestamp=opt_int(raw, "timestamp"))
    if action == "merge":
        op.primary = person_identifiers(raw.get("primary"), "primary")
        op.secondary = person_identifiers(raw.get("secondary"), "secondary")
        return op
    if kind == "person":
        op.who = person_identifiers(raw.get("identifiers"), "identifiers")
    else:
        op.who = object_identifiers(raw.get("identifiers"), "identifiers")
    attributes = opt_dict(raw, "attributes")
    if kind == "object":
        op.attributes = attributes
    elif action == "identify":
        fill_identify(op, attributes)
    elif action in EVENT_TYPES:
        op.name = event_name(raw.get("name"))
        op.event_id = ulid(raw.get("id"))
        op.attributes = attributes
    elif action in ("add_device", "delete_device"):
        op.device = device(raw.get("device"), adding=action == "add_device")
    if action.endswith("_relationships") and not raw.get("cio_relationships"):
        raise OpError("required", "cio_relationships", "cio_relationships is required")
    op.relationships = relationships(raw.get("cio_relationships"), to_people=kind == "object")
    return op


def _delivery_op(raw: dict[str, Any]) -> Op:
    """A v2 ``delivery`` op: ``action`` event, ``identifiers.id`` (the delivery id), ``name`` a push metric,
    ``attributes.device_token`` (spec: ``delivery_operations``, all required)."""
    if raw.get("action") != "event":
        raise OpError("invalid", "action", f"unsupported action {raw.get('action')!r} for type 'delivery'")
    identifiers = raw.get("identifiers")
    delivery_id = identifiers.get("id") if isinstance(identifiers, dict) else None
    if not isinstance(delivery_id, str) or not delivery_id:
        raise OpError("required", "identifiers.id", "identifiers.id (the delivery id) is required")
    name = raw.get("name")
    if name not in PUSH_METRICS:
        raise OpError("invalid", "name", f"name must be one of {sorted(PUSH_METRICS)}, got {name!r}")
    attributes = raw.get("attributes")
    token = attributes.get("device_token") if isinstance(attributes, dict) else None
    if not isinstance(attributes, dict) or not isinstance(token, str) or not token:
        raise OpError("required", "attributes.device_token", "attributes.device_token is required")
    op = Op("delivery", "event", who=("delivery", delivery_id), name=name, timestamp=opt_int(raw, "timestamp"))
    op.attributes = dict(attributes)
    return op


def _errors(status: int, reason: str, message: str) -> Answer:
    return status, {"errors": [{"reason": reason, "message": message}]}


def _batch(workspace: Workspace, call: Call) -> Answer:
    """``POST /api/v2/batch``: apply the valid ops, report the others (207)."""
    if len(call.body) >= MAX_BATCH_BYTES:
        return _errors(413, "request_too_large", f"batch request must be smaller than {MAX_BATCH_BYTES} bytes")
    parsed = call.parsed
    if not isinstance(parsed, dict) or not isinstance(parsed.get("batch"), list):
        return _errors(400, "invalid", 'request body must be a JSON object with a "batch" list')
    check_sizes = len(call.body) > MAX_OP_BYTES
    errors, valid = [], []
    for index, raw in enumerate(parsed["batch"]):
        try:
            if check_sizes and json_bytes(raw) > MAX_OP_BYTES:
                raise OpError("request_too_large", "", f"operation exceeds {MAX_OP_BYTES} bytes")
            valid.append((index, parse_op(raw)))
        except OpError as exc:
            errors.append(exc.as_dict(index))
    errors.extend(workspace.apply_batch(valid))
    if not errors:
        return 200, {}
    errors.sort(key=lambda error: error["batch_index"])
    return 207, {"errors": errors}


def _entity(workspace: Workspace, call: Call) -> Answer:
    """``POST /api/v2/entity``: one operation."""
    if len(call.body) > MAX_OP_BYTES:
        return _errors(413, "request_too_large", f"operation exceeds {MAX_OP_BYTES} bytes")
    if call.parsed is BAD_JSON or call.parsed is NO_BODY:
        return _errors(400, "invalid", "request body must be JSON")
    try:
        workspace.apply(parse_op(call.parsed))
    except OpError as exc:
        return 400, {"errors": [exc.as_dict()]}
    return 200, {}


def handle(workspace: Workspace, call: Call, rest: list[str]) -> Answer | None:
    """Answer a v2 request (``rest`` is the path after ``/api/v2``); ``None`` if no route matches."""
    if call.method != "POST":
        return None
    if rest == ["batch"]:
        return _batch(workspace, call)
    if rest == ["entity"]:
        return _entity(workspace, call)
    return None
