"""The sandbox's Customer.io Pipelines API: ``/v1/batch``, ``/v1/identify`` ... applied as Journeys does.

Mounted into the sandbox app by :func:`.server.create_app`; state lives in
:class:`PipelinesState` and is readable under ``/_sandbox/pipelines/`` (people, events, anonymous_events,
objects, failures, requests, stats; ``POST reset``; ``faults``: the Track API's fault rules (:mod:`.faults`),
``GET`` lists, ``POST`` adds, ``DELETE`` clears).

What it does, from Customer.io's documentation (https://docs.customer.io/integrations/api/cdp/) and the fields
the Customer.io (Journeys) destination reads from each call:

* Auth: Basic, the source key as username (password ignored; Customer.io's clients send it blank).
* ``X-Strict-Mode: 1``: invalid or over-limit requests get 400 ``{"code": ..., "message": ...}`` (the shape
  Customer.io's Python client parses) and a bad key 401. Without the header the API is documented as
  permissive, "logging errors but returning HTTP 200": the sandbox answers 200 and drops the request.
* Limits: 32 KB per call (read as 32,768 bytes, like Customer.io's clients), 500 KB (500,000 bytes) per request.
* A request is applied whole or not at all: Customer.io documents no per-call errors in strict mode.
* People and their identifiers. The ``userId`` is the person: "Person ID ... ``userId`` in request body; can be
  id or email" (https://docs.customer.io/integrations/api/track-vs-cdp-api/). An email-shaped ``userId``
  addresses the person by email and sets the email: "If you pass an email address as the ``userId``, Customer.io
  sets this trait for you" (``traits.email``, https://docs.customer.io/integrations/api/cdp/tag/default/identify/);
  any other addresses the person by ``id``. Without a ``userId``, an identify addresses the person by
  ``traits.email``: "when you use Customer.io as a destination, you can pass an empty userId or anonymousId, and
  identify people by their email trait" (same page). Email addresses are compared without case, ids with it:
  "id values are case sensitive; email addresses are not" (https://docs.customer.io/journeys/identifying-people/).
  A track/page/screen/group/alias to an unknown person creates the person.
* identify: traits are attributes; ``traits.email`` is the email identifier (a ``null``/``""`` email is ignored,
  as in the Track sandbox). With ``anonymousId`` too, the visitor's anonymous activity attaches to the person.
  The Journeys destination applies an identify as Customer.io's identify ("an incoming identify event from your
  sources adds or updates a person", https://docs.customer.io/cdp/destinations/connections/customerio/), so the
  Track API's identifier rules hold (https://docs.customer.io/integrations/api/track/ , identify; the Track
  sandbox's ``workspace.py`` cites them): identifiers are unique across people; an unknown ``id`` whose
  ``traits.email`` belongs to a person without an id gives that person the id ("If the identifier in the path
  does not belong to a person but you use an identifier in your request body that does belong to a person, your
  request updates the person and assigns them the identifier in the path"); the email of a person addressed by
  email does not change; the email of a person addressed by id changes -- the Pipelines way to change it: send
  an identify when people "Update their information—like when they change their email address"
  (https://docs.customer.io/integrations/data-in/source-spec/identify-spec/) -- while the workspace setting
  "Allow updates to email using ID" is on (``allow_email_update_by_id``, on by default as in the Track sandbox).
  An identify breaking these rules answers 200 and changes nothing: it is listed as an attribute update failure
  (``/_sandbox/pipelines/failures``), as Customer.io reports one in the workspace.
* A trait sent as ``null`` or ``""`` removes the attribute. The Pipelines API reference says only that traits
  are what "you want to set on a person. These can take any JSON shape"
  (https://docs.customer.io/integrations/api/cdp/tag/default/identify/ , from
  https://docs.customer.io/files/pipelines.json); an identify "adds or updates a person in our Customer.io
  Journeys destination" (https://docs.customer.io/cdp/destinations/connections/customerio/), which writes the
  traits as the person's attributes, and Customer.io's Track API removes an attribute passed as ``null`` or as
  an empty string (its reference, https://docs.customer.io/integrations/api/track/ , says so of object
  attributes, "Pass `null` or an empty string to remove an attribute", and of relationship attributes; the
  Track sandbox applies the same rule to people).
* Traits apply in arrival order: an older identify that arrives later overwrites a newer value. The Pipelines
  API documents ``timestamp`` only as "The ISO-8601 timestamp when the event originally took place. This is
  mostly useful when you backfill past events. If you're not backfilling data, you can leave this field empty
  and we'll use the current time or server time." (every call type in
  https://docs.customer.io/integrations/api/cdp/ , https://docs.customer.io/files/pipelines.json), and
  https://docs.customer.io/integrations/api/track-vs-cdp-api/ compares timestamps only by format; nothing
  documents that identify traits are ordered by it, as the Track API's ``_timestamp``/``timestamp`` is.
* track/page/screen: with ``userId`` the event belongs to the person (the ``anonymousId`` is ignored); with only
  ``anonymousId`` it is kept as anonymous activity until an identify (or alias) attaches it.
* group: the object ``(traits.objectTypeId | objectTypeId | "1", groupId)``; attributes are the traits without
  ``objectTypeId``/``relationshipAttributes``; a ``userId`` relates the person (with
  ``traits.relationshipAttributes``).
* alias: merges the person ``previousId`` into ``userId`` (or attaches the anonymous activity of ``previousId``).
* Semantic events (track with a reserved name) are actions, not events: Delete Person, User Suppressed /
  Unsuppressed, Device Created or Updated / Deleted (``context.device``, or ``properties.device``), Relationship
  Deleted, Object Deleted.
* ``messageId`` dedupe: Customer.io's client docs link ``common-fields/#messageid-deduplicate-calls``; the window
  is not stated in what we could read, so the sandbox remembers every ``messageId`` (also across person
  deletes) and applies a repeated one as a no-op.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, cast

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .credentials import decode_basic
from .faults import Fault, FaultRules, fault_response
from .operations import EMAIL_RE
from .wire import json_response

__all__ = ["MAX_CALL_BYTES", "MAX_REQUEST_BYTES", "PipelinesError", "PipelinesState", "routes"]

MAX_CALL_BYTES = 32 * 1024
MAX_REQUEST_BYTES = 500_000
MAX_LOGGED_REQUESTS = 100_000
MAX_LOGGED_FAILURES = 100_000
_CALL_TYPES = ("identify", "track", "page", "screen", "group", "alias")
_SEMANTIC = frozenset(
    {
        "Delete Person",
        "User Suppressed",
        "User Unsuppressed",
        "Device Created or Updated",
        "Device Deleted",
        "Relationship Deleted",
        "Object Deleted",
        "Report Delivery Event",
    }
)
_OBJECT_RESERVED = ("objectTypeId", "object_type_id", "relationshipAttributes")


class PipelinesError(Exception):
    """An invalid request: ``code`` and ``message`` (400 in strict mode)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(slots=True)
