"""`serve` keeping PostHog cohorts in sync (``COHORT_SEGMENTS`` / ``COHORT_ATTRIBUTES`` every
``COHORT_SYNC_INTERVAL_S``) as a real process, against the stand-in of PostHog's cohorts API (uvicorn on loopback)
and the Customer.io sandbox: members added and removed follow in the manual segment, ``/api/status``, ``status`` and
``/metrics`` show the cohort and the passes, a failing PostHog is counted while the service keeps answering, serve
refuses to start without PostHog's API settings, and two replicas on one PostgreSQL outbox run one pass at a time
(no member added twice). The schedule in-process (injected clock, nothing waits for an interval) at the end."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from posthog_customerio.cohort_sync import SCHEDULE_KEY, CohortSync
from posthog_customerio.metrics import Metrics
from posthog_customerio.runtime import Runtime
from posthog_customerio.sandbox import SandboxServer
from posthog_customerio.sources.posthog_api import PostHogPersonsClient
from posthog_customerio.status import build_status

from ..conftest import API_KEY, SITE_ID
from ..helpers import free_port, make_runtime, profiles, wait_for
from ..posthog_api_standin import (
    ROUTE_COHORT,
    ROUTE_COHORT_PERSONS,
    STANDIN_KEY,
    PersonsStandin,
    make_person,
    running_persons_standin,
)
from ..service import metric, serve_process
from .test_service_process import SCRIPT

pytestmark = pytest.mark.e2e

COHORT, SEGMENT, NAME = 7, "12", "Power users"
#: identified persons only (index % 3 != 0: each has a profile to add), five a page: four pages a pass
MEMBERS = [index for index in range(1, 25) if index % 3]
PAGE = 5
#: what the cohort's status line says of its segment
TARGET = f"segment {SEGMENT}"


@pytest.fixture
def standin() -> Iterator[tuple[PersonsStandin, str]]:
    served = PersonsStandin(0, cohort_default_limit=PAGE)
    served.add_cohort(COHORT, name=NAME, members=[make_person(index) for index in MEMBERS])
    with running_persons_standin(served) as url:
        yield served, url


def cohort_env(sandbox: SandboxServer, posthog_url: str, data_dir: Path) -> dict[str, str]:
    return {
        "CUSTOMERIO_SITE_ID": SITE_ID,
        "CUSTOMERIO_API_KEY": API_KEY,
        "CUSTOMERIO_TRACK_URL": sandbox.url,
        "POSTHOG_CUSTOMERIO_DATA_DIR": str(data_dir),
        "LOG_FORMAT": "json",
        "SHUTDOWN_GRACE_S": "2",
        "COHORT_SEGMENTS": f"{COHORT}={SEGMENT}",
        "COHORT_SYNC_INTERVAL_S": "1",
        "POSTHOG_API_HOST": posthog_url,
        "POSTHOG_PROJECT_ID": "1",
        "POSTHOG_PERSONAL_API_KEY": STANDIN_KEY,
    }


def clean_environ() -> dict[str, str]:
    """This process's environment without settings a test sets itself (PostHog's API, cohorts)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("POSTHOG_", "COHORT_", "CUSTOMERIO_"))}


def serving(env: dict[str, str], log: Path, *command: str) -> AbstractContextManager[str]:
    """``command`` (default ``serve``) with ``env`` over a clean environment (:func:`~tests.service.serve_process`)."""
    return serve_process({**clean_environ(), **env}, log, *command)


def cohort_sync(url: str) -> dict[str, Any]:
    section: dict[str, Any] = httpx.get(f"{url}/api/status", timeout=10).json()["cohort_sync"]
    return section


def segment(sandbox: SandboxServer, segment_id: str = SEGMENT) -> set[str]:
    """The ids of the profiles in a manual segment of the sandbox."""
    ids = {person["cio_id"]: person["id"] for person in sandbox.state.people()}
    return {ids.get(cio_id, cio_id) for cio_id in sandbox.state.segments().get(segment_id, [])}


