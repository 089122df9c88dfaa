"""Operations endpoints: ``/healthz``, ``/readyz``, ``/metrics``, ``/status`` and ``/api/*``.

``/status`` and ``/api/*`` show or change people's data: :class:`~.auth.OpsGuard` checks the
operations token before any of them runs.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from ..metrics import CONTENT_TYPE
from ..people import lookup_person
from ..status import build_status, dead_letter_detail, dead_letter_rows
from . import apidoc
from .bodies import HttpError, parse_json, read_body
from .context import service_of
from .health import scrub

__all__ = ["add_ops_routes"]


# route handlers carry no docstring: FastAPI would publish it as the OpenAPI description
async def healthz(request: Request) -> JSONResponse:
    service = service_of(request)
    deliverer = service.runtime.current_deliverer
    health: dict[str, Any] = {"status": "ok", "delivery": "off", "auth_error": None}
    if deliverer is not None:
        readiness = service.readiness
        readiness.flight.refresh(readiness.FRESH_S)  # the queue's age, measured off the event loop
        dead = service.runtime.outbox.dead_lettered_total
        state, settled_age = service.watch.state(deliverer, dead, readiness.oldest_age_s)
        health.update(delivery=state, delivery_settled_age_s=settled_age, auth_error=scrub(deliverer.auth_error))
    health["customerio"] = service.probe.view()
    health.update(deliverer.health() if deliverer else {})
    if health["delivery"] == "down":  # every worker died (the supervisor keeps restarting them)
        health["status"] = "degraded"
    return JSONResponse(health, status_code=200 if health["status"] == "ok" else 503)


async def readyz(request: Request) -> JSONResponse:
    problems = await service_of(request).readiness.current()
    return JSONResponse({"ready": not problems, "problems": problems}, status_code=503 if problems else 200)


def metrics_endpoint(request: Request) -> Response:
    return Response(service_of(request).metrics.render(), media_type=CONTENT_TYPE)


async def api_status(request: Request) -> JSONResponse:
    service = service_of(request)
    status = await run_in_threadpool(functools.partial(build_status, replicas=True), service.runtime, service.sampler)
    return JSONResponse({**status, "customerio": service.probe.view()})


def _limit(request: Request) -> int:
    """``?limit=``: digits only, 1 to :data:`apidoc.MAX_DEAD_LETTERS` (default 100), else a 400."""
    values = request.query_params.getlist("limit")
    if not values:
        return 100
    text = values[0]
    if len(values) > 1 or not (text.isascii() and text.isdigit() and len(text) <= 6):
        raise HttpError(400, _LIMIT_MESSAGE, reason="bad_limit")
    limit = int(text)
    if not 1 <= limit <= apidoc.MAX_DEAD_LETTERS:
        raise HttpError(400, _LIMIT_MESSAGE, reason="bad_limit")
    return limit


_LIMIT_MESSAGE = f"query parameter limit must be an integer from 1 to {apidoc.MAX_DEAD_LETTERS}"


def api_dead_letters(request: Request) -> JSONResponse:
    return JSONResponse(dead_letter_rows(service_of(request).runtime, _limit(request)))


def _retry_ids(raw: bytes) -> list[int] | None:
    """The ``ids`` of a retry body (``None``: all), or a 400 naming what is wrong (never a value)."""
    if not raw.strip():
        raise HttpError(400, _RETRY_SHAPE, reason="bad_retry_body")
    body: Any = parse_json(raw)
    if not isinstance(body, dict):
        raise HttpError(400, _RETRY_SHAPE, reason="bad_retry_body")
    if "ids" not in body:
        return None
    ids = body["ids"]
    if not isinstance(ids, list) or not all(_is_integer(i) for i in ids):
        raise HttpError(400, "ids must be an array of integers (dead-letter ids)", reason="bad_retry_body")
    # dead-letter ids are positive 64-bit integers: any other integer names no dead letter
    return [int(i) for i in ids if 0 < i < 1 << 63]


def _is_integer(value: Any) -> bool:
    """A JSON integer (``3`` or ``3.0``, as JSON Schema counts them), not ``true``."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


_RETRY_SHAPE = 'expected a JSON object: {} re-queues every dead letter, {"ids": [1, 2, ...]} only these'


async def api_retry(request: Request) -> JSONResponse:
    runtime = service_of(request).runtime
    if not request.headers.get("content-type", "").lower().startswith("application/json"):
        # a JSON content type cannot be sent cross-site without a CORS preflight (which we never allow)
        raise HttpError(415, "send Content-Type: application/json (an empty object re-queues all)")
    ids = _retry_ids(await read_body(request, 1_000_000))
    count = await run_in_threadpool(runtime.outbox.retry_dead_letters, ids)
    if runtime.current_deliverer is not None:
        runtime.current_deliverer.notify()
    return JSONResponse({"requeued": count})


def _letter_id(text: str) -> int:
    """A dead-letter id from the path (404 when it cannot name one)."""
    if not text.isascii() or not text.isdigit() or not 0 < int(text) < 1 << 63:
        raise HttpError(404, f"no dead letter {text[:40]!r}", reason="not_found")
    return int(text)


