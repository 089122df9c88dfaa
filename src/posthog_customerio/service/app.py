"""The app factory: one FastAPI app around a :class:`~posthog_customerio.runtime.Runtime`.

:func:`create_app` builds the collaborators once (:class:`~.context.Service`, kept in
``app.state.service``), adds the middleware and registers the module-level handlers of
:mod:`.ingest_routes`, :mod:`.posthog_routes` and :mod:`.ops_routes`. Delivery runs in
background threads of the same process, started and drained by the app's lifespan.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import __version__
from ..delivery import Deliverer
from ..ingestion import GroupCommitter
from ..metrics import Metrics
from ..operations import Claimed
from ..output.base import AuthError
from ..runtime import Runtime
from ..status import RequestLog, ThroughputSampler
from . import apidoc
from .activity_routes import add_activity_routes
from .auth import Authenticator, OpsGuard
from .bodies import HttpError
from .context import Service
from .cors import BrowserCors
from .health import CustomerioProbe, DeliveryWatch, Readiness
from .ingest_routes import Receivers, add_ingest_routes, error_response
from .ops_routes import add_ops_routes
from .posthog_routes import FORWARDED_METHODS, add_forwarding_routes, add_standalone_routes, forward
from .proxy import PostHogProxy
from .room import RoomGauge
from .workers import ToFirstProcess

__all__ = ["create_app", "mark_shutdown"]

log = logging.getLogger(__name__)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _service(runtime: Runtime, deliver: bool, clock: Callable[[], datetime]) -> Service:
    config = runtime.service_config()
    requests_log = RequestLog()
    sampler = ThroughputSampler(runtime)
    sampler.requests = requests_log
    auth = Authenticator(config)
    proxy = None
    if config.posthog_host:
        proxy = PostHogProxy(
            config.posthog_host, timeout_s=config.posthog_timeout_s, drop_authorization=auth.token or None
        )
    # SQLite: concurrent requests share one commit; PostgreSQL commits them side by side
    group = GroupCommitter(runtime.ingestor) if runtime.db.group_commit else None
    commit_events = group.ingest if group is not None else runtime.ingestor.ingest
    return Service(
        runtime=runtime,
        config=config,
        requests_log=requests_log,
        metrics=Metrics(runtime, requests_log),
        sampler=sampler,
        auth=auth,
        proxy=proxy,
        commit_events=commit_events,
        group=group,
        room=RoomGauge(runtime.outbox, runtime.bound, config.max_queue),
        readiness=Readiness(runtime, config.max_queue),
        probe=CustomerioProbe(runtime),
        watch=DeliveryWatch(config.stall_after_s),
        deliver=deliver,
        clock=clock,
    )


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    service: Service = app.state.service
    runtime, config = service.runtime, service.config
    forward: ToFirstProcess | None = getattr(app, "forward", None)
    if service.deliver:
        observe, probe = service.metrics.observe_delivered, service.probe

        def on_delivered(items: Sequence[Claimed]) -> None:
            observe(items)
            probe.note_delivered()

        runtime.deliverer(pause_on_auth_error=True, on_delivered=on_delivered).start()
    # a receiver worker of ``serve --workers`` only stores: the first process syncs, and answers for Customer.io
    syncing = forward is None and runtime.start_person_sync() is not None
    relaying = forward is None and service.deliver and runtime.start_activity_relay() is not None
    if relaying:  # Customer.io's message activity into PostHog
        log.info("capturing Customer.io's message activity into PostHog at %s", runtime.settings.posthog_host)
    cohorts = forward is None and runtime.start_cohort_sync() is not None
    service.sampler.start()
    await service.readiness.current()
    if forward is None:
        service.probe.view()
    target = runtime.sandbox.url if runtime.sandbox else "Customer.io"
    if forward is None:
        log.info("serving; delivery %s to %s", "on" if service.deliver else "off", target)
    if syncing:
        log.info("person sync: a pass of PostHog's persons every %gs", runtime.settings.person_sync_interval_s)
    if cohorts:
        log.info("cohort sync: a pass of PostHog's cohorts every %gs", runtime.settings.cohort_sync_interval_s)
    try:
        yield
    finally:
        # first, side by side: nothing more is stored while the outbox drains
        syncs = [sync for sync in (runtime.person_sync, runtime.cohort_sync) if sync is not None]
        await asyncio.gather(*(run_in_threadpool(sync.stop, min(5.0, config.shutdown_grace_s)) for sync in syncs))
        deliverer = runtime.current_deliverer
        if deliverer is not None:
            left = _grace_left(app, config.shutdown_grace_s)
            log.info("shutting down: flushing for up to %.0fs", left)
            emptied = await run_in_threadpool(_drain_within, deliverer, left)
            kept = "outbox empty" if emptied else f"{runtime.outbox.depth()} operations kept for the next start"
            log.info("shutdown: %s", kept)
        service.sampler.stop()
        if service.proxy is not None:
            await service.proxy.aclose()
        if forward is not None:
            await forward.aclose()
        service.readiness.flight.close()
        service.probe.flight.close()


async def _starlette_error(request: Request, exc: Exception) -> JSONResponse:
    """Routing errors (404 unknown path, 405 wrong method) in the service's shape: ``{"error": …}``."""
    assert isinstance(exc, StarletteHTTPException)
    message = f"{exc.detail}: {request.method} {request.url.path}"[:300]
    return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)


