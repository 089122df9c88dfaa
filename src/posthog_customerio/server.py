"""The always-on HTTP service: PostHog webhook and capture receivers, operations endpoints.

A request is answered 200 only after its events are committed to the outbox; bad
input gets a 4xx with a JSON ``{"error": ...}`` and leaves the outbox unchanged.
Delivery runs in background threads of the same process.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import sqlite3
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from standardwebhooks.webhooks import Webhook

from . import __version__
from .config import Settings
from .customerio import AuthError
from .metrics import CONTENT_TYPE, Metrics
from .pipeline import GroupCommitter
from .runtime import Runtime
from .sources import EventParseError, loads_strict, parse_payload
from .status import ThroughputSampler, build_status, dead_letter_rows

__all__ = ["create_app", "HttpError"]

log = logging.getLogger(__name__)

_CAPTURE_PATHS = ("/batch", "/capture", "/e", "/i/v0/e")


def _database_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [sqlite3.Error, OSError]
    try:
        import psycopg

        errors.append(psycopg.Error)
    except ImportError:  # PostgreSQL support not installed
        pass
    try:
        import psycopg_pool

        errors.append(psycopg_pool.PoolTimeout)
    except ImportError:
        pass
    return tuple(errors)


#: errors that mean "the outbox could not store this": answer 503, never 200
DATABASE_ERRORS = _database_errors()
_READY_CACHE_S = 30.0


class HttpError(Exception):
    """An HTTP error answer with a JSON body ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        """The JSON response for this error."""
        return JSONResponse({"error": self.message}, status_code=self.status, headers=self.headers)


# -- request bodies ---------------------------------------------------------------------
async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing more than ``limit`` bytes (413) before reading it all."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HttpError(413, f"body is {declared} bytes, over MAX_BODY_BYTES ({limit})")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise HttpError(413, f"body is over MAX_BODY_BYTES ({limit})")
        chunks.append(chunk)
    return b"".join(chunks)


