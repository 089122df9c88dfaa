"""A local, in-memory, Customer.io-compatible Track API server ("the sandbox").

Used by the tests, the demo and the ``--sandbox`` CLI flag. It speaks the Track API
v1 and v2 (``/api/...``, HTTP Basic auth ``site_id:api_key``), enforces Customer.io's
documented limits strictly (to catch client bugs), keeps a workspace in memory
(people, events, anonymous events, objects, relationships) and logs every request.

Inspection and control endpoints live under ``/_sandbox/`` (no auth): people,
events, requests, stats, reset, fault injection (429/5xx/401/delays) and credential
changes. The same state is readable from Python through :class:`SandboxState`.

Customer.io rules it reproduces (Track API reference, https://docs.customer.io/integrations/api/track/ --
the OpenAPI operation named in brackets; the rule is also cited where it is implemented):

* Suppress [suppress, .../track-customers/suppress/] deletes the profile and suppresses the path identifier
  and the person's id and email; "any future API calls or operations referencing the specified ID are
  ignored": answered 200, not applied (``/_sandbox/ignored``). Unsuppress [unsuppress] frees the id and
  email together and does not recreate the profile. See also
  https://docs.customer.io/journeys/deleting-users/.
* Identifiers are unique across profiles [identify, .../track-customers/identify/]: "If the identifier in
  the path and request body belong to different people, your request may return 200 OK but produce an
  Attribute Update Failure"; identifiers change only through ``cio_id`` (or the email by id when the
  workspace setting "Allow updates to email using ID" is on); an unknown ``cio_id`` drops the request; an
  unknown path identifier with a body identifier of an existing person updates that person and assigns
  the path identifier.
* ``_timestamp``/``timestamp`` is "when the attribute update occurred" and orders updates: an older write
  never overwrites a newer value (an untimestamped write is stamped with its receipt time).
* Merge [merge_customers]: a missing primary means "your request won't do anything" (200); the primary gets
  "attributes that are not set, or are empty, on the primary", the events and manual segments.
* Push metrics [pushMetrics, .../track-events/pushmetrics/], metrics [metrics] and v2 ``delivery``
  operations [delivery_operations, .../tag/track_v2/] are validated and recorded; pushMetrics and metrics
  need no authentication.

Behaviour choices where Customer.io is vague:

* Deleting a person removes the person and their events; the dedupe memory of
  event ids is kept, so a replayed event id stays a duplicate.
* A repeated event ``id`` (case-insensitive) is a no-op: it creates nobody.
* ``id``/``email`` are identifiers, stored on the person, not in ``attributes``;
  ``null``/``""`` for them is ignored.
* Anonymous events attach on identify when they were received in the last 30
  days (a backfill of old events still attaches, as the real workspace does for
  events it received recently).
* Merge also moves devices, relationships and the email (when the primary has none).
* Manual segments exist once people are added (no App API here to create them); the
  sandbox sends no messages, so delivery metrics and ``/unsubscribe`` change no profile.
* Fault rules apply first-in-first-out, one rule per request; a rule without
  ``count`` or ``duration_s`` applies once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import hmac
import http
import itertools
import json
import logging
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .sandbox_pipelines import PipelinesState, pipelines_routes

__all__ = ["SandboxServer", "SandboxState", "create_app", "serve"]

logger = logging.getLogger(__name__)

MAX_BATCH_BYTES = 500_000
MAX_OP_BYTES = 32_000
MAX_ID_BYTES = 150
MAX_ATTRIBUTE_NAME_BYTES = 150
MAX_ATTRIBUTE_VALUE_BYTES = 1000
MAX_ATTRIBUTES = 300
MAX_EVENT_NAME_BYTES = 100
MAX_EVENT_DATA_BYTES = 100_000
MAX_LOGGED_REQUESTS = 200_000
MAX_LOGGED_FAILURES = 100_000
ANONYMOUS_WINDOW_S = 30 * 86_400

_EVENT_TYPES = frozenset({"event", "page", "screen"})
_PERSON_ACTIONS = frozenset(
    {
        "identify", "delete", "event", "page", "screen", "add_device", "delete_device", "merge",
        "suppress", "unsuppress", "add_relationships", "delete_relationships",
    }
)
_OBJECT_ACTIONS = frozenset({"identify", "delete", "add_relationships", "delete_relationships"})
#: Delivery metrics, by where they are reported (Track API spec: ``pushMetrics``, ``metrics``, v2
#: ``delivery_operations``): push/v2 take opened|converted|delivered; /api/v1/metrics any channel's metric.
_PUSH_METRICS = frozenset({"opened", "converted", "delivered"})
_CHANNEL_METRICS = frozenset(
    {"bounced", "clicked", "converted", "deferred", "delivered", "dropped", "opened", "spammed"}
)
#: Form keys Customer.io reserves and ignores (spec: ``submitForm``).
_FORM_RESERVED = frozenset({"form_id", "form_name", "form_type", "form_url", "form_url_param"})
MAX_SEGMENT_IDS = 1000
_PERSON_KEYS = ("id", "email", "cio_id")
#: Keys of an identify body that are not stored as attributes.
_RESERVED = frozenset({"id", "email", "cio_id", "anonymous_id", "_update", "_timestamp", "cio_relationships"})
_ULID_RE = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}", re.IGNORECASE)
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+")
_UNAUTHORIZED = {"meta": {"error": "Unauthorized request"}}
#: Track API routes that need no credentials (spec: pushMetrics and metrics have ``security: []``).
_OPEN_ROUTES = (["v1", "push", "events"], ["v1", "metrics"])
_JSON = "application/json"

#: A relationship: the other side's identifiers and the relationship attributes.
_Relation = tuple[tuple[str, str], dict[str, Any]]


# --------------------------------------------------------------------------- validation


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
class _Op:
    """One validated operation (v1 requests are translated into these too)."""

    type: str  # person | object | anonymous
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
    relationships: list[_Relation] = field(default_factory=list)
    relationships_add: bool = True  # v1 identify may delete relationships instead
    primary: tuple[str, str] | None = None
    secondary: tuple[str, str] | None = None


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _json_bytes(value: Any) -> int:
    """Size of ``value``: a string's UTF-8 bytes, anything else's compact JSON bytes."""
    if isinstance(value, str):
        return _utf8_len(value)
    return _utf8_len(_compact(value))


def _opt_int(container: dict[str, Any], key: str) -> int | None:
    value = container.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise OpError("invalid", key, f"{key} must be an integer (Unix seconds), got {value!r}")
    return value


def _opt_str(container: dict[str, Any], key: str) -> str | None:
    value = container.get(key)
    if value is not None and not isinstance(value, str):
        raise OpError("invalid", key, f"{key} must be a string")
    return value


def _opt_dict(container: dict[str, Any], key: str) -> dict[str, Any]:
    value = container.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise OpError("invalid", key, f"{key} must be an object")
    return value


def _ulid(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _ULID_RE.fullmatch(value):
        raise OpError("invalid", "id", f"id must be a valid ULID, got {value!r}")
    return value


def _event_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise OpError("required", "name", "name is required and must be a non-empty string")
    if _utf8_len(value) > MAX_EVENT_NAME_BYTES:
        raise OpError("limit_exceeded", "name", f"event name exceeds {MAX_EVENT_NAME_BYTES} bytes")
    return value


def _check_person_id(value: str, where: str) -> None:
    if _utf8_len(value) > MAX_ID_BYTES:
        raise OpError("limit_exceeded", where, f"person id exceeds {MAX_ID_BYTES} bytes")


def _person_identifiers(value: Any, where: str) -> tuple[str, str]:
    """Exactly one of ``id``, ``email``, ``cio_id`` as a non-empty string."""
    if not isinstance(value, dict) or len(value) != 1:
        raise OpError("invalid", where, f"{where} must be an object with exactly one of id, email, cio_id")
    ((kind, ident),) = value.items()
    if kind not in _PERSON_KEYS:
        raise OpError("invalid", where, f"unsupported identifier {kind!r} (use id, email or cio_id)")
    if not isinstance(ident, str) or not ident:
        raise OpError("invalid", f"{where}.{kind}", f"{where}.{kind} must be a non-empty string")
    if kind == "id":
        _check_person_id(ident, f"{where}.id")
    return kind, ident


def _object_identifiers(value: Any, where: str) -> tuple[str, str]:
    """``object_type_id`` + ``object_id``, both non-empty strings."""
    if not isinstance(value, dict):
        raise OpError("invalid", where, f"{where} must be an object with object_type_id and object_id")
    type_id, object_id = value.get("object_type_id"), value.get("object_id")
    if not isinstance(type_id, str) or not type_id or not isinstance(object_id, str) or not object_id:
        raise OpError("invalid", where, f"{where} needs object_type_id and object_id as non-empty strings")
    return type_id, object_id


def _relationships(value: Any, to_people: bool) -> list[_Relation]:
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
            who = _person_identifiers(item.get("identifiers"), where)
        else:
            who = _object_identifiers(item.get("identifiers"), where)
        parsed.append((who, _opt_dict(item, "relationship_attributes")))
    return parsed


def _device(value: Any, adding: bool) -> dict[str, Any]:
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
        "last_used": _opt_int(value, "last_used"),
        "attributes": _opt_dict(value, "attributes"),
    }


def _check_attributes(attributes: dict[str, Any]) -> None:
    """Count, name and value limits of profile attributes."""
    if len(attributes) > MAX_ATTRIBUTES:
        raise OpError("limit_exceeded", "attributes", f"more than {MAX_ATTRIBUTES} attributes")
    for key, value in attributes.items():
        if _utf8_len(key) > MAX_ATTRIBUTE_NAME_BYTES:
            message = f"attribute name exceeds {MAX_ATTRIBUTE_NAME_BYTES} bytes"
            raise OpError("limit_exceeded", f"attributes.{key[:40]}", message)
        if isinstance(value, str) and len(value) <= MAX_ATTRIBUTE_VALUE_BYTES // 4:
            continue
        if _json_bytes(value) > MAX_ATTRIBUTE_VALUE_BYTES:
            message = f"attribute value exceeds {MAX_ATTRIBUTE_VALUE_BYTES} bytes"
            raise OpError("limit_exceeded", f"attributes.{key}", message)


def _fill_identify(op: _Op, body: dict[str, Any]) -> None:
    """Split an identify body into attributes, identifiers and control fields."""
    update = body.get("_update")
    if update is not None and not isinstance(update, bool):
        raise OpError("invalid", "_update", "_update must be a boolean")
    op.update_only = update is True
    op.anonymous_id = _opt_str(body, "anonymous_id") or None
    for key in ("id", "email"):
        value = _opt_str(body, key)
        if value:
            op.ids[key] = value
    if "id" in op.ids:
        _check_person_id(op.ids["id"], "id")
    attributes = {key: value for key, value in body.items() if key not in _RESERVED}
    _check_attributes(attributes)
    op.attributes = attributes


def _check_event_data(data: dict[str, Any]) -> None:
    if data and _json_bytes(data) > MAX_EVENT_DATA_BYTES:
        raise OpError("limit_exceeded", "data", f"event data exceeds {MAX_EVENT_DATA_BYTES} bytes")


def parse_v2_op(raw: Any) -> _Op:
    """Validate one v2 entity operation (raises :class:`OpError`)."""
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
    op = _Op(kind, action, timestamp=_opt_int(raw, "timestamp"))
    if action == "merge":
        op.primary = _person_identifiers(raw.get("primary"), "primary")
        op.secondary = _person_identifiers(raw.get("secondary"), "secondary")
        return op
    if kind == "person":
        op.who = _person_identifiers(raw.get("identifiers"), "identifiers")
    else:
        op.who = _object_identifiers(raw.get("identifiers"), "identifiers")
    attributes = _opt_dict(raw, "attributes")
    if kind == "object":
        op.attributes = attributes
    elif action == "identify":
        _fill_identify(op, attributes)
    elif action in _EVENT_TYPES:
        op.name = _event_name(raw.get("name"))
        op.event_id = _ulid(raw.get("id"))
        op.attributes = attributes
    elif action in ("add_device", "delete_device"):
        op.device = _device(raw.get("device"), adding=action == "add_device")
    if action.endswith("_relationships") and not raw.get("cio_relationships"):
        raise OpError("required", "cio_relationships", "cio_relationships is required")
    op.relationships = _relationships(raw.get("cio_relationships"), to_people=kind == "object")
    return op


def _delivery_op(raw: dict[str, Any]) -> _Op:
    """A v2 ``delivery`` op: ``action`` event, ``identifiers.id`` (the delivery id), ``name`` a push metric,
    ``attributes.device_token`` (spec: ``delivery_operations``, all required)."""
    if raw.get("action") != "event":
        raise OpError("invalid", "action", f"unsupported action {raw.get('action')!r} for type 'delivery'")
    identifiers = raw.get("identifiers")
    delivery_id = identifiers.get("id") if isinstance(identifiers, dict) else None
    if not isinstance(delivery_id, str) or not delivery_id:
        raise OpError("required", "identifiers.id", "identifiers.id (the delivery id) is required")
    name = raw.get("name")
    if name not in _PUSH_METRICS:
        raise OpError("invalid", "name", f"name must be one of {sorted(_PUSH_METRICS)}, got {name!r}")
    attributes = raw.get("attributes")
    token = attributes.get("device_token") if isinstance(attributes, dict) else None
    if not isinstance(token, str) or not token:
        raise OpError("required", "attributes.device_token", "attributes.device_token is required")
    op = _Op("delivery", "event", who=("delivery", delivery_id), name=name, timestamp=_opt_int(raw, "timestamp"))
    op.attributes = dict(attributes)
    return op


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
    timestamp = _opt_int(body, "timestamp")
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
    if _EMAIL_RE.fullmatch(identifier):
        return "email", identifier
    _check_person_id(identifier, "identifier")
    return "id", identifier


def _v1_body(parsed: Any, required: bool = True) -> dict[str, Any]:
    if parsed is _NO_BODY and not required:
        return {}
    if not isinstance(parsed, dict):
        raise OpError("invalid", "body", "request body must be a JSON object")
    return parsed


def _v1_relationships(op: _Op, value: Any) -> None:
    """v1 ``cio_relationships``: ``{"action": add|delete_relationships, "relationships": [...]}``."""
    if isinstance(value, dict):
        action = value.get("action", "add_relationships")
        if action not in ("add_relationships", "delete_relationships"):
            raise OpError("invalid", "cio_relationships.action", f"unsupported action {action!r}")
        op.relationships_add = action == "add_relationships"
        value = value.get("relationships")
    op.relationships = _relationships(value, to_people=False)


def _v1_event(op: _Op, body: dict[str, Any]) -> _Op:
    """Fill the event fields shared by both v1 event endpoints."""
    kind = body.get("type", "event")
    if kind not in _EVENT_TYPES:
        raise OpError("invalid", "type", f"type must be event, page or screen, got {kind!r}")
    op.action = kind
    op.name = _event_name(body.get("name"))
    op.event_id = _ulid(body.get("id"))
    op.timestamp = _opt_int(body, "timestamp")
    op.attributes = _opt_dict(body, "data")
    _check_event_data(op.attributes)
    return op


# --------------------------------------------------------------------------- state


@dataclass(slots=True)
class _Person:
    cio_id: str
    id: str | None
    email: str | None
    created_at: int
    attributes: dict[str, Any] = field(default_factory=dict)
    attribute_timestamps: dict[str, int] = field(default_factory=dict)
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    event_keys: list[int] = field(default_factory=list)


@dataclass(slots=True)
class _Fault:
    id: int
    status: int | None
    remaining: int | None
    until: float | None
    retry_after: str | None
    delay_s: float
    body: Any

    def active(self, now: float) -> bool:
        return (self.remaining is None or self.remaining > 0) and (self.until is None or now < self.until)

    def view(self, now: float) -> dict[str, Any]:
        left = None if self.until is None else round(max(0.0, self.until - now), 3)
        return {
            "id": self.id, "status": self.status, "remaining": self.remaining, "seconds_left": left,
            "retry_after": self.retry_after, "delay_s": self.delay_s, "body": self.body,
        }


class SandboxState:
    """The in-memory workspace: people, events, objects, request log, faults, credentials.

    Thread-safe: every read and write holds one lock, briefly.
    """

    def __init__(self, site_id: str = "sandbox", api_key: str = "sandbox") -> None:
        self._lock = threading.Lock()
        #: The workspace setting "Allow updates to email using ID": on, an identify addressed by id may change the
        #: person's email; off, only a ``cio_id`` identify may (spec ``identify``).
        self.allow_email_update_by_id = True
        self._initial_credentials = (site_id, api_key)
        self._fault_ids = itertools.count(1)
        self._clear()
        self._handlers: dict[tuple[str, str], Callable[[_Op, float], None]] = {
            ("person", "identify"): self._person_identify,
            ("person", "delete"): self._person_delete,
            ("person", "event"): self._person_event,
            ("person", "page"): self._person_event,
            ("person", "screen"): self._person_event,
            ("person", "add_device"): self._person_add_device,
            ("person", "delete_device"): self._person_delete_device,
            ("person", "merge"): self._person_merge,
            ("person", "suppress"): self._person_suppress,
            ("person", "unsuppress"): self._person_unsuppress,
            ("person", "add_relationships"): self._person_relationships,
            ("person", "delete_relationships"): self._person_relationships,
            ("object", "identify"): self._object_identify,
            ("object", "delete"): self._object_delete,
            ("object", "add_relationships"): self._object_relationships,
            ("object", "delete_relationships"): self._object_relationships,
            ("anonymous", "event"): self._anonymous_event,
            ("anonymous", "page"): self._anonymous_event,
            ("anonymous", "screen"): self._anonymous_event,
            ("delivery", "event"): self._delivery_event,
        }

    def _clear(self) -> None:
        """(Re)initialise everything; caller holds the lock or is ``__init__``."""
        self.credentials = self._initial_credentials
        self._people: dict[str, _Person] = {}
        self._by_id: dict[str, str] = {}
        self._by_email: dict[str, str] = {}
        self._events: dict[int, dict[str, Any]] = {}  # person and anonymous events, by sequence
        self._event_seq = itertools.count()
        self._anonymous: dict[str | None, list[int]] = {}  # unattached, by anonymous_id
        self._seen_event_ids: set[str] = set()
        self._objects: dict[tuple[str, str], dict[str, Any]] = {}
        self._relations: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}  # object -> cio_id -> attrs
        self._failures: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_LOGGED_FAILURES)
        # suppressed identifiers ("id", value) / ("email", lowercased) -> suppression number; the numbers'
        # identifier sets (a person's id and email are suppressed, and unsuppressed, together)
        self._suppressed: dict[tuple[str, str], int] = {}
        self._suppressions: dict[int, list[tuple[str, str]]] = {}
        self._suppression_seq = itertools.count(1)
        self._ignored: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_LOGGED_FAILURES)
        self._metrics: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_LOGGED_REQUESTS)
        self._forms: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_LOGGED_REQUESTS)
        self._segments: dict[str, dict[str, None]] = {}  # manual segment id -> cio_ids (ordered)
        self._requests: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_LOGGED_REQUESTS)
        self._faults: list[_Fault] = []
        self._counts: collections.Counter[str] = collections.Counter()
        self._by_status: collections.Counter[str] = collections.Counter()

    # ----------------------------------------------------------------- public reads

    def people(self) -> list[dict[str, Any]]:
        """Every person, in creation order."""
        with self._lock:
            return [self._person_view(person) for person in self._people.values()]

    def person(self, identifier: str) -> dict[str, Any] | None:
        """One person by id, email (case-insensitive) or cio_id, with events; else ``None``."""
        with self._lock:
            person = self._resolve(identifier)
            if person is None:
                return None
            view = self._person_view(person)
            view["attribute_timestamps"] = dict(person.attribute_timestamps)
            view["relationships"] = self._relationships_of(person.cio_id)
            view["events"] = [dict(self._events[key]) for key in person.event_keys]
            return view

    def events(self, person: str | None = None) -> list[dict[str, Any]]:
        """Events attributed to people (all, or one person's by identifier)."""
        with self._lock:
            if person is None:
                return [dict(event) for event in self._events.values() if event["person"] is not None]
            found = self._resolve(person)
            return [] if found is None else [dict(self._events[key]) for key in found.event_keys]

    def anonymous_events(self) -> list[dict[str, Any]]:
        """Anonymous events not (yet) attached to a person."""
        with self._lock:
            return [dict(event) for event in self._events.values() if event["person"] is None]

    def objects(self) -> list[dict[str, Any]]:
        """Objects with their relationships to people."""
        with self._lock:
            return [
                {**obj, "attributes": dict(obj["attributes"]), "relationships": [
                    {"person": cio_id, "attributes": dict(attrs)}
                    for cio_id, attrs in self._relations.get(key, {}).items()
                ]}
                for key, obj in self._objects.items()
            ]

    def requests(self) -> list[dict[str, Any]]:
        """The request log (last 200,000 ``/api`` requests), oldest first."""
        with self._lock:
            return [dict(entry) for entry in self._requests]

    def suppressions(self) -> list[dict[str, Any]]:
        """Suppressed identifiers, one entry per suppression: ``{"id": ..., "email": ...}`` (absent = none)."""
        with self._lock:
            return [dict(keys) for keys in self._suppressions.values()]

    def ignored(self) -> list[dict[str, Any]]:
        """Operations accepted with 200 but ignored because they reference a suppressed identifier."""
        with self._lock:
            return [dict(entry) for entry in self._ignored]

    def delivery_metrics(self) -> list[dict[str, Any]]:
        """Reported delivery metrics (v1 ``/push/events``, ``/metrics``, ``/unsubscribe``, v2 ``delivery``)."""
        with self._lock:
            return [dict(entry) for entry in self._metrics]

    def form_submissions(self) -> list[dict[str, Any]]:
        """Form submissions (``/api/v1/forms/{form_id}/submit``) that identified a person."""
        with self._lock:
            return [dict(entry) for entry in self._forms]

    def segments(self) -> dict[str, list[str]]:
        """Manual segments: segment id -> member cio_ids."""
        with self._lock:
            return {segment: list(members) for segment, members in self._segments.items()}

    def attribute_update_failures(self) -> list[dict[str, Any]]:
        """Identifies (and other ops) accepted with 200 but not applied."""
        with self._lock:
            return [dict(entry) for entry in self._failures]

    def stats(self) -> dict[str, Any]:
        """Counters: requests (total, by status), people, events, duplicates, ..."""
        with self._lock:
            counts = self._counts
            return {
                "requests": counts["requests"],
                "requests_by_status": dict(self._by_status),
                "people": len(self._people),
                "events": counts["events"],
                "duplicates": counts["duplicates"],
                "anonymous_events": counts["anonymous_events"],
                "attribute_update_failures": counts["failures"],
                "attribute_update_failure_details": list(self._failures)[-100:],
                "suppressed_identifiers": len(self._suppressed),
                "ignored_suppressed": counts["ignored_suppressed"],
                "delivery_metrics": len(self._metrics),
                "objects": len(self._objects),
                "relationships": sum(len(people) for people in self._relations.values()),
                "faults": len(self._faults),
                "internal_errors": counts["internal_errors"],
            }

    def faults(self) -> list[dict[str, Any]]:
        """Active fault rules, in application order."""
        with self._lock:
            now = time.monotonic()
            self._faults = [fault for fault in self._faults if fault.active(now)]
            return [fault.view(now) for fault in self._faults]

    # ----------------------------------------------------------------- public control

    def reset(self) -> None:
        """Forget everything: data, request log, faults; restore the initial credentials."""
        with self._lock:
            self._clear()

    def set_credentials(self, site_id: str, api_key: str) -> None:
        """Accept only these credentials from now on."""
        with self._lock:
            self.credentials = (site_id, api_key)

    def add_fault(
        self,
        status: int | None = None,
        count: int | None = None,
        duration_s: float | None = None,
        retry_after: float | str | None = None,
        delay_s: float = 0.0,
        body: Any = None,
    ) -> dict[str, Any]:
        """Add a fault rule (next ``count`` requests, or all for ``duration_s``); raises ValueError."""
        fault = _make_fault(next(self._fault_ids), status, count, duration_s, retry_after, delay_s, body)
        with self._lock:
            self._faults.append(fault)
            return fault.view(time.monotonic())

    def clear_faults(self) -> None:
        """Remove every fault rule."""
        with self._lock:
            self._faults = []

    # ----------------------------------------------------------------- used by the app

    def authorized(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries the accepted Basic credentials."""
        if not header or header[:6].lower() != "basic ":
            return False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        site_id, sep, api_key = decoded.partition(":")
        expected_site, expected_key = self.credentials
        site_ok = hmac.compare_digest(site_id.encode(), expected_site.encode())
        key_ok = hmac.compare_digest(api_key.encode(), expected_key.encode())
        return bool(sep) and site_ok and key_ok

    def take_fault(self) -> _Fault | None:
        """The first active fault rule, consuming one use of it."""
        if not self._faults:
            return None
        with self._lock:
            now = time.monotonic()
            chosen = next((rule for rule in self._faults if rule.active(now)), None)
            if chosen is not None and chosen.remaining is not None:
                chosen.remaining -= 1
            self._faults = [rule for rule in self._faults if rule.active(now)]
            return chosen

    def log_request(self, entry: dict[str, Any]) -> None:
        """Append to the request log and count the status."""
        with self._lock:
            self._requests.append(entry)
            self._counts["requests"] += 1
            self._by_status[str(entry["status"])] += 1

    def count_internal_error(self) -> None:
        """Count a request the sandbox itself failed on (answered 500)."""
        with self._lock:
            self._counts["internal_errors"] += 1

    def apply(self, op: _Op) -> None:
        """Apply one operation (raises :class:`OpError` for state-dependent errors)."""
        with self._lock:
            self._run(op, time.time())

    def apply_batch(self, ops: list[tuple[int, _Op]]) -> list[dict[str, Any]]:
        """Apply indexed operations in order; the v2 errors of those that failed."""
        errors = []
        now = time.time()
        with self._lock:
            for index, op in ops:
                try:
                    self._run(op, now)
                except OpError as exc:
                    errors.append(exc.as_dict(index))
        return errors

    def record_metric(self, source: str, record: dict[str, Any]) -> None:
        """Store a delivery metric reported through a v1 endpoint."""
        with self._lock:
            self._metrics.append({"source": source, **record, "received_at": time.time()})

    def submit_form(self, form_id: str, data: dict[str, Any]) -> None:
        """``/forms/{form_id}/submit``: identify the respondent (created if new) with the form fields."""
        with self._lock:
            now = time.time()
            kinds = [kind for kind in ("id", "email") if data.get(kind)]
            if len(kinds) != 1:
                raise OpError("invalid", "data", "data must hold exactly one of id or email")
            fields = {key: value for key, value in data.items() if key not in _FORM_RESERVED}
            op = _Op("person", "identify", who=(kinds[0], str(fields[kinds[0]])))
            _fill_identify(op, fields)
            self._run(op, now)
            self._forms.append({"form_id": form_id, "data": fields, "received_at": now})

    def segment_members(self, segment_id: str, ids: Any, id_type: str, add: bool) -> None:
        """Add people to (or remove them from) a manual segment; unknown people and mistyped values are ignored."""
        if id_type not in _PERSON_KEYS:
            raise OpError("invalid", "id_type", "id_type must be id, email or cio_id")
        if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_SEGMENT_IDS:
            raise OpError("invalid", "ids", f"ids must be a list of 1 to {MAX_SEGMENT_IDS} identifiers")
        with self._lock:
            members = self._segments.setdefault(segment_id, {})
            for value in ids:
                if not isinstance(value, str) or not value:
                    continue
                if id_type == "email" and not _EMAIL_RE.fullmatch(value):
                    continue  # "values in the ids array that don't match the id_type" are ignored
                person = self._find((id_type, value))
                if person is None:
                    continue
                if add:
                    members[person.cio_id] = None
                else:
                    members.pop(person.cio_id, None)

    # ----------------------------------------------------------------- internals (lock held)

    def _run(self, op: _Op, now: float) -> None:
        """Apply ``op`` unless it references a suppressed identifier (then it is ignored: still 200)."""
        if op.type == "person" and op.action != "unsuppress":
            blocked = self._suppressed_reference(op)
            if blocked is not None:
                self._counts["ignored_suppressed"] += 1
                self._ignored.append({
                    "time": now, "type": op.type, "action": op.action,
                    "identifiers": {blocked[0]: blocked[1]}, "message": f"{blocked[0]} is suppressed",
                })
                return
        self._handlers[(op.type, op.action)](op, now)

    def _suppression_key(self, kind: str, value: str) -> tuple[str, str] | None:
        if kind == "id":
            return ("id", value)
        if kind == "email":
            return ("email", value.lower())
        return None

    def _suppressed_reference(self, op: _Op) -> tuple[str, str] | None:
        """The first suppressed identifier ``op`` addresses or sets, else ``None``."""
        candidates = [op.who, op.primary, op.secondary, *op.ids.items()]
        for candidate in candidates:
            if candidate is None:
                continue
            key = self._suppression_key(*candidate)
            if key is not None and key in self._suppressed:
                return candidate
        return None

    def _person_view(self, person: _Person) -> dict[str, Any]:
        return {
            "cio_id": person.cio_id,
            "id": person.id,
            "email": person.email,
            "attributes": dict(person.attributes),
            "created_at": person.created_at,
            "devices": [dict(device) for device in person.devices.values()],
            "event_count": len(person.event_keys),
        }

    def _relationships_of(self, cio_id: str) -> list[dict[str, Any]]:
        return [
            {"object_type_id": key[0], "object_id": key[1], "attributes": dict(people[cio_id])}
            for key, people in self._relations.items()
            if cio_id in people
        ]

    def _resolve(self, identifier: str) -> _Person | None:
        cio_id = self._by_id.get(identifier) or self._by_email.get(identifier.lower())
        if cio_id is None and identifier not in self._people and identifier.startswith("cio_"):
            cio_id = identifier[4:]
        return self._people.get(cio_id or identifier)

    def _find(self, who: tuple[str, str]) -> _Person | None:
        kind, value = who
        if kind == "id":
            cio_id = self._by_id.get(value)
        elif kind == "email":
            cio_id = self._by_email.get(value.lower())
        else:
            cio_id = value
        return None if cio_id is None else self._people.get(cio_id)

    def _create(self, who: tuple[str, str], now: float) -> _Person:
        cio_id = secrets.token_hex(6)
        while cio_id in self._people:
            cio_id = secrets.token_hex(6)
        kind, value = who
        person = _Person(cio_id, None, None, int(now))
        self._people[cio_id] = person
        self._set_identifier(person, kind, value)
        return person

    def _find_or_create(self, op: _Op, who: tuple[str, str], now: float) -> _Person | None:
        """The person, created if addressed by id/email; ``None`` (failure logged) for unknown cio_id."""
        person = self._find(who)
        if person is None:
            if who[0] == "cio_id":
                self._fail(op, who, "no person has this cio_id", now)
                return None
            person = self._create(who, now)
        return person

    def _set_identifier(self, person: _Person, kind: str, value: str) -> None:
        if kind == "id" and person.id != value:
            if person.id is not None:
                self._by_id.pop(person.id, None)
            person.id = value
            self._by_id[value] = person.cio_id
        elif kind == "email" and person.email != value:
            if person.email is not None:
                self._by_email.pop(person.email.lower(), None)
            person.email = value
            self._by_email[value.lower()] = person.cio_id

    def _fail(self, op: _Op, who: tuple[str, str] | None, message: str, now: float) -> None:
        """Record an attribute update failure (the request still answers 200)."""
        self._counts["failures"] += 1
        identifiers = {who[0]: who[1]} if who else None
        self._failures.append({"time": now, "action": op.action, "identifiers": identifiers, "message": message})

    def _owner(self, kind: str, value: str) -> str | None:
        """The cio_id holding identifier ``value`` of ``kind`` (id or email), else ``None``."""
        return self._by_id.get(value) if kind == "id" else self._by_email.get(value.lower())

    def _identifier_conflict(self, person: _Person | None, op: _Op) -> str | None:
        """Why ``op`` may not give ``person`` its identifiers (``None``: it may).

        Identifiers are unique across profiles; after they are set, only a request addressing the person by
        ``cio_id`` may change them (spec ``identify``) -- except the email when addressed by id, if the
        workspace setting "Allow updates to email using ID" is on (:attr:`SandboxState.allow_email_update_by_id`).
        """
        assert op.who is not None
        addressed_kind = op.who[0]
        for kind, value in op.ids.items():
            owner = self._owner(kind, value)
            if owner is not None and (person is None or owner != person.cio_id):
                return f"{kind} {value!r} belongs to another person"
            if addressed_kind == kind:
                current: str | None = op.who[1]
            else:
                current = None if person is None else (person.id if kind == "id" else person.email)
            if current is None or addressed_kind == "cio_id":
                continue
            same = value == current if kind == "id" else value.lower() == current.lower()
            if same:
                continue
            if kind == "email" and addressed_kind == "id" and self.allow_email_update_by_id:
                continue
            return f"cannot change the {kind} of a person addressed by {addressed_kind} (use cio_id)"
        return None

    def _body_owner(self, op: _Op, now: float) -> tuple[_Person | None, bool]:
        """For an identify whose path identifier nobody holds: the person a body identifier names, if any.

        Spec ``identify``: "If the identifier in the path does not belong to a person but you use an identifier in
        your request body that does belong to a person, your request updates the person and assigns them the
        identifier in the path." ``(person, ok)``; ``ok`` is False when that is a failure (already recorded).
        """
        assert op.who is not None
        owners = {owner for owner in (self._owner(kind, value) for kind, value in op.ids.items()) if owner}
        if not owners:
            return None, True
        if len(owners) > 1:
            self._fail(op, op.who, "the identifiers in the request belong to different people", now)
            return None, False
        person = self._people[owners.pop()]
        kind = op.who[0]
        if (person.id if kind == "id" else person.email) is not None:
            self._fail(op, op.who, f"the person holding the body identifiers already has another {kind}", now)
            return None, False
        return person, True

    def _person_identify(self, op: _Op, now: float) -> None:
        assert op.who is not None
        person = self._find(op.who)
        if person is None and op.who[0] == "cio_id":
            # spec: "If the cio_id does not exist or belongs to a person who was deleted, we'll drop the request."
            self._fail(op, op.who, "no person has this cio_id (request dropped)", now)
            return
        if person is None:
            person, ok = self._body_owner(op, now)
            if not ok:
                return
        if person is None and op.update_only:
            self._fail(op, op.who, "no such person (not created: _update)", now)
            return
        conflict = self._identifier_conflict(person, op)
        if conflict is not None:
            self._fail(op, op.who, conflict, now)
            return
        if person is None:
            person = self._create(op.who, now)
        elif op.who[0] != "cio_id":
            self._set_identifier(person, *op.who)
        for kind, value in op.ids.items():
            self._set_identifier(person, kind, value)
        self._write_attributes(person, op.attributes, op.timestamp, now)
        if op.anonymous_id:
            self._attach_anonymous(person, op.anonymous_id, now)
        self._relate(person.cio_id, op.relationships, add=op.relationships_add, now=now)

    def _write_attributes(
        self, person: _Person, attributes: dict[str, Any], timestamp: int | None, now: float,
    ) -> None:
        """Set (or remove, for null/"") attributes, honouring per-attribute timestamps.

        ``_timestamp`` (v1) / ``timestamp`` (v2) is "when the attribute update occurred" and orders updates sent
        in rapid succession (spec ``identify``): a value never yields to an older update. An update without one
        occurred when it was received, so it is stamped with the receipt time.
        """
        current, stamps = person.attributes, person.attribute_timestamps
        stamp = int(now) if timestamp is None else timestamp
        for key, value in attributes.items():
            last = stamps.get(key)
            if last is not None and stamp < last:
                continue
            stamps[key] = stamp
            if value is None or (isinstance(value, str) and not value):
                current.pop(key, None)
            else:
                current[key] = value
        created_at = current.get("created_at")
        if isinstance(created_at, int) and not isinstance(created_at, bool):
            person.created_at = created_at

    def _attach_anonymous(self, person: _Person, anonymous_id: str, now: float) -> None:
        """Attach this anonymous_id's events of the last 30 days to ``person``."""
        keys = self._anonymous.pop(anonymous_id, None)
        if not keys:
            return
        cutoff, kept = now - ANONYMOUS_WINDOW_S, []
        for key in keys:
            event = self._events[key]
            if event["received_at"] >= cutoff:
                event["person"] = person.cio_id
                person.event_keys.append(key)
            else:
                kept.append(key)
        if kept:
            self._anonymous[anonymous_id] = kept
        moved = len(keys) - len(kept)
        self._counts["anonymous_events"] -= moved
        self._counts["events"] += moved
        person.event_keys.sort()

    def _is_duplicate(self, event_id: str | None) -> bool:
        if event_id is None:
            return False
        key = event_id.upper()
        if key in self._seen_event_ids:
            self._counts["duplicates"] += 1
            return True
        self._seen_event_ids.add(key)
        return False

    def _store_event(self, op: _Op, cio_id: str | None, now: float) -> int:
        key = next(self._event_seq)
        self._events[key] = {
            "person": cio_id,
            "anonymous_id": op.anonymous_id,
            "type": op.action,
            "name": op.name,
            "id": op.event_id,
            "timestamp": op.timestamp,
            "data": op.attributes,
            "received_at": now,
        }
        return key

    def _person_event(self, op: _Op, now: float) -> None:
        assert op.who is not None
        if op.event_id is not None and op.event_id.upper() in self._seen_event_ids:
            self._counts["duplicates"] += 1
            return
        person = self._find_or_create(op, op.who, now)
        if person is None or self._is_duplicate(op.event_id):
            return
        person.event_keys.append(self._store_event(op, person.cio_id, now))
        self._counts["events"] += 1

    def _anonymous_event(self, op: _Op, now: float) -> None:
        if self._is_duplicate(op.event_id):
            return
        key = self._store_event(op, None, now)
        self._anonymous.setdefault(op.anonymous_id, []).append(key)
        self._counts["anonymous_events"] += 1

    def _remove_person(self, person: _Person) -> None:
        """Delete a person, their events and relationships."""
        for key in person.event_keys:
            del self._events[key]
        self._counts["events"] -= len(person.event_keys)
        if person.id is not None:
            self._by_id.pop(person.id, None)
        if person.email is not None:
            self._by_email.pop(person.email.lower(), None)
        for people in self._relations.values():
            people.pop(person.cio_id, None)
        for members in self._segments.values():
            members.pop(person.cio_id, None)
        del self._people[person.cio_id]

    def _person_delete(self, op: _Op, now: float) -> None:
        assert op.who is not None
        person = self._find(op.who)
        if person is not None:
            self._remove_person(person)

    def _person_suppress(self, op: _Op, now: float) -> None:
        """Delete the profile and suppress the addressed identifier, plus the person's id and email.

        Spec ``suppress``: "Delete a customer profile and prevent the person's identifier(s) from being re-added
        to your workspace. Any future API calls or operations referencing the specified ID are ignored" and
        "both the person's email and ID are suppressed". An identifier nobody holds is suppressed too.
        """
        assert op.who is not None
        keys = []
        addressed = self._suppression_key(*op.who)
        if addressed is not None:
            keys.append(addressed)
        person = self._find(op.who)
        if person is not None:
            for kind, value in (("id", person.id), ("email", person.email)):
                key = None if value is None else self._suppression_key(kind, value)
                if key is not None and key not in keys:
                    keys.append(key)
            self._remove_person(person)
        keys = [key for key in keys if key not in self._suppressed]
        if keys:
            number = next(self._suppression_seq)
            self._suppressions[number] = keys
            for key in keys:
                self._suppressed[key] = number

    def _person_unsuppress(self, op: _Op, now: float) -> None:
        """Make the identifier (and the id/email suppressed with it) usable again; the profile stays deleted.

        Spec ``unsuppress``: "both the person's email and ID are unsuppressed"; "does not recreate the profile".
        """
        assert op.who is not None
        key = self._suppression_key(*op.who)
        number = None if key is None else self._suppressed.get(key)
        if number is None:
            return
        for other in self._suppressions.pop(number):
            self._suppressed.pop(other, None)

    def _delivery_event(self, op: _Op, now: float) -> None:
        assert op.who is not None
        self._metrics.append({
            "source": "v2", "delivery_id": op.who[1], "metric": op.name, "timestamp": op.timestamp,
            "device_token": op.attributes.get("device_token"), "attributes": dict(op.attributes), "received_at": now,
        })

    def _person_add_device(self, op: _Op, now: float) -> None:
        assert op.who is not None and op.device is not None
        person = self._find_or_create(op, op.who, now)
        if person is not None:
            device = dict(op.device)
            if device["last_used"] is None:
                device["last_used"] = int(now)
            person.devices[device["id"]] = device

    def _person_delete_device(self, op: _Op, now: float) -> None:
        assert op.who is not None and op.device is not None
        person = self._find(op.who)
        if person is not None:
            person.devices.pop(op.device["id"], None)

    def _person_merge(self, op: _Op, now: float) -> None:
        assert op.primary is not None and op.secondary is not None
        primary = self._find(op.primary)
        if primary is None:
            # spec merge_customers: "If the primary profile doesn't exist, your request won't do anything."
            self._fail(op, op.primary, "the primary person does not exist (merge did nothing)", now)
            return
        secondary = self._find(op.secondary)
        if secondary is None or secondary is primary:
            return
        # merged: "Attributes that are not set, or are empty, on the primary", event history, manual segments
        for key, value in secondary.attributes.items():
            if key not in primary.attributes:
                primary.attributes[key] = value
                if key in secondary.attribute_timestamps:
                    primary.attribute_timestamps[key] = secondary.attribute_timestamps[key]
        for device_id, device in secondary.devices.items():
            primary.devices.setdefault(device_id, device)
        for people in self._relations.values():
            if secondary.cio_id in people:
                people.setdefault(primary.cio_id, people[secondary.cio_id])
        for members in self._segments.values():
            if secondary.cio_id in members:
                members[primary.cio_id] = None
        for key in secondary.event_keys:
            self._events[key]["person"] = primary.cio_id
        primary.event_keys.extend(secondary.event_keys)
        primary.event_keys.sort()
        secondary.event_keys = []
        email = secondary.email
        self._remove_person(secondary)
        if primary.email is None and email is not None:
            self._set_identifier(primary, "email", email)

    def _relate(self, cio_id: str, relations: list[_Relation], add: bool, now: float) -> None:
        """Add or delete person ↔ object relationships (objects are created on add)."""
        for key, attributes in relations:
            if not add:
                self._relations.get(key, {}).pop(cio_id, None)
                continue
            self._ensure_object(key, now)
            current = self._relations.setdefault(key, {}).setdefault(cio_id, {})
            _merge_attributes(current, attributes)

    def _person_relationships(self, op: _Op, now: float) -> None:
        assert op.who is not None
        adding = op.action == "add_relationships"
        person = self._find_or_create(op, op.who, now) if adding else self._find(op.who)
        if person is not None:
            self._relate(person.cio_id, op.relationships, adding, now)

    def _ensure_object(self, key: tuple[str, str], now: float) -> dict[str, Any]:
        obj = self._objects.get(key)
        if obj is None:
            obj = {"object_type_id": key[0], "object_id": key[1], "attributes": {}, "created_at": int(now)}
            self._objects[key] = obj
        return obj

    def _object_identify(self, op: _Op, now: float) -> None:
        assert op.who is not None
        _merge_attributes(self._ensure_object(op.who, now)["attributes"], op.attributes)
        self._object_people(op, add=True, now=now)

    def _object_delete(self, op: _Op, now: float) -> None:
        assert op.who is not None
        self._objects.pop(op.who, None)
        self._relations.pop(op.who, None)

    def _object_relationships(self, op: _Op, now: float) -> None:
        assert op.who is not None
        adding = op.action == "add_relationships"
        if adding:
            self._ensure_object(op.who, now)
        self._object_people(op, add=adding, now=now)

    def _object_people(self, op: _Op, add: bool, now: float) -> None:
        assert op.who is not None
        for who, attributes in op.relationships:
            key = self._suppression_key(*who)
            if key is not None and key in self._suppressed:
                self._counts["ignored_suppressed"] += 1
                self._ignored.append({
                    "time": now, "type": op.type, "action": op.action, "identifiers": {who[0]: who[1]},
                    "message": f"{who[0]} is suppressed",
                })
                continue
            person = self._find_or_create(op, who, now) if add else self._find(who)
            if person is not None:
                self._relate(person.cio_id, [(op.who, attributes)], add, now)


def _merge_attributes(current: dict[str, Any], updates: dict[str, Any]) -> None:
    """Set attributes; ``null`` or ``""`` removes one."""
    for key, value in updates.items():
        if value is None or (isinstance(value, str) and not value):
            current.pop(key, None)
        else:
            current[key] = value


def _make_fault(
    fault_id: int,
    status: Any,
    count: Any,
    duration_s: Any,
    retry_after: Any,
    delay_s: Any,
    body: Any,
) -> _Fault:
    """Validate fault parameters (ValueError on nonsense)."""
    if status is not None and (isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599):
        raise ValueError("status must be an HTTP status code or null")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ValueError("count must be a positive integer")
    if duration_s is not None and (not _is_number(duration_s) or duration_s <= 0):
        raise ValueError("duration_s must be a positive number")
    if delay_s is None:
        delay_s = 0.0
    if not _is_number(delay_s) or delay_s < 0:
        raise ValueError("delay_s must be a non-negative number")
    if status is None and not delay_s:
        raise ValueError("a fault needs a status or a delay_s")
    if retry_after is not None and not (_is_number(retry_after) or isinstance(retry_after, str)):
        raise ValueError("retry_after must be a number or a string")
    if count is None and duration_s is None:
        count = 1
    header = None
    if retry_after is not None:
        whole = _is_number(retry_after) and float(retry_after).is_integer()  # inf/nan: sent as text
        header = str(int(retry_after)) if whole else str(retry_after)
    until = None if duration_s is None else time.monotonic() + float(duration_s)
    return _Fault(fault_id, status, count, until, header, float(delay_s), body)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --------------------------------------------------------------------------- HTTP


class _NoBody:
    """Marker: the request had no body."""


class _BadJson:
    """Marker: the body is not valid JSON."""


_NO_BODY: Any = _NoBody()
_BAD_JSON: Any = _BadJson()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_body(body: bytes) -> Any:
    """Parsed JSON, or ``_NO_BODY`` / ``_BAD_JSON``."""
    if not body.strip():
        return _NO_BODY
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError):
        return _BAD_JSON


def _json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    content = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str)
    return Response(content.encode("utf-8"), status_code=status, media_type=_JSON, headers=headers)


