"""What ``/openapi.json`` documents beyond what FastAPI infers from the handlers.

The receivers read their raw bodies (gzip, base64 forms, several event shapes), so
their request bodies, every error answer and the operations endpoints' security are
described here and attached to the routes in :mod:`posthog_customerio.service`.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "DEAD_LETTER_PARAMETERS",
    "ERROR_SCHEMA",
    "INGEST_BODY",
    "INGEST_RESPONSES",
    "INGEST_V1_BODY",
    "MAX_DEAD_LETTERS",
    "OPS_SECURITY",
    "OPTIONS_RESPONSES",
    "RETRY_BODY",
    "RETRY_RESPONSES",
    "WEBHOOK_RESPONSES",
    "add_ops_security",
    "error_responses",
    "json_response",
]

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "description": "What was wrong, in one line"}},
}
_ERROR_REF = {"$ref": "#/components/schemas/Error"}

_DESCRIPTIONS = {
    400: "Malformed body or event (nothing stored)",
    401: "Missing or wrong credentials",
    413: "Body over MAX_BODY_BYTES (before or after decompression)",
    409: "A signed webhook with this webhook-id is being stored; retry after Retry-After seconds",
    415: "Unsupported Content-Encoding or content type",
    503: "Outbox full (MAX_QUEUE) or unavailable; retry after Retry-After seconds",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``{"error": ...}`` answers for these status codes."""
    return {
        code: {"description": _DESCRIPTIONS[code], "content": {"application/json": {"schema": _ERROR_REF}}}
        for code in codes
    }


def json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON response object."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


