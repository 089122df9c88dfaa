"""The PostHog persons reader (:mod:`posthog_customerio.sources.posthog_api`), in-process: ``httpx.MockTransport``
(often the stand-in's, :mod:`tests.posthog_api_standin`), an injected clock and sleep (no test waits)."""

from __future__ import annotations

import email.utils
import json
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from posthog_customerio.backoff import Backoff
from posthog_customerio.sources.posthog_api import (
    CheckpointError,
    PersonsCheckpoint,
    PersonsProgress,
    PostHogApiError,
    PostHogAuthError,
    PostHogPageError,
    PostHogPerson,
    PostHogPersonsClient,
    PostHogUnavailable,
    SlidingWindowLimiter,
    read_persons,
)

from ..posthog_api_standin import ROUTE_COHORT, ROUTE_COHORT_PERSONS, STANDIN_KEY, Cohort, PersonsStandin, make_person

HOST = "https://ph.example"
FIRST = f"{HOST}/api/projects/1/persons/"


class FakeTime:
    """A monotonic clock that only moves when something sleeps (every sleep recorded)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def client_for(fake_time: FakeTime) -> Iterator[Callable[..., PostHogPersonsClient]]:
    """Build clients on the fake clock with a jitter-free back-off (1, 2, 4 ... s); closed after the test."""
    made: list[PostHogPersonsClient] = []

    def make(transport: httpx.BaseTransport, **options: Any) -> PostHogPersonsClient:
        options.setdefault("backoff", Backoff(base=1.0, cap=8.0, jitter=0.0))
        client = PostHogPersonsClient(
            options.pop("host", HOST),
            options.pop("project_id", "1"),
            options.pop("api_key", STANDIN_KEY),
            transport=transport,
            clock=fake_time.clock,
            sleep=fake_time.sleep,
            **options,
        )
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def recording(answer: Callable[[httpx.Request], httpx.Response]) -> tuple[httpx.MockTransport, list[str]]:
    """A MockTransport answering with ``answer`` and the list of URLs it was asked, as sent."""
    urls: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        urls.append(str(request.url))
        return answer(request)

    return httpx.MockTransport(handle), urls


def page(results: list[Any], next_url: str | None) -> dict[str, Any]:
    return {"next": next_url, "previous": None, "results": results}


# ------------------------------------------------------------------------------------------- pagination


def test_reads_every_person_across_pages_of_the_standin(client_for: Callable[..., PostHogPersonsClient]) -> None:
    standin = PersonsStandin(250)
    client = client_for(standin.transport())
    pages = list(client.pages())
    assert [len(p.results) for p in pages] == [100, 100, 50]
    assert [p.last for p in pages] == [False, False, True]
    assert [person.uuid for p in pages for person in p.results] == [make_person(i)["uuid"] for i in range(250)]
    assert pages[0].results[1] == PostHogPerson(
        id=make_person(1)["id"],
        uuid=make_person(1)["uuid"],
        distinct_ids=["anon-1", "user-1"],
        properties={"$initial_os": "Mac OS X", "plan": "pro", "email": "user1@example.com"},
        created_at="2024-01-02T12:00:00Z",
        is_identified=True,
        name="user1@example.com",
    )
    assert all(seen.authorized for seen in standin.requests)


def test_next_is_followed_verbatim(client_for: Callable[..., PostHogPersonsClient]) -> None:
    # cursors PostHog might send: already percent-encoded, parameters in its own order; never rebuilt
    second = f"{HOST}/api/projects/1/persons/?offset=1&limit=1&cursor=YWJj%2FZGVm%3D%3D&properties=%5B%5D"
    third = f"{HOST}/api/environments/1/persons/?limit=1&offset=2&search="
    answers = {FIRST: page([make_person(0)], second), second: page([make_person(1)], third), third: page([], None)}
    transport, urls = recording(lambda request: httpx.Response(200, json=answers[str(request.url)]))
    pages = list(client_for(transport).pages())
    assert urls == [FIRST, second, third]
    assert [p.url for p in pages] == [FIRST, second, third]
    assert [p.next_url for p in pages] == [second, third, None]


def test_page_size_sets_limit_on_the_first_page_only(client_for: Callable[..., PostHogPersonsClient]) -> None:
    standin = PersonsStandin(5)
    pages = list(client_for(standin.transport(), page_size=2).pages())
    assert [len(p.results) for p in pages] == [2, 2, 1]
    assert [seen.query for seen in standin.requests] == ["limit=2", "limit=2&offset=2", "limit=2&offset=4"]


def test_a_start_url_resumes_there(client_for: Callable[..., PostHogPersonsClient]) -> None:
    standin = PersonsStandin(30, default_limit=10)
    pages = list(client_for(standin.transport()).pages(f"{HOST}/api/projects/1/persons/?limit=10&offset=20"))
    assert [person.uuid for p in pages for person in p.results] == [make_person(i)["uuid"] for i in range(20, 30)]


# ------------------------------------------------------------------------------------------- strict pages

GOOD = make_person(0)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "page: expected a JSON object, got list"),
        ({"next": None}, "page.results: missing"),
        ({"results": []}, "page.next: missing"),
        ({"next": None, "results": {"0": GOOD}}, "page.results: expected a list, got dict"),
        ({"next": 7, "results": []}, "page.next: expected a string, got int"),
        ({"next": None, "results": [GOOD, "x"]}, "results[1]: expected an object, got str"),
        ({"next": None, "results": [{k: v for k, v in GOOD.items() if k != "uuid"}]}, "results[0].uuid: missing"),
        ({"next": None, "results": [{**GOOD, "id": True}]}, "results[0].id: expected a string or an integer"),
        ({"next": None, "results": [{**GOOD, "uuid": None}]}, "results[0].uuid: expected a string, got null"),
        ({"next": None, "results": [GOOD, {**GOOD, "distinct_ids": "a"}]}, "results[1].distinct_ids: expected a list"),
        ({"next": None, "results": [{**GOOD, "distinct_ids": ["a", 2]}]}, "results[0].distinct_ids[1]: expected a"),
        ({"next": None, "results": [{**GOOD, "properties": []}]}, "results[0].properties: expected an object"),
        ({"next": None, "results": [{**GOOD, "is_identified": "yes"}]}, "results[0].is_identified: expected true"),
        ({"next": None, "results": [{**GOOD, "created_at": 5}]}, "results[0].created_at: expected a string"),
    ],
)
def test_a_malformed_page_raises_naming_the_field_and_yields_nothing_of_it(
    client_for: Callable[..., PostHogPersonsClient], body: Any, field: str
) -> None:
    second = f"{FIRST}?limit=1&offset=1"
    answers = {FIRST: page([GOOD], second), second: body}
    transport, _ = recording(lambda request: httpx.Response(200, json=answers[str(request.url)]))
    pages = client_for(transport).pages()
    assert len(next(pages).results) == 1  # the good page before it
    with pytest.raises(PostHogPageError) as raised:
        next(pages)
    assert field in str(raised.value)


def test_a_body_that_is_not_json_is_a_page_error(client_for: Callable[..., PostHogPersonsClient]) -> None:
    transport, _ = recording(lambda request: httpx.Response(200, text="<html>maintenance</html>"))
    with pytest.raises(PostHogPageError, match="not JSON"):
        list(client_for(transport).pages())


def test_lenient_only_where_posthog_documents_it(client_for: Callable[..., PostHogPersonsClient]) -> None:
    # the documented example: integer id, properties null, no is_identified; unknown fields ignored
    person = {"id": 0, "uuid": "u-0", "distinct_ids": [], "properties": None, "last_seen_at": None}
    transport, _ = recording(lambda request: httpx.Response(200, json={"next": None, "results": [person]}))
    [only] = list(client_for(transport).pages())
    assert only.results == [PostHogPerson(id="0", uuid="u-0", distinct_ids=[], properties={})]


# ------------------------------------------------------------------------------------------- where next may point


@pytest.mark.parametrize(
    "foreign",
    [
        "https://attacker.example/api/projects/1/persons/?offset=1",
        "http://ph.example/api/projects/1/persons/?offset=1",  # a downgrade to plain HTTP
        "https://ph.example:8443/api/projects/1/persons/?offset=1",
        "https://ph.example.attacker.example/api/projects/1/persons/?offset=1",
    ],
)
def test_a_next_on_another_origin_is_refused_and_never_asked(
    client_for: Callable[..., PostHogPersonsClient], foreign: str
) -> None:
    transport, urls = recording(lambda request: httpx.Response(200, json=page([GOOD], foreign)))
    pages = client_for(transport).pages()
    with pytest.raises(PostHogPageError, match="is not on https://ph.example") as raised:
        next(pages)
    assert "key would be sent there" in str(raised.value)
    assert urls == [FIRST]


def test_a_relative_or_self_pointing_next_is_refused(client_for: Callable[..., PostHogPersonsClient]) -> None:
    transport, _ = recording(lambda request: httpx.Response(200, json=page([], "/api/projects/1/persons/?offset=1")))
    with pytest.raises(PostHogPageError, match="not an absolute URL"):
        list(client_for(transport).pages())
    transport, urls = recording(lambda request: httpx.Response(200, json=page([], FIRST)))
    with pytest.raises(PostHogPageError, match="loop forever"):
        list(client_for(transport).pages())
    assert urls == [FIRST]


def test_a_foreign_start_url_is_refused_before_any_request(client_for: Callable[..., PostHogPersonsClient]) -> None:
    transport, urls = recording(lambda request: httpx.Response(200, json=page([], None)))
    with pytest.raises(PostHogPageError, match="the start URL"):
        list(client_for(transport).pages("https://elsewhere.example/api/projects/1/persons/"))
    assert urls == []


def test_the_default_port_is_the_same_origin(client_for: Callable[..., PostHogPersonsClient]) -> None:
    explicit = "https://ph.example:443/api/projects/1/persons/?offset=1"
    answers = {"/api/projects/1/persons/": page([GOOD], explicit), "/api/projects/1/persons/?offset=1": page([], None)}
    transport, _ = recording(lambda request: httpx.Response(200, json=answers[request.url.raw_path.decode()]))
    assert len(list(client_for(transport).pages())) == 2


# ------------------------------------------------------------------------------------------- 429, 5xx, network


def test_429_waits_for_retry_after_seconds(
    client_for: Callable[..., PostHogPersonsClient], fake_time: FakeTime
) -> None:
    standin = PersonsStandin(150)
    client = client_for(standin.transport())
    pages = client.pages()
    next(pages)
    standin.rate_limit_next(2, retry_after="7")
    assert len(next(pages).results) == 50
    assert fake_time.sleeps == [7.0, 7.0]
    assert [seen.status for seen in standin.requests] == [200, 429, 429, 200]


def test_429_waits_for_a_retry_after_date(client_for: Callable[..., PostHogPersonsClient], fake_time: FakeTime) -> None:
    standin = PersonsStandin(10)
    standin.rate_limit_next(1, retry_after=email.utils.formatdate(time.time() + 30, usegmt=True))
    assert len(list(client_for(standin.transport()).pages())) == 1
    [wait] = fake_time.sleeps
    assert 27.0 <= wait <= 30.0


def test_429_without_retry_after_backs_off(
    client_for: Callable[..., PostHogPersonsClient], fake_time: FakeTime
) -> None:
    standin = PersonsStandin(10)
    standin.rate_limit_next(3, retry_after=None)
    assert len(list(client_for(standin.transport()).pages())) == 1
    assert fake_time.sleeps == [1.0, 2.0, 4.0]


def test_a_long_retry_after_is_bounded(client_for: Callable[..., PostHogPersonsClient], fake_time: FakeTime) -> None:
    standin = PersonsStandin(10)
    standin.rate_limit_next(1, retry_after="86400")
    list(client_for(standin.transport(), retry_after_max_s=900.0).pages())
    assert fake_time.sleeps == [900.0]


def test_5xx_is_retried_with_the_backoff(client_for: Callable[..., PostHogPersonsClient], fake_time: FakeTime) -> None:
    standin = PersonsStandin(10)
    standin.fail_next(3, status=502)
    [only] = list(client_for(standin.transport()).pages())
    assert len(only.results) == 10
    assert fake_time.sleeps == [1.0, 2.0, 4.0]


def test_the_backoff_starts_over_on_each_page(
    client_for: Callable[..., PostHogPersonsClient], fake_time: FakeTime
) -> None:
    standin = PersonsStandin(20, default_limit=10)
    pages = client_for(standin.transport()).pages()
    standin.fail_next(2)
    next(pages)
    standin.fail_next(1)
    next(pages)
    assert fake_time.sleeps == [1.0, 2.0, 1.0]


def test_5xx_gives_up_after_max_attempts_with_a_clear_error(
    client_for: Callable[..., PostHogPersonsClient], fake_time: FakeTime, caplog: pytest.LogCaptureFixture
) -> None:
    standin = PersonsStandin(10)
    standin.fail_next(100, status=503)
    with caplog.at_level(logging.WARNING), pytest.raises(PostHogUnavailable) as raised:
        list(client_for(standin.transport(), max_attempts=4).pages())
    message = str(raised.value)
    assert "4 attempts in a row failed" in message and "HTTP 503" in message and FIRST in message
    assert fake_time.sleeps == [1.0, 2.0, 4.0]  # no wait after the last attempt
    assert len(standin.requests) == 4
    assert STANDIN_KEY not in message and STANDIN_KEY not in caplog.text
    assert "retrying in 1.0 s (attempt 1 of 4)" in caplog.text


def test_network_errors_and_timeouts_are_retried(
    client_for: Callable[..., PostHogPersonsClient], fake_time: FakeTime
) -> None:
    failures: list[Exception] = [httpx.ConnectError("connection refused"), httpx.ReadTimeout("read timed out")]

    def answer(request: httpx.Request) -> httpx.Response:
        if failures:
            raise failures.pop(0)
        return httpx.Response(200, json=page([GOOD], None))

    transport, urls = recording(answer)
    assert len(list(client_for(transport).pages())) == 1
    assert urls == [FIRST] * 3
    assert fake_time.sleeps == [1.0, 2.0]


def test_network_errors_give_up_naming_the_error(client_for: Callable[..., PostHogPersonsClient]) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    transport, _ = recording(answer)
    with pytest.raises(PostHogUnavailable, match=r"last: ConnectError: connection refused"):
        list(client_for(transport, max_attempts=2).pages())


# ------------------------------------------------------------------------------------------- auth and other refusals


def test_401_raises_at_once_without_the_key(
    client_for: Callable[..., PostHogPersonsClient], fake_time: FakeTime
) -> None:
    standin = PersonsStandin(10)
    wrong = "phx_wrong_key_that_must_not_leak"
    client = client_for(standin.transport(), api_key=wrong)
    with pytest.raises(PostHogAuthError) as raised:
        list(client.pages())
    message = str(raised.value)
    assert "HTTP 401" in message and "person:read" in message
    assert wrong not in message and wrong not in repr(raised.value) and wrong not in repr(client)
    assert len(standin.requests) == 1 and fake_time.sleeps == []


def test_403_names_the_scope_and_the_project(client_for: Callable[..., PostHogPersonsClient]) -> None:
    standin = PersonsStandin(10)
    with pytest.raises(PostHogAuthError, match=r"HTTP 403.*scope person:read and access to project 2"):
        list(client_for(standin.transport(), project_id="2").pages())
    assert len(standin.requests) == 1


def test_an_error_body_echoing_the_key_is_redacted(client_for: Callable[..., PostHogPersonsClient]) -> None:
    transport, _ = recording(
        lambda request: httpx.Response(400, text=f"bad request: {request.headers['authorization']}")
    )
    with pytest.raises(PostHogApiError, match=r"HTTP 400") as raised:
        list(client_for(transport).pages())
    assert STANDIN_KEY not in str(raised.value) and "Bearer ***" in str(raised.value)


def test_a_redirect_is_not_followed(client_for: Callable[..., PostHogPersonsClient]) -> None:
    location = "https://us.i.posthog.com/api/projects/1/persons/"
    transport, urls = recording(lambda request: httpx.Response(301, headers={"location": location}))
    with pytest.raises(PostHogApiError, match="redirected .* private API host"):
        list(client_for(transport).pages())
    assert urls == [FIRST]


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="http"):
        PostHogPersonsClient("us.posthog.com", "1", "k")
    with pytest.raises(ValueError, match="project id"):
        PostHogPersonsClient(HOST, "1/2", "k")
    with pytest.raises(ValueError, match="personal API key"):
        PostHogPersonsClient(HOST, "1", "")
    with pytest.raises(ValueError, match="cannot carry") as raised:
        PostHogPersonsClient(HOST, "1", "phx_secret\nX-Injected: 1")
    assert "phx_secret" not in str(raised.value)


# ------------------------------------------------------------------------------------------- pacing


def test_requests_stay_under_max_per_minute(
    client_for: Callable[..., PostHogPersonsClient], fake_time: FakeTime
) -> None:
    standin = PersonsStandin(23, default_limit=1)
    sent: list[float] = []

    def paced(request: httpx.Request) -> httpx.Response:
        sent.append(fake_time.now)
        return standin.transport().handle_request(request)

    transport = httpx.MockTransport(paced)
    pages = list(client_for(transport, max_per_minute=5, max_per_hour=None).pages())
    assert len(pages) == 23
    # any 6 requests in a row span at least 60 s: never more than 5 in a 60 s window
    assert all(sent[i + 5] - sent[i] >= 60.0 for i in range(len(sent) - 5))
    # and no slower than that: bursts of 5, then the window's wait
    assert sent[:6] == [1000.0] * 5 + [1060.0]
    assert sent[-1] == 1000.0 + 60.0 * 4


def test_requests_stay_under_max_per_hour_too(
    client_for: Callable[..., PostHogPersonsClient], fake_time: FakeTime
) -> None:
    standin = PersonsStandin(12, default_limit=1)
    sent: list[float] = []

    def paced(request: httpx.Request) -> httpx.Response:
        sent.append(fake_time.now)
        return standin.transport().handle_request(request)

    list(client_for(httpx.MockTransport(paced), max_per_minute=100, max_per_hour=5).pages())
    assert all(sent[i + 5] - sent[i] >= 3600.0 for i in range(len(sent) - 5))


def test_retries_count_against_the_pace(client_for: Callable[..., PostHogPersonsClient], fake_time: FakeTime) -> None:
    standin = PersonsStandin(10)
    standin.rate_limit_next(3, retry_after="0")
    list(client_for(standin.transport(), max_per_minute=2, max_per_hour=None).pages())
    # two 429s at once (Retry-After: 0), then the third attempt waits for the window, the fourth fits
    assert fake_time.sleeps == [60.0]
    assert [seen.status for seen in standin.requests] == [429, 429, 429, 200]


def test_the_sliding_window(fake_time: FakeTime) -> None:
    limiter = SlidingWindowLimiter([(3, 10.0)], clock=fake_time.clock, sleep=fake_time.sleep)
    for _ in range(3):
        limiter.acquire()
    assert limiter.wait_time() == 10.0
    fake_time.now += 4
    assert limiter.wait_time() == 6.0
    limiter.acquire()  # waits the 6 s
    assert fake_time.sleeps == [6.0] and fake_time.now == 1010.0
    with pytest.raises(ValueError):
        SlidingWindowLimiter([(0, 60.0)])


# ------------------------------------------------------------------------------------------- checkpoint


def test_checkpoint_save_load_clear(tmp_path: Path) -> None:
    checkpoint = PersonsCheckpoint(tmp_path / "state" / "persons.json", scope="s")
    assert checkpoint.load() is None
    first = checkpoint.save(f"{FIRST}?offset=100", 100)
    assert first == PersonsProgress(f"{FIRST}?offset=100", persons=100, pages=1, done=False, scope="s")
    second = checkpoint.save(None, 40)
    assert checkpoint.load() == second == PersonsProgress(None, persons=140, pages=2, done=True, scope="s")
    assert stat.S_IMODE(os.stat(checkpoint.path).st_mode) == 0o600
    assert sorted(p.name for p in checkpoint.path.parent.iterdir()) == ["persons.json"]
    checkpoint.clear()
    checkpoint.clear()  # idempotent
    assert checkpoint.load() is None


def test_checkpoint_mode_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        checkpoint = PersonsCheckpoint(tmp_path / "p.json")
        checkpoint.save("https://x.example/a", 1)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(checkpoint.path).st_mode) == 0o600


def test_checkpoint_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint = PersonsCheckpoint(tmp_path / "p.json")
    kept = checkpoint.save("https://x.example/page-2", 100)

    def crash(src: str, dst: str) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        checkpoint.save("https://x.example/page-3", 100)
    assert checkpoint.load() == kept  # the old progress, whole
    assert [p.name for p in tmp_path.iterdir()] == ["p.json"]  # no temporary file left behind


def test_checkpoint_of_another_scope_or_malformed_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    PersonsCheckpoint(path, scope="https://eu.posthog.com project 1").save("https://eu.posthog.com/x", 3)
    with pytest.raises(CheckpointError, match="project 1"):
        PersonsCheckpoint(path, scope="https://eu.posthog.com project 2").load()
    path.write_text("{not json")
    with pytest.raises(CheckpointError, match="not JSON"):
        PersonsCheckpoint(path).load()
    record = {"version": 1, "scope": "", "next_url": None, "done": False, "persons": 1, "pages": 1}
    path.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="disagree"):
        PersonsCheckpoint(path).load()
    path.write_text(json.dumps({**record, "next_url": "u", "persons": -1}))
    with pytest.raises(CheckpointError, match="persons/pages"):
        PersonsCheckpoint(path).load()


# ------------------------------------------------------------------------------------------- store, then checkpoint


class StoreFailed(Exception):
    pass


def test_read_persons_stores_then_checkpoints_and_resumes_at_the_unstored_page(
    client_for: Callable[..., PostHogPersonsClient], tmp_path: Path
) -> None:
    standin = PersonsStandin(50, default_limit=10)
    client = client_for(standin.transport())
    checkpoint = PersonsCheckpoint(tmp_path / "p.json", scope=client.scope)
    stored: list[str] = []
    saved_after_store: list[bool] = []

    def store(persons: list[PostHogPerson]) -> None:
        if len(stored) == 30:
            raise StoreFailed  # the fourth page cannot be stored
        progress = checkpoint.load()
        saved_after_store.append(progress is None or progress.persons == len(stored))
        stored.extend(person.uuid for person in persons)

    with pytest.raises(StoreFailed):
        read_persons(client, checkpoint, store)
    progress = checkpoint.load()
    assert progress is not None and progress.persons == 30 and progress.pages == 3
    assert progress.next_url == f"{HOST}/api/projects/1/persons/?limit=10&offset=30"
    assert all(saved_after_store)  # the checkpoint never ran ahead of the store

    seen: list[PersonsProgress] = []
    rest: list[str] = []
    resumed = read_persons(
        client_for(standin.transport()),
        checkpoint,
        lambda persons: rest.extend(person.uuid for person in persons),
        on_page=seen.append,
    )
    assert resumed == PersonsProgress(None, persons=50, pages=5, done=True, scope=client.scope)
    assert [p.pages for p in seen] == [4, 5]
    assert stored + rest == [make_person(i)["uuid"] for i in range(50)]


def test_read_persons_every_person_once_across_an_interruption(
    client_for: Callable[..., PostHogPersonsClient], tmp_path: Path
) -> None:
    standin = PersonsStandin(45, default_limit=10)
    checkpoint = PersonsCheckpoint(tmp_path / "p.json", scope=client_for(standin.transport()).scope)
    stored: list[str] = []

    def store(persons: list[PostHogPerson]) -> None:
        stored.extend(person.uuid for person in persons)

    def stop_after_two(progress: PersonsProgress) -> None:
        if progress.pages == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        read_persons(client_for(standin.transport()), checkpoint, store, on_page=stop_after_two)
    final = read_persons(client_for(standin.transport()), checkpoint, store)
    assert stored == [make_person(i)["uuid"] for i in range(45)]
    assert (final.persons, final.pages, final.done) == (45, 5, True)
    requests = len(standin.requests)
    assert read_persons(client_for(standin.transport()), checkpoint, store) == final  # done: nothing read
    assert len(standin.requests) == requests


# ------------------------------------------------------------------------------ the stand-in's cohort routes


def ask(standin: PersonsStandin, url: str, key: str | None = STANDIN_KEY) -> httpx.Response:
    """``GET url`` of the stand-in, in-process, with ``key`` as the bearer (None: no Authorization header)."""
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    with httpx.Client(transport=standin.transport()) as http:
        return http.get(url, headers=headers)


COHORT_7 = f"{HOST}/api/projects/1/cohorts/7/"


def test_standin_cohort_persons_page_to_the_end_like_posthog() -> None:
    standin = PersonsStandin(25, cohort_default_limit=10)
    standin.cohorts[7] = Cohort(name="Power users", members=list(range(25)))
    urls, pages = [f"{COHORT_7}persons/"], []
    while urls[-1] is not None:
        answer = ask(standin, urls[-1])
        assert answer.status_code == 200
        pages.append(answer.json())
        urls.append(pages[-1]["next"])
    # limit absent: PostHog's default page; next = the URL asked with offset set, limit never added
    assert urls == [f"{COHORT_7}persons/", f"{COHORT_7}persons/?offset=10", f"{COHORT_7}persons/?offset=20", None]
    assert [len(page["results"]) for page in pages] == [10, 10, 5]
    assert all(set(page) == {"results", "next", "previous"} for page in pages)  # no count
    # previous: PostHog's quirk, offset - limit == 0 gives back the URL asked
    assert [page["previous"] for page in pages] == [
        None,
        f"{COHORT_7}persons/?offset=10",
        f"{COHORT_7}persons/?offset=10",
    ]
    served = [person["uuid"] for page in pages for person in page["results"]]
    assert served == [make_person(i)["uuid"] for i in range(25)]
    first = pages[0]["results"][1]
    assert first == {
        **make_person(1),
        "type": "person",
        "matched_recordings": [],
        "value_at_data_point": None,
    }
    assert [seen.route for seen in standin.requests] == [ROUTE_COHORT_PERSONS] * 3
    assert len(standin.cohort_requests(7, ROUTE_COHORT_PERSONS)) == 3


def test_standin_a_full_last_page_is_followed_by_an_empty_one() -> None:
    standin = PersonsStandin()
    standin.add_cohort(7, "Ten", range(10))
    first = ask(standin, f"{COHORT_7}persons/?limit=5&format=json").json()
    assert first["next"] == f"{COHORT_7}persons/?limit=5&format=json&offset=5"
    second = ask(standin, first["next"]).json()
    assert len(second["results"]) == 5 and second["next"] == f"{COHORT_7}persons/?limit=5&format=json&offset=10"
    last = ask(standin, second["next"]).json()
    assert last == {"results": [], "next": None, "previous": f"{COHORT_7}persons/?limit=5&format=json&offset=5"}
    for bad in ("limit=x", "offset=-1"):
        assert ask(standin, f"{COHORT_7}persons/?{bad}").status_code == 400


def test_standin_cohort_members_change_between_reads() -> None:
    standin = PersonsStandin(5)
    email_only = {"id": "u-mail", "uuid": "u-mail", "distinct_ids": ["ann@example.com"], "properties": {}}
    many_ids = {**make_person(40), "distinct_ids": [f"d-{i}" for i in range(12)]}
    standin.cohorts[9] = Cohort(name="Changing", members=[1, 2, email_only])

    def uuids() -> list[str]:
        return [
            person["uuid"] for person in ask(standin, f"{HOST}/api/projects/1/cohorts/9/persons/").json()["results"]
        ]

    assert uuids() == [make_person(1)["uuid"], make_person(2)["uuid"], "u-mail"]
    standin.add_to_cohort(9, 3, many_ids)
    standin.add_to_cohort(9, 0, at=0)
    assert uuids() == [make_person(i)["uuid"] for i in (0, 1, 2)] + ["u-mail", make_person(3)["uuid"], many_ids["uuid"]]
    assert standin.remove_from_cohort(9, 1, "ann@example.com", many_ids) == 3
    assert standin.remove_from_cohort(9, "nobody") == 0
    assert uuids() == [make_person(i)["uuid"] for i in (0, 2, 3)]
    # an index is the stand-in's person: a change to it shows in the cohort
    standin.persons[2]["properties"]["plan"] = "enterprise"
    served = ask(standin, f"{HOST}/api/projects/1/cohorts/9/persons/").json()["results"]
    assert served[1]["properties"]["plan"] == "enterprise"
    standin.set_cohort_members(9, [many_ids, email_only])
    served = ask(standin, f"{HOST}/api/projects/1/cohorts/9/persons/").json()["results"]
    assert served[0]["distinct_ids"] == [f"d-{i}" for i in range(10)]  # PostHog serves 10 at most
    assert served[1]["id"] == "u-mail" and served[1]["type"] == "person"
    assert [p["uuid"] for p in standin.cohort_members(9)] == [many_ids["uuid"], "u-mail"]


def test_standin_cohort_object_unknown_and_deleted() -> None:
    standin = PersonsStandin()
    standin.cohorts[7] = Cohort(name="Power users", members=[1, 2, 3], description="d")
    body = ask(standin, COHORT_7).json()
    assert {key: body[key] for key in ("id", "name", "description", "deleted", "is_static", "is_calculating")} == {
        "id": 7,
        "name": "Power users",
        "description": "d",
        "deleted": False,
        "is_static": False,
        "is_calculating": False,
    }
    assert body["count"] == 3 and body["errors_calculating"] == 0 and body["last_calculation"] and body["created_at"]
    assert {"groups", "filters", "query", "created_by", "cohort_type", "experiment_set"} <= set(body)
    standin.cohorts[7].count, standin.cohorts[7].is_calculating = 99, True  # a stale count, recalculating
    assert (ask(standin, COHORT_7).json()["count"], ask(standin, COHORT_7).json()["is_calculating"]) == (99, True)
    not_found = {"type": "invalid_request", "code": "not_found", "detail": "Not found.", "attr": None}
    for url in (
        f"{HOST}/api/projects/1/cohorts/8/",
        f"{HOST}/api/projects/1/cohorts/8/persons/",
        f"{HOST}/api/projects/1/cohorts/x/",
    ):
        answer = ask(standin, url)
        assert (answer.status_code, answer.json()) == (404, not_found), url
    # soft-deleted: still answered, deleted: true, its persons still served (PostHog filters deleted for list only)
    standin.cohorts[7].deleted = True
    assert ask(standin, COHORT_7).json()["deleted"] is True
    assert len(ask(standin, f"{COHORT_7}persons/").json()["results"]) == 3
    del standin.cohorts[7]
    assert ask(standin, COHORT_7).status_code == 404
    assert [seen.cohort_id for seen in standin.requests][-1] == 7
    assert [seen.route for seen in standin.requests if seen.cohort_id == 8] == [ROUTE_COHORT, ROUTE_COHORT_PERSONS]


def test_standin_cohort_routes_auth_scopes_and_environments() -> None:
    standin = PersonsStandin(3)
    standin.add_cohort(7, members=[0, 1])
    for url in (COHORT_7, f"{COHORT_7}persons/"):
        missing = ask(standin, url, key=None)
        assert missing.status_code == 401 and missing.json()["code"] == "not_authenticated"
        wrong = ask(standin, url, key="phx_wrong")
        assert wrong.status_code == 401 and wrong.json() == {
            "type": "authentication_error",
            "code": "authentication_failed",
            "detail": "Personal API key found in request Authorization header is invalid.",
            "attr": None,
        }
        other = ask(standin, url.replace("/projects/1/", "/projects/2/"))
        assert other.status_code == 403 and other.json()["code"] == "permission_denied"
    assert [seen.authorized for seen in standin.requests] == [False, False, True] * 2
    standin.scopes = {"cohort:read"}
    assert ask(standin, COHORT_7).status_code == 200
    refused = ask(standin, f"{COHORT_7}persons/")
    assert refused.status_code == 403 and refused.json()["detail"] == "API key missing required scope 'person:read'"
    standin.scopes = None
    # cohorts live under /api/projects/ only (PostHog's router); the alias on request
    environments = f"{HOST}/api/environments/1/cohorts/7/persons/"
    assert ask(standin, environments).json() == {
        "type": "invalid_request",
        "code": "not_found",
        "detail": "Endpoint not found.",
        "attr": None,
    }
    standin.cohorts_under_environments = True
    assert ask(standin, environments).json()["next"] is None
    assert ask(standin, f"{HOST}/api/environments/1/persons/").status_code == 200  # the persons alias, as before


def test_standin_fail_path_fails_one_cohorts_page_only() -> None:
    standin = PersonsStandin(30, cohort_default_limit=5)
    standin.add_cohort(7, members=range(30))
    standin.add_cohort(9, members=range(30))
    fault = standin.fail_path("/cohorts/9/persons/", 503, 2, skip=2)
    urls = [f"{HOST}/api/projects/1/cohorts/9/persons/?limit=5&offset={at}" for at in range(0, 30, 5)]
    assert [ask(standin, url).status_code for url in urls] == [200, 200, 503, 503, 200, 200]
    assert (fault.hits, fault.remaining) == (2, 0)
    assert ask(standin, urls[2]).status_code == 200  # spent
    assert ask(standin, f"{COHORT_7}persons/?limit=5&offset=10").status_code == 200
    assert ask(standin, f"{HOST}/api/projects/1/persons/").status_code == 200
    assert [seen.status for seen in standin.cohort_requests(9)] == [200, 200, 503, 503, 200, 200, 200]
    assert len(standin.cohort_requests(7)) == 1 and standin.cohort_requests(8) == []
    # by query too, a 429 with Retry-After; the global faults count cohort requests like any other
    standin.fail_path("offset=10", 429, retry_after="3")
    throttled = ask(standin, f"{COHORT_7}persons/?limit=5&offset=10")
    assert throttled.status_code == 429 and throttled.headers["retry-after"] == "3"
    assert throttled.json()["type"] == "throttled_error"
    standin.rate_limit_next(1, retry_after="2")
    standin.fail_next(1, status=502)
    assert [ask(standin, COHORT_7).status_code for _ in range(3)] == [429, 502, 200]
    standin.path_faults.clear()
    assert ask(standin, urls[2]).status_code == 200