def users(indexes: list[int]) -> set[str]:
    return {f"user-{index}" for index in indexes}


def segment_requests(sandbox: SandboxServer, verb: str, segment_id: str = SEGMENT) -> list[str]:
    """Every id sent in the sandbox's log to ``/segments/{segment_id}/{verb}`` (``add_customers``,
    ``remove_customers``), duplicates kept."""
    sent = []
    for entry in sandbox.state.requests():
        if entry["method"] == "POST" and entry["path"].endswith(f"/segments/{segment_id}/{verb}"):
            assert entry["status"] == 200, entry
            sent += entry["body"]["ids"]
    return sent


def once_each(sent: list[str]) -> bool:
    twice = {value: count for value, count in Counter(sent).items() if count > 1}
    assert not twice, f"sent more than once: {twice}"
    return True


def the_cohort(section: dict[str, Any]) -> dict[str, Any]:
    (cohort,) = section["cohorts"]
    assert cohort["cohort_id"] == str(COHORT)
    return dict(cohort)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args], env={**clean_environ(), **env}, capture_output=True, text=True, timeout=60
    )


# -- serve ---------------------------------------------------------------------------------------------------
def test_serve_syncs_a_cohort_on_its_schedule_and_survives_posthog_failing(
    sandbox: SandboxServer, standin: tuple[PersonsStandin, str], tmp_path: Path
) -> None:
    served, posthog_url = standin
    log, env = tmp_path / "serve.log", cohort_env(sandbox, posthog_url, tmp_path / "data")
    with serving(env, log) as url:
        wait_for(lambda: segment(sandbox) == users(MEMBERS), "every member in the segment", 60)
        first = wait_for(lambda: (s := cohort_sync(url))["passes"]["ok"] >= 2 and s, "a second pass (nothing new)")
        assert first["interval_s"] == 1.0 and first["passes"]["failed"] == 0
        assert first["adds"] == len(MEMBERS) and first["removes"] == 0  # the second pass added nobody again
        assert first["last_pass"]["outcome"] == "ok" and first["last_pass"]["cohorts"] == {str(COHORT): "ok"}
        cohort = the_cohort(first)
        assert cohort["name"] == NAME and cohort["targets"] == [TARGET] and cohort["phase"] == "idle"
        assert cohort["members"] == {TARGET: len(MEMBERS)} and cohort["last_pass"]["outcome"] == "ok"
        assert cohort["last_error"] is None and cohort["last_ok_at"] is not None

        # PostHog's cohort changes: one member leaves, one joins
        served.remove_from_cohort(COHORT, make_person(MEMBERS[0]))
        served.add_to_cohort(COHORT, make_person(40))
        now = [*MEMBERS[1:], 40]
        wait_for(lambda: segment(sandbox) == users(now), "the change in the segment", 30)
        after = wait_for(lambda: (s := cohort_sync(url))["removes"] == 1 and s, "the removal counted")
        assert after["adds"] == len(MEMBERS) + 1 and the_cohort(after)["members"] == {TARGET: len(now)}
        assert once_each(segment_requests(sandbox, "add_customers")) and once_each(
            segment_requests(sandbox, "remove_customers")
        )
        assert segment_requests(sandbox, "remove_customers") == [f"user-{MEMBERS[0]}"]
        passes = 'posthog_customerio_cohort_sync_passes_total{outcome="ok"}'
        assert metric(url, passes) >= after["passes"]["ok"]
        assert metric(url, "posthog_customerio_cohort_sync_members_added_total") == len(MEMBERS) + 1
        assert metric(url, "posthog_customerio_cohort_sync_members_removed_total") == 1
        assert metric(url, "posthog_customerio_cohort_sync_last_success_timestamp_seconds") > 0

        # PostHog down for the cohort: every try fails; the segment stays as it was, the service keeps serving
        fault = served.fail_path(f"/cohorts/{COHORT}/", 503, 100_000)
        failed = wait_for(lambda: (s := cohort_sync(url))["passes"]["failed"] >= 1 and s, "a failed pass", 30)
        assert "HTTP 503" in failed["last_error"] and failed["last_pass"]["outcome"] == "failed"
        assert failed["last_pass"]["cohorts"] == {str(COHORT): "failed"}
        assert "HTTP 503" in the_cohort(failed)["last_error"]
        assert the_cohort(failed)["members"] == {TARGET: len(now)} and segment(sandbox) == users(now)
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        assert metric(url, 'posthog_customerio_cohort_sync_passes_total{outcome="failed"}') >= 1
        assert metric(url, 'posthog_customerio_cohort_sync_cohort_failures_total{outcome="failed"}') >= 1
        with served.lock:
            served.path_faults.remove(fault)
        ok = failed["passes"]["ok"]
        healed = wait_for(lambda: (s := cohort_sync(url))["passes"]["ok"] > ok and s, "a pass succeeding again", 30)
        assert the_cohort(healed)["last_error"] is None
    text = log.read_text()
    assert "cohort sync: the pass failed" in text and STANDIN_KEY not in text

    # `status` shows the cohort from the database and the schedule from the last heartbeat, the service stopped
    offline = cli(env, "status", "--json")
    shown = json.loads(offline.stdout)["cohort_sync"]
    assert shown["interval_s"] == 1.0 and shown["passes"]["ok"] > ok and shown["passes"]["failed"] >= 1
    assert shown["adds"] == len(MEMBERS) + 1 and shown["removes"] == 1
    assert the_cohort(shown)["members"] == {TARGET: len(now)} and the_cohort(shown)["name"] == NAME
    words = cli(env, "status").stdout
    assert "cohort sync        every 1s;" in words and f"+{len(MEMBERS) + 1} members added, -1 removed" in words
    line = next(line for line in words.splitlines() if line.startswith(f"  cohort {COHORT} ({NAME}) -> "))
    assert f"-> {TARGET}: {len(now)} members; last pass " in line and " ok, +0 -0" in line, words


