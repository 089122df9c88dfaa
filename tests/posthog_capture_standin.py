"""A local stand-in for PostHog's capture API (``POST /batch/``): records what it accepted, fails on demand.

Faults, in order: ``fail(status, times, retry_after)`` answers ``status`` to the next ``times`` requests;
``down()`` stops listening (connections refused) until ``up()`` listens again on the same port. Accepted
events are kept by uuid, as PostHog deduplicates them; ``duplicates`` counts the uuids sent again.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

__all__ = ["CaptureStandin", "running_capture_standin"]


@dataclass
class CaptureStandin:
    """What the stand-in accepted and the faults it will answer with."""

    #: accepted events by uuid (the first copy)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: every request's path, status and number of events
    requests: list[tuple[str, int, int]] = field(default_factory=list)
    #: uuids accepted more than once
    duplicates: list[str] = field(default_factory=list)
    api_keys: set[str] = field(default_factory=set)
    faults: list[tuple[int, float | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail(self, status: int, times: int = 1, retry_after: float | None = None) -> None:
        """Answer ``status`` (with ``Retry-After`` when given) to the next ``times`` requests."""
        with self.lock:
            self.faults.extend([(status, retry_after)] * times)

    def accepted(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.events.values())

    def statuses(self) -> list[int]:
        with self.lock:
            return [status for _, status, _ in self.requests]

    def app(self) -> Starlette:
        async def batch(request: Request) -> JSONResponse:
            body = json.loads(await request.body())
            with self.lock:
                events = body.get("batch") or []
                if self.faults:
                    status, retry_after = self.faults.pop(0)
                    self.requests.append((request.url.path, status, len(events)))
                    headers = {"retry-after": f"{retry_after:g}"} if retry_after is not None else {}
                    return JSONResponse({"error": "injected"}, status, headers)
                self.api_keys.add(body.get("api_key"))
                self.requests.append((request.url.path, 200, len(events)))
                for event in events:
                    if event["uuid"] in self.events:
                        self.duplicates.append(event["uuid"])
                    else:
                        self.events[event["uuid"]] = event
            return JSONResponse({"status": "Ok"})

        return Starlette(routes=[Route("/batch/", batch, methods=["POST"]), Route("/batch", batch, methods=["POST"])])

    def up(self) -> None:
        """Listen on ``port`` (a free one the first time)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=self.port, log_config=None, access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="capture-standin", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            assert self._thread.is_alive() and time.monotonic() < deadline, "the capture stand-in did not start"
            time.sleep(0.01)
        self._sock = sock

    def down(self) -> None:
        """Stop listening: requests are refused until :meth:`up`."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(15)
            self._sock.close()
            self._server = None


@contextmanager
def running_capture_standin() -> Iterator[CaptureStandin]:
    """A capture stand-in on ``127.0.0.1:<free port>``."""
    standin = CaptureStandin()
    standin.up()
    try:
        yield standin
    finally:
        standin.down()
