"""Table-driven tests of the pure mapping: events + config -> Customer.io operations.

Each case is a sequence of events fed through ``map_event`` with state carried
between them, and the exact operations expected for each event. Cases named
``bug:`` prove a fix of the original plugin's known bugs
(``original-plugin-behavior.md``).
"""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any

import pytest
from ulid import ULID

from posthog_customerio.ids import event_ulid, uuid_to_ulid
from posthog_customerio.mapping import MappingConfig, map_event
from posthog_customerio.sources import parse_event
from posthog_customerio.state import PersonState

T0 = 1_704_067_200  # 2024-01-01T00:00:00Z
UUID7 = "0190b7c2-8a6f-7b3e-9b1a-1234567890ab"


def ev(name: str, distinct_id: str = "u1", *, t: int = 0, uuid: str | None = None, **extra: Any) -> dict[str, Any]:
    """A plugin-style event dict at T0 + t seconds (uuid derived from the name/time)."""
    event = {
        "event": name,
        "distinct_id": distinct_id,
        "timestamp": f"2024-01-01T00:{t // 60:02d}:{t % 60:02d}.250Z",
        "uuid": uuid or str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"{distinct_id}/{name}/{t}")),
        "properties": {},
    }
    event.update(extra)
    return event


def ident(attrs: dict[str, Any] | None, *, distinct_id: str = "u1", t: int = 0, key: str = "id") -> dict[str, Any]:
    """Expected identify operation."""
    op: dict[str, Any] = {"type": "person", "identifiers": {key: distinct_id}, "action": "identify", "timestamp": T0 + t}
    if attrs is not None:
        op["attributes"] = attrs
    return op


def track(event: dict[str, Any], action: str = "event", name: str | None = None, *, who: dict[str, str] | None = None,
          data: dict[str, Any] | None = None, t: int = 0) -> dict[str, Any]:
    """Expected event operation for an input event dict."""
    return {
        "type": "person",
        "identifiers": who or {"id": event["distinct_id"]},
        "action": action,
        "name": name or event["event"],
        "id": str(ULID.from_bytes(uuidlib.UUID(event["uuid"]).bytes)),
        "timestamp": T0 + t,
        "attributes": data if data is not None else event["properties"],
    }


@dataclass
class Case:
    name: str
    events: list[dict[str, Any]]
    expected: list[list[dict[str, Any]]]
    config: MappingConfig = field(default_factory=MappingConfig)
    skipped: list[str | None] | None = None


# Reusable events -----------------------------------------------------------------------
PAGE = ev("$pageview", properties={"$current_url": "https://x.io/pricing", "$browser": "Firefox"})
PAGE_NO_URL = ev("$pageview", t=1, properties={"$browser": "Firefox"})
SCREEN = ev("$screen", properties={"$screen_name": "Dashboard"})
SCREEN_NO_NAME = ev("$screen", t=1, properties={})
SIGNUP = ev("signed_up", properties={"plan": "pro", "$set": {"email": "ann@example.com", "name": "Ann"}, "$set_once": {"ref": "ad"}})
TOP_SET = ev("signed_up", **{"$set": {"name": "Ann"}})
CLICK = ev("clicked", t=5, properties={"button": "buy"})
CLICK2 = ev("clicked", t=6, properties={"button": "again"})
RENAME = ev("$set", t=7, properties={"$set": {"name": "Anna"}})
SAME_NAME = ev("$set", t=8, properties={"$set": {"name": "Anna"}})
ANON = ev("$pageview", "anon-1", properties={"$current_url": "https://x.io/", "$is_identified": False})
IDENTIFY = ev("$identify", "u1", t=10, properties={"$anon_distinct_id": "anon-1", "$set": {"email": "ann@example.com"}})
IS_IDENTIFIED = ev("clicked", "u2", properties={"$is_identified": True})
WITH_EMAIL_LATER = ev("clicked", t=20, properties={"button": "x"})


