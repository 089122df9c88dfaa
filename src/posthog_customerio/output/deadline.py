"""HTTP requests to Customer.io bounded by a total deadline, callable from any thread.

httpx's timeouts bound each network operation (connect, one read, one write, a pool wait): an answer
trickled a byte at a time never trips them. :class:`DeadlineClient` runs an ``httpx.AsyncClient`` on
an event loop of its own (one daemon thread) and wraps every request, headers and body included, in
``asyncio.timeout``: past the deadline the request is cancelled, its connection closed, and
:class:`DeadlineExceeded` (an ``httpx.TimeoutException``) raised in the calling thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import weakref
from typing import Any

import httpx

__all__ = ["DeadlineClient", "DeadlineExceeded"]

#: how long past the deadline a caller waits for a request the event loop failed to cancel
_GRACE_S = 2.0


class DeadlineExceeded(httpx.TimeoutException):
    """No complete answer within the request's total deadline."""


class _SyncTransportAdapter(httpx.AsyncBaseTransport):
    """A synchronous transport (test doubles) driven from the event loop, in a worker thread."""

    def __init__(self, transport: httpx.BaseTransport) -> None:
        self.transport = transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        response = await asyncio.to_thread(self.transport.handle_request, request)
        content = await asyncio.to_thread(response.read)
        return httpx.Response(response.status_code, headers=response.headers, content=content, request=request)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.transport.close)


def _async_transport(transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None) -> Any:
    if transport is None or isinstance(transport, httpx.AsyncBaseTransport):
        return transport
    return _SyncTransportAdapter(transport)


def _stop(loop: asyncio.AbstractEventLoop) -> None:
    if not loop.is_closed():
        loop.call_soon_threadsafe(loop.stop)


class DeadlineClient:
    """An ``httpx.AsyncClient`` used from threads; each request ends within ``deadline_s`` seconds in total.

    ``client_options`` go to ``httpx.AsyncClient`` (a synchronous ``transport`` is adapted). The per-operation
    timeouts are the deadline too. Closing stops the loop thread.
    """

    def __init__(self, deadline_s: float, **client_options: Any) -> None:
        if deadline_s <= 0:
            raise ValueError("the request deadline must be positive")
        self.deadline_s = deadline_s
        client_options["transport"] = _async_transport(client_options.get("transport"))
        self._options = client_options
        self._loop = asyncio.new_event_loop()
        self._client: httpx.AsyncClient | None = None
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        weakref.finalize(self, _stop, self._loop)

    def _started(self) -> asyncio.AbstractEventLoop:
        with self._start_lock:
            if self._closed:
                raise RuntimeError("the Customer.io client is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop.run_forever, name="customerio-http", daemon=True)
                self._thread.start()
            return self._loop

    async def _client_now(self) -> httpx.AsyncClient:
        if self._client is None:  # created on the loop that uses it
            self._client = httpx.AsyncClient(timeout=self.deadline_s, **self._options)
        return self._client

    async def _request(self, method: str, url: str, options: dict[str, Any]) -> httpx.Response:
        client = await self._client_now()
        try:
            async with asyncio.timeout(self.deadline_s):
                return await client.request(method, url, **options)
        except TimeoutError:
            raise DeadlineExceeded(f"no complete answer within the {self.deadline_s:g} s request deadline") from None

    def request(self, method: str, url: str, **options: Any) -> httpx.Response:
        """Send a request and read the whole answer, within the deadline (raises ``httpx.HTTPError``)."""
        future = asyncio.run_coroutine_threadsafe(self._request(method, url, options), self._started())
        try:
            return future.result(timeout=self.deadline_s + _GRACE_S)
        except concurrent.futures.TimeoutError:  # the loop itself is stuck: never wait longer than this
            future.cancel()
            raise DeadlineExceeded(f"no answer within the {self.deadline_s:g} s request deadline") from None

    def get(self, url: str, **options: Any) -> httpx.Response:
        """``GET`` within the deadline."""
        return self.request("GET", url, **options)

    def post(self, url: str, **options: Any) -> httpx.Response:
        """``POST`` within the deadline."""
        return self.request("POST", url, **options)

    def close(self) -> None:
        """Close the connections and stop the loop thread (idempotent)."""
        with self._start_lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        if thread is not None:
            if self._client is not None:
                with contextlib.suppress(Exception):  # closing stops the thread whatever the connections do
                    asyncio.run_coroutine_threadsafe(self._client.aclose(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            thread.join(timeout=10)
        if not thread or not thread.is_alive():
            self._loop.close()
