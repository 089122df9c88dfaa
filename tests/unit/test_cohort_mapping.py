"""``sync-cohorts`` as data: a cohort member (a PostHog person) plus remembered states -> the operation of its
target (a manual segment's add/remove, or a person attribute), and how the Track outputs turn consecutive
segment changes into ``add_customers``/``remove_customers`` requests (no I/O but a mocked transport)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from posthog_customerio.mapping import (
    CohortTarget,
    MappingConfig,
    PersonSnapshot,
    ensure_profile,
    map_event,
    member_joined,
    member_left,
)
from posthog_customerio.mapping.cohorts import attribute_name, slug
from posthog_customerio.operations import Claimed, Kind, encode_payload
from posthog_customerio.output.base import Outcome, SendResult, Unit
from posthog_customerio.output.track import TrackClient, TrackV1Output, TrackV2Output
from posthog_customerio.output.track_v1 import MAX_SEGMENT_IDS, segment_key, segment_request, v1_request
from posthog_customerio.settlement import Settlement
from posthog_customerio.sources import parse_event
from posthog_customerio.state import PersonState

from ..helpers import ev

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
AT = int(T0.timestamp()) + 3600  # the pass runs an hour after the snapshot
SEGMENT = CohortTarget("7", segment_id="12")
ATTRIBUTE = CohortTarget("7", attribute="posthog_cohort_power_users")
BY_ID, BY_EMAIL = MappingConfig(), MappingConfig(identify_by_email=True)


def member(*distinct_ids: str, identified: bool = True, **properties: Any) -> PersonSnapshot:
    return PersonSnapshot("p-1", distinct_ids, properties, T0, identified)


def known(distinct_id: str = "user-1", email: str | None = "ann@example.com", **stamps: int) -> dict[str, PersonState]:
    """States in which ``distinct_id`` has a profile (``email`` sent), its attributes written at ``stamps``."""
    person = PersonState(distinct_id, identified=True, email=email, created=True, email_sent=email)
    person.stamps = dict(stamps)
    return {distinct_id: person}


def merged(states: dict[str, PersonState], secondary: str, primary: str) -> dict[str, PersonState]:
    """``secondary`` merged into ``primary`` (PostHog linked them; the profile is the primary's)."""
    return {**states, secondary: PersonState(secondary, merged_into=primary)}


# -- names --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Power users (EU)", "power_users_eu"),
        ("Trial ends in < 3 days!", "trial_ends_in_3_days"),
        ("  Café Crème  ", "cafe_creme"),
        ("ALREADY_snake_Case", "already_snake_case"),
        ("--__--", ""),
        ("日本", ""),
    ],
)
def test_slug_is_ascii_letters_digits_and_underscores(name: str, expected: str) -> None:
    assert slug(name) == expected


def test_attribute_name_is_the_prefix_and_the_slug_or_the_cohort_id_when_the_name_has_nothing_left() -> None:
    assert attribute_name("posthog_cohort_", "7", "Power users (EU)") == "posthog_cohort_power_users_eu"
    assert attribute_name("ph_", "9", "Churn risk") == "ph_churn_risk"
    assert attribute_name("posthog_cohort_", "42", "日本") == "posthog_cohort_cohort_42"
    assert attribute_name("", "42", "") == "cohort_42"


def test_a_target_is_kept_under_its_segment_or_as_the_attribute() -> None:
    assert (SEGMENT.key, SEGMENT.describe()) == ("segment:12", "segment 12")
    assert (ATTRIBUTE.key, ATTRIBUTE.describe()) == ("attribute", "attribute posthog_cohort_power_users")
    assert CohortTarget("7", segment_id="14").key != SEGMENT.key  # one cohort into two segments: two memberships


# -- ensure_profile -----------------------------------------------------------------------------------------
def test_a_member_customerio_does_not_know_is_created_from_its_person_properties_as_sync_persons_would() -> None:
    mapped = ensure_profile(member("anon-1", "user-1", email="ann@example.com", plan="pro"), {}, BY_ID)

    (identify,) = mapped.operations
    assert (identify.kind, identify.person_key, mapped.skipped) == ("person", "user-1", None)
    assert identify.payload == {
        "type": "person",
        "identifiers": {"id": "user-1"},
        "action": "identify",
        "timestamp": int(T0.timestamp()),
        "attributes": {"email": "ann@example.com", "plan": "pro"},
    }
    assert mapped.states["user-1"].created and mapped.states["anon-1"].merged_into == "user-1"


