"""The PostHog persons reader against the stand-in of PostHog's private API over real HTTP (uvicorn on 127.0.0.1):
3,000 persons across pages with faults injected mid-run, the request deadline, and a resume from a checkpoint."""

from __future__ import annotations

import os
import stat
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from posthog_customerio.backoff import Backoff
from posthog_customerio.sources.posthog_api import (
    PersonsCheckpoint,
    PersonsProgress,
    PostHogPerson,
    PostHogPersonsClient,
    read_persons,
)

from ..posthog_api_standin import STANDIN_KEY, PersonsStandin, make_person, running_persons_standin

PERSONS = 3000
ALL = Counter(make_person(i)["uuid"] for i in range(PERSONS))


@pytest.fixture(scope="module")
def standin() -> Iterator[tuple[PersonsStandin, str]]:
    served = PersonsStandin(PERSONS)
    with running_persons_standin(served) as url:
        yield served, url


@pytest.fixture
def served(standin: tuple[PersonsStandin, str]) -> tuple[PersonsStandin, str]:
    """The stand-in with no fault pending and an empty request log."""
    served, url = standin
    served.rate_limit_next(0)
    served.fail_next(0)
    served.slow_next(0)
    with served.lock:
        served.requests.clear()
    return served, url


class Sleeps(list[float]):
    """An injected sleep that records the waits instead of waiting (nothing here waits long)."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def client(url: str, sleeps: Sleeps, **options: Any) -> PostHogPersonsClient:
    """A reader of the stand-in that records its waits, with a jitter-free back-off (0.5, 1, 2 ... s)."""
    return PostHogPersonsClient(
        url, "1", STANDIN_KEY, backoff=Backoff(base=0.5, cap=4.0, jitter=0.0), sleep=sleeps, **options
    )


def test_every_person_once_across_pages_with_a_429_and_a_5xx_mid_run(served: tuple[PersonsStandin, str]) -> None:
    standin, url = served
    sleeps = Sleeps()
    read: Counter[str] = Counter()
    with client(url, sleeps) as reader:
        for number, page in enumerate(reader.pages(), start=1):
            read.update(person.uuid for person in page.results)
            if number == 10:
                standin.rate_limit_next(1, retry_after="3")
            if number == 20:
                standin.fail_next(2, status=502)
    assert read == ALL  # every person, exactly once
    statuses = [seen.status for seen in standin.requests]
    assert statuses.count(429) == 1 and statuses.count(502) == 2 and statuses.count(200) == 30
    assert statuses[10:12] == [429, 200] and statuses[21:24] == [502, 502, 200]
    assert sleeps == [3.0, 0.5, 1.0]  # Retry-After, then the back-off (started over after the 429's page)
    assert all(seen.authorized for seen in standin.requests)
    queries = [seen.query for seen in standin.requests if seen.status == 200]
    assert queries[0] == "" and queries[1] == "limit=100&offset=100" and queries[-1] == "limit=100&offset=2900"


def test_a_slow_page_past_the_request_deadline_is_retried(served: tuple[PersonsStandin, str]) -> None:
    standin, url = served
    sleeps = Sleeps()
    standin.slow_next(1, delay_s=3.0)
    with client(url, sleeps, timeout_s=0.5, page_size=1000) as reader:
        first = next(reader.pages())
    assert len(first.results) == 1000
    assert sleeps == [0.5]  # one back-off after the deadline passed
    assert len(standin.requests) == 2


def test_resume_from_a_checkpoint_saved_mid_run_reads_the_rest_once(
    served: tuple[PersonsStandin, str], tmp_path: Path
) -> None:
    standin, url = served
    stored: Counter[str] = Counter()

    def store(persons: list[PostHogPerson]) -> None:
        stored.update(person.uuid for person in persons)

    class Interrupted(Exception):
        pass

    def interrupt_after_twelve(progress: PersonsProgress) -> None:
        if progress.pages == 12:
            raise Interrupted

    with client(url, Sleeps()) as first_run:
        checkpoint = PersonsCheckpoint(tmp_path / "persons.checkpoint", scope=first_run.scope)
        with pytest.raises(Interrupted):
            read_persons(first_run, checkpoint, store, on_page=interrupt_after_twelve)
    halfway = checkpoint.load()
    assert halfway is not None and (halfway.persons, halfway.pages, halfway.done) == (1200, 12, False)
    assert halfway.next_url == f"{url}/api/projects/1/persons/?limit=100&offset=1200"
    assert stat.S_IMODE(os.stat(checkpoint.path).st_mode) == 0o600
    requests_before = len(standin.requests)

    with client(url, Sleeps()) as second_run:
        final = read_persons(second_run, PersonsCheckpoint(checkpoint.path, scope=second_run.scope), store)
    assert stored == ALL  # the first twelve pages and the rest: every person exactly once
    assert (final.persons, final.pages, final.done, final.next_url) == (3000, 30, True, None)
    assert len(standin.requests) - requests_before == 18  # the resume read only the rest
