"""The sandbox's inspection and control routes under ``/_sandbox/`` (no auth): what arrived, reset, faults, keys.

Each answers JSON from the app's :class:`~.state.SandboxState`: people (one by id, email or cio_id), events,
anonymous events, objects, requests (``?limit=N`` for the last N), stats, attribute update failures,
suppressions, ignored calls, delivery metrics, forms, segments; ``POST reset``; ``GET``/``POST``/``DELETE
faults``; ``POST credentials``.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .state import state_of
from .wire import json_response, parse_body


async def _people(request: Request) -> Response:
    return json_response(200, state_of(request).people())


async def _person(request: Request) -> Response:
    person = state_of(request).person(request.path_params["identifier"])
    return json_response(200, person) if person is not None else json_response(404, {"error": "not found"})


async def _events(request: Request) -> Response:
    return json_response(200, state_of(request).events(request.query_params.get("person")))


async def _anonymous_events(request: Request) -> Response:
    return json_response(200, state_of(request).anonymous_events())


async def _objects(request: Request) -> Response:
    return json_response(200, state_of(request).objects())


async def _requests(request: Request) -> Response:
    entries = state_of(request).requests()
    limit = request.query_params.get("limit")
    if limit is not None and limit.isdigit():
        entries = entries[-int(limit) :] if int(limit) else []
    return json_response(200, entries)


async def _stats(request: Request) -> Response:
    return json_response(200, state_of(request).stats())


async def _failures(request: Request) -> Response:
    return json_response(200, state_of(request).attribute_update_failures())


async def _suppressions(request: Request) -> Response:
    return json_response(200, state_of(request).suppressions())


async def _ignored(request: Request) -> Response:
    return json_response(200, state_of(request).ignored())


async def _delivery_metrics(request: Request) -> Response:
    return json_response(200, state_of(request).delivery_metrics())


async def _forms(request: Request) -> Response:
    return json_response(200, state_of(request).form_submissions())


async def _segments(request: Request) -> Response:
    return json_response(200, state_of(request).segments())


async def _reset(request: Request) -> Response:
    state_of(request).reset()
    return json_response(200, {})


async def _json_object(request: Request) -> dict[str, Any] | None:
    parsed = parse_body(await request.body())
    return parsed if isinstance(parsed, dict) else None


async def _faults(request: Request) -> Response:
    state = state_of(request)
    if request.method == "DELETE":
        state.clear_faults()
        return json_response(200, {})
    if request.method == "GET":
        return json_response(200, state.faults())
    body = await _json_object(request)
    if body is None:
        return json_response(400, {"error": "body must be a JSON object"})
    try:
        fault = state.add_fault(
            status=body.get("status"),
            count=body.get("count"),
            duration_s=body.get("duration_s"),
            retry_after=body.get("retry_after"),
            delay_s=body.get("delay_s", 0.0),
            body=body.get("body"),
        )
    except ValueError as exc:
        return json_response(400, {"error": str(exc)})
    return json_response(200, fault)


async def _credentials(request: Request) -> Response:
    body = await _json_object(request)
    site_id = body.get("site_id") if body else None
    api_key = body.get("api_key") if body else None
    if not isinstance(site_id, str) or not isinstance(api_key, str):
        return json_response(400, {"error": "site_id and api_key must be strings"})
    state_of(request).set_credentials(site_id, api_key)
    return json_response(200, {})


def routes() -> list[Route]:
    """The ``/_sandbox/`` routes (the app needs ``state.sandbox``)."""
    return [
        Route("/_sandbox/people", _people),
        Route("/_sandbox/people/{identifier:path}", _person),
        Route("/_sandbox/events", _events),
        Route("/_sandbox/anonymous_events", _anonymous_events),
        Route("/_sandbox/objects", _objects),
        Route("/_sandbox/requests", _requests),
        Route("/_sandbox/stats", _stats),
        Route("/_sandbox/attribute_update_failures", _failures),
        Route("/_sandbox/suppressions", _suppressions),
        Route("/_sandbox/ignored", _ignored),
        Route("/_sandbox/delivery_metrics", _delivery_metrics),
        Route("/_sandbox/forms", _forms),
        Route("/_sandbox/segments", _segments),
        Route("/_sandbox/reset", _reset, methods=["POST"]),
        Route("/_sandbox/faults", _faults, methods=["GET", "POST", "DELETE"]),
        Route("/_sandbox/credentials", _credentials, methods=["POST"]),
    ]
