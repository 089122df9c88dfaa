"""Compatibility re-export: the Track API client now lives in :mod:`.output` (``output/track.py``)."""

from __future__ import annotations

from .output.base import (
    RETRY_AFTER_MAX_S,
    AuthError,
    Outcome,
    SendResult,
    classify,
    parse_retry_after,
)
from .output.track import REGION_URLS, TrackClient, resolve_track_url
from .output.track_v1 import v1_request

__all__ = [
    "REGION_URLS",
    "RETRY_AFTER_MAX_S",
    "AuthError",
    "Outcome",
    "SendResult",
    "TrackClient",
    "classify",
    "parse_retry_after",
    "resolve_track_url",
    "v1_request",
]
