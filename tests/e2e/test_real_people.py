"""People end up right on real PostHog data (issue "Right on real PostHog data").

Each test feeds events shaped as PostHog's SDKs send them (posthog-js adds ``$device_id`` and
``$is_identified`` to every event; an anonymous visitor's distinct_id is its ``$device_id`` until
``identify()``; server SDKs add neither) and judges Customer.io's end state: which profiles exist,
what each holds, which events are on whom -- in Track v2 and, where it applies, Pipelines.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

from posthog_customerio.sandbox import SandboxServer

from .. import helpers
from ..conftest import Cli, write_jsonl
from ..helpers import deliver_events, profiles

pytestmark = pytest.mark.e2e

T0 = 1_767_600_000  # 2026-01-05T08:00:00Z
ev = functools.partial(helpers.ev, t0=T0)
APIS = ["v2", "pipelines"]


def browser(name: str, distinct_id: str, t: int, device: str, identified: bool, **props: Any) -> dict[str, Any]:
    """An event as posthog-js sends it: ``$device_id``, ``$is_identified`` on every event."""
    return ev(name, distinct_id, t, **{"$device_id": device, "$is_identified": identified, **props})


def only(people: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(people) == 1, people
    return people[0]


def _api(api: str) -> dict[str, Any]:
    return {"api": "pipelines"} if api == "pipelines" else {}


# -- 2. an email change keeps one person --------------------------------------------------------------
@pytest.mark.parametrize("api", APIS)
def test_an_email_change_keeps_one_profile_with_every_event(sandbox: SandboxServer, tmp_path: Path, api: str) -> None:
    events = [
        browser("$pageview", "dev-1", 0, "dev-1", False, **{"$current_url": "https://x.io/"}),
        browser("$identify", "user-1", 10, "dev-1", True, **{"$anon_distinct_id": "dev-1"})
        | {
            "properties": {
                "$anon_distinct_id": "dev-1",
                "$device_id": "dev-1",
                "$is_identified": True,
                "$set": {"email": "old@example.com", "name": "Ann"},
            }
        },
        browser("viewed", "user-1", 20, "dev-1", True),
        # posthog-js setPersonProperties({email: new}) sends a $set event
        browser("$set", "user-1", 30, "dev-1", True, **{"$set": {"email": "new@example.com"}}),
        browser("purchased", "user-1", 40, "dev-1", True),
    ]
    deliver_events(sandbox, tmp_path / "data", events[:3], identify_by_email=True, **_api(api))
    deliver_events(sandbox, tmp_path / "data", events[3:], identify_by_email=True, **_api(api))
    person = only(profiles(sandbox, pipelines=api == "pipelines"))
    assert person["email"] == "new@example.com"
    assert "viewed" in person["events"] and "purchased" in person["events"]


# -- 3. a late, older write never hides a later real change -------------------------------------------
@pytest.mark.parametrize("api", APIS)
def test_a_late_older_set_does_not_freeze_the_attribute(sandbox: SandboxServer, tmp_path: Path, api: str) -> None:
    hour = 3600
    events = [
        ev("$set", "user-1", 10 * hour, **{"$set": {"plan": "pro"}}),
        ev(
            "$set", "user-1", 9 * hour + 1800, uuid="00000000-0000-4000-8000-000000000001", **{"$set": {"plan": "free"}}
        ),
        ev("$set", "user-1", 11 * hour, **{"$set": {"plan": "free"}}),
    ]
    for one in events:  # each arrives in its own batch, in this order
        deliver_events(sandbox, tmp_path / "data", [one], **_api(api))
        if api == "v2":
            assert only(profiles(sandbox))["attributes"]["plan"] == ("free" if one is events[2] else "pro")
    assert only(profiles(sandbox, pipelines=api == "pipelines"))["attributes"]["plan"] == "free"


# -- 4. personless events of a known person land on the person ----------------------------------------
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("known_by", ["identify", "server"])
def test_personless_events_of_a_known_person_land_on_the_profile(
    sandbox: SandboxServer, tmp_path: Path, api: str, known_by: str
) -> None:
    if known_by == "identify":
        first = browser("$identify", "user-1", 0, "dev-1", True, **{"$anon_distinct_id": "dev-1"})
    else:  # posthog-python capture of a known user: no $device_id, no $is_identified
        first = ev("signed_up", "user-1", 0, **{"$lib": "posthog-python"})
    backend = ev("invoice_paid", "user-1", 10, **{"$lib": "posthog-python", "$process_person_profile": False})
    deliver_events(sandbox, tmp_path / "data", [first], **_api(api))
    deliver_events(sandbox, tmp_path / "data", [backend], **_api(api))
    person = only(profiles(sandbox, pipelines=api == "pipelines"))
    assert person["id"] == "user-1" and "invoice_paid" in person["events"]


def test_personless_events_do_not_update_the_person(sandbox: SandboxServer, tmp_path: Path) -> None:
    """PostHog strips ``$set``/``$set_once``/``$unset`` from personless events (``normalizeProcessPerson``)."""
    events = [
        ev("signed_up", "user-1", 0, **{"$set": {"plan": "pro"}}),
        ev("invoice_paid", "user-1", 10, **{"$process_person_profile": False, "$set": {"plan": "free"}}),
    ]
    deliver_events(sandbox, tmp_path / "data", events)
    assert only(profiles(sandbox))["attributes"]["plan"] == "pro"


# -- 5. a merge PostHog refuses is not applied on a cold start ----------------------------------------
@pytest.mark.parametrize("api", APIS)
def test_a_cold_start_does_not_hand_one_customers_events_to_another(
    sandbox: SandboxServer, tmp_path: Path, api: str
) -> None:
    # an old cookie holds customer A's id without $user_state: identify(B) names A as the anonymous id,
    # but the device id says A is not this browser's anonymous visitor; nothing about A is known here
    events = [
        browser("$identify", "cust-b", 0, "dev-9", True, **{"$anon_distinct_id": "cust-a"}),
        browser("viewed", "cust-b", 10, "dev-9", True),
        # customer A on their own device, identified
        browser("purchased", "cust-a", 20, "dev-a", True),
        ev("refunded", "cust-a", 30, **{"$lib": "posthog-node"}),
    ]
    deliver_events(sandbox, tmp_path / "data", events, **_api(api))
    found = {p["id"]: p for p in profiles(sandbox, pipelines=api == "pipelines")}
    assert set(found) == {"cust-a", "cust-b"}, found
    assert "purchased" in found["cust-a"]["events"] and "refunded" in found["cust-a"]["events"]
    assert "purchased" not in found["cust-b"]["events"]


@pytest.mark.parametrize("api", APIS)
def test_a_cold_start_identify_still_merges_the_devices_visitor(
    sandbox: SandboxServer, tmp_path: Path, api: str
) -> None:
    """The usual case: ``$anon_distinct_id`` is this browser's ``$device_id``; its events may come later."""
    events = [
        browser("$identify", "user-1", 10, "dev-1", True, **{"$anon_distinct_id": "dev-1"}),
        browser("$pageview", "dev-1", 0, "dev-1", False, **{"$current_url": "https://x.io/"}),
        browser("clicked", "user-1", 20, "dev-1", True),
    ]
    deliver_events(sandbox, tmp_path / "data", events, **_api(api))
    person = only(profiles(sandbox, pipelines=api == "pipelines"))
    assert person["id"] == "user-1" and "clicked" in person["events"]


