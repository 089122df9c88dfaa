"""A realistic PostHog session end to end, in both ANONYMOUS_EVENTS modes, against the sandbox.

anonymous browsing -> sign-up -> identify -> group -> purchase -> second device
-> alias -> delete; and an anonymous event and its $identify in either order.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import httpx
import pytest

from posthog_customerio.runtime import Runtime
from posthog_customerio.sandbox import SandboxServer
from posthog_customerio.sources import parse_event

from .. import helpers
from ..conftest import API_KEY, SITE_ID
from ..helpers import make_settings

pytestmark = pytest.mark.e2e
T0 = 1_767_600_000


#: an event at T0 + t with a uuid5 of name/id/time: ``ev(name, distinct_id, t, **properties)``
ev = functools.partial(helpers.ev, t0=T0)


def anon(name: str, distinct_id: str, t: int, **props: Any) -> dict[str, Any]:
    return ev(name, distinct_id, t, **{"$is_identified": False, "$device_id": distinct_id, **props})


SESSION = [
    anon("$pageview", "device-1", 0, **{"$current_url": "https://x.io/", "$set_once": {"first_referrer": "ad"}}),
    anon("$pageview", "device-1", 10, **{"$current_url": "https://x.io/pricing"}),
    anon("signed_up", "device-1", 20, plan="pro"),
    ev(
        "$identify",
        "user-1",
        30,
        **{
            "$anon_distinct_id": "device-1",
            "$is_identified": True,
            "$set": {"email": "ann@example.com", "name": "Ann"},
        },
    ),
    ev(
        "$groupidentify",
        "user-1",
        40,
        **{"$group_type": "company", "$group_key": "acme", "$group_set": {"name": "Acme"}},
    ),
    ev("purchase", "user-1", 50, amount=99, **{"$groups": {"company": "acme"}, "$is_identified": True}),
    anon("$screen", "device-2", 60, **{"$screen_name": "Home"}),
    ev("$identify", "user-1", 70, **{"$anon_distinct_id": "device-2", "$is_identified": True}),
    ev("$create_alias", "user-1", 80, alias="legacy-42"),
    ev("clicked", "legacy-42", 90, button="x"),
]


def deliver(sandbox: SandboxServer, tmp_path: Path, events: list[dict[str, Any]], **overrides: Any) -> None:
    settings = make_settings(
        tmp_path / "data", sandbox, **{"customerio_max_rps": 10_000, "group_type_map": "company=1", **overrides}
    )
    with Runtime(settings) as runtime:
        for raw in events:  # one at a time, like a webhook stream
            runtime.ingestor.ingest([parse_event(raw)])
        deliverer = runtime.deliverer()
        deliverer.start()
        assert deliverer.wait_until_empty(30)
        deliverer.stop()
        assert runtime.outbox.dead_letter_count() == 0, [d.reason for d in runtime.outbox.dead_letters()]


def events_of(sandbox: SandboxServer, identifier: str) -> list[tuple[str, str]]:
    person = sandbox.state.person(identifier)
    return sorted((e["type"], e["name"]) for e in person["events"])


EXPECTED_EVENTS = sorted(
    [
        ("page", "https://x.io/"),
        ("page", "https://x.io/pricing"),
        ("event", "signed_up"),
        ("event", "$identify"),
        ("event", "purchase"),
        ("screen", "Home"),
        ("event", "$identify"),
        ("event", "clicked"),
    ]
)


@pytest.mark.parametrize("mode", ["anonymous", "person"])
def test_a_realistic_session_ends_as_one_person_with_everything(
    sandbox: SandboxServer, tmp_path: Path, mode: str
) -> None:
    deliver(sandbox, tmp_path, SESSION, anonymous_events=mode)
    people = sandbox.state.people()
    assert [(p["id"], p["email"]) for p in people] == [("user-1", "ann@example.com")]
    person = sandbox.state.person("user-1")
    assert person["attributes"]["name"] == "Ann" and person["attributes"]["first_referrer"] == "ad"
    assert events_of(sandbox, "user-1") == EXPECTED_EVENTS
    assert sandbox.state.anonymous_events() == []
    (company,) = sandbox.state.objects()
    assert company["object_type_id"] == "1" and company["object_id"] == "acme"
    assert company["attributes"] == {"name": "Acme"}
    assert [r["person"] for r in company["relationships"]] == [person["cio_id"]]
    if mode == "anonymous":
        assert sandbox.state.stats()["requests_by_status"].get("200", 0) > 0
        assert not any("merge" in str(r["body"]) for r in sandbox.state.requests())  # nobody to merge
        # delivered after everything was queued: the visitor's anonymous events were adopted by the
        # identify and sent in batches, not one v1 request each
        assert not [r for r in sandbox.state.requests() if r["path"] == "/api/v1/events"]
    else:
        merges = [
            op
            for r in sandbox.state.requests()
            if isinstance(r["body"], dict)
            for op in r["body"].get("batch", [])
            if op.get("action") == "merge"
        ]
        # legacy-42 had no Customer.io profile yet when aliased: its later event goes straight to user-1
        assert [m["secondary"] for m in merges] == [{"id": "device-1"}, {"id": "device-2"}]
    # and the PostHog person is deleted
    deliver(sandbox, tmp_path, [ev("$delete_person", "user-1", 100)], anonymous_events=mode)
    assert sandbox.state.people() == []


@pytest.mark.parametrize("mode", ["anonymous", "person"])
def test_anonymous_event_and_identify_in_either_order_give_the_same_result(
    sandbox: SandboxServer, tmp_path: Path, mode: str
) -> None:
    browse = anon("$pageview", "device-9", 0, **{"$current_url": "https://x.io/a"})
    identify = ev("$identify", "user-9", 5, **{"$anon_distinct_id": "device-9", "$set": {"email": "n@example.com"}})
    results = []
    for order, events in (("anon first", [browse, identify]), ("identify first", [identify, browse])):
        sandbox.state.reset()
        deliver(sandbox, tmp_path / order, events, anonymous_events=mode)
        people = [(p["id"], p["email"], p["event_count"]) for p in sandbox.state.people()]
        results.append((people, events_of(sandbox, "user-9"), len(sandbox.state.anonymous_events())))
    assert results[0] == results[1]
    assert results[0] == ([("user-9", "n@example.com", 2)], [("event", "$identify"), ("page", "https://x.io/a")], 0)


def test_identify_by_email_session_keeps_one_profile(sandbox: SandboxServer, tmp_path: Path) -> None:
    deliver(sandbox, tmp_path, SESSION, anonymous_events="anonymous", identify_by_email=True)
    (person,) = sandbox.state.people()
    assert person["email"] == "ann@example.com"
    assert events_of(sandbox, "ann@example.com") == EXPECTED_EVENTS


def test_delete_person_command(cli, env: dict[str, str], sandbox: SandboxServer, tmp_path: Path) -> None:
    from ..conftest import write_jsonl

    path = write_jsonl(tmp_path / "e.jsonl", [ev("a", "gone-1", 0), ev("b", "stays-1", 1)])
    assert cli("send", str(path), env=env).exit_code == 0
    result = cli("delete-person", "gone-1", env=env)
    assert result.exit_code == 0 and "gone-1: deleted" in result.output
    assert [p["id"] for p in sandbox.state.people()] == ["stays-1"]
    unknown = cli("delete-person", "nobody", env=env)
    assert unknown.exit_code == 0 and "sending the delete anyway" in unknown.output
    assert "nobody: deleted in Customer.io (sent delete by id nobody)" in unknown.output
    suppressed = cli("send", str(path), env=env)
    assert suppressed.exit_code == 0
    assert "suppressed" in cli("delete-person", "gone-1", "--suppress", env=env).output
    # Customer.io deletes a suppressed profile and blocks its identifier
    assert sandbox.state.person("gone-1") is None
    assert {"id": "gone-1"} in sandbox.state.suppressions()


# -- issue 9: identity by identity, merge with an email, deletes that always go out -----------
def test_merge_with_the_email_on_the_visitor_ends_as_one_profile(sandbox: SandboxServer, tmp_path: Path) -> None:
    """ANONYMOUS_EVENTS=person: the visitor's profile holds the email when the identify merges it.

    Customer.io refuses to give that email to the primary while the visitor still has it; the
    merge must come first, then the email. Before the fix: two profiles, the merge dead-lettered.
    """
    events = [
        anon("$pageview", "device-5", 0, **{"$current_url": "https://x.io/"}),
        anon("subscribed", "device-5", 10, **{"$set": {"email": "eve@example.com", "plan": "free"}}),
        ev(
            "$identify",
            "user-5",
            20,
            **{"$anon_distinct_id": "device-5", "$is_identified": True, "$set": {"name": "Eve"}},
        ),
        ev("upgraded", "user-5", 30, plan="pro"),
    ]
    deliver(sandbox, tmp_path, events, anonymous_events="person")  # also asserts: no dead letters
    assert [(p["id"], p["email"]) for p in sandbox.state.people()] == [("user-5", "eve@example.com")]
    person = sandbox.state.person("user-5")
    assert person["attributes"]["plan"] == "free" and person["attributes"]["name"] == "Eve"
    assert sorted(name for _, name in events_of(sandbox, "user-5")) == sorted(
        ["https://x.io/", "subscribed", "$identify", "upgraded"]
    )
    assert sandbox.state.attribute_update_failures() == []


@pytest.mark.parametrize("sdk", ["posthog-js/node", "posthog-python"])
def test_alias_keeps_the_identified_users_profile_whatever_the_argument_order(
    sandbox: SandboxServer, tmp_path: Path, sdk: str
) -> None:
    """posthog-js/node: distinct_id=user, alias=other; posthog-python: distinct_id=previous id, alias=user.

    PostHog merges ``alias``'s person into the distinct_id's, refusing when the ``alias`` side is identified: the
    posthog-python order of an identified user and a known id keeps two people."""
    alias = ev("$create_alias", "user-7", 20, alias="legacy-7")
    if sdk == "posthog-python":  # alias(previous_id="legacy-7", distinct_id="user-7")
        alias = {**alias, "distinct_id": "legacy-7", "properties": {"distinct_id": "legacy-7", "alias": "user-7"}}
    events = [
        ev("browsed", "legacy-7", 0, page="a"),  # a profile made before the alias (server-side)
        ev("$identify", "user-7", 10, **{"$set": {"email": "max@example.com"}}),
        alias,
        ev("clicked", "legacy-7", 30, button="b"),  # a later event of the merged id
    ]
    deliver(sandbox, tmp_path, events, anonymous_events="person")
    if sdk == "posthog-python":  # PostHog refuses: alias's person (user-7) is identified, legacy-7's exists
        assert [(p["id"], p["email"]) for p in sandbox.state.people()] == [
            ("legacy-7", None),
            ("user-7", "max@example.com"),
        ]
        assert [name for _, name in events_of(sandbox, "legacy-7")] == ["browsed", "clicked"]
        return
    assert [(p["id"], p["email"]) for p in sandbox.state.people()] == [("user-7", "max@example.com")]
    assert [name for _, name in events_of(sandbox, "user-7")] == ["$identify", "browsed", "clicked"]


def test_delete_person_reaches_profiles_this_data_dir_never_created(
    cli, env: dict[str, str], sandbox: SandboxServer, tmp_path: Path
) -> None:
    """Profiles made by the old plugin (by email) or another data dir are deleted too."""
    from ..conftest import write_jsonl

    other = {**env, "POSTHOG_CUSTOMERIO_DATA_DIR": str(tmp_path / "other")}
    made_elsewhere = write_jsonl(tmp_path / "elsewhere.jsonl", [ev("a", "old-8", 0)])
    assert cli("send", str(made_elsewhere), env=other).exit_code == 0
    result = cli("delete-person", "old-8", env=env)  # this data dir never saw old-8
    assert result.exit_code == 0, result.output
    assert "old-8: deleted in Customer.io (sent delete by id old-8)" in result.output
    assert sandbox.state.people() == []
    # the old plugin identified by email; Customer.io gives that profile our id when ours carries the email
    plugin = httpx.put(
        f"{sandbox.url}/api/v1/customers/ida%40example.com", json={"plan": "legacy"}, auth=(SITE_ID, API_KEY)
    )
    assert plugin.status_code == 200
    ours = write_jsonl(tmp_path / "ours.jsonl", [ev("b", "ida-9", 1, **{"$set": {"email": "ida@example.com"}})])
    assert cli("send", str(ours), env=env).exit_code == 0
    assert [(p["id"], p["email"]) for p in sandbox.state.people()] == [("ida-9", "ida@example.com")]
    result = cli("delete-person", "ida-9", env=env)
    assert "sent delete by id ida-9, email ida@example.com" in result.output
    assert sandbox.state.people() == []


@pytest.mark.parametrize("api", ["v2", "v1"])
def test_unsuppress_command_sends_every_known_identifier(
    cli, env: dict[str, str], sandbox: SandboxServer, tmp_path: Path, api: str
) -> None:
    from ..conftest import write_jsonl

    env = {**env, "CUSTOMERIO_API": api}
    path = write_jsonl(tmp_path / "e.jsonl", [ev("a", "sup-1", 0, **{"$set": {"email": "sup@example.com"}})])
    assert cli("send", str(path), env=env).exit_code == 0
    suppressed = cli("delete-person", "sup-1", "--suppress", env=env)
    assert "sent suppress by id sup-1, email sup@example.com" in suppressed.output
    result = cli("unsuppress", "sup-1", env=env)
    assert result.exit_code == 0, result.output
    assert "sup-1: unsuppressed in Customer.io (sent unsuppress by id sup-1, email sup@example.com)" in result.output
    requests = sandbox.state.requests()
    if api == "v1":
        sent = [r["path"] for r in requests if r["path"].endswith("/unsuppress")]
        assert sent == ["/api/v1/customers/sup-1/unsuppress", "/api/v1/customers/sup%40example.com/unsuppress"]
    else:
        sent = [
            op["identifiers"]
            for r in requests
            if isinstance(r["body"], dict)
            for op in r["body"].get("batch", [r["body"]])
            if op.get("action") == "unsuppress"
        ]
        assert sent == [{"id": "sup-1"}, {"email": "sup@example.com"}]
