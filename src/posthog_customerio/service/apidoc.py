"""What ``/openapi.json`` says beyond the handlers' signatures, declared for FastAPI to generate it from.

The handlers answer with ready-made responses (FastAPI passes those through untouched), so the
answers' models below describe and never validate; the operations endpoints' security schemes
are declared as FastAPI security dependencies that never refuse anything (:class:`~.auth.OpsGuard`
checks the credentials before routing). The receivers read their raw bodies (gzip, base64 forms,
several event shapes), so their request bodies are given as ``openapi_extra``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired, Required

from fastapi import Request, Security
from fastapi.params import Depends
from fastapi.security import HTTPBasic, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler, RootModel, TypeAdapter, with_config
from pydantic.config import JsonValue
from pydantic.json_schema import JsonSchemaValue, models_json_schema
from pydantic_core import CoreSchema
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
    503: "Outbox full (MAX_QUEUE), its disk full, or unavailable; retry after Retry-After seconds",
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


class _DocumentedBasic(HTTPBasic):
    """``Authorization: Basic``, for the document only (HTTPBasic refuses bad base64 even with ``auto_error``)."""

    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        return None


#: the operations endpoints' schemes (either one), as dependencies that let every request through:
#: :class:`~.auth.OpsGuard` checks the credentials before routing, as before
OPS_SECURITY: list[Depends] = [
    Security(HTTPBearer(scheme_name="opsBearer", description="OPS_TOKEN (else WEBHOOK_TOKEN)", auto_error=False)),
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

#: the receivers' bodies are described, never validated, with these; the patterns need Python's ``re``
_DESCRIBED = ConfigDict(extra="allow", regex_engine="python-re")
_REF = "#/components/schemas/{model}"

#: ``""``: absent, as null is
_Empty = Annotated[str, Field(max_length=0)]
#: an object; ClickHouse exports and PostHog's Kafka topics send it JSON-encoded, "" (or null) meaning absent
_Properties = dict[str, Any] | _Empty | None
#: Hog globals ``groups``: group type -> the group (an object, as above)
_Groups = dict[str, _Properties] | _Empty | None
#: a character that is not white space, as Python's ``str.strip`` sees it (the receivers' test), spelled
#: out so that every regular expression dialect reads it alike
_VISIBLE = (
    "[^\\t\\n\\u000b\\f\\r\\u001c-\\u001f \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
)
#: an event name has a character that is not white space
_EventName = Annotated[str, Field(pattern=_VISIBLE)]
#: a distinct id: a number, or text with a character that is not white space (not starting with U+001F)
_DistinctId = Annotated[str, Field(pattern=f"^(?!\\u001f)[\\s\\S]*{_VISIBLE}")] | float
_ISO_TIME = (
    "^(?!0000)\\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\\d|3[01])T([01]\\d|2[0-3]):[0-5]\\d:[0-5]\\d(\\.\\d{1,9})?"
    "(Z|[+-]([01]\\d|2[0-3]):[0-5]\\d)$"
)
#: what the receivers take as a time: ISO 8601 (upper-case T and Z), Unix seconds or milliseconds
#: (magnitudes from 1e11 are milliseconds) from year 1 to 9999, as a number or digits; "" or null = now
_Timestamp = (
    Annotated[str, Field(pattern=_ISO_TIME, json_schema_extra={"format": "date-time"})]
    | Annotated[str, Field(pattern="^(-?\\d{1,10}|\\d{11,14})(\\.\\d{1,6})?$")]
    | _Empty
    | None
    | Annotated[float, Field(ge=-62_135_596_800_000, le=-100_000_000_000)]
    | Annotated[float, Field(ge=-62_135_596_800, lt=253_402_300_800_000)]
)
_ApiKey = Annotated[str, Field(description="Capture paths: WEBHOOK_TOKEN, when no Bearer header is sent")]


@with_config(ConfigDict(regex_engine="python-re"))
class _DistinctIdInProperties(TypedDict):
    distinct_id: _DistinctId


@with_config(ConfigDict(regex_engine="python-re"))
class _Named(TypedDict):
    name: _EventName


#: the distinct id is ``distinct_id``, else ``properties.distinct_id`` (as posthog-js sends it); a
#: ``distinct_id`` of ``null`` counts as absent
_SOME_DISTINCT_ID: list[JsonValue] = [
    {"required": ["distinct_id"], "properties": {"distinct_id": {"not": {"type": "null"}}}},
    {"required": ["properties"], "properties": {"properties": TypeAdapter(_DistinctIdInProperties).json_schema()}},
]
FlatEvent = TypedDict(
    "FlatEvent",
    {
        "event": Required[_EventName],
        "distinct_id": _DistinctId | None,
        "uuid": str | None,
        "timestamp": _Timestamp,
        "properties": _Properties,
        "person": _Properties,
        "$set": _Properties,
        "$set_once": _Properties,
        "api_key": _ApiKey,
    },
    total=False,
)
with_config(
    ConfigDict(
        **_DESCRIBED,
        json_schema_extra={
            "description": "Export/capture style: `event` (name), `distinct_id` (or `properties.distinct_id`, as"
            " posthog-js sends it), `properties`, `timestamp`, `uuid`, `$set`, `$set_once`, `person`",
            "anyOf": _SOME_DISTINCT_ID,
        },
    )
)(FlatEvent)


#: the name is ``event``, else ``name`` (ignored when ``event`` is there)
@with_config(
    ConfigDict(**_DESCRIBED, json_schema_extra={"anyOf": [{"required": ["event"]}, TypeAdapter(_Named).json_schema()]})
)
class HogEventBody(TypedDict, total=False):
    event: _EventName
    distinct_id: Required[_DistinctId]
    uuid: str | None
    timestamp: _Timestamp
    properties: _Properties


@with_config(_DESCRIBED)
class HogEvent(TypedDict, total=False):
    """A webhook / Hog destination body: the `event` object, `person`, `groups`"""

    event: Required[HogEventBody]
    person: _Properties
    groups: _Groups
    api_key: _ApiKey


class Event(RootModel[FlatEvent | HogEvent]):
    """One PostHog event"""

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        # the shapes inline, as oneOf: an event's `event` is a name (flat) or an object (Hog), never both
        union = handler.resolve_ref_schema(handler(schema))
        shapes = [handler.resolve_ref_schema(shape) for shape in union["anyOf"]]
        return {"description": union["description"], "oneOf": shapes}


#: with an ``event`` it is one event (that has a ``batch`` property)
@with_config(ConfigDict(**_DESCRIBED, json_schema_extra={"not": {"required": ["event"]}}))
class Batch(TypedDict):
    batch: list[Event]
    api_key: NotRequired[str]


class Payload(RootModel[Event | list[Event] | Batch]):
    """One event, an array of events, or a capture batch `{"batch": [...]}`"""


class CaptureV1(BaseModel):
    """Capture v1: `{"batch": [...]}` (`created_at` and `historical_migration` are ignored)"""

    model_config = _DESCRIBED
    batch: list[FlatEvent]  # flat events only: the event name is a string


_BODY_REFS, _BODY_SCHEMAS = models_json_schema([(Payload, "validation"), (CaptureV1, "validation")], ref_template=_REF)
_INGEST_BODY_DESCRIPTION = (
    "JSON (the schema below). The encodings PostHog SDKs use carry the same JSON and are"
    " accepted whatever the Content-Type: gzip (`Content-Encoding: gzip`, `?compression=gzip-js`, or"
    " recognised by its magic bytes), posthog-js's `data=<base64 JSON>` form (`application/x-www-form-"
    "urlencoded`), base64 (`?compression=base64`) and LZString (`?compression=lz64`). Any other bytes are"
    " refused with 400: no content type is declared whose schema admits them."
)


def _ingest_body(model: type[BaseModel]) -> dict[str, Any]:
    schema = _BODY_REFS[(model, "validation")]
    content = {"application/json": {"schema": schema}}
    return {"requestBody": {"required": True, "description": _INGEST_BODY_DESCRIPTION, "content": content}}


INGEST_BODY = _ingest_body(Payload)
#: capture v1 (``/i/v1/analytics/events``): the same encodings, a ``{"batch": [...]}`` body only
INGEST_V1_BODY = _ingest_body(CaptureV1)

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
    """The receivers' request body schemas (``openapi_extra`` refers to them), in a generated spec."""
    spec.setdefault("components", {}).setdefault("schemas", {}).update(_BODY_SCHEMAS["$defs"])
    return spec
