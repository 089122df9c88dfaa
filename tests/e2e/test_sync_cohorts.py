"""``sync-cohorts`` end to end: PostHog's cohorts (the API stand-in over HTTP, a few members a page) -> the command
-> the outbox -> Customer.io (the sandbox over HTTP). Judged by the end state in the sandbox: which profiles exist,
what they hold, who is in each manual segment; and by what was sent (the sandbox's request log): only the
difference, each change once, at most 1,000 ids a request."""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from posthog_customerio.cli import cohorts as cli_cohorts
from posthog_customerio.person_sync import persons_client
from posthog_customerio.sandbox import SandboxServer
from posthog_customerio.storage import SqliteStorage

from ..conftest import Cli, write_jsonl
from ..helpers import ev, profiles
from ..posthog_api_standin import (
    ROUTE_COHORT_PERSONS,
    STANDIN_KEY,
    PersonsStandin,
    make_person,
    running_persons_standin,
)

#: cohort members per page (PostHog's default is 100): a handful of members make several pages
PAGE = 3
#: generated persons PostHog identified (``user-i``, ``user{i}@example.com``); the others are anonymous
IDENTIFIED = [i for i in range(1, 40) if i % 3]
ATTRIBUTE = "posthog_cohort_power_users_eu"


@pytest.fixture(scope="module")
def _standin() -> Iterator[tuple[PersonsStandin, str]]:
    served = PersonsStandin(0, cohort_default_limit=PAGE)
    with running_persons_standin(served) as url:
        yield served, url


@pytest.fixture
def posthog(_standin: tuple[PersonsStandin, str]) -> PersonsStandin:
    """The PostHog stand-in, without cohorts, persons, faults or logged requests."""
    served, _ = _standin
    with served.lock:
        served.cohorts.clear()
        served.requests.clear()
        served.path_faults.clear()
        served.persons = []
        served.cohort_default_limit = PAGE
        served.default_limit = 100
    return served


@pytest.fixture
def api_env(env: dict[str, str], _standin: tuple[PersonsStandin, str], posthog: PersonsStandin) -> dict[str, str]:
    """The sandbox as Customer.io, the stand-in as PostHog's API (unpaced), cohort 7 mirrored into segment 12."""
    return {
        **env,
        "POSTHOG_API_HOST": _standin[1],
        "POSTHOG_PROJECT_ID": "1",
        "POSTHOG_PERSONAL_API_KEY": STANDIN_KEY,
        "POSTHOG_API_MAX_PER_MINUTE": "100000",
        "COHORT_SEGMENTS": "7=12",
    }


@pytest.fixture
def no_posthog_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """PostHog's retries do not wait (a failure that outlasts them fails the pass at once)."""
    monkeypatch.setattr(cli_cohorts, "persons_client", functools.partial(persons_client, sleep=lambda _s: None))


def people(*indexes: int) -> list[dict[str, Any]]:
    return [make_person(i) for i in indexes]


def users(*indexes: int) -> list[str]:
    return sorted(f"user-{i}" for i in indexes)


def sync(cli: Cli, env: dict[str, str], *args: str, code: int = 0) -> dict[str, Any]:
    """``sync-cohorts --json ARGS``: its summary (the exit code checked)."""
    result = cli("sync-cohorts", "--json", *args, env=env)
    assert result.exit_code == code, result.output
    assert STANDIN_KEY not in result.output
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


def cohort(summary: dict[str, Any], cohort_id: str = "7") -> dict[str, Any]:
    (found,) = [report for report in summary["cohorts"] if report["cohort_id"] == cohort_id]
    return dict(found)


def segment(sandbox: SandboxServer, segment_id: str = "12", by: str = "id") -> list[str]:
    """The members of a manual segment, by their ``id`` (or ``email``), sorted."""
    who = {person["cio_id"]: person[by] for person in sandbox.state.people()}
    return sorted(str(who[cio_id]) for cio_id in sandbox.state.segments().get(segment_id, []))


def segment_requests(sandbox: SandboxServer) -> list[tuple[str, str, str, list[str]]]:
    """Each segment request Customer.io accepted: (segment, add_customers|remove_customers, id_type query, ids)."""
    found = []
    for request in sandbox.state.requests():
        parts = request["path"].split("/")
        if request["status"] == 200 and parts[1:4] == ["api", "v1", "segments"]:
            found.append((parts[4], parts[5], request["query"], list(request["body"]["ids"])))
    return found


