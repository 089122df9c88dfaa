"""``CUSTOMERIO_API=pipelines``: every mapping rule as a Segment call, and end to end against the sandbox."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from posthog_customerio.config import ConfigError, load_settings
from posthog_customerio.operations import Claimed, Operation, encode_payload
from posthog_customerio.output import pipelines as pl
from posthog_customerio.output.base import Outcome
from posthog_customerio.runtime import Runtime
from posthog_customerio.sandbox import SandboxServer
from posthog_customerio.sources import parse_event

from ..conftest import write_jsonl

KEY = "sandbox"
T0 = 1_767_600_000
ISO0 = pl.iso_timestamp(T0)


def claimed(payload: dict[str, Any], kind: str = "person", seq: int = 7) -> Claimed:
    text = encode_payload(payload)
    return Claimed(seq, "k", text, len(text.encode()), 0, 0.0, None, kind)  # type: ignore[arg-type]


def calls_of(payload: dict[str, Any], kind: str = "person", seq: int = 7) -> list[dict[str, Any]]:
    return [json.loads(text) for text in pl.claimed_calls(claimed(payload, kind, seq))]


P = {"type": "person", "identifiers": {"id": "u1"}}
E = {"type": "person", "identifiers": {"email": "ann@example.com"}}
OP = "MID"  # a stand-in: messageIds are checked separately (the table strips them)

# neutral operation (payload, kind) -> the calls it becomes (without messageId)
RULES: list[tuple[str, dict[str, Any], str, list[dict[str, Any]]]] = [
    (
        "identify",
        {**P, "action": "identify", "timestamp": T0, "attributes": {"plan": "pro"}},
        "person",
        [{"type": "identify", "userId": "u1", "traits": {"plan": "pro"}, "timestamp": ISO0}],
    ),
    (
        "identify clearing an attribute",
        {**P, "action": "identify", "timestamp": T0, "attributes": {"plan": "", "name": "Ann"}},
        "person",
        [{"type": "identify", "userId": "u1", "traits": {"plan": None, "name": "Ann"}, "timestamp": ISO0}],
    ),
    (
        "identify by email",
        {**E, "action": "identify", "timestamp": T0, "attributes": {"plan": "pro"}},
        "person",
        [
            {
                "type": "identify",
                "userId": "ann@example.com",
                "traits": {"plan": "pro", "email": "ann@example.com"},
                "timestamp": ISO0,
            }
        ],
    ),
    (
        "identify attaching a visitor",
        {**P, "action": "identify", "timestamp": T0, "attributes": {"name": "Ann", "anonymous_id": "dev-1"}},
        "person",
        [{"type": "identify", "userId": "u1", "anonymousId": "dev-1", "traits": {"name": "Ann"}, "timestamp": ISO0}],
    ),
    (
        "event",
        {**P, "action": "event", "name": "signed_up", "id": "ev1", "timestamp": T0, "attributes": {"a": 1}},
        "person",
        [{"type": "track", "event": "signed_up", "userId": "u1", "properties": {"a": 1}, "timestamp": ISO0}],
    ),
    (
        "page",
        {
            **P,
            "action": "page",
            "name": "https://x.io/",
            "id": "ev2",
            "timestamp": T0,
            "attributes": {"$current_url": "https://x.io/"},
        },
        "person",
        [
            {
                "type": "page",
                "name": "https://x.io/",
                "userId": "u1",
                "properties": {"$current_url": "https://x.io/"},
                "timestamp": ISO0,
            }
        ],
    ),
    (
        "screen",
        {**P, "action": "screen", "name": "Home", "id": "ev3", "timestamp": T0, "attributes": {}},
        "person",
        [{"type": "screen", "name": "Home", "userId": "u1", "properties": {}, "timestamp": ISO0}],
    ),
    (
        "anonymous event",
        {
            "type": "anonymous",
            "action": "event",
            "anonymous_id": "dev-1",
            "name": "clicked",
            "id": "ev4",
            "timestamp": T0,
            "attributes": {"b": 2},
        },
        "anonymous",
        [{"type": "track", "event": "clicked", "anonymousId": "dev-1", "properties": {"b": 2}, "timestamp": ISO0}],
    ),
    (
        "anonymous page",
        {
            "type": "anonymous",
            "action": "page",
            "anonymous_id": "dev-1",
            "name": "https://x.io/",
            "id": "ev5",
            "timestamp": T0,
            "attributes": {},
        },
        "anonymous",
        [{"type": "page", "name": "https://x.io/", "anonymousId": "dev-1", "properties": {}, "timestamp": ISO0}],
    ),
    (
        "anonymous screen",
        {
            "type": "anonymous",
            "action": "screen",
            "anonymous_id": "dev-1",
            "name": "Home",
            "id": "ev6",
            "timestamp": T0,
            "attributes": {},
        },
        "anonymous",
        [{"type": "screen", "name": "Home", "anonymousId": "dev-1", "properties": {}, "timestamp": ISO0}],
    ),
    (
        "merge",
        {"type": "person", "action": "merge", "primary": {"id": "u1"}, "secondary": {"id": "legacy-1"}},
        "person",
        [{"type": "alias", "userId": "u1", "previousId": "legacy-1"}],
    ),
    (
        "delete",
        {**P, "action": "delete"},
        "person",
        [{"type": "track", "event": "Delete Person", "userId": "u1", "properties": {}}],
    ),
    (
        "suppress",
        {**P, "action": "suppress"},
        "person",
        [{"type": "track", "event": "User Suppressed", "userId": "u1", "properties": {}}],
    ),
    (
        "unsuppress",
        {**E, "action": "unsuppress"},
        "person",
        [{"type": "track", "event": "User Unsuppressed", "userId": "ann@example.com", "properties": {}}],
    ),
    (
        "add device",
        {**P, "action": "add_device", "device": {"token": "tok", "platform": "ios", "last_used": T0}},
        "person",
        [
            {
                "type": "track",
                "event": "Device Created or Updated",
                "userId": "u1",
                "properties": {},
                "context": {"device": {"token": "tok", "type": "ios"}},
                "timestamp": ISO0,
            }
        ],
    ),
    (
        "delete device",
        {**P, "action": "delete_device", "device": {"token": "tok"}},
        "person",
        [
            {
                "type": "track",
                "event": "Device Deleted",
                "userId": "u1",
                "properties": {},
                "context": {"device": {"token": "tok"}},
            }
        ],
    ),
    (
        "relationship",
        {
            **P,
            "action": "add_relationships",
            "cio_relationships": [{"identifiers": {"object_type_id": "2", "object_id": "acme"}}],
        },
        "person",
        [{"type": "group", "groupId": "acme", "userId": "u1", "traits": {"objectTypeId": "2"}}],
    ),
    (
        "object",
        {
            "type": "object",
            "identifiers": {"object_type_id": "2", "object_id": "acme"},
            "action": "identify",
            "attributes": {"name": "Acme"},
        },
        "object",
        [{"type": "group", "groupId": "acme", "traits": {"name": "Acme", "objectTypeId": "2"}}],
    ),
]


@pytest.mark.parametrize(("payload", "kind", "expected"), [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_every_neutral_operation_becomes_its_segment_call(
    payload: dict[str, Any], kind: str, expected: list[dict[str, Any]]
) -> None:
    calls = calls_of(payload, kind)
    assert all(call.pop("messageId") for call in calls)
    assert calls == expected


def test_message_ids_events_by_dedupe_id_others_by_seq_and_content() -> None:
    event = {**P, "action": "event", "name": "x", "id": "01JEVENT", "timestamp": T0, "attributes": {}}
    assert calls_of(event, seq=1)[0]["messageId"] == calls_of(event, seq=99)[0]["messageId"] == "01JEVENT"
    delete = {**P, "action": "delete"}
    first = calls_of(delete, seq=5)[0]["messageId"]
    assert first == calls_of(delete, seq=5)[0]["messageId"]  # a re-send of the same row: deduped downstream
    assert first != calls_of(delete, seq=6)[0]["messageId"]  # a second deletion later: a new call
    two = {
        **P,
        "action": "add_relationships",
        "cio_relationships": [
            {"identifiers": {"object_type_id": "1", "object_id": "a"}},
            {"identifiers": {"object_type_id": "1", "object_id": "b"}},
        ],
    }
    ids = [call["messageId"] for call in calls_of(two)]
    assert len(set(ids)) == 2 and ids[1] == ids[0] + ":1"


class _Recorder(httpx.BaseTransport):
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(request.content))
        return httpx.Response(200, json={})


def test_all_kinds_go_in_one_batch_and_refused_calls_are_never_sent() -> None:
    recorder = _Recorder()
    output = pl.PipelinesOutput(pl.PipelinesClient(KEY, "http://cio.test", transport=recorder))
    items = [claimed(payload, kind, seq) for seq, (_, payload, kind, _) in enumerate(RULES, 1)]
    huge = claimed({**P, "action": "event", "name": "big", "id": "ev9", "attributes": {"x": "y" * 33_000}}, seq=50)
    odd = claimed({**P, "action": "teleport"}, seq=51)
    units = output.units([*items[:3], huge, *items[3:], odd])
    refused = [unit for unit in units if isinstance(unit, pl.PipelinesUnit) and unit.refused]
    assert [unit.items[0].seq for unit in refused] == [50, 51]
    results = [output.send(unit) for unit in units]
    assert [r.outcome for r in results[:2]] == [Outcome.PERMANENT, Outcome.PERMANENT]
    assert not results[0].sent and "over the Pipelines API's 32000-byte limit" in results[0].describe()
    assert "teleport" in results[1].describe()
    assert len(recorder.bodies) == 1  # one request for every kind, the anonymous ones included
    sent = recorder.bodies[0]["batch"]
    assert len(sent) == len(RULES)
    assert {call.get("anonymousId") for call in sent if call["type"] != "identify"} >= {"dev-1"}


# --------------------------------------------------------------------------- settings


def test_region_and_url_choose_the_pipelines_host(tmp_path: Path) -> None:
    def url(**values: Any) -> str:
        settings = load_settings(
            {
                "customerio_api": "pipelines",
                "customerio_pipelines_api_key": "k",
                "posthog_customerio_data_dir": tmp_path,
                **values,
            }
        )
        with Runtime(settings) as runtime:
            return runtime.output().workspace.base_url

    assert url() == "https://cdp.customer.io"  # auto: the Pipelines API has no region lookup
    assert url(customerio_region="eu") == "https://cdp-eu.customer.io"
    assert url(customerio_region="us") == "https://cdp.customer.io"
    assert url(customerio_region="eu", customerio_pipelines_url="http://proxy.test/") == "http://proxy.test"


def test_the_key_is_required_secret_and_redacted(tmp_path: Path) -> None:
    settings = load_settings({"customerio_api": "pipelines", "posthog_customerio_data_dir": tmp_path})
    with pytest.raises(ConfigError, match="CUSTOMERIO_PIPELINES_API_KEY"):
        settings.require_credentials()
    settings = load_settings({"customerio_api": "pipelines", "customerio_pipelines_api_key": "pk-secret-1"})
    settings.require_credentials()  # no Track site ID / API key needed
    assert "pk-secret-1" in settings.secret_values()
    assert "pk-secret-1" not in repr(settings)
    with pytest.raises(ConfigError) as error:
        load_settings({"customerio_api": "pipelines", "customerio_pipelines_url": "pk-secret-2"})
    assert "CUSTOMERIO_PIPELINES_URL" in str(error.value) and "pk-secret-2" not in str(error.value)


# --------------------------------------------------------------------------- end to end (real HTTP)


@pytest.fixture
def pipes(sandbox: SandboxServer) -> SandboxServer:
    sandbox.pipelines.reset()
    return sandbox


@pytest.fixture
def penv(pipes: SandboxServer, tmp_path: Path) -> dict[str, str]:
    """Pipelines mode against the sandbox, and no Track credentials at all."""
    return {
        "CUSTOMERIO_API": "pipelines",
        "CUSTOMERIO_PIPELINES_API_KEY": KEY,
        "CUSTOMERIO_PIPELINES_URL": pipes.url,
        "POSTHOG_CUSTOMERIO_DATA_DIR": str(tmp_path / "data"),
        "SQLITE_SYNCHRONOUS": "NORMAL",
        "GROUP_TYPE_MAP": "company=2",
    }


def ev(name: str, distinct_id: str, t: int, **props: Any) -> dict[str, Any]:
    return {
        "event": name,
        "distinct_id": distinct_id,
        "timestamp": T0 + t,
        "uuid": f"{name}-{distinct_id}-{t}",
        "properties": props,
    }


def anon(name: str, distinct_id: str, t: int, **props: Any) -> dict[str, Any]:
    return ev(name, distinct_id, t, **{"$is_identified": False, "$device_id": distinct_id, **props})


def send(cli: Any, env: dict[str, str], tmp_path: Path, events: list[dict[str, Any]], *flags: str) -> Any:
    path = write_jsonl(tmp_path / f"in-{len(events)}-{hash(json.dumps(events)) & 0xFFFF}.jsonl", events)
    return cli("send", str(path), *flags, env=env)


def test_check_verifies_the_pipelines_key(cli: Any, penv: dict[str, str], pipes: SandboxServer) -> None:
    result = cli("check", env=penv)
    assert result.exit_code == 0, result.output
    assert "Pipelines API key OK" in result.output and pipes.url in result.output
    assert pipes.pipelines.requests()[-1]["path"] == "/v1/batch"
    result = cli("check", "--customerio-pipelines-api-key", "wrong-key", env=penv)
    assert result.exit_code == 1 and "rejected the Pipelines API key" in result.output
    assert "wrong-key" not in result.output


def test_session_end_to_end(cli: Any, penv: dict[str, str], pipes: SandboxServer, tmp_path: Path) -> None:
    """Visitor, identify, group, relationship, alias (merge), deletion: one request for the stream."""
    events = [
        anon("$pageview", "device-1", 0, **{"$current_url": "https://x.io/"}),
        anon("signed_up", "device-1", 10, plan="pro"),
        ev("$identify", "user-1", 20, **{"$anon_distinct_id": "device-1", "$set": {"email": "ann@example.com"}}),
        ev(
            "$groupidentify",
            "user-1",
            30,
            **{"$group_type": "company", "$group_key": "acme", "$group_set": {"name": "Acme"}},
        ),
        ev("purchase", "user-1", 40, amount=9, **{"$groups": {"company": "acme"}}),
        ev("browsed", "legacy-9", 50),
        ev("$identify", "user-9", 60, **{"$set": {"email": "bob@example.com"}}),
        ev("$create_alias", "user-9", 70, alias="legacy-9"),
    ]
    result = send(cli, penv, tmp_path, events)
    assert result.exit_code == 0, result.output
    ann = pipes.pipelines.person("user-1")
    assert ann is not None and ann["email"] == "ann@example.com"
    names = sorted(e["name"] for e in pipes.pipelines.events("user-1"))
    assert names == sorted(["https://x.io/", "signed_up", "$identify", "purchase"])
    assert ann["relationships"] == [{"objectTypeId": "2", "groupId": "acme", "attributes": {}}]
    assert [o["attributes"] for o in pipes.pipelines.objects()] == [{"name": "Acme"}]
    assert [p["userId"] for p in pipes.pipelines.people()].count("legacy-9") == 0  # merged into user-9
    assert "browsed" in [e["name"] for e in pipes.pipelines.events("user-9")]
    assert all(r["strict"] for r in pipes.pipelines.requests())
    result = cli("delete-person", "user-1", env=penv)
    assert result.exit_code == 0, result.output
    assert pipes.pipelines.person("user-1") is None


def test_visitor_sent_anonymously_is_attached_by_the_identify(
    cli: Any, penv: dict[str, str], pipes: SandboxServer, tmp_path: Path
) -> None:
    """Anonymous calls already delivered: the identify with both ids attaches them (not adopted)."""
    assert (
        send(
            cli,
            penv,
            tmp_path,
            [anon("$pageview", "dev-7", 0, **{"$current_url": "https://x.io/a"}), anon("clicked", "dev-7", 5)],
        ).exit_code
        == 0
    )
    assert len(pipes.pipelines.anonymous_events()) == 2
    identify = ev("$identify", "user-7", 10, **{"$anon_distinct_id": "dev-7", "$set": {"name": "Max"}})
    assert send(cli, penv, tmp_path, [identify]).exit_code == 0
    assert pipes.pipelines.anonymous_events() == []
    assert sorted(e["name"] for e in pipes.pipelines.events("user-7")) == ["$identify", "clicked", "https://x.io/a"]
    identifies = [c for r in pipes.pipelines.requests() for c in r["body"]["batch"] if c["type"] == "identify"]
    assert identifies[-1]["anonymousId"] == "dev-7" and "anonymous_id" not in identifies[-1]["traits"]


@pytest.mark.parametrize(
    ("extra", "expected_people", "expected_anonymous"),
    [
        ({}, ["user-2"], 1),
        ({"IDENTIFY_BY_EMAIL": "true"}, ["cat@example.com"], 1),
        ({"SEND_EVENTS_FROM_ANONYMOUS_USERS": "identified"}, ["user-2"], 0),
        ({"EVENTS_TO_SEND": "bought"}, ["user-2"], 0),
    ],
    ids=["default", "identify-by-email", "anonymous-filter", "allowlist"],
)
def test_seed_options(
    cli: Any,
    penv: dict[str, str],
    pipes: SandboxServer,
    tmp_path: Path,
    extra: dict[str, str],
    expected_people: list[str],
    expected_anonymous: int,
) -> None:
    events = [
        anon("looked", "dev-2", 0),
        ev("$identify", "user-2", 10, **{"$set": {"email": "cat@example.com"}}),
        ev("bought", "user-2", 20, amount=3),
        ev("browsed", "user-2", 30),
    ]
    assert send(cli, {**penv, **extra}, tmp_path, events).exit_code == 0
    assert [p["userId"] or p["email"] for p in pipes.pipelines.people()] == expected_people
    assert len(pipes.pipelines.anonymous_events()) == expected_anonymous
    person_events = [e["name"] for e in pipes.pipelines.events()]
    assert "bought" in person_events
    assert ("browsed" in person_events) is ("EVENTS_TO_SEND" not in extra)
    if "IDENTIFY_BY_EMAIL" in extra:  # an email userId addresses the person by email: no id
        person = pipes.pipelines.person("cat@example.com")
        assert person is not None and person["userId"] is None and person["attributes"]["email"] == "cat@example.com"


@pytest.mark.parametrize(
    "clear",
    [{"$unset": ["plan"]}, {"$set": {"plan": None}}],
    ids=["unset", "set-null"],
)
def test_an_attribute_clear_is_sent_as_null_and_removes_the_trait(
    cli: Any, penv: dict[str, str], pipes: SandboxServer, tmp_path: Path, clear: dict[str, Any]
) -> None:
    """``$unset`` / ``$set`` null reach Pipelines as ``"plan": null`` (the Segment spec), not ``""``."""
    events = [
        ev("$identify", "user-5", 0, **{"$set": {"plan": "pro", "name": "Ann"}}),
        ev("$set", "user-5", 10, **clear),
    ]
    result = send(cli, penv, tmp_path, events)
    assert result.exit_code == 0, result.output
    identifies = [c for r in pipes.pipelines.requests() for c in r["body"]["batch"] if c["type"] == "identify"]
    assert identifies[0]["traits"]["plan"] == "pro"
    assert identifies[-1]["traits"] == {"plan": None}
    person = pipes.pipelines.person("user-5")
    assert person is not None and person["attributes"] == {"name": "Ann"}


def test_wrong_key_keeps_everything_queued(
    cli: Any, penv: dict[str, str], pipes: SandboxServer, tmp_path: Path
) -> None:
    result = send(cli, {**penv, "CUSTOMERIO_PIPELINES_API_KEY": "nope-nope"}, tmp_path, [ev("a", "u", 0)])
    assert result.exit_code == 1 and "Pipelines API key invalid" in result.output
    assert pipes.pipelines.people() == []
    assert send(cli, penv, tmp_path, []).exit_code == 0  # the right key: the queued operations go
    assert [e["name"] for e in pipes.pipelines.events()] == ["a"]


@pytest.mark.parametrize(
    "fault",
    [{"status": 429, "count": 2, "retry_after": "1"}, {"status": 500, "count": 4}],
    ids=["429-retry-after", "500-outage"],
)
def test_rate_limit_and_outage_lose_nothing(
    cli: Any, penv: dict[str, str], pipes: SandboxServer, tmp_path: Path, fault: dict[str, Any]
) -> None:
    assert httpx.post(f"{pipes.url}/_sandbox/pipelines/faults", json=fault, timeout=30).status_code == 200
    events = [ev(f"e{n}", f"user-{n % 5}", n) for n in range(40)] + [anon("visit", "dev-x", 99)]
    result = send(cli, penv, tmp_path, events)
    assert result.exit_code == 0, result.output
    statuses = [r["status"] for r in pipes.pipelines.requests()]
    assert statuses.count(fault["status"]) == fault["count"] and statuses[-1] == 200
    assert sorted(e["name"] for e in pipes.pipelines.events()) == sorted(f"e{n}" for n in range(40))
    assert [e["name"] for e in pipes.pipelines.anonymous_events()] == ["visit"]


def test_a_refused_batch_is_halved_until_the_bad_call_is_alone(pipes: SandboxServer, tmp_path: Path) -> None:
    settings = load_settings(
        {
            "customerio_api": "pipelines",
            "customerio_pipelines_api_key": KEY,
            "customerio_pipelines_url": pipes.url,
            "posthog_customerio_data_dir": tmp_path / "d",
            "sqlite_synchronous": "NORMAL",
            "customerio_max_rps": 10_000,
            "delivery_concurrency": 1,
        }
    )
    pipes.pipelines.add_fault(400, count=3)  # the batch of 4, its first half, then its first call
    with Runtime(settings) as runtime:
        with runtime.db.transaction() as conn:
            runtime.outbox.enqueue(
                conn,
                [
                    Operation(
                        f"u{n}",
                        {
                            **P,
                            "identifiers": {"id": f"u{n}"},
                            "action": "event",
                            "name": f"e{n}",
                            "id": f"id-{n}",
                            "timestamp": T0,
                            "attributes": {},
                        },
                    )
                    for n in range(4)
                ],
            )
        deliverer = runtime.deliverer()
        deliverer.start()
        assert deliverer.wait_until_empty(30)
        deliverer.stop()
        letters = runtime.outbox.dead_letters(None)
    assert [json.loads(letter.payload)["name"] for letter in letters] == ["e0"]
    sizes = [len(r["body"]["batch"]) for r in pipes.pipelines.requests()]
    assert sizes == [4, 2, 1, 1, 2]
    assert sorted(e["name"] for e in pipes.pipelines.events()) == ["e1", "e2", "e3"]


def test_a_207_is_not_counted_as_delivered(pipes: SandboxServer, tmp_path: Path) -> None:
    """The Pipelines API documents no 207 and lists no rejected call: the batch is sent again (in halves)."""
    settings = load_settings(
        {
            "customerio_api": "pipelines",
            "customerio_pipelines_api_key": KEY,
            "customerio_pipelines_url": pipes.url,
            "posthog_customerio_data_dir": tmp_path / "d",
            "sqlite_synchronous": "NORMAL",
            "customerio_max_rps": 10_000,
            "delivery_concurrency": 1,
        }
    )
    pipes.pipelines.add_fault(207, count=1)  # answered without applying anything
    with Runtime(settings) as runtime:
        runtime.outbox.put(
            [
                Operation(
                    f"u{n}",
                    {**P, "identifiers": {"id": f"u{n}"}, "action": "event", "name": f"e{n}", "id": f"id-{n}"},
                )
                for n in range(4)
            ]
        )
        deliverer = runtime.deliverer()
        deliverer.start()
        assert deliverer.wait_until_empty(30)
        deliverer.stop()
        assert runtime.outbox.dead_letters(None) == []
    assert [r["status"] for r in pipes.pipelines.requests()] == [207, 200, 200]
    assert sorted(e["name"] for e in pipes.pipelines.events()) == ["e0", "e1", "e2", "e3"]


def test_parsed_events_keep_one_message_id_per_event(pipes: SandboxServer, tmp_path: Path) -> None:
    """Every person and anonymous event reaches the sandbox with its dedupe id as messageId."""
    events = [
        anon("v", "dev-3", 0),
        ev("$identify", "user-3", 5, **{"$anon_distinct_id": "dev-3"}),
        ev("x", "user-3", 9),
    ]
    settings = load_settings(
        {
            "customerio_api": "pipelines",
            "customerio_pipelines_api_key": KEY,
            "customerio_pipelines_url": pipes.url,
            "posthog_customerio_data_dir": tmp_path / "d",
            "sqlite_synchronous": "NORMAL",
        }
    )
    with Runtime(settings) as runtime:
        runtime.ingestor.ingest([parse_event(e) for e in events])
        deliverer = runtime.deliverer()
        deliverer.start()
        assert deliverer.wait_until_empty(30)
        deliverer.stop()
    message_ids = [e["messageId"] for e in pipes.pipelines.events()]
    assert len(message_ids) == 3 and len(set(message_ids)) == 3 and all(message_ids)


def test_kill_9_mid_send_and_restart_delivers_every_event_once(
    penv: dict[str, str], pipes: SandboxServer, tmp_path: Path
) -> None:
    """``send`` kill -9'd while delivering, then run again on the same file and data dir: every event once."""
    import os
    import signal
    import subprocess
    import sys
    import time

    events = []
    for n in range(600):
        events += [
            anon("$pageview", f"dev-{n}", n * 10, **{"$current_url": f"https://x.io/{n}"}),
            ev("$identify", f"user-{n}", n * 10 + 1, **{"$anon_distinct_id": f"dev-{n}"}),
            ev("a", f"user-{n}", n * 10 + 2),
            ev("b", f"user-{n}", n * 10 + 3),
            anon("c", f"dev-x{n}", n),
        ]
    path = write_jsonl(tmp_path / "stream.jsonl", events)
    env = {**os.environ, **penv, "CUSTOMERIO_MAX_RPS": "1", "DELIVERY_CONCURRENCY": "1"}
    command = [sys.executable, "-m", "posthog_customerio", "send", str(path)]
    log = (tmp_path / "first.log").open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while sum(r["status"] == 200 for r in pipes.pipelines.requests()) < 2:
            assert process.poll() is None, (tmp_path / "first.log").read_text()
            assert time.monotonic() < deadline, "no delivery within 60 s"
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    delivered_before = len(pipes.pipelines.events()) + len(pipes.pipelines.anonymous_events())
    assert 0 < delivered_before < len(events)  # killed mid-run
    env["CUSTOMERIO_MAX_RPS"] = "1000"
    again = subprocess.run(command, env=env, capture_output=True, timeout=300, check=False)
    assert again.returncode == 0, again.stdout.decode() + again.stderr.decode()
    applied = pipes.pipelines.events() + pipes.pipelines.anonymous_events()
    message_ids = [event["messageId"] for event in applied]
    assert len(applied) == len(events) and len(set(message_ids)) == len(events)
    for n in (0, 299, 599):
        assert sorted(e["name"] for e in pipes.pipelines.events(f"user-{n}")) == [
            "$identify",
            "a",
            "b",
            f"https://x.io/{n}",
        ]
    sent = [
        call.get("messageId") for r in pipes.pipelines.requests() if r["status"] == 200 for call in r["body"]["batch"]
    ]
    assert len(sent) - len(set(sent)) == pipes.pipelines.stats().get("duplicates", 0)  # re-sent ones were no-ops


