"""Model-based test: streams of SDK behaviour, delivered through the real pipeline, against a small model.

Hypothesis (``RuleBasedStateMachine``) plays PostHog SDKs over a small universe -- two browser devices
running posthog-js, two users (``u1``, ``u2``) and a CRM id (``crm-1``) known to a posthog-python backend
-- and after every batch (each delivered by a fresh runtime on the same data dir: a restart) compares
Customer.io's end state in the sandbox (which profiles exist, their identifiers, each attribute's final
value, which events are on whom, which stay anonymous) with an independent reference model written from
the documented rules below. It runs in Track v2 and Pipelines mode, with ``IDENTIFY_BY_EMAIL`` off and on.
``MODEL_TEST_EXAMPLES`` (default 25) sets the number of examples per mode; e.g. ``MODEL_TEST_EXAMPLES=500``
for a long run. The examples are the same on every run (``derandomize``); ``MODEL_TEST_RANDOM=1`` explores
new streams (how the disagreement in :func:`test_alias_of_a_deleted_users_id_to_an_identified_person` was found).

Behaviours generated (shapes as the SDKs send them; ``tests/e2e/test_real_people.py`` has one test per shape):

* posthog-js visit: ``$device_id`` and ``$is_identified`` on every event, the distinct_id is the
  anonymous id until ``identify`` (``/work/shared/reference/posthog-events.md`` "$is_identified", SDK alias
  calls); ``identify(user, {email})``: ``$identify`` with ``$anon_distinct_id`` and ``$set``, sent only
  while the device is anonymous (posthog-events.md, table row ``$identify``); ``reset()``: a new anonymous
  distinct_id on the same device, ``$device_id`` kept; ``setPersonProperties``: a ``$set`` event;
  ``alias(x)``: ``$create_alias`` with ``distinct_id`` = the current id and ``alias`` = x.
* posthog-python: ``capture`` (no ``$device_id``, no ``$is_identified``), ``set``/``set_once`` (``$set`` /
  ``$set_once`` events), an event with ``$unset``, ``$process_person_profile: false`` (personless) events,
  ``alias(previous_id, distinct_id)`` (the event's distinct_id is the *previous* id: the other argument
  order), ``$delete_person``.
* late events (stamped before events already delivered) and duplicates (the same uuid again, in the same
  or a later batch), and a restart between batches.

The reference model (``Model`` below), rule by rule:

PostHog's people (posthog-events.md §5.3, §5.4, "$process_person_profile"):

1. A person is a set of distinct_ids. An event of an unknown distinct_id creates a person, except a
   personless one (``$process_person_profile: false``), which creates nobody and whose
   ``$set``/``$set_once``/``$unset`` are stripped (``normalizeProcessPerson``).
2. ``$identify`` merges the person of ``$anon_distinct_id`` into the distinct_id's person;
   ``$create_alias`` merges the person of ``alias`` into the distinct_id's person. When only one side has
   a person the other id joins it. When both have one, the merge is refused if the merged-in side is
   already identified (``cannot_merge_already_identified``). The distinct_id's person becomes identified;
   so does a person whose event says ``$is_identified: true`` (the posthog-js marker docs/semantics.md's
   identified filter uses).
3. Person properties: ``$set`` writes, ``$set_once`` writes only a key the person does not have,
   ``$unset`` removes. Customer.io's timestamp rule (4) decides between writes.
4. ``$delete_person`` deletes the person with all its distinct_ids: a later event of any of them is a new,
   unknown person (posthog-events.md, ``$delete_person``; docs/semantics.md, "Deletes").

Customer.io's identifiers and timestamps (customerio-api-notes.md, the Track OpenAPI ``identify`` and
``merge_customers``; customerio-pipelines-notes.md; the docs/semantics.md sections "What Customer.io receives" and
"Customer.io mirrors PostHog's people"):

5. A person has a profile once any of its events is not an anonymous visitor's (``$create_alias`` aside:
   it only merges, rule 8). An anonymous visitor's
   event is one of a person that is neither identified nor has a profile, marked by the client SDK as
   anonymous (``$is_identified: false``, ``$process_person_profile: false``, or ``$device_id`` equal to the
   distinct_id). Those events wait in Customer.io as anonymous events under their distinct_id.
6. Once a person has a profile, Customer.io holds every forwarded event of every distinct_id of the
   person, the anonymous ones included (attached by ``anonymous_id``): which events are on whom is
   PostHog's "which events belong to whom". Forwarded: everything but ``$set``, ``$set_once``,
   ``$create_alias`` and ``$delete_person``. An event id reaches Customer.io once (dedupe by ``id``, also
   across deletes: the sandbox keeps its dedupe memory).
7. Attributes: every write carries the event time, and a write older than the profile's last write of
   that attribute (an unset counts as a write) is ignored -- Customer.io's ``timestamp`` rule in Track;
   in Pipelines, which applies traits in arrival order, we never send such a write, so the end state is
   the same.
8. The profile's ``id`` is the distinct_id it was created for; a merge (also of an id with no person yet)
   keeps the profile of the person merged into (``$identify``: the distinct_id's; an alias: the identified
   side, else the side with an email, else the side never seen as an anonymous visitor, else the event's
   distinct_id -- docs/semantics.md's survivor rule, since the SDKs disagree on argument order). Customer.io's
   merge keeps the primary's attribute values and fills the attributes it lacks from the secondary
   (``merge_customers``), each with the time of its write; events move to the primary, and the email moves
   when the primary has none.
9. Deleting a person deletes its profile and the events on it.
10. ``IDENTIFY_BY_EMAIL``: emails are identifiers. A profile created while its email is known is addressed
    by email and has no ``id`` (Track); an email change keeps the one profile (docs/semantics.md,
    ``IDENTIFY_BY_EMAIL``).
11. Cohorts (``sync-cohorts``, Track mode: a PostHog cohort mirrored into a manual segment): after a pass the
    segment holds exactly the profiles of the cohort's members (README "Use PostHog cohorts in Customer.io");
    between passes Customer.io's rules move membership: a merge puts the primary in every segment the
    secondary was in, a deleted profile leaves its segments (the Track API's ``merge_customers`` and manual
    segments). The generated cohort lists people that have a profile (creating one for a member is
    ``sync-persons``' rule, tested apart).

Generation is restricted where PostHog and Customer.io do not agree on one answer, so that a disagreement
is always a bug on one side:

* each email belongs to one user (``u1``: ``a1``/``a2``, ``u2``: ``b1``/``b2``): two PostHog persons
  sharing an email are two people in PostHog but one profile in an email-addressed workspace;
* person properties are written only by identified users (a browser after ``identify``, the backend):
  an anonymous visitor's properties wait in our state until the identify and are then written with the
  identify's time, which no timestamp rule of either side describes;
* a browser whose anonymous id the backend aliased to a user identifies as that user: identified as
  someone else, PostHog would add that new distinct_id to the aliased user's person (only one side has a
  person, so nothing is refused), i.e. rename the user's Customer.io profile -- a merge our mapping refuses
  (the issue's item 5: ``$identify`` never takes over an identified person);
* every event has its own second (ties between two writes of one attribute have no documented order);
* only a person with a profile is deleted: deleting a distinct_id that has no person means nothing in
  PostHog (yet its personless events, which PostHog gives the person id a later person of that distinct_id
  gets, would be judged by rule 6 against a deletion that never happened); and a deleted anonymous
  visitor's events stay in Customer.io under their ``anonymous_id``, which the same browser keeps using --
  Customer.io attaches by ``anonymous_id`` only, so it cannot tell the deleted visitor's events from the
  new one's.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from posthog_customerio.sandbox import SandboxServer

from ..helpers import deliver_events, ev
from ..posthog_api_standin import PersonsStandin
from .test_cohort_people import cohort_pass

pytestmark = pytest.mark.e2e

T0 = 1_767_600_000  # 2026-01-05T08:00:00Z
STEP = 100  # seconds between generated events; late events go back whole steps
DEVICES = ("d1", "d2")
USERS = ("u1", "u2")
CRM = "crm-1"
COHORT, SEGMENT = 7, "12"  # rule 11: PostHog cohort 7 mirrored into manual segment 12
POSTHOG = "https://posthog.example"
EMAILS = {"u1": ("a1@x.io", "a2@x.io"), "u2": ("b1@x.io", "b2@x.io")}
KEYS = ("plan", "name")
VALUES = ("free", "pro", "team")
FORWARDED_NOT = frozenset({"$set", "$set_once", "$create_alias", "$delete_person"})
EXAMPLES = int(os.environ.get("MODEL_TEST_EXAMPLES", "25"))
#: the same examples on every run (CI judges one fixed set); ``MODEL_TEST_RANDOM=1`` explores new streams
DERANDOMIZE = os.environ.get("MODEL_TEST_RANDOM", "0") != "1"
#: ``MODEL_TEST_SHRINK=0`` reports the first failing stream as found (faster while debugging)
PHASES = tuple(p for p in Phase if p is not Phase.shrink or os.environ.get("MODEL_TEST_SHRINK", "1") != "0")


# -- the reference model --------------------------------------------------------------------------------
@dataclass
class Profile:
    """A Customer.io profile as the model expects it."""

    id: str | None
    email: str | None
    attributes: dict[str, Any] = field(default_factory=dict)
    stamps: dict[str, int] = field(default_factory=dict)
    events: set[tuple[str, int]] = field(default_factory=set)
    #: in the cohort's manual segment (rule 11)
    in_segment: bool = False


@dataclass
class Person:
    """A PostHog person: its distinct_ids, whether it is identified, its Customer.io profile."""

    root: str
    ids: set[str]
    identified: bool = False
    anonymous_seen: bool = False
    profile: Profile | None = None


class Model:
    """PostHog's person rules and Customer.io's identifier and timestamp rules (module docstring, 1-10)."""

    def __init__(self, identify_by_email: bool) -> None:
        self.identify_by_email = identify_by_email
        self.people: list[Person] = []
        self.seen_ids: set[str] = set()  # event ids Customer.io has seen
        self.anonymous: dict[str, set[tuple[str, int]]] = {}  # Customer.io's unattached anonymous events
        self.marked: set[str] = set()  # distinct_ids seen as anonymous visitors (personless ones too)

    def person(self, distinct_id: str) -> Person | None:
        return next((p for p in self.people if distinct_id in p.ids), None)

    def ingest(self, event: dict[str, Any]) -> None:
        name, did, props = event["event"], event["distinct_id"], event["properties"]
        when = int(event["timestamp"])
        tag = (name, int(props["n"]))
        personless = props.get("$process_person_profile") is False
        if name == "$delete_person":
            self._delete(did)
            return
        if name == "$identify" and props.get("$anon_distinct_id"):
            self._merge(str(props["$anon_distinct_id"]), did, alias=False, event=event)
        elif name == "$create_alias":
            if props.get("alias"):
                self._merge(str(props["alias"]), did, alias=True, event=event)
            merged = self.person(did)
            if merged is not None and merged.profile is not None:
                self._attach(merged, merged.profile)
            return  # rule 5: an alias only merges
        person = self.person(did)
        if person is None and not personless:
            person = Person(did, {did}, anonymous_seen=did in self.marked)
            self.people.append(person)
        markers = props.get("$is_identified") is False or personless or props.get("$device_id") == did
        if person is not None and props.get("$is_identified") is True:
            person.identified = True
        if markers and (person is None or (not person.identified and person.profile is None)):
            self.marked.add(did)  # seen as an anonymous visitor (rule 8's survivor rule)
            if person is not None:
                person.anonymous_seen = True
        forwarded = name not in FORWARDED_NOT and event["uuid"] not in self.seen_ids
        if forwarded:
            self.seen_ids.add(event["uuid"])
        if person is None or (person.profile is None and not person.identified and markers):
            if forwarded:  # rule 5: an anonymous visitor's event waits
                self.anonymous.setdefault(did, set()).add(tag)
            return
        profile = self._profile(person, event)
        if not personless:
            self._write(person, profile, event, when)
        if forwarded:
            profile.events.add(tag)

    # -- identity (rules 2, 8) --------------------------------------------------------------------------
    def _merge(self, other_id: str, into_id: str, alias: bool, event: dict[str, Any]) -> None:
        into, other = self.person(into_id), self.person(other_id)
        if into is not None and other is not None and into is not other and other.identified:
            return  # cannot_merge_already_identified: both persons exist and the merged-in one is identified
        if into is None:
            into = Person(into_id, {into_id}, anonymous_seen=into_id in self.marked)
            self.people.append(into)
        if other is None:
            other = Person(other_id, {other_id}, anonymous_seen=other_id in self.marked)
            self.people.append(other)
        if other is not into:
            survivor, merged = into, other
            if alias and self._rank(other, other_id, False, event) > self._rank(into, into_id, True, event):
                survivor, merged = other, into
            self._combine(survivor, merged)
            into = survivor
        into.identified = True

    def _rank(self, person: Person, distinct_id: str, own: bool, event: dict[str, Any]) -> tuple[bool, bool, bool]:
        identified = person.identified or (own and event["properties"].get("$is_identified") is True)
        email = person.profile is not None and person.profile.email is not None
        return identified, email, not person.anonymous_seen

    def _combine(self, survivor: Person, merged: Person) -> None:
        survivor.ids |= merged.ids
        self.people.remove(merged)
        primary, secondary = survivor.profile, merged.profile
        if secondary is None:
            return
        if primary is None:  # the survivor's profile is created, then the secondary merged into it
            primary = survivor.profile = Profile(survivor.root, None)
        for key, value in secondary.attributes.items():
            if key not in primary.attributes:
                primary.attributes[key] = value
                primary.stamps[key] = secondary.stamps[key]
        primary.events |= secondary.events
        primary.in_segment |= secondary.in_segment  # rule 11: the primary joins the secondary's segments
        if primary.email is None and secondary.email is not None:
            primary.email = secondary.email
            primary.stamps["email"] = secondary.stamps.get("email", 0)

    # -- profiles and attributes (rules 3, 5-7, 10) ---------------------------------------------------------
    def _profile(self, person: Person, event: dict[str, Any]) -> Profile:
        if person.profile is None:
            email = _email_of(event)
            by_email = self.identify_by_email and email is not None
            person.profile = Profile(None if by_email else person.root, None)
        self._attach(person, person.profile)
        return person.profile

    def _attach(self, person: Person, profile: Profile) -> None:
        """Rule 6: the person's anonymous events join its profile (by ``anonymous_id``)."""
        for distinct_id in person.ids:
            profile.events |= self.anonymous.pop(distinct_id, set())

    def _write(self, person: Person, profile: Profile, event: dict[str, Any], when: int) -> None:
        props = event["properties"]
        updates = dict(props.get("$set") or {})
        for key, value in updates.items():
            if key == "email":
                self._write_email(person, profile, value, when)
            else:
                _write_one(profile, key, value, when)
        for key, value in (props.get("$set_once") or {}).items():
            if key not in profile.attributes:
                _write_one(profile, key, value, when)
        for key in props.get("$unset") or ():
            _write_one(profile, key, None, when)

    def _write_email(self, person: Person, profile: Profile, email: str, when: int) -> None:
        if when < profile.stamps.get("email", when):
            return
        profile.stamps["email"] = when
        by_email = self.identify_by_email and profile.email is not None and profile.id is None
        if by_email and profile.email is not None and profile.email.lower() != email.lower():
            profile.id = person.root  # docs/semantics.md: the profile gets its id, then the new email
        profile.email = email

    def _delete(self, distinct_id: str) -> None:
        person = self.person(distinct_id)
        if person is None:
            return
        self.people.remove(person)
        self.marked -= person.ids  # rule 4: nothing of the person is remembered

    def expected(self) -> dict[str, Any]:
        """The end state in the shape of :func:`observed`."""
        found = []
        for person in self.people:
            profile = person.profile
            if profile is None:
                continue
            found.append(
                {
                    "id": profile.id,
                    "email": profile.email,
                    "attributes": dict(sorted(profile.attributes.items())),
                    "events": sorted(profile.events),
                }
            )
        anonymous = {k: sorted(v) for k, v in self.anonymous.items() if v}
        segment = sorted(
            ([p.profile.id, p.profile.email] for p in self.people if p.profile is not None and p.profile.in_segment),
            key=json.dumps,
        )
        return {
            "profiles": sorted(found, key=_profile_key),
            "anonymous": dict(sorted(anonymous.items())),
            "segment": segment,
        }