#: an object; ClickHouse exports and PostHog's Kafka topics send it JSON-encoded, "" (or null) meaning absent
_ABSENT = [{"type": "string", "maxLength": 0}, {"type": "null"}]
_PROPERTIES = {"oneOf": [{"type": "object", "additionalProperties": True}, *_ABSENT]}
#: Hog globals ``groups``: group type -> the group (an object, as above)
_GROUPS = {"oneOf": [{"type": "object", "additionalProperties": _PROPERTIES}, *_ABSENT]}
#: a character that is not white space, as Python's ``str.strip`` sees it (the receivers' test), spelled
#: out so that every regular expression dialect reads it alike
_VISIBLE = (
    "[^\\t\\n\\u000b\\f\\r\\u001c-\\u001f \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
)
#: an event name has a character that is not white space
_EVENT_NAME = {"type": "string", "pattern": _VISIBLE}
#: a distinct id: a number, or text with a character that is not white space (not starting with U+001F)
_DISTINCT_ID = {"oneOf": [{"type": "string", "pattern": f"^(?!\\u001f)[\\s\\S]*{_VISIBLE}"}, {"type": "number"}]}
_ISO_TIME = (
    "^(?!0000)\\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\\d|3[01])T([01]\\d|2[0-3]):[0-5]\\d:[0-5]\\d(\\.\\d{1,9})?"
    "(Z|[+-]([01]\\d|2[0-3]):[0-5]\\d)$"
)
#: what the receivers take as a time: ISO 8601 (upper-case T and Z), Unix seconds or milliseconds
#: (magnitudes from 1e11 are milliseconds) from year 1 to 9999, as a number or digits; "" or null = now
_TIMESTAMP = {
    "anyOf": [
        {"type": "string", "format": "date-time", "pattern": _ISO_TIME},
        {"type": "string", "pattern": "^(-?\\d{1,10}|\\d{11,14})(\\.\\d{1,6})?$"},
        *_ABSENT,
        {"type": "number", "minimum": -62_135_596_800_000, "maximum": -100_000_000_000},
        {"type": "number", "minimum": -62_135_596_800, "exclusiveMaximum": 253_402_300_800_000},
    ]
}
_API_KEY = {"type": "string", "description": "Capture paths: WEBHOOK_TOKEN, when no Bearer header is sent"}
_FLAT_EVENT = {
    "type": "object",
    "description": "Export/capture style: `event` (name), `distinct_id` (or `properties.distinct_id`, as"
    " posthog-js sends it), `properties`, `timestamp`, `uuid`, `$set`, `$set_once`, `person`",
    "required": ["event"],
    "properties": {
        "event": _EVENT_NAME,
        "distinct_id": _DISTINCT_ID,
        "uuid": {"type": ["string", "null"]},
        "timestamp": _TIMESTAMP,
        "properties": _PROPERTIES,
        "person": _PROPERTIES,
        "$set": _PROPERTIES,
        "$set_once": _PROPERTIES,
        "api_key": _API_KEY,
    },
    "anyOf": [
        {"required": ["distinct_id"]},
        {
            "required": ["properties"],
            "properties": {
                "properties": {
                    "type": "object",
                    "required": ["distinct_id"],
                    "properties": {"distinct_id": _DISTINCT_ID},
                }
            },
        },
    ],
    "additionalProperties": True,
}
_HOG_EVENT = {
    "type": "object",
    "description": "A webhook / Hog destination body: the `event` object, `person`, `groups`",
    "required": ["event"],
    "properties": {
        "event": {
            "type": "object",
            "required": ["distinct_id"],
            "properties": {
                "event": _EVENT_NAME,
                "distinct_id": _DISTINCT_ID,
                "uuid": {"type": ["string", "null"]},
                "timestamp": _TIMESTAMP,
                "properties": _PROPERTIES,
            },
            # the name is `event`, else `name` (ignored when `event` is there)
            "anyOf": [{"required": ["event"]}, {"required": ["name"], "properties": {"name": _EVENT_NAME}}],
            "additionalProperties": True,
        },
        "person": _PROPERTIES,
        "groups": _GROUPS,
        "api_key": _API_KEY,
    },
    "additionalProperties": True,
}
_EVENT = {"description": "One PostHog event", "oneOf": [_FLAT_EVENT, _HOG_EVENT]}
_PAYLOAD = {
    "description": 'One event, an array of events, or a capture batch `{"batch": [...]}`',
    "oneOf": [
        {"$ref": "#/components/schemas/Event"},
        {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
        {
            "type": "object",
            "required": ["batch"],
            "properties": {
                "batch": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
                "api_key": {"type": "string"},
            },
            "not": {"required": ["event"]},  # with an `event` it is one event (that has a `batch` property)
            "additionalProperties": True,
        },
    ],
}
_CAPTURE_V1 = {
    "description": 'Capture v1: `{"batch": [...]}` (`created_at` and `historical_migration` are ignored)',
    "type": "object",
    "required": ["batch"],
    "properties": {
        "batch": {
            "type": "array",
            "items": {  # flat events only: the event name is a string
                "allOf": [{"$ref": "#/components/schemas/Event"}],
                "properties": {"event": _EVENT_NAME},
            },
        },
    },
    "additionalProperties": True,
}
INGEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "JSON (the schema below). The encodings PostHog SDKs use carry the same JSON and are"
        " accepted whatever the Content-Type: gzip (`Content-Encoding: gzip`, `?compression=gzip-js`, or"
        " recognised by its magic bytes), posthog-js's `data=<base64 JSON>` form (`application/x-www-form-"
        "urlencoded`), base64 (`?compression=base64`) and LZString (`?compression=lz64`). Any other bytes are"
        " refused with 400: no content type is declared whose schema admits them.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Payload"}}},
    },
}
#: capture v1 (``/i/v1/analytics/events``): the same encodings, a ``{"batch": [...]}`` body only
INGEST_V1_BODY: dict[str, Any] = {
    "requestBody": {
        **INGEST_BODY["requestBody"],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CaptureV1"}}},
    },
}
INGEST_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: json_response(
        "Every event committed to the outbox",
        {
            "type": "object",
            "required": ["status", "accepted", "operations"],
            "properties": {
                "status": {"type": "integer", "enum": [1]},
                "accepted": {"type": "integer", "minimum": 0, "description": "Events stored"},
                "operations": {"type": "integer", "minimum": 0, "description": "Customer.io operations enqueued"},
                "replayed": {
                    "type": "boolean",
                    "description": "/webhook: this signed webhook-id was stored already; nothing stored again",
                },
            },
        },
    ),
    **error_responses(400, 401, 413, 415, 503),
}
#: ``/webhook`` also answers 409 while another request with the same signed ``webhook-id`` is being stored
WEBHOOK_RESPONSES: dict[int | str, dict[str, Any]] = {**INGEST_RESPONSES, **error_responses(409)}