def test_serve_cohort_sync_flags(sandbox: SandboxServer, standin: tuple[PersonsStandin, str], tmp_path: Path) -> None:
    """The cohorts and their schedule as flags over an environment that would do otherwise (another cohort and
    segment, another prefix, an interval of ten minutes): cohort 7 goes to segment 12 and to the attribute
    ``pc_power_users``, and a second pass follows half a second later."""
    served, posthog_url = standin
    env = cohort_env(sandbox, posthog_url, tmp_path / "data")
    env |= {"COHORT_SEGMENTS": "9=99", "COHORT_ATTRIBUTE_PREFIX": "env_", "COHORT_SYNC_INTERVAL_S": "600"}
    flags = ("--cohort-segments", f"{COHORT}={SEGMENT}", "--cohort-attributes", str(COHORT))
    flags += ("--cohort-attribute-prefix", "pc_", "--cohort-sync-interval-s", "0.5")
    with serving(env, tmp_path / "serve.log", "serve", *flags) as url:
        wait_for(lambda: segment(sandbox) == users(MEMBERS), "every member in the segment", 60)

        def flagged() -> set[str]:
            return {p["id"] for p in profiles(sandbox) if p["attributes"].get("pc_power_users") in (True, "true")}

        wait_for(lambda: flagged() == users(MEMBERS), "every member with the attribute pc_power_users", 30)
        synced = wait_for(lambda: (s := cohort_sync(url))["passes"]["ok"] >= 2 and s, "a second pass, 0.5 s later")
        assert synced["interval_s"] == 0.5
        cohort = the_cohort(synced)  # cohort 9 of the environment is not synced
        assert cohort["targets"] == [TARGET, "attribute pc_power_users"] and cohort["attribute"] == "pc_power_users"
        assert cohort["members"] == {TARGET: len(MEMBERS), "attribute pc_power_users": len(MEMBERS)}
    assert not [seen for seen in served.requests if seen.cohort_id not in (None, COHORT)]
    assert "99" not in sandbox.state.segments()


