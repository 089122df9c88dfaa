"""``map_person`` as data: a PostHog person plus remembered states -> operations and states (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from posthog_customerio.events import PostHogEvent
from posthog_customerio.mapping import MappingConfig, PersonSnapshot, map_event, map_person
from posthog_customerio.mapping.book import Book, Mapped
from posthog_customerio.mapping.persons import looks_generated, primary_distinct_id
from posthog_customerio.sources import parse_event
from posthog_customerio.state import PersonState

from ..helpers import ev

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DEVICE = "0191aaaa-bbbb-7ccc-8ddd-eeeeeeeeeeee"


def person(*distinct_ids: str, identified: bool | None = True, at: datetime = T0, **properties: Any) -> PersonSnapshot:
    return PersonSnapshot("p-1", distinct_ids, properties, at, identified)


def live(distinct_id: str, at: datetime = T0, **values: Any) -> PostHogEvent:
    """A live ``$set`` of ``values`` on ``distinct_id`` at ``at``."""
    return parse_event(ev("$set", distinct_id, top={"$set": values, "timestamp": at.isoformat()}))


def apply(states: dict[str, PersonState], mapped: Mapped) -> dict[str, PersonState]:
    return {**states, **mapped.states}


def test_an_identified_person_becomes_one_identify_by_its_user_id_and_every_distinct_id_is_linked() -> None:
    mapped = map_person(person(DEVICE, "user-1", email="a@example.com", plan="pro"), {}, MappingConfig())

    (identify,) = mapped.operations
    assert identify.payload["identifiers"] == {"id": "user-1"}
    assert identify.payload["attributes"] == {"email": "a@example.com", "plan": "pro"}
    assert identify.payload["timestamp"] == int(T0.timestamp())
    assert mapped.states[DEVICE].merged_into == "user-1"


def test_the_same_person_again_maps_to_nothing_and_a_change_to_only_what_changed() -> None:
    config = MappingConfig()
    states = apply({}, map_person(person("user-1", plan="pro", seats=3), {}, config))

    again = map_person(person("user-1", plan="pro", seats=3, at=T0 + timedelta(hours=1)), states, config)
    assert (again.operations, again.skipped, again.states) == ([], "unchanged", {})

    changed = map_person(person("user-1", plan="team", seats=3, at=T0 + timedelta(hours=1)), states, config)
    (identify,) = changed.operations
    assert identify.payload["attributes"] == {"plan": "team"}


def test_a_newer_live_write_is_left_out_and_the_identify_is_no_older_than_the_profiles_last_write() -> None:
    config = MappingConfig()
    later = T0 + timedelta(minutes=5)
    states = apply({}, map_event(live("user-1", later, plan="live"), {}, config))

    mapped = map_person(person("user-1", plan="stale", company="Acme"), states, config)

    (identify,) = mapped.operations
    assert identify.payload["attributes"] == {"company": "Acme"}
    assert identify.payload["timestamp"] == int(later.timestamp())


def test_a_distinct_id_with_its_own_profile_is_merged_into_the_primary() -> None:
    config = MappingConfig()
    states = apply({}, map_event(live("old-id", plan="free"), {}, config))
    states = apply(states, map_event(live("user-1", plan="pro"), states, config))

    mapped = map_person(person("old-id", "user-1", plan="pro"), states, config)

    merges = [op.payload for op in mapped.operations if op.action == "merge"]
    assert merges == [{"type": "person", "action": "merge", "primary": {"id": "user-1"}, "secondary": {"id": "old-id"}}]
    assert mapped.states["old-id"].merged_into == "user-1"


def test_a_person_posthog_never_identified_is_not_a_profile_unless_anonymous_events_person() -> None:
    anonymous = person(DEVICE, identified=False, plan="free")

    skipped = map_person(anonymous, {}, MappingConfig())
    assert (skipped.operations, skipped.skipped, skipped.states) == ([], "anonymous_person", {})

    made = map_person(anonymous, {}, MappingConfig(anonymous_events="person"))
    assert [op.action for op in made.operations] == ["identify"]


def test_send_events_from_anonymous_users_filters_persons_as_it_filters_events() -> None:
    config = MappingConfig(anonymous_mode="with_email")

    assert map_person(person("user-1", plan="pro"), {}, config).skipped == "anonymous_user"
    assert [op.action for op in map_person(person("user-1", email="a@example.com"), {}, config).operations] == [
        "identify"
    ]


def test_identify_by_email_addresses_the_profile_by_email() -> None:
    mapped = map_person(person("user-1", email="a@example.com"), {}, MappingConfig(identify_by_email=True))

    assert mapped.operations[0].payload["identifiers"] == {"email": "a@example.com"}


def test_a_deleted_person_is_deleted_when_we_made_it_and_left_alone_when_we_never_did() -> None:
    config = MappingConfig()
    states = apply({}, map_person(person("user-1", plan="pro"), {}, config))
    deleted = PersonSnapshot("p-1", ("user-1",), {}, T0, True, deleted=True)

    mapped = map_person(deleted, states, config)
    assert [op.action for op in mapped.operations] == ["delete"]
    states = apply(states, mapped)

    again = map_person(deleted, states, config)
    assert (again.operations, again.skipped) == ([], "deleted_unknown")


def test_a_suppressed_person_is_suppressed_once() -> None:
    config = MappingConfig(suppress_on_delete=True)
    states = apply({}, map_person(person("user-1", plan="pro"), {}, config))
    deleted = PersonSnapshot("p-1", ("user-1",), {}, T0, True, deleted=True)

    mapped = map_person(deleted, states, config)
    assert [op.action for op in mapped.operations] == ["suppress"]
    assert map_person(deleted, apply(states, mapped), config).skipped == "unchanged"


def test_the_primary_is_the_profile_live_events_made_else_email_else_not_generated() -> None:
    config = MappingConfig()
    known = apply({}, map_event(live("anon-x", a=1), {}, config))

    assert primary_distinct_id(person("anon-x", "user-1"), Book(known, Mapped())) == "anon-x"
    assert primary_distinct_id(person(DEVICE, "user-1", "b@example.com"), Book({}, Mapped())) == "b@example.com"
    assert primary_distinct_id(person("user-1", DEVICE), Book({}, Mapped())) == "user-1"
    assert looks_generated(DEVICE) and looks_generated("18d8a3c1c1a1ff-0a1b2c3d4e5f6-4c2e0f2a-1fa400-18d8a3c1c1b2a8")
    assert not looks_generated("user-1")


def test_is_identified_unknown_is_inferred_from_what_the_person_shows() -> None:
    config = MappingConfig()

    assert map_person(person(DEVICE, identified=None), {}, config).skipped == "anonymous_person"
    assert map_person(person("user-1", identified=None), {}, config).operations
    assert map_person(person(DEVICE, identified=None, email="c@example.com"), {}, config).operations