def _raw_path(scope: dict[str, Any]) -> str:
    raw = scope.get("raw_path")
    if not raw:
        return str(scope["path"])
    return raw.decode("latin-1").partition("?")[0]


@dataclass(slots=True)
class _Call:
    """One /api request, as the dispatcher sees it."""

    method: str
    segments: list[str]  # raw (still percent-encoded) path segments after "api"
    body: bytes
    parsed: Any
    base_url: str
    region: str
    query: dict[str, str] = field(default_factory=dict)


def _v1_error(exc: OpError) -> tuple[int, Any]:
    return 400, {"meta": {"error": exc.message}}


def _v2_errors(status: int, reason: str, message: str) -> tuple[int, Any]:
    return status, {"errors": [{"reason": reason, "message": message}]}


def _v2_batch(state: SandboxState, call: _Call) -> tuple[int, Any]:
    """``POST /api/v2/batch``: apply the valid ops, report the others (207)."""
    if len(call.body) >= MAX_BATCH_BYTES:
        return _v2_errors(413, "request_too_large", f"batch request must be smaller than {MAX_BATCH_BYTES} bytes")
    parsed = call.parsed
    if not isinstance(parsed, dict) or not isinstance(parsed.get("batch"), list):
        return _v2_errors(400, "invalid", 'request body must be a JSON object with a "batch" list')
    check_sizes = len(call.body) > MAX_OP_BYTES
    errors, valid = [], []
    for index, raw in enumerate(parsed["batch"]):
        try:
            if check_sizes and _json_bytes(raw) > MAX_OP_BYTES:
                raise OpError("request_too_large", "", f"operation exceeds {MAX_OP_BYTES} bytes")
            valid.append((index, parse_v2_op(raw)))
        except OpError as exc:
            errors.append(exc.as_dict(index))
    errors.extend(state.apply_batch(valid))
    if not errors:
        return 200, {}
    errors.sort(key=lambda error: error["batch_index"])
    return 207, {"errors": errors}


