"""``serve --workers N``: N processes answer on one listening socket and share one outbox.

The process started is the service as without ``--workers``: it delivers, runs the syncs and answers
everything. It starts N-1 receiver workers (``cli/serve.py``, each its own interpreter) on the same
listening socket; the kernel hands each new connection to one of the processes. A worker answers the
receivers' POSTs (``/webhook``, capture) itself, storing into the same outbox (SQLite: the same file, one
writer at a time, each process committing its own groups; PostgreSQL: as replicas do), and passes every
other request to the first process over a private UNIX socket (:class:`ToFirstProcess`), so
``/healthz``, ``/readyz``, ``/status``, ``/metrics`` and the operations API answer alike whichever
process took the connection. Delivery picks up what a worker stored at its next look at the outbox
(within ``0.2 s`` when idle).
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from starlette.types import Message, Receive, Scope, Send

from .bodies import HttpError

__all__ = ["ToFirstProcess"]

log = logging.getLogger(__name__)

#: hop-by-hop headers: about one connection, never passed on
_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade", b"proxy-connection"}
)


class ToFirstProcess:
    """ASGI: the request, as received, to the first process over its UNIX socket; its answer, as given."""

    def __init__(self, path: str, timeout_s: float) -> None:
        self.path = path
        transport = httpx.AsyncHTTPTransport(uds=path)
        self.client = httpx.AsyncClient(
            transport=transport, timeout=httpx.Timeout(timeout_s, connect=5.0), follow_redirects=False
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def body() -> Any:
            while True:
                message: Message = await receive()
                if message["type"] != "http.request":  # the client went away
                    return
                yield message.get("body", b"")
                if not message.get("more_body", False):
                    return

        path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"")
        target = "http://serve" + path.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
        headers = [(name, value) for name, value in scope["headers"] if name not in _HOP_BY_HOP]
        client = scope.get("client")
        if client:  # the client's address, as the first process adds it when it forwards to PostHog itself
            prior = [
                hop.strip()
                for name, value in headers
                if name == b"x-forwarded-for"
                for hop in value.decode("latin-1").split(",")
                if hop.strip()
            ]
            headers = [(name, value) for name, value in headers if name != b"x-forwarded-for"]
            chain = prior if prior and prior[-1] == client[0] else [*prior, client[0]]
            headers.append((b"x-forwarded-for", ", ".join(chain).encode("latin-1")))
        request = self.client.build_request(scope["method"], target, headers=headers, content=body())
        try:
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            log.warning("worker: the first process did not answer %s: %s", scope["path"], type(exc).__name__)
            answer = HttpError(503, "the service is starting or stopping; retry later", {"Retry-After": "1"})
            await answer.response()(scope, receive, send)
            return
        try:
            kept = [(name, value) for name, value in response.headers.raw if name.lower() not in _HOP_BY_HOP]
            await send({"type": "http.response.start", "status": response.status_code, "headers": kept})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()