class _Person:
    key: int
    user_id: str | None = None
    email: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    anonymous_ids: list[str] = field(default_factory=list)
    suppressed: bool = False
    created_at: float = 0.0


def _who(user_id: str) -> tuple[str, str]:
    """The identifier a ``userId`` is: an email-shaped one is the person's email, any other the person's id."""
    return ("email", user_id) if EMAIL_RE.fullmatch(user_id) else ("id", user_id)


def _compact_len(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8"))


def _id(value: Any) -> str | None:
    """A Segment id: strings (numbers are stringified, as Customer.io's clients do); empty/None = absent."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        value = str(value)
    if not isinstance(value, str):
        raise PipelinesError("invalid_id", "userId/anonymousId/groupId/previousId must be strings")
    return value or None


def _dict(call: dict[str, Any], key: str) -> dict[str, Any]:
    value = call.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PipelinesError("invalid_field", f"{key} must be an object")
    return value


def _merge(target: dict[str, Any], updates: dict[str, Any]) -> None:
    """Set traits as attributes; ``null`` or ``""`` removes one (the Journeys destination writes them to Track)."""
    for key, value in updates.items():
        if value is None or value == "":
            target.pop(key, None)
        else:
            target[key] = value


def _object_type(call: dict[str, Any], *containers: dict[str, Any]) -> str:
    for container in (*containers, call):
        for key in ("objectTypeId", "object_type_id"):
            value = container.get(key)
            if value not in (None, ""):
                return str(value)
    return "1"


@dataclass(slots=True)
class _Call:
    """One validated call."""

    type: str
    raw: dict[str, Any]
    user_id: str | None
    anonymous_id: str | None
    message_id: str | None


def validate_call(raw: Any, where: str = "call") -> _Call:
    """Check one call as strict mode does; raises :class:`PipelinesError`."""
    if not isinstance(raw, dict):
        raise PipelinesError("invalid_call", f"{where} must be a JSON object")
    kind = raw.get("type")
    if kind not in _CALL_TYPES:
        raise PipelinesError("invalid_type", f"{where}: type must be one of {', '.join(_CALL_TYPES)}")
    if _compact_len(raw) > MAX_CALL_BYTES:
        raise PipelinesError("call_too_large", f"{where} exceeds {MAX_CALL_BYTES} bytes")
    user_id, anonymous_id = _id(raw.get("userId")), _id(raw.get("anonymousId"))
    message_id = raw.get("messageId")
    if message_id is not None and not isinstance(message_id, str):
        raise PipelinesError("invalid_field", f"{where}: messageId must be a string")
    for key in ("traits", "properties", "context", "integrations"):
        _dict(raw, key)
    if kind == "alias":
        if not user_id or not _id(raw.get("previousId")):
            raise PipelinesError("missing_id", f"{where}: alias needs userId and previousId")
    elif kind == "group":
        if not _id(raw.get("groupId")):
            raise PipelinesError("missing_id", f"{where}: group needs a groupId")
    elif not user_id and not anonymous_id:
        raise PipelinesError("missing_id", f"{where}: {kind} needs a userId or an anonymousId")
    if kind == "track":
        event = raw.get("event")
        if not isinstance(event, str) or not event.strip():
            raise PipelinesError("missing_event", f"{where}: track needs an event name")
        _validate_semantic(raw, event, user_id, where)
    if kind == "identify" and not user_id and not anonymous_id:
        raise PipelinesError("missing_id", f"{where}: identify needs a userId or an anonymousId")
    return _Call(kind, raw, user_id, anonymous_id, message_id or None)


def _device(raw: dict[str, Any]) -> dict[str, Any]:
    device = _dict(_dict(raw, "context"), "device") or _dict(_dict(raw, "properties"), "device")
    return device


def _object_id(raw: dict[str, Any]) -> str | None:
    properties = _dict(raw, "properties")
    return _id(properties.get("objectId")) or _id(properties.get("groupId")) or _id(raw.get("groupId"))


def _validate_semantic(raw: dict[str, Any], event: str, user_id: str | None, where: str) -> None:
    if event not in _SEMANTIC:
        return
    if (
        event
        in (
            "Delete Person",
            "User Suppressed",
            "User Unsuppressed",
            "Device Created or Updated",
            "Device Deleted",
            "Relationship Deleted",
        )
        and not user_id
    ):
        raise PipelinesError("missing_id", f"{where}: {event} needs a userId")
    if event in ("Device Created or Updated", "Device Deleted"):
        token = _device(raw).get("token")
        if not isinstance(token, str) or not token:
            raise PipelinesError("missing_device", f"{where}: {event} needs context.device.token")
    if event in ("Relationship Deleted", "Object Deleted") and not _object_id(raw):
        raise PipelinesError("missing_id", f"{where}: {event} needs the object id (properties.objectId or groupId)")


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
        self._people: dict[int, _Person] = {}
        self._by_user: dict[str, int] = {}
        self._by_email: dict[str, int] = {}
        self._seq = itertools.count(1)
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

    def _person_view(self, person: _Person) -> dict[str, Any]:
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
            return [self._person_view(person) for person in self._people.values()]

    def _by_identifier(self, identifier: str) -> _Person | None:
        key = self._by_user.get(identifier)
        if key is None:
            key = self._by_email.get(identifier.lower())
        return self._people.get(key) if key is not None else None

    def person(self, identifier: str) -> dict[str, Any] | None:
        """A person by id or email."""
        with self._lock:
            person = self._by_identifier(identifier)
            return self._person_view(person) if person is not None else None

    def _event_view(self, event: dict[str, Any]) -> dict[str, Any]:
        view = {k: v for k, v in event.items() if k != "person"}
        owner = self._people.get(event["person"])
        view["userId"], view["email"] = (owner.user_id, owner.email) if owner is not None else (None, None)
        return view

    def events(self, identifier: str | None = None) -> list[dict[str, Any]]:
        """Person events (track/page/screen) with their person's id (``userId``) and email; optionally of one person
        (by id or email)."""
        with self._lock:
            person = self._by_identifier(identifier) if identifier is not None else None
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
                        {"userId": self._people[pk].user_id, "email": self._people[pk].email, "attributes": attrs}
                        for pk, attrs in obj["relationships"].items()
                        if pk in self._people
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
                "people": len(self._people),
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

    def apply(self, calls: list[_Call]) -> None:
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

    def _lookup(self, kind: str, value: str) -> _Person | None:
        """The person holding identifier ``value`` of ``kind`` (``id``: case-sensitive; ``email``: not)."""
        key = self._by_user.get(value) if kind == "id" else self._by_email.get(value.lower())
        return self._people.get(key) if key is not None else None

    def _find(self, user_id: str) -> _Person | None:
        """The person a ``userId`` addresses (by email when it is one, else by id)."""
        return self._lookup(*_who(user_id))

    def _assign(self, person: _Person, kind: str, value: str) -> None:
        """Give ``person`` this identifier (replacing its previous one of that kind)."""
        if kind == "id":
            if person.user_id is not None:
                self._by_user.pop(person.user_id, None)
            person.user_id = value
            self._by_user[value] = person.key
        else:
            if person.email is not None:
                self._by_email.pop(person.email.lower(), None)
            person.email = value
            self._by_email[value.lower()] = person.key
            person.attributes["email"] = value

    def _create(self, kind: str, value: str, now: float) -> _Person:
        person = _Person(next(self._seq), created_at=now)
        self._people[person.key] = person
        self._assign(person, kind, value)
        return person

    def _find_or_create(self, user_id: str, now: float) -> _Person:
        """The person a ``userId`` addresses; a call to an unknown one creates the person (Track does)."""
        who = _who(user_id)
        return self._lookup(*who) or self._create(*who, now)

    def _fail(self, call: _Call, who: tuple[str, str], message: str, now: float) -> None:
        """An identify the destination cannot apply: recorded, nothing changed (the request answered 200)."""
        self._counts["attribute_update_failures"] += 1
        self._failures.append(
            {"time": now, "userId": call.user_id, "identifiers": {who[0]: who[1]}, "message": message}
        )

    def _identify_target(self, call: _Call, who: tuple[str, str], email: str | None, now: float) -> _Person | None:
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
            return self._lookup(kind, value) or self._create(kind, value, now)
        person = self._lookup("id", value)
        owner = self._lookup("email", email) if email is not None else None
        if person is None and owner is not None:
            if owner.user_id is not None:
                self._fail(call, who, f"email {email!r} belongs to another person", now)
                return None
            self._assign(owner, "id", value)
            return owner
        if person is None:
            person = self._create("id", value, now)
        if email is None or (person.email is not None and person.email.lower() == email.lower()):
            return person
        if owner is not None and owner is not person:
            self._fail(call, who, f"email {email!r} belongs to another person", now)
            return None
        if person.email is not None and not self.allow_email_update_by_id:
            self._fail(call, who, "cannot change the email of a person addressed by id (workspace setting off)", now)
            return None
        self._assign(person, "email", email)
        return person

    # ----------------------------------------------------------------- calls

    def _attach(self, person: _Person, anonymous_id: str) -> None:
        if anonymous_id not in person.anonymous_ids:
            person.anonymous_ids.append(anonymous_id)
        _merge(person.attributes, self._anonymous_traits.pop(anonymous_id, {}))
        for event in self._anonymous.pop(anonymous_id, []):
            event["person"] = person.key
            self._events.append(event)
            self._counts["anonymous_attached"] += 1

    def _apply_identify(self, call: _Call, now: float) -> None:
        traits = dict(_dict(call.raw, "traits"))
        if traits.get("email") in (None, ""):
            traits.pop("email", None)  # an identifier is not cleared by a trait (the Track sandbox ignores it too)
        email = traits.get("email") if isinstance(traits.get("email"), str) else None
        if call.user_id:
            who = _who(call.user_id)
        elif email:
            who = ("email", email)  # "you can pass an empty userId or anonymousId, and identify people by ... email"
        else:
            assert call.anonymous_id is not None
            _merge(self._anonymous_traits.setdefault(call.anonymous_id, {}), traits)
            return
        person = self._identify_target(call, who, email, now)
        if person is None:
            return
        traits.pop("email", None)  # set with the identifier
        _merge(person.attributes, traits)
        if call.anonymous_id:
            self._attach(person, call.anonymous_id)

    def _event(self, call: _Call, person: _Person | None, now: float) -> dict[str, Any]:
        raw = call.raw
        name = raw.get("event") if call.type == "track" else raw.get("name")
        return {
            "type": call.type,
            "name": name,
            "person": person.key if person is not None else None,
            "anonymousId": call.anonymous_id,
            "properties": dict(_dict(raw, "properties")),
            "messageId": call.message_id,
            "timestamp": raw.get("timestamp"),
            "received_at": now,
        }

    def _apply_track(self, call: _Call, now: float) -> None:
        event = call.raw["event"]
        if event in _SEMANTIC:
            self._counts[f"semantic_{event}"] += 1
            self._semantic(call, event, now)
            return
        self._apply_view(call, now)

    def _apply_view(self, call: _Call, now: float) -> None:
        if call.user_id:
            self._events.append(self._event(call, self._find_or_create(call.user_id, now), now))
        else:
            assert call.anonymous_id is not None
            self._anonymous.setdefault(call.anonymous_id, []).append(self._event(call, None, now))

    _apply_page = _apply_view
    _apply_screen = _apply_view

    def _apply_group(self, call: _Call, now: float) -> None:
        traits = dict(_dict(call.raw, "traits"))
        group_id = _id(call.raw.get("groupId"))
        assert group_id is not None
        key = (_object_type(call.raw, traits), group_id)
        relationship = traits.get("relationshipAttributes")
        attributes = {k: v for k, v in traits.items() if k not in _OBJECT_RESERVED}
        obj = self._objects.setdefault(key, {"attributes": {}, "relationships": {}, "created_at": now})
        _merge(obj["attributes"], attributes)
        if call.user_id:
            person = self._find_or_create(call.user_id, now)
            related = obj["relationships"].setdefault(person.key, {})
            if isinstance(relationship, dict):
                _merge(related, relationship)

    def _apply_alias(self, call: _Call, now: float) -> None:
        previous = _id(call.raw.get("previousId"))
        assert previous is not None and call.user_id is not None
        secondary = self._find(previous)
        primary = self._find_or_create(call.user_id, now)
        if secondary is not None and secondary.key != primary.key:
            self._merge_people(primary, secondary)
        if previous in self._anonymous or previous in self._anonymous_traits:
            self._attach(primary, previous)

    def _merge_people(self, primary: _Person, secondary: _Person) -> None:
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
            self._assign(primary, "email", email)
        self._counts["merges"] += 1

    def _remove(self, person: _Person, keep_events: bool = False) -> None:
        self._people.pop(person.key, None)
        if person.user_id:
            self._by_user.pop(person.user_id, None)
        if person.email:
            self._by_email.pop(person.email.lower(), None)
        if not keep_events:
            self._events = [e for e in self._events if e["person"] != person.key]
        for obj in self._objects.values():
            obj["relationships"].pop(person.key, None)

    def _semantic(self, call: _Call, event: str, now: float) -> None:
        raw, user_id = call.raw, call.user_id
        person = self._find(user_id) if user_id else None
        if event == "Delete Person":
            if person is not None:
                self._remove(person)
        elif event in ("User Suppressed", "User Unsuppressed"):
            assert user_id is not None
            target = person or self._find_or_create(user_id, now)
            target.suppressed = event == "User Suppressed"
        elif event == "Device Created or Updated":
            assert user_id is not None
            device = dict(_device(raw))
            token = device.pop("token")
            target = person or self._find_or_create(user_id, now)
            entry = target.devices.setdefault(token, {})
            _merge(entry, device)
            _merge(entry, {k: v for k, v in _dict(raw, "properties").items() if k != "device"})
            entry["last_used"] = raw.get("timestamp")
        elif event == "Device Deleted":
            if person is not None:
                person.devices.pop(_device(raw)["token"], None)
        elif event == "Relationship Deleted":
            key = (_object_type(raw, _dict(raw, "properties"), _dict(raw, "traits")), _object_id(raw))
            if person is not None and key in self._objects:
                self._objects[key]["relationships"].pop(person.key, None)
        elif event == "Object Deleted":
            object_id = _object_id(raw)
            assert object_id is not None
            self._objects.pop((_object_type(raw, _dict(raw, "properties"), _dict(raw, "traits")), object_id), None)


# --------------------------------------------------------------------------- HTTP


def _state(request: Request) -> PipelinesState:
    return cast(PipelinesState, request.app.state.pipelines)


def _parse(body: bytes, path: str) -> list[_Call]:
    """Validate a whole request body; raises :class:`PipelinesError`."""
    if len(body) > MAX_REQUEST_BYTES:
        raise PipelinesError("request_too_large", f"request exceeds {MAX_REQUEST_BYTES} bytes")
    try:
        parsed = json.loads(body) if body.strip() else None
    except (ValueError, UnicodeDecodeError):
        raise PipelinesError("invalid_json", "request body is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise PipelinesError("invalid_body", "request body must be a JSON object")
    kind = path.rsplit("/", 1)[-1]
    if kind != "batch":
        if len(body) > MAX_CALL_BYTES:
            raise PipelinesError("call_too_large", f"call exceeds {MAX_CALL_BYTES} bytes")
        parsed.setdefault("type", kind)
        if parsed["type"] != kind:
            raise PipelinesError("invalid_type", f"type must be {kind!r} on /v1/{kind}")
        return [validate_call(parsed)]
    batch = parsed.get("batch")
    if not isinstance(batch, list):
        raise PipelinesError("invalid_body", 'request body must have a "batch" list')
    context = _dict(parsed, "context")
    calls = []
    for index, raw in enumerate(batch):
        if context and isinstance(raw, dict) and isinstance(raw.get("context", {}), dict):
            raw["context"] = {**context, **(raw.get("context") or {})}  # batch context applies to every call
        calls.append(validate_call(raw, f"batch[{index}]"))
    return calls


async def _v1(request: Request) -> Response:
    """Every ``POST /v1/...`` call: faults, auth, validation, apply (strict or permissive)."""
    state = _state(request)
    body = await request.body()
    strict = request.headers.get("x-strict-mode") == "1"
    fault = state.take_fault()
    if fault is not None and fault.delay_s:
        await asyncio.sleep(fault.delay_s)
    applied = 0
    if fault is not None and fault.status is not None:
        response = fault_response(fault, {"code": "injected", "message": "sandbox fault"})
    elif not state.authorized(request.headers.get("authorization")):
        payload = {"code": "unauthorized", "message": "invalid Pipelines API key"}
        response = json_response(401 if strict else 200, payload if strict else {})
    else:
        try:
            calls = _parse(body, request.url.path)
        except PipelinesError as exc:
            error = {"code": exc.code, "message": exc.message}
            response = json_response(400 if strict else 200, error if strict else {})
        else:
            state.apply(calls)
            applied = len(calls)
            response = json_response(200, {})
    try:
        logged: Any = json.loads(body) if body.strip() else None
    except (ValueError, UnicodeDecodeError):
        logged = body.decode("utf-8", errors="replace")
    state.log_request(
        {
            "method": request.method,
            "path": request.url.path,
            "strict": strict,
            "status": response.status_code,
            "bytes": len(body),
            "applied": applied,
            "body": logged,
            "time": time.time(),
        }
    )
    return response


async def _people(request: Request) -> Response:
    return json_response(200, _state(request).people())


async def _person(request: Request) -> Response:
    person = _state(request).person(request.path_params["identifier"])
    return json_response(200, person) if person is not None else json_response(404, {"error": "not found"})


async def _events(request: Request) -> Response:
    return json_response(200, _state(request).events(request.query_params.get("userId")))


async def _anonymous_events(request: Request) -> Response:
    return json_response(200, _state(request).anonymous_events())


async def _failures(request: Request) -> Response:
    return json_response(200, _state(request).failures())


async def _objects(request: Request) -> Response:
    return json_response(200, _state(request).objects())


async def _requests(request: Request) -> Response:
    return json_response(200, _state(request).requests())


async def _stats(request: Request) -> Response:
    return json_response(200, _state(request).stats())


async def _reset(request: Request) -> Response:
    _state(request).reset()
    return json_response(200, {})


async def _faults(request: Request) -> Response:
    """``GET``: the active rules; ``DELETE``: none; ``POST``: add one (the fields of ``/_sandbox/faults``)."""
    state = _state(request)
    if request.method == "DELETE":
        state.fault_rules.clear()
        return json_response(200, {})
    if request.method == "GET":
        return json_response(200, state.fault_rules.views())
    try:
        body = json.loads(await request.body())
        if not isinstance(body, dict):
            raise TypeError("not an object")
        fault = state.add_fault(
            body.get("status"),
            body.get("count"),
            body.get("retry_after"),
            body.get("duration_s"),
            body.get("delay_s", 0.0),
            body.get("body"),
        )
    except (ValueError, TypeError) as exc:
        return json_response(400, {"error": f"{exc} (body: {_FAULT_FIELDS})"})
    return json_response(200, fault)


_FAULT_FIELDS = '{"status": int, "count"?: int, "duration_s"?: number, "retry_after"?: str, "delay_s"?: number}'


def routes() -> list[Route]:
    """The Pipelines API and its ``/_sandbox/pipelines`` views (the app needs ``state.pipelines``)."""
    return [
        *(Route(f"/v1/{kind}", _v1, methods=["POST"]) for kind in ("batch", *_CALL_TYPES)),
        Route("/_sandbox/pipelines/people", _people),
        Route("/_sandbox/pipelines/people/{identifier:path}", _person),
        Route("/_sandbox/pipelines/events", _events),
        Route("/_sandbox/pipelines/anonymous_events", _anonymous_events),
        Route("/_sandbox/pipelines/objects", _objects),
        Route("/_sandbox/pipelines/failures", _failures),
        Route("/_sandbox/pipelines/requests", _requests),
        Route("/_sandbox/pipelines/stats", _stats),
        Route("/_sandbox/pipelines/reset", _reset, methods=["POST"]),
        Route("/_sandbox/pipelines/faults", _faults, methods=["GET", "POST", "DELETE"]),
    ]
