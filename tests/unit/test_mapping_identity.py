"""Issue 9 mapping rules that need code: merge survivor by identity, email held until the merge,
not-events, EVENTS_TO_SKIP's default, dates, Hog groups. Deletes by every identifier, EVENTS_TO_SKIP
globs, CONVERT_DATES and device removal are records in ``tests/mapping_cases/``."""

from __future__ import annotations

from typing import Any

import pytest

from posthog_customerio.config import load_settings
from posthog_customerio.mapping import MappingConfig, iso_datetime_seconds

from ..helpers import T0
from .test_mapping_semantics import ANON, PERSON, ev, run, shapes


def alias_js(user: str, other: str, t: int = 50) -> dict[str, Any]:
    """posthog-js / posthog-node: distinct_id = the current (user) id, alias = the other."""
    return {**ev("$create_alias", user, t), "properties": {"distinct_id": user, "alias": other}}


def alias_py(previous: str, user: str, t: int = 50) -> dict[str, Any]:
    """posthog-python ``alias(previous_id, distinct_id)``: distinct_id = previous id, alias = user."""
    return {**ev("$create_alias", previous, t), "properties": {"distinct_id": previous, "alias": user}}


IDENTIFIED = ev("$identify", "user", 0, **{"$anon_distinct_id": "elsewhere"})
WITH_EMAIL = ev("signed_up", "user", 0, **{"$set": {"email": "u@x.io"}})
KNOWN_SERVER_SIDE = ev("a", "user", 0)
VISITOR = ev("$pageview", "visitor", 1, **{"$device_id": "visitor", "$is_identified": False})
PLAIN_OTHER = ev("b", "visitor", 1)


@pytest.mark.parametrize(
    ("history", "alias", "survivor", "merged"),
    [
        ([IDENTIFIED, PLAIN_OTHER], alias_js("user", "visitor"), "user", "visitor"),
        ([WITH_EMAIL, PLAIN_OTHER], alias_py("visitor", "user"), "user", "visitor"),
        ([KNOWN_SERVER_SIDE, VISITOR], alias_py("visitor", "user"), "user", "visitor"),
        ([KNOWN_SERVER_SIDE, VISITOR], alias_js("visitor", "user"), "user", "visitor"),
        ([KNOWN_SERVER_SIDE, PLAIN_OTHER], alias_py("visitor", "user"), "visitor", "user"),  # tie: distinct_id
        ([KNOWN_SERVER_SIDE, PLAIN_OTHER], alias_js("user", "visitor"), "user", "visitor"),  # tie: distinct_id
    ],
    ids=["identified-js", "email", "not-anonymous", "not-anonymous-js", "tie-python", "tie-js"],
)
def test_the_alias_survivor_is_chosen_by_identity(
    history: list[dict[str, Any]], alias: dict[str, Any], survivor: str, merged: str
) -> None:
    *_, result = run([*history, alias], PERSON)[0]
    (merge,) = [op.payload for op in result.operations if op.payload["action"] == "merge"]
    assert merge["primary"] == {"id": survivor} and merge["secondary"] == {"id": merged}
    _, states = run([*history, alias], PERSON)
    assert states[merged].merged_into == survivor and states[survivor].merged_into is None


def test_an_identified_alias_side_is_not_merged_into_a_known_person() -> None:
    """PostHog refuses when ``alias``'s person is identified and the distinct_id's exists (``mergePeople``
    checks ``otherPerson.is_identified``): posthog-python ``alias(previous_id, user)`` of a known id merges nothing."""
    *_, result = run([IDENTIFIED, PLAIN_OTHER, alias_py("visitor", "user")], PERSON)[0]
    assert "merge" not in [s[2] for s in shapes(result)]
    assert result.notes["merge_blocked_already_identified"] == 1
    # a previous id PostHog has no person for joins the identified user
    *_, result = run([IDENTIFIED, alias_py("fresh", "user")], PERSON)[0]
    assert result.notes["merge_blocked_already_identified"] == 0


def test_two_identified_people_are_never_merged_by_an_alias() -> None:
    other = ev("$identify", "visitor", 1, **{"$anon_distinct_id": "x2"})
    *_, result = run([IDENTIFIED, other, alias_py("visitor", "user")], PERSON)[0]
    assert "merge" not in [s[2] for s in shapes(result)]
    assert result.notes["merge_blocked_already_identified"] == 1


@pytest.mark.parametrize("by_email", [False, True], ids=["by-id", "identify-by-email"])
def test_the_visitors_email_goes_to_the_primary_only_after_the_merge(by_email: bool) -> None:
    config = MappingConfig(anonymous_events="person", identify_by_email=by_email)
    visitor = ev("x", "visitor", 0, **{"$set": {"email": "v@x.io"}})
    identify = ev("$identify", "user", 1, **{"$anon_distinct_id": "visitor", "$set": {"name": "V"}})
    (_, result), _ = run([visitor, identify], config)
    actions = [
        (op.payload["action"], op.payload.get("identifiers"), op.payload.get("attributes"), op.after)
        for op in result.operations
    ]
    assert actions[0] == ("identify", {"id": "user"}, {"name": "V"}, ())  # never by the email it lacks
    assert actions[1][0] == "merge" and result.operations[1].payload["secondary"] == (
        {"email": "v@x.io"} if by_email else {"id": "visitor"}
    )
    assert actions[2] == ("identify", {"id": "user"}, {"email": "v@x.io"}, ("visitor",))
    assert actions[3][0] == "event"


