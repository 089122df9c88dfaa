"""What one event reads and produces: :class:`Mapped` (operations, changed states, notes) and the
:class:`Book` of the person states it reads and changes (copies; inputs are never mutated).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..operations import Operation
from ..state import PersonState

__all__ = ["Book", "Mapped", "forget"]


@dataclass(slots=True)
class Mapped:
    """What one event produced: operations, changed person states, skip reason, notes."""

    operations: list[Operation] = field(default_factory=list)
    states: dict[str, PersonState] = field(default_factory=dict)
    skipped: str | None = None
    notes: Counter[str] = field(default_factory=Counter)
    #: (anonymous_id, identifiers, person_key): anonymous events of that visitor still
    #: queued become this person's events, queued after these operations
    adopt: list[tuple[str, dict[str, str], str]] = field(default_factory=list)


class Book:
    """The states one event reads and changes (copies; inputs are never mutated)."""

    def __init__(self, states: Mapping[str, PersonState], result: Mapped) -> None:
        self.states = states
        self.result = result

    def get(self, distinct_id: str) -> PersonState:
        """The (copied) state of exactly this distinct_id."""
        if distinct_id in self.result.states:
            return self.result.states[distinct_id]
        known = self.states.get(distinct_id)
        state = known.copy() if known is not None else PersonState(distinct_id)
        self.result.states[distinct_id] = state
        return state

    def person(self, distinct_id: str) -> PersonState:
        """The state of the person this distinct_id belongs to (following merges).

        A link to a person deleted since (another ``epoch``) is forgotten on the way: PostHog
        deletes a person with all its distinct_ids.
        """
        state = self.get(distinct_id)
        for _ in range(8):
            if not state.merged_into or state.merged_into == state.distinct_id:
                break
            target = self.get(state.merged_into)
            if target.epoch != state.merged_epoch:
                forget(state)
                break
            state = target
        return state

    def known(self, distinct_id: str) -> bool:
        """Whether an event of this distinct_id itself was mapped before."""
        return self.get(distinct_id).seen


def forget(state: PersonState, epoch: int | None = None) -> None:
    """Reset a state to a never-seen distinct_id (keeping ``epoch`` or the given one)."""
    fresh = PersonState(state.distinct_id, epoch=state.epoch if epoch is None else epoch)
    for name in PersonState.__slots__:
        setattr(state, name, getattr(fresh, name))
