"""SDK clock correction on the capture paths: the rules of PostHog's own capture service.

An SDK stamps events with its device's clock, which may be days off. PostHog's capture
corrects that before storing an event, and so do the capture receivers here (``/batch``,
``/capture``, ``/e``, ``/i/v0/e``, ``/i/v1/analytics/events``, also behind ``POSTHOG_HOST``).
Webhook bodies, batch-export files and Kafka rows carry times PostHog corrected already:
they never come through here.

The rules, from PostHog/posthog:

* ``rust/common/types/src/timestamp.rs`` ``parse_event_timestamp`` (called per event by
  ``rust/capture/src/events/analytics.rs`` ``process_single_event``; it replaced the plugin
  server's ``parseEventTimestamp`` in ``timestamps.ts``):

  - the SDK's clock error is ``sent_at - now`` (``now``: when the request was received); an
    event with a timestamp gets ``timestamp - (sent_at - now)``; without ``sent_at``, or with
    the event property ``$ignore_sent_at: true``, the timestamp is kept;
  - an integer ``offset`` (milliseconds before sending) makes it ``now - offset``, whatever the
    timestamp says; neither timestamp nor offset: ``now``;
  - a result more than 23 h after ``now`` becomes ``now``; one before year 1 the Unix epoch.

* ``sent_at`` is per request, never per event (``rust/capture/src/payload/analytics.rs``
  ``request.sent_at().or(query_params.sent_at())``): the ``sent_at`` of a ``{api_key, batch,
  sent_at}`` body (ISO 8601: posthog-python, posthog-node, posthog-js since its "capture-body"
  requests), else the query's ``sent_at`` or ``_`` as integer milliseconds, ignored unless after
  2020 (``rust/capture/src/payload/types.rs`` ``EventQuery::sent_at``; older posthog-js).

* capture v1 (``rust/capture/src/v1/analytics/process.rs`` ``normalize_timestamp``): the clock
  error is the ``PostHog-Request-Timestamp`` header minus ``now``, the same 23 h clamp, and an
  event whose ``options.disable_skew_correction`` is true keeps its timestamp unclamped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["FUTURE_CUTOFF", "SdkClock", "capture_sent_at", "sdk_event_time", "v1_sent_at"]

#: an event time further ahead of the receive time than this is set to the receive time
FUTURE_CUTOFF = timedelta(hours=23)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_INTEGER = re.compile(r"^-?\d{1,19}$")
#: query ``sent_at`` values at or before this are not milliseconds (PostHog: "year > 2020")
_QUERY_SENT_AT_AFTER = datetime(2021, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class SdkClock:
    """When a capture request was received, and the SDK's clock when it sent the request."""

    received_at: datetime
    #: the request's ``sent_at`` (v1: ``PostHog-Request-Timestamp``); ``None``: no correction
    sent_at: datetime | None = None
    #: capture v1: an event that disables skew correction keeps its time, unclamped
    v1: bool = False


def _iso(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def capture_sent_at(payload: Any, query: Mapping[str, str] | None) -> datetime | None:
    """The SDK's send time of a capture (v0) request: the batch body's ``sent_at``, else the query's."""
    if isinstance(payload, dict) and isinstance(payload.get("batch"), list):
        body_sent_at = _iso(payload.get("sent_at"))
        if body_sent_at is not None:
            return body_sent_at
    for name in ("sent_at", "_"):
        text = (query or {}).get(name)
        if text is None or not _INTEGER.match(text.strip()):
            continue
        try:
            moment = _EPOCH + timedelta(milliseconds=int(text))
        except OverflowError:
            return None
        return moment if moment >= _QUERY_SENT_AT_AFTER else None
    return None


def v1_sent_at(headers: Mapping[str, str] | None) -> datetime | None:
    """The SDK's send time of a capture v1 request: its ``PostHog-Request-Timestamp`` header."""
    return _iso((headers or {}).get("posthog-request-timestamp"))


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // _MICROSECOND


def _offset_ms(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def sdk_event_time(
    parsed: datetime, raw: Mapping[str, Any], properties: Mapping[str, Any], clock: SdkClock
) -> datetime:
    """The time PostHog's capture gives an SDK event (see the module docstring).

    ``parsed``: the event's own timestamp as parsed (the receive time when it has none);
    ``raw``: the event object as sent (for ``timestamp`` and ``offset``); ``properties``: its
    properties (for ``$ignore_sent_at``, which capture v1's ``disable_skew_correction`` becomes).
    """
    now = clock.received_at
    ignore_sent_at = properties.get("$ignore_sent_at") is True
    if clock.v1 and ignore_sent_at:
        return parsed
    now_us = _micros(now)
    has_timestamp = raw.get("timestamp") not in (None, "")
    when_us = _micros(parsed) if has_timestamp else now_us
    if has_timestamp and clock.sent_at is not None and not ignore_sent_at:
        when_us -= _micros(clock.sent_at) - now_us  # minus the SDK clock's error
    offset = _offset_ms(raw.get("offset"))
    if offset is not None:
        when_us = now_us - offset * 1000
    if when_us - now_us > FUTURE_CUTOFF // _MICROSECOND:
        return now
    try:
        when = _EPOCH + timedelta(microseconds=when_us)
    except OverflowError:  # before year 1: PostHog falls back to the epoch
        return _EPOCH
    return parsed if when == parsed else when
