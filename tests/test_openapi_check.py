"""The OpenAPI request validator (tests/openapi_check.py) does what it claims.

Each expectation below was checked against the spec itself; where the spec allows
something surprising, the test asserts what the spec says and a comment says so.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .openapi_check import (
    KNOWN_SPEC_DEFECTS,
    SPEC_PATH,
    TrackApiValidator,
    get_validator,
    requires_spec,
    spec_available,
)

pytestmark = requires_spec

ULID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def validator() -> TrackApiValidator:
    return get_validator()


@pytest.fixture(scope="module")
def raw() -> TrackApiValidator:
    """The spec exactly as published, without the KNOWN_SPEC_DEFECTS corrections."""
    return get_validator(corrected=False)


def op(action: str, **fields: Any) -> dict[str, Any]:
    return {"type": "person", "identifiers": {"id": "u1"}, "action": action, **fields}


VALID_BATCH = {
    "batch": [
        op(
            "identify",
            attributes={"email": "ada@example.com", "plan": "pro", "score": 1.5, "tags": ["a"], "gone": None},
            timestamp=1_700_000_000,
        ),
        op("event", name="signed_up", id=ULID, timestamp=1_700_000_001, attributes={"plan": "pro", "nested": {"a": 1}}),
        {
            "type": "person",
            "identifiers": {"email": "ada@example.com"},
            "action": "page",
            "name": "https://example.com/pricing",
            "attributes": {"url": "https://example.com/pricing", "path": "/pricing", "title": "Pricing"},
        },
        {
            "type": "person",
            "identifiers": {"cio_id": "cio_03000001"},
            "action": "screen",
            "name": "Home",
            "timestamp": 1_700_000_002,
        },
    ]
}


# --- setup -----------------------------------------------------------------------------------
def test_the_spec_is_found_and_loaded_once() -> None:
    assert spec_available() and SPEC_PATH.is_file()
    assert get_validator() is get_validator()
    assert get_validator(corrected=False) is not get_validator()


def test_without_the_spec_the_marker_skips_with_a_reason() -> None:
    env = {**os.environ, "CUSTOMERIO_OPENAPI_SPEC": "/nonexistent/spec.json"}
    code = (
        "from tests.openapi_check import SPEC_PATH, spec_available, requires_spec as r;"
        "print(SPEC_PATH, spec_available(), r.args[0], r.kwargs['reason'], sep='|')"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    path, available, condition, reason = out.stdout.strip().split("|")
    assert (path, available, condition) == ("/nonexistent/spec.json", "False", "True")
    assert "not found at /nonexistent/spec.json" in reason and "../shared/reference" in reason
    assert "https://docs.customer.io/files/journeys-track.json" in reason and "CUSTOMERIO_OPENAPI_SPEC=" in reason


def test_where_the_spec_is_required_its_absence_fails_the_run() -> None:
    env = {**os.environ, "CUSTOMERIO_OPENAPI_SPEC": "/nonexistent/spec.json", "POSTHOG_CUSTOMERIO_REQUIRE_SPEC": "1"}
    collect = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only", __file__]
    required = subprocess.run(collect, cwd=REPO, env=env, capture_output=True, text=True)
    assert required.returncode != 0
    assert "spec not found at /nonexistent/spec.json" in required.stdout + required.stderr
    optional = subprocess.run(
        collect, cwd=REPO, env={**env, "POSTHOG_CUSTOMERIO_REQUIRE_SPEC": ""}, capture_output=True, text=True
    )
    assert optional.returncode == 0, optional.stdout + optional.stderr


# --- v2 --------------------------------------------------------------------------------------
def test_a_valid_v2_batch_of_identify_event_page_screen_passes(
    validator: TrackApiValidator, raw: TrackApiValidator
) -> None:
    # v2 identify attributes and event attributes are open objects: floats, lists, nulls, nesting all pass.
    assert validator.validate("POST", "/api/v2/batch", VALID_BATCH) == []
    assert raw.validate("POST", "/api/v2/batch", VALID_BATCH) == []
    validator.assert_valid("POST", "/api/v2/batch", VALID_BATCH)


def test_a_float_timestamp_fails_at_its_json_pointer(validator: TrackApiValidator) -> None:
    body = {"batch": [op("identify"), op("event", name="x", timestamp=1_700_000_000.5)]}
    assert validator.validate("POST", "/api/v2/batch", body) == [
        "body at /batch/1/timestamp: 1700000000.5 is not of type 'integer'"
    ]


def test_two_identifiers_on_one_op_fail(validator: TrackApiValidator) -> None:
    # person_common.identifiers is oneOf {id} / {email} / {phone} / {cio_id}, each with "required":
    # an op naming two identifiers matches two alternatives, which oneOf forbids.
    body = {"batch": [{**op("event", name="x"), "identifiers": {"id": "u1", "email": "a@b.co"}}]}
    problems = validator.validate("POST", "/api/v2/batch", body)
    assert problems == [
        'body at /batch/0/identifiers: {"id": "u1", "email": "a@b.co"} matches 2 oneOf alternatives '
        "(id, email): exactly one is allowed"
    ]
    assert validator.validate("POST", "/api/v2/batch", {"batch": [{**op("event", name="x"), "identifiers": {}}]})


def test_missing_identifiers_fail(validator: TrackApiValidator) -> None:
    body = {"batch": [{"type": "person", "action": "identify"}]}
    assert validator.validate("POST", "/api/v2/batch", body) == [
        "body at /batch/0: 'identifiers' is a required property"
    ]


def test_a_batch_body_without_batch_is_allowed_by_the_spec(validator: TrackApiValidator) -> None:
    # Surprising but true: the v2 batch schema is {"type": "object", "properties": {"batch": ...}} with
    # no "required" and no additionalProperties limit, so {} and {"ops": [...]} are valid bodies; and no
    # Track operation marks its requestBody "required", so no body at all is valid too.
    assert validator.validate("POST", "/api/v2/batch", {}) == []
    assert validator.validate("POST", "/api/v2/batch", {"ops": [op("identify")]}) == []
    assert validator.validate("POST", "/api/v2/batch", None) == []
    # ... but when "batch" is there it must be an array of valid ops.
    assert validator.validate("POST", "/api/v2/batch", {"batch": {"0": op("identify")}}) == [
        "body at /batch: {'0': {'type': 'person', 'identifiers': {'id': 'u1'}, 'action': 'identify'}}"
        " is not of type 'array'"
    ]
    assert validator.validate("POST", "/api/v2/batch", []) == ["body: [] is not of type 'object'"]


@pytest.mark.parametrize(
    "dedupe_id",
    [
        "not-a-ulid",
        "8" + ULID[1:],  # first character above 7 overflows 128 bits
        ULID[:-1],  # 25 characters
        ULID[:-1] + "U",  # U is not in Crockford's alphabet (nor I, L, O)
    ],
)
def test_an_event_with_an_invalid_ulid_id_fails(validator: TrackApiValidator, dedupe_id: str) -> None:
    for action in ("event", "page", "screen"):  # person_event/page/screen.id: {"format": "ULID"}
        body = {"batch": [op(action, name="x", id=dedupe_id)]}
        assert validator.validate("POST", "/api/v2/batch", body) == [
            f"body at /batch/0/id: \"{dedupe_id}\" is not a valid 'ULID'"
        ]
    # v1 events spell the format "ulid" (dedupe_id): checked just the same.
    assert validator.validate("POST", "/api/v1/customers/u1/events", {"name": "x", "id": dedupe_id}) == [
        f"body at /id: \"{dedupe_id}\" is not a valid 'ulid'"
    ]


def test_a_valid_ulid_passes_in_v1_and_v2(validator: TrackApiValidator) -> None:
    assert (
        validator.validate("POST", "/api/v2/batch", {"batch": [op("event", name="x", id="7ZZZZZZZZZZZZZZZZZZZZZZZZZ")]})
        == []
    )
    assert validator.validate("POST", "/api/v1/customers/u1/events", {"name": "x", "id": ULID}) == []
    assert (
        validator.validate("POST", "/api/v1/customers/u1/events", {"name": "x", "id": ULID.lower()}) == []
    )  # Crockford: any case


def test_v2_entity_takes_a_single_op(validator: TrackApiValidator) -> None:
    assert validator.validate("POST", "/api/v2/entity", op("identify", attributes={"plan": "pro"})) == []
    assert validator.validate("POST", "/api/v2/entity", op("event", name="x", id=ULID, timestamp=1_700_000_000)) == []
    assert validator.validate("POST", "/api/v2/entity", op("event", name="x", timestamp=1.5)) == [
        "body at /timestamp: 1.5 is not of type 'integer'"
    ]
    assert validator.validate("POST", "/api/v2/entity", VALID_BATCH)  # a batch is not an entity op


def test_v2_merge_and_unknown_actions(validator: TrackApiValidator) -> None:
    merge = {"type": "person", "action": "merge", "primary": {"id": "a"}, "secondary": {"email": "b@x.io"}}
    assert validator.validate("POST", "/api/v2/batch", {"batch": [merge]}) == []
    assert validator.validate(
        "POST", "/api/v2/batch", {"batch": [{**merge, "secondary": {"id": "b", "email": "b@x.io"}}]}
    )
    assert validator.validate("POST", "/api/v2/batch", {"batch": [op("identfy")]})


# --- v1 --------------------------------------------------------------------------------------
def test_v1_identify_with_an_encoded_identifier_passes(validator: TrackApiValidator, raw: TrackApiValidator) -> None:
    body = {
        "email": "ada@example.com",
        "plan": "pro",
        "logins": 3,
        "vip": True,
        "created_at": 1_700_000_000,
        "_timestamp": 1_700_000_001,
    }
    assert validator.validate("PUT", "/api/v1/customers/user%2F1", body) == []
    assert validator.validate("PUT", "/api/v1/customers/ada%40example.com?x=1", body) == []
    # As published, the identifier is oneOf three plain strings (id, email, cio_id), so every value
    # matches all three: the raw spec rejects every v1 path identifier (a KNOWN_SPEC_DEFECTS entry).
    assert raw.validate("PUT", "/api/v1/customers/user%2F1", body) == [
        "path parameter identifier='user/1': \"user/1\" matches 3 oneOf alternatives (id, email, cio_id): "
        "exactly one is allowed"
    ]


def test_v1_identify_attributes_are_strings_integers_or_booleans(validator: TrackApiValidator) -> None:
    # v1 additionalProperties: oneOf string / integer / boolean: no floats, nulls, lists or objects.
    problems = validator.validate("PUT", "/api/v1/customers/u1", {"score": 1.5, "gone": None, "tags": ["a"], "o": {}})
    assert sorted(problems) == sorted(
        f"body at /{name}: {value} matches none of oneOf (string, integer, boolean)"
        for name, value in (("score", "1.5"), ("gone", "null"), ("tags", '["a"]'), ("o", "{}"))
    )
    assert validator.validate("PUT", "/api/v1/customers/u1", {"email": "not-an-email"}) == [
        "body at /email: \"not-an-email\" is not a valid 'email'"
    ]


def test_v1_identifier_must_be_one_encoded_segment(validator: TrackApiValidator) -> None:
    assert validator.validate("PUT", "/api/v1/customers/user/1", {}) == [
        "no path in the spec matches /api/v1/customers/user/1"
    ]
    assert validator.validate("PUT", "/api/v1/customers/user 1", {}) == [
        "path '/api/v1/customers/user 1' is not percent-encoded"
    ]
    assert validator.validate("PUT", "/api/v1/customers/%FF", {}) == [
        "path parameter identifier: '%FF' is not percent-encoded UTF-8"
    ]


def test_a_v1_event_without_name_fails(validator: TrackApiValidator) -> None:
    assert validator.validate("POST", "/api/v1/customers/u1/events", {"data": {"plan": "pro"}}) == [
        "body: 'name' is a required property"
    ]
    assert validator.validate("POST", "/api/v1/customers/u1/events", {"name": "x", "data": {"a": [1.5, None]}}) == []


def test_v1_event_timestamps_are_integer_unix_seconds(validator: TrackApiValidator) -> None:
    path = "/api/v1/customers/u1/events"
    assert validator.validate("POST", path, {"name": "x", "timestamp": 1.5}) == [
        "body at /timestamp: 1.5 is not of type 'integer'"
    ]
    # format "unix timestamp" is checked as seconds: a millisecond timestamp is caught.
    assert validator.validate("POST", path, {"name": "x", "timestamp": 1_700_000_000_000}) == [
        "body at /timestamp: 1700000000000 is not a valid 'unix timestamp'"
    ]


def test_v1_page_and_screen_events(validator: TrackApiValidator, raw: TrackApiValidator) -> None:
    assert validator.validate("POST", "/api/v1/customers/u1/events", {"name": "https://x.io/", "type": "page"}) == []
    # The published 'Mobile screen view' alternative requires anonymous_id even for a named person.
    screen = {"name": "Home", "type": "screen"}
    assert validator.validate("POST", "/api/v1/customers/u1/events", screen) == []
    assert "body: 'anonymous_id' is a required property" in raw.validate("POST", "/api/v1/customers/u1/events", screen)
    # Anonymous page/screen views match two overlapping oneOf alternatives as published.
    page = {"name": "https://x.io/", "type": "page", "anonymous_id": "anon-1"}
    assert validator.validate("POST", "/api/v1/events", page) == []
    assert raw.validate("POST", "/api/v1/events", page) == [
        'body: {"name": "https://x.io/", "type": "page", "anonymous_id": "anon-1"} matches 2 oneOf alternatives '
        "(Standard anonymous event, Page view): exactly one is allowed"
    ]


def test_get_region_without_a_body_passes(validator: TrackApiValidator) -> None:
    assert validator.validate("GET", "/api/v1/accounts/region", None) == []
    assert validator.validate("get", "https://track-eu.customer.io/api/v1/accounts/region?check=1", None) == []
    assert validator.validate("GET", "/api/v1/accounts/region", {"x": 1}) == [
        "GET /api/v1/accounts/region takes no body"
    ]


def test_unknown_paths_and_methods_fail(validator: TrackApiValidator) -> None:
    assert validator.validate("POST", "/api/v9/nothing", {}) == ["no path in the spec matches /api/v9/nothing"]
    assert validator.validate("POST", "/api/v1/customers", {}) == ["no path in the spec matches /api/v1/customers"]
    assert validator.validate("DELETE", "/api/v2/batch", None) == [
        "DELETE is not defined for /api/v2/batch (only POST)"
    ]
    assert validator.validate("POST", "/api/v1/customers/u1", {}) == [
        "POST is not defined for /api/v1/customers/{identifier} (only DELETE, PUT)"
    ]


def test_v1_merge_customers(validator: TrackApiValidator, raw: TrackApiValidator) -> None:
    good = {"primary": {"id": "a"}, "secondary": {"email": "b@x.io"}}
    assert validator.validate("POST", "/api/v1/merge_customers", good) == []
    assert (
        validator.validate(
            "POST", "/api/v1/merge_customers", {"primary": {"cio_id": "cio_1"}, "secondary": {"id": "b"}}
        )
        == []
    )
    assert validator.validate("POST", "/api/v1/merge_customers", {"primary": {"id": "a"}}) == [
        "body: 'secondary' is a required property"
    ]
    assert validator.validate(
        "POST", "/api/v1/merge_customers", {**good, "primary": {"id": "a", "email": "a@x.io"}}
    ) == ["body at /primary: {'id': 'a', 'email': 'a@x.io'} has too many properties"]
    assert validator.validate("POST", "/api/v1/merge_customers", {**good, "primary": {}}) == [
        "body at /primary: {} matches none of oneOf (ID, email, cio_id)"
    ]
    assert validator.validate("POST", "/api/v1/merge_customers", {**good, "secondary": {"phone": "+1555"}})
    # As published, primary/secondary alternatives lack "required", so {"id": "a"} matches all three
    # and the raw spec rejects every merge (a KNOWN_SPEC_DEFECTS entry).
    assert raw.validate("POST", "/api/v1/merge_customers", good) == [
        'body at /primary: {"id": "a"} matches 3 oneOf alternatives (ID, email, cio_id): exactly one is allowed',
        'body at /secondary: {"email": "b@x.io"} matches 3 oneOf alternatives (ID, email, cio_id):'
        " exactly one is allowed",
    ]


def test_path_parameters_are_checked_against_their_schema(validator: TrackApiValidator) -> None:
    # segment_id is {"type": "integer", "format": "int32"}: the segment is checked as a number.
    assert validator.validate("POST", "/api/v1/segments/12/add_customers", {"ids": ["a"]}) == []
    assert validator.validate("POST", "/api/v1/segments/abc/add_customers", {"ids": ["a"]}) == [
        "path parameter segment_id='abc': 'abc' is not of type 'integer'"
    ]
    assert validator.validate("DELETE", "/api/v1/customers/u1/devices/tok%2Fen", None) == []


def test_assert_valid_lists_the_problems_with_method_path_and_a_truncated_body(validator: TrackApiValidator) -> None:
    body = {"batch": [op("event", name="x" * 1000, timestamp=1.5)]}
    with pytest.raises(AssertionError) as caught:
        validator.assert_valid("POST", "/api/v2/batch", body)
    message = str(caught.value)
    assert message.startswith('POST /api/v2/batch {"batch": [{"type": "person"')
    assert "body at /batch/0/timestamp: 1.5 is not of type 'integer'" in message
    assert "x" * 300 not in message and len(message) < 600


def test_every_known_defect_is_documented() -> None:
    assert len(KNOWN_SPEC_DEFECTS) == 4 and all(len(why) > 80 for why in KNOWN_SPEC_DEFECTS.values())
