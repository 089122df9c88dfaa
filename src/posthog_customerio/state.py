"""What we remember per PostHog distinct_id, stored in SQLite.

``identified`` and ``email`` drive the anonymous-user filter and identify-by-email;
``created``, ``email_sent`` and the per-attribute ``digests`` let the mapping skip
identify calls that would change nothing.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

__all__ = ["PersonState", "load_states", "save_states", "count_persons"]


@dataclass(slots=True)
class PersonState:
    """Remembered facts about one distinct_id."""

    distinct_id: str
    identified: bool = False
    email: str | None = None
    created: bool = False
    email_sent: str | None = None
    digests: dict[str, str] = field(default_factory=dict)

    def copy(self) -> PersonState:
        """An independent copy (the mapping never mutates its inputs)."""
        return replace(self, digests=dict(self.digests))


_CHUNK = 500


def load_states(conn: sqlite3.Connection, distinct_ids: Iterable[str]) -> dict[str, PersonState]:
    """Load the states of the given distinct_ids (absent ones are left out)."""
    wanted = list(dict.fromkeys(distinct_ids))
    found: dict[str, PersonState] = {}
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            "SELECT distinct_id, identified, email, created, email_sent, digests"
            f" FROM persons WHERE distinct_id IN ({marks})",
            chunk,
        )
        for distinct_id, identified, email, created, email_sent, digests in rows:
            found[distinct_id] = PersonState(
                distinct_id, bool(identified), email, bool(created), email_sent, json.loads(digests)
            )
    return found


def save_states(conn: sqlite3.Connection, states: Iterable[PersonState]) -> None:
    """Insert or replace the given states (inside the caller's transaction)."""
    conn.executemany(
        "INSERT OR REPLACE INTO persons"
        " (distinct_id, identified, email, created, email_sent, digests) VALUES (?,?,?,?,?,?)",
        [
            (
                s.distinct_id,
                int(s.identified),
                s.email,
                int(s.created),
                s.email_sent,
                json.dumps(s.digests, separators=(",", ":"), sort_keys=True),
            )
            for s in states
        ],
    )


def count_persons(conn: sqlite3.Connection) -> int:
    """How many distinct_ids we remember."""
    return int(conn.execute("SELECT COUNT(*) FROM persons").fetchone()[0])
