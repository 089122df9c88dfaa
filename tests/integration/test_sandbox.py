"""The Customer.io sandbox, exercised through real HTTP (httpx -> uvicorn on 127.0.0.1)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from ulid import ULID

from posthog_customerio.sandbox import SandboxServer, SandboxState, create_app

SITE_ID, API_KEY = "site-1", "key-1"
NOW = int(time.time())


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(port=0, site_id=SITE_ID, api_key=API_KEY, region="eu") as running:
        yield running


@pytest.fixture()
def sandbox(server: SandboxServer) -> SandboxServer:
    server.state.reset()
    return server


@pytest.fixture()
def api(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.url, auth=(SITE_ID, API_KEY), timeout=10) as client:
        yield client


@pytest.fixture()
def control(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.url, timeout=10) as client:
        yield client


def enc(identifier: str) -> str:
    return quote(identifier, safe="")


def ulid() -> str:
    return str(ULID())


def person_op(action: str, ident: dict[str, str] | None = None, **fields: Any) -> dict[str, Any]:
    op: dict[str, Any] = {"type": "person", "action": action, "identifiers": {"id": "u1"} if ident is None else ident}
    op.update(fields)
    return op


def batch(api: httpx.Client, *ops: Any) -> httpx.Response:
    return api.post("/api/v2/batch", json={"batch": list(ops)})


# --------------------------------------------------------------------------- auth, region, routing


def test_auth_required_on_api_routes(sandbox: SandboxServer, control: httpx.Client) -> None:
    for auth in (None, ("site-1", "wrong"), ("other", API_KEY)):
        response = control.put("/api/v1/customers/u1", json={"a": 1}, auth=auth)
        assert response.status_code == 401
        assert response.json() == {"meta": {"error": "Unauthorized request"}}
    assert control.post("/api/v2/batch", json={"batch": []}).status_code == 401
    assert sandbox.state.people() == []


def test_region_endpoint(sandbox: SandboxServer, api: httpx.Client) -> None:
    response = api.get("/api/v1/accounts/region")
    assert response.status_code == 200
    assert response.json() == {"url": sandbox.url, "region": "eu", "environment_id": 1}


def test_unknown_route_and_malformed_v1_json(api: httpx.Client) -> None:
    assert api.get("/api/v1/nope").status_code == 404
    response = api.put("/api/v1/customers/u1", content=b"{not json")
    assert response.status_code == 400
    assert "error" in response.json()["meta"]
    assert api.post("/api/v1/customers/u1/events", json=["name"]).status_code == 400


# --------------------------------------------------------------------------- v1


def test_v1_identify_create_update_and_remove(sandbox: SandboxServer, api: httpx.Client) -> None:
    body = {"email": "Ann@Example.com", "plan": "pro", "age": 30, "created_at": 1_700_000_000, "_timestamp": NOW}
    response = api.put("/api/v1/customers/u1", json=body)
    assert response.status_code == 200 and response.json() == {}
    person = sandbox.state.person("ann@example.com")
    assert person is not None
    assert (person["id"], person["email"]) == ("u1", "Ann@Example.com")
    assert person["attributes"] == {"plan": "pro", "age": 30, "created_at": 1_700_000_000}
    assert person["created_at"] == 1_700_000_000
    assert sandbox.state.person(person["cio_id"])["id"] == "u1"
    assert sandbox.state.person("cio_" + person["cio_id"])["id"] == "u1"

    assert api.put("/api/v1/customers/u1", json={"plan": None, "age": ""}).status_code == 200
    assert sandbox.state.person("u1")["attributes"] == {"created_at": 1_700_000_000}

    # by cio_id path, and _update never creates
    assert api.put(f"/api/v1/customers/cio_{person['cio_id']}", json={"x": 1}).status_code == 200
    assert sandbox.state.person("u1")["attributes"]["x"] == 1
    assert api.put("/api/v1/customers/ghost", json={"_update": True, "x": 1}).status_code == 200
    assert sandbox.state.person("ghost") is None
    assert len(sandbox.state.people()) == 1


def test_v1_identify_conflicting_email_is_an_attribute_update_failure(
    sandbox: SandboxServer,
    api: httpx.Client,
) -> None:
    api.put("/api/v1/customers/u1", json={"email": "a@x.com"})
    response = api.put("/api/v1/customers/u2", json={"email": "A@x.com", "plan": "pro"})
    assert response.status_code == 200
    assert sandbox.state.person("u2") is None
    assert sandbox.state.person("a@x.com")["id"] == "u1"
    stats = sandbox.state.stats()
    assert stats["attribute_update_failures"] == 1
    assert stats["attribute_update_failure_details"][0]["identifiers"] == {"id": "u2"}


def test_v1_events_create_person_and_store(sandbox: SandboxServer, api: httpx.Client) -> None:
    event_id = ulid()
    body = {"name": "purchase", "type": "event", "id": event_id, "timestamp": NOW, "data": {"price": 9.5}}
    assert api.post("/api/v1/customers/u1/events", json=body).status_code == 200
    assert api.post("/api/v1/customers/u1/events", json={"name": "/home", "type": "page"}).status_code == 200
    person = sandbox.state.person("u1")
    assert person["event_count"] == 2
    first, second = sandbox.state.events("u1")
    assert first["person"] == person["cio_id"]
    assert {k: first[k] for k in ("anonymous_id", "type", "name", "id", "timestamp", "data")} == {
        "anonymous_id": None,
        "type": "event",
        "name": "purchase",
        "id": event_id,
        "timestamp": NOW,
        "data": {"price": 9.5},
    }
    assert isinstance(first["received_at"], float)
    assert (second["type"], second["timestamp"]) == ("page", None)
    assert api.post("/api/v1/customers/u1/events", json={"type": "event"}).status_code == 400
    assert api.post("/api/v1/customers/u1/events", json={"name": "x", "type": "click"}).status_code == 400
    assert api.post("/api/v1/customers/u1/events", json={"name": "x", "id": "not-a-ulid"}).status_code == 400


def test_v1_anonymous_events_attach_on_identify(
    sandbox: SandboxServer,
    api: httpx.Client,
    control: httpx.Client,
) -> None:
    api.post("/api/v1/events", json={"anonymous_id": "anon-1", "name": "viewed", "timestamp": NOW - 3600})
    api.post("/api/v1/events", json={"anonymous_id": "anon-1", "name": "ancient", "timestamp": NOW - 40 * 86400})
    api.post("/api/v1/events", json={"anonymous_id": "anon-2", "name": "other"})
    assert sandbox.state.stats()["anonymous_events"] == 3
    assert sandbox.state.events() == []

    assert api.put("/api/v1/customers/u1", json={"anonymous_id": "anon-1", "plan": "free"}).status_code == 200
    person = sandbox.state.person("u1")
    assert "anonymous_id" not in person["attributes"]
    # the 30-day window counts from receipt: an old event received just now attaches
    assert sorted(e["name"] for e in person["events"]) == ["ancient", "viewed"]
    assert person["events"][0]["anonymous_id"] == "anon-1"
    remaining = control.get("/_sandbox/anonymous_events").json()
    assert sorted(e["name"] for e in remaining) == ["other"]
    assert sandbox.state.stats()["anonymous_events"] == 1


def test_v2_identify_attaches_anonymous_events(sandbox: SandboxServer, api: httpx.Client) -> None:
    api.post("/api/v1/events", json={"anonymous_id": "anon-9", "name": "viewed"})
    batch(api, person_op("identify", attributes={"anonymous_id": "anon-9"}))
    assert [e["name"] for e in sandbox.state.events("u1")] == ["viewed"]


def test_v1_merge(sandbox: SandboxServer, api: httpx.Client) -> None:
    api.put("/api/v1/customers/main", json={"plan": "pro"})
    api.put("/api/v1/customers/dupe", json={"plan": "free", "city": "Oslo", "email": "d@x.com"})
    api.post("/api/v1/customers/dupe/events", json={"name": "clicked"})
    body = {"primary": {"id": "main"}, "secondary": {"email": "d@x.com"}}
    assert api.post("/api/v1/merge_customers", json=body).status_code == 200
    assert sandbox.state.person("dupe") is None
    main = sandbox.state.person("main")
    assert main["attributes"] == {"plan": "pro", "city": "Oslo"}
    assert [e["name"] for e in main["events"]] == ["clicked"]
    assert main["events"][0]["person"] == main["cio_id"]
    assert main["email"] == "d@x.com"

    # a missing primary: "your request won't do anything" (spec merge_customers): 200, nothing changes
    missing = {"primary": {"id": "nobody"}, "secondary": {"id": "main"}}
    assert api.post("/api/v1/merge_customers", json=missing).status_code == 200
    assert sandbox.state.person("main") is not None and sandbox.state.person("nobody") is None
    assert sandbox.state.attribute_update_failures()[-1]["identifiers"] == {"id": "nobody"}
    two_ids = {"primary": {"id": "main", "email": "m@x.com"}, "secondary": {"id": "x"}}
    assert api.post("/api/v1/merge_customers", json=two_ids).status_code == 400


def test_v1_delete_suppress_and_devices(sandbox: SandboxServer, api: httpx.Client) -> None:
    api.put("/api/v1/customers/u1", json={"a": 1})
    assert api.post("/api/v1/customers/u1/suppress").status_code == 200
    assert sandbox.state.person("u1") is None  # suppress deletes the profile
    assert api.post("/api/v1/customers/u1/unsuppress").status_code == 200
    assert sandbox.state.suppressions() == []

    device = {"id": "tok/1", "platform": "ios", "last_used": NOW, "attributes": {"app_version": "1.2"}}
    assert api.put("/api/v1/customers/u1/devices", json={"device": device}).status_code == 200
    android = {"device": {"id": "tok2", "platform": "android"}}
    assert api.put("/api/v1/customers/u1/devices", json=android).status_code == 200
    assert api.put("/api/v1/customers/u1/devices", json={"device": {"id": "tok3"}}).status_code == 400
    assert sandbox.state.person("u1")["devices"][0] == device
    assert api.delete(f"/api/v1/customers/u1/devices/{enc('tok/1')}").status_code == 200
    assert [d["id"] for d in sandbox.state.person("u1")["devices"]] == ["tok2"]

    api.post("/api/v1/customers/u1/events", json={"name": "e"})
    assert api.delete("/api/v1/customers/u1").status_code == 200
    assert sandbox.state.person("u1") is None
    assert sandbox.state.events() == []
    assert api.delete("/api/v1/customers/u1").status_code == 200  # deleting nobody is fine


@pytest.mark.parametrize("identifier", ["a/b", "what?x=1", "hash#tag", "with space", "mixed/ ?#%"])
def test_percent_encoded_identifiers(
    sandbox: SandboxServer,
    api: httpx.Client,
    control: httpx.Client,
    identifier: str,
) -> None:
    path = f"/api/v1/customers/{enc(identifier)}"
    assert api.put(path, json={"plan": "pro"}).status_code == 200
    assert api.post(f"{path}/events", json={"name": "clicked"}).status_code == 200
    assert api.put(f"{path}/devices", json={"device": {"id": "d1", "platform": "ios"}}).status_code == 200
    person = sandbox.state.person(identifier)
    assert person is not None and person["id"] == identifier
    assert (person["event_count"], len(person["devices"])) == (1, 1)
    assert control.get(f"/_sandbox/people/{enc(identifier)}").json()["id"] == identifier
    assert sandbox.state.requests()[0]["path"] == path
    assert api.delete(path).status_code == 200
    assert sandbox.state.people() == []
    assert api.post(f"{path}/suppress").status_code == 200
    assert sandbox.state.suppressions() == [{"id": identifier}]
    assert api.post(f"{path}/unsuppress").status_code == 200
    assert sandbox.state.suppressions() == []


# --------------------------------------------------------------------------- v2


def test_v2_batch_all_good(sandbox: SandboxServer, api: httpx.Client) -> None:
    response = batch(
        api,
        person_op("identify", attributes={"plan": "pro", "email": "u1@x.com"}, timestamp=NOW),
        person_op("event", name="purchase", id=ulid(), timestamp=NOW, attributes={"price": 3}),
        person_op("page", {"email": "u1@x.com"}, name="/pricing"),
        person_op("screen", name="Home"),
        person_op("add_device", device={"token": "t1", "platform": "android"}),
    )
    assert response.status_code == 200 and response.json() == {}
    person = sandbox.state.person("u1")
    assert person["email"] == "u1@x.com" and person["attributes"] == {"plan": "pro"}
    assert [e["type"] for e in person["events"]] == ["event", "page", "screen"]
    assert person["events"][0]["data"] == {"price": 3}
    assert person["devices"][0]["id"] == "t1"
    assert batch(api, person_op("suppress"), person_op("unsuppress")).status_code == 200
    assert sandbox.state.person("u1") is None and sandbox.state.suppressions() == []
    assert batch(api).status_code == 200  # empty batch


def test_v2_batch_partial_207(sandbox: SandboxServer, api: httpx.Client) -> None:
    response = batch(
        api,
        person_op("identify", {"id": "a"}, attributes={"n": 1}),
        person_op("identify", {"id": "b", "email": "b@x.com"}),  # two identifiers
        person_op("identify", {"id": "c"}, attributes={"n": 3}),
        person_op("event", {"id": "d"}, name="x", timestamp=1.5),  # float timestamp
        person_op("event", {"id": "e"}),  # no name
        "not an op",
        {"type": "account", "action": "identify"},
        person_op("fly", {"id": "f"}),
        person_op("event", {"id": "g"}, name="ok"),
    )
    assert response.status_code == 207
    errors = response.json()["errors"]
    assert [e["batch_index"] for e in errors] == [1, 3, 4, 5, 6, 7]
    assert {e["field"] for e in errors} >= {"identifiers", "timestamp", "name", "type", "action"}
    assert all(e["reason"] and e["message"] for e in errors)
    assert sorted(p["id"] for p in sandbox.state.people()) == ["a", "c", "g"]


def test_v2_batch_malformed_400(api: httpx.Client) -> None:
    for content in (b"{nope", b"[1, 2]", b'{"batch": {"a": 1}}', b"", b'{"batch": [NaN]}'):
        response = api.post("/api/v2/batch", content=content)
        assert response.status_code == 400, content
        assert response.json()["errors"][0]["reason"]


def test_v2_batch_request_too_large_413(sandbox: SandboxServer, api: httpx.Client) -> None:
    ops = [person_op("identify", {"id": f"u{i}"}, attributes={"v": "x" * 900}) for i in range(600)]
    response = batch(api, *ops)
    assert response.status_code == 413
    assert sandbox.state.people() == []
    small = batch(api, *ops[:400])  # ~390 KB
    assert small.status_code == 200
    assert len(sandbox.state.people()) == 400


def test_v2_op_over_32000_bytes_rejected(sandbox: SandboxServer, api: httpx.Client) -> None:
    big = person_op("event", name="big", attributes={f"k{i}": "é" * 400 for i in range(40)})  # ~32.5 KB
    assert len(json.dumps(big, separators=(",", ":"), ensure_ascii=False).encode()) > 32_000
    fits = person_op("event", name="fits", attributes={f"k{i}": "y" * 700 for i in range(40)})  # ~28.6 KB
    response = batch(api, fits, big, person_op("identify", {"id": "z"}))
    assert response.status_code == 207
    (error,) = response.json()["errors"]
    assert error["batch_index"] == 1
    assert [e["name"] for e in sandbox.state.events()] == ["fits"]
    assert sandbox.state.person("z") is not None
    assert api.post("/api/v2/entity", json=big).status_code == 413


def test_v2_entity(sandbox: SandboxServer, api: httpx.Client) -> None:
    assert api.post("/api/v2/entity", json=person_op("identify", attributes={"x": 1})).status_code == 200
    assert sandbox.state.person("u1")["attributes"] == {"x": 1}
    response = api.post("/api/v2/entity", json=person_op("identify", {}))
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "identifiers"
    assert api.post("/api/v2/entity", content=b"nope").status_code == 400
    merge = {"type": "person", "action": "merge", "primary": {"id": "ghost"}, "secondary": {"id": "u1"}}
    assert api.post("/api/v2/entity", json=merge).status_code == 200  # accepted, does nothing
    assert sandbox.state.person("u1") is not None


def test_v2_merge_delete_devices(sandbox: SandboxServer, api: httpx.Client) -> None:
    response = batch(
        api,
        person_op("identify", {"id": "p"}, attributes={"a": 1}),
        person_op("identify", {"id": "s"}, attributes={"a": 2, "b": 2}),
        person_op("event", {"id": "s"}, name="e"),
        {"type": "person", "action": "merge", "primary": {"id": "ghost"}, "secondary": {"id": "s"}},
        {"type": "person", "action": "merge", "primary": {"id": "p"}, "secondary": {"id": "s"}},
        person_op("add_device", {"id": "p"}, device={"token": "t", "platform": "ios"}),
        person_op("delete_device", {"id": "p"}, device={"token": "t"}),
        person_op("identify", {"id": "gone"}),
        person_op("delete", {"id": "gone"}),
    )
    assert response.status_code == 200  # the merge into a missing primary does nothing (no error)
    assert sandbox.state.attribute_update_failures()[0]["identifiers"] == {"id": "ghost"}
    (person,) = sandbox.state.people()
    assert person["attributes"] == {"a": 1, "b": 2}
    assert (person["event_count"], person["devices"]) == (1, [])


def test_v2_objects_and_relationships(sandbox: SandboxServer, api: httpx.Client, control: httpx.Client) -> None:
    company = {"object_type_id": "1", "object_id": "acme"}
    response = batch(
        api,
        {
            "type": "object",
            "action": "identify",
            "identifiers": company,
            "attributes": {"name": "Acme"},
            "cio_relationships": [{"identifiers": {"id": "u1"}, "relationship_attributes": {"role": "admin"}}],
        },
        person_op("add_relationships", {"id": "u2"}, cio_relationships=[{"identifiers": company}]),
        person_op("delete_relationships", {"id": "u1"}, cio_relationships=[{"identifiers": company}]),
        {"type": "object", "action": "identify", "identifiers": {"object_type_id": "1"}},
    )
    assert response.status_code == 207
    assert [e["batch_index"] for e in response.json()["errors"]] == [3]
    (obj,) = control.get("/_sandbox/objects").json()
    assert obj["attributes"] == {"name": "Acme"}
    assert [r["person"] for r in obj["relationships"]] == [sandbox.state.person("u2")["cio_id"]]
    batch(api, {"type": "object", "action": "delete", "identifiers": company})
    assert sandbox.state.objects() == []


def test_float_timestamps_rejected(sandbox: SandboxServer, api: httpx.Client) -> None:
    assert api.post("/api/v1/customers/u1/events", json={"name": "x", "timestamp": NOW + 0.5}).status_code == 400
    assert api.put("/api/v1/customers/u1", json={"_timestamp": float(NOW)}).status_code == 400
    response = batch(api, person_op("identify", timestamp=float(NOW)), person_op("event", name="x", timestamp=True))
    assert response.status_code == 207
    assert [e["field"] for e in response.json()["errors"]] == ["timestamp", "timestamp"]
    assert sandbox.state.people() == []


# --------------------------------------------------------------------------- limits


@pytest.mark.parametrize(
    ("ok_op", "bad_op"),
    [
        pytest.param(person_op("identify", {"id": "x" * 150}), person_op("identify", {"id": "é" * 76}), id="id"),
        pytest.param(
            person_op("identify", attributes={"n" * 150: 1}),
            person_op("identify", attributes={"é" * 76: 1}),
            id="attribute-name",
        ),
        pytest.param(
            person_op("identify", attributes={"v": "é" * 500}),
            person_op("identify", attributes={"v": "é" * 500 + "x"}),
            id="attribute-value-string",
        ),
        pytest.param(
            person_op("identify", attributes={"v": ["x" * 496]}),
            person_op("identify", attributes={"v": {"k": "x" * 993}}),
            id="attribute-value-json",
        ),
        pytest.param(
            person_op("identify", attributes={f"a{i}": i for i in range(300)}),
            person_op("identify", attributes={f"a{i}": i for i in range(301)}),
            id="attribute-count",
        ),
        pytest.param(person_op("event", name="n" * 100), person_op("event", name="é" * 51), id="event-name"),
    ],
)
def test_v2_limits(sandbox: SandboxServer, api: httpx.Client, ok_op: dict[str, Any], bad_op: dict[str, Any]) -> None:
    response = batch(api, ok_op, bad_op)
    assert response.status_code == 207
    (error,) = response.json()["errors"]
    assert (error["batch_index"], error["reason"]) == (1, "limit_exceeded")
    assert len(sandbox.state.people()) == 1


def test_v1_limits(sandbox: SandboxServer, api: httpx.Client) -> None:
    assert api.put(f"/api/v1/customers/{'x' * 151}", json={}).status_code == 400
    assert api.put("/api/v1/customers/u1", json={"v": "x" * 1001}).status_code == 400
    assert api.put("/api/v1/customers/u1", json={"id": "y" * 151}).status_code == 400
    events = "/api/v1/customers/u1/events"
    assert api.post(events, json={"name": "n" * 101}).status_code == 400
    assert api.post(events, json={"name": "big", "data": {"d": "x" * 100_000}}).status_code == 400
    assert api.post(events, json={"name": "fits", "data": {"d": "x" * 99_000}}).status_code == 200
    assert [e["name"] for e in sandbox.state.events()] == ["fits"]


# --------------------------------------------------------------------------- semantics


def test_dedupe_by_event_id(sandbox: SandboxServer, api: httpx.Client) -> None:
    event_id = ulid()
    for _ in range(3):
        assert api.post("/api/v1/customers/u1/events", json={"name": "x", "id": event_id}).status_code == 200
    assert batch(api, person_op("event", name="x", id=event_id.lower())).status_code == 200
    api.post("/api/v1/events", json={"anonymous_id": "a", "name": "x", "id": event_id})
    assert len(sandbox.state.events()) == 1
    assert sandbox.state.stats()["duplicates"] == 4
    assert sandbox.state.anonymous_events() == []


def test_attribute_timestamp_ordering(sandbox: SandboxServer, api: httpx.Client) -> None:
    batch(
        api,
        person_op("identify", attributes={"plan": "new", "city": "Oslo"}, timestamp=200),
        person_op("identify", attributes={"plan": "old", "age": 5}, timestamp=100),  # stale plan
        person_op("identify", attributes={"city": None}, timestamp=150),  # stale removal
        person_op("identify", attributes={"city": "Rome"}, timestamp=200),  # equal timestamp wins
    )
    assert sandbox.state.person("u1")["attributes"] == {"plan": "new", "city": "Rome", "age": 5}
    api.put("/api/v1/customers/u1", json={"plan": "v1-old", "_timestamp": 199})
    api.put("/api/v1/customers/u1", json={"age": None, "_timestamp": 300})
    api.put("/api/v1/customers/u1", json={"age": 7, "_timestamp": 250})  # older than the removal
    person = sandbox.state.person("u1")
    assert person["attributes"] == {"plan": "new", "city": "Rome"}
    assert person["attribute_timestamps"]["age"] == 300
    api.put("/api/v1/customers/u1", json={"plan": "untimed"})  # no timestamp: always applies
    assert sandbox.state.person("u1")["attributes"]["plan"] == "untimed"


# --------------------------------------------------------------------------- faults, credentials, log


def test_count_fault_429_with_retry_after(sandbox: SandboxServer, api: httpx.Client, control: httpx.Client) -> None:
    added = control.post("/_sandbox/faults", json={"status": 429, "count": 2, "retry_after": 3})
    assert added.status_code == 200
    assert [f["remaining"] for f in control.get("/_sandbox/faults").json()] == [2]
    for _ in range(2):
        response = api.put("/api/v1/customers/u1", json={"a": 1})
        assert response.status_code == 429
        assert response.headers["retry-after"] == "3"
    assert api.put("/api/v1/customers/u1", json={"a": 1}).status_code == 200
    assert [r["status"] for r in sandbox.state.requests()] == [429, 429, 200]
    assert sandbox.state.stats()["requests_by_status"] == {"429": 2, "200": 1}
    assert control.get("/_sandbox/faults").json() == []


def test_duration_fault_500(sandbox: SandboxServer, api: httpx.Client, control: httpx.Client) -> None:
    added = time.monotonic()
    control.post("/_sandbox/faults", json={"status": 500, "duration_s": 2, "body": {"oops": True}})
    first = api.post("/api/v2/batch", json={"batch": []})
    if time.monotonic() - added < 2:  # (on a very loaded machine the window may be over already)
        assert (first.status_code, first.json()) == (500, {"oops": True})
    deadline = time.monotonic() + 30
    while api.get("/api/v1/accounts/region").status_code == 500:  # until the fault expires
        assert time.monotonic() < deadline, "the duration fault never expired"
        time.sleep(0.05)
    assert time.monotonic() - added >= 2  # it lasted its whole duration
    assert api.get("/api/v1/accounts/region").status_code == 200
    sandbox.state.add_fault(status=503, count=1)
    assert api.get("/api/v1/accounts/region").status_code == 503
    control.post("/_sandbox/faults", json={"status": 500, "duration_s": 60})
    assert control.delete("/_sandbox/faults").status_code == 200
    assert api.get("/api/v1/accounts/region").status_code == 200
    assert control.post("/_sandbox/faults", json={"count": 1}).status_code == 400


def test_delay_fault_does_not_block_other_requests(
    sandbox: SandboxServer,
    api: httpx.Client,
    control: httpx.Client,
) -> None:
    control.post("/_sandbox/faults", json={"delay_s": 3, "count": 1})
    results: dict[str, Any] = {}

    def slow() -> None:
        with httpx.Client(base_url=sandbox.url, auth=(SITE_ID, API_KEY)) as client:
            started = time.monotonic()
            results["status"] = client.put("/api/v1/customers/slow", json={"a": 1}).status_code
            results["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=slow)
    thread.start()
    deadline = time.monotonic() + 5
    while sandbox.state.faults() and time.monotonic() < deadline:  # until the slow request took it
        time.sleep(0.005)
    assert api.put("/api/v1/customers/fast", json={"a": 1}).status_code == 200
    assert "status" not in results  # answered while the slow request still waits
    thread.join()
    assert results["status"] == 200 and results["elapsed"] >= 3
    assert sandbox.state.person("slow") is not None


def test_credentials_change(sandbox: SandboxServer, api: httpx.Client, control: httpx.Client) -> None:
    assert control.post("/_sandbox/credentials", json={"site_id": "s2", "api_key": "k2"}).status_code == 200
    assert api.get("/api/v1/accounts/region").status_code == 401
    assert control.get("/api/v1/accounts/region", auth=("s2", "k2")).status_code == 200
    sandbox.state.reset()  # restores the initial credentials
    assert api.get("/api/v1/accounts/region").status_code == 200


def test_request_log_never_records_authorization(
    sandbox: SandboxServer,
    api: httpx.Client,
    control: httpx.Client,
) -> None:
    api.put(f"/api/v1/customers/{enc('a/b')}?x=1", json={"plan": "pro"})
    api.post("/api/v2/batch", content=b"not json")
    entries = control.get("/_sandbox/requests").json()
    first, second = entries
    assert set(first) == {"method", "path", "query", "body", "status", "time", "answered", "bytes"}
    assert first["time"] <= first["answered"] <= second["time"]
    assert (first["method"], first["path"], first["query"]) == ("PUT", "/api/v1/customers/a%2Fb", "x=1")
    assert (first["body"], first["status"], first["bytes"]) == ({"plan": "pro"}, 200, len(b'{"plan":"pro"}'))
    assert (second["body"], second["status"]) == ("not json", 400)
    text = json.dumps(entries).lower()
    assert "authorization" not in text and "basic " not in text and API_KEY not in text
    assert control.get("/_sandbox/requests", params={"limit": 1}).json() == [second]


def test_reset_and_inspection_endpoints(sandbox: SandboxServer, api: httpx.Client, control: httpx.Client) -> None:
    batch(api, person_op("identify", attributes={"a": 1}), person_op("event", name="e", id=ulid()))
    api.post("/api/v1/events", json={"name": "anon"})
    control.post("/_sandbox/faults", json={"status": 500, "duration_s": 60})
    (row,) = control.get("/_sandbox/people").json()
    assert set(row) == {"cio_id", "id", "email", "attributes", "created_at", "devices", "event_count"}
    assert control.get("/_sandbox/people/u1").json()["events"][0]["name"] == "e"
    assert control.get("/_sandbox/people/nobody").status_code == 404
    assert len(control.get("/_sandbox/events", params={"person": "u1"}).json()) == 1
    stats = control.get("/_sandbox/stats").json()
    assert {k: stats[k] for k in ("requests", "people", "events", "anonymous_events", "duplicates")} == {
        "requests": 2,
        "people": 1,
        "events": 1,
        "anonymous_events": 1,
        "duplicates": 0,
    }
    assert control.post("/_sandbox/reset").status_code == 200
    assert api.get("/api/v1/accounts/region").status_code == 200  # faults cleared too
    stats = control.get("/_sandbox/stats").json()
    assert (stats["people"], stats["events"], stats["anonymous_events"], stats["requests"]) == (0, 0, 0, 1)


# --------------------------------------------------------------------------- servers


def test_server_starts_and_stops_quickly() -> None:
    started = time.monotonic()
    with SandboxServer(port=0) as server:
        assert server.url.startswith("http://127.0.0.1:")
        response = httpx.get(f"{server.url}/api/v1/accounts/region", auth=("sandbox", "sandbox"))
        assert response.json()["region"] == "us"
    assert time.monotonic() - started < 2.0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/_sandbox/stats", timeout=1)


def test_create_app_exposes_state() -> None:
    state = SandboxState("a", "b")
    app = create_app(state)
    assert app.state.sandbox is state
    assert isinstance(create_app().state.sandbox, SandboxState)
