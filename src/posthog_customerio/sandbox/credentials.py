"""Who may call the sandbox's Track API: HTTP Basic ``site_id:api_key``, changeable at run time (revoked keys)."""

from __future__ import annotations

import base64
import binascii
import hmac
import threading

#: The Track API's answer to missing or wrong credentials.
UNAUTHORIZED = {"meta": {"error": "Unauthorized request"}}
#: Track API routes that need no credentials (spec: pushMetrics and metrics have ``security: []``).
OPEN_ROUTES = (["v1", "push", "events"], ["v1", "metrics"])


def decode_basic(header: str | None) -> str | None:
    """The decoded ``user:password`` text of a Basic ``Authorization`` header, else ``None``."""
    if not header or header[:6].lower() != "basic ":
        return None
    try:
        return base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


class Credentials:
    """The accepted ``(site_id, api_key)``; :meth:`reset` restores the initial pair."""

    def __init__(self, site_id: str, api_key: str) -> None:
        self._lock = threading.Lock()
        self._initial = (site_id, api_key)
        self.current = self._initial

    def set(self, site_id: str, api_key: str) -> None:
        """Accept only these credentials from now on."""
        with self._lock:
            self.current = (site_id, api_key)

    def reset(self) -> None:
        """Accept the initial credentials again."""
        with self._lock:
            self.current = self._initial

    def authorized(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries the accepted Basic credentials (compared in constant time)."""
        decoded = decode_basic(header)
        if decoded is None:
            return False
        site_id, sep, api_key = decoded.partition(":")
        expected_site, expected_key = self.current
        site_ok = hmac.compare_digest(site_id.encode(), expected_site.encode())
        key_ok = hmac.compare_digest(api_key.encode(), expected_key.encode())
        return bool(sep) and site_ok and key_ok
