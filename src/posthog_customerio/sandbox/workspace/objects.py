"""The workspace's objects and the relationships between people and objects.

Objects are created on a relationship's add; their attributes and a relationship's attributes merge (``null``
or ``""`` removes one).
"""

from __future__ import annotations

from typing import Any

from ..operations import Relation

__all__ = ["Objects", "merge_attributes"]


def merge_attributes(current: dict[str, Any], updates: dict[str, Any]) -> None:
    """Set attributes; ``null`` or ``""`` removes one."""
    for key, value in updates.items():
        if value is None or (isinstance(value, str) and not value):
            current.pop(key, None)
        else:
            current[key] = value


class Objects:
    """Objects by (object_type_id, object_id), and each one's related people (cio_id -> attributes)."""

    def __init__(self) -> None:
        self._objects: dict[tuple[str, str], dict[str, Any]] = {}
        self._relations: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}  # object -> cio_id -> attrs

    def __len__(self) -> int:
        return len(self._objects)

    def relationship_count(self) -> int:
        """How many person ↔ object relationships there are."""
        return sum(len(people) for people in self._relations.values())

    def views(self) -> list[dict[str, Any]]:
        """Objects with their relationships to people."""
        return [
            {
                **obj,
                "attributes": dict(obj["attributes"]),
                "relationships": [
                    {"person": cio_id, "attributes": dict(attrs)}
                    for cio_id, attrs in self._relations.get(key, {}).items()
                ],
            }
            for key, obj in self._objects.items()
        ]

    def relationships_of(self, cio_id: str) -> list[dict[str, Any]]:
        """One person's relationships, as JSON."""
        return [
            {"object_type_id": key[0], "object_id": key[1], "attributes": dict(people[cio_id])}
            for key, people in self._relations.items()
            if cio_id in people
        ]

    def ensure(self, key: tuple[str, str], now: float) -> dict[str, Any]:
        """The object, created if new."""
        obj = self._objects.get(key)
        if obj is None:
            obj = {"object_type_id": key[0], "object_id": key[1], "attributes": {}, "created_at": int(now)}
            self._objects[key] = obj
        return obj

    def identify(self, key: tuple[str, str], attributes: dict[str, Any], now: float) -> None:
        """Create or update an object."""
        merge_attributes(self.ensure(key, now)["attributes"], attributes)

    def delete(self, key: tuple[str, str]) -> None:
        """Delete an object and its relationships."""
        self._objects.pop(key, None)
        self._relations.pop(key, None)

    def relate(self, cio_id: str, relations: list[Relation], add: bool, now: float) -> None:
        """Add or delete person ↔ object relationships (objects are created on add)."""
        for key, attributes in relations:
            if not add:
                self._relations.get(key, {}).pop(cio_id, None)
                continue
            self.ensure(key, now)
            current = self._relations.setdefault(key, {}).setdefault(cio_id, {})
            merge_attributes(current, attributes)

    def forget_person(self, cio_id: str) -> None:
        """A deleted person's relationships go."""
        for people in self._relations.values():
            people.pop(cio_id, None)

    def merge_person(self, secondary: str, primary: str) -> None:
        """Merge: the primary gets the secondary's relationships it lacks."""
        for people in self._relations.values():
            if secondary in people:
                people.setdefault(primary, people[secondary])