async def api_dead_letter(request: Request, letter_id: str) -> JSONResponse:
    number = _letter_id(letter_id)
    letter = await run_in_threadpool(dead_letter_detail, service_of(request).runtime, number)
    if letter is None:
        raise HttpError(404, f"no dead letter #{number}", reason="not_found")
    return JSONResponse(letter)


async def api_retry_one(request: Request, letter_id: str) -> JSONResponse:
    number = _letter_id(letter_id)
    runtime = service_of(request).runtime
    requeued = await run_in_threadpool(runtime.outbox.requeue_dead_letters, [number])
    if not requeued:
        raise HttpError(404, f"no dead letter #{number}", reason="not_found")
    if runtime.current_deliverer is not None:
        runtime.current_deliverer.notify()
    return JSONResponse({"requeued": len(requeued)})


async def api_person(request: Request, person_id: str) -> JSONResponse:
    record = await run_in_threadpool(lookup_person, service_of(request).runtime, person_id)
    if record is None:
        raise HttpError(
            404, f"no person {person_id[:200]!r} (neither a distinct_id nor an email we know)", reason="not_found"
        )
    return JSONResponse(record)


def _guarded(description: str, *codes: int, html: bool = False) -> dict[int | str, dict[str, Any]]:
    """An endpoint that shows or changes people's data (``dependencies=apidoc.OPS_SECURITY``): the 200 answer's
    description, these ``{"error": ...}`` answers and the operations token's 401."""
    unauthorized = apidoc.OPS_HTML_RESPONSES if html else apidoc.OPS_RESPONSES
    return {200: {"description": description}, **apidoc.error_responses(*codes), **unauthorized}


def status_page() -> HTMLResponse:
    page = resources.files("posthog_customerio").joinpath("static/status.html").read_text()
    return HTMLResponse(page)


def add_ops_routes(app: FastAPI) -> None:
    """Health, readiness, metrics, the status page and its JSON API."""
    app.add_api_route(
        "/healthz",
        healthz,
        methods=["GET"],
        response_model=apidoc.Health,
        responses={200: {"description": "The process is alive"}},
        summary="Liveness, delivery state and Customer.io's state (no personal data)",
    )
    app.add_api_route(
        "/readyz",
        readyz,
        methods=["GET"],
        response_model=apidoc.Ready,
        responses={
            200: {"description": "Ready to accept events"},
            503: {"model": apidoc.Ready, "description": "Not ready: the outbox is not writable or is full"},
        },
        summary="Readiness: can accept events (outbox writable, below MAX_QUEUE)",
    )
    app.add_api_route(
        "/metrics",
        metrics_endpoint,
        methods=["GET"],
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
        responses={200: {"description": "Prometheus text exposition format"}},
    )
    app.add_api_route(
        "/api/status",
        api_status,
        methods=["GET"],
        response_model=dict[str, Any],
        responses=_guarded("The status report"),
        summary="Throughput, queue, errors and dead letters as JSON",
        dependencies=apidoc.OPS_SECURITY,
    )
    app.add_api_route(
        "/api/dead-letters",
        api_dead_letters,
        methods=["GET"],
        summary="Dead-lettered operations",
        response_model=list[dict[str, Any]],
        responses=_guarded("The oldest dead letters", 400),
        openapi_extra=apidoc.DEAD_LETTER_PARAMETERS,
        dependencies=apidoc.OPS_SECURITY,
    )
    app.add_api_route(
        "/api/dead-letters/retry",
        api_retry,
        methods=["POST"],
        response_model=apidoc.Requeued,
        responses=_guarded("Dead letters re-queued", 400, 413, 415),
        summary='Re-queue dead letters: {} for all, or {"ids": [...]} (JSON only)',
        openapi_extra=apidoc.RETRY_BODY,
        dependencies=apidoc.OPS_SECURITY,
    )
    app.add_api_route(
        "/api/dead-letters/{letter_id}",
        api_dead_letter,
        methods=["GET"],
        summary="One dead letter with its payload",
        response_model=dict[str, Any],
        responses=_guarded("The dead letter, its payload parsed", 404),
        dependencies=apidoc.OPS_SECURITY,
    )
    app.add_api_route(
        "/api/dead-letters/{letter_id}/retry",
        api_retry_one,
        methods=["POST"],
        summary="Re-queue one dead letter",
        response_model=apidoc.Requeued,
        responses=_guarded("Dead letters re-queued", 404),
        dependencies=apidoc.OPS_SECURITY,
    )
    app.add_api_route(
        "/api/people/{person_id:path}",
        api_person,
        methods=["GET"],
        summary="What was sent for one person (a distinct_id or an email)",
        response_model=dict[str, Any],
        responses=_guarded("The person's record", 404),
        dependencies=apidoc.OPS_SECURITY,
    )
    app.add_api_route(
        "/status",
        status_page,
        methods=["GET"],
        response_class=HTMLResponse,
        summary="Status page",
        responses=_guarded("The status page", html=True),
        dependencies=apidoc.OPS_SECURITY,
    )
