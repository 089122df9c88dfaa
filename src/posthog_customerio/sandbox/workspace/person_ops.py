"""Applying person operations: identify, delete, suppress and unsuppress, merge, devices, relationships.

The rules (Track API reference, https://docs.customer.io/integrations/api/track/ -- the operation in brackets):

* Identifiers are unique across profiles [identify]: "If the identifier in the path and request body belong to
  different people, your request may return 200 OK but produce an Attribute Update Failure"; identifiers change
  only through ``cio_id`` (or the email by id when "Allow updates to email using ID" is on); an unknown
  ``cio_id`` drops the request; an unknown path identifier with a body identifier of an existing person updates
  that person and assigns the path identifier.
* Suppress [suppress] deletes the profile and suppresses the path identifier and the person's id and email;
  unsuppress [unsuppress] frees the id and email together and does not recreate the profile.
* Merge [merge_customers]: a missing primary means "your request won't do anything" (200); the primary gets
  "attributes that are not set, or are empty, on the primary", the events and manual segments (here also the
  devices, relationships and the email when the primary has none).
* Deleting a person removes the person and their events (event ids stay seen).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..operations import Op
from .people import Person, write_attributes
from .suppressions import suppression_key

if TYPE_CHECKING:
    from .core import Workspace

__all__ = [
    "find_or_create",
    "person_add_device",
    "person_delete",
    "person_delete_device",
    "person_identify",
    "person_merge",
    "person_relationships",
    "person_suppress",
    "person_unsuppress",
    "remove_person",
]


def find_or_create(ws: Workspace, op: Op, who: tuple[str, str], now: float) -> Person | None:
    """The person, created if addressed by id/email; ``None`` (failure logged) for unknown cio_id."""
    person = ws.directory.find(who)
    if person is None:
        if who[0] == "cio_id":
            ws.records.fail(op, who, "no person has this cio_id", now)
            return None
        person = ws.directory.create(who, now)
    return person


def remove_person(ws: Workspace, person: Person) -> None:
    """Delete a person, their events, relationships and segment memberships."""
    ws.event_log.remove(person)
    ws.object_store.forget_person(person.cio_id)
    ws.segment_store.forget_person(person.cio_id)
    ws.directory.remove(person)


def person_identify(ws: Workspace, op: Op, now: float) -> None:
    """Create or update a person (see the identifier rules above)."""
    assert op.who is not None
    directory = ws.directory
    person = directory.find(op.who)
    if person is None and op.who[0] == "cio_id":
        # spec: "If the cio_id does not exist or belongs to a person who was deleted, we'll drop the request."
        ws.records.fail(op, op.who, "no person has this cio_id (request dropped)", now)
        return
    if person is None:
        person, failure = directory.body_owner(op)
        if failure is not None:
            ws.records.fail(op, op.who, failure, now)
            return
    if person is None and op.update_only:
        ws.records.fail(op, op.who, "no such person (not created: _update)", now)
        return
    conflict = directory.identifier_conflict(person, op, ws.allow_email_update_by_id)
    if conflict is not None:
        ws.records.fail(op, op.who, conflict, now)
        return
    if person is None:
        person = directory.create(op.who, now)
    elif op.who[0] != "cio_id":
        directory.set_identifier(person, *op.who)
    for kind, value in op.ids.items():
        directory.set_identifier(person, kind, value)
    write_attributes(person, op.attributes, op.timestamp, now)
    if op.anonymous_id:
        ws.event_log.attach(person, op.anonymous_id, now)
    ws.object_store.relate(person.cio_id, op.relationships, add=op.relationships_add, now=now)


def person_delete(ws: Workspace, op: Op, now: float) -> None:
    """Delete the person, if any."""
    assert op.who is not None
    person = ws.directory.find(op.who)
    if person is not None:
        remove_person(ws, person)


def person_suppress(ws: Workspace, op: Op, now: float) -> None:
    """Delete the profile and suppress the addressed identifier, plus the person's id and email.

    Spec ``suppress``: "Delete a customer profile and prevent the person's identifier(s) from being re-added
    to your workspace. Any future API calls or operations referencing the specified ID are ignored" and
    "both the person's email and ID are suppressed". An identifier nobody holds is suppressed too.
    """
    assert op.who is not None
    keys = []
    addressed = suppression_key(*op.who)
    if addressed is not None:
        keys.append(addressed)
    person = ws.directory.find(op.who)
    if person is not None:
        for kind, value in (("id", person.id), ("email", person.email)):
            key = None if value is None else suppression_key(kind, value)
            if key is not None and key not in keys:
                keys.append(key)
        remove_person(ws, person)
    ws.suppression_store.suppress(keys)


def person_unsuppress(ws: Workspace, op: Op, now: float) -> None:
    """Make the identifier (and the id/email suppressed with it) usable again; the profile stays deleted.

    Spec ``unsuppress``: "both the person's email and ID are unsuppressed"; "does not recreate the profile".
    """
    assert op.who is not None
    ws.suppression_store.unsuppress(op.who)


def person_add_device(ws: Workspace, op: Op, now: float) -> None:
    """Add (or update) a device of the person, created if new."""
    assert op.who is not None and op.device is not None
    person = find_or_create(ws, op, op.who, now)
    if person is not None:
        device = dict(op.device)
        if device["last_used"] is None:
            device["last_used"] = int(now)
        person.devices[device["id"]] = device


def person_delete_device(ws: Workspace, op: Op, now: float) -> None:
    """Remove a device of the person."""
    assert op.who is not None and op.device is not None
    person = ws.directory.find(op.who)
    if person is not None:
        person.devices.pop(op.device["id"], None)


def person_merge(ws: Workspace, op: Op, now: float) -> None:
    """Merge the secondary person into the primary (see the rule above)."""
    assert op.primary is not None and op.secondary is not None
    primary = ws.directory.find(op.primary)
    if primary is None:
        # spec merge_customers: "If the primary profile doesn't exist, your request won't do anything."
        ws.records.fail(op, op.primary, "the primary person does not exist (merge did nothing)", now)
        return
    secondary = ws.directory.find(op.secondary)
    if secondary is None or secondary is primary:
        return
    # merged: "Attributes that are not set, or are empty, on the primary", event history, manual segments
    for key, value in secondary.attributes.items():
        if key not in primary.attributes:
            primary.attributes[key] = value
            if key in secondary.attribute_timestamps:
                primary.attribute_timestamps[key] = secondary.attribute_timestamps[key]
    for device_id, device in secondary.devices.items():
        primary.devices.setdefault(device_id, device)
    ws.object_store.merge_person(secondary.cio_id, primary.cio_id)
    ws.segment_store.merge_person(secondary.cio_id, primary.cio_id)
    ws.event_log.move(secondary, primary)
    email = secondary.email
    remove_person(ws, secondary)
    if primary.email is None and email is not None:
        ws.directory.set_identifier(primary, "email", email)


def person_relationships(ws: Workspace, op: Op, now: float) -> None:
    """Add (the person created if new) or delete the person's relationships to objects."""
    assert op.who is not None
    adding = op.action == "add_relationships"
    person = find_or_create(ws, op, op.who, now) if adding else ws.directory.find(op.who)
    if person is not None:
        ws.object_store.relate(person.cio_id, op.relationships, adding, now)