RETRY_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": '`{}` re-queues every dead letter; `{"ids": [...]}` only these (ids naming none are ignored)',
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"ids": {"type": "array", "items": {"type": "integer"}}},
                }
            }
        },
    },
}
#: most dead letters ``GET /api/dead-letters`` lists (``?limit=``)
MAX_DEAD_LETTERS = 10_000
DEAD_LETTER_PARAMETERS: dict[str, Any] = {
    "parameters": [
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "description": "How many of the oldest dead letters (digits only)",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_DEAD_LETTERS, "default": 100},
        }
    ],
}
RETRY_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: json_response(
        "Dead letters re-queued",
        {
            "type": "object",
            "required": ["requeued"],
            "properties": {"requeued": {"type": "integer", "minimum": 0}},
        },
    ),
    **error_responses(400, 413, 415),
}

_ALLOW_HEADER = {"Allow": {"description": "GET, POST, OPTIONS", "schema": {"type": "string"}}}
#: ``OPTIONS /flags`` and ``/decide``: the allowed methods, or the CORS answer to a browser's preflight
OPTIONS_RESPONSES: dict[int | str, dict[str, Any]] = {
    204: {"description": "No content; the allowed methods are in Allow", "headers": _ALLOW_HEADER},
    200: {
        "description": "A CORS preflight (Origin and Access-Control-Request-Method sent) from an allowed origin",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
    400: {
        "description": "A CORS preflight from an origin CORS_ORIGINS does not allow",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
}

OPS_SECURITY: list[dict[str, list[str]]] = [{"opsBearer": []}, {"opsBasic": []}]
_SECURITY_SCHEMES = {
    "opsBearer": {"type": "http", "scheme": "bearer", "description": "OPS_TOKEN (else WEBHOOK_TOKEN)"},
    "opsBasic": {"type": "http", "scheme": "basic", "description": "Any user name, OPS_TOKEN as the password"},
}

_STATUS_SCHEMA = {"type": "object", "additionalProperties": True}
HEALTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: json_response(
        "The process is alive",
        {
            "type": "object",
            "required": ["status", "delivery"],
            "properties": {
                "status": {"type": "string"},
                "delivery": {"type": "string"},
                "auth_error": {"type": ["string", "null"]},
                "customerio": {"type": "object", "additionalProperties": True},
            },
        },
    ),
}
_READY = {
    "type": "object",
    "required": ["ready", "problems"],
    "properties": {"ready": {"type": "boolean"}, "problems": {"type": "array", "items": {"type": "string"}}},
}
READY_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: json_response("Ready to accept events", _READY),
    503: json_response("Not ready: the outbox is not writable or is full", _READY),
}
METRICS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Prometheus text exposition format",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
}
STATUS_RESPONSES: dict[int | str, dict[str, Any]] = {200: json_response("The status report", _STATUS_SCHEMA)}
DEAD_LETTER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: json_response("The oldest dead letters", {"type": "array", "items": _STATUS_SCHEMA}),
    **error_responses(400),
}
PAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The status page", "content": {"text/html": {"schema": {"type": "string"}}}},
}


def add_ops_security(spec: dict[str, Any], is_ops_path: Any) -> dict[str, Any]:
    """Schemas, security schemes, and a 401 answer on every operations endpoint, in a generated spec."""
    components = spec.setdefault("components", {})
    components.setdefault("schemas", {}).update(
        {"Error": ERROR_SCHEMA, "Event": _EVENT, "Payload": _PAYLOAD, "CaptureV1": _CAPTURE_V1}
    )
    components.setdefault("securitySchemes", {}).update(_SECURITY_SCHEMES)
    for path, operations in spec.get("paths", {}).items():
        if not is_ops_path(path):
            continue
        for operation in operations.values():
            operation["security"] = OPS_SECURITY
            operation.setdefault("responses", {}).update(
                {
                    "401": {
                        "description": "Missing or wrong operations token",
                        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
                        "content": {"application/json": {"schema": _ERROR_REF}},
                    },
                }
            )
    return spec
