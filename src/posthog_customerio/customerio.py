"""Customer.io Track API client (v1 and v2): auth, region, error classification.

Every response is reduced to a :class:`SendResult` whose :class:`Outcome` tells the
delivery workers what to do: acknowledge, retry later, dead-letter, or stop.
"""

from __future__ import annotations

import email.utils
import enum
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from . import __version__

__all__ = [
    "AuthError",
    "Outcome",
    "SendResult",
    "TrackClient",
    "REGION_URLS",
    "v1_request",
    "parse_retry_after",
    "RETRY_AFTER_MAX_S",
]

REGION_URLS = {"us": "https://track.customer.io", "eu": "https://track-eu.customer.io"}
_TRANSIENT_STATUSES = frozenset({408, 425, 429})
_AUTH_STATUSES = frozenset({401, 403})
_BODY_KEEP = 2000
#: the longest pause a ``Retry-After`` may impose by default (``RETRY_AFTER_MAX_S``; = the backoff cap)
RETRY_AFTER_MAX_S = 60.0


class Outcome(enum.Enum):
    """What a response means for the operations it carried."""

    OK = "ok"  #: all accepted
    PARTIAL = "partial"  #: some items rejected (``item_errors``), the rest accepted
    TRANSIENT = "transient"  #: nothing applied; retry later (network, 408, 429, 5xx)
    PERMANENT = "permanent"  #: the request is bad (400, 404, 413, 422, ...)
    AUTH = "auth"  #: credentials or account problem (401, 403, redirect): stop


class AuthError(RuntimeError):
    """Customer.io rejected the credentials (or the region is wrong)."""


@dataclass(slots=True)
class SendResult:
    """One HTTP exchange with Customer.io, classified."""

    outcome: Outcome
    status: int | None = None
    body: str = ""
    error: str | None = None
    retry_after: float | None = None
    item_errors: dict[int, dict[str, Any]] = field(default_factory=dict)

    def describe(self) -> str:
        """A one-line description for logs and dead letters."""
        if self.status is None:
            return f"network error: {self.error}"
        return f"HTTP {self.status}: {self.body[:300]}" if self.body else f"HTTP {self.status}"


def parse_retry_after(value: str | None, now: float | None = None, limit: float = RETRY_AFTER_MAX_S) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or HTTP date), within ``[0, limit]``.

    Negative values and past dates give 0; ``inf``, huge numbers and far dates give ``limit``;
    garbage (and ``nan``) gives None, so the caller's own backoff applies.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds: float | None = float(value)
    except ValueError:
        seconds = _seconds_until(value, time.time() if now is None else now)
    if seconds is None or math.isnan(seconds):
        return None
    return min(max(0.0, seconds), max(0.0, limit))


def _seconds_until(value: str, now: float) -> float | None:
    """Seconds from ``now`` to an HTTP date, or None when it is not one."""
    try:
        moment = email.utils.parsedate_to_datetime(value)
        return moment.timestamp() - now if moment is not None else None
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


def _item_errors(body: str) -> dict[int, dict[str, Any]]:
    try:
        parsed = json.loads(body) if body else {}
    except json.JSONDecodeError:
        return {}
    errors = parsed.get("errors") if isinstance(parsed, dict) else None
    found: dict[int, dict[str, Any]] = {}
    for error in errors or []:
        if isinstance(error, dict) and isinstance(error.get("batch_index"), int):
            found[error["batch_index"]] = error
    return found


def classify(response: httpx.Response, retry_after_max_s: float = RETRY_AFTER_MAX_S) -> SendResult:
    """Turn an HTTP response into a :class:`SendResult` (``Retry-After`` clamped to ``retry_after_max_s``)."""
    status = response.status_code
    body = response.text[:_BODY_KEEP]
    retry_after = parse_retry_after(response.headers.get("retry-after"), limit=retry_after_max_s)
    if 200 <= status < 300:
        errors = _item_errors(response.text) if response.content else {}
        outcome = Outcome.PARTIAL if errors else Outcome.OK
        return SendResult(outcome, status, body, item_errors=errors)
    if 300 <= status < 400:
        location = response.headers.get("location", "?")
        message = f"Customer.io redirected to {location}: set CUSTOMERIO_REGION (or use auto)"
        return SendResult(Outcome.AUTH, status, body, error=message)
    if status in _AUTH_STATUSES:
        return SendResult(Outcome.AUTH, status, body, error="Site ID or API key invalid")
    if status in _TRANSIENT_STATUSES or status >= 500:
        return SendResult(Outcome.TRANSIENT, status, body, retry_after=retry_after)
    return SendResult(Outcome.PERMANENT, status, body)


