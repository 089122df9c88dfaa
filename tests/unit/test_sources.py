"""Parsing of every PostHog input shape into ``PostHogEvent``."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from posthog_customerio.sources import (
    EventParseError,
    ParsedItem,
    PostHogEvent,
    SdkClock,
    capture_sent_at,
    parse_event,
    parse_payload,
    parse_v1_batch,
    read_events,
    to_unix_seconds,
    v1_sent_at,
)

NOW = datetime(2023, 6, 1, 12, 0, tzinfo=UTC)
T0 = datetime(2024, 1, 1, tzinfo=UTC)
T0_S = int(T0.timestamp())


def _event(**overrides: Any) -> dict[str, Any]:
    return {"event": "signed_up", "distinct_id": "user-42", "timestamp": "2024-01-01T00:00:00Z", **overrides}


# --------------------------------------------------------------------------- shapes


def test_hog_globals_shape() -> None:
    body = {
        "event": {
            "uuid": "u-1",
            "event": "$pageview",
            "distinct_id": "1234",
            "properties": {"$current_url": "https://posthog.com", "$set": {"plan": "pro"}},
            "timestamp": "2024-01-01T00:00:00Z",
            "elements_chain": "",
        },
        "person": {"id": "p-1", "name": "max", "properties": {"email": "max@posthog.com"}},
        "project": {"id": 1},
    }
    event = parse_event(body, NOW)
    assert event == PostHogEvent(
        event="$pageview",
        distinct_id="1234",
        timestamp=T0,
        properties={"$current_url": "https://posthog.com", "$set": {"plan": "pro"}},
        uuid="u-1",
        set={"plan": "pro"},
        set_once={},
        unset=(),
        person_properties={"email": "max@posthog.com"},
    )


def test_hog_globals_older_name_key_and_no_person() -> None:
    event = parse_event({"event": {"name": "clicked", "distinct_id": "d"}}, NOW)
    assert (event.event, event.distinct_id, event.timestamp, event.person_properties) == ("clicked", "d", NOW, {})


def test_plugin_style_shape() -> None:
    obj = {
        "uuid": "0190b7c2",
        "team_id": 1,
        "distinct_id": "user-42",
        "ip": "1.2.3.4",
        "event": "signed_up",
        "timestamp": "2024-01-01T00:00:00.000Z",
        "properties": {"$lib": "web", "$set": {"email": "a@b.com"}},
        "$set": {"email": "a@b.com", "name": "A"},
        "$set_once": {"$initial_referrer": "$direct"},
        "person": {"uuid": "p", "properties": {"email": "old@b.com"}},
    }
    event = parse_event(obj, NOW)
    assert event.uuid == "0190b7c2"
    assert event.event == "signed_up" and event.distinct_id == "user-42" and event.timestamp == T0
    assert event.set == {"email": "a@b.com", "name": "A"}
    assert event.set_once == {"$initial_referrer": "$direct"}
    assert event.person_properties == {"email": "old@b.com"}
    assert event.properties["$lib"] == "web"


def test_batch_export_line_shape() -> None:
    obj = {
        "uuid": "u",
        "event": "$identify",
        "distinct_id": "user-42",
        "person_id": "7f3c",
        "properties": {"$anon_distinct_id": "anon-1"},
        "person_properties": {"email": "a@b.com"},
        "set": {"name": "A"},
        "set_once": {"first": 1},
        "timestamp": "2024-01-01 00:00:00.123456",
    }
    event = parse_event(obj, NOW)
    assert event.person_properties == {"email": "a@b.com"}
    assert event.set == {"name": "A"}
    assert event.set_once == {"first": 1}
    assert event.timestamp == T0 + timedelta(microseconds=123456)
    assert event.properties == {"$anon_distinct_id": "anon-1"}


def test_capture_api_shape_with_distinct_id_in_properties() -> None:
    obj = {
        "api_key": "phc_x",
        "event": "$set",
        "properties": {"distinct_id": "from-props", "$set": {"email": "a@b.com"}, "$set_once": {"x": 1}},
    }
    event = parse_event(obj, NOW)
    assert event.distinct_id == "from-props"
    assert event.set == {"email": "a@b.com"} and event.set_once == {"x": 1}
    assert event.timestamp == NOW and event.uuid is None


def test_top_level_distinct_id_beats_properties() -> None:
    assert parse_event(_event(properties={"distinct_id": "other"}), NOW).distinct_id == "user-42"


def test_set_merged_top_level_wins() -> None:
    obj = _event(
        properties={"$set": {"a": 1, "b": 1}, "$set_once": {"c": 1, "d": 1}},
        **{"$set": {"b": 2, "e": 2}, "$set_once": {"d": 2}},
    )
    event = parse_event(obj, NOW)
    assert event.set == {"a": 1, "b": 2, "e": 2}
    assert event.set_once == {"c": 1, "d": 2}


@pytest.mark.parametrize(
    ("unset", "expected"),
    [(["a", "b"], ("a", "b")), ({"a": None, "b": 1}, ("a", "b")), ([], ()), (None, ())],
)
def test_unset_list_or_dict(unset: Any, expected: tuple[str, ...]) -> None:
    assert parse_event(_event(properties={"$unset": unset}), NOW).unset == expected


# --------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-01T00:00:00Z", T0),
        ("2024-01-01T02:00:00+02:00", T0),
        ("2023-12-31T19:00:00-05:00", T0),
        ("2024-01-01T00:00:00", T0),
        ("2024-01-01 00:00:00", T0),
        ("2024-01-01T00:00:00.123456Z", T0 + timedelta(microseconds=123456)),
        ("2024-01-01T00:00:00.123+00:00", T0 + timedelta(milliseconds=123)),
        (T0_S, T0),
        (float(T0_S) + 0.5, T0 + timedelta(milliseconds=500)),
        (T0_S * 1000, T0),
        (T0_S * 1000 + 250, T0 + timedelta(milliseconds=250)),
        (None, NOW),
        ("", NOW),
    ],
)
def test_timestamps(value: Any, expected: datetime) -> None:
    event = parse_event(_event(timestamp=value), NOW)
    assert event.timestamp == expected
    assert event.timestamp.tzinfo is not None
    assert event.timestamp_s == int(expected.timestamp())


@pytest.fixture
def non_utc_local_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run with a local time zone far from UTC so "naive = local" bugs show."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("non_utc_local_time")
@pytest.mark.parametrize("value", ["2024-01-01T00:00:00", "2024-01-01 00:00:00"])
def test_naive_timestamps_are_utc_whatever_the_local_zone(value: str) -> None:
    assert parse_event(_event(timestamp=value), NOW).timestamp == T0
    assert to_unix_seconds(value) == T0_S
    assert to_unix_seconds(T0.replace(tzinfo=None)) == T0_S


def test_missing_timestamp_uses_now() -> None:
    obj = _event()
    del obj["timestamp"]
    assert parse_event(obj, NOW).timestamp == NOW


def test_timestamp_ms_property() -> None:
    assert parse_event(_event(timestamp="2024-01-01T00:00:00.123Z"), NOW).timestamp_ms == T0_S * 1000 + 123


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("yesterday", "not ISO 8601"),
        ("2024-13-01T00:00:00Z", "not ISO 8601"),
        (True, "timestamp must be"),
        ({"t": 1}, "timestamp must be"),
        ([T0_S], "timestamp must be"),
        (float("nan"), "not a valid time"),
        (float("inf"), "not a valid time"),
        (1e300, "out of range"),
    ],
)
def test_invalid_timestamps(value: Any, fragment: str) -> None:
    with pytest.raises(EventParseError, match="timestamp") as info:
        parse_event(_event(timestamp=value), NOW)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-01T00:00:00Z", T0_S),
        ("2024-01-01T01:00:00+01:00", T0_S),
        ("2024-01-01T00:00:00", T0_S),
        (T0_S, T0_S),
        (T0_S + 0.9, T0_S),
        (T0_S * 1000, T0_S),
        (str(T0_S), T0_S),
        (str(T0_S * 1000), T0_S),
        (f" {T0_S}.5 ", T0_S),
        (T0, T0_S),
        (T0.replace(tzinfo=None), T0_S),
        ("garbage", None),
        ("", None),
        ("   ", None),
        (float("nan"), None),
        ("nan", None),
        (float("inf"), None),
        (float("-inf"), None),
        ("inf", None),
        (True, None),
        (False, None),
        (None, None),
        ({}, None),
    ],
)
def test_to_unix_seconds(value: Any, expected: int | None) -> None:
    assert to_unix_seconds(value) == expected


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("obj", "fragment"),
    [
        ("not an event", "must be a JSON object, got str"),
        (42, "must be a JSON object, got int"),
        (None, "must be a JSON object, got NoneType"),
        ({"event": "x"}, "missing distinct_id"),
        ({"event": "x", "distinct_id": None}, "missing distinct_id"),
        ({"event": "x", "distinct_id": True}, "missing distinct_id"),
        ({"event": "x", "distinct_id": ""}, "distinct_id is empty"),
        ({"event": "x", "distinct_id": "  "}, "distinct_id is empty"),
        ({"event": "x", "distinct_id": ["a"]}, "distinct_id must be a string, got list"),
        ({"event": "x", "distinct_id": {"id": 1}}, "distinct_id must be a string, got dict"),
        ({"distinct_id": "d"}, "missing event name"),
        ({"distinct_id": "d", "event": ""}, "event name is empty"),
        ({"distinct_id": "d", "event": 5}, "event name must be a string"),
        ({"event": {"distinct_id": "d"}}, "missing event name"),
        ({"event": {"event": "x"}}, "missing distinct_id"),
        (_event(properties=[1, 2]), "properties must be a JSON object, got list"),
        (_event(properties="x"), "properties is a string but not valid JSON"),
        (_event(properties='"text"'), "properties must be a JSON object, got str"),
        (_event(person_properties="[1]"), "person_properties must be a JSON object, got list"),
        ({"event": {"event": "x", "distinct_id": "d", "properties": 1}}, "event.properties must be a JSON object"),
        ({"event": {"event": "x", "distinct_id": "d"}, "person": 7}, "person must be a JSON object"),
        ({"event": {"event": "x", "distinct_id": "d"}, "person": "p"}, "person is a string but not valid JSON"),
        (_event(**{"$set": ["email"]}), "$set must be a JSON object, got list"),
        (_event(**{"$set_once": "x"}), "$set_once is a string but not valid JSON"),
        (_event(properties={"$set": 5}), "properties.$set must be a JSON object"),
        (_event(properties={"$set": "x"}), "properties.$set is a string but not valid JSON"),
        (_event(set=1), "$set must be a JSON object, got int"),
        (_event(properties={"$unset": "a"}), "$unset must be"),
        (_event(uuid=123), "uuid must be a string"),
        (_event(person_properties=[]), "person_properties must be a JSON object"),
    ],
)
def test_parse_errors(obj: Any, fragment: str) -> None:
    with pytest.raises(EventParseError) as info:
        parse_event(obj, NOW)
    assert fragment in str(info.value)


@pytest.mark.parametrize(("value", "expected"), [(42, "42"), (42.0, "42"), (4.5, "4.5"), (0, "0")])
def test_numeric_distinct_id_becomes_string(value: Any, expected: str) -> None:
    assert parse_event(_event(distinct_id=value), NOW).distinct_id == expected


# --------------------------------------------------------------------------- parse_payload


def test_parse_payload_single_list_and_batch() -> None:
    single = parse_payload(_event(), NOW)
    assert [e.distinct_id for e in single] == ["user-42"]

    listed = parse_payload([_event(distinct_id="a"), _event(distinct_id="b")], NOW)
    assert [e.distinct_id for e in listed] == ["a", "b"]

    batch = {"api_key": "phc_x", "batch": [_event(distinct_id="c"), {"event": "e", "properties": {"distinct_id": "d"}}]}
    assert [(e.event, e.distinct_id) for e in parse_payload(batch, NOW)] == [("signed_up", "c"), ("e", "d")]

    assert parse_payload([], NOW) == []


def test_parse_payload_hog_globals_is_one_event() -> None:
    events = parse_payload({"event": {"event": "x", "distinct_id": "d"}, "person": {"properties": {}}}, NOW)
    assert [(e.event, e.distinct_id) for e in events] == [("x", "d")]


@pytest.mark.parametrize(
    "payload",
    [
        [_event(), _event(), {"event": "x"}],
        {"api_key": "k", "batch": [_event(), _event(), {"event": "x"}]},
    ],
)
def test_parse_payload_all_or_nothing_names_index(payload: Any) -> None:
    with pytest.raises(EventParseError, match=r"^event 2: missing distinct_id$"):
        parse_payload(payload, NOW)


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"event": "x"}, "missing distinct_id"),
        ({"batch": "nope"}, "batch must be a JSON array"),
        ("text", "expected a JSON object or array, got str"),
        (7, "expected a JSON object or array, got int"),
    ],
)
def test_parse_payload_errors(payload: Any, fragment: str) -> None:
    with pytest.raises(EventParseError) as info:
        parse_payload(payload, NOW)
    assert fragment in str(info.value)
    assert not str(info.value).startswith("event 0")  # a single object is not numbered


# --------------------------------------------------------------------------- read_events


def _summary(items: list[ParsedItem]) -> list[tuple[str, str | None, str | None]]:
    return [(i.location, i.event.distinct_id if i.event else None, i.error) for i in items]


def test_read_events_jsonl() -> None:
    text = "\n".join(
        [
            "",
            json.dumps(_event(distinct_id="a")),
            "   ",
            '{"event": "broken", ',
            json.dumps({"event": "no-id"}),
            json.dumps(_event(distinct_id="b")),
            "",
        ]
    )
    items = list(read_events(io.StringIO(text), NOW))
    assert [i.location for i in items] == ["line 2", "line 4", "line 5", "line 6"]
    assert [i.event.distinct_id if i.event else None for i in items] == ["a", None, None, "b"]
    assert items[1].error is not None and items[1].error.startswith("invalid JSON")
    assert items[2].error == "missing distinct_id"
    assert items[0].error is None and items[3].error is None


def test_read_events_json_array_file() -> None:
    text = json.dumps([_event(distinct_id="a"), {"event": "x"}, _event(distinct_id="c")], indent=2)
    assert text.count("\n") > 3
    items = list(read_events(io.StringIO("\n" + text + "\n"), NOW))
    assert _summary(items) == [
        ("item 0", "a", None),
        ("item 1", None, "missing distinct_id"),
        ("item 2", "c", None),
    ]


def test_read_events_broken_json_array() -> None:
    items = list(read_events(io.StringIO('[\n{"event": "x",\n'), NOW))
    assert len(items) == 1 and items[0].event is None
    assert items[0].error is not None and items[0].error.startswith("invalid JSON array")
    assert items[0].location.startswith("line ")


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_read_events_empty(text: str) -> None:
    assert list(read_events(io.StringIO(text), NOW)) == []


def test_read_events_capture_batch_line_expands() -> None:
    batch = {"api_key": "k", "batch": [_event(distinct_id="a"), _event(distinct_id="b")]}
    lines = [json.dumps(batch), json.dumps(_event(distinct_id="c"))]
    items = list(read_events(lines, NOW))
    assert _summary(items) == [("line 1", "a", None), ("line 1", "b", None), ("line 2", "c", None)]


def test_read_events_bad_capture_batch_line_is_one_error() -> None:
    batch = {"api_key": "k", "batch": [_event(distinct_id="a"), {"event": "x"}]}
    items = list(read_events([json.dumps(batch)], NOW))
    assert _summary(items) == [("line 1", None, "event 1: missing distinct_id")]


def test_numeric_string_timestamps_are_accepted() -> None:
    event = parse_event({"event": "x", "distinct_id": "a", "timestamp": "1700000000"})
    assert event.timestamp_s == 1_700_000_000
    assert parse_event({"event": "x", "distinct_id": "a", "timestamp": "1700000000000"}).timestamp_s == 1_700_000_000


def test_nan_and_infinity_are_not_json() -> None:
    (item,) = list(read_events(['{"event": "x", "distinct_id": NaN}\n']))
    assert item.event is None and "NaN is not valid JSON" in (item.error or "")


def test_json_array_items_may_be_capture_batches() -> None:
    text = '[{"batch": [{"event": "a", "distinct_id": "d"}, {"event": "b", "distinct_id": "d"}]}]'
    assert [item.event.event for item in read_events([text]) if item.event] == ["a", "b"]


# --------------------------------------------------------------------------- JSON-string fields


def test_clickhouse_export_lines_with_json_string_fields_parse_like_objects() -> None:
    """ClickHouse (and PostHog's Kafka topics) write properties as JSON text: every source accepts it."""
    line = {
        "uuid": "0190b7c2-8a6f-7b3e-9b1a-1234567890ab",
        "event": "signed_up",
        "distinct_id": "u1",
        "timestamp": "2024-01-01 00:00:00.123456",
        "properties": json.dumps({"plan": "pro", "$set": {"email": "a@b.c"}, "$set_once": {"first": "ad"}}),
        "person_properties": json.dumps({"name": "Ann"}),
        "set": "",
        "set_once": json.dumps({"source": "x"}),
    }
    as_objects = {
        **line,
        "properties": json.loads(line["properties"]),
        "person_properties": {"name": "Ann"},
        "set": None,
        "set_once": {"source": "x"},
    }
    event = parse_event(line, NOW)
    assert event == parse_event(as_objects, NOW)
    assert event.properties["plan"] == "pro" and event.set == {"email": "a@b.c"}
    assert event.set_once == {"first": "ad", "source": "x"} and event.person_properties == {"name": "Ann"}
    assert event.timestamp_s == 1_704_067_200
    # the file reader and the webhook / Hog globals shape share the parser
    (item,) = read_events(io.StringIO(json.dumps(line) + "\n"), NOW)
    assert item.event == event
    hog = {
        "event": {"event": "x", "distinct_id": "d", "properties": json.dumps({"k": 1})},
        "person": {"properties": json.dumps({"email": "d@e.f"})},
    }
    (parsed,) = parse_payload(hog, NOW)
    assert parsed.properties == {"k": 1} and parsed.person_properties == {"email": "d@e.f"}
    empty = parse_event({"event": "x", "distinct_id": "d", "properties": "  ", "person_properties": ""}, NOW)
    assert empty.properties == {} and empty.person_properties == {}


# --------------------------------------------------------------------------- email at the edge
TYPED = "Rosa.Diaz@Example.COM "  # a mobile keyboard's trailing space


@pytest.mark.parametrize(
    "obj",
    [
        _event(**{"$set": {"email": TYPED}}),  # plugin-style top-level $set
        _event(properties={"$set": {"email": "\t" + TYPED}}),  # capture: $set inside properties
        _event(**{"$set_once": {"email": TYPED}}),
        _event(person_properties={"email": TYPED}, set={"email": " " + TYPED}),  # batch export
        {  # webhook (Hog globals): person.properties
            "event": {"event": "clicked", "distinct_id": "user-42", "properties": {}},
            "person": {"properties": {"email": TYPED}},
        },
    ],
    ids=["set", "properties.$set", "set_once", "export", "webhook-person"],
)
def test_email_is_trimmed_once_at_the_edge_and_keeps_its_case(obj: dict[str, Any]) -> None:
    event = parse_event(obj, NOW)
    emails = [props["email"] for props in (event.set, event.set_once, event.person_properties) if "email" in props]
    assert emails and all(email == "Rosa.Diaz@Example.COM" for email in emails), emails


def test_email_trimming_leaves_other_values_and_the_input_alone() -> None:
    properties = {"$set": {"email": TYPED, "name": " Rosa "}}
    event = parse_event(_event(properties=properties), NOW)
    assert event.set == {"email": "Rosa.Diaz@Example.COM", "name": " Rosa "}  # only the email
    assert properties["$set"]["email"] == TYPED  # the caller's dict is not changed
    blank = parse_event(_event(**{"$set": {"email": "  ", "plan": "pro"}}), NOW)
    assert blank.set["email"] == "  "  # nothing but spaces stays what it was (not an empty value)
    assert parse_event(_event(**{"$set": {"email": None}}), NOW).set == {"email": None}


# --------------------------------------------------------------------------- SDK clocks (capture paths)
RECEIVED = datetime(2025, 3, 14, 15, 0, tzinfo=UTC)


def _timed(item: dict[str, Any], sent_at: datetime | None = None, *, body: Any = None, **clock: Any) -> datetime:
    (event,) = parse_payload(body or item, clock=SdkClock(RECEIVED, sent_at, **clock))
    return event.timestamp


def test_sdk_time_moves_the_timestamp_by_the_sdk_clock_error() -> None:
    behind = RECEIVED - timedelta(days=4)
    item = _event(timestamp=(behind - timedelta(seconds=3)).isoformat())
    assert _timed(item, behind) == RECEIVED - timedelta(seconds=3)
    ahead = RECEIVED + timedelta(hours=2)
    unix_ms = int((ahead - timedelta(seconds=9)).timestamp() * 1000)  # corrected the same way as ISO text
    assert _timed(_event(timestamp=unix_ms), ahead) == RECEIVED - timedelta(seconds=9)


def test_sdk_time_without_sent_at_or_with_ignore_sent_at_keeps_the_timestamp_but_clamps_the_future() -> None:
    old = RECEIVED - timedelta(days=4)
    assert _timed(_event(timestamp=old.isoformat())) == old
    ignored = _event(timestamp=old.isoformat(), properties={"$ignore_sent_at": True})
    assert _timed(ignored, RECEIVED - timedelta(days=9)) == old
    assert _timed(_event(timestamp=(RECEIVED + timedelta(days=3)).isoformat())) == RECEIVED
    future_ignored = _event(timestamp=(RECEIVED + timedelta(days=3)).isoformat(), properties={"$ignore_sent_at": True})
    assert _timed(future_ignored, RECEIVED) == RECEIVED  # capture v0 clamps even then
    edge = RECEIVED + timedelta(hours=23)
    assert _timed(_event(timestamp=edge.isoformat())) == edge  # exactly 23 h ahead is kept
    assert _timed(_event(timestamp=(edge + timedelta(milliseconds=1)).isoformat())) == RECEIVED


def test_sdk_time_offset_is_milliseconds_before_the_receive_time_and_wins_over_a_timestamp() -> None:
    no_time = {"event": "synced", "distinct_id": "d", "offset": 90_000}
    assert _timed(no_time, RECEIVED - timedelta(days=1)) == RECEIVED - timedelta(seconds=90)
    both = _event(timestamp="2020-01-01T00:00:00Z", offset=1_500)  # PostHog's capture: offset decides
    assert _timed(both) == RECEIVED - timedelta(milliseconds=1_500)
    assert _timed(_event(timestamp=None, offset="90")) == RECEIVED  # not an integer: ignored
    assert _timed(_event(timestamp=None, offset=10**18)) == datetime(1970, 1, 1, tzinfo=UTC)  # before year 1
    assert _timed({"event": "opened", "distinct_id": "d"}, RECEIVED - timedelta(days=1)) == RECEIVED


def test_capture_sent_at_is_per_request_body_first_then_query_milliseconds() -> None:
    sent = RECEIVED - timedelta(days=4)
    ms = str(int(sent.timestamp() * 1000))
    batch = {"api_key": "k", "batch": [_event()], "sent_at": sent.isoformat()}
    assert capture_sent_at(batch, {"_": "1700000000000"}) == sent  # the body wins
    assert capture_sent_at([_event()], {"sent_at": ms}) == sent
    assert capture_sent_at([_event()], {"_": ms}) == sent
    assert capture_sent_at(_event(sent_at=sent.isoformat()), {}) is None  # a single event's sent_at: not read
    assert capture_sent_at([_event()], {"_": "1704067200"}) is None  # seconds (older SDKs): 1970 as ms, ignored
    assert capture_sent_at([_event()], {"_": "17"}) is None  # a cache buster
    assert capture_sent_at({"batch": [], "sent_at": "soon"}, {"_": "x1"}) is None
    assert v1_sent_at({"posthog-request-timestamp": "2025-03-10T15:00:00+00:00"}) == RECEIVED - timedelta(days=4)


def test_capture_v1_disable_skew_correction_keeps_the_time_unclamped() -> None:
    device = RECEIVED - timedelta(days=4)
    body = {
        "created_at": device.isoformat(),
        "batch": [
            {"event": "a", "uuid": "u1", "distinct_id": "d", "timestamp": device.isoformat(), "options": {}},
            {
                "event": "b",
                "uuid": "u2",
                "distinct_id": "d",
                "timestamp": (RECEIVED + timedelta(days=2)).isoformat(),
                "options": {"disable_skew_correction": True},
            },
        ],
    }
    a, b = parse_v1_batch(body, clock=SdkClock(RECEIVED, device, v1=True))
    assert a.timestamp == RECEIVED and b.timestamp == RECEIVED + timedelta(days=2)


def test_without_a_clock_nothing_is_corrected() -> None:
    item = _event(timestamp=(RECEIVED + timedelta(days=3)).isoformat(), offset=90_000)
    (event,) = parse_payload({"api_key": "k", "batch": [item], "sent_at": "2020-01-01T00:00:00Z"}, RECEIVED)
    assert event.timestamp == RECEIVED + timedelta(days=3)
