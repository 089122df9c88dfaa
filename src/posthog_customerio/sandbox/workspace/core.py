"""The workspace: its parts behind one lock, its public reads and writes, and the dispatch of operations.

The parts, one concern each: :class:`~.people.Directory` (profiles and identifiers), :class:`~.events.EventLog`,
:class:`~.objects.Objects` (and relationships), :class:`~.suppressions.Suppressions`,
:class:`~.segments.Segments` and :class:`~.records.Records` (failures, delivery metrics, forms). Operations are
applied by the functions of :mod:`.person_ops` and :mod:`.other_ops`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ..operations import Op, OpError
from . import other_ops, person_ops
from .events import EventLog
from .objects import Objects
from .people import Directory, person_view
from .records import Records
from .segments import Segments
from .suppressions import Suppressions

__all__ = ["Workspace"]

#: (type, action) -> the function applying it (lock held)
_HANDLERS: dict[tuple[str, str], Callable[[Workspace, Op, float], None]] = {
    ("person", "identify"): person_ops.person_identify,
    ("person", "delete"): person_ops.person_delete,
    ("person", "event"): other_ops.person_event,
    ("person", "page"): other_ops.person_event,
    ("person", "screen"): other_ops.person_event,
    ("person", "add_device"): person_ops.person_add_device,
    ("person", "delete_device"): person_ops.person_delete_device,
    ("person", "merge"): person_ops.person_merge,
    ("person", "suppress"): person_ops.person_suppress,
    ("person", "unsuppress"): person_ops.person_unsuppress,
    ("person", "add_relationships"): person_ops.person_relationships,
    ("person", "delete_relationships"): person_ops.person_relationships,
    ("object", "identify"): other_ops.object_identify,
    ("object", "delete"): other_ops.object_delete,
    ("object", "add_relationships"): other_ops.object_relationships,
    ("object", "delete_relationships"): other_ops.object_relationships,
    ("anonymous", "event"): other_ops.anonymous_event,
    ("anonymous", "page"): other_ops.anonymous_event,
    ("anonymous", "screen"): other_ops.anonymous_event,
    ("delivery", "event"): other_ops.delivery_event,
}


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

    def _clear(self) -> None:
        """(Re)initialise every part; caller holds the lock or is ``__init__``."""
        self.directory = Directory()
        self.event_log = EventLog()
        self.object_store = Objects()
        self.suppression_store = Suppressions()
        self.segment_store = Segments()
        self.records = Records()

    # ----------------------------------------------------------------- public reads

    def people(self) -> list[dict[str, Any]]:
        """Every person, in creation order."""
        with self._lock:
            return [person_view(person) for person in self.directory.all()]

    def person(self, identifier: str) -> dict[str, Any] | None:
        """One person by id, email (case-insensitive) or cio_id, with events; else ``None``."""
        with self._lock:
            person = self.directory.resolve(identifier)
            if person is None:
                return None
            view = person_view(person)
            view["attribute_timestamps"] = dict(person.attribute_timestamps)
            view["relationships"] = self.object_store.relationships_of(person.cio_id)
            view["events"] = self.event_log.of(person)
            return view

    def events(self, person: str | None = None) -> list[dict[str, Any]]:
        """Events attributed to people (all, or one person's by identifier)."""
        with self._lock:
            if person is None:
                return self.event_log.person_events()
            found = self.directory.resolve(person)
            return [] if found is None else self.event_log.of(found)

    def anonymous_events(self) -> list[dict[str, Any]]:
        """Anonymous events not (yet) attached to a person."""
        with self._lock:
            return self.event_log.anonymous_events()

    def objects(self) -> list[dict[str, Any]]:
        """Objects with their relationships to people."""
        with self._lock:
            return self.object_store.views()

    def suppressions(self) -> list[dict[str, Any]]:
        """Suppressed identifiers, one entry per suppression: ``{"id": ..., "email": ...}`` (absent = none)."""
        with self._lock:
            return self.suppression_store.views()

    def ignored(self) -> list[dict[str, Any]]:
        """Operations accepted with 200 but ignored because they reference a suppressed identifier."""
        with self._lock:
            return self.suppression_store.ignored()

    def delivery_metrics(self) -> list[dict[str, Any]]:
        """Reported delivery metrics (v1 ``/push/events``, ``/metrics``, ``/unsubscribe``, v2 ``delivery``)."""
        with self._lock:
            return self.records.metrics()

    def form_submissions(self) -> list[dict[str, Any]]:
        """Form submissions (``/api/v1/forms/{form_id}/submit``) that identified a person."""
        with self._lock:
            return self.records.forms()

    def segments(self) -> dict[str, list[str]]:
        """Manual segments: segment id -> member cio_ids."""
        with self._lock:
            return self.segment_store.views()

    def attribute_update_failures(self) -> list[dict[str, Any]]:
        """Identifies (and other ops) accepted with 200 but not applied."""
        with self._lock:
            return self.records.failures()

    def stats(self) -> dict[str, Any]:
        """Counters: people, events, duplicates, anonymous events, failures, suppressions, ..."""
        with self._lock:
            counts = self.event_log.counts
            return {
                "people": len(self.directory),
                "events": counts["events"],
                "duplicates": counts["duplicates"],
                "anonymous_events": counts["anonymous_events"],
                "attribute_update_failures": self.records.failure_count,
                "attribute_update_failure_details": self.records.last_failures(100),
                "suppressed_identifiers": len(self.suppression_store),
                "ignored_suppressed": self.suppression_store.ignored_count,
                "delivery_metrics": self.records.metric_count(),
                "objects": len(self.object_store),
                "relationships": self.object_store.relationship_count(),
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
            self.records.metric({"source": source, **record, "received_at": time.time()})

    def submit_form(self, form_id: str, op: Op, fields: dict[str, Any]) -> None:
        """``/forms/{form_id}/submit``: apply the respondent's identify (created if new) and record the fields."""
        with self._lock:
            now = time.time()
            self._run(op, now)
            self.records.form({"form_id": form_id, "data": fields, "received_at": now})

    def segment_members(self, segment_id: str, ids: list[Any], id_type: str, add: bool) -> None:
        """Add people to (or remove them from) a manual segment; unknown people and mistyped values are ignored."""
        with self._lock:
            self.segment_store.update(self.directory, segment_id, ids, id_type, add)

    def _run(self, op: Op, now: float) -> None:
        """Apply ``op`` unless it references a suppressed identifier (then it is ignored: still 200)."""
        if op.type == "person" and op.action != "unsuppress":
            blocked = self.suppression_store.reference(op)
            if blocked is not None:
                self.suppression_store.ignore(op, blocked, now)
                return
        _HANDLERS[(op.type, op.action)](self, op, now)
