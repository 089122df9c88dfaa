"""Tests for the sample PostHog event generator and the bundled demo file."""

from __future__ import annotations

import itertools
import json
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest

from posthog_customerio import samples
from posthog_customerio.samples import generate_session_events, iter_stream, write_jsonl

DATA_FILE = Path(samples.__file__).parent / "data" / "sample_events.jsonl"

SHAPE_KEYS = {
    "plugin": {"uuid", "event", "distinct_id", "team_id", "ip", "properties", "timestamp", "$set", "$set_once"},
    "capture": {"api_key", "event", "distinct_id", "properties", "timestamp", "uuid"},
    "export": {
        "uuid",
        "event",
        "distinct_id",
        "person_id",
        "properties",
        "person_properties",
        "elements_chain",
        "timestamp",
        "created_at",
        "_inserted_at",
        "set",
        "set_once",
    },
    "webhook": {"event", "project"},
}
WEBHOOK_EVENT_KEYS = {"uuid", "event", "distinct_id", "properties", "elements_chain", "timestamp", "url"}


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _ms(value: str) -> int:
    return int(_parse_time(value).timestamp() * 1000 + 0.5)


@pytest.fixture(scope="module")
def plugin_events() -> list[dict]:
    return generate_session_events(people=60, seed=11, events_per_person=12)


def test_deterministic_per_seed() -> None:
    for shape in samples.SHAPES:
        assert generate_session_events(15, seed=3, shape=shape) == generate_session_events(15, seed=3, shape=shape)


def test_different_seeds_differ() -> None:
    assert generate_session_events(15, seed=1) != generate_session_events(15, seed=2)


def test_stream_matches_list_and_start_is_honoured() -> None:
    assert list(iter_stream(10, seed=5, events_per_person=12)) == generate_session_events(10, seed=5)
    start = datetime(2025, 6, 1, tzinfo=UTC)
    events = generate_session_events(5, seed=1, start=start)
    assert min(_parse_time(e["timestamp"]) for e in events) >= start


@pytest.mark.parametrize("shape", samples.SHAPES)
def test_shapes_have_the_right_keys(shape: str) -> None:
    events = generate_session_events(30, seed=4, shape=shape)
    assert events
    identified_webhooks = 0
    for event in events:
        if shape == "webhook":
            assert set(event) in (SHAPE_KEYS["webhook"], SHAPE_KEYS["webhook"] | {"person"})
            assert set(event["event"]) == WEBHOOK_EVENT_KEYS
            assert event["event"]["elements_chain"] == ""
            is_identified = event["event"]["properties"]["$is_identified"]
            assert ("person" in event) == is_identified
            if "person" in event:
                identified_webhooks += 1
                assert set(event["person"]) == {"id", "name", "url", "properties"}
                assert event["person"]["properties"]["email"] == event["person"]["name"]
        else:
            assert set(event) == SHAPE_KEYS[shape]
            assert isinstance(event["properties"], dict)
    if shape == "webhook":
        assert identified_webhooks
    if shape == "capture":
        assert all(e["api_key"] == "phc_sample" for e in events)
        assert any("$set" in e["properties"] for e in events)
    if shape == "export":
        for e in events:
            assert e["set"] == e["properties"].get("$set")
            assert _parse_time(e["timestamp"]) < _parse_time(e["created_at"]) < _parse_time(e["_inserted_at"])


def test_shapes_share_the_same_underlying_events() -> None:
    plugin = generate_session_events(10, seed=2, shape="plugin")
    webhook = generate_session_events(10, seed=2, shape="webhook")
    export = generate_session_events(10, seed=2, shape="export")
    assert [e["uuid"] for e in plugin] == [w["event"]["uuid"] for w in webhook] == [x["uuid"] for x in export]


def test_uuids_are_v7_matching_the_event_time(plugin_events: list[dict]) -> None:
    seen = set()
    for event in plugin_events:
        parsed = uuid.UUID(event["uuid"])
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert parsed.int >> 80 == _ms(event["timestamp"])
        seen.add(event["uuid"])
    assert len(seen) == len(plugin_events)


