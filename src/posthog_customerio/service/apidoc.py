"""What ``/openapi.json`` says beyond the handlers' signatures, declared for FastAPI to generate it from.

The handlers answer with ready-made responses (FastAPI passes those through untouched), so the
answers' models below describe and never validate; the operations endpoints' security schemes
are declared as FastAPI security dependencies that never refuse anything (:class:`~.auth.OpsGuard`
checks the credentials before routing). The receivers read their raw bodies (gzip, base64 forms,
several event shapes), so their request bodies are given as ``openapi_extra``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from fastapi import Request, Security
from fastapi.params import Depends
from fastapi.security import HTTPBasic, HTTPBearer
from pydantic import BaseModel, Field, TypeAdapter
from typing_extensions import TypedDict

__all__ = [
    "DEAD_LETTER_PARAMETERS",
    "INGEST_BODY",
    "INGEST_V1_BODY",
    "MAX_DEAD_LETTERS",
    "OPS_HTML_RESPONSES",
    "OPS_RESPONSES",
    "OPS_SECURITY",
    "OPTIONS_RESPONSES",
    "RETRY_BODY",
    "Accepted",
    "Error",
    "Health",
    "Ready",
    "Requeued",
    "add_request_schemas",
    "error_responses",
    "text_response",
]


#: Every error answer: ``{"error": ...}``.
class Error(BaseModel):
    error: str = Field(description="What was wrong, in one line")


_DESCRIPTIONS = {
    400: "Malformed body or event (nothing stored)",
    401: "Missing or wrong credentials",
    404: "Nothing by that id",
    413: "Body over MAX_BODY_BYTES (before or after decompression)",
    409: "A signed webhook with this webhook-id is being stored; retry after Retry-After seconds",
    415: "Unsupported Content-Encoding or content type",
    503: "Outbox full (MAX_QUEUE) or unavailable; retry after Retry-After seconds",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``{"error": ...}`` answers for these status codes."""
    return {code: {"model": Error, "description": _DESCRIPTIONS[code]} for code in codes}


def text_response(description: str, media_type: str = "text/plain") -> dict[str, Any]:
    """A response that is text, not JSON."""
    return {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}


#: A receiver's answer: every event committed to the outbox.
class Accepted(TypedDict):
    status: Literal[1]
    accepted: Annotated[int, Field(ge=0, description="Events stored")]
    operations: Annotated[int, Field(ge=0, description="Customer.io operations enqueued")]
    replayed: NotRequired[
        Annotated[bool, Field(description="/webhook: this signed webhook-id was stored already; nothing stored again")]
    ]


#: How many dead letters were re-queued.
class Requeued(TypedDict):
    requeued: Annotated[int, Field(ge=0)]


#: ``{}`` or ``{"ids": [...]}``.
class RetryBody(TypedDict, total=False):
    ids: list[int]


#: Liveness, delivery state and Customer.io's state.
class Health(TypedDict):
    status: str
    delivery: str
    auth_error: NotRequired[str | None]
    customerio: NotRequired[dict[str, Any]]


#: Whether events can be accepted, and what stops it.
class Ready(TypedDict):
    ready: bool
    problems: list[str]


class _Documented(HTTPBearer):
    """``Authorization: Bearer``, declared for the document: :class:`~.auth.OpsGuard` checks it."""

    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        return None


class _DocumentedBasic(HTTPBasic):
    """``Authorization: Basic``, declared for the document: :class:`~.auth.OpsGuard` checks it."""

    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        return None


#: the operations endpoints' schemes (either one): dependencies that let every request through
OPS_SECURITY: list[Depends] = [
    Security(_Documented(scheme_name="opsBearer", description="OPS_TOKEN (else WEBHOOK_TOKEN)", auto_error=False)),
    Security(
        _DocumentedBasic(
            scheme_name="opsBasic", description="Any user name, OPS_TOKEN as the password", auto_error=False
        )
    ),
]
_UNAUTHORIZED = {
    "description": "Missing or wrong operations token",
    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
}
#: what :class:`~.auth.OpsGuard` answers on every operations endpoint without the right token
OPS_RESPONSES: dict[int | str, dict[str, Any]] = {401: {**_UNAUTHORIZED, "model": Error}}
#: the same for an endpoint that answers HTML (``model`` would document the 401 as HTML)
OPS_HTML_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {**_UNAUTHORIZED, "content": {"application/json": {"schema": Error.model_json_schema()}}}
}

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

#: most dead letters ``GET /api/dead-letters`` lists (``?limit=``)
MAX_DEAD_LETTERS = 10_000
DEAD_LETTER_PARAMETERS: dict[str, Any] = {
    "parameters": [
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "description": "How many of the oldest dead letters (digits only)",
            "schema": TypeAdapter(Annotated[int, Field(default=100, ge=1, le=MAX_DEAD_LETTERS)]).json_schema(),
        }
    ],
}
RETRY_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": '`{}` re-queues every dead letter; `{"ids": [...]}` only these (ids naming none are ignored)',
        "content": {"application/json": {"schema": TypeAdapter(RetryBody).json_schema()}},
    },
}

#: ``OPTIONS /flags`` and ``/decide``: the allowed methods, or the CORS answer to a browser's preflight
OPTIONS_RESPONSES: dict[int | str, dict[str, Any]] = {
    204: {
        "description": "No content; the allowed methods are in Allow",
        "headers": {"Allow": {"description": "GET, POST, OPTIONS", "schema": {"type": "string"}}},
    },
    200: text_response("A CORS preflight (Origin and Access-Control-Request-Method sent) from an allowed origin"),
    400: text_response("A CORS preflight from an origin CORS_ORIGINS does not allow"),
}


def add_request_schemas(spec: dict[str, Any]) -> dict[str, Any]:
    """The receivers' request body schemas, in a generated spec (``openapi_extra`` refers to them)."""
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas.update({"Event": _EVENT, "Payload": _PAYLOAD, "CaptureV1": _CAPTURE_V1})
    return spec
