"""Customer.io Pipelines API (Data Pipelines / "CDP" API) client and Segment-spec call encoders.

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

Every response is reduced to the same :class:`~posthog_customerio.output.base.SendResult` as the Track
client, so delivery settles both the same way. In strict mode Customer.io does not document per-call errors
for a batch: a 400 rejects the whole request (the caller splits the batch to isolate the bad call).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from .. import __version__
from ..operations import Claimed
from .base import RETRY_AFTER_MAX_S, AuthError, Outcome, SendResult, Unit, classify
from .deadline import DeadlineClient

__all__ = [
    "MAX_CALL_BYTES",
    "MAX_REQUEST_BYTES",
    "PIPELINES_URLS",
    "SEMANTIC_EVENTS",
    "Packing",
    "PipelinesClient",
    "PipelinesOutput",
    "PipelinesUnit",
    "UnsupportedOperation",
    "alias",
    "delete_person",
    "device_created_or_updated",
    "device_deleted",
    "encode_call",
    "group",
    "identify",
    "iso_timestamp",
    "message_id",
    "object_deleted",
    "operation_calls",
    "pack",
    "page",
    "relationship_deleted",
    "resolve_pipelines_url",
    "screen",
    "suppress_person",
    "track",
    "unsuppress_person",
]

PIPELINES_URLS = {"us": "https://cdp.customer.io", "eu": "https://cdp-eu.customer.io"}

#: Documented limits are "32KB" per call and "500KB" per batch request. Customer.io's clients read them as
#: 32 KiB and stop at 480 KiB (node) / 475,000 bytes (python); we stay below every reading of both.
DOCUMENTED_CALL_BYTES = 32 * 1024
DOCUMENTED_REQUEST_BYTES = 500_000
MAX_CALL_BYTES = 32_000
MAX_REQUEST_BYTES = 475_000

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

_BATCH_OPEN = b'{"batch":['
_BATCH_CLOSE = b"]"


# --------------------------------------------------------------------------- encoders


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


def _semantic(
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
    return _semantic("Delete Person", user_id, **common)


def suppress_person(user_id: str, **common: Any) -> dict[str, Any]:
    """``User Suppressed``: deletes and suppresses the person (semantic-cio.json)."""
    return _semantic("User Suppressed", user_id, **common)


def unsuppress_person(user_id: str, **common: Any) -> dict[str, Any]:
    """``User Unsuppressed``: lets the identifier be used again (semantic-cio.json)."""
    return _semantic("User Unsuppressed", user_id, **common)


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
    return _semantic("Device Created or Updated", user_id, attributes, context={"device": device}, **common)


def device_deleted(user_id: str, token: str, **common: Any) -> dict[str, Any]:
    """``Device Deleted``: ``context.device.token`` names the device to remove (cio-journeys, Delete Device)."""
    if not token:
        raise ValueError("a device needs a token")
    return _semantic("Device Deleted", user_id, context={"device": {"token": token}}, **common)


def relationship_deleted(user_id: str, group_id: str, object_type_id: str | int = "1", **common: Any) -> dict[str, Any]:
    """``Relationship Deleted``: ``properties.objectId`` + ``properties.objectTypeId`` of the object."""
    properties = {"objectId": str(group_id), "objectTypeId": str(object_type_id)}
    return _semantic("Relationship Deleted", user_id, properties, **common)


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
    call = _semantic(
        "Object Deleted", user_id, {"objectId": str(group_id), "objectTypeId": str(object_type_id)}, **common
    )
    call["groupId"] = str(group_id)
    if anonymous_id is not None:
        call["anonymousId"] = str(anonymous_id)
    return call


def encode_call(call: dict[str, Any]) -> str:
    """Compact JSON text of a call (the bytes :func:`pack` measures and the client sends)."""
    return json.dumps(call, separators=(",", ":"), ensure_ascii=False, default=str)


# --------------------------------------------------------------------------- packing


@dataclass(slots=True)
class Packing:
    """The result of :func:`pack`: request groups (indexes, in order) and calls too large to send."""

    batches: list[list[int]] = field(default_factory=list)
    too_large: list[int] = field(default_factory=list)


def _size(text: str | bytes) -> int:
    return len(text) if isinstance(text, bytes) else len(text.encode("utf-8"))


def pack(
    calls: Sequence[str | bytes],
    *,
    max_request_bytes: int = MAX_REQUEST_BYTES,
    max_call_bytes: int = MAX_CALL_BYTES,
    max_calls: int | None = None,
    overhead: int = 0,
) -> Packing:
    """Group encoded calls, in order, into ``/v1/batch`` requests under the byte limits.

    A request's size counts the ``{"batch":[``...``]}`` envelope, the commas and ``overhead`` (extra batch
    fields such as ``context``). A call over ``max_call_bytes`` goes to ``too_large`` (not sent: the caller
    dead-letters it) and does not break the order of the others.
    """
    result = Packing()
    envelope = len(_BATCH_OPEN) + len(_BATCH_CLOSE) + 1 + overhead
    current: list[int] = []
    used = envelope
    for index, text in enumerate(calls):
        size = _size(text)
        if size > max_call_bytes or envelope + size > max_request_bytes:
            result.too_large.append(index)
            continue
        extra = size + (1 if current else 0)
        if current and (used + extra > max_request_bytes or (max_calls is not None and len(current) >= max_calls)):
            result.batches.append(current)
            current, used, extra = [], envelope, size
        current.append(index)
        used += extra
    if current:
        result.batches.append(current)
    return result


# --------------------------------------------------------------------------- client


def resolve_pipelines_url(region: str, override: str | None = None) -> str:
    """The base URL: the override, else the region's host (``auto`` and unknown regions mean US)."""
    if override:
        return override.rstrip("/")
    return PIPELINES_URLS.get(region, PIPELINES_URLS["us"])


