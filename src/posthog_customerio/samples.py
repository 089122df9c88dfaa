"""Seedable generator of realistic PostHog event streams (demo, tests, benchmarks).

NOTE: the bundled demo file ``data/sample_events.jsonl`` contains **two invalid lines on
purpose**, so the demo shows error reporting: one line of broken (truncated) JSON and one
event without a ``distinct_id``. Every other line is a valid plugin-shaped event. It is
reproduced by::

    python -m posthog_customerio.samples --people 25 --seed 7 --events-per-person 7 \\
        --shape plugin --inject-errors --out src/posthog_customerio/data/sample_events.jsonl

Each simulated person browses anonymously under a UUIDv7 anonymous ``distinct_id`` (like
posthog-js), about 70% sign up (``$identify`` with ``$anon_distinct_id``, ``$set`` and
``$set_once``) and then produce identified page views and custom events over a few days;
about 10% use the iOS app (``$screen``). Output is deterministic per seed and ordered by
timestamp across people. Every event's ``uuid`` is a UUIDv7 whose time is the event time.
A few user ids contain ``/``, a space or ``#`` and about 5% of emails have upper case.

Shapes (``shape=``): ``plugin``, ``webhook`` (Hog globals body), ``export`` (batch-export
JSONL line) and ``capture`` (capture API body). See ``posthog-events.md``.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import sys
import unicodedata
import uuid as uuidlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

__all__ = [
    "DEFAULT_START",
    "SHAPES",
    "generate_session_events",
    "iter_stream",
    "main",
    "write_jsonl",
]

DEFAULT_START = datetime(2026, 1, 5, 9, 0, 0, tzinfo=UTC)
SHAPES = ("plugin", "webhook", "export", "capture")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ARRIVAL_GAP_MS = 120_000  # one new person every ~2 minutes: bounds the people active at once
_TEAM_ID = 1
_SITE = "https://us.posthog.com"
_PROJECT = {"id": _TEAM_ID, "name": "Acme (demo)", "url": f"{_SITE}/project/{_TEAM_ID}"}
_PERSON_NS = uuidlib.UUID("932979b4-65c3-4424-8467-0b66ec27bc22")
_WWW = "www.acme.example"
_APP = "app.acme.example"

_FIRST = [
    "Ada",
    "Grace",
    "Alan",
    "Linus",
    "Margaret",
    "Ken",
    "Barbara",
    "José",
    "Zoë",
    "Renée",
    "Björn",
    "Chloé",
    "Priya",
    "Wei",
    "Amara",
    "Hiro",
    "Fatima",
    "Lars",
    "Maya",
    "Omar",
]
_LAST = [
    "Lovelace",
    "Hopper",
    "Turing",
    "Torvalds",
    "Hamilton",
    "Thompson",
    "Liskov",
    "García",
    "Müller",
    "Dubois",
    "Nakamura",
    "Okafor",
    "Singh",
    "Chen",
    "Kowalski",
    "Silva",
    "Novak",
]
_GEO = [
    ("US", "New York"),
    ("US", "San Francisco"),
    ("DE", "Berlin"),
    ("GB", "London"),
    ("FR", "Paris"),
    ("IN", "Bengaluru"),
    ("BR", "São Paulo"),
    ("JP", "Tokyo"),
    ("CA", "Toronto"),
    ("NL", "Amsterdam"),
]
_WEB_CLIENTS = [  # (browser, version, os, os version, device type, width, height)
    ("Chrome", "131.0.0.0", "Mac OS X", "14.6.1", "Desktop", 1512, 982),
    ("Chrome", "131.0.0.0", "Windows", "10.0", "Desktop", 1920, 1080),
    ("Safari", "18.2", "Mac OS X", "15.2", "Desktop", 1728, 1117),
    ("Firefox", "133.0", "Linux", "", "Desktop", 2560, 1440),
    ("Microsoft Edge", "131.0.0.0", "Windows", "10.0", "Desktop", 1366, 768),
    ("Mobile Safari", "18.2", "iOS", "18.2", "Mobile", 390, 844),
    ("Chrome", "131.0.6778.104", "Android", "14", "Mobile", 412, 915),
]
_IOS_DEVICES = [("iPhone15,2", 393, 852), ("iPhone16,1", 393, 852), ("iPad13,4", 834, 1194)]
_JS_VERSIONS = ["1.203.1", "1.205.0", "1.207.2"]
_REFERRERS = [
    "$direct",
    "$direct",
    "https://www.google.com/",
    "https://news.ycombinator.com/",
    "https://www.linkedin.com/",
    "https://duckduckgo.com/",
]
_CAMPAIGNS = [
    ("google", "cpc", "winter_launch"),
    ("newsletter", "email", "jan_digest"),
    ("linkedin", "social", "founders_webinar"),
    ("twitter", "social", "launch_week"),
]
_MARKETING = [
    ("/", "Acme - Sync everything"),
    ("/pricing", "Pricing - Acme"),
    ("/features", "Features - Acme"),
    ("/blog/how-we-sync", "How we sync - Acme blog"),
    ("/docs/getting-started", "Getting started - Acme docs"),
]
_APP_PAGES = [
    ("/dashboard", "Dashboard"),
    ("/projects", "Projects"),
    ("/reports", "Reports"),
    ("/settings/team", "Team settings"),
    ("/settings/billing", "Billing"),
    ("/integrations", "Integrations"),
]
_APP_PATHS = frozenset(path for path, _ in _APP_PAGES) | {"/onboarding"}
_SCREENS = ["Home", "ProjectList", "ProjectDetail", "Reports", "Settings", "Notifications"]
_FEATURES = ["dashboard_export", "sql_editor", "alerts", "share_link", "csv_import", "ai_summary"]
_PLANS = ["free", "starter", "pro", "enterprise"]
_PRICES = {"starter": 19.0, "pro": 49.0, "enterprise": 399.0}
_TEMPLATES = ["blank", "web_analytics", "crm_sync", "onboarding_funnel"]
_IDENTIFIED_MIX = [
    ("page", 30),
    ("feature_used", 26),
    ("project_created", 12),
    ("invited_teammate", 10),
    ("purchase", 10),
    ("$set", 7),
]
_MIX_KINDS = [kind for kind, _ in _IDENTIFIED_MIX]
_MIX_WEIGHTS = [weight for _, weight in _IDENTIFIED_MIX]


def _iso(ms: int) -> str:
    """Millisecond ISO 8601 UTC string with ``Z`` (plugin/webhook/capture style)."""
    moment = _EPOCH + timedelta(milliseconds=ms)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def _iso_us(ms: int) -> str:
    """Microsecond ISO 8601 string with ``+00:00`` (batch-export style)."""
    moment = _EPOCH + timedelta(milliseconds=ms)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{(ms % 1000) * 1000:06d}+00:00"


def _uuid7(ms: int, rng: random.Random) -> str:
    """A UUIDv7 string with the given Unix-millisecond time and seeded random bits."""
    rand = rng.getrandbits(74)
    value = ((ms & 0xFFFF_FFFF_FFFF) << 80) | (0x7 << 76) | ((rand >> 62) << 64)
    value |= (0b10 << 62) | (rand & ((1 << 62) - 1))
    return str(uuidlib.UUID(int=value))


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


@dataclass(slots=True)
class _Raw:
    """One generated event before it is given a JSON shape."""

    ts: int
    uuid: str
    event: str
    distinct_id: str
    properties: dict[str, Any]
    person_id: str
    person: dict[str, Any] | None  # person properties after this event; None if personless
    ip: str


class _Person:
    """Simulates one visitor; iterate to get their events in time order."""

    def __init__(self, index: int, seed: int, events_per_person: int, start_ms: int) -> None:
        rng = self.rng = random.Random(f"posthog-sample:{seed}:{index}")
        low = max(1, events_per_person - events_per_person // 2)
        self.total = rng.randint(low, max(low, events_per_person + events_per_person // 2))
        self.clock = start_ms + index * _ARRIVAL_GAP_MS + rng.randrange(_ARRIVAL_GAP_MS)
        self.mobile = rng.random() < 0.10
        forced = index % 10 == 3 or index % 20 == 7  # weird ids / upper-case emails always sign up
        self.signs_up = self.total >= 3 and (forced or rng.random() < 0.70)
        number = index + 1
        sep = "-" if index % 10 != 3 else "/ #"[(index // 10) % 3]
        self.user_id = f"user{sep}{number:06d}"
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        self.name = f"{first} {last}"
        local = f"{_ascii(first)}.{_ascii(last)}{number}"
        self.email = f"{local}@Example.com" if index % 20 == 7 else f"{local.lower()}@example.com"
        self.anon_id = _uuid7(self.clock - rng.randrange(500, 5000), rng)
        self.person_id = str(uuidlib.uuid5(_PERSON_NS, f"{_TEAM_ID}:{self.anon_id}"))
        self.ip = f"203.0.113.{rng.randint(1, 254)}"
        self.distinct_id = self.anon_id
        self.identified = False
        self.props: dict[str, Any] = {}
        self.plan = "free"
        self.projects = 0
        self.team_size = 1
        country, city = rng.choice(_GEO)
        self.base: dict[str, Any] = {"$geoip_country_code": country, "$geoip_city_name": city}
        if self.mobile:
            model, width, height = rng.choice(_IOS_DEVICES)
            self.base.update(
                {
                    "$os": "iOS",
                    "$os_version": rng.choice(["17.6.1", "18.1", "18.2"]),
                    "$device_type": "Tablet" if model.startswith("iPad") else "Mobile",
                    "$device_model": model,
                    "$device_manufacturer": "Apple",
                    "$app_name": "Acme",
                    "$app_version": "2.4.1",
                    "$app_build": "241",
                    "$lib": "posthog-ios",
                    "$lib_version": "3.19.1",
                    "$screen_width": width,
                    "$screen_height": height,
                    "$locale": "en-US",
                    "$network_wifi": rng.random() < 0.7,
                }
            )
        else:
            browser, bver, os_name, os_ver, dtype, width, height = rng.choice(_WEB_CLIENTS)
            self.base.update(
                {
                    "$os": os_name,
                    "$os_version": os_ver,
                    "$browser": browser,
                    "$browser_version": bver,
                    "$device_type": dtype,
                    "$screen_width": width,
                    "$screen_height": height,
                    "$lib": "web",
                    "$lib_version": rng.choice(_JS_VERSIONS),
                }
            )
        self.referrer = rng.choice(_REFERRERS)
        self.campaign = rng.choice(_CAMPAIGNS) if rng.random() < 0.4 else None
        self.page: tuple[str, str] = ("/", "")
        self.session_id = ""

    # -- building blocks -------------------------------------------------------------

    def _new_session(self, gap_ms: int) -> None:
        self.clock += gap_ms
        self.session_id = _uuid7(self.clock, self.rng)

    def _tick(self) -> None:
        self.clock += self.rng.randint(4_000, 150_000)

    def _event(
        self,
        name: str,
        extra: dict[str, Any] | None = None,
        set_: dict[str, Any] | None = None,
        set_once: dict[str, Any] | None = None,
    ) -> _Raw:
        props: dict[str, Any] = dict(self.base)
        if not self.mobile:
            path, _title = self.page
            host = _APP if path.split("?")[0] in _APP_PATHS else _WWW
            ref = self.referrer
            props.update(
                {
                    "$current_url": f"https://{host}{path}",
                    "$host": host,
                    "$pathname": path.split("?")[0],
                    "$referrer": ref,
                    "$referring_domain": "$direct" if ref == "$direct" else ref.split("/")[2],
                }
            )
        props.update({"$session_id": self.session_id, "$device_id": self.anon_id, "$is_identified": self.identified})
        if not self.identified:
            props["$process_person_profile"] = False
        if extra:
            props.update(extra)
        if set_:
            props["$set"] = set_
        if set_once:
            props["$set_once"] = set_once
        if self.identified:
            for key, value in (set_once or {}).items():
                self.props.setdefault(key, value)
            self.props.update(set_ or {})
        return _Raw(
            self.clock,
            _uuid7(self.clock, self.rng),
            name,
            self.distinct_id,
            props,
            self.person_id,
            dict(self.props) if self.identified else None,
            self.ip,
        )

    def _view(self, path: str, title: str) -> _Raw:
        """A ``$pageview`` (web) or ``$screen`` (mobile) of the given place."""
        if self.mobile:
            return self._event("$screen", {"$screen_name": title})
        self.page = (path, title)
        return self._event("$pageview", {"title": title})

    # -- the story ---------------------------------------------------------------------

    def __iter__(self) -> Iterator[_Raw]:
        rng = self.rng
        self._new_session(0)
        anon = max(1, min(rng.randint(1, 3), self.total - 2)) if self.signs_up else self.total
        yield from self._anonymous(anon)
        if not self.signs_up:
            return
        yield from self._sign_up()
        for step in range(self.total - anon - 2):
            if step == 0 and rng.random() < 0.7:  # onboarding: create the first project
                self._tick()
                yield self._identified_event("project_created")
            elif rng.random() < 0.25:  # a later session, opening on the dashboard / home screen
                self._new_session(rng.randint(2 * 3600_000, 30 * 3600_000))
                self.referrer = "$direct"
                yield self._view(*(("/dashboard", "Dashboard") if not self.mobile else ("", "Home")))
            else:
                self._tick()
                yield self._identified_event(rng.choices(_MIX_KINDS, _MIX_WEIGHTS)[0])

    def _anonymous(self, count: int) -> Iterator[_Raw]:
        rng = self.rng
        pages = list(_MARKETING)
        rng.shuffle(pages)
        for i in range(count):
            if i:
                if not self.signs_up and i >= 3 and rng.random() < 0.4:
                    self._new_session(rng.randint(6 * 3600_000, 40 * 3600_000))
                    self.referrer, self.campaign = "$direct", None
                else:
                    self._tick()
            last = self.signs_up and i == count - 1
            if self.mobile:
                screen = "SignUp" if last else ("Onboarding" if i == 0 else rng.choice(_SCREENS[:2]))
                yield self._event("$screen", {"$screen_name": screen})
                continue
            path, title = ("/signup", "Sign up - Acme") if last else pages[i % len(pages)]
            extra: dict[str, Any] = {"title": title}
            if i == 0 and self.campaign:
                source, medium, name = self.campaign
                path = f"{path}?utm_source={source}&utm_medium={medium}&utm_campaign={name}"
                extra.update({"$utm_source": source, "$utm_medium": medium, "$utm_campaign": name})
            self.page = (path, title)
            yield self._event("$pageview", extra)

    def _sign_up(self) -> Iterator[_Raw]:
        rng = self.rng
        self._tick()
        self.plan = "starter" if rng.random() < 0.2 else "free"
        self.distinct_id, self.identified = self.user_id, True
        self.page = ("/onboarding", "Welcome")
        set_ = {"email": self.email, "name": self.name, "plan": self.plan, "created_at": _iso(self.clock)}
        set_once = {
            "$initial_referrer": self.referrer if not self.mobile else "$direct",
            "$initial_utm_source": self.campaign[0] if self.campaign else None,
        }
        yield self._event("$identify", {"$anon_distinct_id": self.anon_id}, set_, set_once)
        self._tick()
        yield self._event(
            "signed_up",
            {
                "signup_method": rng.choice(["email", "google", "github"]),
                "plan": self.plan,
                "form_variant": rng.choice(["control", "short_form"]),
                "referral_code": None if rng.random() < 0.8 else f"FRIEND{rng.randint(100, 999)}",
            },
        )

    def _identified_event(self, kind: str) -> _Raw:
        rng = self.rng
        if kind == "page":
            if self.mobile:
                return self._view("", rng.choice(_SCREENS))
            return self._view(*rng.choice(_APP_PAGES))
        if kind == "feature_used":
            feature = rng.choice(_FEATURES)
            extra = {
                "feature": feature,
                "duration_ms": rng.randint(200, 90_000),
                "success": rng.random() < 0.93,
                "usage_count": rng.randint(1, 40),
            }
            set_ = {"last_feature_used": feature} if rng.random() < 0.3 else None
            return self._event("feature_used", extra, set_)
        if kind == "project_created":
            self.projects += 1
            extra = {
                "project_id": f"prj_{rng.getrandbits(40):010x}",
                "project_name": rng.choice(["Website", "Mobile app", "Q1 launch", "Growth"]),
                "template": rng.choice(_TEMPLATES),
                "is_first_project": self.projects == 1,
            }
            return self._event("project_created", extra, {"projects_count": self.projects})
        if kind == "invited_teammate":
            self.team_size += 1
            mate = f"{rng.choice(_FIRST)}.{rng.choice(_LAST)}{rng.randint(1, 999)}"
            extra = {
                "invitee_email": f"{_ascii(mate).lower()}@example.com",
                "role": rng.choice(["member", "admin", "viewer"]),
                "invite_method": rng.choice(["email", "link"]),
                "team_size": self.team_size,
            }
            return self._event("invited_teammate", extra)
        if kind == "purchase":
            plan = rng.choice(["starter", "pro", "pro", "enterprise"])
            yearly = rng.random() < 0.25
            amount = round(_PRICES[plan] * (10 if yearly else 1) * rng.choice([1.0, 1.0, 0.8]), 2)
            currency = rng.choice(["USD", "USD", "EUR", "GBP"])
            self.plan = plan
            extra = {
                "amount": amount,
                "currency": currency,
                "sku": f"{plan}-{'yearly' if yearly else 'monthly'}",
                "quantity": 1,
                "billing_period": "yearly" if yearly else "monthly",
                "coupon": "NEWYEAR20" if amount < _PRICES[plan] * (10 if yearly else 1) else None,
                "order_id": f"ord_{rng.getrandbits(48):012x}",
            }
            return self._event(
                "purchase",
                extra,
                {"plan": plan, "last_purchase_at": _iso(self.clock)},
                {"first_purchase_at": _iso(self.clock)},
            )
        # "$set": a plan change without a purchase (upgrade, or downgrade from the top)
        step = _PLANS.index(self.plan)
        self.plan = _PLANS[step + 1] if step + 1 < len(_PLANS) else _PLANS[step - 1]
        return self._event("$set", None, {"plan": self.plan})


# -- shapes ------------------------------------------------------------------------------


def _shape(raw: _Raw, shape: str) -> dict[str, Any]:
    props = raw.properties
    set_ = props.get("$set")
    set_once = props.get("$set_once")
    if shape == "plugin":
        return {
            "uuid": raw.uuid,
            "event": raw.event,
            "distinct_id": raw.distinct_id,
            "team_id": _TEAM_ID,
            "ip": raw.ip,
            "properties": props,
            "timestamp": _iso(raw.ts),
            "$set": dict(set_ or {}),
            "$set_once": dict(set_once or {}),
        }
    if shape == "capture":
        return {
            "api_key": "phc_sample",
            "event": raw.event,
            "distinct_id": raw.distinct_id,
            "properties": props,
            "timestamp": _iso(raw.ts),
            "uuid": raw.uuid,
        }
    if shape == "webhook":
        timestamp = _iso(raw.ts)
        body: dict[str, Any] = {
            "event": {
                "uuid": raw.uuid,
                "event": raw.event,
                "distinct_id": raw.distinct_id,
                "properties": props,
                "elements_chain": "",
                "timestamp": timestamp,
                "url": f"{_SITE}/project/{_TEAM_ID}/events/{raw.uuid}/{timestamp}",
            }
        }
        if raw.person is not None:
            person = raw.person
            body["person"] = {
                "id": raw.person_id,
                "name": str(person.get("email") or person.get("name") or raw.distinct_id),
                "url": f"{_SITE}/project/{_TEAM_ID}/person/{quote(raw.distinct_id, safe='')}",
                "properties": person,
            }
        body["project"] = dict(_PROJECT)
        return body
    if shape == "export":
        lag = int(raw.uuid[-4:], 16) % 3000  # derived from the uuid: same content for every shape
        return {
            "uuid": raw.uuid,
            "event": raw.event,
            "distinct_id": raw.distinct_id,
            "person_id": raw.person_id,
            "properties": props,
            "person_properties": raw.person or {},
            "elements_chain": "",
            "timestamp": _iso_us(raw.ts),
            "created_at": _iso_us(raw.ts + 150 + lag),
            "_inserted_at": _iso_us(raw.ts + 2_000 + 2 * lag),
            "set": set_,
            "set_once": set_once,
        }
    raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")


# -- public API --------------------------------------------------------------------------


def _start_ms(start: datetime | None) -> int:
    moment = start or DEFAULT_START
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def iter_stream(
    people: int, seed: int = 0, events_per_person: int = 20, shape: str = "plugin", start: datetime | None = None
) -> Iterator[dict[str, Any]]:
    """Stream the events of ``people`` simulated people in exact timestamp order.

    Memory-light: people arrive every ~2 minutes and are simulated lazily, so only the
    people active around the current time are held (fine for millions of events).
    ``events_per_person`` is the average per person. Deterministic per ``seed``.
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")
    if people < 0 or events_per_person < 1:
        raise ValueError("people must be >= 0 and events_per_person >= 1")
    base = _start_ms(start)
    heap: list[tuple[int, int, _Raw, Iterator[_Raw]]] = []
    admitted = 0
    while True:
        # Person i never acts before base + i * gap, so once the earliest pending event is
        # before that bound, it is safe to emit: nobody not yet admitted can precede it.
        while admitted < people and (not heap or heap[0][0] >= base + admitted * _ARRIVAL_GAP_MS):
            events = iter(_Person(admitted, seed, events_per_person, base))
            first = next(events, None)
            if first is not None:
                heapq.heappush(heap, (first.ts, admitted, first, events))
            admitted += 1
        if not heap:
            return
        _, index, raw, events = heap[0]
        yield _shape(raw, shape)
        following = next(events, None)
        if following is None:
            heapq.heappop(heap)
        else:
            heapq.heapreplace(heap, (following.ts, index, following, events))


