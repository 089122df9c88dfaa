"""Reading every person of a PostHog project through PostHog's private API (groundwork for ``sync-persons``).

What PostHog documents, and what this module does about it:

* ``GET /api/projects/{project_id}/persons/`` lists a project's persons, a page at a time, answering
  ``{"next": <url or null>, "previous": <url or null>, "results": [person, ...]}``; the page size and
  position travel in the ``next`` URL (``limit``/``offset`` query parameters). A person has ``id``,
  ``uuid``, ``name``, ``distinct_ids``, ``properties``, ``created_at`` (and ``is_identified``).
  The key needs the ``person:read`` scope. https://posthog.com/docs/api/persons
  (the same list under ``/api/environments/...``: https://posthog.com/docs/api/people)
* Private endpoints take a personal API key as ``Authorization: Bearer <key>``, on the private host
  (``https://us.posthog.com``, ``https://eu.posthog.com`` or a self-hosted domain, not the ``*.i.`` ingestion
  hosts). https://posthog.com/docs/api
* The persons list is an analytics endpoint: 240 requests a minute and 1,200 an hour, per team (every key
  of the project shares the budget); past it PostHog answers ``429``, with ``Retry-After`` when it can.
  https://posthog.com/docs/api (rate limits)

:class:`PostHogPersonsClient` reads the list: :meth:`~PostHogPersonsClient.pages` yields one validated
:class:`PersonsPage` per request, following each ``next`` URL verbatim (never rebuilt) and refusing one that
points at another origin (the key would go with it). Requests are paced (:class:`SlidingWindowLimiter`: at
most ``max_per_minute`` in any 60 s and ``max_per_hour`` in any hour); a ``429`` waits for ``Retry-After``
(seconds or an HTTP date) or backs off (:class:`~posthog_customerio.backoff.Backoff`); a ``5xx``, ``408``,
``425``, a network error or a timeout (each request has a total deadline, :class:`~..output.deadline.DeadlineClient`)
is retried with the back-off, at most ``max_attempts`` times in a row, then :class:`PostHogUnavailable` is
raised. ``401``/``403`` raise :class:`PostHogAuthError` at once. The key is never in a log line, an error or
a ``repr``.

:class:`PersonsCheckpoint` remembers where a run is (the URL of the next page to read, persons and pages
read), written atomically with mode 0600, so an interrupted run resumes. **Store, then checkpoint**: the
generator only yields a page; the caller stores its persons and only then saves the page's ``next_url``. A
crash between the two re-reads that one page on resume (at least once: storing must be idempotent, by
``uuid``), never skips one. :func:`read_persons` is that loop, written once::

    client = PostHogPersonsClient("https://eu.posthog.com", "12345", key)
    checkpoint = PersonsCheckpoint(data_dir / "persons.checkpoint", scope=client.scope)
    progress = read_persons(client, checkpoint, store=lambda persons: ...)
"""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlencode

import httpx

from .. import __version__
from ..backoff import Backoff
from ..output.base import parse_retry_after
from ..output.deadline import DeadlineClient

__all__ = [
    "DEFAULT_MAX_PER_HOUR",
    "DEFAULT_MAX_PER_MINUTE",
    "PERSON_READ_SCOPE",
    "CheckpointError",
    "PersonsCheckpoint",
    "PersonsPage",
    "PersonsProgress",
    "PostHogApiError",
    "PostHogAuthError",
    "PostHogCohort",
    "PostHogNotFound",
    "PostHogPageError",
    "PostHogPerson",
    "PostHogPersonsClient",
    "PostHogUnavailable",
    "SlidingWindowLimiter",
    "parse_cohort",
    "parse_page",
    "parse_person",
    "read_persons",
]

log = logging.getLogger(__name__)

#: the personal API key scope the persons list needs (https://posthog.com/docs/api/persons)
PERSON_READ_SCOPE = "person:read"
#: the scope reading cohorts needs (https://posthog.com/docs/api/cohorts)
COHORT_READ_SCOPE = "cohort:read"
#: below PostHog's 240 a minute for analytics endpoints, leaving room for the team's other callers
DEFAULT_MAX_PER_MINUTE = 200
#: below PostHog's 1,200 an hour for analytics endpoints (the minute budget alone would exceed it in 6 minutes)
DEFAULT_MAX_PER_HOUR = 1000
#: statuses retried with the back-off (besides 429 and every 5xx)
_RETRIED_STATUSES = frozenset({408, 425})
_BODY_SNIPPET = 200


