"""The Pipelines API over HTTP: ``POST /v1/...`` (faults, auth, validation, apply) and the
``/_sandbox/pipelines/`` views."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, cast

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..faults import fault_response
from ..wire import json_response
from .calls import CALL_TYPES, MAX_CALL_BYTES, MAX_REQUEST_BYTES, Call, PipelinesError, object_field, validate_call
from .state import PipelinesState

__all__ = ["routes"]


def _state(request: Request) -> PipelinesState:
    return cast(PipelinesState, request.app.state.pipelines)


def _parse(body: bytes, path: str) -> list[Call]:
    """Validate a whole request body; raises :class:`PipelinesError`."""
    if len(body) > MAX_REQUEST_BYTES:
        raise PipelinesError("request_too_large", f"request exceeds {MAX_REQUEST_BYTES} bytes")
    try:
        parsed = json.loads(body) if body.strip() else None
    except (ValueError, UnicodeDecodeError):
        raise PipelinesError("invalid_json", "request body is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise PipelinesError("invalid_body", "request body must be a JSON object")
    kind = path.rsplit("/", 1)[-1]
    if kind != "batch":
        if len(body) > MAX_CALL_BYTES:
            raise PipelinesError("call_too_large", f"call exceeds {MAX_CALL_BYTES} bytes")
        parsed.setdefault("type", kind)
        if parsed["type"] != kind:
            raise PipelinesError("invalid_type", f"type must be {kind!r} on /v1/{kind}")
        return [validate_call(parsed)]
    batch = parsed.get("batch")
    if not isinstance(batch, list):
        raise PipelinesError("invalid_body", 'request body must have a "batch" list')
    context = object_field(parsed, "context")
    calls = []
    for index, raw in enumerate(batch):
        if context and isinstance(raw, dict) and isinstance(raw.get("context", {}), dict):
            raw["context"] = {**context, **(raw.get("context") or {})}  # batch context applies to every call
        calls.append(validate_call(raw, f"batch[{index}]"))
    return calls


async def _v1(request: Request) -> Response:
    """Every ``POST /v1/...`` call: faults, auth, validation, apply (strict or permissive)."""
    state = _state(request)
    body = await request.body()
    strict = request.headers.get("x-strict-mode") == "1"
    fault = state.take_fault()
    if fault is not None and fault.delay_s:
        await asyncio.sleep(fault.delay_s)
    applied = 0
    if fault is not None and fault.status is not None:
        response = fault_response(fault, {"code": "injected", "message": "sandbox fault"})
    elif not state.authorized(request.headers.get("authorization")):
        payload = {"code": "unauthorized", "message": "invalid Pipelines API key"}
        response = json_response(401 if strict else 200, payload if strict else {})
    else:
        try:
            calls = _parse(body, request.url.path)
        except PipelinesError as exc:
            error = {"code": exc.code, "message": exc.message}
            response = json_response(400 if strict else 200, error if strict else {})
        else:
            state.apply(calls)
            applied = len(calls)
            response = json_response(200, {})
    try:
        logged: Any = json.loads(body) if body.strip() else None
    except (ValueError, UnicodeDecodeError):
        logged = body.decode("utf-8", errors="replace")
    state.log_request(
        {
            "method": request.method,
            "path": request.url.path,
            "strict": strict,
            "status": response.status_code,
            "bytes": len(body),
            "applied": applied,
            "body": logged,
            "time": time.time(),
        }
    )
    return response


async def _people(request: Request) -> Response:
    return json_response(200, _state(request).people())


async def _person(request: Request) -> Response:
    person = _state(request).person(request.path_params["identifier"])
    return json_response(200, person) if person is not None else json_response(404, {"error": "not found"})


async def _events(request: Request) -> Response:
    return json_response(200, _state(request).events(request.query_params.get("userId")))


async def _anonymous_events(request: Request) -> Response:
    return json_response(200, _state(request).anonymous_events())


async def _failures(request: Request) -> Response:
    return json_response(200, _state(request).failures())


async def _objects(request: Request) -> Response:
    return json_response(200, _state(request).objects())


async def _requests(request: Request) -> Response:
    return json_response(200, _state(request).requests())


async def _stats(request: Request) -> Response:
    return json_response(200, _state(request).stats())


async def _reset(request: Request) -> Response:
    _state(request).reset()
    return json_response(200, {})


async def _faults(request: Request) -> Response:
    """``GET``: the active rules; ``DELETE``: none; ``POST``: add one (the fields of ``/_sandbox/faults``)."""
    state = _state(request)
    if request.method == "DELETE":
        state.fault_rules.clear()
        return json_response(200, {})
    if request.method == "GET":
        return json_response(200, state.fault_rules.views())
    try:
        body = json.loads(await request.body())
        if not isinstance(body, dict):
            raise TypeError("not an object")
        fault = state.add_fault(
            body.get("status"),
            body.get("count"),
            body.get("retry_after"),
            body.get("duration_s"),
            body.get("delay_s", 0.0),
            body.get("body"),
        )
    except (ValueError, TypeError) as exc:
        return json_response(400, {"error": f"{exc} (body: {_FAULT_FIELDS})"})
    return json_response(200, fault)


_FAULT_FIELDS = '{"status": int, "count"?: int, "duration_s"?: number, "retry_after"?: str, "delay_s"?: number}'


def routes() -> list[Route]:
    """The Pipelines API and its ``/_sandbox/pipelines`` views (the app needs ``state.pipelines``)."""
    return [
        *(Route(f"/v1/{kind}", _v1, methods=["POST"]) for kind in ("batch", *CALL_TYPES)),
        Route("/_sandbox/pipelines/people", _people),
        Route("/_sandbox/pipelines/people/{identifier:path}", _person),
        Route("/_sandbox/pipelines/events", _events),
        Route("/_sandbox/pipelines/anonymous_events", _anonymous_events),
        Route("/_sandbox/pipelines/objects", _objects),
        Route("/_sandbox/pipelines/failures", _failures),
        Route("/_sandbox/pipelines/requests", _requests),
        Route("/_sandbox/pipelines/stats", _stats),
        Route("/_sandbox/pipelines/reset", _reset, methods=["POST"]),
        Route("/_sandbox/pipelines/faults", _faults, methods=["GET", "POST", "DELETE"]),
    ]
