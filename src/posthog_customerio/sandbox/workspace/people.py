"""The workspace's profiles and their identifiers: :class:`Person`, and the :class:`Directory` that finds them.

Identifiers are unique across profiles (spec ``identify``): ``id``, ``email`` (case-insensitive) and ``cio_id``
each name at most one person. ``id``/``email`` are stored on the person, not in ``attributes``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..operations import Op

__all__ = ["Directory", "Person", "person_view", "write_attributes"]


@dataclass(slots=True)
class Person:
    """A profile: identifiers, attributes (with the timestamp of each last write), devices, its events."""

    cio_id: str
    id: str | None
    email: str | None
    created_at: int
    attributes: dict[str, Any] = field(default_factory=dict)
    attribute_timestamps: dict[str, int] = field(default_factory=dict)
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    event_keys: list[int] = field(default_factory=list)


def person_view(person: Person) -> dict[str, Any]:
    """A person as JSON (without its events, relationships and attribute timestamps)."""
    return {
        "cio_id": person.cio_id,
        "id": person.id,
        "email": person.email,
        "attributes": dict(person.attributes),
        "created_at": person.created_at,
        "devices": [dict(device) for device in person.devices.values()],
        "event_count": len(person.event_keys),
    }


def write_attributes(person: Person, attributes: dict[str, Any], timestamp: int | None, now: float) -> None:
    """Set (or remove, for null/"") attributes, honouring per-attribute timestamps.

    ``_timestamp`` (v1) / ``timestamp`` (v2) is "when the attribute update occurred" and orders updates sent
    in rapid succession (spec ``identify``): a value never yields to an older update. An update without one
    occurred when it was received, so it is stamped with the receipt time.
    """
    current, stamps = person.attributes, person.attribute_timestamps
    stamp = int(now) if timestamp is None else timestamp
    for key, value in attributes.items():
        last = stamps.get(key)
        if last is not None and stamp < last:
            continue
        stamps[key] = stamp
        if value is None or (isinstance(value, str) and not value):
            current.pop(key, None)
        else:
            current[key] = value
    created_at = current.get("created_at")
    if isinstance(created_at, int) and not isinstance(created_at, bool):
        person.created_at = created_at


class Directory:
    """Every person by cio_id (in creation order), and the id and email indexes."""

    def __init__(self) -> None:
        self._people: dict[str, Person] = {}
        self._by_id: dict[str, str] = {}
        self._by_email: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._people)

    def all(self) -> Iterable[Person]:
        """Every person, in creation order."""
        return self._people.values()

    def resolve(self, identifier: str) -> Person | None:
        """The person an identifier of any kind names: id, email (case-insensitive), cio_id (``cio_`` prefix too)."""
        cio_id = self._by_id.get(identifier) or self._by_email.get(identifier.lower())
        if cio_id is None and identifier not in self._people and identifier.startswith("cio_"):
            cio_id = identifier[4:]
        return self._people.get(cio_id or identifier)

    def find(self, who: tuple[str, str]) -> Person | None:
        """The person ``(kind, value)`` names, else ``None``."""
        kind, value = who
        if kind == "id":
            cio_id = self._by_id.get(value)
        elif kind == "email":
            cio_id = self._by_email.get(value.lower())
        else:
            cio_id = value
        return None if cio_id is None else self._people.get(cio_id)

    def get(self, cio_id: str) -> Person:
        """The person with this cio_id (it exists)."""
        return self._people[cio_id]

    def owner(self, kind: str, value: str) -> str | None:
        """The cio_id holding identifier ``value`` of ``kind`` (id or email), else ``None``."""
        return self._by_id.get(value) if kind == "id" else self._by_email.get(value.lower())

    def create(self, who: tuple[str, str], now: float) -> Person:
        """A new person (a fresh random cio_id) holding identifier ``who``."""
        cio_id = secrets.token_hex(6)
        while cio_id in self._people:
            cio_id = secrets.token_hex(6)
        kind, value = who
        person = Person(cio_id, None, None, int(now))
        self._people[cio_id] = person
        self.set_identifier(person, kind, value)
        return person

    def set_identifier(self, person: Person, kind: str, value: str) -> None:
        """Give ``person`` this id or email (a cio_id never changes)."""
        if kind == "id" and person.id != value:
            if person.id is not None:
                self._by_id.pop(person.id, None)
            person.id = value
            self._by_id[value] = person.cio_id
        elif kind == "email" and person.email != value:
            if person.email is not None:
                self._by_email.pop(person.email.lower(), None)
            person.email = value
            self._by_email[value.lower()] = person.cio_id

    def remove(self, person: Person) -> None:
        """Forget the person and their identifiers."""
        if person.id is not None:
            self._by_id.pop(person.id, None)
        if person.email is not None:
            self._by_email.pop(person.email.lower(), None)
        del self._people[person.cio_id]

    def body_owner(self, op: Op) -> tuple[Person | None, str | None]:
        """For an identify whose path identifier nobody holds: the person a body identifier names, if any.

        Spec ``identify``: "If the identifier in the path does not belong to a person but you use an identifier in
        your request body that does belong to a person, your request updates the person and assigns them the
        identifier in the path." ``(person, failure)``; ``failure`` says why that cannot be.
        """
        assert op.who is not None
        owners = {owner for owner in (self.owner(kind, value) for kind, value in op.ids.items()) if owner}
        if not owners:
            return None, None
        if len(owners) > 1:
            return None, "the identifiers in the request belong to different people"
        person = self._people[owners.pop()]
        kind = op.who[0]
        if (person.id if kind == "id" else person.email) is not None:
            return None, f"the person holding the body identifiers already has another {kind}"
        return person, None

    def identifier_conflict(self, person: Person | None, op: Op, allow_email_update_by_id: bool) -> str | None:
        """Why ``op`` may not give ``person`` its identifiers (``None``: it may).

        Identifiers are unique across profiles; after they are set, only a request addressing the person by
        ``cio_id`` may change them (spec ``identify``) -- except the email when addressed by id, if the
        workspace setting "Allow updates to email using ID" is on (``allow_email_update_by_id``).
        """
        assert op.who is not None
        addressed_kind = op.who[0]
        for kind, value in op.ids.items():
            owner = self.owner(kind, value)
            if owner is not None and (person is None or owner != person.cio_id):
                return f"{kind} {value!r} belongs to another person"
            if addressed_kind == kind:
                current: str | None = op.who[1]
            else:
                current = None if person is None else (person.id if kind == "id" else person.email)
            if current is None or addressed_kind == "cio_id":
                continue
            same = value == current if kind == "id" else value.lower() == current.lower()
            if same:
                continue
            if kind == "email" and addressed_kind == "id" and allow_email_update_by_id:
                continue
            return f"cannot change the {kind} of a person addressed by {addressed_kind} (use cio_id)"
        return None
