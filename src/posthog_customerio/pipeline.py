"""Ingestion: parsed events -> mapping -> person state + outbox, in one transaction.

Used by every source (the ``send`` command, the HTTP receiver). A batch of events
either lands completely (state changes and operations committed together) or not
at all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from .db import Database
from .mapping import MappingConfig, involved_distinct_ids, map_event
from .outbox import Outbox
from .sources import PostHogEvent
from .state import PersonState, load_states, save_states

__all__ = ["IngestReport", "Ingestor"]


@dataclass(slots=True)
class IngestReport:
    """What one or more ingested batches produced."""

    events: int = 0
    operations: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)

    def add(self, other: IngestReport) -> None:
        """Accumulate another report into this one."""
        self.events += other.events
        self.operations += other.operations
        self.skipped.update(other.skipped)
        self.actions.update(other.actions)


class Ingestor:
    """Maps events and stores the result durably."""

    def __init__(self, db: Database, outbox: Outbox, config: MappingConfig) -> None:
        self.db = db
        self.outbox = outbox
        self.config = config

    def ingest(self, events: Sequence[PostHogEvent]) -> IngestReport:
        """Map and enqueue ``events`` atomically; returns what they produced."""
        report = IngestReport(events=len(events))
        if not events:
            return report
        with self.db.transaction() as conn:
            wanted = [distinct_id for event in events for distinct_id in involved_distinct_ids(event)]
            states: dict[str, PersonState] = load_states(conn, wanted)
            changed: dict[str, PersonState] = {}
            operations = []
            for event in events:
                mapped = map_event(event, states, self.config)
                states.update(mapped.states)
                changed.update(mapped.states)
                operations.extend(mapped.operations)
                if mapped.skipped:
                    report.skipped[mapped.skipped] += 1
            save_states(conn, changed.values())
            report.operations = self.outbox.enqueue(conn, operations)
        for operation in operations:
            report.actions[operation.action] += 1
        return report
