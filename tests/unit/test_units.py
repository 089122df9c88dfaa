"""Direct tests of the small pure modules the rest only exercises indirectly: limits, ids, state, logs."""

from __future__ import annotations

import json
import logging
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ulid import ULID

from posthog_customerio import limits
from posthog_customerio.ids import event_ulid, uuid_to_ulid
from posthog_customerio.logs import configure_logging
from posthog_customerio.mapping import page_name
from posthog_customerio.sources import parse_event
from posthog_customerio.state import PersonState, count_persons, load_states, save_states
from posthog_customerio.storage import SqliteStorage

from ..helpers import T0, ev


# -- limits ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("abc", 3, "abc"),
        ("abcd", 3, "abc"),
        ("", 0, ""),
        ("é" * 3, 5, "éé"),  # 2-byte characters: 5 bytes hold two, never half of the third
        ("aé", 2, "a"),
        ("€€", 5, "€"),
        ("😀x", 3, ""),
        ("😀x", 4, "😀"),
        ("😀x", 5, "😀x"),
    ],
)
def test_truncate_utf8_cuts_at_character_boundaries(text: str, limit: int, expected: str) -> None:
    cut = limits.truncate_utf8(text, limit)
    assert cut == expected and len(cut.encode()) <= limit


def test_fit_attributes_cuts_names_and_values_to_the_byte_and_counts() -> None:
    name = "ñ" * 100  # 200 bytes
    fitted, cuts = limits.fit_attributes({name: "ok", "bio": "€" * 400, "list": list(range(400)), "n": 5})
    assert cuts == 3
    assert "ñ" * 75 in fitted and fitted["ñ" * 75] == "ok"  # 150 bytes exactly
    assert fitted["bio"] == "€" * 333 and len(fitted["bio"].encode()) == 999  # a 334th would be 1002 bytes
    assert isinstance(fitted["list"], str) and fitted["list"].startswith("[0,1,2,")
    assert len(fitted["list"].encode()) == limits.MAX_ATTRIBUTE_VALUE_BYTES and fitted["n"] == 5
    untouched = {"a": "x" * 1000, "b" * 150: 1}
    assert limits.fit_attributes(untouched) == (untouched, 0)


def test_chunk_attributes_splits_over_300_keeping_every_attribute_and_email_first() -> None:
    attributes = {f"k{i:03d}": i for i in range(650)} | {"email": "a@x.io"}
    chunks = limits.chunk_attributes(attributes)
    assert [len(chunk) for chunk in chunks] == [300, 300, 51]
    assert next(iter(chunks[0])) == "email"
    assert {k: v for chunk in chunks for k, v in chunk.items()} == attributes
    assert limits.chunk_attributes({}) == [{}]


def test_chunk_attributes_splits_by_bytes_too() -> None:
    attributes = {f"k{i}": "v" * 900 for i in range(100)}  # ~91 KB: over one operation
    chunks = limits.chunk_attributes(attributes)
    assert len(chunks) > 1 and sum(len(c) for c in chunks) == 100
    assert all(limits.json_len(chunk) <= limits.MAX_OP_BYTES for chunk in chunks)


def test_fit_event_data_drops_the_largest_properties_first() -> None:
    data = {"small": 1, "big": "x" * 5000, "bigger": "y" * 9000, "mid": "z" * 100}
    kept, dropped = limits.fit_event_data(data, 6000)
    assert dropped == ["bigger"] and kept == {"small": 1, "big": "x" * 5000, "mid": "z" * 100}
    kept, dropped = limits.fit_event_data(data, 1000)
    assert dropped == ["bigger", "big"] and set(kept) == {"small", "mid"}
    assert limits.fit_event_data(data, 100_000) == (data, [])
    assert limits.json_len({"é": "€"}) == len('{"é":"€"}'.encode())


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://x.io/a", "https://x.io/a"),
        ("https://x.io/" + "a" * 120, ("https://x.io/" + "a" * 120)[:100]),
        ("https://x.io/p?" + "q=1&" * 30, "https://x.io/p"),  # the query goes before the path is cut
    ],
)
def test_page_names_fit_100_bytes(url: str, name: str) -> None:
    assert page_name(url) == name and len(page_name(url).encode()) <= limits.MAX_EVENT_NAME_BYTES


# -- ids --------------------------------------------------------------------------------------------
def test_uuid7_maps_to_the_ulid_with_the_same_bits_and_time() -> None:
    value = "01890a5d-ac96-774b-bcce-b302099a8057"
    ulid = ULID.from_str(uuid_to_ulid(value) or "")
    assert ulid.bytes == uuidlib.UUID(value).bytes and str(ulid.to_uuid()) == value
    assert ulid.milliseconds == 0x01890A5DAC96


@pytest.mark.parametrize(
    "value",
    [
        "b525078b-eb6c-46bd-a09f-ab8503bbc6df",  # a uuid4 (fixed: test ids must not change between collections)
        "ac989cae-f126-11f1-8819-02fc00000001",  # a uuid1
        "{12345678-1234-5678-1234-567812345678}",
        "12345678123456781234567812345678",
    ],
)
def test_other_uuids_map_losslessly_too(value: str) -> None:
    assert ULID.from_str(uuid_to_ulid(value) or "").bytes == uuidlib.UUID(value).bytes