def ids_sent(sandbox: SandboxServer, verb: str, segment_id: str = "12") -> Counter[str]:
    """How many times each id was sent to ``verb`` (add_customers, remove_customers) of a segment."""
    return Counter(
        i for seg, sent, _, ids in segment_requests(sandbox) if (seg, sent) == (segment_id, verb) for i in ids
    )


def identifies(sandbox: SandboxServer) -> list[dict[str, Any]]:
    """Every identify the sandbox accepted (Track v2 batch items and v1 PUTs), in order."""
    found = []
    for request in sandbox.state.requests():
        body = request["body"] if request["status"] == 200 and isinstance(request["body"], dict) else {}
        if request["path"] == "/api/v2/batch":
            found += [op for op in body["batch"] if op.get("action") == "identify"]
        elif request["method"] == "PUT" and request["path"].startswith("/api/v1/customers/"):
            found.append({"identifiers": {"id": request["path"].rsplit("/", 1)[1]}, "attributes": body})
    return found


def by_id(sandbox: SandboxServer) -> dict[str, dict[str, Any]]:
    return {str(profile["id"]): profile for profile in profiles(sandbox)}


def persons_reads(posthog: PersonsStandin, cohort_id: int = 7) -> list[str]:
    """The query of each page of the cohort's persons PostHog answered (``""``: the first page)."""
    return [seen.query for seen in posthog.cohort_requests(cohort_id, ROUTE_COHORT_PERSONS) if seen.status == 200]


# -- the first pass, and the next ones ------------------------------------------------------------------------
def test_a_first_pass_creates_the_members_then_fills_the_segment_and_a_second_pass_sends_nothing(
    cli: Cli, api_env: dict[str, str], sandbox: SandboxServer, posthog: PersonsStandin
) -> None:
    posthog.add_cohort(7, name="Power users (EU)", members=people(*range(1, 13)))  # 4 of 12 never identified

    summary = sync(cli, api_env)

    report = cohort(summary)
    assert (report["name"], report["outcome"], report["pass_no"], report["resumed"]) == (
        "Power users (EU)",
        "ok",
        1,
        False,
    )
    members = [i for i in range(1, 13) if i % 3]
    assert report["members_read"] == 12 and report["members"] == {"segment 12": len(members)}
    assert report["added"] == {"segment 12": len(members)} and report["removed"] == {"segment 12": 0}
    assert report["profiles_created"] == len(members) and report["skipped"] == {"no_profile": 4}
    assert summary["dead_lettered"] == 0 and summary["queued"] == 0
    assert segment(sandbox) == users(*members)
    assert sorted(by_id(sandbox)) == users(*members)  # the anonymous persons are no profiles, in no segment
    assert persons_reads(posthog) == ["", "offset=3", "offset=6", "offset=9", "offset=12"]  # every page, once
    assert segment_requests(sandbox) and {query for _, _, query, _ in segment_requests(sandbox)} == {"id_type=id"}
    sent = len(sandbox.state.requests())

    again = sync(cli, api_env)

    report = cohort(again)
    assert (report["outcome"], report["pass_no"], report["added"], report["removed"]) == (
        "ok",
        2,
        {"segment 12": 0},
        {"segment 12": 0},
    )
    assert report["operations_enqueued"] == 0 and report["skipped"] == {"no_profile": 4}  # tried again
    assert len(sandbox.state.requests()) == sent
    assert segment(sandbox) == users(*members)