def _v2_entity(state: SandboxState, call: _Call) -> tuple[int, Any]:
    """``POST /api/v2/entity``: one operation."""
    if len(call.body) > MAX_OP_BYTES:
        return _v2_errors(413, "request_too_large", f"operation exceeds {MAX_OP_BYTES} bytes")
    if call.parsed is _BAD_JSON or call.parsed is _NO_BODY:
        return _v2_errors(400, "invalid", "request body must be JSON")
    try:
        state.apply(parse_v2_op(call.parsed))
    except OpError as exc:
        return 400, {"errors": [exc.as_dict()]}
    return 200, {}


def _v1_customer(state: SandboxState, call: _Call, identifier: str, tail: list[str]) -> tuple[int, Any] | None:
    """``/api/v1/customers/{identifier}[/...]`` routes; ``None`` if none matches."""
    method = call.method
    who = _path_identifier(identifier)
    op = _Op("person", "", who=who)
    if method == "PUT" and not tail:
        body = _v1_body(call.parsed, required=False)
        op.action = "identify"
        op.timestamp = _opt_int(body, "_timestamp")
        _v1_relationships(op, body.get("cio_relationships"))
        _fill_identify(op, body)
    elif method == "DELETE" and not tail:
        op.action = "delete"
    elif method == "POST" and tail in (["suppress"], ["unsuppress"]):
        op.action = tail[0]
    elif method == "POST" and tail == ["events"]:
        _v1_event(op, _v1_body(call.parsed))
    elif method == "PUT" and tail == ["devices"]:
        op.action = "add_device"
        op.device = _device(_v1_body(call.parsed).get("device"), adding=True)
    elif method == "DELETE" and len(tail) == 2 and tail[0] == "devices":
        op.action = "delete_device"
        op.device = _device({"id": unquote(tail[1])}, adding=False)
    else:
        return None
    state.apply(op)
    return 200, {}