@given(st.integers(min_value=0, max_value=2**128 - 1), st.booleans())
def test_our_ulid_text_is_the_ulid_librarys(bits: int, upper: bool) -> None:
    """Our base32 is checked against python-ulid's (the reference): a dedupe id never changes."""
    text = str(uuidlib.UUID(int=bits))
    assert uuid_to_ulid(text.upper() if upper else text) == str(ULID.from_bytes(bits.to_bytes(16, "big")))


def test_a_content_id_is_the_one_earlier_versions_gave() -> None:
    """Pinned: the id of an event without a uuid, as every earlier version computed it (python-ulid's text)."""
    assert event_ulid(parse_event(ev("x", "u", 5, uuid=None, a=1))) == "01HK1541W8HVQVBRQPWBYCMBF3"


@pytest.mark.parametrize("value", ["", "not-a-uuid", "1234", "g" * 32])
def test_non_uuids_have_no_ulid(value: str) -> None:
    assert uuid_to_ulid(value) is None


def test_content_ids_are_stable_and_differ_by_identity() -> None:
    base = ev("x", "u", 5, uuid=None, a=1)
    one = event_ulid(parse_event(base))
    assert one == event_ulid(parse_event(json.loads(json.dumps(base))))
    assert ULID.from_str(one).milliseconds == (T0 + 5) * 1000
    others = [
        ev("x", "v", 5, uuid=None, a=1),
        ev("y", "u", 5, uuid=None, a=1),
        ev("x", "u", 6, uuid=None, a=1),
        ev("x", "u", 5, uuid=None, a=2),
        ev("x", "u", 5, uuid="not-a-uuid", a=1),
    ]
    ids = {event_ulid(parse_event(other)) for other in others}
    assert one not in ids and len(ids) == len(others)


# -- state ------------------------------------------------------------------------------------------
@pytest.fixture
def conn(tmp_path: Path) -> Iterator[Any]:
    db = SqliteStorage(tmp_path / "state.db", synchronous="NORMAL")
    try:
        with db.transaction() as connection:
            yield connection
    finally:
        db.close()


def test_person_state_round_trips_every_field(conn: Any) -> None:
    full = PersonState(
        "u1",
        identified=True,
        email="a@x.io",
        created=True,
        email_sent="a@x.io",
        digests={"plan": "abc"},
        merged_into=None,
        anonymous_sent=True,
        pending_anonymous_ids=["v1"],
        pending={"ref": "ad", "n": [1, None]},
        relationships=["1:acme"],
        anonymous_seen=True,
    )
    bare = PersonState("é/ü 😀")
    save_states(conn, [full, bare])
    assert load_states(conn, ["u1", "é/ü 😀", "unknown"]) == {"u1": full, "é/ü 😀": bare}
    save_states(conn, [PersonState("u1", email="b@x.io")])  # an update replaces every field
    assert load_states(conn, ["u1"])["u1"] == PersonState("u1", email="b@x.io")
    assert count_persons(conn) == 2


def test_load_states_follows_merge_chains(conn: Any) -> None:
    save_states(
        conn,
        [PersonState("a", merged_into="b"), PersonState("b", merged_into="c"), PersonState("c"), PersonState("other")],
    )
    assert set(load_states(conn, ["a"])) == {"a", "b", "c"}
    assert set(load_states(conn, ["c", "c"])) == {"c"}


def test_load_states_reads_more_ids_than_one_query_takes(conn: Any) -> None:
    save_states(conn, [PersonState(f"p{i}") for i in range(1200)])
    assert len(load_states(conn, [f"p{i}" for i in range(1200)])) == 1200


def test_copy_is_independent() -> None:
    state = PersonState("u", digests={"a": "1"}, pending={"b": 2}, relationships=["x"], pending_anonymous_ids=["v"])
    copy = state.copy()
    copy.digests["a"] = "2"
    copy.pending.clear()
    copy.relationships.append("y")
    copy.pending_anonymous_ids.clear()
    assert state == PersonState(
        "u", digests={"a": "1"}, pending={"b": 2}, relationships=["x"], pending_anonymous_ids=["v"]
    )


# -- logs -------------------------------------------------------------------------------------------
@pytest.fixture
def captured(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    """stderr as configure_logging writes it; the root logger restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield capsys
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_logs_are_one_object_per_line_with_secrets_redacted(captured: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "INFO", secrets=["site-SECRET", "key-SECRET-5678"])
    log = logging.getLogger("posthog_customerio.test")
    log.info("sending with %s and %s", "key-SECRET-5678", "other")
    log.debug("not shown")
    try:
        raise ValueError("bad key-SECRET-5678")
    except ValueError:
        log.exception("failed for site-SECRET")
    err = captured.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 2 and "SECRET" not in err
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "sending with *** and other" and first["level"] == "INFO"
    assert first["name"] == "posthog_customerio.test" and "asctime" in first
    assert second["level"] == "ERROR" and second["message"] == "failed for ***" and "bad ***" in second["exc_info"]


def test_json_logs_redact_extra_fields(captured: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "INFO", secrets=["site-SECRET"])
    logging.getLogger("x").info("hello", extra={"site": "site-SECRET"})
    assert "SECRET" not in captured.readouterr().err


def test_text_logs_redact_too(captured: pytest.CaptureFixture[str]) -> None:
    configure_logging("text", "DEBUG", secrets=["hunter2"])
    logging.getLogger("x").debug("password hunter2 in text")
    err = captured.readouterr().err
    assert "password *** in text" in err and "hunter2" not in err
