"""What did we send for this person? One person's record, read from the database alone.

Found by distinct_id (any of theirs: merges are followed) or by email (case-insensitive). The record:
their distinct_ids and merges, the identifier Customer.io knows them by (``IDENTIFY_BY_EMAIL``), the
attributes last sent with the event time of each (names only: we keep digests, not values), the
operations still queued, the last settled ones (``deliveries``, bounded per person) and dead letters.
Shown by ``posthog-customerio person`` and ``GET /api/people/{id}``; no attribute value, no secret.

Also what an operator does to one person, for the CLI and the service alike: :func:`delete_person`
(a PostHog person deletion, through the ingestion like any event) and :func:`unsuppress`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .mapping import known_identifiers, person_identifiers
from .operations import Operation
from .outbox import DELIVERIES_KEPT
from .runtime import Runtime
from .sources import PostHogEvent
from .state import PersonState, load_states, save_states
from .storage import Transaction

__all__ = ["Deletion", "delete_person", "lookup_person", "person_text", "unsuppress"]

#: queued operations and dead letters shown at most
SHOWN = 50
#: merge chains are short; bound every walk
_DEPTH = 8


def lookup_person(runtime: Runtime, query: str) -> dict[str, Any] | None:
    """The record of the person ``query`` names (a distinct_id or an email); ``None`` when unknown."""
    if "\x00" in query:  # never stored (PostgreSQL text cannot hold it): nobody has it
        return None
    with runtime.db.reading() as tx:
        found = _find(tx, query)
        if found is None:
            return None
        person, others = found
        members = _members(tx, person)
        keys = [person.distinct_id, *(member.distinct_id for member in members)]
        queued = tx.queued_of(keys, SHOWN)
        deliveries = tx.deliveries_of(keys, DELIVERIES_KEPT * 2)
        letters = tx.dead_letters_of(keys, SHOWN)
    now = time.time()
    return {
        "query": query,
        "distinct_id": person.distinct_id,
        "email": person.email,
        "identified": person.identified,
        "created": person.created,
        "customerio_identifier": person_identifiers(person, runtime.settings.mapping_config()),
        "identifiers": known_identifiers(person.distinct_id, person),
        "distinct_ids": keys,
        "merges": [_merge(member) for member in members],
        "attributes": _attributes(person),
        "queued": [_queued(row, now) for row in queued],
        "deliveries": [_delivery(row) for row in deliveries],
        "dead_letters": [_dead_letter(row) for row in letters],
        "same_email": others,
    }


def _find(tx: Transaction, query: str) -> tuple[PersonState, list[str]] | None:
    """The person (merges followed) and, when found by email, the other people with that email."""
    states = load_states(tx, [query])
    if query in states:
        return _resolve(states[query], states), []
    ids = [str(row.distinct_id) for row in tx.persons_by_email(query, SHOWN)]
    states = load_states(tx, ids)
    people = list({person.distinct_id: person for person in (_resolve(states[i], states) for i in ids)}.values())
    return (people[0], [other.distinct_id for other in people[1:]]) if people else None


def _resolve(state: PersonState, states: dict[str, PersonState], *, forget_stale: bool = False) -> PersonState:
    """The person a distinct_id belongs to: its merge target, while that link holds (same epoch).

    ``forget_stale``: as the mapping addresses them, a link to a person deleted since (another epoch)
    leaves a never-seen distinct_id (nothing of what it had is used).
    """
    for _ in range(_DEPTH):
        target = states.get(state.merged_into) if state.merged_into else None
        if target is None or target.distinct_id == state.distinct_id:
            break
        if target.epoch != state.merged_epoch:
            return PersonState(state.distinct_id, epoch=state.epoch) if forget_stale else state
        state = target
    return state


@dataclass(frozen=True)
class Deletion:
    """A person deletion queued: the identifiers it goes by, and whether this data dir had created them."""

    identifiers: list[dict[str, str]]
    unknown: bool


def delete_person(runtime: Runtime, distinct_id: str) -> Deletion:
    """Queue a PostHog person deletion (``$delete_person``) of ``distinct_id``, through the ingestion like any
    event (after the person's queued operations; ``SUPPRESS_ON_DELETE`` chooses delete or suppress).

    It goes by every identifier the person may have (:func:`~.mapping.known_identifiers`), whether or not
    this data dir created them.
    """
    with runtime.db.reading() as tx:
        states = load_states(tx, [distinct_id])
    person = _resolve(states.get(distinct_id) or PersonState(distinct_id), states, forget_stale=True)
    identifiers = known_identifiers(distinct_id, person)
    report = runtime.ingestor.ingest([PostHogEvent("$delete_person", distinct_id, datetime.now(UTC))], source="cli")
    return Deletion(identifiers, unknown=report.notes["delete_unknown_person"] > 0)


def unsuppress(runtime: Runtime, distinct_id: str) -> list[dict[str, str]]:
    """Queue an unsuppress of every identifier the person of ``distinct_id`` may have; returns them.

    The suppression deleted the profile: the person is remembered as not created (no attributes, no
    relationships sent), so their next event creates it again with everything we know.
    """
    with runtime.db.transaction() as tx:
        states = load_states(tx, [distinct_id])
        person = _resolve(states.get(distinct_id) or PersonState(distinct_id), states, forget_stale=True)
        identifiers = known_identifiers(distinct_id, person)
        payloads = ({"type": "person", "identifiers": each, "action": "unsuppress"} for each in identifiers)
        runtime.outbox.enqueue(tx, [Operation(person.distinct_id, payload) for payload in payloads])
        person.created, person.email_sent = False, None
        person.digests, person.stamps, person.relationships = {}, {}, []
        save_states(tx, [person])
    return identifiers


def _members(tx: Transaction, person: PersonState) -> list[PersonState]:
    """The distinct_ids merged into ``person`` (directly or through another), links still valid."""
    found: dict[str, PersonState] = {}
    targets = {person.distinct_id: person}
    for _ in range(_DEPTH):
        ids = [str(row.distinct_id) for row in tx.persons_merged_into(list(targets))]
        states = load_states(tx, ids)
        fresh = {
            i: states[i]
            for i in ids
            if i not in found
            and i != person.distinct_id
            and states[i].merged_epoch == targets[states[i].merged_into or ""].epoch
        }
        if not fresh:
            break
        found.update(fresh)
        targets = fresh
    return list(found.values())


def _merge(state: PersonState) -> dict[str, Any]:
    return {
        "distinct_id": state.distinct_id,
        "merged_into": state.merged_into,
        "by": "identify" if state.merged_by_identify else "alias",
    }


def _attributes(person: PersonState) -> list[dict[str, Any]]:
    """Attribute names last sent, each with the event time of its newest write (names only)."""
    names = sorted(set(person.digests) | set(person.stamps))
    return [{"name": name, "at": person.stamps.get(name)} for name in names]


def _what(payload: str) -> tuple[Any, Any]:
    try:
        parsed = json.loads(payload)
    except ValueError:
        return None, None
    return (parsed.get("action"), parsed.get("name")) if isinstance(parsed, dict) else (None, None)


def _queued(row: Sequence[Any], now: float) -> dict[str, Any]:
    seq, key, kind, payload, enqueued_at, attempts, last_error, lease_until = row
    action, name = _what(payload)
    return {
        "seq": seq,
        "distinct_id": key,
        "kind": kind,
        "action": action,
        "name": name,
        "enqueued_at": enqueued_at,
        "attempts": attempts,
        "last_error": last_error,
        "leased": lease_until is not None and lease_until > now,
    }


def _delivery(row: Sequence[Any]) -> dict[str, Any]:
    key, seq, kind, action, name, outcome, at = row
    return {"seq": seq, "distinct_id": key, "kind": kind, "action": action, "name": name, "outcome": outcome, "at": at}


def _dead_letter(row: Sequence[Any]) -> dict[str, Any]:
    letter_id, seq, key, payload, reason, status, _response, attempts, _enqueued, failed_at, kind = row
    action, name = _what(payload)
    return {
        "id": letter_id,
        "seq": seq,
        "distinct_id": key,
        "kind": kind,
        "action": action,
        "name": name,
        "reason": reason,
        "status": status,
        "attempts": attempts,
        "failed_at": failed_at,
    }


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _what_text(op: dict[str, Any]) -> str:
    """``event clicked``; the kind first when it is not a person's operation (``anonymous event …``)."""
    parts = (op["kind"] if op["kind"] != "person" else None, op["action"], op["name"])
    return " ".join(str(part) for part in parts if part) or "-"


def _line(label: str, value: str) -> str:
    return f"{label:<27}{value}"


def person_text(record: dict[str, Any]) -> str:
    """The record as lines for a terminal."""
    state = ", ".join(
        part
        for part, shown in (("identified", record["identified"]), ("created in Customer.io", record["created"]))
        if shown
    )
    known = " ".join(f"{kind} {value}" for kind, value in record["customerio_identifier"].items())
    lines = [
        _line("person", f"{record['distinct_id']}" + (f" ({state})" if state else "")),
        _line("email", record["email"] or "-"),
        _line("Customer.io knows them as", known),
        _line("distinct_ids", ", ".join(record["distinct_ids"])),
    ]
    lines += [_line("merged", f"{m['distinct_id']} -> {m['merged_into']} ({m['by']})") for m in record["merges"]]
    attributes = ", ".join(f"{a['name']} ({_when(a['at'])})" for a in record["attributes"])
    lines.append(_line("attributes last sent", attributes or "-"))
    lines.append(_line("queued", str(len(record["queued"]))))
    for op in record["queued"]:
        lines.append(f"  #{op['seq']} {_what_text(op)}, enqueued {_when(op['enqueued_at'])}, {op['attempts']} attempts")
    lines.append(_line("recent deliveries", str(len(record["deliveries"]))))
    for done in record["deliveries"]:
        lines.append(f"  {_when(done['at'])} {done['outcome']} {_what_text(done)}")
    lines.append(_line("dead letters", str(len(record["dead_letters"]))))
    for letter in record["dead_letters"]:
        what = f"{letter['action'] or ''} {letter['name'] or ''}".strip()
        lines.append(f"  #{letter['id']} {what}: {letter['reason']}")
    if record["same_email"]:
        lines.append(_line("same email", ", ".join(record["same_email"])))
    return "\n".join(lines)
