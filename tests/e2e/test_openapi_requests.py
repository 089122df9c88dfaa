"""Every request we send validates against Customer.io's official Track API OpenAPI spec.

The realistic sample stream (identify, page, screen, events, odd ids, long URLs)
is delivered through v2 and through v1 to the sandbox, and each request the
sandbox recorded is validated: method, path template, path parameters and body.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from posthog_customerio.runtime import Runtime
from posthog_customerio.samples import generate_session_events
from posthog_customerio.sandbox import SandboxServer
from posthog_customerio.sources import parse_event

from ..helpers import make_settings
from ..openapi_check import get_validator, requires_spec

pytestmark = [pytest.mark.e2e, requires_spec]


def _deliver_sample(
    sandbox: SandboxServer, tmp_path: Path, api: str, identify_by_email: bool, anonymous_events: str = "anonymous"
) -> None:
    settings = make_settings(
        tmp_path / api,
        sandbox,
        anonymous_events=anonymous_events,
        group_type_map="company=1",
        customerio_api=api,
        identify_by_email=identify_by_email,
        customerio_max_rps=10_000,
    )
    events = [parse_event(raw) for raw in generate_session_events(people=25, seed=3, events_per_person=10)]
    with Runtime(settings) as runtime:
        runtime.ingestor.ingest(events)
        deliverer = runtime.deliverer()
        deliverer.start()
        assert deliverer.wait_until_empty(60)
        deliverer.stop()
        assert runtime.outbox.dead_letter_count() == 0


@pytest.mark.parametrize("api", ["v2", "v1"])
@pytest.mark.parametrize("identify_by_email", [False, True])
def test_every_request_validates_against_the_official_spec(
    sandbox: SandboxServer, tmp_path: Path, api: str, identify_by_email: bool
) -> None:
    _deliver_sample(sandbox, tmp_path, api, identify_by_email)
    _deliver_sample(sandbox, tmp_path / "person-mode", api, identify_by_email, anonymous_events="person")
    requests = sandbox.state.requests()
    assert requests, "nothing was sent"
    validator = get_validator()
    problems = {}
    for request in requests:
        found = validator.validate(request["method"], request["path"], request["body"])
        if found:
            problems[f"{request['method']} {request['path']}"] = found
    assert not problems, problems
    paths = {r["path"] for r in requests}
    if api == "v2":  # anonymous events exist only in v1
        assert paths == {"/api/v2/batch", "/api/v1/events"}
    else:
        assert any(p.endswith("/events") for p in paths)
        encoded = "%40" if identify_by_email else "%2F"  # emails, or the sample's ids with "/"
        assert any(encoded in p for p in paths)


def test_the_validator_catches_what_we_must_never_send() -> None:
    """Guard against a validator that passes everything."""
    validator = get_validator()
    bad_timestamp = {
        "batch": [{"type": "person", "identifiers": {"id": "a"}, "action": "event", "name": "x", "timestamp": 1.5}]
    }
    assert validator.validate("POST", "/api/v2/batch", bad_timestamp)
    assert validator.validate("POST", "/api/v1/customers/a/events", {"data": {}})
    assert not validator.validate("GET", "/api/v1/accounts/region", None)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        (
            "POST",
            "/api/v2/batch",
            {
                "batch": [
                    {"type": "person", "identifiers": {"id": "a"}, "action": "event", "name": "x", "id": "not-a-ulid"}
                ]
            },
        ),
        ("POST", "/api/v2/batch", {"batch": [{"type": "person", "action": "identify"}]}),  # no identifiers
        ("POST", "/api/v1/merge_customers", {"primary": {"id": "a"}}),
        ("PUT", "/api/v1/customers/a", {"nested": {"a": 1}}),  # v1 attributes are string/integer/boolean
        ("POST", "/api/v9/nothing", {}),
        ("DELETE", "/api/v2/batch", None),
    ],
)
def test_the_validator_rejects_invalid_requests(method: str, path: str, body: object) -> None:
    assert get_validator().validate(method, path, body)


def test_the_validator_accepts_valid_requests() -> None:
    validator = get_validator()
    assert (
        validator.validate(
            "POST", "/api/v1/merge_customers", {"primary": {"id": "a"}, "secondary": {"email": "b@x.io"}}
        )
        == []
    )


@pytest.mark.parametrize("api", ["v2", "v1"])
@pytest.mark.parametrize("identify_by_email", [False, True])
def test_segment_changes_validate_against_the_official_spec(
    sandbox: SandboxServer, tmp_path: Path, api: str, identify_by_email: bool
) -> None:
    """``sync-cohorts``' manual segment requests (``add_customers``/``remove_customers``, ids by ``id`` or by
    ``email``), sent through the outbox and the Track outputs, are what the Track API description allows."""
    from posthog_customerio.mapping import CohortTarget, member_joined, member_left
    from posthog_customerio.mapping.persons import PersonSnapshot

    settings = make_settings(
        tmp_path, sandbox, customerio_api=api, identify_by_email=identify_by_email, customerio_max_rps=10_000
    )
    target = CohortTarget("7", segment_id="12")
    people = [
        PersonSnapshot(f"p{i}", (f"user-{i}",), {"email": f"u{i}@example.com"}, is_identified=True) for i in range(3)
    ]
    with Runtime(settings) as runtime:
        runtime.ingestor.ingest_persons(people)
        with runtime.db.transaction() as conn:
            runtime.ingestor.apply_in(
                conn, people, lambda p: list(p.distinct_ids), lambda p, s, c: member_joined(p, target, s, c, 0)[0]
            )
            runtime.ingestor.apply_in(
                conn,
                people[:1],
                lambda p: list(p.distinct_ids),
                lambda p, s, c: member_left(p.distinct_ids[0], target, s, c, 0),
            )
        deliverer = runtime.deliverer()
        deliverer.start()
        assert deliverer.wait_until_empty(60)
        deliverer.stop()
        assert runtime.outbox.dead_letter_count() == 0
    requests = [r for r in sandbox.state.requests() if "/segments/" in r["path"]]
    assert [r["path"].split("/")[-1] for r in requests] == ["add_customers", "remove_customers"]
    validator = get_validator()
    assert not {
        r["path"]: validator.validate(r["method"], r["path"], r["body"])
        for r in requests
        if validator.validate(r["method"], r["path"], r["body"])
    }
    expected = ["u1@example.com", "u2@example.com"] if identify_by_email else ["user-1", "user-2"]
    assert sandbox.state.segments()["12"] and len(sandbox.state.segments()["12"]) == 2
    assert requests[0]["body"]["ids"][1:] == expected
    id_type = "email" if identify_by_email else "id"
    assert all(r["query"] == f"id_type={id_type}" for r in requests), [r["query"] for r in requests]