def test_serve_with_the_sandbox_in_pipelines_mode(tmp_path: Path) -> None:
    """``serve --sandbox`` wiring: the in-process sandbox's Pipelines side receives the capture, no Track call."""
    import time

    from ..service import running_service

    settings = load_settings(
        {"customerio_api": "pipelines", "posthog_customerio_data_dir": tmp_path / "d", "sqlite_synchronous": "NORMAL"}
    )
    runtime = Runtime(settings, sandbox=True)
    box = runtime.sandbox
    assert box is not None
    with running_service(runtime) as url:
        body = {"api_key": "k", "event": "clicked", "distinct_id": "visitor-1", "properties": {"$is_identified": False}}
        assert httpx.post(f"{url}/capture/", json=body, timeout=30).status_code == 200
        deadline = time.monotonic() + 30
        while not box.pipelines.anonymous_events():
            assert time.monotonic() < deadline, "not delivered within 30 s"
            time.sleep(0.02)
    assert [e["anonymousId"] for e in box.pipelines.anonymous_events()] == ["visitor-1"]
    assert box.state.stats().get("requests", 0) == 0  # nothing through the Track API


# --------------------------------------------------------------------------- email change (IDENTIFY_BY_EMAIL)

D, OLD, NEW = "user-7", "old@example.com", "new@example.com"
#: what the mapping emits when a person addressed by email changes it: give the profile the id, then change the
#: email addressed by the id; afterwards the person is addressed by the new email
EMAIL_CHANGE = [
    {"type": "person", "identifiers": {"email": OLD}, "action": "identify", "timestamp": T0, "attributes": {"id": D}},
    {"type": "person", "identifiers": {"id": D}, "action": "identify", "timestamp": T0, "attributes": {"email": NEW}},
]


