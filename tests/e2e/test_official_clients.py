"""Customer.io's official Track clients against the sandbox: every call they offer gets the documented result.

PyPI ``customerio`` only builds ``https://{host}:{port}`` URLs, so the sandbox serves HTTPS here with a
throwaway CA (``trustme``), trusted through ``REQUESTS_CA_BUNDLE`` (Python) and ``NODE_EXTRA_CA_CERTS`` (Node).
npm ``customerio-node`` (pinned in ``tests/cio_node/package.json``) is installed by a session fixture; without
node/npm the Node tests skip, except in CI (``CI=true``) where they fail.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from customerio import CustomerIO, CustomerIOException

from posthog_customerio.sandbox import SandboxServer

from ..helpers import npm_install

SITE_ID, API_KEY = "site-official", "key-official"
NODE_DIR = Path(__file__).resolve().parents[1] / "cio_node"
NOW = 1_750_000_000
ULID_1 = "01J0000000000000000000000A"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A CA and a 127.0.0.1 certificate, as PEM files."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    folder = tmp_path_factory.mktemp("tls")
    paths = {"ca": str(folder / "ca.pem"), "cert": str(folder / "cert.pem"), "key": str(folder / "key.pem")}
    ca.cert_pem.write_to_path(paths["ca"])
    cert.cert_chain_pems[0].write_to_path(paths["cert"])
    cert.private_key_pem.write_to_path(paths["key"])
    return paths


@pytest.fixture(scope="module")
def server(tls: dict[str, str]) -> Iterator[SandboxServer]:
    with SandboxServer(port=0, site_id=SITE_ID, api_key=API_KEY, ssl_certfile=tls["cert"], ssl_keyfile=tls["key"]) as s:
        yield s


@pytest.fixture()
def sandbox(server: SandboxServer) -> SandboxServer:
    server.state.reset()
    return server


@pytest.fixture()
def views(sandbox: SandboxServer, tls: dict[str, str]) -> Iterator[Any]:
    """``views("people")`` -> GET /_sandbox/people (over HTTPS, like the clients)."""
    context = ssl.create_default_context(cafile=tls["ca"])
    with httpx.Client(base_url=sandbox.url, verify=context, timeout=10) as client:
        yield lambda name: client.get(f"/_sandbox/{name}").json()


@pytest.fixture()
def cio(sandbox: SandboxServer, tls: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[CustomerIO]:
    """The PyPI client aimed at the sandbox: ``host`` and ``port`` (it always speaks HTTPS)."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tls["ca"])
    client = CustomerIO(SITE_ID, API_KEY, host="127.0.0.1", port=sandbox.port, retries=0)
    yield client
    client.close()


