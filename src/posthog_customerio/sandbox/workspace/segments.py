"""Manual segments: they exist once people are added (no App API here to create them)."""

from __future__ import annotations

from typing import Any

from ..operations import EMAIL_RE
from .people import Directory

__all__ = ["Segments"]


class Segments:
    """Manual segment id -> member cio_ids (in the order they were added)."""

    def __init__(self) -> None:
        self._segments: dict[str, dict[str, None]] = {}

    def views(self) -> dict[str, list[str]]:
        """Manual segments: segment id -> member cio_ids."""
        return {segment: list(members) for segment, members in self._segments.items()}

    def update(self, directory: Directory, segment_id: str, ids: list[Any], id_type: str, add: bool) -> None:
        """Add people to (or remove them from) a segment; unknown people and mistyped values are ignored."""
        members = self._segments.setdefault(segment_id, {})
        for value in ids:
            if not isinstance(value, str) or not value:
                continue
            if id_type == "email" and not EMAIL_RE.fullmatch(value):
                continue  # "values in the ids array that don't match the id_type" are ignored
            person = directory.find((id_type, value))
            if person is None:
                continue
            if add:
                members[person.cio_id] = None
            else:
                members.pop(person.cio_id, None)

    def forget_person(self, cio_id: str) -> None:
        """A deleted person leaves every segment."""
        for members in self._segments.values():
            members.pop(cio_id, None)

    def merge_person(self, secondary: str, primary: str) -> None:
        """Merge: the primary joins the secondary's segments."""
        for members in self._segments.values():
            if secondary in members:
                members[primary] = None
