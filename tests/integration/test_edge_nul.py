"""A NUL (U+0000) in any string of an event is cleaned at the edge, identically on SQLite and PostgreSQL.

PostgreSQL text cannot hold NUL: before the fix one such string made the whole request answer
``503 outbox unavailable`` on every retry (PostHog retries for days), and the good events of the
same batch were never stored. Now every NUL in a decoded body (keys and values) becomes U+FFFD,
so the batch is stored and delivered on both backends with the same answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from posthog_customerio.ids import event_ulid
from posthog_customerio.sandbox import SandboxServer
from posthog_customerio.sources import loads_strict, parse_event

from ..helpers import ev, make_runtime, sandbox_event_ids, wait_for
from ..service import running_service

pytestmark = pytest.mark.e2e

NUL = "\x00"
REPLACEMENT = "\ufffd"

#: where a NUL was seen to block a batch, plus the other strings of an event
NUL_EVENTS: dict[str, dict[str, Any]] = {
    "set_email": ev("signed_up", "nul-1", top={"$set": {"email": f"ann{NUL}@example.com"}}),
    "anon_distinct_id": ev("$identify", "nul-2", **{"$anon_distinct_id": f"anon{NUL}2"}),
    "alias": ev("$create_alias", "nul-3", alias=f"other{NUL}3"),
    "group_key": ev(
        "$groupidentify", "nul-4", **{"$group_type": "company", "$group_key": f"acme{NUL}", "$group_set": {"n": 1}}
    ),
    "event_name": ev(f"clicked{NUL}", "nul-5"),
    "property_key": ev("clicked", "nul-6", **{f"pl{NUL}an": "pro"}),
    "property_value": ev("clicked", "nul-7", plan=f"pro{NUL}"),
    "distinct_id": ev("clicked", f"nul{NUL}8"),
}


def _batch(bad: dict[str, Any]) -> list[dict[str, Any]]:
    good = [ev("viewed", f"good-{i}", i, top={"$set": {"email": f"good-{i}@example.com"}}) for i in range(50)]
    return [*good[:25], bad, *good[25:]]


def _good_ids(batch: list[dict[str, Any]]) -> set[str]:
    return {event_ulid(parse_event(e)).upper() for e in batch if str(e["distinct_id"]).startswith("good-")}


def test_nul_in_json_strings_and_keys_becomes_the_replacement_character() -> None:
    body = '{"a\\u0000b": ["x\\u0000", {"k": "\\u0000"}], "n": 1, "plain": "\\\\u0000"}'
    assert loads_strict(body) == {"a\ufffdb": ["x\ufffd", {"k": "\ufffd"}], "n": 1, "plain": "\\u0000"}
    assert loads_strict(body.encode("utf-16")) == loads_strict(body)
    assert loads_strict('{"batch": [{"e": "a\\u0000"}]}', max_items=5) == {"batch": [{"e": "a\ufffd"}]}


@pytest.mark.parametrize("where", sorted(NUL_EVENTS))
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_nul_bearing_event_never_blocks_its_batch(
    backend: str, where: str, sandbox: SandboxServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    overrides: dict[str, Any] = {"anonymous_hold_s": 0, "group_type_map": "company=1"}
    if backend == "postgresql":
        overrides["outbox_url"] = request.getfixturevalue("pg_url")
    batch = _batch(NUL_EVENTS[where])
    with running_service(make_runtime(sandbox, tmp_path / "data", **overrides)) as url:
        answer = httpx.post(f"{url}/batch", json={"api_key": "k", "batch": batch}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["accepted"] == 51
        good = _good_ids(batch)
        wait_for(lambda: good <= set(sandbox_event_ids(sandbox)), "the 50 good events in Customer.io")
    delivered = sandbox_event_ids(sandbox)
    assert len(delivered) == len(set(delivered)), f"an event reached Customer.io twice ({where})"
    assert NUL not in repr(sandbox.state.people()) + repr(sandbox.state.events())


def test_a_postgresql_data_error_is_a_4xx_naming_the_problem_not_a_503(
    sandbox: SandboxServer, tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should a value PostgreSQL refuses get past the edge, the request is refused (4xx), never retried forever."""
    from posthog_customerio.sources import json_strict

    monkeypatch.setattr(json_strict, "replace_nul", lambda obj: obj)  # an edge that failed to clean
    secret = "marker-9f3e@example.com"
    bad = ev("signed_up", "pg-1", top={"$set": {"email": f"{secret}{NUL}"}})
    with running_service(make_runtime(sandbox, tmp_path / "data", outbox_url=pg_url)) as url:
        answer = httpx.post(f"{url}/batch", json={"api_key": "k", "batch": _batch(bad)}, timeout=30)
        assert answer.status_code == 400, answer.text
        assert "Retry-After" not in answer.headers
        message = answer.json()["error"]
        assert "DataError: the database refused one of its values" in message
        assert secret not in answer.text
        again = httpx.post(f"{url}/batch", json={"api_key": "k", "batch": _batch(ev("x", "pg-2"))[:3]}, timeout=30)
        assert again.status_code == 200, again.text
        assert httpx.get(f"{url}/readyz", timeout=30).status_code == 200
