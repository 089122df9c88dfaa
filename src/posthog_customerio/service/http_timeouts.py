"""uvicorn with a read deadline and bounded request heads: slow, silent or bloated requests cost little.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) but has no limit on
how long a client may take to send a request: a connection that trickles its headers
or body a byte a second stays open for ever. :class:`ReadDeadlineProtocol` (uvicorn's
httptools protocol plus one timer) gives every request ``HTTP_READ_TIMEOUT_S`` from its
first byte (or from the connection's opening) until its body is complete; past it the
connection is closed (with a ``408`` when the headers were not even complete). The
handler never waits on a slow client, so hundreds of them cost only their sockets.

httptools (llhttp) has no limit on a request's head: a 64 MB header was read whole (and
its bytes concatenated chunk by chunk). The protocol bounds it: a request line plus
headers over :data:`MAX_HEAD_BYTES`, or more than :data:`MAX_HEADERS` header fields, is
answered ``431 Request Header Fields Too Large`` as soon as the bound is passed, and the
rest of what the client sends is read and dropped for up to :data:`_LINGER_S` before the
connection closes (closing at once would reset it and lose the 431 before the client
reads it). An unfinished head is counted by the bytes received, so what is buffered for
it is at most the bound plus one read.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["MAX_HEADERS", "MAX_HEAD_BYTES", "ReadDeadlineProtocol", "uvicorn_config"]

#: largest request head (request line and header fields) in bytes; 431 above
MAX_HEAD_BYTES = 64 * 1024
#: most header fields in one request; 431 above
MAX_HEADERS = 100
#: after a 431, how long what the client still sends is read and dropped before closing
_LINGER_S = 5.0

_408_BODY = b'{"error": "request not received within HTTP_READ_TIMEOUT_S"}'
_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_408_BODY), _408_BODY)
)
_431_BODY = b'{"error": "request headers over %d bytes or %d fields"}' % (MAX_HEAD_BYTES, MAX_HEADERS)
_431 = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_431_BODY), _431_BODY)
)


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a head that is over the bounds."""


class ReadDeadlineProtocol(HttpToolsProtocol):
    """httptools HTTP/1.1 with a deadline for reading each request (headers and body) and a bounded head."""

    read_timeout_s: float = 30.0
    max_head_bytes: int = MAX_HEAD_BYTES
    max_headers: int = MAX_HEADERS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_deadline: asyncio.TimerHandle | None = None
        self._headers_done = False
        self._head_bytes = 0  # of the current request's head: received, or parsed (whichever is more)
        self._parsed_bytes = 0
        self._header_count = 0
        self._messages = 0  # requests begun on this connection
        self._refused = False  # this connection's current head is over the bounds
        self._linger: asyncio.TimerHandle | None = None  # set once the 431 is sent

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
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # after a 431: read and dropped
        head_at_start = not self._headers_done  # this read continues a head, or opens the connection
        begun = self._messages
        super().data_received(data)
        if self._refused or self._headers_done or self.transport.is_closing():
            return
        # the head is still incomplete: all of this read is its own, unless it began mid-read after
        # another request (then it is counted from the next read: at most one read more)
        if head_at_start and (self._messages == begun or begun == 0):
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._refuse_head()

    def send_400_response(self, msg: str) -> None:
        if self._refused:  # the parser stopped because of the head refused with a 431
            return
        super().send_400_response(msg)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._headers_done = False
        self._messages += 1
        self._head_bytes = self._parsed_bytes = self._header_count = 0
        self._arm()

    def on_url(self, url: bytes) -> None:
        self._count_parsed(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.max_headers:
            self._refuse_head()
            raise _HeadTooLarge  # stops the parser (uvicorn's 400 for it is not sent)
        self._count_parsed(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count_parsed(self, size: int) -> None:
        """A head that arrived whole in one read is bounded here, by what the parser handed over."""
        self._parsed_bytes += size
        if self._parsed_bytes > self.max_head_bytes:
            self._refuse_head()
            raise _HeadTooLarge

    def _refuse_head(self) -> None:
        self._refused = True
        self._disarm()
        if not self._responding():
            self._send_431()
        # else: pipelined requests before this one are still being answered; the 431 follows them

    def _responding(self) -> bool:
        return bool(self.pipeline) or (self.cycle is not None and not self.cycle.response_complete)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._refused and self._linger is None and not self._responding():
            self._send_431()

    def _send_431(self) -> None:
        """431, then read and drop what the client still sends for a while (so it reads the 431), then close."""
        if self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        self.transport.write(_431)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._linger = self.loop.call_later(_LINGER_S, self._end_linger)

    def _end_linger(self) -> None:
        self._linger = None
        self.transport.close()

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


def uvicorn_config(
    app: Any, host: str, port: int, *, read_timeout_s: float, keep_alive_s: float, **options: Any
) -> uvicorn.Config:
    """The uvicorn config ``serve`` runs with: ``HTTP_READ_TIMEOUT_S`` and ``HTTP_KEEP_ALIVE_S``."""
    protocol = type("ReadDeadline", (ReadDeadlineProtocol,), {"read_timeout_s": read_timeout_s})
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol,
        timeout_keep_alive=keep_alive_s,  # type: ignore[arg-type]
        log_config=None,
        access_log=False,
        **options,
    )