def _gunzip(body: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise HttpError(400, f"body is not valid gzip: {exc}") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise HttpError(413, f"decompressed body is over MAX_BODY_BYTES ({limit})")
    return data


def decode_body(request: Request, body: bytes, limit: int) -> bytes:
    """Undo the encodings PostHog SDKs use: gzip (header or ``?compression=gzip-js``), base64 forms."""
    encoding = request.headers.get("content-encoding", "").strip().lower()
    compression = request.query_params.get("compression", "").lower()
    if encoding == "gzip" or compression == "gzip-js":
        body = _gunzip(body, limit)
    elif encoding not in ("", "identity"):
        raise HttpError(415, f"unsupported Content-Encoding {encoding!r} (use gzip)")
    content_type = request.headers.get("content-type", "").lower()
    is_form = content_type.startswith("application/x-www-form-urlencoded") and body.startswith(b"data=")
    if is_form or compression == "base64":
        body = _form_data(body)
    return body


def _form_data(body: bytes) -> bytes:
    """posthog-js's legacy ``data=<base64 JSON>`` form body."""
    try:
        fields = parse_qs(body.decode("ascii"), strict_parsing=False)
        data = fields.get("data", [""])[0]
        return base64.b64decode(data + "=" * (-len(data) % 4), validate=False)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HttpError(400, f"form body is not base64 data: {exc}") from None


def parse_json(body: bytes) -> Any:
    """JSON from bytes, or a 400 naming the problem."""
    if not body.strip():
        raise HttpError(400, "empty body: expected JSON")
    try:
        return loads_strict(body)
    except UnicodeDecodeError:
        raise HttpError(400, "body is not UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise HttpError(400, f"malformed JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise HttpError(400, "malformed JSON: nested too deeply") from None
    except ValueError as exc:
        raise HttpError(400, f"malformed JSON: {exc}") from None


# -- auth ------------------------------------------------------------------------------
class Authenticator:
    """``WEBHOOK_TOKEN`` (Bearer) and ``WEBHOOK_SIGNING_SECRET`` (Standard Webhooks) checks."""

    def __init__(self, settings: Settings) -> None:
        token = settings.webhook_token.get_secret_value() if settings.webhook_token else ""
        secret = settings.webhook_signing_secret.get_secret_value() if settings.webhook_signing_secret else ""
        self.token = token.encode()
        self.verifier = Webhook(secret) if secret else None

    @property
    def enabled(self) -> bool:
        """Whether any check is configured."""
        return bool(self.token) or self.verifier is not None

    def _bearer_ok(self, request: Request) -> bool:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token)

    def check_webhook(self, request: Request, body: bytes) -> None:
        """Every configured mechanism must pass."""
        if self.token and not self._bearer_ok(request):
            raise HttpError(401, "missing or wrong Authorization: Bearer token", {"WWW-Authenticate": "Bearer"})
        if self.verifier is not None:
            try:
                self.verifier.verify(body, dict(request.headers), json_parse=False)
            except Exception:  # any malformed header or bad signature
                raise HttpError(401, "missing, stale or wrong webhook signature") from None

    def check_capture(self, request: Request, payload: Any) -> None:
        """Capture endpoints: Bearer token, or the token as the payload's ``api_key``."""
        if not self.enabled:
            return
        if not self.token:
            raise HttpError(401, "capture endpoints need WEBHOOK_TOKEN (SDKs cannot sign requests)")
        if self._bearer_ok(request):
            return
        if isinstance(payload, dict):
            for key in ("api_key", "token"):
                value = payload.get(key)
                if isinstance(value, str) and hmac.compare_digest(value.encode(), self.token):
                    return
        raise HttpError(401, "missing or wrong token (Authorization: Bearer, or api_key = WEBHOOK_TOKEN)")


# -- the app ---------------------------------------------------------------------------
def create_app(runtime: Runtime, *, deliver: bool = True, ingest: bool = True) -> FastAPI:
    """The FastAPI app around a :class:`Runtime`.

    ``ingest``: serve the receivers (webhook, capture); ``deliver``: run the
    delivery workers. ``serve --role`` chooses (both by default).
    """
    settings = runtime.settings
    metrics = Metrics(runtime)
    sampler = ThroughputSampler(runtime)
    auth = Authenticator(settings)
    # SQLite: concurrent requests share one commit; PostgreSQL commits them side by side
    ingest = runtime.ingestor.ingest if runtime.db.shared else GroupCommitter(runtime.ingestor).ingest
    ready_cache: dict[str, Any] = {"at": 0.0, "ok": False, "reason": "not checked yet"}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if deliver:
            runtime.deliverer(pause_on_auth_error=True, on_delivered=metrics.observe_delivered).start()
        sampler.start()
        log.info("serving; delivery %s to %s", "on" if deliver else "off", runtime.sandbox.url if runtime.sandbox else "Customer.io")
        try:
            yield
        finally:
            deliverer = runtime.current_deliverer
            if deliverer is not None:
                log.info("shutting down: flushing for up to %.0fs", settings.shutdown_grace_s)
                emptied = await run_in_threadpool(deliverer.drain, settings.shutdown_grace_s)
                log.info("shutdown: %s", "outbox empty" if emptied else f"{runtime.outbox.depth()} operations kept for the next start")
            sampler.stop()

    app = FastAPI(
        title="posthog-customerio",
        version=__version__,
        description="Receives PostHog events and keeps Customer.io in sync.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.runtime = runtime
    app.state.metrics = metrics

    @app.exception_handler(HttpError)
    async def _http_error(_: Request, exc: HttpError) -> JSONResponse:
        return exc.response()

    async def receive(request: Request, source: str, capture: bool) -> JSONResponse:
        depth = runtime.outbox.depth(max_age_s=1.0)
        if depth >= settings.max_queue:
            raise HttpError(503, f"outbox holds {depth} operations (MAX_QUEUE {settings.max_queue}); retry later", {"Retry-After": "30"})
        raw = await read_body(request, settings.max_body_bytes)
        if not capture:
            auth.check_webhook(request, raw)
        payload = parse_json(decode_body(request, raw, settings.max_body_bytes))
        if capture:
            auth.check_capture(request, payload)
        try:
            events = parse_payload(payload)
        except EventParseError as exc:
            runtime.ingestor.count_invalid(source)
            raise HttpError(400, str(exc)) from None
        try:
            report = await run_in_threadpool(ingest, events, source)
        except DATABASE_ERRORS as exc:
            log.error("cannot write to the outbox: %s", exc)
            raise HttpError(503, f"outbox unavailable: {exc}", {"Retry-After": "10"}) from None
        except (ValueError, RecursionError, UnicodeError) as exc:  # an event that cannot be encoded
            runtime.ingestor.count_invalid(source)
            raise HttpError(400, f"event cannot be stored: {type(exc).__name__}: {str(exc)[:200]}") from None
        deliverer = runtime.current_deliverer
        if deliverer is not None:
            deliverer.notify()
        return JSONResponse({"status": 1, "accepted": report.events, "operations": report.operations})

    async def webhook(request: Request) -> JSONResponse:
        return await receive(request, "webhook", capture=False)

    async def capture(request: Request) -> JSONResponse:
        return await receive(request, "capture", capture=True)

    if ingest:
        app.add_api_route(
            "/webhook", webhook, methods=["POST"],
            summary="PostHog webhook / Hog destination body, plugin-style or export-style events",
        )
        for path in _CAPTURE_PATHS:
            for variant in (path, path + "/"):
                app.add_api_route(
                    variant, capture, methods=["POST"], summary="PostHog capture API",
                    include_in_schema=not variant.endswith("/"),
                )

    @app.get("/healthz", summary="Liveness (and delivery state)")
    def healthz() -> JSONResponse:
        deliverer = runtime.current_deliverer
        health = {
            "status": "ok",
            "delivery": deliverer.state if deliverer else "off",
            "auth_error": deliverer.auth_error if deliverer else None,
            **(deliverer.health() if deliverer else {}),
        }
        if health["delivery"] == "down":  # every worker died (the supervisor keeps restarting them)
            health["status"] = "degraded"
        return JSONResponse(health, status_code=200 if health["status"] == "ok" else 503)

    @app.get("/readyz", summary="Readiness: outbox writable, Customer.io reachable, credentials good")
    def readyz() -> JSONResponse:
        problems = []
        try:
            with runtime.db.transaction() as conn:
                conn.execute(
                    "INSERT INTO status_snapshot (key, value, updated_at) VALUES ('readyz', '{}', ?)"
                    " ON CONFLICT (key) DO UPDATE SET updated_at = excluded.updated_at",
                    (time.time(),),
                )
        except Exception as exc:  # sqlite3 or psycopg errors alike
            problems.append(f"outbox not writable: {type(exc).__name__}: {exc}")
        deliverer = runtime.current_deliverer
        if deliverer is not None and deliverer.auth_error:
            problems.append(f"Customer.io: {deliverer.auth_error}")
        elif not _customerio_ok(runtime, ready_cache):
            problems.append(f"Customer.io: {ready_cache['reason']}")
        status = 503 if problems else 200
        return JSONResponse({"ready": not problems, "problems": problems}, status_code=status)

    @app.get("/metrics", summary="Prometheus metrics")
    def metrics_endpoint() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/api/status", summary="Throughput, queue, errors and dead letters as JSON")
    def api_status() -> JSONResponse:
        return JSONResponse(build_status(runtime, sampler))

    @app.get("/api/dead-letters", summary="Dead-lettered operations")
    def api_dead_letters(limit: int = 100) -> JSONResponse:
        return JSONResponse(dead_letter_rows(runtime, max(1, min(limit, 10_000))))

    @app.post("/api/dead-letters/retry", summary="Re-queue dead letters: {} for all, or {\"ids\": [...]} (JSON only)")
    async def api_retry(request: Request) -> JSONResponse:
        if not request.headers.get("content-type", "").lower().startswith("application/json"):
            # a JSON content type cannot be sent cross-site without a CORS preflight (which we never allow)
            raise HttpError(415, "send Content-Type: application/json (an empty object re-queues all)")
        raw = await read_body(request, 1_000_000)
        ids = None
        if raw.strip():
            body = parse_json(raw)
            if not isinstance(body, dict) or not isinstance(body.get("ids", []), list):
                raise HttpError(400, 'expected {"ids": [1, 2, ...]} or an empty body')
            if "ids" in body:
                ids = [i for i in body["ids"] if isinstance(i, int) and not isinstance(i, bool)]
        count = await run_in_threadpool(runtime.outbox.retry_dead_letters, ids)
        if runtime.current_deliverer is not None:
            runtime.current_deliverer.notify()
        return JSONResponse({"requeued": count})

    @app.get("/status", response_class=HTMLResponse, summary="Status page")
    def status_page() -> HTMLResponse:
        page = resources.files("posthog_customerio").joinpath("static/status.html").read_text()
        return HTMLResponse(page)

    return app


def _customerio_ok(runtime: Runtime, cache: dict[str, Any]) -> bool:
    """Credentials check against Customer.io, cached for 30 s."""
    now = time.monotonic()
    if now - cache["at"] < _READY_CACHE_S:
        return bool(cache["ok"])
    try:
        runtime.client.account_region()
        cache.update(ok=True, reason="")
    except AuthError as exc:
        cache.update(ok=False, reason=str(exc))
    except (httpx.HTTPError, ValueError) as exc:
        cache.update(ok=False, reason=f"unreachable: {type(exc).__name__}")
    cache["at"] = now
    return bool(cache["ok"])
