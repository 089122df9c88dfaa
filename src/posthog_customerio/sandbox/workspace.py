"""The sandbox's Customer.io workspace: people, identifiers, suppressions, events, anonymous events, objects,
relationships, manual segments, merges, delivery metrics and form submissions, in memory.

:class:`Workspace` applies validated :class:`~.operations.Op` (from :mod:`.track_v1` / :mod:`.track_v2`) the way
a Customer.io workspace does. The rules it reproduces (Track API reference,
https://docs.customer.io/integrations/api/track/ -- the OpenAPI operation named in brackets; the rule is also
cited where it is implemented):

* Suppress [suppress, .../track-customers/suppress/] deletes the profile and suppresses the path identifier
  and the person's id and email; "any future API calls or operations referencing the specified ID are
  ignored": answered 200, not applied (``/_sandbox/ignored``). Unsuppress [unsuppress] frees the id and
  email together and does not recreate the profile. See also
  https://docs.customer.io/journeys/deleting-users/.
* Identifiers are unique across profiles [identify, .../track-customers/identify/]: "If the identifier in
  the path and request body belong to different people, your request may return 200 OK but produce an
  Attribute Update Failure"; identifiers change only through ``cio_id`` (or the email by id when the
  workspace setting "Allow updates to email using ID" is on); an unknown ``cio_id`` drops the request; an
  unknown path identifier with a body identifier of an existing person updates that person and assigns
  the path identifier.
* ``_timestamp``/``timestamp`` is "when the attribute update occurred" and orders updates: an older write
  never overwrites a newer value (an untimestamped write is stamped with its receipt time).
* Merge [merge_customers]: a missing primary means "your request won't do anything" (200); the primary gets
  "attributes that are not set, or are empty, on the primary", the events and manual segments.
* Push metrics [pushMetrics, .../track-events/pushmetrics/], metrics [metrics] and v2 ``delivery``
  operations [delivery_operations, .../tag/track_v2/] are recorded.

Behaviour choices where Customer.io is vague:

* Deleting a person removes the person and their events; the dedupe memory of
  event ids is kept, so a replayed event id stays a duplicate.
* A repeated event ``id`` (case-insensitive) is a no-op: it creates nobody.
* ``id``/``email`` are identifiers, stored on the person, not in ``attributes``;
  ``null``/``""`` for them is ignored.
* Anonymous events attach on identify when they were received in the last 30
  days (a backfill of old events still attaches, as the real workspace does for
  events it received recently).
* Merge also moves devices, relationships and the email (when the primary has none).
* Manual segments exist once people are added (no App API here to create them); the
  sandbox sends no messages, so delivery metrics and ``/unsubscribe`` change no profile.
"""

from __future__ import annotations

import collections
import itertools
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .operations import EMAIL_RE, Op, OpError, Relation

MAX_LOGGED_FAILURES = 100_000
MAX_LOGGED_RECORDS = 200_000
ANONYMOUS_WINDOW_S = 30 * 86_400


@dataclass(slots=True)
class _Person:
    """A profile: identifiers, attributes (with the timestamp of each last write), devices, its events."""

    cio_id: str
    id: str | None
    email: str | None
    created_at: int
    attributes: dict[str, Any] = field(default_factory=dict)
    attribute_timestamps: dict[str, int] = field(default_factory=dict)
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    event_keys: list[int] = field(default_factory=list)