def test_serve_with_cohorts_needs_the_posthog_api_settings(sandbox: SandboxServer, tmp_path: Path) -> None:
    """Cohorts configured without PostHog's API settings stop ``serve`` at once: exit 2, one line naming what is
    missing (no port taken, nothing logged); COHORT_SEGMENTS with the Pipelines API (no manual segments) too."""
    env = {"CUSTOMERIO_SITE_ID": SITE_ID, "CUSTOMERIO_API_KEY": API_KEY, "CUSTOMERIO_TRACK_URL": sandbox.url}
    env |= {"POSTHOG_CUSTOMERIO_DATA_DIR": str(tmp_path / "data")}
    serve = ("serve", "--port", str(free_port()))
    segments = cli({**env, "COHORT_SEGMENTS": "7=12"}, *serve)
    assert segments.returncode == 2 and segments.stderr.count("\n") == 1, segments.stderr
    assert segments.stderr == (
        "error: COHORT_SEGMENTS is set, so serve reads PostHog's API:"
        " set POSTHOG_API_HOST, POSTHOG_PROJECT_ID, POSTHOG_PERSONAL_API_KEY\n"
    )
    both = cli(
        {**env, "COHORT_SEGMENTS": "7=12", "COHORT_ATTRIBUTES": "9", "POSTHOG_API_HOST": "https://x.test"}, *serve
    )
    assert both.returncode == 2 and both.stderr == (
        "error: COHORT_SEGMENTS and COHORT_ATTRIBUTES are set, so serve reads PostHog's API:"
        " set POSTHOG_PROJECT_ID, POSTHOG_PERSONAL_API_KEY\n"
    )
    api = {"POSTHOG_API_HOST": "ftp://x.test", "POSTHOG_PROJECT_ID": "1", "POSTHOG_PERSONAL_API_KEY": "phx_secret_9"}
    bad_host = cli({**env, **api, "COHORT_ATTRIBUTES": "9"}, *serve)
    assert bad_host.returncode == 2 and bad_host.stderr.count("\n") == 1, bad_host.stderr
    assert bad_host.stderr.startswith("error: COHORT_ATTRIBUTES is set, so serve reads PostHog's cohorts API: ")
    assert "phx_secret_9" not in bad_host.stderr + bad_host.stdout
    api |= {"POSTHOG_API_HOST": "https://x.test", "CUSTOMERIO_PIPELINES_API_KEY": "pk-test"}
    pipelines = cli({**env, **api, "COHORT_SEGMENTS": "7=12"}, *serve, "--api", "pipelines")
    assert pipelines.returncode == 2 and pipelines.stderr.count("\n") == 1, pipelines.stderr
    assert "COHORT_SEGMENTS needs the Track API" in pipelines.stderr


