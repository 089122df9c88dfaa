"""The ``kind`` column: a database created before it (rows queued without a kind) is migrated,
its kinds backfilled once from the payloads, and everything queued still reaches Customer.io
through the right endpoint."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from posthog_customerio import storage
from posthog_customerio.runtime import Runtime
from posthog_customerio.sandbox import SandboxServer

from ..helpers import make_settings

pytestmark = pytest.mark.e2e


def _old_text(payload: dict[str, Any]) -> str:
    """A payload as the release before the kind column stored it (compact JSON, ``type`` first)."""
    return json.dumps(payload, separators=(",", ":"))


ANONYMOUS = _old_text(
    {
        "type": "anonymous",
        "action": "event",
        "anonymous_id": "visitor-1",
        "name": "viewed",
        "id": "01HZZZZZZZZZZZZZZZZZZZZZZA",
        "timestamp": 1704067200,
        "attributes": {},
    }
)
PERSON = _old_text(
    {
        "type": "person",
        "identifiers": {"id": "user-1"},
        "action": "identify",
        "timestamp": 1704067200,
        "attributes": {"plan": "pro"},
    }
)
OBJECT = _old_text(
    {
        "type": "object",
        "identifiers": {"object_type_id": "1", "object_id": "acme"},
        "action": "identify",
        "attributes": {"seats": 3},
    }
)
DEAD = _old_text(
    {
        "type": "anonymous",
        "action": "page",
        "anonymous_id": "visitor-2",
        "name": "https://x.io/",
        "id": "01HZZZZZZZZZZZZZZZZZZZZZZB",
        "timestamp": 1704067200,
        "attributes": {},
    }
)
#: (the object's real key starts with NUL, which PostgreSQL text refuses: a plain key here)
QUEUED = [("visitor-1", ANONYMOUS), ("user-1", PERSON), ("object:1:acme", OBJECT)]
INSERT_OLD = "INSERT INTO outbox (person_key, payload, size, enqueued_at) VALUES (?,?,?,?)"
DEAD_OLD = (
    "INSERT INTO dead_letters (seq, person_key, payload, reason, status, attempts, enqueued_at, failed_at)"
    " VALUES (99, 'visitor-2', ?, 'HTTP 500', 500, 1, 0, 0)"
)


def _old_sqlite(path: Path) -> None:
    """A database as the release before the kind column left it (schema 5), with queued rows."""
    conn = sqlite3.connect(path)
    for script in storage.SQLITE_MIGRATIONS[:5]:
        for statement in filter(str.strip, script.split(";")):
            conn.execute(statement)
    conn.execute("PRAGMA user_version=5")
    conn.executemany(INSERT_OLD, [(key, text, len(text), 1.0) for key, text in QUEUED])
    conn.execute(DEAD_OLD, (DEAD,))
    conn.commit()
    conn.close()


def _old_postgres(url: str) -> None:
    """The PostgreSQL schema before the kind column (migrations 1-3), with queued rows."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations"
            " (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        for number, script in enumerate(storage.POSTGRES_MIGRATIONS[:3], start=1):
            for statement in filter(str.strip, script.split(";")):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (number,))
        for key, text in QUEUED:
            conn.execute(INSERT_OLD.replace("?", "%s"), (key, text, len(text), 1.0))
        conn.execute(DEAD_OLD.replace("?", "%s"), (DEAD,))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_rows_queued_before_the_kind_column_still_deliver(
    backend: str, sandbox: SandboxServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    values: dict[str, Any] = {
        "sqlite_synchronous": None,
        "customerio_max_rps": 1000,
        "customerio_api": "v2",
        # the old rows were enqueued at 1.0 (1970): not expired by age here, that is not what is tested
        "anonymous_max_age_s": 100 * 365 * 86_400,
    }
    if backend == "sqlite":
        (tmp_path / "data").mkdir()
        _old_sqlite(tmp_path / "data" / "old.sqlite")
        values["outbox_url"] = f"sqlite:///{tmp_path / 'data' / 'old.sqlite'}"
    else:
        url = request.getfixturevalue("pg_url")
        _old_postgres(url)
        values["outbox_url"] = url
    with Runtime(make_settings(tmp_path / "data", sandbox, **values)) as runtime:
        claimed = runtime.outbox.claim(10, 100_000, 32_000)
        assert sorted((item.person_key, item.kind) for item in claimed) == [
            ("object:1:acme", "object"),
            ("user-1", "person"),
            ("visitor-1", "anonymous"),
        ]
        runtime.outbox.unclaim(claimed)
        (letter,) = runtime.outbox.dead_letters()
        assert letter.kind == "anonymous"
        assert runtime.outbox.retry_dead_letters() == 1
        deliverer = runtime.deliverer()
        deliverer.start()
        assert deliverer.wait_until_empty(30)
        deliverer.stop()
        assert runtime.outbox.dead_letter_count() == 0
    paths = sorted(str(r["path"]) for r in sandbox.state.requests())
    # the anonymous events went to v1's anonymous endpoint (not into a v2 batch, which would refuse them)
    assert paths == ["/api/v1/events", "/api/v1/events", "/api/v2/batch"]