def by_id(people: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {person["id"] or person["email"]: person for person in people}


# --------------------------------------------------------------------------- PyPI customerio


def test_python_client_people_events_devices(cio: CustomerIO, views: Any) -> None:
    assert cio.base_url.startswith("https://127.0.0.1:")
    cio.identify("u1", email="u1@x.com", plan="pro", created_at=NOW, _timestamp=NOW)
    (person,) = views("people")
    assert (person["id"], person["email"], person["attributes"], person["created_at"]) == (
        "u1",
        "u1@x.com",
        {"plan": "pro", "created_at": NOW},
        NOW,
    )

    cio.track("u1", "purchase", data={"price": 3}, id=ULID_1, timestamp=NOW)
    cio.track("u1", "purchase", data={"price": 3}, id=ULID_1, timestamp=NOW)  # same id: deduplicated
    cio.pageview("u1", "/pricing", referrer="ad")
    cio.backfill("u1", "old-thing", NOW - 86_400, source="import")
    events = views("events")
    assert [(e["type"], e["name"], e["data"]) for e in events] == [
        ("event", "purchase", {"price": 3}),
        ("page", "/pricing", {"referrer": "ad"}),
        ("event", "old-thing", {"source": "import"}),
    ]
    assert events[2]["timestamp"] == NOW - 86_400 and views("stats")["duplicates"] == 1

    cio.track_anonymous("anon-1", "viewed", data={"page": "/"})
    assert [e["anonymous_id"] for e in views("anonymous_events")] == ["anon-1"]
    cio.identify("u1", anonymous_id="anon-1")
    assert views("anonymous_events") == [] and len(views("events")) == 4

    cio.add_device("u1", "tok/1", "ios", last_used=NOW, app_version="2.0")
    (device,) = views("people")[0]["devices"]
    assert (device["id"], device["platform"], device["last_used"]) == ("tok/1", "ios", NOW)
    cio.delete_device("u1", "tok/1")
    assert views("people")[0]["devices"] == []

    cio.delete("u1")
    assert views("people") == [] and views("events") == []


def test_python_client_merge_suppress_unsuppress(cio: CustomerIO, views: Any) -> None:
    cio.identify("main", plan="pro")
    cio.identify("dupe", email="d@x.com", city="Oslo")
    cio.merge_customers("id", "main", "email", "d@x.com")
    (person,) = views("people")
    assert (person["id"], person["email"], person["attributes"]) == ("main", "d@x.com", {"plan": "pro", "city": "Oslo"})

    cio.suppress("main")
    assert views("people") == [] and views("suppressions") == [{"id": "main", "email": "d@x.com"}]
    cio.identify("d@x.com", plan="back")  # 200, ignored
    assert views("people") == [] and views("ignored")[0]["identifiers"] == {"email": "d@x.com"}
    cio.unsuppress("main")
    assert views("suppressions") == []
    cio.identify("main", plan="new")
    assert views("people")[0]["attributes"] == {"plan": "new"}


def test_python_client_batch_and_errors(cio: CustomerIO, views: Any) -> None:
    response = cio.batch(
        [
            {"type": "person", "action": "identify", "identifiers": {"id": "b1"}, "attributes": {"n": 1}},
            {"type": "person", "action": "event", "identifiers": {"id": "b1"}, "name": "batched"},
            {
                "type": "object",
                "action": "identify",
                "identifiers": {"object_type_id": "1", "object_id": "acme"},
                "attributes": {"name": "Acme"},
                "cio_relationships": [{"identifiers": {"id": "b1"}}],
            },
            {
                "type": "delivery",
                "action": "event",
                "identifiers": {"id": "dlv-1"},
                "name": "opened",
                "attributes": {"device_token": "tok"},
            },
        ]
    )
    assert response.status_code == 200
    assert views("people")[0]["attributes"] == {"n": 1} and views("events")[0]["name"] == "batched"
    (obj,) = views("objects")
    assert obj["attributes"] == {"name": "Acme"} and len(obj["relationships"]) == 1
    assert views("delivery_metrics")[0]["delivery_id"] == "dlv-1"
    partial = cio.batch([{"type": "person", "action": "event", "identifiers": {"id": "b1"}}])  # no name
    assert partial.status_code == 207 and partial.json()["errors"][0]["field"] == "name"
    with pytest.raises(CustomerIOException, match="^400"):
        cio.track("b1", "x", timestamp="not a number", id="not-a-ulid")
    wrong = CustomerIO(SITE_ID, "wrong", host="127.0.0.1", port=cio.port, retries=0)
    with pytest.raises(CustomerIOException, match="^401"):
        wrong.identify("b1", x=1)


def segment(cio: CustomerIO, segment_id: str, ids: list[Any], *, add: bool = True, id_type: str | None = None) -> None:
    """customerio-python's ``add_to_segment`` / ``remove_from_segment`` as the client last shipped them (0.x; its
    CHANGELOG, 1.0.0: "Removed - Manual segmentation functions"): ``POST {base_url}/segments/{id}/add_customers``
    (``remove_customers``) with ``{"ids": [...]}``, the ids made strings by the client's own ``_stringify_list``
    (still in the pinned client), sent by the pinned client's ``send_request`` (basic auth, JSON; a non-2xx raises
    ``CustomerIOException("<status>: ...")``). ``id_type``, which those methods never sent, goes in the query
    string as the Track API describes it (default ``id``)."""
    action = "add_customers" if add else "remove_customers"
    query = f"?id_type={id_type}" if id_type is not None else ""
    ids = cio._stringify_list(ids)
    cio.send_request("POST", f"{cio.base_url}/segments/{segment_id}/{action}{query}", {"ids": ids})


def test_python_client_manual_segments(cio: CustomerIO, views: Any) -> None:
    # the pinned client has no segment calls (removed in 1.0.0): if they come back, call them instead of segment()
    assert not hasattr(cio, "add_to_segment") and not hasattr(cio, "remove_from_segment")
    cio.identify("main", plan="pro")
    cio.identify(1001, plan="numeric")
    cio.identify("e@x.com", plan="email only")  # an email as the identifier: a person with no id
    cio.identify("other", email="o@x.com")
    people = by_id(views("people"))
    main, numeric, email_only, other = (people[key]["cio_id"] for key in ("main", "1001", "e@x.com", "other"))
    assert people["e@x.com"]["id"] is None

    segment(cio, "42", ["main", 1001, "ghost"])  # by id (the default); 1001 sent as "1001"; unknown people ignored
    assert views("segments") == {"42": [main, numeric]}
    segment(cio, "42", ["e@x.com", "not-an-email", "nobody@x.com"], id_type="email")  # mismatched values ignored
    segment(cio, "42", [other], id_type="cio_id")
    assert views("segments") == {"42": [main, numeric, email_only, other]}
    segment(cio, "42", ["main", "ghost"], add=False)
    segment(cio, "42", ["o@x.com"], add=False, id_type="email")
    assert views("segments") == {"42": [numeric, email_only]}
    segment(cio, "7", ["main"])
    assert views("segments") == {"42": [numeric, email_only], "7": [main]}

    # 1 to 1,000 ids a request (the old client sent any number; the API refuses past 1,000)
    segment(cio, "42", ["main", *(f"ghost-{i}" for i in range(999))])
    assert views("segments")["42"] == [numeric, email_only, main]
    for ids in ([f"ghost-{i}" for i in range(1001)], []):
        with pytest.raises(CustomerIOException, match="^400: .*ids must be a list of 1 to 1000 identifiers"):
            segment(cio, "42", ids)
    with pytest.raises(CustomerIOException, match="^400: .*id_type must be id, email or cio_id"):
        segment(cio, "42", ["main"], id_type="phone")
    wrong = CustomerIO(SITE_ID, "wrong", host="127.0.0.1", port=cio.port, retries=0)
    with pytest.raises(CustomerIOException, match="^401"):
        segment(wrong, "42", ["1001"], add=False)
    assert views("segments")["42"] == [numeric, email_only, main]

    cio.delete("main")  # a deleted person leaves every segment
    assert views("segments") == {"42": [numeric, email_only], "7": []}


# --------------------------------------------------------------------------- npm customerio-node


@pytest.fixture(scope="session")
def node_client() -> Path:
    """``tests/cio_node`` with its pinned ``customerio-node`` installed (npm, once per session)."""
    return npm_install(NODE_DIR, "customerio-node", "install", "--no-package-lock", timeout=300)


@pytest.fixture()
def node(node_client: Path, sandbox: SandboxServer, tls: dict[str, str]) -> Any:
    """``node(["identify", "u1", {...}], ...)`` runs TrackClient calls in order; one result per call."""

    def run(*calls: list[Any], api_key: str = API_KEY) -> list[dict[str, Any]]:
        payload = {"url": f"{sandbox.url}/api/v1", "site_id": SITE_ID, "api_key": api_key, "calls": list(calls)}
        env = {**os.environ, "NODE_EXTRA_CA_CERTS": tls["ca"]}
        result = subprocess.run(
            ["node", "run.js"],
            cwd=node_client,
            input=json.dumps(payload),
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert result.returncode == 0, result.stderr
        answers: list[dict[str, Any]] = json.loads(result.stdout)
        return answers

    return run


def test_node_client_people_events_devices(node: Any, views: Any) -> None:
    answers = node(
        ["getAccountRegion"],
        ["identify", "u1", {"email": "u1@x.com", "plan": "pro", "_timestamp": NOW}],
        ["track", "u1", {"name": "purchase", "data": {"price": 3}, "id": ULID_1}],
        ["trackPageView", "u1", "/pricing"],
        ["trackAnonymous", "anon-1", {"name": "viewed", "data": {"page": "/"}}],
        ["addDevice", "u1", "tok-1", "android", {"last_used": NOW, "app_version": "2.0"}],
    )
    assert [answer.get("ok") for answer in answers[1:]] == [{}] * 5, answers
    assert answers[0]["ok"]["region"] == "us" and answers[0]["ok"]["url"].startswith("https://127.0.0.1:")
    (person,) = views("people")
    assert (person["id"], person["email"], person["attributes"]) == ("u1", "u1@x.com", {"plan": "pro"})
    assert [(e["type"], e["name"]) for e in views("events")] == [("event", "purchase"), ("page", "/pricing")]
    assert [e["name"] for e in views("anonymous_events")] == ["viewed"]
    (device,) = person["devices"]
    assert (device["id"], device["platform"], device["attributes"]) == ("tok-1", "android", {"app_version": "2.0"})

    assert node(["identify", "u1", {"anonymous_id": "anon-1"}], ["deleteDevice", "u1", "tok-1"]) == [{"ok": {}}] * 2
    assert views("anonymous_events") == [] and len(views("events")) == 3 and views("people")[0]["devices"] == []
    assert node(["destroy", "u1"]) == [{"ok": {}}]
    assert views("people") == []


def test_node_client_merge_suppress_segments_forms(node: Any, views: Any) -> None:
    answers = node(
        ["identify", "main", {"plan": "pro"}],
        ["identify", "dupe", {"email": "d@x.com", "city": "Oslo"}],
        ["addCustomersToSegment", "42", ["dupe"]],
        ["mergeCustomers", "id", "main", "email", "d@x.com"],
        ["submitForm", "newsletter", {"email": "f@x.com", "first_name": "Fay"}],
    )
    assert [answer.get("ok") for answer in answers] == [{}] * 5, answers
    people = by_id(views("people"))
    assert people["main"]["attributes"] == {"plan": "pro", "city": "Oslo"} and people["main"]["email"] == "d@x.com"
    assert people["f@x.com"]["attributes"] == {"first_name": "Fay"}
    assert views("segments") == {"42": [people["main"]["cio_id"]]}
    assert node(["removeCustomersFromSegment", "42", ["d@x.com"], "email"]) == [{"ok": {}}]
    assert views("segments") == {"42": []}

    assert node(["suppress", "main"], ["identify", "main", {"plan": "again"}]) == [{"ok": {}}] * 2
    assert set(by_id(views("people"))) == {"f@x.com"}
    assert views("suppressions") == [{"id": "main", "email": "d@x.com"}]
    assert node(["unsuppress", "d@x.com"], ["identify", "main", {"plan": "new"}]) == [{"ok": {}}] * 2
    assert by_id(views("people"))["main"]["attributes"] == {"plan": "new"}


def test_node_client_metrics_batch_entity_and_errors(node: Any, views: Any) -> None:
    delivery = {
        "type": "delivery",
        "action": "event",
        "identifiers": {"id": "dlv-2"},
        "name": "converted",
        "attributes": {"device_token": "tok"},
    }
    answers = node(
        ["trackPush", {"delivery_id": "dlv-1", "event": "delivered", "device_id": "tok", "timestamp": NOW}],
        ["reportMetric", {"delivery_id": "dlv-1", "metric": "clicked", "href": "https://x"}],
        ["unsubscribe", "dlv-1"],
        [
            "batch",
            [{"type": "person", "action": "identify", "identifiers": {"id": "b1"}, "attributes": {"n": 1}}, delivery],
        ],
        [
            "entity",
            {
                "type": "object",
                "action": "identify",
                "identifiers": {"object_type_id": "1", "object_id": "acme"},
                "attributes": {"name": "Acme"},
                "cio_relationships": [{"identifiers": {"id": "b1"}}],
            },
        ],
        ["batch", [{"type": "person", "action": "event", "identifiers": {"id": "b1"}}]],
        ["trackPush", {"delivery_id": "dlv-1", "event": "bounced"}],
    )
    assert [answer.get("ok") for answer in answers[:5]] == [{}] * 5, answers
    assert answers[5]["ok"]["errors"][0]["field"] == "name"  # 207 is a 2xx: the client resolves
    assert answers[6]["status"] == 400
    metrics = [(m["source"], m["delivery_id"], m["metric"]) for m in views("delivery_metrics")]
    assert metrics == [
        ("push/events", "dlv-1", "delivered"),
        ("metrics", "dlv-1", "clicked"),
        ("unsubscribe", "dlv-1", "unsubscribed"),
        ("v2", "dlv-2", "converted"),
    ]
    (obj,) = views("objects")
    assert obj["attributes"] == {"name": "Acme"} and len(obj["relationships"]) == 1
    assert views("people")[0]["attributes"] == {"n": 1}
    assert node(["identify", "b1", {"n": 2}], api_key="wrong")[0]["status"] == 401
