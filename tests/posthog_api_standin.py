"""A stand-in for PostHog's private persons and cohorts API, for tests of :mod:`posthog_customerio.sources.posthog_api`.

It serves ``GET /api/projects/{project_id}/persons/`` (and the ``/api/environments/...`` alias) over N
generated persons, the way PostHog documents it:

- pages ``{"next", "previous", "count", "results"}``, positioned by ``limit``/``offset`` query parameters,
  ``next``/``previous`` absolute URLs on the host that was asked (other query parameters kept), ``next``
  null on the last page; persons with ``id``, ``uuid``, ``name``, ``distinct_ids``, ``properties``,
  ``created_at``, ``is_identified`` — https://posthog.com/docs/api/persons (and /docs/api/people);
- ``Authorization: Bearer <personal API key>``, else 401 (and 403 for another project) —
  https://posthog.com/docs/api (private endpoint authentication);
- 429 with ``Retry-After`` when over the rate limit — https://posthog.com/docs/api (rate limits).

Cohorts (``standin.cohorts[7] = Cohort(name=..., members=[...])``, or :meth:`PersonsStandin.add_cohort`), as
https://posthog.com/docs/api/cohorts documents them and PostHog's code answers them (``posthog/api/cohort.py``,
``CohortViewSet``; ``posthog/api/__init__.py``; ``posthog/utils.py`` ``format_query_params_absolute_url``;
``posthog/queries/actor_base_query.py`` ``get_serialized_people``; github.com/PostHog/posthog):

- ``GET /api/projects/{project_id}/cohorts/{id}/`` → the cohort object (``id``, ``name``, ``description``,
  ``groups``, ``deleted``, ``filters``, ``query``, ``is_calculating``, ``created_by``, ``created_at``,
  ``last_calculation``, ``errors_calculating``, ``count``, ``is_static``, ``cohort_type``, ``experiment_set``:
  ``CohortSerializer``). A soft-deleted cohort is still answered, ``"deleted": true`` (the view set leaves out
  deleted cohorts for ``list`` only; cohorts are never hard-deleted: DELETE is refused, "use a patch API call to
  set deleted to true"): ``Cohort(deleted=True)``. A cohort that does not exist (not in ``standin.cohorts``, or
  an id that is not an integer) → 404 ``{"type": "invalid_request", "code": "not_found", "detail": "Not found.",
  "attr": null}`` (drf-exceptions-hog's shape, PostHog's DRF exception handler: github.com/PostHog/drf-exceptions-hog
  ``exceptions_hog/handler.py``).
- ``GET /api/projects/{project_id}/cohorts/{id}/persons/`` → ``{"results", "next", "previous"}`` (no
  ``count``) of the cohort's members (``CohortViewSet.persons``): ``limit`` defaults to 100 when absent or 0,
  ``offset`` to 0; ``next`` is the URL asked, made absolute on the host asked, with ``offset`` replaced (or
  ``&offset=N`` appended; ``limit`` is kept as asked, never added), given whenever the page is *full*
  (``len(results) >= limit``) — so a cohort of exactly k×limit members ends with one more, empty, page whose
  ``next`` is null; ``previous`` when ``offset - limit >= 0`` (with PostHog's quirk: for ``offset - limit == 0``
  it is the URL asked, unchanged). Each member is served as a person (``type: "person"``, ``id`` = ``uuid``,
  ``uuid``, ``created_at``, ``properties``, ``is_identified``, ``name``, ``distinct_ids`` cut to the first 10,
  ``matched_recordings: []``, ``value_at_data_point: null``). The persons of a deleted cohort are still served
  (``get_object`` does not filter ``deleted``). PostHog orders members by ``created_at`` DESC, ``id`` DESC; the
  stand-in serves them in the order of ``Cohort.members``, so a test decides where an added member lands.
  Required key scopes: ``cohort:read`` (cohort), ``cohort:read`` and ``person:read`` (its persons).
- Cohorts exist under ``/api/projects/{project_id}/`` only: ``posthog/api/__init__.py`` registers
  ``cohorts`` on the projects router (persons are registered under both ``environments`` and ``projects``), so
  ``/api/environments/{id}/cohorts/...`` is PostHog's catch-all 404 ``"Endpoint not found."``, unless a test sets
  ``standin.cohorts_under_environments = True``.
- Errors on the cohort routes have drf-exceptions-hog's full shape (``type``, ``code``, ``detail``, ``attr``):
  401 ``not_authenticated`` / ``authentication_failed`` ("Personal API key found in request Authorization
  header is invalid."), 403 ``permission_denied`` (another project; a key without a required scope when
  ``standin.scopes`` is set: "API key missing required scope 'person:read'"), 404 ``not_found``, 429
  ``throttled``. (The persons list keeps its older, shorter error bodies.)

Faults, for the next k requests (each counts every request, good key or not): :meth:`PersonsStandin.rate_limit_next`
(429 with a ``Retry-After``), :meth:`~PersonsStandin.fail_next` (5xx), :meth:`~PersonsStandin.slow_next` (the
answer waits); and for requests whose ``path?query`` contains a substring: :meth:`~PersonsStandin.fail_path`
(e.g. the 3rd page of cohort 9's persons: ``fail_path("/cohorts/9/persons/", 503, 1, skip=2)``). Every request is
logged in ``standin.requests`` (:class:`Seen`: its route and cohort id too; :meth:`~PersonsStandin.cohort_requests`).
Two ways to serve it: :meth:`PersonsStandin.transport` (an ``httpx.MockTransport``, in-process: unit tests) and
:func:`running_persons_standin` (uvicorn in a thread on 127.0.0.1, port 0: integration tests).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
import uuid as uuidlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = [
    "COHORT_DEFAULT_LIMIT",
    "ROUTE_COHORT",
    "ROUTE_COHORT_PERSONS",
    "ROUTE_PERSONS",
    "STANDIN_KEY",
    "Answer",
    "Cohort",
    "PathFault",
    "PersonsStandin",
    "Seen",
    "make_person",
    "running_persons_standin",
]

STANDIN_KEY = "phx_standin_personal_key_0123456789"
#: PostHog's default page size for the persons list
DEFAULT_LIMIT = 100
#: PostHog's page size for a cohort's persons when ``limit`` is absent or 0 (``CohortViewSet.persons``)
COHORT_DEFAULT_LIMIT = 100
#: ``distinct_ids`` of a cohort's person are cut to this many (``get_serialized_people(distinct_id_limit=10)``)
COHORT_DISTINCT_ID_LIMIT = 10
#: what :class:`Seen` ``route`` says: the persons list, a cohort, a cohort's persons ("": any other path)
ROUTE_PERSONS = "persons"
ROUTE_COHORT = "cohort"
ROUTE_COHORT_PERSONS = "cohort_persons"
_NAMESPACE = uuidlib.UUID("6f1c1b52-7d0e-4a43-9a57-5b0a2f0d3e11")
_OFFSET = re.compile(r"([&?]offset=)(\d+)")
_CREATED_BY = {
    "id": 1,
    "uuid": "0190a6b2-1d2e-7000-8000-000000000001",
    "distinct_id": "standin-user",
    "first_name": "Stand-in",
    "last_name": "",
    "email": "standin@example.com",
    "is_email_verified": True,
    "hedgehog_config": None,
    "role_at_organization": None,
}


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


@dataclass
class Cohort:
    """A cohort on the stand-in: ``standin.cohorts[7] = Cohort(name="Power users", members=[1, 2, person])``.

    ``members``: person dicts shaped like the persons list's (``make_person(i)``, or any dict with at least
    ``id``, ``uuid`` and ``distinct_ids``), or indexes: ``i`` is ``standin.persons[i]`` when the stand-in has that
    many persons (so a change to that person shows in the cohort too), else ``make_person(i)``. Served in this
    order. ``count``: what the cohort object says (None: the number of members; PostHog's is the count of the
    last calculation, so a test may make it stale). ``last_calculation``: set to the time of each change made
    through :meth:`PersonsStandin.add_to_cohort`, :meth:`~PersonsStandin.remove_from_cohort` (but a static
    cohort's) and :meth:`~PersonsStandin.set_cohort_members`, as PostHog does: a dynamic cohort's members change
    only by a recalculation, which sets it with ``count``; a static cohort's insert sets both, its removal of a
    person only ``count`` (``posthog/models/cohort/cohort.py``). ``deleted``: PostHog's soft delete (the cohort
    is still answered, ``"deleted": true``; to make it unknown, 404, remove it from ``standin.cohorts``).
    """

    name: str = "Cohort"
    members: list[dict[str, Any] | int] = field(default_factory=list)
    description: str = ""
    deleted: bool = False
    is_calculating: bool = False
    is_static: bool = False
    count: int | None = None
    errors_calculating: int = 0
    last_calculation: str | None = "2024-01-01T00:00:00Z"
    created_at: str = "2024-01-01T00:00:00Z"


def _recalculated(cohort: Cohort) -> None:
    """The cohort's members changed: ``last_calculation`` is now (later than the one before, whatever the clock)."""
    at = datetime.now(UTC)
    if cohort.last_calculation is not None:
        at = max(at, datetime.fromisoformat(cohort.last_calculation) + timedelta(microseconds=1))
    cohort.last_calculation = at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class PathFault:
    """Answer ``status`` to requests whose ``path?query`` contains ``substring``: after letting ``skip`` of
    them through, the next ``remaining`` ones (see :meth:`PersonsStandin.fail_path`); ``hits``: how many failed."""

    substring: str
    status: int
    remaining: int
    skip: int = 0
    retry_after: str | None = None
    hits: int = 0


