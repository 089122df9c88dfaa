"""Pure mapping: a PostHog event plus remembered person state -> Customer.io operations.

No I/O happens here. Every option and every Customer.io rule lives in this module:

* the seed destination's options: ``EVENTS_TO_SEND`` (allowlist),
  ``SEND_EVENTS_FROM_ANONYMOUS_USERS`` (all / identified / with_email),
  ``IDENTIFY_BY_EMAIL``;
* people: the first operation creates the person; later identifies carry only the
  attributes that changed (person properties overlaid by ``$set``, ``$set_once``
  keys never sent, ``$unset`` keys cleared) with the event time as ``timestamp``;
* identity (``MERGE_PEOPLE``): ``$identify`` with ``$anon_distinct_id``,
  ``$create_alias`` and ``$merge_dangerously`` merge the other person into this one,
  in our state and (when it exists there) in Customer.io, following PostHog's rule
  that an already identified person is not merged (except ``$merge_dangerously``);
* anonymous people (``ANONYMOUS_EVENTS``): events of not-yet-identified people are
  sent as anonymous events and attached by the identify that follows;
* which side of a merge survives: the identified one, else the one with an email,
  else the one never seen as anonymous, else the event's distinct_id (SDKs put the
  ids of ``alias`` in different places);
* not events: ``$set``/``$set_once`` only update the person; ``EVENTS_TO_SKIP`` drops
  events by name or glob after ``EVENTS_TO_SEND``;
* ISO 8601 date-time attributes become Unix seconds (``CONVERT_DATES``);
* groups (``GROUP_TYPE_MAP``, ``$groups`` and Hog globals ``groups``), deletes and
  suppressions by every identifier we know (``SUPPRESS_ON_DELETE``), push devices
  (added, and deleted when their token is set to null or unset),
  property filters (``PROPERTIES_TO_INCLUDE`` / ``_EXCLUDE``), ``EVENT_NAME_MAP``;
* Customer.io's byte limits (``LIMITS``, see :mod:`.limits`);
* events carry a deterministic ULID ``id`` (dedupe) and integer ``timestamp``.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as _encode_string
from typing import Any, Literal

from . import limits
from .events import PostHogEvent, to_unix_seconds
from .ids import event_ulid
from .operations import Kind, Operation, encode_payload
from .state import PersonState

__all__ = [
    "DEVICE_TOKEN_PROPERTIES",
    "AnonymousEvents",
    "AnonymousMode",
    "Mapped",
    "MappingConfig",
    "adopted_events",
    "involved_distinct_ids",
    "is_email",
    "map_event",
    "page_name",
    "prefit_event",
    "value_digest",
]

AnonymousMode = Literal["all", "identified", "with_email"]
AnonymousEvents = Literal["anonymous", "person"]

#: Events that make their distinct_id an identified person.
IDENTIFYING_EVENTS = frozenset({"$identify", "$create_alias", "$merge_dangerously"})
#: Identity events that only merge people and are not forwarded as events.
ALIAS_EVENTS = frozenset({"$create_alias", "$merge_dangerously"})
#: Events that only update the person: never forwarded as Customer.io events.
PERSON_UPDATE_EVENTS = frozenset({"$set", "$set_once"})
#: ``EVENTS_TO_SKIP``'s default: PostHog's own instrumentation, never a messaging signal.
DEFAULT_EVENTS_TO_SKIP = ("$pageleave", "$web_vitals", "$feature_flag_called", "$$heatmap", "$snapshot")
#: Properties that are instructions to PostHog, not event data.
PERSON_UPDATE_KEYS = frozenset({"$set", "$set_once", "$unset"})
#: Push-token properties (in ``$set``) and the platform each implies (None: from ``$os``).
DEVICE_TOKEN_PROPERTIES: dict[str, str | None] = {
    "$device_token": None,
    "$push_token": None,
    "$ios_push_token": "ios",
    "$apns_token": "ios",
    "$android_push_token": "android",
    "$fcm_token": "android",
}
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
#: PostHog's own push subscriptions (``$device_push_subscription_<app id>``): its ciphertext, useless elsewhere.
PUSH_SUBSCRIPTION_PREFIX = "$device_push_subscription_"
#: Customer.io's limit on event names, in UTF-8 bytes.
MAX_EVENT_NAME_BYTES = limits.MAX_EVENT_NAME_BYTES

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
#: a full ISO 8601 date-time: date, time (at least hh:mm), optional fraction and zone
_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}([.,]\d{1,9})?)?(Z|[+-]\d{2}(:?\d{2})?)?$")


@dataclass(frozen=True, slots=True)
class MappingConfig:
    """The mapping's options (defaults = the service's defaults)."""

    identify_by_email: bool = False
    anonymous_mode: AnonymousMode = "all"
    events_to_send: frozenset[str] = frozenset()
    merge_people: bool = True
    anonymous_events: AnonymousEvents = "anonymous"
    group_type_map: Mapping[str, str] = field(default_factory=dict)
    suppress_on_delete: bool = False
    truncate: bool = True
    properties_to_include: tuple[str, ...] = ()
    properties_to_exclude: tuple[str, ...] = ()
    event_name_map: Mapping[str, str] = field(default_factory=dict)
    events_to_skip: tuple[str, ...] = ()
    convert_dates: bool = True

    def skips(self, name: str) -> bool:
        """Whether ``EVENTS_TO_SKIP`` (names or globs) drops this event name."""
        return any(fnmatch.fnmatchcase(name, glob) for glob in self.events_to_skip)

    def keeps(self, key: str) -> bool:
        """Whether a property passes ``PROPERTIES_TO_INCLUDE`` / ``PROPERTIES_TO_EXCLUDE``."""
        if not self.properties_to_include and not self.properties_to_exclude:
            return True
        if self.properties_to_include and not any(fnmatch.fnmatchcase(key, g) for g in self.properties_to_include):
            return False
        return not any(fnmatch.fnmatchcase(key, g) for g in self.properties_to_exclude)


@dataclass(slots=True)
class Mapped:
    """What one event produced: operations, changed person states, skip reason, notes."""

    operations: list[Operation] = field(default_factory=list)
    states: dict[str, PersonState] = field(default_factory=dict)
    skipped: str | None = None
    notes: Counter[str] = field(default_factory=Counter)
    #: (anonymous_id, identifiers, person_key): anonymous events of that visitor still
    #: queued become this person's events, queued after these operations
    adopt: list[tuple[str, dict[str, str], str]] = field(default_factory=list)


def is_email(value: Any) -> bool:
    """True when ``value`` is a string shaped like an email address."""
    return isinstance(value, str) and len(value) <= 254 and _EMAIL.match(value) is not None


def value_digest(value: Any) -> str:
    """A short stable digest of an attribute value (to detect changes).

    The digest is of the value's canonical JSON; scalars take a fast path that
    produces exactly the text ``json.dumps`` would.
    """
    kind = type(value)
    if kind is str:
        text = _encode_string(value)
    elif kind is bool:
        text = "true" if value else "false"
    elif kind is int:
        text = int.__repr__(value)
    elif value is None:
        text = "null"
    else:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def involved_distinct_ids(event: PostHogEvent) -> list[str]:
    """The distinct_ids whose state :func:`map_event` may read or change."""
    ids = [event.distinct_id]
    other = _other_identity(event)
    if other is not None:
        ids.append(other)
    ids.extend(_group_state_key(group_type, key) for group_type, (key, _) in event.groups.items())
    return ids


def _other_identity(event: PostHogEvent) -> str | None:
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


class _Book:
    """The states one event reads and changes (copies; inputs are never mutated)."""

    def __init__(self, states: Mapping[str, PersonState], result: Mapped) -> None:
        self.states = states
        self.result = result

    def get(self, distinct_id: str) -> PersonState:
        """The (copied) state of exactly this distinct_id."""
        if distinct_id in self.result.states:
            return self.result.states[distinct_id]
        known = self.states.get(distinct_id)
        state = known.copy() if known is not None else PersonState(distinct_id)
        self.result.states[distinct_id] = state
        return state

    def person(self, distinct_id: str) -> PersonState:
        """The state of the person this distinct_id belongs to (following merges).

        A link to a person deleted since (another ``epoch``) is forgotten on the way: PostHog
        deletes a person with all its distinct_ids.
        """
        state = self.get(distinct_id)
        for _ in range(8):
            if not state.merged_into or state.merged_into == state.distinct_id:
                break
            target = self.get(state.merged_into)
            if target.epoch != state.merged_epoch:
                _forget(state)
                break
            state = target
        return state

    def known(self, distinct_id: str) -> bool:
        """Whether an event of this distinct_id itself was mapped before."""
        return self.get(distinct_id).seen


def _forget(state: PersonState, epoch: int | None = None) -> None:
    """Reset a state to a never-seen distinct_id (keeping ``epoch`` or the given one)."""
    fresh = PersonState(state.distinct_id, epoch=state.epoch if epoch is None else epoch)
    for name in PersonState.__slots__:
        setattr(state, name, getattr(fresh, name))


def map_event(event: PostHogEvent, states: Mapping[str, PersonState], config: MappingConfig) -> Mapped:
    """Map one event to Customer.io operations, given the remembered states.

    ``states`` holds the known states of :func:`involved_distinct_ids` and of the
    people they were merged into (absent = never seen). It is not modified; changed
    states are returned in ``Mapped.states``.
    """
    result = Mapped()
    book = _Book(states, result)
    if event.event == "$groupidentify":
        _group_identify(event, config, result)
        return result
    if event.properties.get("$process_person_profile") is False and (event.set or event.set_once or event.unset):
        # PostHog drops a personless event's person updates (ingestion ``normalizeProcessPerson``)
        event = dataclasses.replace(event, set={}, set_once={}, unset=())
    if event.event == "$delete_person":
        _delete_person(event, book, config, result)
        return result
    confirmed = _own_identity(event, book, config, result)
    person = book.person(event.distinct_id)
    if not person.identified and not person.created and _has_anonymous_markers(event):
        person.anonymous_seen = True
    person = _survivor(event, person, book, config)
    _remember(event, person)
    merged = _merge_identities(event, person, book, config, result) or confirmed
    skip = _skip_reason(event, person, config)
    update_only = skip == "person_update"  # $set / $set_once: the person changes, no event
    if (skip is None or update_only) and config.anonymous_events == "anonymous" and _is_anonymous(event, person):
        if skip is None:
            result.operations.append(_anonymous_event_operation(event, person, config, result))
            person.anonymous_sent = True
        person.pending.update(_profile_attributes(event, person, config))
        result.skipped = skip
        return result
    result.skipped = skip
    # an alias that gave a person with a profile a visitor's anonymous events attaches them now
    attaches = skip == "alias" and person.created and bool(person.pending_anonymous_ids)
    if skip is not None and merged is None and not update_only and not attaches:
        return result
    # the secondary's Customer.io profile holds its email until the merge deletes it: the
    # primary gets that identifier only after the merge (Customer.io refuses a duplicate)
    hold = frozenset({"email"}) if merged is not None and merged.email_sent else frozenset()
    identifies = _identify_operations(event, person, config, result, hold=hold)
    result.operations.extend(identifies)
    if merged is not None:
        result.operations.append(_merge_operation(person, merged, config))
        if hold:
            result.operations.extend(_identify_operations(event, person, config, result, after=(merged.distinct_id,)))
    if skip is None or update_only:
        result.operations.extend(_device_operations(event, person, config))
    if skip is None:
        result.operations.extend(_hog_group_operations(event, book, config, result))
        result.operations.extend(_relationship_operations(event, person, config, result))
        result.operations.append(_event_operation(event, person, config, identifies, result))
    return result


def _skip_reason(event: PostHogEvent, person: PersonState, config: MappingConfig) -> str | None:
    if event.event in ALIAS_EVENTS:
        return "alias"
    if event.event in PERSON_UPDATE_EVENTS and _passes_anonymous_filter(person, config.anonymous_mode):
        return "person_update"
    if config.events_to_send and event.event not in config.events_to_send:
        return "not_in_allowlist"
    if config.events_to_skip and config.skips(event.event):
        return "events_to_skip"
    if not _passes_anonymous_filter(person, config.anonymous_mode):
        return "anonymous_user"
    return None


# -- what an event tells us -----------------------------------------------------------
def _remember(event: PostHogEvent, state: PersonState) -> None:
    email = _email_of(event)
    if email is not None and event.timestamp_s >= state.stamps.get("email", event.timestamp_s):
        state.email = email  # an older event's email never replaces a newer one
    if event.event in IDENTIFYING_EVENTS or event.properties.get("$is_identified") is True:
        state.identified = True


def _email_of(event: PostHogEvent) -> str | None:
    """The email this event tells us: ``$set.email``, person properties, distinct_id."""
    for candidate in (event.set.get("email"), event.person_properties.get("email"), event.distinct_id):
        if isinstance(candidate, str) and is_email(candidate):
            return candidate.strip()
    return None


def _is_anonymous(event: PostHogEvent, person: PersonState) -> bool:
    """Whether an event comes from a not-yet-identified visitor (``ANONYMOUS_EVENTS``).

    The person is not identified (same rule as the identified filter) *and* the
    event says it is anonymous, as PostHog's client SDKs do: ``$is_identified``
    false, ``$process_person_profile`` false, or ``$device_id`` equal to the
    distinct_id. Server-side SDKs send none of these for their (known) users, so
    their events still create people.
    """
    if person.identified or person.created:  # a profile exists: its events land on it
        return False
    return _has_anonymous_markers(event)


def _has_anonymous_markers(event: PostHogEvent) -> bool:
    """The event says its distinct_id is an anonymous visitor (client SDK markers)."""
    properties = event.properties
    return (
        properties.get("$is_identified") is False
        or properties.get("$process_person_profile") is False
        or properties.get("$device_id") == event.distinct_id
    )


def _passes_anonymous_filter(state: PersonState, mode: AnonymousMode) -> bool:
    if mode == "identified":
        return state.identified
    if mode == "with_email":
        return state.email is not None
    return True


# -- identity ------------------------------------------------------------------------------
def _survivor(event: PostHogEvent, person: PersonState, book: _Book, config: MappingConfig) -> PersonState:
    """The person whose Customer.io profile survives an alias or dangerous merge.

    By identity, not position (posthog-python's ``alias`` puts the previous id in the
    event's distinct_id, posthog-js and posthog-node the other way round): the side
    that is identified, else the one with an email, else the one never seen as an
    anonymous visitor; on a tie the event's distinct_id.
    """
    other_id = _other_identity(event)
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


def _merge_identities(
    event: PostHogEvent, person: PersonState, book: _Book, config: MappingConfig, result: Mapped
) -> PersonState | None:
    """Merge the other person of an identity event into ``person``.

    Returns the other person's state when Customer.io must merge profiles too (it
    has a profile there), else ``None``.
    """
    other_id = _other_identity(event)
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
        # link waits for the other id's own events to show it anonymous (see _own_identity)
        claimed = book.get(other_id)
        if claimed.merged_into is None:
            claimed.claimed_by = person.distinct_id
        result.notes["merge_waits_for_proof"] += 1
        return None
    return _absorb(person, other, via_identify=event.event == "$identify")


def _alias_side_identified(event: PostHogEvent, other_id: str, book: _Book) -> bool:
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


def _shown_anonymous(event: PostHogEvent, other_id: str, book: _Book) -> bool:
    """Whether ``$identify``'s anonymous id is shown to be an anonymous visitor we may merge.

    Shown by the identify itself (posthog-js: the anonymous distinct_id is the ``$device_id``), or
    by our state: its own events were mapped (their markers, or a profile we know, decide through
    the identified check before this).
    """
    return event.properties.get("$device_id") == other_id or book.known(other_id)


def _own_identity(event: PostHogEvent, book: _Book, config: MappingConfig, result: Mapped) -> PersonState | None:
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
        _forget(own)
        own.seen, own.processed = True, processed
        result.notes["merge_undone_identified"] += 1
        return None
    if own.claimed_by is None or own.merged_into:
        return None
    primary_id, own.claimed_by = own.claimed_by, None
    if says_identified or own.identified or not config.merge_people:
        result.notes["merge_refused_identified"] += 1
        return None
    if not _has_anonymous_markers(event):
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


def _merge_operation(person: PersonState, other: PersonState, config: MappingConfig) -> Operation:
    payload = {
        "type": "person",
        "action": "merge",
        "primary": _identifiers(person, config),
        "secondary": _identifiers(other, config),
    }
    other.created = False
    return Operation(person.distinct_id, payload, after=(other.distinct_id,))


# -- people --------------------------------------------------------------------------------
def _profile_attributes(event: PostHogEvent, state: PersonState, config: MappingConfig) -> dict[str, Any]:
    """What we know of the person: person properties, ``$set``, new ``$set_once``, pending."""
    attributes = {**state.pending, **event.person_properties, **event.set}
    for key, value in event.set_once.items():
        if key not in attributes and key not in state.digests:
            attributes[key] = value
    for key in event.unset:
        attributes.pop(key, None)
    for key in DEVICE_TOKEN_PROPERTIES:
        attributes.pop(key, None)
    attributes = {
        key: value
        for key, value in attributes.items()
        if key == "email" or (config.keeps(key) and not key.startswith(PUSH_SUBSCRIPTION_PREFIX))
    }
    if state.email is not None:
        attributes["email"] = state.email
    for key, value in attributes.items():
        if value is None:  # PostHog null = no value; Customer.io clears an attribute set to ""
            attributes[key] = ""
        elif config.convert_dates and key != "created_at":
            attributes[key] = convert_dates(value)
    if "created_at" in attributes:
        created_at = to_unix_seconds(attributes["created_at"])
        if created_at is None:
            del attributes["created_at"]
        else:
            attributes["created_at"] = created_at
    return attributes


def convert_dates(value: Any) -> Any:
    """``value`` with every full ISO 8601 date-time string as Unix seconds, inside objects too.

    As Segment's Customer.io destination does (``convertAttributeTimestamps``): strings, and the
    values of nested objects, recursively; lists are left as they are.
    """
    if isinstance(value, str):
        seconds = iso_datetime_seconds(value)
        return value if seconds is None else seconds
    if isinstance(value, dict):
        return {key: convert_dates(item) for key, item in value.items()}
    return value


def iso_datetime_seconds(value: str) -> int | None:
    """Unix seconds of a full ISO 8601 date-time string (date and time), else ``None``.

    Bare dates, numbers and other strings are not date-times and stay as they are;
    a date-time without a zone is UTC.
    """
    if len(value) > 40 or not _ISO_DATETIME.match(value):
        return None
    text = value.replace(",", ".")
    text = text[:-1] + "+00:00" if text.endswith("Z") else text
    try:
        moment = datetime.fromisoformat(text.replace(" ", "T", 1))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _identifiers(state: PersonState, config: MappingConfig) -> dict[str, str]:
    if config.identify_by_email and state.email_sent:
        return {"email": state.email_sent}
    return {"id": state.distinct_id}


def _identify_operations(
    event: PostHogEvent,
    state: PersonState,
    config: MappingConfig,
    result: Mapped,
    hold: frozenset[str] = frozenset(),
    after: tuple[str, ...] = (),
) -> list[Operation]:
    """The identifies for what changed; ``hold`` keys wait for a later call, ``after`` orders it."""
    attributes = _profile_attributes(event, state, config)
    when = event.timestamp_s
    carried = _carried_keys(event)
    # digests are of the values as PostHog has them; only what changed is fitted to the limits
    changed: dict[str, Any] = {}
    for key, value in attributes.items():
        if key in hold or (key in carried and when < state.stamps.get(key, when)):
            continue  # older than the write Customer.io keeps (it orders writes by timestamp)
        digest = value_digest(value)
        if state.digests.get(key) != digest:
            changed[key] = value
            state.digests[key] = digest
        if key in carried:
            state.stamps[key] = max(when, state.stamps.get(key, when))
        elif key in changed:  # remembered (merged, pending) values keep the time they were written
            state.stamps.setdefault(key, when)
    for key in event.unset:
        if when < state.stamps.get(key, when):
            continue
        state.stamps[key] = when
        if key in state.digests:
            changed[key] = ""
            del state.digests[key]
    anonymous_ids = list(dict.fromkeys(state.pending_anonymous_ids))
    if not state.created and state.anonymous_sent and state.distinct_id not in anonymous_ids:
        # its own anonymous (personless) events came first: PostHog gives them the person id this
        # distinct_id's person gets (a UUIDv5 of team and distinct_id), so the new profile takes them
        anonymous_ids.insert(0, state.distinct_id)
    if state.created and not changed and not anonymous_ids:
        return []
    operations = []
    if not state.created and config.identify_by_email and state.email and "email" not in hold:
        identifiers = {"email": state.email}
        state.email_sent = state.email
    elif _email_changes(state, config, changed):
        # Customer.io changes an identifier only through another one ("Allow updates to email using
        # ID"; https://docs.customer.io/integrations/api/track/#operation/identify): the profile gets
        # its id (addressed by the old email), then the identify by id carries the new email
        assert state.email_sent is not None
        give_id = {
            "type": "person",
            "identifiers": {"email": state.email_sent},
            "action": "identify",
            "timestamp": when,
            "attributes": {"id": state.distinct_id},
        }
        operations.append(Operation(state.distinct_id, give_id, after=after))
        identifiers = {"id": state.distinct_id}
        result.notes["email_changed"] += 1
    else:
        identifiers = _identifiers(state, config)
    if "email" in changed:
        state.email_sent = state.email
    state.created = True
    state.pending, state.pending_anonymous_ids = {}, []
    if config.truncate and changed:
        changed, cuts = limits.fit_attributes(changed)
        result.notes["limits_truncated"] += cuts
    chunks = limits.chunk_attributes(changed) if changed else [{}]
    for index, chunk in enumerate(chunks):
        payload: dict[str, Any] = {
            "type": "person",
            "identifiers": identifiers,
            "action": "identify",
            "timestamp": event.timestamp_s,
        }
        if index == 0 and anonymous_ids:
            chunk = {**chunk, "anonymous_id": anonymous_ids[0]}
        if chunk:
            payload["attributes"] = chunk
        after = (*after, *anonymous_ids) if index == 0 else after
        operations.append(Operation(state.distinct_id, payload, after=after))
    # what is still queued of the visitor's anonymous events is sent as this person's
    # events (batched) instead; the anonymous_id above attaches those already sent
    result.adopt.extend((anonymous_id, identifiers, state.distinct_id) for anonymous_id in anonymous_ids)
    for anonymous_id in anonymous_ids[1:]:  # one anonymous_id per identify
        payload = {
            "type": "person",
            "identifiers": identifiers,
            "action": "identify",
            "timestamp": event.timestamp_s,
            "attributes": {"anonymous_id": anonymous_id},
        }
        operations.append(Operation(state.distinct_id, payload, after=(anonymous_id,)))
    return operations


def _carried_keys(event: PostHogEvent) -> set[str]:
    """The attributes this event itself writes (its time orders them against other writes)."""
    keys = {*event.set, *event.set_once, *event.person_properties}
    if _email_of(event) is not None:
        keys.add("email")
    return keys


def _email_changes(state: PersonState, config: MappingConfig, changed: Mapping[str, Any]) -> bool:
    """With identify-by-email: the profile, addressed by its email, gets another email."""
    return (
        config.identify_by_email
        and state.created
        and "email" in changed
        and state.email_sent is not None
        and state.email is not None
        and state.email.lower() != state.email_sent.lower()
    )


def known_identifiers(distinct_id: str, person: PersonState) -> list[dict[str, str]]:
    """Every Customer.io identifier a person may have: its ids, and each email we know."""
    ids = [{"id": i} for i in dict.fromkeys((person.distinct_id, distinct_id))]
    emails = (person.email_sent, person.email, *(i for i in (person.distinct_id, distinct_id) if is_email(i)))
    seen: set[str] = set()
    for email in emails:
        if email and email.lower() not in seen:
            seen.add(email.lower())
            ids.append({"email": email})
    return ids


def _delete_person(event: PostHogEvent, book: _Book, config: MappingConfig, result: Mapped) -> None:
    """Delete (or suppress) by every identifier we know, whether or not we created the person.

    Profiles made by the old plugin, another data dir or before a restore exist in
    Customer.io without our state saying so; a deletion must reach them too. PostHog
    deletes the person with all its distinct_ids: the person's ``epoch`` moves on, so
    every distinct_id merged into it is forgotten when next seen (:meth:`_Book.person`).
    """
    person = book.person(event.distinct_id)
    result.skipped = "delete_person"
    if not person.created:
        result.notes["delete_unknown_person"] += 1
    action = "suppress" if config.suppress_on_delete else "delete"
    for identifiers in known_identifiers(event.distinct_id, person):
        payload = {"type": "person", "identifiers": identifiers, "action": action}
        result.operations.append(Operation(person.distinct_id, payload))
    if not config.suppress_on_delete:
        _forget(person, epoch=person.epoch + 1)
        own = book.get(event.distinct_id)
        if own is not person:
            _forget(own)


def _device_operations(event: PostHogEvent, person: PersonState, config: MappingConfig) -> list[Operation]:
    operations = []
    for key, platform in DEVICE_TOKEN_PROPERTIES.items():
        token = event.set.get(key)
        removed = (key in event.set and token is None) or key in event.unset
        known = person.digests.get(f"\x00devprop:{key}")
        if removed and known is not None:  # token set to null or unset: the device goes away
            del person.digests[f"\x00devprop:{key}"]
            for digest_key in [k for k in person.digests if k.startswith("\x00device:") and k.endswith(f":{known}")]:
                del person.digests[digest_key]
            payload = {
                "type": "person",
                "identifiers": _identifiers(person, config),
                "action": "delete_device",
                "device": {"token": known},
            }
            operations.append(Operation(person.distinct_id, payload))
            continue
        if not isinstance(token, str) or not token.strip():
            continue
        platform = platform or _platform(event)
        digest_key = f"\x00device:{platform}:{token}"
        if platform is None or digest_key in person.digests:
            continue
        person.digests[digest_key] = "1"
        person.digests[f"\x00devprop:{key}"] = token
        device = {"token": token, "platform": platform, "last_used": event.timestamp_s}
        payload = {
            "type": "person",
            "identifiers": _identifiers(person, config),
            "action": "add_device",
            "device": device,
        }
        operations.append(Operation(person.distinct_id, payload))
    return operations


def _platform(event: PostHogEvent) -> str | None:
    # posthog-js sends $os; posthog-ios and posthog-android send $os_name
    props, update = event.properties, event.set
    os_name = str(props.get("$os") or props.get("$os_name") or update.get("$os") or update.get("$os_name") or "")
    os_name = os_name.lower()
    if os_name in ("ios", "ipados", "tvos", "watchos", "visionos"):
        return "ios"
    if os_name == "android":
        return "android"
    return None


# -- groups ----------------------------------------------------------------------------------
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


def _group_identify(event: PostHogEvent, config: MappingConfig, result: Mapped) -> None:
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


def _group_state_key(group_type: str, key: Any) -> str:
    """The state row remembering what a Hog-globals group's object was sent with."""
    return f"{INTERNAL_KEY_PREFIX}group:{group_type}:{key}"


