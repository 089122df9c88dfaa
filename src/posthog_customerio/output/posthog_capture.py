"""PostHog's capture API, the way back: ``POST {POSTHOG_HOST}/batch/`` with the project API key.

The body is ``{"api_key": <project API key>, "batch": [event, ...]}`` (https://posthog.com/docs/api/capture,
"Batch events"). Answers: 2xx accepted; 400 (a bad event), 401 (a bad key) and 413 (too large) are refused
for good; 429 and 5xx (and no answer at all) are worth a retry, after ``Retry-After`` when PostHog gives one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from .base import parse_retry_after

__all__ = ["CaptureResult", "PostHogCapture"]

#: answers refused for good: the same request would be refused again
REFUSED = frozenset({400, 401, 403, 413})


@dataclass(frozen=True, slots=True)
class CaptureResult:
    """What one ``/batch/`` request came to."""

    outcome: Literal["ok", "retry", "refused"]
    status: int | None = None
    error: str = ""
    #: PostHog's ``Retry-After``, in seconds (``None``: not given)
    retry_after: float | None = None


class PostHogCapture:
    """An HTTP client of one PostHog project's ``/batch/`` endpoint."""

    def __init__(
        self,
        host: str,
        api_key: str,
        *,
        timeout_s: float = 30.0,
        retry_after_max_s: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = host.rstrip("/") + "/batch/"
        self._api_key = api_key
        self.retry_after_max_s = retry_after_max_s
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            follow_redirects=False,
            trust_env=False,
            transport=transport,
        )

    def send(self, events: Sequence[dict[str, Any]]) -> CaptureResult:
        """Send ``events`` in one request and classify the answer (never raises for HTTP or network trouble)."""
        body = json.dumps({"api_key": self._api_key, "batch": list(events)}, separators=(",", ":"))
        try:
            response = self.client.post(self.url, content=body, headers={"content-type": "application/json"})
        except httpx.HTTPError as exc:
            return CaptureResult("retry", None, f"PostHog unreachable: {type(exc).__name__}")
        status = response.status_code
        if 200 <= status < 300:
            return CaptureResult("ok", status)
        error = f"PostHog answered {status}: {response.text[:200]}"
        if status in REFUSED:
            return CaptureResult("refused", status, error)
        retry_after = parse_retry_after(response.headers.get("retry-after"), limit=self.retry_after_max_s)
        return CaptureResult("retry", status, error, retry_after)

    def close(self) -> None:
        """Close the connection pool."""
        self.client.close()
