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

from ..posthog_api_standin import STANDIN_KEY, PersonsStandin, make_person

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