def _hog_group_operations(event: PostHogEvent, book: _Book, config: MappingConfig, result: Mapped) -> list[Operation]:
    """Hog globals ``groups``: each mapped group's object, identified with its changed properties.

    What was sent is remembered per group (a state row keyed by :func:`_group_state_key`),
    so an object is identified again only when its properties change. The person's
    relationship to it comes from :func:`_relationship_operations` (see :func:`_event_groups`).
    """
    operations = []
    for group_type, (raw_key, properties) in event.groups.items():
        type_id = config.group_type_map.get(group_type)
        key = _group_key(raw_key)
        if type_id is None or key is None:
            continue  # counted with the relationship
        state = book.get(_group_state_key(group_type, raw_key))
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


def _relationship_operations(
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
            "identifiers": _identifiers(person, config),
            "action": "add_relationships",
            "cio_relationships": [{"identifiers": {"object_type_id": type_id, "object_id": key}}],
        }
        operations.append(Operation(person.distinct_id, payload, after=(_object_key(type_id, key),)))
    return operations


# -- events -----------------------------------------------------------------------------------
def _event_fields(event: PostHogEvent, config: MappingConfig, result: Mapped) -> tuple[str, str, dict[str, Any]]:
    """(action, name, data) of the event, with renames, filters and limits applied."""
    action, name = _event_action_and_name(event)
    if action == "event":
        name = config.event_name_map.get(name, name)
    if config.truncate and limits.utf8_len(name) > MAX_EVENT_NAME_BYTES:
        name = limits.truncate_utf8(name, MAX_EVENT_NAME_BYTES)
        result.notes["limits_truncated"] += 1
    data = {k: v for k, v in event.properties.items() if k not in PERSON_UPDATE_KEYS and config.keeps(k)}
    if config.convert_dates:
        data = {k: convert_dates(v) for k, v in data.items()}
    return action, name, data