def test_members_added_and_removed_between_passes_send_only_the_difference(
    cli: Cli, api_env: dict[str, str], sandbox: SandboxServer, posthog: PersonsStandin
) -> None:
    posthog.add_cohort(7, name="Power users", members=people(1, 2, 4, 5, 7))
    sync(cli, api_env)
    assert segment(sandbox) == users(1, 2, 4, 5, 7)
    posthog.remove_from_cohort(7, "user-1", make_person(2))
    posthog.add_to_cohort(7, make_person(8), at=0)  # PostHog lists the newest first: every page shifts
    posthog.add_to_cohort(7, make_person(10))
    sandbox.state.log.reset()  # from here on, the log shows only what the second pass sent

    report = cohort(sync(cli, api_env))

    assert report["added"] == {"segment 12": 2} and report["removed"] == {"segment 12": 2}
    assert report["profiles_created"] == 2 and report["members"] == {"segment 12": 5}
    assert segment(sandbox) == users(4, 5, 7, 8, 10)
    assert ids_sent(sandbox, "add_customers") == {"user-8": 1, "user-10": 1}
    assert ids_sent(sandbox, "remove_customers") == {"user-1": 1, "user-2": 1}
    assert sorted(op["identifiers"]["id"] for op in identifies(sandbox)) == ["user-10", "user-8"]  # the new ones
    assert by_id(sandbox)["user-1"]["attributes"]["plan"] == "pro"  # leaving a cohort deletes nobody


def test_a_member_customerio_does_not_know_is_created_first_with_its_person_properties(
    cli: Cli, api_env: dict[str, str], sandbox: SandboxServer, posthog: PersonsStandin, tmp_path: Path
) -> None:
    live = ev("$set", "user-1", top={"$set": {"email": "user1@example.com", "plan": "live"}})
    assert cli("send", str(write_jsonl(tmp_path / "live.jsonl", [live])), env=api_env).exit_code == 0
    sandbox.state.log.reset()
    posthog.add_cohort(7, name="Power users", members=people(1, 2))

    report = cohort(sync(cli, api_env))

    assert report["profiles_created"] == 1 and report["added"] == {"segment 12": 2}
    assert segment(sandbox) == users(1, 2)
    created = identifies(sandbox)
    assert [op["identifiers"] for op in created] == [{"id": "user-2"}]  # user-1 had a profile: left alone
    assert created[0]["attributes"] == {"email": "user2@example.com", "$initial_os": "Mac OS X", "plan": "free"}
    assert by_id(sandbox)["user-1"]["attributes"]["plan"] == "live"
    paths = [(request["path"], request["body"]) for request in sandbox.state.requests()]
    create_at = next(n for n, (path, _) in enumerate(paths) if path == "/api/v2/batch")
    add_at = next(n for n, (path, body) in enumerate(paths) if "add_customers" in path and "user-2" in body["ids"])
    assert create_at < add_at  # else Customer.io would have ignored the id it did not know yet


def test_more_than_a_thousand_changes_go_in_requests_of_at_most_a_thousand_ids(
    cli: Cli, api_env: dict[str, str], sandbox: SandboxServer, posthog: PersonsStandin
) -> None:
    with posthog.lock:
        posthog.persons = [make_person(i) for i in range(1800)]  # 1,200 identified
        posthog.default_limit = 1000
        posthog.cohort_default_limit = 1500  # the whole cohort in one page: one transaction of 1,200 adds
    known = [i for i in range(1800) if i % 3]
    assert sync_persons_ok(cli, api_env)  # every member has a profile: the pass sends segment changes only
    sandbox.state.log.reset()
    posthog.add_cohort(7, name="Everyone identified", members=known)

    report = cohort(sync(cli, api_env))

    assert report["added"] == {"segment 12": 1200} and report["profiles_created"] == 0
    adds = [ids for _, verb, _, ids in segment_requests(sandbox) if verb == "add_customers"]
    assert sorted(len(ids) for ids in adds) == [200, 1000]  # 1,200 ids: two requests, none over the limit
    assert len(sandbox.state.requests()) == 2
    assert ids_sent(sandbox, "add_customers") == {f"user-{i}": 1 for i in known}
    assert len(segment(sandbox)) == 1200
    posthog.set_cohort_members(7, known[:100])
    sandbox.state.log.reset()

    report = cohort(sync(cli, api_env))

    assert report["removed"] == {"segment 12": 1100} and report["members"] == {"segment 12": 100}
    removes = [ids for _, verb, _, ids in segment_requests(sandbox) if verb == "remove_customers"]
    assert len(removes) >= 2 and max(len(ids) for ids in removes) <= 1000
    assert ids_sent(sandbox, "remove_customers") == {f"user-{i}": 1 for i in known[100:]}
    assert segment(sandbox) == users(*known[:100])


