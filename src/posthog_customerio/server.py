"""The always-on HTTP service: PostHog webhook and capture receivers, operations endpoints.

A request is answered 200 only after its events are committed to the outbox; bad
input gets a 4xx with a JSON ``{"error": ...}`` and leaves the outbox unchanged.
Delivery runs in background threads of the same process.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import logging
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send
from standardwebhooks.webhooks import Webhook

from . import __version__, apidoc
from .config import Settings
from .customerio import AuthError
from .decoding import DecodeError
from .decoding import decode_body as _decode
from .metrics import CONTENT_TYPE, Metrics
from .pipeline import GroupCommitter
from .proxy import PostHogProxy, ProxyError
from .runtime import Runtime
from .sources import EventParseError, PostHogEvent, TooManyEvents, loads_strict, parse_payload, parse_v1_batch
from .status import RequestLog, ThroughputSampler, build_status, dead_letter_rows

__all__ = ["create_app", "HttpError"]

log = logging.getLogger(__name__)

_CAPTURE_PATHS = ("/batch", "/capture", "/e", "/i/v0/e")
#: posthog-python's ``capture_mode="v1"`` endpoint (Bearer auth, ``{"batch": [...]}``, per-event results)
_CAPTURE_V1_PATH = "/i/v1/analytics/events"
#: PostHog paths besides capture: exact (with or without "/") and prefixes; with POSTHOG_HOST all are forwarded
_POSTHOG_EXACT = ("/flags", "/decide", "/s")
_POSTHOG_PREFIXES = ("/array/", "/s/", "/static/", "/i/", "/api/")
#: this service's own paths under /api/: never forwarded, never CORS-enabled
_OWN_API = ("/api/status", "/api/dead-letters")
_MAX_CAPTURE_ANSWER = 1_000_000


def is_posthog_path(path: str) -> bool:
    """Whether ``path`` is one of PostHog's browser-facing paths (capture, flags, config, recordings, assets)."""
    bare = path.rstrip("/") or "/"
    if bare in _CAPTURE_PATHS or bare in _POSTHOG_EXACT:
        return True
    if any(bare == own or bare.startswith(own + "/") for own in _OWN_API):
        return False
    return path.startswith(_POSTHOG_PREFIXES)