# --------------------------------------------------------------------------------------------------- errors


class PostHogApiError(RuntimeError):
    """Reading from PostHog's private API failed (the message never holds the key)."""


class PostHogAuthError(PostHogApiError):
    """PostHog refused the personal API key (401) or its scopes (403): retrying cannot help."""


class PostHogNotFound(PostHogApiError):
    """PostHog answered 404: no such project, cohort or API path."""


class PostHogUnavailable(PostHogApiError):
    """PostHog kept failing (5xx, 429, network, timeout) for ``max_attempts`` tries in a row."""


class PostHogPageError(PostHogApiError):
    """A page PostHog answered is not what its API documents (the message names the field)."""


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be used (unreadable, malformed, or of another project)."""


# --------------------------------------------------------------------------------------------------- model


@dataclass(frozen=True, slots=True)
class PostHogPerson:
    """One person as the persons list returns it (https://posthog.com/docs/api/persons).

    ``id`` is a string whatever PostHog sends (older versions: an integer). ``properties`` is ``{}`` when
    PostHog sends ``null`` (its documented example does); ``is_identified`` is False when absent (the
    documented response schema does not list it).
    """

    id: str
    uuid: str
    distinct_ids: list[str]
    properties: dict[str, Any]
    created_at: str | None = None
    is_identified: bool = False
    name: str | None = None


@dataclass(frozen=True, slots=True)
class PersonsPage:
    """One page of the persons list: its persons, and the URL of the next page exactly as PostHog gave it."""

    #: the URL this page was read from
    url: str
    results: list[PostHogPerson]
    #: PostHog's ``next``, verbatim (None: this was the last page)
    next_url: str | None

    @property
    def last(self) -> bool:
        """True when no page follows."""
        return self.next_url is None


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _text(value: object, where: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise PostHogPageError(f"{where}: expected a string, got {_kind(value)}")
    return value


def parse_person(raw: object, where: str = "person") -> PostHogPerson:
    """Validate one person of a page (``where`` names it in errors, e.g. ``results[3]``)."""
    if not isinstance(raw, dict):
        raise PostHogPageError(f"{where}: expected an object, got {_kind(raw)}")
    for required in ("id", "uuid", "distinct_ids"):
        if required not in raw:
            raise PostHogPageError(f"{where}.{required}: missing")
    raw_id = raw["id"]
    if isinstance(raw_id, bool) or not isinstance(raw_id, int | str):
        raise PostHogPageError(f"{where}.id: expected a string or an integer, got {_kind(raw_id)}")
    uuid = _text(raw["uuid"], f"{where}.uuid")
    assert uuid is not None
    distinct_ids = raw["distinct_ids"]
    if not isinstance(distinct_ids, list):
        raise PostHogPageError(f"{where}.distinct_ids: expected a list, got {_kind(distinct_ids)}")
    for index, distinct_id in enumerate(distinct_ids):
        _text(distinct_id, f"{where}.distinct_ids[{index}]")
    properties = raw.get("properties")
    if properties is None:
        properties = {}
    elif not isinstance(properties, dict):
        raise PostHogPageError(f"{where}.properties: expected an object, got {_kind(properties)}")
    is_identified = raw.get("is_identified", False)
    if not isinstance(is_identified, bool):
        raise PostHogPageError(f"{where}.is_identified: expected true or false, got {_kind(is_identified)}")
    return PostHogPerson(
        id=str(raw_id),
        uuid=uuid,
        distinct_ids=list(distinct_ids),
        properties=properties,
        created_at=_text(raw.get("created_at"), f"{where}.created_at", optional=True),
        is_identified=is_identified,
        name=_text(raw.get("name"), f"{where}.name", optional=True),
    )


@dataclass(frozen=True, slots=True)
class PostHogCohort:
    """A cohort as ``GET /api/projects/{project_id}/cohorts/{id}/`` returns it (https://posthog.com/docs/api/cohorts):
    ``deleted`` is PostHog's soft delete; ``is_calculating``: a dynamic cohort being recalculated."""

    id: str
    name: str
    deleted: bool = False
    is_calculating: bool = False
    is_static: bool = False
    count: int | None = None
    last_calculation: str | None = None


def parse_cohort(raw: object) -> PostHogCohort:
    """Validate a cohort object (the fields this project uses; others are ignored)."""
    if not isinstance(raw, dict):
        raise PostHogPageError(f"cohort: expected an object, got {_kind(raw)}")
    raw_id = raw.get("id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, int | str):
        raise PostHogPageError(f"cohort.id: expected a string or an integer, got {_kind(raw_id)}")
    flags = {}
    for name in ("deleted", "is_calculating", "is_static"):
        value = raw.get(name, False)
        if value is None:
            value = False
        if not isinstance(value, bool):
            raise PostHogPageError(f"cohort.{name}: expected true or false, got {_kind(value)}")
        flags[name] = value
    count = raw.get("count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
        raise PostHogPageError(f"cohort.count: expected an integer, got {_kind(count)}")
    return PostHogCohort(
        id=str(raw_id),
        name=_text(raw.get("name"), "cohort.name", optional=True) or "",
        count=count,
        last_calculation=_text(raw.get("last_calculation"), "cohort.last_calculation", optional=True),
        **flags,
    )


def parse_page(body: object, url: str) -> PersonsPage:
    """Validate a whole page, all or nothing: any malformed field raises :class:`PostHogPageError`."""
    if not isinstance(body, dict):
        raise PostHogPageError(f"page: expected a JSON object, got {_kind(body)}")
    if "results" not in body:
        raise PostHogPageError("page.results: missing")
    if "next" not in body:
        raise PostHogPageError("page.next: missing")
    results = body["results"]
    if not isinstance(results, list):
        raise PostHogPageError(f"page.results: expected a list, got {_kind(results)}")
    next_url = _text(body["next"], "page.next", optional=True)
    persons = [parse_person(raw, f"results[{index}]") for index, raw in enumerate(results)]
    return PersonsPage(url=url, results=persons, next_url=next_url)


# --------------------------------------------------------------------------------------------------- pacing


class SlidingWindowLimiter:
    """At most ``limit`` requests in any ``window`` seconds, for each ``(limit, window)`` given.

    A sliding log of request times: :meth:`acquire` waits (``sleep``) until a request fits every
    window, then records it. ``clock`` is monotonic seconds; both are injectable, so tests never sleep.
    """

    def __init__(
        self,
        limits: Sequence[tuple[int, float]],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not limits:
            raise ValueError("at least one (limit, window) is needed")
        for limit, window in limits:
            if limit < 1 or not window > 0:
                raise ValueError(f"a limit must be at least 1 request in a positive window, not {limit} in {window}")
        self.limits = tuple((int(limit), float(window)) for limit, window in limits)
        self._span = max(window for _, window in self.limits)
        self._clock = clock
        self._sleep = sleep
        self._times: list[float] = []

    def wait_time(self) -> float:
        """Seconds until the next request fits every window (0: now)."""
        now = self._clock()
        del self._times[: bisect.bisect_right(self._times, now - self._span)]
        wait = 0.0
        for limit, window in self.limits:
            # requests in (now - window, now]; the oldest that must leave the window before one more fits
            inside = len(self._times) - bisect.bisect_right(self._times, now - window)
            if inside >= limit:
                wait = max(wait, self._times[len(self._times) - limit] + window - now)
        return wait

    def acquire(self) -> None:
        """Wait until a request fits, then count it as sent now."""
        while (wait := self.wait_time()) > 0:
            self._sleep(wait)
        self._times.append(self._clock())


# --------------------------------------------------------------------------------------------------- client


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return (url.scheme, url.host, url.port if url.port is not None else default)


class PostHogPersonsClient:
    """Reads every person of one PostHog project, page by page (see the module's docs for the rules).

    ``host`` is the private API's base URL (``https://us.posthog.com``, ``https://eu.posthog.com`` or a
    self-hosted one); ``page_size`` sets ``limit`` on the first page only (later pages follow ``next``).
    ``transport`` replaces the network (tests); ``clock``/``sleep`` drive the pacing and the waits.
    """

    def __init__(
        self,
        host: str,
        project_id: str | int,
        api_key: str,
        *,
        max_per_minute: int = DEFAULT_MAX_PER_MINUTE,
        max_per_hour: int | None = DEFAULT_MAX_PER_HOUR,
        timeout_s: float = 30.0,
        max_attempts: int = 8,
        page_size: int | None = None,
        retry_after_max_s: float = 3600.0,
        backoff: Backoff | None = None,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        try:
            base = httpx.URL(host)
        except (httpx.InvalidURL, TypeError) as exc:
            raise ValueError(f"the PostHog host must be an http(s) URL, not {host!r}") from exc
        if base.scheme not in ("http", "https") or not base.host or base.query or base.fragment:
            raise ValueError(f"the PostHog host must be an http(s) URL, not {host!r}")
        project = str(project_id).strip()
        if not project or "/" in project:
            raise ValueError(f"not a PostHog project id: {project_id!r}")
        if not api_key:
            raise ValueError("a PostHog personal API key is needed (scope person:read)")
        if not (api_key.isascii() and api_key.isprintable()) or any(c.isspace() for c in api_key):
            # refused here, without echoing it: the HTTP stack's own error would quote the header
            raise ValueError("the PostHog personal API key has characters an HTTP header cannot carry")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if page_size is not None and page_size < 1:
            raise ValueError("page_size must be at least 1")
        #: as given, without a trailing slash (a self-hosted PostHog may sit under a path)
        self.host = host.rstrip("/")
        self.project_id = project
        self.max_attempts = max_attempts
        self.page_size = page_size
        self.retry_after_max_s = retry_after_max_s
        self.backoff = backoff if backoff is not None else Backoff(base=1.0, cap=60.0)
        self._origin = _origin(base)
        self._key = api_key
        self._sleep = sleep
        limits: list[tuple[int, float]] = [(max_per_minute, 60.0)]
        if max_per_hour is not None:
            limits.append((max_per_hour, 3600.0))
        self.limiter = SlidingWindowLimiter(limits, clock=clock, sleep=sleep)
        self._http = DeadlineClient(
            timeout_s,
            transport=transport,
            follow_redirects=False,
            headers={"Accept": "application/json", "User-Agent": f"posthog-customerio/{__version__}"},
        )

    def __repr__(self) -> str:
        return f"PostHogPersonsClient(host={self.host!r}, project_id={self.project_id!r})"

    @property
    def first_url(self) -> str:
        """The first page's URL: ``{host}/api/projects/{project_id}/persons/`` (with ``limit`` if ``page_size``)."""
        url = f"{self.host}/api/projects/{self.project_id}/persons/"
        return f"{url}?limit={self.page_size}" if self.page_size else url

    @property
    def scope(self) -> str:
        """What a checkpoint of this client's list belongs to (host and project; no key)."""
        return f"{self.host} project {self.project_id}"

    def cohort_members_url(self, cohort_id: str) -> str:
        """The first page of a cohort's members: ``{host}/api/projects/{project_id}/cohorts/{id}/persons/``."""
        url = f"{self.host}/api/projects/{self.project_id}/cohorts/{cohort_id}/persons/"
        return f"{url}?limit={self.page_size}" if self.page_size else url

    def person_by_distinct_id(self, distinct_id: str) -> PostHogPerson | None:
        """The person holding ``distinct_id``, with all its distinct_ids (the persons list's ``distinct_id``
        filter, https://posthog.com/docs/api/persons); None when PostHog has none."""
        url = f"{self.host}/api/projects/{self.project_id}/persons/?{urlencode({'distinct_id': distinct_id})}"
        page = parse_page(self._get_json(url), url)
        return next((person for person in page.results if distinct_id in person.distinct_ids), None)

    def cohort(self, cohort_id: str) -> PostHogCohort:
        """``GET /api/projects/{project_id}/cohorts/{id}/`` (paced and retried like a page; 404 raises
        :class:`PostHogNotFound`)."""
        return parse_cohort(self._get_json(f"{self.host}/api/projects/{self.project_id}/cohorts/{cohort_id}/"))

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __enter__(self) -> PostHogPersonsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pages(self, start_url: str | None = None) -> Iterator[PersonsPage]:
        """Every page from ``start_url`` (a checkpoint's ``next_url``; None: the first page) to the last.

        Each page is read (paced, retried), validated whole, and yielded before the next is asked for;
        its ``next_url`` is followed verbatim. Raises :class:`PostHogAuthError`, :class:`PostHogUnavailable`,
        :class:`PostHogPageError` (also for a ``next`` on another origin, or one that points at itself) or
        :class:`PostHogApiError`.
        """
        url = self.first_url if start_url is None else self._checked(start_url, "the start URL")
        while True:
            page = parse_page(self._get_json(url), url)
            if page.next_url is not None:
                self._checked(page.next_url, "page.next")
                if page.next_url == url:
                    raise PostHogPageError(f"page.next: points at the page just read ({url}), which would loop forever")
            yield page
            if page.next_url is None:
                return
            url = page.next_url

    def _checked(self, url: str, what: str) -> str:
        """``url`` if it is on the configured origin (scheme, host, port); the key is sent nowhere else."""
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise PostHogPageError(f"{what}: not a URL: {url!r} ({exc})") from None
        if not parsed.is_absolute_url:
            raise PostHogPageError(f"{what}: {url!r} is not an absolute URL")
        if _origin(parsed) != self._origin:
            raise PostHogPageError(
                f"{what}: {url!r} is not on {self.host} (refused: the personal API key would be sent there;"
                " check the configured PostHog host)"
            )
        return url

    def _redacted(self, text: str) -> str:
        return text.replace(self._key, "***")

    def _get_json(self, url: str) -> object:
        """GET ``url`` with the key, paced and retried; the decoded JSON body of a 2xx answer."""
        self.backoff.reset()
        last = ""
        for attempt in range(1, self.max_attempts + 1):
            self.limiter.acquire()
            retry_after: float | None = None
            try:
                response = self._http.get(url, headers={"Authorization": f"Bearer {self._key}"})
            except httpx.HTTPError as exc:  # network error, timeout, the total deadline
                last = self._redacted(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return self._decoded(response, url)
                if status == 429 or status >= 500 or status in _RETRIED_STATUSES:
                    last = f"HTTP {status}"
                    retry_after = parse_retry_after(response.headers.get("retry-after"), limit=self.retry_after_max_s)
                else:
                    self._refuse(response, url)
            if attempt == self.max_attempts:
                break
            delay = self.backoff.next_delay(retry_after)
            log.warning(
                "PostHog API: %s for %s; retrying in %.1f s (attempt %d of %d)",
                last,
                url,
                delay,
                attempt,
                self.max_attempts,
            )
            if delay > 0:
                self._sleep(delay)
        raise PostHogUnavailable(
            f"PostHog API: {self.max_attempts} attempts in a row failed for {url} (last: {last}); giving up"
        )

    def _decoded(self, response: httpx.Response, url: str) -> object:
        try:
            return json.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            snippet = self._redacted(response.text[:_BODY_SNIPPET])
            raise PostHogPageError(f"page: not JSON (HTTP {response.status_code} from {url}): {snippet!r}") from None

    def _refuse(self, response: httpx.Response, url: str) -> NoReturn:
        """Raise the error of an answer no retry can change (auth, redirects, other 4xx)."""
        status = response.status_code
        detail = self._redacted(response.text[:_BODY_SNIPPET])
        if status == 401:
            raise PostHogAuthError(
                f"PostHog refused the personal API key (HTTP 401 from {url}): use a valid personal API key"
                f" (from PostHog's account settings, not the project token) with scope {PERSON_READ_SCOPE}"
            )
        if status == 403:
            raise PostHogAuthError(
                f"PostHog refused access (HTTP 403 from {url}): the personal API key needs scope {PERSON_READ_SCOPE}"
                f" and access to project {self.project_id} (and scope {COHORT_READ_SCOPE} to read cohorts)"
            )
        if 300 <= status < 400:
            location = self._redacted(response.headers.get("location", "?"))
            raise PostHogApiError(
                f"PostHog redirected {url} to {location} (HTTP {status}): use the private API host"
                " (https://us.posthog.com, https://eu.posthog.com or your self-hosted domain)"
            )
        if status == 404:
            raise PostHogNotFound(f"HTTP 404 from {url}: no such project ({self.project_id}), cohort or API path")
        raise PostHogApiError(f"PostHog answered HTTP {status} for {url}: {detail!r}")


# --------------------------------------------------------------------------------------------------- checkpoint


@dataclass(frozen=True, slots=True)
class PersonsProgress:
    """Where a read of the persons list is: the next page to read and what was stored so far."""

    #: the URL of the next page to read (None once the last page was stored: see ``done``)
    next_url: str | None
    #: persons and pages stored so far
    persons: int = 0
    pages: int = 0
    #: the last page was stored: nothing is left to read
    done: bool = False
    scope: str = ""
    #: wall-clock time of the last save (ISO 8601, UTC)
    updated_at: str = field(default="", compare=False)


_CHECKPOINT_VERSION = 1


class PersonsCheckpoint:
    """The progress of a persons read, in one JSON file (``path``), written atomically with mode 0600.

    ``scope`` (:attr:`PostHogPersonsClient.scope`) ties the file to one host and project: loading another
    one's raises :class:`CheckpointError`, never resumes the wrong list. Save only after the page's persons
    are stored (:func:`read_persons` does it in that order).
    """

    def __init__(self, path: str | os.PathLike[str], *, scope: str = "") -> None:
        self.path = Path(path)
        self.scope = scope

    def __repr__(self) -> str:
        return f"PersonsCheckpoint({str(self.path)!r}, scope={self.scope!r})"

    def load(self) -> PersonsProgress | None:
        """The saved progress, or None when there is none (start from the first page)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CheckpointError(f"cannot read the checkpoint {self.path}: {exc}") from None
        try:
            data = json.loads(text)
        except ValueError:
            raise CheckpointError(f"the checkpoint {self.path} is not JSON: remove it to start over") from None
        progress = self._parse(data)
        if progress.scope != self.scope:
            raise CheckpointError(
                f"the checkpoint {self.path} is of {progress.scope!r}, not {self.scope!r}: remove it to start over"
            )
        return progress

    def _parse(self, data: object) -> PersonsProgress:
        def bad(what: str) -> CheckpointError:
            return CheckpointError(f"the checkpoint {self.path} is malformed ({what}): remove it to start over")

        if not isinstance(data, dict) or data.get("version") != _CHECKPOINT_VERSION:
            raise bad("version")
        next_url, done = data.get("next_url"), data.get("done")
        if not (next_url is None or isinstance(next_url, str)) or not isinstance(done, bool):
            raise bad("next_url/done")
        if (next_url is None) != done:
            raise bad("next_url and done disagree")
        counts = data.get("persons"), data.get("pages")
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            raise bad("persons/pages")
        scope, updated_at = data.get("scope"), data.get("updated_at", "")
        if not isinstance(scope, str) or not isinstance(updated_at, str):
            raise bad("scope")
        return PersonsProgress(next_url, data["persons"], data["pages"], done, scope, updated_at)

    def save(self, next_url: str | None, read: int, previous: PersonsProgress | None = None) -> PersonsProgress:
        """Record that a page of ``read`` persons was stored and the next page to read is ``next_url``
        (None: that was the last page). Counts add to ``previous`` (the progress this run started from or
        last saved; None: the file's). Returns the new progress, already on disk."""
        if read < 0:
            raise ValueError("read must not be negative")
        before = previous if previous is not None else (self.load() or PersonsProgress(None, scope=self.scope))
        progress = PersonsProgress(
            next_url=next_url,
            persons=before.persons + read,
            pages=before.pages + 1,
            done=next_url is None,
            scope=self.scope,
            updated_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        self._write(progress)
        return progress

    def _write(self, progress: PersonsProgress) -> None:
        record = {
            "version": _CHECKPOINT_VERSION,
            "scope": progress.scope,
            "next_url": progress.next_url,
            "persons": progress.persons,
            "pages": progress.pages,
            "done": progress.done,
            "updated_at": progress.updated_at,
        }
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        try:
            os.fchmod(fd, 0o600)  # mkstemp's 0600 already; stated, whatever the platform
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(record, out, sort_keys=True)
                out.write("\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        _fsync_directory(directory)

    def clear(self) -> None:
        """Forget the progress (the next run starts from the first page)."""
        self.path.unlink(missing_ok=True)
        _fsync_directory(self.path.parent)


def _fsync_directory(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable (where directories can be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_persons(
    client: PostHogPersonsClient,
    checkpoint: PersonsCheckpoint,
    store: Callable[[list[PostHogPerson]], None],
    *,
    on_page: Callable[[PersonsProgress], None] | None = None,
) -> PersonsProgress:
    """Read the persons list from where ``checkpoint`` stopped to the end: for each page, ``store`` its
    persons, **then** save the checkpoint (a crash in between re-reads that page, so ``store`` must be
    idempotent). A finished checkpoint is returned as it is (:meth:`PersonsCheckpoint.clear` to read again).
    ``on_page`` sees the progress after each save."""
    progress = checkpoint.load()
    if progress is not None and progress.done:
        return progress
    start = progress.next_url if progress is not None else None
    progress = progress or PersonsProgress(None, scope=checkpoint.scope)
    for page in client.pages(start):
        store(page.results)
        progress = checkpoint.save(page.next_url, len(page.results), progress)
        if on_page is not None:
            on_page(progress)
    return progress
