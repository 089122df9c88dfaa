"""uvicorn with a read deadline: slow or silent clients cannot hold connections open.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) but has no limit on
how long a client may take to send a request: a connection that trickles its headers
or body a byte a second stays open for ever. :class:`ReadDeadlineProtocol` (uvicorn's
httptools protocol plus one timer) gives every request ``HTTP_READ_TIMEOUT_S`` from its
first byte (or from the connection's opening) until its body is complete; past it the
connection is closed (with a ``408`` when the headers were not even complete). The
handler never waits on a slow client, so hundreds of them cost only their sockets.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..config import Settings

__all__ = ["ReadDeadlineProtocol", "uvicorn_config"]

_408_BODY = b'{"error": "request not received within HTTP_READ_TIMEOUT_S"}'
_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_408_BODY), _408_BODY)
)


class ReadDeadlineProtocol(HttpToolsProtocol):
    """httptools HTTP/1.1 with a deadline for reading each request (headers and body)."""

    read_timeout_s: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_deadline: asyncio.TimerHandle | None = None
        self._headers_done = False

    def _arm(self) -> None:
        if self._read_deadline is None:
            self._read_deadline = self.loop.call_later(self.read_timeout_s, self._read_timed_out)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that never sends a byte is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._headers_done = False
        self._arm()

    def on_headers_complete(self) -> None:
        self._headers_done = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        if self.transport.is_closing():
            return
        if not self._headers_done:  # no handler has seen this request: answer it ourselves
            self.transport.write(_408)
        # with the headers read, the handler is waiting for the body: closing ends its wait
        self.transport.close()


def uvicorn_config(app: Any, host: str, port: int, settings: Settings, **options: Any) -> uvicorn.Config:
    """The uvicorn config ``serve`` runs with: keep-alive and read timeouts from ``settings``."""
    protocol = type("ReadDeadline", (ReadDeadlineProtocol,), {"read_timeout_s": settings.http_read_timeout_s})
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol,
        timeout_keep_alive=settings.http_keep_alive_s,  # type: ignore[arg-type]
        log_config=None,
        access_log=False,
        **options,
    )
