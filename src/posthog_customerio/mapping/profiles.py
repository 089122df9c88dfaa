"""People's profiles: the identifies that carry what changed (first one creates the person), and deletes
or suppressions by every identifier we know (``SUPPRESS_ON_DELETE``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import limits
from ..events import PostHogEvent
from ..operations import Operation
from ..state import PersonState
from .attributes import profile_attributes, value_digest
from .book import Book, Mapped, forget
from .config import MappingConfig
from .identifiers import known_identifiers, person_identifiers
from .identity import email_of

__all__ = ["delete_person", "identify_operations"]


def identify_operations(
    event: PostHogEvent,
    state: PersonState,
    config: MappingConfig,
    result: Mapped,
    hold: frozenset[str] = frozenset(),
    after: tuple[str, ...] = (),
) -> list[Operation]:
    """The identifies for what changed; ``hold`` keys wait for a later call, ``after`` orders it."""
    attributes = profile_attributes(event, state, config)
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
        identifiers = person_identifiers(state, config)
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
    if email_of(event) is not None:
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


def delete_person(event: PostHogEvent, book: Book, config: MappingConfig, result: Mapped) -> None:
    """Delete (or suppress) by every identifier we know, whether or not we created the person.

    Profiles made by the old plugin, another data dir or before a restore exist in
    Customer.io without our state saying so; a deletion must reach them too. PostHog
    deletes the person with all its distinct_ids: the person's ``epoch`` moves on, so
    every distinct_id merged into it is forgotten when next seen (:meth:`Book.person`).
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
        forget(person, epoch=person.epoch + 1)
        own = book.get(event.distinct_id)
        if own is not person:
            forget(own)
