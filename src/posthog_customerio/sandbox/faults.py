"""Fault injection for the sandbox's APIs: answer with a status (429/5xx/401...), a delay, or both.

Rules apply first-in-first-out, one rule per request: a rule covers the next ``count`` requests or every
request for ``duration_s`` seconds; a rule with neither applies once. The Track API (:mod:`.api`) and the
Pipelines API (:mod:`.pipelines`) each have their own :class:`FaultRules`; an injected answer's body is the
rule's, else the API's error shape (:func:`fault_response`).
"""

from __future__ import annotations

import http
import itertools
import threading
import time
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

from .credentials import UNAUTHORIZED
from .wire import json_response


@dataclass(slots=True)
class Fault:
    """One rule: the status to answer (``None``: only delay), uses left, deadline, header, delay, body."""

    id: int
    status: int | None
    remaining: int | None
    until: float | None
    retry_after: str | None
    delay_s: float
    body: Any

    def active(self, now: float) -> bool:
        """Whether uses and time are left."""
        return (self.remaining is None or self.remaining > 0) and (self.until is None or now < self.until)

    def view(self, now: float) -> dict[str, Any]:
        """The rule as JSON (``seconds_left`` of a timed rule)."""
        left = None if self.until is None else round(max(0.0, self.until - now), 3)
        return {
            "id": self.id,
            "status": self.status,
            "remaining": self.remaining,
            "seconds_left": left,
            "retry_after": self.retry_after,
            "delay_s": self.delay_s,
            "body": self.body,
        }


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def make_fault(
    fault_id: int,
    status: Any,
    count: Any,
    duration_s: Any,
    retry_after: Any,
    delay_s: Any,
    body: Any,
) -> Fault:
    """Validate fault parameters (ValueError on nonsense)."""
    if status is not None and (isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599):
        raise ValueError("status must be an HTTP status code or null")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ValueError("count must be a positive integer")
    if duration_s is not None and (not _is_number(duration_s) or duration_s <= 0):
        raise ValueError("duration_s must be a positive number")
    if delay_s is None:
        delay_s = 0.0
    if not _is_number(delay_s) or delay_s < 0:
        raise ValueError("delay_s must be a non-negative number")
    if status is None and not delay_s:
        raise ValueError("a fault needs a status or a delay_s")
    if retry_after is not None and not (_is_number(retry_after) or isinstance(retry_after, str)):
        raise ValueError("retry_after must be a number or a string")
    if count is None and duration_s is None:
        count = 1
    header = None
    if retry_after is not None:
        whole = _is_number(retry_after) and float(retry_after).is_integer()  # inf/nan: sent as text
        header = str(int(retry_after)) if whole else str(retry_after)
    until = None if duration_s is None else time.monotonic() + float(duration_s)
    return Fault(fault_id, status, count, until, header, float(delay_s), body)


class FaultRules:
    """The active fault rules, in application order (thread-safe); rule ids keep counting across resets."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._rules: list[Fault] = []

    def __len__(self) -> int:
        return len(self._rules)

    def views(self) -> list[dict[str, Any]]:
        """Active rules, in application order."""
        with self._lock:
            now = time.monotonic()
            self._rules = [rule for rule in self._rules if rule.active(now)]
            return [rule.view(now) for rule in self._rules]

    def add(
        self,
        status: int | None = None,
        count: int | None = None,
        duration_s: float | None = None,
        retry_after: float | str | None = None,
        delay_s: float = 0.0,
        body: Any = None,
    ) -> dict[str, Any]:
        """Add a rule (next ``count`` requests, or all for ``duration_s``); raises ValueError."""
        fault = make_fault(next(self._ids), status, count, duration_s, retry_after, delay_s, body)
        with self._lock:
            self._rules.append(fault)
            return fault.view(time.monotonic())

    def clear(self) -> None:
        """Remove every rule."""
        with self._lock:
            self._rules = []

    def take(self) -> Fault | None:
        """The first active rule, consuming one use of it."""
        if not self._rules:
            return None
        with self._lock:
            now = time.monotonic()
            chosen = next((rule for rule in self._rules if rule.active(now)), None)
            if chosen is not None and chosen.remaining is not None:
                chosen.remaining -= 1
            self._rules = [rule for rule in self._rules if rule.active(now)]
            return chosen


def fault_response(fault: Fault, default_body: Any = None) -> Response:
    """The injected answer: the rule's body (text or JSON), else ``default_body``, else the Track API's error shape
    for the status."""
    assert fault.status is not None
    headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
    body = fault.body if fault.body is not None else default_body
    if isinstance(body, str):
        return Response(body, status_code=fault.status, media_type="text/plain", headers=headers)
    if body is None:
        if fault.status == 401:
            body = UNAUTHORIZED
        else:
            try:
                phrase = http.HTTPStatus(fault.status).phrase
            except ValueError:
                phrase = "Injected fault"
            body = {"meta": {"error": phrase}}
    return json_response(fault.status, body, headers)