def _write_one(profile: Profile, key: str, value: Any, when: int) -> None:
    """Rule 7: a write older than the attribute's last write is ignored; ``None`` removes."""
    if when < profile.stamps.get(key, when):
        return
    profile.stamps[key] = when
    if value is None:
        profile.attributes.pop(key, None)
    else:
        profile.attributes[key] = value


def _email_of(event: dict[str, Any]) -> str | None:
    email = (event["properties"].get("$set") or {}).get("email")
    return email if isinstance(email, str) else None


def _profile_key(profile: dict[str, Any]) -> str:
    return json.dumps([profile["id"], profile["email"], profile["events"]], default=str)


# -- what the sandbox holds -----------------------------------------------------------------------------
def _tag(name: Any, data: Any) -> tuple[str, int]:
    return (str(name), int((data or {}).get("n", -1)))


def observed(sandbox: SandboxServer, pipelines: bool) -> dict[str, Any]:
    """Customer.io's end state: each profile's identifiers, attributes and events; unattached anonymous events."""
    found, anonymous = [], {}
    if pipelines:
        state = sandbox.pipelines
        for p in state.people():
            events = state.events(p["userId"] or p["email"])
            found.append(
                {
                    "id": p["userId"],
                    "email": p["email"],
                    "attributes": dict(sorted((k, v) for k, v in p["attributes"].items() if k != "email")),
                    "events": sorted(_tag(e.get("name"), e.get("properties")) for e in events),
                }
            )
        for e in state.anonymous_events():
            anonymous.setdefault(e["anonymousId"], []).append(_tag(e.get("name"), e.get("properties")))
    else:
        for p in sandbox.state.people():
            person = sandbox.state.person(p["cio_id"]) or {}
            found.append(
                {
                    "id": p["id"],
                    "email": p["email"],
                    "attributes": dict(sorted(p["attributes"].items())),
                    "events": sorted(_tag(e["name"], e.get("data")) for e in person.get("events", [])),
                }
            )
        for e in sandbox.state.anonymous_events():
            anonymous.setdefault(e["anonymous_id"], []).append(_tag(e["name"], e.get("data")))
    anonymous = {k: sorted(v) for k, v in sorted(anonymous.items())}
    people = {p["cio_id"]: p for p in sandbox.state.people()}
    segment = sorted(
        ([people[c]["id"], people[c]["email"]] for c in sandbox.state.segments().get(SEGMENT, [])), key=json.dumps
    )
    return {"profiles": sorted(found, key=_profile_key), "anonymous": anonymous, "segment": segment}