def test_an_unproven_anonymous_id_is_merged_once_its_events_show_it_anonymous(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    """Bootstrapped ids: ``$anon_distinct_id`` differs from ``$device_id``; the visitor's own events prove it."""
    events = [
        browser("$identify", "user-1", 10, "dev-1", True, **{"$anon_distinct_id": "boot-1"}),
        browser("$pageview", "boot-1", 0, "dev-1", False, **{"$current_url": "https://x.io/"}),
        browser("clicked", "user-1", 20, "dev-1", True),
    ]
    deliver_events(sandbox, tmp_path / "data", events)
    person = only(profiles(sandbox))
    assert person["id"] == "user-1" and "clicked" in person["events"]
    assert sandbox.state.anonymous_events() == [] or "page" not in str(sandbox.state.anonymous_events())


# -- 8. a deleted person does not come back under another of their distinct_ids -----------------------
@pytest.mark.parametrize("api", APIS)
def test_a_deleted_person_does_not_come_back_under_an_alias(sandbox: SandboxServer, tmp_path: Path, api: str) -> None:
    events = [
        browser("$pageview", "dev-1", 0, "dev-1", False, **{"$current_url": "https://x.io/"}),
        browser(
            "$identify", "user-1", 10, "dev-1", True, **{"$anon_distinct_id": "dev-1", "$set": {"email": "a@x.io"}}
        ),
        ev("$create_alias", "user-1", 20, alias="legacy-1", **{"$is_identified": True}),
        ev("clicked", "legacy-1", 30, **{"$lib": "posthog-node"}),
        ev("$delete_person", "user-1", 40),
    ]
    deliver_events(sandbox, tmp_path / "data", events, **_api(api))
    assert profiles(sandbox, pipelines=api == "pipelines") == []
    later = [
        browser("$pageview", "dev-1", 50, "dev-1", False, **{"$current_url": "https://x.io/late"}),
        ev("clicked", "legacy-1", 60, **{"$lib": "posthog-node"}),
    ]
    deliver_events(sandbox, tmp_path / "data", later, **_api(api))
    found = profiles(sandbox, pipelines=api == "pipelines")
    assert all(p["id"] != "user-1" and p["email"] != "a@x.io" for p in found), found


# -- 9. push devices from PostHog's mobile SDKs --------------------------------------------------------
@pytest.mark.parametrize("os_name,platform", [("iOS", "ios"), ("Android", "android")])
def test_mobile_sdk_push_tokens_add_a_device_and_ciphertext_is_left_out(
    sandbox: SandboxServer, tmp_path: Path, os_name: str, platform: str
) -> None:
    mobile = {"$os_name": os_name, "$os_version": "17.0", "$lib": f"posthog-{platform}", "$is_identified": True}
    events = [
        ev("$set", "user-1", 0, **mobile, **{"$set": {"$device_token": "tok-1", "plan": "pro"}}),
        ev(
            "$set",
            "user-1",
            10,
            **mobile,
            **{"$set": {"$device_push_subscription_my-app": "enc:AbCdEf=="}},
        ),
    ]
    deliver_events(sandbox, tmp_path / "data", events)
    person = sandbox.state.person("user-1")
    assert person is not None
    assert [(d["id"], d["platform"]) for d in person["devices"]] == [("tok-1", platform)]
    assert not [k for k in person["attributes"] if k.startswith("$device_push_subscription")]


# -- 11. dates nested in attribute objects and in event properties ------------------------------------
@pytest.mark.parametrize("api", APIS)
def test_nested_and_event_dates_are_converted(sandbox: SandboxServer, tmp_path: Path, api: str) -> None:
    events = [
        ev(
            "trial_started",
            "user-1",
            0,
            ends_at="2026-02-01T00:00:00Z",
            **{"$set": {"subscription": {"renews_at": "2026-03-01T00:00:00Z", "tier": "pro"}}},
        ),
    ]
    deliver_events(sandbox, tmp_path / "data", events, **_api(api))
    person = only(profiles(sandbox, pipelines=api == "pipelines"))
    assert person["attributes"]["subscription"] == {"renews_at": 1772323200, "tier": "pro"}
    if api == "v2":
        (event,) = sandbox.state.events()
        assert event["data"]["ends_at"] == 1769904000


def test_an_unsuppressed_person_comes_back_whole(
    cli: Cli, env: dict[str, str], tmp_path: Path, sandbox: SandboxServer
) -> None:
    """Suppression deletes the profile: after ``unsuppress`` the next event recreates it with the email."""
    first = write_jsonl(tmp_path / "a.jsonl", [ev("signed_up", "user-1", 0, **{"$set": {"email": "a@x.io"}})])
    assert cli("send", str(first), env=env).exit_code == 0
    assert cli("delete-person", "user-1", "--suppress", env=env).exit_code == 0
    assert cli("unsuppress", "user-1", env=env).exit_code == 0
    later = write_jsonl(tmp_path / "b.jsonl", [ev("clicked", "user-1", 10)])
    assert cli("send", str(later), env=env).exit_code == 0
    person = only(profiles(sandbox))
    assert person["id"] == "user-1" and person["email"] == "a@x.io" and person["events"] == ["clicked"]


@pytest.mark.parametrize("api", APIS)
def test_personless_events_before_the_person_exists_land_on_the_profile(
    sandbox: SandboxServer, tmp_path: Path, api: str
) -> None:
    """PostHog gives a personless event the person id the distinct_id's person gets later (a UUIDv5 of team and
    distinct_id): the backend's personless events of a user not seen yet belong to that user's profile."""
    backend = ev("invoice_paid", "user-1", 0, **{"$lib": "posthog-python", "$process_person_profile": False})
    later = ev("$set", "user-1", 10, **{"$lib": "posthog-python", "$set": {"plan": "pro"}})
    deliver_events(sandbox, tmp_path / "data", [backend], **_api(api))
    deliver_events(sandbox, tmp_path / "data", [later], **_api(api))
    person = only(profiles(sandbox, pipelines=api == "pipelines"))
    assert person["id"] == "user-1" and person["events"] == ["invoice_paid"]


@pytest.mark.parametrize("api", APIS)
def test_an_alias_of_an_identified_user_into_another_person_is_refused(
    sandbox: SandboxServer, tmp_path: Path, api: str
) -> None:
    """PostHog merges ``alias``'s person into the distinct_id's and refuses when the ``alias`` side is already
    identified (``cannot_merge_already_identified``): posthog-python ``alias(previous_id, distinct_id)`` puts the
    previous id in the event's distinct_id, so aliasing an identified user into a known CRM id merges nothing."""
    events = [
        ev("invoice_paid", "crm-1", 0, **{"$lib": "posthog-python"}),
        browser("$identify", "user-1", 10, "dev-1", True, **{"$anon_distinct_id": "dev-1"}),
        ev("$create_alias", "crm-1", 20, alias="user-1", **{"$lib": "posthog-python"}),
        ev("refunded", "crm-1", 30, **{"$lib": "posthog-python"}),
    ]
    deliver_events(sandbox, tmp_path / "data", events, **_api(api))
    found = {p["id"]: p for p in profiles(sandbox, pipelines=api == "pipelines")}
    assert set(found) == {"crm-1", "user-1"}, found
    assert found["crm-1"]["events"] == ["invoice_paid", "refunded"]
    assert found["user-1"]["events"] == ["$identify"]


@pytest.mark.parametrize("api", APIS)
def test_a_merge_keeps_the_moved_emails_own_time(sandbox: SandboxServer, tmp_path: Path, api: str) -> None:
    """The email a merge moves to the surviving profile was written when it was set, not at the merge: a late
    write newer than that (a backend's offline queue) still changes it."""
    events = [
        ev("$set", "legacy-1", 0, **{"$lib": "posthog-python", "$set": {"email": "old@x.io"}}),
        browser("$identify", "user-1", 10, "dev-1", True, **{"$anon_distinct_id": "dev-1"}),
        browser("$create_alias", "user-1", 30, "dev-1", True, alias="legacy-1"),
        ev("$set", "legacy-1", 20, **{"$lib": "posthog-python", "$set": {"email": "new@x.io"}}),
    ]
    deliver_events(sandbox, tmp_path / "data", events[:3], **_api(api))
    deliver_events(sandbox, tmp_path / "data", events[3:], **_api(api))
    person = only(profiles(sandbox, pipelines=api == "pipelines"))
    assert (person["id"], person["email"]) == ("user-1", "new@x.io")


@pytest.mark.parametrize("api", APIS)
def test_a_backend_alias_attaches_the_visitors_events_at_once(sandbox: SandboxServer, tmp_path: Path, api: str) -> None:
    """posthog-python ``alias(previous_id=<the visitor's anonymous id>, distinct_id=<a known user>)``: the visitor's
    anonymous events belong to the user from then on, whether or not the user sends another event."""
    events = [
        browser("clicked", "dev-1", 0, "dev-1", False),
        ev("signed_up", "user-1", 10, **{"$lib": "posthog-python"}),
        ev("$create_alias", "dev-1", 20, alias="user-1", **{"$lib": "posthog-python"}),
    ]
    deliver_events(sandbox, tmp_path / "data", events, **_api(api))
    person = only(profiles(sandbox, pipelines=api == "pipelines"))
    assert person["id"] == "user-1" and person["events"] == ["clicked", "signed_up"]
    anonymous = sandbox.pipelines.anonymous_events() if api == "pipelines" else sandbox.state.anonymous_events()
    assert anonymous == []


@pytest.mark.parametrize("api", APIS)
def test_an_alias_of_a_personless_id_to_an_identified_user_joins_them(
    sandbox: SandboxServer, tmp_path: Path, api: str
) -> None:
    """A distinct_id seen only in personless events has no PostHog person: aliasing it to an identified user is no
    merge PostHog refuses; the id joins the user, with its events."""
    events = [
        browser("$identify", "user-1", 0, "dev-1", True, **{"$anon_distinct_id": "dev-1"}),
        ev("invoice_paid", "crm-1", 10, **{"$lib": "posthog-python", "$process_person_profile": False}),
        ev("$create_alias", "crm-1", 20, alias="user-1", **{"$lib": "posthog-python"}),
    ]
    deliver_events(sandbox, tmp_path / "data", events, **_api(api))
    person = only(profiles(sandbox, pipelines=api == "pipelines"))
    assert person["id"] == "user-1" and person["events"] == ["$identify", "invoice_paid"]
