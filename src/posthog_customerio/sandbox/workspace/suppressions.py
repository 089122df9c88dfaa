"""Suppressed identifiers, and the operations ignored because they reference one.

Suppress [suppress, .../track-customers/suppress/] suppresses the path identifier and the person's id and
email; "any future API calls or operations referencing the specified ID are ignored": answered 200, not
applied (``/_sandbox/ignored``). Unsuppress [unsuppress] frees the id and email together.
"""

from __future__ import annotations

import collections
import itertools
from typing import Any

from ..operations import Op
from .records import MAX_LOGGED_FAILURES

__all__ = ["Suppressions", "suppression_key"]


def suppression_key(kind: str, value: str) -> tuple[str, str] | None:
    """The key an identifier is suppressed under (emails case-insensitively); ``None`` for a cio_id."""
    if kind == "id":
        return ("id", value)
    if kind == "email":
        return ("email", value.lower())
    return None


class Suppressions:
    """Suppressed identifiers by suppression (a person's id and email go together), and the ignored operations."""

    def __init__(self) -> None:
        # suppressed identifiers ("id", value) / ("email", lowercased) -> suppression number; the numbers'
        # identifier sets (a person's id and email are suppressed, and unsuppressed, together)
        self._suppressed: dict[tuple[str, str], int] = {}
        self._suppressions: dict[int, list[tuple[str, str]]] = {}
        self._seq = itertools.count(1)
        self._ignored: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_LOGGED_FAILURES)
        self.ignored_count = 0

    def __len__(self) -> int:
        """How many identifiers are suppressed."""
        return len(self._suppressed)

    def views(self) -> list[dict[str, Any]]:
        """One entry per suppression: ``{"id": ..., "email": ...}`` (absent = none)."""
        return [dict(keys) for keys in self._suppressions.values()]

    def ignored(self) -> list[dict[str, Any]]:
        """Operations accepted with 200 but ignored because they reference a suppressed identifier."""
        return [dict(entry) for entry in self._ignored]

    def is_suppressed(self, who: tuple[str, str]) -> bool:
        """Whether this identifier is suppressed."""
        key = suppression_key(*who)
        return key is not None and key in self._suppressed

    def reference(self, op: Op) -> tuple[str, str] | None:
        """The first suppressed identifier ``op`` addresses or sets, else ``None``."""
        for candidate in [op.who, op.primary, op.secondary, *op.ids.items()]:
            if candidate is not None and self.is_suppressed(candidate):
                return candidate
        return None

    def ignore(self, op: Op, who: tuple[str, str], now: float) -> None:
        """Record ``op`` as ignored because it references the suppressed ``who`` (still 200)."""
        self.ignored_count += 1
        self._ignored.append(
            {
                "time": now,
                "type": op.type,
                "action": op.action,
                "identifiers": {who[0]: who[1]},
                "message": f"{who[0]} is suppressed",
            }
        )

    def suppress(self, keys: list[tuple[str, str]]) -> None:
        """Suppress these identifier keys together (those already suppressed stay in their suppression)."""
        keys = [key for key in keys if key not in self._suppressed]
        if keys:
            number = next(self._seq)
            self._suppressions[number] = keys
            for key in keys:
                self._suppressed[key] = number

    def unsuppress(self, who: tuple[str, str]) -> None:
        """Free the identifier and those suppressed with it."""
        key = suppression_key(*who)
        number = None if key is None else self._suppressed.get(key)
        if number is None:
            return
        for other in self._suppressions.pop(number):
            self._suppressed.pop(other, None)