def test_a_member_with_a_profile_needs_nothing_even_through_a_merged_distinct_id() -> None:
    states = known()
    assert ensure_profile(member("user-1", plan="pro"), states, BY_ID).skipped == "has_profile"
    via_merge = ensure_profile(member("anon-1", plan="pro"), merged(states, "anon-1", "user-1"), BY_ID)
    assert (via_merge.operations, via_merge.skipped) == ([], "has_profile")


def test_a_member_that_is_no_profile_is_not_created() -> None:
    mapped = ensure_profile(member("anon-3", identified=False), {}, BY_ID)
    assert (mapped.operations, mapped.skipped) == ([], "anonymous_person")
    assert ensure_profile(PersonSnapshot("p-9", ()), {}, BY_ID).operations == []


# -- member_joined / member_left: segments ----------------------------------------------------------------
def test_a_joining_member_is_one_segment_add_addressed_by_its_id() -> None:
    mapped, distinct_id = member_joined(member("anon-1", "user-1"), SEGMENT, known(), BY_ID, AT)

    (add,) = mapped.operations
    assert (add.kind, add.person_key, distinct_id) == ("segment", "user-1", "user-1")
    assert add.payload == {"type": "segment", "action": "add", "segment_id": "12", "identifiers": {"id": "user-1"}}
    assert mapped.states == {} and mapped.skipped is None  # a segment change remembers nothing per person


def test_with_identify_by_email_the_segment_change_goes_by_the_email_customerio_knows() -> None:
    mapped, _ = member_joined(member("user-1"), SEGMENT, known(), BY_EMAIL, AT)
    assert mapped.operations[0].payload["identifiers"] == {"email": "ann@example.com"}
    left = member_left("user-1", SEGMENT, known(), BY_EMAIL, AT)
    assert left.operations[0].payload["identifiers"] == {"email": "ann@example.com"}
    # no email sent yet: the profile is known by its id only
    no_email, _ = member_joined(member("user-1"), SEGMENT, known(email=None), BY_EMAIL, AT)
    assert no_email.operations[0].payload["identifiers"] == {"id": "user-1"}


def test_a_leaving_member_is_one_segment_remove() -> None:
    mapped = member_left("user-1", SEGMENT, known(), BY_ID, AT)

    (remove,) = mapped.operations
    assert (remove.kind, remove.person_key, remove.action) == ("segment", "user-1", "remove")
    assert remove.payload == {
        "type": "segment",
        "action": "remove",
        "segment_id": "12",
        "identifiers": {"id": "user-1"},
    }
    assert mapped.states == {}


def test_a_member_without_a_profile_is_skipped_not_added_and_one_whose_profile_is_gone_has_nothing_to_leave() -> None:
    for snapshot in (member("user-1"), member("anon-3", identified=False), PersonSnapshot("p-9", ("  ",))):
        mapped, distinct_id = member_joined(snapshot, SEGMENT, {}, BY_ID, AT)
        assert (mapped.operations, mapped.skipped, mapped.states, distinct_id) == ([], "no_profile", {}, None)
    left = member_left("user-1", ATTRIBUTE, {}, BY_ID, AT)
    assert (left.operations, left.skipped, left.states) == ([], "no_profile", {})


def test_a_merged_distinct_id_leads_to_the_primarys_profile() -> None:
    states = merged(known("user-1"), "anon-1", "user-1")

    joined, distinct_id = member_joined(member("anon-1"), SEGMENT, states, BY_ID, AT)
    left = member_left("anon-1", SEGMENT, states, BY_ID, AT)

    assert distinct_id == "user-1"  # what the membership is stored as: the profile's distinct_id
    assert joined.operations[0].payload["identifiers"] == {"id": "user-1"}
    assert joined.operations[0].person_key == "user-1"  # ordered after the person's own operations
    assert left.operations[0].payload["identifiers"] == {"id": "user-1"}


