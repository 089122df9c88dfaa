"""The sandbox's Track API entry points: every ``/api/...`` request, and ``POST /unsubscribe/{delivery_id}``.

An ``/api`` request goes through the fault rules (:mod:`.faults`), then the credentials (:mod:`.credentials`;
push metrics and ``metrics`` need none), then :mod:`.track_v1` or :mod:`.track_v2`, and is logged
(:mod:`.requests_log`) whatever the answer. A sandbox bug answers 500 and the sandbox keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import track_v1, track_v2
from .credentials import OPEN_ROUTES, UNAUTHORIZED
from .faults import fault_response
from .requests_log import logged_body
from .state import SandboxState, state_of
from .wire import JSON, Answer, Call, json_response, parse_body, raw_path

logger = logging.getLogger(__name__)


def _dispatch(state: SandboxState, call: Call) -> Answer:
    """Route an authorised /api request to its handler (404 when none matches)."""
    version, rest = call.segments[:1], call.segments[1:]
    answer = None
    if version == ["v2"]:
        answer = track_v2.handle(state.workspace, call, rest)
    elif version == ["v1"]:
        answer = track_v1.handle(state.workspace, call, rest)
    return answer if answer is not None else (404, {"meta": {"error": "Not found"}})


async def _api(request: Request) -> Response:
    """Every ``/api/...`` request: faults, auth, dispatch, request log."""
    state = state_of(request)
    received = time.time()
    body = await request.body()
    parsed = parse_body(body)
    path = raw_path(request.scope)
    fault = state.fault_rules.take()
    if fault is not None and fault.delay_s:
        await asyncio.sleep(fault.delay_s)
    segments = path.split("/")[2:]
    if fault is not None and fault.status is not None:
        response = fault_response(fault)
    elif segments not in OPEN_ROUTES and not state.credentials.authorized(request.headers.get("authorization")):
        response = json_response(401, UNAUTHORIZED)
    else:
        call = Call(
            request.method,
            segments,
            body,
            parsed,
            str(request.base_url).rstrip("/"),
            request.app.state.region,
            dict(request.query_params),
        )
        try:
            status, payload = _dispatch(state, call)
        except Exception as exc:  # a sandbox bug: answer 500, keep serving
            logger.exception("sandbox failed on %s %s", request.method, path)
            state.log.count_internal_error()
            status, payload = 500, {"meta": {"error": f"sandbox internal error: {exc!r}"}}
        response = json_response(status, payload)
    state.log.append(
        {
            "method": request.method,
            "path": path,
            "query": request.scope.get("query_string", b"").decode("latin-1"),
            "body": logged_body(body, parsed),
            "status": response.status_code,
            "time": received,
            "answered": time.time(),
            "bytes": len(body),
        }
    )
    return response


async def _unsubscribe(request: Request) -> Response:
    """``POST /unsubscribe/{delivery_id}`` (spec ``unsubscribe``): no auth, JSON content type required.

    The sandbox sends no messages, so it cannot know whose delivery this is: it records the request as an
    ``unsubscribed`` delivery metric (with the ``unsubscribe`` flag) instead of setting an attribute.
    """
    state = state_of(request)
    body = await request.body()
    parsed: Any = parse_body(body)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    delivery_id = unquote(raw_path(request.scope).split("/")[2])
    if content_type != JSON or not isinstance(parsed, dict) or not delivery_id:
        message = "a JSON body with Content-Type: application/json is required"
        response = json_response(400, {"meta": {"error": message}})
    elif "unsubscribe" in parsed and not isinstance(parsed["unsubscribe"], bool):
        response = json_response(400, {"meta": {"error": "unsubscribe must be a boolean"}})
    else:
        state.workspace.record_metric(
            "unsubscribe",
            {
                "delivery_id": delivery_id,
                "metric": "unsubscribed",
                "unsubscribe": parsed.get("unsubscribe", True),
            },
        )
        response = json_response(200, {})
    state.log.append(
        {
            "method": request.method,
            "path": raw_path(request.scope),
            "query": request.scope.get("query_string", b"").decode("latin-1"),
            "body": logged_body(body, parsed),
            "status": response.status_code,
            "time": time.time(),
            "bytes": len(body),
        }
    )
    return response


def routes() -> list[Route]:
    """The Track API routes (the app needs ``state.sandbox`` and ``state.region``)."""
    return [
        Route("/api/{rest:path}", _api, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
        Route("/unsubscribe/{delivery_id}", _unsubscribe, methods=["POST"]),
    ]
