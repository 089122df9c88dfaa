"""The receivers: ``/webhook``, PostHog capture (``/batch``, ``/capture``, ``/e``, ``/i/v0/e``) and capture v1.

A request is answered 200 only after its events are committed to the outbox, all or nothing
(:func:`posthog_customerio.sources.store.store_events`); bad input gets a 4xx and stores nothing.
With ``POSTHOG_HOST`` capture goes to PostHog first and only what PostHog accepted is stored.
A signed webhook is stored once per ``webhook-id`` (:mod:`.replay`): a replay is answered 200 and stores nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from ..disk import disk_full_message, is_disk_full
from ..ingestion import IngestReport
from ..sources import (
    EventParseError,
    PostHogEvent,
    SdkClock,
    capture_sent_at,
    parse_payload,
    parse_v1_batch,
    v1_sent_at,
)
from ..sources.decoding import GZIP_MAGIC
from ..sources.store import DATABASE_ERRORS, Stored, UnstorableBatch, database_problem, store_events
from . import apidoc
from .bodies import HttpError, decode_body, parse_json, read_body, too_many
from .context import Service, service_of
from .paths import CAPTURE_PATHS, CAPTURE_V1_PATH
from .proxy import ProxyError
from .replay import Claim, ReplayGuard
from .wakeups import wait_for

__all__ = [
    "INLINE_BODY_BYTES",
    "Receivers",
    "add_ingest_routes",
    "capture",
    "capture_v1",
    "error_response",
    "receiver_paths",
    "webhook",
]

log = logging.getLogger(__name__)

_MAX_CAPTURE_ANSWER = 1_000_000
#: a body up to this size, not compressed, is decoded, verified, parsed and queued for its commit on the event
#: loop (tens of microseconds for one event); a bigger or compressed one in a worker thread, so it never holds
#: up the other requests
INLINE_BODY_BYTES = 32 * 1024

_T = TypeVar("_T")


def inline_body(request: Request, raw: bytes) -> bool:
    """Whether ``raw`` is cheap enough to decode and parse on the event loop (small, and nothing to inflate)."""
    return (
        len(raw) <= INLINE_BODY_BYTES
        and not raw.startswith(GZIP_MAGIC)
        and b"compression" not in request.scope["query_string"]
        and "content-encoding" not in request.headers
    )


async def _run(inline: bool, work: Callable[..., _T], *args: Any) -> _T:
    """``work(*args)`` here when ``inline``, else in a worker thread."""
    return work(*args) if inline else await run_in_threadpool(work, *args)


def _parse(
    service: Service, request: Request, payload: Any, v1: bool, source: str, received_at: datetime | None
) -> list[PostHogEvent]:
    """Parse; an SDK's capture request (``received_at`` given) has its clock corrected as PostHog's capture does."""
    try:
        if v1:
            clock = None if received_at is None else SdkClock(received_at, v1_sent_at(request.headers), v1=True)
            return parse_v1_batch(payload, request.headers.get("posthog-sdk-info"), clock=clock)
        if received_at is None:  # webhook bodies: times PostHog set already
            return parse_payload(payload)
        return parse_payload(payload, clock=SdkClock(received_at, capture_sent_at(payload, request.query_params)))
    except EventParseError as exc:
        service.runtime.ingestor.count_invalid(source)
        raise HttpError(400, str(exc)[:300], reason="invalid_event") from None


def _check_api_keys(payload: Any) -> None:
    """``api_key``, where given (the body, its ``batch`` or array items), is a string, as ``/openapi.json`` says."""
    items = payload if isinstance(payload, list) else [payload]
    if isinstance(payload, dict) and isinstance(payload.get("batch"), list):
        items = [payload, *payload["batch"]]
    for item in items:
        if isinstance(item, dict) and "api_key" in item and not isinstance(item["api_key"], str):
            raise HttpError(400, "api_key must be a string (the project token)", reason="invalid_event")


def parse_events(
    request: Request, raw: bytes, source: str, header_ok: bool, v1: bool, received_at: datetime | None = None
) -> list[PostHogEvent]:
    """Decode, authorise by payload token if needed, parse: CPU work (in a worker thread unless the body is small).

    ``received_at``: the receive time of a capture request (SDK clocks are corrected against it).
    """
    service = service_of(request)
    config, auth = service.config, service.auth
    body = decode_body(request, raw, config.max_body_bytes)
    if not header_ok:
        auth.check_token_present(body)
    payload = parse_json(body, config.max_events_per_request)
    if not header_ok:
        auth.check_capture(request, payload)
    _check_api_keys(payload)
    events = _parse(service, request, payload, v1, source, received_at)
    if len(events) > config.max_events_per_request:
        raise HttpError(413, too_many(config.max_events_per_request), reason="too_many_events")
    return events


def parse_capture(request: Request, raw: bytes, v1: bool, received_at: datetime) -> list[PostHogEvent]:
    """Decode, authenticate and parse a proxied capture body (run in a worker thread)."""
    service = service_of(request)
    config = service.config
    payload = parse_json(decode_body(request, raw, config.max_body_bytes), config.max_events_per_request)
    service.auth.check_capture(request, payload)
    return _parse(service, request, payload, v1, "capture", received_at)


async def _commit(service: Service, events: list[PostHogEvent], source: str, inline: bool) -> Stored:
    """:func:`store_events`, all or nothing. SQLite: queued for the next group commit and awaited here (no thread
    waits for it); PostgreSQL: committed in a worker thread on a pooled connection."""
    count_invalid = service.runtime.ingestor.count_invalid
    group = service.group
    if group is None:
        return await run_in_threadpool(
            store_events, service.commit_events, events, source, all_or_nothing=True, count_invalid=count_invalid
        )
    if not events:
        return Stored()
    try:
        future = group.submit(events, source) if inline else await run_in_threadpool(group.submit, events, source)
        report = await wait_for(future)
    except Exception as exc:  # the same policy as a commit in this thread: store_events decides what it means
        error = exc

        def outcome(_events: Any, _source: str) -> IngestReport:
            raise error

    else:

        def outcome(_events: Any, _source: str) -> IngestReport:
            return report

    return store_events(outcome, events, source, all_or_nothing=True, count_invalid=count_invalid)


async def store(
    service: Service, events: list[PostHogEvent], source: str, reason: str = "", inline: bool = False
) -> IngestReport:
    """Commit ``events`` all or nothing: 503 when the outbox cannot take them, 400 when one cannot be stored.

    ``inline``: the events are few; they are mapped for the commit on the event loop."""
    runtime = service.runtime
    try:
        stored = await _commit(service, events, source, inline)
    except DATABASE_ERRORS as exc:
        problem = disk_full_message(exc) if is_disk_full(exc) else database_problem(exc)
        log.error("cannot write to the outbox: %s", problem)
        raise HttpError(503, f"outbox unavailable: {problem}", {"Retry-After": "10"}) from None
    except UnstorableBatch as exc:  # an event that cannot be encoded
        raise HttpError(400, str(exc), reason=reason) from None
    deliverer = runtime.current_deliverer
    if deliverer is not None:
        deliverer.notify()
    return stored.report


async def proxy_capture(request: Request, v1: bool = False) -> Response:
    """Forward to PostHog first; store for Customer.io only what PostHog accepted (2xx)."""
    service = service_of(request)
    proxy, requests_log = service.proxy, service.requests_log
    assert proxy is not None
    raw = await read_body(request, service.config.max_body_bytes)
    received_at = service.clock()  # before forwarding: as close to PostHog's own receive time as we get
    try:
        upstream = await proxy.fetch(request, raw, _MAX_CAPTURE_ANSWER)
    except ProxyError as exc:
        requests_log.proxied_request("error", f"proxy {request.url.path}: {exc}")
        log.warning("proxy %s: %s", request.url.path, exc)
        raise HttpError(502, f"{exc}; retry later", {"Retry-After": "5"}) from None
    requests_log.proxied_request(str(upstream.status))
    if not 200 <= upstream.status < 300:
        return upstream.response()  # PostHog refused it: so do we
    try:
        events = await _run(inline_body(request, raw), parse_capture, request, raw, v1, received_at)
    except HttpError as exc:  # forwarded, PostHog decided; we cannot store it
        message = f"proxied {request.url.path} not stored for Customer.io: {exc.status} {exc.message}"[:300]
        requests_log.not_stored_event(exc.reason, message)
        log.warning("%s", message)
        return upstream.response()
    await service.room.check("capture")  # PostHog has it; the SDK's retry is deduplicated by uuid
    await store(service, events, "capture", reason="unencodable_event")
    return upstream.response()


_IN_FLIGHT_MESSAGE = "a request with this webhook-id is being stored; retry later"


async def _parse_and_store(
    request: Request, raw: bytes, source: str, header_ok: bool, v1: bool, received_at: datetime | None, inline: bool
) -> tuple[IngestReport, list[PostHogEvent]]:
    events = await _run(inline, parse_events, request, raw, source, header_ok, v1, received_at)
    return await store(service_of(request), events, source, inline=inline), events


async def _store_once(
    guard: ReplayGuard, request: Request, raw: bytes, source: str, inline: bool
) -> tuple[IngestReport, list[PostHogEvent]] | None:
    """Parse and store a verified signed webhook unless its ``webhook-id`` was stored already (``None``).

    409 while another request with the id is being stored; a failed request forgets the id (its retry counts).
    """
    webhook_id = request.headers["webhook-id"]  # present: the signature covers it
    claim = guard.claim(webhook_id)
    if claim is Claim.DONE:
        log.info("a signed webhook was replayed (same webhook-id): answered without storing it again")
        return None
    if claim is Claim.IN_FLIGHT:
        raise HttpError(409, _IN_FLIGHT_MESSAGE, {"Retry-After": "1"}, reason="webhook_in_flight")
    try:
        stored = await _parse_and_store(request, raw, source, True, False, None, inline)
    except BaseException:
        guard.release(webhook_id)
        raise
    guard.commit(webhook_id, float(request.headers["webhook-timestamp"]))
    return stored


async def receive(request: Request, source: str, capture: bool, v1: bool = False) -> Response:
    """Authorise, bound, decode, parse and store one request; the answer SDKs expect."""
    service = service_of(request)
    auth = service.auth
    if capture and service.proxy is not None:  # PostHog decides first; we store what it accepted
        return await proxy_capture(request, v1)
    # credentials first: a request the headers already refuse is answered before its body is read
    if capture:
        header_ok = auth.capture_header_ok(request)
    else:
        auth.check_webhook_header(request)
        header_ok = True
    await service.room.check(source)
    raw = await read_body(request, service.config.max_body_bytes)
    received_at = service.clock() if capture else None  # PostHog's capture takes its "now" after the body too
    inline = inline_body(request, raw)
    guard = None
    if not capture and auth.verifier is not None:
        await _run(inline, auth.check_signature, request, raw)
        guard = auth.replays
    stored: tuple[IngestReport, list[PostHogEvent]] | None
    if guard is None:
        stored = await _parse_and_store(request, raw, source, header_ok, v1, received_at, inline)
    else:
        stored = await _store_once(guard, request, raw, source, inline)
        if stored is None:
            return JSONResponse({"status": 1, "accepted": 0, "operations": 0, "replayed": True})
    report, events = stored
    answer: dict[str, Any] = {"status": 1, "accepted": report.events, "operations": report.operations}
    if v1:  # capture v1 clients read a per-event verdict keyed by uuid
        answer["results"] = {event.uuid: {"result": "ok"} for event in events if event.uuid}
    return JSONResponse(answer)


# route handlers carry no docstring: FastAPI would publish it as the OpenAPI description
async def webhook(request: Request) -> Response:
    return await receive(request, "webhook", capture=False)


async def capture(request: Request) -> Response:
    return await receive(request, "capture", capture=True)


async def capture_v1(request: Request) -> Response:
    return await receive(request, "capture", capture=True, v1=True)


def error_response(request: Request, exc: HttpError) -> Response:
    """The answer to an :class:`HttpError`; a 4xx is counted by reason, logged without the body, shown in /status."""
    if 400 <= exc.status < 500:
        message = f"rejected {request.method} {request.url.path}: {exc.status} {exc.message}"[:300]
        service_of(request).requests_log.rejection(exc.reason, message)
        log.warning("%s", message)
    return exc.response()


def receiver_paths() -> dict[str, Callable[[Request], Awaitable[Response]]]:
    """The receivers' POST paths and their handlers (``/webhook/`` is left to FastAPI: it redirects)."""
    paths: dict[str, Callable[[Request], Awaitable[Response]]] = {"/webhook": webhook}
    for path in CAPTURE_PATHS:
        paths[path] = paths[path + "/"] = capture
    paths[CAPTURE_V1_PATH] = paths[CAPTURE_V1_PATH + "/"] = capture_v1
    return paths