def _event_op(
    person_key: str,
    payload: dict[str, Any],
    data: dict[str, Any],
    config: MappingConfig,
    result: Mapped,
    kind: Kind = "person",
) -> Operation:
    """The operation for an event payload, its data fitted to Customer.io's limits.

    The payload is encoded once; that text goes to the outbox as is. Only an event
    over the limits takes the slow path (drop the largest properties, encode again).
    """
    payload["attributes"] = data
    text = encode_payload(payload)
    if not config.truncate or len(text) <= _FAST_OP_CHARS:  # chars ≤ bytes ≤ 4 × chars: surely within
        return Operation(person_key, payload, text=text, kind=kind)
    size = len(text.encode())
    if size <= limits.MAX_OP_BYTES:
        return Operation(person_key, payload, text=text, kind=kind)
    del payload["attributes"]
    overhead = limits.json_len(payload) + 20
    fitted, dropped = limits.fit_event_data(data, min(limits.MAX_EVENT_DATA_BYTES, limits.MAX_OP_BYTES - overhead))
    result.notes["limits_truncated"] += len(data) - len(fitted)
    fitted["_truncated_properties"] = dropped
    payload["attributes"] = fitted
    return Operation(person_key, payload, kind=kind)


#: events with more properties than this have their data fitted before ingestion takes the writer
PREFIT_MIN_PROPERTIES = 1_000
#: room left for an event operation's fields other than its data when fitting ahead
_PREFIT_OVERHEAD = 2_000


