"""The workspace's events: people's events, anonymous events (attached on identify), and event-id dedupe.

A repeated event ``id`` (case-insensitive) is a no-op: it creates nobody. Deleting a person removes their
events, but the dedupe memory of event ids is kept, so a replayed event id stays a duplicate. Anonymous
events attach on identify when they were received in the last 30 days (a backfill of old events still
attaches, as the real workspace does for events it received recently).
"""

from __future__ import annotations

import collections
import itertools
from typing import Any

from ..operations import Op
from .people import Person

__all__ = ["ANONYMOUS_WINDOW_S", "EventLog"]

ANONYMOUS_WINDOW_S = 30 * 86_400


class EventLog:
    """Person and anonymous events by sequence, the unattached ones by anonymous_id, the event ids seen."""

    def __init__(self) -> None:
        self._events: dict[int, dict[str, Any]] = {}  # person and anonymous events, by sequence
        self._seq = itertools.count()
        self._anonymous: dict[str | None, list[int]] = {}  # unattached, by anonymous_id
        self._seen_ids: set[str] = set()
        #: ``events`` (people's), ``anonymous_events`` (unattached), ``duplicates``
        self.counts: collections.Counter[str] = collections.Counter()

    def person_events(self) -> list[dict[str, Any]]:
        """Events attributed to people."""
        return [dict(event) for event in self._events.values() if event["person"] is not None]

    def anonymous_events(self) -> list[dict[str, Any]]:
        """Anonymous events not (yet) attached to a person."""
        return [dict(event) for event in self._events.values() if event["person"] is None]

    def of(self, person: Person) -> list[dict[str, Any]]:
        """One person's events."""
        return [dict(self._events[key]) for key in person.event_keys]

    def already_seen(self, event_id: str | None) -> bool:
        """Whether this event id was seen (then it counts as a duplicate); it is not remembered here."""
        if event_id is not None and event_id.upper() in self._seen_ids:
            self.counts["duplicates"] += 1
            return True
        return False

    def is_duplicate(self, event_id: str | None) -> bool:
        """Whether this event id was seen (a duplicate, counted); else it is remembered from now on."""
        if event_id is None:
            return False
        key = event_id.upper()
        if key in self._seen_ids:
            self.counts["duplicates"] += 1
            return True
        self._seen_ids.add(key)
        return False

    def _store(self, op: Op, cio_id: str | None, now: float) -> int:
        key = next(self._seq)
        self._events[key] = {
            "person": cio_id,
            "anonymous_id": op.anonymous_id,
            "type": op.action,
            "name": op.name,
            "id": op.event_id,
            "timestamp": op.timestamp,
            "data": op.attributes,
            "received_at": now,
        }
        return key

    def add(self, op: Op, person: Person, now: float) -> None:
        """Store an event of ``person`` (its id already checked)."""
        person.event_keys.append(self._store(op, person.cio_id, now))
        self.counts["events"] += 1

    def add_anonymous(self, op: Op, now: float) -> None:
        """Store an anonymous event, unless its id is a duplicate."""
        if self.is_duplicate(op.event_id):
            return
        key = self._store(op, None, now)
        self._anonymous.setdefault(op.anonymous_id, []).append(key)
        self.counts["anonymous_events"] += 1

    def attach(self, person: Person, anonymous_id: str, now: float) -> None:
        """Attach this anonymous_id's events of the last 30 days to ``person``."""
        keys = self._anonymous.pop(anonymous_id, None)
        if not keys:
            return
        cutoff, kept = now - ANONYMOUS_WINDOW_S, []
        for key in keys:
            event = self._events[key]
            if event["received_at"] >= cutoff:
                event["person"] = person.cio_id
                person.event_keys.append(key)
            else:
                kept.append(key)
        if kept:
            self._anonymous[anonymous_id] = kept
        moved = len(keys) - len(kept)
        self.counts["anonymous_events"] -= moved
        self.counts["events"] += moved
        person.event_keys.sort()

    def remove(self, person: Person) -> None:
        """Delete a person's events (their ids stay seen)."""
        for key in person.event_keys:
            del self._events[key]
        self.counts["events"] -= len(person.event_keys)

    def move(self, secondary: Person, primary: Person) -> None:
        """Merge: the secondary's event history becomes the primary's."""
        for key in secondary.event_keys:
            self._events[key]["person"] = primary.cio_id
        primary.event_keys.extend(secondary.event_keys)
        primary.event_keys.sort()
        secondary.event_keys = []