def mark_shutdown(app: FastAPI) -> None:
    """Note when the stop signal arrived: connections closing and the flush share ``SHUTDOWN_GRACE_S``."""
    if getattr(app.state, "shutdown_started", None) is None:
        app.state.shutdown_started = time.monotonic()


def _grace_left(app: FastAPI, grace_s: float) -> float:
    """What is left of the grace since :func:`mark_shutdown` (all of it when not marked)."""
    started = getattr(app.state, "shutdown_started", None)
    return grace_s if started is None else max(0.0, grace_s - (time.monotonic() - started))


def _drain_within(deliverer: Deliverer, seconds: float) -> bool:
    """Deliver for at most ``seconds``, then stop; a request still hanging then is abandoned (its operations
    stay queued, sent again at the next start): the whole flush never outlasts ``seconds``. True if emptied."""
    deadline = time.monotonic() + seconds
    try:
        emptied = deliverer.wait_until_drained(seconds)
    except AuthError:
        emptied = False
    deliverer.stop(timeout=max(0.0, deadline - time.monotonic()))
    return emptied


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HttpError)
    return error_response(request, exc)


class ServiceApp(FastAPI):
    """The FastAPI app, with the receivers' POSTs (``/webhook``, capture) answered before FastAPI's middleware
    stack and routing: by :class:`~.ingest_routes.Receivers` behind the same CORS and the same 500, so every
    answer is the one the routes give (they stay, for ``/openapi.json`` and the other methods)."""

    #: the receivers' paths (none without ``ingest``) and the ASGI app that answers their POSTs
    receiver_paths: frozenset[str] = frozenset()
    receivers: ASGIApp | None = None
    #: a receiver worker of ``serve --workers``: every other request goes to the first process
    forward: ToFirstProcess | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if scope["method"] == "POST" and scope["path"] in self.receiver_paths:
                assert self.receivers is not None
                scope["app"] = self
                await self.receivers(scope, receive, send)
                return
            if self.forward is not None:
                await self.forward(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(
    runtime: Runtime,
    *,
    deliver: bool = True,
    ingest: bool = True,
    clock: Callable[[], datetime] | None = None,
    forward_to: str | None = None,
) -> FastAPI:
    """The FastAPI app around a :class:`Runtime`.

    ``ingest``: serve the receivers (webhook, capture); ``deliver``: run the
    delivery workers. ``serve --role`` chooses (both by default). ``clock``: the
    receive time of capture requests, which SDK clocks are corrected against
    (UTC wall time unless a test injects another). ``forward_to``: a receiver worker of
    ``serve --workers`` (:mod:`.workers`): every request but the receivers' POSTs goes to
    the first process's UNIX socket at that path.
    """
    service = _service(runtime, deliver, clock or _utc_now)
    auth, proxying = service.auth, service.proxy is not None
    if auth.ops_guarded and not auth.ops_token:
        log.warning("only WEBHOOK_SIGNING_SECRET is set: the operations endpoints answer 401 until OPS_TOKEN is set")
    app = ServiceApp(
        title="posthog-customerio",
        version=__version__,
        description="Receives PostHog events and keeps Customer.io in sync.",
        lifespan=_lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    app.state.runtime = runtime
    app.state.metrics = service.metrics
    app.state.requests = service.requests_log
    app.add_middleware(BrowserCors, origins=service.config.cors_origins, proxying=proxying)
    app.add_middleware(OpsGuard, auth=auth, proxying=proxying)
    app.add_exception_handler(HttpError, _http_error)
    app.add_exception_handler(StarletteHTTPException, _starlette_error)
    if ingest:
        add_ingest_routes(app)
        add_activity_routes(app)
        receivers = Receivers()
        app.receivers = ServerErrorMiddleware(
            BrowserCors(receivers, origins=service.config.cors_origins, proxying=proxying)
        )
        app.receiver_paths = frozenset(receivers.paths)
        if proxying:
            add_forwarding_routes(app)
        else:
            add_standalone_routes(app)
    add_ops_routes(app)
    if forward_to is not None:
        app.forward = ToFirstProcess(forward_to, timeout_s=max(60.0, service.config.posthog_timeout_s))
    if ingest and proxying:  # last: this service's own /api/* routes match first
        app.add_api_route("/api/{rest:path}", forward, methods=FORWARDED_METHODS, include_in_schema=False)
    generate_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = apidoc.add_request_schemas(generate_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
