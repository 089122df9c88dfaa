"""Pure mapping: a PostHog event plus remembered person state -> Customer.io operations.

No I/O happens here. Every option and every Customer.io rule lives in this package:

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

The package is split along these concerns (each name is re-exported here):

* :mod:`.config` — the options (:class:`MappingConfig`);
* :mod:`.book` — what one event reads and produces (:class:`Mapped`, the states' :class:`~.book.Book`);
* :mod:`.core` — :func:`map_event`, which puts the concerns below together, and what it skips;
* :mod:`.identity` — identified or anonymous, and merges;
* :mod:`.identifiers` — how Customer.io knows a person (:func:`person_identifiers`, :func:`known_identifiers`);
* :mod:`.attributes` — person attributes, dates, change digests;
* :mod:`.profiles` — identifies and deletes;
* :mod:`.devices` — push devices;
* :mod:`.groups` — groups as objects and relationships;
* :mod:`.events` — event operations, limits, adopted anonymous events;
* :mod:`.persons` — a PostHog person read by ``sync-persons`` (:func:`map_person`).
"""

from __future__ import annotations

from .attributes import PUSH_SUBSCRIPTION_PREFIX, convert_dates, iso_datetime_seconds, value_digest
from .book import Mapped
from .cohorts import CohortTarget, ensure_profile, member_joined, member_left
from .config import DEFAULT_EVENTS_TO_SKIP, AnonymousEvents, AnonymousMode, MappingConfig
from .core import PERSON_UPDATE_EVENTS, involved_distinct_ids, map_event
from .devices import DEVICE_TOKEN_PROPERTIES
from .events import (
    MAX_EVENT_NAME_BYTES,
    PERSON_UPDATE_KEYS,
    PREFIT_MIN_PROPERTIES,
    adopted_events,
    page_name,
    prefit_event,
)
from .groups import INTERNAL_KEY_PREFIX
from .identifiers import is_email, known_identifiers, person_identifiers
from .identity import ALIAS_EVENTS, IDENTIFYING_EVENTS, ILLEGAL_DISTINCT_IDS
from .persons import PersonSnapshot, map_person

__all__ = [
    "ALIAS_EVENTS",
    "DEFAULT_EVENTS_TO_SKIP",
    "DEVICE_TOKEN_PROPERTIES",
    "IDENTIFYING_EVENTS",
    "ILLEGAL_DISTINCT_IDS",
    "INTERNAL_KEY_PREFIX",
    "MAX_EVENT_NAME_BYTES",
    "PERSON_UPDATE_EVENTS",
    "PERSON_UPDATE_KEYS",
    "PREFIT_MIN_PROPERTIES",
    "PUSH_SUBSCRIPTION_PREFIX",
    "AnonymousEvents",
    "AnonymousMode",
    "CohortTarget",
    "Mapped",
    "MappingConfig",
    "PersonSnapshot",
    "adopted_events",
    "convert_dates",
    "ensure_profile",
    "involved_distinct_ids",
    "is_email",
    "iso_datetime_seconds",
    "known_identifiers",
    "map_event",
    "map_person",
    "member_joined",
    "member_left",
    "page_name",
    "person_identifiers",
    "prefit_event",
    "value_digest",
]