# -- the SDKs -------------------------------------------------------------------------------------------
@dataclass
class Device:
    """A browser running posthog-js: its device id, current distinct_id and user state."""

    device_id: str
    distinct_id: str
    identified: bool = False
    resets: int = 0
    #: the backend aliased this anonymous id to that user: the browser logs in as them (module docstring)
    owner: str | None = None


class PeopleMachine(RuleBasedStateMachine):
    """SDK behaviour in batches; after each batch the sandbox must hold what the model says."""

    sandbox: SandboxServer
    api: str = "v2"
    identify_by_email: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.sandbox.state.reset()
        self.sandbox.pipelines.reset()
        self.data_dir = Path(tempfile.mkdtemp(prefix="model-people-"))
        self.model = Model(self.identify_by_email)
        self.devices = {d: Device(d, d) for d in DEVICES}
        self.batch: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []
        self.n = 0
        self.clock = 10 * STEP
        self.used: set[int] = set()
        self.broken = False  # a comparison failed: teardown delivers nothing more
        self.posthog = PersonsStandin(0)
        self.posthog.add_cohort(COHORT, name="Model cohort", members=[])
        self.person_uuids: list[tuple[Person, str]] = []  # PostHog's uuid of each person (rule 11)

    def teardown(self) -> None:
        try:
            if self.batch and not self.broken:
                self._deliver()
        finally:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    # -- event building ------------------------------------------------------------------------------
    def _when(self, late: int) -> int:
        if not late:
            self.clock += STEP
            return self.clock
        when = self.clock - late * STEP + 1
        while when in self.used:
            when += 1
        return when

    def _emit(self, name: str, distinct_id: str, late: int = 0, **props: Any) -> None:
        when = self._when(late)
        self.used.add(when)
        self.n += 1
        event = ev(
            name,
            distinct_id,
            when,
            t0=0,
            uuid=str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"model/{self.n}")),
            properties={**props, "n": self.n},
        )
        event["timestamp"] = T0 + when
        self.batch.append(event)
        self.sent.append(event)
        self.model.ingest(event)

    def _js(self, name: str, device: Device, late: int = 0, **props: Any) -> None:
        marks = {"$lib": "web", "$device_id": device.device_id, "$is_identified": device.identified}
        self._emit(name, device.distinct_id, late, **marks, **props)

    def _server(self, name: str, distinct_id: str, late: int = 0, **props: Any) -> None:
        self._emit(name, distinct_id, late, **{"$lib": "posthog-python"}, **props)

    # -- behaviours ----------------------------------------------------------------------------------
    @rule(device=st.sampled_from(DEVICES))
    def visit(self, device: str) -> None:
        self._js("clicked", self.devices[device])

    @rule(device=st.sampled_from(DEVICES), user=st.sampled_from(USERS), email=st.integers(0, 2))
    def identify(self, device: str, user: str, email: int) -> None:
        """posthog-js ``identify(user, {email})``: ``$identify`` only while the device is anonymous."""
        state = self.devices[device]
        if state.identified:
            return
        user = state.owner or user
        props: dict[str, Any] = {"$anon_distinct_id": state.distinct_id}
        if email:
            props["$set"] = {"email": EMAILS[user][email - 1]}
        state.distinct_id, state.identified = user, True
        self._js("$identify", state, **props)

    @rule(device=st.sampled_from(DEVICES))
    def reset(self, device: str) -> None:
        """posthog-js ``reset()``: a new anonymous distinct_id, the same ``$device_id``."""
        state = self.devices[device]
        state.resets += 1
        state.distinct_id, state.identified, state.owner = f"{device}.r{state.resets}", False, None

    @rule(device=st.sampled_from(DEVICES), to=st.sampled_from((CRM, *USERS)))
    def js_alias(self, device: str, to: str) -> None:
        """posthog-js ``alias(to)`` by an identified user: the event's distinct_id is the current id."""
        state = self.devices[device]
        if state.identified and to != state.distinct_id:
            self._js("$create_alias", state, alias=to)

    @rule(previous=st.sampled_from((*DEVICES, CRM)), user=st.sampled_from(USERS))
    def python_alias(self, previous: str, user: str) -> None:
        """posthog-python ``alias(previous_id, distinct_id)``: the event's distinct_id is the previous id."""
        device = self.devices.get(previous)
        if device is not None:
            if device.identified:
                return  # the backend aliases a visitor's anonymous id
            previous, device.owner = device.distinct_id, device.owner or user
        if previous != user:
            self._server("$create_alias", previous, alias=user)

    @rule(who=st.sampled_from((*USERS, CRM)), late=st.integers(0, 3), personless=st.booleans(), plan=st.booleans())
    def server_event(self, who: str, late: int, personless: bool, plan: bool) -> None:
        props: dict[str, Any] = {}
        if personless:
            props["$process_person_profile"] = False
        if plan:  # stripped by PostHog when personless
            props["$set"] = {"plan": "enterprise"}
        self._server("invoice_paid", who, late, **props)

    @rule(
        who=st.sampled_from((*DEVICES, *USERS, CRM)),
        op=st.sampled_from(("$set", "$set_once", "$unset")),
        key=st.sampled_from(KEYS),
        value=st.sampled_from(VALUES),
        late=st.integers(0, 3),
    )
    def person_update(self, who: str, op: str, key: str, value: str, late: int) -> None:
        """``setPersonProperties`` (an identified browser) or posthog-python ``set``/``set_once``/``$unset``."""
        if op == "$unset":
            props: dict[str, Any] = {"$unset": [key]}
            name = "plan_reset"
        else:
            props, name = {op: {key: value}}, op
        if who in self.devices:
            state = self.devices[who]
            if state.identified:
                self._js(name if op != "$set_once" else "$set", state, late, **props)
        else:
            self._server(name, who, late, **props)

    @rule(user=st.sampled_from(USERS), which=st.integers(0, 1), late=st.integers(0, 3))
    def email_change(self, user: str, which: int, late: int) -> None:
        """``$set: {email}`` from the backend (a user's own emails only: module docstring)."""
        self._server("$set", user, late, **{"$set": {"email": EMAILS[user][which]}})

    @rule(who=st.sampled_from((*USERS, CRM, *DEVICES)))
    def delete(self, who: str) -> None:
        """PostHog's person deletion, by any of the person's distinct_ids."""
        distinct_id = self.devices[who].distinct_id if who in self.devices else who
        person = self.model.person(distinct_id)
        if person is not None and person.profile is not None:  # see the module docstring
            self._server("$delete_person", distinct_id)

    @rule(index=st.integers(0, 10_000))
    def duplicate(self, index: int) -> None:
        """The same event again (same uuid): a webhook retry, an overlapping export."""
        candidates = [e for e in self.sent if e["event"] != "$delete_person"]
        if candidates:
            event = json.loads(json.dumps(candidates[index % len(candidates)]))
            self.batch.append(event)
            self.model.ingest(event)

    @rule()
    def restart(self) -> None:
        """Deliver the batch through a fresh runtime on the same data dir, then compare."""
        self._deliver()

    @rule(members=st.sets(st.sampled_from((*USERS, CRM))))
    def cohort_pass(self, members: set[str]) -> None:
        """``sync-cohorts``: the cohort now lists these people (those with a profile); one pass (rule 11)."""
        if self.api != "v2":
            return  # manual segments are a Track API feature
        self._deliver()
        listed = []
        for who in sorted(members):
            person = self.model.person(who)
            if person is None or person.profile is None or any(p is person for p, _ in listed):
                continue
            listed.append((person, self._uuid(person)))
        self.posthog.set_cohort_members(
            COHORT,
            [
                {
                    "id": uuid,
                    "uuid": uuid,
                    "distinct_ids": sorted(person.ids),
                    "properties": {},
                    "is_identified": person.identified,
                    "created_at": "2026-01-01T00:00:00Z",
                }
                for person, uuid in listed
            ],
        )
        cohort_pass(
            self.sandbox, self.data_dir, self.posthog, allow_empty=True, identify_by_email=self.identify_by_email
        )
        chosen = [person for person, _ in listed]
        for person in self.model.people:
            if person.profile is not None:
                person.profile.in_segment = any(person is p for p in chosen)
        self._compare()

    def _uuid(self, person: Person) -> str:
        """A person's PostHog uuid: one per person, kept while it lives (merges keep the survivor's)."""
        for known, uuid in self.person_uuids:
            if known is person:
                return uuid
        uuid = str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"model-person/{len(self.person_uuids)}"))
        self.person_uuids.append((person, uuid))
        return uuid

    def _compare(self) -> None:
        expected = self.model.expected()
        actual = observed(self.sandbox, self.api == "pipelines")
        self.broken = actual != expected
        assert actual == expected, _diff(actual, expected, self.sent)

    def _deliver(self) -> None:
        overrides: dict[str, Any] = {"identify_by_email": self.identify_by_email}
        if self.api == "pipelines":  # a shorter wait for fuller batches (1 s by default) changes no end state
            overrides |= {"api": "pipelines", "delivery_linger_s": 0.1}
        deliver_events(self.sandbox, self.data_dir, self.batch, **overrides)
        self.batch = []
        self._compare()

    @invariant()
    def batches_stay_small(self) -> None:
        if len(self.batch) >= 6:
            self._deliver()


