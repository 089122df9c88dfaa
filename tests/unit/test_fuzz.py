"""Bad input, fuzzed (hypothesis) and from a corpus, against the parsers and the HTTP endpoints.

The promises: no 5xx and no crash for any input; a rejected request leaves the outbox
and the person state exactly as they were; whatever is accepted becomes operations
whose JSON Customer.io can parse.

Corpus cases below cover the input classes that once broke the service (lone
surrogates, numbers that overflow to infinity, nesting near the recursion limit):
they are refused with a 400 (or skipped as invalid lines by ``send``).
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from posthog_customerio.config import load_settings
from posthog_customerio.mapping import MappingConfig, map_event
from posthog_customerio.operations import encode_payload
from posthog_customerio.runtime import Runtime
from posthog_customerio.samples import generate_session_events
from posthog_customerio.sources import EventParseError, loads_strict, parse_payload, read_events
from posthog_customerio.state import PersonState

from ..service import in_process_service

pytestmark = pytest.mark.reliability

MAX_BODY = 200_000
CAPTURE_PATHS = ["/webhook", "/batch", "/batch/", "/capture", "/capture/", "/e", "/e/", "/i/v0/e", "/i/v0/e/"]
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# the HTTP properties share one module-scoped app: no per-example fixture state to reset
FUZZ_HTTP = settings(
    FUZZ, max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
CONFIGS = [
    MappingConfig(),
    MappingConfig(identify_by_email=True, anonymous_mode="with_email"),
    MappingConfig(anonymous_events="person", events_to_send=frozenset({"purchase", "$pageview"})),
]

# -- strategies ---------------------------------------------------------------------------------
# text without lone surrogates: those are a known bug (see test_lone_surrogate_escape_...)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
SCALARS = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False) | TEXT
)
JSON = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4), max_leaves=20
)
EVENT_NAMES = (
    st.sampled_from(
        [
            "$pageview",
            "$screen",
            "$identify",
            "$create_alias",
            "$merge_dangerously",
            "$groupidentify",
            "$delete_person",
            "$set",
            "purchase",
            "signed_up",
            "",
        ]
    )
    | TEXT
)
IDS = (
    st.sampled_from(
        ["user-1", "user-2", "ann@example.com", "Ann@Example.com", "anon-1", "a/b c#d", "0", "null", "x" * 151]
    )
    | TEXT
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
)
TIMES = (
    st.sampled_from(
        [
            "2024-01-01T00:00:00Z",
            "2024-01-01 00:00:00",
            "2024-01-01T00:00:00.123+02:00",
            "1704067200",
            "1704067200000",
            "",
            "yesterday",
            "2024-13-45T99:00:00Z",
        ]
    )
    | st.integers(-(2**40), 2**50)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.none()
    | TEXT
)
PROPERTY_KEYS = (
    st.sampled_from(
        [
            "$set",
            "$set_once",
            "$unset",
            "$anon_distinct_id",
            "alias",
            "$current_url",
            "$screen_name",
            "$groups",
            "$group_type",
            "$group_key",
            "$group_set",
            "$is_identified",
            "email",
            "created_at",
            "$device_token",
            "$os",
            "distinct_id",
        ]
    )
    | TEXT
)
ATTRIBUTES = st.dictionaries(
    st.sampled_from(["email", "created_at", "plan", "name", "$ios_push_token"]) | TEXT, JSON, max_size=5
)
PROPERTIES = st.dictionaries(PROPERTY_KEYS, JSON | ATTRIBUTES | IDS | TIMES, max_size=8)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """Flat (plugin / capture / export) events with plausible keys and any-typed values."""
    event: dict[str, Any] = {}
    for key, values in (
        ("event", EVENT_NAMES | JSON),
        ("distinct_id", IDS | JSON),
        ("timestamp", TIMES),
        ("uuid", st.uuids().map(str) | TEXT | JSON),
        ("properties", PROPERTIES | JSON),
        ("$set", ATTRIBUTES | JSON),
        ("$set_once", ATTRIBUTES),
        ("set", ATTRIBUTES),
        ("person_properties", ATTRIBUTES | JSON),
        ("person", st.fixed_dictionaries({"properties": ATTRIBUTES}) | JSON),
    ):
        if draw(st.integers(0, 9)) < (8 if key in ("event", "distinct_id") else 4):
            event[key] = draw(values)
    return event


@st.composite
def payloads(draw: st.DrawFn) -> Any:
    """Any body shape the endpoints accept, with fuzzed events inside, or plain JSON."""
    kind = draw(st.sampled_from(["flat", "hog", "list", "batch", "json"]))
    if kind == "flat":
        return draw(events())
    if kind == "hog":
        return {"event": draw(events()), "person": draw(st.fixed_dictionaries({"properties": ATTRIBUTES}) | JSON)}
    if kind == "list":
        return draw(st.lists(events() | st.builds(lambda e: {"event": e}, events()), max_size=4))
    if kind == "batch":
        return {"api_key": draw(TEXT), "batch": draw(st.lists(events(), max_size=4) | JSON)}
    return draw(JSON)


def strict_json_ok(text: str) -> None:
    """What we send must be JSON Customer.io can parse: strict, UTF-8 encodable."""
    text.encode("utf-8")
    loads_strict(text)


# -- the parsers and the mapping -------------------------------------------------------------------
@FUZZ
@given(payloads())
def test_parse_payload_accepts_or_names_the_problem_and_the_mapping_never_crashes(payload: Any) -> None:
    try:
        parsed = parse_payload(payload)
    except EventParseError as exc:
        assert str(exc)
        return
    for config in CONFIGS:
        states: dict[str, PersonState] = {}
        for event in parsed:
            mapped = map_event(event, states, config)
            states.update(mapped.states)
            for operation in mapped.operations:
                strict_json_ok(encode_payload(operation.payload))


@FUZZ
@given(st.binary(max_size=300) | st.builds(lambda p, n: json.dumps(p).encode()[:n], payloads(), st.integers(0, 400)))
def test_loads_strict_raises_only_what_the_receiver_handles(body: bytes) -> None:
    with contextlib.suppress(ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        loads_strict(body)


@FUZZ
@given(
    st.lists(
        st.one_of(TEXT, st.builds(json.dumps, payloads()), st.builds(lambda p: json.dumps(p)[:-3], payloads())),
        max_size=8,
    )
)
def test_read_events_reports_bad_lines_and_goes_on(lines: list[str]) -> None:
    items = list(read_events(line + "\n" for line in lines))
    for item in items:
        assert (item.event is None) != (item.error is None)
        assert item.location


# -- the HTTP endpoints ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Runtime]]:
    """The receiver in-process (no delivery), with a small MAX_BODY_BYTES."""
    data_dir: Path = tmp_path_factory.mktemp("fuzz-data")
    settings_ = load_settings(
        {
            "customerio_site_id": "fuzz-site",
            "customerio_api_key": "fuzz-key",
            "customerio_track_url": "http://127.0.0.1:9",
            "posthog_customerio_data_dir": data_dir,
            "sqlite_synchronous": "NORMAL",
            "max_body_bytes": MAX_BODY,
        }
    )
    runtime = Runtime(settings_)
    with in_process_service(runtime, close_runtime=False, raise_server_exceptions=False) as test_client:
        yield test_client, runtime
    runtime.close()


def snapshot(runtime: Runtime) -> tuple[Any, ...]:
    with runtime.db.reading() as conn:
        outbox = conn.execute("SELECT COUNT(*), COALESCE(MAX(seq), 0), COALESCE(SUM(size), 0) FROM outbox").fetchone()
        persons = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(digests) + LENGTH(extra)), 0) FROM persons"
        ).fetchone()
    return (*outbox, *persons)


def post(client: TestClient, path: str, body: bytes, headers: dict[str, str] | None = None, query: str = "") -> Any:
    return client.post(path + query, content=body, headers=headers or {"Content-Type": "application/json"})


def check_answer(
    client_runtime: tuple[TestClient, Runtime],
    path: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    query: str = "",
) -> int:
    """POST; no 5xx; a refused request changed nothing; an error names the problem."""
    client, runtime = client_runtime
    before = snapshot(runtime)
    response = post(client, path, body, headers, query)
    assert response.status_code < 500, (path, body[:200], response.status_code, response.text[:300])
    if response.status_code == 200:
        assert response.json()["status"] == 1
    else:
        assert response.status_code in (400, 401, 413, 415, 422), response.status_code
        assert snapshot(runtime) == before, f"a {response.status_code} request changed the outbox or state"
        assert response.json().get("error") or response.json().get("detail")
    return response.status_code


ENCODINGS = st.sampled_from(["none", "gzip", "gzip-js", "bad-gzip", "br", "identity", "form", "base64-query"])


@FUZZ_HTTP
@given(
    path=st.sampled_from(CAPTURE_PATHS),
    payload=payloads(),
    cut=st.none() | st.integers(0, 500),
    encoding=ENCODINGS,
    content_type=st.sampled_from(["application/json", "text/plain", "", "application/x-www-form-urlencoded"]),
)
def test_endpoints_answer_4xx_or_200_and_refusals_change_nothing(
    client: tuple[TestClient, Runtime], path: str, payload: Any, cut: int | None, encoding: str, content_type: str
) -> None:
    body = json.dumps(payload).encode()
    if cut is not None:
        body = body[:cut]
    headers = {"Content-Type": content_type} if content_type else {}
    query = ""
    if encoding == "gzip":
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    elif encoding == "gzip-js":
        body, query = gzip.compress(body), "?compression=gzip-js"
    elif encoding == "bad-gzip":
        body, headers["Content-Encoding"] = gzip.compress(body)[:-5], "gzip"
    elif encoding in ("br", "identity"):
        headers["Content-Encoding"] = encoding
    elif encoding == "form":
        body = b"data=" + base64.b64encode(body)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    elif encoding == "base64-query":
        body, query = base64.b64encode(body), "?compression=base64"
    check_answer(client, path, body, headers, query)


@FUZZ_HTTP
@given(path=st.sampled_from(CAPTURE_PATHS), body=st.binary(max_size=400))
def test_endpoints_survive_random_bytes(client: tuple[TestClient, Runtime], path: str, body: bytes) -> None:
    check_answer(client, path, body)


# -- the corpus ---------------------------------------------------------------------------------------
def _valid_bodies() -> list[bytes]:
    webhook = generate_session_events(people=3, seed=5, events_per_person=4, shape="webhook")
    return [json.dumps(webhook[0]).encode(), json.dumps(webhook).encode()]


def _nested(depth: int, open_: str = "[", close: str = "]") -> bytes:
    return (open_ * depth + close * depth).encode()


def _event(**overrides: Any) -> dict[str, Any]:
    event = {
        "event": "clicked",
        "distinct_id": "user-1",
        "timestamp": "2024-01-01T00:00:00Z",
        "uuid": "0190b7c2-8a6f-7b3e-9b1a-1234567890ab",
        "properties": {"plan": "pro"},
    }
    event.update(overrides)
    return event


TRUNCATED = [(f"cut-{n}", body[:n]) for body in _valid_bodies()[:1] for n in (1, 2, 10, 57, 200, len(body) - 1)]
WRONG_TYPES = [
    ("event-number", _event(event=12)),
    ("event-list", _event(event=["x"])),
    ("event-empty", _event(event=" ")),
    ("id-list", _event(distinct_id=["user"])),
    ("id-dict", _event(distinct_id={"id": 1})),
    ("id-bool", _event(distinct_id=True)),
    ("id-null", _event(distinct_id=None)),
    ("id-blank", _event(distinct_id="  ")),
    ("time-list", _event(timestamp=[2024])),
    ("time-bool", _event(timestamp=False)),
    ("time-text", _event(timestamp="soon")),
    ("time-huge", _event(timestamp=10**30)),
    ("time-negative", _event(timestamp=-(10**20))),
    ("properties-string", _event(properties="plan=pro")),
    ("properties-list", _event(properties=[1, 2])),
    ("set-list", _event(properties={"$set": ["email"]})),
    ("set-once-string", _event(properties={"$set_once": "x"})),
    ("unset-number", _event(properties={"$unset": 5})),
    ("uuid-number", _event(uuid=12345)),
    ("person-string", {"event": _event(), "person": "ann"}),
    ("person-props-list", {"event": _event(), "person": {"properties": [1]}}),
    ("batch-not-list", {"api_key": "k", "batch": {"event": "x"}}),
    ("batch-of-strings", {"api_key": "k", "batch": ["a", "b"]}),
    ("top-level-string", "event"),
    ("top-level-number", 42),
    ("top-level-null", None),
    ("list-of-null", [None]),
    ("one-bad-in-list", [_event(), _event(distinct_id=None)]),
]
NOT_UTF8 = [
    ("latin-1", '{"event": "café", "distinct_id": "u"}'.encode("latin-1")),
    ("overlong", b'{"event": "\xc0\xaf", "distinct_id": "u"}'),
    ("invalid-continuation", b'{"event": "\xe2\x28\xa1", "distinct_id": "u"}'),
    ("raw-0xff", b"\xff\xfe\xfd"),
    ("nul-bytes", b"\x00" * 64),
]
NOT_JSON = [
    ("empty", b""),
    ("spaces", b"   \n"),
    ("nan", b'{"event": "x", "distinct_id": "u", "properties": {"v": NaN}}'),
    ("infinity", b'[{"event": "x", "distinct_id": "u", "timestamp": Infinity}]'),
    ("single-quotes", b"{'event': 'x'}"),
    ("trailing-comma", b'{"event": "x",}'),
    ("two-documents", b"{}{}"),
    ("nested-arrays-100k", _nested(100_000)),
    ("nested-objects-50k", ('{"a":' * 50_000 + "1" + "}" * 50_000).encode()),
]


@pytest.mark.parametrize("name,body", TRUNCATED, ids=[n for n, _ in TRUNCATED])
def test_truncated_bodies_are_400(client: tuple[TestClient, Runtime], name: str, body: bytes) -> None:
    assert check_answer(client, "/webhook", body) == 400


@pytest.mark.parametrize("name,payload", WRONG_TYPES, ids=[n for n, _ in WRONG_TYPES])
@pytest.mark.parametrize("path", ["/webhook", "/batch"])
def test_wrong_types_are_400(client: tuple[TestClient, Runtime], name: str, payload: Any, path: str) -> None:
    assert check_answer(client, path, json.dumps(payload).encode()) == 400


@pytest.mark.parametrize("name,body", NOT_UTF8 + NOT_JSON, ids=[n for n, _ in NOT_UTF8 + NOT_JSON])
def test_non_utf8_and_non_json_bodies_are_4xx(client: tuple[TestClient, Runtime], name: str, body: bytes) -> None:
    status = check_answer(client, "/webhook", body)
    assert status in (400, 413)


@pytest.mark.parametrize(
    "name,body",
    [
        ("utf-16", '{"event": "x", "distinct_id": "u"}'.encode("utf-16")),
        ("utf-32", '{"event": "x", "distinct_id": "u"}'.encode("utf-32")),
        ("utf-8-bom", b"\xef\xbb\xbf" + json.dumps(_event()).encode()),
    ],
)
def test_other_unicode_encodings_of_json_are_read_or_refused_cleanly(
    client: tuple[TestClient, Runtime], name: str, body: bytes
) -> None:
    assert check_answer(client, "/webhook", body) in (200, 400)  # json detects UTF-16/32 and BOMs (RFC 8259 8.1)


def test_huge_bodies_are_413(client: tuple[TestClient, Runtime]) -> None:
    big = json.dumps(_event(properties={"blob": "x" * MAX_BODY})).encode()
    assert check_answer(client, "/webhook", big) == 413
    bomb = gzip.compress(b"[" + b" " * (50 * MAX_BODY) + b"]")  # 10 MB of spaces in a few kB
    assert check_answer(client, "/batch", bomb, {"Content-Encoding": "gzip", "Content-Type": "application/json"}) == 413
    assert check_answer(client, "/batch", bomb, query="?compression=gzip-js") == 413
    many = json.dumps([_event(uuid=None, properties={"n": n}) for n in range(MAX_BODY // 100)]).encode()
    assert check_answer(client, "/webhook", many) == 413


def test_big_but_allowed_values_are_accepted_and_fit_customerio_limits(client: tuple[TestClient, Runtime]) -> None:
    payload = [
        _event(
            uuid=None,
            distinct_id="big-1",
            properties={
                "huge_text": "é" * 40_000,
                "many": {f"k{n}": n for n in range(2_000)},
                "$set": {"bio": "x" * 5_000},
            },
        )
    ]
    body = json.dumps(payload, ensure_ascii=False).encode()
    assert len(body) < MAX_BODY
    assert check_answer(client, "/webhook", body) == 200
    _, runtime = client
    with runtime.db.reading() as conn:
        sizes = [size for (size,) in conn.execute("SELECT size FROM outbox WHERE person_key = 'big-1'")]
    assert sizes and max(sizes) <= 32_000  # cut to Customer.io's per-operation limit, not dead-lettered


def test_moderately_deep_nesting_is_accepted_or_refused_cleanly(client: tuple[TestClient, Runtime]) -> None:
    for depth in (50, 200, 500):
        payload = json.dumps(_event(properties={"deep": json.loads(_nested(depth))})).encode()
        assert check_answer(client, "/webhook", payload) in (200, 400)


# -- inputs that once broke the service ---------------------------------------------------------------
@pytest.mark.parametrize("where", ["property", "set", "event-name", "distinct-id"])
def test_lone_surrogate_escape_is_refused_with_400_not_500(client: tuple[TestClient, Runtime], where: str) -> None:
    event = {
        "property": _event(properties={"s": "\ud800"}),
        "set": _event(properties={"$set": {"s": "\ud800"}}),
        "event-name": _event(event="x\ud800"),
        "distinct-id": _event(distinct_id="u\udc00"),
    }[where]
    body = json.dumps(event).encode()  # ensure_ascii: the surrogate travels as the escape \ud800
    assert check_answer(client, "/webhook", body) in (200, 400)


def test_numbers_that_overflow_to_infinity_never_reach_customerio_as_non_json(
    client: tuple[TestClient, Runtime],
) -> None:
    _, runtime = client
    body = b'{"event": "x", "distinct_id": "inf-1", "properties": {"v": 1e400, "$set": {"w": -1e999}}}'
    status = check_answer(client, "/webhook", body)
    if status == 200:
        with runtime.db.reading() as conn:
            rows = conn.execute("SELECT payload FROM outbox WHERE person_key = 'inf-1'").fetchall()
        for (payload,) in rows:
            strict_json_ok(payload)