def _v1(state: SandboxState, call: _Call, rest: list[str]) -> tuple[int, Any] | None:
    """The v1 routes (``rest`` is the path after ``/api/v1``)."""
    method = call.method
    if rest == ["accounts", "region"] and method == "GET":
        return 200, {"url": call.base_url, "region": call.region, "environment_id": 1}
    if rest == ["events"] and method == "POST":
        body = _v1_body(call.parsed)
        op = _Op("anonymous", "event", anonymous_id=_opt_str(body, "anonymous_id") or None)
        state.apply(_v1_event(op, body))
        return 200, {}
    if rest == ["push", "events"] and method == "POST":
        # spec pushMetrics (deprecated, still works): delivery_id, event opened|converted|delivered, device_id
        state.record_metric("push/events", _metric_record(call.parsed, "event", _PUSH_METRICS))
        return 200, {}
    if rest == ["metrics"] and method == "POST":
        # spec metrics: delivery_id (required), metric per channel, recipient/reason/href
        state.record_metric("metrics", _metric_record(call.parsed, "metric", _CHANNEL_METRICS))
        return 200, {}
    if len(rest) == 3 and rest[0] == "forms" and rest[2] == "submit" and method == "POST":
        data = _v1_body(call.parsed).get("data")
        if not isinstance(data, dict):
            raise OpError("required", "data", "data must be an object of form fields")
        state.submit_form(unquote(rest[1]), data)
        return 200, {}
    if len(rest) == 3 and rest[0] == "segments" and rest[2] in ("add_customers", "remove_customers"):
        if method != "POST":
            return None
        body = _v1_body(call.parsed)
        add = rest[2] == "add_customers"
        state.segment_members(unquote(rest[1]), body.get("ids"), call.query.get("id_type", "id"), add)
        return 200, {}
    if rest == ["merge_customers"] and method == "POST":
        body = _v1_body(call.parsed)
        op = _Op("person", "merge")
        op.primary = _person_identifiers(body.get("primary"), "primary")
        op.secondary = _person_identifiers(body.get("secondary"), "secondary")
        state.apply(op)
        return 200, {}
    if len(rest) >= 2 and rest[0] == "customers":
        return _v1_customer(state, call, unquote(rest[1]), rest[2:])
    return None


