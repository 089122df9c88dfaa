"""PostHog's other browser-facing paths: minimal standalone answers, or forwarded to ``POSTHOG_HOST``.

Standalone, posthog-js keeps capturing: no feature flags, session recording and every remote
feature off (PostHog gets nothing). As a proxy, every PostHog path is forwarded and PostHog's
answer streamed back.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from . import apidoc
from .bodies import HttpError, read_body
from .context import service_of
from .paths import is_posthog_path
from .proxy import PathRefused, ProxyError

__all__ = ["FORWARDED_METHODS", "add_forwarding_routes", "add_standalone_routes", "forward"]

log = logging.getLogger(__name__)

FORWARDED_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_COMPRESSION = ["gzip", "gzip-js"]
#: standalone answers: no feature flags, session recording and every remote feature off, capture on
_FLAGS_ANSWER = {"flags": {}, "featureFlags": {}, "featureFlagPayloads": {}, "errorsWhileComputingFlags": False}
_DECIDE_ANSWER = {
    **_FLAGS_ANSWER,
    "config": {"enable_collect_everything": True},
    "sessionRecording": False,
    "supportedCompression": _COMPRESSION,
    "toolbarParams": {},
    "isAuthenticated": False,
    "siteApps": [],
    "heatmaps": False,
    "surveys": False,
    "autocaptureExceptions": False,
    "capturePerformance": False,
}
_SCRIPT_ESCAPES = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))


def _remote_config(token: str) -> dict[str, Any]:
    return {
        "token": token,
        "supportedCompression": _COMPRESSION,
        "hasFeatureFlags": False,
        "sessionRecording": False,
        "heatmaps": False,
        "surveys": False,
        "siteApps": [],
        "captureDeadClicks": False,
        "capturePerformance": False,
        "autocaptureExceptions": False,
        "defaultIdentifiedOnly": True,
        "elementsChainAsString": True,
    }


def _script_json(value: Any) -> str:
    """JSON that is safe inside a <script> (no closing tags, no line separators)."""
    text = json.dumps(value, separators=(",", ":"))
    for char, escape in _SCRIPT_ESCAPES:
        text = text.replace(char, escape)
    return text


async def _drain(request: Request) -> None:
    await read_body(request, service_of(request).config.max_body_bytes)


# route handlers carry no docstring: FastAPI would publish it as the OpenAPI description
async def flags(request: Request) -> JSONResponse:
    if request.method == "POST":
        await _drain(request)
    return JSONResponse(_FLAGS_ANSWER)


async def decide(request: Request) -> JSONResponse:
    if request.method == "POST":
        await _drain(request)
    return JSONResponse(_DECIDE_ANSWER)


#: what ``/flags`` and ``/decide`` answer to (``Allow``): GET, POST, and OPTIONS itself
_FLAGS_ALLOW = "GET, POST, OPTIONS"
#: the other standard methods: answered 405 with that ``Allow`` (not the first route's alone)
_NOT_ALLOWED = ["HEAD", "PUT", "PATCH", "DELETE", "TRACE"]


async def flags_options() -> Response:
    return Response(status_code=204, headers={"Allow": _FLAGS_ALLOW})


async def flags_not_allowed() -> JSONResponse:
    return JSONResponse(
        {"error": "method not allowed here (GET or POST)"}, status_code=405, headers={"Allow": _FLAGS_ALLOW}
    )


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
    await _drain(request)  # session recording is off; a recording sent anyway is dropped
    return JSONResponse({"status": 1})


async def forward(request: Request) -> Response:
    # any other PostHog path: forwarded, PostHog's answer streamed back
    service = service_of(request)
    proxy = service.proxy
    assert proxy is not None
    if not is_posthog_path(request.url.path):
        return JSONResponse({"error": "not found"}, status_code=404)
    try:
        proxy.check_path(request)  # forwarded exactly as sent, or not at all
        body = b"" if request.method in ("GET", "HEAD") else await read_body(request, service.config.max_body_bytes)
        response = await proxy.stream(request, body)
    except PathRefused as exc:
        raise HttpError(400, str(exc), reason="dot_segment") from None
    except ProxyError as exc:
        service.requests_log.proxied_request("error", f"proxy {request.url.path}: {exc}")
        log.warning("proxy %s: %s", request.url.path, exc)
        return JSONResponse({"error": f"{exc}; retry later"}, status_code=502, headers={"Retry-After": "5"})
    service.requests_log.proxied_request(str(response.status_code))
    return response


def add_standalone_routes(app: FastAPI) -> None:
    """Without POSTHOG_HOST: minimal valid answers so posthog-js keeps capturing (PostHog gets nothing)."""
    for path, handler, summary in (
        ("/flags", flags, "Feature flags (standalone: none; with POSTHOG_HOST: PostHog's)"),
        ("/decide", decide, "Legacy decide (standalone: no flags, recording off)"),
    ):
        for method in ("GET", "POST"):
            for variant in (path, path + "/"):
                app.add_api_route(
                    variant,
                    handler,
                    methods=[method],
                    include_in_schema=variant == path,
                    summary=summary,
                    operation_id=f"{path.strip('/')}_{method.lower()}" if variant == path else None,
                    responses=apidoc.error_responses(400, 413) if method == "POST" else None,
                )
        for variant in (path, path + "/"):
            app.add_api_route(
                variant,
                flags_options,
                methods=["OPTIONS"],
                include_in_schema=variant == path,
                summary="The methods allowed (Allow); a CORS preflight gets the CORS answer",
                operation_id=f"{path.strip('/')}_options" if variant == path else None,
                status_code=204,
                response_class=Response,
                responses=apidoc.OPTIONS_RESPONSES,
            )
            app.add_api_route(variant, flags_not_allowed, methods=_NOT_ALLOWED, include_in_schema=False)
    app.add_api_route(
        "/array/{token}/config",
        remote_config,
        methods=["GET"],
        summary="posthog-js remote config (standalone: every remote feature off)",
    )
    app.add_api_route(
        "/array/{token}/config.js",
        remote_config_js,
        methods=["GET"],
        response_class=Response,
        summary="posthog-js remote config script (standalone: every remote feature off)",
        responses={200: apidoc.text_response("A script", "application/javascript")},
    )
    for path in ("/s", "/s/"):
        app.add_api_route(
            path,
            recordings,
            methods=["POST"],
            include_in_schema=path == "/s",
            summary="Session recordings (standalone: accepted and dropped)",
            responses=apidoc.error_responses(400, 413),
        )


def add_forwarding_routes(app: FastAPI) -> None:
    """With POSTHOG_HOST: PostHog's paths besides capture go to PostHog (``/api/*`` comes last, see ``create_app``)."""
    for path in (
        "/flags",
        "/flags/",
        "/decide",
        "/decide/",
        "/s",
        "/s/{rest:path}",
        "/array/{rest:path}",
        "/static/{rest:path}",
        "/i/{rest:path}",
    ):
        app.add_api_route(path, forward, methods=FORWARDED_METHODS, include_in_schema=False)
