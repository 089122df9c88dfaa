"""Groups as Customer.io objects (``GROUP_TYPE_MAP``): ``$groupidentify``, Hog globals ``groups`` and the
person's relationships to them (``$groups``).
"""

from __future__ import annotations

from typing import Any

from .. import limits
from ..events import PostHogEvent
from ..operations import Operation
from ..state import PersonState
from .attributes import value_digest
from .book import Book, Mapped
from .config import MappingConfig
from .identifiers import person_identifiers

__all__ = [
    "INTERNAL_KEY_PREFIX",
    "group_identify",
    "group_state_key",
    "hog_group_operations",
    "relationship_operations",
]


def _group_key(value: Any) -> str | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip() or len(value) > 400:
        return None
    return value


#: Object and group keys live beside distinct_ids (outbox ``person_key``, ``persons``): the unit separator
#: U+001F, which sources refuses at the start of a distinct_id, keeps them apart and PostgreSQL text stores it
#: (NUL, used before, it refuses).
INTERNAL_KEY_PREFIX = "\x1f"


def _object_key(type_id: str, object_id: str) -> str:
    return f"{INTERNAL_KEY_PREFIX}object:{type_id}:{object_id}"


def group_identify(event: PostHogEvent, config: MappingConfig, result: Mapped) -> None:
    result.skipped = "group_identify"
    group_type = event.properties.get("$group_type")
    key = _group_key(event.properties.get("$group_key"))
    type_id = config.group_type_map.get(group_type) if isinstance(group_type, str) else None
    if type_id is None or key is None:
        result.notes["unmapped_group_type" if key is not None else "invalid_group_key"] += 1
        return
    attributes = event.properties.get("$group_set")
    attributes = {k: v for k, v in attributes.items() if config.keeps(k)} if isinstance(attributes, dict) else {}
    if config.truncate:
        attributes, cuts = limits.fit_attributes(attributes)
        result.notes["limits_truncated"] += cuts
    payload: dict[str, Any] = {
        "type": "object",
        "identifiers": {"object_type_id": type_id, "object_id": key},
        "action": "identify",
    }
    if attributes:
        payload["attributes"] = attributes
    result.operations.append(Operation(_object_key(type_id, key), payload, kind="object"))


def group_state_key(group_type: str, key: Any) -> str:
    """The state row remembering what a Hog-globals group's object was sent with."""
    return f"{INTERNAL_KEY_PREFIX}group:{group_type}:{key}"


def hog_group_operations(event: PostHogEvent, book: Book, config: MappingConfig, result: Mapped) -> list[Operation]:
    """Hog globals ``groups``: each mapped group's object, identified with its changed properties.

    What was sent is remembered per group (a state row keyed by :func:`group_state_key`),
    so an object is identified again only when its properties change. The person's
    relationship to it comes from :func:`relationship_operations` (see :func:`_event_groups`).
    """
    operations = []
    for group_type, (raw_key, properties) in event.groups.items():
        type_id = config.group_type_map.get(group_type)
        key = _group_key(raw_key)
        if type_id is None or key is None:
            continue  # counted with the relationship
        state = book.get(group_state_key(group_type, raw_key))
        attributes = {k: v for k, v in properties.items() if config.keeps(k)}
        changed = {k: v for k, v in attributes.items() if state.digests.get(k) != value_digest(v)}
        if state.created and not changed:
            continue
        state.created = True
        state.digests.update((k, value_digest(v)) for k, v in changed.items())
        if config.truncate:
            changed, cuts = limits.fit_attributes(changed)
            result.notes["limits_truncated"] += cuts
        payload: dict[str, Any] = {
            "type": "object",
            "identifiers": {"object_type_id": type_id, "object_id": key},
            "action": "identify",
        }
        if changed:
            payload["attributes"] = changed
        operations.append(Operation(_object_key(type_id, key), payload, kind="object"))
    return operations


def _event_groups(event: PostHogEvent) -> dict[str, Any]:
    """group type -> key of the event: ``$groups``, then Hog globals ``groups``."""
    groups = event.properties.get("$groups")
    merged = dict(groups) if isinstance(groups, dict) else {}
    for group_type, (key, _) in event.groups.items():
        merged.setdefault(group_type, key)
    return merged


def relationship_operations(
    event: PostHogEvent, person: PersonState, config: MappingConfig, result: Mapped
) -> list[Operation]:
    groups = _event_groups(event)
    if not groups:
        return []
    operations = []
    for group_type, raw_key in groups.items():
        type_id = config.group_type_map.get(group_type)
        key = _group_key(raw_key)
        if type_id is None or key is None:
            result.notes["unmapped_group_type"] += 1
            continue
        relationship = f"{type_id}:{key}"
        if relationship in person.relationships:
            continue
        person.relationships = sorted({*person.relationships, relationship})
        payload = {
            "type": "person",
            "identifiers": person_identifiers(person, config),
            "action": "add_relationships",
            "cio_relationships": [{"identifiers": {"object_type_id": type_id, "object_id": key}}],
        }
        operations.append(Operation(person.distinct_id, payload, after=(_object_key(type_id, key),)))
    return operations
