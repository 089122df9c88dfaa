"""The mapping rules as data: every record of ``tests/mapping_cases/*.json`` run by one generic runner.

A record (one JSON object; a file holds a list of them, one file per topic) is::

    {"name": "what the rule is",
     "config": {MappingConfig fields},              # or "settings": {load_settings values}; default: MappingConfig()
     "state": {"distinct id": {PersonState fields}},  # optional: what we knew before the first event
     "events": [PostHog event dicts, fed in order, state carried between them],
     "expect": [one object per event:
        {"operations": [the Track v2 items Customer.io receives, in order],
         "keys": [[person_key, *after] per operation],  # optional: delivery ordering
         "skipped": "reason" or null,                   # optional: why the event itself is not sent
         "notes": {"counter": n},                       # optional: these counters, exactly
         "error": "regex"}],                            # instead of the rest: parse_event rejects the event
     "states": {"distinct id": {PersonState fields}}}   # optional: those fields after the last event

A new rule is one record. ``v2_item`` is the only place that turns an operation into what is sent.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from posthog_customerio.config import load_settings
from posthog_customerio.mapping import MappingConfig, map_event
from posthog_customerio.operations import Operation
from posthog_customerio.sources import EventParseError, parse_event
from posthog_customerio.state import PersonState

CASES_DIR = Path(__file__).parents[1] / "mapping_cases"
RECORD_KEYS = {"name", "config", "settings", "state", "events", "expect", "states", "doc"}
EXPECT_KEYS = {"operations", "keys", "skipped", "notes", "error"}


def v2_item(operation: Operation) -> dict[str, Any]:
    """The Track v2 ``batch`` item Customer.io receives for ``operation``."""
    return operation.payload


def _config(record: dict[str, Any]) -> MappingConfig:
    if "settings" in record:
        return load_settings(record["settings"]).mapping_config()
    values = dict(record.get("config", {}))
    types = {f.name: f.type for f in fields(MappingConfig)}
    for name, value in values.items():
        if isinstance(value, list):  # JSON has no sets or tuples
            values[name] = frozenset(value) if "frozenset" in str(types[name]) else tuple(value)
    return MappingConfig(**values)


def _load() -> list[Any]:
    params = []
    for path in sorted(CASES_DIR.glob("*.json")):
        for record in json.loads(path.read_text()):
            params.append(pytest.param(record, id=f"{path.stem}: {record['name']}"))
    return params


CASES = _load()


def test_every_topic_file_holds_well_formed_records() -> None:
    """A typo in a record's keys fails here instead of being silently ignored."""
    names = set()
    assert CASES, f"no records in {CASES_DIR}"
    for param in CASES:
        (record,) = param.values
        assert set(record) <= RECORD_KEYS, (param.id, set(record) - RECORD_KEYS)
        assert len(record["expect"]) == len(record["events"]), param.id
        for expected in record["expect"]:
            assert set(expected) <= EXPECT_KEYS and expected, (param.id, expected)
        assert param.id not in names, f"two records named {param.id}"
        names.add(param.id)


@pytest.mark.parametrize("record", CASES)
def test_mapping_case(record: dict[str, Any]) -> None:
    config = _config(record)
    states = {key: PersonState(key, **value) for key, value in record.get("state", {}).items()}
    for n, (raw, expected) in enumerate(zip(record["events"], record["expect"], strict=True)):
        where = f"event {n} ({raw.get('event') if isinstance(raw, dict) else raw!r})"
        if "error" in expected:
            with pytest.raises(EventParseError, match=expected["error"]):
                parse_event(raw)
            continue
        mapped = map_event(parse_event(raw), states, config)
        states.update(mapped.states)
        if "operations" in expected:
            assert [v2_item(op) for op in mapped.operations] == expected["operations"], where
        if "keys" in expected:
            assert [[op.person_key, *op.after] for op in mapped.operations] == expected["keys"], where
        if "skipped" in expected:
            assert mapped.skipped == expected["skipped"], where
        if "notes" in expected:
            assert {k: mapped.notes[k] for k in expected["notes"]} == expected["notes"], where
    for key, wanted in record.get("states", {}).items():
        state = states[key]
        assert {name: getattr(state, name) for name in wanted} == wanted, f"state of {key}"


def test_a_wrong_record_fails() -> None:
    """The runner compares: a record expecting something else is caught."""
    good = next(p.values[0] for p in CASES if p.values[0]["expect"][0].get("operations"))
    bad = json.loads(json.dumps(good))
    bad["expect"][0]["operations"][0]["action"] = "not-" + bad["expect"][0]["operations"][0]["action"]
    with pytest.raises(AssertionError):
        test_mapping_case(bad)