def sync_persons_ok(cli: Cli, env: dict[str, str]) -> bool:
    result = cli("sync-persons", "--json", env=env)
    assert result.exit_code == 0, result.output
    return bool(json.loads(result.stdout)["actions"]["identify"] == 1200)


# -- how people are addressed; the other APIs ---------------------------------------------------------------
def test_with_identify_by_email_the_segment_requests_go_by_email(
    cli: Cli, api_env: dict[str, str], sandbox: SandboxServer, posthog: PersonsStandin
) -> None:
    env = {**api_env, "IDENTIFY_BY_EMAIL": "true"}
    posthog.add_cohort(7, name="Power users", members=people(1, 2, 4, 5))

    sync(cli, env)

    emails = sorted(f"user{i}@example.com" for i in (1, 2, 4, 5))
    assert segment(sandbox, by="email") == emails
    assert {person["id"] for person in sandbox.state.people()} == {None}  # the profiles are their emails
    assert {(verb, query) for _, verb, query, _ in segment_requests(sandbox)} == {("add_customers", "id_type=email")}
    assert sorted(ids_sent(sandbox, "add_customers")) == emails
    posthog.remove_from_cohort(7, "user-1")
    sandbox.state.log.reset()

    sync(cli, env)

    assert segment_requests(sandbox) == [("12", "remove_customers", "id_type=email", ["user1@example.com"])]
    assert segment(sandbox, by="email") == emails[1:]


@pytest.mark.parametrize("api", ["v2", "pipelines"])
def test_attribute_mode_sets_the_attribute_on_members_and_removes_it_when_they_leave(
    cli: Cli, api_env: dict[str, str], sandbox: SandboxServer, posthog: PersonsStandin, api: str
) -> None:
    env = {k: v for k, v in api_env.items() if k != "COHORT_SEGMENTS"} | {"COHORT_ATTRIBUTES": "7"}
    env["CUSTOMERIO_API"] = api
    if api == "pipelines":
        env |= {"CUSTOMERIO_PIPELINES_API_KEY": "sandbox", "CUSTOMERIO_PIPELINES_URL": sandbox.url}
    pipelines = api == "pipelines"
    posthog.add_cohort(7, name="Power users (EU)", members=people(1, 2, 3, 4))

    report = cohort(sync(cli, env))

    assert report["added"] == {f"attribute {ATTRIBUTE}": 3} and report["skipped"] == {"no_profile": 1}
    found = {p["id"]: p for p in profiles(sandbox, pipelines=pipelines)}
    assert sorted(found) == users(1, 2, 4)
    assert all(found[user]["attributes"][ATTRIBUTE] is True for user in users(1, 2, 4))
    assert found["user-2"]["attributes"]["plan"] == "free"  # created first from the person's properties
    assert sandbox.state.segments() == {}  # attributes only: no manual segment
    if pipelines:
        assert sandbox.state.requests() == []  # nothing went to the Track API
    posthog.remove_from_cohort(7, "user-1")
    posthog.add_to_cohort(7, make_person(5))
    with posthog.lock:
        posthog.cohorts[7].name = "Renamed in PostHog"  # the attribute keeps its name (segments use it)

    report = cohort(sync(cli, env))

    assert report["added"] == {f"attribute {ATTRIBUTE}": 1} and report["removed"] == {f"attribute {ATTRIBUTE}": 1}
    found = {p["id"]: p for p in profiles(sandbox, pipelines=pipelines)}
    assert ATTRIBUTE not in found["user-1"]["attributes"] and found["user-1"]["attributes"]["plan"] == "pro"
    assert [user for user in sorted(found) if found[user]["attributes"].get(ATTRIBUTE) is True] == users(2, 4, 5)
    assert not any("renamed" in name for person in found.values() for name in person["attributes"])


def test_segments_need_the_track_api_pipelines_is_refused_before_anything_is_read(
    cli: Cli, api_env: dict[str, str], posthog: PersonsStandin
) -> None:
    env = {**api_env, "CUSTOMERIO_API": "pipelines", "CUSTOMERIO_PIPELINES_API_KEY": "sandbox"}

    result = cli("sync-cohorts", env=env)

    assert result.exit_code == 2 and "COHORT_SEGMENTS needs the Track API" in result.stderr, result.output
    assert posthog.requests == []


