"""Pure: one Customer.io message activity (a reporting webhook) + the PostHog distinct_id of its profile
-> one PostHog capture event.

* **name**: ``<Object> <Metric>`` in the style PostHog's and Segment's Customer.io sources use for external
  events: ``Email Opened``, ``Email Link Clicked``, ``Push Delivered``, ``SMS Bounced``,
  ``Customer Unsubscribed`` (:func:`event_name`; the table in docs/activity.md).
* **uuid**: ``uuid5`` of a fixed namespace and Customer.io's ``event_id``: a retry of the same webhook is the
  same PostHog event, which PostHog deduplicates by uuid (PostHog's capture API:
  https://posthog.com/docs/api/capture, "uuid").
* **properties**: the ids, action, delivery id, subject, link, failure message and device platform kept by
  :func:`~..sources.customerio_activity.parse_activity`; never a message body. ``$lib`` and
  :data:`ACTIVITY_MARKER` mark the event as ours: the mapping never sends it back to Customer.io (the loop guard,
  :func:`is_customerio_activity`).
* **person properties**: a subscription change also ``$set``s ``customerio_unsubscribed`` (and, for a
  preferences change, ``customerio_subscription_preferences``) so cohorts, flags and surveys can respect it
  (``$set`` inside ``properties``: https://posthog.com/docs/product-analytics/person-properties).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "ACTIVITY_LIB",
    "ACTIVITY_MARKER",
    "ACTIVITY_NAMESPACE",
    "Activity",
    "activity_uuid",
    "capture_event",
    "event_name",
    "is_customerio_activity",
]

#: the namespace of the events' uuids (fixed forever: changing it would duplicate every retried event)
ACTIVITY_NAMESPACE = uuid.UUID("6f1c2a4e-1d0b-5c59-9a43-3f1f0c3e9d21")
#: ``$lib`` of the captured events
ACTIVITY_LIB = "posthog-customerio"
#: the property marking a captured activity (its value: Customer.io's event_id); the loop guard looks for it
ACTIVITY_MARKER = "$customerio_event_id"


@dataclass(frozen=True, slots=True)
class Activity:
    """One reporting webhook, as much of it as we keep."""

    event_id: str
    object_type: str
    metric: str
    #: when it happened (Unix seconds)
    timestamp: int
    #: ``data.identifiers`` (``id``, ``email``, ``cio_id``) as given
    identifiers: dict[str, str] = field(default_factory=dict)
    customer_id: str | None = None
    #: the kept fields of ``data`` (:data:`DATA_FIELDS`)
    data: dict[str, str | int | float] = field(default_factory=dict)
    #: a subscription preferences change: the topics and their state (``data.content`` parsed)
    preferences: dict[str, Any] | None = None

    def to_json(self) -> str:
        """The stored form (:meth:`from_json` reads it back)."""
        return json.dumps(
            {
                "event_id": self.event_id,
                "object_type": self.object_type,
                "metric": self.metric,
                "timestamp": self.timestamp,
                "identifiers": self.identifiers,
                "customer_id": self.customer_id,
                "data": self.data,
                "preferences": self.preferences,
            },
            separators=(",", ":"),
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Activity:
        """An activity stored by :meth:`to_json`."""
        raw = json.loads(text)
        return cls(
            event_id=raw["event_id"],
            object_type=raw["object_type"],
            metric=raw["metric"],
            timestamp=int(raw["timestamp"]),
            identifiers=dict(raw.get("identifiers") or {}),
            customer_id=raw.get("customer_id"),
            data=dict(raw.get("data") or {}),
            preferences=raw.get("preferences"),
        )


_OBJECTS = {
    "customer": "Customer",
    "email": "Email",
    "sms": "SMS",
    "push": "Push",
    "in_app": "In-App Message",
    "slack": "Slack Message",
    "webhook": "Webhook",
}
_METRICS = {
    "clicked": "Link Clicked",
    "spammed": "Marked as Spam",
    "cio_subscription_preferences_changed": "Subscription Preferences Changed",
}
#: ``data`` field -> event property
_PROPERTIES = {
    "campaign_id": "campaign_id",
    "broadcast_id": "broadcast_id",
    "newsletter_id": "newsletter_id",
    "transactional_message_id": "transactional_message_id",
    "journey_id": "journey_id",
    "action_id": "action_id",
    "parent_action_id": "parent_action_id",
    "delivery_id": "delivery_id",
    "subject": "subject",
    "href": "link_url",
    "link_id": "link_id",
    "failure_message": "failure_message",
    "device_platform": "device_platform",
}


def event_name(object_type: str, metric: str) -> str:
    """``Email Opened``, ``Email Link Clicked``, ``Push Delivered``, ``Customer Unsubscribed``..."""
    action = _METRICS.get(metric) or metric.replace("_", " ").title()
    return f"{_OBJECTS.get(object_type, object_type.replace('_', ' ').title())} {action}"


def activity_uuid(event_id: str) -> str:
    """The PostHog uuid of Customer.io's ``event_id`` (the same every time)."""
    return str(uuid.uuid5(ACTIVITY_NAMESPACE, event_id))


def capture_event(activity: Activity, distinct_id: str) -> dict[str, Any]:
    """The PostHog capture event (an item of ``/batch/``) of ``activity`` on the person ``distinct_id``."""
    properties: dict[str, Any] = {
        "$lib": ACTIVITY_LIB,
        ACTIVITY_MARKER: activity.event_id,
        "customerio_object_type": activity.object_type,
        "customerio_metric": activity.metric,
    }
    for key, name in _PROPERTIES.items():
        if key in activity.data:
            properties[name] = activity.data[key]
    if activity.object_type == "customer":
        person = _subscription(activity)
        if person:
            properties["$set"] = person
    return {
        "event": event_name(activity.object_type, activity.metric),
        "distinct_id": distinct_id,
        "uuid": activity_uuid(activity.event_id),
        "timestamp": datetime.fromtimestamp(activity.timestamp, UTC).isoformat().replace("+00:00", "Z"),
        "properties": properties,
    }


def _subscription(activity: Activity) -> dict[str, Any]:
    if activity.metric == "unsubscribed":
        return {"customerio_unsubscribed": True}
    if activity.metric == "subscribed":
        return {"customerio_unsubscribed": False}
    if activity.metric == "cio_subscription_preferences_changed" and activity.preferences is not None:
        return {"customerio_subscription_preferences": activity.preferences}
    return {}


def is_customerio_activity(properties: Mapping[str, Any]) -> bool:
    """Whether an event's properties mark it as a message activity this service captured (the loop guard)."""
    return properties.get("$lib") == ACTIVITY_LIB and isinstance(properties.get(ACTIVITY_MARKER), str)