def prefit_event(event: PostHogEvent, config: MappingConfig) -> tuple[PostHogEvent, int]:
    """An event with very many properties, its data already fitted to Customer.io's limits.

    Fitting is linear but not free (200,000 properties: about a second): ingestion calls this
    before its write transaction, so one wide event never holds the writer while every other
    request waits. Returns the event (unchanged when it fits or is small) and how many
    properties were dropped; :func:`_event_op` still checks the exact size.
    """
    if not config.truncate or len(event.properties) <= PREFIT_MIN_PROPERTIES:
        return event, 0
    data = {k: v for k, v in event.properties.items() if k not in PERSON_UPDATE_KEYS}
    fitted, dropped = limits.fit_event_data(data, limits.MAX_OP_BYTES - _PREFIT_OVERHEAD)
    if not dropped:
        return event, 0
    updates = {k: v for k, v in event.properties.items() if k in PERSON_UPDATE_KEYS}
    properties = {**fitted, "_truncated_properties": dropped, **updates}
    return dataclasses.replace(event, properties=properties), len(data) - len(fitted)


#: an operation this many characters long is under 32,000 UTF-8 bytes whatever its characters
_FAST_OP_CHARS = limits.MAX_OP_BYTES // 4


def _event_operation(
    event: PostHogEvent, state: PersonState, config: MappingConfig, identifies: list[Operation], result: Mapped
) -> Operation:
    action, name, data = _event_fields(event, config, result)
    # as this event's identify (the same batch: the identifiers it surely has), else the person's own
    identifiers = identifies[-1].payload["identifiers"] if identifies else _identifiers(state, config)
    payload: dict[str, Any] = {
        "type": "person",
        "identifiers": identifiers,
        "action": action,
        "name": name,
        "id": event_ulid(event),
        "timestamp": event.timestamp_s,
    }
    return _event_op(state.distinct_id, payload, data, config, result)


