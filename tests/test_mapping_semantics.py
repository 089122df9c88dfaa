"""Mapping rules beyond the seed: identity merges, anonymous events, $unset, groups,
deletes, devices, limits, property filters and renames (pure, table-driven)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from posthog_customerio.mapping import MappingConfig, Mapped, map_event
from posthog_customerio.sources import parse_event
from posthog_customerio.state import PersonState

T0 = 1_704_067_200
PERSON = MappingConfig(anonymous_events="person")
ANON = MappingConfig(anonymous_events="anonymous")


def ev(name: str, distinct_id: str, t: int = 0, **props: Any) -> dict[str, Any]:
    return {"event": name, "distinct_id": distinct_id, "timestamp": T0 + t, "uuid": None, "properties": props}


def run(events: list[dict[str, Any]], config: MappingConfig,
        states: dict[str, PersonState] | None = None) -> tuple[list[Mapped], dict[str, PersonState]]:
    states = dict(states or {})
    results = []
    for raw in events:
        mapped = map_event(parse_event(raw), states, config)
        states.update(mapped.states)
        results.append(mapped)
    return results, states


def shapes(mapped: Mapped) -> list[tuple[str, str, str]]:
    """(person_key, type, action) per operation."""
    return [(op.person_key, op.payload["type"], op.payload["action"]) for op in mapped.operations]


BROWSE = ev("$pageview", "anon-1", 0, **{"$current_url": "https://x.io/", "$is_identified": False})
IDENTIFY = ev("$identify", "user-1", 10, **{"$anon_distinct_id": "anon-1", "$set": {"email": "u@x.io"}})


# -- identity ---------------------------------------------------------------------------
def test_identify_merges_the_anonymous_person_into_the_identified_one() -> None:
    (_, merged), states = run([BROWSE, IDENTIFY], PERSON)
    assert shapes(merged) == [("user-1", "person", "identify"), ("user-1", "person", "merge"), ("user-1", "person", "event")]
    merge = merged.operations[1]
    assert merge.payload["primary"] == {"id": "user-1"} and merge.payload["secondary"] == {"id": "anon-1"}
    assert merge.after == ("anon-1",)  # waits for the anonymous person's queued operations
    assert states["anon-1"].merged_into == "user-1" and not states["anon-1"].created
    assert states["user-1"].identified


def test_later_events_of_a_merged_id_go_to_the_primary() -> None:
    (*_, late), _ = run([BROWSE, IDENTIFY, ev("clicked", "anon-1", 20)], PERSON)
    assert shapes(late) == [("user-1", "person", "event")]
    assert late.operations[0].payload["identifiers"] == {"id": "user-1"}


def test_an_already_identified_person_is_not_merged_by_identify() -> None:
    first = ev("$identify", "anon-1", 0, **{"$anon_distinct_id": "x"})  # anon-1 is itself identified
    (_, _, merged), states = run([first, ev("a", "anon-1", 1), IDENTIFY], PERSON)
    assert [s[2] for s in shapes(merged)] == ["identify", "event"]
    assert merged.notes["merge_blocked_already_identified"] == 1
    assert states["anon-1"].merged_into is None


def test_merge_dangerously_merges_identified_people_too() -> None:
    known = ev("$identify", "old-1", 0, **{"$anon_distinct_id": "y"})
    user = ev("$identify", "user-1", 1, **{"$anon_distinct_id": "z"})
    dangerous = ev("$merge_dangerously", "user-1", 5, alias="old-1")
    (_, _, merged), _ = run([known, user, dangerous], PERSON)
    assert shapes(merged) == [("user-1", "person", "merge")]  # both identified: a tie, the distinct_id survives
    assert merged.operations[0].payload["secondary"] == {"id": "old-1"}
    assert merged.skipped == "alias"  # merged, not forwarded as an event


def test_create_alias_merges_the_alias_into_the_distinct_id() -> None:
    (_, _, merged), states = run([ev("a", "user-1", 0), ev("b", "alias-1", 1), ev("$create_alias", "user-1", 2, alias="alias-1")], PERSON)
    assert shapes(merged) == [("user-1", "person", "merge")]
    assert merged.operations[0].payload["secondary"] == {"id": "alias-1"}
    assert states["alias-1"].merged_into == "user-1"


def test_merge_people_false_keeps_people_apart() -> None:
    (_, merged), states = run([BROWSE, IDENTIFY], MappingConfig(anonymous_events="person", merge_people=False))
    assert "merge" not in [s[2] for s in shapes(merged)]
    assert states["anon-1"].merged_into is None


@pytest.mark.parametrize("illegal", ["anonymous", "null", "undefined", "0", "None"])
def test_illegal_distinct_ids_are_never_merged(illegal: str) -> None:
    (_, merged), _ = run([ev("a", illegal, 0), ev("$identify", "user-1", 1, **{"$anon_distinct_id": illegal})], PERSON)
    assert "merge" not in [s[2] for s in shapes(merged)] and merged.notes["merge_illegal_id"] == 1


def test_state_merge_carries_email_and_attribute_digests() -> None:
    anon_set = ev("x", "anon-1", 0, **{"$set": {"plan": "free", "email": "a@x.io"}})
    (_, merged), states = run([anon_set, ev("$identify", "user-1", 1, **{"$anon_distinct_id": "anon-1"})], PERSON)
    user = states["user-1"]
    assert user.email == "a@x.io" and "plan" in user.digests
    # anon-1's profile holds the email until the merge deletes it: user-1 is created without
    # it, the merge follows, and only then does user-1 get the email (plan comes with the merge)
    assert shapes(merged) == [("user-1", "person", "identify"), ("user-1", "person", "merge"),
                              ("user-1", "person", "identify"), ("user-1", "person", "event")]
    first, merge, then, _ = (op.payload for op in merged.operations)
    assert "attributes" not in first and merge["secondary"] == {"id": "anon-1"}
    assert then["attributes"] == {"email": "a@x.io"} and merged.operations[2].after == ("anon-1",)


# -- anonymous events -----------------------------------------------------------------------
def test_anonymous_visitors_become_anonymous_events_attached_by_the_identify() -> None:
    (browse, identified), states = run([BROWSE, IDENTIFY], ANON)
    (anonymous,) = browse.operations
    assert anonymous.payload["type"] == "anonymous" and anonymous.payload["anonymous_id"] == "anon-1"
    assert anonymous.payload["action"] == "page"
    identify, event = identified.operations
    assert identify.payload["attributes"]["anonymous_id"] == "anon-1"
    assert identify.after == ("anon-1",)  # only after the anonymous events were accepted
    assert event.payload["action"] == "event"
    assert not states["anon-1"].created  # no Customer.io person (billing) for the visitor


def test_anonymous_attributes_are_kept_and_sent_on_identify() -> None:
    browse = ev("$pageview", "anon-1", 0, **{"$is_identified": False, "$set_once": {"first_referrer": "ad"}})
    (_, identified), _ = run([browse, IDENTIFY], ANON)
    assert identified.operations[0].payload["attributes"]["first_referrer"] == "ad"


def test_events_without_anonymity_signals_still_create_people() -> None:
    """Server-side SDK events carry no $is_identified: they are known users."""
    (mapped,), _ = run([ev("purchase", "user-9", 0, amount=3)], ANON)
    assert [s[1:] for s in shapes(mapped)] == [("person", "identify"), ("person", "event")]


def test_device_id_equal_to_distinct_id_means_anonymous() -> None:
    (mapped,), _ = run([ev("a", "dev-1", 0, **{"$device_id": "dev-1"})], ANON)
    assert shapes(mapped) == [("dev-1", "anonymous", "event")]


@pytest.mark.parametrize("config", [ANON, PERSON], ids=["anonymous", "person"])
def test_identify_first_then_the_late_anonymous_event_lands_on_the_same_person(config: MappingConfig) -> None:
    (_, late), _ = run([IDENTIFY, BROWSE], config)
    assert shapes(late) == [("user-1", "person", "page")]


# -- $unset, $set_once -------------------------------------------------------------------------
def test_unset_clears_the_attribute_and_a_later_set_sends_it_again() -> None:
    events = [ev("a", "u", 0, **{"$set": {"plan": "pro"}}), ev("b", "u", 1, **{"$unset": ["plan"]}),
              ev("c", "u", 2, **{"$set": {"plan": "pro"}})]
    (_, unset, again), _ = run(events, PERSON)
    assert unset.operations[0].payload["attributes"] == {"plan": ""}
    assert again.operations[0].payload["attributes"] == {"plan": "pro"}


# -- groups --------------------------------------------------------------------------------------
GROUPS = MappingConfig(anonymous_events="person", group_type_map={"company": "1"})


def test_groupidentify_becomes_an_object_identify() -> None:
    group = ev("$groupidentify", "u", 0, **{"$group_type": "company", "$group_key": "acme", "$group_set": {"name": "Acme"}})
    (mapped,), _ = run([group], GROUPS)
    (op,) = mapped.operations
    assert op.payload == {"type": "object", "identifiers": {"object_type_id": "1", "object_id": "acme"},
                          "action": "identify", "attributes": {"name": "Acme"}}
    assert mapped.skipped == "group_identify"


def test_unmapped_group_types_are_skipped_and_counted() -> None:
    group = ev("$groupidentify", "u", 0, **{"$group_type": "team", "$group_key": "t1"})
    (mapped,), _ = run([group], GROUPS)
    assert mapped.operations == [] and mapped.notes["unmapped_group_type"] == 1


def test_group_membership_adds_the_relationship_once() -> None:
    events = [ev("a", "u", 0, **{"$groups": {"company": "acme", "team": "t1"}}), ev("b", "u", 1, **{"$groups": {"company": "acme"}})]
    (first, second), _ = run(events, GROUPS)
    relationship = [op for op in first.operations if op.payload["action"] == "add_relationships"]
    assert len(relationship) == 1
    assert relationship[0].payload["cio_relationships"] == [{"identifiers": {"object_type_id": "1", "object_id": "acme"}}]
    assert relationship[0].after and first.notes["unmapped_group_type"] == 1
    assert [op.payload["action"] for op in second.operations] == ["event"]


# -- deletes and devices ---------------------------------------------------------------------------
def test_delete_person_deletes_and_forgets() -> None:
    (_, deleted, again), states = run([ev("a", "u", 0), ev("$delete_person", "u", 1), ev("b", "u", 2)], PERSON)
    assert shapes(deleted) == [("u", "person", "delete")]
    assert [s[2] for s in shapes(again)] == ["identify", "event"]  # recreated by a later event


def test_suppress_on_delete_suppresses_instead() -> None:
    (_, suppressed), _ = run([ev("a", "u", 0), ev("$delete_person", "u", 1)], MappingConfig(anonymous_events="person", suppress_on_delete=True))
    assert shapes(suppressed) == [("u", "person", "suppress")]


def test_deleting_an_unknown_person_still_sends_the_delete() -> None:
    """Profiles made by the old plugin or another data dir exist without our state knowing."""
    (mapped,), _ = run([ev("$delete_person", "nobody", 0)], PERSON)
    assert shapes(mapped) == [("nobody", "person", "delete")] and mapped.notes["delete_unknown_person"] == 1


def test_push_tokens_add_a_device_once_with_the_platform() -> None:
    events = [ev("a", "u", 0, **{"$os": "iOS", "$set": {"$device_token": "tok-1", "plan": "x"}}),
              ev("b", "u", 1, **{"$os": "iOS", "$set": {"$device_token": "tok-1"}})]
    (first, second), _ = run(events, PERSON)
    device = [op.payload for op in first.operations if op.payload["action"] == "add_device"]
    assert device == [{"type": "person", "identifiers": {"id": "u"}, "action": "add_device",
                       "device": {"token": "tok-1", "platform": "ios", "last_used": T0}}]
    assert "$device_token" not in first.operations[0].payload["attributes"]  # a token is not a profile attribute
    assert [op.payload["action"] for op in second.operations] == ["event"]


def test_tokens_without_a_known_platform_are_not_sent() -> None:
    (mapped,), _ = run([ev("a", "u", 0, **{"$set": {"$device_token": "tok"}})], PERSON)
    assert "add_device" not in [op.payload["action"] for op in mapped.operations]


# -- limits ----------------------------------------------------------------------------------------------
def test_long_attribute_names_and_values_are_truncated_and_counted() -> None:
    attributes = {"n" * 200: "v", "bio": "é" * 700, "nested": {"k": "x" * 2000}}
    (mapped,), _ = run([ev("a", "u", 0, **{"$set": attributes})], PERSON)
    sent = mapped.operations[0].payload["attributes"]
    assert len(("n" * 150).encode()) == 150 and "n" * 150 in sent
    assert len(sent["bio"].encode()) <= 1000 and isinstance(sent["nested"], str) and len(sent["nested"].encode()) <= 1000
    assert mapped.notes["limits_truncated"] == 3


def test_dead_letter_mode_sends_values_as_they_are() -> None:
    config = MappingConfig(anonymous_events="person", truncate=False)
    (mapped,), _ = run([ev("a" * 120, "u", 0, **{"$set": {"bio": "x" * 1500}})], config)
    assert mapped.operations[0].payload["attributes"]["bio"] == "x" * 1500
    assert mapped.operations[1].payload["name"] == "a" * 120


def test_more_than_300_attributes_are_split_across_identifies() -> None:
    attributes = {f"attr_{i}": i for i in range(650)}
    (mapped,), _ = run([ev("a", "u", 0, **{"$set": attributes})], PERSON)
    identifies = [op.payload for op in mapped.operations if op.payload["action"] == "identify"]
    assert [len(p["attributes"]) for p in identifies] == [300, 300, 50]
    assert {k for p in identifies for k in p["attributes"]} == set(attributes)


def test_event_name_and_data_fit_the_limits() -> None:
    data = {"small": 1, "chain": "x" * 40_000, "other": "y" * 10_000}
    (mapped,), _ = run([ev("n" * 150, "u", 0, **data)], PERSON)
    event = mapped.operations[-1].payload
    assert event["name"] == "n" * 100
    assert event["attributes"]["_truncated_properties"] == ["chain"]
    assert len(json.dumps(event, separators=(",", ":")).encode()) <= 32_000


def test_ids_are_never_truncated() -> None:
    long_id = "i" * 200
    (mapped,), _ = run([ev("a", long_id, 0)], PERSON)
    assert mapped.operations[0].payload["identifiers"] == {"id": long_id}


# -- property control and renames ---------------------------------------------------------------------
def test_properties_to_exclude_and_include() -> None:
    config = MappingConfig(anonymous_events="person", properties_to_exclude=("$geoip_*", "$ip"))
    raw = ev("a", "u", 0, **{"$geoip_city_name": "Oslo", "$ip": "1.2.3.4", "keep": 1,
                             "$set": {"$geoip_country_code": "NO", "plan": "x", "email": "e@x.io"}})
    (mapped,), _ = run([raw], config)
    identify, event = mapped.operations
    assert identify.payload["attributes"] == {"plan": "x", "email": "e@x.io"}
    assert event.payload["attributes"] == {"keep": 1}
    only = MappingConfig(anonymous_events="person", properties_to_include=("plan", "keep"))
    (mapped,), _ = run([raw], only)
    assert mapped.operations[0].payload["attributes"] == {"plan": "x", "email": "e@x.io"}  # email always kept
    assert mapped.operations[1].payload["attributes"] == {"keep": 1}


def test_event_name_map_renames_events_but_pageviews_stay_pages() -> None:
    config = MappingConfig(anonymous_events="person", event_name_map={"signed_up": "Signed Up", "$pageview": "Viewed"})
    (first, second), _ = run([ev("signed_up", "u", 0), ev("$pageview", "u", 1, **{"$current_url": "https://x.io/"})], config)
    assert first.operations[-1].payload["name"] == "Signed Up"
    assert second.operations[-1].payload["action"] == "page" and second.operations[-1].payload["name"] == "https://x.io/"
