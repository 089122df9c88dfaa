"""Customer.io message activity -> one PostHog capture event (pure): names, properties, ``$set``, uuid, loop guard."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from posthog_customerio.mapping import MappingConfig, map_event
from posthog_customerio.mapping.activity import (
    ACTIVITY_MARKER,
    Activity,
    activity_uuid,
    capture_event,
    event_name,
    is_customerio_activity,
)
from posthog_customerio.sources.customerio_activity import (
    DATA_FIELDS,
    METRICS,
    OBJECT_TYPES,
    ActivityError,
    parse_activity,
)
from posthog_customerio.sources.events import PostHogEvent

from ..activity_helpers import activity_body

T = datetime(2024, 1, 1, tzinfo=UTC)

#: the documented table (docs/activity.md): object type x metric -> event name
NAMES = {
    ("email", "sent"): "Email Sent",
    ("email", "delivered"): "Email Delivered",
    ("email", "opened"): "Email Opened",
    ("email", "clicked"): "Email Link Clicked",
    ("email", "converted"): "Email Converted",
    ("email", "bounced"): "Email Bounced",
    ("email", "spammed"): "Email Marked as Spam",
    ("email", "dropped"): "Email Dropped",
    ("email", "failed"): "Email Failed",
    ("email", "unsubscribed"): "Email Unsubscribed",
    ("email", "deferred"): "Email Deferred",
    ("email", "drafted"): "Email Drafted",
    ("email", "attempted"): "Email Attempted",
    ("email", "undeliverable"): "Email Undeliverable",
    ("push", "delivered"): "Push Delivered",
    ("push", "opened"): "Push Opened",
    ("push", "clicked"): "Push Link Clicked",
    ("push", "bounced"): "Push Bounced",
    ("sms", "sent"): "SMS Sent",
    ("sms", "delivered"): "SMS Delivered",
    ("sms", "clicked"): "SMS Link Clicked",
    ("sms", "bounced"): "SMS Bounced",
    ("in_app", "opened"): "In-App Message Opened",
    ("in_app", "clicked"): "In-App Message Link Clicked",
    ("slack", "sent"): "Slack Message Sent",
    ("webhook", "failed"): "Webhook Failed",
    ("customer", "subscribed"): "Customer Subscribed",
    ("customer", "unsubscribed"): "Customer Unsubscribed",
    ("customer", "cio_subscription_preferences_changed"): "Customer Subscription Preferences Changed",
}


def parsed(**fields: object) -> Activity:
    body = activity_body("01HX", **fields)  # type: ignore[arg-type]
    return parse_activity(json.dumps(body).encode())


@pytest.mark.parametrize(("kind", "metric"), sorted(NAMES))
def test_each_object_and_metric_has_its_name(kind: str, metric: str) -> None:
    assert event_name(kind, metric) == NAMES[(kind, metric)]
    event = capture_event(parsed(object_type=kind, metric=metric), "person-1")
    assert event["event"] == NAMES[(kind, metric)] and event["distinct_id"] == "person-1"


def test_every_object_type_and_metric_parses_and_names_in_title_case() -> None:
    for kind in OBJECT_TYPES:
        for metric in METRICS:
            name = capture_event(parsed(object_type=kind, metric=metric), "p")["event"]
            assert name and name[0].isupper() and "_" not in name


def test_properties_are_the_whitelist_and_never_a_body() -> None:
    data = {field: f"v-{field}" for field in DATA_FIELDS}
    activity = parsed(
        object_type="email",
        metric="clicked",
        body="<html>secret</html>",
        content="Hello Ada, your code is 1234",
        recipient="ada@example.com",
        headers={"x": "y"},
        **data,
    )
    properties = capture_event(activity, "p")["properties"]
    assert properties["link_url"] == "v-href" and properties["campaign_id"] == "v-campaign_id"
    assert properties["failure_message"] == "v-failure_message" and properties["device_platform"] == "v-device_platform"
    text = json.dumps(properties)
    assert "secret" not in text and "1234" not in text and "recipient" not in text and "headers" not in text
    assert properties["$lib"] == "posthog-customerio" and properties[ACTIVITY_MARKER] == "01HX"
    assert "$set" not in properties


def test_subscription_changes_set_person_properties() -> None:
    unsubscribed = capture_event(parsed(object_type="customer", metric="unsubscribed"), "p")["properties"]
    subscribed = capture_event(parsed(object_type="customer", metric="subscribed"), "p")["properties"]
    preferences = parsed(
        object_type="customer",
        metric="cio_subscription_preferences_changed",
        content=json.dumps({"topics": {"topic_1": False}}),
    )
    assert unsubscribed["$set"] == {"customerio_unsubscribed": True}
    assert subscribed["$set"] == {"customerio_unsubscribed": False}
    assert capture_event(preferences, "p")["properties"]["$set"] == {
        "customerio_subscription_preferences": {"topics": {"topic_1": False}}
    }
    # an email's unsubscribe link click is an event of the email; the customer event carries the $set
    assert "$set" not in capture_event(parsed(object_type="email", metric="unsubscribed"), "p")["properties"]


def test_the_uuid_is_derived_from_the_event_id_alone() -> None:
    first = capture_event(parsed(object_type="email", metric="opened"), "p")
    again = capture_event(parsed(object_type="email", metric="opened", timestamp=1), "q")
    assert first["uuid"] == again["uuid"] == activity_uuid("01HX")
    assert uuid.UUID(first["uuid"]).version == 5
    assert activity_uuid("01HY") != activity_uuid("01HX")
    assert first["timestamp"] == "2024-01-01T00:00:00Z"


def test_the_stored_form_reads_back() -> None:
    activity = parsed(object_type="push", metric="opened", cio_id="c1", email="a@example.com", device_platform="ios")
    assert Activity.from_json(activity.to_json()) == activity


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"object_type": "email", "metric": "opened", "timestamp": 1}',
        b'{"event_id": "e", "object_type": "fax", "metric": "opened", "timestamp": 1}',
        b'{"event_id": "e", "object_type": "email", "metric": "printed", "timestamp": 1}',
        b'{"event_id": "e", "object_type": "email", "metric": "opened", "timestamp": "soon"}',
        b'{"event_id": "e", "object_type": "email", "metric": "opened", "timestamp": 1, "data": []}',
        b'{"event": "$pageview", "distinct_id": "u1"}',
    ],
)
def test_a_body_that_is_not_a_reporting_webhook_is_refused(body: bytes) -> None:
    with pytest.raises(ActivityError):
        parse_activity(body)


def test_the_loop_guard_skips_the_events_we_captured() -> None:
    captured = capture_event(parsed(object_type="email", metric="opened"), "u1")
    event = PostHogEvent(event=captured["event"], distinct_id="u1", timestamp=T, properties=captured["properties"])
    assert is_customerio_activity(event.properties)
    guarded = map_event(event, {}, MappingConfig())
    assert guarded.skipped == "customerio_activity" and not guarded.operations and not guarded.states
    forwarded = map_event(event, {}, MappingConfig(skip_customerio_activity=False))
    assert forwarded.skipped is None and forwarded.operations
    # the same name from elsewhere (not marked) is an ordinary event
    plain = PostHogEvent(event="Email Opened", distinct_id="u1", timestamp=T, properties={})
    assert not is_customerio_activity(plain.properties) and map_event(plain, {}, MappingConfig()).skipped is None
