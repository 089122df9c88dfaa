"""Applying the operations that are not about one person: objects, anonymous events, deliveries, events."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..operations import Op
from .person_ops import find_or_create

if TYPE_CHECKING:
    from .core import Workspace

__all__ = [
    "anonymous_event",
    "delivery_event",
    "object_delete",
    "object_identify",
    "object_relationships",
    "person_event",
]


def person_event(ws: Workspace, op: Op, now: float) -> None:
    """A person's event (the person created if new), unless its id is a duplicate."""
    assert op.who is not None
    if ws.event_log.already_seen(op.event_id):
        return
    person = find_or_create(ws, op, op.who, now)
    if person is None or ws.event_log.is_duplicate(op.event_id):
        return
    ws.event_log.add(op, person, now)


def anonymous_event(ws: Workspace, op: Op, now: float) -> None:
    """An anonymous event, kept until an identify attaches it."""
    ws.event_log.add_anonymous(op, now)


def delivery_event(ws: Workspace, op: Op, now: float) -> None:
    """A v2 ``delivery`` operation: recorded as a delivery metric."""
    assert op.who is not None
    ws.records.metric(
        {
            "source": "v2",
            "delivery_id": op.who[1],
            "metric": op.name,
            "timestamp": op.timestamp,
            "device_token": op.attributes.get("device_token"),
            "attributes": dict(op.attributes),
            "received_at": now,
        }
    )


def object_identify(ws: Workspace, op: Op, now: float) -> None:
    """Create or update an object, and relate the people it names."""
    assert op.who is not None
    ws.object_store.identify(op.who, op.attributes, now)
    _object_people(ws, op, add=True, now=now)


def object_delete(ws: Workspace, op: Op, now: float) -> None:
    """Delete an object and its relationships."""
    assert op.who is not None
    ws.object_store.delete(op.who)


def object_relationships(ws: Workspace, op: Op, now: float) -> None:
    """Add (the object created if new) or delete an object's relationships to people."""
    assert op.who is not None
    adding = op.action == "add_relationships"
    if adding:
        ws.object_store.ensure(op.who, now)
    _object_people(ws, op, add=adding, now=now)


def _object_people(ws: Workspace, op: Op, add: bool, now: float) -> None:
    """Relate (or unrelate) the people an object operation names; a suppressed one is ignored."""
    assert op.who is not None
    for who, attributes in op.relationships:
        if ws.suppression_store.is_suppressed(who):
            ws.suppression_store.ignore(op, who, now)
            continue
        person = find_or_create(ws, op, who, now) if add else ws.directory.find(who)
        if person is not None:
            ws.object_store.relate(person.cio_id, [(op.who, attributes)], add, now)
