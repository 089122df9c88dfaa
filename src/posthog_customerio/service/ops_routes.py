"""Operations endpoints: ``/healthz``, ``/readyz``, ``/metrics``, ``/status`` and ``/api/*``.

``/status`` and ``/api/*`` show or change people's data: :class:`~.auth.OpsGuard` checks the
operations token before any of them runs.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from ..metrics import CONTENT_TYPE
from ..status import build_status, dead_letter_rows
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
    status = await run_in_threadpool(build_status, service.runtime, service.sampler)
    return JSONResponse({**status, "customerio": service.probe.view()})


def api_dead_letters(request: Request, limit: int = 100) -> JSONResponse:
    return JSONResponse(dead_letter_rows(service_of(request).runtime, max(1, min(limit, 10_000))))


async def api_retry(request: Request) -> JSONResponse:
    runtime = service_of(request).runtime
    if not request.headers.get("content-type", "").lower().startswith("application/json"):
        # a JSON content type cannot be sent cross-site without a CORS preflight (which we never allow)
        raise HttpError(415, "send Content-Type: application/json (an empty object re-queues all)")
    raw = await read_body(request, 1_000_000)
    ids = None
    if raw.strip():
        body: Any = parse_json(raw)
        if not isinstance(body, dict) or not isinstance(body.get("ids", []), list):
            raise HttpError(400, 'expected {"ids": [1, 2, ...]} or an empty body')
        if "ids" in body:
            # dead-letter ids are positive 64-bit integers: anything else names no dead letter
            ids = [i for i in body["ids"] if isinstance(i, int) and not isinstance(i, bool) and 0 < i < 1 << 63]
    count = await run_in_threadpool(runtime.outbox.retry_dead_letters, ids)
    if runtime.current_deliverer is not None:
        runtime.current_deliverer.notify()
    return JSONResponse({"requeued": count})


def status_page() -> HTMLResponse:
    page = resources.files("posthog_customerio").joinpath("static/status.html").read_text()
    return HTMLResponse(page)


def add_ops_routes(app: FastAPI) -> None:
    """Health, readiness, metrics, the status page and its JSON API."""
    app.add_api_route(
        "/healthz",
        healthz,
        methods=["GET"],
        responses=apidoc.HEALTH_RESPONSES,
        summary="Liveness, delivery state and Customer.io's state (no personal data)",
    )
    app.add_api_route(
        "/readyz",
        readyz,
        methods=["GET"],
        responses=apidoc.READY_RESPONSES,
        summary="Readiness: can accept events (outbox writable, below MAX_QUEUE)",
    )
    app.add_api_route(
        "/metrics",
        metrics_endpoint,
        methods=["GET"],
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
        responses=apidoc.METRICS_RESPONSES,
    )
    app.add_api_route(
        "/api/status",
        api_status,
        methods=["GET"],
        responses=apidoc.STATUS_RESPONSES,
        summary="Throughput, queue, errors and dead letters as JSON",
    )
    app.add_api_route(
        "/api/dead-letters",
        api_dead_letters,
        methods=["GET"],
        summary="Dead-lettered operations",
        responses=apidoc.DEAD_LETTER_RESPONSES,
    )
    app.add_api_route(
        "/api/dead-letters/retry",
        api_retry,
        methods=["POST"],
        responses=apidoc.RETRY_RESPONSES,
        summary='Re-queue dead letters: {} for all, or {"ids": [...]} (JSON only)',
        openapi_extra=apidoc.RETRY_BODY,
    )
    app.add_api_route(
        "/status",
        status_page,
        methods=["GET"],
        response_class=HTMLResponse,
        summary="Status page",
        responses=apidoc.PAGE_RESPONSES,
    )
