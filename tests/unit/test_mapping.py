"""Mapping rules that need code (parametrised values, ids, state): the table of whole cases is data in
``tests/mapping_cases/`` (run by ``test_mapping_cases.py``), where records named ``bug:`` prove a fix of
one of the original plugin's known bugs."""

from __future__ import annotations

import functools
import uuid as uuidlib
from typing import Any

import pytest
from ulid import ULID

from posthog_customerio.ids import event_ulid, uuid_to_ulid
from posthog_customerio.mapping import MappingConfig, map_event
from posthog_customerio.sources import parse_event
from posthog_customerio.state import PersonState

from .. import helpers
from ..helpers import T0

UUID7 = "0190b7c2-8a6f-7b3e-9b1a-1234567890ab"


#: a plugin-style event at T0 + t with an ISO timestamp (250 ms) and a uuid5 of name/id/time
ev = functools.partial(helpers.ev, iso=True)
IDENTIFY = ev("$identify", "u1", 10, properties={"$anon_distinct_id": "anon-1", "$set": {"email": "ann@example.com"}})


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
    mapped = map_event(parse_event(ev("x", top={"$set": {"created_at": created_at}})), {}, MappingConfig())
    attributes = mapped.operations[0].payload["attributes"]
    assert attributes["created_at"] == expected
    assert isinstance(attributes["created_at"], int)


@pytest.mark.parametrize("created_at", ["yesterday", "", None, True, {"a": 1}])
def test_unparseable_created_at_is_dropped_not_nan(created_at: Any) -> None:
    mapped = map_event(parse_event(ev("x", top={"$set": {"created_at": created_at, "plan": "a"}})), {}, MappingConfig())
    assert mapped.operations[0].payload["attributes"] == {"plan": "a"}


def test_timestamps_are_integer_seconds() -> None:
    """bug: timestamps were sent as floats (ms/1000)."""
    mapped = map_event(parse_event(ev("x", top={"timestamp": 1_704_067_200_999})), {}, MappingConfig())
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
    map_event(parse_event(ev("x", top={"$set": {"name": "B"}})), {"u1": state}, MappingConfig())
    assert (state.created, state.digests) == before


def test_state_remembers_email_and_identification() -> None:
    mapped = map_event(parse_event(IDENTIFY), {}, MappingConfig())
    state = mapped.states["u1"]
    assert state.identified and state.email == "ann@example.com" and state.created


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://x.io/a?b=c", "https://x.io/a?b=c"),
        (
            "https://x.io/blog/post?utm_source=google&utm_medium=cpc&utm_campaign=winter_launch_2026_final_extended_edition#top",
            "https://x.io/blog/post",
        ),
        ("https://x.io/" + "é" * 80, ("https://x.io/" + "é" * 80).encode()[:100].decode(errors="ignore")),
    ],
)
def test_long_page_urls_become_names_within_100_bytes(url: str, name: str) -> None:
    mapped = map_event(parse_event(ev("$pageview", properties={"$current_url": url})), {}, MappingConfig())
    page = mapped.operations[-1].payload
    assert page["name"] == name and len(page["name"].encode()) <= 100
    assert page["attributes"]["$current_url"] == url


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        'é ünïcode \\u2028 "quoted"',
        "",
        0,
        -12,
        10**20,
        True,
        False,
        None,
        1.5,
        float("nan"),
        [1, "a"],
        {"b": 1, "a": [None]},
    ],
)
def test_value_digest_fast_path_matches_canonical_json(value: object) -> None:
    import hashlib
    import json

    from posthog_customerio.mapping import value_digest

    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    assert value_digest(value) == hashlib.blake2b(canonical.encode(), digest_size=8).hexdigest()