def _dispatch(state: SandboxState, call: _Call) -> tuple[int, Any]:
    """Route an authorised /api request to its handler."""
    segments = call.segments
    if segments[:1] == ["v2"] and call.method == "POST":
        if segments == ["v2", "batch"]:
            return _v2_batch(state, call)
        if segments == ["v2", "entity"]:
            return _v2_entity(state, call)
    if segments[:1] == ["v1"]:
        if call.parsed is _BAD_JSON:
            return 400, {"meta": {"error": "request body is not valid JSON"}}
        try:
            answer = _v1(state, call, segments[1:])
        except OpError as exc:
            return _v1_error(exc)
        if answer is not None:
            return answer
    return 404, {"meta": {"error": "Not found"}}


def _fault_response(fault: _Fault) -> Response:
    assert fault.status is not None
    headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
    body = fault.body
    if isinstance(body, str):
        return Response(body, status_code=fault.status, media_type="text/plain", headers=headers)
    if body is None:
        if fault.status == 401:
            body = _UNAUTHORIZED
        else:
            try:
                phrase = http.HTTPStatus(fault.status).phrase
            except ValueError:
                phrase = "Injected fault"
            body = {"meta": {"error": phrase}}
    return _json_response(fault.status, body, headers)


def _log_body(body: bytes, parsed: Any) -> Any:
    if parsed is _NO_BODY:
        return None
    if parsed is _BAD_JSON:
        return body.decode("utf-8", errors="replace")
    return parsed