def _diff(actual: dict[str, Any], expected: dict[str, Any], sent: list[dict[str, Any]]) -> str:
    lines = ["the sandbox differs from the model", "events sent:"]
    for e in sent:
        props = {k: v for k, v in e["properties"].items() if k not in ("$lib",)}
        lines.append(f"  {e['event']} {e['distinct_id']} t={e['timestamp'] - T0} {props}")
    lines.append(f"actual:   {json.dumps(actual, default=str)}")
    lines.append(f"expected: {json.dumps(expected, default=str)}")
    return "\n".join(lines)


MODES = [(api, by_email) for api in ("v2", "pipelines") for by_email in (False, True)]


@pytest.mark.parametrize(("api", "identify_by_email"), MODES, ids=[f"{a}-ibe{int(b)}" for a, b in MODES])
def test_people_match_the_model(_sandbox_server: SandboxServer, api: str, identify_by_email: bool) -> None:
    machine = type(
        "PeopleMachine_" + api,
        (PeopleMachine,),
        {"sandbox": _sandbox_server, "api": api, "identify_by_email": identify_by_email},
    )
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=EXAMPLES,
            derandomize=DERANDOMIZE,
            stateful_step_count=12,
            deadline=None,
            phases=PHASES,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


@pytest.mark.xfail(
    strict=True,
    reason="open: a random run found this stream (on the code before and after the issue-17 restructuring):"
    " after u1's person is deleted, posthog-js's alias(u2) from u1 -- PostHog adds u1 to u2's identified person"
    " (only one side has a person, so nothing is refused) and the model, by the documented survivor rule (both"
    " sides identified, u1 never seen as an anonymous visitor), renames that person's profile to u1; the mapping"
    " refuses the merge because u2's person is identified (merge_identities), as it refuses an $identify taking"
    " over an identified person (issue 15, item 5), and keeps profile d1. Which one Customer.io should end with"
    " is to be decided",
)
def test_alias_of_a_deleted_users_id_to_an_identified_person(_sandbox_server: SandboxServer) -> None:
    machine = type(
        "PeopleMachine_v2", (PeopleMachine,), {"sandbox": _sandbox_server, "api": "v2", "identify_by_email": False}
    )
    state = machine()
    state.batches_stay_small()
    state.js_alias(device="d2", to="crm-1")
    state.python_alias(previous="d1", user="u2")
    state.identify(device="d2", email=0, user="u1")
    state.js_alias(device="d1", to="crm-1")
    state.js_alias(device="d2", to="crm-1")
    state.identify(device="d1", email=0, user="u1")
    state.delete(who="u1")
    state.js_alias(device="d2", to="u2")
    state.teardown()
