"""What we remember per PostHog distinct_id, stored through the storage interface (:mod:`.storage`).

``identified`` and ``email`` drive the anonymous-user filter and identify-by-email;
``created``, ``email_sent`` and the per-attribute ``digests`` let the mapping skip
identify calls that would change nothing; ``merged_into`` makes a distinct_id that
PostHog merged into another person resolve to that person; the rest supports
anonymous events and group relationships.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .storage import PersonRow, Transaction

__all__ = ["PersonState", "count_persons", "load_states", "save_states"]


@dataclass(slots=True)
class PersonState:
    """Remembered facts about one distinct_id."""

    distinct_id: str
    identified: bool = False
    email: str | None = None
    created: bool = False
    email_sent: str | None = None
    digests: dict[str, str] = field(default_factory=dict)
    merged_into: str | None = None
    #: anonymous events were sent with this distinct_id as ``anonymous_id``
    anonymous_sent: bool = False
    #: anonymous_ids whose events the next identify must attach
    pending_anonymous_ids: list[str] = field(default_factory=list)
    #: attributes learnt while the person could not be sent (anonymous mode)
    pending: dict[str, Any] = field(default_factory=dict)
    #: "object_type_id:object_id" of relationships already added
    relationships: list[str] = field(default_factory=list)
    #: an event marked this distinct_id as an anonymous visitor (device id, ``$is_identified`` false)
    anonymous_seen: bool = False
    #: attribute -> event time (Unix s) of the newest write we know of: what Customer.io holds follows it
    stamps: dict[str, int] = field(default_factory=dict)
    #: bumped when the person is deleted: distinct_ids merged in an earlier epoch are forgotten
    epoch: int = 0
    #: the ``epoch`` of ``merged_into`` when this distinct_id was merged into it
    merged_epoch: int = 0
    #: ``merged_into`` came from an ``$identify`` (not an alias): an event of this distinct_id saying
    #: ``$is_identified: true`` proves it is someone else, and undoes the link
    merged_by_identify: bool = False
    #: an ``$identify`` named this distinct_id as its anonymous id before we had any proof that it is
    #: anonymous (a cold start): the person who would take it, once its own events show it anonymous
    claimed_by: str | None = None
    #: an event of this distinct_id itself was mapped (False: only named by another's identity event)
    seen: bool = False
    #: one of those events was processed for a person (not ``$process_person_profile: false``): PostHog has a
    #: person for this distinct_id
    processed: bool = False
    #: fingerprint of the PostHog person ``sync-persons`` last brought here (unchanged: nothing to do)
    synced: str | None = None

    def copy(self) -> PersonState:
        """An independent copy (the mapping never mutates its inputs; one per state an event reads, so it
        sets the slots directly rather than through ``dataclasses.replace``, four times slower)."""
        new = object.__new__(PersonState)
        for name, value in zip(_FIELDS, _values(self), strict=True):
            setattr(new, name, value)
        new.digests = dict(self.digests)
        new.pending_anonymous_ids = list(self.pending_anonymous_ids)
        new.pending = dict(self.pending)
        new.relationships = list(self.relationships)
        new.stamps = dict(self.stamps)
        return new

    def _extra(self) -> str:
        extra: dict[str, Any] = {}
        if self.anonymous_sent:
            extra["a"] = 1
        if self.pending_anonymous_ids:
            extra["p"] = self.pending_anonymous_ids
        if self.pending:
            extra["u"] = self.pending
        if self.relationships:
            extra["r"] = self.relationships
        if self.anonymous_seen:
            extra["s"] = 1
        if self.stamps:
            extra["t"] = self.stamps
        if self.epoch:
            extra["e"] = self.epoch
        if self.merged_epoch:
            extra["m"] = self.merged_epoch
        if self.merged_by_identify:
            extra["i"] = 1
        if self.claimed_by is not None:
            extra["c"] = self.claimed_by
        if not self.seen:
            extra["v"] = 0  # rows written before this field existed were all seen
        if self.processed != self.seen:
            extra["P"] = int(self.processed)  # rows written before this field existed: as seen
        if self.synced is not None:
            extra["y"] = self.synced
        return json.dumps(extra, separators=(",", ":"), sort_keys=True)


#: every field of :class:`PersonState`, and a getter of all their values at once (for :meth:`PersonState.copy`)
_FIELDS = tuple(item.name for item in fields(PersonState))
_values = operator.attrgetter(*_FIELDS)


def _from_row(row: PersonRow) -> PersonState:
    distinct_id, identified, email, created, email_sent, digests, merged_into, extra = row
    more = json.loads(extra) if extra and extra != "{}" else {}
    return PersonState(
        distinct_id,
        bool(identified),
        email,
        bool(created),
        email_sent,
        json.loads(digests),
        merged_into,
        bool(more.get("a")),
        list(more.get("p", ())),
        dict(more.get("u", {})),
        list(more.get("r", ())),
        bool(more.get("s")),
        {key: int(value) for key, value in more.get("t", {}).items()},
        int(more.get("e", 0)),
        int(more.get("m", 0)),
        bool(more.get("i")),
        more.get("c"),
        bool(more.get("v", 1)),
        bool(more.get("P", more.get("v", 1))),
        more.get("y"),
    )


def load_states(conn: Transaction, distinct_ids: Iterable[str]) -> dict[str, PersonState]:
    """Load the states of the given distinct_ids and of everyone they were merged into."""
    found: dict[str, PersonState] = {}
    wanted = list(dict.fromkeys(distinct_ids))
    for _ in range(8):  # merge chains are short; bound the walk
        missing = [distinct_id for distinct_id in wanted if distinct_id not in found]
        if not missing:
            break
        for row in conn.select_persons(missing):
            found[row.distinct_id] = _from_row(row)
        linked = (link for state in found.values() for link in (state.merged_into, state.claimed_by) if link)
        wanted = [link for link in linked if link not in found]
    return found


def save_states(conn: Transaction, states: Iterable[PersonState]) -> None:
    """Insert or replace the given states (inside the caller's transaction)."""
    from .storage.rows import PersonRow  # here, not at the top: the mapping (which needs PersonState) loads no storage

    conn.upsert_persons(
        PersonRow(
            s.distinct_id,
            int(s.identified),
            s.email,
            int(s.created),
            s.email_sent,
            json.dumps(s.digests, separators=(",", ":"), sort_keys=True),
            s.merged_into,
            s._extra(),
        )
        for s in states
    )


def count_persons(conn: Transaction) -> int:
    """How many distinct_ids we remember."""
    return conn.count_persons()
