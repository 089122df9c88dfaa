"""Output seam: the Track encoders (neutral operation -> v1 request / v2 batch item), how each
output splits a claim into requests, and the ``CUSTOMERIO_API`` registry."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from posthog_customerio.mapping import MappingConfig, adopted_events, map_event
from posthog_customerio.operations import Claimed, Kind, Operation, encode_payload
from posthog_customerio.output import OUTPUTS, OutputConfig, create_output
from posthog_customerio.output.base import Outcome
from posthog_customerio.output.pipelines import PipelinesOutput
from posthog_customerio.output.track import TrackClient, TrackV1Output, TrackV2Output
from posthog_customerio.output.track_v1 import v1_request
from posthog_customerio.output.track_v2 import batch_body, batch_item
from posthog_customerio.sources import parse_event
from posthog_customerio.state import PersonState

PERSON = {"id": "u1"}
DEVICE = {"token": "tok/1", "platform": "ios", "last_used": 5}

#: (kind, neutral payload, expected v1 (method, path, body)); None: no v1 equivalent
V1_CASES: list[tuple[Kind, dict[str, Any], tuple[str, str, dict[str, Any] | None] | None]] = [
    (
        "person",
        {
            "type": "person",
            "identifiers": PERSON,
            "action": "identify",
            "timestamp": 7,
            "attributes": {"a": 1.0, "l": [1]},
        },
        ("PUT", "/api/v1/customers/u1", {"a": 1, "l": "[1]", "id": "u1", "_timestamp": 7}),
    ),
    (
        "person",
        {"type": "person", "identifiers": {"email": "a@b.io"}, "action": "identify", "attributes": {}},
        ("PUT", "/api/v1/customers/a%40b.io", {"email": "a@b.io"}),
    ),
    (
        "person",
        {
            "type": "person",
            "identifiers": PERSON,
            "action": "event",
            "name": "paid",
            "id": "01H",
            "timestamp": 9,
            "attributes": {"x": 1},
        },
        (
            "POST",
            "/api/v1/customers/u1/events",
            {"name": "paid", "type": "event", "data": {"x": 1}, "id": "01H", "timestamp": 9},
        ),
    ),
    (
        "person",
        {"type": "person", "identifiers": PERSON, "action": "page", "name": "https://x.io/"},
        ("POST", "/api/v1/customers/u1/events", {"name": "https://x.io/", "type": "page", "data": {}}),
    ),
    (
        "anonymous",
        {
            "type": "anonymous",
            "action": "screen",
            "anonymous_id": "v1",
            "name": "Home",
            "id": "01J",
            "timestamp": 3,
            "attributes": {"k": "v"},
        },
        (
            "POST",
            "/api/v1/events",
            {"anonymous_id": "v1", "name": "Home", "type": "screen", "data": {"k": "v"}, "id": "01J", "timestamp": 3},
        ),
    ),
    (
        "person",
        {"type": "person", "action": "merge", "primary": PERSON, "secondary": {"id": "anon"}},
        ("POST", "/api/v1/merge_customers", {"primary": PERSON, "secondary": {"id": "anon"}}),
    ),
    ("person", {"type": "person", "identifiers": PERSON, "action": "delete"}, ("DELETE", "/api/v1/customers/u1", None)),
    (
        "person",
        {"type": "person", "identifiers": PERSON, "action": "suppress"},
        ("POST", "/api/v1/customers/u1/suppress", None),
    ),
    (
        "person",
        {"type": "person", "identifiers": PERSON, "action": "add_device", "device": DEVICE},
        ("PUT", "/api/v1/customers/u1/devices", {"device": {"id": "tok/1", "platform": "ios", "last_used": 5}}),
    ),
    (
        "person",
        {"type": "person", "identifiers": PERSON, "action": "delete_device", "device": {"token": "tok/1"}},
        ("DELETE", "/api/v1/customers/u1/devices/tok%2F1", None),
    ),
    (
        "person",
        {
            "type": "person",
            "identifiers": PERSON,
            "action": "add_relationships",
            "cio_relationships": [{"identifiers": {"object_type_id": "1", "object_id": "o"}}],
        },
        None,
    ),
    (
        "object",
        {"type": "object", "identifiers": {"object_type_id": "1", "object_id": "o"}, "action": "identify"},
        None,
    ),
]


@pytest.mark.parametrize(("kind", "payload", "expected"), V1_CASES)
def test_v1_encoder(kind: Kind, payload: dict[str, Any], expected: tuple[str, str, Any] | None) -> None:
    if expected is None:
        with pytest.raises(ValueError, match="no v1 equivalent"):
            v1_request(payload, kind)
    else:
        assert v1_request(payload, kind) == expected


def test_v1_encoder_takes_the_kind_from_the_operation_not_the_payload() -> None:
    # the same body as an anonymous event is routed by the kind it was given
    payload = {"action": "event", "anonymous_id": "v1", "name": "n", "identifiers": PERSON}
    assert v1_request(payload, "anonymous")[1] == "/api/v1/events"
    assert v1_request(payload, "person")[1] == "/api/v1/customers/u1/events"


#: (kind, neutral payload) -> the v2 batch item is the neutral text itself
V2_CASES: list[tuple[Kind, dict[str, Any]]] = [
    ("person", {"type": "person", "identifiers": PERSON, "action": "identify", "attributes": {"plan": "pro"}}),
    (
        "person",
        {
            "type": "person",
            "identifiers": PERSON,
            "action": "event",
            "name": "é",
            "id": "01H",
            "timestamp": 1,
            "attributes": {"n": None},
        },
    ),
    ("person", {"type": "person", "action": "merge", "primary": PERSON, "secondary": {"id": "a"}}),
    (
        "object",
        {
            "type": "object",
            "identifiers": {"object_type_id": "1", "object_id": "o"},
            "action": "identify",
            "attributes": {"seats": 5},
        },
    ),
]


@pytest.mark.parametrize(("kind", "payload"), V2_CASES)
def test_v2_encoder(kind: Kind, payload: dict[str, Any]) -> None:
    text = encode_payload(payload)
    item = batch_item(text, kind)
    assert item is text  # encoded once, at mapping time: nothing is done at send time
    assert json.loads(batch_body([item, item])) == {"batch": [payload, payload]}


def test_v2_encoder_refuses_anonymous_events() -> None:
    with pytest.raises(ValueError, match="no v2 equivalent"):
        batch_item(encode_payload({"type": "anonymous", "action": "event"}), "anonymous")


def claimed(seq: int, kind: Kind, payload: dict[str, Any]) -> Claimed:
    text = encode_payload(payload)
    return Claimed(seq, f"p{seq}", text, len(text.encode()), 0, 0.0, None, kind)


MIXED = [
    claimed(1, "person", {"type": "person", "identifiers": PERSON, "action": "event", "name": "a"}),
    claimed(2, "anonymous", {"type": "anonymous", "action": "event", "anonymous_id": "v", "name": "b"}),
    claimed(
        3, "object", {"type": "object", "identifiers": {"object_type_id": "1", "object_id": "o"}, "action": "identify"}
    ),
    claimed(4, "anonymous", {"type": "anonymous", "action": "page", "anonymous_id": "w", "name": "c"}),
]


def _client(requests: list[httpx.Request]) -> TrackClient:
    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, json={})

    return TrackClient("site", "key", "https://track.example", transport=httpx.MockTransport(answer))


def test_v2_output_sends_one_batch_then_each_anonymous_event_through_v1() -> None:
    requests: list[httpx.Request] = []
    output = TrackV2Output(_client(requests))
    units = output.units(MIXED)
    assert [([item.seq for item in unit.items], unit.batch) for unit in units] == [
        ([1, 3], True),
        ([2], False),
        ([4], False),
    ]
    assert all(output.send(unit).outcome is Outcome.OK for unit in units)
    assert [request.url.path for request in requests] == ["/api/v2/batch", "/api/v1/events", "/api/v1/events"]
    assert [item["action"] for item in json.loads(requests[0].content)["batch"]] == ["event", "identify"]
    assert output.claim_size(1000, 0.01) == 1000


def test_v1_output_sends_one_request_per_operation_and_objects_as_a_batch_of_one() -> None:
    requests: list[httpx.Request] = []
    relationship = claimed(
        5, "person", {"type": "person", "identifiers": PERSON, "action": "add_relationships", "cio_relationships": []}
    )
    output = TrackV1Output(_client(requests))
    units = output.units([*MIXED, relationship])
    assert [unit.batch for unit in units] == [False, False, True, False, False]
    for unit in units:
        assert output.send(unit).outcome is Outcome.OK
    assert [(request.method, request.url.path) for request in requests] == [
        ("POST", "/api/v1/customers/u1/events"),
        ("POST", "/api/v1/events"),
        ("POST", "/api/v2/batch"),
        ("POST", "/api/v1/events"),
        ("POST", "/api/v2/batch"),  # no v1 equivalent: v2, alone
    ]
    assert output.claim_size(1000, 0.01) == 500  # five seconds of requests at 100/s


@pytest.mark.parametrize(
    ("api", "kind", "linger_s"),
    [("v1", TrackV1Output, 0.1), ("v2", TrackV2Output, 0.1), ("pipelines", PipelinesOutput, 1.0)],
)
def test_the_registry_chooses_the_output_by_customerio_api(api: str, kind: type, linger_s: float) -> None:
    config = OutputConfig(
        region="eu",
        track_credentials=lambda: ("site", "key"),
        pipelines_key=lambda: "pk",
        transport=httpx.MockTransport(lambda request: httpx.Response(200, json={})),
    )
    output = create_output(api, config)
    try:
        assert type(output) is kind and output.name == api and output.linger_s == linger_s
        assert output.workspace.base_url in ("https://track-eu.customer.io", "https://cdp-eu.customer.io")
    finally:
        output.close()
    assert list(OUTPUTS) == ["v1", "v2", "pipelines"]


def test_an_output_reads_only_its_own_credentials() -> None:
    def no_track_credentials() -> tuple[str, str]:
        raise AssertionError("the Pipelines output asked for the Track credentials")

    output = create_output("pipelines", OutputConfig(track_credentials=no_track_credentials, pipelines_key=lambda: "k"))
    assert output.workspace == ("k", "https://cdp.customer.io")  # auto: the Pipelines API has no region lookup
    output.close()


def test_an_unknown_output_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown CUSTOMERIO_API 'smoke'"):
        create_output("smoke", OutputConfig())  # one of v1, v2, pipelines


def test_mapping_gives_every_operation_its_kind() -> None:
    config = MappingConfig(group_type_map={"company": "1"})
    states: dict[str, PersonState] = {}
    kinds = []
    for raw in (
        {
            "event": "$pageview",
            "distinct_id": "anon-1",
            "properties": {"$is_identified": False, "$current_url": "https://x.io"},
        },
        {"event": "$groupidentify", "distinct_id": "u1", "properties": {"$group_type": "company", "$group_key": "c1"}},
        {"event": "paid", "distinct_id": "u1", "properties": {"$groups": {"company": "c1"}}},
    ):
        mapped = map_event(parse_event({"timestamp": 1_704_067_200, **raw}), states, config)
        states.update(mapped.states)
        kinds.append([(op.kind, op.action) for op in mapped.operations])
        assert all(op.payload["type"] == op.kind for op in mapped.operations)
    assert kinds == [
        [("anonymous", "page")],
        [("object", "identify")],
        [("person", "identify"), ("person", "add_relationships"), ("person", "event")],
    ]


def test_adopted_anonymous_events_become_person_events_with_the_same_dedupe_id() -> None:
    anonymous = Operation(
        "anon-1",
        {
            "type": "anonymous",
            "action": "page",
            "anonymous_id": "anon-1",
            "name": "https://x.io",
            "id": "01H",
            "timestamp": 5,
            "attributes": {"k": 1},
        },
        kind="anonymous",
    )
    person = Operation("anon-1", {"type": "person", "identifiers": {"id": "anon-1"}, "action": "identify"})
    (adopted,) = adopted_events([anonymous, person], {"id": "u1"}, "u1")
    assert adopted.kind == "person" and adopted.person_key == "u1"
    assert adopted.payload == {
        "type": "person",
        "identifiers": {"id": "u1"},
        "action": "page",
        "name": "https://x.io",
        "id": "01H",
        "timestamp": 5,
        "attributes": {"k": 1},
    }
