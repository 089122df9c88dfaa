"""The Pipelines side's people and their identifiers: :class:`Person`, and the :class:`Directory` that finds them.

The ``userId`` is the person: an email-shaped one addresses the person by email, any other by id. Email
addresses are compared without case, ids with it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .calls import who_of

__all__ = ["Directory", "Person"]


@dataclass(slots=True)
class Person:
    """A person of the Pipelines side: identifiers, attributes, devices, the anonymous ids attached to it."""

    key: int
    user_id: str | None = None
    email: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    anonymous_ids: list[str] = field(default_factory=list)
    suppressed: bool = False
    created_at: float = 0.0


class Directory:
    """Every person by key (oldest first), and the id and email indexes."""

    def __init__(self) -> None:
        self._people: dict[int, Person] = {}
        self._by_user: dict[str, int] = {}
        self._by_email: dict[str, int] = {}
        self._seq = itertools.count(1)

    def __len__(self) -> int:
        return len(self._people)

    def __contains__(self, key: int) -> bool:
        return key in self._people

    def __getitem__(self, key: int) -> Person:
        return self._people[key]

    def get(self, key: int | None) -> Person | None:
        """The person with this key, else ``None``."""
        return self._people.get(key) if key is not None else None

    def all(self) -> Iterable[Person]:
        """Every person, oldest first."""
        return self._people.values()

    def by_identifier(self, identifier: str) -> Person | None:
        """A person by id, else by email."""
        key = self._by_user.get(identifier)
        if key is None:
            key = self._by_email.get(identifier.lower())
        return self.get(key)

    def lookup(self, kind: str, value: str) -> Person | None:
        """The person holding identifier ``value`` of ``kind`` (``id``: case-sensitive; ``email``: not)."""
        return self.get(self._by_user.get(value) if kind == "id" else self._by_email.get(value.lower()))

    def find(self, user_id: str) -> Person | None:
        """The person a ``userId`` addresses (by email when it is one, else by id)."""
        return self.lookup(*who_of(user_id))

    def assign(self, person: Person, kind: str, value: str) -> None:
        """Give ``person`` this identifier (replacing its previous one of that kind)."""
        if kind == "id":
            if person.user_id is not None:
                self._by_user.pop(person.user_id, None)
            person.user_id = value
            self._by_user[value] = person.key
        else:
            if person.email is not None:
                self._by_email.pop(person.email.lower(), None)
            person.email = value
            self._by_email[value.lower()] = person.key
            person.attributes["email"] = value

    def create(self, kind: str, value: str, now: float) -> Person:
        """A new person holding this identifier."""
        person = Person(next(self._seq), created_at=now)
        self._people[person.key] = person
        self.assign(person, kind, value)
        return person

    def find_or_create(self, user_id: str, now: float) -> Person:
        """The person a ``userId`` addresses; a call to an unknown one creates the person (Track does)."""
        who = who_of(user_id)
        return self.lookup(*who) or self.create(*who, now)

    def remove(self, person: Person) -> None:
        """Forget the person and their identifiers."""
        self._people.pop(person.key, None)
        if person.user_id:
            self._by_user.pop(person.user_id, None)
        if person.email:
            self._by_email.pop(person.email.lower(), None)
