"""The sandbox's request log: every Track API request it answered (bounded), counted by status."""

from __future__ import annotations

import collections
import threading
from typing import Any

from .wire import BAD_JSON, NO_BODY

MAX_LOGGED_REQUESTS = 200_000


def logged_body(body: bytes, parsed: Any) -> Any:
    """What the log keeps of a body: the parsed JSON, the text when it is not JSON, ``None`` when empty."""
    if parsed is NO_BODY:
        return None
    if parsed is BAD_JSON:
        return body.decode("utf-8", errors="replace")
    return parsed


class RequestLog:
    """The last :data:`MAX_LOGGED_REQUESTS` requests, oldest first, and counters (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget every entry and counter."""
        with self._lock:
            self._entries: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_LOGGED_REQUESTS)
            self._requests = 0
            self._internal_errors = 0
            self._by_status: collections.Counter[str] = collections.Counter()

    def append(self, entry: dict[str, Any]) -> None:
        """Log a request and count its status."""
        with self._lock:
            self._entries.append(entry)
            self._requests += 1
            self._by_status[str(entry["status"])] += 1

    def count_internal_error(self) -> None:
        """Count a request the sandbox itself failed on (answered 500)."""
        with self._lock:
            self._internal_errors += 1

    def entries(self) -> list[dict[str, Any]]:
        """Copies of the logged requests, oldest first."""
        with self._lock:
            return [dict(entry) for entry in self._entries]

    def counts(self) -> tuple[int, dict[str, int], int]:
        """``(requests, requests by status, internal errors)``."""
        with self._lock:
            return self._requests, dict(self._by_status), self._internal_errors
