"""ANONYMOUS_HOLD_S: a visitor's anonymous events wait in the outbox for an identify to adopt them.

Outbox rules on both backends (held rows are not claimable and block only their own keys),
then end to end through real HTTP against the sandbox (SQLite and PostgreSQL): adopted events
go out as person events in v2 batches; unidentified ones go out as anonymous events after the
hold; hold 0 is the behaviour without a hold; ``send`` does not wait for the hold at the end.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from posthog_customerio.operations import Operation
from posthog_customerio.outbox import Outbox
from posthog_customerio.runtime import Runtime
from posthog_customerio.sandbox import SandboxServer
from posthog_customerio.sources import PostHogEvent
from posthog_customerio.storage import PostgresStorage, SqliteStorage

from ..conftest import Cli
from ..helpers import make_settings, wait_for

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
BACKENDS = ["sqlite", "postgresql"]


def anonymous(visitor: str, n: int) -> Operation:
    payload = {"type": "anonymous", "action": "event", "anonymous_id": visitor, "name": f"e{n}", "id": f"{visitor}-{n}"}
    return Operation(visitor, payload, kind="anonymous")


def person(key: str, n: int, after: tuple[str, ...] = ()) -> Operation:
    return Operation(key, {"type": "person", "identifiers": {"id": key}, "action": "event", "name": f"e{n}"}, after)


def names(items: Any) -> list[str]:
    return [f"{item.person_key}:{json.loads(item.payload)['name']}" for item in items]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """``(outbox_url or None, database)`` of the backend under test."""
    if request.param == "sqlite":
        db: SqliteStorage | PostgresStorage = SqliteStorage(tmp_path / "db.sqlite")
        url = None
    else:
        url = request.getfixturevalue("pg_url")
        db = PostgresStorage(url)
    yield url, db
    db.close()


# -- the claim ---------------------------------------------------------------------------------
def test_held_anonymous_rows_are_not_claimed_and_do_not_block_other_people(backend: Any) -> None:
    outbox = Outbox(backend[1], anonymous_hold_s=60)
    outbox.put([anonymous("v", 1), person("a", 1), anonymous("v", 2), person("b", 1)])
    first = outbox.claim(10, 100_000, 32_000)
    assert names(first) == ["a:e1", "b:e1"]
    outbox.ack(first)
    assert outbox.claim(10, 100_000, 32_000) == []
    assert outbox.is_drained() and not outbox.is_empty()
    outbox.input_finished()  # what ``send`` does once its input is read
    assert not outbox.is_drained()
    assert names(outbox.claim(10, 100_000, 32_000)) == ["v:e1", "v:e2"]


def test_anonymous_rows_older_than_the_hold_are_claimed_in_order(backend: Any) -> None:
    outbox = Outbox(backend[1], anonymous_hold_s=60)
    with backend[1].transaction() as conn:
        outbox.enqueue(conn, [anonymous("old", 1), anonymous("old", 2)], now=time.time() - 61)
    outbox.put([anonymous("new", 1)])
    assert names(outbox.claim(10, 100_000, 32_000)) == ["old:e1", "old:e2"]


def test_a_held_row_blocks_its_own_later_rows_whatever_their_clock(backend: Any) -> None:
    # a replica whose clock is behind enqueues the visitor's next event with an older time
    outbox = Outbox(backend[1], anonymous_hold_s=60)
    outbox.put([anonymous("v", 1)])
    with backend[1].transaction() as conn:
        outbox.enqueue(conn, [anonymous("v", 2), person("w", 1, after=("v",))], now=time.time() - 120)
    outbox.put([person("a", 1)])
    assert names(outbox.claim(10, 100_000, 32_000)) == ["a:e1"]  # v:e2 and what waits on v stay behind v:e1


def test_hold_zero_hands_out_anonymous_rows_at_once(backend: Any) -> None:
    outbox = Outbox(backend[1])
    outbox.put([anonymous("v", 1), person("a", 1)])
    assert names(outbox.claim(10, 100_000, 32_000)) == ["v:e1", "a:e1"]


# -- end to end --------------------------------------------------------------------------------
def make_runtime(sandbox: SandboxServer, tmp_path: Path, url: str | None, hold_s: float) -> Runtime:
    return Runtime(
        make_settings(tmp_path / "data", sandbox, customerio_max_rps=1000, anonymous_hold_s=hold_s, outbox_url=url)
    )


def browsing(visitor: str, count: int) -> list[PostHogEvent]:
    return [
        PostHogEvent(
            "$pageview",
            visitor,
            NOW,
            {"$is_identified": False, "$current_url": f"https://x.io/{n}"},
            uuid=f"00000000-0000-4000-8000-{visitor[-4:]}{n:08d}",
        )
        for n in range(count)
    ]


def identify(user: str, visitor: str) -> PostHogEvent:
    return PostHogEvent("$identify", user, NOW, {"$anon_distinct_id": visitor})


def paths(sandbox: SandboxServer) -> list[str]:
    return [r["path"] for r in sandbox.state.requests()]


@pytest.mark.e2e
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_an_identify_inside_the_hold_sends_the_visitors_events_as_batched_person_events(
    sandbox: SandboxServer, tmp_path: Path, request: pytest.FixtureRequest, backend_name: str
) -> None:
    url = request.getfixturevalue("pg_url") if backend_name == "postgresql" else None
    with make_runtime(sandbox, tmp_path, url, hold_s=60) as runtime:
        deliverer = runtime.deliverer()
        deliverer.start()
        runtime.ingestor.ingest(browsing("anon-0001", 5))
        deliverer.notify()
        # the workers run meanwhile (a person's event goes out); the visitor's events stay held
        runtime.ingestor.ingest([PostHogEvent("clicked", "someone-else", NOW)])
        deliverer.notify()
        wait_for(lambda: sandbox.state.stats()["events"] == 1, "the other person's event")
        runtime.ingestor.ingest([identify("user-1", "anon-0001")])
        deliverer.notify()
        assert deliverer.wait_until_empty(30)
        deliverer.stop()
    assert "/api/v1/events" not in paths(sandbox)
    assert set(paths(sandbox)) == {"/api/v2/batch"}
    assert sandbox.state.anonymous_events() == []
    got = [event["name"] for event in sandbox.state.events("user-1")]
    assert sorted(got) == sorted([f"https://x.io/{n}" for n in range(5)] + ["$identify"])


@pytest.mark.e2e
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_without_an_identify_the_events_go_out_as_anonymous_events_after_the_hold(
    sandbox: SandboxServer, tmp_path: Path, request: pytest.FixtureRequest, backend_name: str
) -> None:
    url = request.getfixturevalue("pg_url") if backend_name == "postgresql" else None
    hold_s = 1.0
    with make_runtime(sandbox, tmp_path, url, hold_s=hold_s) as runtime:
        deliverer = runtime.deliverer()
        deliverer.start()
        started = time.monotonic()
        runtime.ingestor.ingest(browsing("anon-0002", 3))
        deliverer.notify()
        wait_for(lambda: len(sandbox.state.anonymous_events()) == 3, "the anonymous events")
        elapsed = time.monotonic() - started
        assert deliverer.wait_until_empty(30)
        deliverer.stop()
    assert elapsed >= hold_s  # not before the hold ran out (a loaded machine only makes this longer)
    assert paths(sandbox).count("/api/v1/events") == 3


@pytest.mark.e2e
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_hold_zero_sends_anonymous_events_before_any_identify(
    sandbox: SandboxServer, tmp_path: Path, request: pytest.FixtureRequest, backend_name: str
) -> None:
    url = request.getfixturevalue("pg_url") if backend_name == "postgresql" else None
    with make_runtime(sandbox, tmp_path, url, hold_s=0) as runtime:
        deliverer = runtime.deliverer()
        deliverer.start()
        runtime.ingestor.ingest(browsing("anon-0003", 2))
        deliverer.notify()
        assert deliverer.wait_until_empty(30)  # with no identify at all: delivered, not held
        runtime.ingestor.ingest([identify("user-3", "anon-0003")])
        deliverer.notify()
        assert deliverer.wait_until_empty(30)
        deliverer.stop()
        adopted = runtime.ingestor.totals.notes["anonymous_events_adopted"]
    assert paths(sandbox).count("/api/v1/events") == 2
    assert adopted == 0


@pytest.mark.e2e
def test_send_adopts_within_the_file_and_does_not_wait_for_the_hold_at_the_end(
    cli: Cli, env: dict[str, str], sandbox: SandboxServer, tmp_path: Path
) -> None:
    lines = [
        {
            "event": "$pageview",
            "distinct_id": "anon-a",
            "timestamp": "2024-05-01T12:00:00Z",
            "uuid": "00000000-0000-4000-8000-00000000000a",
            "properties": {"$current_url": "https://x.io/a", "$is_identified": False},
        },
        {
            "event": "$pageview",
            "distinct_id": "anon-b",
            "timestamp": "2024-05-01T12:00:01Z",
            "uuid": "00000000-0000-4000-8000-00000000000b",
            "properties": {"$current_url": "https://x.io/b", "$is_identified": False},
        },
        {
            "event": "$identify",
            "distinct_id": "user-a",
            "timestamp": "2024-05-01T12:00:02Z",
            "uuid": "00000000-0000-4000-8000-00000000000c",
            "properties": {"$anon_distinct_id": "anon-a"},
        },
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    started = time.monotonic()
    result = cli("send", "--json", "--anonymous-hold-s", "3600", "--timeout", "60", str(path), env=env)
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 600  # the hour-long hold ended with the input
    assert paths(sandbox).count("/api/v1/events") == 1  # anon-b never identified: one anonymous event
    assert [event["name"] for event in sandbox.state.anonymous_events()] == ["https://x.io/b"]
    assert "https://x.io/a" in [event["name"] for event in sandbox.state.events("user-a")]


# -- the policy object ---------------------------------------------------------------------------
def test_the_hold_rule_holds_recent_anonymous_rows_until_the_input_is_finished() -> None:
    from posthog_customerio.outbox import AnonymousHold
    from posthog_customerio.storage import CandidateRow

    def row(kind: str, enqueued_at: float) -> CandidateRow:
        return CandidateRow(1, "k", 10, 0, enqueued_at, None, None, None, kind)  # type: ignore[arg-type]

    hold = AnonymousHold(60)
    assert hold.is_held(row("anonymous", 950.0), now=1000.0)
    assert not hold.is_held(row("anonymous", 940.0), now=1000.0)  # exactly the hold: released
    assert not hold.is_held(row("person", 999.0), now=1000.0)
    assert hold.held_after(1000.0) == 940.0
    hold.finish()
    assert not hold.active and hold.held_after(1000.0) is None
    assert not hold.is_held(row("anonymous", 999.0), now=1000.0)
    assert not AnonymousHold(0).active