def test_the_member_created_first_is_the_profile_the_add_addresses() -> None:
    snapshot = member("anon-1", "user-1", email="ann@example.com")
    created = ensure_profile(snapshot, {}, BY_EMAIL)

    mapped, distinct_id = member_joined(snapshot, SEGMENT, created.states, BY_EMAIL, AT)

    assert distinct_id == "user-1" == created.operations[0].person_key
    assert mapped.operations[0].payload["identifiers"] == created.operations[0].payload["identifiers"]


# -- member_joined / member_left: attributes --------------------------------------------------------------
def test_a_joining_member_gets_the_attribute_true_stamped_no_older_than_the_profiles_newest_write() -> None:
    mapped, distinct_id = member_joined(member("user-1"), ATTRIBUTE, known(plan=AT + 50, email=AT - 10), BY_ID, AT)

    (identify,) = mapped.operations
    assert (identify.kind, identify.person_key, distinct_id) == ("person", "user-1", "user-1")
    assert identify.payload == {
        "type": "person",
        "identifiers": {"id": "user-1"},
        "action": "identify",
        "timestamp": AT + 50,  # Customer.io drops a write older than the profile's last one
        "attributes": {"posthog_cohort_power_users": True},
    }
    state = mapped.states["user-1"]
    assert state.stamps["posthog_cohort_power_users"] == AT + 50 and "posthog_cohort_power_users" in state.digests


def test_a_joining_member_is_stamped_at_the_pass_when_nothing_newer_was_written() -> None:
    mapped, _ = member_joined(member("user-1"), ATTRIBUTE, known(plan=AT - 100), BY_EMAIL, AT)
    assert mapped.operations[0].payload["timestamp"] == AT
    assert mapped.operations[0].payload["identifiers"] == {"email": "ann@example.com"}


def test_a_leaving_member_has_the_attribute_cleared_and_forgotten() -> None:
    joined, _ = member_joined(member("user-1"), ATTRIBUTE, known(), BY_ID, AT)
    states = dict(joined.states)
    live = parse_event(ev("$set", "user-1", top={"$set": {"plan": "team"}, "timestamp": "2026-12-01T15:00:00Z"}))
    states |= map_event(live, states, BY_ID).states  # a live write after the join, newer than the pass
    newest = states["user-1"].stamps["plan"]
    assert newest > AT

    left = member_left("user-1", ATTRIBUTE, states, BY_ID, AT + 1)

    (identify,) = left.operations
    assert identify.payload["attributes"] == {"posthog_cohort_power_users": ""}  # "" removes an attribute
    assert identify.payload["action"] == "identify" and identify.payload["timestamp"] == newest
    assert "posthog_cohort_power_users" not in left.states["user-1"].digests
    assert left.states["user-1"].stamps["posthog_cohort_power_users"] == newest


def test_the_mapping_never_changes_the_states_it_is_given() -> None:
    states = known(plan=AT)
    before = {key: value.copy() for key, value in states.items()}
    member_joined(member("user-1"), ATTRIBUTE, states, BY_ID, AT + 5)
    member_left("user-1", ATTRIBUTE, states, BY_ID, AT + 5)
    assert states == before


# -- the Track outputs: consecutive segment changes, one request ------------------------------------------
def seg(seq: int, action: str = "add", segment: str = "12", by: str = "id", who: str | None = None) -> Claimed:
    who = who or (f"u{seq}@example.com" if by == "email" else f"u{seq}")
    payload = {"type": "segment", "action": action, "segment_id": segment, "identifiers": {by: who}}
    return _claimed(seq, "segment", payload)


def person_op(seq: int) -> Claimed:
    payload = {"type": "person", "identifiers": {"id": f"u{seq}"}, "action": "identify", "attributes": {"a": 1}}
    return _claimed(seq, "person", payload)


def anonymous_op(seq: int) -> Claimed:
    return _claimed(seq, "anonymous", {"type": "anonymous", "action": "event", "anonymous_id": "v", "name": "x"})