def test_a_merge_without_an_email_on_the_visitor_is_unchanged() -> None:
    (_, result), _ = run(
        [
            ev("x", "visitor", 0),
            ev("$identify", "user", 1, **{"$anon_distinct_id": "visitor", "$set": {"email": "u@x.io"}}),
        ],
        PERSON,
    )
    assert [s[2] for s in shapes(result)] == ["identify", "merge", "event"]
    assert result.operations[0].payload["attributes"] == {"email": "u@x.io"}


# -- not events, EVENTS_TO_SKIP --------------------------------------------------------------------
@pytest.mark.parametrize("name", ["$set", "$set_once"])
@pytest.mark.parametrize("config", [PERSON, ANON], ids=["person", "anonymous"])
def test_set_events_update_the_person_and_are_never_events(name: str, config: MappingConfig) -> None:
    key = "$set" if name == "$set" else "$set_once"
    (result,), states = run([ev(name, "u", 0, **{key: {"plan": "pro"}})], config)
    assert shapes(result) == [("u", "person", "identify")] and result.skipped == "person_update"
    assert result.operations[0].payload["attributes"] == {"plan": "pro"}
    # an anonymous visitor's $set is remembered for its identify, no anonymous event named $set
    visitor = ev(name, "v", 0, **{key: {"plan": "free"}, "$is_identified": False})
    (result,), states = run([visitor], config)
    if config is ANON:
        assert result.operations == [] and states["v"].pending == {"plan": "free"}


def test_events_to_skip_applies_after_the_allowlist_and_its_default_drops_posthog_internals() -> None:
    config = load_settings({"events_to_send": "a,$web_vitals", "events_to_skip": "a"}).mapping_config()
    assert run([ev("a", "u", 0)], config)[0][0].skipped == "events_to_skip"
    default = load_settings({}).mapping_config()
    for name in ("$pageleave", "$web_vitals", "$feature_flag_called", "$$heatmap", "$snapshot"):
        assert default.skips(name)
    assert not default.skips("$pageview") and not default.skips("$autocapture")


# -- dates ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("2024-01-01T00:00:00Z", T0),
        ("2024-01-01T00:00:00.123456Z", T0),
        ("2024-01-01T01:00:00+01:00", T0),
        ("2024-01-01 00:00:00", T0),
        ("2024-01-01T00:00", T0),
        ("2024-01-01T02:00:00+0200", T0),
        ("2024-01-01", None),
        ("1704067200", None),
        ("12:00", None),
        ("soon", None),
        ("2024-13-01T00:00:00Z", None),
        ("2024-01-01T00:00:00Z trailing", None),
        ("on 2024-01-01T00:00:00Z", None),
    ],
)
def test_only_full_iso_date_times_are_dates(value: str, seconds: int | None) -> None:
    assert iso_datetime_seconds(value) == seconds


# -- Hog globals groups --------------------------------------------------------------------------
def hog(name: str, distinct_id: str, t: int, groups: dict[str, Any], **props: Any) -> dict[str, Any]:
    return {
        "event": {"event": name, "distinct_id": distinct_id, "timestamp": T0 + t, "properties": props},
        "person": {"properties": {}},
        "groups": groups,
    }


GROUPS = MappingConfig(anonymous_events="person", group_type_map={"organization": "2"})


def test_hog_groups_identify_the_object_once_per_change_and_relate_the_person() -> None:
    org = {
        "organization": {
            "id": "org-1",
            "type": "organization",
            "index": 0,
            "url": "u",
            "properties": {"name": "Org", "seats": 5},
        }
    }
    changed = {"organization": {**org["organization"], "properties": {"name": "Org", "seats": 6}}}
    unmapped = {"project": {"id": "p-1", "properties": {"x": 1}}}
    (first, second, third, fourth), _ = run(
        [hog("a", "u", 0, org), hog("b", "u", 1, org), hog("c", "u", 2, changed), hog("d", "u", 3, unmapped)], GROUPS
    )
    assert shapes(first) == [
        ("u", "person", "identify"),
        ("\x1fobject:2:org-1", "object", "identify"),
        ("u", "person", "add_relationships"),
        ("u", "person", "event"),
    ]
    assert first.operations[1].payload["attributes"] == {"name": "Org", "seats": 5}
    assert first.operations[2].payload["cio_relationships"] == [
        {"identifiers": {"object_type_id": "2", "object_id": "org-1"}}
    ]
    assert shapes(second) == [("u", "person", "event")]
    assert [op.payload.get("attributes") for op in third.operations if op.payload["type"] == "object"] == [{"seats": 6}]
    assert shapes(fourth) == [("u", "person", "event")] and fourth.notes["unmapped_group_type"] == 1


def test_hog_groups_parse_key_or_id_and_reject_bad_shapes() -> None:
    from posthog_customerio.sources import EventParseError, parse_event

    event = parse_event(hog("a", "u", 0, {"company": {"key": "c-1", "properties": {"n": 1}}, "team": {"id": None}}))
    assert event.groups == {"company": ("c-1", {"n": 1})}
    # a string is read as JSON text (the ClickHouse shape), and "c-1" is not JSON
    with pytest.raises(EventParseError, match="groups.company is a string but not valid JSON"):
        parse_event(hog("a", "u", 0, {"company": "c-1"}))
    with pytest.raises(EventParseError, match="groups.company must be a JSON object"):
        parse_event(hog("a", "u", 0, {"company": ["c-1"]}))


def test_a_bad_convert_dates_value_names_the_variable() -> None:
    from posthog_customerio.config import ConfigError

    with pytest.raises(ConfigError, match=r"^CONVERT_DATES: "):
        load_settings({"convert_dates": "sometimes"})
