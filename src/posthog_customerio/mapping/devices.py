"""Push devices: a token in ``$set`` adds a device; set to null or unset, the device is deleted."""

from __future__ import annotations

from ..events import PostHogEvent
from ..operations import Operation
from ..state import PersonState
from .config import MappingConfig
from .identifiers import person_identifiers

__all__ = ["DEVICE_TOKEN_PROPERTIES", "device_operations"]


#: Push-token properties (in ``$set``) and the platform each implies (None: from ``$os``).
DEVICE_TOKEN_PROPERTIES: dict[str, str | None] = {
    "$device_token": None,
    "$push_token": None,
    "$ios_push_token": "ios",
    "$apns_token": "ios",
    "$android_push_token": "android",
    "$fcm_token": "android",
}


def device_operations(event: PostHogEvent, person: PersonState, config: MappingConfig) -> list[Operation]:
    if DEVICE_TOKEN_PROPERTIES.keys().isdisjoint(event.set) and DEVICE_TOKEN_PROPERTIES.keys().isdisjoint(event.unset):
        return []  # no token set, nulled or unset (most events): nothing to do
    operations = []
    for key, platform in DEVICE_TOKEN_PROPERTIES.items():
        token = event.set.get(key)
        removed = (key in event.set and token is None) or key in event.unset
        known = person.digests.get(f"\x00devprop:{key}")
        if removed and known is not None:  # token set to null or unset: the device goes away
            del person.digests[f"\x00devprop:{key}"]
            for digest_key in [k for k in person.digests if k.startswith("\x00device:") and k.endswith(f":{known}")]:
                del person.digests[digest_key]
            payload = {
                "type": "person",
                "identifiers": person_identifiers(person, config),
                "action": "delete_device",
                "device": {"token": known},
            }
            operations.append(Operation(person.distinct_id, payload))
            continue
        if not isinstance(token, str) or not token.strip():
            continue
        platform = platform or _platform(event)
        digest_key = f"\x00device:{platform}:{token}"
        if platform is None or digest_key in person.digests:
            continue
        person.digests[digest_key] = "1"
        person.digests[f"\x00devprop:{key}"] = token
        device = {"token": token, "platform": platform, "last_used": event.timestamp_s}
        payload = {
            "type": "person",
            "identifiers": person_identifiers(person, config),
            "action": "add_device",
            "device": device,
        }
        operations.append(Operation(person.distinct_id, payload))
    return operations


def _platform(event: PostHogEvent) -> str | None:
    # posthog-js sends $os; posthog-ios and posthog-android send $os_name
    props, update = event.properties, event.set
    os_name = str(props.get("$os") or props.get("$os_name") or update.get("$os") or update.get("$os_name") or "")
    os_name = os_name.lower()
    if os_name in ("ios", "ipados", "tvos", "watchos", "visionos"):
        return "ios"
    if os_name == "android":
        return "android"
    return None