CASES = [
    Case(
        "first event creates the person, then the event",
        [CLICK],
        [[ident(None, t=5), track(CLICK, t=5)]],
    ),
    Case(
        "$set from properties.$set and email; data drops $set/$set_once; $set_once sent once",
        [SIGNUP],
        [[
            ident({"email": "ann@example.com", "name": "Ann", "ref": "ad"}),
            track(SIGNUP, data={"plan": "pro"}),
        ]],
    ),
    Case("top-level $set is used too", [TOP_SET], [[ident({"name": "Ann"}), track(TOP_SET, data={})]]),
    Case(
        "bug: identify + track for every event -> unchanged identify is skipped",
        [SIGNUP, CLICK, CLICK2],
        [
            [ident({"email": "ann@example.com", "name": "Ann", "ref": "ad"}), track(SIGNUP, data={"plan": "pro"})],
            [track(CLICK, t=5)],
            [track(CLICK2, t=6)],
        ],
    ),
    Case(
        "a changed attribute sends only that attribute; same value again sends nothing",
        [SIGNUP, RENAME, SAME_NAME],
        [
            [ident({"email": "ann@example.com", "name": "Ann", "ref": "ad"}), track(SIGNUP, data={"plan": "pro"})],
            [ident({"name": "Anna"}, t=7)],  # a $set event updates the person; it is not an event
            [],
        ],
        skipped=[None, "person_update", "person_update"],
    ),
    Case(
        "$pageview is a page named by $current_url, falling back to the event name",
        [PAGE, PAGE_NO_URL],
        [[ident(None), track(PAGE, "page", "https://x.io/pricing")], [track(PAGE_NO_URL, "page", "$pageview", t=1)]],
    ),
    Case(
        "$screen is a screen named by $screen_name, falling back to the event name",
        [SCREEN, SCREEN_NO_NAME],
        [[ident(None), track(SCREEN, "screen", "Dashboard")], [track(SCREEN_NO_NAME, "screen", "$screen", t=1)]],
    ),
    Case(
        "allowlist: other events send nothing but their email is remembered",
        [SIGNUP, CLICK],
        [[], [ident({"email": "ann@example.com"}, t=5), track(CLICK, t=5)]],
        MappingConfig(events_to_send=frozenset({"clicked"}), anonymous_mode="with_email"),
        [ "not_in_allowlist", None],
    ),
    Case(
        "$create_alias is skipped",
        [ev("$create_alias", properties={"alias": "other"})],
        [[]],
        skipped=["alias"],
    ),
    Case(
        "identified filter: anonymous events dropped until $identify; $identify itself passes",
        [ANON, IDENTIFY, CLICK2],
        [
            [],
            [ident({"email": "ann@example.com"}, t=10), track(IDENTIFY, data={"$anon_distinct_id": "anon-1"}, t=10)],
            [track(CLICK2, t=6)],
        ],
        MappingConfig(anonymous_mode="identified"),
        ["anonymous_user", None, None],
    ),
    Case(
        "identified filter: $is_identified true counts as identified",
        [IS_IDENTIFIED],
        [[ident(None, distinct_id="u2"), track(IS_IDENTIFIED)]],
        MappingConfig(anonymous_mode="identified"),
    ),
    Case(
        "identified filter: the target of an alias is identified",
        [ev("$create_alias", "u3", properties={"alias": "u3-alias"}), ev("clicked", "u3", t=1), ev("clicked", "u3-alias", t=2)],
        # the alias is merged into u3: its events belong to u3
        [[], [ident(None, distinct_id="u3", t=1), track(ev("clicked", "u3", t=1), t=1)],
         [track(ev("clicked", "u3-alias", t=2), who={"id": "u3"}, t=2)]],
        MappingConfig(anonymous_mode="identified"),
        ["alias", None, None],
    ),
    Case(
        "with_email filter: nothing until an email is known, then everything",
        [CLICK, SIGNUP, WITH_EMAIL_LATER],
        [
            [],
            [ident({"email": "ann@example.com", "name": "Ann", "ref": "ad"}), track(SIGNUP, data={"plan": "pro"})],
            [track(WITH_EMAIL_LATER, t=20)],
        ],
        MappingConfig(anonymous_mode="with_email"),
        ["anonymous_user", None, None],
    ),
    Case(
        "bug: identify by email only for the event carrying the email -> every later event uses it",
        [SIGNUP, CLICK],
        [
            [ident({"email": "ann@example.com", "name": "Ann", "ref": "ad"}, distinct_id="ann@example.com", key="email"),
             track(SIGNUP, data={"plan": "pro"}, who={"email": "ann@example.com"})],
            [track(CLICK, who={"email": "ann@example.com"}, t=5)],
        ],
        MappingConfig(identify_by_email=True),
    ),
    Case(
        "identify by email: a person created by id gets the email on its id profile, then is addressed by email",
        [CLICK, SIGNUP, CLICK2],
        [
            [ident(None, t=5), track(CLICK, t=5)],
            [ident({"email": "ann@example.com", "name": "Ann", "ref": "ad"}), track(SIGNUP, data={"plan": "pro"})],
            [track(CLICK2, who={"email": "ann@example.com"}, t=6)],
        ],
        MappingConfig(identify_by_email=True),
    ),
    Case(
        "bug: distinct_id-as-email fallback only ran for invalid $set.email -> always when no other email",
        [ev("clicked", "bob@example.com")],
        [[ident({"email": "bob@example.com"}, distinct_id="bob@example.com"),
          track(ev("clicked", "bob@example.com"))]],
    ),
    Case(
        "an invalid $set.email is not sent as the email",
        [ev("x", properties={"$set": {"email": "not-an-email"}})],
        [[ident({"email": "not-an-email"}), track(ev("x", properties={}), data={})]],
        MappingConfig(anonymous_mode="all"),
    ),
    Case(
        "bug: person properties outside this event's $set never reached Customer.io",
        [ev("clicked", person={"properties": {"plan": "team", "email": "c@example.com"}})],
        [[ident({"plan": "team", "email": "c@example.com"}), track(ev("clicked"), data={})]],
    ),
    Case(
        "bug: $set_once was dropped -> sent once, never overwriting a key we already sent",
        [ev("a", **{"$set_once": {"first_seen": "x"}}), ev("b", t=1, **{"$set_once": {"first_seen": "y", "ref": "z"}})],
        [[ident({"first_seen": "x"}), track(ev("a"), data={})],
         [ident({"ref": "z"}, t=1), track(ev("b", t=1), data={}, t=1)]],
    ),
]