def test_track_v1_mirrors_the_cohort_into_the_segment_and_the_attribute(
    cli: Cli, api_env: dict[str, str], sandbox: SandboxServer, posthog: PersonsStandin
) -> None:
    env = {**api_env, "CUSTOMERIO_API": "v1", "COHORT_ATTRIBUTES": "7"}
    posthog.add_cohort(7, name="Power users (EU)", members=people(1, 2, 4))

    report = cohort(sync(cli, env))

    assert report["added"] == {"segment 12": 3, f"attribute {ATTRIBUTE}": 3}
    assert segment(sandbox) == users(1, 2, 4)
    assert all(person["attributes"][ATTRIBUTE] is True for person in by_id(sandbox).values())
    paths = {request["path"] for request in sandbox.state.requests()}
    assert paths == {"/api/v1/customers/user-1", "/api/v1/customers/user-2", "/api/v1/customers/user-4"} | {
        "/api/v1/segments/12/add_customers"
    }
    assert len(segment_requests(sandbox)) < 3  # consecutive adds share a request in v1 too
    posthog.remove_from_cohort(7, "user-2")
    sandbox.state.log.reset()

    sync(cli, env)

    assert segment_requests(sandbox) == [("12", "remove_customers", "id_type=id", ["user-2"])]
    assert [
        (r["method"], r["path"], r["body"][ATTRIBUTE]) for r in sandbox.state.requests() if r["method"] == "PUT"
    ] == [("PUT", "/api/v1/customers/user-2", "")]
    assert segment(sandbox) == users(1, 4) and ATTRIBUTE not in by_id(sandbox)["user-2"]["attributes"]


# -- failures ----------------------------------------------------------------------------------------------
def test_posthog_failing_mid_pass_fails_it_and_the_next_run_resumes_sending_nothing_twice(
    cli: Cli, api_env: dict[str, str], sandbox: SandboxServer, posthog: PersonsStandin, no_posthog_waits: None
) -> None:
    members = IDENTIFIED[:10]  # pages of 3, 3, 3, 1
    posthog.add_cohort(7, name="Power users", members=people(*members))
    posthog.add_cohort(8, name="Other", members=people(*members[:2]))
    env = {**api_env, "COHORT_SEGMENTS": "7=12,8=13"}
    fault = posthog.fail_path("/cohorts/7/persons/", 503, count=100, skip=2)  # the 3rd page: PostHog is down

    failed = sync(cli, env, code=1)

    report = cohort(failed)
    assert report["outcome"] == "failed" and "HTTP 503" in report["error"], report
    assert report["added"] == {"segment 12": 6} and report["members_read"] == 6
    assert cohort(failed, "8")["outcome"] == "ok"  # the other cohort of the run still synced
    assert segment(sandbox) == users(*members[:6])  # what the first two pages added was delivered
    assert segment(sandbox, "13") == users(*members[:2])
    fault.remaining = 0
    posthog.requests.clear()

    result = cli("sync-cohorts", env=env)

    assert result.exit_code == 0, result.output
    assert "cohort 7 (Power users): ok, pass 1 (resumed)" in result.stdout
    assert "cohort 8 (Other): ok, pass 2\n" in result.stdout
    assert persons_reads(posthog) == ["offset=6", "offset=9"]  # from the page that failed, not from the start
    assert segment(sandbox) == users(*members)
    assert ids_sent(sandbox, "add_customers") == {f"user-{i}": 1 for i in members}  # each add once, overall
    assert ids_sent(sandbox, "remove_customers") == {}  # the first pages' members did not "leave"
    assert Counter(op["identifiers"]["id"] for op in identifies(sandbox)) == {f"user-{i}": 1 for i in members}
    sent = len(sandbox.state.requests())

    assert cohort(sync(cli, env))["pass_no"] == 2 and len(sandbox.state.requests()) == sent