async def _api(request: Request) -> Response:
    """Every ``/api/...`` request: faults, auth, dispatch, request log."""
    state: SandboxState = request.app.state.sandbox
    received = time.time()
    body = await request.body()
    parsed = _parse_body(body)
    raw_path = _raw_path(request.scope)
    fault = state.take_fault()
    if fault is not None and fault.delay_s:
        await asyncio.sleep(fault.delay_s)
    segments = raw_path.split("/")[2:]
    if fault is not None and fault.status is not None:
        response = _fault_response(fault)
    elif segments not in _OPEN_ROUTES and not state.authorized(request.headers.get("authorization")):
        response = _json_response(401, _UNAUTHORIZED)
    else:
        call = _Call(
            request.method, segments, body, parsed,
            str(request.base_url).rstrip("/"), request.app.state.region, dict(request.query_params),
        )
        try:
            status, payload = _dispatch(state, call)
        except Exception as exc:  # a sandbox bug: answer 500, keep serving
            logger.exception("sandbox failed on %s %s", request.method, raw_path)
            state.count_internal_error()
            status, payload = 500, {"meta": {"error": f"sandbox internal error: {exc!r}"}}
        response = _json_response(status, payload)
    state.log_request({
        "method": request.method,
        "path": raw_path,
        "query": request.scope.get("query_string", b"").decode("latin-1"),
        "body": _log_body(body, parsed),
        "status": response.status_code,
        "time": received,
        "answered": time.time(),
        "bytes": len(body),
    })
    return response


