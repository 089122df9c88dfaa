"""PostHog reverse proxy: forward a request to ``POSTHOG_HOST`` and stream the answer back.

The request goes out as it came (method, path, query, body bytes, headers minus the
hop-by-hop ones, ``Host`` set to PostHog's, ``X-Forwarded-For`` extended); PostHog's
answer comes back with its status, headers (minus hop-by-hop and PostHog's own CORS
headers: this service applies ``CORS_ORIGINS``) and body bytes, still encoded as
PostHog sent them. One pooled :class:`httpx.AsyncClient` per service.

The path goes out exactly as the client sent it, or not at all: a path with a ``.`` or
``..`` segment (also percent-encoded, or between backslashes) is refused
(:func:`has_dot_segments`, :class:`PathRefused`, a 400), so ``/static/../../admin/``
never reaches PostHog as ``/admin/`` (httpx would remove the dot segments).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from urllib.parse import unquote

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

__all__ = ["HOP_BY_HOP", "PathRefused", "PostHogProxy", "ProxyError", "Upstream", "has_dot_segments"]

log = logging.getLogger(__name__)

#: RFC 9110 §7.6.1 connection-specific headers, never forwarded
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
_REQUEST_DROP = HOP_BY_HOP | {"host", "content-length"}
_RESPONSE_DROP = HOP_BY_HOP | {"content-length"}


class ProxyError(Exception):
    """PostHog could not be reached or did not answer in time."""


class PathRefused(ProxyError):
    """A path that would not reach PostHog as the client sent it (dot segments): answered 400, never forwarded."""


_SEPARATORS = re.compile(r"[/\\]")


def has_dot_segments(raw_path: bytes | str) -> bool:
    """Whether a request path has a ``.`` or ``..`` segment, as sent or percent-decoded (up to three times).

    Backslashes count as separators too (some servers treat them as ``/``). No PostHog
    path has such a segment; a proxy that passed one on would widen what it forwards.
    """
    text = raw_path.decode("latin-1") if isinstance(raw_path, bytes) else raw_path
    for _ in range(4):
        if any(segment in (".", "..") for segment in _SEPARATORS.split(text)):
            return True
        decoded = unquote(text, encoding="latin-1")
        if decoded == text:
            return False
        text = decoded
    return True  # still percent-encoded after three rounds: nothing PostHog needs


@dataclass(frozen=True, slots=True)
class Upstream:
    """PostHog's answer, read whole (capture paths: small, and needed before we answer)."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def response(self) -> Response:
        """The answer for the SDK."""
        response = Response(self.body, status_code=self.status)
        for name, value in self.headers:
            response.headers.append(name, value)
        return response


def _connection_tokens(headers: Iterable[tuple[str, str]]) -> set[str]:
    tokens: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def _response_headers(headers: httpx.Headers, keep_length: bool) -> list[tuple[str, str]]:
    items = list(headers.multi_items())
    drop = (_RESPONSE_DROP - ({"content-length"} if keep_length else set())) | _connection_tokens(items)
    return [(n, v) for n, v in items if n.lower() not in drop and not n.lower().startswith("access-control-")]


class PostHogProxy:
    """Forwards requests to one PostHog host."""

    def __init__(
        self,
        host: str,
        *,
        timeout_s: float = 30.0,
        max_connections: int = 100,
        drop_authorization: bytes | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.host = host.rstrip("/")
        self._prefix = httpx.URL(self.host).raw_path.rstrip(b"/")  # a POSTHOG_HOST with a path
        self.drop_authorization = drop_authorization
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0), pool=min(timeout_s, 10.0)),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=min(max_connections, 20)),
            follow_redirects=False,
            trust_env=False,
            transport=transport,
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()

    @staticmethod
    def check_path(request: Request) -> bytes:
        """The raw path to forward; :class:`PathRefused` when it has a dot segment."""
        path: bytes = request.scope.get("raw_path") or request.url.path.encode()
        if has_dot_segments(path) or has_dot_segments(request.url.path):
            raise PathRefused("the path has a dot segment ('.' or '..'): not forwarded")
        return path

    def _request(self, request: Request, body: bytes) -> httpx.Request:
        items = request.headers.items()
        drop = _REQUEST_DROP | _connection_tokens(items)
        headers = [(n, v) for n, v in items if n.lower() not in drop]
        if self.drop_authorization:  # our own WEBHOOK_TOKEN is not PostHog's business
            ours = self.drop_authorization
            headers = [
                (n, v)
                for n, v in headers
                if not (n.lower() == "authorization" and v.partition(" ")[2].strip().encode() == ours)
            ]
        client_ip = request.client.host if request.client else None
        if client_ip:
            prior = [h.strip() for n, v in headers if n.lower() == "x-forwarded-for" for h in v.split(",") if h.strip()]
            headers = [(n, v) for n, v in headers if n.lower() != "x-forwarded-for"]
            # uvicorn's --proxy-headers may have set the client from a trusted X-Forwarded-For already
            chain = prior if prior and prior[-1] == client_ip else [*prior, client_ip]
            headers.append(("x-forwarded-for", ", ".join(chain)))
        if not any(n.lower() == "x-forwarded-proto" for n, _ in headers):
            headers.append(("x-forwarded-proto", request.url.scheme))
        if request.headers.get("host") and not any(n.lower() == "x-forwarded-host" for n, _ in headers):
            headers.append(("x-forwarded-host", request.headers["host"]))
        path = self.check_path(request)
        url = self.host + path.decode("latin-1")
        query = request.scope.get("query_string") or b""
        if query:
            url += "?" + query.decode("latin-1")
        built = self.client.build_request(request.method, url, headers=headers, content=body or None)
        if built.url.raw_path.partition(b"?")[0] != self._prefix + path:  # httpx would change it: refuse, never widen
            raise PathRefused("the path would not reach PostHog as sent: not forwarded")
        return built

    async def fetch(self, request: Request, body: bytes, max_response_bytes: int) -> Upstream:
        """Forward and read PostHog's whole answer (at most ``max_response_bytes``)."""
        upstream = await self._send(request, body)
        try:
            chunks, total = [], 0
            async for chunk in upstream.aiter_raw():
                total += len(chunk)
                if total > max_response_bytes:
                    raise ProxyError(f"PostHog's answer is over {max_response_bytes} bytes")
                chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise ProxyError(f"PostHog's answer broke off: {type(exc).__name__}") from None
        finally:
            await upstream.aclose()
        return Upstream(upstream.status_code, _response_headers(upstream.headers, keep_length=False), b"".join(chunks))

    async def stream(self, request: Request, body: bytes) -> Response:
        """Forward and stream PostHog's answer back as it arrives (bytes as PostHog encoded them)."""
        upstream = await self._send(request, body)
        headers = _response_headers(upstream.headers, keep_length=True)

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in upstream.aiter_raw():
                    yield chunk
            except httpx.HTTPError as exc:  # the status line is gone already: cut the connection short
                log.warning("PostHog's answer to %s broke off: %s", request.url.path, type(exc).__name__)

        response = StreamingResponse(
            chunks(), status_code=upstream.status_code, background=BackgroundTask(upstream.aclose)
        )
        for name, value in headers:
            response.headers.append(name, value)
        return response

    async def _send(self, request: Request, body: bytes) -> httpx.Response:
        built = self._request(request, body)  # PathRefused propagates: the client's fault, not PostHog's
        try:
            return await self.client.send(built, stream=True)
        except httpx.HTTPError as exc:
            raise ProxyError(f"PostHog ({self.host}) unreachable: {type(exc).__name__}") from None
