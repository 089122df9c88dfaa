"""A PostHog person (read by ``sync-persons`` from PostHog's API or a persons export) -> Customer.io operations.

Pure, like the rest of the mapping: a :class:`PersonSnapshot` plus the remembered states in, a
:class:`~.book.Mapped` out. A person becomes what live events would have made of it:

* **one profile, addressed as live events address it**: the person's *primary* distinct_id is the one our
  state already gives a profile (live events reached it first), else the best-ranked of its distinct_ids
  (email-shaped, then not SDK-generated, then PostHog's newest link); every other distinct_id is linked to it
  (``merged_into``), so a later event from any of the person's devices lands on that profile. A distinct_id
  that already has a profile of its own is merged into the primary (PostHog says they are one person).
* **only what changed**: the identify carries the attributes whose digest changed (the same digests live
  events keep); a person whose snapshot is unchanged since the last sync (:func:`fingerprint`) maps to nothing.
* **timestamps** (Customer.io orders attribute writes by ``timestamp``): an attribute a live event wrote
  after the snapshot was taken (``as_of``) is left out (the live value is newer); the identify is stamped
  ``max(as_of, the newest write we sent to the profile)``, so Customer.io never drops it as older than the
  profile's last edit.
* **who is a profile**: a person PostHog never identified is skipped unless ``ANONYMOUS_EVENTS=person``;
  ``SEND_EVENTS_FROM_ANONYMOUS_USERS`` applies as for events; a deleted person is deleted (or suppressed) by
  every identifier we know when we made its profile, and skipped when we never did.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..events import PostHogEvent
from ..state import PersonState
from .book import Book, Mapped
from .config import MappingConfig
from .identifiers import is_email
from .identity import ILLEGAL_DISTINCT_IDS, _absorb, merge_operation, passes_anonymous_filter, remember
from .profiles import delete_person, identify_operations

__all__ = ["PersonSnapshot", "fingerprint", "looks_generated", "map_person", "primary_distinct_id"]

#: SDK-made anonymous ids: UUIDs (posthog-js v7 ids, posthog-android/-ios) and posthog-js' older hex-dash ids
_GENERATED = re.compile(r"^[0-9a-f]{8,16}(-[0-9a-f]{4,16}){3,5}$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class PersonSnapshot:
    """One PostHog person as a sync reads it, whatever the source."""

    #: PostHog's person UUID (for messages and counts)
    person_id: str
    #: the person's distinct_ids in PostHog's order (the API lists them oldest link first)
    distinct_ids: tuple[str, ...]
    properties: dict[str, Any] = field(default_factory=dict)
    #: when these values were PostHog's (the API: when the page was read; an export: the row's ``_inserted_at``)
    as_of: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: PostHog's ``is_identified``; ``None`` when the source does not say (persons exports)
    is_identified: bool | None = None
    deleted: bool = False

    @property
    def as_of_s(self) -> int:
        """``as_of`` in Unix seconds."""
        return int(self.as_of.timestamp())


def looks_generated(distinct_id: str) -> bool:
    """Whether a distinct_id looks made by an SDK for an anonymous visitor (a UUID or posthog-js' hex ids)."""
    return bool(_GENERATED.match(distinct_id.strip()))


def identified(snapshot: PersonSnapshot) -> bool:
    """PostHog's ``is_identified`` or, where the source does not say, what the person shows: an email, more
    than one distinct_id (only an identify or an alias links them), or a distinct_id no SDK generated."""
    if snapshot.is_identified is not None:
        return snapshot.is_identified
    email = snapshot.properties.get("email")
    return (
        (isinstance(email, str) and is_email(email))
        or len(snapshot.distinct_ids) > 1
        or any(not looks_generated(distinct_id) for distinct_id in snapshot.distinct_ids)
    )


def fingerprint(snapshot: PersonSnapshot, config: MappingConfig) -> str:
    """A digest of what a sync of this person depends on (not ``as_of``): equal means nothing to send."""
    text = json.dumps(
        [
            sorted(snapshot.distinct_ids),
            snapshot.properties,
            snapshot.is_identified,
            snapshot.deleted,
            repr(config),
        ],
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def primary_distinct_id(snapshot: PersonSnapshot, book: Book) -> str:
    """The distinct_id the person's profile is addressed by (see the module's docs).

    Among the persons the distinct_ids lead to (following merges), those with a profile come first (live
    events or an earlier sync made it); then the identified, the email-shaped, the ones no SDK generated, and
    PostHog's newest link (the API lists a person's distinct_ids oldest first).
    """
    email = _email(snapshot)
    candidates: dict[str, tuple[int, PersonState]] = {}
    for index, distinct_id in enumerate(snapshot.distinct_ids):
        if distinct_id.strip():
            root = book.person(distinct_id)
            candidates[root.distinct_id] = (index, root)

    def rank(item: tuple[str, tuple[int, PersonState]]) -> tuple[bool, bool, bool, bool, bool, bool, int]:
        distinct_id, (index, state) = item
        legal = distinct_id.strip().lower() not in ILLEGAL_DISTINCT_IDS
        holds_email = email is not None and (state.email_sent or "").lower() == email
        generated = looks_generated(distinct_id)
        return legal, state.created, holds_email, state.identified, is_email(distinct_id), not generated, index

    return max(candidates.items(), key=rank)[0]


def _email(snapshot: PersonSnapshot) -> str | None:
    """The person's email property, lower-cased (``None`` when it has no email-shaped one)."""
    email = snapshot.properties.get("email")
    return email.strip().lower() if isinstance(email, str) and is_email(email) else None


def _emails_of_other_profiles(snapshot: PersonSnapshot, person: PersonState, book: Book) -> set[str]:
    """Emails that other profiles of the person's distinct_ids hold (lower-cased): with ``MERGE_PEOPLE`` off
    they stay apart, and Customer.io refuses an identifier another profile has."""
    held = set()
    for distinct_id in snapshot.distinct_ids:
        other = book.person(distinct_id) if distinct_id.strip() else person
        if other is not person and other.created and other.email_sent:
            held.add(other.email_sent.lower())
    return held


def map_person(snapshot: PersonSnapshot, states: Mapping[str, PersonState], config: MappingConfig) -> Mapped:
    """The operations that bring Customer.io up to date with one PostHog person (see the module's docs).

    ``states`` holds the known states of the person's distinct_ids and of whom they were merged into; it is
    not modified (changed states are in ``Mapped.states``). ``Mapped.skipped`` says why nothing was sent:
    ``unchanged``, ``no_distinct_id``, ``anonymous_person``, ``anonymous_user``, ``deleted_unknown``.
    """
    result = Mapped()
    if not any(distinct_id.strip() for distinct_id in snapshot.distinct_ids):
        result.skipped = "no_distinct_id"
        return result
    book = Book(states, result)
    primary_id = primary_distinct_id(snapshot, book)
    person = book.person(primary_id)
    digest = fingerprint(snapshot, config)
    if person.synced == digest:
        result.skipped = "unchanged"
        result.states.clear()  # nothing was changed: nothing to save
        return result
    if snapshot.deleted:
        _delete(snapshot, primary_id, book, config, result)
        if result.skipped == "deleted_unknown":
            result.states.clear()
            return result
        if not config.suppress_on_delete:
            return result  # the states are forgotten: a later snapshot finds nothing to delete
    elif not _sync(snapshot, primary_id, book, config, result):
        result.states.clear()  # not a profile: nothing of it is remembered (its events decide later)
        return result
    book.person(primary_id).synced = digest
    return result


def _delete(snapshot: PersonSnapshot, primary_id: str, book: Book, config: MappingConfig, result: Mapped) -> None:
    """Delete (or suppress) the person's profile when we made one; a person we never sent is left alone."""
    if not book.person(primary_id).created:
        result.skipped = "deleted_unknown"
        return
    event = PostHogEvent("$delete_person", primary_id, snapshot.as_of)
    delete_person(event, book, config, result)
    result.skipped = None  # sent: the person's deletion (a skip reason only for events)


def _sync(snapshot: PersonSnapshot, primary_id: str, book: Book, config: MappingConfig, result: Mapped) -> bool:
    """Link the person's distinct_ids and queue the identify (and merges) it needs; False when skipped."""
    person = book.person(primary_id)
    is_identified = identified(snapshot)
    if not is_identified and not person.identified and config.anonymous_events != "person":
        result.skipped = "anonymous_person"
        return False
    as_of = snapshot.as_of_s
    fresh = {key: value for key, value in snapshot.properties.items() if person.stamps.get(key, as_of) <= as_of}
    if not config.merge_people and _email(snapshot) in _emails_of_other_profiles(snapshot, person, book):
        fresh.pop("email", None)  # another profile of this person keeps it (no merge): Customer.io would refuse
        result.notes["email_held_by_another_profile"] += 1
    stamp = max([as_of, *person.stamps.values()])
    event = PostHogEvent(
        "$set",
        primary_id,
        datetime.fromtimestamp(stamp, UTC),
        properties={"$is_identified": is_identified},
        set=fresh,
    )
    remember(event, person)
    if not passes_anonymous_filter(person, config.anonymous_mode):
        result.skipped = "anonymous_user"
        return False
    merged = _link(snapshot, person, book, config)
    book.get(primary_id).processed = True  # PostHog has a person for it
    hold = frozenset({"email"}) if any(other.email_sent for other in merged) else frozenset()
    result.operations.extend(identify_operations(event, person, config, result, hold=hold))
    for other in merged:
        result.operations.append(merge_operation(person, other, config))
    if hold:
        after = tuple(other.distinct_id for other in merged)
        result.operations.extend(identify_operations(event, person, config, result, after=after))
    return True


def _link(snapshot: PersonSnapshot, person: PersonState, book: Book, config: MappingConfig) -> list[PersonState]:
    """Point every other distinct_id of the person at ``person``; the profiles that must merge into it."""
    merged: list[PersonState] = []
    for distinct_id in snapshot.distinct_ids:
        if not distinct_id.strip() or distinct_id == person.distinct_id:
            continue
        own = book.get(distinct_id)
        other = book.person(distinct_id)
        if other is person:
            continue
        if own is not other:  # linked to another person before: PostHog now says it is this one's
            own.merged_into, own.merged_epoch, own.merged_by_identify = person.distinct_id, person.epoch, False
            continue
        if other.created and not config.merge_people:
            continue  # its own profile stays (MERGE_PEOPLE off): only its future events would move
        absorbed = _absorb(person, other, via_identify=False)
        if absorbed is not None:
            merged.append(absorbed)
    return merged
