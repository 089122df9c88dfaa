"""Customer.io's reporting webhooks in: the signature check over the raw body, and one typed :class:`Activity`.

Customer.io signs each reporting webhook with the webhook's signing key: ``X-CIO-Signature`` is the hex
HMAC-SHA256 of ``"v0:" + X-CIO-Timestamp + ":" + raw body`` (https://docs.customer.io/api/webhooks/,
"Securely verify requests"). We compare in constant time and refuse a timestamp further than a tolerance
from our clock (a replayed old request). The payload is ``{"event_id", "object_type", "metric",
"timestamp", "data"}`` (https://docs.customer.io/api/webhooks/, "Reporting webhooks"); only the fields of
:data:`DATA_FIELDS` are kept: never a message body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..mapping.activity import Activity
from .json_strict import loads_strict

__all__ = [
    "DATA_FIELDS",
    "METRICS",
    "OBJECT_TYPES",
    "Activity",
    "ActivityError",
    "SignatureError",
    "parse_activity",
    "sign",
    "verify_signature",
]

#: the object types of reporting webhooks (https://docs.customer.io/api/webhooks/)
OBJECT_TYPES = frozenset({"customer", "email", "sms", "push", "in_app", "slack", "webhook"})
#: the metrics of reporting webhooks, all object types together (https://docs.customer.io/api/webhooks/)
METRICS = frozenset(
    {
        "sent",
        "delivered",
        "opened",
        "clicked",
        "converted",
        "bounced",
        "failed",
        "dropped",
        "spammed",
        "deferred",
        "attempted",
        "drafted",
        "undeliverable",
        "unsubscribed",
        "subscribed",
        "cio_subscription_preferences_changed",
    }
)
#: what we keep of ``data`` (strings or numbers): ids, action, subject, link, failure, device platform
DATA_FIELDS = (
    "delivery_id",
    "campaign_id",
    "broadcast_id",
    "newsletter_id",
    "transactional_message_id",
    "action_id",
    "journey_id",
    "parent_action_id",
    "subject",
    "href",
    "link_id",
    "failure_message",
    "device_platform",
)
#: identifiers Customer.io gives for the profile (``data.identifiers``)
IDENTIFIER_KEYS = ("id", "email", "cio_id")
_MAX_TEXT = 2_000


class SignatureError(ValueError):
    """A request that is not signed by the configured key, or signed too long ago (401)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ActivityError(ValueError):
    """A body that is not a reporting webhook (400)."""


def sign(key: str, timestamp: str, body: bytes) -> str:
    """The hex signature Customer.io sends for ``body`` at ``timestamp`` (also what tests sign with)."""
    message = b"v0:" + timestamp.encode("ascii") + b":" + body
    return hmac.new(key.encode("utf-8"), message, hashlib.sha256).hexdigest()


def verify_signature(
    key: str,
    headers: Mapping[str, str],
    body: bytes,
    tolerance_s: float,
    now: Callable[[], float] = time.time,
) -> None:
    """Raise :class:`SignatureError` unless ``body`` carries a fresh signature by ``key`` (raw bytes, constant time)."""
    timestamp, signature = headers.get("x-cio-timestamp"), headers.get("x-cio-signature")
    if not timestamp or not signature:
        raise SignatureError("missing_signature", "missing X-CIO-Timestamp or X-CIO-Signature")
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        raise SignatureError("bad_timestamp", "X-CIO-Timestamp is not Unix seconds")
    expected = sign(key, timestamp, body)
    if not hmac.compare_digest(expected.encode("ascii"), signature.strip().lower().encode("ascii", "replace")):
        raise SignatureError(
            "bad_signature", "X-CIO-Signature does not match the body and CUSTOMERIO_WEBHOOK_SIGNING_KEY"
        )
    if abs(now() - int(timestamp)) > tolerance_s:  # checked after the signature: a forged timestamp is a bad signature
        raise SignatureError("stale_timestamp", f"X-CIO-Timestamp is more than {tolerance_s:g}s from now")


def parse_activity(body: bytes) -> Activity:
    """The :class:`Activity` of a reporting webhook's body, or :class:`ActivityError` saying what is wrong."""
    try:
        raw = loads_strict(body)
    except ValueError as exc:
        raise ActivityError(f"not JSON: {str(exc)[:200]}") from None
    if not isinstance(raw, dict):
        raise ActivityError("a reporting webhook is a JSON object")
    event_id = _text(raw.get("event_id"), "event_id")
    object_type, metric = _text(raw.get("object_type"), "object_type"), _text(raw.get("metric"), "metric")
    if object_type not in OBJECT_TYPES:
        raise ActivityError(f"object_type must be one of {', '.join(sorted(OBJECT_TYPES))}")
    if metric not in METRICS:
        raise ActivityError(f"metric {metric[:60]!r} is not a reporting webhook metric")
    timestamp = raw.get("timestamp")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float) or not 0 <= timestamp < 1e11:
        raise ActivityError("timestamp must be Unix seconds")
    data = raw.get("data", {})
    if not isinstance(data, dict):
        raise ActivityError("data must be an object")
    identifiers = data.get("identifiers") or {}
    if not isinstance(identifiers, dict):
        raise ActivityError("data.identifiers must be an object")
    return Activity(
        event_id=event_id,
        object_type=object_type,
        metric=metric,
        timestamp=int(timestamp),
        identifiers={k: str(identifiers[k]) for k in IDENTIFIER_KEYS if _present(identifiers.get(k))},
        customer_id=str(data["customer_id"]) if _present(data.get("customer_id")) else None,
        data={k: _short(data[k]) for k in DATA_FIELDS if _present(data.get(k))},
        preferences=_preferences(data) if metric == "cio_subscription_preferences_changed" else None,
    )


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise ActivityError(f"{name} must be a non-empty string")
    return value.strip()


def _present(value: Any) -> bool:
    return (isinstance(value, str) and value.strip() != "") or (
        isinstance(value, int | float) and not isinstance(value, bool)
    )


def _short(value: str | int | float) -> str | int | float:
    return value[:_MAX_TEXT] if isinstance(value, str) else value


def _preferences(data: dict[str, Any]) -> dict[str, Any] | None:
    """The subscription preferences of ``data.content`` (a JSON string, or an object), when it holds any."""
    content = data.get("content")
    if isinstance(content, str):
        try:
            content = json.loads(content)
        except ValueError:
            return None
    return content if isinstance(content, dict) and content else None
