"""``POST /webhooks/customerio``: Customer.io's reporting webhooks, verified, stored, answered at once.

Verify the signature over the raw body (401 when it is missing, wrong or stale), parse (400 when the body is not
a reporting webhook), store durably under the ``event_id`` (:class:`~..activity.ActivityInbox`), answer 200;
capture into PostHog happens later (:class:`~..activity.ActivityRelay`), so the answer comes well within
Customer.io's 4 s timeout (https://docs.customer.io/api/webhooks/, "Timeouts and failures"). A refused request
stores nothing.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from ..sources.customerio_activity import ActivityError, SignatureError, parse_activity, verify_signature
from . import apidoc
from .bodies import HttpError, read_body
from .context import service_of

__all__ = ["ACTIVITY_PATH", "add_activity_routes"]

ACTIVITY_PATH = "/webhooks/customerio"


class ActivityStored(BaseModel):
    """The answer to a stored reporting webhook."""

    status: str = Field(description='"ok"')
    stored: bool = Field(description="False: this event_id was stored before (a retry); nothing stored again")
    event_id: str = Field(description="Customer.io's event_id")


#: the request body as declared (the handler reads the raw bytes: the signature covers them)
_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["event_id", "object_type", "metric", "timestamp"],
                    "properties": {
                        "event_id": {"type": "string"},
                        "object_type": {"type": "string"},
                        "metric": {"type": "string"},
                        "timestamp": {"type": "integer"},
                        "data": {"type": "object"},
                    },
                }
            }
        },
    },
    "parameters": [
        {"name": "X-CIO-Timestamp", "in": "header", "required": False, "schema": {"type": "string"}},
        {"name": "X-CIO-Signature", "in": "header", "required": False, "schema": {"type": "string"}},
    ],
}


def add_activity_routes(app: FastAPI) -> None:
    """Register the reporting webhooks' receiver."""
    app.add_api_route(
        ACTIVITY_PATH,
        receive_activity,
        methods=["POST"],
        summary="Customer.io reporting webhook (message activity into PostHog), signed with X-CIO-Signature",
        response_model=ActivityStored,
        responses={
            200: {"description": "Stored (or stored before); captured into PostHog later"},
            **apidoc.error_responses(400, 401, 413),
        },
        openapi_extra=_BODY,
    )


async def receive_activity(request: Request) -> JSONResponse:
    """Verify, parse and store one reporting webhook."""
    runtime = service_of(request).runtime
    config = runtime.activity_config()
    stats, inbox = runtime.activity
    stats.add("received")
    if not config.signing_key:  # nothing can be verified: refused as unauthenticated (Customer.io retries)
        stats.reject("not_configured")
        message = "reporting webhooks are off: set CUSTOMERIO_WEBHOOK_SIGNING_KEY"
        raise HttpError(401, message, reason="customerio_webhook_signing_key_unset")
    try:
        body = await read_body(request, config.max_body_bytes)
    except HttpError as exc:
        stats.reject(exc.reason)
        raise
    try:
        verify_signature(config.signing_key, request.headers, body, config.tolerance_s)
    except SignatureError as exc:
        stats.reject(exc.reason)
        raise HttpError(401, str(exc), reason=f"customerio_{exc.reason}") from None
    stats.add("verified")
    try:
        activity = parse_activity(body)
    except ActivityError as exc:
        stats.reject("not_a_reporting_webhook")
        raise HttpError(400, f"not a Customer.io reporting webhook: {exc}", reason="customerio_bad_webhook") from None
    new = await run_in_threadpool(inbox.store, activity)
    if runtime.activity_relay is not None:
        runtime.activity_relay.notify()
    return JSONResponse({"status": "ok", "stored": new, "event_id": activity.event_id})