def _anonymous_event_operation(
    event: PostHogEvent, state: PersonState, config: MappingConfig, result: Mapped
) -> Operation:
    action, name, data = _event_fields(event, config, result)
    payload: dict[str, Any] = {
        "type": "anonymous",
        "action": action,
        "anonymous_id": state.distinct_id,
        "name": name,
        "id": event_ulid(event),
        "timestamp": event.timestamp_s,
    }
    return _event_op(state.distinct_id, payload, data, config, result, kind="anonymous")


def adopted_events(anonymous: Sequence[Operation], identifiers: dict[str, str], person_key: str) -> list[Operation]:
    """A visitor's still-queued anonymous events, as events of the person who identified.

    :func:`map_event` decides what is adopted (``Mapped.adopt``); this builds the
    person events that replace the queued ones (same action, name, dedupe ``id``,
    timestamp and data), ordered under ``person_key``. Other kinds are left out.
    """
    adopted = []
    for operation in anonymous:
        if operation.kind != "anonymous":
            continue
        old = operation.payload
        payload: dict[str, Any] = {
            "type": "person",
            "identifiers": identifiers,
            "action": old["action"],
            "name": old["name"],
        }
        for key in ("id", "timestamp", "attributes"):
            if key in old:
                payload[key] = old[key]
        adopted.append(Operation(person_key, payload, kind="person"))
    return adopted


def _event_action_and_name(event: PostHogEvent) -> tuple[str, str]:
    if event.event == "$pageview":
        return "page", page_name(_text_or(event.properties.get("$current_url"), event.event))
    if event.event == "$screen":
        return "screen", _text_or(event.properties.get("$screen_name"), event.event)
    return "event", event.event


def page_name(url: str) -> str:
    """A page event's name: the URL, without query and fragment if it is over 100 bytes.

    Customer.io limits event names to 100 bytes; marketing URLs with UTM parameters
    often exceed it. The full URL stays in the event data (``$current_url``).
    """
    if limits.utf8_len(url) <= MAX_EVENT_NAME_BYTES:
        return url
    short = url.split("#", 1)[0].split("?", 1)[0]
    return limits.truncate_utf8(short, MAX_EVENT_NAME_BYTES)


def _text_or(value: Any, fallback: str) -> str:
    return value if isinstance(value, str) and value.strip() else fallback