# -- two replicas ------------------------------------------------------------------------------------------
def passes_in(standin: PersonsStandin) -> int:
    """Whole passes in the stand-in's log of cohort 7 (its object, then its pages in order, to the last); fails if
    a pass begins while another one is under way (a page out of order, or a pass cut short)."""
    passes = 0
    pages: list[int] = []
    for seen in standin.cohort_requests(COHORT):
        assert seen.status == 200, seen
        if seen.route == ROUTE_COHORT:
            assert not pages or len(pages) == len(range(0, len(MEMBERS) + 1, PAGE)), f"a pass cut short: {pages}"
            pages = []
        elif seen.route == ROUTE_COHORT_PERSONS:
            offset = int(dict(parse_qsl(seen.query)).get("offset", "0"))
            assert offset == PAGE * len(pages), f"page at {offset} after {pages}: two passes at once"
            pages.append(offset)
            passes += offset == PAGE * (len(MEMBERS) // PAGE)
    return passes


def test_two_replicas_on_postgresql_sync_cohorts_one_pass_at_a_time(
    sandbox: SandboxServer, standin: tuple[PersonsStandin, str], tmp_path: Path, pg_url: str
) -> None:
    served, posthog_url = standin
    served.slow_next(100_000, 0.1)  # each request takes a while: passes that could overlap would
    replica = {"OUTBOX_URL": pg_url, "LEASE_S": "5"}
    env_a = {**cohort_env(sandbox, posthog_url, tmp_path / "a"), **replica}
    env_b = {**cohort_env(sandbox, posthog_url, tmp_path / "b"), **replica}
    with serving(env_a, tmp_path / "a.log") as url_a, serving(env_b, tmp_path / "b.log") as url_b:
        wait_for(lambda: segment(sandbox) == users(MEMBERS), "every member in the segment", 60)

        def turns(url: str) -> dict[str, float]:  # this replica's own (/metrics is per process)
            name = "posthog_customerio_cohort_sync_passes_total"
            return {outcome: metric(url, f'{name}{{outcome="{outcome}"}}') for outcome in ("ok", "failed", "skipped")}

        def both_ran_passes() -> list[dict[str, float]] | None:
            counted = [turns(url_a), turns(url_b)]
            done = all(c["ok"] >= 1 for c in counted) and sum(c["ok"] for c in counted) >= 4
            return counted if done and sum(c["skipped"] for c in counted) >= 1 else None

        counted = wait_for(both_ran_passes, "each replica running passes, a turn skipped", 90)
        assert not any(c["failed"] for c in counted)
        served.remove_from_cohort(COHORT, make_person(MEMBERS[0]))
        served.add_to_cohort(COHORT, make_person(40), make_person(41))
        now = [*MEMBERS[1:], 40, 41]
        wait_for(lambda: segment(sandbox) == users(now), "the change in the segment", 60)
        total = sum(turns(url)["ok"] for url in (url_a, url_b))
        assert passes_in(served) >= sum(c["ok"] for c in counted)
        # no member added (or removed) twice, whichever replica ran the pass that saw them
        assert once_each(segment_requests(sandbox, "add_customers"))
        assert sorted(segment_requests(sandbox, "add_customers")) == sorted(users([*MEMBERS, 40, 41]))
        assert segment_requests(sandbox, "remove_customers") == [f"user-{MEMBERS[0]}"]

        # /api/status sums the replicas' counters (from their heartbeats, every 5 s); the cohort is the database's
        def summed() -> dict[str, Any] | None:
            section = cohort_sync(url_a)
            changes = section["adds"] == len(now) + 1 and section["removes"] == 1
            return section if changes and section["passes"]["ok"] >= total else None

        section = wait_for(summed, "both replicas' passes and changes in /api/status", 30)
        assert section["passes"]["skipped"] >= 1 and the_cohort(section)["members"] == {TARGET: len(now)}


# -- the schedule, in-process -------------------------------------------------------------------------------
class Clock:
    """Wall time the test moves: ``clock.now += INTERVAL`` is an interval later."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


INTERVAL = 60.0
BASE = "http://posthog.test"


def scheduled(
    runtime: Runtime, standin: PersonsStandin, clock: Clock, transport: httpx.BaseTransport | None = None
) -> CohortSync:
    """A schedule on ``runtime`` reading the stand-in in-process (through ``transport`` if given), one try per
    request, no waiting."""
    client = PostHogPersonsClient(
        BASE, "1", STANDIN_KEY, transport=transport or standin.transport(), max_attempts=1, sleep=lambda _: None
    )
    sync = CohortSync(runtime, INTERVAL, client=client, clock=clock)
    runtime.cohort_sync = sync  # what Runtime.start_cohort_sync does, without the thread
    return sync


def test_the_schedule_is_kept_in_the_database_failures_are_counted_and_the_lock_skips(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    standin = PersonsStandin(0, cohort_default_limit=PAGE)
    standin.add_cohort(COHORT, name=NAME, members=[make_person(index) for index in MEMBERS])
    settings = {"cohort_segments": f"{COHORT}={SEGMENT}", "posthog_api_host": BASE, "posthog_project_id": "1"}
    settings |= {"posthog_personal_api_key": STANDIN_KEY}
    clock = Clock()
    with make_runtime(sandbox, tmp_path / "data", **settings) as runtime:
        runtime.deliverer().start()
        sync = scheduled(runtime, standin, clock)
        assert sync.turn() == INTERVAL
        wait_for(lambda: segment(sandbox) == users(MEMBERS), "every member in the segment")
        assert sync.status()["passes"] == {"ok": 1, "failed": 0, "skipped": 0} and sync.status()["adds"] == len(MEMBERS)
        assert runtime.db.load_status(SCHEDULE_KEY) is not None

        clock.now += INTERVAL / 4  # a restart waits for the rest of the interval: no request
        asked = len(standin.requests)
        restarted = scheduled(runtime, standin, clock)
        assert restarted.turn() == pytest.approx(INTERVAL * 3 / 4) and len(standin.requests) == asked
        with runtime.db.cohort_sync_lock() as held:  # another process's pass (sync-cohorts, a replica)
            assert held
            clock.now += INTERVAL
            assert restarted.turn() == INTERVAL and restarted.status()["passes"]["skipped"] == 1
        assert len(standin.requests) == asked

        fault = standin.fail_path(f"/cohorts/{COHORT}/persons/", 503, 1, skip=1)  # the pass's 2nd page
        assert restarted.turn() == INTERVAL
        failed = restarted.status()
        assert failed["passes"]["failed"] == 1 and failed["cohort_failures"]["failed"] == 1
        assert failed["last_pass"]["outcome"] == "failed" and "503" in failed["last_error"]
        assert fault.hits == 1
        clock.now += INTERVAL
        standin.add_to_cohort(COHORT, make_person(40))
        assert restarted.turn() == INTERVAL  # resumes the cohort's pass at its 2nd page
        wait_for(lambda: segment(sandbox) == users([*MEMBERS, 40]), "the new member in the segment")
        assert restarted.status()["passes"]["ok"] == 1 and restarted.status()["adds"] == 1
        assert once_each(segment_requests(sandbox, "add_customers"))

        status = build_status(runtime)["cohort_sync"]
        assert status["passes"]["failed"] == 1 and the_cohort(status)["members"] == {TARGET: len(MEMBERS) + 1}
        text = Metrics(runtime).render().decode()
        assert 'posthog_customerio_cohort_sync_cohort_failures_total{outcome="failed"} 1.0' in text
        assert 'posthog_customerio_cohort_sync_passes_total{outcome="skipped"} 1.0' in text
        assert "posthog_customerio_cohort_sync_members_added_total 1.0" in text


def test_stop_ends_the_pass_at_once_and_the_next_start_resumes_it(sandbox: SandboxServer, tmp_path: Path) -> None:
    """The stop cuts the client's wait (PostHog asking to come back in a minute) short; the pass never ended, so
    the next start runs one at once, from where the cohort's pass stood."""
    standin = PersonsStandin(0, cohort_default_limit=PAGE)
    standin.add_cohort(COHORT, name=NAME, members=[make_person(index) for index in MEMBERS])
    standin.fail_path(f"/cohorts/{COHORT}/persons/", 429, 1, skip=1, retry_after="60")
    with running_persons_standin(standin) as posthog_url:
        settings = {"cohort_segments": f"{COHORT}={SEGMENT}", "posthog_api_host": posthog_url}
        settings |= {"posthog_project_id": "1", "posthog_personal_api_key": STANDIN_KEY}
        with make_runtime(sandbox, tmp_path / "data", **settings) as runtime:
            sync = runtime.start_cohort_sync()
            assert sync is not None and runtime.start_cohort_sync() is sync
            wait_for(lambda: [s.status for s in standin.requests][-1:] == [429], "the pass waiting a minute")
            started = time.monotonic()
            sync.stop()
            assert time.monotonic() - started < 5 and not sync.status()["running"]
            assert sync.status()["last_pass"]["outcome"] == "stopped" and sync.status()["passes"]["ok"] == 0
            runtime.cohort_sync = None
            again = runtime.start_cohort_sync()
            assert again is not None and again is not sync
            wait_for(lambda: again.status()["passes"]["ok"] == 1, "the next start resuming the pass at once")
            (cohort,) = build_status(runtime)["cohort_sync"]["cohorts"]
            assert cohort["last_pass"]["resumed"] and cohort["members"] == {TARGET: len(MEMBERS)}


class ChangeAfterFirstPage(httpx.BaseTransport):
    """The stand-in in-process; once armed, ``change`` runs right after the next first page of the cohort's
    members is answered: the cohort changes in PostHog while a pass reads it, between two of its pages."""

    def __init__(self, standin: PersonsStandin, change: Callable[[], object]) -> None:
        self.inner = standin.transport()
        self.change = change
        self.armed = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        first_page = request.url.path.endswith(f"/cohorts/{COHORT}/persons/") and b"offset" not in request.url.query
        if self.armed and first_page:
            self.armed = False
            self.change()
        return response


@pytest.mark.parametrize("joining", [[40, 41], [40]], ids=["count-changes", "count-unchanged"])
def test_a_member_leaving_while_a_pass_reads_the_cohort_removes_nobody_else(
    sandbox: SandboxServer, tmp_path: Path, joining: list[int]
) -> None:
    """PostHog pages a cohort's members by offset: the first member leaving once the pass has read the first page
    moves every later member one place up, so the one that opened the second page is not listed by this pass
    (what the two replicas' test once saw under load: user-8 removed, then added again). A pass the cohort changed
    under (its ``count`` or ``last_calculation`` differ once its pages are read) removes nobody; the next pass,
    reading the cohort as it is, removes who left. Nothing is added or removed twice, nobody wrongly."""
    standin = PersonsStandin(0, cohort_default_limit=PAGE)
    standin.add_cohort(COHORT, name=NAME, members=[make_person(index) for index in MEMBERS])
    settings = {"cohort_segments": f"{COHORT}={SEGMENT}", "posthog_api_host": BASE, "posthog_project_id": "1"}
    settings |= {"posthog_personal_api_key": STANDIN_KEY}

    def change() -> None:
        standin.remove_from_cohort(COHORT, make_person(MEMBERS[0]))
        standin.add_to_cohort(COHORT, *(make_person(index) for index in joining))

    transport = ChangeAfterFirstPage(standin, change)
    clock = Clock()
    with make_runtime(sandbox, tmp_path / "data", **settings) as runtime:
        deliverer = runtime.deliverer()
        deliverer.start()
        sync = scheduled(runtime, standin, clock, transport)
        assert sync.turn() == INTERVAL
        wait_for(lambda: segment(sandbox) == users(MEMBERS), "every member in the segment")

        transport.armed = True
        clock.now += INTERVAL
        assert sync.turn() == INTERVAL and not transport.armed  # the cohort changed between the pass's pages
        assert deliverer.wait_until_empty(30)
        assert segment_requests(sandbox, "remove_customers") == []  # MEMBERS[5] was not listed: it did not leave
        assert segment(sandbox) == users([*MEMBERS, *joining])  # who joined is in (listed on the last page)
        assert sync.status()["last_pass"]["outcome"] == "ok" and sync.status()["removes"] == 0

        clock.now += INTERVAL  # the next pass reads the cohort as it is: who left leaves
        assert sync.turn() == INTERVAL
        now = [*MEMBERS[1:], *joining]
        wait_for(lambda: segment(sandbox) == users(now), "the member who left out of the segment")
        assert deliverer.wait_until_empty(30)
        assert once_each(segment_requests(sandbox, "add_customers"))
        assert sorted(segment_requests(sandbox, "add_customers")) == sorted(users([*MEMBERS, *joining]))
        assert segment_requests(sandbox, "remove_customers") == [f"user-{MEMBERS[0]}"]
        assert sync.status()["removes"] == 1 and sync.status()["passes"] == {"ok": 3, "failed": 0, "skipped": 0}
