"""Object and group keys share the persons/outbox key space with distinct_ids: they carry a
prefix no accepted distinct_id can have, and one that PostgreSQL text can store (not NUL)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from posthog_customerio import storage
from posthog_customerio.mapping import INTERNAL_KEY_PREFIX
from posthog_customerio.runtime import Runtime
from posthog_customerio.sandbox import SandboxServer
from posthog_customerio.sources import EventParseError, parse_event

from ..helpers import make_settings

pytestmark = pytest.mark.e2e


def _event(name: str, distinct_id: str, second: int, **properties: Any) -> dict[str, Any]:
    return {
        "event": name,
        "distinct_id": distinct_id,
        "properties": properties,
        "timestamp": f"2024-01-01T00:00:{second:02d}Z",
        "uuid": f"0190b7c2-8a6f-7b3e-9b1a-{second:012d}",
    }


GROUP_EVENTS = [
    _event(
        "$groupidentify",
        "user-1",
        1,
        **{"$group_type": "company", "$group_key": "acme", "$group_set": {"name": "Acme"}},
    ),
    _event("signed_up", "user-1", 2, **{"$groups": {"company": "acme"}, "$set": {"email": "ann@example.com"}}),
    {
        "event": {**_event("upgraded", "user-1", 3), "elements_chain": ""},
        "person": {"properties": {}},
        "groups": {"company": {"id": "acme", "properties": {"seats": 3}}},
    },
]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_groups_and_objects_are_stored_and_delivered_on_every_backend(
    backend: str, sandbox: SandboxServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Before the fix, PostgreSQL refused the NUL-prefixed object keys: groups could not be stored."""
    values: dict[str, Any] = {
        "sqlite_synchronous": None,
        "customerio_max_rps": 1000,
        "group_type_map": "company=1",
        "anonymous_events": "person",
    }
    if backend == "postgresql":
        values["outbox_url"] = request.getfixturevalue("pg_url")
    with Runtime(make_settings(tmp_path / "data", sandbox, **values)) as runtime:
        runtime.ingestor.ingest([parse_event(e) for e in GROUP_EVENTS], "test")
        deliverer = runtime.deliverer()
        deliverer.start()
        assert deliverer.wait_until_empty(30)
        deliverer.stop()
        assert runtime.outbox.dead_letter_count() == 0
    (obj,) = sandbox.state.objects()
    assert obj["attributes"]["name"] == "Acme" and obj["attributes"]["seats"] == 3
    person = sandbox.state.person("user-1")
    assert person is not None


@pytest.mark.parametrize("distinct_id", ["a\x00b", INTERNAL_KEY_PREFIX + "object:1:acme"])
def test_a_distinct_id_that_could_pass_for_an_internal_key_is_refused(distinct_id: str) -> None:
    with pytest.raises(EventParseError, match="distinct_id"):
        parse_event(_event("x", distinct_id, 1))


def test_sqlite_keys_written_with_the_old_nul_prefix_are_renamed(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    for script in storage.SQLITE_MIGRATIONS[:6]:
        for statement in filter(str.strip, script.split(";")):
            conn.execute(statement)
    conn.execute("PRAGMA user_version=6")
    conn.execute("INSERT INTO persons (distinct_id) VALUES (?)", ("\x00group:company:acme",))
    conn.execute(
        "INSERT INTO outbox (person_key, payload, size, enqueued_at, after_keys, kind) VALUES (?,?,?,?,?,?)",
        ("\x00object:1:acme", "{}", 2, 1.0, None, "object"),
    )
    conn.execute(
        "INSERT INTO outbox (person_key, payload, size, enqueued_at, after_keys, kind) VALUES (?,?,?,?,?,?)",
        ("user-1", "{}", 2, 1.0, json.dumps(["\x00object:1:acme"]), "person"),
    )
    conn.commit()
    conn.close()
    database = storage.SqliteStorage(path)
    try:
        with database.reading() as reader:
            assert [r[0] for r in reader.execute("SELECT distinct_id FROM persons")] == [
                INTERNAL_KEY_PREFIX + "group:company:acme"
            ]
            rows = list(reader.execute("SELECT person_key, after_keys FROM outbox ORDER BY seq"))
    finally:
        database.close()
    assert rows[0][0] == INTERNAL_KEY_PREFIX + "object:1:acme"
    assert json.loads(rows[1][1]) == [INTERNAL_KEY_PREFIX + "object:1:acme"]
