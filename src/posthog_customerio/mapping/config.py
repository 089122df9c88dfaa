"""The mapping's options: :class:`MappingConfig` (the seed destination's options and ours)."""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["DEFAULT_EVENTS_TO_SKIP", "AnonymousEvents", "AnonymousMode", "MappingConfig"]


AnonymousMode = Literal["all", "identified", "with_email"]
AnonymousEvents = Literal["anonymous", "person"]
#: ``EVENTS_TO_SKIP``'s default: PostHog's own instrumentation, never a messaging signal.
DEFAULT_EVENTS_TO_SKIP = ("$pageleave", "$web_vitals", "$feature_flag_called", "$$heatmap", "$snapshot")


@dataclass(frozen=True, slots=True)
class MappingConfig:
    """The mapping's options (defaults = the service's defaults)."""

    identify_by_email: bool = False
    anonymous_mode: AnonymousMode = "all"
    events_to_send: frozenset[str] = frozenset()
    merge_people: bool = True
    anonymous_events: AnonymousEvents = "anonymous"
    group_type_map: Mapping[str, str] = field(default_factory=dict)
    suppress_on_delete: bool = False
    truncate: bool = True
    properties_to_include: tuple[str, ...] = ()
    properties_to_exclude: tuple[str, ...] = ()
    event_name_map: Mapping[str, str] = field(default_factory=dict)
    events_to_skip: tuple[str, ...] = ()
    convert_dates: bool = True
    #: leave out the message activity this service captured into PostHog (:mod:`.activity`): the loop guard
    skip_customerio_activity: bool = True

    def skips(self, name: str) -> bool:
        """Whether ``EVENTS_TO_SKIP`` (names or globs) drops this event name."""
        return _matcher(self.events_to_skip)(name) is not None

    def keeps(self, key: str) -> bool:
        """Whether a property passes ``PROPERTIES_TO_INCLUDE`` / ``PROPERTIES_TO_EXCLUDE``."""
        if not self.properties_to_include and not self.properties_to_exclude:
            return True
        if self.properties_to_include and _matcher(self.properties_to_include)(key) is None:
            return False
        return not self.properties_to_exclude or _matcher(self.properties_to_exclude)(key) is None


@functools.lru_cache(maxsize=64)
def _matcher(globs: tuple[str, ...]) -> Callable[[str], re.Match[str] | None]:
    """Whether a name matches any of ``globs`` (as ``fnmatch.fnmatchcase`` would), in one compiled pattern."""
    return re.compile("|".join(f"(?:{fnmatch.translate(glob)})" for glob in globs)).match
