"""Customer.io reporting webhooks as Customer.io sends them (signed), for the activity tests."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from posthog_customerio.sources.customerio_activity import sign

__all__ = ["SIGNING_KEY", "activity_body", "post_activity", "signed_headers"]

SIGNING_KEY = "cio-reporting-signing-key-0123456789"


def activity_body(
    event_id: str,
    object_type: str = "email",
    metric: str = "opened",
    *,
    customer_id: str | None = "u1",
    email: str | None = None,
    cio_id: str | None = None,
    timestamp: int = 1_704_067_200,
    **data: Any,
) -> dict[str, Any]:
    """A reporting webhook's JSON (``data`` adds fields of ``data``)."""
    identifiers = {k: v for k, v in (("id", customer_id), ("email", email), ("cio_id", cio_id)) if v is not None}
    fields: dict[str, Any] = {"identifiers": identifiers, **data}
    if customer_id is not None:
        fields["customer_id"] = customer_id
    if email is not None:
        fields.setdefault("email_address", email)
    return {"event_id": event_id, "object_type": object_type, "metric": metric, "timestamp": timestamp, "data": fields}


def signed_headers(body: bytes, key: str = SIGNING_KEY, timestamp: int | None = None) -> dict[str, str]:
    """The headers Customer.io signs ``body`` with."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    return {"x-cio-timestamp": stamp, "x-cio-signature": sign(key, stamp, body), "content-type": "application/json"}


def post_activity(
    url: str, body: dict[str, Any] | bytes, key: str = SIGNING_KEY, timestamp: int | None = None
) -> httpx.Response:
    """POST one signed reporting webhook to the service at ``url``."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{url}/webhooks/customerio", content=raw, headers=signed_headers(raw, key, timestamp))