def test_a_cohort_that_suddenly_reads_as_empty_is_left_alone_unless_allow_empty(
    cli: Cli, api_env: dict[str, str], sandbox: SandboxServer, posthog: PersonsStandin
) -> None:
    env = {**api_env, "COHORT_SEGMENTS": "7=12,8=13"}
    posthog.add_cohort(7, name="Power users", members=people(1, 2, 4))
    posthog.add_cohort(8, name="Nobody yet")  # empty from the start: nothing to guard
    first = sync(cli, env)
    assert cohort(first, "8")["outcome"] == "ok" and segment(sandbox) == users(1, 2, 4)
    posthog.set_cohort_members(7, [])
    sandbox.state.log.reset()

    result = cli("sync-cohorts", env=env)

    assert result.exit_code == 1, result.output
    assert "cohort 7 (Power users): suspicious_empty, pass 2" in result.stdout
    assert "nothing removed (run sync-cohorts --allow-empty if the cohort really is empty)" in result.stdout
    assert "cohort 8 (Nobody yet): ok, pass 2" in result.stdout
    assert sandbox.state.requests() == [] and segment(sandbox) == users(1, 2, 4)

    allowed = sync(cli, env, "--allow-empty")

    report = cohort(allowed)
    assert (report["outcome"], report["removed"], report["members"]) == ("ok", {"segment 12": 3}, {"segment 12": 0})
    assert segment(sandbox) == [] and sorted(ids_sent(sandbox, "remove_customers")) == users(1, 2, 4)


def test_a_deleted_and_an_unknown_cohort_change_nothing_and_are_reported_while_another_syncs(
    cli: Cli, api_env: dict[str, str], sandbox: SandboxServer, posthog: PersonsStandin
) -> None:
    env = {**api_env, "COHORT_SEGMENTS": "7=12,8=13,99=14"}
    posthog.add_cohort(7, name="Power users", members=people(1, 2))
    posthog.add_cohort(8, name="Soon deleted", members=people(4, 5))
    first = sync(cli, env, code=1)
    assert [(r["cohort_id"], r["outcome"]) for r in first["cohorts"]] == [("7", "ok"), ("8", "ok"), ("99", "not_found")]
    assert segment(sandbox, "13") == users(4, 5)
    with posthog.lock:
        posthog.cohorts[8].deleted = True
    posthog.add_to_cohort(7, make_person(7))
    sandbox.state.log.reset()

    result = cli("sync-cohorts", env=env)

    assert result.exit_code == 1, result.output
    assert "cohort 7 (Power users): ok, pass 2" in result.stdout
    assert "cohort 8 (Soon deleted): deleted, pass 0\n  error          cohort 8 is deleted in PostHog" in result.stdout
    assert "cohort 99: not_found, pass 0\n  error          cohort 99 not found in PostHog (HTTP 404 " in result.stdout
    assert segment(sandbox) == users(1, 2, 7)
    assert segment(sandbox, "13") == users(4, 5)  # the deleted cohort's segment is not emptied
    assert {seg for seg, *_ in segment_requests(sandbox)} == {"12"}
    assert "14" not in sandbox.state.segments()
    assert not posthog.cohort_requests(8, ROUTE_COHORT_PERSONS)[2:]  # its members were not read again


def test_a_second_process_syncing_the_same_database_waits_its_turn_and_changes_nothing(
    cli: Cli, api_env: dict[str, str], sandbox: SandboxServer, posthog: PersonsStandin
) -> None:
    posthog.add_cohort(7, name="Power users", members=people(1, 2))
    sync(cli, api_env)
    posthog.add_to_cohort(7, make_person(4))
    posthog.requests.clear()
    sandbox.state.log.reset()
    other = SqliteStorage(Path(api_env["POSTHOG_CUSTOMERIO_DATA_DIR"]) / "posthog-customerio.sqlite")
    try:
        with other.cohort_sync_lock() as held:  # another replica (or sync-cohorts) is in a pass
            assert held
            busy = cli("sync-cohorts", env=api_env)
    finally:
        other.close()

    assert busy.exit_code == 1 and "another process is syncing cohorts" in busy.stderr, busy.output
    assert posthog.requests == [] and sandbox.state.requests() == []
    assert cohort(sync(cli, api_env))["added"] == {"segment 12": 1}  # its turn: the pass resumes the work
    assert segment(sandbox) == users(1, 2, 4)