class BrowserCors:
    """Starlette's CORS middleware on PostHog's browser-facing paths only (not on the operations API)."""

    def __init__(self, app: ASGIApp, origins: list[str], proxying: bool) -> None:
        self.app = app
        self.proxying = proxying
        any_origin = origins == ["*"]
        self.cors = CORSMiddleware(
            app, allow_origins=origins, allow_methods=["GET", "POST", "OPTIONS"], allow_headers=["*"],
            allow_credentials=not any_origin, max_age=86400,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path and is_posthog_path(path) and (self.proxying or not path.startswith("/api/")):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


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
OPS_REALM = "posthog-customerio operations"


class HttpError(Exception):
    """An HTTP error answer with a JSON body ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.reason = reason or {400: "bad_request", 401: "auth", 413: "too_large", 415: "unsupported_media"}.get(status, str(status))

    def response(self) -> JSONResponse:
        """The JSON response for this error."""
        return JSONResponse({"error": self.message}, status_code=self.status, headers=self.headers)


# -- request bodies ---------------------------------------------------------------------
async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing more than ``limit`` bytes (413) before reading it all."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HttpError(413, f"body is {declared} bytes, over MAX_BODY_BYTES ({limit})", reason="body_too_large")
    chunks, total = [], 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise HttpError(413, f"body is over MAX_BODY_BYTES ({limit})", reason="body_too_large")
            chunks.append(chunk)
    except ClientDisconnect:  # the client went away, or HTTP_READ_TIMEOUT_S closed a slow one
        raise HttpError(400, "the connection closed before the whole body arrived", reason="client_disconnect") from None
    return b"".join(chunks)


def decode_body(request: Request, body: bytes, limit: int) -> bytes:
    """Undo the encodings PostHog SDKs use (see :mod:`posthog_customerio.decoding`), or a 4xx."""
    try:
        return _decode(request.headers, request.query_params, body, limit)
    except DecodeError as exc:
        raise HttpError(exc.status, exc.message, reason=exc.reason) from None


def parse_json(body: bytes, max_events: int | None = None) -> Any:
    """JSON from bytes, or a 400 naming the problem (413 past ``max_events`` top-level items)."""
    if not body.strip():
        raise HttpError(400, "empty body: expected JSON", reason="empty_body")
    try:
        return loads_strict(body, max_events)
    except TooManyEvents as exc:
        raise HttpError(413, _too_many(exc.limit), reason="too_many_events") from None
    except UnicodeDecodeError:
        raise HttpError(400, "body is not UTF-8 JSON", reason="not_utf8") from None
    except json.JSONDecodeError as exc:
        raise HttpError(400, f"malformed JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})", reason="malformed_json") from None
    except RecursionError:
        raise HttpError(400, "malformed JSON: nested too deeply", reason="malformed_json") from None
    except ValueError as exc:
        raise HttpError(400, f"malformed JSON: {str(exc)[:200]}", reason="malformed_json") from None


def _too_many(limit: int) -> str:
    return f"more than {limit} events in one request (MAX_EVENTS_PER_REQUEST); send them in batches of at most {limit}"


# -- auth ------------------------------------------------------------------------------
class Authenticator:
    """``WEBHOOK_TOKEN`` (Bearer) and ``WEBHOOK_SIGNING_SECRET`` (Standard Webhooks) checks."""

    def __init__(self, settings: Settings) -> None:
        token = settings.webhook_token.get_secret_value() if settings.webhook_token else ""
        secret = settings.webhook_signing_secret.get_secret_value() if settings.webhook_signing_secret else ""
        self.token = token.encode()
        self.verifier = Webhook(secret) if secret else None
        self.ops_token = settings.ops_secret.encode()
        #: the operations endpoints need a token once any credential is configured
        self.ops_guarded = bool(self.ops_token) or self.enabled

    @property
    def enabled(self) -> bool:
        """Whether any check is configured."""
        return bool(self.token) or self.verifier is not None

    def _bearer_ok(self, request: Request) -> bool:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token)

    def check_webhook(self, request: Request, body: bytes) -> None:
        """Every configured mechanism must pass."""
        self.check_webhook_header(request)
        self.check_signature(request, body)

    def check_webhook_header(self, request: Request) -> None:
        """The Bearer part of :meth:`check_webhook`: needs no body, so it runs before the body is read."""
        if self.token and not self._bearer_ok(request):
            raise HttpError(401, "missing or wrong Authorization: Bearer token", {"WWW-Authenticate": "Bearer"})

    def check_signature(self, request: Request, body: bytes) -> None:
        """The Standard Webhooks part of :meth:`check_webhook` (a no-op without a signing secret)."""
        if self.verifier is not None:
            try:
                self.verifier.verify(body, dict(request.headers), json_parse=False)
            except Exception:  # any malformed header or bad signature
                raise HttpError(401, "missing, stale or wrong webhook signature", reason="signature") from None

    def capture_header_ok(self, request: Request) -> bool:
        """Before the body: True when the headers already authorise a capture request.

        False means only the payload's ``api_key`` / ``token`` can; with no
        ``WEBHOOK_TOKEN`` at all (only a signing secret) the request is refused here.
        """
        if not self.enabled:
            return True
        if not self.token:
            raise HttpError(401, "capture endpoints need WEBHOOK_TOKEN (SDKs cannot sign requests)")
        return self._bearer_ok(request)

    def check_token_present(self, body: bytes) -> None:
        """Refuse, without parsing, a decoded body in which the token does not occur at all."""
        escaped = json.dumps(self.token.decode())[1:-1].encode()
        if self.token not in body and escaped not in body:
            raise HttpError(401, "missing or wrong token (Authorization: Bearer, or api_key = WEBHOOK_TOKEN)")

    def check_ops(self, headers: Headers, *, page: bool) -> None:
        """Operations endpoints: ``OPS_TOKEN`` (else ``WEBHOOK_TOKEN``) as Bearer, or as the Basic password.

        ``page``: the HTML status page, whose 401 makes a browser ask for the password.
        """
        if not self.ops_guarded:
            return
        scheme, _, value = headers.get("authorization", "").partition(" ")
        given = b""
        if scheme.lower() == "bearer":
            given = value.strip().encode()
        elif scheme.lower() == "basic":
            try:
                given = base64.b64decode(value.strip(), validate=True).partition(b":")[2]
            except ValueError:  # binascii.Error
                given = b""
        if self.ops_token and hmac.compare_digest(given, self.ops_token):
            return
        challenge = f'Basic realm="{OPS_REALM}", charset="UTF-8"' if page else f'Bearer realm="{OPS_REALM}"'
        if not self.ops_token:
            message = "the operations endpoints need OPS_TOKEN (or WEBHOOK_TOKEN); only a signing secret is set"
        else:
            message = "missing or wrong operations token (Bearer <OPS_TOKEN>, or Basic with it as the password)"
        raise HttpError(401, message, {"WWW-Authenticate": challenge})

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


def is_ops_path(path: str, proxying: bool = False) -> bool:
    """``/status`` and ``/api/*``: the endpoints that show or change people's data.

    As a PostHog proxy, only this service's own ``/api/*`` paths; PostHog's are forwarded.
    """
    bare = path.rstrip("/")
    if bare == "/status" or any(bare == own or bare.startswith(own + "/") for own in _OWN_API):
        return True
    return not proxying and (bare == "/api" or path.startswith("/api/"))


class OpsGuard:
    """ASGI middleware: every operations endpoint (also ones added later) checks the token first."""

    def __init__(self, app: ASGIApp, auth: Authenticator, proxying: bool = False) -> None:
        self.app = app
        self.auth = auth
        self.proxying = proxying

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_ops_path(scope["path"], self.proxying):
            try:
                self.auth.check_ops(Headers(scope=scope), page=scope["path"].rstrip("/") == "/status")
            except HttpError as exc:
                await exc.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _SingleFlight:
    """Runs one check at a time on its own thread (never the request thread pool) and caches the result."""

    def __init__(self, name: str, check: Callable[[], None]) -> None:
        self.check = check
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.started_at: float | None = None
        self.finished_at = 0.0
        self._future: asyncio.Future[None] | None = None

    def _run(self) -> None:
        try:
            self.check()
        finally:
            self.finished_at = time.monotonic()
            self.started_at = None

    def refresh(self, max_age_s: float) -> asyncio.Future[None] | None:
        """Start a check unless one is running or the last is younger than ``max_age_s`` (event loop only)."""
        if self._future is not None and not self._future.done():
            return self._future
        if time.monotonic() - self.finished_at < max_age_s:
            return None
        self.started_at = time.monotonic()
        self._future = asyncio.wrap_future(self.executor.submit(self._run))
        return self._future

    async def wait(self, max_age_s: float, timeout_s: float) -> None:
        """Refresh if stale and wait for the running check at most ``timeout_s``."""
        future = self.refresh(max_age_s)
        if future is not None:
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(future), timeout_s)

    def running_for(self) -> float:
        """Seconds the current check has been running (0 when none is)."""
        started = self.started_at
        return time.monotonic() - started if started is not None else 0.0

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


class Readiness:
    """``/readyz``: can this process accept events? The outbox takes a write and is below ``MAX_QUEUE``.

    Customer.io's state is not part of it (buffering while Customer.io is down is the job);
    :class:`CustomerioProbe` reports that in ``/healthz`` and ``/api/status``.
    """

    FRESH_S = 1.0
    WAIT_S = 2.0
    STUCK_S = 5.0

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.problems: list[str] = ["not checked yet"]
        self.flight = _SingleFlight("readyz", self._check)

    def _check(self) -> None:
        problems = []
        try:
            self.runtime.db.probe_write()
            depth = self.runtime.outbox.depth(max_age_s=1.0)
            limit = self.runtime.settings.max_queue
            if depth >= limit:
                problems.append(f"outbox holds {depth} operations (MAX_QUEUE {limit})")
        except Exception as exc:  # sqlite3 or psycopg errors alike
            problems.append(f"outbox not writable: {type(exc).__name__}: {str(exc)[:200]}")
        self.problems = problems

    async def current(self) -> list[str]:
        """The problems (none = ready): at most one check runs, however many probes arrive."""
        await self.flight.wait(self.FRESH_S, self.WAIT_S)
        stuck = self.flight.running_for()
        if stuck > self.STUCK_S:
            return [f"outbox check has not answered for {stuck:.0f} s"]
        return list(self.problems)


class CustomerioProbe:
    """Customer.io's state for ``/healthz`` and ``/api/status``: credentials, reachability, last error.

    With delivery running in this process the state comes from delivery's own requests (a probe
    would only add traffic). Without it (``--role ingest``) Customer.io is asked at most every
    30 s, one check at a time, in the background: no request waits for it. No personal data.
    """

    MAX_AGE_S = _READY_CACHE_S

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.state: dict[str, Any] = {
            "credentials": "unknown", "reachable": None, "checked_at": None, "last_error": None,
        }
        self.flight = _SingleFlight("customerio-probe", self._check)
        self._seen: dict[str, int] = {}

    def _check(self) -> None:
        state: dict[str, Any] = {"checked_at": time.time()}
        try:
            self.runtime.client.account_region()
            state.update(credentials="ok", reachable=True, last_error=None)
        except AuthError:
            state.update(credentials="rejected", reachable=True, last_error="Customer.io rejected the credentials")
        except httpx.HTTPStatusError as exc:
            state.update(reachable=True, last_error=f"HTTP {exc.response.status_code}")
        except Exception as exc:  # no answer, a bad answer, a failed region lookup
            state.update(reachable=False, last_error=f"unreachable: {type(exc).__name__}")
        self.state = {**self.state, **state}

    def _from_delivery(self, auth_error: str | None, by_status: dict[str, int]) -> None:
        """What the delivery requests since the last look say."""
        new = {key: count for key, count in by_status.items() if count > self._seen.get(key, 0)}
        self._seen = by_status
        state: dict[str, Any] = {}
        if new:
            answered = sorted(int(key) for key in new if key.isdigit())
            state["checked_at"] = time.time()
            state["reachable"] = bool(answered)
            failed = [code for code in answered if code >= 400]
            if not answered:
                state["last_error"] = "unreachable: no answer to delivery requests"
            elif failed:
                state["last_error"] = f"HTTP {failed[-1]}"
            if any(200 <= code < 300 for code in answered):
                state["credentials"] = "ok"
        if auth_error:
            state.update(credentials="rejected", last_error="Customer.io rejected the credentials")
        self.state = {**self.state, **state}

    def view(self) -> dict[str, Any]:
        """The last known state (event loop only: may start a background check)."""
        deliverer = self.runtime.current_deliverer
        if deliverer is None:
            self.flight.refresh(self.MAX_AGE_S)
        else:
            self._from_delivery(deliverer.auth_error, dict(deliverer.stats.requests_by_status))
        return dict(self.state)


_EMAIL = re.compile(r"[^\s@\"'<>(),;:]+@[^\s@\"'<>(),;:]+")


def scrub(text: str | None) -> str | None:
    """A text for the open endpoints: email addresses replaced (an upstream error may quote one)."""
    return _EMAIL.sub("<email>", text) if text else text


# -- the app ---------------------------------------------------------------------------
def create_app(runtime: Runtime, *, deliver: bool = True, ingest: bool = True) -> FastAPI:
    """The FastAPI app around a :class:`Runtime`.

    ``ingest``: serve the receivers (webhook, capture); ``deliver``: run the
    delivery workers. ``serve --role`` chooses (both by default).
    """
    settings = runtime.settings
    requests_log = RequestLog()
    metrics = Metrics(runtime, requests_log)
    sampler = ThroughputSampler(runtime)
    sampler.requests = requests_log
    auth = Authenticator(settings)
    proxy = PostHogProxy(settings.posthog_host, timeout_s=settings.posthog_timeout_s, drop_authorization=auth.token or None) \
        if settings.posthog_host else None
    # SQLite: concurrent requests share one commit; PostgreSQL commits them side by side
    commit_events = GroupCommitter(runtime.ingestor).ingest if runtime.db.group_commit else runtime.ingestor.ingest
    readiness = Readiness(runtime)
    probe = CustomerioProbe(runtime)
    if auth.ops_guarded and not auth.ops_token:
        log.warning("only WEBHOOK_SIGNING_SECRET is set: the operations endpoints answer 401 until OPS_TOKEN is set")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if deliver:
            runtime.deliverer(pause_on_auth_error=True, on_delivered=metrics.observe_delivered).start()
        sampler.start()
        await readiness.current()
        probe.view()
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
            if proxy is not None:
                await proxy.aclose()
            readiness.flight.close()
            probe.flight.close()

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
    app.state.requests = requests_log
    app.add_middleware(BrowserCors, origins=settings.cors_origin_list, proxying=proxy is not None)
    app.add_middleware(OpsGuard, auth=auth, proxying=proxy is not None)

    @app.exception_handler(HttpError)
    async def _http_error(request: Request, exc: HttpError) -> JSONResponse:
        if 400 <= exc.status < 500:  # counted by reason, logged without the body, shown in /status
            message = f"rejected {request.method} {request.url.path}: {exc.status} {exc.message}"[:300]
            requests_log.rejection(exc.reason, message)
            log.warning("%s", message)
        return exc.response()

    def parse_capture(request: Request, raw: bytes, v1: bool) -> list[PostHogEvent]:
        """Decode, authenticate and parse a proxied capture body (run in a worker thread)."""
        payload = parse_json(decode_body(request, raw, settings.max_body_bytes), settings.max_events_per_request)
        auth.check_capture(request, payload)
        try:
            if v1:
                return parse_v1_batch(payload, request.headers.get("posthog-sdk-info"))
            return parse_payload(payload)
        except EventParseError as exc:
            runtime.ingestor.count_invalid("capture")
            raise HttpError(400, str(exc)[:300], reason="invalid_event") from None

    async def store(events: list[Any], source: str) -> Any:
        try:
            report = await run_in_threadpool(commit_events, events, source)
        except DATABASE_ERRORS as exc:
            log.error("cannot write to the outbox: %s", exc)
            raise HttpError(503, f"outbox unavailable: {exc}", {"Retry-After": "10"}) from None
        except (ValueError, RecursionError, UnicodeError) as exc:  # an event that cannot be encoded
            runtime.ingestor.count_invalid(source)
            raise HttpError(400, f"event cannot be stored: {type(exc).__name__}: {str(exc)[:200]}", reason="unencodable_event") from None
        deliverer = runtime.current_deliverer
        if deliverer is not None:
            deliverer.notify()
        return report

    async def proxy_capture(request: Request, v1: bool = False) -> Response:
        """Forward to PostHog first; store for Customer.io only what PostHog accepted (2xx)."""
        assert proxy is not None
        raw = await read_body(request, settings.max_body_bytes)
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
            events = await run_in_threadpool(parse_capture, request, raw, v1)
        except HttpError as exc:  # forwarded, PostHog decided; we cannot store it
            message = f"proxied {request.url.path} not stored for Customer.io: {exc.status} {exc.message}"[:300]
            requests_log.not_stored_event(exc.reason, message)
            log.warning("%s", message)
            return upstream.response()
        depth = await run_in_threadpool(runtime.outbox.depth, 1.0)
        if depth >= settings.max_queue:  # PostHog has it; the SDK's retry is deduplicated by event uuid
            raise HttpError(503, f"outbox holds {depth} operations (MAX_QUEUE {settings.max_queue}); retry later", {"Retry-After": "30"})
        await store(events, "capture")
        return upstream.response()

    async def forward(request: Request) -> Response:
        """Any other PostHog path: forwarded, PostHog's answer streamed back."""
        assert proxy is not None
        if not is_posthog_path(request.url.path):
            return JSONResponse({"error": "not found"}, status_code=404)
        body = b"" if request.method in ("GET", "HEAD") else await read_body(request, settings.max_body_bytes)
        try:
            response = await proxy.stream(request, body)
        except ProxyError as exc:
            requests_log.proxied_request("error", f"proxy {request.url.path}: {exc}")
            log.warning("proxy %s: %s", request.url.path, exc)
            return JSONResponse({"error": f"{exc}; retry later"}, status_code=502, headers={"Retry-After": "5"})
        requests_log.proxied_request(str(response.status_code))
        return response

    def parse_events(request: Request, raw: bytes, source: str, header_ok: bool, v1: bool) -> list[PostHogEvent]:
        """Decode, authorise by payload token if needed, parse: CPU work, run in the thread pool."""
        body = decode_body(request, raw, settings.max_body_bytes)
        if not header_ok:
            auth.check_token_present(body)
        payload = parse_json(body, settings.max_events_per_request)
        if not header_ok:
            auth.check_capture(request, payload)
        try:
            if v1:
                events = parse_v1_batch(payload, request.headers.get("posthog-sdk-info"))
            else:
                events = parse_payload(payload)
        except EventParseError as exc:
            runtime.ingestor.count_invalid(source)
            raise HttpError(400, str(exc)[:300], reason="invalid_event") from None
        if len(events) > settings.max_events_per_request:
            raise HttpError(413, _too_many(settings.max_events_per_request), reason="too_many_events")
        return events

    async def receive(request: Request, source: str, capture: bool, v1: bool = False) -> Response:
        if capture and proxy is not None:  # PostHog decides first; we store what it accepted
            return await proxy_capture(request, v1)
        # credentials first: a request the headers already refuse is answered before its body is read
        if capture:
            header_ok = auth.capture_header_ok(request)
        else:
            auth.check_webhook_header(request)
            header_ok = True
        depth = await run_in_threadpool(runtime.outbox.depth, 1.0)  # may wait for the database lock
        if depth >= settings.max_queue:
            raise HttpError(503, f"outbox holds {depth} operations (MAX_QUEUE {settings.max_queue}); retry later", {"Retry-After": "30"})
        raw = await read_body(request, settings.max_body_bytes)
        if not capture and auth.verifier is not None:
            await run_in_threadpool(auth.check_signature, request, raw)
        events = await run_in_threadpool(parse_events, request, raw, source, header_ok, v1)
        try:
            report = await run_in_threadpool(commit_events, events, source)
        except DATABASE_ERRORS as exc:
            log.error("cannot write to the outbox: %s", exc)
            raise HttpError(503, f"outbox unavailable: {exc}", {"Retry-After": "10"}) from None
        except (ValueError, RecursionError, UnicodeError) as exc:  # an event that cannot be encoded
            runtime.ingestor.count_invalid(source)
            raise HttpError(400, f"event cannot be stored: {type(exc).__name__}: {str(exc)[:200]}") from None
        deliverer = runtime.current_deliverer
        if deliverer is not None:
            deliverer.notify()
        answer: dict[str, Any] = {"status": 1, "accepted": report.events, "operations": report.operations}
        if v1:  # capture v1 clients read a per-event verdict keyed by uuid
            answer["results"] = {event.uuid: {"result": "ok"} for event in events if event.uuid}
        return JSONResponse(answer)

    async def webhook(request: Request) -> Response:
        return await receive(request, "webhook", capture=False)

    async def capture(request: Request) -> Response:
        return await receive(request, "capture", capture=True)

    async def capture_v1(request: Request) -> Response:
        return await receive(request, "capture", capture=True, v1=True)

    if ingest:
        app.add_api_route(
            "/webhook", webhook, methods=["POST"],
            summary="PostHog webhook / Hog destination body, plugin-style or export-style events",
            responses=apidoc.INGEST_RESPONSES, openapi_extra=apidoc.INGEST_BODY,
        )
        for path in _CAPTURE_PATHS:
            for variant in (path, path + "/"):
                app.add_api_route(
                    variant, capture, methods=["POST"], summary="PostHog capture API",
                    include_in_schema=not variant.endswith("/"),
                    responses=apidoc.INGEST_RESPONSES, openapi_extra=apidoc.INGEST_BODY,
                )
        for variant in (_CAPTURE_V1_PATH, _CAPTURE_V1_PATH + "/"):
            app.add_api_route(
                variant, capture_v1, methods=["POST"], include_in_schema=not variant.endswith("/"),
                summary="PostHog capture v1 (posthog-python capture_mode=\"v1\"): {\"batch\": [...]}, Bearer token",
                responses=apidoc.INGEST_RESPONSES, openapi_extra=apidoc.INGEST_BODY,
            )
        if proxy is None:
            _add_standalone_posthog_routes(app, settings.max_body_bytes)
        else:
            for path in ("/flags", "/flags/", "/decide", "/decide/", "/s", "/s/{rest:path}", "/array/{rest:path}",
                         "/static/{rest:path}", "/i/{rest:path}"):
                app.add_api_route(path, forward, methods=_FORWARDED_METHODS, include_in_schema=False)

    @app.get("/healthz", summary="Liveness, delivery state and Customer.io's state (no personal data)",
             responses=apidoc.HEALTH_RESPONSES)
    async def healthz() -> JSONResponse:
        deliverer = runtime.current_deliverer
        health = {
            "status": "ok",
            "delivery": deliverer.state if deliverer else "off",
            "auth_error": scrub(deliverer.auth_error) if deliverer else None,
            "customerio": probe.view(),
            **(deliverer.health() if deliverer else {}),
        }
        if health["delivery"] == "down":  # every worker died (the supervisor keeps restarting them)
            health["status"] = "degraded"
        return JSONResponse(health, status_code=200 if health["status"] == "ok" else 503)

    @app.get("/readyz", summary="Readiness: can accept events (outbox writable, below MAX_QUEUE)",
             responses=apidoc.READY_RESPONSES)
    async def readyz() -> JSONResponse:
        problems = await readiness.current()
        return JSONResponse({"ready": not problems, "problems": problems}, status_code=503 if problems else 200)

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse,
             responses=apidoc.METRICS_RESPONSES)
    def metrics_endpoint() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/api/status", summary="Throughput, queue, errors and dead letters as JSON",
             responses=apidoc.STATUS_RESPONSES)
    async def api_status() -> JSONResponse:
        status = await run_in_threadpool(build_status, runtime, sampler)
        return JSONResponse({**status, "customerio": probe.view()})

    @app.get("/api/dead-letters", summary="Dead-lettered operations", responses=apidoc.DEAD_LETTER_RESPONSES)
    def api_dead_letters(limit: int = 100) -> JSONResponse:
        return JSONResponse(dead_letter_rows(runtime, max(1, min(limit, 10_000))))

    @app.post("/api/dead-letters/retry", summary="Re-queue dead letters: {} for all, or {\"ids\": [...]} (JSON only)",
              responses=apidoc.RETRY_RESPONSES, openapi_extra=apidoc.RETRY_BODY)
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

    @app.get("/status", response_class=HTMLResponse, summary="Status page", responses=apidoc.PAGE_RESPONSES)
    def status_page() -> HTMLResponse:
        page = resources.files("posthog_customerio").joinpath("static/status.html").read_text()
        return HTMLResponse(page)

    if ingest and proxy is not None:  # last: this service's own /api/* routes match first
        app.add_api_route("/api/{rest:path}", forward, methods=_FORWARDED_METHODS, include_in_schema=False)
    generate_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = apidoc.add_ops_security(generate_openapi(), is_ops_path)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


_FORWARDED_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_COMPRESSION = ["gzip", "gzip-js"]
#: standalone answers: no feature flags, session recording and every remote feature off, capture on
_FLAGS_ANSWER = {"flags": {}, "featureFlags": {}, "featureFlagPayloads": {}, "errorsWhileComputingFlags": False}
_DECIDE_ANSWER = {
    **_FLAGS_ANSWER, "config": {"enable_collect_everything": True}, "sessionRecording": False,
    "supportedCompression": _COMPRESSION, "toolbarParams": {}, "isAuthenticated": False, "siteApps": [],
    "heatmaps": False, "surveys": False, "autocaptureExceptions": False, "capturePerformance": False,
}


def _remote_config(token: str) -> dict[str, Any]:
    return {
        "token": token, "supportedCompression": _COMPRESSION, "hasFeatureFlags": False, "sessionRecording": False,
        "heatmaps": False, "surveys": False, "siteApps": [], "captureDeadClicks": False, "capturePerformance": False,
        "autocaptureExceptions": False, "defaultIdentifiedOnly": True, "elementsChainAsString": True,
    }


def _script_json(value: Any) -> str:
    """JSON that is safe inside a <script> (no closing tags, no line separators)."""
    text = json.dumps(value, separators=(",", ":"))
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text


def _add_standalone_posthog_routes(app: FastAPI, limit: int) -> None:
    """Without POSTHOG_HOST: minimal valid answers so posthog-js keeps capturing (PostHog gets nothing)."""

    async def flags(request: Request) -> JSONResponse:
        if request.method == "POST":
            await read_body(request, limit)
        return JSONResponse(_FLAGS_ANSWER)

    async def decide(request: Request) -> JSONResponse:
        if request.method == "POST":
            await read_body(request, limit)
        return JSONResponse(_DECIDE_ANSWER)

    async def remote_config(token: str) -> JSONResponse:
        return JSONResponse(_remote_config(token))

    async def remote_config_js(token: str) -> Response:
        config = _script_json(_remote_config(token))
        script = (
            "(function(){var w=window;w._POSTHOG_REMOTE_CONFIG=w._POSTHOG_REMOTE_CONFIG||{};"
            f"w._POSTHOG_REMOTE_CONFIG[{_script_json(token)}]={{config:{config},siteApps:[]}};}})();\n"
        )
        return Response(script, media_type="application/javascript")

    async def recordings(request: Request) -> JSONResponse:
        await read_body(request, limit)  # session recording is off; a recording sent anyway is dropped
        return JSONResponse({"status": 1})

    for path, handler, summary in (
        ("/flags", flags, "Feature flags (standalone: none; with POSTHOG_HOST: PostHog's)"),
        ("/decide", decide, "Legacy decide (standalone: no flags, recording off)"),
    ):
        for method in ("GET", "POST"):
            for variant in (path, path + "/"):
                app.add_api_route(variant, handler, methods=[method], include_in_schema=variant == path, summary=summary,
                                  operation_id=f"{path.strip('/')}_{method.lower()}" if variant == path else None,
                                  responses=apidoc.error_responses(400, 413) if method == "POST" else None)
    app.add_api_route("/array/{token}/config", remote_config, methods=["GET"],
                      summary="posthog-js remote config (standalone: every remote feature off)")
    app.add_api_route("/array/{token}/config.js", remote_config_js, methods=["GET"], response_class=Response,
                      summary="posthog-js remote config script (standalone: every remote feature off)",
                      responses={200: {"description": "A script", "content": {"application/javascript": {
                          "schema": {"type": "string"}}}}})
    for path in ("/s", "/s/"):
        app.add_api_route(path, recordings, methods=["POST"], include_in_schema=path == "/s",
                          summary="Session recordings (standalone: accepted and dropped)",
                          responses=apidoc.error_responses(400, 413))
