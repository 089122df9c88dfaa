"""A stand-in for PostHog's private persons API, for tests of :mod:`posthog_customerio.sources.posthog_api`.

It serves ``GET /api/projects/{project_id}/persons/`` (and the ``/api/environments/...`` alias) over N
generated persons, the way PostHog documents it:

- pages ``{"next", "previous", "count", "results"}``, positioned by ``limit``/``offset`` query parameters,
  ``next``/``previous`` absolute URLs on the host that was asked (other query parameters kept), ``next``
  null on the last page; persons with ``id``, ``uuid``, ``name``, ``distinct_ids``, ``properties``,
  ``created_at``, ``is_identified`` — https://posthog.com/docs/api/persons (and /docs/api/people);
- ``Authorization: Bearer <personal API key>``, else 401 (and 403 for another project) —
  https://posthog.com/docs/api (private endpoint authentication);
- 429 with ``Retry-After`` when over the rate limit — https://posthog.com/docs/api (rate limits).

Faults, for the next k requests (each counts every request, good key or not): :meth:`PersonsStandin.rate_limit_next`
(429 with a ``Retry-After``), :meth:`~PersonsStandin.fail_next` (5xx), :meth:`~PersonsStandin.slow_next` (the
answer waits). Two ways to serve it: :meth:`PersonsStandin.transport` (an ``httpx.MockTransport``, in-process:
unit tests) and :func:`running_persons_standin` (uvicorn in a thread on 127.0.0.1, port 0: integration tests).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid as uuidlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["STANDIN_KEY", "Answer", "PersonsStandin", "Seen", "make_person", "running_persons_standin"]

STANDIN_KEY = "phx_standin_personal_key_0123456789"
#: PostHog's default page size for the persons list
DEFAULT_LIMIT = 100
_NAMESPACE = uuidlib.UUID("6f1c1b52-7d0e-4a43-9a57-5b0a2f0d3e11")


def make_person(index: int) -> dict[str, Any]:
    """The ``index``-th generated person, as PostHog's persons list returns one."""
    person_uuid = str(uuidlib.uuid5(_NAMESPACE, f"person-{index}"))
    identified = index % 3 != 0
    distinct_ids = [f"anon-{index}"] + ([f"user-{index}"] if identified else [])
    properties: dict[str, Any] = {"$initial_os": "Mac OS X", "plan": ["free", "pro"][index % 2]}
    if identified:
        properties["email"] = f"user{index}@example.com"
    return {
        "id": person_uuid,
        "uuid": person_uuid,
        "name": properties.get("email", person_uuid),
        "distinct_ids": distinct_ids,
        "properties": properties,
        "created_at": f"2024-01-{1 + index % 28:02d}T12:00:00Z",
        "is_identified": identified,
    }