def test_an_email_change_becomes_identifies_by_user_id() -> None:
    """The id goes out as the ``userId`` (Customer.io's person id), the emails as ``traits.email``."""
    first, second = ([{k: v for k, v in c.items() if k != "messageId"} for c in calls_of(op)] for op in EMAIL_CHANGE)
    assert first == [{"type": "identify", "userId": D, "traits": {"email": OLD}, "timestamp": ISO0}]
    assert second == [{"type": "identify", "userId": D, "traits": {"email": NEW}, "timestamp": ISO0}]
    by_email = {"type": "person", "identifiers": {"email": NEW}, "action": "event", "name": "x", "id": "e9"}
    assert calls_of({**by_email, "attributes": {}})[0]["userId"] == NEW


def test_an_email_change_leaves_one_profile_with_every_event(pipes: SandboxServer) -> None:
    """Before (by the old email), the change, after (by the new email): one person, id D, email N, all events."""

    def person_op(identifiers: dict[str, str], action: str, **rest: Any) -> dict[str, Any]:
        return {"type": "person", "identifiers": identifiers, "action": action, "timestamp": T0, **rest}

    operations = [
        person_op({"email": OLD}, "identify", attributes={"plan": "pro"}),
        person_op({"email": OLD}, "event", name="before", id="ev-before", attributes={}),
        *EMAIL_CHANGE,
        person_op({"email": NEW}, "identify", attributes={"seats": 3}),
        person_op({"email": NEW}, "event", name="after", id="ev-after", attributes={}),
    ]
    texts = [
        pl.encode_call(call)
        for seq, op in enumerate(operations, 1)
        for call in pl.operation_calls(op, "person", pl.message_id(op, seq, "person", encode_payload(op)))
    ]
    with pl.PipelinesClient(KEY, pipes.url) as client:
        assert client.send_batch(texts).outcome is Outcome.OK
    (person,) = pipes.pipelines.people()
    assert (person["userId"], person["email"]) == (D, NEW)
    assert person["attributes"] == {"email": NEW, "plan": "pro", "seats": 3}
    assert [e["name"] for e in pipes.pipelines.events(NEW)] == ["before", "after"]
    assert pipes.pipelines.events(D) == pipes.pipelines.events(NEW)
    assert pipes.pipelines.person(OLD) is None and pipes.pipelines.failures() == []