def _pipelines_result(result: SendResult) -> SendResult:
    """Pipelines wording for the Track classifier's messages; no per-item errors exist in this API."""
    result.item_errors = {}
    if result.outcome is Outcome.PARTIAL:
        result.outcome = Outcome.OK
    if result.outcome is Outcome.AUTH:
        if result.status in (401, 403):
            result.error = "Pipelines API key invalid"
        elif result.status is not None:
            result.error = "Customer.io Pipelines API redirected: check CUSTOMERIO_PIPELINES_URL / the region"
    return result


class PipelinesClient:
    """A Pipelines API client bound to one source key and base URL; every request is in strict mode."""

    def __init__(
        self,
        api_key: str,
        base_url: str = PIPELINES_URLS["us"],
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        context: dict[str, Any] | None = None,
        retry_after_max_s: float = RETRY_AFTER_MAX_S,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry_after_max_s = retry_after_max_s
        library = {"library": {"name": "posthog-customerio", "version": __version__}}
        self._context_text = encode_call(context if context is not None else library)
        self._http = DeadlineClient(
            timeout,
            base_url=self.base_url,
            auth=httpx.BasicAuth(api_key, ""),
            headers={
                "User-Agent": f"posthog-customerio/{__version__}",
                "Content-Type": "application/json",
                "X-Strict-Mode": "1",
            },
            follow_redirects=False,
            transport=transport,
        )

    @property
    def batch_overhead(self) -> int:
        """Bytes a request adds besides the calls (the batch-level ``context``), for :func:`pack`."""
        return len(b',"context":') + _size(self._context_text)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> PipelinesClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _post(self, path: str, body: bytes) -> SendResult:
        try:
            response = self._http.post(path, content=body)
        except httpx.HTTPError as exc:
            return SendResult(Outcome.TRANSIENT, error=f"{type(exc).__name__}: {exc}")
        return _pipelines_result(classify(response, self.retry_after_max_s))

    def batch_body(self, call_texts: Iterable[str | bytes]) -> bytes:
        """The ``/v1/batch`` request body for already-encoded calls (in order)."""
        parts = [text if isinstance(text, bytes) else text.encode("utf-8") for text in call_texts]
        context = self._context_text.encode("utf-8")
        return _BATCH_OPEN + b",".join(parts) + _BATCH_CLOSE + b',"context":' + context + b"}"

    def send_batch(self, call_texts: Sequence[str | bytes]) -> SendResult:
        """``POST /v1/batch`` with already-encoded calls. Callers pack first (see :func:`pack`)."""
        return self._post("/v1/batch", self.batch_body(call_texts))

    def send_call(self, call: dict[str, Any]) -> SendResult:
        """Send one call through its own endpoint (``/v1/identify``, ``/v1/track`` ...)."""
        kind = call.get("type")
        if kind not in ("identify", "track", "page", "screen", "group", "alias"):
            raise ValueError(f"unknown call type {kind!r}")
        return self._post(f"/v1/{kind}", encode_call(call).encode("utf-8"))

    def check(self) -> None:
        """Verify the key: ``POST /v1/batch`` with an empty batch, strict mode.

        Cost: one request that carries no call, so nothing is written to the workspace and no profile or event
        is created (the cheapest authenticated call the Pipelines API has; it has no read endpoint). A 2xx or a
        400 (the key was accepted, only the empty body refused) passes; 401/403 raise :class:`AuthError`;
        anything else raises ``httpx.HTTPStatusError`` (network problems ``httpx.HTTPError``).
        """
        response = self._http.post("/v1/batch", content=b'{"batch":[]}')
        if response.status_code in (401, 403):
            raise AuthError("Customer.io rejected the Pipelines API key")
        if 300 <= response.status_code < 400:
            raise AuthError(f"Customer.io Pipelines API redirected to {response.headers.get('location', '?')}")
        if response.status_code != 400:
            response.raise_for_status()


# --------------------------------------------------------------------------- the output (CUSTOMERIO_API=pipelines)

#: neutral person actions that are Customer.io semantic events (track calls with reserved names)
_SEMANTIC_ACTIONS = {"delete": "Delete Person", "suppress": "User Suppressed", "unsuppress": "User Unsuppressed"}
#: what one claim may carry (bytes of stored neutral operations): Segment calls come out about the same size
#: (measured: 802 vs 810 body bytes per event), so a claim fills one request; :func:`pack` splits if not
CLAIM_BYTES = 460_000


class UnsupportedOperation(ValueError):
    """An operation the Pipelines API cannot express (dead-lettered with this reason, never sent)."""


def message_id(payload: dict[str, Any], seq: int, kind: str, text: str) -> str:
    """The ``messageId`` of an operation's calls: stable across re-sends of the same operation.

    An event's is its dedupe ``id`` (the same PostHog event replayed, from any data dir, dedupes in
    Customer.io). Any other operation (identify, merge, delete, device, group ...) has no such id: its
    messageId is a digest of its outbox ``seq`` and its stored text, so a re-send after a crash or a
    retry carries the same messageId, while two equal operations enqueued at different times (a second
    deletion after the person came back) stay two calls.
    """
    if payload.get("id") not in (None, ""):
        return str(payload["id"])
    digest = hashlib.sha256(f"{kind}\x00{seq}\x00{text}".encode()).hexdigest()[:32]
    return f"op-{digest}"


def _user_id(identifiers: dict[str, Any]) -> str:
    """The ``userId`` the Track modes would address: the id, else the email (``IDENTIFY_BY_EMAIL``).

    "Person ID ... ``userId`` in request body; can be id or email"
    (https://docs.customer.io/integrations/api/track-vs-cdp-api/); "If you pass an email address as the ``userId``,
    Customer.io sets this trait for you" (``traits.email``, https://docs.customer.io/integrations/api/cdp/).
    """
    for key in ("id", "email"):
        value = identifiers.get(key)
        if isinstance(value, str) and value:
            return value
    raise UnsupportedOperation(f"no Pipelines userId for identifiers {sorted(identifiers)}")


def _traits(attributes: dict[str, Any]) -> dict[str, Any]:
    """Identify attributes as Segment traits: a clear (``""``, "remove" on the Track APIs) becomes ``null``.

    The Track APIs remove an attribute sent as ``null`` or ``""``, and the mapping sends a clear (PostHog ``$unset``
    or a ``null`` value) as ``""``. A Segment-spec trait has no such convention: ``null`` is the value that says "no
    value", so a clear goes out as ``null`` (the meaning is the same: on Track ``""`` already meant "remove").
    """
    return {key: None if value == "" else value for key, value in attributes.items()}


def _with_ids(calls: list[dict[str, Any]], message: str) -> list[dict[str, Any]]:
    """Every call gets ``message`` as messageId (suffixed ``:n`` when one operation makes several calls)."""
    for number, call in enumerate(calls):
        call["messageId"] = message if number == 0 else f"{message}:{number}"
    return calls


def _person_calls(payload: dict[str, Any], when: Any) -> list[dict[str, Any]]:
    action = payload.get("action")
    if action == "merge":
        return [alias(_user_id(payload["primary"]), _user_id(payload["secondary"]), timestamp=when)]
    identifiers = payload.get("identifiers") or {}
    user = _user_id(identifiers)
    attributes = dict(payload.get("attributes") or {})
    if action == "identify":
        anonymous = attributes.pop("anonymous_id", None)
        if "email" in identifiers and "id" not in identifiers:
            attributes.setdefault("email", identifiers["email"])
            person_id = attributes.pop("id", None)
            if person_id not in (None, ""):  # the person's id, given to a profile addressed by email
                user = str(person_id)
        return [identify(user, _traits(attributes), anonymous_id=anonymous, timestamp=when)]
    if action in ("event", "page", "screen"):
        return [_view_call(action, payload, attributes, user, None, when)]
    if action in _SEMANTIC_ACTIONS:
        return [_semantic(_SEMANTIC_ACTIONS[action], user, timestamp=when)]
    if action == "add_device":
        device = dict(payload.get("device") or {})
        token, platform = device.pop("token", None), device.pop("platform", None)
        last_used = device.pop("last_used", None)
        return [
            device_created_or_updated(
                user, str(token or ""), platform, device or None, timestamp=last_used if last_used is not None else when
            )
        ]
    if action == "delete_device":
        return [device_deleted(user, str((payload.get("device") or {}).get("token") or ""), timestamp=when)]
    if action in ("add_relationships", "delete_relationships"):
        calls = []
        for relation in payload.get("cio_relationships") or []:
            target = relation.get("identifiers") or {}
            object_id, type_id = str(target.get("object_id", "")), target.get("object_type_id", "1")
            if action == "add_relationships":
                attrs = relation.get("relationship_attributes")
                calls.append(
                    group(
                        object_id, object_type_id=type_id, user_id=user, relationship_attributes=attrs, timestamp=when
                    )
                )
            else:
                calls.append(relationship_deleted(user, object_id, type_id, timestamp=when))
        if not calls:
            raise UnsupportedOperation(f"{action} without relationships")
        return calls
    raise UnsupportedOperation(f"no Pipelines call for person action {action!r}")


def _view_call(
    action: str,
    payload: dict[str, Any],
    properties: dict[str, Any],
    user: str | None,
    anonymous: str | None,
    when: Any,
) -> dict[str, Any]:
    name = str(payload.get("name") or "")
    if action == "page":
        return page(name, properties, user_id=user, anonymous_id=anonymous, timestamp=when)
    if action == "screen":
        return screen(name, properties, user_id=user, anonymous_id=anonymous, timestamp=when)
    return track(name, properties, user_id=user, anonymous_id=anonymous, timestamp=when)


def operation_calls(payload: dict[str, Any], kind: str, message: str) -> list[dict[str, Any]]:
    """The Segment-spec calls for one neutral operation (raises :class:`UnsupportedOperation`).

    An identify addressed by email (``IDENTIFY_BY_EMAIL``) sends the email as ``userId`` and ``traits.email``; when
    its attributes carry the person's ``id`` (the mapping gives a profile known by email its id before changing
    the email), the id is the ``userId`` and the email stays in ``traits.email``: the Pipelines API has no id
    trait, its ``userId`` is the person id, and Customer.io gives an unknown id to the person holding the body's
    email. The email change that follows (addressed by id, ``email`` in the attributes) is an identify with that
    ``userId`` and the new ``traits.email``, the documented way to change a person's email ("Update their
    information—like when they change their email address",
    https://docs.customer.io/integrations/data-in/source-spec/identify-spec/). An attribute clear goes out as the
    trait ``null`` (:func:`_traits`).

    person: identify (with ``anonymousId`` when it attaches a visitor), track/page/screen, alias (merge:
    ``previousId`` = the secondary), semantic events (delete, suppress, unsuppress, devices), group per
    relationship; anonymous: track/page/screen with ``anonymousId``; object: group without a person.
    """
    when = payload.get("timestamp")
    try:
        if kind == "person":
            calls = _person_calls(payload, when)
        elif kind == "anonymous":
            action = str(payload.get("action"))
            if action not in ("event", "page", "screen"):
                raise UnsupportedOperation(f"no Pipelines call for anonymous action {action!r}")
            properties = dict(payload.get("attributes") or {})
            calls = [_view_call(action, payload, properties, None, str(payload["anonymous_id"]), when)]
        elif kind == "object":
            target = payload.get("identifiers") or {}
            object_id, type_id = str(target.get("object_id", "")), target.get("object_type_id", "1")
            if payload.get("action") == "delete":
                calls = [object_deleted(object_id, type_id, anonymous_id=message, timestamp=when)]
            elif payload.get("action") == "identify":
                calls = [group(object_id, payload.get("attributes"), object_type_id=type_id, timestamp=when)]
            else:
                raise UnsupportedOperation(f"no Pipelines call for object action {payload.get('action')!r}")
        else:
            raise UnsupportedOperation(f"unknown operation kind {kind!r}")
    except UnsupportedOperation:
        raise
    except (KeyError, TypeError, ValueError) as exc:  # a malformed stored operation: say what, never send it
        raise UnsupportedOperation(f"cannot encode for Pipelines: {type(exc).__name__}: {exc}") from None
    return _with_ids(calls, message)


def claimed_calls(item: Claimed) -> list[str]:
    """The encoded calls of one claimed operation (raises :class:`UnsupportedOperation`)."""
    payload = json.loads(item.payload)
    message = message_id(payload, item.seq, item.kind, item.payload)
    return [encode_call(call) for call in operation_calls(payload, item.kind, message)]


@dataclass(frozen=True, slots=True)
class PipelinesUnit(Unit):
    """A unit with its calls already encoded (``texts``, one per item), or why an item cannot be sent."""

    texts: tuple[str, ...] = ()
    refused: str | None = None


class PipelinesOutput:
    """``CUSTOMERIO_API=pipelines``: every operation, anonymous ones included, in ``/v1/batch`` requests.

    A claim is encoded to calls, packed by bytes (:func:`pack`: under 475,000 bytes a request, 32,000 a
    call); an operation whose call is over the limit, or that the API cannot express, is dead-lettered with
    the reason without being sent. A refused request (400 in strict mode) is halved by the settlement policy
    until the bad call is alone; 401/403, 429, 5xx and ``Retry-After`` settle as for Track.
    """

    name = "pipelines"
    max_batch_bytes = CLAIM_BYTES
    #: the outbox lets any stored operation through; the exact call size is checked here
    max_op_bytes = MAX_REQUEST_BYTES

    def __init__(self, client: PipelinesClient) -> None:
        self.client = client

    def claim_size(self, max_items: int, interval: float) -> int:
        """A full batch."""
        return max_items

    def units(self, items: Sequence[Claimed]) -> list[Unit]:
        """Refused operations first (settled without a request), then the batches, in claim order."""
        refused: list[Unit] = []
        kept: list[Claimed] = []
        texts: list[str] = []
        for item in items:
            try:
                calls = claimed_calls(item)
            except UnsupportedOperation as exc:
                refused.append(PipelinesUnit([item], refused=str(exc)))
                continue
            too_large = max((_size(call) for call in calls), default=0)
            if too_large > MAX_CALL_BYTES:
                reason = f"call is {too_large} bytes, over the Pipelines API's {MAX_CALL_BYTES}-byte limit per call"
                refused.append(PipelinesUnit([item], refused=reason))
                continue
            kept.append(item)
            texts.append(",".join(calls))
        packing = pack(texts, max_call_bytes=MAX_REQUEST_BYTES, overhead=self.client.batch_overhead)
        for index in packing.too_large:  # one operation's calls over a whole request: not sendable either
            refused.append(PipelinesUnit([kept[index]], refused="the operation's calls exceed one request"))
        batches: list[Unit] = [
            PipelinesUnit([kept[i] for i in group_], texts=tuple(texts[i] for i in group_))
            for group_ in packing.batches
        ]
        return [*refused, *batches]

    def send(self, unit: Unit) -> SendResult:
        """Send a batch unit (re-encoding halves); a refused one is answered without any request."""
        if isinstance(unit, PipelinesUnit) and unit.refused is not None:
            return SendResult(Outcome.PERMANENT, error=unit.refused, sent=False)
        texts = list(unit.texts) if isinstance(unit, PipelinesUnit) and unit.texts else None
        if texts is None:
            try:
                texts = [",".join(claimed_calls(item)) for item in unit.items]
            except UnsupportedOperation as exc:
                return SendResult(Outcome.PERMANENT, error=str(exc), sent=False)
        return self.client.send_batch(texts)

    def check_credentials(self) -> None:
        """An empty strict-mode batch (:meth:`PipelinesClient.check`)."""
        self.client.check()
