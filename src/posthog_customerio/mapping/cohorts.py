"""A PostHog cohort's membership changes (``sync-cohorts``) -> Customer.io operations. Pure, like the rest.

A cohort is mirrored into *targets*: a manual segment (``COHORT_SEGMENTS``: ``add``/``remove`` operations of
kind ``segment``, sent by the Track outputs as ``add_customers``/``remove_customers``) or a person attribute
(``COHORT_ATTRIBUTES``: an identify setting it to ``true``, or clearing it when the person leaves). Either way
the person is addressed as every other operation addresses its profile (:func:`.identifiers.person_identifiers`:
its id, or its email with ``IDENTIFY_BY_EMAIL``), so the segment request's ``id_type`` follows.

* :func:`ensure_profile`: a member Customer.io does not know yet is created first, as ``sync-persons`` would
  (:func:`.persons.map_person`); Customer.io ignores ids of a segment request it cannot match, so an add
  without the profile would be lost silently. A member that is no profile (an anonymous person, the
  anonymous-users filter) is skipped, and tried again next pass.
* :func:`member_joined` / :func:`member_left`: the target's operation for the profile the person's
  distinct_id leads to (following merges); a member whose profile was deleted since has nothing to leave.
* attribute writes are stamped ``max(at, the newest write we sent to the profile)``, so Customer.io never
  drops them as older than the profile's last edit.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..operations import Operation
from ..state import PersonState
from .attributes import value_digest
from .book import Book, Mapped
from .config import MappingConfig
from .identifiers import person_identifiers
from .persons import PersonSnapshot, map_person, primary_distinct_id

__all__ = ["CohortTarget", "attribute_name", "ensure_profile", "member_joined", "member_left", "slug"]


@dataclass(frozen=True, slots=True)
class CohortTarget:
    """Where one cohort's membership goes: a manual segment (``segment_id``) or an attribute (``attribute``)."""

    cohort_id: str
    segment_id: str | None = None
    attribute: str | None = None

    @property
    def key(self) -> str:
        """What the stored membership of this target is kept under (per cohort)."""
        return f"segment:{self.segment_id}" if self.segment_id is not None else "attribute"

    def describe(self) -> str:
        """``segment 12`` or ``attribute posthog_cohort_power_users``."""
        return f"segment {self.segment_id}" if self.segment_id is not None else f"attribute {self.attribute}"


def slug(name: str) -> str:
    """A cohort name as an attribute-friendly slug: ASCII letters, digits and ``_``, lower case
    (``"Power users (EU)"`` -> ``power_users_eu``)."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "_", ascii_name.lower()).strip("_")


def attribute_name(prefix: str, cohort_id: str, cohort_name: str) -> str:
    """``prefix`` + the slug of the cohort's name (``cohort_<id>`` when the name has no letter or digit)."""
    return prefix + (slug(cohort_name) or f"cohort_{cohort_id}")


def ensure_profile(snapshot: PersonSnapshot, states: Mapping[str, PersonState], config: MappingConfig) -> Mapped:
    """Nothing (``skipped = "has_profile"``) when the person's profile exists; else what ``sync-persons`` would
    send to create it."""
    book = Book(states, Mapped())
    if any(d.strip() for d in snapshot.distinct_ids) and book.person(primary_distinct_id(snapshot, book)).created:
        return Mapped(skipped="has_profile")
    return map_person(snapshot, states, config)


def _stamp(person: PersonState, at: int) -> int:
    return max([at, *person.stamps.values()])


def _operation(person: PersonState, target: CohortTarget, member: bool, at: int, config: MappingConfig) -> Operation:
    identifiers = person_identifiers(person, config)
    if target.segment_id is not None:
        payload: dict[str, Any] = {
            "type": "segment",
            "action": "add" if member else "remove",
            "segment_id": target.segment_id,
            "identifiers": identifiers,
        }
        return Operation(person.distinct_id, payload, kind="segment")
    assert target.attribute is not None
    when = _stamp(person, at)
    if member:
        person.digests[target.attribute] = value_digest(True)
    else:
        person.digests.pop(target.attribute, None)
    person.stamps[target.attribute] = when
    payload = {
        "type": "person",
        "identifiers": identifiers,
        "action": "identify",
        "timestamp": when,
        "attributes": {target.attribute: True if member else ""},  # "" clears an attribute
    }
    return Operation(person.distinct_id, payload)


def member_joined(
    snapshot: PersonSnapshot, target: CohortTarget, states: Mapping[str, PersonState], config: MappingConfig, at: int
) -> tuple[Mapped, str | None]:
    """The operation adding a member to ``target``, and the distinct_id of the profile it addresses (``None``
    and ``skipped = "no_profile"`` when the person has no profile: see :func:`ensure_profile`)."""
    result = Mapped()
    if not any(d.strip() for d in snapshot.distinct_ids):
        result.skipped = "no_profile"
        return result, None
    book = Book(states, result)
    person = book.person(primary_distinct_id(snapshot, book))
    if not person.created:
        result.skipped, result.states = "no_profile", {}
        return result, None
    result.operations.append(_operation(person, target, True, at, config))
    result.states = {person.distinct_id: person} if target.attribute is not None else {}
    return result, person.distinct_id


def member_left(
    distinct_id: str, target: CohortTarget, states: Mapping[str, PersonState], config: MappingConfig, at: int
) -> Mapped:
    """The operation removing the profile ``distinct_id`` was added as from ``target`` (nothing, ``skipped =
    "no_profile"``, when that profile is gone: deleted since, its memberships went with it)."""
    result = Mapped()
    book = Book(states, result)
    person = book.person(distinct_id)
    if not person.created:
        result.skipped, result.states = "no_profile", {}
        return result
    result.operations.append(_operation(person, target, False, at, config))
    result.states = {person.distinct_id: person} if target.attribute is not None else {}
    return result