def generate_session_events(
    people: int = 20, seed: int = 0, events_per_person: int = 12, start: datetime | None = None, shape: str = "plugin"
) -> list[dict[str, Any]]:
    """All events of ``people`` simulated people, interleaved by timestamp (see module doc)."""
    return list(iter_stream(people, seed, events_per_person, shape, start))


def _dumps(event: Any) -> str:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))


def _write_lines(lines: Iterable[str], path: str | os.PathLike[str]) -> int:
    count = 0
    if os.fspath(path) == "-":
        for line in lines:
            sys.stdout.write(line + "\n")
            count += 1
        return count
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        for line in lines:
            handle.write(line + "\n")
            count += 1
    return count


def write_jsonl(events: Iterable[dict[str, Any]], path: str | os.PathLike[str]) -> int:
    """Write events as compact UTF-8 JSON lines to ``path`` (``-`` = stdout); return the count."""
    return _write_lines((_dumps(event) for event in events), path)


def _with_injected_errors(events: Sequence[dict[str, Any]]) -> list[str]:
    """JSONL lines with one truncated line (~1/3 in) and one event lacking ``distinct_id`` (~2/3)."""
    lines = [_dumps(event) for event in events]
    if len(events) < 6:
        raise ValueError("need at least 6 events to inject the two invalid lines")

    def pick(begin: int, names: tuple[str, ...]) -> int:
        for i in range(begin, len(events)):
            if _event_name(events[i]) in names:
                return i
        return begin

    broken = pick(len(events) // 3, ("$pageview",))
    lines[broken] = lines[broken][: len(lines[broken]) // 2]  # a write cut off half-way
    missing = pick(2 * len(events) // 3, ("feature_used", "invited_teammate"))
    orphan = dict(events[missing])
    orphan.pop("distinct_id", None)
    if isinstance(orphan.get("event"), dict):  # webhook shape
        orphan["event"] = {k: v for k, v in orphan["event"].items() if k != "distinct_id"}
    lines[missing] = _dumps(orphan)
    return lines


def _event_name(event: dict[str, Any]) -> Any:
    inner = event.get("event")
    return inner.get("event") if isinstance(inner, dict) else inner


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m posthog_customerio.samples --people N --seed S --shape plugin --out FILE``."""
    parser = argparse.ArgumentParser(
        prog="python -m posthog_customerio.samples", description="Generate realistic PostHog events as JSONL."
    )
    parser.add_argument("--people", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--events-per-person", type=int, default=12, help="average per person")
    parser.add_argument("--shape", choices=SHAPES, default="plugin")
    parser.add_argument(
        "--start",
        type=datetime.fromisoformat,
        default=None,
        help=f"ISO start time (default {DEFAULT_START.isoformat()})",
    )
    parser.add_argument(
        "--inject-errors", action="store_true", help="add one broken-JSON line and one event without distinct_id"
    )
    parser.add_argument("--out", default="-", help="output file (default: stdout)")
    args = parser.parse_args(argv)
    stream = iter_stream(args.people, args.seed, args.events_per_person, args.shape, args.start)
    if args.inject_errors:
        count = _write_lines(_with_injected_errors(list(stream)), args.out)
    else:
        count = write_jsonl(stream, args.out)
    print(f"wrote {count} lines to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