def _claimed(seq: int, kind: Kind, payload: dict[str, Any]) -> Claimed:
    text = encode_payload(payload)
    return Claimed(seq, f"u{seq}", text, len(text.encode()), 0, 0.0, None, kind)


def shape(units: Sequence[Unit]) -> list[tuple[list[int], bool]]:
    return [([item.seq for item in unit.items], unit.batch) for unit in units]


def track(requests: list[httpx.Request], status: int = 200) -> TrackClient:
    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(status, json={} if status == 200 else {"meta": {"error": "refused"}})

    return TrackClient("site", "key", "https://track.example", transport=httpx.MockTransport(answer))


CUTS = [
    seg(1),
    seg(2),
    seg(3),
    seg(4, "remove"),  # another action
    seg(5, "remove"),
    seg(6, "remove", segment="14"),  # another segment
    seg(7, "remove", segment="14", by="email"),  # another identifier type
    seg(8, "remove", segment="14", by="email"),
    person_op(9),  # a person's operation between: its order is kept
    seg(10, "remove", segment="14", by="email"),
    seg(11, by="cio_id", who="cio-11"),
    seg(12, by="cio_id", who="cio-12"),
]


def test_v2_groups_consecutive_changes_of_one_segment_action_and_id_type_and_cuts_the_batch_around_them() -> None:
    units = TrackV2Output(track([])).units([*CUTS[:8], anonymous_op(50), *CUTS[8:]])

    assert shape(units) == [
        ([1, 2, 3], False),
        ([4, 5], False),
        ([6], False),
        ([7, 8], False),
        ([9], True),  # the v2 batch, between the segment requests before and after it
        ([10], False),
        ([11, 12], False),
        ([50], False),  # anonymous events last, one v1 request each (as before)
    ]


def test_v1_groups_the_same_way_and_sends_everything_else_one_request_each() -> None:
    units = TrackV1Output(track([])).units(CUTS)

    assert shape(units) == [
        ([1, 2, 3], False),
        ([4, 5], False),
        ([6], False),
        ([7, 8], False),
        ([9], False),
        ([10], False),
        ([11, 12], False),
    ]
    assert [item.seq for unit in units for item in unit.items] == [item.seq for item in CUTS]  # order kept


@pytest.mark.parametrize("output", [TrackV1Output, TrackV2Output])
def test_a_run_of_more_than_a_thousand_changes_is_split_into_requests_of_at_most_a_thousand_ids(
    output: type[TrackV1Output] | type[TrackV2Output],
) -> None:
    run = [seg(seq, "remove") for seq in range(2500)]

    units = output(track([])).units(run)

    assert [len(unit.items) for unit in units] == [MAX_SEGMENT_IDS, MAX_SEGMENT_IDS, 500]
    assert not any(unit.batch for unit in units)
    assert [item.seq for unit in units for item in unit.items] == list(range(2500))


def test_a_malformed_segment_operation_is_alone_and_refused_unsent() -> None:
    broken = _claimed(2, "segment", {"type": "segment", "action": "toggle", "segment_id": "12", "identifiers": {}})
    requests: list[httpx.Request] = []
    output = TrackV2Output(track(requests))

    units = output.units([seg(1), broken, seg(3)])

    assert shape(units) == [([1], False), ([2], False), ([3], False)]
    result = output.send(units[1])
    assert (result.outcome, result.sent) == (Outcome.PERMANENT, False) and requests == []
    assert "malformed segment operation" in (result.error or "")


# -- the request -------------------------------------------------------------------------------------------
def payload(action: str = "add", segment: str = "12", **identifiers: str) -> dict[str, Any]:
    return {"type": "segment", "action": action, "segment_id": segment, "identifiers": identifiers or {"id": "u"}}


def test_segment_request_is_one_post_of_the_ids_with_their_id_type() -> None:
    emails = [payload(email="a@example.com"), payload(email="b@example.com")]
    assert segment_request(emails) == (
        "POST",
        "/api/v1/segments/12/add_customers?id_type=email",
        {"ids": ["a@example.com", "b@example.com"]},
    )
    assert segment_request([payload("remove", id="user-1")]) == (
        "POST",
        "/api/v1/segments/12/remove_customers?id_type=id",
        {"ids": ["user-1"]},
    )
    assert (
        segment_request([payload(segment="a/b", cio_id="c1")])[1]
        == "/api/v1/segments/a%2Fb/add_customers?id_type=cio_id"
    )
    assert v1_request(payload(id="u1"), "segment") == segment_request([payload(id="u1")])