class Workspace:
    """The in-memory workspace: people, events, anonymous events, objects, suppressions, segments, metrics, forms.

    Thread-safe: every read and write holds one lock, briefly.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: The workspace setting "Allow updates to email using ID": on, an identify addressed by id may change the
        #: person's email; off, only a ``cio_id`` identify may (spec ``identify``).
        self.allow_email_update_by_id = True
        self._clear()
        self._handlers: dict[tuple[str, str], Callable[[Op, float], None]] = {
            ("person", "identify"): self._person_identify,
            ("person", "delete"): self._person_delete,
            ("person", "event"): self._person_event,
            ("person", "page"): self._person_event,
            ("person", "screen"): self._person_event,
            ("person", "add_device"): self._person_add_device,
            ("person", "delete_device"): self._person_delete_device,
            ("person", "merge"): self._person_merge,
            ("person", "suppress"): self._person_suppress,
            ("person", "unsuppress"): self._person_unsuppress,
            ("person", "add_relationships"): self._person_relationships,
            ("person", "delete_relationships"): self._person_relationships,
            ("object", "identify"): self._object_identify,
            ("object", "delete"): self._object_delete,
            ("object", "add_relationships"): self._object_relationships,
            ("object", "delete_relationships"): self._object_relationships,
            ("anonymous", "event"): self._anonymous_event,
            ("anonymous", "page"): self._anonymous_event,
            ("anonymous", "screen"): self._anonymous_event,
            ("delivery", "event"): self._delivery_event,
        }

    def _clear(self) -> None:
        """(Re)initialise everything; caller holds the lock or is ``__init__``."""
        self._people: dict[str, _Person] = {}
        self._by_id: dict[str, str] = {}
        self._by_email: dict[str, str] = {}
        self._events: dict[int, dict[str, Any]] = {}  # person and anonymous events, by sequence
        self._event_seq = itertools.count()
        self._anonymous: dict[str | None, list[int]] = {}  # unattached, by anonymous_id
        self._seen_event_ids: set[str] = set()
        self._objects: dict[tuple[str, str], dict[str, Any]] = {}
        self._relations: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}  # object -> cio_id -> attrs
        self._failures: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_LOGGED_FAILURES)
        # suppressed identifiers ("id", value) / ("email", lowercased) -> suppression number; the numbers'
        # identifier sets (a person's id and email are suppressed, and unsuppressed, together)
        self._suppressed: dict[tuple[str, str], int] = {}
        self._suppressions: dict[int, list[tuple[str, str]]] = {}
        self._suppression_seq = itertools.count(1)
        self._ignored: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_LOGGED_FAILURES)
        self._metrics: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_LOGGED_RECORDS)
        self._forms: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_LOGGED_RECORDS)
        self._segments: dict[str, dict[str, None]] = {}  # manual segment id -> cio_ids (ordered)
        self._counts: collections.Counter[str] = collections.Counter()

    # ----------------------------------------------------------------- public reads

    def people(self) -> list[dict[str, Any]]:
        """Every person, in creation order."""
        with self._lock:
            return [self._person_view(person) for person in self._people.values()]

    def person(self, identifier: str) -> dict[str, Any] | None:
        """One person by id, email (case-insensitive) or cio_id, with events; else ``None``."""
        with self._lock:
            person = self._resolve(identifier)
            if person is None:
                return None
            view = self._person_view(person)
            view["attribute_timestamps"] = dict(person.attribute_timestamps)
            view["relationships"] = self._relationships_of(person.cio_id)
            view["events"] = [dict(self._events[key]) for key in person.event_keys]
            return view

    def events(self, person: str | None = None) -> list[dict[str, Any]]:
        """Events attributed to people (all, or one person's by identifier)."""
        with self._lock:
            if person is None:
                return [dict(event) for event in self._events.values() if event["person"] is not None]
            found = self._resolve(person)
            return [] if found is None else [dict(self._events[key]) for key in found.event_keys]

    def anonymous_events(self) -> list[dict[str, Any]]:
        """Anonymous events not (yet) attached to a person."""
        with self._lock:
            return [dict(event) for event in self._events.values() if event["person"] is None]

    def objects(self) -> list[dict[str, Any]]:
        """Objects with their relationships to people."""
        with self._lock:
            return [
                {
                    **obj,
                    "attributes": dict(obj["attributes"]),
                    "relationships": [
                        {"person": cio_id, "attributes": dict(attrs)}
                        for cio_id, attrs in self._relations.get(key, {}).items()
                    ],
                }
                for key, obj in self._objects.items()
            ]

    def suppressions(self) -> list[dict[str, Any]]:
        """Suppressed identifiers, one entry per suppression: ``{"id": ..., "email": ...}`` (absent = none)."""
        with self._lock:
            return [dict(keys) for keys in self._suppressions.values()]

    def ignored(self) -> list[dict[str, Any]]:
        """Operations accepted with 200 but ignored because they reference a suppressed identifier."""
        with self._lock:
            return [dict(entry) for entry in self._ignored]

    def delivery_metrics(self) -> list[dict[str, Any]]:
        """Reported delivery metrics (v1 ``/push/events``, ``/metrics``, ``/unsubscribe``, v2 ``delivery``)."""
        with self._lock:
            return [dict(entry) for entry in self._metrics]

    def form_submissions(self) -> list[dict[str, Any]]:
        """Form submissions (``/api/v1/forms/{form_id}/submit``) that identified a person."""
        with self._lock:
            return [dict(entry) for entry in self._forms]

    def segments(self) -> dict[str, list[str]]:
        """Manual segments: segment id -> member cio_ids."""
        with self._lock:
            return {segment: list(members) for segment, members in self._segments.items()}

    def attribute_update_failures(self) -> list[dict[str, Any]]:
        """Identifies (and other ops) accepted with 200 but not applied."""
        with self._lock:
            return [dict(entry) for entry in self._failures]

    def stats(self) -> dict[str, Any]:
        """Counters: people, events, duplicates, anonymous events, failures, suppressions, ..."""
        with self._lock:
            counts = self._counts
            return {
                "people": len(self._people),
                "events": counts["events"],
                "duplicates": counts["duplicates"],
                "anonymous_events": counts["anonymous_events"],
                "attribute_update_failures": counts["failures"],
                "attribute_update_failure_details": list(self._failures)[-100:],
                "suppressed_identifiers": len(self._suppressed),
                "ignored_suppressed": counts["ignored_suppressed"],
                "delivery_metrics": len(self._metrics),
                "objects": len(self._objects),
                "relationships": sum(len(people) for people in self._relations.values()),
            }

    # ----------------------------------------------------------------- writes

    def reset(self) -> None:
        """Forget every person, event, object, suppression, segment, metric and form (the settings stay)."""
        with self._lock:
            self._clear()

    def apply(self, op: Op) -> None:
        """Apply one operation (raises :class:`OpError` for state-dependent errors)."""
        with self._lock:
            self._run(op, time.time())

    def apply_batch(self, ops: list[tuple[int, Op]]) -> list[dict[str, Any]]:
        """Apply indexed operations in order; the v2 errors of those that failed."""
        errors = []
        now = time.time()
        with self._lock:
            for index, op in ops:
                try:
                    self._run(op, now)
                except OpError as exc:
                    errors.append(exc.as_dict(index))
        return errors

    def record_metric(self, source: str, record: dict[str, Any]) -> None:
        """Store a delivery metric reported through a v1 endpoint."""
        with self._lock:
            self._metrics.append({"source": source, **record, "received_at": time.time()})

    def submit_form(self, form_id: str, op: Op, fields: dict[str, Any]) -> None:
        """``/forms/{form_id}/submit``: apply the respondent's identify (created if new) and record the fields."""
        with self._lock:
            now = time.time()
            self._run(op, now)
            self._forms.append({"form_id": form_id, "data": fields, "received_at": now})

    def segment_members(self, segment_id: str, ids: list[Any], id_type: str, add: bool) -> None:
        """Add people to (or remove them from) a manual segment; unknown people and mistyped values are ignored."""
        with self._lock:
            members = self._segments.setdefault(segment_id, {})
            for value in ids:
                if not isinstance(value, str) or not value:
                    continue
                if id_type == "email" and not EMAIL_RE.fullmatch(value):
                    continue  # "values in the ids array that don't match the id_type" are ignored
                person = self._find((id_type, value))
                if person is None:
                    continue
                if add:
                    members[person.cio_id] = None
                else:
                    members.pop(person.cio_id, None)

    # ----------------------------------------------------------------- internals (lock held)

    def _run(self, op: Op, now: float) -> None:
        """Apply ``op`` unless it references a suppressed identifier (then it is ignored: still 200)."""
        if op.type == "person" and op.action != "unsuppress":
            blocked = self._suppressed_reference(op)
            if blocked is not None:
                self._counts["ignored_suppressed"] += 1
                self._ignored.append(
                    {
                        "time": now,
                        "type": op.type,
                        "action": op.action,
                        "identifiers": {blocked[0]: blocked[1]},
                        "message": f"{blocked[0]} is suppressed",
                    }
                )
                return
        self._handlers[(op.type, op.action)](op, now)

    def _suppression_key(self, kind: str, value: str) -> tuple[str, str] | None:
        if kind == "id":
            return ("id", value)
        if kind == "email":
            return ("email", value.lower())
        return None

    def _suppressed_reference(self, op: Op) -> tuple[str, str] | None:
        """The first suppressed identifier ``op`` addresses or sets, else ``None``."""
        candidates = [op.who, op.primary, op.secondary, *op.ids.items()]
        for candidate in candidates:
            if candidate is None:
                continue
            key = self._suppression_key(*candidate)
            if key is not None and key in self._suppressed:
                return candidate
        return None

    def _person_view(self, person: _Person) -> dict[str, Any]:
        return {
            "cio_id": person.cio_id,
            "id": person.id,
            "email": person.email,
            "attributes": dict(person.attributes),
            "created_at": person.created_at,
            "devices": [dict(device) for device in person.devices.values()],
            "event_count": len(person.event_keys),
        }

    def _relationships_of(self, cio_id: str) -> list[dict[str, Any]]:
        return [
            {"object_type_id": key[0], "object_id": key[1], "attributes": dict(people[cio_id])}
            for key, people in self._relations.items()
            if cio_id in people
        ]

    def _resolve(self, identifier: str) -> _Person | None:
        cio_id = self._by_id.get(identifier) or self._by_email.get(identifier.lower())
        if cio_id is None and identifier not in self._people and identifier.startswith("cio_"):
            cio_id = identifier[4:]
        return self._people.get(cio_id or identifier)

    def _find(self, who: tuple[str, str]) -> _Person | None:
        kind, value = who
        if kind == "id":
            cio_id = self._by_id.get(value)
        elif kind == "email":
            cio_id = self._by_email.get(value.lower())
        else:
            cio_id = value
        return None if cio_id is None else self._people.get(cio_id)

    def _create(self, who: tuple[str, str], now: float) -> _Person:
        cio_id = secrets.token_hex(6)
        while cio_id in self._people:
            cio_id = secrets.token_hex(6)
        kind, value = who
        person = _Person(cio_id, None, None, int(now))
        self._people[cio_id] = person
        self._set_identifier(person, kind, value)
        return person

    def _find_or_create(self, op: Op, who: tuple[str, str], now: float) -> _Person | None:
        """The person, created if addressed by id/email; ``None`` (failure logged) for unknown cio_id."""
        person = self._find(who)
        if person is None:
            if who[0] == "cio_id":
                self._fail(op, who, "no person has this cio_id", now)
                return None
            person = self._create(who, now)
        return person

    def _set_identifier(self, person: _Person, kind: str, value: str) -> None:
        if kind == "id" and person.id != value:
            if person.id is not None:
                self._by_id.pop(person.id, None)
            person.id = value
            self._by_id[value] = person.cio_id
        elif kind == "email" and person.email != value:
            if person.email is not None:
                self._by_email.pop(person.email.lower(), None)
            person.email = value
            self._by_email[value.lower()] = person.cio_id

    def _fail(self, op: Op, who: tuple[str, str] | None, message: str, now: float) -> None:
        """Record an attribute update failure (the request still answers 200)."""
        self._counts["failures"] += 1
        identifiers = {who[0]: who[1]} if who else None
        self._failures.append({"time": now, "action": op.action, "identifiers": identifiers, "message": message})

    def _owner(self, kind: str, value: str) -> str | None:
        """The cio_id holding identifier ``value`` of ``kind`` (id or email), else ``None``."""
        return self._by_id.get(value) if kind == "id" else self._by_email.get(value.lower())

    def _identifier_conflict(self, person: _Person | None, op: Op) -> str | None:
        """Why ``op`` may not give ``person`` its identifiers (``None``: it may).

        Identifiers are unique across profiles; after they are set, only a request addressing the person by
        ``cio_id`` may change them (spec ``identify``) -- except the email when addressed by id, if the
        workspace setting "Allow updates to email using ID" is on (:attr:`Workspace.allow_email_update_by_id`).
        """
        assert op.who is not None
        addressed_kind = op.who[0]
        for kind, value in op.ids.items():
            owner = self._owner(kind, value)
            if owner is not None and (person is None or owner != person.cio_id):
                return f"{kind} {value!r} belongs to another person"
            if addressed_kind == kind:
                current: str | None = op.who[1]
            else:
                current = None if person is None else (person.id if kind == "id" else person.email)
            if current is None or addressed_kind == "cio_id":
                continue
            same = value == current if kind == "id" else value.lower() == current.lower()
            if same:
                continue
            if kind == "email" and addressed_kind == "id" and self.allow_email_update_by_id:
                continue
            return f"cannot change the {kind} of a person addressed by {addressed_kind} (use cio_id)"
        return None

    def _body_owner(self, op: Op, now: float) -> tuple[_Person | None, bool]:
        """For an identify whose path identifier nobody holds: the person a body identifier names, if any.

        Spec ``identify``: "If the identifier in the path does not belong to a person but you use an identifier in
        your request body that does belong to a person, your request updates the person and assigns them the
        identifier in the path." ``(person, ok)``; ``ok`` is False when that is a failure (already recorded).
        """
        assert op.who is not None
        owners = {owner for owner in (self._owner(kind, value) for kind, value in op.ids.items()) if owner}
        if not owners:
            return None, True
        if len(owners) > 1:
            self._fail(op, op.who, "the identifiers in the request belong to different people", now)
            return None, False
        person = self._people[owners.pop()]
        kind = op.who[0]
        if (person.id if kind == "id" else person.email) is not None:
            self._fail(op, op.who, f"the person holding the body identifiers already has another {kind}", now)
            return None, False
        return person, True

    def _person_identify(self, op: Op, now: float) -> None:
        assert op.who is not None
        person = self._find(op.who)
        if person is None and op.who[0] == "cio_id":
            # spec: "If the cio_id does not exist or belongs to a person who was deleted, we'll drop the request."
            self._fail(op, op.who, "no person has this cio_id (request dropped)", now)
            return
        if person is None:
            person, ok = self._body_owner(op, now)
            if not ok:
                return
        if person is None and op.update_only:
            self._fail(op, op.who, "no such person (not created: _update)", now)
            return
        conflict = self._identifier_conflict(person, op)
        if conflict is not None:
            self._fail(op, op.who, conflict, now)
            return
        if person is None:
            person = self._create(op.who, now)
        elif op.who[0] != "cio_id":
            self._set_identifier(person, *op.who)
        for kind, value in op.ids.items():
            self._set_identifier(person, kind, value)
        self._write_attributes(person, op.attributes, op.timestamp, now)
        if op.anonymous_id:
            self._attach_anonymous(person, op.anonymous_id, now)
        self._relate(person.cio_id, op.relationships, add=op.relationships_add, now=now)

    def _write_attributes(
        self,
        person: _Person,
        attributes: dict[str, Any],
        timestamp: int | None,
        now: float,
    ) -> None:
        """Set (or remove, for null/"") attributes, honouring per-attribute timestamps.

        ``_timestamp`` (v1) / ``timestamp`` (v2) is "when the attribute update occurred" and orders updates sent
        in rapid succession (spec ``identify``): a value never yields to an older update. An update without one
        occurred when it was received, so it is stamped with the receipt time.
        """
        current, stamps = person.attributes, person.attribute_timestamps
        stamp = int(now) if timestamp is None else timestamp
        for key, value in attributes.items():
            last = stamps.get(key)
            if last is not None and stamp < last:
                continue
            stamps[key] = stamp
            if value is None or (isinstance(value, str) and not value):
                current.pop(key, None)
            else:
                current[key] = value
        created_at = current.get("created_at")
        if isinstance(created_at, int) and not isinstance(created_at, bool):
            person.created_at = created_at

    def _attach_anonymous(self, person: _Person, anonymous_id: str, now: float) -> None:
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
        self._counts["anonymous_events"] -= moved
        self._counts["events"] += moved
        person.event_keys.sort()

    def _is_duplicate(self, event_id: str | None) -> bool:
        if event_id is None:
            return False
        key = event_id.upper()
        if key in self._seen_event_ids:
            self._counts["duplicates"] += 1
            return True
        self._seen_event_ids.add(key)
        return False

    def _store_event(self, op: Op, cio_id: str | None, now: float) -> int:
        key = next(self._event_seq)
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

    def _person_event(self, op: Op, now: float) -> None:
        assert op.who is not None
        if op.event_id is not None and op.event_id.upper() in self._seen_event_ids:
            self._counts["duplicates"] += 1
            return
        person = self._find_or_create(op, op.who, now)
        if person is None or self._is_duplicate(op.event_id):
            return
        person.event_keys.append(self._store_event(op, person.cio_id, now))
        self._counts["events"] += 1

    def _anonymous_event(self, op: Op, now: float) -> None:
        if self._is_duplicate(op.event_id):
            return
        key = self._store_event(op, None, now)
        self._anonymous.setdefault(op.anonymous_id, []).append(key)
        self._counts["anonymous_events"] += 1

    def _remove_person(self, person: _Person) -> None:
        """Delete a person, their events and relationships."""
        for key in person.event_keys:
            del self._events[key]
        self._counts["events"] -= len(person.event_keys)
        if person.id is not None:
            self._by_id.pop(person.id, None)
        if person.email is not None:
            self._by_email.pop(person.email.lower(), None)
        for people in self._relations.values():
            people.pop(person.cio_id, None)
        for members in self._segments.values():
            members.pop(person.cio_id, None)
        del self._people[person.cio_id]

    def _person_delete(self, op: Op, now: float) -> None:
        assert op.who is not None
        person = self._find(op.who)
        if person is not None:
            self._remove_person(person)

    def _person_suppress(self, op: Op, now: float) -> None:
        """Delete the profile and suppress the addressed identifier, plus the person's id and email.

        Spec ``suppress``: "Delete a customer profile and prevent the person's identifier(s) from being re-added
        to your workspace. Any future API calls or operations referencing the specified ID are ignored" and
        "both the person's email and ID are suppressed". An identifier nobody holds is suppressed too.
        """
        assert op.who is not None
        keys = []
        addressed = self._suppression_key(*op.who)
        if addressed is not None:
            keys.append(addressed)
        person = self._find(op.who)
        if person is not None:
            for kind, value in (("id", person.id), ("email", person.email)):
                key = None if value is None else self._suppression_key(kind, value)
                if key is not None and key not in keys:
                    keys.append(key)
            self._remove_person(person)
        keys = [key for key in keys if key not in self._suppressed]
        if keys:
            number = next(self._suppression_seq)
            self._suppressions[number] = keys
            for key in keys:
                self._suppressed[key] = number

    def _person_unsuppress(self, op: Op, now: float) -> None:
        """Make the identifier (and the id/email suppressed with it) usable again; the profile stays deleted.

        Spec ``unsuppress``: "both the person's email and ID are unsuppressed"; "does not recreate the profile".
        """
        assert op.who is not None
        key = self._suppression_key(*op.who)
        number = None if key is None else self._suppressed.get(key)
        if number is None:
            return
        for other in self._suppressions.pop(number):
            self._suppressed.pop(other, None)

    def _delivery_event(self, op: Op, now: float) -> None:
        assert op.who is not None
        self._metrics.append(
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

    def _person_add_device(self, op: Op, now: float) -> None:
        assert op.who is not None and op.device is not None
        person = self._find_or_create(op, op.who, now)
        if person is not None:
            device = dict(op.device)
            if device["last_used"] is None:
                device["last_used"] = int(now)
            person.devices[device["id"]] = device

    def _person_delete_device(self, op: Op, now: float) -> None:
        assert op.who is not None and op.device is not None
        person = self._find(op.who)
        if person is not None:
            person.devices.pop(op.device["id"], None)

    def _person_merge(self, op: Op, now: float) -> None:
        assert op.primary is not None and op.secondary is not None
        primary = self._find(op.primary)
        if primary is None:
            # spec merge_customers: "If the primary profile doesn't exist, your request won't do anything."
            self._fail(op, op.primary, "the primary person does not exist (merge did nothing)", now)
            return
        secondary = self._find(op.secondary)
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
        for people in self._relations.values():
            if secondary.cio_id in people:
                people.setdefault(primary.cio_id, people[secondary.cio_id])
        for members in self._segments.values():
            if secondary.cio_id in members:
                members[primary.cio_id] = None
        for event_key in secondary.event_keys:
            self._events[event_key]["person"] = primary.cio_id
        primary.event_keys.extend(secondary.event_keys)
        primary.event_keys.sort()
        secondary.event_keys = []
        email = secondary.email
        self._remove_person(secondary)
        if primary.email is None and email is not None:
            self._set_identifier(primary, "email", email)

    def _relate(self, cio_id: str, relations: list[Relation], add: bool, now: float) -> None:
        """Add or delete person ↔ object relationships (objects are created on add)."""
        for key, attributes in relations:
            if not add:
                self._relations.get(key, {}).pop(cio_id, None)
                continue
            self._ensure_object(key, now)
            current = self._relations.setdefault(key, {}).setdefault(cio_id, {})
            _merge_attributes(current, attributes)

    def _person_relationships(self, op: Op, now: float) -> None:
        assert op.who is not None
        adding = op.action == "add_relationships"
        person = self._find_or_create(op, op.who, now) if adding else self._find(op.who)
        if person is not None:
            self._relate(person.cio_id, op.relationships, adding, now)

    def _ensure_object(self, key: tuple[str, str], now: float) -> dict[str, Any]:
        obj = self._objects.get(key)
        if obj is None:
            obj = {"object_type_id": key[0], "object_id": key[1], "attributes": {}, "created_at": int(now)}
            self._objects[key] = obj
        return obj

    def _object_identify(self, op: Op, now: float) -> None:
        assert op.who is not None
        _merge_attributes(self._ensure_object(op.who, now)["attributes"], op.attributes)
        self._object_people(op, add=True, now=now)

    def _object_delete(self, op: Op, now: float) -> None:
        assert op.who is not None
        self._objects.pop(op.who, None)
        self._relations.pop(op.who, None)

    def _object_relationships(self, op: Op, now: float) -> None:
        assert op.who is not None
        adding = op.action == "add_relationships"
        if adding:
            self._ensure_object(op.who, now)
        self._object_people(op, add=adding, now=now)

    def _object_people(self, op: Op, add: bool, now: float) -> None:
        assert op.who is not None
        for who, attributes in op.relationships:
            key = self._suppression_key(*who)
            if key is not None and key in self._suppressed:
                self._counts["ignored_suppressed"] += 1
                self._ignored.append(
                    {
                        "time": now,
                        "type": op.type,
                        "action": op.action,
                        "identifiers": {who[0]: who[1]},
                        "message": f"{who[0]} is suppressed",
                    }
                )
                continue
            person = self._find_or_create(op, who, now) if add else self._find(who)
            if person is not None:
                self._relate(person.cio_id, [(op.who, attributes)], add, now)


def _merge_attributes(current: dict[str, Any], updates: dict[str, Any]) -> None:
    """Set attributes; ``null`` or ``""`` removes one."""
    for key, value in updates.items():
        if value is None or (isinstance(value, str) and not value):
            current.pop(key, None)
        else:
            current[key] = value
