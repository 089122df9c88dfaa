"""Cohort passes interleaved with live events: the segment holds the right *profiles* whatever the events did to
them in between (a visitor who identified, an email change by email address, a merge into another profile).
Judged in the sandbox: which profiles exist, and which of them the manual segment holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from posthog_customerio.runtime import Runtime
from posthog_customerio.sandbox import SandboxServer
from posthog_customerio.sources.cohorts import CohortReport, CohortSyncer
from posthog_customerio.sources.jobs import delivering
from posthog_customerio.sources.posthog_api import PostHogPersonsClient

from ..helpers import deliver_events, ev, make_settings
from ..posthog_api_standin import STANDIN_KEY, PersonsStandin

HOST = "https://posthog.example"


def person(uuid: str, *distinct_ids: str, **properties: Any) -> dict[str, Any]:
    """A member as PostHog's cohort persons list gives it."""
    return {
        "id": uuid,
        "uuid": uuid,
        "name": uuid,
        "distinct_ids": list(distinct_ids),
        "properties": properties,
        "created_at": "2024-01-01T00:00:00Z",
        "is_identified": True,
    }


def cohort_pass(
    sandbox: SandboxServer, data_dir: Path, standin: PersonsStandin, allow_empty: bool = False, **overrides: Any
) -> CohortReport:
    """One ``sync-cohorts`` pass of cohort 7 into segment 12, delivered to the sandbox."""
    settings = make_settings(
        data_dir,
        sandbox,
        cohort_segments="7=12",
        customerio_max_rps=1000,
        anonymous_hold_s=0,
        posthog_api_host=HOST,
        posthog_project_id="1",
        posthog_personal_api_key=STANDIN_KEY,
        **overrides,
    )
    client = PostHogPersonsClient(HOST, "1", STANDIN_KEY, transport=standin.transport(), max_per_hour=None)
    with Runtime(settings) as runtime, delivering(runtime, 60, tick=lambda: None):
        (report,) = CohortSyncer(runtime, client, allow_empty=allow_empty).run()
    assert report.outcome == "ok", report
    return report


def segment_ids(sandbox: SandboxServer, key: str = "id") -> list[str]:
    """The profiles segment 12 holds, by their ``id`` (or ``email``)."""
    people = {p["cio_id"]: p for p in sandbox.state.people()}
    return sorted(
        str(people[cio_id].get(key) or people[cio_id]["attributes"].get(key))
        for cio_id in sandbox.state.segments().get("12", [])
    )


def test_a_visitor_who_identified_is_added_as_the_profile_events_made(sandbox: SandboxServer, tmp_path: Path) -> None:
    data = tmp_path / "data"
    deliver_events(
        sandbox,
        data,
        [
            ev("$pageview", "anon-1", 0),
            ev("$identify", "user-1", 10, **{"$anon_distinct_id": "anon-1"}, top={"$set": {"email": "a@example.com"}}),
        ],
    )
    standin = PersonsStandin(0)
    standin.add_cohort(7, name="Buyers", members=[person("p-1", "anon-1", "user-1", email="a@example.com")])
    report = cohort_pass(sandbox, data, standin)
    assert report.profiles_created == 0  # events made it: nothing created, no second profile
    assert [p["id"] for p in sandbox.state.people()] == ["user-1"]
    assert segment_ids(sandbox) == ["user-1"]
    standin.set_cohort_members(7, [])
    standin.add_cohort(7, name="Buyers", members=[person("p-2", "user-2", email="b@example.com")])
    cohort_pass(sandbox, data, standin)  # p-1 left, p-2 (unknown to Customer.io) joined
    assert sorted(p["id"] for p in sandbox.state.people()) == ["user-1", "user-2"]
    assert segment_ids(sandbox) == ["user-2"]


def test_by_email_a_member_whose_email_changed_still_leaves(sandbox: SandboxServer, tmp_path: Path) -> None:
    data = tmp_path / "data"
    standin = PersonsStandin(0)
    standin.add_cohort(7, name="Trial", members=[person("p-1", "user-1", email="old@example.com")])
    cohort_pass(sandbox, data, standin, identify_by_email=True)
    assert segment_ids(sandbox, "email") == ["old@example.com"]
    deliver_events(
        sandbox, data, [ev("$set", "user-1", 10**6, top={"$set": {"email": "new@example.com"}})], identify_by_email=True
    )
    standin.set_cohort_members(7, [person("p-2", "user-2", email="other@example.com")])
    cohort_pass(sandbox, data, standin, identify_by_email=True)
    assert segment_ids(sandbox, "email") == ["other@example.com"]  # the changed profile was removed by its new email


def test_a_member_merged_into_another_profile_leaves_from_the_survivor(sandbox: SandboxServer, tmp_path: Path) -> None:
    data = tmp_path / "data"
    standin = PersonsStandin(0)
    standin.add_cohort(7, name="Churn risk", members=[person("p-2", "user-2", email="two@example.com")])
    cohort_pass(sandbox, data, standin)
    assert segment_ids(sandbox) == ["user-2"]
    # user-9 (a profile of its own) and user-2 are one person now: user-2's profile merges into user-9's
    deliver_events(
        sandbox,
        data,
        [
            ev("$identify", "user-9", 10**6, top={"$set": {"email": "nine@example.com"}}),
            ev("$merge_dangerously", "user-9", 10**6 + 5, alias="user-2"),
        ],
    )
    assert [p["id"] for p in sandbox.state.people()] == ["user-9"]
    assert segment_ids(sandbox) == ["user-9"]  # Customer.io: the survivor joins the merged profile's segments
    standin.set_cohort_members(7, [])
    standin.add_to_cohort(7, person("p-3", "user-3"))
    cohort_pass(sandbox, data, standin)
    assert segment_ids(sandbox) == ["user-3"]  # p-2 left: removed as user-9, the profile it became


def test_two_members_merged_into_one_person_stay_in_the_segment(sandbox: SandboxServer, tmp_path: Path) -> None:
    """Both were members; PostHog merges them (one person leaves the list, the survivor keeps all the ids): the
    merged person's stale row must not remove the surviving profile, which is still a member."""
    data = tmp_path / "data"
    standin = PersonsStandin(0)
    standin.add_cohort(
        7,
        name="Active",
        members=[person("p-a", "user-a", email="a@example.com"), person("p-b", "user-b", email="b@example.com")],
    )
    cohort_pass(sandbox, data, standin)
    assert segment_ids(sandbox) == ["user-a", "user-b"]
    deliver_events(sandbox, data, [ev("$merge_dangerously", "user-a", 10**6, alias="user-b")])
    assert [p["id"] for p in sandbox.state.people()] == ["user-a"]
    standin.set_cohort_members(7, [person("p-a", "user-a", "user-b", email="a@example.com")])
    report = cohort_pass(sandbox, data, standin)
    assert segment_ids(sandbox) == ["user-a"], report