@dataclass(frozen=True)
class Answer:
    """What the stand-in answers to one request (served by either front end)."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass(frozen=True)
class Seen:
    """One request the stand-in got."""

    path: str
    query: str
    authorized: bool
    status: int


class PersonsStandin:
    """N generated persons behind PostHog's persons list, with injectable faults (thread-safe)."""

    def __init__(
        self,
        persons: int = 0,
        *,
        api_key: str = STANDIN_KEY,
        project_id: str = "1",
        default_limit: int = DEFAULT_LIMIT,
    ) -> None:
        self.persons = [make_person(index) for index in range(persons)]
        self.api_key = api_key
        self.project_id = project_id
        self.default_limit = default_limit
        self.lock = threading.Lock()
        self.requests: list[Seen] = []
        self._rate_limited = 0
        self._retry_after: str | None = None
        self._failing = 0
        self._fail_status = 503
        self._slow = 0
        self._slow_s = 0.0

    # faults ------------------------------------------------------------------------------------------

    def rate_limit_next(self, count: int = 1, retry_after: str | None = "1") -> None:
        """Answer the next ``count`` requests 429, with this ``Retry-After`` (None: without one)."""
        with self.lock:
            self._rate_limited, self._retry_after = count, retry_after

    def fail_next(self, count: int = 1, status: int = 503) -> None:
        """Answer the next ``count`` requests with ``status`` (a 5xx)."""
        with self.lock:
            self._failing, self._fail_status = count, status

    def slow_next(self, count: int = 1, delay_s: float = 1.0) -> None:
        """Answer the next ``count`` requests only after ``delay_s`` seconds."""
        with self.lock:
            self._slow, self._slow_s = count, delay_s

    # the one decision both front ends serve ----------------------------------------------------------

    def answer(self, base_url: str, path: str, query: str, authorization: str | None) -> Answer:
        """The answer to ``GET {base_url}{path}?{query}``."""
        with self.lock:
            answer = self._decide(base_url, path, query, authorization)
            self.requests.append(Seen(path, query, authorization == f"Bearer {self.api_key}", answer.status))
            return answer

    def _decide(self, base_url: str, path: str, query: str, authorization: str | None) -> Answer:
        delay = 0.0
        if self._slow:
            self._slow -= 1
            delay = self._slow_s
        if self._rate_limited:
            self._rate_limited -= 1
            headers = {"retry-after": self._retry_after} if self._retry_after is not None else {}
            detail = "Request was throttled."
            return Answer(429, {"type": "throttled_error", "detail": detail}, headers, delay)
        if self._failing:
            self._failing -= 1
            return Answer(self._fail_status, {"detail": "Server error (stand-in)"}, delay_s=delay)
        if authorization != f"Bearer {self.api_key}":
            detail = "Authentication credentials were not provided." if not authorization else "Invalid API key."
            return Answer(401, {"type": "authentication_error", "detail": detail}, delay_s=delay)
        parts = path.strip("/").split("/")
        if len(parts) != 4 or parts[:1] != ["api"] or parts[1] not in ("projects", "environments"):
            return Answer(404, {"detail": "Not found."}, delay_s=delay)
        if parts[3] != "persons":
            return Answer(404, {"detail": "Not found."}, delay_s=delay)
        if parts[2] != self.project_id:
            return Answer(403, {"detail": "You don't have access to the project."}, delay_s=delay)
        params = dict(parse_qsl(query, keep_blank_values=True))
        try:
            limit = int(params.get("limit", self.default_limit))
            offset = int(params.get("offset", 0))
        except ValueError:
            return Answer(400, {"detail": "limit and offset must be integers"}, delay_s=delay)
        if limit < 1 or offset < 0:
            return Answer(400, {"detail": "limit and offset must be positive"}, delay_s=delay)
        results = self.persons[offset : offset + limit]
        here = f"{base_url.rstrip('/')}/{path.strip('/')}/"

        def link(at: int) -> str:
            return f"{here}?{urlencode({**params, 'limit': limit, 'offset': at})}"

        body = {
            "next": link(offset + limit) if offset + limit < len(self.persons) else None,
            "previous": link(max(0, offset - limit)) if offset > 0 else None,
            "count": len(self.persons),
            "results": results,
        }
        return Answer(200, body, delay_s=delay)

    # front ends --------------------------------------------------------------------------------------

    def transport(self, *, sleep: bool = False) -> httpx.MockTransport:
        """An in-process ``httpx.MockTransport`` (no socket); a slow answer sleeps only if ``sleep``."""

        def handle(request: httpx.Request) -> httpx.Response:
            url = request.url
            base = f"{url.scheme}://{url.netloc.decode('ascii')}"
            answer = self.answer(base, url.path, url.query.decode("ascii"), request.headers.get("authorization"))
            if sleep and answer.delay_s:
                time.sleep(answer.delay_s)
            return httpx.Response(answer.status, headers=answer.headers, json=answer.body)

        return httpx.MockTransport(handle)

    def app(self) -> Starlette:
        """The stand-in as a Starlette app (real HTTP, under uvicorn)."""

        async def persons(request: Request) -> Response:
            base = f"{request.url.scheme}://{request.url.netloc}"
            answer = self.answer(base, request.url.path, request.url.query, request.headers.get("authorization"))
            if answer.delay_s:
                await asyncio.sleep(answer.delay_s)
            return Response(json.dumps(answer.body), answer.status, answer.headers, "application/json")

        return Starlette(routes=[Route("/{path:path}", persons, methods=["GET"])])


@contextmanager
def running_persons_standin(standin: PersonsStandin) -> Iterator[str]:
    """Serve ``standin`` on ``127.0.0.1:<free port>`` under uvicorn in a thread; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            standin.app(),
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="posthog-standin", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the PostHog stand-in did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
