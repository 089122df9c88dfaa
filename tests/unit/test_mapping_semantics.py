"""Mapping rules that need code rather than a record: the Customer.io limits (sizes computed, big inputs).

The rules that fit a record live in ``tests/mapping_cases/`` (run by ``test_mapping_cases.py``);
``run`` and ``shapes`` here are shared with ``test_mapping_identity.py``."""

from __future__ import annotations

import functools
import json
from typing import Any

from posthog_customerio.mapping import Mapped, MappingConfig, map_event
from posthog_customerio.sources import parse_event
from posthog_customerio.state import PersonState

from .. import helpers

PERSON = MappingConfig(anonymous_events="person")
ANON = MappingConfig(anonymous_events="anonymous")


#: an event without uuid (its id is the content hash) at T0 + t: ``ev(name, distinct_id, t, **properties)``
ev = functools.partial(helpers.ev, uuid=None)


def run(
    events: list[dict[str, Any]], config: MappingConfig, states: dict[str, PersonState] | None = None
) -> tuple[list[Mapped], dict[str, PersonState]]:
    states = dict(states or {})
    results = []
    for raw in events:
        mapped = map_event(parse_event(raw), states, config)
        states.update(mapped.states)
        results.append(mapped)
    return results, states


def shapes(mapped: Mapped) -> list[tuple[str, str, str]]:
    """(person_key, type, action) per operation."""
    return [(op.person_key, op.payload["type"], op.payload["action"]) for op in mapped.operations]


# -- limits ----------------------------------------------------------------------------------------------
def test_long_attribute_names_and_values_are_truncated_and_counted() -> None:
    attributes = {"n" * 200: "v", "bio": "é" * 700, "nested": {"k": "x" * 2000}}
    (mapped,), _ = run([ev("a", "u", 0, **{"$set": attributes})], PERSON)
    sent = mapped.operations[0].payload["attributes"]
    assert len(("n" * 150).encode()) == 150 and "n" * 150 in sent
    assert (
        len(sent["bio"].encode()) <= 1000 and isinstance(sent["nested"], str) and len(sent["nested"].encode()) <= 1000
    )
    assert mapped.notes["limits_truncated"] == 3


def test_dead_letter_mode_sends_values_as_they_are() -> None:
    config = MappingConfig(anonymous_events="person", truncate=False)
    (mapped,), _ = run([ev("a" * 120, "u", 0, **{"$set": {"bio": "x" * 1500}})], config)
    assert mapped.operations[0].payload["attributes"]["bio"] == "x" * 1500
    assert mapped.operations[1].payload["name"] == "a" * 120


def test_more_than_300_attributes_are_split_across_identifies() -> None:
    attributes = {f"attr_{i}": i for i in range(650)}
    (mapped,), _ = run([ev("a", "u", 0, **{"$set": attributes})], PERSON)
    identifies = [op.payload for op in mapped.operations if op.payload["action"] == "identify"]
    assert [len(p["attributes"]) for p in identifies] == [300, 300, 50]
    assert {k for p in identifies for k in p["attributes"]} == set(attributes)


def test_event_name_and_data_fit_the_limits() -> None:
    data = {"small": 1, "chain": "x" * 40_000, "other": "y" * 10_000}
    (mapped,), _ = run([ev("n" * 150, "u", 0, **data)], PERSON)
    event = mapped.operations[-1].payload
    assert event["name"] == "n" * 100
    assert event["attributes"]["_truncated_properties"] == ["chain"]
    assert len(json.dumps(event, separators=(",", ":")).encode()) <= 32_000