async def _unsubscribe(request: Request) -> Response:
    """``POST /unsubscribe/{delivery_id}`` (spec ``unsubscribe``): no auth, JSON content type required.

    The sandbox sends no messages, so it cannot know whose delivery this is: it records the request as an
    ``unsubscribed`` delivery metric (with the ``unsubscribe`` flag) instead of setting an attribute.
    """
    state = _state(request)
    body = await request.body()
    parsed = _parse_body(body)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    delivery_id = unquote(_raw_path(request.scope).split("/")[2])
    if content_type != _JSON or not isinstance(parsed, dict) or not delivery_id:
        message = "a JSON body with Content-Type: application/json is required"
        response = _json_response(400, {"meta": {"error": message}})
    elif "unsubscribe" in parsed and not isinstance(parsed["unsubscribe"], bool):
        response = _json_response(400, {"meta": {"error": "unsubscribe must be a boolean"}})
    else:
        state.record_metric("unsubscribe", {
            "delivery_id": delivery_id, "metric": "unsubscribed", "unsubscribe": parsed.get("unsubscribe", True),
        })
        response = _json_response(200, {})
    state.log_request({
        "method": request.method, "path": _raw_path(request.scope),
        "query": request.scope.get("query_string", b"").decode("latin-1"), "body": _log_body(body, parsed),
        "status": response.status_code, "time": time.time(), "bytes": len(body),
    })
    return response


