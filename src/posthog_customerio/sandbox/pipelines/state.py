"""The Pipelines side of the sandbox workspace: people, events, anonymous activity, objects, the request log
and the injected faults (:class:`PipelinesState`), and how each call applies to them."""

from __future__ import annotations

import collections
import hmac
import threading
import time
from typing import Any

from ..credentials import decode_basic
from ..faults import Fault, FaultRules
from .calls import (
    OBJECT_RESERVED,
    SEMANTIC,
    Call,
    device_of,
    merge_traits,
    object_field,
    object_id_of,
    object_type,
    segment_id,
    who_of,
)
from .people import Directory, Person

__all__ = ["MAX_LOGGED_FAILURES", "MAX_LOGGED_REQUESTS", "PipelinesState"]


MAX_LOGGED_REQUESTS = 100_000
MAX_LOGGED_FAILURES = 100_000


class PipelinesState:
    """The Pipelines side of the sandbox workspace (thread-safe)."""

    def __init__(self, api_key: str = "sandbox") -> None:
        self._lock = threading.Lock()
        self._initial_key = api_key
        #: injected faults (:mod:`.faults`), answered before auth and validation, applying nothing
        self.fault_rules = FaultRules()
        self._clear()

    def _clear(self) -> None:
        self.api_key = self._initial_key
        self.directory = Directory()
        self._events: list[dict[str, Any]] = []
        self._anonymous: dict[str, list[dict[str, Any]]] = {}
        self._anonymous_traits: dict[str, dict[str, Any]] = {}
        self._objects: dict[tuple[str, str], dict[str, Any]] = {}
        self._seen: set[str] = set()
        self._requests: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_LOGGED_REQUESTS)
        self.fault_rules.clear()
        self._failures: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_LOGGED_FAILURES)
        self._counts: collections.Counter[str] = collections.Counter()
        #: The workspace setting "Allow updates to email using ID" (as the Track sandbox's; on by default): an
        #: identify whose ``userId`` is an id may change the person's email (``traits.email``).
        self.allow_email_update_by_id = True

    # ----------------------------------------------------------------- views

    def _person_view(self, person: Person) -> dict[str, Any]:
        return {
            "userId": person.user_id,
            "email": person.email,
            "attributes": dict(person.attributes),
            "devices": [{"token": token, **device} for token, device in person.devices.items()],
            "anonymous_ids": list(person.anonymous_ids),
            "suppressed": person.suppressed,
            "relationships": [
                {"objectTypeId": key[0], "groupId": key[1], "attributes": dict(rels[person.key])}
                for key, obj in self._objects.items()
                if person.key in (rels := obj["relationships"])
            ],
        }

    def people(self) -> list[dict[str, Any]]:
        """Every person, oldest first."""
        with self._lock:
            return [self._person_view(person) for person in self.directory.all()]

    def person(self, identifier: str) -> dict[str, Any] | None:
        """A person by id or email."""
        with self._lock:
            person = self.directory.by_identifier(identifier)
            return self._person_view(person) if person is not None else None

    def _event_view(self, event: dict[str, Any]) -> dict[str, Any]:
        view = {k: v for k, v in event.items() if k != "person"}
        owner = self.directory.get(event["person"])
        view["userId"], view["email"] = (owner.user_id, owner.email) if owner is not None else (None, None)
        return view

    def events(self, identifier: str | None = None) -> list[dict[str, Any]]:
        """Person events (track/page/screen) with their person's id (``userId``) and email; optionally of one person
        (by id or email)."""
        with self._lock:
            person = self.directory.by_identifier(identifier) if identifier is not None else None
            if identifier is not None and person is None:
                return []
            return [self._event_view(e) for e in self._events if person is None or e["person"] == person.key]

    def failures(self) -> list[dict[str, Any]]:
        """Identifies not applied: Customer.io's "Attribute Update Failure" (the request itself answered 200)."""
        with self._lock:
            return list(self._failures)

    def anonymous_events(self) -> list[dict[str, Any]]:
        """Anonymous activity not attached to anyone yet."""
        with self._lock:
            return [self._event_view(e) for events in self._anonymous.values() for e in events]

    def objects(self) -> list[dict[str, Any]]:
        """Objects with their attributes and related people (by userId)."""
        with self._lock:
            return [
                {
                    "objectTypeId": key[0],
                    "groupId": key[1],
                    "attributes": dict(obj["attributes"]),
                    "relationships": [
                        {"userId": self.directory[pk].user_id, "email": self.directory[pk].email, "attributes": attrs}
                        for pk, attrs in obj["relationships"].items()
                        if pk in self.directory
                    ],
                }
                for key, obj in self._objects.items()
            ]

    def requests(self) -> list[dict[str, Any]]:
        """Logged requests (method, path, headers of interest, body, status)."""
        with self._lock:
            return list(self._requests)

    def stats(self) -> dict[str, Any]:
        """Counters and sizes."""
        with self._lock:
            return {
                **self._counts,
                "people": len(self.directory),
                "events": len(self._events),
                "anonymous_events": sum(len(v) for v in self._anonymous.values()),
                "objects": len(self._objects),
            }

    def reset(self) -> None:
        """Forget everything (the key goes back to the initial one)."""
        with self._lock:
            self._clear()

    # ----------------------------------------------------------------- control

    def add_fault(
        self,
        status: int | None = None,
        count: int | None = None,
        retry_after: float | str | None = None,
        duration_s: float | None = None,
        delay_s: float = 0.0,
        body: Any = None,
    ) -> dict[str, Any]:
        """Answer the next ``count`` Pipelines requests (or all for ``duration_s``) with ``status`` (applying
        nothing), after ``delay_s``; raises ValueError (see :func:`.faults.make_fault`)."""
        return self.fault_rules.add(status, count, duration_s, retry_after, delay_s, body)

    def take_fault(self) -> Fault | None:
        """The fault for this request, if any."""
        return self.fault_rules.take()

    def authorized(self, header: str | None) -> bool:
        """Basic auth with the key as username."""
        decoded = decode_basic(header)
        if decoded is None:
            return False
        username = decoded.partition(":")[0]
        return hmac.compare_digest(username.encode(), self.api_key.encode())

    def log_request(self, entry: dict[str, Any]) -> None:
        """Append to the request log."""
        with self._lock:
            self._requests.append(entry)
            self._counts["requests"] += 1
            self._counts[f"status_{entry['status']}"] += 1

    # ----------------------------------------------------------------- applying

    def apply(self, calls: list[Call]) -> None:
        """Apply validated calls in order (a repeated ``messageId`` is a no-op)."""
        now = time.time()
        with self._lock:
            for call in calls:
                if call.message_id is not None:
                    if call.message_id in self._seen:
                        self._counts["duplicates"] += 1
                        continue
                    self._seen.add(call.message_id)
                self._counts[f"calls_{call.type}"] += 1
                getattr(self, f"_apply_{call.type}")(call, now)

    # ----------------------------------------------------------------- identifiers

    def _fail(self, call: Call, who: tuple[str, str], message: str, now: float) -> None:
        """An identify the destination cannot apply: recorded, nothing changed (the request answered 200)."""
        self._counts["attribute_update_failures"] += 1
        self._failures.append(
            {"time": now, "userId": call.user_id, "identifiers": {who[0]: who[1]}, "message": message}
        )

    def _identify_target(self, call: Call, who: tuple[str, str], email: str | None, now: float) -> Person | None:
        """The person an identify updates, with its identifiers applied; ``None`` when it is a failure.

        The Journeys destination applies an identify as the Track API's identify: the ``userId`` addresses the
        person, ``traits.email`` is the email identifier. Identifiers are unique across people; an unknown id
        whose ``traits.email`` belongs to a person without an id gives that person the id; the email of a person
        addressed by email cannot change, that of a person addressed by id changes when the workspace allows
        "updates to email using ID".
        """
        kind, value = who
        if kind == "email":
            if email is not None and email.lower() != value.lower():
                self._fail(call, who, "cannot change the email of a person addressed by email", now)
                return None
            return self.directory.lookup(kind, value) or self.directory.create(kind, value, now)
        person = self.directory.lookup("id", value)
        owner = self.directory.lookup("email", email) if email is not None else None
        if person is None and owner is not None:
            if owner.user_id is not None:
                self._fail(call, who, f"email {email!r} belongs to another person", now)
                return None
            self.directory.assign(owner, "id", value)
            return owner
        if person is None:
            person = self.directory.create("id", value, now)
        if email is None or (person.email is not None and person.email.lower() == email.lower()):
            return person
        if owner is not None and owner is not person:
            self._fail(call, who, f"email {email!r} belongs to another person", now)
            return None
        if person.email is not None and not self.allow_email_update_by_id:
            self._fail(call, who, "cannot change the email of a person addressed by id (workspace setting off)", now)
            return None
        self.directory.assign(person, "email", email)
        return person

    # ----------------------------------------------------------------- calls

    def _attach(self, person: Person, anonymous_id: str) -> None:
        if anonymous_id not in person.anonymous_ids:
            person.anonymous_ids.append(anonymous_id)
        merge_traits(person.attributes, self._anonymous_traits.pop(anonymous_id, {}))
        for event in self._anonymous.pop(anonymous_id, []):
            event["person"] = person.key
            self._events.append(event)
            self._counts["anonymous_attached"] += 1

    def _apply_identify(self, call: Call, now: float) -> None:
        traits = dict(object_field(call.raw, "traits"))
        if traits.get("email") in (None, ""):
            traits.pop("email", None)  # an identifier is not cleared by a trait (the Track sandbox ignores it too)
        email = traits.get("email") if isinstance(traits.get("email"), str) else None
        if call.user_id:
            who = who_of(call.user_id)
        elif email:
            who = ("email", email)  # "you can pass an empty userId or anonymousId, and identify people by ... email"
        else:
            assert call.anonymous_id is not None
            merge_traits(self._anonymous_traits.setdefault(call.anonymous_id, {}), traits)
            return
        person = self._identify_target(call, who, email, now)
        if person is None:
            return
        traits.pop("email", None)  # set with the identifier
        merge_traits(person.attributes, traits)
        if call.anonymous_id:
            self._attach(person, call.anonymous_id)

    def _event(self, call: Call, person: Person | None, now: float) -> dict[str, Any]:
        raw = call.raw
        name = raw.get("event") if call.type == "track" else raw.get("name")
        return {
            "type": call.type,
            "name": name,
            "person": person.key if person is not None else None,
            "anonymousId": call.anonymous_id,
            "properties": dict(object_field(raw, "properties")),
            "messageId": call.message_id,
            "timestamp": raw.get("timestamp"),
            "received_at": now,
        }

    def _apply_track(self, call: Call, now: float) -> None:
        event = call.raw["event"]
        if event in SEMANTIC:
            self._counts[f"semantic_{event}"] += 1
            self._semantic(call, event, now)
            return
        self._apply_view(call, now)

    def _apply_view(self, call: Call, now: float) -> None:
        if call.user_id:
            self._events.append(self._event(call, self.directory.find_or_create(call.user_id, now), now))
        else:
            assert call.anonymous_id is not None
            self._anonymous.setdefault(call.anonymous_id, []).append(self._event(call, None, now))

    _apply_page = _apply_view
    _apply_screen = _apply_view

    def _apply_group(self, call: Call, now: float) -> None:
        traits = dict(object_field(call.raw, "traits"))
        group_id = segment_id(call.raw.get("groupId"))
        assert group_id is not None
        key = (object_type(call.raw, traits), group_id)
        relationship = traits.get("relationshipAttributes")
        attributes = {k: v for k, v in traits.items() if k not in OBJECT_RESERVED}
        obj = self._objects.setdefault(key, {"attributes": {}, "relationships": {}, "created_at": now})
        merge_traits(obj["attributes"], attributes)
        if call.user_id:
            person = self.directory.find_or_create(call.user_id, now)
            related = obj["relationships"].setdefault(person.key, {})
            if isinstance(relationship, dict):
                merge_traits(related, relationship)

    def _apply_alias(self, call: Call, now: float) -> None:
        previous = segment_id(call.raw.get("previousId"))
        assert previous is not None and call.user_id is not None
        secondary = self.directory.find(previous)
        primary = self.directory.find_or_create(call.user_id, now)
        if secondary is not None and secondary.key != primary.key:
            self._merge_people(primary, secondary)
        if previous in self._anonymous or previous in self._anonymous_traits:
            self._attach(primary, previous)

    def _merge_people(self, primary: Person, secondary: Person) -> None:
        """Customer.io's merge: the secondary's data moves to the primary, which keeps its own values."""
        for name, value in secondary.attributes.items():
            primary.attributes.setdefault(name, value)
        for token, device in secondary.devices.items():
            primary.devices.setdefault(token, device)
        for anonymous_id in secondary.anonymous_ids:
            if anonymous_id not in primary.anonymous_ids:
                primary.anonymous_ids.append(anonymous_id)
        for event in self._events:
            if event["person"] == secondary.key:
                event["person"] = primary.key
        for obj in self._objects.values():
            if secondary.key in obj["relationships"]:
                obj["relationships"].setdefault(primary.key, obj["relationships"][secondary.key])
        email = secondary.email
        self._remove(secondary, keep_events=True)
        if email and primary.email is None:
            self.directory.assign(primary, "email", email)
        self._counts["merges"] += 1

    def _remove(self, person: Person, keep_events: bool = False) -> None:
        self.directory.remove(person)
        if not keep_events:
            self._events = [e for e in self._events if e["person"] != person.key]
        for obj in self._objects.values():
            obj["relationships"].pop(person.key, None)

    def _semantic(self, call: Call, event: str, now: float) -> None:
        raw, user_id = call.raw, call.user_id
        person = self.directory.find(user_id) if user_id else None
        if event == "Delete Person":
            if person is not None:
                self._remove(person)
        elif event in ("User Suppressed", "User Unsuppressed"):
            assert user_id is not None
            target = person or self.directory.find_or_create(user_id, now)
            target.suppressed = event == "User Suppressed"
        elif event == "Device Created or Updated":
            assert user_id is not None
            device = dict(device_of(raw))
            token = device.pop("token")
            target = person or self.directory.find_or_create(user_id, now)
            entry = target.devices.setdefault(token, {})
            merge_traits(entry, device)
            merge_traits(entry, {k: v for k, v in object_field(raw, "properties").items() if k != "device"})
            entry["last_used"] = raw.get("timestamp")
        elif event == "Device Deleted":
            if person is not None:
                person.devices.pop(device_of(raw)["token"], None)
        elif event == "Relationship Deleted":
            key = (object_type(raw, object_field(raw, "properties"), object_field(raw, "traits")), object_id_of(raw))
            if person is not None and key in self._objects:
                self._objects[key]["relationships"].pop(person.key, None)
        elif event == "Object Deleted":
            object_id = object_id_of(raw)
            assert object_id is not None
            self._objects.pop(
                (object_type(raw, object_field(raw, "properties"), object_field(raw, "traits")), object_id), None
            )
