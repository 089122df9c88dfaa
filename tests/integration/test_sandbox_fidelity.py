"""Customer.io semantics the sandbox reproduces (each rule cites the Track API spec in sandbox/workspace/)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from posthog_customerio.sandbox import SandboxServer

SITE_ID, API_KEY = "site-f", "key-f"
NOW = int(time.time())


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(port=0, site_id=SITE_ID, api_key=API_KEY) as running:
        yield running


@pytest.fixture()
def sandbox(server: SandboxServer) -> SandboxServer:
    server.state.reset()
    server.state.allow_email_update_by_id = True
    return server


@pytest.fixture()
def api(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.url, auth=(SITE_ID, API_KEY), timeout=10) as client:
        yield client


@pytest.fixture()
def anon(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    """No credentials at all."""
    with httpx.Client(base_url=sandbox.url, timeout=10) as client:
        yield client


def op(action: str, ident: dict[str, str], **fields: Any) -> dict[str, Any]:
    return {"type": "person", "action": action, "identifiers": ident, **fields}


def batch(api: httpx.Client, *ops: Any) -> httpx.Response:
    return api.post("/api/v2/batch", json={"batch": list(ops)})


def failures(sandbox: SandboxServer) -> list[str]:
    return [entry["message"] for entry in sandbox.state.attribute_update_failures()]


# --------------------------------------------------------------------------- suppression


def test_suppress_deletes_the_profile_and_blocks_id_and_email(sandbox: SandboxServer, api: httpx.Client) -> None:
    api.put("/api/v1/customers/u1", json={"email": "u1@x.com", "plan": "pro"})
    api.post("/api/v1/customers/u1/events", json={"name": "bought"})
    assert api.post("/api/v1/customers/u1/suppress").status_code == 200
    assert sandbox.state.people() == [] and sandbox.state.events() == []
    assert sandbox.state.suppressions() == [{"id": "u1", "email": "u1@x.com"}]

    # every later call referencing either identifier answers 200 and is ignored
    answers = [
        api.put("/api/v1/customers/u1", json={"plan": "again"}),
        api.put("/api/v1/customers/U1@X.com", json={"plan": "again"}),  # email is case-insensitive
        api.put("/api/v1/customers/other", json={"email": "u1@x.com"}),  # sets the suppressed email
        api.post("/api/v1/customers/u1/events", json={"name": "e"}),
        api.put("/api/v1/customers/u1/devices", json={"device": {"id": "t", "platform": "ios"}}),
        batch(api, op("identify", {"email": "u1@x.com"}), op("event", {"id": "u1"}, name="e")),
    ]
    assert [response.status_code for response in answers] == [200] * len(answers)
    assert sandbox.state.people() == [] and sandbox.state.events() == []
    api.put("/api/v1/customers/keeper", json={"x": 1})
    merge = {"primary": {"id": "keeper"}, "secondary": {"id": "u1"}}
    assert api.post("/api/v1/merge_customers", json=merge).status_code == 200
    company = {"object_type_id": "1", "object_id": "acme"}
    relate = {
        "type": "object",
        "action": "add_relationships",
        "identifiers": company,
        "cio_relationships": [{"identifiers": {"email": "u1@x.com"}}, {"identifiers": {"id": "keeper"}}],
    }
    assert batch(api, relate).status_code == 200
    assert [p["id"] for p in sandbox.state.people()] == ["keeper"]
    (obj,) = sandbox.state.objects()
    assert len(obj["relationships"]) == 1
    stats = sandbox.state.stats()
    assert stats["ignored_suppressed"] == 9 and stats["suppressed_identifiers"] == 2
    assert {entry["message"] for entry in sandbox.state.ignored()} == {"id is suppressed", "email is suppressed"}
    assert stats["attribute_update_failures"] == 0  # ignored, not failed


def test_unsuppress_frees_both_identifiers_without_recreating(sandbox: SandboxServer, api: httpx.Client) -> None:
    api.put("/api/v1/customers/u1", json={"email": "u1@x.com", "plan": "pro"})
    api.post("/api/v1/customers/u1/suppress")
    assert api.post("/api/v1/customers/u1@x.com/unsuppress").status_code == 200  # by the other identifier
    assert sandbox.state.suppressions() == [] and sandbox.state.people() == []
    api.put("/api/v1/customers/u1", json={"email": "u1@x.com"})
    person = sandbox.state.person("u1")
    assert person["attributes"] == {} and person["email"] == "u1@x.com"  # a new profile, no history


def test_suppressing_an_unknown_identifier_and_v2_actions(sandbox: SandboxServer, api: httpx.Client) -> None:
    assert batch(api, op("suppress", {"email": "Never@x.com"})).status_code == 200
    assert sandbox.state.suppressions() == [{"email": "never@x.com"}]
    api.put("/api/v1/customers/never@x.com", json={"a": 1})
    assert sandbox.state.people() == []
    assert api.post("/api/v2/entity", json=op("unsuppress", {"email": "never@x.com"})).status_code == 200
    api.put("/api/v1/customers/never@x.com", json={"a": 1})
    assert sandbox.state.person("never@x.com")["attributes"] == {"a": 1}


# --------------------------------------------------------------------------- identifiers are unique


def test_identifier_conflicts_on_every_identify_path(sandbox: SandboxServer, api: httpx.Client) -> None:
    api.put("/api/v1/customers/a", json={"email": "a@x.com"})
    api.put("/api/v1/customers/b", json={"email": "b@x.com"})
    cases = [
        api.put("/api/v1/customers/b", json={"email": "a@x.com"}),  # v1: email of another person
        batch(api, op("identify", {"id": "b"}, attributes={"email": "A@x.com"})),  # v2, any case
        api.put("/api/v1/customers/b@x.com", json={"id": "a"}),  # id of another person
        api.put("/api/v1/customers/b@x.com", json={"id": "b2"}),  # changing an id needs cio_id
        api.put("/api/v1/customers/new", json={"id": "a", "email": "b@x.com"}),  # body names two people
        api.put("/api/v1/customers/c", json={"email": "a@x.com", "plan": "x"}),  # a@x.com already has an id
    ]
    assert [response.status_code for response in cases] == [200] * len(cases)
    people = {p["id"]: p["email"] for p in sandbox.state.people()}
    assert people == {"a": "a@x.com", "b": "b@x.com"}
    assert len(failures(sandbox)) == len(cases)
    assert failures(sandbox)[0] == "email 'a@x.com' belongs to another person"
    assert "use cio_id" in failures(sandbox)[3]


def test_body_identifier_of_an_existing_person_gets_the_path_identifier(
    sandbox: SandboxServer,
    api: httpx.Client,
) -> None:
    api.put("/api/v1/customers/lead@x.com", json={"source": "form"})
    api.put("/api/v1/customers/user-7", json={"email": "lead@x.com", "plan": "pro"})
    (person,) = sandbox.state.people()
    assert (person["id"], person["email"]) == ("user-7", "lead@x.com")
    assert person["attributes"] == {"source": "form", "plan": "pro"}
    assert failures(sandbox) == []


def test_cio_id_may_change_identifiers_but_not_take_anothers(sandbox: SandboxServer, api: httpx.Client) -> None:
    api.put("/api/v1/customers/a", json={"email": "a@x.com"})
    api.put("/api/v1/customers/b", json={"email": "b@x.com"})
    cio = sandbox.state.person("a")["cio_id"]
    assert api.put(f"/api/v1/customers/cio_{cio}", json={"id": "a2", "email": "a2@x.com"}).status_code == 200
    assert (sandbox.state.person("a2")["email"], sandbox.state.person("a")) == ("a2@x.com", None)
    api.put(f"/api/v1/customers/cio_{cio}", json={"email": "b@x.com"})
    assert sandbox.state.person("b@x.com")["id"] == "b"
    assert failures(sandbox) == ["email 'b@x.com' belongs to another person"]
    api.put("/api/v1/customers/cio_missing", json={"x": 1})
    assert "request dropped" in failures(sandbox)[-1]


def test_email_update_by_id_follows_the_workspace_setting(sandbox: SandboxServer, api: httpx.Client) -> None:
    api.put("/api/v1/customers/a", json={"email": "old@x.com"})
    api.put("/api/v1/customers/a", json={"email": "new@x.com"})
    assert sandbox.state.person("a")["email"] == "new@x.com"
    sandbox.state.allow_email_update_by_id = False
    api.put("/api/v1/customers/a", json={"email": "newer@x.com", "plan": "x"})
    person = sandbox.state.person("a")
    assert (person["email"], person["attributes"]) == ("new@x.com", {})
    assert failures(sandbox) == ["cannot change the email of a person addressed by id (use cio_id)"]


def test_merge_moves_the_email_without_conflict(sandbox: SandboxServer, api: httpx.Client) -> None:
    api.put("/api/v1/customers/user", json={"plan": "pro"})
    api.put("/api/v1/customers/visitor", json={"email": "v@x.com"})
    api.post("/api/v1/merge_customers", json={"primary": {"id": "user"}, "secondary": {"id": "visitor"}})
    (person,) = sandbox.state.people()
    assert (person["id"], person["email"]) == ("user", "v@x.com") and failures(sandbox) == []


# --------------------------------------------------------------------------- attribute timestamps


def test_an_older_timestamp_never_overwrites_a_newer_value(sandbox: SandboxServer, api: httpx.Client) -> None:
    api.put("/api/v1/customers/u1", json={"plan": "live"})  # no timestamp: stamped at receipt
    api.put("/api/v1/customers/u1", json={"plan": "backfill", "city": "Oslo", "_timestamp": NOW - 3600})
    batch(api, op("identify", {"id": "u1"}, attributes={"plan": "v2-backfill"}, timestamp=NOW - 60))
    person = sandbox.state.person("u1")
    assert person["attributes"] == {"plan": "live", "city": "Oslo"}
    assert person["attribute_timestamps"]["city"] == NOW - 3600
    batch(api, op("identify", {"id": "u1"}, attributes={"plan": "future"}, timestamp=NOW + 3600))
    api.put("/api/v1/customers/u1", json={"plan": "untimed-but-older"})
    assert sandbox.state.person("u1")["attributes"]["plan"] == "future"


# --------------------------------------------------------------------------- delivery metrics


def test_push_events_need_no_auth_and_are_recorded(sandbox: SandboxServer, anon: httpx.Client) -> None:
    body = {"delivery_id": "RPILAgUB", "event": "opened", "device_id": "tok-1", "timestamp": NOW}
    assert anon.post("/api/v1/push/events", json=body).status_code == 200
    (metric,) = sandbox.state.delivery_metrics()
    assert {k: metric[k] for k in ("source", "delivery_id", "metric", "device_id", "timestamp")} == {
        "source": "push/events",
        "delivery_id": "RPILAgUB",
        "metric": "opened",
        "device_id": "tok-1",
        "timestamp": NOW,
    }
    assert anon.post("/api/v1/push/events", json={**body, "event": "clicked"}).status_code == 400
    assert anon.post("/api/v1/push/events", json={"event": "opened"}).status_code == 400
    clicked = {"delivery_id": "d2", "metric": "clicked", "href": "h"}
    assert anon.post("/api/v1/metrics", json=clicked).status_code == 200
    assert anon.post("/api/v1/metrics", json={"delivery_id": "d2", "metric": "nope"}).status_code == 400
    assert anon.get("/_sandbox/delivery_metrics").json()[1]["href"] == "h"
    assert anon.post("/api/v1/customers/u1/events", json={"name": "x"}).status_code == 401  # others still need it


def test_v2_delivery_operations(sandbox: SandboxServer, api: httpx.Client) -> None:
    good = {
        "type": "delivery",
        "action": "event",
        "identifiers": {"id": "RPIyMTM"},
        "name": "converted",
        "attributes": {"device_token": "tok-9"},
    }
    response = batch(
        api,
        good,
        {**good, "name": "clicked"},
        {**good, "attributes": {}},
        {**good, "identifiers": {}},
        {**good, "action": "identify"},
    )
    assert response.status_code == 207
    errors = response.json()["errors"]
    assert [(e["batch_index"], e["field"]) for e in errors] == [
        (1, "name"),
        (2, "attributes.device_token"),
        (3, "identifiers.id"),
        (4, "action"),
    ]
    assert api.post("/api/v2/entity", json={**good, "name": "delivered"}).status_code == 200
    assert [(m["source"], m["metric"], m["device_token"]) for m in sandbox.state.delivery_metrics()] == [
        ("v2", "converted", "tok-9"),
        ("v2", "delivered", "tok-9"),
    ]
    assert sandbox.state.people() == []


def test_unsubscribe_by_delivery(sandbox: SandboxServer, anon: httpx.Client) -> None:
    assert anon.post("/unsubscribe/ZAIAAVTJ", json={"unsubscribe": True}).status_code == 200
    assert anon.post("/unsubscribe/ZAIAAVTJ", content=b'{"unsubscribe": true}').status_code == 400  # no JSON type
    (metric,) = sandbox.state.delivery_metrics()
    assert (metric["delivery_id"], metric["metric"], metric["unsubscribe"]) == ("ZAIAAVTJ", "unsubscribed", True)


# --------------------------------------------------------------------------- forms and manual segments


def test_form_submission_identifies_the_respondent(sandbox: SandboxServer, api: httpx.Client) -> None:
    data = {"email": "f@x.com", "first_name": "Fay", "form_name": "ignored"}
    assert api.post("/api/v1/forms/signup/submit", json={"data": data}).status_code == 200
    assert sandbox.state.person("f@x.com")["attributes"] == {"first_name": "Fay"}
    assert sandbox.state.form_submissions()[0]["form_id"] == "signup"
    both = {"data": {"email": "g@x.com", "id": "g"}}
    assert api.post("/api/v1/forms/signup/submit", json=both).status_code == 400
    assert api.post("/api/v1/forms/signup/submit", json={"data": {"name": "x"}}).status_code == 400
    assert len(sandbox.state.people()) == 1


def test_manual_segments(sandbox: SandboxServer, api: httpx.Client) -> None:
    api.put("/api/v1/customers/a", json={"email": "a@x.com"})
    api.put("/api/v1/customers/b", json={})
    cio_a, cio_b = sandbox.state.person("a")["cio_id"], sandbox.state.person("b")["cio_id"]
    assert api.post("/api/v1/segments/7/add_customers", json={"ids": ["a", "b", "ghost"]}).status_code == 200
    assert sandbox.state.segments() == {"7": [cio_a, cio_b]}
    body = {"ids": ["a@x.com", "not-an-email"]}
    assert api.post("/api/v1/segments/7/remove_customers?id_type=email", json=body).status_code == 200
    assert sandbox.state.segments() == {"7": [cio_b]}
    assert api.post("/api/v1/segments/7/add_customers", json={"ids": []}).status_code == 400
    api.post("/api/v1/merge_customers", json={"primary": {"id": "a"}, "secondary": {"id": "b"}})
    assert sandbox.state.segments() == {"7": [cio_a]}  # the primary gains the secondary's segments
    api.delete("/api/v1/customers/a")
    assert sandbox.state.segments() == {"7": []}