@dataclass(frozen=True)
class Answer:
    """What the stand-in answers to one request (served by either front end)."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass(frozen=True)
class Seen:
    """One request the stand-in got (``route``: :data:`ROUTE_PERSONS`, :data:`ROUTE_COHORT`,
    :data:`ROUTE_COHORT_PERSONS` or ``""``; ``cohort_id``: the cohort asked for, if an integer)."""

    path: str
    query: str
    authorized: bool
    status: int
    route: str = ""
    cohort_id: int | None = None


@dataclass(frozen=True)
class _Route:
    kind: str
    project_id: str = ""
    environments: bool = False
    cohort_id: int | None = None


def _route(path: str) -> _Route:
    parts = path.strip("/").split("/")
    if len(parts) < 4 or parts[0] != "api" or parts[1] not in ("projects", "environments"):
        return _Route("")
    environments = parts[1] == "environments"
    if len(parts) == 4 and parts[3] == "persons":
        return _Route(ROUTE_PERSONS, parts[2], environments)
    if parts[3] != "cohorts" or len(parts) not in (5, 6) or (len(parts) == 6 and parts[5] != "persons"):
        return _Route("")
    kind = ROUTE_COHORT if len(parts) == 5 else ROUTE_COHORT_PERSONS
    cohort_id = int(parts[4]) if parts[4].isascii() and parts[4].isdigit() else None
    return _Route(kind, parts[2], environments, cohort_id)


def _hog(error_type: str, code: str, detail: str) -> dict[str, Any]:
    """An error body in drf-exceptions-hog's shape, as PostHog's API answers errors."""
    return {"type": error_type, "code": code, "detail": detail, "attr": None}


class PersonsStandin:
    """N generated persons behind PostHog's persons list, cohorts, with injectable faults (thread-safe)."""

    def __init__(
        self,
        persons: int = 0,
        *,
        api_key: str = STANDIN_KEY,
        project_id: str = "1",
        default_limit: int = DEFAULT_LIMIT,
        cohort_default_limit: int = COHORT_DEFAULT_LIMIT,
    ) -> None:
        self.persons = [make_person(index) for index in range(persons)]
        self.api_key = api_key
        self.project_id = project_id
        self.default_limit = default_limit
        #: a cohort's persons per page when ``limit`` is absent or 0
        self.cohort_default_limit = cohort_default_limit
        #: the cohorts, by id (see :class:`Cohort`)
        self.cohorts: dict[int, Cohort] = {}
        #: serve the cohort routes under ``/api/environments/{id}/`` too (PostHog does not: 404)
        self.cohorts_under_environments = False
        #: the key's scopes (None: every scope); enforced as PostHog does, 403 naming the missing one
        self.scopes: set[str] | None = None
        self.lock = threading.Lock()
        self.requests: list[Seen] = []
        self.path_faults: list[PathFault] = []
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

    def fail_path(
        self, substring: str, status: int = 503, count: int = 1, *, skip: int = 0, retry_after: str | None = None
    ) -> PathFault:
        """Answer ``status`` to ``count`` requests whose ``path?query`` contains ``substring``, after letting the
        first ``skip`` of them through (other requests are not touched). A 429 gets ``Retry-After: retry_after``
        (if not None). Only requests that get past :meth:`rate_limit_next` and :meth:`fail_next` count; several
        rules may be set at once (the first one that applies answers). The rule is returned (``hits``,
        ``remaining``); ``standin.path_faults.clear()`` drops them all.

        E.g. the 3rd page of cohort 9's persons fails once: ``fail_path("/cohorts/9/persons/", 503, skip=2)``.
        """
        fault = PathFault(substring, status, count, skip, retry_after)
        with self.lock:
            self.path_faults.append(fault)
        return fault

    # cohorts -----------------------------------------------------------------------------------------

    def add_cohort(
        self, cohort_id: int, name: str = "Cohort", members: Iterable[dict[str, Any] | int] = (), **fields: Any
    ) -> Cohort:
        """Define (or replace) cohort ``cohort_id``; ``fields``: the other :class:`Cohort` fields."""
        cohort = Cohort(name=name, members=list(members), **fields)
        with self.lock:
            self.cohorts[cohort_id] = cohort
        return cohort

    def add_to_cohort(self, cohort_id: int, *members: dict[str, Any] | int, at: int | None = None) -> None:
        """Add ``members`` (person dicts or indexes) to the cohort: at the end, or before position ``at``."""
        with self.lock:
            cohort = self.cohorts[cohort_id]
            position = len(cohort.members) if at is None else at
            cohort.members[position:position] = list(members)
            _recalculated(cohort)

    def remove_from_cohort(self, cohort_id: int, *who: dict[str, Any] | int | str) -> int:
        """Remove from the cohort every member that is one of ``who`` — an index (that person), a person dict (by
        its ``uuid``), or a string (a ``uuid``, ``id`` or distinct id); the number removed."""
        with self.lock:
            cohort = self.cohorts[cohort_id]
            gone: set[str] = set()
            for item in who:
                if isinstance(item, str):
                    gone.add(item)
                else:
                    person = item if isinstance(item, dict) else self._person(item)
                    gone.add(str(person.get("uuid", person.get("id"))))
            kept: list[dict[str, Any] | int] = []
            for member in cohort.members:
                person = self._person(member)
                keys = {str(person.get("uuid")), str(person.get("id")), *map(str, person.get("distinct_ids") or [])}
                if keys.isdisjoint(gone):
                    kept.append(member)
            removed = len(cohort.members) - len(kept)
            cohort.members = kept
            if not cohort.is_static:  # PostHog's static cohort: a removal changes the count only
                _recalculated(cohort)
            return removed

    def set_cohort_members(self, cohort_id: int, members: Iterable[dict[str, Any] | int]) -> None:
        """Replace the cohort's members."""
        with self.lock:
            self.cohorts[cohort_id].members = list(members)
            _recalculated(self.cohorts[cohort_id])

    def cohort_members(self, cohort_id: int) -> list[dict[str, Any]]:
        """The cohort's members as person dicts (as the persons list has them), in the order served."""
        with self.lock:
            return [self._person(member) for member in self.cohorts[cohort_id].members]

    def cohort_requests(self, cohort_id: int, route: str | None = None) -> list[Seen]:
        """The requests for cohort ``cohort_id`` (``route``: only :data:`ROUTE_COHORT` or
        :data:`ROUTE_COHORT_PERSONS` ones), in order."""
        with self.lock:
            return [
                seen for seen in self.requests if seen.cohort_id == cohort_id and (route is None or seen.route == route)
            ]

    def _person(self, member: dict[str, Any] | int) -> dict[str, Any]:
        if isinstance(member, dict):
            return member
        return self.persons[member] if 0 <= member < len(self.persons) else make_person(member)

    # the one decision both front ends serve ----------------------------------------------------------

    def answer(self, base_url: str, path: str, query: str, authorization: str | None) -> Answer:
        """The answer to ``GET {base_url}{path}?{query}``."""
        route = _route(path)
        with self.lock:
            answer = self._decide(base_url, path, query, authorization, route)
            authorized = authorization == f"Bearer {self.api_key}"
            self.requests.append(Seen(path, query, authorized, answer.status, route.kind, route.cohort_id))
            return answer

    def _decide(self, base_url: str, path: str, query: str, authorization: str | None, route: _Route) -> Answer:
        delay = 0.0
        hog = route.kind in (ROUTE_COHORT, ROUTE_COHORT_PERSONS)  # errors in drf-exceptions-hog's full shape
        if self._slow:
            self._slow -= 1
            delay = self._slow_s
        if self._rate_limited:
            self._rate_limited -= 1
            headers = {"retry-after": self._retry_after} if self._retry_after is not None else {}
            detail = "Request was throttled."
            body = (
                _hog("throttled_error", "throttled", detail) if hog else {"type": "throttled_error", "detail": detail}
            )
            return Answer(429, body, headers, delay)
        if self._failing:
            self._failing -= 1
            body = (
                _hog("server_error", "error", "A server error occurred.")
                if hog
                else {"detail": "Server error (stand-in)"}
            )
            return Answer(self._fail_status, body, delay_s=delay)
        fault = self._path_fault(path, query)
        if fault is not None:
            return Answer(fault.status, self._fault_body(fault.status), self._fault_headers(fault), delay)
        if hog and route.environments and not self.cohorts_under_environments:
            return Answer(404, _hog("invalid_request", "not_found", "Endpoint not found."), delay_s=delay)
        if authorization != f"Bearer {self.api_key}":
            if hog:
                body = (
                    _hog("authentication_error", "not_authenticated", "Authentication credentials were not provided.")
                    if not authorization
                    else _hog(
                        "authentication_error",
                        "authentication_failed",
                        "Personal API key found in request Authorization header is invalid.",
                    )
                )
            else:
                detail = "Authentication credentials were not provided." if not authorization else "Invalid API key."
                body = {"type": "authentication_error", "detail": detail}
            return Answer(401, body, delay_s=delay)
        if not route.kind:
            return Answer(404, {"detail": "Not found."}, delay_s=delay)
        if route.project_id != self.project_id:
            detail = "You don't have access to the project."
            body = _hog("authentication_error", "permission_denied", detail) if hog else {"detail": detail}
            return Answer(403, body, delay_s=delay)
        needed = {
            ROUTE_PERSONS: ("person:read",),
            ROUTE_COHORT: ("cohort:read",),
            ROUTE_COHORT_PERSONS: ("cohort:read", "person:read"),
        }[route.kind]
        missing = [scope for scope in needed if self.scopes is not None and scope not in self.scopes]
        if missing:
            detail = f"API key missing required scope '{missing[0]}'"
            return Answer(403, _hog("authentication_error", "permission_denied", detail), delay_s=delay)
        if route.kind == ROUTE_PERSONS:
            return self._persons_page(base_url, path, query, delay)
        cohort = self.cohorts.get(route.cohort_id) if route.cohort_id is not None else None
        if route.cohort_id is None or cohort is None:
            return Answer(404, _hog("invalid_request", "not_found", "Not found."), delay_s=delay)
        if route.kind == ROUTE_COHORT:
            return Answer(200, self._cohort_body(route.cohort_id, cohort), delay_s=delay)
        return self._cohort_persons_page(base_url, path, query, cohort, delay)

    def _path_fault(self, path: str, query: str) -> PathFault | None:
        target = f"{path}?{query}" if query else path
        for fault in self.path_faults:
            if fault.remaining <= 0 or fault.substring not in target:
                continue
            if fault.skip > 0:
                fault.skip -= 1
                continue
            fault.remaining -= 1
            fault.hits += 1
            return fault
        return None

    @staticmethod
    def _fault_body(status: int) -> dict[str, Any]:
        if status == 429:
            return _hog("throttled_error", "throttled", "Request was throttled.")
        if status == 404:
            return _hog("invalid_request", "not_found", "Not found.")
        return _hog("server_error", "error", "A server error occurred.")

    @staticmethod
    def _fault_headers(fault: PathFault) -> dict[str, str]:
        return {"retry-after": fault.retry_after} if fault.status == 429 and fault.retry_after is not None else {}

    def _persons_page(self, base_url: str, path: str, query: str, delay: float) -> Answer:
        params = dict(parse_qsl(query, keep_blank_values=True))
        try:
            limit = int(params.get("limit", self.default_limit))
            offset = int(params.get("offset", 0))
        except ValueError:
            return Answer(400, {"detail": "limit and offset must be integers"}, delay_s=delay)
        if limit < 1 or offset < 0:
            return Answer(400, {"detail": "limit and offset must be positive"}, delay_s=delay)
        if "distinct_id" in params:  # the persons list's documented filter: the person holding it, all its ids
            wanted = params["distinct_id"]
            everyone = [*self.persons, *(m for c in self.cohorts.values() for m in map(self._person, c.members))]
            found = next((p for p in everyone if wanted in p.get("distinct_ids", [])), None)
            body = {
                "next": None,
                "previous": None,
                "count": int(found is not None),
                "results": [found] if found else [],
            }
            return Answer(200, body, delay_s=delay)
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

    def _cohort_body(self, cohort_id: int, cohort: Cohort) -> dict[str, Any]:
        """The cohort object, as ``CohortSerializer`` writes it."""
        return {
            "id": cohort_id,
            "name": cohort.name,
            "description": cohort.description,
            "groups": [],
            "deleted": cohort.deleted,
            "filters": {"properties": {"type": "AND", "values": []}},
            "query": None,
            "is_calculating": cohort.is_calculating,
            "created_by": dict(_CREATED_BY),
            "created_at": cohort.created_at,
            "last_calculation": cohort.last_calculation,
            "errors_calculating": cohort.errors_calculating,
            "last_error_message": None,
            "count": len(cohort.members) if cohort.count is None else cohort.count,
            "is_static": cohort.is_static,
            "cohort_type": "static" if cohort.is_static else "person_property",
            "experiment_set": [],
        }

    def _cohort_persons_page(self, base_url: str, path: str, query: str, cohort: Cohort, delay: float) -> Answer:
        """A page of the cohort's persons, as ``CohortViewSet.persons`` pages them."""
        params = dict(parse_qsl(query, keep_blank_values=True))
        try:
            limit = int(params.get("limit") or 0) or self.cohort_default_limit
            offset = int(params.get("offset") or 0)
        except ValueError:
            return Answer(
                400, _hog("validation_error", "invalid_input", "limit and offset must be integers"), delay_s=delay
            )
        if limit < 1 or offset < 0:
            return Answer(
                400, _hog("validation_error", "invalid_input", "limit and offset must be positive"), delay_s=delay
            )
        members = [self._person(member) for member in cohort.members][offset : offset + limit]
        asked = f"{base_url.rstrip('/')}{path}" + (f"?{query}" if query else "")

        def link(at: int) -> str:  # posthog.utils.format_query_params_absolute_url(request, offset=at)
            if not at:
                return asked
            if _OFFSET.search(asked):
                return _OFFSET.sub(rf"\g<1>{at}", asked)
            return f"{asked}{'&' if '?' in asked else '?'}offset={at}"

        body = {
            "results": [self._served_member(person) for person in members],
            "next": link(offset + limit) if len(members) >= limit else None,
            "previous": link(offset - limit) if offset - limit >= 0 else None,
        }
        return Answer(200, body, delay_s=delay)

    @staticmethod
    def _served_member(person: dict[str, Any]) -> dict[str, Any]:
        """A member as a cohort's persons list serves it (``get_serialized_people``)."""
        served: dict[str, Any] = {"type": "person", **person}
        if "uuid" in served:
            served["id"] = served["uuid"]  # PostHog's cohort persons: ``id=uuid``
        if isinstance(served.get("distinct_ids"), list):
            served["distinct_ids"] = served["distinct_ids"][:COHORT_DISTINCT_ID_LIMIT]
        served.setdefault("matched_recordings", [])
        served.setdefault("value_at_data_point", None)
        return served

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