def _v1_attribute(value: Any) -> Any:
    """v1 identify takes string, integer or boolean values: anything else becomes JSON text."""
    if isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, float):
        return repr(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _encode(identifier: str) -> str:
    return quote(identifier, safe="")


def _person_path(identifiers: dict[str, str]) -> str:
    if "cio_id" in identifiers:
        return "cio_" + _encode(identifiers["cio_id"])
    if "email" in identifiers:
        return _encode(identifiers["email"])
    return _encode(identifiers["id"])


def v1_request(payload: dict[str, Any]) -> tuple[str, str, dict[str, Any] | None]:
    """Translate a v2 person operation into the v1 ``(method, path, body)``."""
    action = payload["action"]
    if payload.get("type") == "anonymous":
        body = {"anonymous_id": payload["anonymous_id"], "name": payload["name"], "type": action,
                "data": payload.get("attributes") or {}}
        for key in ("id", "timestamp"):
            if key in payload:
                body[key] = payload[key]
        return "POST", "/api/v1/events", body
    if payload.get("type", "person") != "person":
        raise ValueError(f"no v1 equivalent for {payload.get('type')} operations")
    if action == "merge":
        return "POST", "/api/v1/merge_customers", {
            "primary": payload["primary"],
            "secondary": payload["secondary"],
        }
    identifiers = payload["identifiers"]
    base = f"/api/v1/customers/{_person_path(identifiers)}"
    if action == "identify":
        body = {key: _v1_attribute(value) for key, value in (payload.get("attributes") or {}).items()}
        if "id" in identifiers:
            body["id"] = identifiers["id"]
        elif "email" in identifiers:
            body.setdefault("email", identifiers["email"])
        if "timestamp" in payload:
            body["_timestamp"] = payload["timestamp"]
        return "PUT", base, body
    if action in ("event", "page", "screen"):
        body = {"name": payload["name"], "type": action, "data": payload.get("attributes") or {}}
        for key in ("id", "timestamp"):
            if key in payload:
                body[key] = payload[key]
        return "POST", f"{base}/events", body
    if action == "delete":
        return "DELETE", base, None
    if action in ("suppress", "unsuppress"):
        return "POST", f"{base}/{action}", None
    if action == "add_device":
        device = dict(payload["device"])
        device["id"] = device.pop("token")
        return "PUT", f"{base}/devices", {"device": device}
    if action == "delete_device":
        return "DELETE", f"{base}/devices/{_encode(payload['device']['token'])}", None
    raise ValueError(f"no v1 equivalent for action {action!r}")


class TrackClient:
    """A Track API client bound to one workspace (site ID + API key) and base URL."""

    def __init__(
        self,
        site_id: str,
        api_key: str,
        base_url: str,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        retry_after_max_s: float = RETRY_AFTER_MAX_S,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry_after_max_s = retry_after_max_s
        self._http = httpx.Client(
            base_url=self.base_url,
            auth=httpx.BasicAuth(site_id, api_key),
            timeout=timeout,
            headers={
                "User-Agent": f"posthog-customerio/{__version__}",
                "Content-Type": "application/json",
            },
            follow_redirects=False,
            transport=transport,
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> TrackClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def account_region(self) -> dict[str, Any]:
        """``GET /api/v1/accounts/region``: verifies credentials, returns the region.

        Raises :class:`AuthError` for bad credentials and ``httpx.HTTPError`` for
        network problems or unexpected answers.
        """
        response = self._http.get("/api/v1/accounts/region")
        if response.status_code in _AUTH_STATUSES:
            raise AuthError("Customer.io rejected the credentials (Site ID or API key invalid)")
        response.raise_for_status()
        data = response.json()
        if not isinstance(data, dict) or "url" not in data:
            raise httpx.DecodingError("unexpected answer from /api/v1/accounts/region")
        return data

    def request(self, method: str, path: str, body: str | None) -> SendResult:
        """Send one request with a pre-encoded JSON body and classify the answer."""
        try:
            response = self._http.request(method, path, content=body.encode() if body is not None else None)
        except httpx.HTTPError as exc:
            return SendResult(Outcome.TRANSIENT, error=f"{type(exc).__name__}: {exc}")
        return classify(response, self.retry_after_max_s)

    def send_batch(self, payload_texts: list[str]) -> SendResult:
        """``POST /api/v2/batch`` with already-encoded operations (in order)."""
        return self.request("POST", "/api/v2/batch", '{"batch":[' + ",".join(payload_texts) + "]}")

    def send_v1(self, payload: dict[str, Any]) -> SendResult:
        """Send one operation through the matching v1 endpoint."""
        method, path, body = v1_request(payload)
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False) if body is not None else None
        return self.request(method, path, text)


def resolve_track_url(site_id: str, api_key: str, region: str, override: str | None, *, timeout: float = 30.0) -> str:
    """The base URL to use: the override, the region's host, or (``auto``) ask Customer.io."""
    if override:
        return override.rstrip("/")
    if region in REGION_URLS:
        return REGION_URLS[region]
    with TrackClient(site_id, api_key, REGION_URLS["us"], timeout=timeout) as client:
        return str(client.account_region()["url"]).rstrip("/")