# -- dry run -----------------------------------------------------------------------------------------------
def test_dry_run_lists_the_planned_changes_and_stores_and_sends_nothing(
    cli: Cli, api_env: dict[str, str], sandbox: SandboxServer, posthog: PersonsStandin
) -> None:
    posthog.add_cohort(7, name="Power users", members=people(1, 2, 3, 4))

    dry = cli("sync-cohorts", "--dry-run", env=api_env)

    assert dry.exit_code == 0, dry.output
    assert "cohort 7 (Power users): ok, 4 members in PostHog" in dry.stdout
    # what the pass will send: the anonymous person 3 is no profile (not added, as the pass reports it)
    assert "  would add      +3 segment 12\n  would remove   -0 segment 12\n" in dry.stdout
    assert "  new profiles   3 (created first)\n" in dry.stdout
    examples = [line for line in dry.stdout.splitlines() if line.startswith("  e.g. ")]
    assert examples == [f"  e.g. add user-{i} to segment 12" for i in (1, 2, 4)]
    assert "dry run: nothing was stored or sent" in dry.stdout
    assert sandbox.state.requests() == [] and sandbox.state.segments() == {}
    report = cohort(sync(cli, api_env))  # nothing was remembered either: the pass is the first
    assert (report["pass_no"], report["added"]) == (1, {"segment 12": 3})
    posthog.remove_from_cohort(7, "user-1")
    posthog.add_to_cohort(7, make_person(5), make_person(7))
    sandbox.state.log.reset()

    planned = cli("sync-cohorts", "--dry-run", "--json", env=api_env)

    assert planned.exit_code == 0, planned.output
    (plan,) = json.loads(planned.stdout)["cohorts"]
    assert (plan["adds"], plan["removes"], plan["profiles_to_create"]) == ({"segment 12": 2}, {"segment 12": 1}, 2)
    assert sandbox.state.requests() == [] and segment(sandbox) == users(1, 2, 4)
    report = cohort(sync(cli, api_env))
    assert (report["pass_no"], report["added"], report["removed"]) == (2, {"segment 12": 2}, {"segment 12": 1})
    assert segment(sandbox) == users(2, 4, 5, 7)
    posthog.set_cohort_members(7, [])
    sandbox.state.log.reset()
    empty = cli("sync-cohorts", "--dry-run", env=api_env)  # exit 1, as the pass itself would
    assert empty.exit_code == 1 and "cohort 7 (Power users): suspicious_empty, 0 members" in empty.stdout
    assert "would remove   -0 segment 12" in empty.stdout
    allowed = cli("sync-cohorts", "--dry-run", "--allow-empty", env=api_env)
    assert allowed.exit_code == 0 and "would remove   -4 segment 12" in allowed.stdout
    assert sandbox.state.requests() == [] and segment(sandbox) == users(2, 4, 5, 7)


# -- found while writing these tests: fails until fixed (see the docstring) ------------------------------------
def test_a_member_listed_with_ten_of_its_distinct_ids_joins_the_profile_customerio_has(
    cli: Cli, api_env: dict[str, str], sandbox: SandboxServer, posthog: PersonsStandin, tmp_path: Path
) -> None:
    """PostHog's cohort persons list cuts each member's ``distinct_ids`` to the first 10 (oldest first;
    ``get_serialized_people(distinct_id_limit=10)``), so the user id of someone who visited from more than ten
    devices before signing up is not listed. The member must still join the profile Customer.io has (here made by
    live events), not a second one made from a device id: Customer.io refuses that identify (the email belongs to
    the profile it has) and ignores the add of an id it does not know, so the member would silently never be in
    the segment, while the pass counts it added and never tries again."""
    live = ev("$set", "user-1", top={"$set": {"email": "user1@example.com"}})
    assert cli("send", str(write_jsonl(tmp_path / "live.jsonl", [live])), env=api_env).exit_code == 0
    devices = [f"0191aaaa-bbbb-7ccc-8ddd-{n:012x}" for n in range(11)]  # posthog-js' anonymous ids
    posthog.add_cohort(7, name="Power users", members=[{**make_person(1), "distinct_ids": [*devices, "user-1"]}])

    report = cohort(sync(cli, api_env))

    assert report["added"] == {"segment 12": 1}
    assert sandbox.state.attribute_update_failures() == []
    assert sorted(by_id(sandbox)) == ["user-1"]
    assert segment(sandbox) == ["user-1"]