def test_segment_key_addresses_the_person_by_cio_id_then_email_then_id() -> None:
    assert segment_key(payload(id="u", email="u@example.com", cio_id="c")) == ("12", "add", "cio_id")
    assert segment_key(payload(id="u", email="u@example.com")) == ("12", "add", "email")
    assert segment_key(payload("remove", segment="14", id="u")) == ("14", "remove", "id")
    with pytest.raises(ValueError, match="no segment request for action"):
        segment_key(payload("delete"))


def test_segment_request_refuses_what_is_not_one_request() -> None:
    with pytest.raises(ValueError, match="1 to 1000"):
        segment_request([])
    with pytest.raises(ValueError, match="1 to 1000"):
        segment_request([payload(id=f"u{n}") for n in range(MAX_SEGMENT_IDS + 1)])
    with pytest.raises(ValueError, match="one segment, action and identifier type"):
        segment_request([payload(id="a"), payload("remove", id="b")])
    with pytest.raises(ValueError, match="one segment, action and identifier type"):
        segment_request([payload(id="a"), payload(email="b@example.com")])
    with pytest.raises(ValueError, match="one segment, action and identifier type"):
        segment_request([payload(id="a"), payload(segment="14", id="b")])
    assert len(segment_request([payload(id=f"u{n}") for n in range(MAX_SEGMENT_IDS)])[2]["ids"]) == MAX_SEGMENT_IDS


@pytest.mark.parametrize("output", [TrackV1Output, TrackV2Output])
def test_the_outputs_send_a_segment_unit_as_add_customers_or_remove_customers(
    output: type[TrackV1Output] | type[TrackV2Output],
) -> None:
    requests: list[httpx.Request] = []
    sender = output(track(requests))

    for unit in sender.units([seg(1, by="email"), seg(2, by="email"), seg(3, "remove"), person_op(4)]):
        assert sender.send(unit).outcome is Outcome.OK

    sent = [(r.method, r.url.path, r.url.query.decode(), json.loads(r.content)) for r in requests]
    assert sent[:2] == [
        ("POST", "/api/v1/segments/12/add_customers", "id_type=email", {"ids": ["u1@example.com", "u2@example.com"]}),
        ("POST", "/api/v1/segments/12/remove_customers", "id_type=id", {"ids": ["u3"]}),
    ]
    assert len(sent) == 3 and sent[2][2] == ""  # the person's operation: its own request, as before


# -- settlement --------------------------------------------------------------------------------------------
def test_a_refused_segment_request_is_dead_lettered_whole_never_halved() -> None:
    requests: list[httpx.Request] = []
    output = TrackV2Output(track(requests, status=400))
    (unit,) = output.units([seg(seq) for seq in range(5)])
    assert unit.batch is False

    result = output.send(unit)
    verdict = Settlement().settle(unit, result)

    assert (result.outcome, result.status) == (Outcome.PERMANENT, 400)
    assert verdict.halves is None and not verdict.ack and not verdict.release
    assert [item.seq for item, *_ in verdict.dead] == [0, 1, 2, 3, 4]
    assert {status for _, _, status, _ in verdict.dead} == {400} and len(requests) == 1


def test_a_refused_batch_is_still_halved_and_a_transient_failure_of_a_segment_request_released_whole() -> None:
    batch = Unit([person_op(seq) for seq in range(4)])
    assert Settlement().settle(batch, SendResult(Outcome.PERMANENT, 400, "bad")).halves is not None
    segments = Unit([seg(seq) for seq in range(4)], batch=False)
    verdict = Settlement().settle(segments, SendResult(Outcome.TRANSIENT, 503))
    assert [item.seq for item in verdict.release] == [0, 1, 2, 3] and verdict.halves is None
