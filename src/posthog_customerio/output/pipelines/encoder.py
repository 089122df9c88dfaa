"""Pipelines API encoder: a neutral operation (:mod:`...operations`) -> its Segment-spec calls and messageIds."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ...operations import Claimed
from .calls import (
    alias,
    device_created_or_updated,
    device_deleted,
    encode_call,
    group,
    identify,
    object_deleted,
    page,
    relationship_deleted,
    screen,
    semantic,
    track,
)

__all__ = ["UnsupportedOperation", "claimed_calls", "message_id", "operation_calls"]

#: neutral person actions that are Customer.io semantic events (track calls with reserved names)
_SEMANTIC_ACTIONS = {"delete": "Delete Person", "suppress": "User Suppressed", "unsuppress": "User Unsuppressed"}


class UnsupportedOperation(ValueError):
    """An operation the Pipelines API cannot express (dead-lettered with this reason, never sent)."""


def message_id(payload: dict[str, Any], seq: int, kind: str, text: str) -> str:
    """The ``messageId`` of an operation's calls: stable across re-sends of the same operation.

    An event's is its dedupe ``id`` (the same PostHog event replayed, from any data dir, dedupes in
    Customer.io). Any other operation (identify, merge, delete, device, group ...) has no such id: its
    messageId is a digest of its outbox ``seq`` and its stored text, so a re-send after a crash or a
    retry carries the same messageId, while two equal operations enqueued at different times (a second
    deletion after the person came back) stay two calls.
    """
    if payload.get("id") not in (None, ""):
        return str(payload["id"])
    digest = hashlib.sha256(f"{kind}\x00{seq}\x00{text}".encode()).hexdigest()[:32]
    return f"op-{digest}"


def _user_id(identifiers: dict[str, Any]) -> str:
    """The ``userId`` the Track modes would address: the id, else the email (``IDENTIFY_BY_EMAIL``).

    "Person ID ... ``userId`` in request body; can be id or email"
    (https://docs.customer.io/integrations/api/track-vs-cdp-api/); "If you pass an email address as the ``userId``,
    Customer.io sets this trait for you" (``traits.email``, https://docs.customer.io/integrations/api/cdp/).
    """
    for key in ("id", "email"):
        value = identifiers.get(key)
        if isinstance(value, str) and value:
            return value
    raise UnsupportedOperation(f"no Pipelines userId for identifiers {sorted(identifiers)}")


def _traits(attributes: dict[str, Any]) -> dict[str, Any]:
    """Identify attributes as Segment traits: a clear (``""``, "remove" on the Track APIs) becomes ``null``.

    The Track APIs remove an attribute sent as ``null`` or ``""``, and the mapping sends a clear (PostHog ``$unset``
    or a ``null`` value) as ``""``. A Segment-spec trait has no such convention: ``null`` is the value that says "no
    value", so a clear goes out as ``null`` (the meaning is the same: on Track ``""`` already meant "remove").
    """
    return {key: None if value == "" else value for key, value in attributes.items()}


def _with_ids(calls: list[dict[str, Any]], message: str) -> list[dict[str, Any]]:
    """Every call gets ``message`` as messageId (suffixed ``:n`` when one operation makes several calls)."""
    for number, call in enumerate(calls):
        call["messageId"] = message if number == 0 else f"{message}:{number}"
    return calls


def _person_calls(payload: dict[str, Any], when: Any) -> list[dict[str, Any]]:
    action = payload.get("action")
    if action == "merge":
        return [alias(_user_id(payload["primary"]), _user_id(payload["secondary"]), timestamp=when)]
    identifiers = payload.get("identifiers") or {}
    user = _user_id(identifiers)
    attributes = dict(payload.get("attributes") or {})
    if action == "identify":
        anonymous = attributes.pop("anonymous_id", None)
        if "email" in identifiers and "id" not in identifiers:
            attributes.setdefault("email", identifiers["email"])
            person_id = attributes.pop("id", None)
            if person_id not in (None, ""):  # the person's id, given to a profile addressed by email
                user = str(person_id)
        return [identify(user, _traits(attributes), anonymous_id=anonymous, timestamp=when)]
    if action in ("event", "page", "screen"):
        return [_view_call(action, payload, attributes, user, None, when)]
    if action in _SEMANTIC_ACTIONS:
        return [semantic(_SEMANTIC_ACTIONS[action], user, timestamp=when)]
    if action == "add_device":
        device = dict(payload.get("device") or {})
        token, platform = device.pop("token", None), device.pop("platform", None)
        last_used = device.pop("last_used", None)
        return [
            device_created_or_updated(
                user, str(token or ""), platform, device or None, timestamp=last_used if last_used is not None else when
            )
        ]
    if action == "delete_device":
        return [device_deleted(user, str((payload.get("device") or {}).get("token") or ""), timestamp=when)]
    if action in ("add_relationships", "delete_relationships"):
        calls = []
        for relation in payload.get("cio_relationships") or []:
            target = relation.get("identifiers") or {}
            object_id, type_id = str(target.get("object_id", "")), target.get("object_type_id", "1")
            if action == "add_relationships":
                attrs = relation.get("relationship_attributes")
                calls.append(
                    group(
                        object_id, object_type_id=type_id, user_id=user, relationship_attributes=attrs, timestamp=when
                    )
                )
            else:
                calls.append(relationship_deleted(user, object_id, type_id, timestamp=when))
        if not calls:
            raise UnsupportedOperation(f"{action} without relationships")
        return calls
    raise UnsupportedOperation(f"no Pipelines call for person action {action!r}")


def _view_call(
    action: str,
    payload: dict[str, Any],
    properties: dict[str, Any],
    user: str | None,
    anonymous: str | None,
    when: Any,
) -> dict[str, Any]:
    name = str(payload.get("name") or "")
    if action == "page":
        return page(name, properties, user_id=user, anonymous_id=anonymous, timestamp=when)
    if action == "screen":
        return screen(name, properties, user_id=user, anonymous_id=anonymous, timestamp=when)
    return track(name, properties, user_id=user, anonymous_id=anonymous, timestamp=when)


def operation_calls(payload: dict[str, Any], kind: str, message: str) -> list[dict[str, Any]]:
    """The Segment-spec calls for one neutral operation (raises :class:`UnsupportedOperation`).

    An identify addressed by email (``IDENTIFY_BY_EMAIL``) sends the email as ``userId`` and ``traits.email``; when
    its attributes carry the person's ``id`` (the mapping gives a profile known by email its id before changing
    the email), the id is the ``userId`` and the email stays in ``traits.email``: the Pipelines API has no id
    trait, its ``userId`` is the person id, and Customer.io gives an unknown id to the person holding the body's
    email. The email change that follows (addressed by id, ``email`` in the attributes) is an identify with that
    ``userId`` and the new ``traits.email``, the documented way to change a person's email ("Update their
    information—like when they change their email address",
    https://docs.customer.io/integrations/data-in/source-spec/identify-spec/). An attribute clear goes out as the
    trait ``null`` (:func:`_traits`).

    person: identify (with ``anonymousId`` when it attaches a visitor), track/page/screen, alias (merge:
    ``previousId`` = the secondary), semantic events (delete, suppress, unsuppress, devices), group per
    relationship; anonymous: track/page/screen with ``anonymousId``; object: group without a person.
    """
    when = payload.get("timestamp")
    try:
        if kind == "person":
            calls = _person_calls(payload, when)
        elif kind == "anonymous":
            action = str(payload.get("action"))
            if action not in ("event", "page", "screen"):
                raise UnsupportedOperation(f"no Pipelines call for anonymous action {action!r}")
            properties = dict(payload.get("attributes") or {})
            calls = [_view_call(action, payload, properties, None, str(payload["anonymous_id"]), when)]
        elif kind == "object":
            target = payload.get("identifiers") or {}
            object_id, type_id = str(target.get("object_id", "")), target.get("object_type_id", "1")
            if payload.get("action") == "delete":
                calls = [object_deleted(object_id, type_id, anonymous_id=message, timestamp=when)]
            elif payload.get("action") == "identify":
                calls = [group(object_id, payload.get("attributes"), object_type_id=type_id, timestamp=when)]
            else:
                raise UnsupportedOperation(f"no Pipelines call for object action {payload.get('action')!r}")
        elif kind == "segment":
            raise UnsupportedOperation(
                "Customer.io's Pipelines API has no manual segments: use COHORT_ATTRIBUTES, or the Track API"
                " (CUSTOMERIO_API=v2) for COHORT_SEGMENTS"
            )
        else:
            raise UnsupportedOperation(f"unknown operation kind {kind!r}")
    except UnsupportedOperation:
        raise
    except (KeyError, TypeError, ValueError) as exc:  # a malformed stored operation: say what, never send it
        raise UnsupportedOperation(f"cannot encode for Pipelines: {type(exc).__name__}: {exc}") from None
    return _with_ids(calls, message)


def claimed_calls(item: Claimed) -> list[str]:
    """The encoded calls of one claimed operation (raises :class:`UnsupportedOperation`)."""
    payload = json.loads(item.payload)
    message = message_id(payload, item.seq, item.kind, item.payload)
    return [encode_call(call) for call in operation_calls(payload, item.kind, message)]