def test_stream_is_time_ordered_and_per_person_times_increase(plugin_events: list[dict]) -> None:
    times = [_ms(e["timestamp"]) for e in plugin_events]
    assert times == sorted(times)
    per_person: dict[str, list[int]] = defaultdict(list)
    for event in plugin_events:
        per_person[event["properties"]["$device_id"]].append(_ms(event["timestamp"]))
    assert len(per_person) == 60
    for stamps in per_person.values():
        assert all(a < b for a, b in itertools.pairwise(stamps))
    span = max(times) - min(times)
    assert 24 * 3600_000 < span < 10 * 24 * 3600_000  # a few days


def test_identify_events(plugin_events: list[dict]) -> None:
    identifies = [e for e in plugin_events if e["event"] == "$identify"]
    assert 0.5 * 60 < len(identifies) < 0.9 * 60
    for event in identifies:
        props = event["properties"]
        anon = props["$anon_distinct_id"]
        assert uuid.UUID(anon).version == 7 and anon != event["distinct_id"]
        assert props["$device_id"] == anon and props["$is_identified"] is True
        assert "@" in props["$set"]["email"] and event["$set"] == props["$set"]
        assert {"name", "plan", "created_at"} <= set(props["$set"])
        assert {"$initial_referrer", "$initial_utm_source"} <= set(props["$set_once"])
        # the anonymous id browsed before identifying, unidentified
        before = [e for e in plugin_events if e["distinct_id"] == anon]
        assert before and all(e["properties"]["$is_identified"] is False for e in before)
        assert all(_ms(e["timestamp"]) < _ms(event["timestamp"]) for e in before)


def test_realism(plugin_events: list[dict]) -> None:
    names = {e["event"] for e in plugin_events}
    assert {
        "$pageview",
        "$screen",
        "$identify",
        "$set",
        "signed_up",
        "project_created",
        "feature_used",
        "purchase",
        "invited_teammate",
    } <= names
    for event in plugin_events:
        props = event["properties"]
        if event["event"] == "$pageview":
            assert {
                "$current_url",
                "$pathname",
                "$host",
                "$referrer",
                "$browser",
                "$os",
                "$device_type",
                "$lib",
                "$lib_version",
                "$session_id",
            } <= set(props)
        if event["event"] == "$screen":
            assert props["$screen_name"] and props["$lib"] == "posthog-ios"
        if event["event"] == "purchase":
            assert isinstance(props["amount"], float) and props["currency"] and props["sku"]
        if event["event"] not in ("$pageview", "$screen", "$set", "$identify"):
            assert len(props) >= 18
    assert any(k.startswith("$utm_") for e in plugin_events for k in e["properties"])
    assert any("$set" in e["properties"] for e in plugin_events if e["event"] not in ("$identify", "$set"))


def test_awkward_ids_and_emails() -> None:
    events = generate_session_events(40, seed=0)
    ids = {e["distinct_id"] for e in events}
    for char in "/ #":
        assert any(char in distinct_id for distinct_id in ids)
    emails = {e["$set"]["email"] for e in events if e["event"] == "$identify"}
    upper = [email for email in emails if email != email.lower()]
    assert 1 <= len(upper) <= max(2, len(emails) // 5)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        generate_session_events(3, shape="nope")
    with pytest.raises(ValueError):
        list(iter_stream(3, events_per_person=0))
    assert generate_session_events(0) == []


def test_write_jsonl_round_trip(tmp_path: Path) -> None:
    events = generate_session_events(5, seed=9)
    path = tmp_path / "out.jsonl"
    assert write_jsonl(events, path) == len(events)
    assert [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] == events


def test_bundled_file_has_exactly_two_invalid_lines() -> None:
    assert DATA_FILE.exists() and DATA_FILE.stat().st_size < 200_000
    lines = DATA_FILE.read_text(encoding="utf-8").splitlines()
    broken, missing_id, good = [], [], []
    for number, line in enumerate(lines, start=1):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            broken.append(number)
            continue
        assert isinstance(obj, dict)
        (good if obj.get("distinct_id") else missing_id).append(obj)
    assert len(broken) == 1 and len(missing_id) == 1
    assert len(good) == len(lines) - 2 >= 100
    assert len({e["properties"]["$device_id"] for e in good}) >= 20
    assert "distinct_id" not in missing_id[0]["properties"]
    assert 1 < broken[0] < len(lines)  # a realistic spot, not first or last