class Receivers:
    """The receivers' POSTs as a plain ASGI app: the same handlers and answers as the FastAPI routes, without
    FastAPI's routing, request machinery and middleware stack (``create_app`` sends these POSTs here)."""

    def __init__(self) -> None:
        self.paths = receiver_paths()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await self.paths[scope["path"]](request)
        except HttpError as exc:
            response = error_response(request, exc)
        await response(scope, receive, send)


def add_ingest_routes(app: FastAPI) -> None:
    """The webhook, capture and capture v1 routes (each also with a trailing "/")."""
    answers: dict[int | str, dict[str, Any]] = {
        200: {"description": "Every event committed to the outbox"},
        **apidoc.error_responses(400, 401, 413, 415, 503),
    }
    app.add_api_route(
        "/webhook",
        webhook,
        methods=["POST"],
        summary="PostHog webhook / Hog destination body, plugin-style or export-style events",
        response_model=apidoc.Accepted,
        responses={**answers, **apidoc.error_responses(409)},
        openapi_extra=apidoc.INGEST_BODY,
    )
    for path in CAPTURE_PATHS:
        for variant in (path, path + "/"):
            app.add_api_route(
                variant,
                capture,
                methods=["POST"],
                summary="PostHog capture API",
                include_in_schema=not variant.endswith("/"),
                response_model=apidoc.Accepted,
                responses=answers,
                openapi_extra=apidoc.INGEST_BODY,
            )
    for variant in (CAPTURE_V1_PATH, CAPTURE_V1_PATH + "/"):
        app.add_api_route(
            variant,
            capture_v1,
            methods=["POST"],
            include_in_schema=not variant.endswith("/"),
            summary='PostHog capture v1 (posthog-python capture_mode="v1"): {"batch": [...]}, Bearer token',
            response_model=apidoc.Accepted,
            responses=answers,
            openapi_extra=apidoc.INGEST_V1_BODY,
        )
