"""Pipelines API: encoders, byte packing, the client, and the sandbox's emulation (through real HTTP)."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from posthog_customerio.output import pipelines as pl
from posthog_customerio.output.base import AuthError, Outcome
from posthog_customerio.sandbox import SandboxServer
from posthog_customerio.sandbox.pipelines import MAX_CALL_BYTES as SANDBOX_CALL_BYTES

KEY = "sandbox"


@pytest.fixture
def pipes(sandbox: SandboxServer) -> SandboxServer:
    """The shared sandbox with its Pipelines state emptied."""
    sandbox.pipelines.reset()
    return sandbox


def _auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def _post(server: SandboxServer, path: str, body: Any, *, strict: bool = True, key: str = KEY) -> httpx.Response:
    headers = {**_auth(key), "Content-Type": "application/json"}
    if strict:
        headers["X-Strict-Mode"] = "1"
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(server.url + path, content=content, headers=headers, timeout=30)


def _view(server: SandboxServer, name: str) -> Any:
    return httpx.get(f"{server.url}/_sandbox/pipelines/{name}", timeout=30).json()


# --------------------------------------------------------------------------- encoders


def test_iso_timestamp_forms() -> None:
    assert pl.iso_timestamp(0) == "1970-01-01T00:00:00.000Z"
    assert pl.iso_timestamp(1714564800.5) == "2024-05-01T12:00:00.500Z"
    assert pl.iso_timestamp("2024-05-01T14:00:00+02:00") == "2024-05-01T12:00:00.000Z"
    assert pl.iso_timestamp("2024-05-01T12:00:00Z") == "2024-05-01T12:00:00.000Z"


ENCODED = [
    (
        pl.identify("u1", {"plan": "pro"}, anonymous_id="a1", message_id="m1", timestamp=0),
        {
            "type": "identify",
            "userId": "u1",
            "anonymousId": "a1",
            "traits": {"plan": "pro"},
            "messageId": "m1",
            "timestamp": "1970-01-01T00:00:00.000Z",
        },
    ),
    (
        pl.track("Signed up", {"n": 1}, anonymous_id="a1", message_id="m2"),
        {"type": "track", "event": "Signed up", "anonymousId": "a1", "properties": {"n": 1}, "messageId": "m2"},
    ),
    (
        pl.page("Home", {"url": "https://x/"}, user_id="u1"),
        {"type": "page", "name": "Home", "userId": "u1", "properties": {"url": "https://x/"}},
    ),
    (pl.screen("Cart", user_id="u1"), {"type": "screen", "name": "Cart", "userId": "u1", "properties": {}}),
    (
        pl.group("acme", {"name": "Acme"}, object_type_id=2, user_id="u1", relationship_attributes={"role": "admin"}),
        {
            "type": "group",
            "groupId": "acme",
            "userId": "u1",
            "traits": {"name": "Acme", "objectTypeId": "2", "relationshipAttributes": {"role": "admin"}},
        },
    ),
    (pl.alias("u1", "old"), {"type": "alias", "userId": "u1", "previousId": "old"}),
    (pl.delete_person("u1"), {"type": "track", "event": "Delete Person", "userId": "u1", "properties": {}}),
    (pl.suppress_person("u1"), {"type": "track", "event": "User Suppressed", "userId": "u1", "properties": {}}),
    (pl.unsuppress_person("u1"), {"type": "track", "event": "User Unsuppressed", "userId": "u1", "properties": {}}),
    (
        pl.device_created_or_updated("u1", "tok", "ios", {"app_version": "1.2"}),
        {
            "type": "track",
            "event": "Device Created or Updated",
            "userId": "u1",
            "properties": {"app_version": "1.2"},
            "context": {"device": {"token": "tok", "type": "ios"}},
        },
    ),
    (
        pl.device_deleted("u1", "tok"),
        {
            "type": "track",
            "event": "Device Deleted",
            "userId": "u1",
            "properties": {},
            "context": {"device": {"token": "tok"}},
        },
    ),
    (
        pl.relationship_deleted("u1", "acme", 2),
        {
            "type": "track",
            "event": "Relationship Deleted",
            "userId": "u1",
            "properties": {"objectId": "acme", "objectTypeId": "2"},
        },
    ),
    (
        pl.object_deleted("acme", 2, anonymous_id="op-1"),
        {
            "type": "track",
            "event": "Object Deleted",
            "anonymousId": "op-1",
            "groupId": "acme",
            "properties": {"objectId": "acme", "objectTypeId": "2"},
        },
    ),
]


@pytest.mark.parametrize(("call", "expected"), ENCODED, ids=[e["type"] + ":" + e.get("event", "") for _, e in ENCODED])
def test_encoders(call: dict[str, Any], expected: dict[str, Any]) -> None:
    assert call == expected


def test_encoders_refuse_calls_without_identity() -> None:
    with pytest.raises(ValueError):
        pl.track("E")
    with pytest.raises(ValueError):
        pl.identify(traits={"a": 1})
    with pytest.raises(ValueError):
        pl.group("")
    with pytest.raises(ValueError):
        pl.device_deleted("u1", "")


# --------------------------------------------------------------------------- packing


def test_pack_splits_by_request_bytes_in_order() -> None:
    calls = ["x" * 10_000] * 120  # 1.2 MB of calls
    packing = pl.pack(calls)
    assert packing.too_large == []
    assert [i for batch in packing.batches for i in batch] == list(range(120))
    for batch in packing.batches:
        size = len(b'{"batch":[') + sum(10_000 for _ in batch) + len(batch) - 1 + len(b"]}")
        assert size <= pl.MAX_REQUEST_BYTES
    assert len(packing.batches) == 3  # 47 + 47 + 26: full batches, not one request per call


def test_pack_reports_too_large_calls_without_breaking_order() -> None:
    calls = ["a" * 100, "b" * (pl.MAX_CALL_BYTES + 1), "c" * 100, "é" * (pl.MAX_CALL_BYTES // 2 + 1)]
    packing = pl.pack(calls)
    assert packing.too_large == [1, 3]  # the last one is over in UTF-8 bytes, not in characters
    assert packing.batches == [[0, 2]]


def test_pack_limits_have_a_safety_margin_and_overhead_counts() -> None:
    assert min(pl.DOCUMENTED_CALL_BYTES, 32_000 + 1) > pl.MAX_CALL_BYTES
    assert pl.MAX_REQUEST_BYTES < pl.DOCUMENTED_REQUEST_BYTES
    calls = ["x" * 1000] * 10
    exact = len(b'{"batch":[]}') + 10 * 1000 + 9
    assert pl.pack(calls, max_request_bytes=exact).batches == [list(range(10))]
    assert len(pl.pack(calls, max_request_bytes=exact, overhead=1).batches) == 2
    assert [len(b) for b in pl.pack(calls, max_calls=4).batches] == [4, 4, 2]


# --------------------------------------------------------------------------- client against the sandbox


def test_client_check_passes_and_bad_key_raises(pipes: SandboxServer) -> None:
    with pl.PipelinesClient(KEY, pipes.url) as client:
        client.check()
    with pl.PipelinesClient("wrong", pipes.url) as client, pytest.raises(AuthError):
        client.check()
    logged = _view(pipes, "requests")
    assert [r["status"] for r in logged] == [200, 401]
    assert all(r["strict"] for r in logged)  # X-Strict-Mode on every request
    assert _view(pipes, "people") == []  # check writes nothing


def test_client_batch_round_trip(pipes: SandboxServer) -> None:
    calls = [
        pl.track("Viewed", {"p": 1}, anonymous_id="anon-1", message_id="e1", timestamp=1714564800),
        pl.identify("u1", {"email": "u1@example.com"}, anonymous_id="anon-1", message_id="i1"),
        pl.group("acme", {"name": "Acme"}, object_type_id="1", user_id="u1", message_id="g1"),
        pl.page("Home", {"url": "https://x/"}, user_id="u1", message_id="p1"),
    ]
    with pl.PipelinesClient(KEY, pipes.url) as client:
        texts = [pl.encode_call(c) for c in calls]
        packing = pl.pack(texts, overhead=client.batch_overhead)
        assert packing.batches == [[0, 1, 2, 3]]
        result = client.send_batch(texts)
    assert result.outcome is Outcome.OK, result.describe()
    (request,) = _view(pipes, "requests")
    assert request["path"] == "/v1/batch" and request["body"]["batch"] == calls
    assert request["body"]["context"]["library"]["name"] == "posthog-customerio"
    (person,) = _view(pipes, "people")
    assert person["userId"] == "u1" and person["email"] == "u1@example.com"
    assert person["relationships"] == [{"objectTypeId": "1", "groupId": "acme", "attributes": {}}]
    events = _view(pipes, "events")
    assert [(e["name"], e["userId"], e["timestamp"]) for e in events] == [
        ("Viewed", "u1", "2024-05-01T12:00:00.000Z"),
        ("Home", "u1", None),
    ]
    assert _view(pipes, "anonymous_events") == []


def test_client_too_large_call_is_reported_not_sent(pipes: SandboxServer) -> None:
    big = pl.track("Big", {"blob": "x" * 40_000}, user_id="u1")
    small = pl.track("Small", user_id="u1")
    texts = [pl.encode_call(big), pl.encode_call(small)]
    packing = pl.pack(texts)
    assert packing.too_large == [0] and packing.batches == [[1]]
    with pl.PipelinesClient(KEY, pipes.url) as client:
        result = client.send_batch([texts[i] for i in packing.batches[0]])
    assert result.outcome is Outcome.OK
    assert [e["name"] for e in _view(pipes, "events")] == ["Small"]
    # and had it been sent, strict mode would have refused the whole request
    with pl.PipelinesClient(KEY, pipes.url) as client:
        refused = client.send_batch(texts)
    assert refused.outcome is Outcome.PERMANENT and refused.status == 400
    assert "call_too_large" in refused.body


def test_pipelines_faults_are_the_track_apis_fault_rules(pipes: SandboxServer) -> None:
    """Timed and delayed rules, listing and clearing, as ``/_sandbox/faults``; an injected answer applies nothing."""
    url = pipes.url + "/_sandbox/pipelines/faults"
    assert httpx.post(url, json={"status": 503, "duration_s": 60}, timeout=30).status_code == 200
    assert httpx.post(url, json={"delay_s": 0.3}, timeout=30).status_code == 200
    assert [rule["status"] for rule in httpx.get(url, timeout=30).json()] == [503, None]
    for _ in range(3):
        answer = _post(pipes, "/v1/track", {"userId": "u1", "event": "E"})
        assert answer.status_code == 503 and answer.json() == {"code": "injected", "message": "sandbox fault"}
    assert httpx.delete(url, timeout=30).status_code == 200 and httpx.get(url, timeout=30).json() == []
    httpx.post(url, json={"delay_s": 0.3}, timeout=30)
    answer = _post(pipes, "/v1/track", {"userId": "u1", "event": "E"})
    assert answer.status_code == 200 and answer.elapsed.total_seconds() >= 0.3
    assert len(_view(pipes, "events")) == 1
    assert httpx.post(url, json={"count": 1}, timeout=30).status_code == 400  # neither a status nor a delay
    pipes.pipelines.add_fault(429, retry_after=2)
    pipes.pipelines.reset()
    assert pipes.pipelines.fault_rules.views() == []


def test_client_classifies_auth_and_transient(pipes: SandboxServer) -> None:
    with pl.PipelinesClient("wrong", pipes.url) as client:
        result = client.send_call(pl.track("E", user_id="u1"))
    assert result.outcome is Outcome.AUTH and result.status == 401 and "Pipelines" in (result.error or "")
    httpx.post(pipes.url + "/_sandbox/pipelines/faults", json={"status": 429, "retry_after": "7"}, timeout=30)
    with pl.PipelinesClient(KEY, pipes.url) as client:
        limited = client.send_call(pl.track("E", user_id="u1"))
        then = client.send_call(pl.track("E", user_id="u1"))
    assert limited.outcome is Outcome.TRANSIENT and limited.retry_after == 7.0
    assert then.outcome is Outcome.OK
    assert len(_view(pipes, "events")) == 1


def test_client_network_error_is_transient() -> None:
    with pl.PipelinesClient(KEY, "http://127.0.0.1:9", timeout=2) as client:
        assert client.send_batch([pl.encode_call(pl.track("E", user_id="u"))]).outcome is Outcome.TRANSIENT


def test_region_urls() -> None:
    assert pl.resolve_pipelines_url("us") == "https://cdp.customer.io"
    assert pl.resolve_pipelines_url("eu") == "https://cdp-eu.customer.io"
    assert pl.resolve_pipelines_url("eu", "http://127.0.0.1:1/") == "http://127.0.0.1:1"


# --------------------------------------------------------------------------- sandbox emulation


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"not json", "invalid_json"),
        ({"batch": "nope"}, "invalid_body"),
        ({"batch": [{"type": "frobnicate", "userId": "u"}]}, "invalid_type"),
        ({"batch": [{"type": "track", "userId": "u"}]}, "missing_event"),
        ({"batch": [{"type": "track", "event": "E"}]}, "missing_id"),
        ({"batch": [{"type": "group", "userId": "u"}]}, "missing_id"),
        ({"batch": [{"type": "alias", "userId": "u"}]}, "missing_id"),
        ({"batch": [{"type": "track", "event": "Device Deleted", "userId": "u"}]}, "missing_device"),
        ({"batch": [{"type": "track", "event": "Delete Person", "anonymousId": "a"}]}, "missing_id"),
        (
            {"batch": [{"type": "track", "event": "E", "userId": "u", "properties": {"x": "y" * SANDBOX_CALL_BYTES}}]},
            "call_too_large",
        ),
        (
            {"batch": [{"type": "track", "event": "E", "userId": "u", "properties": {"x": "y" * 30_000}}] * 17},
            "request_too_large",
        ),
    ],
)
def test_strict_mode_rejects_invalid_requests_whole(pipes: SandboxServer, body: Any, code: str) -> None:
    if isinstance(body, dict) and isinstance(body.get("batch"), list):
        body = {"batch": [{"type": "track", "event": "Good", "userId": "u0"}, *body["batch"]]}
    response = _post(pipes, "/v1/batch", body)
    assert response.status_code == 400
    assert response.json()["code"] == code and response.json()["message"]
    assert _view(pipes, "events") == [] and _view(pipes, "people") == []  # nothing applied, not even "Good"
    permissive = _post(pipes, "/v1/batch", body, strict=False)
    assert permissive.status_code == 200  # documented: permissive mode answers 200 ...
    assert _view(pipes, "events") == []  # ... and drops the request


def test_bad_key_is_401_in_strict_mode_and_silently_dropped_without(pipes: SandboxServer) -> None:
    call = {"type": "track", "event": "E", "userId": "u1"}
    assert _post(pipes, "/v1/track", call, key="wrong").status_code == 401
    assert _post(pipes, "/v1/track", call, key="wrong", strict=False).status_code == 200
    assert _view(pipes, "events") == []
    assert _post(pipes, "/v1/track", call).status_code == 200
    assert len(_view(pipes, "events")) == 1


def test_single_call_endpoints_and_their_type(pipes: SandboxServer) -> None:
    assert _post(pipes, "/v1/identify", {"userId": "u1", "traits": {"a": 1}}).status_code == 200
    assert _post(pipes, "/v1/page", {"userId": "u1", "name": "Home"}).status_code == 200
    wrong = _post(pipes, "/v1/page", {"type": "track", "userId": "u1", "event": "E"})
    assert wrong.status_code == 400 and wrong.json()["code"] == "invalid_type"
    assert _view(pipes, "people")[0]["attributes"] == {"a": 1}
    assert [e["type"] for e in _view(pipes, "events")] == ["page"]


def test_dedupe_by_message_id(pipes: SandboxServer) -> None:
    call = {"type": "track", "event": "Paid", "userId": "u1", "messageId": "m-1", "properties": {"n": 1}}
    assert _post(pipes, "/v1/batch", {"batch": [call, call]}).status_code == 200
    assert _post(pipes, "/v1/track", call).status_code == 200
    assert len(_view(pipes, "events")) == 1
    assert _view(pipes, "stats")["duplicates"] == 2
    other = {**call, "messageId": "m-2"}
    _post(pipes, "/v1/track", other)
    assert len(_view(pipes, "events")) == 2
    # a deleted person's messageIds stay known: a replay does not resurrect the event
    _post(pipes, "/v1/track", {"type": "track", "event": "Delete Person", "userId": "u1"})
    _post(pipes, "/v1/track", call)
    assert _view(pipes, "events") == [] and _view(pipes, "people") == []


def test_anonymous_activity_attaches_on_identify_with_both_ids(pipes: SandboxServer) -> None:
    batch = [
        {"type": "page", "anonymousId": "v1", "name": "Landing", "properties": {"path": "/"}},
        {"type": "track", "anonymousId": "v1", "event": "Clicked"},
        {"type": "identify", "anonymousId": "v1", "traits": {"utm": "ad"}},  # anonymous traits, no person yet
        {"type": "track", "anonymousId": "v2", "event": "Other visitor"},
    ]
    _post(pipes, "/v1/batch", {"batch": batch})
    assert _view(pipes, "people") == []
    assert sorted(e["name"] for e in _view(pipes, "anonymous_events")) == ["Clicked", "Landing", "Other visitor"]
    _post(pipes, "/v1/identify", {"userId": "u1", "anonymousId": "v1", "traits": {"plan": "pro"}})
    (person,) = _view(pipes, "people")
    assert person["anonymous_ids"] == ["v1"] and person["attributes"] == {"utm": "ad", "plan": "pro"}
    assert [(e["name"], e["userId"]) for e in _view(pipes, "events")] == [("Landing", "u1"), ("Clicked", "u1")]
    assert [e["name"] for e in _view(pipes, "anonymous_events")] == ["Other visitor"]


def test_track_with_both_ids_belongs_to_the_user(pipes: SandboxServer) -> None:
    _post(pipes, "/v1/track", {"userId": "u1", "anonymousId": "v9", "event": "Bought"})
    assert [e["userId"] for e in _view(pipes, "events")] == ["u1"]
    assert _view(pipes, "anonymous_events") == []


def test_people_by_email_trait(pipes: SandboxServer) -> None:
    _post(pipes, "/v1/identify", {"anonymousId": "v1", "traits": {"email": "lead@example.com", "a": 1}})
    _post(pipes, "/v1/identify", {"userId": "u1", "traits": {"email": "lead@example.com", "b": 2}})
    (person,) = _view(pipes, "people")
    assert person["userId"] == "u1" and person["email"] == "lead@example.com"
    assert person["attributes"] == {"email": "lead@example.com", "a": 1, "b": 2}
    assert httpx.get(pipes.url + "/_sandbox/pipelines/people/lead@example.com").json()["userId"] == "u1"


def test_a_null_or_empty_trait_removes_the_attribute(pipes: SandboxServer) -> None:
    """Traits become attributes through the Journeys destination; Track removes one sent as null or ""."""
    _post(pipes, "/v1/identify", {"userId": "u1", "traits": {"a": 1, "b": 2, "c": 3}})
    _post(pipes, "/v1/identify", {"userId": "u1", "traits": {"a": None, "b": ""}})
    assert _view(pipes, "people")[0]["attributes"] == {"c": 3}


def test_traits_apply_in_arrival_order_whatever_their_timestamp(pipes: SandboxServer) -> None:
    """The Pipelines API documents ``timestamp`` for backfilling events, not as an order of trait updates."""
    _post(pipes, "/v1/identify", pl.identify("u1", {"plan": "new"}, timestamp=1714564800))
    _post(pipes, "/v1/identify", pl.identify("u1", {"plan": "old"}, timestamp=1714564700))  # older, arrives later
    assert _view(pipes, "people")[0]["attributes"] == {"plan": "old"}


def test_an_email_shaped_user_id_addresses_the_person_by_email(pipes: SandboxServer) -> None:
    """``userId`` "can be id or email"; an email ``userId`` also sets ``traits.email``; emails ignore case."""
    _post(pipes, "/v1/identify", pl.identify("ann@example.com", {"a": 1}))
    _post(pipes, "/v1/track", pl.track("Clicked", user_id="ANN@example.com"))
    (person,) = _view(pipes, "people")
    assert (person["userId"], person["email"]) == (None, "ann@example.com")
    assert person["attributes"] == {"email": "ann@example.com", "a": 1}
    _post(pipes, "/v1/identify", pl.identify("u1", {"email": "ann@example.com"}))  # the id joins that person
    (person,) = _view(pipes, "people")
    assert (person["userId"], person["email"]) == ("u1", "ann@example.com")
    assert [(e["name"], e["userId"], e["email"]) for e in _view(pipes, "events")] == [
        ("Clicked", "u1", "ann@example.com")
    ]


def test_the_email_of_a_person_addressed_by_id_changes(pipes: SandboxServer) -> None:
    _post(pipes, "/v1/identify", pl.identify("u1", {"email": "old@example.com"}))
    _post(pipes, "/v1/identify", pl.identify("u1", {"email": "new@example.com"}))
    (person,) = _view(pipes, "people")
    assert person["email"] == "new@example.com" and person["attributes"] == {"email": "new@example.com"}
    assert httpx.get(pipes.url + "/_sandbox/pipelines/people/old@example.com").status_code == 404
    pipes.pipelines.allow_email_update_by_id = False  # the workspace setting off: a failure, nothing changes
    _post(pipes, "/v1/identify", pl.identify("u1", {"email": "newer@example.com", "x": 1}))
    assert _view(pipes, "people")[0]["email"] == "new@example.com"
    assert [f["message"] for f in _view(pipes, "failures")] == [
        "cannot change the email of a person addressed by id (workspace setting off)"
    ]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (pl.identify("u2", {"email": "a@example.com"}), "email 'a@example.com' belongs to another person"),
        (pl.identify("u3", {"email": "a@example.com"}), "email 'a@example.com' belongs to another person"),
        (
            pl.identify("b@example.com", {"email": "c@example.com"}),
            "cannot change the email of a person addressed by email",
        ),
    ],
    ids=["email-of-another", "unknown-id-email-of-a-person-with-an-id", "email-addressed-by-email"],
)
def test_identifier_conflicts_are_attribute_update_failures(
    pipes: SandboxServer, call: dict[str, Any], message: str
) -> None:
    """Answered 200 (the destination fails later, as Track's "Attribute Update Failure"); nothing is applied."""
    _post(
        pipes,
        "/v1/batch",
        {"batch": [pl.identify("u1", {"email": "a@example.com"}), pl.identify("u2", {"email": "b@example.com"})]},
    )
    before = _view(pipes, "people")
    assert _post(pipes, "/v1/identify", {**call, "traits": {**call["traits"], "x": 1}}).status_code == 200
    assert _view(pipes, "people") == before
    (failure,) = _view(pipes, "failures")
    assert failure["userId"] == call["userId"] and failure["message"] == message


def test_objects_relationships_and_their_deletion(pipes: SandboxServer) -> None:
    _post(
        pipes,
        "/v1/batch",
        {
            "batch": [
                pl.group(
                    "acme",
                    {"name": "Acme"},
                    object_type_id="2",
                    user_id="u1",
                    relationship_attributes={"role": "admin"},
                ),
                pl.group("acme", {"plan": "gold"}, object_type_id="2", user_id="u2"),
                {
                    "type": "group",
                    "groupId": "legacy",
                    "objectTypeId": "3",
                    "traits": {"x": 1},
                },  # top-level objectTypeId
            ]
        },
    )
    objects = {(o["objectTypeId"], o["groupId"]): o for o in _view(pipes, "objects")}
    assert objects[("2", "acme")]["attributes"] == {"name": "Acme", "plan": "gold"}
    assert objects[("2", "acme")]["relationships"] == [
        {"userId": "u1", "email": None, "attributes": {"role": "admin"}},
        {"userId": "u2", "email": None, "attributes": {}},
    ]
    assert ("3", "legacy") in objects
    _post(pipes, "/v1/track", pl.relationship_deleted("u1", "acme", 2))
    acme = next(o for o in _view(pipes, "objects") if o["groupId"] == "acme")
    assert [r["userId"] for r in acme["relationships"]] == ["u2"]
    _post(pipes, "/v1/track", pl.object_deleted("acme", 2, anonymous_id="op"))
    assert [o["groupId"] for o in _view(pipes, "objects")] == ["legacy"]


def test_semantic_events_are_actions(pipes: SandboxServer) -> None:
    _post(
        pipes,
        "/v1/batch",
        {
            "batch": [
                pl.identify("u1", {"a": 1}),
                pl.device_created_or_updated("u1", "tok-1", "ios", timestamp=0),
                pl.device_created_or_updated("u1", "tok-2", "android"),
                {
                    "type": "track",
                    "event": "Device Created or Updated",
                    "userId": "u1",
                    "properties": {"device": {"token": "tok-3", "type": "ios"}},
                },  # the doc's cioanalytics example shape
                pl.device_deleted("u1", "tok-2"),
                pl.suppress_person("u1"),
            ]
        },
    )
    (person,) = _view(pipes, "people")
    assert [d["token"] for d in person["devices"]] == ["tok-1", "tok-3"]
    assert person["devices"][0]["type"] == "ios" and person["devices"][0]["last_used"] == "1970-01-01T00:00:00.000Z"
    assert person["suppressed"] is True
    assert _view(pipes, "events") == []  # semantic events are not stored as events
    _post(pipes, "/v1/track", pl.unsuppress_person("u1"))
    assert _view(pipes, "people")[0]["suppressed"] is False
    _post(pipes, "/v1/track", pl.delete_person("u1"))
    assert _view(pipes, "people") == []


def test_alias_merges_previous_profile(pipes: SandboxServer) -> None:
    _post(
        pipes,
        "/v1/batch",
        {
            "batch": [
                pl.identify("old", {"a": 1, "shared": "old"}),
                pl.track("Old event", user_id="old"),
                pl.identify("new", {"shared": "new"}),
                pl.group("acme", user_id="old"),
            ]
        },
    )
    _post(pipes, "/v1/alias", pl.alias("new", "old"))
    (person,) = _view(pipes, "people")
    assert person["userId"] == "new" and person["attributes"] == {"shared": "new", "a": 1}
    assert [e["userId"] for e in _view(pipes, "events")] == ["new"]
    assert person["relationships"][0]["groupId"] == "acme"


def test_batch_context_applies_to_its_calls(pipes: SandboxServer) -> None:
    body = {"batch": [{"type": "track", "event": "E", "userId": "u1"}], "context": {"device": {"token": "t"}}}
    body["batch"].append({"type": "track", "event": "Device Created or Updated", "userId": "u1"})
    assert _post(pipes, "/v1/batch", body).status_code == 200
    assert [d["token"] for d in _view(pipes, "people")[0]["devices"]] == ["t"]


def test_reset_view(pipes: SandboxServer) -> None:
    _post(pipes, "/v1/track", {"type": "track", "event": "E", "userId": "u1"})
    assert httpx.post(pipes.url + "/_sandbox/pipelines/reset").status_code == 200
    assert _view(pipes, "events") == [] and _view(pipes, "requests") == []