def _run(case: Case) -> tuple[list[list[dict[str, Any]]], list[str | None]]:
    states: dict[str, PersonState] = {}
    produced, skipped = [], []
    for raw in case.events:
        mapped = map_event(parse_event(raw), states, case.config)
        states.update(mapped.states)
        produced.append([op.payload for op in mapped.operations])
        skipped.append(mapped.skipped)
    return produced, skipped


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_mapping_table(case: Case) -> None:
    produced, skipped = _run(case)
    assert produced == case.expected
    if case.skipped is not None:
        assert skipped == case.skipped


# -- single rules with more detail ---------------------------------------------------------
@pytest.mark.parametrize(
    ("created_at", "expected"),
    [
        ("2023-01-01T00:00:00Z", 1_672_531_200),
        ("2023-01-01T00:00:00.999+00:00", 1_672_531_200),
        (1_672_531_200, 1_672_531_200),
        (1_672_531_200_000, 1_672_531_200),
        (1_672_531_200.75, 1_672_531_200),
        ("1672531200", 1_672_531_200),
    ],
)
def test_created_at_becomes_integer_seconds(created_at: Any, expected: int) -> None:
    """bug: created_at became a float, null or NaN."""
    mapped = map_event(parse_event(ev("x", **{"$set": {"created_at": created_at}})), {}, MappingConfig())
    attributes = mapped.operations[0].payload["attributes"]
    assert attributes["created_at"] == expected
    assert isinstance(attributes["created_at"], int)


