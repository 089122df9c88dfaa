"""Identity: who an event is about, anonymity, and merges (``MERGE_PEOPLE``).

``$identify`` with ``$anon_distinct_id``, ``$create_alias`` and ``$merge_dangerously`` merge the other
person into this one, in our state and (when it exists there) in Customer.io, following PostHog's rule
that an already identified person is not merged (except ``$merge_dangerously``); which side survives:
the identified one, else the one with an email, else the one never seen as anonymous, else the event's
distinct_id.
"""

from __future__ import annotations

from ..events import PostHogEvent
from ..operations import Operation
from ..state import PersonState
from .book import Book, Mapped, forget
from .config import AnonymousMode, MappingConfig
from .identifiers import is_email, person_identifiers

__all__ = [
    "ALIAS_EVENTS",
    "IDENTIFYING_EVENTS",
    "ILLEGAL_DISTINCT_IDS",
    "email_of",
    "has_anonymous_markers",
    "is_anonymous",
    "merge_identities",
    "merge_operation",
    "other_identity",
    "own_identity",
    "passes_anonymous_filter",
    "remember",
    "survivor",
]


#: Events that make their distinct_id an identified person.
IDENTIFYING_EVENTS = frozenset({"$identify", "$create_alias", "$merge_dangerously"})
#: Identity events that only merge people and are not forwarded as events.
ALIAS_EVENTS = frozenset({"$create_alias", "$merge_dangerously"})
#: distinct_ids PostHog refuses to merge (``cannot_merge_with_illegal_distinct_id``).
ILLEGAL_DISTINCT_IDS = frozenset(
    {
        "",
        "anonymous",
        "guest",
        "distinctid",
        "distinct_id",
        "id",
        "not_authenticated",
        "email",
        "undefined",
        "true",
        "false",
        "[object object]",
        "nan",
        "none",
        "null",
        "0",
    }
)


def other_identity(event: PostHogEvent) -> str | None:
    """The distinct_id an identity event merges into this one, if any."""
    if event.event == "$identify":
        other = event.properties.get("$anon_distinct_id")
    elif event.event in ALIAS_EVENTS:
        other = event.properties.get("alias")
    else:
        return None
    if isinstance(other, (int, float)) and not isinstance(other, bool):
        other = str(other)
    if not isinstance(other, str) or other == event.distinct_id or not other.strip():
        return None
    return other


def remember(event: PostHogEvent, state: PersonState) -> None:
    email = email_of(event)
    if email is not None and event.timestamp_s >= state.stamps.get("email", event.timestamp_s):
        state.email = email  # an older event's email never replaces a newer one
    if event.event in IDENTIFYING_EVENTS or event.properties.get("$is_identified") is True:
        state.identified = True


def email_of(event: PostHogEvent) -> str | None:
    """The email this event tells us: ``$set.email``, person properties, distinct_id."""
    for candidate in (event.set.get("email"), event.person_properties.get("email"), event.distinct_id):
        if isinstance(candidate, str) and is_email(candidate):
            return candidate.strip()
    return None


def is_anonymous(event: PostHogEvent, person: PersonState) -> bool:
    """Whether an event comes from a not-yet-identified visitor (``ANONYMOUS_EVENTS``).

    The person is not identified (same rule as the identified filter) *and* the
    event says it is anonymous, as PostHog's client SDKs do: ``$is_identified``
    false, ``$process_person_profile`` false, or ``$device_id`` equal to the
    distinct_id. Server-side SDKs send none of these for their (known) users, so
    their events still create people.
    """
    if person.identified or person.created:  # a profile exists: its events land on it
        return False
    return has_anonymous_markers(event)


def has_anonymous_markers(event: PostHogEvent) -> bool:
    """The event says its distinct_id is an anonymous visitor (client SDK markers)."""
    properties = event.properties
    return (
        properties.get("$is_identified") is False
        or properties.get("$process_person_profile") is False
        or properties.get("$device_id") == event.distinct_id
    )


def passes_anonymous_filter(state: PersonState, mode: AnonymousMode) -> bool:
    if mode == "identified":
        return state.identified
    if mode == "with_email":
        return state.email is not None
    return True


def survivor(event: PostHogEvent, person: PersonState, book: Book, config: MappingConfig) -> PersonState:
    """The person whose Customer.io profile survives an alias or dangerous merge.

    By identity, not position (posthog-python's ``alias`` puts the previous id in the
    event's distinct_id, posthog-js and posthog-node the other way round): the side
    that is identified, else the one with an email, else the one never seen as an
    anonymous visitor; on a tie the event's distinct_id.
    """
    other_id = other_identity(event)
    if event.event not in ALIAS_EVENTS or other_id is None or not config.merge_people:
        return person
    other = book.person(other_id)
    if other.distinct_id == person.distinct_id:
        return person
    event_says = event.properties.get("$is_identified") is True

    def rank(state: PersonState, distinct_id: str, own: bool) -> tuple[bool, bool, bool]:
        identified = state.identified or (own and event_says)
        return identified, state.email is not None or is_email(distinct_id), not state.anonymous_seen

    return other if rank(other, other_id, False) > rank(person, event.distinct_id, True) else person


