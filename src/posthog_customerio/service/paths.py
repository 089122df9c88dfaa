"""Which paths are PostHog's (capture, flags, config, recordings, assets) and which are the operations API."""

from __future__ import annotations

__all__ = [
    "CAPTURE_PATHS",
    "CAPTURE_V1_PATH",
    "OWN_API",
    "POSTHOG_EXACT",
    "POSTHOG_PREFIXES",
    "is_ops_path",
    "is_posthog_path",
]

CAPTURE_PATHS = ("/batch", "/capture", "/e", "/i/v0/e")
#: posthog-python's ``capture_mode="v1"`` endpoint (Bearer auth, ``{"batch": [...]}``, per-event results)
CAPTURE_V1_PATH = "/i/v1/analytics/events"
#: PostHog paths besides capture: exact (with or without "/") and prefixes; with POSTHOG_HOST all are forwarded
POSTHOG_EXACT = ("/flags", "/decide", "/s")
POSTHOG_PREFIXES = ("/array/", "/s/", "/static/", "/i/", "/api/")
#: this service's own paths under /api/: never forwarded, never CORS-enabled
OWN_API = ("/api/status", "/api/dead-letters", "/api/people")


def is_posthog_path(path: str) -> bool:
    """Whether ``path`` is one of PostHog's browser-facing paths (capture, flags, config, recordings, assets)."""
    bare = path.rstrip("/") or "/"
    if bare in CAPTURE_PATHS or bare in POSTHOG_EXACT:
        return True
    if any(bare == own or bare.startswith(own + "/") for own in OWN_API):
        return False
    return path.startswith(POSTHOG_PREFIXES)


def is_ops_path(path: str, proxying: bool = False) -> bool:
    """``/status`` and ``/api/*``: the endpoints that show or change people's data.

    As a PostHog proxy, only this service's own ``/api/*`` paths; PostHog's are forwarded.
    """
    bare = path.rstrip("/")
    if bare == "/status" or any(bare == own or bare.startswith(own + "/") for own in OWN_API):
        return True
    return not proxying and (bare == "/api" or path.startswith("/api/"))