@pytest.mark.parametrize("created_at", ["yesterday", "", None, True, {"a": 1}])
def test_unparseable_created_at_is_dropped_not_nan(created_at: Any) -> None:
    mapped = map_event(parse_event(ev("x", **{"$set": {"created_at": created_at, "plan": "a"}})), {}, MappingConfig())
    assert mapped.operations[0].payload["attributes"] == {"plan": "a"}


def test_timestamps_are_integer_seconds() -> None:
    """bug: timestamps were sent as floats (ms/1000)."""
    mapped = map_event(parse_event(ev("x", timestamp=1_704_067_200_999)), {}, MappingConfig())
    for op in mapped.operations:
        assert op.payload["timestamp"] == T0
        assert type(op.payload["timestamp"]) is int


def test_uuid7_maps_losslessly_to_ulid() -> None:
    ulid = ULID.from_str(uuid_to_ulid(UUID7))
    assert ulid.bytes == uuidlib.UUID(UUID7).bytes
    assert str(ulid.to_uuid()) == UUID7
    # the ULID's time part is the UUIDv7's millisecond timestamp
    assert ulid.milliseconds == int(UUID7.replace("-", "")[:12], 16)


def test_dedupe_id_is_deterministic_and_differs_per_event() -> None:
    """bug: no dedupe id -> a retried request created the event twice."""
    first = map_event(parse_event(ev("x", uuid=UUID7)), {}, MappingConfig()).operations[-1].payload["id"]
    again = map_event(parse_event(ev("x", uuid=UUID7)), {}, MappingConfig()).operations[-1].payload["id"]
    other = map_event(parse_event(ev("x", uuid=str(uuidlib.uuid4()))), {}, MappingConfig()).operations[-1].payload["id"]
    assert first == again != other


def test_events_without_uuid_get_a_stable_content_id() -> None:
    raw = ev("x", properties={"a": 1})
    del raw["uuid"]
    one, two = event_ulid(parse_event(raw)), event_ulid(parse_event(dict(raw)))
    changed = event_ulid(parse_event({**raw, "properties": {"a": 2}}))
    assert one == two != changed
    assert ULID.from_str(one).milliseconds == (T0 * 1000 + 250)


def test_non_uuid_string_uuid_still_gets_an_id() -> None:
    assert len(event_ulid(parse_event(ev("x", uuid="not-a-uuid")))) == 26


def test_mapping_does_not_mutate_its_input_state() -> None:
    state = PersonState("u1", created=True, digests={"name": "0"})
    before = (state.created, dict(state.digests))
    map_event(parse_event(ev("x", **{"$set": {"name": "B"}})), {"u1": state}, MappingConfig())
    assert (state.created, state.digests) == before


def test_state_remembers_email_and_identification() -> None:
    mapped = map_event(parse_event(IDENTIFY), {}, MappingConfig())
    state = mapped.states["u1"]
    assert state.identified and state.email == "ann@example.com" and state.created


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://x.io/a?b=c", "https://x.io/a?b=c"),
        ("https://x.io/blog/post?utm_source=google&utm_medium=cpc&utm_campaign=winter_launch_2026_final_extended_edition#top",
         "https://x.io/blog/post"),
        ("https://x.io/" + "é" * 80, ("https://x.io/" + "é" * 80).encode()[:100].decode(errors="ignore")),
    ],
)
def test_long_page_urls_become_names_within_100_bytes(url: str, name: str) -> None:
    mapped = map_event(parse_event(ev("$pageview", properties={"$current_url": url})), {}, MappingConfig())
    page = mapped.operations[-1].payload
    assert page["name"] == name and len(page["name"].encode()) <= 100
    assert page["attributes"]["$current_url"] == url


@pytest.mark.parametrize("value", ["plain", "é ünïcode \\u2028 \"quoted\"", "", 0, -12, 10**20, True, False, None,
                                   1.5, float("nan"), [1, "a"], {"b": 1, "a": [None]}])
def test_value_digest_fast_path_matches_canonical_json(value: object) -> None:
    import hashlib
    import json

    from posthog_customerio.mapping import value_digest

    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    assert value_digest(value) == hashlib.blake2b(canonical.encode(), digest_size=8).hexdigest()