def merge_identities(
    event: PostHogEvent, person: PersonState, book: Book, config: MappingConfig, result: Mapped
) -> PersonState | None:
    """Merge the other person of an identity event into ``person``.

    Returns the other person's state when Customer.io must merge profiles too (it
    has a profile there), else ``None``.
    """
    other_id = other_identity(event)
    if other_id is None or not config.merge_people:
        return None
    if other_id.strip().lower() in ILLEGAL_DISTINCT_IDS or event.distinct_id.strip().lower() in ILLEGAL_DISTINCT_IDS:
        result.notes["merge_illegal_id"] += 1
        return None
    other = book.person(other_id)
    if other.distinct_id == person.distinct_id:  # the alias side survives: merge the distinct_id's person
        other = book.person(event.distinct_id)
    if other.distinct_id == person.distinct_id:
        return None
    if event.event != "$merge_dangerously" and (other.identified or _alias_side_identified(event, other_id, book)):
        result.notes["merge_blocked_already_identified"] += 1
        return None
    if event.event == "$identify" and not _shown_anonymous(event, other_id, book):
        # a cold start: nothing says the other id is an anonymous visitor (posthog-js names an old
        # cookie's or a bootstrapped id too), and PostHog refuses to merge an identified person; the
        # link waits for the other id's own events to show it anonymous (see own_identity)
        claimed = book.get(other_id)
        if claimed.merged_into is None:
            claimed.claimed_by = person.distinct_id
        result.notes["merge_waits_for_proof"] += 1
        return None
    return _absorb(person, other, via_identify=event.event == "$identify")


def _alias_side_identified(event: PostHogEvent, other_id: str, book: Book) -> bool:
    """PostHog's refusal, by position: ``$create_alias`` merges ``alias``'s person into the distinct_id's and
    refuses when both persons exist and the ``alias`` side is identified (``cannot_merge_already_identified``).

    posthog-python ``alias(previous_id, distinct_id)`` puts the identified user on the ``alias`` side: whichever
    profile would survive here, PostHog keeps those two persons apart.
    """
    if event.event != "$create_alias":
        return False
    alias_side = book.states.get(book.person(other_id).distinct_id)  # as it was before this event
    before = book.states.get(event.distinct_id)
    existed = before is not None and (before.processed or before.created or before.merged_into is not None)
    return existed and alias_side is not None and alias_side.identified


def _shown_anonymous(event: PostHogEvent, other_id: str, book: Book) -> bool:
    """Whether ``$identify``'s anonymous id is shown to be an anonymous visitor we may merge.

    Shown by the identify itself (posthog-js: the anonymous distinct_id is the ``$device_id``), or
    by our state: its own events were mapped (their markers, or a profile we know, decide through
    the identified check before this).
    """
    return event.properties.get("$device_id") == other_id or book.known(other_id)


def own_identity(event: PostHogEvent, book: Book, config: MappingConfig, result: Mapped) -> PersonState | None:
    """What an event says about its own distinct_id's links; returns a person to merge in Customer.io.

    * linked by an ``$identify`` as someone's anonymous id, but this event says ``$is_identified:
      true``: the link was wrong (PostHog would have refused it), this id is its own person again;
    * claimed by a cold-start ``$identify``: an event with anonymous markers proves the claim (the
      merge happens now), ``$is_identified: true`` refutes it.
    """
    own = book.get(event.distinct_id)
    own.seen = True
    processed = event.properties.get("$process_person_profile") is not False
    own.processed = own.processed or processed
    says_identified = event.properties.get("$is_identified") is True
    if own.merged_into and own.merged_by_identify and says_identified:
        forget(own)
        own.seen, own.processed = True, processed
        result.notes["merge_undone_identified"] += 1
        return None
    if own.claimed_by is None or own.merged_into:
        return None
    primary_id, own.claimed_by = own.claimed_by, None
    if says_identified or own.identified or not config.merge_people:
        result.notes["merge_refused_identified"] += 1
        return None
    if not has_anonymous_markers(event):
        own.claimed_by = primary_id  # no proof either way yet
        return None
    primary = book.person(primary_id)
    if primary.distinct_id == own.distinct_id:
        return None
    return _absorb(primary, own, via_identify=True)


def _absorb(person: PersonState, other: PersonState, via_identify: bool) -> PersonState | None:
    """Merge ``other`` into ``person`` in our state; ``other`` when its Customer.io profile must merge too."""
    person.identified = True
    if person.email is None and other.email is not None and "email" in other.stamps:
        person.stamps.setdefault("email", other.stamps["email"])  # it moves with the time it was written
    person.email = person.email or other.email
    person.relationships = sorted(set(person.relationships) | set(other.relationships))
    person.pending = {**other.pending, **person.pending}
    if other.anonymous_sent:
        person.pending_anonymous_ids.append(other.distinct_id)
    person.pending_anonymous_ids.extend(i for i in other.pending_anonymous_ids if i not in person.pending_anonymous_ids)
    other.merged_into = person.distinct_id
    other.merged_epoch = person.epoch
    other.merged_by_identify = via_identify
    other.claimed_by = None
    other.pending_anonymous_ids, other.pending = [], {}
    if not other.created:
        return None
    for key, digest in other.digests.items():  # Customer.io copies what the primary lacks...
        if key != "email":  # ...but an identifier is sent explicitly
            if key not in person.digests and key in other.stamps:
                person.stamps[key] = other.stamps[key]  # with the time of its write
            person.digests.setdefault(key, digest)
    return other


def merge_operation(person: PersonState, other: PersonState, config: MappingConfig) -> Operation:
    payload = {
        "type": "person",
        "action": "merge",
        "primary": person_identifiers(person, config),
        "secondary": person_identifiers(other, config),
    }
    other.created = False
    return Operation(person.distinct_id, payload, after=(other.distinct_id,))
