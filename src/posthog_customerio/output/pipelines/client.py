"""Pipelines API HTTP client: strict mode, Basic auth with the source key, answers classified like Track's.

Every response is reduced to the same :class:`~posthog_customerio.output.base.SendResult` as the Track
client, so delivery settles both the same way. In strict mode Customer.io does not document per-call errors
for a batch: a 400 rejects the whole request (the caller splits the batch to isolate the bad call).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import httpx

from ... import __version__
from ..base import RETRY_AFTER_MAX_S, AuthError, Outcome, SendResult, classify
from ..deadline import DeadlineClient
from .calls import encode_call
from .packing import BATCH_CLOSE, BATCH_OPEN, encoded_size

__all__ = ["PIPELINES_URLS", "PipelinesClient", "resolve_pipelines_url"]

PIPELINES_URLS = {"us": "https://cdp.customer.io", "eu": "https://cdp-eu.customer.io"}


def resolve_pipelines_url(region: str, override: str | None = None) -> str:
    """The base URL: the override, else the region's host (``auto`` and unknown regions mean US)."""
    if override:
        return override.rstrip("/")
    return PIPELINES_URLS.get(region, PIPELINES_URLS["us"])


def _pipelines_result(result: SendResult) -> SendResult:
    """Pipelines wording for the Track classifier's messages; no per-item errors exist in this API."""
    result.item_errors = {}
    if result.outcome is Outcome.PARTIAL:
        result.outcome = Outcome.OK
    if result.outcome is Outcome.AUTH:
        if result.status in (401, 403):
            result.error = "Pipelines API key invalid"
        elif result.status is not None:
            result.error = "Customer.io Pipelines API redirected: check CUSTOMERIO_PIPELINES_URL / the region"
    return result


class PipelinesClient:
    """A Pipelines API client bound to one source key and base URL; every request is in strict mode."""

    def __init__(
        self,
        api_key: str,
        base_url: str = PIPELINES_URLS["us"],
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        context: dict[str, Any] | None = None,
        retry_after_max_s: float = RETRY_AFTER_MAX_S,
    ) -> None:
        self.api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.retry_after_max_s = retry_after_max_s
        library = {"library": {"name": "posthog-customerio", "version": __version__}}
        self._context_text = encode_call(context if context is not None else library)
        self._http = DeadlineClient(
            timeout,
            base_url=self.base_url,
            auth=httpx.BasicAuth(api_key, ""),
            headers={
                "User-Agent": f"posthog-customerio/{__version__}",
                "Content-Type": "application/json",
                "X-Strict-Mode": "1",
            },
            follow_redirects=False,
            transport=transport,
        )

    @property
    def batch_overhead(self) -> int:
        """Bytes a request adds besides the calls (the batch-level ``context``), for :func:`~.packing.pack`."""
        return len(b',"context":') + encoded_size(self._context_text)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> PipelinesClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _post(self, path: str, body: bytes) -> SendResult:
        try:
            response = self._http.post(path, content=body)
        except httpx.HTTPError as exc:
            return SendResult(Outcome.TRANSIENT, error=f"{type(exc).__name__}: {exc}")
        return _pipelines_result(classify(response, self.retry_after_max_s))

    def batch_body(self, call_texts: Iterable[str | bytes]) -> bytes:
        """The ``/v1/batch`` request body for already-encoded calls (in order)."""
        parts = [text if isinstance(text, bytes) else text.encode("utf-8") for text in call_texts]
        context = self._context_text.encode("utf-8")
        return BATCH_OPEN + b",".join(parts) + BATCH_CLOSE + b',"context":' + context + b"}"

    def send_batch(self, call_texts: Sequence[str | bytes]) -> SendResult:
        """``POST /v1/batch`` with already-encoded calls. Callers pack first (see :func:`~.packing.pack`)."""
        return self._post("/v1/batch", self.batch_body(call_texts))

    def send_call(self, call: dict[str, Any]) -> SendResult:
        """Send one call through its own endpoint (``/v1/identify``, ``/v1/track`` ...)."""
        kind = call.get("type")
        if kind not in ("identify", "track", "page", "screen", "group", "alias"):
            raise ValueError(f"unknown call type {kind!r}")
        return self._post(f"/v1/{kind}", encode_call(call).encode("utf-8"))

    def check(self) -> None:
        """Verify the key: ``POST /v1/batch`` with an empty batch, strict mode.

        Cost: one request that carries no call, so nothing is written to the workspace and no profile or event
        is created (the cheapest authenticated call the Pipelines API has; it has no read endpoint). A 2xx or a
        400 (the key was accepted, only the empty body refused) passes; 401/403 raise :class:`AuthError`;
        anything else raises ``httpx.HTTPStatusError`` (network problems ``httpx.HTTPError``).
        """
        response = self._http.post("/v1/batch", content=b'{"batch":[]}')
        if response.status_code in (401, 403):
            raise AuthError("Customer.io rejected the Pipelines API key")
        if 300 <= response.status_code < 400:
            raise AuthError(f"Customer.io Pipelines API redirected to {response.headers.get('location', '?')}")
        if response.status_code != 400:
            response.raise_for_status()
