"""The mapping of one event: :func:`map_event` puts the concerns together (identity, skips, profiles,
devices, groups, events).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from ..events import PostHogEvent
from ..state import PersonState
from .activity import is_customerio_activity
from .attributes import profile_attributes
from .book import Book, Mapped
from .config import MappingConfig
from .devices import device_operations
from .events import anonymous_event_operation, event_operation
from .groups import group_identify, group_state_key, hog_group_operations, relationship_operations
from .identity import (
    ALIAS_EVENTS,
    has_anonymous_markers,
    is_anonymous,
    merge_identities,
    merge_operation,
    other_identity,
    own_identity,
    passes_anonymous_filter,
    remember,
    survivor,
)
from .profiles import delete_person, identify_operations

__all__ = ["PERSON_UPDATE_EVENTS", "involved_distinct_ids", "map_event"]


#: Events that only update the person: never forwarded as Customer.io events.
PERSON_UPDATE_EVENTS = frozenset({"$set", "$set_once"})


def involved_distinct_ids(event: PostHogEvent) -> list[str]:
    """The distinct_ids whose state :func:`map_event` may read or change."""
    ids = [event.distinct_id]
    other = other_identity(event)
    if other is not None:
        ids.append(other)
    ids.extend(group_state_key(group_type, key) for group_type, (key, _) in event.groups.items())
    return ids


def map_event(event: PostHogEvent, states: Mapping[str, PersonState], config: MappingConfig) -> Mapped:
    """Map one event to Customer.io operations, given the remembered states.

    ``states`` holds the known states of :func:`involved_distinct_ids` and of the
    people they were merged into (absent = never seen). It is not modified; changed
    states are returned in ``Mapped.states``.
    """
    result = Mapped()
    if config.skip_customerio_activity and is_customerio_activity(event.properties):
        result.skipped = "customerio_activity"  # captured by us from Customer.io: never sent back (no loop)
        return result
    book = Book(states, result)
    if event.event == "$groupidentify":
        group_identify(event, config, result)
        return result
    if event.properties.get("$process_person_profile") is False and (event.set or event.set_once or event.unset):
        # PostHog drops a personless event's person updates (ingestion ``normalizeProcessPerson``)
        event = dataclasses.replace(event, set={}, set_once={}, unset=())
    if event.event == "$delete_person":
        delete_person(event, book, config, result)
        return result
    confirmed = own_identity(event, book, config, result)
    person = book.person(event.distinct_id)
    if not person.identified and not person.created and has_anonymous_markers(event):
        person.anonymous_seen = True
    person = survivor(event, person, book, config)
    remember(event, person)
    merged = merge_identities(event, person, book, config, result) or confirmed
    skip = _skip_reason(event, person, config)
    update_only = skip == "person_update"  # $set / $set_once: the person changes, no event
    if (skip is None or update_only) and config.anonymous_events == "anonymous" and is_anonymous(event, person):
        if skip is None:
            result.operations.append(anonymous_event_operation(event, person, config, result))
            person.anonymous_sent = True
        person.pending.update(profile_attributes(event, person, config))
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
    identifies = identify_operations(event, person, config, result, hold=hold)
    result.operations.extend(identifies)
    if merged is not None:
        result.operations.append(merge_operation(person, merged, config))
        if hold:
            result.operations.extend(identify_operations(event, person, config, result, after=(merged.distinct_id,)))
    if skip is None or update_only:
        result.operations.extend(device_operations(event, person, config))
    if skip is None:
        result.operations.extend(hog_group_operations(event, book, config, result))
        result.operations.extend(relationship_operations(event, person, config, result))
        result.operations.append(event_operation(event, person, config, identifies, result))
    return result


def _skip_reason(event: PostHogEvent, person: PersonState, config: MappingConfig) -> str | None:
    if event.event in ALIAS_EVENTS:
        return "alias"
    if event.event in PERSON_UPDATE_EVENTS and passes_anonymous_filter(person, config.anonymous_mode):
        return "person_update"
    if config.events_to_send and event.event not in config.events_to_send:
        return "not_in_allowlist"
    if config.events_to_skip and config.skips(event.event):
        return "events_to_skip"
    if not passes_anonymous_filter(person, config.anonymous_mode):
        return "anonymous_user"
    return None