async def _suppressions(request: Request) -> Response:
    return _json_response(200, _state(request).suppressions())


async def _ignored(request: Request) -> Response:
    return _json_response(200, _state(request).ignored())


async def _delivery_metrics(request: Request) -> Response:
    return _json_response(200, _state(request).delivery_metrics())


async def _forms(request: Request) -> Response:
    return _json_response(200, _state(request).form_submissions())


async def _segments(request: Request) -> Response:
    return _json_response(200, _state(request).segments())


def _state(request: Request) -> SandboxState:
    return request.app.state.sandbox  # type: ignore[no-any-return]


async def _people(request: Request) -> Response:
    return _json_response(200, _state(request).people())


async def _person(request: Request) -> Response:
    person = _state(request).person(request.path_params["identifier"])
    return _json_response(200, person) if person is not None else _json_response(404, {"error": "not found"})


async def _events(request: Request) -> Response:
    return _json_response(200, _state(request).events(request.query_params.get("person")))


async def _anonymous_events(request: Request) -> Response:
    return _json_response(200, _state(request).anonymous_events())


async def _objects(request: Request) -> Response:
    return _json_response(200, _state(request).objects())


async def _requests(request: Request) -> Response:
    entries = _state(request).requests()
    limit = request.query_params.get("limit")
    if limit is not None and limit.isdigit():
        entries = entries[-int(limit):] if int(limit) else []
    return _json_response(200, entries)


async def _stats(request: Request) -> Response:
    return _json_response(200, _state(request).stats())


async def _failures(request: Request) -> Response:
    return _json_response(200, _state(request).attribute_update_failures())


async def _reset(request: Request) -> Response:
    _state(request).reset()
    return _json_response(200, {})


async def _json_object(request: Request) -> dict[str, Any] | None:
    parsed = _parse_body(await request.body())
    return parsed if isinstance(parsed, dict) else None


async def _faults(request: Request) -> Response:
    state = _state(request)
    if request.method == "DELETE":
        state.clear_faults()
        return _json_response(200, {})
    if request.method == "GET":
        return _json_response(200, state.faults())
    body = await _json_object(request)
    if body is None:
        return _json_response(400, {"error": "body must be a JSON object"})
    try:
        fault = state.add_fault(
            status=body.get("status"), count=body.get("count"), duration_s=body.get("duration_s"),
            retry_after=body.get("retry_after"), delay_s=body.get("delay_s", 0.0), body=body.get("body"),
        )
    except ValueError as exc:
        return _json_response(400, {"error": str(exc)})
    return _json_response(200, fault)


async def _credentials(request: Request) -> Response:
    body = await _json_object(request)
    site_id = body.get("site_id") if body else None
    api_key = body.get("api_key") if body else None
    if not isinstance(site_id, str) or not isinstance(api_key, str):
        return _json_response(400, {"error": "site_id and api_key must be strings"})
    _state(request).set_credentials(site_id, api_key)
    return _json_response(200, {})


def create_app(
    state: SandboxState | None = None,
    site_id: str = "sandbox",
    api_key: str = "sandbox",
    region: str = "us",
    pipelines: PipelinesState | None = None,
    pipelines_key: str = "sandbox",
) -> Starlette:
    """The sandbox ASGI app; a given ``state`` keeps its own credentials (``pipelines`` its own key)."""
    routes = [
        Route("/api/{rest:path}", _api, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
        Route("/_sandbox/people", _people),
        Route("/_sandbox/people/{identifier:path}", _person),
        Route("/_sandbox/events", _events),
        Route("/_sandbox/anonymous_events", _anonymous_events),
        Route("/_sandbox/objects", _objects),
        Route("/_sandbox/requests", _requests),
        Route("/_sandbox/stats", _stats),
        Route("/_sandbox/attribute_update_failures", _failures),
        Route("/_sandbox/suppressions", _suppressions),
        Route("/_sandbox/ignored", _ignored),
        Route("/_sandbox/delivery_metrics", _delivery_metrics),
        Route("/_sandbox/forms", _forms),
        Route("/_sandbox/segments", _segments),
        Route("/unsubscribe/{delivery_id}", _unsubscribe, methods=["POST"]),
        Route("/_sandbox/reset", _reset, methods=["POST"]),
        Route("/_sandbox/faults", _faults, methods=["GET", "POST", "DELETE"]),
        Route("/_sandbox/credentials", _credentials, methods=["POST"]),
    ]
    routes.extend(pipelines_routes())
    app = Starlette(routes=routes)
    app.state.sandbox = state if state is not None else SandboxState(site_id, api_key)
    app.state.region = region
    app.state.pipelines = pipelines if pipelines is not None else PipelinesState(pipelines_key)
    return app


# --------------------------------------------------------------------------- servers


class SandboxServer:
    """The sandbox under uvicorn in a daemon thread on ``host`` (127.0.0.1); port 0 = any free.

    With ``ssl_certfile``/``ssl_keyfile`` (PEM) it serves HTTPS, for clients that only speak HTTPS (PyPI
    ``customerio`` builds ``https://{host}:{port}`` URLs).
    """

    def __init__(
        self,
        port: int = 0,
        site_id: str = "sandbox",
        api_key: str = "sandbox",
        region: str = "us",
        host: str = "127.0.0.1",
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        pipelines_key: str = "sandbox",
    ) -> None:
        self.host = host
        self.port = port
        self.ssl_certfile = ssl_certfile
        self.ssl_keyfile = ssl_keyfile
        self.state = SandboxState(site_id, api_key)
        self.pipelines = PipelinesState(pipelines_key)
        self.app = create_app(self.state, region=region, pipelines=self.pipelines)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321``."""
        scheme = "https" if self.ssl_certfile else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> SandboxServer:
        """Start serving; returns once the server accepts connections."""
        if self._thread is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, log_config=None,
            lifespan="off", ws="none", timeout_graceful_shutdown=1,
            ssl_certfile=self.ssl_certfile, ssl_keyfile=self.ssl_keyfile,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"sandbox-{self.port}", daemon=True
        )
        self._server, self._thread, self._socket = server, thread, sock
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the Customer.io sandbox failed to start")
            time.sleep(0.002)
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread (a few hundred ms at most)."""
        server, thread, sock = self._server, self._thread, self._socket
        self._server = self._thread = self._socket = None
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout=5)
        if sock is not None:
            sock.close()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    host: str = "127.0.0.1",
    port: int = 8765,
    site_id: str = "sandbox",
    api_key: str = "sandbox",
    region: str = "us",
) -> None:
    """Run the sandbox in the foreground until interrupted."""
    app = create_app(site_id=site_id, api_key=api_key, region=region)
    print(
        f"Customer.io sandbox on http://{host}:{port} (site_id={site_id!r}, api_key={api_key!r}); "
        f"inspect http://{host}:{port}/_sandbox/stats",
        flush=True,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off", ws="none")
